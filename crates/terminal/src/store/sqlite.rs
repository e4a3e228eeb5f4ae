//! The terminal's store in a SQLite file (WAL, synchronous FULL), with its own append-only
//! migrations.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::*;

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
    // Card-to-card transfers (seed 000): each report whole, replaced as the transfer moves
    // on, and uploaded again after each change.
    r#"
    CREATE TABLE transfers (
        sequence          INTEGER PRIMARY KEY,
        source            BLOB NOT NULL CHECK (length(source) = 8),
        challenge_source  BLOB NOT NULL CHECK (length(challenge_source) = 16),
        report            BLOB NOT NULL,
        uploaded          INTEGER NOT NULL DEFAULT 0,
        UNIQUE (source, challenge_source)
    );
    CREATE INDEX transfers_to_upload ON transfers (sequence) WHERE uploaded = 0;
"#,
    // A transfer whose source the terminal saw settle after the answer was lost.
    r#"
    ALTER TABLE transfers ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
"#,
    // A charge or payment machine's log of memory-card writes (seed 001): each record
    // stored pending before the card is touched, then done or voided.
    r#"
    CREATE TABLE memcard_writes (
        sequence  INTEGER PRIMARY KEY,
        card_id   BLOB NOT NULL CHECK (length(card_id) = 8),
        status    TEXT NOT NULL CHECK (status IN ('pending', 'done', 'voided')),
        record    BLOB NOT NULL,
        uploaded  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX memcard_writes_pending ON memcard_writes (card_id) WHERE status = 'pending';
    CREATE INDEX memcard_writes_to_upload ON memcard_writes (sequence) WHERE status = 'done' AND uploaded = 0;
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
    pub(super) fn connection(&self) -> &Connection {
        &self.db
    }

    pub(super) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.db
    }

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

impl SqliteStore {
    /// Runs `update` (one of the three "uploaded" statements) for each sequence, in one
    /// transaction: a batch the center answered is marked whole or not at all.
    fn mark_uploaded_in(&mut self, update: &str, sequences: &[u32]) -> Result<(), TerminalError> {
        let transaction = self.db.transaction().map_err(storage)?;
        {
            let mut statement = transaction.prepare(update).map_err(storage)?;
            for sequence in sequences {
                statement.execute([sequence]).map_err(storage)?;
            }
        }
        transaction.commit().map_err(storage)
    }

    /// Transfer reports matching `filter` (with the transfer's key as its two parameters, if
    /// given), oldest first.
    fn read_transfers(
        &self,
        filter: &str,
        key: Option<(&CardId, &Challenge)>,
    ) -> Result<Vec<StoredTransfer>, TerminalError> {
        let mut statement = self
            .db
            .prepare(&format!(
                "SELECT report, uploaded, settled FROM transfers {filter} ORDER BY sequence"
            ))
            .map_err(storage)?;
        let mut rows = match key {
            Some((source, challenge)) => statement.query(params![&source.0[..], &challenge[..]]),
            None => statement.query([]),
        }
        .map_err(storage)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            let bytes: Vec<u8> = row.get(0).map_err(storage)?;
            let uploaded: bool = row.get(1).map_err(storage)?;
            let settled: bool = row.get(2).map_err(storage)?;
            let report = TransferReport::decode(&bytes)
                .map_err(|error| TerminalError::Store(format!("a stored transfer: {error}")))?;
            out.push(StoredTransfer {
                report,
                uploaded,
                settled,
            });
        }
        Ok(out)
    }
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
        self.mark_uploaded_in(
            "UPDATE purchases SET uploaded = 1 WHERE sequence = ?1",
            sequences,
        )
    }

    fn save_transfer(&mut self, report: &TransferReport) -> Result<(), TerminalError> {
        self.db
            .execute(
                "INSERT INTO transfers (sequence, source, challenge_source, report, uploaded)
                 VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT (source, challenge_source)
                 DO UPDATE SET sequence = excluded.sequence, report = excluded.report, uploaded = 0",
                params![
                    report.sequence,
                    &report.source.0[..],
                    &report.challenge_source[..],
                    report.encode()
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn transfers(&self) -> Result<Vec<StoredTransfer>, TerminalError> {
        self.read_transfers("", None)
    }

    fn transfer_of(
        &self,
        source: &CardId,
        challenge_source: &Challenge,
    ) -> Result<Option<StoredTransfer>, TerminalError> {
        Ok(self
            .read_transfers(
                "WHERE source = ?1 AND challenge_source = ?2",
                Some((source, challenge_source)),
            )?
            .pop())
    }

    fn mark_transfer_settled(&mut self, sequence: u32) -> Result<(), TerminalError> {
        self.db
            .execute(
                "UPDATE transfers SET settled = 1 WHERE sequence = ?1",
                [sequence],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn mark_transfers_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        self.mark_uploaded_in(
            "UPDATE transfers SET uploaded = 1 WHERE sequence = ?1",
            sequences,
        )
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
        self.mark_uploaded_in(
            "UPDATE services SET uploaded = 1 WHERE sequence = ?1",
            sequences,
        )
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
