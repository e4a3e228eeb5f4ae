//! Golden card images, one per image format version. Every version this build can read must
//! have a golden file, and the current build must still write the current golden file byte
//! for byte: a change of the persisted format without a new version fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use std::path::PathBuf;

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::{EEPROM_SIZE, FORMAT_VERSION, FORMAT_VERSION_MIN};
use valuecard_card::state::PersistentState;
use valuecard_card::{testing, Card};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::credit::{
    CreditSessionOffer, CreditSessionRequest, Password, RecordService, SetPassword, SettingNumber,
    VerifyPassword, VerifySettingNumber,
};
use valuecard_core::messages::purse::{
    ins, DebitCommand, InitializePurchase, PurchaseCommit, PurchaseOffer, PURSE_AID,
};
use valuecard_core::messages::services::{
    area_key, ins as services_ins, AreaContent, ChannelBinding, KeyState, OpenService,
    OpenServiceResponse, ServiceAuthenticate, ServiceChannel, ServiceCode, ServiceKind,
    ServiceOperation, Ticket, TicketBook, UpdateArea, CLA_SERVICES, SERVICES_AID,
};
use valuecard_core::money::Amount;

fn golden_path(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("image-v{version}.bin"))
}

fn send(card: &mut Card<MemoryEeprom, rand_chacha::ChaCha20Rng>, command: Command) -> Response {
    Response::parse(&card.transmit(&command.encode()).unwrap()).unwrap()
}

/// A purse with one purchase, credit mode, two transfers and two service areas behind it:
/// every persisted field is present.
fn reference_image() -> Vec<u8> {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(42);
    let mut card = Card::with_state(
        memory.clone(),
        testing::personalized_card(
            1,
            Amount::new(12_345).unwrap(),
            Some(&testing::key_set(1, 5, 1)),
        ),
        rng,
    )
    .unwrap();
    send(
        &mut card,
        Command::new(0x00, ins::SELECT, 0x04, 0x00)
            .with_data(PURSE_AID.to_vec())
            .with_le(256),
    );
    let (terminal_key, certificate) = testing::terminal();
    let request = InitializePurchase {
        terminal_certificate: certificate,
        challenge_terminal: [0x11; 16],
        amount_max: Amount::new(345).unwrap(),
        date: testing::today(),
    };
    let offer = send(
        &mut card,
        Command::new(0x80, ins::INITIALIZE_PURCHASE, 0, 0)
            .with_data(request.encode())
            .with_le(65_536),
    );
    assert!(offer.sw.is_success());
    let offer = PurchaseOffer::decode(&offer.data).unwrap();
    let stamp = testing::terminal_stamp(3);
    let commit = PurchaseCommit {
        card_id: valuecard_core::ids::CardId(*b"CARD0001"),
        terminal_id: valuecard_core::ids::DeviceId(*b"TERMINAL"),
        challenge_terminal: [0x11; 16],
        challenge_card: offer.challenge_card,
        counter: 0,
        amount: Amount::new(345).unwrap(),
        balance_after: Amount::new(12_000).unwrap(),
        terminal_sequence: 7,
        date: testing::today(),
        stamp,
    };
    let debit = DebitCommand {
        amount: commit.amount,
        balance_after: commit.balance_after,
        terminal_sequence: 7,
        stamp,
        signature: terminal_key.sign(&commit.signed_message()),
    };
    let answer = send(
        &mut card,
        Command::new(0x80, ins::DEBIT, 0, 0)
            .with_data(debit.encode())
            .with_le(256),
    );
    assert!(answer.sw.is_success(), "{}", answer.sw);
    credit_with_one_service(&mut card);
    drop(card);
    two_transfers(memory.clone());
    two_service_areas(memory.clone());
    memory.snapshot()
}

/// The purse's area (test provider 1), and the tickets area of test provider 2.
const PURSE_SERVICE: ServiceCode = ServiceCode(0x0001);
const TICKETS_SERVICE: ServiceCode = ServiceCode(0x0102);

fn golden_ticket() -> Ticket {
    Ticket {
        ticket_id: 7,
        product: 0x0A0B,
        valid_from: testing::today(),
        valid_until: testing::today().add_days(90),
        rides_left: Some(10),
    }
}

