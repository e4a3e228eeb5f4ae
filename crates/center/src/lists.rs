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

impl Center {
    /// The restore procedure for a card whose chip is destroyed (Fig. 9, remaining-value
    /// database): the old card is listed (so the chip, should it still work, is refused
    /// everywhere) and blocked, and the amount to put on a replacement card is its
    /// remaining value as the center last knew it. Refused while a load of the card is in
    /// flight, because then the remaining value is not known yet.
    pub fn restore_card(
        &mut self,
        card_id: &CardId,
    ) -> Result<valuecard_core::money::Amount, CenterError> {
        let (status, _, _) = self.card_record(card_id)?;
        if status == "assigned" {
            return Err(CenterError::Mismatch(format!(
                "card {card_id} was never issued"
            )));
        }
        if self
            .pending_loads()?
            .iter()
            .any(|load| load.card_id == *card_id)
        {
            return Err(CenterError::Mismatch(format!(
                "card {card_id} has a load in flight: settle it before restoring the card"
            )));
        }
        let value = self
            .remaining_value(card_id)?
            .map(|record| record.balance)
            .unwrap_or(valuecard_core::money::Amount::ZERO);
        let today = self.today().0;
        self.db.transaction(|tx| {
            // Once per card: a second restoration would put the same value on two cards.
            let inserted = tx.execute(
                "INSERT INTO card_restorations (card_id, amount_minor, restored_on) VALUES ($1, $2, $3)
                 ON CONFLICT (card_id) DO NOTHING",
                &[card_id.0[..].into(), crate::sql::Value::Int(value.minor() as i64), today.into()],
            )?;
            if inserted == 0 {
                return Err(CenterError::Mismatch(format!("card {card_id} was already restored")));
            }
            list_card(tx, card_id, ListReason::Stolen, today)?;
            tx.execute("UPDATE cards SET status = 'blocked' WHERE card_id = $1", &[card_id.0[..].into()])?;
            Ok(())
        })?;
        Ok(value)
    }
}
