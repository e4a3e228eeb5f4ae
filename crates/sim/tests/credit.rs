//! Credit mode (seed 003, Figs. 13-17) through the whole system: enabling at issuance,
//! password registration with the setting number, the shared limit of three wrong entries,
//! password change, services signed by the card and charged by the center month by month,
//! and the expiry date against the terminal's calendar.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Says that a test was skipped, on the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and CI must see every skip.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use common::*;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::state::PersistentState;
use valuecard_card::Card;
use valuecard_core::apdu::Response;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::ids::CardId;
use valuecard_core::messages::credit::{
    CreditSessionOffer, CreditSessionRequest, Password, RecordService, ServiceRecord,
    ServiceUpload, SetPassword, SettingNumber, VerifyPassword, VerifySettingNumber,
};
use valuecard_core::messages::purse::ins;
use valuecard_core::time::{Date, FixedClock};
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;
use valuecard_sam::Sam;
use valuecard_sim::{read_purse, World};
use valuecard_terminal::card_commands::{proprietary, select};
use valuecard_terminal::store::{ServiceStatus, TerminalStore};
use valuecard_terminal::TerminalError;

fn password(text: &str) -> Password {
    Password::parse(text).unwrap()
}

/// An issued card with `initial` value and its credit function enabled until `expiry`.
fn credit_card(
    world: &mut World,
    name: &str,
    expiry: Option<Date>,
) -> (TestReader, MemoryEeprom, CardId, SettingNumber) {
    let (mut reader, memory) = issued_card(world, name, 1_000);
    let card_id = read_purse(&mut reader).unwrap().card_id;
    let setting = world.enable_credit(&mut reader, expiry).unwrap();
    (reader, memory, card_id, setting)
}

/// Fig. 15 at terminal 0 with the right setting number.
fn register(world: &mut World, reader: &mut TestReader, setting: &SettingNumber, new: &str) {
    let terminal = &mut world.terminals[0];
    let session = terminal.open_credit(reader).unwrap();
    terminal
        .register_password(reader, &session, setting, &password(new))
        .unwrap();
}

fn tries_left(reader: &TestReader) -> u8 {
    match reader.card().unwrap().state() {
        PersistentState::Personalized(purse) => purse.credit.as_ref().unwrap().tries_left,
        _ => panic!("not personalized"),
    }
}

fn send(reader: &mut TestReader, instruction: u8, data: Vec<u8>) -> Response {
    reader.exchange(&proprietary(instruction, data)).unwrap()
}

fn reselect(reader: &mut TestReader) {
    assert!(reader.exchange(&select()).unwrap().sw.is_success());
}

fn set_date(world: &mut World, terminal: usize, date: Date) {
    world.terminals[terminal].set_clock(Box::new(FixedClock(date)));
}

#[test]
fn registration_with_the_setting_number_then_a_service_the_center_accepts() {
    let mut world = world(61, 2);
    let (mut reader, _, card_id, setting) = credit_card(&mut world, "credit", None);
    let session = world.terminals[0].open_credit(&mut reader).unwrap();
    assert!(!session.status().password_registered);
    assert_eq!(session.status().tries_left, 3);
    assert_eq!(
        session.status().expiry,
        today().add_days(valuecard_center::credit::CREDIT_VALIDITY_DAYS)
    );
    // Without a password there is nothing to verify.
    assert_eq!(
        world.terminals[0]
            .verify_password(&mut reader, &session, &password("1234"))
            .unwrap_err(),
        TerminalError::NoPasswordRegistered
    );
    register(&mut world, &mut reader, &setting, "1234");

    let served = world.terminals[1]
        .credit_service(&mut reader, &password("1234"), amount(875))
        .unwrap();
    let record = served.record.clone();
    assert_eq!(record.card_id, card_id);
    assert_eq!(record.terminal_id, world.terminals[1].device_id());
    assert_eq!((record.service_number, record.amount), (1, amount(875)));
    // The purse is untouched: credit is charged at the center, not from the balance.
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(1_000));

    let receipt = world.upload_service_records().unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert!(receipt.refused.is_empty());
    let statement = world.center.statement("2026-06").unwrap();
    assert_eq!(statement.cards.len(), 1);
    assert_eq!(statement.cards[0].card_id, card_id);
    assert_eq!(statement.cards[0].total_minor, 875);
    assert_eq!(statement.total_minor, 875);
    // Uploading again sends nothing; the same batch again is only duplicates.
    let receipt = world.upload_service_records().unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (0, 0));
    let upload = ServiceUpload {
        terminal_id: record.terminal_id,
        records: vec![record],
    };
    let receipt = world.center.ingest_service_records(&upload).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (0, 1));
}

