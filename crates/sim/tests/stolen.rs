//! Figs. 10-12: a stolen terminal's one-way time-stamp chain. Cards it wrote before the
//! report are accepted everywhere; cards it wrote after are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_sim::read_purse;
use valuecard_terminal::TerminalError;

#[test]
fn cards_written_by_a_stolen_terminal_after_the_theft_are_refused() {
    let mut world = world(31, 2);
    let (mut before_theft, _) = issued_card(&mut world, "before", 5_000);
    let (mut after_theft, _) = issued_card(&mut world, "after", 5_000);
    let (mut untouched, _) = issued_card(&mut world, "untouched", 5_000);
    let stolen_id = world.terminals[1].device_id();

    // Day 1: the terminal advances its stamp, tells the center, and sells honestly.
    assert_eq!(
        world.terminals[1].advance_stamp(&mut world.center).unwrap(),
        1
    );
    world.terminals[1]
        .purchase(&mut before_theft, amount(100))
        .unwrap();

    // The terminal is stolen and reported: the center lists (IDT, TS0, t = 1).
    assert_eq!(world.center.report_stolen_terminal(stolen_id).unwrap(), 1);

    // The thief's terminal keeps ticking (its stamp chain only moves forward) and writes a card.
    let thief = &mut world.terminals[1];
    let count = valuecard_sam::Sam::advance_stamp(thief.sam_mut())
        .unwrap()
        .count;
    assert_eq!(count, 2);
    thief.purchase(&mut after_theft, amount(100)).unwrap();

    // An honest terminal learns the list and checks each card's last writer.
    world.terminals[0].update_lists(&mut world.center).unwrap();
    world.terminals[0]
        .purchase(&mut before_theft, amount(50))
        .unwrap();
    let refused = world.terminals[0].purchase(&mut after_theft, amount(50));
    assert!(
        matches!(
            refused,
            Err(TerminalError::WrittenByStolenTerminal {
                stamp_count: 2,
                listed_count: 1,
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
    world.terminals[0]
        .purchase(&mut untouched, amount(50))
        .unwrap();

    // The stolen terminal can no longer act at the center.
    assert!(world.terminals[1].update_lists(&mut world.center).is_err());
    assert!(world.terminals[1].upload_usage(&mut world.center).is_err());
}

#[test]
fn stamp_counts_at_the_center_only_move_forward() {
    let mut world = world(32, 1);
    let terminal = world.terminals[0].device_id();
    assert_eq!(world.center.record_stamp_count(terminal, 3).unwrap(), 3);
    assert_eq!(world.center.record_stamp_count(terminal, 2).unwrap(), 3);
    assert!(world
        .center
        .record_stamp_count(valuecard_core::ids::DeviceId([9; 8]), 1)
        .is_err());
}
