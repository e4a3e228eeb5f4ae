//! Memory cards through the command line, as an operator runs them: a charge machine and a
//! payment machine installed at the center, float taken, a card charged (sealed, claim 4)
//! and spent from its image in-process, the records uploaded and the center's books; and a
//! copy of the whole chip spent twice, which no machine can see offline and the center flags
//! once both records are uploaded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{number, run, run_json, valuecard, Site};
use serde_json::Value;

fn cli(site: &Site, args: &[&str]) -> Value {
    run_json(
        valuecard()
            .args(args)
            .arg("--json")
            .arg("--data")
            .arg(&site.data),
    )
}

fn write(site: &Site, kind: &str, machine: &str, card: &Path, amount: &str) -> Value {
    run_json(
        valuecard()
            .args([
                "terminal",
                kind,
                "--json",
                "--machine",
                machine,
                "--amount",
                amount,
            ])
            .arg("--data")
            .arg(&site.data)
            .arg("--card")
            .arg(card),
    )
}

fn books(site: &Site) -> Value {
    cli(site, &["center", "status"])["memory_cards"].clone()
}

#[test]
fn a_memory_card_is_charged_spent_uploaded_and_reconciled_from_the_command_line() {
    let site = Site::new();
    cli(
        &site,
        &[
            "terminal",
            "install",
            "--name",
            "charger",
            "--charge-machine",
        ],
    );
    cli(
        &site,
        &[
            "terminal",
            "install",
            "--name",
            "payer",
            "--payment-machine",
        ],
    );
    let card = site.root.join("m1.img");
    run_json(
        valuecard()
            .args(["memcard", "issue", "--json", "--data"])
            .arg(&site.data)
            .arg("--out")
            .arg(&card),
    );

    // No float yet: the charge is refused and the card stays blank.
    let refused = run(valuecard()
        .args([
            "terminal",
            "charge",
            "--machine",
            "charger",
            "--amount",
            "5",
        ])
        .arg("--data")
        .arg(&site.data)
        .arg("--card")
        .arg(&card));
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(refused.stderr.contains("float"), "{}", refused.stderr);

    let sync = cli(
        &site,
        &[
            "terminal",
            "machine-sync",
            "--machine",
            "charger",
            "--float",
            "100",
        ],
    );
    assert_eq!(number(&sync, "float"), 10_000);
    let charge = run_json(
        valuecard()
            .args([
                "terminal",
                "charge",
                "--json",
                "--sealed",
                "--machine",
                "charger",
            ])
            .args(["--amount", "20.00", "--data"])
            .arg(&site.data)
            .arg("--card")
            .arg(&card),
    );
    assert_eq!(number(&charge, "balance_after"), 2_000);
    assert_eq!(number(&charge, "float"), 8_000);
    let paid = write(&site, "pay", "payer", &card, "3.50");
    assert_eq!(number(&paid, "balance_after"), 1_650);

    // What an outside reader sees: the value stays sealed, the payer wrote last.
    let info = run_json(
        valuecard()
            .args(["memcard", "info", "--json", "--card"])
            .arg(&card),
    );
    assert_eq!(info["value"]["format"], "sealed", "{info}");
    assert_eq!(info["writer_certificate"]["role"], "payment-machine");

    // A payment above the balance: refused, the card unchanged.
    let above = run(valuecard()
        .args(["terminal", "pay", "--machine", "payer", "--amount", "30"])
        .arg("--data")
        .arg(&site.data)
        .arg("--card")
        .arg(&card));
    assert!(!above.status.success());
    assert!(above.stderr.contains("16.50"), "{}", above.stderr);

    cli(&site, &["terminal", "machine-sync", "--machine", "charger"]);
    let sync = cli(&site, &["terminal", "machine-sync", "--machine", "payer"]);
    // Every write finished: nothing pending to report.
    assert_eq!(sync["pending_writes"], 0, "{sync}");
    assert_eq!(sync["pending_reported"]["held"], 0, "{sync}");
    assert_eq!(sync["pending_reported"]["charges_owed"], 0, "{sync}");
    let books = books(&site);
    assert_eq!(number(&books, "charged"), 2_000, "{books}");
    assert_eq!(number(&books, "spent"), 350);
    assert_eq!(number(&books, "on_cards"), 1_650);
    assert_eq!(number(&books, "float_in_machines"), 8_000);
    assert_eq!(books["status"], "reconciled");
}

#[test]
fn a_copied_chip_spent_twice_is_flagged_by_the_center_once_the_records_arrive() {
    let site = Site::new();
    cli(
        &site,
        &[
            "terminal",
            "install",
            "--name",
            "charger",
            "--charge-machine",
        ],
    );
    cli(
        &site,
        &[
            "terminal",
            "install",
            "--name",
            "payer",
            "--payment-machine",
        ],
    );
    let card = site.root.join("m1.img");
    run_json(
        valuecard()
            .args(["memcard", "issue", "--json", "--data"])
            .arg(&site.data)
            .arg("--out")
            .arg(&card),
    );
    cli(
        &site,
        &[
            "terminal",
            "machine-sync",
            "--machine",
            "charger",
            "--float",
            "50",
        ],
    );
    write(&site, "charge", "charger", &card, "10");
    // The whole chip copied, ROM and counter included: offline, the copy is the card.
    let copy = site.root.join("copy.img");
    std::fs::copy(&card, &copy).unwrap();
    write(&site, "pay", "payer", &card, "6");
    write(&site, "pay", "payer", &copy, "6");
    cli(&site, &["terminal", "machine-sync", "--machine", "charger"]);
    cli(&site, &["terminal", "machine-sync", "--machine", "payer"]);

    let books = books(&site);
    assert_eq!(number(&books, "states_spent_twice"), 1, "{books}");
    assert_eq!(books["status"], "excess");
    let status = cli(&site, &["center", "status"]);
    assert!(
        status.to_string().contains("spent twice"),
        "the center raises an alert for the state spent twice: {status}"
    );
}
