//! What a terminal remembers: its transaction sequence and a record of every purchase, kept
//! durably before the DEBIT is sent so that a purchase whose answer was lost is never
//! forgotten (it stays "in doubt" until the card is seen again).

use valuecard_core::crypto::Signature;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{ListDelta, ListEntry, ListReason};
use valuecard_core::messages::credit::ServiceRecord;
use valuecard_core::messages::purse::{Challenge, TerminalStamp, UsageRecord};
use valuecard_core::messages::transfer::TransferReport;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::TerminalError;

mod memcard;
mod memory;
mod sqlite;

pub use memcard::{LoggedWrite, MemcardLog, MemcardTerminalStore, WriteStatus};
pub use memory::MemoryStore;
pub use sqlite::{sqlite_store_exists, SqliteStore};

/// Where a purchase stands at the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurchaseStatus {
    /// DEBIT sent, answer not received: the card may or may not have committed.
    InDoubt,
    /// The card confirmed the debit (directly, or later from its last transaction).
    Committed,
    /// The card shows it never applied the debit.
    Cancelled,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::InDoubt => "in_doubt",
            PurchaseStatus::Committed => "committed",
            PurchaseStatus::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "in_doubt" => PurchaseStatus::InDoubt,
            "committed" => PurchaseStatus::Committed,
            "cancelled" => PurchaseStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One purchase as the terminal recorded it, with the card's previous usage record: the
/// usage-management record of Fig. 9 that goes to the center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRecord {
    pub sequence: u32,
    pub card_id: CardId,
    /// The card's counter before the debit.
    pub card_counter: u32,
    pub amount: Amount,
    pub balance_before: Amount,
    pub balance_after: Amount,
    pub challenge_terminal: Challenge,
    pub challenge_card: Challenge,
    pub date: Date,
    pub status: PurchaseStatus,
    pub previous_usage: Option<UsageRecord>,
    /// ST: the terminal's signature over the purchase commit.
    pub terminal_signature: Signature,
    /// The terminal's stamp the purchase carried (Figs. 10-12).
    pub stamp: TerminalStamp,
    /// Whether the center has acknowledged this record.
    pub uploaded: bool,
    /// The upper bound the card agreed to in INITIALIZE PURCHASE.
    pub amount_max: Amount,
    /// The card's SU over the state it spent from; the center needs it to believe the
    /// purchase happened. Records stored before it was kept have none and are not uploaded.
    pub card_signature: Option<Signature>,
}

/// Where a credit service (Fig. 17) stands at the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceStatus {
    /// RECORD SERVICE sent, answer not received: the card may or may not have signed it.
    InDoubt,
    /// The card's SU(M * IDU) is held: ready for the center.
    Signed,
    /// The card shows it never recorded the service.
    Cancelled,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::InDoubt => "in_doubt",
            ServiceStatus::Signed => "signed",
            ServiceStatus::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "in_doubt" => ServiceStatus::InDoubt,
            "signed" => ServiceStatus::Signed,
            "cancelled" => ServiceStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One credit service as the terminal recorded it: stored in doubt before RECORD SERVICE is
/// sent, then with the card's signature once the card answered (or its log showed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The terminal's sequence number (shared with purchases).
    pub sequence: u32,
    pub card_id: CardId,
    pub amount: Amount,
    pub date: Date,
    /// The number the card gives this record: its count before the service, plus one.
    pub service_number: u32,
    pub status: ServiceStatus,
    /// SU(M * IDU), when signed.
    pub card_signature: Option<Signature>,
    /// Whether the center has acknowledged this record.
    pub uploaded: bool,
}

impl ServiceEntry {
    /// The signed record for the center, once the card signed it.
    pub fn record(&self, terminal_id: DeviceId) -> Option<ServiceRecord> {
        if self.status != ServiceStatus::Signed {
            return None;
        }
        Some(ServiceRecord {
            card_id: self.card_id,
            terminal_id,
            terminal_sequence: self.sequence,
            service_number: self.service_number,
            amount: self.amount,
            date: self.date,
            card_signature: self.card_signature?,
        })
    }
}

fn no_service_records() -> TerminalError {
    TerminalError::Store("this store keeps no credit service records".into())
}

/// What a terminal keeps of the center's lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalLists {
    pub version: u64,
    pub cards: std::collections::HashMap<CardId, ListReason>,
    pub terminals: std::collections::HashMap<DeviceId, ([u8; 32], u32)>,
}

impl LocalLists {
    /// Applies a delta; entries at or below the held version are ignored, so a repeated
    /// delta changes nothing.
    pub fn apply(&mut self, delta: &ListDelta) {
        for entry in &delta.entries {
            if entry.version() <= self.version {
                continue;
            }
            match entry {
                ListEntry::Card {
                    card_id, reason, ..
                } => {
                    self.cards.entry(*card_id).or_insert(*reason);
                }
                ListEntry::Terminal {
                    device_id,
                    first_stamp,
                    stamp_count,
                    ..
                } => {
                    self.terminals
                        .insert(*device_id, (*first_stamp, *stamp_count));
                }
            }
        }
        self.version = self.version.max(delta.version);
    }
}

