//! The `valuecard` program with devices whose SAMs are in a PKCS#11 token (a throw-away
//! SoftHSM2 token), next to the software devices `center init` made: the same load,
//! purchase, transfer and uploads on both kinds, the token's objects and nothing secret in
//! the data directory, and the refusals of a wrong PIN and a wrong `--sam`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{number, run, run_json, valuecard};
use valuecard_sam_pkcs11::softhsm::{self, SoftHsmDirectory};

/// `valuecard` with this test's SoftHSM2 configuration and PIN.
fn command(tokens: &SoftHsmDirectory, args: &[&str]) -> Command {
    let mut command = valuecard();
    command
        .env("SOFTHSM2_CONF", tokens.conf())
        .env("VALUECARD_PKCS11_PIN", softhsm::THROWAWAY_USER_PIN)
        .env_remove("VALUECARD_PKCS11_MODULE")
        .args(args);
    command
}

fn balance(tokens: &SoftHsmDirectory, data: &str, card: &Path) -> u64 {
    let info = run_json(&mut command(
        tokens,
        &[
            "terminal",
            "info",
            "--data",
            data,
            "--card",
            card.to_str().unwrap(),
            "--json",
        ],
    ));
    number(&info, "balance")
}

/// Load 20.00 onto card A at `dispenser`, sell 2.50 at `terminal`, move 5.00 from A to B at
/// `settlement`, and upload both terminals' records: every step must succeed.
fn device_flows(
    tokens: &SoftHsmDirectory,
    data: &str,
    [a, b]: [&Path; 2],
    [dispenser, terminal, settlement]: [&str; 3],
) {
    let (a_arg, b_arg) = (a.to_str().unwrap(), b.to_str().unwrap());
    let before = (balance(tokens, data, a), balance(tokens, data, b));
    for args in [
        vec![
            "terminal",
            "load",
            "--data",
            data,
            "--dispenser",
            dispenser,
            "--card",
            a_arg,
            "--amount",
            "20",
        ],
        vec![
            "terminal",
            "purchase",
            "--data",
            data,
            "--terminal",
            terminal,
            "--card",
            a_arg,
            "--amount",
            "2.50",
        ],
        vec![
            "terminal",
            "transfer",
            "--data",
            data,
            "--terminal",
            settlement,
            "--from-card",
            a_arg,
            "--to-card",
            b_arg,
            "--amount",
            "5",
        ],
    ] {
        let mut args = args;
        args.push("--json");
        run_json(&mut command(tokens, &args));
    }
    assert_eq!(
        (balance(tokens, data, a), balance(tokens, data, b)),
        (before.0 + 2_000 - 250 - 500, before.1 + 500)
    );
    for device in [terminal, settlement] {
        let synced = run_json(&mut command(
            tokens,
            &[
                "terminal",
                "sync",
                "--data",
                data,
                "--terminal",
                device,
                "--json",
            ],
        ));
        assert!(
            !synced.to_string().contains("refused\":[{"),
            "{device}: {synced}"
        );
    }
}

