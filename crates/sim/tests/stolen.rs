//! Figs. 10-12: a stolen terminal's one-way time-stamp chain. The SAM advances it on its own
//! clock, so a thief who never advances or reports anything still writes later stamps; cards
//! it wrote before the report are accepted everywhere, cards it wrote after are refused by
//! terminals and by the center's ingestion. The center accepts only stamp reports it can
//! verify against the chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_center::stamps::STAMP_TOLERANCE_DAYS;
use valuecard_core::crypto::Signature;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::purse::TerminalStamp;
use valuecard_core::time::{Date, FixedClock};
use valuecard_sam::{PurchaseOrder, Sam, SamError};
use valuecard_sim::read_purse;
use valuecard_terminal::TerminalError;

#[test]
fn a_thief_who_never_advances_the_stamp_is_still_refused_after_the_theft() {
    let mut world = world(31, 3);
    let (mut before_theft, _) = issued_card(&mut world, "before", 5_000);
    let (mut after_theft, _) = issued_card(&mut world, "after", 5_000);
    let (mut untouched, _) = issued_card(&mut world, "untouched", 5_000);
    let stolen_id = world.terminals[1].device_id();

    // Day 1 after installation: the operator's routine reports the stamp, and the terminal
    // sells honestly.
    world.pass_days(1);
    assert_eq!(
        world.terminals[1].advance_stamp(&mut world.center).unwrap(),
        1
    );
    world.terminals[1]
        .purchase(&mut before_theft, amount(100))
        .unwrap();

    // The terminal is stolen and reported: the center lists (IDT, TS0, t = 1).
    assert_eq!(world.center.report_stolen_terminal(stolen_id).unwrap(), 1);

    // The thief never touches the stamp. A day passes, and the SAM's chain moves by itself.
    world.pass_days(1);
    world.terminals[1]
        .purchase(&mut after_theft, amount(100))
        .unwrap();
    assert_eq!(world.terminals[1].sam_mut().stamp().unwrap().count, 2);

    // Terminal 2 has not learnt the list yet and sells from the thief's card.
    world.terminals[2]
        .purchase(&mut after_theft, amount(30))
        .unwrap();

    // An honest terminal that learnt the list still sells to cards the thief never wrote.
    world.terminals[0].update_lists(&mut world.center).unwrap();
    world.terminals[0]
        .purchase(&mut before_theft, amount(50))
        .unwrap();
    world.terminals[0]
        .purchase(&mut untouched, amount(50))
        .unwrap();

    // The center refuses, in terminal 2's upload, the item spent from the state the thief
    // wrote after the listing, and keeps the rest.
    let receipt = world.terminals[2].upload_usage(&mut world.center).unwrap();
    assert_eq!(receipt.stored, 0, "{receipt:?}");
    assert_eq!(receipt.refused.len(), 1, "{receipt:?}");
    assert!(
        receipt.refused[0]
            .1
            .contains("after it was listed at stamp 1"),
        "{receipt:?}"
    );

    // The stolen terminal can no longer act at the center.
    assert!(world.terminals[1].update_lists(&mut world.center).is_err());
    assert!(world.terminals[1].upload_usage(&mut world.center).is_err());
}

