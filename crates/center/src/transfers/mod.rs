//! Card-to-card transfers as settlement terminals report them (seed 000 with Fig. 9).
//!
//! A transfer is named by its source card and the source's challenge at TRANSFER OUT, and
//! stored once under that name, whichever terminals report its halves: the one that ran it
//! may hold the destination's half only, and a later session at another terminal completes
//! the source. Each half consumes one card state (the destination's at TRANSFER IN, the
//! source's at TRANSFER COMPLETE), and takes part in clone detection exactly as a purchase
//! does: one state consumed by two updates lists the card.
//!
//! Nothing of a report is stored before every check passed (`check.rs`). The center derives
//! the transfer key itself, so a terminal can neither invent a transfer nor frame a card.
//! What it cannot prevent it detects: a destination that received value whose source never
//! shows the debit within [`TRANSFER_HOLD_DAYS`], and a proof under a generation older than
//! one the destination card had already been given, which only a key extracted from some
//! chip can make.

mod check;

use valuecard_core::crypto::sha256;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, ListReason, UploadReceipt, USAGE_BATCH_MAX};
use valuecard_core::messages::purse::UsageRecord;
use valuecard_core::messages::transfer::{TransferLink, TransferReport, TransferUpload};
use valuecard_core::money::Amount;

use crate::alerts::{raise, AlertKind};
use crate::sql::{Executor, Value};
use crate::Center;
use check::{Checked, Half, ReportError};

/// Migration: transfers by name, and each terminal's reports by its own sequence (a retry is
/// recognized as the same report; another report under a used sequence is refused).
pub const MIGRATION: &str = r#"
    CREATE TABLE transfers (
        source                     BYTEA NOT NULL CHECK (length(source) = 8),
        challenge_source           BYTEA NOT NULL CHECK (length(challenge_source) = 16),
        destination                BYTEA NOT NULL CHECK (length(destination) = 8),
        destination_counter        BIGINT NOT NULL,
        amount_minor               BIGINT NOT NULL CHECK (amount_minor > 0),
        value_key_id               BIGINT,
        proof_status               TEXT CHECK (proof_status IS NULL OR proof_status IN ('received', 'not_received')),
        proof_key_id               BIGINT,
        destination_balance_minor  BIGINT,
        destination_writer         BYTEA,
        destination_sequence       BIGINT,
        source_counter             BIGINT,
        source_balance_minor       BIGINT,
        source_writer              BYTEA,
        source_sequence            BIGINT,
        reported_on                BIGINT NOT NULL,
        received_on                BIGINT,
        settled_on                 BIGINT,
        alerted_on                 BIGINT,
        PRIMARY KEY (source, challenge_source)
    );
    CREATE INDEX transfers_by_destination ON transfers (destination, destination_counter);
    CREATE INDEX transfers_by_source_state ON transfers (source, source_counter);
    CREATE TABLE transfer_reports (
        terminal_id       BYTEA NOT NULL CHECK (length(terminal_id) = 8),
        terminal_sequence BIGINT NOT NULL,
        source            BYTEA NOT NULL,
        challenge_source  BYTEA NOT NULL,
        report_digest     BYTEA NOT NULL CHECK (length(report_digest) = 32),
        reported_on       BIGINT NOT NULL,
        PRIMARY KEY (terminal_id, terminal_sequence)
    )
"#;

/// How long a destination may hold value received before its source shows the debit. The
/// source's reservation settles at its next session at any settlement terminal; past this,
/// the center suspects a value message no genuine source card made.
pub const TRANSFER_HOLD_DAYS: u32 = 30;

/// Totals of the transfers the center knows, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferTotals {
    /// Received by the destination and debited from the source.
    pub completed: u64,
    pub completed_count: u64,
    /// Received by the destination (completed ones included).
    pub received: u64,
    pub received_count: u64,
    /// Received, with the source's debit not reported yet: value the source still holds
    /// reserved.
    pub in_flight: u64,
    pub in_flight_count: u64,
    /// Proven never applied by the destination: nothing moved.
    pub undone: u64,
    pub undone_count: u64,
    /// Reported with no proof yet.
    pub in_doubt_count: u64,
}