#[test]
fn three_wrong_setting_numbers_block_the_credit_function_for_good() {
    let mut world = world(62, 1);
    let (mut reader, memory, _, setting) = credit_card(&mut world, "credit", None);
    let terminal = &mut world.terminals[0];
    let session = terminal.open_credit(&mut reader).unwrap();
    let mut wrong = Vec::new();
    for guess in ["00000000", "11111111", "22222222"] {
        let guess = SettingNumber::parse(guess).unwrap();
        if guess == setting {
            continue;
        }
        wrong.push(
            terminal
                .register_password(&mut reader, &session, &guess, &password("1234"))
                .unwrap_err(),
        );
    }
    assert_eq!(
        wrong[..2],
        [
            TerminalError::WrongSettingNumber { tries_left: 2 },
            TerminalError::WrongSettingNumber { tries_left: 1 },
        ]
    );
    assert_eq!(tries_left(&reader), 0);
    // Blocked: even the right number is refused, before and after a power-up, and the
    // terminal refuses the card at insertion.
    let right = terminal.register_password(&mut reader, &session, &setting, &password("1234"));
    assert_eq!(right.unwrap_err(), TerminalError::CreditBlocked);
    power_up(&mut world, &mut reader, &memory);
    assert_eq!(
        world.terminals[0].open_credit(&mut reader).unwrap_err(),
        TerminalError::CreditBlocked
    );
    reselect(&mut reader);
    let command = VerifySettingNumber {
        setting_number: setting,
    };
    assert_eq!(
        send(&mut reader, ins::VERIFY_SETTING_NUMBER, command.encode()).sw,
        StatusWord::AUTHENTICATION_BLOCKED
    );
    // The purse itself still works.
    world.terminals[0]
        .purchase(&mut reader, amount(100))
        .unwrap();
}

#[test]
fn a_wrong_setting_number_costs_a_try_and_the_right_one_restores_them() {
    let mut world = world(63, 1);
    let (mut reader, _, _, setting) = credit_card(&mut world, "credit", None);
    let terminal = &mut world.terminals[0];
    let session = terminal.open_credit(&mut reader).unwrap();
    let wrong = if setting.expose() == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let outcome = terminal.register_password(
        &mut reader,
        &session,
        &SettingNumber::parse(wrong).unwrap(),
        &password("1234"),
    );
    assert_eq!(
        outcome.unwrap_err(),
        TerminalError::WrongSettingNumber { tries_left: 2 }
    );
    terminal
        .register_password(&mut reader, &session, &setting, &password("1234"))
        .unwrap();
    assert_eq!(tries_left(&reader), 3);
}

#[test]
fn the_password_can_be_changed_with_the_current_one() {
    let mut world = world(64, 1);
    let (mut reader, _, _, setting) = credit_card(&mut world, "credit", None);
    register(&mut world, &mut reader, &setting, "1234");
    let terminal = &mut world.terminals[0];
    let session = terminal.open_credit(&mut reader).unwrap();
    assert_eq!(
        terminal
            .change_password(&mut reader, &session, &password("9999"), &password("5678"))
            .unwrap_err(),
        TerminalError::WrongPassword { tries_left: 2 }
    );
    terminal
        .change_password(
            &mut reader,
            &session,
            &password("1234"),
            &password("567890"),
        )
        .unwrap();
    assert_eq!(tries_left(&reader), 3);
    let old = terminal.credit_service(&mut reader, &password("1234"), amount(100));
    assert_eq!(
        old.unwrap_err(),
        TerminalError::WrongPassword { tries_left: 2 }
    );
    terminal
        .credit_service(&mut reader, &password("567890"), amount(100))
        .unwrap();
    // The right password restored the tries.
    assert_eq!(tries_left(&reader), 3);
    // The setting number still allows a new registration (Fig. 13 after a forgotten password).
    let session = terminal.open_credit(&mut reader).unwrap();
    terminal
        .register_password(&mut reader, &session, &setting, &password("2468"))
        .unwrap();
    terminal
        .credit_service(&mut reader, &password("2468"), amount(100))
        .unwrap();
}

