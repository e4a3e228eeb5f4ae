//! Card-to-card transfer at the settlement terminal from the command line (seed 000), with
//! both cards as image files in the process (`--from-card`/`--to-card`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn valuecard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_valuecard"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A data directory made by `center init`, and two issued cards.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    init: Value,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let init = json(
            valuecard()
                .args(["center", "init", "--json", "--data"])
                .arg(&data),
        );
        Site {
            _dir: dir,
            root,
            data,
            init,
        }
    }

    fn device(&self, name: &str) -> Value {
        self.init["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|device| device["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no device {name} in {}", self.init))
    }

    /// Issues a card image holding `value`; its path and card ID.
    fn issue(&self, name: &str, value: &str) -> (PathBuf, String) {
        let image = self.root.join(format!("{name}.img"));
        let issued = json(
            valuecard()
                .args(["card", "issue", "--json", "--value", value, "--data"])
                .arg(&self.data)
                .arg("--out")
                .arg(&image),
        );
        (image, issued["card"].as_str().unwrap().to_owned())
    }

    /// `terminal transfer --data DATA --from-card FROM --to-card TO --amount AMOUNT ARGS`.
    fn transfer(&self, from: &Path, to: &Path, amount: &str, args: &[&str]) -> Output {
        valuecard()
            .args(["terminal", "transfer", "--data"])
            .arg(&self.data)
            .arg("--from-card")
            .arg(from)
            .arg("--to-card")
            .arg(to)
            .args(["--amount", amount])
            .args(args)
            .output()
            .unwrap()
    }

    fn balance(&self, card: &Path) -> u64 {
        let info = json(
            valuecard()
                .args(["terminal", "info", "--json", "--data"])
                .arg(&self.data)
                .arg("--card")
                .arg(card),
        );
        info["balance"].as_u64().unwrap()
    }
}

/// Runs a command that must succeed and print one JSON object.
fn json(command: &mut Command) -> Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{command:?}: not JSON ({error}): {}", text(&output.stdout)))
}

