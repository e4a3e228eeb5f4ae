//! Migration 12 keeps the usage records a center already holds: a database at schema 11
//! with records (one card state spent twice, months apart) comes out with every record, each
//! terminal sequence once, each state's earliest record as its first, and on PostgreSQL
//! each record in its month's partition. PostgreSQL needs a server
//! (`VALUECARD_POSTGRES_URL`, default the local one); without one that half says SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::RngCore;
use valuecard_center::db::MIGRATIONS;
use valuecard_center::sql::{Database, Dialect, Executor};
use valuecard_center::usage::partitions::Month;
use valuecard_core::time::Date;

/// Migrations 1 to 11, as they shipped before the usage records were partitioned.
const BEFORE: usize = 11;

/// A stored record: (terminal, sequence, card, counter, amount, date).
type Record = ([u8; 8], i64, [u8; 8], i64, i64, Date);

/// The records of the old database: the third spends the first's state.
fn records() -> Vec<Record> {
    let (a, b) = ([0xA0; 8], [0xB0; 8]);
    let (x, y) = ([0x11; 8], [0x22; 8]);
    vec![
        (a, 1, x, 5, 100, Date::from_ymd(2026, 6, 3).unwrap()),
        (a, 2, x, 6, 200, Date::from_ymd(2026, 7, 9).unwrap()),
        (b, 1, x, 5, 300, Date::from_ymd(2026, 8, 1).unwrap()),
        (a, 3, y, 1, 400, Date::from_ymd(2031, 1, 31).unwrap()),
    ]
}

const INSERT: &str = "INSERT INTO usage_records (terminal_id, terminal_sequence, card_id,
    card_counter, amount_minor, balance_after_minor, usage_digest, purchase_date,
    terminal_signature, previous_writer, card_signature) VALUES ";

fn values(dialect: Dialect) -> String {
    let hex = |bytes: &[u8]| -> String {
        let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match dialect {
            Dialect::Postgres => format!("'\\x{digits}'::bytea"),
            Dialect::Sqlite => format!("X'{digits}'"),
        }
    };
    records()
        .iter()
        .map(|(terminal, sequence, card, counter, amount, date)| {
            format!(
                "({}, {sequence}, {}, {counter}, {amount}, 0, {}, {}, {}, {}, NULL)",
                hex(terminal),
                hex(card),
                hex(&[7; 32]),
                date.0,
                hex(&[9; 64]),
                hex(terminal),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schema of migrations 1 to 11 and the records, in one script.
fn old_database(dialect: Dialect) -> String {
    let mut script = String::from("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY);\n");
    for (index, migration) in MIGRATIONS[..BEFORE].iter().enumerate() {
        let text = migration.text(dialect);
        script.push_str(&match dialect {
            Dialect::Postgres => text.to_owned(),
            Dialect::Sqlite => text.replace("BYTEA", "BLOB"),
        });
        script.push_str(&format!(
            ";\nINSERT INTO schema_migrations (version) VALUES ({});\n",
            index + 1
        ));
    }
    script.push_str(INSERT);
    script.push_str(&values(dialect));
    script
}

fn count(db: &mut Database, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().int(0).unwrap()
}

/// What both databases must hold after the migration.
fn check(db: &mut Database) {
    assert_eq!(
        count(
            db,
            "SELECT CAST(MAX(version) AS BIGINT) FROM schema_migrations"
        ),
        MIGRATIONS.len() as i64
    );
    assert_eq!(
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records"),
        4
    );
    assert_eq!(
        count(
            db,
            "SELECT CAST(SUM(amount_minor) AS BIGINT) FROM usage_records"
        ),
        1_000
    );
    assert_eq!(
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_sequences"),
        4
    );
    assert_eq!(
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM card_states"),
        3
    );
    // The state spent twice keeps its earlier record as the first.
    let first = db
        .query_one(
            "SELECT terminal_id, terminal_sequence FROM card_states
             WHERE card_id = $1 AND card_counter = 5",
            &[[0x11u8; 8][..].into()],
        )
        .unwrap();
    assert_eq!(first.bytes(0).unwrap(), vec![0xA0; 8]);
    assert_eq!(first.int(1).unwrap(), 1);
}

#[test]
fn migrating_sqlite_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("center.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&old_database(Dialect::Sqlite))
        .unwrap();
    let mut db = Database::open_sqlite(&path).unwrap();
    check(&mut db);
}

#[test]
fn migrating_postgresql_keeps_every_record_in_its_months_partition() {
    let url = std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL not reachable at {url:?}: {error}"
            );
            return;
        }
    };
    let schema = format!(
        "valuecard_migration_test_{:016x}",
        rand_core::OsRng.next_u64()
    );
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}; {}",
            old_database(Dialect::Postgres)
        ))
        .unwrap();
    let outcome = std::panic::catch_unwind(|| {
        let mut db =
            Database::connect_postgres(&format!("{url} options='-c search_path={schema}'"))
                .unwrap();
        check(&mut db);
        let placed = db
            .query(
                "SELECT CAST(CAST(tableoid AS regclass) AS TEXT), purchase_date FROM usage_records",
                &[],
            )
            .unwrap();
        for row in &placed {
            let date = Date(u32::try_from(row.int(1).unwrap()).unwrap());
            assert_eq!(row.text(0).unwrap(), Month::of(date).partition());
        }
    });
    let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
