//! The center's reconciliation of value (seed 003, Fig. 9's remaining-value database): what
//! it issued and loaded, what terminals reported spent, what it authorized whose outcome at
//! the card is not known yet, and the sum of the remaining values it keeps per card.
//!
//! Every committed load raises a card's remaining value by its amount and every uploaded
//! purchase lowers it by its amount, so over the center's own records
//!
//! ```text
//! issued + loaded - restored - spent = remaining value
//! ```
//!
//! (with online charges added and online payments taken away, seed 004: `online.rs`)
//!
//! holds exactly once every terminal has uploaded, no load is in flight and no card was spent
//! twice. Each way it can fail to hold says something different:
//!
//! - A load in flight may or may not be on its card (the card's answer was lost): while some
//!   are, the remaining value may exceed the left side by up to their sum.
//! - A copied card spending one state twice (or a card claiming more than it holds) makes the
//!   remaining value on record exceed the left side: only the first spend of a state moves
//!   the record, every spend counts in `spent`. The excess is value created.
//! - Purchases a terminal has not uploaded yet are not known to the center. If the card was
//!   loaded since, the load's balance already shows them and the remaining value falls short
//!   of the left side by that spending until the terminal syncs. If not, they are missing from
//!   `spent` and from the remaining value alike: the equation holds, but the remaining value
//!   overstates what the cards hold by that spending. Either way only the terminals' next
//!   sync tells; nothing at the center can know it offline.
//!
//! A move of a chip's services to a new chip (seed 002, `moves.rs`) takes the old card out
//! of the remaining value and puts the same amount on the new card's record: it creates
//! none either.
//!
//! Card-to-card transfers (seed 000) move value and create none: a destination's record
//! raises its remaining value by the amount and the source's record lowers its own by the
//! same, so the equation above holds with every completed transfer in it. A transfer the
//! destination received while the source still holds the amount reserved (in flight)
//! raises the remaining value until the source's debit is reported; like a load in flight it
//! is tolerated up to its amount. A destination that received value no source ever debits
//! shows as excess once the hold period is over, and is alerted (`transfers.rs`).

use crate::sql::Executor;
use crate::{Center, CenterError};

/// One consistent snapshot of the center's value totals, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// Committed first loads: the value cards were issued with.
    pub issued: u64,
    /// Committed later loads (recharges).
    pub loaded: u64,
    /// What replacement cards were issued with for destroyed cards (`restore_card`): the
    /// destroyed card's remaining value moved, it was not paid in again.
    pub restored: u64,
    /// Purchases uploaded by terminals (usage records).
    pub spent: u64,
    /// How many purchases those are.
    pub purchases: u64,
    /// Loads authorized whose outcome at the card is not known yet.
    pub in_flight: u64,
    pub in_flight_count: u64,
    /// The sum of the remaining-value records of every card that was not replaced.
    pub remaining: u64,
    /// How many cards have a remaining-value record in that sum.
    pub cards_with_remaining: u64,
    /// Card-to-card transfers: they move value between cards and add nothing to the
    /// equation; those in flight are tolerated like loads in flight.
    pub transfers: crate::transfers::TransferTotals,
    /// Memory cards (seed 001): charged and spent through machines, apart from the purse
    /// totals above, with their own equation.
    pub memcards: crate::memcard::MemcardTotals,
    /// Online charges and payments (seed 004), as the settlement system's security server
    /// reported them: the purse's own value, in the equation.
    pub online: crate::online::OnlineTotals,
    /// Purse value moved from old chips to new ones (seed 002): it changed cards and is in
    /// no term of the equation; the old cards leave the remaining value, the new cards'
    /// records carry it.
    pub moves: crate::moves::MoveTotals,
}

