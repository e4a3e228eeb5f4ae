//! Usage records by month: the migration that keys them for distribution by card and
//! partitions them on PostgreSQL, and the month partitions made ahead and on demand.
//!
//! The record bodies grow without end, so on PostgreSQL they live in `usage_records`
//! partitioned by range of `purchase_date` (days since 1970), one partition a month, with a
//! DEFAULT partition as a net for a month that has none. A partitioned table can only hold
//! a uniqueness that includes its partition key, and what must be unique is not per month:
//! one record per terminal sequence (retries are duplicates) and one first record per card
//! state (a second record for a state is a clone, whichever month either fell in). Each of
//! those has a small table of its own, keyed by what must be unique: `usage_sequences` by
//! terminal (a device table) and `card_states` by card. The database refuses a second row
//! in either, so a state is counted once even by two center processes that did not see each
//! other's batch. SQLite has no partitions: there `usage_records` is the same logical table,
//! whole.

use std::collections::BTreeSet;

use valuecard_core::messages::center::CenterError;
use valuecard_core::time::Date;

use crate::sql::{Database, Dialect, Executor};

/// The columns of a usage record body, as both databases' migration 12 create them.
macro_rules! record_columns {
    () => {
        r#"(
        card_id             BYTEA NOT NULL CHECK (length(card_id) = 8),
        card_counter        BIGINT NOT NULL,
        terminal_id         BYTEA NOT NULL,
        terminal_sequence   BIGINT NOT NULL,
        amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
        balance_after_minor BIGINT NOT NULL CHECK (balance_after_minor >= 0),
        usage_digest        BYTEA NOT NULL CHECK (length(usage_digest) = 32),
        purchase_date       BIGINT NOT NULL,
        terminal_signature  BYTEA NOT NULL CHECK (length(terminal_signature) = 64),
        previous_writer     BYTEA NOT NULL,
        card_signature      BYTEA
    )"#
    };
}

/// Copies the record bodies of `$from` into the new `$into`, in `$order`.
macro_rules! copy_records {
    ($into:literal, $from:literal, $order:literal) => {
        concat!(
            "
    INSERT INTO ",
            $into,
            " (card_id, card_counter, terminal_id, terminal_sequence,
        amount_minor, balance_after_minor, usage_digest, purchase_date, terminal_signature,
        previous_writer, card_signature)
    SELECT card_id, card_counter, terminal_id, terminal_sequence, amount_minor,
        balance_after_minor, usage_digest, purchase_date, terminal_signature, previous_writer,
        card_signature
    FROM ",
            $from,
            " ",
            $order,
            ";"
        )
    };
}

/// The two key tables of migration 12, filled from the record bodies in `$from`: each
/// terminal sequence once, and each card state's first record (the first in `$order`).
macro_rules! key_tables {
    ($from:literal, $order:literal) => {
        concat!(
            r#"
    CREATE TABLE usage_sequences (
        terminal_id       BYTEA NOT NULL,
        terminal_sequence BIGINT NOT NULL,
        card_id           BYTEA NOT NULL,
        card_counter      BIGINT NOT NULL,
        amount_minor      BIGINT NOT NULL,
        usage_digest      BYTEA NOT NULL,
        PRIMARY KEY (terminal_id, terminal_sequence)
    );
    INSERT INTO usage_sequences (terminal_id, terminal_sequence, card_id, card_counter,
        amount_minor, usage_digest)
    SELECT terminal_id, terminal_sequence, card_id, card_counter, amount_minor, usage_digest
    FROM "#,
            $from,
            r#";
    CREATE TABLE card_states (
        card_id           BYTEA NOT NULL CHECK (length(card_id) = 8),
        card_counter      BIGINT NOT NULL,
        terminal_id       BYTEA NOT NULL,
        terminal_sequence BIGINT NOT NULL,
        usage_digest      BYTEA NOT NULL,
        purchase_date     BIGINT NOT NULL,
        PRIMARY KEY (card_id, card_counter)
    );
    INSERT INTO card_states (card_id, card_counter, terminal_id, terminal_sequence,
        usage_digest, purchase_date)
    SELECT card_id, card_counter, terminal_id, terminal_sequence, usage_digest, purchase_date
    FROM "#,
            $from,
            " ",
            $order,
            "
    ON CONFLICT (card_id, card_counter) DO NOTHING;"
        )
    };
}

