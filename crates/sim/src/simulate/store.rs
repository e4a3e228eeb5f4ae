//! The simulated terminals' purchase store: bounded by one day's business.
//!
//! A terminal keeps a purchase until the center has acknowledged it, and a purchase in doubt
//! until it is settled; after that only its amount matters (for the terminal's totals). Ten
//! thousand terminals keeping every record of thirty days would hold three million records
//! in memory, so this store folds each acknowledged record into running totals and drops it.
//! Every trait method behaves as the production stores do for what is still held.

use valuecard_core::ids::CardId;
use valuecard_terminal::store::{
    LocalLists, PurchaseRecord, PurchaseStatus, TerminalStore, TerminalTotals,
};
use valuecard_terminal::TerminalError;

/// A terminal store that forgets what the center acknowledged, keeping its sum.
#[derive(Debug, Default)]
pub struct SimStore {
    next: u32,
    open: Vec<PurchaseRecord>,
    lists: LocalLists,
    /// Committed purchases already acknowledged and dropped.
    acknowledged: TerminalTotals,
}

impl SimStore {
    /// How many records the store holds now (what it has not been able to drop).
    pub fn held(&self) -> usize {
        self.open.len()
    }

    /// Drops what needs no more work: acknowledged committed purchases (into the totals)
    /// and cancelled ones (which moved no value).
    fn prune(&mut self) {
        let acknowledged = &mut self.acknowledged;
        self.open.retain(|record| match record.status {
            PurchaseStatus::Committed if record.uploaded => {
                acknowledged.committed_count += 1;
                acknowledged.committed_minor += record.amount.minor();
                false
            }
            PurchaseStatus::Cancelled => false,
            _ => true,
        });
    }
}

impl TerminalStore for SimStore {
    fn next_sequence(&mut self) -> Result<u32, TerminalError> {
        self.next = self
            .next
            .checked_add(1)
            .ok_or(TerminalError::Store("sequence exhausted".into()))?;
        Ok(self.next)
    }

    fn record(&mut self, record: &PurchaseRecord) -> Result<(), TerminalError> {
        self.open.push(record.clone());
        Ok(())
    }

    fn set_status(&mut self, sequence: u32, status: PurchaseStatus) -> Result<(), TerminalError> {
        let record = self
            .open
            .iter_mut()
            .find(|record| record.sequence == sequence)
            .ok_or_else(|| TerminalError::Store(format!("no purchase {sequence}")))?;
        record.status = status;
        Ok(())
    }

    fn in_doubt_for_card(&self, card_id: &CardId) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self
            .open
            .iter()
            .filter(|record| record.card_id == *card_id && record.status == PurchaseStatus::InDoubt)
            .cloned()
            .collect())
    }

    fn records(&self) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self.open.clone())
    }

    fn pending_uploads(&self, limit: usize) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self
            .open
            .iter()
            .filter(|record| record.status == PurchaseStatus::Committed && !record.uploaded)
            .take(limit)
            .cloned()
            .collect())
    }

    fn mark_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        for record in &mut self.open {
            if sequences.contains(&record.sequence) {
                record.uploaded = true;
            }
        }
        self.prune();
        Ok(())
    }

    fn lists(&self) -> Result<LocalLists, TerminalError> {
        Ok(self.lists.clone())
    }

    fn save_lists(&mut self, lists: &LocalLists) -> Result<(), TerminalError> {
        self.lists = lists.clone();
        Ok(())
    }

    fn totals(&self) -> Result<TerminalTotals, TerminalError> {
        let mut totals = self.acknowledged;
        for record in &self.open {
            match record.status {
                PurchaseStatus::Committed => {
                    totals.committed_count += 1;
                    totals.committed_minor += record.amount.minor();
                }
                PurchaseStatus::InDoubt => {
                    totals.in_doubt_count += 1;
                    totals.in_doubt_minor += record.amount.minor();
                }
                PurchaseStatus::Cancelled => {}
            }
        }
        Ok(totals)
    }
}
