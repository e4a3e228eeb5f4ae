//! A charge or payment machine's log of memory-card writes (seed 001).
//!
//! A memory card cannot sign, and its value is written in three steps (value area, then
//! signature, then certificate). The machine stores the signed record of a write here,
//! *pending*, before it touches the card, so that a write cut short by a pulled card or a
//! power cut is finished (or, for a payment whose value never landed, voided) the next time
//! the card is presented. Done writes go to the center.

use rusqlite::{params, OptionalExtension};
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::WriteRecord;

use super::{MemoryStore, SqliteStore};
use crate::TerminalError;

/// Where a write stands in the machine's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteStatus {
    /// Signed and logged; the card may hold none, part or all of it.
    Pending,
    /// The card holds the whole signed state (value, signature, certificate).
    Done,
    /// A payment whose value area never reached the card: nothing moved. Its signed state
    /// can never verify on the card once the card's counter passed it (the counter never
    /// rises), and it could only lower the card's value.
    Voided,
}

impl WriteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteStatus::Pending => "pending",
            WriteStatus::Done => "done",
            WriteStatus::Voided => "voided",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => WriteStatus::Pending,
            "done" => WriteStatus::Done,
            "voided" => WriteStatus::Voided,
            _ => return None,
        })
    }
}

/// One write as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedWrite {
    pub record: WriteRecord,
    pub status: WriteStatus,
    /// Whether the center acknowledged the record.
    pub uploaded: bool,
}

/// The machine's log of memory-card writes.
pub trait MemcardLog {
    /// Stores a signed write as pending; refuses a sequence already logged.
    fn log_write(&mut self, record: &WriteRecord) -> Result<(), TerminalError>;
    fn set_write_status(&mut self, sequence: u32, status: WriteStatus)
        -> Result<(), TerminalError>;
    /// Every write, oldest first (reports and tests; the write path never reads the whole
    /// log, which grows with every write a machine makes).
    fn writes(&self) -> Result<Vec<LoggedWrite>, TerminalError>;
    /// How many writes the log holds in `status`, counted without reading them.
    fn count_writes(&self, status: WriteStatus) -> Result<u64, TerminalError>;
    /// The lowest sequence the log accepts next: one above the highest logged.
    fn write_sequence_floor(&self) -> Result<u32, TerminalError>;
    /// The pending writes of one card, oldest first.
    fn pending_writes_for_card(&self, card: &CardId) -> Result<Vec<LoggedWrite>, TerminalError>;
    /// Pending writes of every card with a sequence above `after`, oldest first: what the
    /// machine reports to the center as evidence.
    fn pending_writes(&self, after: u32, limit: usize) -> Result<Vec<WriteRecord>, TerminalError>;
    /// Done writes the center has not acknowledged, oldest first.
    fn pending_write_uploads(&self, limit: usize) -> Result<Vec<WriteRecord>, TerminalError>;
    fn mark_writes_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError>;
}

fn corrupt(what: &str) -> TerminalError {
    TerminalError::Store(format!("stored memory-card write has an invalid {what}"))
}

fn storage(error: rusqlite::Error) -> TerminalError {
    TerminalError::Store(error.to_string())
}

