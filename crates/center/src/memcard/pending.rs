//! Writes pending in a machine's log, reported to the center as evidence.
//!
//! A memory card cannot sign, so a write cut between its value area and its signature leaves
//! a card no machine accepts. The machine that was writing finishes it from its log when the
//! card comes back (`terminal/src/memcard/repair.rs`); when the card goes to another machine
//! instead, only the center can help, and only if it knows the write. So machines report the
//! writes still pending in their logs (`machine-sync`). The center checks each as it checks
//! an uploaded record and keeps it in `memcard_pending`, uncounted:
//!
//! - it is offered as a card's latest state (`latest_memcard_state`) while no counted state
//!   of the card is as new, so any machine may write its signature back onto a card that
//!   shows exactly its counter and value area;
//! - a counted record that starts from the state it signed shows that it landed: it is
//!   counted then (*promoted*, in that record's transaction), and the machine learns so on
//!   its next report and marks it done;
//! - a counted record that starts from the state it started from shows that the card took
//!   another write instead: it can never land (the card's counter has passed it), and the
//!   machine learns that it is *superseded* and voids it.
//!
//! Rows are keyed by card, like every other memory-card state.

use valuecard_core::cert::Role;
use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::memcard::{PendingReceipt, WriteRecord, WriteUpload};

use super::check::CheckedWrite;
use super::store::{self, Known};
use super::stored_id;
use crate::sql::Executor;
use crate::Center;

/// Migration 17: the pending writes machines reported, by card and the counter they signed.
pub const MIGRATION: &str = r#"
    CREATE TABLE memcard_pending (
        card_id          BYTEA NOT NULL CHECK (length(card_id) = 8),
        written_counter  BIGINT NOT NULL,
        machine_id       BYTEA NOT NULL CHECK (length(machine_id) = 8),
        machine_sequence BIGINT NOT NULL CHECK (machine_sequence >= 0),
        previous_counter BIGINT NOT NULL,
        record_digest    BYTEA NOT NULL CHECK (length(record_digest) = 32),
        record           BYTEA NOT NULL,
        reported_on      BIGINT NOT NULL,
        PRIMARY KEY (card_id, written_counter, machine_id, machine_sequence)
    )
"#;

/// What the center knows of one reported pending write.
enum Standing {
    Held,
    Landed,
    Superseded,
    Refused(String),
}

/// A pending write found to have landed, with its writer's role and key for its checks.
pub(super) struct Promotion {
    pub machine: DeviceId,
    pub role: Role,
    pub key: PublicKey,
    pub record: WriteRecord,
}

impl Center {
    /// Checks and stands each pending write a machine reports: held as evidence, counted if
    /// a counted record shows it landed, superseded if one shows the card took another
    /// write, refused if it does not check.
    pub fn report_memcard_pending(
        &mut self,
        upload: &WriteUpload,
    ) -> Result<PendingReceipt, CenterError> {
        let machine = upload.machine;
        let upload = self.check_upload(upload)?;
        let checked = upload.checked;
        let mut receipt = PendingReceipt {
            refused: upload.refused,
            ..PendingReceipt::default()
        };
        let today = self.today().0;
        let standings = self.db.transaction(|tx| {
            store::avoid_table_locks(tx)?;
            checked
                .iter()
                .map(|write| stand(tx, machine, write, today))
                .collect::<Result<Vec<_>, CenterError>>()
        })?;
        for (write, standing) in checked.iter().zip(standings) {
            let sequence = write.record.sequence;
            match standing {
                Standing::Held => receipt.held += 1,
                Standing::Landed => receipt.landed.push(sequence),
                Standing::Superseded => receipt.superseded.push(sequence),
                Standing::Refused(reason) => receipt.refused.push((sequence, reason)),
            }
        }
        Ok(receipt)
    }

    /// How many reported pending writes the center holds as evidence.
    pub fn memcard_pending_held(&mut self) -> Result<u64, CenterError> {
        let row = self
            .db
            .query_one("SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_pending", &[])?;
        u64::try_from(row.int(0)?).map_err(|_| CenterError::Storage("stored count".into()))
    }

