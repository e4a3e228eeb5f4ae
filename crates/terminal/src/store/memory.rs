//! The terminal's store in memory: for benchmarks, simulations and tests.

use super::*;

/// A store in memory: for benchmarks, simulations and tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    next: u32,
    records: Vec<PurchaseRecord>,
    lists: LocalLists,
    services: Vec<ServiceEntry>,
    transfers: Vec<StoredTransfer>,
    /// A memory-card machine's log (seed 001).
    pub(super) memcard_writes: Vec<LoggedWrite>,
    /// Set by [`MemoryStore::forgetting_acknowledged`]: committed purchases the center
    /// acknowledged, folded into totals and dropped.
    acknowledged: Option<TerminalTotals>,
}

impl MemoryStore {
    /// A store that keeps a purchase only while it needs work: once the center acknowledged
    /// a committed purchase it is folded into the totals and dropped, and a cancelled one
    /// (which moved no value) is dropped at once. Memory stays bounded by what is not yet
    /// uploaded or settled (a simulation of many terminals over many days).
    pub fn forgetting_acknowledged() -> Self {
        MemoryStore {
            acknowledged: Some(TerminalTotals::default()),
            ..MemoryStore::default()
        }
    }

    /// How many purchase records the store holds now.
    pub fn held(&self) -> usize {
        self.records.len()
    }

    fn forget_acknowledged(&mut self) {
        let Some(acknowledged) = &mut self.acknowledged else {
            return;
        };
        self.records.retain(|record| match record.status {
            PurchaseStatus::Committed if record.uploaded => {
                acknowledged.add(std::slice::from_ref(record));
                false
            }
            PurchaseStatus::Cancelled => false,
            _ => true,
        });
    }
}

impl TerminalStore for MemoryStore {
    fn next_sequence(&mut self) -> Result<u32, TerminalError> {
        self.next = self
            .next
            .checked_add(1)
            .ok_or(TerminalError::Store("sequence exhausted".into()))?;
        Ok(self.next)
    }

    fn record(&mut self, record: &PurchaseRecord) -> Result<(), TerminalError> {
        self.records.push(record.clone());
        Ok(())
    }

    fn set_status(&mut self, sequence: u32, status: PurchaseStatus) -> Result<(), TerminalError> {
        let record = self
            .records
            .iter_mut()
            .find(|record| record.sequence == sequence)
            .ok_or_else(|| TerminalError::Store(format!("no purchase {sequence}")))?;
        record.status = status;
        Ok(())
    }

    fn in_doubt_for_card(&self, card_id: &CardId) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self
            .records
            .iter()
            .filter(|record| record.card_id == *card_id && record.status == PurchaseStatus::InDoubt)
            .cloned()
            .collect())
    }

    fn records(&self) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self.records.clone())
    }

    fn mark_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        for record in &mut self.records {
            if sequences.contains(&record.sequence) {
                record.uploaded = true;
            }
        }
        self.forget_acknowledged();
        Ok(())
    }

    fn pending_uploads(&self, limit: usize) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self
            .records
            .iter()
            .filter(|record| record.status == PurchaseStatus::Committed && !record.uploaded)
            .take(limit)
            .cloned()
            .collect())
    }

    fn totals(&self) -> Result<TerminalTotals, TerminalError> {
        let mut totals = self.acknowledged.unwrap_or_default();
        totals.add(&self.records);
        Ok(totals)
    }

    fn save_transfer(&mut self, report: &TransferReport) -> Result<(), TerminalError> {
        match self.transfers.iter_mut().find(|t| {
            t.report.source == report.source && t.report.challenge_source == report.challenge_source
        }) {
            Some(existing) => {
                existing.report = report.clone();
                existing.uploaded = false;
            }
            None => self.transfers.push(StoredTransfer {
                report: report.clone(),
                uploaded: false,
                settled: false,
            }),
        }
        Ok(())
    }

    fn transfers(&self) -> Result<Vec<StoredTransfer>, TerminalError> {
        Ok(self.transfers.clone())
    }

    fn transfer_of(
        &self,
        source: &CardId,
        challenge_source: &Challenge,
    ) -> Result<Option<StoredTransfer>, TerminalError> {
        Ok(self
            .transfers
            .iter()
            .find(|t| t.report.source == *source && t.report.challenge_source == *challenge_source)
            .cloned())
    }

    fn mark_transfer_settled(&mut self, sequence: u32) -> Result<(), TerminalError> {
        for transfer in &mut self.transfers {
            if transfer.report.sequence == sequence {
                transfer.settled = true;
            }
        }
        Ok(())
    }

    fn mark_transfers_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        for transfer in &mut self.transfers {
            if sequences.contains(&transfer.report.sequence) {
                transfer.uploaded = true;
            }
        }
        Ok(())
    }

    fn lists(&self) -> Result<LocalLists, TerminalError> {
        Ok(self.lists.clone())
    }

    fn save_lists(&mut self, lists: &LocalLists) -> Result<(), TerminalError> {
        self.lists = lists.clone();
        Ok(())
    }

    fn record_service(&mut self, service: &ServiceEntry) -> Result<(), TerminalError> {
        if self.services.iter().any(|s| s.sequence == service.sequence) {
            return Err(TerminalError::Store(format!(
                "service {} is already recorded",
                service.sequence
            )));
        }
        self.services.push(service.clone());
        Ok(())
    }

    fn settle_service(
        &mut self,
        sequence: u32,
        signature: Option<Signature>,
    ) -> Result<(), TerminalError> {
        let service = self
            .services
            .iter_mut()
            .find(|s| s.sequence == sequence)
            .ok_or_else(|| TerminalError::Store(format!("no service {sequence}")))?;
        service.status = match signature {
            Some(_) => ServiceStatus::Signed,
            None => ServiceStatus::Cancelled,
        };
        service.card_signature = signature;
        Ok(())
    }

    fn services(&self) -> Result<Vec<ServiceEntry>, TerminalError> {
        Ok(self.services.clone())
    }

    fn mark_services_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        for service in &mut self.services {
            if sequences.contains(&service.sequence) {
                service.uploaded = true;
            }
        }
        Ok(())
    }
}
