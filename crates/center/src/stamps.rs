//! Stolen terminals (seed 003, Figs. 10-12): each terminal's first time stamp TS0 and the
//! latest update count it proved; reporting a terminal stolen lists (IDT, TS0, t).
//!
//! A terminal's SAM advances its chain on its own clock, one step per day since its
//! installation, so the count a terminal can honestly show is bounded by the calendar. A
//! stamp report is accepted only when it is possible (at most [`STAMP_TOLERANCE_DAYS`]
//! ahead of the days since installation, never beyond [`STAMP_COUNT_MAX`]) and its signature
//! verifies, with the terminal's certified key, over TS_t walked from TS0 by the chain.

use std::collections::HashMap;

use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::purse::{
    TerminalStamp, TransactionKind, UsageRecord, STAMP_COUNT_MAX,
};

use crate::sql::Executor;
use crate::Center;

/// How many days a terminal's stamp may run ahead of the center's calendar: the SAM's and
/// the center's clocks may disagree by a day around midnight and across time zones.
pub const STAMP_TOLERANCE_DAYS: u32 = 2;

/// Migration: the time-stamp registry (appended to `db::MIGRATIONS`).
pub const MIGRATION: &str = r#"
    CREATE TABLE terminal_stamps (
        device_id      BYTEA PRIMARY KEY CHECK (length(device_id) = 8),
        first_stamp    BYTEA NOT NULL CHECK (length(first_stamp) = 32),
        reported_count BIGINT NOT NULL CHECK (reported_count >= 0),
        updated_on     BIGINT NOT NULL
    )
"#;

/// Why a usage record written by a listed terminal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StampRefusal {
    #[error("written by terminal {terminal} at stamp {stamp_count}, after it was listed at stamp {listed_count}")]
    WrittenAfterListing {
        terminal: DeviceId,
        stamp_count: u32,
        listed_count: u32,
    },
    #[error("written by listed terminal {0} without a time stamp")]
    NoStamp(DeviceId),
}

/// The troubled-terminal list as the center holds it: terminal ID to the stamp count at
/// which it was listed. Loaded once per upload, so checking each record costs no query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TroubledTerminals {
    listed: HashMap<DeviceId, u32>,
}

impl TroubledTerminals {
    /// Refuses a record that a listed terminal wrote beyond its listed stamp (Fig. 12): the
    /// stamp count is covered by the writer's signature, so it cannot be lowered afterwards.
    /// Records of a listed terminal up to its listed count, and every record of any other
    /// writer, pass.
    pub fn check_record(&self, record: &UsageRecord) -> Result<(), StampRefusal> {
        if record.kind != TransactionKind::Purchase {
            return Ok(());
        }
        let Some(&listed_count) = self.listed.get(&record.writer) else {
            return Ok(());
        };
        match &record.stamp {
            Some(stamp) if stamp.count <= listed_count => Ok(()),
            Some(stamp) => Err(StampRefusal::WrittenAfterListing {
                terminal: record.writer,
                stamp_count: stamp.count,
                listed_count,
            }),
            None => Err(StampRefusal::NoStamp(record.writer)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

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

    /// A terminal reports its signed stamp (the seed's automatic call to the center at each
    /// update). The center refuses an impossible count (beyond [`STAMP_COUNT_MAX`], or more
    /// than [`STAMP_TOLERANCE_DAYS`] ahead of the days since the terminal's installation)
    /// and a signature that does not verify over TS_t walked from TS0; an accepted count
    /// only moves forward. Returns the count the center now holds.
    pub fn record_stamp(
        &mut self,
        device_id: DeviceId,
        stamp: &TerminalStamp,
    ) -> Result<u32, CenterError> {
        self.device_role(device_id)?;
        let row = self
            .db
            .query_optional(
                "SELECT s.first_stamp, d.signing_key, d.installed_on FROM terminal_stamps s
                 JOIN devices d ON d.device_id = s.device_id WHERE s.device_id = $1",
                &[device_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownDevice(device_id))?;
        let first_stamp: [u8; 32] = row
            .bytes(0)?
            .try_into()
            .map_err(|_| CenterError::Storage(format!("stored TS0 of {device_id}")))?;
        let key = PublicKey::from_bytes(&row.bytes(1)?)
            .map_err(|_| CenterError::Storage(format!("stored key of {device_id}")))?;
        let installed_on = u32::try_from(row.int(2)?)
            .map_err(|_| CenterError::Storage(format!("stored date of {device_id}")))?;
        let days = self.today().0.saturating_sub(installed_on);
        let possible = days.saturating_add(STAMP_TOLERANCE_DAYS);
        if stamp.count > STAMP_COUNT_MAX {
            return Err(CenterError::BadStamp(format!(
                "count {} is beyond the longest chain ({STAMP_COUNT_MAX})",
                stamp.count
            )));
        }
        if stamp.count > possible {
            return Err(CenterError::BadStamp(format!(
                "count {} is ahead of the calendar: terminal {device_id} was installed {days} days ago",
                stamp.count
            )));
        }
        let current = TerminalStamp::at(&first_stamp, stamp.count).ok_or_else(|| {
            CenterError::BadStamp(format!("count {} cannot be walked", stamp.count))
        })?;
        key.verify(
            &TerminalStamp::signed_message(&device_id, stamp.count, &current),
            &stamp.signature,
        )
        .map_err(|_| {
            CenterError::BadStamp(format!(
                "the signature over stamp {} does not verify for terminal {device_id}",
                stamp.count
            ))
        })?;
        let today = self.today().0;
        self.db.execute(
            "UPDATE terminal_stamps SET reported_count = $2, updated_on = $3 WHERE device_id = $1 AND reported_count < $2",
            &[device_id.0[..].into(), stamp.count.into(), today.into()],
        )?;
        let row = self
            .db
            .query_optional(
                "SELECT reported_count FROM terminal_stamps WHERE device_id = $1",
                &[device_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownDevice(device_id))?;
        u32::try_from(row.int(0)?).map_err(|_| CenterError::Storage("stored stamp count".into()))
    }

    /// The troubled-terminal list, for checking the writers of uploaded usage records.
    pub fn troubled_terminals(&mut self) -> Result<TroubledTerminals, CenterError> {
        let rows = self.db.query(
            // A listed terminal without a count is listed from its first stamp on.
            "SELECT subject, CAST(COALESCE(stamp_count, 0) AS BIGINT) FROM list_entries WHERE kind = 'terminal'",
            &[],
        )?;
        let mut listed = HashMap::with_capacity(rows.len());
        for row in rows {
            let terminal = DeviceId::from_slice(&row.bytes(0)?)
                .map_err(|error| CenterError::Storage(error.to_string()))?;
            let count = u32::try_from(row.int(1)?)
                .map_err(|_| CenterError::Storage("stored stamp count".into()))?;
            listed.insert(terminal, count);
        }
        Ok(TroubledTerminals { listed })
    }

    /// Lists a terminal as stolen with its first stamp and the count it last proved: every
    /// terminal then refuses cards it wrote with a later count, and the center refuses such
    /// records in uploads. The device can no longer act at the center.
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
            u32::try_from(count).map_err(|_| CenterError::Storage("stored stamp count".into()))
        })
    }
}
