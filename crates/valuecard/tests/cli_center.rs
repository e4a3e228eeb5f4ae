//! The center from the command line: the reconciliation `center status` shows, the modes of
//! the center's files, and every command against a center on PostgreSQL.
//!
//! The PostgreSQL test needs a server (`VALUECARD_POSTGRES_URL`, default the local one with
//! trust authentication); without one it says SKIPPED and passes, and CI refuses that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{json_args as json, skip_note, valuecard_args as valuecard};

fn text(args: &[&str]) -> String {
    let output = valuecard(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The reconciliation numbers of `center status --json`.
fn totals(status: &serde_json::Value) -> [i64; 5] {
    ["issued", "loaded", "spent", "remaining", "difference"].map(|key| {
        status[key]
            .as_i64()
            .unwrap_or_else(|| panic!("{key} in {status}"))
    })
}

#[test]
fn center_status_reconciles_issued_loaded_spent_and_remaining_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    json(&["center", "init", "--data", data, "--terminals", "2"]);
    let card = path("a.img");
    json(&[
        "card", "issue", "--data", data, "--out", &card, "--value", "50",
    ]);
    let status = json(&["center", "status", "--data", data]);
    assert_eq!(totals(&status), [5000, 0, 0, 5000, 0]);
    assert_eq!(status["reconciliation"], "reconciled");

    // A purchase the terminal has not uploaded: unknown to the center, whose records still
    // agree with each other (and overstate the card by 10.00).
    json(&[
        "terminal", "purchase", "--data", data, "--card", &card, "--amount", "10",
    ]);
    let status = json(&["center", "status", "--data", data]);
    assert_eq!(totals(&status), [5000, 0, 0, 5000, 0]);
    assert!(status["not_known_here"]
        .as_str()
        .unwrap()
        .contains("have not synced"));

    // A load shows the card's real balance: the center now sees 10.00 spent that no
    // terminal has uploaded yet.
    json(&[
        "terminal", "load", "--data", data, "--card", &card, "--amount", "20",
    ]);
    let status = json(&["center", "status", "--data", data]);
    assert_eq!(totals(&status), [5000, 2000, 0, 6000, -1000]);
    assert_eq!(status["reconciliation"], "uploads_outstanding");
    assert_eq!(status["reconciled"], false);
    let words = text(&["center", "status", "--data", data]);
    assert!(words.contains("spent 0.00"), "{words}");
    assert!(words.contains("remaining value on record 60.00"), "{words}");
    assert!(words.contains("10.00 short"), "{words}");

    json(&["terminal", "sync", "--data", data]);
    let status = json(&["center", "status", "--data", data]);
    assert_eq!(totals(&status), [5000, 2000, 1000, 6000, 0]);
    assert_eq!(status["reconciliation"], "reconciled");
    assert_eq!(status["purchases"], 1);

    // A copy of the card spends the same state as the original: the center records what
    // the first spend left, the second one is value created.
    std::fs::copy(&card, path("a-copy.img")).unwrap();
    json(&[
        "terminal", "purchase", "--data", data, "--card", &card, "--amount", "5",
    ]);
    json(&[
        "terminal",
        "purchase",
        "--data",
        data,
        "--terminal",
        "terminal-2",
        "--card",
        &path("a-copy.img"),
        "--amount",
        "7",
    ]);
    json(&["terminal", "sync", "--data", data]);
    json(&[
        "terminal",
        "sync",
        "--data",
        data,
        "--terminal",
        "terminal-2",
    ]);
    let status = json(&["center", "status", "--data", data]);
    assert_eq!(totals(&status), [5000, 2000, 2200, 5500, 700]);
    assert_eq!(status["reconciliation"], "excess");
    let words = text(&["center", "status", "--data", data]);
    assert!(words.contains("EXCESS of 7.00"), "{words}");
}

#[test]
fn memory_card_machines_install_like_terminals_and_status_shows_their_books() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    json(&["center", "init", "--data", data]);
    for (flag, name, role) in [
        ("--charge-machine", "charger-1", "charge-machine"),
        ("--payment-machine", "payer-1", "payment-machine"),
    ] {
        let installed = json(&["terminal", "install", "--data", data, "--name", name, flag]);
        assert_eq!(installed["role"], role, "{installed}");
    }
    // One kind of device at a time.
    let both = valuecard(&[
        "terminal",
        "install",
        "--data",
        data,
        "--name",
        "both",
        "--charge-machine",
        "--payment-machine",
    ]);
    assert!(!both.status.success());
    let status = json(&["center", "status", "--data", data]);
    let devices = status["devices"].as_array().unwrap();
    for (name, role) in [
        ("charger-1", "charge-machine"),
        ("payer-1", "payment-machine"),
    ] {
        assert!(
            devices
                .iter()
                .any(|device| device["name"] == name && device["role"] == role),
            "{status}"
        );
    }
    let books = &status["memory_cards"];
    assert_eq!(books["status"], "reconciled", "{status}");
    for key in [
        "float_granted",
        "charged",
        "spent",
        "on_cards",
        "gaps",
        "unexplained",
    ] {
        assert_eq!(books[key], 0, "{key} in {status}");
    }
    assert!(books["not_known_here"].as_str().unwrap().contains("gap"));
    assert_eq!(status["reconciliation"], "reconciled");
    let words = text(&["center", "status", "--data", data]);
    assert!(
        words.contains("memory cards: float granted 0.00"),
        "{words}"
    );
}