/// The writes a query over `memcard_writes` selects (record, status, uploaded), decoded.
fn logged_writes(
    store: &SqliteStore,
    query: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<LoggedWrite>, TerminalError> {
    let mut statement = store.connection().prepare_cached(query).map_err(storage)?;
    let mut rows = statement.query(params).map_err(storage)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(storage)? {
        let record: Vec<u8> = row.get(0).map_err(storage)?;
        let status: String = row.get(1).map_err(storage)?;
        let uploaded: i64 = row.get(2).map_err(storage)?;
        out.push(LoggedWrite {
            record: WriteRecord::decode(&record).map_err(|_| corrupt("record"))?,
            status: WriteStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            uploaded: uploaded != 0,
        });
    }
    Ok(out)
}

impl MemcardLog for SqliteStore {
    fn log_write(&mut self, record: &WriteRecord) -> Result<(), TerminalError> {
        self.connection()
            .execute(
                "INSERT INTO memcard_writes (sequence, card_id, status, record) VALUES (?1, ?2, 'pending', ?3)",
                params![
                    record.sequence,
                    &record.written.card_id.0[..],
                    record.encode()
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn set_write_status(
        &mut self,
        sequence: u32,
        status: WriteStatus,
    ) -> Result<(), TerminalError> {
        let changed = self
            .connection_mut()
            .execute(
                "UPDATE memcard_writes SET status = ?2 WHERE sequence = ?1",
                params![sequence, status.as_str()],
            )
            .map_err(storage)?;
        if changed == 0 {
            return Err(TerminalError::Store(format!(
                "no memory-card write {sequence} in the log"
            )));
        }
        Ok(())
    }

    fn writes(&self) -> Result<Vec<LoggedWrite>, TerminalError> {
        logged_writes(
            self,
            "SELECT record, status, uploaded FROM memcard_writes ORDER BY sequence",
            [],
        )
    }

    fn pending_writes_for_card(&self, card: &CardId) -> Result<Vec<LoggedWrite>, TerminalError> {
        logged_writes(
            self,
            "SELECT record, status, uploaded FROM memcard_writes
             WHERE status = 'pending' AND card_id = ?1 ORDER BY sequence",
            [&card.0[..]],
        )
    }

    fn pending_writes(&self, after: u32, limit: usize) -> Result<Vec<WriteRecord>, TerminalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The partial index of pending writes holds only these rows.
        Ok(logged_writes(
            self,
            "SELECT record, status, uploaded FROM memcard_writes
             WHERE status = 'pending' AND sequence > ?1 ORDER BY sequence LIMIT ?2",
            params![after, limit],
        )?
        .into_iter()
        .map(|write| write.record)
        .collect())
    }

    fn pending_write_uploads(&self, limit: usize) -> Result<Vec<WriteRecord>, TerminalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(logged_writes(
            self,
            "SELECT record, status, uploaded FROM memcard_writes
             WHERE status = 'done' AND uploaded = 0 ORDER BY sequence LIMIT ?1",
            [limit],
        )?
        .into_iter()
        .map(|write| write.record)
        .collect())
    }

    fn count_writes(&self, status: WriteStatus) -> Result<u64, TerminalError> {
        let count: i64 = self
            .connection()
            .query_row(
                "SELECT COUNT(*) FROM memcard_writes WHERE status = ?1",
                [status.as_str()],
                |row| row.get(0),
            )
            .map_err(storage)?;
        u64::try_from(count).map_err(|_| corrupt("count"))
    }

    fn write_sequence_floor(&self) -> Result<u32, TerminalError> {
        let highest: Option<i64> = self
            .connection()
            .query_row("SELECT MAX(sequence) FROM memcard_writes", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(storage)?
            .flatten();
        Ok(highest.map_or(1, |highest| {
            u32::try_from(highest).unwrap_or(u32::MAX).saturating_add(1)
        }))
    }

    fn mark_writes_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        let transaction = self.connection_mut().transaction().map_err(storage)?;
        for sequence in sequences {
            transaction
                .execute(
                    "UPDATE memcard_writes SET uploaded = 1 WHERE sequence = ?1",
                    [sequence],
                )
                .map_err(storage)?;
        }
        transaction.commit().map_err(storage)
    }
}

impl MemcardLog for MemoryStore {
    fn log_write(&mut self, record: &WriteRecord) -> Result<(), TerminalError> {
        if self
            .memcard_writes
            .iter()
            .any(|w| w.record.sequence == record.sequence)
        {
            return Err(TerminalError::Store(format!(
                "memory-card write {} is already logged",
                record.sequence
            )));
        }
        self.memcard_writes.push(LoggedWrite {
            record: record.clone(),
            status: WriteStatus::Pending,
            uploaded: false,
        });
        Ok(())
    }

    fn set_write_status(
        &mut self,
        sequence: u32,
        status: WriteStatus,
    ) -> Result<(), TerminalError> {
        let write = self
            .memcard_writes
            .iter_mut()
            .find(|w| w.record.sequence == sequence)
            .ok_or_else(|| {
                TerminalError::Store(format!("no memory-card write {sequence} in the log"))
            })?;
        write.status = status;
        Ok(())
    }

    fn writes(&self) -> Result<Vec<LoggedWrite>, TerminalError> {
        Ok(self.memcard_writes.clone())
    }

    fn count_writes(&self, status: WriteStatus) -> Result<u64, TerminalError> {
        Ok(self
            .memcard_writes
            .iter()
            .filter(|w| w.status == status)
            .count() as u64)
    }

    fn write_sequence_floor(&self) -> Result<u32, TerminalError> {
        Ok(self
            .memcard_writes
            .iter()
            .map(|write| write.record.sequence)
            .max()
            .map_or(1, |highest| highest.saturating_add(1)))
    }

    fn pending_writes_for_card(&self, card: &CardId) -> Result<Vec<LoggedWrite>, TerminalError> {
        Ok(self
            .memcard_writes
            .iter()
            .filter(|w| w.status == WriteStatus::Pending && w.record.written.card_id == *card)
            .cloned()
            .collect())
    }

    fn pending_writes(&self, after: u32, limit: usize) -> Result<Vec<WriteRecord>, TerminalError> {
        Ok(self
            .memcard_writes
            .iter()
            .filter(|w| w.status == WriteStatus::Pending && w.record.sequence > after)
            .map(|w| w.record.clone())
            .take(limit)
            .collect())
    }

    fn pending_write_uploads(&self, limit: usize) -> Result<Vec<WriteRecord>, TerminalError> {
        Ok(self
            .memcard_writes
            .iter()
            .filter(|w| w.status == WriteStatus::Done && !w.uploaded)
            .map(|w| w.record.clone())
            .take(limit)
            .collect())
    }

    fn mark_writes_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        for write in &mut self.memcard_writes {
            if sequences.contains(&write.record.sequence) {
                write.uploaded = true;
            }
        }
        Ok(())
    }
}

impl MemcardLog for Box<dyn MemcardTerminalStore> {
    fn log_write(&mut self, record: &WriteRecord) -> Result<(), TerminalError> {
        (**self).log_write(record)
    }
    fn set_write_status(
        &mut self,
        sequence: u32,
        status: WriteStatus,
    ) -> Result<(), TerminalError> {
        (**self).set_write_status(sequence, status)
    }
    fn writes(&self) -> Result<Vec<LoggedWrite>, TerminalError> {
        (**self).writes()
    }
    fn count_writes(&self, status: WriteStatus) -> Result<u64, TerminalError> {
        (**self).count_writes(status)
    }
    fn write_sequence_floor(&self) -> Result<u32, TerminalError> {
        (**self).write_sequence_floor()
    }
    fn pending_writes_for_card(&self, card: &CardId) -> Result<Vec<LoggedWrite>, TerminalError> {
        (**self).pending_writes_for_card(card)
    }
    fn pending_writes(&self, after: u32, limit: usize) -> Result<Vec<WriteRecord>, TerminalError> {
        (**self).pending_writes(after, limit)
    }
    fn pending_write_uploads(&self, limit: usize) -> Result<Vec<WriteRecord>, TerminalError> {
        (**self).pending_write_uploads(limit)
    }
    fn mark_writes_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        (**self).mark_writes_uploaded(sequences)
    }
}

