//! Storing checked write records inside the upload's transaction: the record under the
//! machine's sequence, the first record of each card state under (card, counter before),
//! and what the record shows: a gap before it, a state spent twice, a charge machine past
//! its float.

use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::messages::memcard::{WriteKind, COUNTER_START};

use super::check::CheckedWrite;
use crate::alerts::{raise, AlertKind};
use crate::sql::{Executor, Value};

/// What the upload's records came to.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<(u32, String)>,
}

/// Stores each checked record in upload order (a later record of the batch sees the
/// earlier ones), then raises the float alert if the machine's charges passed its grants.
pub(super) fn store_writes(
    tx: &mut dyn Executor,
    machine: DeviceId,
    checked: &[CheckedWrite<'_>],
    today: u32,
) -> Result<Outcome, CenterError> {
    let mut outcome = Outcome::default();
    if checked.is_empty() {
        return Ok(outcome);
    }
    avoid_table_locks(tx)?;
    let mut charged = false;
    for write in checked {
        match store_write(tx, machine, write, today)? {
            Stored::New => {
                outcome.stored += 1;
                charged |= write.record.kind == WriteKind::Charge;
            }
            Stored::Duplicate => outcome.duplicates += 1,
            Stored::Refused(reason) => outcome.refused.push((write.record.sequence, reason)),
        }
    }
    if charged {
        alert_float_exceeded(tx, &machine, today)?;
    }
    Ok(outcome)
}

enum Stored {
    New,
    Duplicate,
    Refused(String),
}

/// Whether the center already counts a record under the write's (machine, sequence).
pub(super) enum Known {
    New,
    /// With the same content: a retry.
    Same,
    /// With other content: refused, with this reason.
    Other(String),
}

pub(super) fn known_write(
    tx: &mut dyn Executor,
    machine: DeviceId,
    write: &CheckedWrite<'_>,
) -> Result<Known, CenterError> {
    let known = tx.query_optional(
        "SELECT record_digest FROM memcard_writes WHERE machine_id = $1 AND machine_sequence = $2",
        &[machine.0[..].into(), write.record.sequence.into()],
    )?;
    Ok(match known {
        None => Known::New,
        Some(row) if row.bytes(0)? == write.digest => Known::Same,
        Some(_) => Known::Other("a record with this sequence was stored with other content".into()),
    })
}

fn store_write(
    tx: &mut dyn Executor,
    machine: DeviceId,
    write: &CheckedWrite<'_>,
    today: u32,
) -> Result<Stored, CenterError> {
    let record = write.record;
    let card = record.written.card_id;
    match known_write(tx, machine, write)? {
        Known::Same => return Ok(Stored::Duplicate),
        Known::Other(reason) => return Ok(Stored::Refused(reason)),
        Known::New => {}
    }
    // The newest state the center knew of the card before this record: a record that
    // starts elsewhere is stored, and noted (a record not uploaded yet lies between).
    let newest = tx
        .query_one(
            "SELECT CAST(MIN(written_counter) AS BIGINT) FROM memcard_states WHERE card_id = $1",
            &[card.0[..].into()],
        )?
        .optional_int(0)?;
    let gap = newest.unwrap_or(i64::from(COUNTER_START)) != i64::from(write.previous_counter);
    // The database holds one first record per state: a second one is refused by the key
    // here, on this center and on any other sharing the database.
    let first = tx.execute(
        "INSERT INTO memcard_states (card_id, previous_counter, written_counter, machine_id,
             machine_sequence, balance_before_minor, balance_after_minor, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (card_id, previous_counter) DO NOTHING",
        &[
            card.0[..].into(),
            write.previous_counter.into(),
            record.written.counter.into(),
            machine.0[..].into(),
            record.sequence.into(),
            minor(record.balance_before.minor()),
            minor(record.balance_after.minor()),
            write.encoded.clone().into(),
        ],
    )? == 1;
    tx.execute(
        "INSERT INTO memcard_writes (machine_id, machine_sequence, kind, card_id, previous_counter,
             written_counter, amount_minor, balance_before_minor, balance_after_minor, write_date,
             record_digest, record, gap, spent_twice, uploaded_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            machine.0[..].into(),
            record.sequence.into(),
            kind_text(record.kind).into(),
            card.0[..].into(),
            write.previous_counter.into(),
            record.written.counter.into(),
            minor(write.amount.minor()),
            minor(record.balance_before.minor()),
            minor(record.balance_after.minor()),
            record.date.0.into(),
            write.digest[..].into(),
            write.encoded.clone().into(),
            Value::Int(i64::from(gap)),
            Value::Int(i64::from(!first)),
            today.into(),
        ],
    )?;
    if !first {
        spent_twice(tx, &card, write, machine, today)?;
    }
    if write.previous_writer_listed {
        listed_writer(tx, write, today)?;
    }
    Ok(Stored::New)
}

