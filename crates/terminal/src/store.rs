//! What a terminal remembers: its transaction sequence and a record of every purchase, kept
//! durably before the DEBIT is sent so that a purchase whose answer was lost is never
//! forgotten (it stays "in doubt" until the card is seen again).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use valuecard_core::crypto::Signature;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{ListDelta, ListEntry, ListReason};
use valuecard_core::messages::credit::ServiceRecord;
use valuecard_core::messages::purse::{Challenge, TerminalStamp, UsageRecord};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::TerminalError;

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
    fn totals(&self) -> Result<TerminalTotals, TerminalError> {
        let mut totals = TerminalTotals::default();
        for record in self.records()? {
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
}

/// A store in memory: for benchmarks, simulations and tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    next: u32,
    records: Vec<PurchaseRecord>,
    lists: LocalLists,
    services: Vec<ServiceEntry>,
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

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE purchases (
        sequence             INTEGER PRIMARY KEY,
        card_id              BLOB NOT NULL CHECK (length(card_id) = 8),
        card_counter         INTEGER NOT NULL,
        amount_minor         INTEGER NOT NULL CHECK (amount_minor > 0),
        balance_before_minor INTEGER NOT NULL,
        balance_after_minor  INTEGER NOT NULL,
        challenge_terminal   BLOB NOT NULL,
        challenge_card       BLOB NOT NULL,
        date                 INTEGER NOT NULL,
        status               TEXT NOT NULL CHECK (status IN ('in_doubt', 'committed', 'cancelled')),
        previous_usage       BLOB,
        UNIQUE (card_id, card_counter, challenge_card)
    );
    CREATE INDEX purchases_in_doubt ON purchases (card_id) WHERE status = 'in_doubt';
    CREATE TABLE sequence (id INTEGER PRIMARY KEY CHECK (id = 1), next INTEGER NOT NULL);
    INSERT INTO sequence (id, next) VALUES (1, 1);
"#,
    r#"
    ALTER TABLE purchases ADD COLUMN terminal_signature BLOB;
    ALTER TABLE purchases ADD COLUMN uploaded INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX purchases_to_upload ON purchases (sequence) WHERE status = 'committed' AND uploaded = 0;
    CREATE TABLE listed_cards (card_id BLOB PRIMARY KEY, reason TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE troubled_terminals (device_id BLOB PRIMARY KEY, first_stamp BLOB NOT NULL, stamp_count INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE list_state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
    INSERT INTO list_state (id, version) VALUES (1, 0);
"#,
    r#"
    ALTER TABLE purchases ADD COLUMN stamp_count INTEGER;
    ALTER TABLE purchases ADD COLUMN stamp_signature BLOB;
"#,
    // The card's own signature over the state a purchase spent from, and the bound it
    // signed, so the center can believe the purchase without trusting the terminal.
    r#"
    ALTER TABLE purchases ADD COLUMN amount_max_minor INTEGER;
    ALTER TABLE purchases ADD COLUMN card_signature BLOB CHECK (card_signature IS NULL OR length(card_signature) = 64);
"#,
    // Credit services (Fig. 17) with the card's signature, for upload to the center.
    r#"
    CREATE TABLE services (
        sequence        INTEGER PRIMARY KEY,
        card_id         BLOB NOT NULL CHECK (length(card_id) = 8),
        amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
        date            INTEGER NOT NULL,
        service_number  INTEGER NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('in_doubt', 'signed', 'cancelled')),
        card_signature  BLOB CHECK (card_signature IS NULL OR length(card_signature) = 64),
        uploaded        INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX services_in_doubt ON services (card_id) WHERE status = 'in_doubt';
    CREATE INDEX services_to_upload ON services (sequence) WHERE status = 'signed' AND uploaded = 0;
"#,
];

/// The terminal's records in SQLite (WAL, synchronous FULL: a recorded purchase survives a
/// power cut of the terminal).
#[derive(Debug)]
pub struct SqliteStore {
    db: Connection,
}

fn storage(error: rusqlite::Error) -> TerminalError {
    TerminalError::Store(error.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, TerminalError> {
        let mut db = Connection::open(path).map_err(storage)?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(storage)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)",
        )
        .map_err(storage)?;
        let applied: i64 = db
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(storage)?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let transaction = db.transaction().map_err(storage)?;
            transaction.execute_batch(sql).map_err(storage)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version) VALUES (?1)",
                    [index as i64 + 1],
                )
                .map_err(storage)?;
            transaction.commit().map_err(storage)?;
        }
        Ok(SqliteStore { db })
    }

    fn read_records(
        &self,
        filter: &str,
        card: Option<&CardId>,
        limit: Option<usize>,
    ) -> Result<Vec<PurchaseRecord>, TerminalError> {
        let sql = format!(
            "SELECT sequence, card_id, card_counter, amount_minor, balance_before_minor, balance_after_minor,
                    challenge_terminal, challenge_card, date, status, previous_usage, terminal_signature, uploaded,
                    stamp_count, stamp_signature, amount_max_minor, card_signature
             FROM purchases {filter} ORDER BY sequence {}",
            limit.map_or(String::new(), |limit| format!("LIMIT {limit}"))
        );
        let mut statement = self.db.prepare(&sql).map_err(storage)?;
        let mut rows = match card {
            Some(card) => statement.query([&card.0[..]]),
            None => statement.query([]),
        }
        .map_err(storage)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            out.push(decode_row(row).map_err(storage)??);
        }
        Ok(out)
    }
}