/// How many transfer halves consumed the state `counter` of `card_id`.
pub(crate) fn transfers_at_state(
    tx: &mut dyn Executor,
    card_id: &CardId,
    counter: u32,
) -> Result<i64, CenterError> {
    tx.query_one(
        "SELECT CAST(
             (SELECT COUNT(*) FROM transfers WHERE destination = $1 AND destination_counter = $2
                 AND proof_status = 'received')
           + (SELECT COUNT(*) FROM transfers WHERE source = $1 AND source_counter = $2)
         AS BIGINT)",
        &[card_id.0[..].into(), counter.into()],
    )?
    .int(0)
}

/// A digest of everything in a report, to tell a retry from another report under the same
/// sequence.
fn report_digest(report: &TransferReport) -> [u8; 32] {
    let mut m = b"valuecard/transfer/report/v1".to_vec();
    m.extend_from_slice(&report.sequence.to_be_bytes());
    m.extend_from_slice(report.source.as_bytes());
    m.extend_from_slice(report.destination.as_bytes());
    m.extend_from_slice(&report.challenge_source);
    m.extend_from_slice(&report.amount.to_be_bytes());
    m.extend_from_slice(&report.destination_counter.to_be_bytes());
    match &report.value {
        Some(evidence) => {
            let b = &evidence.binding;
            m.push(1);
            m.extend_from_slice(&b.key_id.to_be_bytes());
            m.extend_from_slice(&b.source_counter.to_be_bytes());
            m.extend_from_slice(&b.challenge_destination);
            m.extend_from_slice(&b.challenge_terminal);
            m.extend_from_slice(&b.date.0.to_be_bytes());
            m.extend_from_slice(&evidence.value.key_id.to_be_bytes());
            m.extend_from_slice(&evidence.value.ciphertext);
        }
        None => m.push(0),
    }
    match &report.proof {
        Some(proof) => {
            m.push(1);
            m.extend_from_slice(&proof.encode());
        }
        None => m.push(0),
    }
    for record in [
        &report.destination_record,
        &report.destination_previous,
        &report.source_record,
        &report.source_previous,
    ] {
        put_record(&mut m, record);
    }
    sha256(&m)
}

fn put_record(m: &mut Vec<u8>, record: &Option<UsageRecord>) {
    match record {
        Some(record) => {
            let bytes = record.encode();
            m.push(1);
            m.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            m.extend_from_slice(&bytes);
        }
        None => m.push(0),
    }
}

/// The transfer as stored, for merging another report of it.
struct StoredTransfer {
    destination: Vec<u8>,
    destination_counter: i64,
    amount_minor: i64,
    proof_status: Option<String>,
    destination_sequence: Option<i64>,
    source_counter: Option<i64>,
    value_key_id: Option<i64>,
}

fn stored_transfer(
    tx: &mut dyn Executor,
    report: &TransferReport,
) -> Result<Option<StoredTransfer>, CenterError> {
    let row = tx.query_optional(
        "SELECT destination, destination_counter, amount_minor, proof_status, destination_sequence,
                source_counter, value_key_id
         FROM transfers WHERE source = $1 AND challenge_source = $2",
        &[
            report.source.0[..].into(),
            report.challenge_source[..].into(),
        ],
    )?;
    row.map(|row| {
        let proof_status = match row.0.get(3) {
            Some(Value::Null) => None,
            _ => Some(row.text(3)?),
        };
        Ok(StoredTransfer {
            destination: row.bytes(0)?,
            destination_counter: row.int(1)?,
            amount_minor: row.int(2)?,
            proof_status,
            destination_sequence: row.optional_int(4)?,
            source_counter: row.optional_int(5)?,
            value_key_id: row.optional_int(6)?,
        })
    })
    .transpose()
}

