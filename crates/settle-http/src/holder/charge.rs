//! A charge against a credit card (Figs. 24-32).

use valuecard_core::ids::CardId;
use valuecard_core::messages::online::{ins, BalanceInfo, SettlementId};
use valuecard_core::money::Amount;
use valuecard_reader::CardReader;

use super::payment::check_info;
use super::{hex_of, resolution, signature_of, Holder, HolderError, Resolution};
use crate::wire::{ChargeRequestBody, CreditCardBody};

/// A charge authorized and sealed for the card, not yet applied.
#[derive(Debug, Clone)]
pub struct PreparedCharge {
    pub settlement_id: SettlementId,
    pub card_id: CardId,
    pub amount: Amount,
    pub authorization: String,
    pub balance: Amount,
    pub balance_after: Amount,
    update: Vec<u8>,
    pub log_token: String,
}

impl Holder {
    /// Figs. 25-29: the charge authorized against the credit card and sealed for the card,
    /// SIG5 checked; not yet applied.
    pub fn prepare_charge(
        &self,
        reader: &mut dyn CardReader,
        amount: Amount,
        credit_card: CreditCardBody,
    ) -> Result<PreparedCharge, HolderError> {
        let fci = self.select_online(reader)?;
        let request = ChargeRequestBody {
            card_id: hex::encode(fci.card_id.as_bytes()),
            amount: amount.minor(),
            credit_card,
        };
        let (settlement_id, offer, update, log_token) =
            self.start_and_offer(reader, "/v1/charges", &request)?;
        let service = "the settlement service";
        let authorization = offer.authorization.clone().unwrap_or_default();
        self.checks.charge(
            &settlement_id,
            &fci.card_id,
            amount,
            &authorization,
            &update,
            &signature_of(service, "signature", offer.signature.as_deref())?,
        )?;
        let info = BalanceInfo::decode(&hex_of(
            service,
            "balance_info",
            offer.balance_info.as_deref().unwrap_or_default(),
        )?)
        .map_err(|error| HolderError::Malformed {
            service,
            reason: format!("balance_info: {error}"),
        })?;
        check_info(&info, &fci.card_id, &settlement_id)?;
        let balance_after = info
            .balance
            .checked_add(amount)
            .map_err(|_| HolderError::OfferMismatch("past the largest balance".into()))?;
        Ok(PreparedCharge {
            settlement_id,
            card_id: fci.card_id,
            amount,
            authorization,
            balance: info.balance,
            balance_after,
            update,
            log_token,
        })
    }

    /// Figs. 30-32: CHARGE on the card, the completion to the settlement system.
    pub fn confirm_charge(
        &self,
        reader: &mut dyn CardReader,
        prepared: &PreparedCharge,
    ) -> Result<Resolution, HolderError> {
        let outcome = self.apply(
            reader,
            "CHARGE",
            ins::CHARGE,
            &prepared.update,
            &prepared.settlement_id,
        )?;
        resolution(&outcome)
    }
}