#[cfg(unix)]
#[test]
fn rotations_from_the_command_line_move_the_generations_status_shows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    json(&["center", "init", "--data", data]);
    let status = json(&["center", "status", "--data", data]);
    let generations = |status: &serde_json::Value| {
        ["transfer_key", "transfer_key_limit", "update_key"]
            .map(|key| status["transfers"][key].as_i64().unwrap())
    };
    assert_eq!(generations(&status), [1, 2, 1], "{status}");
    assert_eq!(status["transfers"]["completed"], 0);

    let rotated = json(&["center", "rotate-transfer-key", "--data", data]);
    assert_eq!(
        (
            &rotated["key"],
            &rotated["generation"],
            &rotated["transfer_key_limit"]
        ),
        (&"transfer".into(), &2.into(), &3.into()),
        "{rotated}"
    );
    let said = text(&["center", "rotate-update-key", "--data", data]);
    assert!(
        said.contains("update key rotated to generation 2"),
        "{said}"
    );
    let status = json(&["center", "status", "--data", data]);
    assert_eq!(generations(&status), [2, 3, 2], "{status}");
    let said = text(&["center", "status", "--data", data]);
    assert!(
        said.contains("transfer key generation 2 (cards accept up to 3), update key generation 2"),
        "{said}"
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn the_center_files_are_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new").join("data");
    json(&["center", "init", "--data", data.to_str().unwrap()]);
    let center = data.join("center");
    assert_eq!(mode(&data), 0o700, "the data directory it created");
    assert_eq!(mode(&center), 0o700);
    assert_eq!(mode(&data.join("devices")), 0o700);
    assert_eq!(mode(&data.join("devices").join("terminal-1")), 0o700);
    assert_eq!(mode(&center.join("center.keys")), 0o600);
    let database = center.join("center.sqlite");
    assert_eq!(mode(&database), 0o600);
    // The WAL and shared-memory files exist while the database is open.
    let open = valuecard_center::sql::Database::open_sqlite(&database).unwrap();
    for suffix in ["-wal", "-shm"] {
        let companion = center.join(format!("center.sqlite{suffix}"));
        assert_eq!(mode(&companion), 0o600, "{}", companion.display());
    }
    drop(open);

    // A data directory the user made keeps its mode; what valuecard puts inside does not.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    json(&["center", "init", "--data", mine.to_str().unwrap()]);
    assert_eq!(mode(&mine), 0o755);
    assert_eq!(mode(&mine.join("center")), 0o700);
    assert_eq!(mode(&mine.join("center").join("center.sqlite")), 0o600);
}