/// Sum of committed purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TerminalTotals {
    pub committed_count: u64,
    pub committed_minor: u64,
    pub in_doubt_count: u64,
    pub in_doubt_minor: u64,
}

impl TerminalTotals {
    /// Counts `records` in: committed and in-doubt purchases (a cancelled one moved nothing).
    pub fn add(&mut self, records: &[PurchaseRecord]) {
        for record in records {
            match record.status {
                PurchaseStatus::Committed => {
                    self.committed_count += 1;
                    self.committed_minor += record.amount.minor();
                }
                PurchaseStatus::InDoubt => {
                    self.in_doubt_count += 1;
                    self.in_doubt_minor += record.amount.minor();
                }
                PurchaseStatus::Cancelled => {}
            }
        }
    }
}

/// The center's lists as a terminal last loaded them from its store: read once, kept in
/// step with every update.
#[derive(Debug, Default)]
pub(crate) struct ListCache(Option<LocalLists>);

impl ListCache {
    pub(crate) fn get(&mut self, store: &impl TerminalStore) -> Result<&LocalLists, TerminalError> {
        if self.0.is_none() {
            self.0 = Some(store.lists()?);
        }
        self.0
            .as_ref()
            .ok_or_else(|| TerminalError::Store("lists unavailable".into()))
    }

    /// Fetches the entries the terminal does not have yet, stores them, and answers the new
    /// list version.
    pub(crate) fn update(
        &mut self,
        store: &mut impl TerminalStore,
        link: &mut impl valuecard_core::messages::center::TerminalLink,
        device_id: DeviceId,
    ) -> Result<u64, TerminalError> {
        let mut lists = self.get(store)?.clone();
        loop {
            let delta = link.list_delta(device_id, lists.version)?;
            let before = lists.version;
            lists.apply(&delta);
            if delta.entries.is_empty() || lists.version == before {
                break;
            }
        }
        store.save_lists(&lists)?;
        let version = lists.version;
        self.0 = Some(lists);
        Ok(version)
    }
}

/// A transfer report as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransfer {
    pub report: TransferReport,
    pub uploaded: bool,
    /// The terminal saw the source settle this transfer (it holds it no longer, and the
    /// destination proved receipt) even though its answer, with the source's record, was
    /// lost: the value is no longer in flight. The center learns the debit from the
    /// source's later records.
    pub settled: bool,
}

fn no_transfer_records() -> TerminalError {
    TerminalError::Store("this store keeps no transfer reports".into())
}

pub trait TerminalStore: Send {
    /// Takes the next transaction sequence number; never returns the same one twice, even
    /// across a crash.
    fn next_sequence(&mut self) -> Result<u32, TerminalError>;
    /// Stores a purchase (status `InDoubt`) before its DEBIT is sent.
    fn record(&mut self, record: &PurchaseRecord) -> Result<(), TerminalError>;
    fn set_status(&mut self, sequence: u32, status: PurchaseStatus) -> Result<(), TerminalError>;
    fn in_doubt_for_card(&self, card_id: &CardId) -> Result<Vec<PurchaseRecord>, TerminalError>;
    fn records(&self) -> Result<Vec<PurchaseRecord>, TerminalError>;
    /// Committed purchases the center has not acknowledged yet, oldest first.
    fn pending_uploads(&self, limit: usize) -> Result<Vec<PurchaseRecord>, TerminalError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|record| record.status == PurchaseStatus::Committed && !record.uploaded)
            .take(limit)
            .collect())
    }
    fn mark_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError>;
    fn lists(&self) -> Result<LocalLists, TerminalError>;
    fn save_lists(&mut self, lists: &LocalLists) -> Result<(), TerminalError>;
    /// Stores a credit service (status `InDoubt`) before its RECORD SERVICE is sent.
    fn record_service(&mut self, _service: &ServiceEntry) -> Result<(), TerminalError> {
        Err(no_service_records())
    }
    /// How a service in doubt ended: signed by the card (`Some`), or never recorded (`None`).
    fn settle_service(
        &mut self,
        _sequence: u32,
        _signature: Option<Signature>,
    ) -> Result<(), TerminalError> {
        Err(no_service_records())
    }
    /// Every credit service, oldest first.
    fn services(&self) -> Result<Vec<ServiceEntry>, TerminalError> {
        Ok(Vec::new())
    }
    fn services_in_doubt_for_card(
        &self,
        card_id: &CardId,
    ) -> Result<Vec<ServiceEntry>, TerminalError> {
        Ok(self
            .services()?
            .into_iter()
            .filter(|s| s.card_id == *card_id && s.status == ServiceStatus::InDoubt)
            .collect())
    }
    /// Signed services the center has not acknowledged yet, oldest first.
    fn pending_service_uploads(&self, limit: usize) -> Result<Vec<ServiceEntry>, TerminalError> {
        Ok(self
            .services()?
            .into_iter()
            .filter(|s| s.status == ServiceStatus::Signed && !s.uploaded)
            .take(limit)
            .collect())
    }
    fn mark_services_uploaded(&mut self, _sequences: &[u32]) -> Result<(), TerminalError> {
        Err(no_service_records())
    }
    /// Stores a settlement terminal's transfer report (replacing the one of the same transfer,
    /// named by source and its challenge, sequence included) before each command that can
    /// move value is sent; the report is then due for upload again.
    fn save_transfer(&mut self, _report: &TransferReport) -> Result<(), TerminalError> {
        Err(no_transfer_records())
    }
    /// Every transfer report with whether the center acknowledged it, oldest first.
    fn transfers(&self) -> Result<Vec<StoredTransfer>, TerminalError> {
        Ok(Vec::new())
    }
    /// The report of one transfer, named by its source and the source's challenge.
    fn transfer_of(
        &self,
        source: &CardId,
        challenge_source: &Challenge,
    ) -> Result<Option<StoredTransfer>, TerminalError> {
        Ok(self.transfers()?.into_iter().find(|stored| {
            stored.report.source == *source && stored.report.challenge_source == *challenge_source
        }))
    }
    /// Reports the center has not acknowledged in their current form, oldest first.
    fn pending_transfer_uploads(&self, limit: usize) -> Result<Vec<TransferReport>, TerminalError> {
        Ok(self
            .transfers()?
            .into_iter()
            .filter(|t| !t.uploaded)
            .map(|t| t.report)
            .take(limit)
            .collect())
    }
    fn mark_transfers_uploaded(&mut self, _sequences: &[u32]) -> Result<(), TerminalError> {
        Err(no_transfer_records())
    }
    fn mark_transfer_settled(&mut self, _sequence: u32) -> Result<(), TerminalError> {
        Err(no_transfer_records())
    }
    fn totals(&self) -> Result<TerminalTotals, TerminalError> {
        let mut totals = TerminalTotals::default();
        totals.add(&self.records()?);
        Ok(totals)
    }
}

