//! The memory-card part of the reconciliation (seed 001): float granted to charge machines,
//! value charged, value spent at payment machines, and the value on cards, from the
//! uploaded write records alone.
//!
//! Two equations, over what the records allow:
//!
//! ```text
//! float granted = charged + float still in machines - charged beyond float
//! on cards      = charged - spent + charged in gaps - spent in gaps
//! ```
//!
//! *Float still in machines* is, per charge machine, its grants minus its uploaded charges
//! (never below zero); *charged beyond float* is the opposite excess, which an honest SAM
//! never shows. *On cards* is the balance of each card's newest state on record (the first
//! record of each state, lowest counter after the write).
//!
//! A write a machine has not uploaded is not known to the center. When a later record of
//! the same card was uploaded, its previous state shows the missing write: the record
//! starts from a state no stored record wrote (a *gap*), and the difference between its
//! balance before and the balance of the newest stored state older than the gap is the net
//! of the missing writes: positive when charges are missing (*charged in gaps*), negative
//! when payments are (*spent in gaps*). Gaps close when the machines upload. A missing
//! write after which the card was never seen again leaves no trace: the equation holds
//! and *on cards* states that card's value as of its last uploaded write.
//!
//! The equation fails (`unexplained` is not zero) only when the records contradict each
//! other: a card state spent twice (the second spend counts in `spent` but the newest state
//! holds only one branch). Charges missing in gaps cannot exceed the float still in
//! machines; more than that is value no grant covers.

use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::memcard::COUNTER_START;

/// The memory-card totals, in minor units, read with the rest of the reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemcardTotals {
    /// Float granted to charge machines, and how many grants.
    pub float_granted: u64,
    pub grants: u64,
    /// Charges uploaded by charge machines, and how many.
    pub charged: u64,
    pub charges: u64,
    /// Payments uploaded by payment machines, and how many.
    pub spent: u64,
    pub payments: u64,
    /// The balances of each card's newest state on record, and how many cards.
    pub on_cards: u64,
    pub cards: u64,
    /// Per charge machine, grants minus uploaded charges, summed (never below zero each).
    pub float_in_machines: u64,
    /// Per charge machine, uploaded charges beyond its grants, summed.
    pub charged_beyond_float: u64,
    /// Records that start from a state no stored record wrote, and the net they show
    /// missing: charges (positive) and payments (negative) not uploaded yet.
    pub gaps: u64,
    pub charged_in_gaps: u64,
    pub spent_in_gaps: u64,
    /// Card states spent twice (each alerted once).
    pub states_spent_twice: u64,
}

/// How the memory-card totals stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemcardStatus {
    /// Every record links to the one before it and the equations hold.
    Reconciled,
    /// Records show writes the machines have not uploaded yet (gaps); the equations hold
    /// with them.
    UploadsOutstanding,
    /// The records contradict each other or the grants: a state spent twice, a charge
    /// machine past its float, or charges in gaps no float covers.
    Excess,
}

impl MemcardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemcardStatus::Reconciled => "reconciled",
            MemcardStatus::UploadsOutstanding => "uploads_outstanding",
            MemcardStatus::Excess => "excess",
        }
    }
}

impl MemcardTotals {
    /// charged - spent + charged in gaps - spent in gaps: what the cards should hold by the
    /// records.
    pub fn expected_on_cards(&self) -> i128 {
        i128::from(self.charged) - i128::from(self.spent) + i128::from(self.charged_in_gaps)
            - i128::from(self.spent_in_gaps)
    }

    /// on cards - expected: zero unless the records contradict each other.
    pub fn unexplained(&self) -> i128 {
        i128::from(self.on_cards) - self.expected_on_cards()
    }

    pub fn status(&self) -> MemcardStatus {
        if self.unexplained() != 0
            || self.states_spent_twice > 0
            || self.charged_beyond_float > 0
            || self.charged_in_gaps > self.float_in_machines
        {
            MemcardStatus::Excess
        } else if self.gaps > 0 {
            MemcardStatus::UploadsOutstanding
        } else {
            MemcardStatus::Reconciled
        }
    }
}

/// The newest state of each card among the first records of its states: no record of
/// the card has a lower counter after its write (ties, only between the two branches of
/// a copied card, go to the higher counter before).
const NEWEST: &str = "NOT EXISTS (SELECT 1 FROM memcard_states t WHERE t.card_id = s.card_id
    AND (t.written_counter < s.written_counter
         OR (t.written_counter = s.written_counter AND t.previous_counter > s.previous_counter)))";

/// Per machine that was granted float or charged: what it was granted and charged.
const PER_MACHINE: &str = "(SELECT ids.machine_id,
        (SELECT COALESCE(SUM(g.amount_minor), 0) FROM memcard_float_grants g
             WHERE g.machine_id = ids.machine_id) AS granted,
        (SELECT COALESCE(SUM(w.amount_minor), 0) FROM memcard_writes w
             WHERE w.machine_id = ids.machine_id AND w.kind = 'charge') AS charged
    FROM (SELECT machine_id FROM memcard_float_grants
          UNION SELECT machine_id FROM memcard_writes WHERE kind = 'charge') ids) per_machine";

