//! One card, one balance: a card issued and loaded by the center pays a web store online,
//! buys at a payment terminal (which checks the online record the card shows), is charged
//! online, and the center's one reconciliation covers all of it, the online records
//! reported by the security server the center certified.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::state::PersistentState;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_core::apdu::Command;
use valuecard_core::crypto::{AesKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{
    ins, InitializeUpdateResponse, OnlineFci, OnlineItem, SettlementId, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_settle::security::{
    SecurityKeys, SecurityServer, SoftwareSecurityKeys, Step, UpdateRequest,
};
use valuecard_sim::{read_purse, Storage, World, WorldRng};

type Reader = InProcessReader<MemoryEeprom, WorldRng>;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn today() -> Date {
    Date::from_ymd(2026, 11, 30).unwrap()
}

fn exchange(reader: &mut Reader, instruction: u8, data: Vec<u8>) -> Vec<u8> {
    let response = reader
        .exchange(
            &Command::new(CLA_ONLINE, instruction, 0, 0)
                .with_data(data)
                .with_le(256),
        )
        .unwrap();
    assert_eq!(response.sw, StatusWord::SUCCESS, "{instruction:02X}");
    response.data
}

fn select_online(reader: &mut Reader) -> OnlineFci {
    let response = reader
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(ONLINE_AID.to_vec())
                .with_le(256),
        )
        .unwrap();
    assert_eq!(response.sw, StatusWord::SUCCESS);
    OnlineFci::decode(&response.data).unwrap()
}

/// One online update through every step, as the settlement services run it.
fn online_update(
    server: &SecurityServer<SoftwareSecurityKeys>,
    reader: &mut Reader,
    rng: &mut WorldRng,
    settlement_id: SettlementId,
    request: &UpdateRequest,
    sequence: u32,
) -> OnlineItem {
    let fci = select_online(reader);
    let (step, initialize) = server.challenge(settlement_id, rng);
    let Step::Challenged { host_challenge, .. } = step else {
        panic!("{step:?}")
    };
    let answer = InitializeUpdateResponse::decode(&exchange(
        reader,
        ins::INITIALIZE_UPDATE,
        initialize.encode(),
    ))
    .unwrap();
    let (step, external, brc) = server
        .authenticate(settlement_id, &host_challenge, fci.card_id, &answer)
        .unwrap();
    exchange(reader, ins::EXTERNAL_AUTHENTICATE, external.encode());
    let bi = exchange(reader, ins::READ_BALANCE, brc);
    let Step::Authenticated { session, .. } = step else {
        panic!("{step:?}")
    };
    let (offered, sealed) = server
        .offer(settlement_id, &session, &bi, request, sequence)
        .unwrap();
    let instruction = if request.kind == TransactionKind::OnlinePayment {
        ins::SETTLE
    } else {
        ins::CHARGE
    };
    let pcn = exchange(reader, instruction, sealed);
    match server.complete(&offered, &pcn).unwrap() {
        Step::Completed { item, .. } => item,
        other => panic!("{other:?}"),
    }
}

#[test]
fn terminal_purchases_and_online_payments_and_charges_spend_one_balance() {
    let mut rng = WorldRng::seed_from_u64(7);
    let mut world =
        World::create_seeded(Storage::Memory, 1, today(), WorldRng::seed_from_u64(8)).unwrap();
    let mut reader: Reader = {
        let card = world
            .manufacture_card(MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE))
            .unwrap();
        InProcessReader::with_card("holder", card)
    };
    world.issue(&mut reader, amount(5_000)).unwrap();

    // The settlement system's security server, certified by the center.
    let signing = SigningKeyPair::generate(&mut rng);
    let (server_id, certificate) = world
        .center
        .certify_online_settlement(
            signing.public_key(),
            SealingKeyPair::generate(&mut rng).public_key(),
        )
        .unwrap();
    let server = SecurityServer::new(SoftwareSecurityKeys::new(
        AesKey::random(&mut rng),
        signing,
        certificate,
    ));
    assert_eq!(server.keys().device_id(), server_id);

    // KC is installed from the card's certificate.
    let card_certificate = match reader.card().unwrap().state() {
        PersistentState::Personalized(purse) => purse.certificate.clone(),
        other => panic!("{other:?}"),
    };
    let installation = server
        .install_key(
            &card_certificate,
            &world.center.anchor(),
            world.today(),
            &mut rng,
        )
        .unwrap();
    select_online(&mut reader);
    exchange(&mut reader, ins::INSTALL_KEY, installation.encode());

    // An online payment of 12.50 to a store.
    let store = DeviceId(*b"STORE001");
    let payment = online_update(
        &server,
        &mut reader,
        &mut rng,
        [1; 16],
        &UpdateRequest {
            kind: TransactionKind::OnlinePayment,
            amount: amount(1_250),
            party: store,
            date: world.today(),
        },
        1,
    );
    let receipt = world
        .center
        .store_online_records(server_id, std::slice::from_ref(&payment))
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");

    // The card buys at a payment terminal: the terminal checks the online record the card
    // shows as its last, and the center checks the purchase's chain through it.
    world.terminals[0]
        .purchase(&mut reader, amount(750))
        .unwrap();
    let receipt = world.terminals[0].upload_usage(&mut world.center).unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    assert!(receipt.refused.is_empty() && receipt.clones_detected.is_empty());

    // An online charge of 20.00 follows the terminal's record.
    let charge = online_update(
        &server,
        &mut reader,
        &mut rng,
        [2; 16],
        &UpdateRequest {
            kind: TransactionKind::OnlineCharge,
            amount: amount(2_000),
            party: server_id,
            date: world.today(),
        },
        2,
    );
    assert_eq!(
        charge.previous.as_ref().map(|record| record.kind),
        Some(TransactionKind::Purchase)
    );
    let receipt = world
        .center
        .store_online_records(server_id, std::slice::from_ref(&charge))
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");

    // One balance: 50.00 - 12.50 - 7.50 + 20.00, on the card and in the center's books.
    let status = read_purse(&mut reader).unwrap();
    assert_eq!(status.balance, amount(5_000 - 1_250 - 750 + 2_000));
    let books = world.center.reconciliation().unwrap();
    assert_eq!(
        books.status(),
        ReconciliationStatus::Reconciled,
        "{books:?}"
    );
    assert_eq!(books.remaining, status.balance.minor());
    assert_eq!((books.online.spent, books.online.charged), (1_250, 2_000));
    assert_eq!(books.spent, 750);
    let remaining = world
        .center
        .remaining_value(&status.card_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (remaining.card_counter, remaining.balance),
        (status.counter, status.balance)
    );
}