impl TerminalStore for Box<dyn TerminalStore> {
    fn next_sequence(&mut self) -> Result<u32, TerminalError> {
        (**self).next_sequence()
    }
    fn record(&mut self, record: &PurchaseRecord) -> Result<(), TerminalError> {
        (**self).record(record)
    }
    fn set_status(&mut self, sequence: u32, status: PurchaseStatus) -> Result<(), TerminalError> {
        (**self).set_status(sequence, status)
    }
    fn in_doubt_for_card(&self, card_id: &CardId) -> Result<Vec<PurchaseRecord>, TerminalError> {
        (**self).in_doubt_for_card(card_id)
    }
    fn records(&self) -> Result<Vec<PurchaseRecord>, TerminalError> {
        (**self).records()
    }
    fn pending_uploads(&self, limit: usize) -> Result<Vec<PurchaseRecord>, TerminalError> {
        (**self).pending_uploads(limit)
    }
    fn mark_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        (**self).mark_uploaded(sequences)
    }
    fn lists(&self) -> Result<LocalLists, TerminalError> {
        (**self).lists()
    }
    fn save_lists(&mut self, lists: &LocalLists) -> Result<(), TerminalError> {
        (**self).save_lists(lists)
    }
    fn record_service(&mut self, service: &ServiceEntry) -> Result<(), TerminalError> {
        (**self).record_service(service)
    }
    fn settle_service(
        &mut self,
        sequence: u32,
        signature: Option<Signature>,
    ) -> Result<(), TerminalError> {
        (**self).settle_service(sequence, signature)
    }
    fn services(&self) -> Result<Vec<ServiceEntry>, TerminalError> {
        (**self).services()
    }
    fn services_in_doubt_for_card(
        &self,
        card_id: &CardId,
    ) -> Result<Vec<ServiceEntry>, TerminalError> {
        (**self).services_in_doubt_for_card(card_id)
    }
    fn pending_service_uploads(&self, limit: usize) -> Result<Vec<ServiceEntry>, TerminalError> {
        (**self).pending_service_uploads(limit)
    }
    fn mark_services_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        (**self).mark_services_uploaded(sequences)
    }
    fn save_transfer(&mut self, report: &TransferReport) -> Result<(), TerminalError> {
        (**self).save_transfer(report)
    }
    fn transfers(&self) -> Result<Vec<StoredTransfer>, TerminalError> {
        (**self).transfers()
    }
    fn transfer_of(
        &self,
        source: &CardId,
        challenge_source: &Challenge,
    ) -> Result<Option<StoredTransfer>, TerminalError> {
        (**self).transfer_of(source, challenge_source)
    }
    fn pending_transfer_uploads(&self, limit: usize) -> Result<Vec<TransferReport>, TerminalError> {
        (**self).pending_transfer_uploads(limit)
    }
    fn mark_transfers_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        (**self).mark_transfers_uploaded(sequences)
    }
    fn mark_transfer_settled(&mut self, sequence: u32) -> Result<(), TerminalError> {
        (**self).mark_transfer_settled(sequence)
    }
}
