//! Every refusal the demo shows, each as its own test, plus the card-level refusals of bad
//! input: each gets its precise status word and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::messages::purse::{ins, PURSE_AID};
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;
use valuecard_sim::attacks::{self, AttackOutcome};
use valuecard_sim::{read_purse, World};

fn run(
    attack: fn(&mut World, &mut TestReader) -> Result<AttackOutcome, valuecard_sim::WorldError>,
) -> AttackOutcome {
    let mut world = world(11, 2);
    let (mut reader, _) = issued_card(&mut world, "victim", 5_000);
    world.terminals[0]
        .purchase(&mut reader, amount(100))
        .unwrap();
    let outcome = attack(&mut world, &mut reader).unwrap();
    assert!(outcome.refused, "{}: {}", outcome.name, outcome.detail);
    outcome
}

#[test]
fn rogue_terminal_certificate_is_refused_and_recorded() {
    let mut world = world(12, 2);
    let (mut reader, _) = issued_card(&mut world, "victim", 5_000);
    let outcome = attacks::rogue_terminal_certificate(&mut world, &mut reader).unwrap();
    assert!(outcome.refused, "{}", outcome.detail);
    assert_eq!(read_purse(&mut reader).unwrap().abnormal_events, 1);
}

#[test]
fn forged_card_signature_is_refused() {
    run(attacks::forged_card_signature);
}

#[test]
fn replayed_purchase_commit_is_refused() {
    run(attacks::replayed_purchase_commit);
}

#[test]
fn raised_balance_blocks_the_card_for_good() {
    let mut world = world(13, 2);
    let (mut reader, _) = issued_card(&mut world, "victim", 5_000);
    let outcome = attacks::balance_raised_by_terminal(&mut world, &mut reader).unwrap();
    assert!(outcome.refused, "{}", outcome.detail);
    // Blocked: no further purchase or load, but the holder can still read the purse.
    let purchase = world.terminals[0].purchase(&mut reader, amount(1));
    assert!(
        matches!(
            purchase,
            Err(valuecard_terminal::TerminalError::CardBlocked)
        ),
        "{purchase:?}"
    );
    assert!(world.load(&mut reader, amount(1)).is_err());
    let status = read_purse(&mut reader).unwrap();
    assert_eq!(status.balance.minor(), 5_000);
    assert_eq!(
        status.state,
        valuecard_core::messages::purse::CardState::Blocked
    );
}

#[test]
fn purchase_above_balance_is_refused() {
    run(attacks::purchase_above_balance);
}

#[test]
fn expired_terminal_certificate_is_refused() {
    run(attacks::expired_terminal_certificate);
}

#[test]
fn load_authorization_signed_by_a_stranger_is_refused() {
    run(attacks::forged_load_authorization);
}

#[test]
fn expired_card_certificate_is_refused_by_terminals() {
    let mut world = world(14, 1);
    let (mut reader, _) = issued_card(&mut world, "old card", 1_000);
    let far_future = valuecard_core::time::Date(today().0 + 6 * 365);
    let card = valuecard_terminal::payment::verify_select(
        &reader
            .exchange(&valuecard_terminal::card_commands::select())
            .unwrap()
            .data,
        &world.center.anchor(),
        far_future,
    );
    assert!(
        matches!(
            card,
            Err(valuecard_terminal::TerminalError::CardCertificate(
                valuecard_core::cert::CertError::Expired { .. }
            ))
        ),
        "{card:?}"
    );
}

fn exchange(reader: &mut TestReader, bytes: &[u8]) -> Response {
    Response::parse(&reader.transmit_raw(bytes).unwrap()).unwrap()
}

fn select_bytes() -> Vec<u8> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, PURSE_AID.len() as u8];
    apdu.extend_from_slice(&PURSE_AID);
    apdu.push(0x00);
    apdu
}

