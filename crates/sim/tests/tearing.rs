//! The tearing harness: for every command that changes a card, power is cut at write 1, 2,
//! 3, ... of that command (with the torn write left empty, half-written or whole), and after
//! power-up the card must hold either the whole old state or the whole new state. Then what
//! was left in doubt is settled and value must be conserved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_card::state::PersistentState;
use valuecard_core::messages::purse::CardState;
use valuecard_sim::{attacks, read_purse, World};

/// What must be either old or new: the life-cycle state, balance, counter, abnormal events.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    state: CardState,
    balance: u64,
    counter: u32,
    abnormal: usize,
}

fn summary(reader: &TestReader) -> Summary {
    let state = reader.card().unwrap().state();
    match state {
        PersistentState::Personalized(purse) => Summary {
            state: state.card_state(),
            balance: purse.balance.minor(),
            counter: purse.counter,
            abnormal: purse.abnormal_events.len(),
        },
        other => Summary {
            state: other.card_state(),
            balance: 0,
            counter: 0,
            abnormal: 0,
        },
    }
}

const TEARS: [(usize, usize); 3] = [(0, 1), (1, 2), (1, 1)];

/// Runs `act` once without a cut to learn the writes it makes and its outcome, then once per
/// write with power cut there. `allowed` lists every state the card may hold after power-up
/// (the state before, the state after, and states between two commits of one flow).
fn tear_every_write(
    seed: u64,
    setup: impl Fn(&mut World) -> (TestReader, valuecard_card::eeprom::MemoryEeprom),
    act: impl Fn(&mut World, &mut TestReader),
    allowed: impl Fn(&Summary, &Summary) -> Vec<Summary>,
    after_power_up: impl Fn(&mut World, &mut TestReader),
) -> u64 {
    let mut clean_world = world(seed, 2);
    let (mut clean, _) = setup(&mut clean_world);
    let before = summary(&clean);
    let writes_before = clean.card_mut().unwrap().eeprom_mut().writes();
    act(&mut clean_world, &mut clean);
    let writes = clean.card_mut().unwrap().eeprom_mut().writes() - writes_before;
    let after = summary(&clean);
    assert!(writes > 0, "the action made no write: nothing to tear");
    let acceptable = allowed(&before, &after);
    let mut cuts = 0;
    for cut in 1..=writes {
        for (numerator, denominator) in TEARS {
            let mut world = world(seed, 2);
            let (mut reader, memory) = setup(&mut world);
            assert_eq!(summary(&reader), before);
            arm_cut(&mut reader, cut, numerator, denominator);
            act(&mut world, &mut reader);
            assert!(
                !reader.card().unwrap().is_powered(),
                "cut at write {cut} was not reached"
            );
            power_up(&mut world, &mut reader, &memory);
            let state = summary(&reader);
            assert!(
                acceptable.contains(&state),
                "cut at write {cut} ({numerator}/{denominator}): card holds {state:?}, expected one of {acceptable:?}"
            );
            after_power_up(&mut world, &mut reader);
            cuts += 1;
        }
    }
    cuts
}

fn settle_and_check_conservation(world: &mut World, reader: &mut TestReader) {
    let status = read_purse(reader).unwrap();
    world.settle_card(reader, status.card_id).unwrap();
    let reconciliation = world.reconcile(&[status.balance]).unwrap();
    assert_eq!(reconciliation.loads_in_flight, 0, "{reconciliation:?}");
    assert_eq!(reconciliation.purchases_in_doubt, 0, "{reconciliation:?}");
    assert!(reconciliation.conserved, "{reconciliation:?}");
}

#[test]
fn issuance_survives_a_cut_at_every_write() {
    let cuts = tear_every_write(
        1,
        |world| blank_card(world, "issue"),
        |world, reader| {
            let _ = world.dispenser.issue_card(reader, &mut world.center);
        },
        |before, after| {
            let keys = Summary {
                state: CardState::KeysGenerated,
                ..before.clone()
            };
            vec![before.clone(), keys, after.clone()]
        },
        |world, reader| {
            // Issuance resumes from whatever state the card kept, and completes.
            if reader.card().unwrap().state().card_state() != CardState::Active {
                world
                    .dispenser
                    .issue_card(reader, &mut world.center)
                    .unwrap();
            }
            assert_eq!(summary(reader).state, CardState::Active);
        },
    );
    assert!(cuts >= 6);
}

#[test]
fn load_survives_a_cut_at_every_write() {
    let cuts = tear_every_write(
        2,
        |world| issued_card(world, "load", 1_000),
        |world, reader| {
            let _ = world.load(reader, amount(500));
        },
        |before, after| {
            assert_eq!(after.balance, 1_500);
            vec![before.clone(), after.clone()]
        },
        settle_and_check_conservation,
    );
    assert!(cuts >= 3);
}

#[test]
fn purchase_survives_a_cut_at_every_write() {
    tear_every_write(
        3,
        |world| issued_card(world, "purchase", 1_000),
        |world, reader| {
            let _ = world.terminals[0].purchase(reader, amount(250));
        },
        |before, after| {
            assert_eq!(after.balance, 750);
            vec![before.clone(), after.clone()]
        },
        |world, reader| {
            let balance = read_purse(reader).unwrap().balance.minor();
            settle_and_check_conservation(world, reader);
            // The terminal's record agrees with the card: committed exactly when debited.
            let totals =
                valuecard_terminal::store::TerminalStore::totals(world.terminals[0].store())
                    .unwrap();
            assert_eq!(totals.committed_minor, 1_000 - balance);
        },
    );
}

fn abnormal_record_allowed(before: &Summary, _after: &Summary) -> Vec<Summary> {
    let recorded = Summary {
        abnormal: before.abnormal + 1,
        ..before.clone()
    };
    let blocked = Summary {
        state: CardState::Blocked,
        ..recorded.clone()
    };
    vec![before.clone(), recorded, blocked]
}

#[test]
fn abnormal_event_records_survive_a_cut_at_every_write() {
    tear_every_write(
        4,
        |world| issued_card(world, "rogue", 1_000),
        |world, reader| {
            let _ = attacks::rogue_terminal_certificate(world, reader);
        },
        abnormal_record_allowed,
        settle_and_check_conservation,
    );
    tear_every_write(
        5,
        |world| issued_card(world, "forged credit", 1_000),
        |world, reader| {
            let _ = attacks::forged_load_authorization(world, reader);
        },
        abnormal_record_allowed,
        settle_and_check_conservation,
    );
}

#[test]
fn a_raised_balance_blocks_atomically_at_every_write() {
    tear_every_write(
        6,
        |world| issued_card(world, "raise", 1_000),
        |world, reader| {
            let _ = attacks::balance_raised_by_terminal(world, reader);
        },
        |before, after| {
            assert_eq!(after.state, CardState::Blocked);
            assert_eq!(after.balance, before.balance);
            vec![before.clone(), after.clone()]
        },
        |_, reader| {
            let status = read_purse(reader).unwrap();
            assert_eq!(status.balance.minor(), 1_000);
        },
    );
}
