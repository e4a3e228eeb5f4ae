//! `valuecard bench http` at a tiny size: every record a terminal uploads over HTTPS is
//! stored exactly once by the center, the report has its shape, and `--min-ratio` decides
//! the exit status.
//!
//! The PostgreSQL test needs a server (`VALUECARD_POSTGRES_URL`, default the local one with
//! user postgres); without one it prints SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{run, run_json, skip_note, valuecard};
use serde_json::Value;

/// Checks one tiny run's report: `terminals` runs of `per_terminal` records each.
fn check_report(report: &Value, terminals: &[u64], per_terminal: u64) {
    assert_eq!(report["benchmark"], "http");
    assert_eq!(report["records_per_terminal"].as_u64(), Some(per_terminal));
    let runs = report["runs"].as_array().unwrap();
    let ran: Vec<u64> = runs
        .iter()
        .map(|run| run["terminals"].as_u64().unwrap())
        .collect();
    assert_eq!(ran, terminals);
    let per_request = report["records_per_request"].as_u64().unwrap();
    for run in runs {
        let n = run["terminals"].as_u64().unwrap();
        assert_eq!(run["records"].as_u64(), Some(n * per_terminal), "{run}");
        assert_eq!(run["stored"].as_u64(), Some(n * per_terminal), "{run}");
        assert_eq!(
            run["requests"].as_u64(),
            Some(n * per_terminal.div_ceil(per_request)),
            "{run}"
        );
        let p50 = run["p50_ms"].as_f64().unwrap();
        let p99 = run["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= run["max_ms"].as_f64().unwrap());
        assert!(run["records_per_second"].as_f64().unwrap() > 0.0);
        let ratio = run["ratio_to_floor"].as_f64().unwrap();
        let floor = report["floor_records_per_second"].as_f64().unwrap();
        let expected = run["records_per_second"].as_f64().unwrap() / floor;
        assert!((ratio - expected).abs() < 1e-9 * expected.max(1.0), "{run}");
    }
    // Every record stored once, as the center itself counts them after the run.
    let total: u64 = terminals.iter().map(|n| n * per_terminal).sum();
    assert_eq!(report["records"].as_u64(), Some(total));
    assert_eq!(report["stored"].as_u64(), Some(total));
    assert_eq!(report["duplicates"].as_u64(), Some(0));
    assert_eq!(report["refused"].as_u64(), Some(0));
    assert_eq!(report["center_records"].as_u64(), Some(total));
    assert_eq!(
        report["center_amount_minor"],
        report["uploaded_amount_minor"]
    );
    assert!(report["center_amount_minor"].as_u64().unwrap() >= total);
    // The goal is judged at 32 and 64 terminals only: not at these sizes.
    assert!(report["target_met"].is_null(), "{report}");
    assert_eq!(report["below_target"], false);
}

#[test]
fn bench_http_stores_every_uploaded_record_once_on_sqlite() {
    // 50 records: one full request of 48 and one of 2 per terminal.
    let report = run_json(valuecard().args([
        "bench",
        "http",
        "--terminals",
        "2,1",
        "--records-per-terminal",
        "50",
        "--min-ratio",
        "0",
        "--json",
    ]));
    check_report(&report, &[1, 2], 50);
    assert!(report["store"].as_str().unwrap().starts_with("SQLite"));
    assert_eq!(report["min_ratio_met"], true);
}

#[test]
fn bench_http_fails_only_a_min_ratio_it_misses() {
    let ran = run(valuecard().args([
        "bench",
        "http",
        "--terminals",
        "1",
        "--records-per-terminal",
        "3",
        "--min-ratio",
        "1000",
        "--json",
    ]));
    assert_eq!(ran.status.code(), Some(1), "{}", ran.stderr);
    let report: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(report["min_ratio_met"], false);
    assert_eq!(report["center_records"].as_u64(), Some(3));
    assert!(ran.stderr.contains("below --min-ratio"), "{}", ran.stderr);

    let refused = run(valuecard().args(["bench", "http", "--terminals", "0"]));
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stderr.contains("--terminals"), "{}", refused.stderr);
}

#[test]
fn bench_http_stores_every_uploaded_record_once_on_postgresql() {
    let url = std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    if let Err(error) = postgres::Client::connect(&url, postgres::NoTls) {
        skip_note!(
            "SKIPPED: bench_http_stores_every_uploaded_record_once_on_postgresql: \
             PostgreSQL not reachable at {url:?}: {error}"
        );
        return;
    }
    let report = run_json(valuecard().args([
        "bench",
        "http",
        "--terminals",
        "1,2",
        "--records-per-terminal",
        "50",
        "--database",
        &url,
        "--json",
    ]));
    check_report(&report, &[1, 2], 50);
    assert_eq!(report["store"], "PostgreSQL");
    assert!(report["min_ratio_met"].is_null());
}