#[test]
fn malformed_apdus_get_precise_status_words_and_change_nothing() {
    let mut world = world(15, 1);
    let (mut reader, memory) = issued_card(&mut world, "card", 1_000);
    let image_before = memory.snapshot();
    let card = reader.remove().unwrap();
    reader.insert(card);
    // Before SELECT, purse commands are refused.
    assert_eq!(
        exchange(&mut reader, &[0x80, ins::READ_PURSE, 0, 0, 0]).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(
        exchange(&mut reader, &select_bytes()).sw,
        StatusWord::SUCCESS
    );
    let cases: &[(&[u8], StatusWord)] = &[
        (&[0x80], StatusWord::WRONG_LENGTH),
        (&[0x80, 0x30, 0x00], StatusWord::WRONG_LENGTH),
        (
            &[0x80, 0x30, 0x00, 0x00, 0x05, 0x01],
            StatusWord::WRONG_LENGTH,
        ),
        (
            &[0x80, 0xFF, 0x00, 0x00, 0x00],
            StatusWord::INS_NOT_SUPPORTED,
        ),
        (
            &[0x00, 0x30, 0x00, 0x00, 0x00],
            StatusWord::INS_NOT_SUPPORTED,
        ),
        (
            &[0xA0, 0x30, 0x00, 0x00, 0x00],
            StatusWord::CLA_NOT_SUPPORTED,
        ),
        (&[0x80, 0x30, 0x01, 0x00, 0x00], StatusWord::INCORRECT_P1_P2),
        (
            &[
                0x80,
                ins::INITIALIZE_PURCHASE,
                0x00,
                0x00,
                0x02,
                0x7F,
                0x21,
                0x00,
            ],
            StatusWord::WRONG_DATA,
        ),
        (
            &[0x80, ins::DEBIT, 0x00, 0x00, 0x02, 0x82, 0x00, 0x00],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            &[0x80, ins::CREDIT, 0x00, 0x00, 0x02, 0x82, 0x00, 0x00],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            &[
                0x80,
                ins::GET_LAST_TRANSACTION,
                0x00,
                0x00,
                0x03,
                0x80,
                0x01,
                0x00,
                0x00,
            ],
            StatusWord::WRONG_DATA,
        ),
        (
            &[0x80, ins::PERSONALIZE, 0x00, 0x00, 0x00],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            &[0x80, ins::GENERATE_KEY_PAIR, 0x00, 0x00, 0x00],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            &[0x00, ins::GET_CHALLENGE, 0x00, 0x00, 0x10],
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            &[0x00, 0xA4, 0x04, 0x00, 0x02, 0xF0, 0x00, 0x00],
            StatusWord::FILE_NOT_FOUND,
        ),
    ];
    for (bytes, expected) in cases {
        let response = exchange(&mut reader, bytes);
        assert_eq!(response.sw, *expected, "for {}", hex::encode_upper(bytes));
        assert!(response.data.is_empty(), "error responses carry no data");
        exchange(&mut reader, &select_bytes());
    }
    // Amount bounds inside well-formed TLV.
    let too_big = valuecard_core::limits::BALANCE_MAX_MINOR + 1;
    let mut load = vec![0x80, 0x10];
    load.extend_from_slice(&[0xAA; 16]);
    load.extend_from_slice(&[0x82, 0x08]);
    load.extend_from_slice(&too_big.to_be_bytes());
    load.extend_from_slice(&[0x87, 0x08]);
    load.extend_from_slice(&[1; 8]);
    let command = Command::new(0x80, ins::INITIALIZE_LOAD, 0, 0)
        .with_data(load)
        .with_le(256);
    assert_eq!(
        exchange(&mut reader, &command.encode()).sw,
        StatusWord::WRONG_DATA
    );
    assert_eq!(
        memory.snapshot(),
        image_before,
        "bad input changed the card image"
    );
}

#[test]
fn purchase_takes_two_command_pairs_after_select() {
    struct Counting<'a>(&'a mut TestReader, Vec<u8>);
    impl CardReader for Counting<'_> {
        fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, valuecard_reader::ReaderError> {
            self.1.push(apdu[1]);
            self.0.transmit_raw(apdu)
        }
        fn name(&self) -> String {
            self.0.name()
        }
    }
    let mut world = world(16, 1);
    let (mut reader, _) = issued_card(&mut world, "card", 1_000);
    let mut counting = Counting(&mut reader, Vec::new());
    world.terminals[0]
        .purchase(&mut counting, amount(10))
        .unwrap();
    assert_eq!(
        counting.1,
        vec![ins::SELECT, ins::INITIALIZE_PURCHASE, ins::DEBIT]
    );
}

#[test]
fn a_lost_debit_answer_is_settled_from_the_card() {
    let mut world = world(17, 1);
    let (mut reader, memory) = issued_card(&mut world, "card", 1_000);
    // Learn how many writes a DEBIT commit makes, then cut power on the last one (the erase
    // of the old slot, after the new state is durable): the card committed, the terminal
    // never heard back.
    let writes = {
        let start = reader.card_mut().unwrap().eeprom_mut().writes();
        world.terminals[0].purchase(&mut reader, amount(1)).unwrap();
        reader.card_mut().unwrap().eeprom_mut().writes() - start
    };
    let before = read_purse(&mut reader).unwrap();
    arm_cut(&mut reader, writes, 1, 1);
    let outcome = world.terminals[0].purchase(&mut reader, amount(200));
    assert!(
        matches!(
            outcome,
            Err(valuecard_terminal::TerminalError::PurchaseInDoubt { .. })
        ),
        "{outcome:?}"
    );
    power_up(&mut world, &mut reader, &memory);
    let after = read_purse(&mut reader).unwrap();
    assert_eq!(
        after.balance.minor(),
        before.balance.minor() - 200,
        "the card committed before the cut"
    );
    let card = world.terminals[0].select_card(&mut reader).unwrap();
    let settled = world.terminals[0]
        .settle_in_doubt(&mut reader, &card)
        .unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(
        settled[0].status,
        valuecard_terminal::store::PurchaseStatus::Committed
    );
    let reconciliation = world.reconcile(&[after.balance]).unwrap();
    assert!(reconciliation.conserved, "{reconciliation:?}");
}

#[test]
fn every_insider_attack_is_refused_and_seen() {
    let outcomes = valuecard_sim::insider_attacks::run_all(today()).unwrap();
    assert_eq!(outcomes.len(), 6);
    for outcome in outcomes {
        assert!(outcome.refused, "{}: {}", outcome.name, outcome.detail);
    }
}
