//! The balance a card claims when it asks for a load (Fig. 7): one a writer signed for its
//! current state, and one the center's own records allow.

use valuecard_core::messages::center::{CenterError, LoadRequest};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;

use super::{amount_from, commit_load, Writer};
use crate::sql::Executor;
use crate::Center;

/// Why a claimed balance was refused.
pub(super) enum Claim {
    /// The request does not hold together (it may be the dispenser's doing): refuse only.
    Refuse(String),
    /// The card itself signed a balance the center never put there: list it.
    Tampered(String),
}

impl Center {
    /// Whether the balance the card claims is one a writer signed for its current state and
    /// one the center's own records allow. The outer error is the center's; the inner one
    /// says why the claim is refused.
    pub(super) fn check_claimed_balance(
        &mut self,
        request: &LoadRequest,
    ) -> Result<Result<(), Claim>, CenterError> {
        let offer = &request.offer;
        let card_id = request.card_id;
        // Balances only rise by loads, by transfers received (seed 000), by online charges
        // (seed 004) and by moves from an old chip (seed 002): the balance after the newest
        // load that may have reached the card, plus every transfer it received, every charge
        // made online and every value moved onto it, bounds every later balance.
        let ceiling = self
            .db
            .query_one(
                "SELECT CAST(
                     (SELECT COALESCE(MAX(balance_after_minor), 0) FROM loads
                          WHERE card_id = $1 AND status != 'cancelled')
                   + (SELECT COALESCE(SUM(amount_minor), 0) FROM transfers
                          WHERE destination = $1 AND proof_status = 'received')
                   + (SELECT COALESCE(SUM(amount_minor), 0) FROM online_records
                          WHERE card_id = $1 AND kind = 6)
                   + (SELECT COALESCE(SUM(amount_minor), 0) FROM card_moves
                          WHERE destination = $1)
                 AS BIGINT)",
                &[card_id.0[..].into()],
            )?
            .int(0)?;
        if offer.balance.minor() > ceiling as u64 {
            // A settlement terminal that has not synced yet may hold a transfer this card
            // received: a balance its genuine writer signed is then refused until it does,
            // not listed. Only a balance nobody signed is the card's own edit.
            let vouched = match &offer.last_usage {
                Some(record)
                    if record.counter == offer.counter
                        && record.balance_after == offer.balance
                        && matches!(
                            record.kind,
                            TransactionKind::TransferIn
                                | TransactionKind::TransferOut
                                | TransactionKind::Purchase
                                | TransactionKind::OnlinePayment
                                | TransactionKind::OnlineCharge
                                | TransactionKind::MigrationIn
                        ) =>
                {
                    self.genuine_writer(&card_id, record)?.is_some()
                }
                _ => false,
            };
            let reason = format!(
                "the card claims {} but the center never loaded more than {}, transfers received included",
                offer.balance,
                amount_from(ceiling)?
            );
            return Ok(Err(if vouched {
                Claim::Refuse(format!(
                    "{reason}; a settlement terminal may still hold the card's transfers"
                ))
            } else {
                Claim::Tampered(reason)
            }));
        }
        let Some(record) = &offer.last_usage else {
            return Ok(if offer.counter == 0 && offer.balance == Amount::ZERO {
                Ok(())
            } else {
                Err(Claim::Refuse(
                    "a card with value or history must show its last usage record".into(),
                ))
            });
        };
        if record.counter != offer.counter || record.balance_after != offer.balance {
            return Ok(Err(Claim::Refuse(
                "the card's last usage record does not describe the balance it claims".into(),
            )));
        }
        match self.genuine_writer(&card_id, record)? {
            None => {
                return Ok(Err(Claim::Refuse(
                    "the card's last usage record was not written by a party the center knows"
                        .into(),
                )))
            }
            // The card signed the balance and counter this load wrote: it reached the card.
            // A load still pending is settled by this; one cancelled reveals a copy.
            Some(Writer::Load(load)) if load.status != "committed" => {
                let today = self.today().0;
                if self.db.transaction(|tx| commit_load(tx, &load, today))? {
                    return Err(CenterError::CardBlocked(card_id));
                }
            }
            Some(_) => {}
        }
        if let Some(known) = self.remaining_value(&card_id)? {
            if offer.counter < known.card_counter {
                return Ok(Err(Claim::Refuse(format!(
                    "card {card_id} reports counter {} below the center's record {}",
                    offer.counter, known.card_counter
                ))));
            }
            if offer.counter == known.card_counter && offer.balance != known.balance {
                return Ok(Err(Claim::Refuse(format!(
                    "card {card_id} claims {} at counter {} where the center knows {}",
                    offer.balance, offer.counter, known.balance
                ))));
            }
        }
        Ok(Ok(()))
    }
}