enum Stored {
    New { clones: Vec<CardId> },
    Duplicate,
    Refused(String),
}

fn refuse(report: &TransferReport, reason: impl Into<String>) -> (u32, String) {
    (report.sequence, reason.into())
}

fn amount_value(amount: Amount) -> Value {
    Value::Int(amount.minor() as i64)
}

impl Center {
    /// Verifies and stores a batch of transfer reports from one settlement terminal. Every
    /// signature, MAC and value message is checked before anything is stored; a report
    /// already stored with the same content is a duplicate, another report under a used
    /// sequence or contradicting a stored transfer is refused; a card whose state was
    /// consumed twice is listed as cloned.
    pub fn ingest_transfers(
        &mut self,
        upload: &TransferUpload,
    ) -> Result<UploadReceipt, CenterError> {
        if upload.reports.len() > USAGE_BATCH_MAX {
            return Err(CenterError::Mismatch(format!(
                "at most {USAGE_BATCH_MAX} reports per upload"
            )));
        }
        if self.device_role(upload.terminal_id)? != valuecard_core::cert::Role::SettlementTerminal {
            return Err(CenterError::NotAuthorized(upload.terminal_id));
        }
        let terminal_key = self.device_key(upload.terminal_id)?;
        let current = self.key_generations()?.transfer;
        let mut receipt = UploadReceipt::default();
        let mut checked = Vec::with_capacity(upload.reports.len());
        for report in &upload.reports {
            match self.check_transfer_report(upload.terminal_id, &terminal_key, report, current) {
                Ok(ok) => checked.push(ok),
                Err(ReportError::Refused(reason)) => receipt.refused.push(refuse(report, reason)),
                // The center could not read its own records: the terminal sends it all again.
                Err(ReportError::Center(error)) => return Err(error),
            }
        }
        let today = self.today().0;
        let terminal_id = upload.terminal_id;
        let outcome = self.db.transaction(|tx| {
            let mut outcome = (0u32, 0u32, Vec::new(), Vec::<CardId>::new());
            for item in &checked {
                match store_report(tx, terminal_id, item, today)? {
                    Stored::New { clones } => {
                        outcome.0 += 1;
                        for card in clones {
                            if !outcome.3.contains(&card) {
                                outcome.3.push(card);
                            }
                        }
                    }
                    Stored::Duplicate => outcome.1 += 1,
                    Stored::Refused(reason) => outcome.2.push(refuse(item.report, reason)),
                }
            }
            for card in &outcome.3 {
                crate::loads::list_and_block(
                    tx,
                    card,
                    ListReason::Cloned,
                    AlertKind::Cloned,
                    "one card state was consumed twice, a transfer among the updates",
                    today,
                )?;
            }
            sweep_unsettled(tx, today)?;
            Ok(outcome)
        })?;
        receipt.stored = outcome.0;
        receipt.duplicates = outcome.1;
        receipt.refused.extend(outcome.2);
        receipt.clones_detected = outcome.3;
        Ok(receipt)
    }

    /// Raises an alert for every transfer received longer than [`TRANSFER_HOLD_DAYS`] ago
    /// whose source never showed the debit; returns how many were raised now.
    pub fn sweep_unsettled_transfers(&mut self) -> Result<u64, CenterError> {
        let today = self.today().0;
        self.db.transaction(|tx| sweep_unsettled(tx, today))
    }

    /// Totals of the transfers reported so far.
    pub fn transfer_totals(&mut self) -> Result<TransferTotals, CenterError> {
        let row = self
            .db
            .query_one(&format!("SELECT {TOTALS_COLUMNS}"), &[])?;
        totals_from(&row, 0)
    }
}

/// The transfer totals as one select list, so that the reconciliation reads them in its own
/// single statement (one snapshot).
pub(crate) const TOTALS_COLUMNS: &str = "
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NOT NULL),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NOT NULL),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers WHERE proof_status = 'received'),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE proof_status = 'received'),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NULL),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NULL),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers WHERE proof_status = 'not_received'),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE proof_status = 'not_received'),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE proof_status IS NULL)";