#[test]
fn devices_with_pkcs11_sams_run_the_same_flows_as_software_ones() {
    let Some(_module) = softhsm::module_or_skip("cli_pkcs11") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = SoftHsmDirectory::create(&dir.path().join("softhsm")).unwrap();
    tokens.init_token_with_util("cli").unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));

    run_json(&mut command(
        &tokens,
        &["center", "init", "--data", data_arg, "--json"],
    ));
    for (name, kind) in [
        ("hsm-dispenser", Some("--dispenser")),
        ("hsm-terminal", None),
        ("hsm-settlement", Some("--settlement")),
    ] {
        let uri = format!("pkcs11:token=cli;object={name}");
        let mut args = vec![
            "terminal", "install", "--data", data_arg, "--name", name, "--sam", &uri, "--json",
        ];
        args.extend(kind);
        let installed = run_json(&mut command(&tokens, &args));
        assert_eq!(installed["sam"], uri.as_str());
        // The data directory names the token's objects and holds no key, nor the PIN.
        let device = data.join("devices").join(name);
        assert!(!device.join("sam.key").exists());
        let recorded = std::fs::read_to_string(device.join("sam.uri")).unwrap();
        assert_eq!(recorded.trim(), uri);
    }
    for card in [&a, &b] {
        run_json(&mut command(
            &tokens,
            &[
                "card",
                "issue",
                "--data",
                data_arg,
                "--out",
                card.to_str().unwrap(),
                "--value",
                "10",
                "--json",
            ],
        ));
    }
    device_flows(
        &tokens,
        data_arg,
        [&a, &b],
        ["dispenser-1", "terminal-1", "settlement-1"],
    );
    device_flows(
        &tokens,
        data_arg,
        [&a, &b],
        ["hsm-dispenser", "hsm-terminal", "hsm-settlement"],
    );
    let status = run_json(&mut command(
        &tokens,
        &["center", "status", "--data", data_arg, "--json"],
    ));
    assert_eq!(status["reconciled"], true, "{status}");

    // The token holds each device's key pairs and keys under its label.
    let listed = run(Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", tokens.conf())
        .args([
            "--module",
            softhsm::installed_module().unwrap().to_str().unwrap(),
            "--token-label",
            "cli",
            "--login",
            "--pin",
            softhsm::THROWAWAY_USER_PIN,
            "--list-objects",
        ]));
    assert!(
        listed.status.success(),
        "pkcs11-tool (opensc): {}",
        listed.stderr
    );
    for label in [
        "hsm-terminal",
        "hsm-terminal/sealing",
        "hsm-terminal/terminal-key",
    ] {
        assert!(
            listed.stdout.contains(&format!("label:      {label}\n")),
            "{label} not in:\n{}",
            listed.stdout
        );
    }

    // A wrong PIN: a clear error, and the card unchanged.
    let before = balance(&tokens, data_arg, &a);
    let wrong = run(command(
        &tokens,
        &[
            "terminal",
            "purchase",
            "--data",
            data_arg,
            "--terminal",
            "hsm-terminal",
            "--card",
            a.to_str().unwrap(),
            "--amount",
            "1",
        ],
    )
    .env("VALUECARD_PKCS11_PIN", "00000000"));
    assert_eq!(wrong.status.code(), Some(2), "{}", wrong.stderr);
    assert!(wrong.stderr.contains("wrong user PIN"), "{}", wrong.stderr);
    assert_eq!(balance(&tokens, data_arg, &a), before);

    // A --sam naming other objects, or given to a software device, is refused.
    for (terminal, sam) in [
        ("hsm-terminal", "pkcs11:token=cli;object=hsm-dispenser"),
        ("terminal-1", "pkcs11:token=cli;object=hsm-terminal"),
    ] {
        let refused = run(&mut command(
            &tokens,
            &[
                "terminal",
                "purchase",
                "--data",
                data_arg,
                "--terminal",
                terminal,
                "--card",
                a.to_str().unwrap(),
                "--amount",
                "1",
                "--sam",
                sam,
            ],
        ));
        assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
        assert!(refused.stderr.contains("SAM"), "{}", refused.stderr);
    }
    // center init makes software devices only: a token's URI is refused, not ignored.
    let refused = run(&mut command(
        &tokens,
        &[
            "center",
            "init",
            "--data",
            dir.path().join("other").to_str().unwrap(),
            "--sam",
            "pkcs11:token=cli;object=x",
        ],
    ));
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("terminal install --sam"),
        "{}",
        refused.stderr
    );
    assert!(!dir.path().join("other").exists());

    // The matching --sam, with its PIN in the URI, is accepted.
    run_json(
        command(
            &tokens,
            &[
                "terminal",
                "purchase",
                "--data",
                data_arg,
                "--terminal",
                "hsm-terminal",
                "--card",
                a.to_str().unwrap(),
                "--amount",
                "1",
                "--sam",
                "pkcs11:token=cli;object=hsm-terminal?pin-value=1234",
                "--json",
            ],
        )
        .env_remove("VALUECARD_PKCS11_PIN"),
    );
    assert_eq!(balance(&tokens, data_arg, &a), before - 100);
}

