//! The center's lists (seed 003, Figs. 9 and 10): cards every terminal must refuse (cloned,
//! lost, stolen) and troubled terminals. Both are one versioned sequence of entries;
//! terminals fetch the entries after the version they hold.

use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CenterError, ListDelta, ListEntry, ListReason, LIST_DELTA_MAX,
};

use crate::sql::Executor;
use crate::usage::list_card;
use crate::Center;

impl Center {
    /// The holder reports the card lost (or stolen): it is listed and blocked at the center;
    /// every terminal refuses it after its next list update.
    pub fn report_card(
        &mut self,
        card_id: &CardId,
        reason: ListReason,
    ) -> Result<bool, CenterError> {
        if !matches!(
            reason,
            ListReason::Lost | ListReason::Stolen | ListReason::Cloned
        ) {
            return Err(CenterError::Mismatch(format!(
                "a card cannot be listed as {}",
                reason.as_str()
            )));
        }
        self.card_record(card_id)?;
        let today = self.today().0;
        self.db.transaction(|tx| {
            let added = list_card(tx, card_id, reason, today)?;
            tx.execute(
                "UPDATE cards SET status = 'blocked' WHERE card_id = $1",
                &[card_id.0[..].into()],
            )?;
            Ok(added)
        })
    }

    /// The list entries after `since`, oldest first, at most [`LIST_DELTA_MAX`] of them; the
    /// returned version is the last one included (ask again until nothing comes back).
    pub fn list_delta_since(&mut self, since: u64) -> Result<ListDelta, CenterError> {
        let since = i64::try_from(since)
            .map_err(|_| CenterError::Mismatch("list version out of range".into()))?;
        let rows = self.db.query(
            "SELECT version, kind, subject, reason, first_stamp, stamp_count FROM list_entries
             WHERE version > $1 ORDER BY version LIMIT $2",
            &[since.into(), (LIST_DELTA_MAX as i64).into()],
        )?;
        let mut delta = ListDelta {
            version: since as u64,
            entries: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let version = row.int(0)? as u64;
            let subject = row.bytes(2)?;
            let corrupt =
                |what: &str| CenterError::Storage(format!("list entry {version}: invalid {what}"));
            let entry = match row.text(1)?.as_str() {
                "card" => ListEntry::Card {
                    version,
                    card_id: CardId::from_slice(&subject).map_err(|_| corrupt("card ID"))?,
                    reason: ListReason::parse(&row.text(3)?).ok_or_else(|| corrupt("reason"))?,
                },
                _ => ListEntry::Terminal {
                    version,
                    device_id: DeviceId::from_slice(&subject).map_err(|_| corrupt("device ID"))?,
                    first_stamp: row
                        .optional_bytes(4)?
                        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
                        .ok_or_else(|| corrupt("first stamp"))?,
                    stamp_count: u32::try_from(row.int(5)?).map_err(|_| corrupt("stamp count"))?,
                },
            };
            delta.version = version;
            delta.entries.push(entry);
        }
        Ok(delta)
    }

    /// Why a card is on the list, if it is.
    pub fn listed_reason(&mut self, card_id: &CardId) -> Result<Option<ListReason>, CenterError> {
        self.db
            .query_optional(
                "SELECT reason FROM list_entries WHERE kind = 'card' AND subject = $1",
                &[card_id.0[..].into()],
            )?
            .map(|row| {
                let reason = row.text(0)?;
                ListReason::parse(&reason)
                    .ok_or_else(|| CenterError::Storage(format!("list reason {reason:?}")))
            })
            .transpose()
    }

    /// The latest list version.
    pub fn list_version(&mut self) -> Result<u64, CenterError> {
        let row = self.db.query_one(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM list_entries",
            &[],
        )?;
        Ok(row.int(0)? as u64)
    }
}

/// Migration: each restored card, once (appended to `db::MIGRATIONS`).
pub const RESTORATION_MIGRATION: &str = r#"
    CREATE TABLE card_restorations (
        card_id      BYTEA PRIMARY KEY CHECK (length(card_id) = 8),
        amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
        restored_on  BIGINT NOT NULL
    )
"#;

