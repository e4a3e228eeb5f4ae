//! Card-to-card transfer at the settlement terminal from the command line (seed 000), with
//! both cards as image files in the process (`--from-card`/`--to-card`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::{run, run_json, valuecard, Ran, Site};

impl Site {
    /// `terminal SUBCOMMAND --data DATA --from-card FROM --to-card TO ARGS`.
    fn two_cards(&self, subcommand: &str, from: &Path, to: &Path, args: &[&str]) -> Command {
        let mut command = valuecard();
        command
            .args(["terminal", subcommand, "--data"])
            .arg(&self.data)
            .arg("--from-card")
            .arg(from)
            .arg("--to-card")
            .arg(to)
            .args(args);
        command
    }

    /// `terminal transfer --data DATA --from-card FROM --to-card TO --amount AMOUNT ARGS`.
    fn transfer(&self, from: &Path, to: &Path, amount: &str, args: &[&str]) -> Ran {
        let mut command = self.two_cards("transfer", from, to, &["--amount", amount]);
        run(command.args(args))
    }

    /// A transfer with `--json` that must succeed; its receipt.
    fn transfer_json(&self, from: &Path, to: &Path, amount: &str, args: &[&str]) -> Value {
        let ran = self.transfer(from, to, amount, &[&["--json"], args].concat());
        assert!(ran.status.success(), "{}", ran.stderr);
        serde_json::from_str(&ran.stdout).unwrap()
    }

    /// A transfer that must succeed; what it says.
    fn transfer_text(&self, from: &Path, to: &Path, amount: &str) -> String {
        let ran = self.transfer(from, to, amount, &[]);
        assert!(ran.status.success(), "{}", ran.stderr);
        ran.stdout
    }
}

/// A refusal: exit status 2, and `expected` in what the program says on stderr.
fn assert_refused(ran: &Ran, expected: &str, what: &str) {
    assert_eq!(ran.status.code(), Some(2), "{what}: {}", ran.stderr);
    assert!(ran.stderr.contains(expected), "{what}: {}", ran.stderr);
}

#[test]
fn value_moves_between_two_card_images_and_back() {
    let site = Site::new();
    let settlement = site.device("settlement-1");
    assert_eq!(settlement["role"], "settlement-terminal");
    let (a, a_id) = site.issue("a", "50.00");
    let (b, b_id) = site.issue("b", "5.00");

    let receipt = site.transfer_json(&a, &b, "12.50", &[]);
    assert_eq!(receipt["terminal"], settlement["device_id"]);
    assert_eq!(receipt["source"], a_id.as_str());
    assert_eq!(receipt["destination"], b_id.as_str());
    assert_eq!(receipt["amount"], 1250);
    assert_eq!(receipt["source_balance_after"], 3750);
    assert_eq!(receipt["destination_balance_after"], 1750);
    assert_eq!(receipt["command_pairs"], 4, "{receipt}");
    assert_eq!(receipt["key_update"], Value::Null, "both cards hold key 1");
    assert_eq!(receipt["settled_first"], Value::Null);
    let first_sequence = receipt["sequence"].as_u64().unwrap();
    // The cards themselves agree with the receipt.
    assert_eq!((site.balance(&a), site.balance(&b)), (3750, 1750));

    // Back again, in words this time.
    let said = site.transfer_text(&b, &a, "7.25");
    assert!(
        said.contains(&format!("transferred 7.25 from card {b_id} to card {a_id}")),
        "{said}"
    );
    assert!(said.contains("balance now 10.25"), "{said}");
    assert!(said.contains("balance now 44.75"), "{said}");
    assert!(said.contains("pairs after the two SELECTs: 4"), "{said}");
    assert_eq!((site.balance(&a), site.balance(&b)), (4475, 1025));

    // The received value is spent at a payment terminal, which accepts the settlement
    // terminal as the card's last writer.
    let sale = site.on_card("purchase", &b, &["--amount", "10.00"]);
    assert_eq!(sale["balance_after"], 25);

    // The settlement terminal's history lists both, completed and not yet uploaded.
    let history = site.history_of("settlement-1");
    let transfers = history["transfers"].as_array().unwrap();
    assert_eq!(transfers.len(), 2, "{history}");
    assert_eq!(transfers[0]["sequence"].as_u64(), Some(first_sequence));
    assert_eq!(transfers[0]["amount"], 1250);
    assert_eq!(transfers[1]["source"], b_id.as_str());
    assert!(
        transfers
            .iter()
            .all(|t| t["status"] == "completed" && t["uploaded"] == false),
        "{history}"
    );
    assert_eq!(history["in_doubt"], 0);

    // The reports reach the center with the terminals' sync; a second sync sends nothing.
    let synced = site.sync("settlement-1");
    assert_eq!(
        (
            synced["stored"].as_u64(),
            synced["transfers_not_uploaded"].as_u64()
        ),
        (Some(2), Some(0)),
        "{synced}"
    );
    assert_eq!(site.sync("settlement-1")["stored"], 0);
    site.sync("terminal-1");
    let status = site.center_status();
    assert_eq!(status["transfers"]["completed_count"], 2, "{status}");
    assert_eq!(status["transfers"]["completed"], 1250 + 725, "{status}");
    assert_eq!(status["reconciliation"], "reconciled", "{status}");

    // Nothing pending: settle-transfer says so and changes nothing.
    let settled = run_json(&mut site.two_cards("settle-transfer", &a, &b, &["--json"]));
    assert_eq!(settled["source"], a_id.as_str());
    assert_eq!(settled["settled"], Value::Null);
    assert_eq!((site.balance(&a), site.balance(&b)), (4475, 25));
}