/// Format 6: the purse's service area and a tickets area, both on main keys, the tickets
/// area holding one carnet.
fn two_service_areas(memory: MemoryEeprom) {
    let mut card = Card::open(memory, rand_chacha::ChaCha20Rng::seed_from_u64(44)).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(45);
    let services = |ins: u8, data: Vec<u8>| {
        Command::new(CLA_SERVICES, ins, 0, 0)
            .with_data(data)
            .with_le(65_536)
    };
    let ok = |response: Response| {
        assert!(response.sw.is_success(), "{}", response.sw);
        response.data
    };
    ok(send(
        &mut card,
        Command::new(0x00, ins::SELECT, 0x04, 0x00)
            .with_data(SERVICES_AID.to_vec())
            .with_le(256),
    ));
    for (service, kind, provider) in [
        (PURSE_SERVICE, ServiceKind::Purse, 1),
        (TICKETS_SERVICE, ServiceKind::Tickets, 2),
    ] {
        let challenge = ok(send(
            &mut card,
            Command::new(0x00, services_ins::GET_CHALLENGE, 0, 0).with_le(16),
        ));
        let request = testing::format_area(
            1,
            &challenge.try_into().unwrap(),
            testing::area_format(service, kind, provider),
            KeyState::Main,
            provider,
            &mut rng,
        );
        ok(send(
            &mut card,
            services(services_ins::FORMAT_AREA, request.encode()),
        ));
    }
    let host_challenge = [0x66; 16];
    let answer = OpenServiceResponse::decode(&ok(send(
        &mut card,
        services(
            services_ins::OPEN_SERVICE,
            OpenService {
                service: TICKETS_SERVICE,
                host_challenge,
            }
            .encode(),
        ),
    )))
    .unwrap();
    let card_id = testing::card_id(1);
    let key = area_key(
        &testing::area_master(2, KeyState::Main),
        KeyState::Main,
        &card_id,
        TICKETS_SERVICE,
    );
    let binding = ChannelBinding {
        card_id,
        service: TICKETS_SERVICE,
        key_state: KeyState::Main,
        host_challenge,
        card_challenge: answer.card_challenge,
    };
    let (mut channel, host_cryptogram) =
        ServiceChannel::for_host(&key, binding, &answer.card_cryptogram).unwrap();
    ok(send(
        &mut card,
        services(
            services_ins::EXTERNAL_AUTHENTICATE,
            ServiceAuthenticate { host_cryptogram }.encode(),
        ),
    ));
    let issue = UpdateArea {
        operation: ServiceOperation::IssueTicket(golden_ticket()),
    };
    let sealed = channel
        .seal(services_ins::UPDATE_AREA, &issue.encode())
        .unwrap();
    ok(send(&mut card, services(services_ins::UPDATE_AREA, sealed)));
}

/// Format 5: the card received 5.00 from card 2 (a receipt) and sent 7.00 to card 3, which
/// applied it, without the proof back yet (a pending transfer, its value reserved).
fn two_transfers(memory: MemoryEeprom) {
    use transfer_common::{Device, Terminal};
    let keys = testing::key_set(1, 5, 1);
    let mut card = Device::open(1, memory);
    let mut from = Device::new(2, 1_000, Some(&keys));
    let mut to = Device::new(3, 0, Some(&keys));
    let mut terminal = Terminal::default();
    terminal
        .run(&mut from, &mut card, Amount::new(500).unwrap())
        .unwrap();
    let mut flow = terminal
        .initialize_in(&mut to, card.id(), Amount::new(700).unwrap())
        .unwrap();
    terminal.transfer_out(&mut card, &mut flow).unwrap();
    terminal.transfer_in(&mut to, &mut flow).unwrap();
}

/// Format 3: credit enabled, a password registered (after one wrong setting number), and one
/// service recorded.
fn credit_with_one_service(card: &mut Card<MemoryEeprom, rand_chacha::ChaCha20Rng>) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(43);
    let proprietary =
        |ins: u8, data: Vec<u8>| Command::new(0x80, ins, 0, 0).with_data(data).with_le(256);
    let setting_number = SettingNumber::parse("27182818").unwrap();
    let enable = testing::enable_credit(&setting_number, testing::today().add_days(365), &mut rng);
    let ok = |response: Response| {
        assert!(response.sw.is_success(), "{}", response.sw);
        response.data
    };
    ok(send(card, proprietary(ins::ENABLE_CREDIT, enable.encode())));
    let wrong = VerifySettingNumber {
        setting_number: SettingNumber::parse("00000000").unwrap(),
    };
    let answer = send(
        card,
        proprietary(ins::VERIFY_SETTING_NUMBER, wrong.encode()),
    );
    assert_eq!(answer.sw.0, 0x63C2);
    ok(send(
        card,
        proprietary(
            ins::VERIFY_SETTING_NUMBER,
            VerifySettingNumber { setting_number }.encode(),
        ),
    ));
    let (terminal_key, certificate) = testing::terminal();
    let request = CreditSessionRequest {
        terminal_certificate: certificate,
        challenge_terminal: [0x22; 16],
    };
    let offer = CreditSessionOffer::decode(&ok(send(
        card,
        proprietary(ins::INITIALIZE_PASSWORD, request.encode()),
    )))
    .unwrap();
    let password = Password::parse("1414").unwrap();
    let signature = terminal_key.sign(&SetPassword::signed_message(
        &CardId(*b"CARD0001"),
        &DeviceId(*b"TERMINAL"),
        &[0x22; 16],
        &offer.challenge_card,
        &password,
    ));
    ok(send(
        card,
        proprietary(
            ins::SET_PASSWORD,
            SetPassword {
                password: password.clone(),
                signature,
            }
            .encode(),
        ),
    ));
    ok(send(
        card,
        proprietary(ins::VERIFY_PASSWORD, VerifyPassword { password }.encode()),
    ));
    ok(send(
        card,
        proprietary(ins::INITIALIZE_SERVICE, request.encode()),
    ));
    let record = RecordService {
        amount: Amount::new(260).unwrap(),
        date: testing::today(),
        terminal_sequence: 8,
    };
    ok(send(
        card,
        proprietary(ins::RECORD_SERVICE, record.encode()),
    ));
}

