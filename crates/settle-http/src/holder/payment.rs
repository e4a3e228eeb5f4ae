//! A payment to a store (ST7-ST20, and ST101-ST112 sealed).

use valuecard_core::crypto::Signature;
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::{
    ins, BalanceInfo, Receipt, SettlementCompletion, SettlementId, SettlementPreview,
};
use valuecard_core::money::Amount;
use valuecard_reader::CardReader;

use super::card::{card_answer, online, read_card};
use super::{hex_of, settlement_id_of, signature_of, Holder, HolderError, Order};
use crate::wire::{CompletionBody, Embodiment, OutcomeBody, PaymentRequestBody, ReceiptBody};

/// A payment sealed for the card and not yet applied: what the holder confirms (ST15).
#[derive(Debug, Clone)]
pub struct PreparedPayment {
    pub settlement_id: SettlementId,
    pub card_id: CardId,
    pub order_number: u64,
    pub total: Amount,
    pub balance: Amount,
    pub spendable: Amount,
    pub balance_after: Amount,
    pub embodiment: Embodiment,
    /// SETTLE's command data.
    update: Vec<u8>,
    /// A token to read the card's log.
    pub log_token: String,
}

/// A paid order: the completion SIG3 and, once the store gave it, the receipt SIG4.
#[derive(Debug, Clone)]
pub struct Paid {
    pub settlement_id: SettlementId,
    pub order_number: u64,
    pub amount: Amount,
    pub balance_after: Amount,
    pub completion: SettlementCompletion,
    pub receipt: Receipt,
    pub receipt_signature: Signature,
}

impl Holder {
    /// ST7-ST15: the payment of `order` prepared up to the offer the holder confirms. An
    /// earlier update of the card left unresolved is resolved first.
    pub fn prepare_payment(
        &self,
        reader: &mut dyn CardReader,
        order: &Order,
        embodiment: Embodiment,
    ) -> Result<PreparedPayment, HolderError> {
        let fci = self.select_online(reader)?;
        // ST104-ST105: the sealed embodiment shows the balance read from the card itself.
        let local = match embodiment {
            Embodiment::Sealed => Some(read_card(reader)?.status),
            Embodiment::Signed => None,
        };
        if local.is_some() {
            self.select_online(reader)?;
        }
        let request = PaymentRequestBody {
            bill: hex::encode(&order.encoded),
            bill_signature: hex::encode(order.signature.0),
            card_id: hex::encode(fci.card_id.as_bytes()),
            embodiment,
        };
        let (settlement_id, offer, update, log_token) =
            self.start_and_offer(reader, "/v1/payments", &request)?;
        let service = "the settlement service";
        let (balance, spendable, balance_after) = match embodiment {
            Embodiment::Signed => {
                // ST15: SIG2 over the bill this client got from the store, BI and the SPC.
                let info = self.checks.offer(
                    &settlement_id,
                    &order.bill,
                    &hex_of(
                        service,
                        "balance_info",
                        offer.balance_info.as_deref().unwrap_or_default(),
                    )?,
                    &update,
                    &signature_of(service, "signature", offer.signature.as_deref())?,
                )?;
                check_info(&info, &fci.card_id, &settlement_id)?;
                let after = info.balance.checked_sub(order.bill.total).map_err(|_| {
                    HolderError::OfferMismatch("the bill is above the balance".into())
                })?;
                (info.balance, info.spendable, after)
            }
            Embodiment::Sealed => {
                // ST109: the card opens the offer itself; the holder sees what the card will do.
                let preview = card_answer(
                    "PREVIEW",
                    SettlementPreview::decode(&online(
                        reader,
                        "PREVIEW",
                        ins::PREVIEW,
                        0,
                        update.clone(),
                    )?),
                )?;
                if preview.settlement_id != settlement_id
                    || preview.amount != order.bill.total
                    || preview.party != order.bill.member_store.unwrap_or(order.bill.store)
                {
                    return Err(HolderError::OfferMismatch(format!(
                        "the card shows {} to {}, the bill says {} to {}",
                        preview.amount,
                        preview.party,
                        order.bill.total,
                        order.bill.member_store.unwrap_or(order.bill.store)
                    )));
                }
                let spendable = local.map_or(preview.balance_before, |status| status.balance);
                (preview.balance_before, spendable, preview.balance_after)
            }
        };
        Ok(PreparedPayment {
            settlement_id,
            card_id: fci.card_id,
            order_number: order.bill.order_number,
            total: order.bill.total,
            balance,
            spendable,
            balance_after,
            embodiment,
            update,
            log_token,
        })
    }