/// Each gap's net effect: the balance before the record that starts from an unknown state,
/// less the balance of the newest stored state older than that state (zero for none: the
/// card was blank).
fn gaps() -> String {
    format!(
        "(SELECT r.balance_before_minor - COALESCE((SELECT p.balance_after_minor FROM memcard_states p
              WHERE p.card_id = r.card_id AND p.written_counter > r.previous_counter
              ORDER BY p.written_counter ASC, p.previous_counter DESC LIMIT 1), 0) AS effect
          FROM memcard_states r
          WHERE r.previous_counter != {COUNTER_START}
            AND NOT EXISTS (SELECT 1 FROM memcard_states w
                WHERE w.card_id = r.card_id AND w.written_counter = r.previous_counter)) gaps"
    )
}

/// The memory-card totals as one select list, so that the reconciliation reads them in its
/// own single statement (one snapshot).
pub(crate) fn totals_columns() -> String {
    let gaps = gaps();
    format!(
        "(SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_float_grants),
         (SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_float_grants),
         (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_writes WHERE kind = 'charge'),
         (SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_writes WHERE kind = 'charge'),
         (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_writes WHERE kind = 'payment'),
         (SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_writes WHERE kind = 'payment'),
         (SELECT CAST(COALESCE(SUM(s.balance_after_minor), 0) AS BIGINT) FROM memcard_states s WHERE {NEWEST}),
         (SELECT CAST(COUNT(DISTINCT card_id) AS BIGINT) FROM memcard_states),
         (SELECT CAST(COALESCE(SUM(CASE WHEN granted > charged THEN granted - charged ELSE 0 END), 0) AS BIGINT)
              FROM {PER_MACHINE}),
         (SELECT CAST(COALESCE(SUM(CASE WHEN charged > granted THEN charged - granted ELSE 0 END), 0) AS BIGINT)
              FROM {PER_MACHINE}),
         (SELECT CAST(COUNT(*) AS BIGINT) FROM {gaps}),
         (SELECT CAST(COALESCE(SUM(CASE WHEN effect > 0 THEN effect ELSE 0 END), 0) AS BIGINT) FROM {gaps}),
         (SELECT CAST(COALESCE(SUM(CASE WHEN effect < 0 THEN 0 - effect ELSE 0 END), 0) AS BIGINT) FROM {gaps}),
         (SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_spent_twice)"
    )
}

/// Reads the totals starting at column `at`.
pub(crate) fn totals_from(row: &crate::sql::Row, at: usize) -> Result<MemcardTotals, CenterError> {
    let total = |index: usize| -> Result<u64, CenterError> {
        u64::try_from(row.int(at + index)?)
            .map_err(|_| CenterError::Storage("a memory-card total is negative".into()))
    };
    Ok(MemcardTotals {
        float_granted: total(0)?,
        grants: total(1)?,
        charged: total(2)?,
        charges: total(3)?,
        spent: total(4)?,
        payments: total(5)?,
        on_cards: total(6)?,
        cards: total(7)?,
        float_in_machines: total(8)?,
        charged_beyond_float: total(9)?,
        gaps: total(10)?,
        charged_in_gaps: total(11)?,
        spent_in_gaps: total(12)?,
        states_spent_twice: total(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals() -> MemcardTotals {
        MemcardTotals {
            float_granted: 10_000,
            grants: 1,
            charged: 5_000,
            charges: 2,
            spent: 1_200,
            payments: 3,
            on_cards: 3_800,
            cards: 2,
            float_in_machines: 5_000,
            ..MemcardTotals::default()
        }
    }

    #[test]
    fn status_tells_complete_outstanding_and_contradicting_records_apart() {
        assert_eq!(totals().status(), MemcardStatus::Reconciled);
        assert_eq!(totals().unexplained(), 0);
        // A payment of 300 not uploaded, seen through the record after it.
        let mut outstanding = totals();
        outstanding.on_cards -= 300;
        outstanding.gaps = 1;
        outstanding.spent_in_gaps = 300;
        assert_eq!(outstanding.status(), MemcardStatus::UploadsOutstanding);
        assert_eq!(outstanding.unexplained(), 0);
        // A state spent twice: one branch's payment is on no card.
        let mut twice = totals();
        twice.spent += 400;
        twice.payments += 1;
        twice.states_spent_twice = 1;
        assert_eq!(twice.unexplained(), 400);
        assert_eq!(twice.status(), MemcardStatus::Excess);
        // Charges in gaps beyond every machine's unaccounted float.
        let mut uncovered = totals();
        uncovered.gaps = 1;
        uncovered.charged_in_gaps = 5_001;
        uncovered.on_cards += 5_001;
        assert_eq!(uncovered.unexplained(), 0);
        assert_eq!(uncovered.status(), MemcardStatus::Excess);
        // A charge machine past its grants.
        let mut beyond = totals();
        beyond.charged_beyond_float = 1;
        assert_eq!(beyond.status(), MemcardStatus::Excess);
    }
}
