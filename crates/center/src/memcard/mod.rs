//! Memory cards at the center (seed 001, Fig. 3): the write records charge and payment
//! machines upload, the float charge machines may charge (area 23A), the restore evidence
//! a machine asks for to finish a torn write, and the memory-card part of reconciliation.
//!
//! A memory card cannot sign, so everything the center knows of one comes from the
//! machines' records: each names the state the machine verified on the card (`previous`)
//! and the state it wrote and signed (`written`). The center checks every record before it
//! stores it (`check.rs`): the machine's role fits the kind of write, both states' signatures
//! verify under their writers' certified keys, sealed values open under the center's own
//! derivation of the writer's value key, and the values agree with the record's balances.
//!
//! What a cheap card cannot prevent, the center detects: two records that start from one
//! card state come from two cards answering under one ID and counter (a copy), and the
//! second is stored, counted and alerted, once per state. The database holds that once:
//! `memcard_states` has one row per (card, counter before the write), so two center
//! processes that each see one of the records still store one first record and one alert.
//!
//! Tables are keyed by card (`memcard_states`, `memcard_spent_twice`) or by machine
//! (`memcard_writes`, `memcard_float_grants`, `memcard_float_limits`), so they distribute
//! as the purse's records do.

mod check;
mod float;
mod pending;
mod store;
mod totals;

pub use float::FLOAT_LIMIT_DEFAULT_MINOR;
pub use pending::MIGRATION as PENDING_MIGRATION;
pub(crate) use totals::{totals_columns, totals_from};
pub use totals::{MemcardStatus, MemcardTotals};

use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::AesKey;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, USAGE_BATCH_MAX};
use valuecard_core::messages::memcard::{
    writer_value_key, FloatGrant, MemcardLink, PendingReceipt, RestoreEvidence, WriteReceipt,
    WriteRecord, WriteUpload,
};
use valuecard_core::money::Amount;

use crate::sql::Executor;
use crate::Center;
use check::{WriteError, WriterKeys};

/// Migration: write records by machine and sequence, each card state's first record by
/// card and counter, the states spent twice, and the float grants and limits by machine
/// (appended to `db::MIGRATIONS`).
pub const MIGRATION: &str = r#"
    CREATE TABLE memcard_writes (
        machine_id           BYTEA NOT NULL CHECK (length(machine_id) = 8),
        machine_sequence     BIGINT NOT NULL CHECK (machine_sequence >= 0),
        kind                 TEXT NOT NULL CHECK (kind IN ('charge', 'payment')),
        card_id              BYTEA NOT NULL CHECK (length(card_id) = 8),
        previous_counter     BIGINT NOT NULL,
        written_counter      BIGINT NOT NULL,
        amount_minor         BIGINT NOT NULL CHECK (amount_minor > 0),
        balance_before_minor BIGINT NOT NULL CHECK (balance_before_minor >= 0),
        balance_after_minor  BIGINT NOT NULL CHECK (balance_after_minor >= 0),
        write_date           BIGINT NOT NULL,
        record_digest        BYTEA NOT NULL CHECK (length(record_digest) = 32),
        record               BYTEA NOT NULL,
        gap                  BIGINT NOT NULL CHECK (gap IN (0, 1)),
        spent_twice          BIGINT NOT NULL CHECK (spent_twice IN (0, 1)),
        uploaded_on          BIGINT NOT NULL,
        PRIMARY KEY (machine_id, machine_sequence)
    );
    CREATE TABLE memcard_states (
        card_id              BYTEA NOT NULL CHECK (length(card_id) = 8),
        previous_counter     BIGINT NOT NULL,
        written_counter      BIGINT NOT NULL,
        machine_id           BYTEA NOT NULL CHECK (length(machine_id) = 8),
        machine_sequence     BIGINT NOT NULL,
        balance_before_minor BIGINT NOT NULL CHECK (balance_before_minor >= 0),
        balance_after_minor  BIGINT NOT NULL CHECK (balance_after_minor >= 0),
        record               BYTEA NOT NULL,
        PRIMARY KEY (card_id, previous_counter)
    );
    CREATE INDEX memcard_states_by_written ON memcard_states (card_id, written_counter);
    CREATE TABLE memcard_spent_twice (
        card_id          BYTEA NOT NULL CHECK (length(card_id) = 8),
        previous_counter BIGINT NOT NULL,
        machine_id       BYTEA NOT NULL CHECK (length(machine_id) = 8),
        machine_sequence BIGINT NOT NULL,
        detected_on      BIGINT NOT NULL,
        PRIMARY KEY (card_id, previous_counter)
    );
    CREATE TABLE memcard_float_grants (
        machine_id   BYTEA NOT NULL CHECK (length(machine_id) = 8),
        grant_number BIGINT NOT NULL CHECK (grant_number > 0),
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        granted_on   BIGINT NOT NULL,
        signature    BYTEA NOT NULL CHECK (length(signature) = 64),
        PRIMARY KEY (machine_id, grant_number)
    );
    CREATE TABLE memcard_float_limits (
        machine_id  BYTEA PRIMARY KEY CHECK (length(machine_id) = 8),
        limit_minor BIGINT NOT NULL CHECK (limit_minor >= 0)
    )