#[test]
fn refused_transfers_exit_non_zero_and_change_nothing() {
    let site = Site::new();
    let (a, _) = site.issue("a", "20.00");
    let (b, _) = site.issue("b", "1.00");

    // Above the source's balance: refused by the source card, one JSON object with --json.
    let output = site.transfer(&a, &b, "20.01", &["--json"]);
    assert_refused(&output, "nothing was changed", "above the balance");
    let refusal: Value = serde_json::from_str(&output.stdout).unwrap();
    let message = refusal["error"].as_str().unwrap();
    assert!(
        message.contains("can pass on 20.00") && message.contains("needs 20.01"),
        "{refusal}"
    );
    assert_eq!(refusal["in_doubt"], Value::Null);
    assert_eq!((site.balance(&a), site.balance(&b)), (2000, 100));

    // The same card as source and destination.
    assert_refused(
        &site.transfer(&a, &a, "1.00", &[]),
        "name the same card image",
        "one card twice",
    );

    // A missing card image is refused, and not created.
    let missing = site.root.join("missing.img");
    let output = site.transfer(&a, &missing, "1.00", &["--json"]);
    assert_refused(&output, "no such card image", "a missing card image");
    let refusal: Value = serde_json::from_str(&output.stdout).unwrap();
    assert!(refusal["error"]
        .as_str()
        .unwrap()
        .contains("no such card image"));
    assert!(!missing.exists());

    // No amount to move, an amount that is not one, and a payment terminal in the
    // settlement terminal's place.
    for (amount, args, expected) in [
        ("0", &[][..], "must be positive"),
        ("1.234", &[][..], "is not an amount"),
        (
            "1.00",
            &["--terminal", "terminal-1"][..],
            "is a payment-terminal, not a settlement-terminal",
        ),
    ] {
        assert_refused(
            &site.transfer(&a, &b, amount, args),
            expected,
            &format!("{amount} {args:?}"),
        );
    }

    // Without both cards named.
    let output = run(valuecard()
        .args(["terminal", "transfer", "--amount", "1", "--data"])
        .arg(&site.data));
    assert_refused(&output, "name the two cards", "no cards named");

    // Every refusal left both cards as they were, and the terminal recorded no transfer.
    assert_eq!((site.balance(&a), site.balance(&b)), (2000, 100));
    let history = site.history_of("settlement-1");
    assert_eq!(history["transfers"], serde_json::json!([]), "{history}");
}