#[test]
fn the_centers_root_key_can_live_in_a_token() {
    let Some(module) = softhsm::module_or_skip("cli_pkcs11 root key") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = SoftHsmDirectory::create(&dir.path().join("softhsm")).unwrap();
    tokens.init_token_with_util("root").unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let card = dir.path().join("card.img");
    let card_arg = card.to_str().unwrap();
    let uri = "pkcs11:token=root;object=center-root";

    let init = run_json(&mut command(
        &tokens,
        &[
            "center",
            "init",
            "--data",
            data_arg,
            "--key-store",
            uri,
            "--json",
        ],
    ));
    assert_eq!(init["root_key_store"], uri);
    // The key file records where the root key is, not the key.
    let key_file = std::fs::read(data.join("center").join("center.keys")).unwrap();
    assert!(key_file.windows(uri.len()).any(|w| w == uri.as_bytes()));

    // Every signature of the root (device and card certificates, the load, the answers)
    // comes from the token, and the books close.
    for args in [
        vec![
            "card", "issue", "--data", data_arg, "--out", card_arg, "--value", "10",
        ],
        vec![
            "terminal", "load", "--data", data_arg, "--card", card_arg, "--amount", "5",
        ],
        vec![
            "terminal", "purchase", "--data", data_arg, "--card", card_arg, "--amount", "1",
        ],
        vec!["terminal", "sync", "--data", data_arg],
    ] {
        let mut args = args;
        args.push("--json");
        run_json(&mut command(&tokens, &args));
    }
    assert_eq!(balance(&tokens, data_arg, &card), 1_400);
    let status = run_json(&mut command(
        &tokens,
        &["center", "status", "--data", data_arg, "--json"],
    ));
    assert_eq!(status["reconciled"], true, "{status}");

    // The root key is sensitive, never extractable, in the token.
    let listed = run(Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", tokens.conf())
        .args([
            "--module",
            module.to_str().unwrap(),
            "--token-label",
            "root",
            "--login",
            "--pin",
            softhsm::THROWAWAY_USER_PIN,
            "--list-objects",
            "--type",
            "privkey",
        ]));
    assert!(listed.status.success(), "{}", listed.stderr);
    assert!(
        listed.stdout.contains("label:      center-root\n"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("never extractable"),
        "{}",
        listed.stdout
    );

    // Without the right PIN the center does not open.
    let refused = run(command(&tokens, &["center", "status", "--data", data_arg])
        .env("VALUECARD_PKCS11_PIN", "00000000"));
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("wrong user PIN"),
        "{}",
        refused.stderr
    );
}

/// `terminal charge`/`terminal pay` at the memory-card machine `machine` on `card`.
fn memcard_write(
    tokens: &SoftHsmDirectory,
    data: &str,
    kind: &str,
    machine: &str,
    card: &Path,
    amount: &str,
    sealed: bool,
) -> serde_json::Value {
    let mut args = vec![
        "terminal",
        kind,
        "--data",
        data,
        "--machine",
        machine,
        "--card",
        card.to_str().unwrap(),
        "--amount",
        amount,
        "--json",
    ];
    if sealed {
        args.push("--sealed");
    }
    run_json(&mut command(tokens, &args))
}