/// How the totals stand against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconciliationStatus {
    /// issued + loaded - restored - spent equals the remaining value and nothing is in flight.
    Reconciled,
    /// The remaining value on record falls short: loads showed card balances lower than the
    /// uploaded purchases explain, so terminals still hold purchases to upload; or memory-card
    /// records show writes their machines have not uploaded yet.
    UploadsOutstanding,
    /// Loads (or transfers whose source has not shown its debit yet) are in flight and the
    /// totals agree within them: they settle once those do.
    LoadsInFlight,
    /// The remaining value on record exceeds what was paid in and not spent, beyond anything
    /// in flight: value was created (a copied card spent a state twice, or a card claimed
    /// more than it held); or the memory-card records contradict each other or the float
    /// (`memcard::MemcardStatus::Excess`).
    Excess,
}

impl ReconciliationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconciliationStatus::Reconciled => "reconciled",
            ReconciliationStatus::UploadsOutstanding => "uploads_outstanding",
            ReconciliationStatus::LoadsInFlight => "loads_in_flight",
            ReconciliationStatus::Excess => "excess",
        }
    }
}

impl Reconciliation {
    /// issued + loaded + charged online - restored - spent - spent online: what the cards
    /// should hold by the center's records (negative when more was spent than ever paid in).
    pub fn expected_remaining(&self) -> i128 {
        i128::from(self.issued) + i128::from(self.loaded) + i128::from(self.online.charged)
            - i128::from(self.restored)
            - i128::from(self.spent)
            - i128::from(self.online.spent)
    }

    /// remaining - expected: zero when reconciled; positive when the center records more value
    /// on cards than was paid in and not spent.
    pub fn difference(&self) -> i128 {
        i128::from(self.remaining) - self.expected_remaining()
    }

    pub fn status(&self) -> ReconciliationStatus {
        let purse = self.purse_status();
        match (purse, self.memcards.status()) {
            (ReconciliationStatus::Excess, _) | (_, crate::memcard::MemcardStatus::Excess) => {
                ReconciliationStatus::Excess
            }
            (ReconciliationStatus::LoadsInFlight, _) => ReconciliationStatus::LoadsInFlight,
            (_, crate::memcard::MemcardStatus::UploadsOutstanding) => {
                ReconciliationStatus::UploadsOutstanding
            }
            (purse, _) => purse,
        }
    }

    /// The status of the purse's totals alone (cards of seeds 003 and 000).
    pub fn purse_status(&self) -> ReconciliationStatus {
        let difference = self.difference();
        let tolerated = i128::from(self.in_flight) + i128::from(self.transfers.in_flight);
        if difference > tolerated {
            ReconciliationStatus::Excess
        } else if self.in_flight_count > 0 || self.transfers.in_flight_count > 0 {
            ReconciliationStatus::LoadsInFlight
        } else if difference < 0 {
            ReconciliationStatus::UploadsOutstanding
        } else {
            ReconciliationStatus::Reconciled
        }
    }
}

/// The column the online totals start at in the reconciliation's statement: after the
/// purse's 9 columns, the transfers' 9 and the memory cards' 14.
const ONLINE_COLUMN: usize = 32;
/// The column the moves' totals start at: after the online totals' 4.
const MOVES_COLUMN: usize = ONLINE_COLUMN + 4;

/// A sum or count read back from the database: never negative, or the row is corrupt.
fn total(row: &crate::sql::Row, index: usize) -> Result<u64, CenterError> {
    u64::try_from(row.int(index)?).map_err(|_| {
        CenterError::Storage(format!("total {index} of the reconciliation is negative"))
    })
}

