//! Online payments and charges (seed 004) at the center: the settlement system's security
//! server is a device the center certifies (role `OnlineSettlement`) without handing it any
//! scheme key, and reports the usage record of every online update it made on a card. The
//! center checks each one against the card's chain as it checks a terminal's purchase, so
//! that one reconciliation covers the purse spent offline, card to card and online:
//!
//! ```text
//! issued + loaded + charged online - restored - spent - spent online = remaining value
//! ```
//!
//! An online record consumes the card state it started from like any other update: a second
//! update from the same state, whichever kind, flags the card cloned.

use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::{sha256, PublicKey};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{CenterError, ListReason, UploadReceipt};
use valuecard_core::messages::online::OnlineItem;
use valuecard_core::messages::purse::{TransactionKind, UsageRecord};
use valuecard_core::money::Amount;

use crate::alerts::AlertKind;
use crate::loads::{StoredLoad, Writer};
use crate::sql::Executor;
use crate::Center;

/// Migration 18: the online records, keyed by card (the distribution key) and by the
/// security server's sequence within it.
pub const MIGRATION: &str = r#"
    CREATE TABLE online_records (
        card_id             BYTEA NOT NULL CHECK (length(card_id) = 8),
        writer              BYTEA NOT NULL CHECK (length(writer) = 8),
        writer_sequence     BIGINT NOT NULL,
        card_counter        BIGINT NOT NULL,
        kind                BIGINT NOT NULL CHECK (kind IN (5, 6)),
        amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
        balance_after_minor BIGINT NOT NULL CHECK (balance_after_minor >= 0),
        settlement_id       BYTEA NOT NULL CHECK (length(settlement_id) = 16),
        record_digest       BYTEA NOT NULL CHECK (length(record_digest) = 32),
        record_date         BIGINT NOT NULL,
        received_on         BIGINT NOT NULL,
        PRIMARY KEY (card_id, writer, writer_sequence),
        UNIQUE (card_id, settlement_id)
    );
    CREATE INDEX online_records_by_state ON online_records (card_id, card_counter)
"#;

/// The online totals as one select list, read inside the reconciliation's statement.
pub(crate) const TOTALS_COLUMNS: &str = "
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM online_records WHERE kind = 6),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM online_records WHERE kind = 6),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM online_records WHERE kind = 5),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM online_records WHERE kind = 5)";

/// What the settlement system moved on cards, by the records it reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnlineTotals {
    /// Value charged into cards online against credit authorizations.
    pub charged: u64,
    pub charges: u64,
    /// Value cards paid to web stores.
    pub spent: u64,
    pub payments: u64,
}

pub(crate) fn totals_from(
    row: &crate::sql::Row,
    first: usize,
) -> Result<OnlineTotals, CenterError> {
    let value = |index: usize| -> Result<u64, CenterError> {
        u64::try_from(row.int(first + index)?)
            .map_err(|_| CenterError::Storage("a negative online total".into()))
    };
    Ok(OnlineTotals {
        charged: value(0)?,
        charges: value(1)?,
        spent: value(2)?,
        payments: value(3)?,
    })
}

/// An item whose checks passed, with what storing it needs.
struct Checked<'a> {
    item: &'a OnlineItem,
    counter_before: u32,
    digest: [u8; 32],
    previous_load: Option<StoredLoad>,
}

/// Why one item was refused (the center's own failures are errors, not refusals).
enum ItemError {
    Refused(String),
    Center(CenterError),
}

impl From<CenterError> for ItemError {
    fn from(error: CenterError) -> Self {
        ItemError::Center(error)
    }
}

impl Center {
    /// Certifies the settlement system's security server: a device of role
    /// `OnlineSettlement` with its own keys, and nothing of the scheme's (no KO, no KT, no
    /// first stamp): it belongs to another organisation and needs only to be known by its
    /// key. An operator's act, as a terminal's installation is.
    pub fn certify_online_settlement(
        &mut self,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Result<(DeviceId, Certificate), CenterError> {
        self.certify_keyed_device(Role::OnlineSettlement, signing_key, sealing_key)
    }

    /// The security server `writer` reports online records. Each is checked (its own
    /// signature, the card, the chain from the card's previous record) and stored once;
    /// a record reported again is a duplicate, another record under the same sequence or
    /// settlement is refused, and a card state consumed by two updates lists the card.
    pub fn store_online_records(
        &mut self,
        writer: DeviceId,
        items: &[OnlineItem],
    ) -> Result<UploadReceipt, CenterError> {
        let mut receipt = UploadReceipt::default();
        let writer_key = self.reporting_writer_key(writer, TransactionKind::OnlinePayment)?;
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            match self.check_online_item(writer, &writer_key, item) {
                Ok(ok) => checked.push(ok),
                Err(ItemError::Refused(reason)) => {
                    receipt.refused.push((item.record.writer_sequence, reason))
                }
                Err(ItemError::Center(error)) => return Err(error),
            }
        }
        let today = self.today().0;
        let outcome = self.db.transaction(|tx| {
            let mut outcome = UploadReceipt::default();
            for item in &checked {
                match store_item(tx, item, today)? {
                    Stored::New { cloned } => {
                        outcome.stored += 1;
                        if cloned && !outcome.clones_detected.contains(&item.item.card_id) {
                            outcome.clones_detected.push(item.item.card_id);
                        }
                    }
                    Stored::Duplicate => outcome.duplicates += 1,
                    Stored::Refused(reason) => outcome
                        .refused
                        .push((item.item.record.writer_sequence, reason)),
                }
            }
            for card in &outcome.clones_detected {
                crate::loads::list_and_block(
                    tx,
                    card,
                    ListReason::Cloned,
                    AlertKind::Cloned,
                    "one card state was consumed twice, an online update among the updates",
                    today,
                )?;
            }
            Ok(outcome)
        })?;
        receipt.absorb(outcome);
        Ok(receipt)
    }