    /// What the center holds of an upload's records as pending evidence, in one read per
    /// record (at the counters of its previous and its written state): the held writes the
    /// records show landed (each record starts from the state one of them signed), with
    /// what their checks need, and the indices of the records this machine itself reported
    /// pending and now uploads done (their evidence is dropped). Read before the upload's
    /// transaction; storing there is idempotent, so a race with another process promoting
    /// the same write ends in one stored record.
    pub(super) fn held_evidence(
        &mut self,
        machine: DeviceId,
        checked: &[CheckedWrite<'_>],
    ) -> Result<(Vec<Promotion>, Vec<usize>), CenterError> {
        let mut promotions: Vec<Promotion> = Vec::new();
        let mut reported = Vec::new();
        for (index, write) in checked.iter().enumerate() {
            let written = &write.record.written;
            let previous_counter = write.record.previous.as_ref().map(|p| p.counter);
            let rows = self.db.query(
                "SELECT machine_id, record FROM memcard_pending
                 WHERE card_id = $1 AND (written_counter = $2 OR written_counter = $3)",
                &[
                    written.card_id.0[..].into(),
                    written.counter.into(),
                    previous_counter.unwrap_or(written.counter).into(),
                ],
            )?;
            for row in rows {
                let holder = DeviceId(stored_id(&row.bytes(0)?, "machine ID")?);
                let record = decode_stored(&row.bytes(1)?)?;
                if holder == machine && record.sequence == write.record.sequence {
                    reported.push(index);
                    continue;
                }
                if write.record.previous.as_ref() != Some(&record.written) {
                    continue;
                }
                let known = promotions
                    .iter()
                    .any(|p| p.machine == holder && p.record.sequence == record.sequence);
                if known {
                    continue;
                }
                // A machine retired since it reported: its evidence stays uncounted (the
                // record after it shows a gap), the upload goes on.
                let (role, key) = match self.installed_device(holder) {
                    Ok(found) => found,
                    Err(CenterError::UnknownDevice(_)) => continue,
                    Err(error) => return Err(error),
                };
                promotions.push(Promotion {
                    machine: holder,
                    role,
                    key,
                    record,
                });
            }
        }
        Ok((promotions, reported))
    }

    /// The newest pending write of `card` that no counted state is as new as, with its
    /// machine: what `latest_memcard_state` offers before the counted states.
    pub(super) fn newest_pending(
        &mut self,
        card: &CardId,
    ) -> Result<Option<(WriteRecord, DeviceId)>, CenterError> {
        let row = self.db.query_optional(
            "SELECT record, machine_id FROM memcard_pending p WHERE p.card_id = $1
               AND NOT EXISTS (SELECT 1 FROM memcard_states s
                   WHERE s.card_id = p.card_id AND s.written_counter <= p.written_counter)
             ORDER BY p.written_counter ASC, p.machine_id, p.machine_sequence LIMIT 1",
            &[card.0[..].into()],
        )?;
        row.map(|row| {
            Ok((
                decode_stored(&row.bytes(0)?)?,
                DeviceId(stored_id(&row.bytes(1)?, "machine ID")?),
            ))
        })
        .transpose()
    }
}

/// Stands one reported write inside the report's transaction.
fn stand(
    tx: &mut dyn Executor,
    machine: DeviceId,
    write: &CheckedWrite<'_>,
    today: u32,
) -> Result<Standing, CenterError> {
    let record = write.record;
    let card = record.written.card_id;
    match store::known_write(tx, machine, write)? {
        Known::Same => {
            forget(tx, machine, record)?;
            return Ok(Standing::Landed);
        }
        Known::Other(reason) => return Ok(Standing::Refused(reason)),
        Known::New => {}
    }
    // A counted record that started from the state this write signed: it landed.
    if first_record_from(tx, &card, record.written.counter)?
        .is_some_and(|later| later.previous.as_ref() == Some(&record.written))
    {
        let outcome = store::store_writes(tx, machine, std::slice::from_ref(write), today)?;
        if let Some((_, reason)) = outcome.refused.into_iter().next() {
            return Ok(Standing::Refused(reason));
        }
        forget(tx, machine, record)?;
        return Ok(Standing::Landed);
    }
    // A counted record that started where this write started, and is not this write: the
    // card took that write, its counter passed this one's.
    if first_record_from(tx, &card, write.previous_counter)?
        .is_some_and(|other| other.previous == record.previous)
    {
        forget(tx, machine, record)?;
        return Ok(Standing::Superseded);
    }
    let stored = tx.query_optional(
        "SELECT record_digest FROM memcard_pending
         WHERE card_id = $1 AND written_counter = $2 AND machine_id = $3 AND machine_sequence = $4",
        &[
            card.0[..].into(),
            record.written.counter.into(),
            machine.0[..].into(),
            record.sequence.into(),
        ],
    )?;
    if let Some(row) = stored {
        return Ok(if row.bytes(0)? == write.digest {
            Standing::Held
        } else {
            Standing::Refused(
                "a pending write with this sequence was reported with other content".into(),
            )
        });
    }
    tx.execute(
        "INSERT INTO memcard_pending (card_id, written_counter, machine_id, machine_sequence,
             previous_counter, record_digest, record, reported_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (card_id, written_counter, machine_id, machine_sequence) DO NOTHING",
        &[
            card.0[..].into(),
            record.written.counter.into(),
            machine.0[..].into(),
            record.sequence.into(),
            write.previous_counter.into(),
            write.digest[..].into(),
            write.encoded.clone().into(),
            today.into(),
        ],
    )?;
    Ok(Standing::Held)
}

/// The first counted record of `card` that started from the state at `counter`.
fn first_record_from(
    tx: &mut dyn Executor,
    card: &CardId,
    counter: u32,
) -> Result<Option<WriteRecord>, CenterError> {
    tx.query_optional(
        "SELECT record FROM memcard_states WHERE card_id = $1 AND previous_counter = $2",
        &[card.0[..].into(), counter.into()],
    )?
    .map(|row| decode_stored(&row.bytes(0)?))
    .transpose()
}

/// Drops a pending write's evidence once it is counted or can no longer land.
pub(super) fn forget(
    tx: &mut dyn Executor,
    machine: DeviceId,
    record: &WriteRecord,
) -> Result<(), CenterError> {
    tx.execute(
        "DELETE FROM memcard_pending
         WHERE card_id = $1 AND written_counter = $2 AND machine_id = $3 AND machine_sequence = $4",
        &[
            record.written.card_id.0[..].into(),
            record.written.counter.into(),
            machine.0[..].into(),
            record.sequence.into(),
        ],
    )?;
    Ok(())
}

fn decode_stored(bytes: &[u8]) -> Result<WriteRecord, CenterError> {
    WriteRecord::decode(bytes)
        .map_err(|error| CenterError::Storage(format!("stored write record: {error}")))
}
