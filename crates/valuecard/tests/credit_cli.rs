//! Credit mode from the command line: issuance with a setting number, password registration,
//! services at two terminals, uploads, and the month's statement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{json_args as json, valuecard_args as valuecard};

#[test]
fn credit_from_issuance_to_the_monthly_statement() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let card = dir.path().join("card.img");
    let (data, card) = (data.to_str().unwrap(), card.to_str().unwrap());
    json(&["center", "init", "--data", data, "--terminals", "2"]);
    let issued = json(&[
        "card", "issue", "--data", data, "--out", card, "--value", "5", "--credit",
    ]);
    let setting_number = issued["credit"]["setting_number"].as_str().unwrap();
    assert_eq!(setting_number.len(), 8);
    let registered = json(&[
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
    assert_eq!(registered["password"], "registered");

    let wrong = valuecard(&[
        "terminal",
        "credit-service",
        "--data",
        data,
        "--card",
        card,
        "--password",
        "1111",
        "--amount",
        "1",
    ]);
    assert!(!wrong.status.success());
    let message = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        message.contains("wrong password: 2 tries left"),
        "{message}"
    );

    let first = json(&[
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
    assert_eq!(first["amount"], 320);
    let second = json(&[
        "terminal",
        "credit-service",
        "--data",
        data,
        "--terminal",
        "terminal-2",
        "--card",
        card,
        "--password",
        "2468",
        "--amount",
        "1.05",
    ]);
    assert_eq!(second["service_number"], 2);
    for terminal in ["terminal-1", "terminal-2"] {
        let upload = json(&[
            "terminal",
            "credit-upload",
            "--data",
            data,
            "--terminal",
            terminal,
        ]);
        assert_eq!(upload["stored"], 1, "{upload}");
    }
    let month = &first["date"].as_str().unwrap()[..7];
    let statement = json(&["center", "statements", "--data", data, "--month", month]);
    assert_eq!(statement["total"], 425);
    let cards = statement["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["card"], issued["card"]);
    assert_eq!(cards[0]["records"].as_array().unwrap().len(), 2);
    let text = valuecard(&["center", "statements", "--data", data, "--month", month]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("4.25"));
    let bad = valuecard(&["center", "statements", "--data", data, "--month", "June"]);
    assert!(!bad.status.success());
}