#[test]
fn value_moves_between_two_card_images_and_back() {
    let site = Site::new();
    let settlement = site.device("settlement-1");
    assert_eq!(settlement["role"], "settlement-terminal");
    let (a, a_id) = site.issue("a", "50.00");
    let (b, b_id) = site.issue("b", "5.00");

    let output = site.transfer(&a, &b, "12.50", &["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let receipt: Value = serde_json::from_slice(&output.stdout).unwrap();
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
    let output = site.transfer(&b, &a, "7.25", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
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
    let sale = json(
        valuecard()
            .args([
                "terminal", "purchase", "--json", "--amount", "10.00", "--data",
            ])
            .arg(&site.data)
            .arg("--card")
            .arg(&b),
    );
    assert_eq!(sale["balance_after"], 25);

    // The settlement terminal's history lists both, completed and not yet uploaded.
    let history = json(
        valuecard()
            .args([
                "terminal",
                "history",
                "--json",
                "--terminal",
                "settlement-1",
                "--data",
            ])
            .arg(&site.data),
    );
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
    let sync = |terminal: &str| {
        json(
            valuecard()
                .args([
                    "terminal",
                    "sync",
                    "--json",
                    "--terminal",
                    terminal,
                    "--data",
                ])
                .arg(&site.data),
        )
    };
    let synced = sync("settlement-1");
    assert_eq!(
        (
            synced["stored"].as_u64(),
            synced["transfers_not_uploaded"].as_u64()
        ),
        (Some(2), Some(0)),
        "{synced}"
    );
    assert_eq!(sync("settlement-1")["stored"], 0);
    sync("terminal-1");
    let status = json(
        valuecard()
            .args(["center", "status", "--json", "--data"])
            .arg(&site.data),
    );
    assert_eq!(status["transfers"]["completed_count"], 2, "{status}");
    assert_eq!(status["transfers"]["completed"], 1250 + 725, "{status}");
    assert_eq!(status["reconciliation"], "reconciled", "{status}");

    // Nothing pending: settle-transfer says so and changes nothing.
    let settled = json(
        valuecard()
            .args(["terminal", "settle-transfer", "--json", "--data"])
            .arg(&site.data)
            .arg("--from-card")
            .arg(&a)
            .arg("--to-card")
            .arg(&b),
    );
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
    assert_eq!(output.status.code(), Some(2));
    let refusal: Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = refusal["error"].as_str().unwrap();
    assert!(
        message.contains("can pass on 20.00") && message.contains("needs 20.01"),
        "{refusal}"
    );
    assert_eq!(refusal["in_doubt"], Value::Null);
    assert!(text(&output.stderr).contains("nothing was changed"));
    assert_eq!((site.balance(&a), site.balance(&b)), (2000, 100));

    // The same card as source and destination.
    let output = site.transfer(&a, &a, "1.00", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("name the same card image"),
        "{}",
        text(&output.stderr)
    );

    // A missing card image is refused, and not created.
    let missing = site.root.join("missing.img");
    let output = site.transfer(&a, &missing, "1.00", &["--json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("no such card image"),
        "{}",
        text(&output.stderr)
    );
    let refusal: Value = serde_json::from_slice(&output.stdout).unwrap();
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
        let output = site.transfer(&a, &b, amount, args);
        assert_eq!(output.status.code(), Some(2), "{amount} {args:?}");
        assert!(
            text(&output.stderr).contains(expected),
            "{amount} {args:?}: {}",
            text(&output.stderr)
        );
    }

    // Without both cards named.
    let output = valuecard()
        .args(["terminal", "transfer", "--amount", "1", "--data"])
        .arg(&site.data)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("name the two cards"));

    // Every refusal left both cards as they were, and the terminal recorded no transfer.
    assert_eq!((site.balance(&a), site.balance(&b)), (2000, 100));
    let history = json(
        valuecard()
            .args([
                "terminal",
                "history",
                "--json",
                "--terminal",
                "settlement-1",
                "--data",
            ])
            .arg(&site.data),
    );
    assert_eq!(history["transfers"], serde_json::json!([]), "{history}");
}

#[test]
fn another_settlement_terminal_is_installed_and_used() {
    let site = Site::new();
    let installed = json(
        valuecard()
            .args([
                "terminal",
                "install",
                "--json",
                "--settlement",
                "--name",
                "settlement-2",
                "--data",
            ])
            .arg(&site.data),
    );
    assert_eq!(installed["role"], "settlement-terminal");
    let role = std::fs::read_to_string(site.data.join("devices").join("settlement-2").join("role"))
        .unwrap();
    assert_eq!(role.trim(), "settlement-terminal");
    let (a, _) = site.issue("a", "3.00");
    let (b, _) = site.issue("b", "0.00");
    let output = site.transfer(&a, &b, "3.00", &["--json", "--terminal", "settlement-2"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let receipt: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(receipt["terminal"], installed["device_id"]);
    assert_eq!((site.balance(&a), site.balance(&b)), (0, 300));

    // Its lists come from the center like a payment terminal's.
    let synced = json(
        valuecard()
            .args([
                "terminal",
                "sync",
                "--json",
                "--terminal",
                "settlement-2",
                "--data",
            ])
            .arg(&site.data),
    );
    assert_eq!(synced["terminal"], installed["device_id"]);
    assert_eq!(synced["stored"], 1, "{synced}");
    assert_eq!(synced["transfers_not_uploaded"], 0, "{synced}");

    // A dispenser cannot also be a settlement terminal.
    let output = valuecard()
        .args([
            "terminal",
            "install",
            "--settlement",
            "--dispenser",
            "--name",
            "both",
            "--data",
        ])
        .arg(&site.data)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(!site.data.join("devices").join("both").exists());
}

#[test]
fn bench_transfer_counts_four_pairs_and_fails_below_its_bound() {
    let bench = |args: &[&str]| {
        valuecard()
            .args(["bench", "transfer", "--iterations", "3", "--rounds", "1"])
            .args(args)
            .output()
            .unwrap()
    };
    let output = bench(&["--json", "--min-ratio", "0"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
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
    let said = text(&output.stdout);
    assert!(said.contains("BELOW TARGET"), "{said}");
    assert!(said.contains("transfers/s"), "{said}");
}

#[test]
fn cards_on_different_key_generations_are_brought_to_one_first() {
    let site = Site::new();
    let (a, a_id) = site.issue("a", "20.00");
    let (b, b_id) = site.issue("b", "10.00");
    let center = |command: &str| {
        json(
            valuecard()
                .args(["center", command, "--json", "--data"])
                .arg(&site.data),
        )
    };
    let load = |card: &Path| {
        json(
            valuecard()
                .args(["terminal", "load", "--json", "--amount", "1.00", "--data"])
                .arg(&site.data)
                .arg("--card")
                .arg(card),
        )
    };

    // A takes transfer key 2 with a load; B still holds 1, under the same update key.
    assert_eq!(center("rotate-transfer-key")["generation"], 2);
    load(&a);
    let output = site.transfer(&a, &b, "5.00", &["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let receipt: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        receipt["key_update"],
        serde_json::json!({"card": b_id, "path": "symmetric", "from_key": 1, "to_key": 2}),
        "{receipt}"
    );
    assert_eq!(receipt["destination_balance_after"], 1500);

    // Both keys move on and B takes them with a load: A is older now, and the two cards'
    // update keys differ, so A takes the key under the cards' certified key pairs.
    center("rotate-update-key");
    assert_eq!(center("rotate-transfer-key")["generation"], 3);
    // The center loads B only once it knows where B's received value came from.
    let refused = valuecard()
        .args(["terminal", "load", "--amount", "1.00", "--data"])
        .arg(&site.data)
        .arg("--card")
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("a settlement terminal may still hold the card's transfers"),
        "{}",
        text(&refused.stderr)
    );
    json(
        valuecard()
            .args([
                "terminal",
                "sync",
                "--json",
                "--terminal",
                "settlement-1",
                "--data",
            ])
            .arg(&site.data),
    );
    load(&b);
    let output = site.transfer(&a, &b, "2.00", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.contains(&format!(
            "key update first: card {a_id} took transfer key 3 (had 2), public-key path"
        )),
        "{said}"
    );
    assert_eq!((site.balance(&a), site.balance(&b)), (1400, 1800));
}
