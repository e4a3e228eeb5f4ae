//! Card-to-card transfer through two PC/SC readers at once (seed 000): `valuecard card
//! attach` serves one card image in each of vpcd's two reader slots, and `valuecard terminal
//! transfer --from-reader --to-reader` moves value between them; then either card leaves its
//! reader at each command of a transfer that can change it (`card attach --danger-*`), and
//! `terminal settle-transfer` settles, exactly once, what it had committed.
//!
//! Needs pcscd with vpcd (`scripts/start-pcscd.sh`) and the `pcsc` feature
//! (`cargo test -p valuecard --features pcsc --test pcsc_transfer`); says `SKIPPED: ...` on
//! stderr and passes without them. It takes the readers lock of tests/common/pcsc.rs, so it
//! never uses vpcd's readers at the same time as the other PC/SC tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::pcsc::{reader_index, start, Attached, Needs};
use common::{run, run_json, Ran, Site};

#[test]
fn transfer_between_two_pcsc_readers_and_lost_answers_settled() {
    const TEST: &str = "transfer_between_two_pcsc_readers_and_lost_answers_settled";
    let Some(_readers) = start(TEST, Needs::PcscFeature) else {
        return;
    };
    let site = Site::new();
    let (a, a_id) = site.issue("a", "50.00");
    let (b, b_id) = site.issue("b", "5.00");

    // Both cards in readers at once: A in slot 0, B in slot 1.
    let slot0 = Attached::start_in_slot(&a, 0, site.log("attach-a"), &[]);
    let slot1 = Attached::start_in_slot(&b, 1, site.log("attach-b"), &[]);
    let (reader0, reader1) = (reader_index(0), reader_index(1));
    assert_ne!(reader0, reader1);
    let receipt =
        run_json(&mut site.two_readers("transfer", &reader0, &reader1, &["--amount", "12.50"]));
    assert_eq!(receipt["source"], a_id.as_str());
    assert_eq!(receipt["destination"], b_id.as_str());
    assert_eq!(receipt["source_balance_after"], 3750);
    assert_eq!(receipt["destination_balance_after"], 1750);
    assert_eq!(receipt["command_pairs"], 4, "{receipt}");

    // The same reader twice is refused before any card is touched.
    let Ran { status, stderr, .. } =
        run(&mut site.two_readers("transfer", &reader0, &reader0, &["--amount", "1.00"]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("each card needs a reader of its own"),
        "{stderr}"
    );

    // Lost answers, one card leaving its reader at a chosen command APDU (counted from its
    // SELECT): each time the operator gets a clear error, the card comes back, and
    // settle-transfer settles exactly once what either card committed.
    let mut slots = [slot0, slot1];
    let mut balances = [5000 - 1250, 500 + 1250];
    let mut expected_history = vec!["completed"];
    for case in LOST_ANSWERS {
        let name = format!("{} {} {}", case.slot, case.option, case.apdu);
        let image = if case.slot == 0 { &a } else { &b };
        slots[case.slot].terminate();
        let mut dropping = Attached::start_in_slot(
            image,
            case.slot,
            site.log(&format!("attach-drop-{}-{}", case.slot, case.apdu)),
            &[case.option, &case.apdu.to_string()],
        );
        let amount = format!("{}.{:02}", case.amount / 100, case.amount % 100);
        let Ran {
            status,
            stdout,
            stderr,
        } = run(&mut site.two_readers("transfer", &reader0, &reader1, &["--amount", &amount]));
        let failure: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{name}: one JSON object ({e}): {stdout}{stderr}"));
        if case.in_doubt {
            assert_eq!(status.code(), Some(3), "{name}: {stdout}{stderr}");
            let sequence = failure["in_doubt"].as_u64().expect("the transfer's number");
            assert!(
                stderr.contains(&format!(
                    "transfer {sequence} is in doubt: present both cards again"
                )),
                "{name}: {stderr}"
            );
        } else {
            assert_eq!(status.code(), Some(2), "{name}: {stdout}{stderr}");
            assert_eq!(failure["in_doubt"], Value::Null, "{name}");
            assert!(
                stderr.contains("present both cards again"),
                "{name}: {stderr}"
            );
        }
        dropping.wait_exit(Duration::from_secs(10), "its injected drop");
        drop(dropping);

        // The card comes back; settle-transfer decides, once.
        slots[case.slot] = Attached::start_in_slot(
            image,
            case.slot,
            site.log(&format!("attach-back-{}-{}", case.slot, case.apdu)),
            &[],
        );
        let settled = run_json(&mut site.two_readers("settle-transfer", &reader0, &reader1, &[]));
        match case.settles_as {
            Some(outcome) => {
                assert_eq!(settled["settled"]["status"], outcome, "{name}: {settled}");
                assert_eq!(settled["settled"]["amount"], case.amount, "{name}");
                expected_history.push(outcome);
            }
            None => assert_eq!(settled["settled"], Value::Null, "{name}: {settled}"),
        }
        let again = run_json(&mut site.two_readers("settle-transfer", &reader0, &reader1, &[]));
        assert_eq!(
            again["settled"],
            Value::Null,
            "{name}: settled twice: {again}"
        );
        if case.settles_as == Some("completed") {
            balances[0] -= case.amount;
            balances[1] += case.amount;
        }
    }
    for slot in &mut slots {
        slot.terminate();
    }

    // What moved is exactly what the settlements say.
    assert_eq!(site.balance(&a), balances[0]);
    assert_eq!(site.balance(&b), balances[1]);
    let history = site.history_of("settlement-1");
    let statuses: Vec<&str> = history["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, expected_history, "{history}");
    assert_eq!(history["in_doubt"], 0, "{history}");

    // The center takes every report, and value is conserved with the transfers in it.
    let synced = site.sync("settlement-1");
    assert_eq!(synced["refused"], serde_json::json!([]), "{synced}");
    assert_eq!(synced["transfers_not_uploaded"], 0, "{synced}");
    let status = site.center_status();
    let count = |outcome: &str| statuses.iter().filter(|s| **s == outcome).count();
    assert_eq!(
        status["transfers"]["completed_count"].as_u64(),
        Some(count("completed") as u64),
        "{status}"
    );
    assert_eq!(
        status["transfers"]["undone_count"].as_u64(),
        Some(count("undone") as u64),
        "{status}"
    );
    assert_eq!(status["reconciliation"], "reconciled", "{status}");
}

/// Where a card leaves its reader during a transfer, and what follows.
struct LostAnswer {
    /// The reader slot of the card that leaves: 0 the source, 1 the destination.
    slot: usize,
    option: &'static str,
    /// The card's command APDU, counted from its SELECT.
    apdu: u32,
    amount: u64,
    /// Whether the transfer is reported in doubt (exit 3) rather than failed (exit 2).
    in_doubt: bool,
    /// How settle-transfer ends it: completed, undone, or nothing to settle.
    settles_as: Option<&'static str>,
}

const LOST_ANSWERS: [LostAnswer; 4] = [
    // The destination applied TRANSFER IN (its SELECT, INITIALIZE TRANSFER IN, TRANSFER IN)
    // but its answer was lost: the source debits against the destination's proof.
    LostAnswer {
        slot: 1,
        option: "--danger-drop-after-commit",
        apdu: 3,
        amount: 200,
        in_doubt: true,
        settles_as: Some("completed"),
    },
    // The source debited at TRANSFER COMPLETE (its SELECT, TRANSFER OUT, TRANSFER
    // COMPLETE) but its answer was lost: the terminal finds the debit as the source's last
    // record.
    LostAnswer {
        slot: 0,
        option: "--danger-drop-after-commit",
        apdu: 3,
        amount: 300,
        in_doubt: true,
        settles_as: Some("completed"),
    },
    // The source reserved the amount at TRANSFER OUT but its answer was lost: nothing
    // reached the destination, whose proof of that releases the reservation.
    LostAnswer {
        slot: 0,
        option: "--danger-drop-after-commit",
        apdu: 2,
        amount: 400,
        in_doubt: false,
        settles_as: Some("undone"),
    },
    // The source left before it saw TRANSFER OUT: nothing to settle.
    LostAnswer {
        slot: 0,
        option: "--danger-drop-after",
        apdu: 2,
        amount: 500,
        in_doubt: false,
        settles_as: None,
    },
];