/// A second record from one card state: recorded once per state (the key holds it across
/// center processes), alerted and the card listed as cloned with the first.
fn spent_twice(
    tx: &mut dyn Executor,
    card: &CardId,
    write: &CheckedWrite<'_>,
    machine: DeviceId,
    today: u32,
) -> Result<(), CenterError> {
    let new = tx.execute(
        "INSERT INTO memcard_spent_twice (card_id, previous_counter, machine_id, machine_sequence, detected_on)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (card_id, previous_counter) DO NOTHING",
        &[
            card.0[..].into(),
            write.previous_counter.into(),
            machine.0[..].into(),
            write.record.sequence.into(),
            today.into(),
        ],
    )? == 1;
    if new {
        crate::usage::list_card(tx, card, ListReason::Cloned, today)?;
        raise(
            tx,
            &card.0,
            AlertKind::MemcardSpentTwice,
            &format!(
                "memory card state at counter {} spent twice (second record: machine {machine}, sequence {})",
                write.previous_counter, write.record.sequence
            ),
            today,
        )?;
    }
    Ok(())
}

/// Alerts a record that starts from a state a listed machine wrote and never uploaded: a
/// listed machine uploads nothing more, so such a state was most likely written after the
/// listing, and a machine that had not synced the list accepted it.
fn listed_writer(
    tx: &mut dyn Executor,
    write: &CheckedWrite<'_>,
    today: u32,
) -> Result<(), CenterError> {
    let Some(previous) = &write.record.previous else {
        return Ok(());
    };
    let on_record = tx
        .query_one(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_states
             WHERE card_id = $1 AND written_counter = $2 AND machine_id = $3",
            &[
                previous.card_id.0[..].into(),
                previous.counter.into(),
                previous.writer.0[..].into(),
            ],
        )?
        .int(0)?;
    if on_record == 0 {
        raise(
            tx,
            &previous.card_id.0,
            AlertKind::MemcardListedWriter,
            &format!(
                "memory card state at counter {} was written by listed machine {} and never uploaded",
                previous.counter, previous.writer
            ),
            today,
        )?;
    }
    Ok(())
}

/// Alerts, once per machine, a charge machine whose uploaded charges exceed its grants.
fn alert_float_exceeded(
    tx: &mut dyn Executor,
    machine: &DeviceId,
    today: u32,
) -> Result<(), CenterError> {
    let granted = super::sum(
        tx,
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_float_grants WHERE machine_id = $1",
        machine,
    )?;
    let charged = super::sum(
        tx,
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_writes
         WHERE machine_id = $1 AND kind = 'charge'",
        machine,
    )?;
    if charged <= granted {
        return Ok(());
    }
    let alerted = tx
        .query_one(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM alerts WHERE subject = $1 AND kind = $2",
            &[
                machine.0[..].into(),
                AlertKind::MemcardFloatExceeded.as_str().into(),
            ],
        )?
        .int(0)?;
    if alerted == 0 {
        raise(
            tx,
            &machine.0,
            AlertKind::MemcardFloatExceeded,
            &format!(
                "charge machine {machine} charged {charged} minor units on grants of {granted}"
            ),
            today,
        )?;
    }
    Ok(())
}

/// Under SERIALIZABLE a sequential scan locks the whole table against every other writer
/// (a relation-level predicate lock), and a planner picks such scans on small tables: the
/// uploads of different cards and machines would then refuse each other. Index lookups lock
/// only what they read (as the purse's usage batches do, `usage/store.rs`).
pub(super) fn avoid_table_locks(tx: &mut dyn Executor) -> Result<(), CenterError> {
    if tx.dialect() == crate::sql::Dialect::Postgres {
        tx.execute("SET LOCAL enable_seqscan = off", &[])?;
    }
    Ok(())
}

pub(super) fn kind_text(kind: WriteKind) -> &'static str {
    match kind {
        WriteKind::Charge => "charge",
        WriteKind::Payment => "payment",
    }
}

/// An amount in minor units as stored (amounts are bounded far below `i64::MAX`).
fn minor(value: u64) -> Value {
    Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
}