#[test]
fn another_settlement_terminal_is_installed_and_used() {
    let site = Site::new();
    let installed =
        run_json(&mut site.terminal("install", &["--settlement", "--name", "settlement-2"]));
    assert_eq!(installed["role"], "settlement-terminal");
    let role = std::fs::read_to_string(site.data.join("devices").join("settlement-2").join("role"))
        .unwrap();
    assert_eq!(role.trim(), "settlement-terminal");
    let (a, _) = site.issue("a", "3.00");
    let (b, _) = site.issue("b", "0.00");
    let receipt = site.transfer_json(&a, &b, "3.00", &["--terminal", "settlement-2"]);
    assert_eq!(receipt["terminal"], installed["device_id"]);
    assert_eq!((site.balance(&a), site.balance(&b)), (0, 300));

    // Its lists come from the center like a payment terminal's.
    let synced = site.sync("settlement-2");
    assert_eq!(synced["terminal"], installed["device_id"]);
    assert_eq!(synced["stored"], 1, "{synced}");
    assert_eq!(synced["transfers_not_uploaded"], 0, "{synced}");

    // A dispenser cannot also be a settlement terminal.
    let output = run(valuecard()
        .args([
            "terminal",
            "install",
            "--settlement",
            "--dispenser",
            "--name",
            "both",
            "--data",
        ])
        .arg(&site.data));
    assert_eq!(output.status.code(), Some(2));
    assert!(!site.data.join("devices").join("both").exists());
}

#[test]
fn bench_transfer_counts_four_pairs_and_fails_below_its_bound() {
    let bench = |args: &[&str]| {
        run(valuecard()
            .args(["bench", "transfer", "--iterations", "3", "--rounds", "1"])
            .args(args))
    };
    let output = bench(&["--json", "--min-ratio", "0"]);
    assert!(output.status.success(), "{}", output.stderr);
    let report: Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["benchmark"], "transfer");
    assert_eq!(report["command_pairs_after_selects"], 4, "{report}");
    assert_eq!(report["floor_operations"]["ed25519_verify"], 10);
    assert_eq!(report["floor_operations"]["ed25519_sign"], 2);
    assert!(report["ratio_to_floor"].as_f64().unwrap() > 0.0);
    assert!(report["transfers_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(report["verdict"], "ok");

    // A bound no run meets: exit status 1, and the text says so.
    let output = bench(&["--min-ratio", "1000"]);
    assert_eq!(output.status.code(), Some(1));
    let said = output.stdout;
    assert!(said.contains("BELOW TARGET"), "{said}");
    assert!(said.contains("transfers/s"), "{said}");
}

#[test]
fn cards_on_different_key_generations_are_brought_to_one_first() {
    let site = Site::new();
    let (a, a_id) = site.issue("a", "20.00");
    let (b, b_id) = site.issue("b", "10.00");
    let load = |card: &Path| site.on_card("load", card, &["--amount", "1.00"]);

    // A takes transfer key 2 with a load; B still holds 1, under the same update key.
    assert_eq!(site.center("rotate-transfer-key")["generation"], 2);
    load(&a);
    let receipt = site.transfer_json(&a, &b, "5.00", &[]);
    assert_eq!(
        receipt["key_update"],
        serde_json::json!({"card": b_id, "path": "symmetric", "from_key": 1, "to_key": 2}),
        "{receipt}"
    );
    assert_eq!(receipt["destination_balance_after"], 1500);

    // Both keys move on and B takes them with a load: A is older now, and the two cards'
    // update keys differ, so A takes the key under the cards' certified key pairs.
    site.center("rotate-update-key");
    assert_eq!(site.center("rotate-transfer-key")["generation"], 3);
    // The center loads B only once it knows where B's received value came from.
    let refused = run(valuecard()
        .args(["terminal", "load", "--amount", "1.00", "--data"])
        .arg(&site.data)
        .arg("--card")
        .arg(&b));
    assert_refused(
        &refused,
        "a settlement terminal may still hold the card's transfers",
        "B's load before the sync",
    );
    site.sync("settlement-1");
    load(&b);
    let said = site.transfer_text(&a, &b, "2.00");
    assert!(
        said.contains(&format!(
            "key update first: card {a_id} took transfer key 3 (had 2), public-key path"
        )),
        "{said}"
    );
    assert_eq!((site.balance(&a), site.balance(&b)), (1400, 1800));
}
