//! The transfer-key and update-key generations of card-to-card transfer (seed 000).
//!
//! Both keys are derived from the master key KA and a generation number, so the center
//! stores only which generation is current and when each rotation happened: generation n
//! of the transfer key is `diversify_key(KA, 0x16, b"transfer" || n)`, generation m of the
//! update key `diversify_key(KA, 0x17, b"update" || m)`. A rotation only ever moves a
//! generation up; the database enforces it (one row per kind and generation, and the
//! increment and its history row in one transaction), so several center processes on one
//! database never hand out two different "next" generations.
//!
//! What the center delivers (personalization, every load) is the current transfer key, the
//! upper limit current + 1, and the current update key: a card loaded before a rotation then
//! accepts the next generation from a peer that was loaded after it (claim 8), never one
//! beyond.

use valuecard_core::crypto::{derivation, diversify_key};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::transfer::{TransferKey, TransferKeySet};
use valuecard_core::time::Date;

use crate::sql::Executor;
use crate::Center;

/// Migration: the current generation of each kind (both start at 1), the history of
/// rotations, and the generations delivered to each card and with each load (so that a
/// retried load seals the very same key set under its nonce, and so that the center can
/// tell a proof under a generation older than one a card had already received).
pub const MIGRATION: &str = r#"
    CREATE TABLE key_generations (
        kind    TEXT PRIMARY KEY CHECK (kind IN ('transfer', 'update')),
        current_generation BIGINT NOT NULL
            CHECK (current_generation >= 1 AND current_generation < 4294967295)
    );
    INSERT INTO key_generations (kind, current_generation) VALUES ('transfer', 1), ('update', 1);
    CREATE TABLE key_rotations (
        kind       TEXT NOT NULL CHECK (kind IN ('transfer', 'update')),
        generation BIGINT NOT NULL CHECK (generation > 1),
        rotated_on BIGINT NOT NULL,
        PRIMARY KEY (kind, generation)
    );
    ALTER TABLE loads ADD COLUMN transfer_key_id BIGINT;
    ALTER TABLE loads ADD COLUMN transfer_key_limit BIGINT;
    ALTER TABLE loads ADD COLUMN update_key_id BIGINT;
    ALTER TABLE cards ADD COLUMN transfer_key_id BIGINT
"#;

/// Which key a generation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Transfer,
    Update,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Transfer => "transfer",
            KeyKind::Update => "update",
        }
    }

    fn from_str(text: &str) -> Option<Self> {
        match text {
            "transfer" => Some(KeyKind::Transfer),
            "update" => Some(KeyKind::Update),
            _ => None,
        }
    }
}

/// The current generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGenerations {
    pub transfer: u32,
    pub update: u32,
}

impl KeyGenerations {
    /// The highest transfer-key identifier a card may accept from a peer: one above the
    /// current generation, so a card loaded before the next rotation takes it from a peer
    /// loaded after.
    pub fn limit(&self) -> u32 {
        self.transfer.saturating_add(1)
    }
}

/// One rotation, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRotation {
    pub kind: KeyKind,
    pub generation: u32,
    pub rotated_on: Date,
}

fn corrupt(what: &str) -> CenterError {
    CenterError::Storage(format!("stored key generation: {what}"))
}

fn generation_from(value: i64) -> Result<u32, CenterError> {
    u32::try_from(value)
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| corrupt("out of range"))
}

/// The current generations, read inside the caller's transaction.
pub(crate) fn current_generations(tx: &mut dyn Executor) -> Result<KeyGenerations, CenterError> {
    let row = tx.query_one(
        "SELECT (SELECT current_generation FROM key_generations WHERE kind = 'transfer'),
                (SELECT current_generation FROM key_generations WHERE kind = 'update')",
        &[],
    )?;
    Ok(KeyGenerations {
        transfer: generation_from(row.int(0)?)?,
        update: generation_from(row.int(1)?)?,
    })
}

impl Center {
    /// Generation `id` of the transfer key.
    pub(crate) fn transfer_key(&self, id: u32) -> TransferKey {
        let mut identifier = b"transfer".to_vec();
        identifier.extend_from_slice(&id.to_be_bytes());
        TransferKey {
            id,
            key: diversify_key(&self.keys.master_key, derivation::TRANSFER_KEY, &identifier),
        }
    }

    /// Generation `id` of the update key.
    pub(crate) fn update_key(&self, id: u32) -> TransferKey {
        let mut identifier = b"update".to_vec();
        identifier.extend_from_slice(&id.to_be_bytes());
        TransferKey {
            id,
            key: diversify_key(&self.keys.master_key, derivation::UPDATE_KEY, &identifier),
        }
    }

    /// The key set for the given generations.
    pub(crate) fn key_set_for(&self, transfer: u32, limit: u32, update: u32) -> TransferKeySet {
        TransferKeySet {
            transfer: self.transfer_key(transfer),
            limit,
            update: self.update_key(update),
        }
    }

    /// The current generations.
    pub fn key_generations(&mut self) -> Result<KeyGenerations, CenterError> {
        current_generations(&mut self.db)
    }

    /// What the center delivers to a card now: the current transfer key, the limit (current
    /// + 1) and the current update key.
    pub fn transfer_key_set(&mut self) -> Result<TransferKeySet, CenterError> {
        let generations = self.key_generations()?;
        Ok(self.key_set_for(
            generations.transfer,
            generations.limit(),
            generations.update,
        ))
    }

    /// Moves the transfer key to its next generation and returns it. Cards take it at their
    /// next load, or from a peer card that has it.
    pub fn rotate_transfer_key(&mut self) -> Result<u32, CenterError> {
        self.rotate(KeyKind::Transfer)
    }

    /// Moves the update key to its next generation and returns it.
    pub fn rotate_update_key(&mut self) -> Result<u32, CenterError> {
        self.rotate(KeyKind::Update)
    }

    fn rotate(&mut self, kind: KeyKind) -> Result<u32, CenterError> {
        let today = self.today().0;
        self.db.transaction(|tx| {
            // The increment takes the row's write lock (PostgreSQL) or the database's
            // (SQLite), so a concurrent rotation waits and then moves on from this one;
            // the history's primary key refuses a generation recorded twice.
            let generation = tx
                .query_one(
                    "UPDATE key_generations SET current_generation = current_generation + 1
                     WHERE kind = $1 RETURNING current_generation",
                    &[kind.as_str().into()],
                )?
                .int(0)?;
            let generation = generation_from(generation)?;
            tx.execute(
                "INSERT INTO key_rotations (kind, generation, rotated_on) VALUES ($1, $2, $3)",
                &[kind.as_str().into(), generation.into(), today.into()],
            )?;
            Ok(generation)
        })
    }

    /// Every rotation so far, oldest first.
    pub fn key_rotations(&mut self) -> Result<Vec<KeyRotation>, CenterError> {
        let rows = self.db.query(
            "SELECT kind, generation, rotated_on FROM key_rotations ORDER BY rotated_on, kind, generation",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                Ok(KeyRotation {
                    kind: KeyKind::from_str(&row.text(0)?).ok_or_else(|| corrupt("kind"))?,
                    generation: generation_from(row.int(1)?)?,
                    rotated_on: Date(
                        u32::try_from(row.int(2)?).map_err(|_| corrupt("rotation date"))?,
                    ),
                })
            })
            .collect()
    }
}
