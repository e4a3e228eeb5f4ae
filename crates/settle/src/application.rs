//! The application server 30 and the holder's client 22, I/O-free: the checks and
//! signatures that pass between them and the store.
//!
//! - The application server checks the store's SIG1 over the bill with the key the
//!   information server registered for that store (ST9), signs BI with the sealed SPC (SIG2,
//!   ST14), the completion (SIG3, ST19) and a charge's value update (SIG5), and checks the
//!   store's receipt (SIG4).
//! - The client checks SIG2 against the bill *it* received from the store, so a bill altered
//!   on the way to the application server is caught before the card is touched (ST15), and
//!   SIG3, SIG4 and SIG5 before it shows a result or touches the card for a charge.

use std::collections::BTreeMap;

use valuecard_core::crypto::{PublicKey, Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::{
    charge_offer_message, settlement_offer_message, BalanceInfo, Bill, Completion, Receipt,
    SettlementCompletion, SettlementId,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    #[error("the bill does not decode: {0}")]
    MalformedBill(String),
    #[error("store {0} is not registered with the settlement system")]
    UnknownStore(DeviceId),
    #[error("the bill's signature (SIG1) does not verify under the store's key")]
    ForgedBill,
    #[error("the bill expired on {0}")]
    ExpiredBill(Date),
    #[error("the settlement offer's signature (SIG2) does not verify: the balance, the bill or the request was altered")]
    ForgedOffer,
    #[error("the balance readout does not decode: {0}")]
    MalformedBalance(String),
    #[error("the completion's signature (SIG3) does not verify")]
    ForgedCompletion,
    #[error("the completion is for another settlement, order or amount")]
    WrongCompletion,
    #[error("the receipt's signature (SIG4) does not verify under the store's key")]
    ForgedReceipt,
    #[error("the receipt does not acknowledge this completion")]
    WrongReceipt,
    #[error("the charge offer's signature (SIG5) does not verify")]
    ForgedCharge,
}

/// The application server's key and the stores it knows.
pub struct ApplicationServer {
    key: SigningKeyPair,
    /// Registered stores (a mall for its member stores): their SIG1 and SIG4 keys.
    stores: BTreeMap<DeviceId, PublicKey>,
}

impl core::fmt::Debug for ApplicationServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ApplicationServer")
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ApplicationServer {
    pub fn new(key: SigningKeyPair) -> Self {
        ApplicationServer {
            key,
            stores: BTreeMap::new(),
        }
    }

    /// The key every client checks SIG2, SIG3 and SIG5 with.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Registers a store's key (the information server's registry, KSHOP,P).
    pub fn register_store(&mut self, store: DeviceId, key: PublicKey) {
        self.stores.insert(store, key);
    }

    pub fn store_key(&self, store: &DeviceId) -> Option<PublicKey> {
        self.stores.get(store).copied()
    }

    /// ST9: the bill as the client forwarded it, with SIG1.
    pub fn check_bill(
        &self,
        encoded_bill: &[u8],
        signature: &Signature,
        today: Date,
    ) -> Result<Bill, DocumentError> {
        check_bill_with(encoded_bill, signature, today, |store| {
            self.store_key(store)
        })
    }

    /// ST14: SIG2 over BI (as the security server opened it) and the sealed SPC.
    pub fn sign_offer(
        &self,
        settlement_id: &SettlementId,
        bill: &Bill,
        balance_info: &BalanceInfo,
        sealed_update: &[u8],
    ) -> Signature {
        self.key.sign(&settlement_offer_message(
            settlement_id,
            &bill.digest(),
            &balance_info.encode(),
            sealed_update,
        ))
    }

    /// ST19: the completion ACN of a settlement the card completed, signed SIG3.
    pub fn complete(
        &self,
        settlement_id: SettlementId,
        bill: &Bill,
        card_id: CardId,
        completion: &Completion,
        today: Date,
    ) -> (SettlementCompletion, Signature) {
        let acn = SettlementCompletion {
            settlement_id,
            bill_digest: bill.digest(),
            store: bill.store,
            order_number: bill.order_number,
            amount: completion.amount,
            card_id,
            counter: completion.counter,
            date: today,
        };
        let signature = self.key.sign(&acn.signed_message());
        (acn, signature)
    }

    /// The store's receipt SIG4 of a completion this server signed.
    pub fn check_receipt(
        &self,
        completion: &SettlementCompletion,
        receipt: &Receipt,
        signature: &Signature,
    ) -> Result<(), DocumentError> {
        let key = self
            .store_key(&completion.store)
            .ok_or(DocumentError::UnknownStore(completion.store))?;
        check_receipt(&key, completion, receipt, signature)
    }

    /// Figs. 24-32: SIG5 over a charge's sealed value update.
    pub fn sign_charge(
        &self,
        charge_id: &SettlementId,
        card_id: &CardId,
        amount: Amount,
        authorization: &str,
        sealed_update: &[u8],
    ) -> Signature {
        self.key.sign(&charge_offer_message(
            charge_id,
            card_id,
            amount,
            authorization,
            sealed_update,
        ))
    }
}

/// ST9 with the store keys wherever the caller keeps them (a service reads them from its
/// database, so that every instance knows a store as soon as one registered it).
pub fn check_bill_with(
    encoded_bill: &[u8],
    signature: &Signature,
    today: Date,
    store_key: impl FnOnce(&DeviceId) -> Option<PublicKey>,
) -> Result<Bill, DocumentError> {
    let bill = Bill::decode(encoded_bill)
        .map_err(|error| DocumentError::MalformedBill(error.to_string()))?;
    let key = store_key(&bill.store).ok_or(DocumentError::UnknownStore(bill.store))?;
    key.verify(&bill.signed_message(), signature)
        .map_err(|_| DocumentError::ForgedBill)?;
    if today > bill.expires {
        return Err(DocumentError::ExpiredBill(bill.expires));
    }
    Ok(bill)
}

/// The receipt SIG4 under the store's key, and that it acknowledges `completion`.
pub fn check_receipt(
    store_key: &PublicKey,
    completion: &SettlementCompletion,
    receipt: &Receipt,
    signature: &Signature,
) -> Result<(), DocumentError> {
    store_key
        .verify(&receipt.signed_message(), signature)
        .map_err(|_| DocumentError::ForgedReceipt)?;
    if receipt.completion_digest != completion.digest()
        || receipt.settlement_id != completion.settlement_id
        || receipt.order_number != completion.order_number
        || receipt.amount != completion.amount
        || receipt.store != completion.store
    {
        return Err(DocumentError::WrongReceipt);
    }
    Ok(())
}

/// The holder's client's checks, with the application server's key it was configured
/// with.
#[derive(Debug, Clone, Copy)]
pub struct ClientChecks {
    pub application_key: PublicKey,
}

impl ClientChecks {
    /// ST15: SIG2 over the bill the client itself received from the store, BI and the
    /// sealed SPC; gives BI to show the holder with the bill.
    pub fn offer(
        &self,
        settlement_id: &SettlementId,
        bill: &Bill,
        encoded_info: &[u8],
        sealed_update: &[u8],
        signature: &Signature,
    ) -> Result<BalanceInfo, DocumentError> {
        self.application_key
            .verify(
                &settlement_offer_message(
                    settlement_id,
                    &bill.digest(),
                    encoded_info,
                    sealed_update,
                ),
                signature,
            )
            .map_err(|_| DocumentError::ForgedOffer)?;
        BalanceInfo::decode(encoded_info)
            .map_err(|error| DocumentError::MalformedBalance(error.to_string()))
    }

    /// ST20: SIG3 over the completion of this bill's settlement.
    pub fn completion(
        &self,
        settlement_id: &SettlementId,
        bill: &Bill,
        completion: &SettlementCompletion,
        signature: &Signature,
    ) -> Result<(), DocumentError> {
        self.application_key
            .verify(&completion.signed_message(), signature)
            .map_err(|_| DocumentError::ForgedCompletion)?;
        if completion.settlement_id != *settlement_id
            || completion.bill_digest != bill.digest()
            || completion.amount != bill.total
        {
            return Err(DocumentError::WrongCompletion);
        }
        Ok(())
    }

    /// The store's receipt SIG4, with the store key the application server gave.
    pub fn receipt(
        &self,
        store_key: &PublicKey,
        completion: &SettlementCompletion,
        receipt: &Receipt,
        signature: &Signature,
    ) -> Result<(), DocumentError> {
        check_receipt(store_key, completion, receipt, signature)
    }

    /// Figs. 28-31: SIG5 over the sealed value update, before it goes to the card.
    pub fn charge(
        &self,
        charge_id: &SettlementId,
        card_id: &CardId,
        amount: Amount,
        authorization: &str,
        sealed_update: &[u8],
        signature: &Signature,
    ) -> Result<(), DocumentError> {
        self.application_key
            .verify(
                &charge_offer_message(charge_id, card_id, amount, authorization, sealed_update),
                signature,
            )
            .map_err(|_| DocumentError::ForgedCharge)
    }
}