    fn check_online_item<'a>(
        &mut self,
        writer: DeviceId,
        writer_key: &PublicKey,
        item: &'a OnlineItem,
    ) -> Result<Checked<'a>, ItemError> {
        let refuse = |reason: &str| Err(ItemError::Refused(reason.to_owned()));
        let record = &item.record;
        if !matches!(
            record.kind,
            TransactionKind::OnlinePayment | TransactionKind::OnlineCharge
        ) {
            return refuse("not an online record");
        }
        if record.writer != writer {
            return refuse("the record names another writer");
        }
        if writer_key
            .verify(&record.signed_message(&item.card_id), &record.signature)
            .is_err()
        {
            return refuse("the record's signature does not verify");
        }
        // Whether the center issued the card: its row, without decoding its key.
        match self.card_record(&item.card_id) {
            Ok(_) => {}
            Err(CenterError::Storage(message)) => {
                return Err(ItemError::Center(CenterError::Storage(message)))
            }
            Err(_) => return refuse("the center did not issue this card"),
        }
        let Some(counter_before) = record.counter.checked_sub(1) else {
            return refuse("a record at counter 0");
        };
        let (balance_before, previous_load) = match &item.previous {
            None if counter_before == 0 => (Amount::ZERO, None),
            None => return refuse("the card's previous record is missing"),
            Some(previous) => {
                if previous.counter != counter_before {
                    return refuse("the previous record does not describe the state spent from");
                }
                let previous_load = match self.genuine_writer(&item.card_id, previous)? {
                    None => return refuse("the previous record's signature does not verify"),
                    Some(Writer::Load(load)) => Some(load),
                    Some(Writer::Terminal) => None,
                };
                (previous.balance_after, previous_load)
            }
        };
        let expected = if record.kind == TransactionKind::OnlinePayment {
            balance_before.checked_sub(record.amount)
        } else {
            balance_before.checked_add(record.amount)
        };
        if expected.ok() != Some(record.balance_after) || record.amount == Amount::ZERO {
            return refuse("balances do not add up");
        }
        Ok(Checked {
            item,
            counter_before,
            digest: sha256(&record.encode()),
            previous_load,
        })
    }

    /// The online totals on their own.
    pub fn online_totals(&mut self) -> Result<OnlineTotals, CenterError> {
        let row = self
            .db
            .query_one(&format!("SELECT {TOTALS_COLUMNS}"), &[])?;
        totals_from(&row, 0)
    }
}

enum Stored {
    New { cloned: bool },
    Duplicate,
    Refused(String),
}

fn store_item(
    tx: &mut dyn Executor,
    checked: &Checked<'_>,
    today: u32,
) -> Result<Stored, CenterError> {
    let item = checked.item;
    let record: &UsageRecord = &item.record;
    let existing = tx.query_optional(
        "SELECT record_digest FROM online_records
         WHERE card_id = $1 AND (settlement_id = $2 OR (writer = $3 AND writer_sequence = $4))",
        &[
            item.card_id.0[..].into(),
            item.settlement_id[..].into(),
            record.writer.0[..].into(),
            record.writer_sequence.into(),
        ],
    )?;
    if let Some(row) = existing {
        return Ok(if row.bytes(0)? == checked.digest {
            Stored::Duplicate
        } else {
            Stored::Refused("another record was reported under this settlement or sequence".into())
        });
    }
    // Asked before the insert, so that the record does not find itself.
    let mut cloned =
        crate::loads::state_consumed_by_other(tx, &item.card_id, checked.counter_before, None)?;
    if let Some(load) = &checked.previous_load {
        cloned |= crate::loads::commit_load(tx, load, today)?;
    }
    crate::loads::cancel_pending_at(tx, &item.card_id, checked.counter_before)?;
    crate::moves::flag_used_after_move(
        tx,
        &item.card_id,
        checked.counter_before,
        &format!("updated online ({:?} of {})", record.kind, record.amount),
        today,
    )?;
    tx.execute(
        "INSERT INTO online_records (card_id, writer, writer_sequence, card_counter, kind,
             amount_minor, balance_after_minor, settlement_id, record_digest, record_date, received_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            item.card_id.0[..].into(),
            record.writer.0[..].into(),
            record.writer_sequence.into(),
            checked.counter_before.into(),
            i64::from(record.kind as u8).into(),
            record.amount.into(),
            record.balance_after.into(),
            item.settlement_id[..].into(),
            checked.digest[..].into(),
            record.date.0.into(),
            today.into(),
        ],
    )?;
    crate::advance_remaining_value(
        tx,
        &item.card_id,
        record.balance_after,
        record.counter,
        today,
    )?;
    Ok(Stored::New { cloned })
}