/// Migration 12 on PostgreSQL: the bodies move to a partitioned table (every existing row
/// lands in the DEFAULT partition; `Database::migrate` then gives each month found there a
/// partition of its own), and the two key tables are filled from them. Of the records that
/// already spent one card state twice, the earliest by date, terminal and sequence is the
/// state's first: before this migration nothing recorded which came first.
pub const PARTITION_MIGRATION_POSTGRES: &str = concat!(
    r#"
    ALTER TABLE usage_records RENAME TO usage_records_unpartitioned;
    ALTER INDEX usage_records_by_state RENAME TO usage_records_unpartitioned_by_state;
    CREATE TABLE usage_records "#,
    record_columns!(),
    r#" PARTITION BY RANGE (purchase_date);
    CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;"#,
    copy_records!("usage_records", "usage_records_unpartitioned", ""),
    key_tables!(
        "usage_records_unpartitioned",
        "ORDER BY purchase_date, terminal_id, terminal_sequence"
    ),
    r#"
    DROP TABLE usage_records_unpartitioned
"#
);

/// Migration 12 on SQLite: the same tables, `usage_records` whole and rebuilt without the
/// key it had (now `usage_sequences`'), so that both databases hold the same columns under
/// the same keys. The first record of a state is the first stored (SQLite's row order).
pub const PARTITION_MIGRATION_SQLITE: &str = concat!(
    r#"
    CREATE TABLE usage_records_rebuilt "#,
    record_columns!(),
    ";",
    copy_records!("usage_records_rebuilt", "usage_records", "ORDER BY rowid"),
    key_tables!("usage_records", "WHERE true ORDER BY rowid"),
    r#"
    DROP TABLE usage_records;
    ALTER TABLE usage_records_rebuilt RENAME TO usage_records
"#
);

/// A month as (year, month), the unit of partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// The month `date` falls in.
    pub fn of(date: Date) -> Month {
        let (year, month, _) = date.to_ymd();
        Month { year, month }
    }

    /// The month `count` months after this one (before it, for a negative count).
    pub fn plus(self, count: i32) -> Month {
        let index = self.year * 12 + (self.month as i32 - 1) + count;
        Month {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    /// The first day of the month and of the next, the partition's range (the end
    /// excluded); `None` outside the dates the calendar can name.
    fn bounds(self) -> Option<(u32, u32)> {
        let start = Date::from_ymd(self.year, self.month, 1)?;
        let next = self.plus(1);
        let end = Date::from_ymd(next.year, next.month, 1)?;
        Some((start.0, end.0))
    }

    /// The partition's table name.
    pub fn partition(self) -> String {
        format!("usage_records_y{:04}m{:02}", self.year, self.month)
    }
}

/// How many months past the current one have a partition made ahead, so that records
/// dated on the first days of a month never wait for one (or land in the default).
pub const MONTHS_AHEAD: i32 = 2;

/// How far back a record's month gets a partition made for it on demand. A record dated
/// further back, or after the months made ahead (a terminal whose clock is wrong), goes to
/// the DEFAULT partition: a terminal must not be able to make the center create tables at
/// will.
pub const MONTHS_BACK: i32 = 36;

/// The months `dates` fall in that may have a partition made for them on demand, with the
/// current month and the ones made ahead: what `ensure_partitions` is asked for.
pub fn months_wanted(today: Date, dates: impl IntoIterator<Item = Date>) -> BTreeSet<Month> {
    let current = Month::of(today);
    let first = current.plus(-MONTHS_BACK);
    let last = current.plus(MONTHS_AHEAD);
    let mut months: BTreeSet<Month> = (0..=MONTHS_AHEAD).map(|n| current.plus(n)).collect();
    months.extend(
        dates
            .into_iter()
            .map(Month::of)
            .filter(|month| (first..=last).contains(month)),
    );
    months
}

/// The advisory lock that makes partition creation one process at a time per schema, and
/// its release. A session lock, taken before the creating transaction begins: a
/// SERIALIZABLE transaction reads from the snapshot of its first statement, so a lock
/// waited for inside it would not let it see the partitions its predecessor made.
const PARTITION_LOCK: &str =
    "SELECT pg_advisory_lock(hashtext('valuecard/partitions/' || current_schema()))";
const PARTITION_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtext('valuecard/partitions/' || current_schema()))";

/// The month partitions that exist, by name.
fn existing_partitions(tx: &mut dyn Executor) -> Result<BTreeSet<String>, CenterError> {
    let rows = tx.query(
        "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = CAST('usage_records' AS regclass)",
        &[],
    )?;
    rows.iter().map(|row| row.text(0)).collect()
}