#[test]
fn an_honest_terminal_refuses_what_the_thief_wrote_and_accepts_what_came_before() {
    let mut world = world(35, 2);
    let (mut before_theft, _) = issued_card(&mut world, "before", 5_000);
    let (mut after_theft, _) = issued_card(&mut world, "after", 5_000);
    let stolen_id = world.terminals[1].device_id();
    world.terminals[1].advance_stamp(&mut world.center).unwrap();
    world.terminals[1]
        .purchase(&mut before_theft, amount(100))
        .unwrap();
    assert_eq!(world.center.report_stolen_terminal(stolen_id).unwrap(), 0);
    world.pass_days(3);
    world.terminals[1]
        .purchase(&mut after_theft, amount(100))
        .unwrap();

    world.terminals[0].update_lists(&mut world.center).unwrap();
    world.terminals[0]
        .purchase(&mut before_theft, amount(50))
        .unwrap();
    let refused = world.terminals[0].purchase(&mut after_theft, amount(50));
    assert!(
        matches!(
            refused,
            Err(TerminalError::WrittenByStolenTerminal {
                stamp_count: 3,
                listed_count: 0,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        read_purse(&mut after_theft).unwrap().balance.minor(),
        4_900,
        "nothing was debited"
    );
}

#[test]
fn the_stolen_terminal_scenario_holds_without_helping_the_thief() {
    let mut world = world(36, 2);
    let (mut before, _) = issued_card(&mut world, "before", 5_000);
    let (mut after, _) = issued_card(&mut world, "after", 5_000);
    let (outcome, refusals) =
        valuecard_sim::scenarios::stolen_terminal(&mut world, 1, &mut before, &mut after).unwrap();
    assert!(outcome.held, "{outcome:?}");
    assert_eq!(refusals, 1);
}

#[test]
fn the_center_accepts_only_stamps_it_can_verify_against_the_chain() {
    let mut world = world(32, 2);
    let terminal = world.terminals[0].device_id();
    world.pass_days(3);
    let stamp = world.terminals[0].sam_mut().stamp().unwrap();
    assert_eq!(stamp.count, 3);
    assert_eq!(world.center.record_stamp(terminal, &stamp).unwrap(), 3);

    // The largest count there is: refused, and nothing changes.
    let huge = TerminalStamp {
        count: u32::MAX,
        signature: stamp.signature,
    };
    assert!(matches!(
        world.center.record_stamp(terminal, &huge),
        Err(CenterError::BadStamp(_))
    ));
    // A count ahead of the calendar (three days since installation, plus the tolerance).
    let ahead = TerminalStamp {
        count: 3 + STAMP_TOLERANCE_DAYS + 1,
        signature: stamp.signature,
    };
    assert!(matches!(
        world.center.record_stamp(terminal, &ahead),
        Err(CenterError::BadStamp(_))
    ));
    // A possible count with a signature that is not over TS_t: refused.
    let forged = TerminalStamp {
        count: 4,
        signature: stamp.signature,
    };
    assert!(matches!(
        world.center.record_stamp(terminal, &forged),
        Err(CenterError::BadStamp(_))
    ));
    let zeros = TerminalStamp {
        count: 3,
        signature: Signature([0; 64]),
    };
    assert!(matches!(
        world.center.record_stamp(terminal, &zeros),
        Err(CenterError::BadStamp(_))
    ));
    // Another terminal's genuine stamp is not this terminal's.
    world.pass_days(1);
    let other = world.terminals[1].sam_mut().stamp().unwrap();
    assert!(matches!(
        world.center.record_stamp(terminal, &other),
        Err(CenterError::BadStamp(_))
    ));
    // An older genuine stamp is accepted but does not lower the count.
    assert_eq!(world.center.record_stamp(terminal, &stamp).unwrap(), 3);
    let later = world.terminals[0].sam_mut().stamp().unwrap();
    assert_eq!(world.center.record_stamp(terminal, &later).unwrap(), 4);
    // An unknown device is refused.
    assert!(world
        .center
        .record_stamp(valuecard_core::ids::DeviceId([9; 8]), &later)
        .is_err());
    // None of the refused reports moved the count the listing would use.
    assert_eq!(world.center.report_stolen_terminal(terminal).unwrap(), 4);
}

#[test]
fn the_sam_stamp_never_goes_back_when_its_clock_does() {
    let mut world = world(33, 1);
    let installed = world.today();
    world.pass_days(5);
    let sam = world.terminals[0].sam_mut();
    let five = sam.stamp().unwrap();
    assert_eq!(five.count, 5);
    // The clock is set back to the installation day, and before it.
    sam.set_clock(Box::new(FixedClock(installed)));
    assert_eq!(sam.stamp().unwrap(), five);
    sam.set_clock(Box::new(FixedClock(Date(installed.0 - 30))));
    assert_eq!(sam.stamp().unwrap(), five);
    // A purchase it signs now still carries stamp 5.
    let signed = sam
        .sign_purchase(&PurchaseOrder {
            card_id: valuecard_core::ids::CardId([0xC0, 0, 0, 0, 0, 0, 0, 1]),
            challenge_terminal: [1; 16],
            challenge_card: [2; 16],
            counter: 1,
            balance_before: amount(1_000),
            amount_max: amount(100),
            amount: amount(100),
            date: installed,
            sequence_floor: 1,
        })
        .unwrap();
    assert_eq!(signed.commit.stamp.count, 5);
    // Forward again: one step per day, from where it was.
    sam.set_clock(Box::new(FixedClock(Date(installed.0 + 7))));
    assert_eq!(sam.stamp().unwrap().count, 7);
}

#[test]
fn the_sam_signs_only_purchases_within_the_cards_offer_and_never_reuses_a_sequence() {
    let mut world = world(34, 1);
    let today = world.today();
    let sam = world.terminals[0].sam_mut();
    let order = PurchaseOrder {
        card_id: valuecard_core::ids::CardId([0xC0, 0, 0, 0, 0, 0, 0, 1]),
        challenge_terminal: [1; 16],
        challenge_card: [2; 16],
        counter: 1,
        balance_before: amount(1_000),
        amount_max: amount(100),
        amount: amount(100),
        date: today,
        sequence_floor: 1,
    };
    let over_offer = PurchaseOrder {
        amount: amount(101),
        ..order.clone()
    };
    assert!(matches!(
        sam.sign_purchase(&over_offer),
        Err(SamError::PurchaseRefused(_))
    ));
    let over_balance = PurchaseOrder {
        balance_before: amount(50),
        ..order.clone()
    };
    assert!(matches!(
        sam.sign_purchase(&over_balance),
        Err(SamError::PurchaseRefused(_))
    ));
    let zero = PurchaseOrder {
        amount: amount(0),
        ..order.clone()
    };
    assert!(matches!(
        sam.sign_purchase(&zero),
        Err(SamError::PurchaseRefused(_))
    ));
    let first = sam.sign_purchase(&order).unwrap();
    assert_eq!(first.commit.balance_after, amount(900));
    assert_eq!(first.commit.terminal_id, sam.device_id());
    // The same floor again: the SAM moves past the sequence it already signed under.
    let second = sam.sign_purchase(&order).unwrap();
    assert!(second.commit.terminal_sequence > first.commit.terminal_sequence);
    // A higher floor from the store is respected.
    let third = sam
        .sign_purchase(&PurchaseOrder {
            sequence_floor: 50,
            ..order
        })
        .unwrap();
    assert_eq!(third.commit.terminal_sequence, 50);
    sam.signing_key()
        .verify(&third.commit.signed_message(), &third.signature)
        .unwrap();
}
