//! The command-line program as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::valuecard;

#[test]
fn demo_json_reports_conservation_and_refused_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let output = valuecard()
        .args(["demo", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let number = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {report}"))
    };
    assert_eq!(report["conserved"], true);
    assert_eq!(
        number("issued") + number("loaded") + number("charged_online")
            - number("spent")
            - number("spent_online"),
        number("balances_total")
    );
    // Seed 004: an online purchase (with its content) and an online charge.
    assert!(number("spent_online") > 0 && number("charged_online") > 0);
    let purchase = &report["online_purchases"][0];
    assert!(
        purchase["content_bytes"].as_u64().unwrap() > 0,
        "{purchase}"
    );
    assert_eq!(report["online_charges"].as_array().unwrap().len(), 1);
    assert!(number("spent") > 0 && number("loaded") > 0);
    let attacks = report["attacks"].as_array().unwrap();
    let names: Vec<&str> = attacks
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for expected in [
        "terminal certificate not signed by the center",
        "forged card signature",
        "replayed purchase commit",
        "balance raised by a terminal",
        "purchase above the balance",
        "expired certificate",
    ] {
        assert!(
            names.contains(&expected),
            "attack {expected:?} missing from {names:?}"
        );
    }
    assert!(attacks.iter().all(|a| a["refused"] == true), "{attacks:?}");
    assert!(number("clones_detected") >= 1);
    assert!(number("stolen_terminal_refusals") >= 1);
    let scenarios = report["scenarios"].as_array().unwrap();
    assert!(
        scenarios.len() >= 3 && scenarios.iter().all(|s| s["held"] == true),
        "{scenarios:?}"
    );
    // The card images the demo leaves can be driven by hand.
    let card = data.join("cards").join("card-1.img");
    let output = valuecard()
        .args(["card", "apdu", "--json", "--card"])
        .arg(&card)
        .args(["00A4040008F05643505552534500", "80 30 00 00 00", "80FF0000"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let transcript: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let exchanges = transcript["exchanges"].as_array().unwrap();
    assert_eq!(exchanges[0]["sw"], "9000");
    assert!(exchanges[0]["data"].as_str().unwrap().starts_with("6F"));
    assert_eq!(exchanges[1]["sw"], "9000");
    assert_eq!(exchanges[2]["sw"], "6D00");
}

#[test]
fn demo_refuses_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), b"not a demo").unwrap();
    let output = valuecard()
        .args(["demo", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("was not made by `valuecard demo`"));
    assert!(dir.path().join("precious.txt").exists());
}