/// How long a card reported destroyed is held before its value goes to a replacement:
/// long enough for every terminal to sync the list and upload what the old chip spent
/// before the report reached it. Those late uploads lower the remaining value, so the
/// replacement gets what the old card really held at the end.
pub const RESTORE_HOLD_DAYS: u32 = 14;

/// Where a restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restoration {
    /// The card is listed and blocked; its value is paid out from this day on.
    Held { until: valuecard_core::time::Date },
    /// The amount to put on the replacement card, paid once.
    Restored {
        amount: valuecard_core::money::Amount,
    },
}

impl Center {
    /// The restore procedure for a card whose chip is destroyed (Fig. 9, remaining-value
    /// database), in two steps. The first call lists and blocks the old card (so the chip,
    /// should it still work, is refused everywhere once terminals sync) and starts a
    /// holding period of [`RESTORE_HOLD_DAYS`]. A call after the holding period pays out
    /// the remaining value as the center knows it then, late uploads netted, once. Any
    /// later spending by the old chip raises an alert. Refused while a load of the card is
    /// in flight, because then the remaining value is not known yet.
    pub fn restore_card(&mut self, card_id: &CardId) -> Result<Restoration, CenterError> {
        self.restore_card_holding(card_id, RESTORE_HOLD_DAYS)
    }

    /// [`Center::restore_card`] with the operator's own holding period, fixed at the first
    /// call (0 pays out at once: only for an operator who knows every terminal has synced
    /// and uploaded).
    pub fn restore_card_holding(
        &mut self,
        card_id: &CardId,
        hold_days: u32,
    ) -> Result<Restoration, CenterError> {
        let (status, _, _) = self.card_record(card_id)?;
        if status == "assigned" {
            return Err(CenterError::Mismatch(format!(
                "card {card_id} was never issued"
            )));
        }
        let today = self.today().0;
        let hold_until = self.db.transaction(|tx| {
            tx.execute(
                "INSERT INTO restore_requests (card_id, requested_on, hold_until) VALUES ($1, $2, $3)
                 ON CONFLICT (card_id) DO NOTHING",
                &[card_id.0[..].into(), today.into(), today.saturating_add(hold_days).into()],
            )?;
            list_card(tx, card_id, ListReason::Stolen, today)?;
            tx.execute("UPDATE cards SET status = 'blocked' WHERE card_id = $1", &[card_id.0[..].into()])?;
            let row = tx.query_one(
                "SELECT hold_until FROM restore_requests WHERE card_id = $1",
                &[card_id.0[..].into()],
            )?;
            Ok(row.int(0)? as u32)
        })?;
        if today < hold_until {
            return Ok(Restoration::Held {
                until: valuecard_core::time::Date(hold_until),
            });
        }
        // The loads in flight and the remaining value are read in the transaction that
        // records the restoration: another center process on the same database may store
        // a late upload or settle a load meanwhile, and the value paid out must be the one
        // recorded.
        let value = self.db.transaction(|tx| {
            let in_flight = tx
                .query_one(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM loads WHERE card_id = $1 AND status = 'pending'",
                    &[card_id.0[..].into()],
                )?
                .int(0)?;
            if in_flight > 0 {
                return Err(CenterError::Mismatch(format!(
                    "card {card_id} has a load in flight: settle it before restoring the card"
                )));
            }
            let balance = tx
                .query_optional(
                    "SELECT balance_minor FROM remaining_values WHERE card_id = $1",
                    &[card_id.0[..].into()],
                )?
                .map(|row| row.int(0))
                .transpose()?
                .unwrap_or(0);
            let value = u64::try_from(balance)
                .ok()
                .and_then(|minor| valuecard_core::money::Amount::new(minor).ok())
                .ok_or_else(|| {
                    CenterError::Storage(format!("stored remaining value of card {card_id}"))
                })?;
            // Once per card: a second restoration would put the same value on two cards.
            let inserted = tx.execute(
                "INSERT INTO card_restorations (card_id, amount_minor, restored_on) VALUES ($1, $2, $3)
                 ON CONFLICT (card_id) DO NOTHING",
                &[card_id.0[..].into(), crate::sql::Value::from(value), today.into()],
            )?;
            if inserted == 0 {
                return Err(CenterError::Mismatch(format!("card {card_id} was already restored")));
            }
            Ok(value)
        })?;
        Ok(Restoration::Restored { amount: value })
    }
}
