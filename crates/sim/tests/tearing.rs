//! The tearing harness: for every command that changes a card, power is cut at write 1, 2,
//! 3, ... of that command (with the torn write left empty, half-written or whole), and after
//! power-up the card must hold either the whole old state or the whole new state. Then what
//! was left in doubt is settled and value must be conserved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::state::PersistentState;
use valuecard_core::messages::credit::{Password, SettingNumber};
use valuecard_core::messages::purse::CardState;
use valuecard_sim::{attacks, read_purse, World};
use valuecard_terminal::store::{ServiceStatus, TerminalStore};

/// What must be either old or new: the life-cycle state, balance, counter, abnormal events,
/// and the credit function (tries left, password digest, services recorded, log length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    state: CardState,
    balance: u64,
    counter: u32,
    abnormal: usize,
    credit: Option<CreditSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CreditSummary {
    tries: u8,
    password: Option<[u8; 32]>,
    services: u32,
    log: usize,
}

fn summary(reader: &TestReader) -> Summary {
    let state = reader.card().unwrap().state();
    match state {
        PersistentState::Personalized(purse) => Summary {
            state: state.card_state(),
            balance: purse.balance.minor(),
            counter: purse.counter,
            abnormal: purse.abnormal_events.len(),
            credit: purse.credit.as_ref().map(|credit| CreditSummary {
                tries: credit.tries_left,
                password: credit.password_digest,
                services: credit.services_recorded,
                log: credit.service_log.len(),
            }),
        },
        other => Summary {
            state: other.card_state(),
            balance: 0,
            counter: 0,
            abnormal: 0,
            credit: None,
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

/// An issued card whose credit function is enabled and whose holder registered `1234` at
/// terminal 0.
fn credit_card(world: &mut World, name: &str) -> (TestReader, MemoryEeprom) {
    let (mut reader, memory) = issued_card(world, name, 1_000);
    let setting = world.enable_credit(&mut reader, None).unwrap();
    let session = world.terminals[0].open_credit(&mut reader).unwrap();
    world.terminals[0]
        .register_password(&mut reader, &session, &setting, &password("1234"))
        .unwrap();
    (reader, memory)
}

fn password(text: &str) -> Password {
    Password::parse(text).unwrap()
}

fn with_credit(summary: &Summary, change: impl FnOnce(&mut CreditSummary)) -> Summary {
    let mut next = summary.clone();
    change(next.credit.as_mut().unwrap());
    next
}

/// The states a presentation may leave: untouched, or its try spent (the decrement is
/// durable, the restore or the rest is not).
fn spent_a_try(before: &Summary) -> Summary {
    with_credit(before, |credit| credit.tries -= 1)
}

#[test]
fn credit_enablement_survives_a_cut_at_every_write() {
    tear_every_write(
        7,
        |world| issued_card(world, "enable", 1_000),
        |world, reader| {
            let _ = world
                .dispenser
                .enable_credit(reader, &mut world.center, None);
        },
        |before, after| {
            assert!(before.credit.is_none());
            assert_eq!(after.credit.as_ref().unwrap().tries, 3);
            vec![before.clone(), after.clone()]
        },
        |world, reader| {
            // The dispenser asks again: the center answers with the same enablement, which the
            // card takes whether or not it had committed, and the one setting number letter
            // registers a password.
            let enabled = world
                .dispenser
                .enable_credit(reader, &mut world.center, None)
                .unwrap();
            let setting = world.center.take_setting_number(&enabled.card_id).unwrap();
            let session = world.terminals[0].open_credit(reader).unwrap();
            world.terminals[0]
                .register_password(reader, &session, &setting, &password("1234"))
                .unwrap();
        },
    );
}

#[test]
fn password_registration_survives_a_cut_at_every_write() {
    // Three commits: the decrement, the restore, the password.
    tear_every_write(
        8,
        |world| {
            let (mut reader, memory) = issued_card(world, "register", 1_000);
            world
                .dispenser
                .enable_credit(&mut reader, &mut world.center, None)
                .unwrap();
            (reader, memory)
        },
        |world, reader| {
            let card_id = read_purse(reader).unwrap().card_id;
            let setting = world.center.take_setting_number(&card_id).unwrap();
            let Ok(session) = world.terminals[0].open_credit(reader) else {
                return;
            };
            let _ =
                world.terminals[0].register_password(reader, &session, &setting, &password("1234"));
        },
        |before, after| {
            assert!(after.credit.as_ref().unwrap().password.is_some());
            vec![before.clone(), spent_a_try(before), after.clone()]
        },
        |world, reader| {
            // Whatever the card kept, the holder can still use or register the password.
            let outcome = world.terminals[0].credit_service(reader, &password("1234"), amount(10));
            match outcome {
                Ok(_) => {}
                Err(valuecard_terminal::TerminalError::NoPasswordRegistered) => {
                    assert!(summary(reader).credit.unwrap().tries >= 2);
                }
                Err(other) => panic!("{other}"),
            }
        },
    );
}

#[test]
fn a_wrong_setting_number_survives_a_cut_at_every_write() {
    tear_every_write(
        9,
        |world| {
            let (mut reader, memory) = issued_card(world, "wrong setting", 1_000);
            world.enable_credit(&mut reader, None).unwrap();
            (reader, memory)
        },
        |world, reader| {
            let Ok(session) = world.terminals[0].open_credit(reader) else {
                return;
            };
            let wrong = SettingNumber::parse("99999999").unwrap();
            let _ =
                world.terminals[0].register_password(reader, &session, &wrong, &password("1234"));
        },
        |before, after| {
            assert_eq!(after, &spent_a_try(before));
            vec![before.clone(), after.clone()]
        },
        |_, _| {},
    );
}

#[test]
fn a_credit_service_survives_a_cut_at_every_write() {
    // Three commits: the decrement, the restore, the service record.
    tear_every_write(
        10,
        |world| credit_card(world, "service"),
        |world, reader| {
            let _ = world.terminals[0].credit_service(reader, &password("1234"), amount(640));
        },
        |before, after| {
            assert_eq!(after.credit.as_ref().unwrap().services, 1);
            vec![before.clone(), spent_a_try(before), after.clone()]
        },
        |world, reader| {
            // Presented again, the terminal settles what it holds in doubt from the card's
            // signed log: it ends with a signed record exactly when the card signed one, and
            // the center charges exactly that.
            world.terminals[0].open_credit(reader).unwrap();
            let recorded = summary(reader).credit.unwrap().services;
            let services = world.terminals[0].store().services().unwrap();
            assert!(services.iter().all(|s| s.status != ServiceStatus::InDoubt));
            let signed = services
                .iter()
                .filter(|s| s.status == ServiceStatus::Signed)
                .count() as u32;
            assert_eq!(signed, recorded);
            assert_eq!(world.upload_service_records().unwrap().stored, recorded);
            let charged = world.center.statement("2026-06").unwrap().total_minor;
            assert_eq!(charged, 640 * u64::from(recorded));
        },
    );
}

#[test]
fn a_wrong_password_survives_a_cut_at_every_write() {
    tear_every_write(
        11,
        |world| credit_card(world, "wrong password"),
        |world, reader| {
            let _ = world.terminals[0].credit_service(reader, &password("9999"), amount(10));
        },
        |before, after| {
            assert_eq!(after, &spent_a_try(before));
            vec![before.clone(), after.clone()]
        },
        |world, reader| {
            world.terminals[0]
                .credit_service(reader, &password("1234"), amount(10))
                .unwrap();
        },
    );
}

#[test]
fn a_password_change_survives_a_cut_at_every_write() {
    tear_every_write(
        12,
        |world| credit_card(world, "change"),
        |world, reader| {
            let Ok(session) = world.terminals[0].open_credit(reader) else {
                return;
            };
            let _ = world.terminals[0].change_password(
                reader,
                &session,
                &password("1234"),
                &password("98765"),
            );
        },
        |before, after| {
            assert_ne!(
                before.credit.as_ref().unwrap().password,
                after.credit.as_ref().unwrap().password
            );
            vec![before.clone(), spent_a_try(before), after.clone()]
        },
        |world, reader| {
            // Exactly one of the two passwords is the card's.
            let new = world.terminals[0].credit_service(reader, &password("98765"), amount(10));
            if new.is_err() {
                world.terminals[0]
                    .credit_service(reader, &password("1234"), amount(10))
                    .unwrap();
            }
        },
    );
}
