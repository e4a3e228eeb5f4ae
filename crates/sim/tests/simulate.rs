//! `simulate` at a small size: every injected clone, stolen terminal and lost card found and
//! nothing else, value conserved, and the report reproducible from its seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_sim::simulate::{self, Config, Report};

fn run(seed: u64, cards: u32) -> Report {
    run_on(seed, cards, 2)
}

fn run_on(seed: u64, cards: u32, threads: usize) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        cards,
        terminals: 12,
        days: 4,
        seed,
    };
    simulate::run(&config, &dir.path().join("run"), None, threads, &mut |_| {})
        .unwrap()
        .report
}

#[test]
fn a_small_run_finds_every_injected_event_and_conserves_value() {
    let report = run(7, 800);
    assert!(report.conservation.conserved, "{:#?}", report.conservation);
    assert_eq!(report.findings, Vec::<String>::new());
    assert_eq!(report.unexplained_alerts, Vec::<String>::new());
    let kinds: Vec<&str> = report.detections.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["cloned cards", "stolen terminals", "lost cards"]);
    for detection in &report.detections {
        assert!(detection.injected > 0, "{detection:?}");
        assert_eq!(detection.detected, detection.injected, "{detection:?}");
        assert!(detection.false_alarms.is_empty(), "{detection:?}");
    }
    // The clones really spent twice, and the center's books show exactly that.
    assert!(report.conservation.duplicated_minor > 0);
    assert_eq!(
        report.conservation.center_difference,
        i128::from(report.conservation.duplicated_minor)
    );
    assert_eq!(report.conservation.center_status, "excess");
    // The day loop ran at the configured rate, and the faults happened and were settled.
    assert_eq!(report.cards_issued, 800);
    assert!(report.purchases.committed >= 300, "{:?}", report.purchases);
    assert!(report.faults.power_cuts_fired + report.faults.lost_answers > 0);
    assert_eq!(report.conservation.purchases_in_doubt, 0);
    assert_eq!(report.conservation.loads_in_flight, 0);
    assert!(report.purchases.thief_sales > 0 && report.purchases.refused_stolen_writer > 0);
    // Terminal stores stay bounded: each night leaves nothing behind.
    assert_eq!(report.uploads.held_after_upload_max, 0);
    assert_eq!(
        report.uploads.records_stored,
        report.conservation.purchases_uploaded
    );
    assert!(report.held());
}

#[test]
fn the_same_seed_gives_the_same_report_and_another_seed_another() {
    let first = run(11, 300);
    let again = run(11, 300);
    assert_eq!(first, again);
    let other = run(12, 300);
    assert_ne!(first, other);
    assert_ne!(
        first.conservation.spent_minor,
        other.conservation.spent_minor
    );
}

/// The shards are fixed by the sizes and the center serves them in a fixed turn, so the
/// number of worker threads changes nothing in the report: not the card IDs the center
/// assigns, not the faults, not the detections, not the books.
#[test]
fn one_two_or_five_threads_give_the_same_report() {
    let one = run_on(13, 600, 1);
    assert_eq!(
        Config {
            cards: 600,
            terminals: 12,
            days: 4,
            seed: 13
        }
        .shards(),
        6
    );
    assert!(one.held(), "{one:#?}");
    assert!(
        one.purchases.committed > 0 && one.loads.committed > 0,
        "{:?}",
        one.loads
    );
    assert_eq!(run_on(13, 600, 2), one);
    assert_eq!(run_on(13, 600, 5), one);
}

#[test]
fn a_second_run_in_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        cards: 5,
        terminals: 2,
        days: 2,
        seed: 1,
    };
    simulate::run(&config, dir.path(), None, 2, &mut |_| {}).unwrap();
    assert!(simulate::run(&config, dir.path(), None, 2, &mut |_| {}).is_err());
}

/// Says that a test was skipped, on the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and CI must see every skip.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The center on PostgreSQL (a scratch schema, dropped afterwards) gives the same report as
/// on SQLite: nothing in the run depends on the store.
#[test]
fn on_postgres_the_run_reports_the_same_as_on_sqlite() {
    use rand_core::RngCore;
    let url = std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            skip_note!("SKIPPED: PostgreSQL not reachable at {url:?}: {error}");
            return;
        }
    };
    let schema = format!("valuecard_sim_{:016x}", rand_core::OsRng.next_u64());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let config = Config {
        cards: 200,
        terminals: 6,
        days: 3,
        seed: 21,
    };
    let dir = tempfile::tempdir().unwrap();
    let on_postgres = simulate::run(
        &config,
        &dir.path().join("postgres"),
        Some(&format!("{url} options='-c search_path={schema}'")),
        2,
        &mut |_| {},
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
    let on_postgres = on_postgres.unwrap().report;
    assert!(on_postgres.held(), "{on_postgres:#?}");
    let on_sqlite = simulate::run(&config, &dir.path().join("sqlite"), None, 1, &mut |_| {})
        .unwrap()
        .report;
    assert_eq!(on_postgres, on_sqlite);
}

/// A card the thief sold to and that then ran short reloads at a dispenser: the load's
/// record replaces the stolen terminal's, honest terminals accept the card again, and the
/// center sees the thief's sale as a shortfall in its remaining values. The books still
/// balance with that term (this seed and size make it happen).
#[test]
fn a_load_over_the_stolen_terminals_record_is_counted_and_value_still_conserved() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        cards: 1_000,
        terminals: 10,
        days: 30,
        seed: 4,
    };
    let report = simulate::run(&config, dir.path(), None, 2, &mut |_| {})
        .unwrap()
        .report;
    let books = &report.conservation;
    assert!(report.loads.over_stolen_writer > 0, "{:?}", report.loads);
    assert!(books.stolen_sales_revealed_minor > 0);
    assert_eq!(
        books.center_difference,
        i128::from(books.duplicated_minor) - i128::from(books.stolen_sales_revealed_minor)
    );
    assert!(books.conserved, "{books:#?}");
    assert!(report.held(), "{report:#?}");
}