/// A store that keeps both a terminal's lists and a machine's log (both stores do), as a
/// trait object for the command-line program.
pub trait MemcardTerminalStore: super::TerminalStore + MemcardLog {}

impl<T: super::TerminalStore + MemcardLog> MemcardTerminalStore for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use valuecard_core::crypto::Signature;
    use valuecard_core::ids::DeviceId;
    use valuecard_core::messages::memcard::{
        PlainValue, SignedState, ValueArea, WriteKind, COUNTER_START,
    };
    use valuecard_core::money::Amount;
    use valuecard_core::time::Date;

    fn record(sequence: u32, card: u8) -> WriteRecord {
        WriteRecord {
            kind: WriteKind::Charge,
            sequence,
            date: Date(20_600),
            balance_before: Amount::ZERO,
            balance_after: Amount::new(100).unwrap(),
            previous: None,
            written: SignedState {
                card_id: CardId([card; 8]),
                counter: COUNTER_START - 1,
                value_area: ValueArea::Plain(PlainValue {
                    date: Date(20_600),
                    amount: Amount::new(100).unwrap(),
                }),
                writer: DeviceId([1; 8]),
                signature: Signature([7; 64]),
            },
        }
    }

    fn exercise(log: &mut impl MemcardLog) {
        assert_eq!(log.write_sequence_floor().unwrap(), 1);
        log.log_write(&record(1, 1)).unwrap();
        log.log_write(&record(2, 2)).unwrap();
        log.log_write(&record(3, 1)).unwrap();
        assert!(log.log_write(&record(3, 1)).is_err());
        assert_eq!(log.write_sequence_floor().unwrap(), 4);
        let pending: Vec<u32> = log
            .pending_writes_for_card(&CardId([1; 8]))
            .unwrap()
            .iter()
            .map(|w| w.record.sequence)
            .collect();
        assert_eq!(pending, [1, 3]);
        let sequences = |records: Vec<WriteRecord>| -> Vec<u32> {
            records.iter().map(|r| r.sequence).collect()
        };
        assert_eq!(sequences(log.pending_writes(0, 10).unwrap()), [1, 2, 3]);
        assert_eq!(sequences(log.pending_writes(1, 1).unwrap()), [2]);
        assert!(log.pending_write_uploads(10).unwrap().is_empty());
        log.set_write_status(1, WriteStatus::Done).unwrap();
        log.set_write_status(2, WriteStatus::Voided).unwrap();
        assert!(log.set_write_status(9, WriteStatus::Done).is_err());
        let uploads = log.pending_write_uploads(10).unwrap();
        assert_eq!(uploads, [record(1, 1)]);
        log.mark_writes_uploaded(&[1]).unwrap();
        assert!(log.pending_write_uploads(10).unwrap().is_empty());
        assert_eq!(sequences(log.pending_writes(0, 10).unwrap()), [3]);
        let writes = log.writes().unwrap();
        assert_eq!(writes.len(), 3);
        assert_eq!(writes[0].status, WriteStatus::Done);
        assert!(writes[0].uploaded);
        assert_eq!(writes[1].status, WriteStatus::Voided);
        assert_eq!(writes[2].status, WriteStatus::Pending);
        for (status, count) in [
            (WriteStatus::Done, 1),
            (WriteStatus::Voided, 1),
            (WriteStatus::Pending, 1),
        ] {
            assert_eq!(log.count_writes(status).unwrap(), count, "{status:?}");
        }
    }

    #[test]
    fn the_memory_log_keeps_pending_done_voided_and_uploads() {
        exercise(&mut MemoryStore::default());
    }

    #[test]
    fn the_sqlite_log_keeps_them_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine.db");
        exercise(&mut SqliteStore::open(&path).unwrap());
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.writes().unwrap().len(), 3);
        assert_eq!(reopened.write_sequence_floor().unwrap(), 4);
    }
}