#[test]
fn memory_card_machines_with_pkcs11_sams_charge_and_take_payments() {
    let Some(_module) = softhsm::module_or_skip("cli_pkcs11 memory cards") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = SoftHsmDirectory::create(&dir.path().join("softhsm")).unwrap();
    tokens.init_token_with_util("mc").unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    run_json(&mut command(
        &tokens,
        &["center", "init", "--data", data_arg, "--json"],
    ));
    for (name, role, sam) in [
        (
            "hsm-charger",
            "--charge-machine",
            Some("pkcs11:token=mc;object=hsm-charger"),
        ),
        (
            "hsm-payer",
            "--payment-machine",
            Some("pkcs11:token=mc;object=hsm-payer"),
        ),
        ("soft-payer", "--payment-machine", None),
    ] {
        let mut args = vec![
            "terminal", "install", "--data", data_arg, "--name", name, role, "--json",
        ];
        if let Some(uri) = sam {
            args.extend(["--sam", uri]);
        }
        let installed = run_json(&mut command(&tokens, &args));
        if let Some(uri) = sam {
            assert_eq!(installed["sam"], uri, "{installed}");
            assert!(!data.join("devices").join(name).join("sam.key").exists());
        }
    }
    let synced = run_json(&mut command(
        &tokens,
        &[
            "terminal",
            "machine-sync",
            "--data",
            data_arg,
            "--machine",
            "hsm-charger",
            "--float",
            "100",
            "--json",
        ],
    ));
    assert_eq!(number(&synced, "float"), 10_000, "{synced}");

    let (plain, sealed) = (dir.path().join("m1.img"), dir.path().join("m2.img"));
    for card in [&plain, &sealed] {
        run_json(&mut command(
            &tokens,
            &[
                "memcard",
                "issue",
                "--data",
                data_arg,
                "--out",
                card.to_str().unwrap(),
                "--json",
            ],
        ));
    }
    let charged = memcard_write(
        &tokens,
        data_arg,
        "charge",
        "hsm-charger",
        &plain,
        "20",
        false,
    );
    assert_eq!(number(&charged, "balance_after"), 2_000, "{charged}");
    let charged = memcard_write(
        &tokens,
        data_arg,
        "charge",
        "hsm-charger",
        &sealed,
        "10",
        true,
    );
    assert_eq!(number(&charged, "float"), 7_000, "{charged}");
    let info = run_json(&mut command(
        &tokens,
        &[
            "memcard",
            "info",
            "--card",
            sealed.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(info["value"]["format"], "sealed", "{info}");

    // Spent at the token's payment machine and at a software one (each opens the other's
    // seal with KO: in the token, in the software SAM).
    let paid = memcard_write(&tokens, data_arg, "pay", "hsm-payer", &plain, "3.50", false);
    assert_eq!(number(&paid, "balance_after"), 1_650, "{paid}");
    let paid = memcard_write(&tokens, data_arg, "pay", "hsm-payer", &sealed, "2", false);
    assert_eq!(number(&paid, "balance_after"), 800, "{paid}");
    let paid = memcard_write(&tokens, data_arg, "pay", "soft-payer", &sealed, "1", false);
    assert_eq!(number(&paid, "balance_after"), 700, "{paid}");
    let paid = memcard_write(
        &tokens,
        data_arg,
        "pay",
        "hsm-payer",
        &sealed,
        "0.50",
        false,
    );
    assert_eq!(number(&paid, "balance_after"), 650, "{paid}");

    // A charge above the float the token holds is refused.
    let refused = run(&mut command(
        &tokens,
        &[
            "terminal",
            "charge",
            "--data",
            data_arg,
            "--machine",
            "hsm-charger",
            "--card",
            plain.to_str().unwrap(),
            "--amount",
            "71",
        ],
    ));
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(refused.stderr.contains("float"), "{}", refused.stderr);

    for machine in ["hsm-charger", "hsm-payer", "soft-payer"] {
        run_json(&mut command(
            &tokens,
            &[
                "terminal",
                "machine-sync",
                "--data",
                data_arg,
                "--machine",
                machine,
                "--json",
            ],
        ));
    }
    let status = run_json(&mut command(
        &tokens,
        &["center", "status", "--data", data_arg, "--json"],
    ));
    let books = &status["memory_cards"];
    assert_eq!(books["status"], "reconciled", "{status}");
    assert_eq!(number(books, "charged"), 3_000, "{books}");
    assert_eq!(number(books, "spent"), 350 + 200 + 100 + 50, "{books}");
    assert_eq!(number(books, "on_cards"), 1_650 + 650, "{books}");
    assert_eq!(number(books, "float_in_machines"), 7_000, "{books}");
}