"#;

/// The most write records one upload may carry (the purse's usage batch bound).
pub const WRITE_UPLOAD_MAX: usize = USAGE_BATCH_MAX;

/// One state of a memory card spent twice, as the center recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpentTwice {
    pub card_id: CardId,
    /// The counter of the state both writes started from.
    pub counter: u32,
    /// The machine and sequence of the second record.
    pub machine: DeviceId,
    pub sequence: u32,
}

/// Whether a device's role may upload memory-card records.
pub fn is_machine(role: Role) -> bool {
    matches!(role, Role::ChargeMachine | Role::PaymentMachine)
}

fn stored_id(bytes: &[u8], what: &str) -> Result<[u8; 8], CenterError> {
    <[u8; 8]>::try_from(bytes).map_err(|_| CenterError::Storage(format!("stored {what}")))
}

/// An upload's records after their checks: those that passed, the refused ones with their
/// reasons (by sequence), and the writers' keys looked up on the way.
struct CheckedUpload<'a> {
    checked: Vec<check::CheckedWrite<'a>>,
    refused: Vec<(u32, String)>,
    writers: WriterKeys,
}

impl Center {
    /// The checks every upload of write records (done or pending) goes through: the batch
    /// bound, a machine uploading, and each record checked on its own (`check.rs`).
    fn check_upload<'a>(
        &mut self,
        upload: &'a WriteUpload,
    ) -> Result<CheckedUpload<'a>, CenterError> {
        if upload.records.len() > WRITE_UPLOAD_MAX {
            return Err(CenterError::Mismatch(format!(
                "at most {WRITE_UPLOAD_MAX} write records per upload"
            )));
        }
        let (role, machine_key) = self.installed_device(upload.machine)?;
        if !is_machine(role) {
            return Err(CenterError::NotAuthorized(upload.machine));
        }
        let mut out = CheckedUpload {
            checked: Vec::with_capacity(upload.records.len()),
            refused: Vec::new(),
            writers: WriterKeys::default(),
        };
        for record in &upload.records {
            match self.check_write(upload.machine, role, &machine_key, record, &mut out.writers) {
                Ok(ok) => out.checked.push(ok),
                Err(WriteError::Refused(reason)) => out.refused.push((record.sequence, reason)),
                // The center could not read its own records: the machine sends it all again.
                Err(WriteError::Center(error)) => return Err(error),
            }
        }
        Ok(out)
    }

    /// Verifies and stores a batch of write records from one charge or payment machine,
    /// idempotently on (machine, sequence): a record stored with the same content is a
    /// duplicate, another under a used sequence is refused. Each record is checked on its
    /// own (`check.rs`) and a refused one does not stop the others. Records are stored in
    /// upload order in one transaction; a record that starts from a card state another
    /// record already started from is stored, and the state is alerted and the card listed
    /// as cloned, once per state.
    pub fn ingest_memcard_writes(
        &mut self,
        upload: &WriteUpload,
    ) -> Result<WriteReceipt, CenterError> {
        let CheckedUpload {
            checked,
            refused,
            mut writers,
        } = self.check_upload(upload)?;
        let mut receipt = WriteReceipt {
            refused,
            ..WriteReceipt::default()
        };
        // Pending writes of other machines (or this one) that these records show landed are
        // counted first, in the same transaction, so that the records link to them.
        let (promotions, reported) = self.held_evidence(upload.machine, &checked)?;
        let mut promoted = Vec::with_capacity(promotions.len());
        for promotion in &promotions {
            // A promotion that no longer checks stays evidence; the upload goes on.
            if let Ok(write) = self.check_write(
                promotion.machine,
                promotion.role,
                &promotion.key,
                &promotion.record,
                &mut writers,
            ) {
                promoted.push((promotion.machine, write));
            }
        }
        let today = self.today().0;
        let machine = upload.machine;
        let outcome = self.db.transaction(|tx| {
            for (writer, write) in &promoted {
                store::store_writes(tx, *writer, std::slice::from_ref(write), today)?;
                pending::forget(tx, *writer, write.record)?;
            }
            let outcome = store::store_writes(tx, machine, &checked, today)?;
            // A machine that finished a write it had reported pending uploads it done.
            for &index in &reported {
                pending::forget(tx, machine, checked[index].record)?;
            }
            Ok(outcome)
        })?;
        receipt.stored = outcome.stored;
        receipt.duplicates = outcome.duplicates;
        receipt.refused.extend(outcome.refused);
        Ok(receipt)
    }

    /// The newest state the center holds evidence of for a memory card, with the
    /// certificate of the machine that wrote it: a pending write reported after every
    /// counted state of the card (`pending.rs`), or else the counted record with the lowest
    /// counter after its write among each state's first records; `None` for a card no
    /// record names.
    pub fn latest_memcard_state(
        &mut self,
        card_id: &CardId,
    ) -> Result<Option<RestoreEvidence>, CenterError> {
        let (record, writer) = match self.newest_pending(card_id)? {
            Some(pending) => pending,
            None => {
                let Some(row) = self.db.query_optional(
                    "SELECT record, machine_id FROM memcard_states WHERE card_id = $1
                     ORDER BY written_counter ASC, previous_counter DESC LIMIT 1",
                    &[card_id.0[..].into()],
                )?
                else {
                    return Ok(None);
                };
                let record = WriteRecord::decode(&row.bytes(0)?).map_err(|error| {
                    CenterError::Storage(format!("stored write record: {error}"))
                })?;
                (record, DeviceId(stored_id(&row.bytes(1)?, "machine ID")?))
            }
        };
        let certificate = self
            .db
            .query_optional(
                "SELECT certificate FROM devices WHERE device_id = $1",
                &[writer.0[..].into()],
            )?
            .map(|row| row.optional_bytes(0))
            .transpose()?
            .flatten()
            .ok_or_else(|| CenterError::Storage(format!("no certificate of machine {writer}")))?;
        let writer_certificate = Certificate::decode(&certificate)
            .map_err(|error| CenterError::Storage(format!("stored certificate: {error}")))?;
        Ok(Some(RestoreEvidence {
            record,
            writer_certificate,
        }))
    }

    /// Every memory-card state spent twice, in the order found.
    pub fn memcard_states_spent_twice(&mut self) -> Result<Vec<SpentTwice>, CenterError> {
        let rows = self.db.query(
            "SELECT card_id, previous_counter, machine_id, machine_sequence FROM memcard_spent_twice
             ORDER BY detected_on, card_id, previous_counter",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let number = |index: usize, what: &str| {
                    u32::try_from(row.int(index)?)
                        .map_err(|_| CenterError::Storage(format!("stored {what}")))
                };
                Ok(SpentTwice {
                    card_id: CardId(stored_id(&row.bytes(0)?, "card ID")?),
                    counter: number(1, "counter")?,
                    machine: DeviceId(stored_id(&row.bytes(2)?, "machine ID")?),
                    sequence: number(3, "sequence")?,
                })
            })
            .collect()
    }

    /// The memory-card totals alone (the reconciliation reads them with the rest).
    pub fn memcard_totals(&mut self) -> Result<MemcardTotals, CenterError> {
        let row = self
            .db
            .query_one(&format!("SELECT {}", totals_columns()), &[])?;
        totals_from(&row, 0)
    }

    /// How many stored write records were noted, when they arrived, as starting from a state
    /// that was not the newest the center then knew of the card (a record of the machines
    /// not uploaded yet lies between, or records arrived out of order).
    pub fn memcard_gap_records(&mut self) -> Result<u64, CenterError> {
        let row = self.db.query_one(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM memcard_writes WHERE gap = 1",
            &[],
        )?;
        u64::try_from(row.int(0)?).map_err(|_| CenterError::Storage("stored count".into()))
    }

    /// A writer's value key for claim 4, derived from the common key KO as every installed
    /// SAM derives it: for the machines' factory and for tests that build sealed records.
    /// Never served over the network.
    pub fn memcard_value_key(&self, writer: &DeviceId) -> AesKey {
        writer_value_key(&self.keys.common_key, writer)
    }
}

impl MemcardLink for Center {
    fn upload_writes(&mut self, upload: &WriteUpload) -> Result<WriteReceipt, CenterError> {
        self.ingest_memcard_writes(upload)
    }

    fn request_float(
        &mut self,
        machine: DeviceId,
        amount: Amount,
    ) -> Result<FloatGrant, CenterError> {
        self.grant_float(machine, amount)
    }

    fn latest_state(&mut self, card: &CardId) -> Result<Option<RestoreEvidence>, CenterError> {
        self.latest_memcard_state(card)
    }

    fn report_pending(&mut self, upload: &WriteUpload) -> Result<PendingReceipt, CenterError> {
        self.report_memcard_pending(upload)
    }
}

/// Runs a statement that takes a machine's ID as `$1` and returns one non-negative sum.
pub(crate) fn sum(
    tx: &mut dyn Executor,
    sql: &str,
    machine: &DeviceId,
) -> Result<u64, CenterError> {
    let row = tx.query_one(sql, &[machine.0[..].into()])?;
    u64::try_from(row.int(0)?).map_err(|_| CenterError::Storage("a stored sum is negative".into()))
}