/// Reads the nine totals starting at column `at`.
pub(crate) fn totals_from(row: &crate::sql::Row, at: usize) -> Result<TransferTotals, CenterError> {
    let total = |index: usize| -> Result<u64, CenterError> {
        u64::try_from(row.int(at + index)?)
            .map_err(|_| CenterError::Storage("a transfer total is negative".into()))
    };
    Ok(TransferTotals {
        completed: total(0)?,
        completed_count: total(1)?,
        received: total(2)?,
        received_count: total(3)?,
        in_flight: total(4)?,
        in_flight_count: total(5)?,
        undone: total(6)?,
        undone_count: total(7)?,
        in_doubt_count: total(8)?,
    })
}

/// Stores one checked report: its row under the terminal's sequence, and what it adds to the
/// transfer it names.
fn store_report(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    item: &Checked<'_>,
    today: u32,
) -> Result<Stored, CenterError> {
    let report = item.report;
    let digest = report_digest(report);
    let known = tx.query_optional(
        "SELECT report_digest FROM transfer_reports WHERE terminal_id = $1 AND terminal_sequence = $2",
        &[terminal_id.0[..].into(), report.sequence.into()],
    )?;
    if let Some(row) = known {
        return Ok(if row.bytes(0)? == digest {
            Stored::Duplicate
        } else {
            Stored::Refused("a report with this sequence was stored with other content".into())
        });
    }
    let existing = stored_transfer(tx, report)?;
    if let Some(existing) = &existing {
        if existing.destination != report.destination.0
            || existing.destination_counter != i64::from(report.destination_counter)
            || existing.amount_minor != report.amount.minor() as i64
        {
            return Ok(Stored::Refused(
                "this transfer was stored with other terms".into(),
            ));
        }
        let contradicts = match (existing.proof_status.as_deref(), &report.proof) {
            (Some(stored), Some(_)) => (stored == "received") != item.received(),
            _ => false,
        };
        if contradicts {
            // Both proofs verified under the transfer key: one of them came from a card that
            // is not the genuine destination (a copy, or a chip whose key was extracted).
            raise(
                tx,
                &report.destination.0,
                AlertKind::TransferContradiction,
                &format!(
                    "transfer from {} proven both received and not received",
                    report.source
                ),
                today,
            )?;
            return Ok(Stored::Refused(
                "the proof contradicts the one stored for this transfer".into(),
            ));
        }
    }
    tx.execute(
        "INSERT INTO transfer_reports (terminal_id, terminal_sequence, source, challenge_source, report_digest, reported_on)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            terminal_id.0[..].into(),
            report.sequence.into(),
            report.source.0[..].into(),
            report.challenge_source[..].into(),
            digest[..].into(),
            today.into(),
        ],
    )?;
    if existing.is_none() {
        tx.execute(
            "INSERT INTO transfers (source, challenge_source, destination, destination_counter, amount_minor, reported_on)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                report.source.0[..].into(),
                report.challenge_source[..].into(),
                report.destination.0[..].into(),
                report.destination_counter.into(),
                amount_value(report.amount),
                today.into(),
            ],
        )?;
    }
    let mut clones = Vec::new();
    merge_evidence(tx, item, existing.as_ref(), today, &mut clones)?;
    if let Some(half) = &item.destination {
        let fresh = existing
            .as_ref()
            .is_none_or(|e| e.destination_sequence.is_none());
        if fresh {
            store_destination_half(tx, terminal_id, item, half, today, &mut clones)?;
        }
    }
    if let Some(half) = &item.source {
        match existing.as_ref().and_then(|e| e.source_counter) {
            None => store_source_half(tx, terminal_id, item, half, today, &mut clones)?,
            // The one pending transfer debited from two different states: two copies of
            // the source card completed it.
            Some(stored) if stored != i64::from(half.counter_before) => {
                clones.push(report.source);
            }
            Some(_) => {}
        }
    }
    Ok(Stored::New { clones })
}

