//! The center on PostgreSQL: the same flows, the same migrations, the same conservation.
//! Needs a PostgreSQL server (`VALUECARD_POSTGRES_URL`, default the local one with trust
//! authentication); without one the test says SKIPPED and passes, and CI refuses that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Says that a test was skipped, on the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and CI must see every skip.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use common::*;
use rand_core::{RngCore, SeedableRng};
use valuecard_center::sql::{Database, Executor};
use valuecard_sim::{read_purse, Storage, World, WorldRng};

fn base_url() -> String {
    std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// A fresh schema for one test, so tests never see each other's rows.
fn fresh_database() -> Option<Database> {
    let url = base_url();
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            skip_note!("SKIPPED: PostgreSQL not reachable at {url:?}: {error}");
            return None;
        }
    };
    let schema = format!("valuecard_test_{:016x}", rand_core::OsRng.next_u64());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    Some(Database::connect_postgres(&format!("{url} options='-c search_path={schema}'")).unwrap())
}

#[test]
fn migrations_apply_once_on_postgres() {
    let Some(mut database) = fresh_database() else {
        return;
    };
    assert!(database.is_postgres());
    assert_eq!(
        database.migrate().unwrap(),
        0,
        "a second run applies nothing"
    );
    let version = database
        .query_one(
            "SELECT CAST(MAX(version) AS BIGINT) FROM schema_migrations",
            &[],
        )
        .unwrap();
    assert_eq!(
        version.int(0).unwrap(),
        valuecard_center::db::MIGRATIONS.len() as i64
    );
}

#[test]
fn the_whole_purse_conserves_value_on_postgres() {
    let Some(database) = fresh_database() else {
        return;
    };
    let mut world = World::create_seeded(
        Storage::on(database),
        2,
        today(),
        WorldRng::seed_from_u64(99),
    )
    .unwrap();
    let (mut first, first_memory) = issued_card(&mut world, "first", 5_000);
    let (mut second, _) = issued_card(&mut world, "second", 2_000);
    world.load(&mut first, amount(1_500)).unwrap();
    world.terminals[0]
        .purchase(&mut first, amount(1_200))
        .unwrap();
    world.terminals[1]
        .purchase(&mut second, amount(700))
        .unwrap();
    // A load whose CREDIT answer is lost: in flight at the center until settled.
    let writes = {
        let start = first.card_mut().unwrap().eeprom_mut().writes();
        world.load(&mut first, amount(1)).unwrap();
        first.card_mut().unwrap().eeprom_mut().writes() - start
    };
    arm_cut(&mut first, writes, 1, 1);
    assert!(world.load(&mut first, amount(300)).is_err());
    assert_eq!(world.center.load_totals().unwrap().in_flight_count, 1);
    power_up(&mut world, &mut first, &first_memory);
    let first_status = read_purse(&mut first).unwrap();
    world.settle_card(&mut first, first_status.card_id).unwrap();
    let balances = [
        read_purse(&mut first).unwrap().balance,
        read_purse(&mut second).unwrap().balance,
    ];
    let reconciliation = world.reconcile(&balances).unwrap();
    assert!(reconciliation.conserved, "{reconciliation:?}");
    assert_eq!(reconciliation.issued, 7_000);
    assert_eq!(reconciliation.loaded, 1_801);
    assert_eq!(balances[0].minor(), 5_000 + 1_500 + 1 + 300 - 1_200);
    let record = world
        .center
        .remaining_value(&first_status.card_id)
        .unwrap()
        .unwrap();
    assert_eq!(record.card_counter, first_status.counter);
}
