//! `valuecard bench migrate` for a second: the report has its shape and sane numbers (the
//! command itself fails when a moved chip lacks its value or a provider keeps a copy), and
//! `--min-ratio` decides the exit status.
//!
//! The PostgreSQL test needs a server (`VALUECARD_POSTGRES_URL`, default the local one with
//! user postgres); without one it prints SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{run, run_json, skip_note, valuecard};
use serde_json::Value;

fn float(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key:?} in {report}"))
}

fn check_report(report: &Value, database: &str) {
    assert_eq!(report["benchmark"], "migrate");
    assert_eq!(report["database"], database);
    assert_eq!(report["holders"], 2);
    let moves = report["moves"].as_u64().unwrap();
    assert!(moves > 0, "{report}");
    let seconds = float(report, "seconds");
    assert!(seconds > 0.0, "{report}");
    let per_second = float(report, "moves_per_second");
    assert!(
        (per_second - moves as f64 / seconds).abs() < 1e-6,
        "{report}"
    );
    let floor = float(report, "floor_moves_per_second");
    assert!(floor > 0.0, "{report}");
    let ratio = float(report, "ratio");
    assert!(ratio > 0.0, "{report}");
    assert!((ratio - per_second / floor).abs() < 1e-9, "{report}");
    let goal = float(report, "goal");
    assert!(goal > 0.0 && goal <= 1.0, "{report}");
    assert_eq!(
        report["verdict"],
        if ratio < goal { "BELOW TARGET" } else { "ok" }
    );
    let (p50, p99) = (float(report, "p50_ms"), float(report, "p99_ms"));
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    // An upload and a download of three services: a few dozen APDUs, the same each move.
    let apdus = float(report, "apdus_per_move");
    assert!((10.0..200.0).contains(&apdus), "{report}");
    assert_eq!(apdus.fract(), 0.0, "{report}");
    assert_eq!(report["copies_held"], 0);
}

#[test]
fn bench_migrate_reports_moves_against_the_floor() {
    let report = run_json(valuecard().args([
        "bench",
        "migrate",
        "--seconds",
        "1",
        "--holders",
        "2",
        "--json",
        "--min-ratio",
        "0",
    ]));
    check_report(&report, "sqlite");

    // A required ratio no run reaches: status 1, and the reason on stderr.
    let ran = run(valuecard().args([
        "bench",
        "migrate",
        "--seconds",
        "1",
        "--holders",
        "2",
        "--min-ratio",
        "1000",
    ]));
    assert_eq!(ran.status.code(), Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("is below 1000"), "{}", ran.stderr);
    assert!(ran.stdout.contains("ratio to floor"), "{}", ran.stdout);
}

#[test]
fn bench_migrate_runs_on_postgresql() {
    let url = std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    if let Err(error) = postgres::Client::connect(&url, postgres::NoTls) {
        skip_note!(
            "SKIPPED: bench_migrate_runs_on_postgresql: PostgreSQL not reachable at {url:?}: {error}"
        );
        return;
    }
    let report = run_json(valuecard().args([
        "bench",
        "migrate",
        "--seconds",
        "1",
        "--holders",
        "2",
        "--json",
        "--min-ratio",
        "0",
        "--database",
        &url,
    ]));
    check_report(&report, "postgresql");
}