impl SqliteStore {
    fn read_services(
        &self,
        filter: &str,
        card: Option<&CardId>,
        limit: Option<usize>,
    ) -> Result<Vec<ServiceEntry>, TerminalError> {
        let sql = format!(
            "SELECT sequence, card_id, amount_minor, date, service_number, status, card_signature, uploaded
             FROM services {filter} ORDER BY sequence {}",
            limit.map_or(String::new(), |limit| format!("LIMIT {limit}"))
        );
        let mut statement = self.db.prepare(&sql).map_err(storage)?;
        let mut rows = match card {
            Some(card) => statement.query([&card.0[..]]),
            None => statement.query([]),
        }
        .map_err(storage)?;
        let corrupt =
            |what: &str| TerminalError::Store(format!("stored service has an invalid {what}"));
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            let card: Vec<u8> = row.get(1).map_err(storage)?;
            let status: String = row.get(5).map_err(storage)?;
            let signature: Option<Vec<u8>> = row.get(6).map_err(storage)?;
            let number = |index: usize, what: &str| -> Result<u32, TerminalError> {
                u32::try_from(row.get::<_, i64>(index).map_err(storage)?).map_err(|_| corrupt(what))
            };
            out.push(ServiceEntry {
                sequence: number(0, "sequence")?,
                card_id: CardId::from_slice(&card).map_err(|_| corrupt("card id"))?,
                amount: Amount::new(row.get::<_, i64>(2).map_err(storage)? as u64)
                    .map_err(|_| corrupt("amount"))?,
                date: Date(number(3, "date")?),
                service_number: number(4, "service number")?,
                status: ServiceStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
                card_signature: signature
                    .as_deref()
                    .map(Signature::from_slice)
                    .transpose()
                    .map_err(|_| corrupt("signature"))?,
                uploaded: row.get::<_, i64>(7).map_err(storage)? != 0,
            });
        }
        Ok(out)
    }
}

fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PurchaseRecord, TerminalError>> {
    let corrupt =
        |what: &str| TerminalError::Store(format!("stored purchase has an invalid {what}"));
    let card: Vec<u8> = row.get(1)?;
    let challenge_terminal: Vec<u8> = row.get(6)?;
    let challenge_card: Vec<u8> = row.get(7)?;
    let status: String = row.get(9)?;
    let previous: Option<Vec<u8>> = row.get(10)?;
    let signature: Option<Vec<u8>> = row.get(11)?;
    let uploaded: i64 = row.get(12)?;
    let stamp_count: Option<i64> = row.get(13)?;
    let stamp_signature: Option<Vec<u8>> = row.get(14)?;
    let amount_max: Option<i64> = row.get(15)?;
    let card_signature: Option<Vec<u8>> = row.get(16)?;
    let amount = |index: usize| -> rusqlite::Result<Option<Amount>> {
        Ok(Amount::new(row.get::<_, i64>(index)? as u64).ok())
    };
    let (Some(amount_value), Some(before), Some(after)) = (amount(3)?, amount(4)?, amount(5)?)
    else {
        return Ok(Err(corrupt("amount")));
    };
    let record = (|| {
        Ok(PurchaseRecord {
            sequence: row.get::<_, i64>(0).map_err(storage)? as u32,
            card_id: CardId::from_slice(&card).map_err(|_| corrupt("card id"))?,
            card_counter: row.get::<_, i64>(2).map_err(storage)? as u32,
            amount: amount_value,
            balance_before: before,
            balance_after: after,
            challenge_terminal: challenge_terminal
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("challenge"))?,
            challenge_card: challenge_card
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("challenge"))?,
            date: Date(row.get::<_, i64>(8).map_err(storage)? as u32),
            status: PurchaseStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            previous_usage: previous
                .map(|bytes| UsageRecord::decode(&bytes))
                .transpose()
                .map_err(|_| corrupt("usage record"))?,
            terminal_signature: signature
                .as_deref()
                .map(Signature::from_slice)
                .transpose()
                .map_err(|_| corrupt("signature"))?
                .ok_or_else(|| corrupt("signature"))?,
            uploaded: uploaded != 0,
            // Records from before the bound was kept spent exactly their amount's worth.
            amount_max: match amount_max {
                Some(minor) => u64::try_from(minor)
                    .ok()
                    .and_then(|minor| Amount::new(minor).ok())
                    .ok_or_else(|| corrupt("amount bound"))?,
                None => amount_value,
            },
            card_signature: card_signature
                .as_deref()
                .map(Signature::from_slice)
                .transpose()
                .map_err(|_| corrupt("card signature"))?,
            stamp: TerminalStamp {
                count: stamp_count
                    .and_then(|count| u32::try_from(count).ok())
                    .ok_or_else(|| corrupt("stamp count"))?,
                signature: stamp_signature
                    .as_deref()
                    .map(Signature::from_slice)
                    .transpose()
                    .map_err(|_| corrupt("stamp signature"))?
                    .ok_or_else(|| corrupt("stamp signature"))?,
            },
        })
    })();
    Ok(record)
}