fn postgres_base_url() -> String {
    std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// A connection string to a fresh, empty schema, so tests never see each other's rows.
fn fresh_postgres() -> Option<String> {
    use rand_core::RngCore;
    let url = postgres_base_url();
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            skip_note!("SKIPPED: PostgreSQL not reachable at {url:?}: {error}");
            return None;
        }
    };
    let schema = format!("valuecard_cli_{:016x}", rand_core::OsRng.next_u64());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    Some(format!("{url} options='-c search_path={schema}'"))
}

#[test]
fn every_center_command_works_on_postgres() {
    let Some(url) = fresh_postgres() else {
        return;
    };
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let card = dir.path().join("card.img");
    let card = card.to_str().unwrap();
    json(&[
        "center",
        "init",
        "--data",
        data,
        "--terminals",
        "2",
        "--database",
        url,
    ]);
    assert!(!Path::new(data)
        .join("center")
        .join("center.sqlite")
        .exists());

    // Credit mode from issuance to the statement.
    let issued = json(&[
        "card",
        "issue",
        "--data",
        data,
        "--out",
        card,
        "--value",
        "30",
        "--credit",
        "--database",
        url,
    ]);
    let setting_number = issued["credit"]["setting_number"].as_str().unwrap();
    json(&[
        "terminal",
        "credit-password",
        "--data",
        data,
        "--card",
        card,
        "--setting-number",
        setting_number,
        "--password",
        "2468",
    ]);
    let service = json(&[
        "terminal",
        "credit-service",
        "--data",
        data,
        "--card",
        card,
        "--password",
        "2468",
        "--amount",
        "3.20",
    ]);
    let upload = json(&[
        "terminal",
        "credit-upload",
        "--data",
        data,
        "--database",
        url,
    ]);
    assert_eq!(upload["stored"], 1);
    let month = &service["date"].as_str().unwrap()[..7];
    let statement = json(&[
        "center",
        "statements",
        "--data",
        data,
        "--month",
        month,
        "--database",
        url,
    ]);
    assert_eq!(statement["total"], 320);

    // The purse: a purchase, a load, the sync, the reconciliation.
    json(&[
        "terminal", "purchase", "--data", data, "--card", card, "--amount", "4.50",
    ]);
    let load = json(&[
        "terminal",
        "load",
        "--data",
        data,
        "--card",
        card,
        "--amount",
        "10",
        "--database",
        url,
    ]);
    assert_eq!(load["balance_after"], 3550);
    let sync = json(&["terminal", "sync", "--data", data, "--database", url]);
    assert_eq!(sync["stored"], 1);
    let settle = json(&[
        "terminal",
        "settle",
        "--data",
        data,
        "--card",
        card,
        "--database",
        url,
    ]);
    assert_eq!(settle["loads"].as_array().unwrap().len(), 0);
    let status = json(&["center", "status", "--data", data, "--database", url]);
    assert_eq!(totals(&status), [3000, 1000, 450, 3550, 0]);
    assert_eq!(status["reconciliation"], "reconciled");

    // Without the URL, every command says what is missing instead of opening SQLite.
    for args in [
        vec![
            "terminal", "load", "--data", data, "--card", card, "--amount", "1",
        ],
        vec!["terminal", "sync", "--data", data],
        vec!["center", "status", "--data", data],
        vec![
            "card",
            "issue",
            "--data",
            data,
            "--out",
            &format!("{card}.2"),
        ],
    ] {
        let output = valuecard(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("pass --database URL"), "{args:?}: {stderr}");
    }
    assert!(!Path::new(data)
        .join("center")
        .join("center.sqlite")
        .exists());
    // --center and --database name two different ways to the center: one at a time.
    let both = valuecard(&[
        "terminal",
        "sync",
        "--data",
        data,
        "--database",
        url,
        "--center",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));

    // The database must exist before `center init`: the message says so and nothing is made.
    let base = postgres_base_url();
    if !base.starts_with("postgres") {
        let missing = format!("{base} dbname=valuecard_no_such_database");
        let elsewhere = dir.path().join("elsewhere");
        let output = valuecard(&[
            "center",
            "init",
            "--data",
            elsewhere.to_str().unwrap(),
            "--database",
            &missing,
        ]);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("does not exist") && stderr.contains("createdb"),
            "{stderr}"
        );
        assert!(!elsewhere.exists());
    }
}