#[test]
fn card_apdu_rejects_bad_hex_and_missing_images() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.img");
    let output = valuecard()
        .args(["card", "apdu", "--card"])
        .arg(&missing)
        .arg("00A40400")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such card image"));
    assert!(!missing.exists(), "a missing image must not be created");

    let output = valuecard()
        .args(["card", "apdu", "--card"])
        .arg(&missing)
        .arg("00A4ZZ")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not hex"));

    let garbage = dir.path().join("garbage.img");
    std::fs::write(&garbage, vec![0x55u8; 16 * 1024]).unwrap();
    let output = valuecard()
        .args(["card", "apdu", "--card"])
        .arg(&garbage)
        .arg("00A40400")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn bench_prints_its_ratio_to_the_floor() {
    let output = valuecard()
        .args([
            "bench",
            "purchase",
            "--iterations",
            "5",
            "--rounds",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["ratio_to_floor"].as_f64().unwrap() > 0.0);
    assert_eq!(report["command_pairs_after_select"], 2);
}

#[test]
fn life_cycle_step_by_step_against_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let card = dir.path().join("card.img");
    let json = |args: &[&str]| -> serde_json::Value {
        let output = valuecard().args(args).arg("--json").output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let data_arg = data.to_str().unwrap();
    let card_arg = card.to_str().unwrap();
    let init = json(&["center", "init", "--data", data_arg, "--terminals", "2"]);
    // dispenser-1, terminal-1, terminal-2 and settlement-1.
    assert_eq!(init["devices"].as_array().unwrap().len(), 4);
    let issued = json(&[
        "card", "issue", "--data", data_arg, "--out", card_arg, "--value", "50.00",
    ]);
    assert_eq!(issued["balance"], 5000);
    let sale = json(&[
        "terminal", "purchase", "--data", data_arg, "--card", card_arg, "--amount", "12.50",
    ]);
    assert_eq!(
        (
            sale["balance_before"].as_u64(),
            sale["balance_after"].as_u64()
        ),
        (Some(5000), Some(3750))
    );
    let load = json(&[
        "terminal", "load", "--data", data_arg, "--card", card_arg, "--amount", "20",
    ]);
    assert_eq!(load["balance_after"], 5750);
    let sale = json(&[
        "terminal",
        "purchase",
        "--data",
        data_arg,
        "--terminal",
        "terminal-2",
        "--card",
        card_arg,
        "--amount",
        "0.75",
    ]);
    assert_eq!(sale["balance_after"], 5675);
    let info = json(&["terminal", "info", "--data", data_arg, "--card", card_arg]);
    assert_eq!(info["balance"], 5675);
    assert_eq!(info["log"].as_array().unwrap().len(), 4);
    let history = json(&["terminal", "history", "--data", data_arg]);
    assert_eq!(history["committed_minor"], 1250);
    let status = json(&["center", "status", "--data", data_arg]);
    assert_eq!(
        (status["issued"].as_u64(), status["loaded"].as_u64()),
        (Some(5000), Some(2000))
    );
    assert_eq!(status["loads_in_flight"], 0);

    // Refusals: a clear message, a non-zero exit, and nothing changed.
    for (args, message) in [
        (
            vec![
                "terminal", "purchase", "--data", data_arg, "--card", card_arg, "--amount", "1000",
            ],
            "the card holds",
        ),
        (
            vec![
                "terminal", "purchase", "--data", data_arg, "--card", card_arg, "--amount", "1.234",
            ],
            "is not an amount",
        ),
        (
            vec![
                "terminal",
                "purchase",
                "--data",
                data_arg,
                "--terminal",
                "nobody",
                "--card",
                card_arg,
                "--amount",
                "1",
            ],
            "no device named",
        ),
        (
            vec!["card", "issue", "--data", data_arg, "--out", card_arg],
            "never overwritten",
        ),
        (
            vec!["center", "init", "--data", data_arg],
            "already holds a center",
        ),
    ] {
        let output = valuecard().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let info = json(&["terminal", "info", "--data", data_arg, "--card", card_arg]);
    assert_eq!(info["balance"], 5675);
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["center", "init", "--help"],
        vec!["center", "status", "--help"],
        vec!["card", "issue", "--help"],
        vec!["card", "apdu", "--help"],
        vec!["terminal", "readers", "--help"],
        vec!["terminal", "purchase", "--help"],
        vec!["terminal", "load", "--help"],
        vec!["terminal", "info", "--help"],
        vec!["terminal", "settle", "--help"],
        vec!["terminal", "history", "--help"],
        vec!["terminal", "install", "--help"],
        vec!["terminal", "transfer", "--help"],
        vec!["terminal", "settle-transfer", "--help"],
        vec!["bench", "purchase", "--help"],
        vec!["bench", "transfer", "--help"],
    ] {
        let output = valuecard().args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[test]
fn operations_clone_detection_lost_cards_stolen_terminals_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let run = |args: &[&str]| -> std::process::Output { valuecard().args(args).output().unwrap() };
    let json = |args: &[&str]| -> serde_json::Value {
        let output = valuecard().args(args).arg("--json").output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    json(&["center", "init", "--data", data_arg, "--terminals", "2"]);
    let a = json(&[
        "card",
        "issue",
        "--data",
        data_arg,
        "--out",
        &path("a.img"),
        "--value",
        "50",
    ]);
    let b = json(&[
        "card",
        "issue",
        "--data",
        data_arg,
        "--out",
        &path("b.img"),
        "--value",
        "20",
    ]);
    std::fs::copy(path("a.img"), path("a-copy.img")).unwrap();
    json(&[
        "terminal",
        "purchase",
        "--data",
        data_arg,
        "--card",
        &path("a.img"),
        "--amount",
        "5",
    ]);
    json(&[
        "terminal",
        "purchase",
        "--data",
        data_arg,
        "--terminal",
        "terminal-2",
        "--card",
        &path("a-copy.img"),
        "--amount",
        "7",
    ]);
    json(&["terminal", "sync", "--data", data_arg]);
    let sync = json(&[
        "terminal",
        "sync",
        "--data",
        data_arg,
        "--terminal",
        "terminal-2",
    ]);
    assert_eq!(sync["clones_detected"][0], a["card"]);
    // The operator sees what the center detected.
    let status = json(&["center", "status", "--data", data_arg]);
    let alerts = status["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .any(|alert| alert["kind"] == "cloned" && alert["subject"] == a["card"]),
        "{status}"
    );
    json(&["terminal", "sync", "--data", data_arg]);
    let refused = run(&[
        "terminal",
        "purchase",
        "--data",
        data_arg,
        "--card",
        &path("a.img"),
        "--amount",
        "1",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cloned"));

    // A lost card, then its restoration onto a new card with the same value.
    let card_b = b["card"].as_str().unwrap();
    json(&[
        "center",
        "report-card",
        "--data",
        data_arg,
        "--card",
        card_b,
        "--reason",
        "lost",
    ]);
    json(&["terminal", "sync", "--data", data_arg]);
    let refused = run(&[
        "terminal",
        "purchase",
        "--data",
        data_arg,
        "--card",
        &path("b.img"),
        "--amount",
        "1",
    ]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lost"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let restored = json(&[
        "center",
        "restore",
        "--data",
        data_arg,
        "--card",
        card_b,
        "--out",
        &path("b2.img"),
        "--hold-days",
        "0",
    ]);
    assert_eq!(restored["value"], 2000);
    let info = json(&[
        "terminal",
        "info",
        "--data",
        data_arg,
        "--card",
        &path("b2.img"),
    ]);
    assert_eq!(info["balance"], 2000);
    let again = run(&[
        "center",
        "restore",
        "--data",
        data_arg,
        "--card",
        card_b,
        "--out",
        &path("b3.img"),
    ]);
    assert_eq!(again.status.code(), Some(2), "a card is restored once");
    assert!(!dir.path().join("b3.img").exists());
    // By default a destroyed card's value is held while terminals sync and upload what the
    // old chip spent: the first call lists it and says until when, and writes no card.
    let held = json(&[
        "center",
        "restore",
        "--data",
        data_arg,
        "--card",
        a["card"].as_str().unwrap(),
        "--out",
        &path("a2.img"),
    ]);
    assert!(held["held_until"].is_string(), "{held}");
    assert_eq!(held["value"], serde_json::Value::Null, "{held}");
    assert!(!dir.path().join("a2.img").exists());

    // A stolen terminal: cards it writes after the report are refused by the others.
    let stamp = json(&[
        "terminal",
        "advance-stamp",
        "--data",
        data_arg,
        "--terminal",
        "terminal-2",
    ]);
    // Installed today: the SAM's chain counts days since installation, so it is at 0.
    assert_eq!(stamp["stamp_count"], 0);
}