impl TerminalStore for SqliteStore {
    fn next_sequence(&mut self) -> Result<u32, TerminalError> {
        let next: i64 = self
            .db
            .query_row(
                "UPDATE sequence SET next = next + 1 WHERE id = 1 RETURNING next - 1",
                [],
                |row| row.get(0),
            )
            .map_err(storage)?;
        u32::try_from(next).map_err(|_| TerminalError::Store("sequence exhausted".into()))
    }

    fn record(&mut self, record: &PurchaseRecord) -> Result<(), TerminalError> {
        self.db
            .execute(
                "INSERT INTO purchases (sequence, card_id, card_counter, amount_minor, balance_before_minor,
                     balance_after_minor, challenge_terminal, challenge_card, date, status, previous_usage,
                     terminal_signature, uploaded, stamp_count, stamp_signature, amount_max_minor, card_signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    record.sequence,
                    &record.card_id.0[..],
                    record.card_counter,
                    record.amount.minor() as i64,
                    record.balance_before.minor() as i64,
                    record.balance_after.minor() as i64,
                    &record.challenge_terminal[..],
                    &record.challenge_card[..],
                    record.date.0,
                    record.status.as_str(),
                    record.previous_usage.as_ref().map(UsageRecord::encode),
                    &record.terminal_signature.0[..],
                    record.uploaded as i64,
                    record.stamp.count,
                    &record.stamp.signature.0[..],
                    record.amount_max.minor() as i64,
                    record.card_signature.as_ref().map(|signature| signature.0.to_vec()),
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn set_status(&mut self, sequence: u32, status: PurchaseStatus) -> Result<(), TerminalError> {
        let changed = self
            .db
            .execute(
                "UPDATE purchases SET status = ?2 WHERE sequence = ?1",
                params![sequence, status.as_str()],
            )
            .map_err(storage)?;
        if changed == 0 {
            return Err(TerminalError::Store(format!("no purchase {sequence}")));
        }
        Ok(())
    }

    fn in_doubt_for_card(&self, card_id: &CardId) -> Result<Vec<PurchaseRecord>, TerminalError> {
        self.read_records(
            "WHERE card_id = ?1 AND status = 'in_doubt'",
            Some(card_id),
            None,
        )
    }

    fn records(&self) -> Result<Vec<PurchaseRecord>, TerminalError> {
        self.read_records("", None, None)
    }

    fn pending_uploads(&self, limit: usize) -> Result<Vec<PurchaseRecord>, TerminalError> {
        // The limit goes to SQLite: a terminal's history only grows, a sync reads one batch.
        self.read_records(
            "WHERE status = 'committed' AND uploaded = 0",
            None,
            Some(limit),
        )
    }

    fn mark_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        let transaction = self.db.transaction().map_err(storage)?;
        for sequence in sequences {
            transaction
                .execute(
                    "UPDATE purchases SET uploaded = 1 WHERE sequence = ?1",
                    [sequence],
                )
                .map_err(storage)?;
        }
        transaction.commit().map_err(storage)
    }

    fn lists(&self) -> Result<LocalLists, TerminalError> {
        let mut lists = LocalLists {
            version: self
                .db
                .query_row("SELECT version FROM list_state WHERE id = 1", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(storage)? as u64,
            ..LocalLists::default()
        };
        let mut statement = self
            .db
            .prepare("SELECT card_id, reason FROM listed_cards")
            .map_err(storage)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(storage)?;
        for row in rows {
            let (card, reason) = row.map_err(storage)?;
            let card =
                CardId::from_slice(&card).map_err(|e| TerminalError::Store(e.to_string()))?;
            let reason = ListReason::parse(&reason)
                .ok_or_else(|| TerminalError::Store("invalid list reason".into()))?;
            lists.cards.insert(card, reason);
        }
        let mut statement = self
            .db
            .prepare("SELECT device_id, first_stamp, stamp_count FROM troubled_terminals")
            .map_err(storage)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(storage)?;
        for row in rows {
            let (device, stamp, count) = row.map_err(storage)?;
            let device =
                DeviceId::from_slice(&device).map_err(|e| TerminalError::Store(e.to_string()))?;
            let stamp: [u8; 32] = stamp
                .as_slice()
                .try_into()
                .map_err(|_| TerminalError::Store("invalid stamp".into()))?;
            lists.terminals.insert(device, (stamp, count as u32));
        }
        Ok(lists)
    }

    fn save_lists(&mut self, lists: &LocalLists) -> Result<(), TerminalError> {
        let transaction = self.db.transaction().map_err(storage)?;
        for (card, reason) in &lists.cards {
            transaction
                .execute(
                    "INSERT INTO listed_cards (card_id, reason) VALUES (?1, ?2) ON CONFLICT (card_id) DO NOTHING",
                    params![&card.0[..], reason.as_str()],
                )
                .map_err(storage)?;
        }
        for (device, (stamp, count)) in &lists.terminals {
            transaction
                .execute(
                    "INSERT INTO troubled_terminals (device_id, first_stamp, stamp_count) VALUES (?1, ?2, ?3)
                     ON CONFLICT (device_id) DO UPDATE SET first_stamp = excluded.first_stamp, stamp_count = excluded.stamp_count",
                    params![&device.0[..], &stamp[..], count],
                )
                .map_err(storage)?;
        }
        transaction
            .execute(
                "UPDATE list_state SET version = ?1 WHERE id = 1",
                [lists.version as i64],
            )
            .map_err(storage)?;
        transaction.commit().map_err(storage)
    }

    fn record_service(&mut self, service: &ServiceEntry) -> Result<(), TerminalError> {
        self.db
            .execute(
                "INSERT INTO services (sequence, card_id, amount_minor, date, service_number, status, card_signature, uploaded)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    service.sequence,
                    &service.card_id.0[..],
                    service.amount.minor() as i64,
                    service.date.0,
                    service.service_number,
                    service.status.as_str(),
                    service.card_signature.as_ref().map(|s| s.0.to_vec()),
                    service.uploaded as i64,
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn settle_service(
        &mut self,
        sequence: u32,
        signature: Option<Signature>,
    ) -> Result<(), TerminalError> {
        let status = match signature {
            Some(_) => ServiceStatus::Signed,
            None => ServiceStatus::Cancelled,
        };
        let changed = self
            .db
            .execute(
                "UPDATE services SET status = ?2, card_signature = ?3 WHERE sequence = ?1",
                params![
                    sequence,
                    status.as_str(),
                    signature.as_ref().map(|s| s.0.to_vec())
                ],
            )
            .map_err(storage)?;
        if changed == 0 {
            return Err(TerminalError::Store(format!("no service {sequence}")));
        }
        Ok(())
    }

    fn services(&self) -> Result<Vec<ServiceEntry>, TerminalError> {
        self.read_services("", None, None)
    }

    fn services_in_doubt_for_card(
        &self,
        card_id: &CardId,
    ) -> Result<Vec<ServiceEntry>, TerminalError> {
        self.read_services(
            "WHERE card_id = ?1 AND status = 'in_doubt'",
            Some(card_id),
            None,
        )
    }

    fn pending_service_uploads(&self, limit: usize) -> Result<Vec<ServiceEntry>, TerminalError> {
        self.read_services(
            "WHERE status = 'signed' AND uploaded = 0",
            None,
            Some(limit),
        )
    }

    fn mark_services_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        let transaction = self.db.transaction().map_err(storage)?;
        for sequence in sequences {
            transaction
                .execute(
                    "UPDATE services SET uploaded = 1 WHERE sequence = ?1",
                    [sequence],
                )
                .map_err(storage)?;
        }
        transaction.commit().map_err(storage)
    }
}

/// Whether a SQLite store exists at `path` (for tools that must not create one by accident).
pub fn sqlite_store_exists(path: &Path) -> bool {
    path.exists()
        && Connection::open(path)
            .ok()
            .and_then(|db| {
                db.query_row(
                    "SELECT 1 FROM sqlite_master WHERE name = 'purchases'",
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .optional()
                .ok()
                .flatten()
            })
            .is_some()
}
