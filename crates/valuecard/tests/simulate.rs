//! `valuecard simulate`: the JSON object and the printed report are the same for the same
//! seed (everything but `timing`), and the run holds at a small size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::valuecard_args;
use serde_json::Value;

const SMALL: [&str; 8] = [
    "simulate",
    "--cards",
    "400",
    "--terminals",
    "8",
    "--days",
    "3",
    "--seed",
];

fn json(seed: &str) -> Value {
    let mut args = SMALL.to_vec();
    args.extend([seed, "--json", "--threads", "2"]);
    let output = valuecard_args(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn without_timing(mut report: Value) -> Value {
    let timing = report.as_object_mut().unwrap().remove("timing");
    assert!(timing.unwrap()["total_seconds"].as_f64().unwrap() > 0.0);
    report
}

#[test]
fn the_json_report_holds_and_is_reproducible_apart_from_timing() {
    let first = json("5");
    assert_eq!(first["conserved"], true, "{first:#}");
    assert_eq!(first["held"], true, "{first:#}");
    for detection in first["detections"].as_array().unwrap() {
        assert!(detection["injected"].as_u64().unwrap() > 0, "{detection}");
        assert_eq!(detection["detected"], detection["injected"], "{detection}");
        assert_eq!(
            detection["false_alarms"],
            serde_json::json!([]),
            "{detection}"
        );
    }
    let again = json("5");
    assert_eq!(without_timing(first.clone()), without_timing(again));
    let other = json("6");
    assert_ne!(without_timing(first), without_timing(other));
}

/// One thread and two threads print the same JSON byte for byte apart from `timing`, and
/// the run holds on both: every injected event found, value conserved.
#[test]
fn one_thread_and_two_threads_print_the_same_json() {
    let mut args = SMALL.to_vec();
    args.extend(["4", "--json", "--threads"]);
    let printed = |threads: &str| {
        let mut args = args.clone();
        args.push(threads);
        let output = valuecard_args(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let timing = report.as_object_mut().unwrap().remove("timing").unwrap();
        assert_eq!(timing["threads"].as_u64().unwrap().to_string(), threads);
        assert_eq!(report["conserved"], true, "{report:#}");
        assert_eq!(report["held"], true, "{report:#}");
        serde_json::to_vec(&report).unwrap()
    };
    let one = printed("1");
    assert_eq!(
        String::from_utf8(printed("2")).unwrap(),
        String::from_utf8(one).unwrap()
    );
    assert!(!valuecard_args(&["simulate", "--threads", "0"])
        .status
        .success());
}

#[test]
fn the_printed_report_is_reproducible_apart_from_timing() {
    let text = |seed: &str| {
        let mut args = SMALL.to_vec();
        args.push(seed);
        let output = valuecard_args(&args);
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        let (report, timing) = stdout.split_once("timing (not reproducible").unwrap();
        assert!(timing.contains("ratio to floor"), "{timing}");
        assert!(report.contains("conserved:     true"), "{report}");
        report.to_owned()
    };
    assert_eq!(text("9"), text("9"));
}
