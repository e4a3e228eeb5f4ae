//! Moves of a chip's services to a new chip (seed 002) at the center. The center certifies
//! the move's devices (the move server's administrative SAM, each provider's normal and
//! transfer SAM) and hands none of them a scheme key. The purse moves as value, not as
//! keys: the new chip keeps its own key pair, and the purse provider's transfer SAM reports
//! each completed move with the old chip's signed export and the new chip's migration
//! record. The center then
//!
//! - counts the value on the new card (its remaining value moves to the record's balance),
//! - takes the old card out of the remaining-value sum, lists it (`migrated`) so that
//!   terminals refuse it once they sync, and blocks it (no load is authorized for it), and
//! - recognises any later use of the old card: a purchase, a card-to-card transfer (sent or
//!   received) or an online update from a state at or after the export raises
//!   `spent-after-move` ([`flag_used_after_move`] for the last two), and the reconciliation
//!   shows the value it spent as excess.
//!
//! A move moves value and creates none, so the equation of `reconcile.rs` holds with every
//! move in it. Purchases the old chip made before the export and a terminal has not uploaded
//! yet show as uploads outstanding until they arrive (the export took the balance after
//! them).

use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::{sha256, PublicKey};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, ListReason, UploadReceipt};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::messages::services::{MoveId, PurseMove};
use valuecard_core::money::Amount;

use crate::alerts::AlertKind;
use crate::sql::Executor;
use crate::Center;

/// Migration 19: each purse move, once. The old chip's export and the new chip's record are
/// both kept (their digests and the fields the center sums and looks up by).
pub const MIGRATION: &str = r#"
    CREATE TABLE card_moves (
        move_id             BYTEA PRIMARY KEY CHECK (length(move_id) = 16),
        source              BYTEA NOT NULL CHECK (length(source) = 8),
        destination         BYTEA NOT NULL CHECK (length(destination) = 8),
        amount_minor        BIGINT NOT NULL CHECK (amount_minor >= 0),
        source_counter      BIGINT NOT NULL,
        export_signature    BYTEA NOT NULL CHECK (length(export_signature) = 64),
        writer              BYTEA NOT NULL CHECK (length(writer) = 8),
        writer_sequence     BIGINT NOT NULL,
        destination_counter BIGINT NOT NULL,
        balance_after_minor BIGINT NOT NULL,
        record_digest       BYTEA NOT NULL CHECK (length(record_digest) = 32),
        received_on         BIGINT NOT NULL,
        UNIQUE (writer, writer_sequence),
        CHECK (source <> destination)
    );
    CREATE INDEX card_moves_by_source ON card_moves (source);
    CREATE INDEX card_moves_by_destination ON card_moves (destination, destination_counter)
"#;

/// The moves' totals as one select list, read inside the reconciliation's statement.
pub(crate) const TOTALS_COLUMNS: &str = "
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM card_moves),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM card_moves)";

/// What moves carried from old chips to new ones: value that changed cards, counted in
/// no term of the equation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveTotals {
    pub moved: u64,
    pub moves: u64,
}

/// Raises `spent-after-move` when `card` changed at `counter` (its counter before the
/// update) although its purse moved to a new chip at an earlier or the same counter: an old
/// chip written back to its image before the move, or switched back to main keys. `what`
/// says what it did ("sent 5.00 by transfer").
pub(crate) fn flag_used_after_move(
    tx: &mut dyn Executor,
    card: &CardId,
    counter: u32,
    what: &str,
    today: u32,
) -> Result<(), CenterError> {
    let moved_at = tx
        .query_optional(
            "SELECT source_counter FROM card_moves WHERE source = $1 \
             ORDER BY source_counter LIMIT 1",
            &[card.0[..].into()],
        )?
        .map(|row| row.int(0))
        .transpose()?;
    match moved_at {
        Some(moved_at) if i64::from(counter) >= moved_at => crate::alerts::raise(
            tx,
            &card.0,
            AlertKind::SpentAfterMove,
            &format!(
                "{what} at counter {counter} after its purse moved to a new chip at counter {moved_at}"
            ),
            today,
        ),
        _ => Ok(()),
    }
}