/// The value message's generation and the proof: what the report proves about the transfer
/// as a whole. A new proof of receipt consumes the destination's state.
fn merge_evidence(
    tx: &mut dyn Executor,
    item: &Checked<'_>,
    existing: Option<&StoredTransfer>,
    today: u32,
    clones: &mut Vec<CardId>,
) -> Result<(), CenterError> {
    let report = item.report;
    let name = [
        Value::from(&report.source.0[..]),
        Value::from(&report.challenge_source[..]),
    ];
    let value_known = existing.is_some_and(|e| e.value_key_id.is_some());
    if let (Some(key_id), false) = (item.value_key_id, value_known) {
        tx.execute(
            "UPDATE transfers SET value_key_id = $3 WHERE source = $1 AND challenge_source = $2",
            &[name[0].clone(), name[1].clone(), key_id.into()],
        )?;
        stale_key_check(tx, &report.source, key_id, item_source_state(item), today)?;
    }
    let Some(proof) = &report.proof else {
        return Ok(());
    };
    let already = existing.and_then(|e| e.proof_status.as_deref()).is_some();
    if already {
        return Ok(());
    }
    if item.received() {
        // Asked before the update, so that the transfer does not find itself.
        if crate::loads::state_consumed_by_other(
            tx,
            &report.destination,
            report.destination_counter,
            None,
        )? {
            clones.push(report.destination);
        }
        crate::loads::cancel_pending_at(tx, &report.destination, report.destination_counter)?;
        stale_key_check(
            tx,
            &report.destination,
            proof.key_id,
            report.destination_counter,
            today,
        )?;
    }
    let (status, received_on, settled_on) = if item.undone() {
        ("not_received", Value::Null, Value::Int(today.into()))
    } else {
        ("received", Value::Int(today.into()), Value::Null)
    };
    tx.execute(
        "UPDATE transfers SET proof_status = $3, proof_key_id = $4, received_on = $5,
             settled_on = COALESCE(settled_on, $6)
         WHERE source = $1 AND challenge_source = $2",
        &[
            name[0].clone(),
            name[1].clone(),
            status.into(),
            proof.key_id.into(),
            received_on,
            settled_on,
        ],
    )?;
    Ok(())
}

/// The source's state when it made the value message, as the report shows it.
fn item_source_state(item: &Checked<'_>) -> u32 {
    item.report
        .value
        .as_ref()
        .map_or(0, |evidence| evidence.binding.source_counter)
}

/// A generation older than the newest one the center had delivered to `card` at a state
/// before `state`: the card adopts every delivery at once and never goes back, so no genuine
/// card makes a MAC or value message under it. Someone holds an extracted key.
fn stale_key_check(
    tx: &mut dyn Executor,
    card: &CardId,
    key_id: u32,
    state: u32,
    today: u32,
) -> Result<(), CenterError> {
    let row = tx.query_one(
        "SELECT CAST(COALESCE(MAX(generation), 0) AS BIGINT) FROM (
             SELECT transfer_key_id AS generation FROM cards WHERE card_id = $1
             UNION ALL
             SELECT transfer_key_id AS generation FROM loads
                 WHERE card_id = $1 AND status = 'committed' AND card_counter < $2
         ) delivered",
        &[card.0[..].into(), state.into()],
    )?;
    let held = row.int(0)?;
    if i64::from(key_id) < held {
        raise(
            tx,
            &card.0,
            AlertKind::StaleTransferKey,
            &format!(
                "a transfer under key generation {key_id} at state {state}, after the card was given generation {held}"
            ),
            today,
        )?;
    }
    Ok(())
}

fn store_destination_half(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    item: &Checked<'_>,
    half: &Half,
    today: u32,
    clones: &mut Vec<CardId>,
) -> Result<(), CenterError> {
    let report = item.report;
    tx.execute(
        "UPDATE transfers SET destination_balance_minor = $3, destination_writer = $4, destination_sequence = $5
         WHERE source = $1 AND challenge_source = $2",
        &[
            report.source.0[..].into(),
            report.challenge_source[..].into(),
            amount_value(half.balance_after),
            terminal_id.0[..].into(),
            half.writer_sequence.into(),
        ],
    )?;
    settle_half(tx, &report.destination, half, today, clones)
}