#[test]
fn three_wrong_passwords_lock_and_the_lock_survives_power_up() {
    let mut world = world(65, 1);
    let (mut reader, memory, _, setting) = credit_card(&mut world, "credit", None);
    register(&mut world, &mut reader, &setting, "1234");
    let terminal = &mut world.terminals[0];
    let session = terminal.open_credit(&mut reader).unwrap();
    let mut errors = Vec::new();
    for guess in ["0000", "1111", "2222"] {
        errors.push(
            terminal
                .verify_password(&mut reader, &session, &password(guess))
                .unwrap_err(),
        );
    }
    assert_eq!(
        errors,
        vec![
            TerminalError::WrongPassword { tries_left: 2 },
            TerminalError::WrongPassword { tries_left: 1 },
            TerminalError::CreditBlocked,
        ]
    );
    power_up(&mut world, &mut reader, &memory);
    assert_eq!(tries_left(&reader), 0);
    assert_eq!(
        world.terminals[0]
            .credit_service(&mut reader, &password("1234"), amount(100))
            .unwrap_err(),
        TerminalError::CreditBlocked
    );
    // Neither the password nor the setting number opens it again.
    reselect(&mut reader);
    let verify = VerifyPassword {
        password: password("1234"),
    };
    assert_eq!(
        send(&mut reader, ins::VERIFY_PASSWORD, verify.encode()).sw,
        StatusWord::AUTHENTICATION_BLOCKED
    );
    let command = VerifySettingNumber {
        setting_number: setting,
    };
    assert_eq!(
        send(&mut reader, ins::VERIFY_SETTING_NUMBER, command.encode()).sw,
        StatusWord::AUTHENTICATION_BLOCKED
    );
}

#[test]
fn a_power_cut_after_the_decrement_costs_the_try_even_for_the_right_password() {
    // An attacker who cuts power as soon as the card writes, hoping to stop the try counter
    // on a wrong guess, gets no answer and has still spent the try: the decrement is the
    // first commit of every presentation, right or wrong, and the comparison comes after it.
    let mut world = world(66, 1);
    let (mut reader, memory, _, setting) = credit_card(&mut world, "credit", None);
    register(&mut world, &mut reader, &setting, "1234");
    let one_commit = writes_of_a_wrong_password(&memory);
    reselect(&mut reader);
    arm_cut(&mut reader, one_commit + 1, 0, 1);
    let verify = VerifyPassword {
        password: password("1234"),
    };
    let outcome = reader.exchange(&proprietary(ins::VERIFY_PASSWORD, verify.encode()));
    assert_eq!(
        outcome.unwrap_err(),
        valuecard_reader::ReaderError::CardRemoved
    );
    power_up(&mut world, &mut reader, &memory);
    assert_eq!(tries_left(&reader), 2);
    // A wrong guess cut anywhere leaves the old or the decremented counter, never more.
    for cut in 1..=one_commit {
        reselect(&mut reader);
        let before = tries_left(&reader);
        arm_cut(&mut reader, cut, 1, 2);
        let wrong = VerifyPassword {
            password: password("0000"),
        };
        assert!(reader
            .exchange(&proprietary(ins::VERIFY_PASSWORD, wrong.encode()))
            .is_err());
        power_up(&mut world, &mut reader, &memory);
        assert!(tries_left(&reader) == before || tries_left(&reader) == before - 1);
        if tries_left(&reader) == 0 {
            break;
        }
    }
}