pub(crate) fn totals_from(row: &crate::sql::Row, first: usize) -> Result<MoveTotals, CenterError> {
    let value = |index: usize| -> Result<u64, CenterError> {
        u64::try_from(row.int(first + index)?)
            .map_err(|_| CenterError::Storage("a negative move total".into()))
    };
    Ok(MoveTotals {
        moved: value(0)?,
        moves: value(1)?,
    })
}

/// One recorded move, as the center looks it up by either card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardMove {
    pub move_id: MoveId,
    pub source: CardId,
    pub destination: CardId,
    pub amount: Amount,
    /// The old card's counter at the export: any update of it from this state on came after
    /// the move.
    pub source_counter: u32,
    pub recorded_on: u32,
}

enum Stored {
    New { cloned: bool, moved_twice: bool },
    Duplicate,
    Refused(String),
}

impl Center {
    /// Certifies the move server's administrative SAM (role `MoveAdministrator`): it signs
    /// area formats and key switches of chips and holds no key of any area.
    pub fn certify_move_administrator(
        &mut self,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Result<(DeviceId, Certificate), CenterError> {
        self.certify_keyed_device(Role::MoveAdministrator, signing_key, sealing_key)
    }

    /// Certifies a provider's normal SAM (role `ServiceProvider`): it seals main area keys
    /// to chips.
    pub fn certify_service_provider(
        &mut self,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Result<(DeviceId, Certificate), CenterError> {
        self.certify_keyed_device(Role::ServiceProvider, signing_key, sealing_key)
    }

    /// Certifies a provider's transfer SAM (role `ServiceTransfer`): it seals temporary
    /// area keys to chips, keeps the move's copies, and (the purse's) writes the migration
    /// records the center accepts from it and no other device.
    pub fn certify_service_transfer(
        &mut self,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Result<(DeviceId, Certificate), CenterError> {
        self.certify_keyed_device(Role::ServiceTransfer, signing_key, sealing_key)
    }

    /// The purse provider's transfer SAM `writer` reports completed purse moves. Each is
    /// checked (the old chip's export signature under the old card's certified key, the
    /// record's under the writer's, the amounts) and stored once; a move reported again is
    /// a duplicate, another report under the same move or sequence is refused. A new card
    /// state consumed by another update too lists the new card cloned; an old chip whose
    /// value was moved twice is alerted.
    pub fn store_purse_moves(
        &mut self,
        writer: DeviceId,
        items: &[PurseMove],
    ) -> Result<UploadReceipt, CenterError> {
        let mut receipt = UploadReceipt::default();
        let writer_key = self.reporting_writer_key(writer, TransactionKind::MigrationIn)?;
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            match self.check_purse_move(writer, &writer_key, item)? {
                Ok(()) => checked.push(item),
                Err(reason) => receipt.refused.push((item.record.writer_sequence, reason)),
            }
        }
        let today = self.today().0;
        let outcome = self.db.transaction(|tx| {
            let mut outcome = UploadReceipt::default();
            for item in &checked {
                match store_move(tx, item, today)? {
                    Stored::New {
                        cloned,
                        moved_twice,
                    } => {
                        outcome.stored += 1;
                        if cloned && !outcome.clones_detected.contains(&item.destination) {
                            outcome.clones_detected.push(item.destination);
                        }
                        if moved_twice {
                            crate::alerts::raise(
                                tx,
                                &item.source.0,
                                AlertKind::MovedTwice,
                                &format!(
                                    "the chip's purse was moved to a second new chip ({}) by \
                                     move {}",
                                    item.destination,
                                    item.move_id
                                        .iter()
                                        .map(|byte| format!("{byte:02x}"))
                                        .collect::<String>()
                                ),
                                today,
                            )?;
                        }
                    }
                    Stored::Duplicate => outcome.duplicates += 1,
                    Stored::Refused(reason) => {
                        outcome.refused.push((item.record.writer_sequence, reason))
                    }
                }
            }
            for card in &outcome.clones_detected {
                crate::loads::list_and_block(
                    tx,
                    card,
                    ListReason::Cloned,
                    AlertKind::Cloned,
                    "one card state was consumed twice, a move's credit among the updates",
                    today,
                )?;
            }
            Ok(outcome)
        })?;
        receipt.absorb(outcome);
        Ok(receipt)
    }

    /// The checks of one reported move that need the center's keys; `Ok(Err(reason))` is a
    /// refusal of the item.
    fn check_purse_move(
        &mut self,
        writer: DeviceId,
        writer_key: &PublicKey,
        item: &PurseMove,
    ) -> Result<Result<(), String>, CenterError> {
        if item.record.writer != writer {
            return Ok(Err("the record names another writer".into()));
        }
        match self.card_record(&item.destination) {
            Ok(_) => {}
            Err(CenterError::Storage(message)) => return Err(CenterError::Storage(message)),
            Err(_) => {
                return Ok(Err(format!(
                    "the center did not issue card {}",
                    item.destination
                )))
            }
        }
        let source_key = match self.card_public_key(&item.source) {
            Ok(key) => key,
            Err(CenterError::Storage(message)) => return Err(CenterError::Storage(message)),
            Err(_) => {
                return Ok(Err(format!(
                    "the center did not issue card {} with a certified key",
                    item.source
                )))
            }
        };
        Ok(item
            .verify(&source_key, writer_key)
            .map_err(|error| error.to_string()))
    }

    /// The move that took a card's value away, if any.
    pub fn move_from(&mut self, card_id: &CardId) -> Result<Option<CardMove>, CenterError> {
        self.moves_where("source", card_id)
            .map(|moves| moves.into_iter().next())
    }

    /// The moves that brought value onto a card.
    pub fn moves_to(&mut self, card_id: &CardId) -> Result<Vec<CardMove>, CenterError> {
        self.moves_where("destination", card_id)
    }

    fn moves_where(
        &mut self,
        column: &'static str,
        card_id: &CardId,
    ) -> Result<Vec<CardMove>, CenterError> {
        let rows = self.db.query(
            &format!(
                "SELECT move_id, source, destination, amount_minor, source_counter, received_on
                 FROM card_moves WHERE {column} = $1 ORDER BY received_on, move_id"
            ),
            &[card_id.0[..].into()],
        )?;
        rows.iter()
            .map(|row| {
                let corrupt = |what: &str| CenterError::Storage(format!("stored move's {what}"));
                let card = |index: usize| -> Result<CardId, CenterError> {
                    Ok(CardId(
                        <[u8; 8]>::try_from(row.bytes(index)?.as_slice())
                            .map_err(|_| corrupt("card"))?,
                    ))
                };
                Ok(CardMove {
                    move_id: MoveId::try_from(row.bytes(0)?.as_slice())
                        .map_err(|_| corrupt("ID"))?,
                    source: card(1)?,
                    destination: card(2)?,
                    amount: Amount::new(u64::try_from(row.int(3)?).map_err(|_| corrupt("amount"))?)
                        .map_err(|_| corrupt("amount"))?,
                    source_counter: u32::try_from(row.int(4)?).map_err(|_| corrupt("counter"))?,
                    recorded_on: u32::try_from(row.int(5)?).map_err(|_| corrupt("date"))?,
                })
            })
            .collect()
    }

    /// The moves' totals on their own.
    pub fn move_totals(&mut self) -> Result<MoveTotals, CenterError> {
        let row = self
            .db
            .query_one(&format!("SELECT {TOTALS_COLUMNS}"), &[])?;
        totals_from(&row, 0)
    }
}

/// Commits the pending loads of `card` that wrote state `counter` with `balance`; whether
/// one of them found its starting state consumed by another update (a clone).
fn commit_loads_shown(
    tx: &mut dyn Executor,
    card: &CardId,
    counter: u32,
    balance: Amount,
    today: u32,
) -> Result<bool, CenterError> {
    let Some(from) = counter.checked_sub(1) else {
        return Ok(false);
    };
    let rows = tx.query(
        &format!(
            "SELECT {} FROM loads WHERE card_id = $1 AND card_counter = $2
                 AND balance_after_minor = $3 AND status = 'pending'",
            crate::loads::LOAD_COLUMNS
        ),
        &[card.0[..].into(), from.into(), balance.into()],
    )?;
    let mut cloned = false;
    for row in &rows {
        let load = crate::loads::StoredLoad::from_row(row)?;
        cloned |= crate::loads::commit_load(tx, &load, today)?;
    }
    Ok(cloned)
}

fn store_move(tx: &mut dyn Executor, item: &PurseMove, today: u32) -> Result<Stored, CenterError> {
    let record = &item.record;
    let digest = sha256(&record.encode());
    let existing = tx.query_optional(
        "SELECT record_digest, move_id FROM card_moves
         WHERE move_id = $1 OR (writer = $2 AND writer_sequence = $3)",
        &[
            item.move_id[..].into(),
            record.writer.0[..].into(),
            record.writer_sequence.into(),
        ],
    )?;
    if let Some(row) = existing {
        return Ok(
            if row.bytes(0)? == digest && row.bytes(1)? == item.move_id.as_slice() {
                Stored::Duplicate
            } else {
                Stored::Refused("another record was reported under this move or sequence".into())
            },
        );
    }
    let Some(counter_before) = record.counter.checked_sub(1) else {
        return Ok(Stored::Refused("a record at counter 0".into()));
    };
    // Asked before the insert, so that the move does not find itself.
    let mut cloned =
        crate::loads::state_consumed_by_other(tx, &item.destination, counter_before, None)?;
    // Both chips showed their states: the old one signed its balance at its counter, the
    // new one showed the transfer SAM its balance before the credit. A load still pending
    // that wrote exactly such a state reached its card.
    let balance_before = record
        .balance_after
        .checked_sub(item.amount)
        .map_err(|_| CenterError::Storage("a checked move's balances".into()))?;
    cloned |= commit_loads_shown(tx, &item.destination, counter_before, balance_before, today)?;
    commit_loads_shown(tx, &item.source, item.source_counter, item.amount, today)?;
    let moved_twice = tx
        .query_optional(
            "SELECT 1 FROM card_moves WHERE source = $1",
            &[item.source.0[..].into()],
        )?
        .is_some();
    crate::loads::cancel_pending_at(tx, &item.destination, counter_before)?;
    tx.execute(
        "INSERT INTO card_moves (move_id, source, destination, amount_minor, source_counter,
             export_signature, writer, writer_sequence, destination_counter, balance_after_minor,
             record_digest, received_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            item.move_id[..].into(),
            item.source.0[..].into(),
            item.destination.0[..].into(),
            item.amount.into(),
            item.source_counter.into(),
            item.export_signature.0[..].into(),
            record.writer.0[..].into(),
            record.writer_sequence.into(),
            counter_before.into(),
            record.balance_after.into(),
            digest[..].into(),
            today.into(),
        ],
    )?;
    crate::advance_remaining_value(
        tx,
        &item.destination,
        record.balance_after,
        record.counter,
        today,
    )?;
    // The old chip is on temporary keys and answers no terminal; listing it makes every
    // terminal refuse it even if its chip were opened.
    crate::usage::list_card(tx, &item.source, ListReason::Migrated, today)?;
    tx.execute(
        "UPDATE cards SET status = 'blocked' WHERE card_id = $1",
        &[item.source.0[..].into()],
    )?;
    Ok(Stored::New {
        cloned,
        moved_twice,
    })
}