#[test]
#[ignore = "writes the golden file of the current format version; run once per new version"]
fn write_golden_image() {
    std::fs::write(golden_path(FORMAT_VERSION), reference_image()).unwrap();
}

#[test]
fn every_format_version_has_a_golden_image_that_loads() {
    for version in FORMAT_VERSION_MIN..=FORMAT_VERSION {
        let path = golden_path(version);
        let bytes = std::fs::read(&path).unwrap_or_else(|_| {
            panic!(
                "no golden image for format version {version} at {}",
                path.display()
            )
        });
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        memory.restore(&bytes);
        let card = Card::open(memory, rand_core::OsRng).unwrap();
        let PersistentState::Personalized(purse) = card.state() else {
            panic!("golden v{version} is not a personalized purse")
        };
        let transfers = u32::from(version >= 5);
        assert_eq!(purse.balance.minor(), 12_000 + 500 * u64::from(transfers));
        assert_eq!(purse.counter, 1 + transfers);
        assert_eq!(purse.log.len(), 1 + transfers as usize);
        assert!(purse.last_usage.is_some() && purse.last_writer_certificate.is_some());
        if version >= 3 {
            let credit = purse.credit.as_ref().expect("format 3 holds credit");
            assert_eq!(credit.tries_left, 3);
            assert!(credit.password_digest.is_some());
            assert_eq!(credit.services_recorded, 1);
            assert_eq!(credit.service_log.len(), 1);
        } else {
            assert!(purse.credit.is_none());
        }
        if version >= 5 {
            let transfer = &purse.transfer;
            assert_eq!(transfer.selected, 1);
            assert_eq!(transfer.held_ids(), vec![1]);
            assert_eq!((transfer.limit, transfer.update_key_id()), (5, 1));
            let sent = transfer
                .sent
                .as_ref()
                .expect("format 5 holds a pending transfer");
            assert_eq!(sent.pending.destination, testing::card_id(3));
            assert_eq!(sent.pending.amount.minor(), 700);
            assert_eq!(purse.spendable().minor(), 11_800);
            assert_eq!(transfer.received.len(), 1);
            assert_eq!(transfer.received[0].source, testing::card_id(2));
            assert_eq!(transfer.received[0].amount.minor(), 500);
        } else {
            assert!(purse.transfer.is_empty());
        }
        if version >= 6 {
            let areas = &purse.services.areas;
            assert_eq!(areas.len(), 2);
            let purse_area = purse.services.area(PURSE_SERVICE).unwrap();
            assert_eq!(purse_area.format.kind, ServiceKind::Purse);
            assert_eq!(purse_area.key_state, KeyState::Main);
            assert_eq!(purse_area.content, None);
            let tickets = purse.services.area(TICKETS_SERVICE).unwrap();
            assert_eq!(tickets.key_state, KeyState::Main);
            assert_eq!(
                tickets.content,
                Some(AreaContent::Tickets(TicketBook {
                    tickets: vec![golden_ticket()]
                }))
            );
            assert!(!purse.services.purse_on_temporary_keys());
        } else {
            assert!(purse.services.is_empty());
        }
    }
}

#[test]
fn the_current_build_writes_the_current_golden_image() {
    let golden = std::fs::read(golden_path(FORMAT_VERSION)).unwrap();
    assert!(
        reference_image() == golden,
        "the persisted card format changed: bump image::FORMAT_VERSION, keep reading the old version, and add a golden file"
    );
}

/// Format 4 adds the chip serial of an unissued card; a blank card written by format 3 (no
/// serial) still loads.
#[test]
fn an_unissued_card_keeps_its_chip_serial_and_older_blank_images_load() {
    use valuecard_core::crypto::AesKey;
    let key = AesKey::from_slice(&[0x44; 16]).unwrap();
    let serial = [0xC5, 1, 2, 3, 4, 5, 6, 7];
    let state = PersistentState::Manufactured {
        transport_key: key.clone(),
        chip_serial: Some(serial),
    };
    let decoded = PersistentState::decode(&state.encode()).unwrap();
    assert_eq!(decoded.chip_serial(), Some(serial));
    let old = PersistentState::Manufactured {
        transport_key: key,
        chip_serial: None,
    };
    let decoded = PersistentState::decode(&old.encode()).unwrap();
    assert!(matches!(
        decoded,
        PersistentState::Manufactured {
            chip_serial: None,
            ..
        }
    ));
}
