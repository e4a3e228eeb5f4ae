//! `terminal release-transfer` (seed 000, the "source card and the center" half of the
//! recovery rule): a card made to reserve value toward a card ID that was never issued gets it
//! back from the center; a transfer toward a real card that is not listed is refused with
//! nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{run, run_json, valuecard, Site};
use valuecard_core::apdu::Command;
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::{CLA_PROPRIETARY, PURSE_AID};
use valuecard_core::messages::transfer::{ins, TransferOut};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

/// Drives the card image by hand, as a dishonest reader would: SELECT, then TRANSFER OUT
/// toward `destination`, which commits the reservation. Returns TRANSFER OUT's status word.
fn reserve_toward(card: &Path, destination: CardId, minor: u64) -> String {
    let select = Command::new(0x00, 0xA4, 0x04, 0x00)
        .with_data(PURSE_AID.to_vec())
        .with_le(256);
    let out = Command::new(CLA_PROPRIETARY, ins::TRANSFER_OUT, 0, 0)
        .with_data(
            TransferOut {
                challenge_terminal: [0x11; 16],
                destination,
                destination_counter: 0,
                challenge_destination: [0x22; 16],
                amount: Amount::new(minor).unwrap(),
                date: Date::from_ymd(2026, 11, 30).unwrap(),
            }
            .encode(),
        )
        .with_le(65_536);
    let answer = run_json(
        valuecard()
            .args(["card", "apdu", "--json", "--card"])
            .arg(card)
            .arg(hex::encode(select.encode()))
            .arg(hex::encode(out.encode())),
    );
    answer["exchanges"][1]["sw"].as_str().unwrap().to_owned()
}

fn release(site: &Site, card: &Path) -> common::Ran {
    run(site
        .terminal("release-transfer", &[])
        .arg("--card")
        .arg(card))
}

#[test]
fn a_reservation_toward_a_card_never_issued_is_released_by_the_center() {
    let site = Site::new();
    let (card, _) = site.issue("source", "20.00");
    assert_eq!(
        reserve_toward(&card, CardId([0xC0, 0, 0, 0, 0, 0, 0x7A, 0x7A]), 1_500),
        "9000"
    );
    // The reserved 15.00 cannot be spent.
    let refused = run(site
        .terminal("purchase", &["--amount", "10.00"])
        .arg("--card")
        .arg(&card));
    assert!(!refused.status.success(), "{}", refused.stdout);
    let released = release(&site, &card);
    assert!(released.status.success(), "{}", released.stderr);
    let answer: serde_json::Value = serde_json::from_str(&released.stdout).unwrap();
    assert_eq!(answer["released"]["amount"], 1_500, "{answer}");
    // Spendable again, and a second release finds nothing pending.
    site.on_card("purchase", &card, &["--amount", "20.00"]);
    assert_eq!(site.balance(&card), 0);
    let again: serde_json::Value = serde_json::from_str(&release(&site, &card).stdout).unwrap();
    assert!(again["released"].is_null(), "{again}");
}

#[test]
fn a_reservation_toward_a_real_card_is_not_released() {
    let site = Site::new();
    let (card, _) = site.issue("source", "20.00");
    let (_, destination) = site.issue("destination", "1.00");
    let destination: CardId = destination.parse().unwrap();
    assert_eq!(reserve_toward(&card, destination, 500), "9000");
    let refused = release(&site, &card);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("destination"), "{}", refused.stderr);
    // Still reserved: 15.00 spendable of 20.00.
    assert_eq!(site.balance(&card), 2_000);
    let over = run(site
        .terminal("purchase", &["--amount", "15.01"])
        .arg("--card")
        .arg(&card));
    assert!(!over.status.success(), "{}", over.stdout);
}