/// The writes one commit of this card makes, counted on a copy of its memory (a wrong
/// password commits exactly once).
fn writes_of_a_wrong_password(memory: &MemoryEeprom) -> u64 {
    let copy = MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE);
    copy.restore(&memory.snapshot());
    let card = Card::open(
        FaultInjectingEeprom::new(copy),
        <valuecard_sim::WorldRng as rand_core::SeedableRng>::seed_from_u64(1),
    )
    .unwrap();
    let mut probe = valuecard_reader::InProcessReader::with_card("probe", card);
    reselect(&mut probe);
    let wrong = VerifyPassword {
        password: password("0000"),
    };
    let before = probe.card_mut().unwrap().eeprom_mut().writes();
    assert_eq!(
        send(&mut probe, ins::VERIFY_PASSWORD, wrong.encode())
            .sw
            .tries_left(),
        Some(2)
    );
    probe.card_mut().unwrap().eeprom_mut().writes() - before
}

#[test]
fn a_service_record_without_a_verified_password_is_refused() {
    let mut world = world(67, 1);
    let (mut reader, _, _, setting) = credit_card(&mut world, "credit", None);
    register(&mut world, &mut reader, &setting, "1234");
    let certificate = world.terminals[0].sam().certificate().unwrap().clone();
    let request = CreditSessionRequest {
        terminal_certificate: certificate,
        challenge_terminal: [0x42; 16],
    };
    let record = RecordService {
        amount: amount(500),
        date: today(),
        terminal_sequence: 77,
    };
    reselect(&mut reader);
    // RECORD SERVICE without INITIALIZE SERVICE.
    assert_eq!(
        send(&mut reader, ins::RECORD_SERVICE, record.encode()).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // INITIALIZE SERVICE without VERIFY PASSWORD.
    assert_eq!(
        send(&mut reader, ins::INITIALIZE_SERVICE, request.encode()).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(
        send(&mut reader, ins::RECORD_SERVICE, record.encode()).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // After a wrong password.
    let wrong = VerifyPassword {
        password: password("4321"),
    };
    assert_eq!(
        send(&mut reader, ins::VERIFY_PASSWORD, wrong.encode()).sw,
        StatusWord(0x63C2)
    );
    assert_eq!(
        send(&mut reader, ins::INITIALIZE_SERVICE, request.encode()).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // A verification does not survive SELECT.
    let right = VerifyPassword {
        password: password("1234"),
    };
    assert!(send(&mut reader, ins::VERIFY_PASSWORD, right.encode())
        .sw
        .is_success());
    reselect(&mut reader);
    assert_eq!(
        send(&mut reader, ins::INITIALIZE_SERVICE, request.encode()).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // A verified setting number is not a verified password.
    let command = VerifySettingNumber {
        setting_number: setting,
    };
    assert!(
        send(&mut reader, ins::VERIFY_SETTING_NUMBER, command.encode())
            .sw
            .is_success()
    );
    assert_eq!(
        send(&mut reader, ins::INITIALIZE_SERVICE, request.encode()).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    match reader.card().unwrap().state() {
        PersistentState::Personalized(purse) => {
            assert_eq!(purse.credit.as_ref().unwrap().services_recorded, 0)
        }
        _ => panic!("not personalized"),
    }
}

#[test]
fn a_forged_terminal_signature_at_registration_is_refused() {
    let mut world = world(68, 1);
    let (mut reader, _, card_id, setting) = credit_card(&mut world, "credit", None);
    let terminal_id = world.terminals[0].device_id();
    let certificate = world.terminals[0].sam().certificate().unwrap().clone();
    reselect(&mut reader);
    let command = VerifySettingNumber {
        setting_number: setting.clone(),
    };
    assert!(
        send(&mut reader, ins::VERIFY_SETTING_NUMBER, command.encode())
            .sw
            .is_success()
    );
    let request = CreditSessionRequest {
        terminal_certificate: certificate,
        challenge_terminal: [0x24; 16],
    };
    let answer = send(&mut reader, ins::INITIALIZE_PASSWORD, request.encode());
    assert!(answer.sw.is_success());
    let offer = CreditSessionOffer::decode(&answer.data).unwrap();
    let chosen = password("6666");
    let forger = SigningKeyPair::from_seed(&[0x13; 32]);
    let forged = SetPassword {
        signature: forger.sign(&SetPassword::signed_message(
            &card_id,
            &terminal_id,
            &[0x24; 16],
            &offer.challenge_card,
            &chosen,
        )),
        password: chosen,
    };
    assert_eq!(
        send(&mut reader, ins::SET_PASSWORD, forged.encode()).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    let session = world.terminals[0].open_credit(&mut reader).unwrap();
    assert!(!session.status().password_registered);
    // A certificate the center never issued is refused at INITIALIZE PASSWORD.
    let rogue = valuecard_core::cert::CertificateBody {
        issuer: world.center.anchor().center,
        subject: terminal_id,
        role: valuecard_core::cert::Role::PaymentTerminal,
        effective: today(),
        expiry: today().add_days(30),
        signing_key: forger.public_key(),
        sealing_key: None,
    }
    .sign(&forger);
    reselect(&mut reader);
    assert!(
        send(&mut reader, ins::VERIFY_SETTING_NUMBER, command.encode())
            .sw
            .is_success()
    );
    let request = CreditSessionRequest {
        terminal_certificate: rogue,
        challenge_terminal: [0x25; 16],
    };
    assert_eq!(
        send(&mut reader, ins::INITIALIZE_PASSWORD, request.encode()).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
}

#[test]
fn expired_credit_is_refused_by_the_terminal_and_by_the_card() {
    let mut world = world(69, 1);
    let expiry = today().add_days(10);
    let (mut reader, _, card_id, setting) = credit_card(&mut world, "credit", Some(expiry));
    register(&mut world, &mut reader, &setting, "1234");
    // On the last day it works.
    set_date(&mut world, 0, expiry);
    world.terminals[0]
        .credit_service(&mut reader, &password("1234"), amount(300))
        .unwrap();
    // The day after, the terminal refuses the card at insertion.
    set_date(&mut world, 0, expiry.add_days(1));
    assert_eq!(
        world.terminals[0].open_credit(&mut reader).unwrap_err(),
        TerminalError::CreditExpired {
            expiry,
            today: expiry.add_days(1)
        }
    );
    // A terminal that skips its own check meets the card's: a record dated after the expiry
    // is refused, and the password verification it spent is gone.
    let terminal_id = world.terminals[0].device_id();
    let certificate = world.terminals[0].sam().certificate().unwrap().clone();
    reselect(&mut reader);
    let verify = VerifyPassword {
        password: password("1234"),
    };
    assert!(send(&mut reader, ins::VERIFY_PASSWORD, verify.encode())
        .sw
        .is_success());
    let request = CreditSessionRequest {
        terminal_certificate: certificate,
        challenge_terminal: [0x31; 16],
    };
    assert!(send(&mut reader, ins::INITIALIZE_SERVICE, request.encode())
        .sw
        .is_success());
    let late = RecordService {
        amount: amount(300),
        date: expiry.add_days(1),
        terminal_sequence: 900,
    };
    assert_eq!(
        send(&mut reader, ins::RECORD_SERVICE, late.encode()).sw,
        StatusWord::REFERENCE_DATA_NOT_USABLE
    );
    // The center refuses a record dated after the expiry, even one carrying a signature.
    let upload = ServiceUpload {
        terminal_id,
        records: vec![ServiceRecord {
            card_id,
            terminal_id,
            terminal_sequence: 900,
            service_number: 2,
            amount: amount(300),
            date: expiry.add_days(1),
            card_signature: valuecard_core::crypto::Signature([0; 64]),
        }],
    };
    let receipt = world.center.ingest_service_records(&upload).unwrap();
    assert_eq!(receipt.stored, 0);
    assert!(
        receipt.refused[0].1.contains("expiry"),
        "{:?}",
        receipt.refused
    );
    // The one good record is still charged.
    assert_eq!(world.upload_service_records().unwrap().stored, 1);
}

#[test]
fn statements_sum_exactly_the_records_of_their_month() {
    let mut world = world(70, 2);
    let (mut first, _, first_id, first_setting) = credit_card(&mut world, "first", None);
    let (mut second, _, second_id, second_setting) = credit_card(&mut world, "second", None);
    register(&mut world, &mut first, &first_setting, "1111");
    register(&mut world, &mut second, &second_setting, "2222");
    let date = |m, d| Date::from_ymd(2026, m, d).unwrap();
    // (terminal, card, date, amount): June holds 550 for the first card, 2000 for the
    // second; July 4050; August 100.
    let services: [(usize, bool, Date, u64); 7] = [
        (0, true, date(6, 1), 250),
        (1, true, date(6, 15), 300),
        (1, false, date(6, 30), 1_999),
        (0, false, date(6, 2), 1),
        (1, true, date(7, 1), 4_000),
        (0, false, date(7, 31), 50),
        (0, true, date(8, 1), 100),
    ];
    for (terminal, is_first, when, charge) in services {
        set_date(&mut world, terminal, when);
        let (reader, pw) = if is_first {
            (&mut first, "1111")
        } else {
            (&mut second, "2222")
        };
        world.terminals[terminal]
            .credit_service(reader, &password(pw), amount(charge))
            .unwrap();
    }
    let receipt = world.upload_service_records().unwrap();
    assert_eq!(receipt.stored, 7, "{receipt:?}");
    let june = world.center.statement("2026-06").unwrap();
    let mut expected = vec![(first_id, 550u64, 2usize), (second_id, 2_000, 2)];
    expected.sort();
    let got: Vec<_> = june
        .cards
        .iter()
        .map(|card| (card.card_id, card.total_minor, card.lines.len()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(june.total_minor, 2_550);
    for card in &june.cards {
        assert_eq!(
            card.total_minor,
            card.lines.iter().map(|l| l.amount.minor()).sum::<u64>()
        );
        assert!(card
            .lines
            .iter()
            .all(|l| (date(6, 1)..=date(6, 30)).contains(&l.date)));
    }
    let july = world.center.statement("2026-07").unwrap();
    assert_eq!((july.cards.len(), july.total_minor), (2, 4_050));
    let august = world.center.statement("2026-08").unwrap();
    assert_eq!((august.cards.len(), august.total_minor), (1, 100));
    assert_eq!(august.cards[0].card_id, first_id);
    assert!(world.center.statement("2026-05").unwrap().cards.is_empty());
    assert!(world.center.statement("2026-09").unwrap().cards.is_empty());
    assert!(world.center.statement("June").is_err());
}

#[test]
fn the_center_verifies_every_uploaded_record() {
    let mut world = world(71, 2);
    let (mut reader, _, _, setting) = credit_card(&mut world, "credit", None);
    register(&mut world, &mut reader, &setting, "1234");
    let record = world.terminals[0]
        .credit_service(&mut reader, &password("1234"), amount(400))
        .unwrap()
        .record;
    let terminal_id = record.terminal_id;
    let tampered = ServiceRecord {
        amount: amount(40),
        ..record.clone()
    };
    let receipt = world
        .center
        .ingest_service_records(&ServiceUpload {
            terminal_id,
            records: vec![tampered],
        })
        .unwrap();
    assert_eq!(receipt.stored, 0);
    assert!(receipt.refused[0].1.contains("signature"));
    // Another terminal cannot upload this terminal's record.
    let other = world.terminals[1].device_id();
    let receipt = world
        .center
        .ingest_service_records(&ServiceUpload {
            terminal_id: other,
            records: vec![record.clone()],
        })
        .unwrap();
    assert!(receipt.refused[0].1.contains("another terminal"));
    // The genuine record is stored once; a different record under its sequence is refused.
    assert_eq!(world.upload_service_records().unwrap().stored, 1);
    let card_key = match reader.card().unwrap().state() {
        PersistentState::Personalized(purse) => purse.keys.signing.clone(),
        _ => panic!("not personalized"),
    };
    let mut other = ServiceRecord {
        amount: amount(41),
        ..record.clone()
    };
    other.card_signature = card_key.sign(&other.signed_message());
    let receipt = world
        .center
        .ingest_service_records(&ServiceUpload {
            terminal_id,
            records: vec![other],
        })
        .unwrap();
    assert!(
        receipt.refused[0].1.contains("other content"),
        "{receipt:?}"
    );
}

/// A service at terminal 0 on a seeded world, with power cut at the `cut`-th write of its
/// RECORD SERVICE; returns the world, the card, its memory, the outcome and the writes made.
fn service_with_cut(
    cut: Option<u64>,
) -> (
    World,
    TestReader,
    MemoryEeprom,
    Result<valuecard_terminal::credit::ServiceRecorded, TerminalError>,
    u64,
) {
    let mut world = world(72, 1);
    let (mut reader, memory, _, setting) = credit_card(&mut world, "credit", None);
    register(&mut world, &mut reader, &setting, "1234");
    let terminal = &mut world.terminals[0];
    let session = terminal.open_credit(&mut reader).unwrap();
    let verified = terminal
        .verify_password(&mut reader, &session, &password("1234"))
        .unwrap();
    if let Some(cut) = cut {
        arm_cut(&mut reader, cut, 1, 1);
    }
    let before = reader.card_mut().unwrap().eeprom_mut().writes();
    let outcome = terminal.record_service(&mut reader, verified, amount(700));
    let writes = reader.card_mut().unwrap().eeprom_mut().writes() - before;
    (world, reader, memory, outcome, writes)
}

#[test]
fn a_lost_record_answer_is_settled_from_the_cards_service_log() {
    let (_, _, _, outcome, writes) = service_with_cut(None);
    outcome.unwrap();
    // The last write of the commit erases the old slot's header: the new state is durable,
    // but the card loses power before it answers.
    let (mut world, mut reader, memory, outcome, _) = service_with_cut(Some(writes));
    let sequence = match outcome {
        Err(TerminalError::ServiceInDoubt { sequence }) => sequence,
        other => panic!("expected a service in doubt, got {other:?}"),
    };
    power_up(&mut world, &mut reader, &memory);
    // Presented again, the card's signed log settles the record.
    world.terminals[0].open_credit(&mut reader).unwrap();
    let services = world.terminals[0].store().services().unwrap();
    let service = services.iter().find(|s| s.sequence == sequence).unwrap();
    assert_eq!(service.status, ServiceStatus::Signed);
    assert_eq!(world.upload_service_records().unwrap().stored, 1);
    // Cut at the first write instead: the card never recorded it, and the record is cancelled.
    let (mut world, mut reader, memory, outcome, _) = service_with_cut(Some(1));
    assert!(matches!(outcome, Err(TerminalError::ServiceInDoubt { .. })));
    power_up(&mut world, &mut reader, &memory);
    world.terminals[0].open_credit(&mut reader).unwrap();
    let services = world.terminals[0].store().services().unwrap();
    assert_eq!(services[0].status, ServiceStatus::Cancelled);
    assert_eq!(world.upload_service_records().unwrap().stored, 0);
}

#[test]
fn credit_accounts_records_and_statements_on_postgres() {
    let url = std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            skip_note!("SKIPPED: PostgreSQL not reachable at {url:?}: {error}");
            return;
        }
    };
    let schema = format!(
        "valuecard_credit_{:016x}",
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    );
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let database = valuecard_center::sql::Database::connect_postgres(&format!(
        "{url} options='-c search_path={schema}'"
    ))
    .unwrap();
    let mut world = World::create_seeded(
        valuecard_sim::Storage::on(database),
        1,
        today(),
        <valuecard_sim::WorldRng as rand_core::SeedableRng>::seed_from_u64(73),
    )
    .unwrap();
    let (mut reader, _, card_id, setting) = credit_card(&mut world, "credit", None);
    // The same enablement again: the center answers from its records, the card accepts it.
    world
        .dispenser
        .enable_credit(&mut reader, &mut world.center, None)
        .unwrap();
    register(&mut world, &mut reader, &setting, "1234");
    world.terminals[0]
        .credit_service(&mut reader, &password("1234"), amount(333))
        .unwrap();
    assert_eq!(world.upload_service_records().unwrap().stored, 1);
    let statement = world.center.statement("2026-06").unwrap();
    assert_eq!(
        (statement.cards[0].card_id, statement.total_minor),
        (card_id, 333)
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