/// Makes a partition for each of `months` that has none (PostgreSQL; nothing on SQLite).
/// Rows the DEFAULT partition already holds for such a month move into it, in the same
/// transaction, since PostgreSQL attaches no partition whose rows sit in the default.
/// Partitions are made in a short transaction of their own, before any batch that writes
/// into them: attaching one locks the partitioned table, which must not happen inside a
/// batch that other writers wait behind. Returns how many it made.
pub fn ensure_partitions(
    db: &mut Database,
    months: &BTreeSet<Month>,
) -> Result<usize, CenterError> {
    let Some(known) = db.known_tables() else {
        return Ok(0);
    };
    if months
        .iter()
        .all(|month| known.contains(&month.partition()))
    {
        return Ok(0);
    }
    let existing = existing_partitions(db)?;
    let missing: Vec<Month> = months
        .iter()
        .filter(|month| !existing.contains(&month.partition()))
        .copied()
        .collect();
    let made = if missing.is_empty() {
        0
    } else {
        made_under_lock(db, &missing)?
    };
    if let Some(known) = db.known_tables() {
        known.extend(months.iter().map(|month| month.partition()));
    }
    Ok(made)
}

/// `make_partitions` under the partition lock.
fn made_under_lock(db: &mut Database, missing: &[Month]) -> Result<usize, CenterError> {
    db.execute(PARTITION_LOCK, &[])?;
    let made = make_partitions(db, missing);
    // Should the connection have been lost meanwhile, the lock went with its session.
    let unlocked = db.execute(PARTITION_UNLOCK, &[]);
    let made = made?;
    unlocked?;
    Ok(made)
}

/// Makes the partitions of `missing` that still do not exist, under `PARTITION_LOCK`.
fn make_partitions(db: &mut Database, missing: &[Month]) -> Result<usize, CenterError> {
    db.transaction(|tx| {
        // Another process may have made some while this one waited for the lock.
        let existing = existing_partitions(tx)?;
        let mut made = 0;
        for month in missing {
            let name = month.partition();
            let Some((start, end)) = month.bounds() else {
                continue;
            };
            if existing.contains(&name) {
                continue;
            }
            // Names and bounds are this function's own numbers, never a client's text.
            tx.execute(
                &format!(
                    "CREATE TABLE {name} (LIKE usage_records INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ),
                &[],
            )?;
            tx.execute(
                &format!(
                    "WITH moved AS (DELETE FROM usage_records_default
                         WHERE purchase_date >= {start} AND purchase_date < {end} RETURNING *)
                     INSERT INTO {name} SELECT * FROM moved"
                ),
                &[],
            )?;
            tx.execute(
                &format!(
                    "ALTER TABLE usage_records ATTACH PARTITION {name}
                     FOR VALUES FROM ({start}) TO ({end})"
                ),
                &[],
            )?;
            made += 1;
        }
        Ok(made)
    })
}

/// Gives every month the DEFAULT partition holds rows of a partition of its own (after the
/// migration that moved the records there; PostgreSQL only). Months the calendar cannot
/// name stay in the default.
pub fn partition_default_rows(db: &mut Database) -> Result<usize, CenterError> {
    if db.dialect() != Dialect::Postgres {
        return Ok(0);
    }
    let rows = db.query(
        "SELECT DISTINCT purchase_date FROM usage_records_default ORDER BY purchase_date",
        &[],
    )?;
    let mut months = BTreeSet::new();
    for row in rows {
        if let Ok(day) = u32::try_from(row.int(0)?) {
            months.insert(Month::of(Date(day)));
        }
    }
    ensure_partitions(db, &months)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn months_step_over_year_ends_and_bound_whole_months() {
        let december = Month {
            year: 2026,
            month: 12,
        };
        assert_eq!(
            december.plus(1),
            Month {
                year: 2027,
                month: 1
            }
        );
        assert_eq!(
            december.plus(-12),
            Month {
                year: 2025,
                month: 12
            }
        );
        assert_eq!(december.plus(-11).month, 1);
        let (start, end) = december.bounds().unwrap();
        assert_eq!(Date(start), Date::from_ymd(2026, 12, 1).unwrap());
        assert_eq!(Date(end), Date::from_ymd(2027, 1, 1).unwrap());
        assert_eq!(december.partition(), "usage_records_y2026m12");
        assert_eq!(Month::of(Date(end - 1)), december);
    }

    #[test]
    fn only_months_near_today_are_made_on_demand() {
        let today = Date::from_ymd(2026, 6, 15).unwrap();
        let wanted = months_wanted(
            today,
            [
                Date::from_ymd(2026, 5, 31).unwrap(),
                Date::from_ymd(2023, 6, 1).unwrap(),
                Date::from_ymd(2023, 5, 31).unwrap(),
                Date::from_ymd(2026, 9, 1).unwrap(),
            ],
        );
        let names: Vec<String> = wanted.iter().map(|m| m.partition()).collect();
        assert_eq!(
            names,
            [
                "usage_records_y2023m06",
                "usage_records_y2026m05",
                "usage_records_y2026m06",
                "usage_records_y2026m07",
                "usage_records_y2026m08",
            ]
        );
    }
}
