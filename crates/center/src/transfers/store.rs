//! Storing a checked transfer report: its row under the terminal's sequence, and what it
//! adds to the transfer it names (the proof, each card's half), with the clone detection,
//! load settlement, remaining values and alerts each half implies.

use valuecard_core::crypto::sha256;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::UsageRecord;
use valuecard_core::messages::transfer::TransferReport;
use valuecard_core::money::Amount;

use super::check::{Checked, Half};
use super::TRANSFER_HOLD_DAYS;
use crate::alerts::{raise, AlertKind};
use crate::sql::{Executor, Value};
use valuecard_core::messages::center::CenterError;

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
    // Appended only when present, so that the digests of reports stored before releases
    // existed stay what they were (a retry of one is still a duplicate).
    if let Some(release) = &report.release {
        m.extend_from_slice(b"release");
        m.extend_from_slice(&release.signature.0);
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

pub(super) enum Stored {
    New { clones: Vec<CardId> },
    Duplicate,
    Refused(String),
}

/// Stores one checked report: its row under the terminal's sequence, and what it adds to the
/// transfer it names.
pub(super) fn store_report(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    item: &Checked<'_>,
    today: u32,
) -> Result<Stored, CenterError> {
    let report = item.report;
    // Serializes with a release of the same source (`release::lock_source`).
    super::release::lock_source(tx, &report.source)?;
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
                Value::from(report.amount),
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
        super::release::contradict_release(
            tx,
            &report.source,
            &report.challenge_source,
            &report.destination,
            today,
        )?;
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
            Value::from(half.balance_after),
            terminal_id.0[..].into(),
            half.writer_sequence.into(),
        ],
    )?;
    crate::moves::flag_used_after_move(
        tx,
        &report.destination,
        half.counter_before,
        &format!("received {} by transfer", report.amount),
        today,
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
    flag_reported_source(
        tx,
        &report.source,
        report.amount,
        half.counter_before,
        today,
    )?;
    crate::moves::flag_used_after_move(
        tx,
        &report.source,
        half.counter_before,
        &format!("sent {} by transfer", report.amount),
        today,
    )?;
    tx.execute(
        "UPDATE transfers SET source_counter = $3, source_balance_minor = $4, source_writer = $5,
             source_sequence = $6, settled_on = $7
         WHERE source = $1 AND challenge_source = $2",
        &[
            report.source.0[..].into(),
            report.challenge_source[..].into(),
            half.counter_before.into(),
            Value::from(half.balance_after),
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
    crate::advance_remaining_value(
        tx,
        card,
        half.balance_after,
        half.counter_before.saturating_add(1),
        today,
    )
}

/// Transfers received more than the hold period ago whose source never showed the debit:
/// one alert each, on the source card (the value message named it).
pub(super) fn sweep_unsettled(tx: &mut dyn Executor, today: u32) -> Result<u64, CenterError> {
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

/// Value sent from a card reported destroyed, as a purchase by it would be: before its
/// value went to a replacement it is netted (the remaining value moves down with it);
/// after, the amount is a loss to report.
fn flag_reported_source(
    tx: &mut dyn Executor,
    card: &CardId,
    amount: Amount,
    counter: u32,
    today: u32,
) -> Result<(), CenterError> {
    let row = tx.query_one(
        "SELECT CAST((SELECT COUNT(*) FROM restore_requests WHERE card_id = $1) AS BIGINT),
                CAST((SELECT COUNT(*) FROM card_restorations WHERE card_id = $1) AS BIGINT)",
        &[card.0[..].into()],
    )?;
    let (kind, detail) = match (row.int(0)? > 0, row.int(1)? > 0) {
        (_, true) => (
            AlertKind::SpentAfterRestore,
            format!(
                "sent {amount} by transfer at counter {counter} after its value went to a replacement card"
            ),
        ),
        (true, false) => (
            AlertKind::SpentAfterReport,
            format!(
                "sent {amount} by transfer at counter {counter} after it was reported destroyed (netted before restore)"
            ),
        ),
        (false, false) => return Ok(()),
    };
    raise(tx, &card.0, kind, &detail, today)
}
