//! The remaining-value record per card (Fig. 9's remaining-value database): the balance
//! after the newest update the center knows of, which restoring a destroyed card moves to
//! its replacement and the reconciliation sums.

use valuecard_core::ids::CardId;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::sql::{self, Executor};
use crate::{Center, CenterError};

/// The center's remaining-value record for one card (Fig. 9: restoring a destroyed card).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemainingValue {
    pub card_id: CardId,
    pub balance: Amount,
    pub card_counter: u32,
    pub updated_on: Date,
}

impl Center {
    /// The remaining-value record of a card: the balance after the newest update the center
    /// knows of (a load, an uploaded purchase, a transfer, an online update).
    pub fn remaining_value(
        &mut self,
        card_id: &CardId,
    ) -> Result<Option<RemainingValue>, CenterError> {
        let row = self.db.query_optional(
            "SELECT balance_minor, card_counter, updated_on FROM remaining_values WHERE card_id = $1",
            &[card_id.0[..].into()],
        )?;
        row.map(|row| {
            Ok(RemainingValue {
                card_id: *card_id,
                balance: Amount::new(row.int(0)? as u64)
                    .map_err(|e| CenterError::Storage(e.to_string()))?,
                card_counter: row.int(1)? as u32,
                updated_on: Date(row.int(2)? as u32),
            })
        })
        .transpose()
    }
}

/// Moves a card's remaining-value record forward to `balance` at `counter` (the card's
/// counter after the update that left it): a record only ever moves to a higher counter, so
/// updates learnt out of order leave the newest.
pub(crate) fn advance_remaining_value(
    tx: &mut dyn sql::Executor,
    card_id: &CardId,
    balance: Amount,
    counter: u32,
    today: u32,
) -> Result<(), CenterError> {
    tx.execute(
        "INSERT INTO remaining_values (card_id, balance_minor, card_counter, updated_on) VALUES ($1, $2, $3, $4)
         ON CONFLICT (card_id) DO UPDATE SET balance_minor = excluded.balance_minor,
             card_counter = excluded.card_counter, updated_on = excluded.updated_on
         WHERE excluded.card_counter > remaining_values.card_counter",
        &[
            card_id.0[..].into(),
            balance.into(),
            counter.into(),
            today.into(),
        ],
    )?;
    Ok(())
}
