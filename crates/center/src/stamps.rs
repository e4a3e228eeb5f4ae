//! Stolen terminals (seed 003, Figs. 10-12): each terminal's first time stamp TS0 and the
//! latest update count it reported; reporting a terminal stolen lists (IDT, TS0, t).

use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterError;

use crate::sql::Executor;
use crate::Center;

/// Migration: the time-stamp registry (appended to `db::MIGRATIONS`).
pub const MIGRATION: &str = r#"
    CREATE TABLE terminal_stamps (
        device_id      BYTEA PRIMARY KEY CHECK (length(device_id) = 8),
        first_stamp    BYTEA NOT NULL CHECK (length(first_stamp) = 32),
        reported_count BIGINT NOT NULL CHECK (reported_count >= 0),
        updated_on     BIGINT NOT NULL
    )
"#;

impl Center {
    pub(crate) fn register_first_stamp(
        &mut self,
        device_id: DeviceId,
        first_stamp: &[u8; 32],
    ) -> Result<(), CenterError> {
        let today = self.today().0;
        self.db.execute(
            "INSERT INTO terminal_stamps (device_id, first_stamp, reported_count, updated_on) VALUES ($1, $2, 0, $3)",
            &[device_id.0[..].into(), first_stamp[..].into(), today.into()],
        )?;
        Ok(())
    }

    /// A terminal reports that it advanced its stamp to `count` (the seed's automatic call to
    /// the center at each update). Counts only move forward.
    pub fn record_stamp_count(
        &mut self,
        device_id: DeviceId,
        count: u32,
    ) -> Result<u32, CenterError> {
        self.device_role(device_id)?;
        let today = self.today().0;
        self.db.execute(
            "UPDATE terminal_stamps SET reported_count = $2, updated_on = $3 WHERE device_id = $1 AND reported_count < $2",
            &[device_id.0[..].into(), count.into(), today.into()],
        )?;
        let row = self
            .db
            .query_optional(
                "SELECT reported_count FROM terminal_stamps WHERE device_id = $1",
                &[device_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownDevice(device_id))?;
        Ok(row.int(0)? as u32)
    }

    /// Lists a terminal as stolen with its first stamp and the count it last reported: every
    /// terminal then refuses cards it wrote with a later count. The device can no longer act
    /// at the center.
    pub fn report_stolen_terminal(&mut self, device_id: DeviceId) -> Result<u32, CenterError> {
        let today = self.today().0;
        self.db.transaction(|tx| {
            let row = tx
                .query_optional(
                    "SELECT first_stamp, reported_count FROM terminal_stamps WHERE device_id = $1",
                    &[device_id.0[..].into()],
                )?
                .ok_or(CenterError::UnknownDevice(device_id))?;
            let (first_stamp, count) = (row.bytes(0)?, row.int(1)?);
            let listed = tx.query_optional(
                "SELECT version FROM list_entries WHERE kind = 'terminal' AND subject = $1",
                &[device_id.0[..].into()],
            )?;
            if listed.is_none() {
                let version = crate::db::next_in_sequence(tx, "list")?;
                tx.execute(
                    "INSERT INTO list_entries (version, kind, subject, reason, first_stamp, stamp_count, added_on)
                     VALUES ($1, 'terminal', $2, 'troubled-terminal', $3, $4, $5)",
                    &[version.into(), device_id.0[..].into(), first_stamp.into(), count.into(), today.into()],
                )?;
            }
            tx.execute("UPDATE devices SET status = 'retired' WHERE device_id = $1", &[device_id.0[..].into()])?;
            Ok(count as u32)
        })
    }
}