fn store_source_half(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    item: &Checked<'_>,
    half: &Half,
    today: u32,
    clones: &mut Vec<CardId>,
) -> Result<(), CenterError> {
    let report = item.report;
    // Asked before the update, so that the transfer does not find itself.
    if crate::loads::state_consumed_by_other(tx, &report.source, half.counter_before, None)? {
        clones.push(report.source);
    }
    crate::loads::cancel_pending_at(tx, &report.source, half.counter_before)?;
    tx.execute(
        "UPDATE transfers SET source_counter = $3, source_balance_minor = $4, source_writer = $5,
             source_sequence = $6, settled_on = $7
         WHERE source = $1 AND challenge_source = $2",
        &[
            report.source.0[..].into(),
            report.challenge_source[..].into(),
            half.counter_before.into(),
            amount_value(half.balance_after),
            terminal_id.0[..].into(),
            half.writer_sequence.into(),
            today.into(),
        ],
    )?;
    settle_half(tx, &report.source, half, today, clones)
}

/// What a proven half says about the card beyond the transfer: the load that wrote the state
/// it consumed reached the card, and the remaining-value record moves forward to it.
fn settle_half(
    tx: &mut dyn Executor,
    card: &CardId,
    half: &Half,
    today: u32,
    clones: &mut Vec<CardId>,
) -> Result<(), CenterError> {
    if let Some(load) = &half.previous_load {
        if crate::loads::commit_load(tx, load, today)? {
            clones.push(*card);
        }
    }
    tx.execute(
        "INSERT INTO remaining_values (card_id, balance_minor, card_counter, updated_on) VALUES ($1, $2, $3, $4)
         ON CONFLICT (card_id) DO UPDATE SET balance_minor = excluded.balance_minor,
             card_counter = excluded.card_counter, updated_on = excluded.updated_on
         WHERE excluded.card_counter > remaining_values.card_counter",
        &[
            card.0[..].into(),
            amount_value(half.balance_after),
            half.counter_before.saturating_add(1).into(),
            today.into(),
        ],
    )?;
    Ok(())
}

/// Transfers received more than the hold period ago whose source never showed the debit:
/// one alert each, on the source card (the value message named it).
fn sweep_unsettled(tx: &mut dyn Executor, today: u32) -> Result<u64, CenterError> {
    let cutoff = i64::from(today) - i64::from(TRANSFER_HOLD_DAYS);
    let rows = tx.query(
        "SELECT source, destination, amount_minor, received_on FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NULL AND alerted_on IS NULL
             AND received_on < $1
         ORDER BY received_on",
        &[Value::Int(cutoff)],
    )?;
    for row in &rows {
        let source = CardId::from_slice(&row.bytes(0)?)
            .map_err(|_| CenterError::Storage("stored transfer: source".into()))?;
        let destination = CardId::from_slice(&row.bytes(1)?)
            .map_err(|_| CenterError::Storage("stored transfer: destination".into()))?;
        raise(
            tx,
            &source.0,
            AlertKind::TransferUnsettled,
            &format!(
                "{} minor units received by {destination} on day {} and never debited from this card",
                row.int(2)?,
                row.int(3)?
            ),
            today,
        )?;
    }
    tx.execute(
        "UPDATE transfers SET alerted_on = $2
         WHERE proof_status = 'received' AND source_counter IS NULL AND alerted_on IS NULL
             AND received_on < $1",
        &[Value::Int(cutoff), today.into()],
    )?;
    Ok(rows.len() as u64)
}

impl TransferLink for Center {
    fn upload_transfers(&mut self, upload: &TransferUpload) -> Result<UploadReceipt, CenterError> {
        self.ingest_transfers(upload)
    }
}