    /// ST16-ST20: SETTLE on the card, the PCN to the settlement system, the completion SIG3
    /// and the receipt SIG4 checked (the receipt asked of the store if the settlement system
    /// could not get it).
    pub fn confirm_payment(
        &self,
        reader: &mut dyn CardReader,
        order: &Order,
        prepared: &PreparedPayment,
    ) -> Result<Paid, HolderError> {
        let outcome = self.apply(
            reader,
            "SETTLE",
            ins::SETTLE,
            &prepared.update,
            &prepared.settlement_id,
        )?;
        let paid = self.paid(order, &outcome)?;
        // The card bound the balance after into the update the holder confirmed.
        if paid.balance_after != prepared.balance_after {
            return Err(HolderError::OfferMismatch(format!(
                "the settlement service says the card holds {}, the update it applied leaves {}",
                paid.balance_after, prepared.balance_after
            )));
        }
        Ok(paid)
    }

    /// The documents of a completed payment, checked.
    pub fn paid(&self, order: &Order, outcome: &OutcomeBody) -> Result<Paid, HolderError> {
        let service = "the settlement service";
        let settlement_id = settlement_id_of(&outcome.settlement_id)?;
        let completion = SettlementCompletion::decode(&hex_of(
            service,
            "completion",
            outcome.completion.as_deref().unwrap_or_default(),
        )?)
        .map_err(|error| HolderError::Malformed {
            service,
            reason: format!("completion: {error}"),
        })?;
        let completion_signature = signature_of(
            service,
            "completion_signature",
            outcome.completion_signature.as_deref(),
        )?;
        self.checks.completion(
            &settlement_id,
            &order.bill,
            &completion,
            &completion_signature,
        )?;
        let store_key = self.store_key(&order.bill)?;
        let (receipt, receipt_signature) = match (&outcome.receipt, &outcome.receipt_signature) {
            (Some(receipt), Some(signature)) => (
                Receipt::decode(&hex_of(service, "receipt", receipt)?).map_err(|error| {
                    HolderError::Malformed {
                        service,
                        reason: format!("receipt: {error}"),
                    }
                })?,
                signature_of(service, "receipt_signature", Some(signature))?,
            ),
            _ => {
                let answer: ReceiptBody = self.store.post(
                    &format!("/v1/orders/{}/completion", order.bill.order_number),
                    &CompletionBody {
                        completion: hex::encode(completion.encode()),
                        signature: hex::encode(completion_signature.0),
                    },
                )?;
                (
                    Receipt::decode(&hex_of("the store", "receipt", &answer.receipt)?).map_err(
                        |error| HolderError::Malformed {
                            service: "the store",
                            reason: format!("receipt: {error}"),
                        },
                    )?,
                    signature_of("the store", "signature", Some(&answer.signature))?,
                )
            }
        };
        self.checks
            .receipt(&store_key, &completion, &receipt, &receipt_signature)?;
        Ok(Paid {
            settlement_id,
            order_number: order.bill.order_number,
            amount: completion.amount,
            balance_after: super::balance_after(outcome)?,
            completion,
            receipt,
            receipt_signature,
        })
    }
}

/// BI must be this card's, for this settlement.
pub(super) fn check_info(
    info: &BalanceInfo,
    card_id: &CardId,
    settlement_id: &SettlementId,
) -> Result<(), HolderError> {
    if info.card_id != *card_id || info.settlement_id != *settlement_id {
        return Err(HolderError::OfferMismatch(
            "the balance is another card's or another settlement's".into(),
        ));
    }
    Ok(())
}