impl Center {
    /// The reconciliation of the center's records, read in one statement so that a center
    /// serving requests meanwhile still gives one consistent snapshot (PostgreSQL gives each
    /// statement its own snapshot under READ COMMITTED, so separate queries could disagree).
    pub fn reconciliation(&mut self) -> Result<Reconciliation, CenterError> {
        let sql = format!(
            "SELECT
                 (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM loads
                      WHERE kind = 'initial' AND status = 'committed'),
                 (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM loads
                      WHERE kind = 'recharge' AND status = 'committed'),
                 (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM card_restorations),
                 (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM usage_records),
                 (SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records),
                 (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM loads
                      WHERE status = 'pending'),
                 (SELECT CAST(COUNT(*) AS BIGINT) FROM loads WHERE status = 'pending'),
                 (SELECT CAST(COALESCE(SUM(balance_minor), 0) AS BIGINT) FROM remaining_values
                      WHERE card_id NOT IN (SELECT card_id FROM card_restorations)
                        AND card_id NOT IN (SELECT source FROM card_moves)),
                 (SELECT CAST(COUNT(*) AS BIGINT) FROM remaining_values
                      WHERE card_id NOT IN (SELECT card_id FROM card_restorations)
                        AND card_id NOT IN (SELECT source FROM card_moves)),
                 {},
                 {},
                 {},
                 {}",
            crate::transfers::TOTALS_COLUMNS,
            crate::memcard::totals_columns(),
            crate::online::TOTALS_COLUMNS,
            crate::moves::TOTALS_COLUMNS
        );
        let row = self.db.query_one(&sql, &[])?;
        Ok(Reconciliation {
            issued: total(&row, 0)?,
            loaded: total(&row, 1)?,
            restored: total(&row, 2)?,
            spent: total(&row, 3)?,
            purchases: total(&row, 4)?,
            in_flight: total(&row, 5)?,
            in_flight_count: total(&row, 6)?,
            remaining: total(&row, 7)?,
            cards_with_remaining: total(&row, 8)?,
            transfers: crate::transfers::totals_from(&row, 9)?,
            memcards: crate::memcard::totals_from(&row, 18)?,
            online: crate::online::totals_from(&row, ONLINE_COLUMN)?,
            moves: crate::moves::totals_from(&row, MOVES_COLUMN)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(issued: u64, spent: u64, in_flight: u64, remaining: u64) -> Reconciliation {
        Reconciliation {
            issued,
            loaded: 0,
            restored: 0,
            spent,
            purchases: u64::from(spent > 0),
            in_flight,
            in_flight_count: u64::from(in_flight > 0),
            remaining,
            cards_with_remaining: 1,
            transfers: Default::default(),
            memcards: Default::default(),
            online: Default::default(),
            moves: Default::default(),
        }
    }

    #[test]
    fn status_tells_settled_unsettled_and_broken_totals_apart() {
        assert_eq!(
            totals(1000, 300, 0, 700).status(),
            ReconciliationStatus::Reconciled
        );
        // A lost answer: the load may or may not be on the card yet.
        for remaining in [500, 700, 900] {
            assert_eq!(
                totals(1000, 300, 200, remaining).status(),
                ReconciliationStatus::LoadsInFlight
            );
        }
        // A load showed a balance 200 lower than uploads explain: a terminal owes records.
        let behind = totals(1000, 300, 0, 500);
        assert_eq!(behind.status(), ReconciliationStatus::UploadsOutstanding);
        assert_eq!(behind.difference(), -200);
        // A copy spent the same 300 state twice: more spent than the record moved.
        let cloned = totals(1000, 600, 0, 700);
        assert_eq!(cloned.status(), ReconciliationStatus::Excess);
        assert_eq!(cloned.difference(), 300);
        // More on record than in flight can explain.
        assert_eq!(
            totals(1000, 300, 200, 901).status(),
            ReconciliationStatus::Excess
        );
        // A transfer received whose source has not shown the debit yet: tolerated up to
        // its amount, beyond it value was created.
        let mut transfer = totals(1000, 0, 0, 1250);
        transfer.transfers.in_flight = 250;
        transfer.transfers.in_flight_count = 1;
        assert_eq!(transfer.status(), ReconciliationStatus::LoadsInFlight);
        transfer.remaining = 1251;
        assert_eq!(transfer.status(), ReconciliationStatus::Excess);
        // Spending beyond everything paid in stays a number, not an overflow.
        assert_eq!(
            totals(0, u64::MAX, 0, 0).expected_remaining(),
            -i128::from(u64::MAX)
        );
    }
}
