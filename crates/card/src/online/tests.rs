//! The common-key application driven with real APDUs, the security server's side played
//! with `SecureSession`: the whole ST11-ST18 exchange, the charge, the preview, and each
//! attack and fault the card must bound (replays, other sessions, altered messages, stale
//! counters, power cuts at every write, a lost PCN).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::crypto::{random_array, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{
    ins, BalanceInfo, BalanceReadout, BalanceUpdate, Completion, CompletionQuery, CompletionStatus,
    ExternalAuthenticate, InitializeUpdate, InitializeUpdateResponse, KeyInstallation, OnlineFci,
    OnlineRecord, SecureSession, SettlementId, SettlementPreview, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::{ins as purse_ins, TransactionKind, PURSE_AID};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;

use crate::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use crate::image::EEPROM_SIZE;
use crate::state::{PersistentState, Purse};
use crate::{testing, Card, CardError};

type TestCard = Card<FaultInjectingEeprom<MemoryEeprom>, ChaCha20Rng>;

/// How a test bends a genuine update.
type UpdateChange = Box<dyn Fn(BalanceUpdate) -> BalanceUpdate>;

const STORE: DeviceId = DeviceId(*b"STORE001");

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn send(card: &mut TestCard, command: Command) -> Response {
    card.process(&command.encode()).unwrap()
}

fn online(instruction: u8, data: Vec<u8>) -> Command {
    Command::new(CLA_ONLINE, instruction, 0, 0)
        .with_data(data)
        .with_le(256)
}

fn select(card: &mut TestCard, aid: &[u8]) -> Response {
    send(
        card,
        Command::new(0x00, purse_ins::SELECT, 0x04, 0x00)
            .with_data(aid.to_vec())
            .with_le(256),
    )
}

fn purse(card: &TestCard) -> &Purse {
    match card.state() {
        PersistentState::Personalized(purse) => purse,
        other => panic!("not personalized: {other:?}"),
    }
}

/// Test card 1 with `balance`, KC installed at version 1, the online application selected.
fn card_with_key(balance: u64, memory: &MemoryEeprom) -> TestCard {
    let mut card = Card::with_state(
        FaultInjectingEeprom::new(memory.clone()),
        testing::personalized(amount(balance)),
        ChaCha20Rng::seed_from_u64(7),
    )
    .unwrap();
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    let installation = testing::online_key_installation(1, 1, &mut OsRng);
    let response = send(&mut card, online(ins::INSTALL_KEY, installation.encode()));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    card
}

/// ST11: mutual authentication; the server's session.
fn authenticate(card: &mut TestCard) -> SecureSession {
    let host_challenge = random_array(&mut OsRng);
    let response = send(
        card,
        online(
            ins::INITIALIZE_UPDATE,
            InitializeUpdate { host_challenge }.encode(),
        ),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let answer = InitializeUpdateResponse::decode(&response.data).unwrap();
    assert_eq!(answer.key_version, 1);
    let (session, host_cryptogram) = SecureSession::authenticate(
        &testing::online_card_key(1, 1),
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
        &answer.card_cryptogram,
    )
    .unwrap();
    let response = send(
        card,
        online(
            ins::EXTERNAL_AUTHENTICATE,
            ExternalAuthenticate { host_cryptogram }.encode(),
        ),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    session
}

/// BRC for settlement `id`, sealed as the session's next message.
fn sealed_readout(session: &mut SecureSession, id: SettlementId) -> Vec<u8> {
    session
        .seal(
            ins::READ_BALANCE,
            &BalanceReadout { settlement_id: id }.encode(),
        )
        .unwrap()
}

/// ST12-ST13: BRC in, BI out.
fn read_balance(card: &mut TestCard, session: &mut SecureSession, id: SettlementId) -> BalanceInfo {
    let brc = sealed_readout(session, id);
    let response = send(card, online(ins::READ_BALANCE, brc));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    BalanceInfo::decode(&session.open(ins::READ_BALANCE, &response.data).unwrap()).unwrap()
}

/// ST14 on the server: the update for `info`, with the record signed by the server.
fn update_for(
    session: &SecureSession,
    info: &BalanceInfo,
    kind: TransactionKind,
    minor: u64,
) -> BalanceUpdate {
    let (server_key, certificate) = testing::online_server();
    let balance_after = if kind == TransactionKind::OnlinePayment {
        info.balance.checked_sub(amount(minor)).unwrap()
    } else {
        info.balance.checked_add(amount(minor)).unwrap()
    };
    let record = OnlineRecord {
        kind,
        card_id: info.card_id,
        writer: certificate.subject(),
        challenge_host: *session.host_challenge(),
        challenge_card: *session.card_challenge(),
        counter: info.counter + 1,
        amount: amount(minor),
        balance_after,
        writer_sequence: 41,
        date: testing::today(),
    };
    BalanceUpdate {
        settlement_id: info.settlement_id,
        kind,
        amount: amount(minor),
        counter: info.counter,
        balance_after,
        date: testing::today(),
        party: if kind == TransactionKind::OnlinePayment {
            STORE
        } else {
            certificate.subject()
        },
        writer: certificate.subject(),
        writer_sequence: 41,
        signature: server_key.sign(&record.signed_message()),
    }
}

/// A fresh session, BI for settlement `id`, and a genuine update of `kind` for `minor`.
fn prepared(
    card: &mut TestCard,
    id: SettlementId,
    kind: TransactionKind,
    minor: u64,
) -> (SecureSession, BalanceInfo, BalanceUpdate) {
    let mut session = authenticate(card);
    let info = read_balance(card, &mut session, id);
    let update = update_for(&session, &info, kind, minor);
    (session, info, update)
}

fn instruction_for(kind: TransactionKind) -> u8 {
    if kind == TransactionKind::OnlinePayment {
        ins::SETTLE
    } else {
        ins::CHARGE
    }
}

#[test]
fn an_online_payment_spends_the_purse_once_and_its_record_verifies() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = card_with_key(5_000, &memory);
    let fci = OnlineFci::decode(&select(&mut card, &ONLINE_AID).data).unwrap();
    assert_eq!(fci.card_id, testing::card_id(1));
    assert_eq!(fci.key_version, Some(1));
    let mut session = authenticate(&mut card);
    let id = [1; 16];
    let info = read_balance(&mut card, &mut session, id);
    assert_eq!(info.balance, amount(5_000));
    assert_eq!(info.counter, 0);
    assert_eq!(info.last_settlement, None);

    let update = update_for(&session, &info, TransactionKind::OnlinePayment, 1_250);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let response = send(&mut card, online(ins::SETTLE, spc.clone()));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let pcn = Completion::decode(&session.open(ins::SETTLE, &response.data).unwrap()).unwrap();
    assert_eq!(pcn.settlement_id, id);
    assert_eq!(pcn.balance_after, amount(3_750));
    assert_eq!(pcn.counter, 1);

    let state = purse(&card);
    assert_eq!(state.balance, amount(3_750));
    assert_eq!(state.counter, 1);
    // The log names the store; the record names the server and verifies under its key.
    let entry = state.log.front().unwrap();
    assert_eq!(entry.party, STORE);
    assert_eq!(entry.kind, TransactionKind::OnlinePayment);
    let record = state.last_usage.as_ref().unwrap();
    let (server_key, certificate) = testing::online_server();
    server_key
        .public_key()
        .verify(
            &record.signed_message(&testing::card_id(1)),
            &record.signature,
        )
        .unwrap();
    assert_eq!(state.last_writer_certificate.as_ref(), Some(&certificate));

    // The same SPC again, in this session or in a new one, changes nothing.
    let again = send(&mut card, online(ins::SETTLE, spc.clone()));
    assert_eq!(again.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    authenticate(&mut card);
    assert_eq!(
        send(&mut card, online(ins::SETTLE, spc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // Sealed again under the new session, the old update is bound to a counter the card
    // has left.
    let mut next_session = authenticate(&mut card);
    let resealed = next_session.seal(ins::SETTLE, &update.encode()).unwrap();
    assert_eq!(
        send(&mut card, online(ins::SETTLE, resealed)).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(purse(&card).balance, amount(3_750));
}

#[test]
fn an_online_charge_raises_the_balance_and_the_purse_spends_it_offline_too() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = card_with_key(1_000, &memory);
    let (mut session, _, update) =
        prepared(&mut card, [2; 16], TransactionKind::OnlineCharge, 4_000);
    // A charge sent as a payment, or a payment as a charge, is refused.
    let wrong = session.seal(ins::SETTLE, &update.encode()).unwrap();
    assert_eq!(
        send(&mut card, online(ins::SETTLE, wrong)).sw,
        StatusWord::WRONG_DATA
    );
    let (mut session, _, update) =
        prepared(&mut card, [2; 16], TransactionKind::OnlineCharge, 4_000);
    let sealed = session.seal(ins::CHARGE, &update.encode()).unwrap();
    let response = send(&mut card, online(ins::CHARGE, sealed));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let completion =
        Completion::decode(&session.open(ins::CHARGE, &response.data).unwrap()).unwrap();
    assert_eq!(completion.kind, TransactionKind::OnlineCharge);
    assert_eq!(purse(&card).balance, amount(5_000));
    // The purse application sees the same balance.
    assert_eq!(select(&mut card, &PURSE_AID).sw, StatusWord::SUCCESS);
    let status = send(
        &mut card,
        Command::new(0x80, purse_ins::READ_PURSE, 0, 0).with_le(256),
    );
    let status = valuecard_core::messages::purse::PurseStatus::decode(&status.data).unwrap();
    assert_eq!(status.balance, amount(5_000));
    assert_eq!(
        status.last_usage.unwrap().kind,
        TransactionKind::OnlineCharge
    );
    // Selecting the purse ended the online session.
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    let brc = sealed_readout(&mut session, [3; 16]);
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, brc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
}

#[test]
fn the_card_bounds_what_a_valid_session_can_ask() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = card_with_key(1_000, &memory);
    let cases: Vec<(&str, UpdateChange, StatusWord)> = vec![
        (
            "more than the balance",
            Box::new(|u| BalanceUpdate {
                amount: amount(1_001),
                balance_after: Amount::ZERO,
                ..u
            }),
            StatusWord::INSUFFICIENT_FUNDS,
        ),
        (
            "a balance after that does not add up",
            Box::new(|u| BalanceUpdate {
                balance_after: amount(999),
                ..u
            }),
            StatusWord::WRONG_DATA,
        ),
        (
            "another counter",
            Box::new(|u| BalanceUpdate {
                counter: u.counter + 1,
                ..u
            }),
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "another writer than the server that installed KC",
            Box::new(|u| BalanceUpdate {
                writer: DeviceId(*b"SECSERV2"),
                ..u
            }),
            StatusWord::WRONG_DATA,
        ),
    ];
    for (what, change, expected) in cases {
        let mut session = authenticate(&mut card);
        let info = read_balance(&mut card, &mut session, [4; 16]);
        let update = change(update_for(
            &session,
            &info,
            TransactionKind::OnlinePayment,
            100,
        ));
        let sealed = session.seal(ins::SETTLE, &update.encode()).unwrap();
        assert_eq!(
            send(&mut card, online(ins::SETTLE, sealed)).sw,
            expected,
            "{what}"
        );
        assert_eq!(purse(&card).balance, amount(1_000), "{what}");
        assert_eq!(purse(&card).counter, 0, "{what}");
    }
    // A charge past the largest balance a card holds.
    let (mut session, _, mut update) =
        prepared(&mut card, [5; 16], TransactionKind::OnlineCharge, 1);
    update.amount = Amount::MAX;
    update.balance_after = Amount::MAX;
    let sealed = session.seal(ins::CHARGE, &update.encode()).unwrap();
    assert_eq!(
        send(&mut card, online(ins::CHARGE, sealed)).sw,
        StatusWord::NOT_ENOUGH_MEMORY
    );
    assert_eq!(purse(&card).balance, amount(1_000));
}

#[test]
fn without_mutual_authentication_nothing_secured_is_accepted() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = card_with_key(1_000, &memory);
    // Secured commands before any session.
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, vec![0; 40])).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // A server that does not know KC fails at EXTERNAL AUTHENTICATE.
    let host_challenge = random_array(&mut OsRng);
    let response = send(
        &mut card,
        online(
            ins::INITIALIZE_UPDATE,
            InitializeUpdate { host_challenge }.encode(),
        ),
    );
    let answer = InitializeUpdateResponse::decode(&response.data).unwrap();
    let wrong_key = testing::online_card_key(2, 1);
    assert!(SecureSession::authenticate(
        &wrong_key,
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
        &answer.card_cryptogram,
    )
    .is_err());
    let forged = valuecard_core::messages::online::SessionKeys::derive(
        &wrong_key,
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
    );
    assert_eq!(
        send(
            &mut card,
            online(
                ins::EXTERNAL_AUTHENTICATE,
                ExternalAuthenticate {
                    host_cryptogram: forged.host_cryptogram()
                }
                .encode()
            )
        )
        .sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // The refused attempt ended the half-open session: the right cryptogram is too late.
    let (_, right) = SecureSession::authenticate(
        &testing::online_card_key(1, 1),
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
        &answer.card_cryptogram,
    )
    .unwrap();
    assert_eq!(
        send(
            &mut card,
            online(
                ins::EXTERNAL_AUTHENTICATE,
                ExternalAuthenticate {
                    host_cryptogram: right
                }
                .encode()
            )
        )
        .sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // An altered message ends an open session.
    let mut session = authenticate(&mut card);
    let mut brc = sealed_readout(&mut session, [1; 16]);
    brc[0] ^= 1;
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, brc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    let brc = sealed_readout(&mut session, [1; 16]);
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, brc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
}

#[test]
fn only_a_certified_security_server_installs_a_newer_key_for_this_card() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = Card::with_state(
        FaultInjectingEeprom::new(memory.clone()),
        testing::personalized(amount(1_000)),
        ChaCha20Rng::seed_from_u64(7),
    )
    .unwrap();
    let fci = OnlineFci::decode(&select(&mut card, &ONLINE_AID).data).unwrap();
    assert_eq!(fci.key_version, None);
    // No session without a key.
    assert_eq!(
        send(
            &mut card,
            online(
                ins::INITIALIZE_UPDATE,
                InitializeUpdate {
                    host_challenge: [0; 16]
                }
                .encode()
            )
        )
        .sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let good = testing::online_key_installation(1, 1, &mut OsRng);
    // A terminal's certificate, a forged signature, another card's sealed key.
    let (terminal_key, terminal_certificate) = testing::terminal();
    let by_terminal = KeyInstallation {
        server_certificate: terminal_certificate,
        signature: terminal_key.sign(&KeyInstallation::signed_message(
            &testing::card_id(1),
            1,
            &good.sealed_key,
        )),
        ..good.clone()
    };
    let forged = KeyInstallation {
        signature: SigningKeyPair::generate(&mut OsRng).sign(&KeyInstallation::signed_message(
            &testing::card_id(1),
            1,
            &good.sealed_key,
        )),
        ..good.clone()
    };
    let for_card_2 = testing::online_key_installation(2, 1, &mut OsRng);
    let (server_key, _) = testing::online_server();
    let other_card_key = KeyInstallation {
        signature: server_key.sign(&KeyInstallation::signed_message(
            &testing::card_id(1),
            1,
            &for_card_2.sealed_key,
        )),
        sealed_key: for_card_2.sealed_key.clone(),
        ..good.clone()
    };
    for (what, installation) in [
        ("a terminal", by_terminal),
        ("a forged signature", forged),
        ("another card's key", other_card_key),
        ("an installation signed for another card", for_card_2),
    ] {
        let response = send(&mut card, online(ins::INSTALL_KEY, installation.encode()));
        assert_eq!(
            response.sw,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            "{what}"
        );
        assert!(purse(&card).online.is_none(), "{what}");
    }
    assert_eq!(
        send(&mut card, online(ins::INSTALL_KEY, good.encode())).sw,
        StatusWord::SUCCESS
    );
    // The same version again, or an older one, is refused; a newer one replaces it.
    let again = testing::online_key_installation(1, 1, &mut OsRng);
    assert_eq!(
        send(&mut card, online(ins::INSTALL_KEY, again.encode())).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let newer = testing::online_key_installation(1, 2, &mut OsRng);
    assert_eq!(
        send(&mut card, online(ins::INSTALL_KEY, newer.encode())).sw,
        StatusWord::SUCCESS
    );
    let online_app = purse(&card).online.as_ref().unwrap();
    assert_eq!(online_app.key_version, 2);
    assert_eq!(online_app.card_key, testing::online_card_key(1, 2));
}

#[test]
fn the_preview_shows_the_update_without_applying_it() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = card_with_key(5_000, &memory);
    let (mut session, _, update) =
        prepared(&mut card, [6; 16], TransactionKind::OnlinePayment, 700);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let response = send(
        &mut card,
        Command::new(CLA_ONLINE, ins::PREVIEW, 0, 0)
            .with_data(spc.clone())
            .with_le(256),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let preview = SettlementPreview::decode(&response.data).unwrap();
    assert_eq!(preview.amount, amount(700));
    assert_eq!(preview.balance_before, amount(5_000));
    assert_eq!(preview.balance_after, amount(4_300));
    assert_eq!(preview.party, STORE);
    assert_eq!(purse(&card).balance, amount(5_000));
    // Previewed as a charge, it does not open.
    assert_eq!(
        send(
            &mut card,
            Command::new(CLA_ONLINE, ins::PREVIEW, 1, 0)
                .with_data(spc.clone())
                .with_le(256)
        )
        .sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // That ended the session; in a fresh one the holder previews, then the card applies.
    let (mut session, _, update) =
        prepared(&mut card, [6; 16], TransactionKind::OnlinePayment, 700);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let preview = send(
        &mut card,
        Command::new(CLA_ONLINE, ins::PREVIEW, 0, 0)
            .with_data(spc.clone())
            .with_le(256),
    );
    assert_eq!(preview.sw, StatusWord::SUCCESS);
    let response = send(&mut card, online(ins::SETTLE, spc));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    session.open(ins::SETTLE, &response.data).unwrap();
    assert_eq!(purse(&card).balance, amount(4_300));
}

/// A card pulled before SETTLE can never apply that SPC; pulled after it (the PCN lost),
/// the completion is answered again in a new session.
#[test]
fn a_card_pulled_before_or_after_settle_tells_the_server_what_happened() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = card_with_key(5_000, &memory);
    let (mut session, info, update) =
        prepared(&mut card, [7; 16], TransactionKind::OnlinePayment, 900);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    // Pulled before SETTLE: a new power-up, the SPC no longer opens.
    card.reset();
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    assert_eq!(
        send(&mut card, online(ins::SETTLE, spc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    let mut recovery = authenticate(&mut card);
    let status = completion_status(&mut card, &mut recovery, [7; 16]);
    assert_eq!(status.applied, None);
    assert_eq!(status.counter, info.counter);
    assert_eq!(status.balance, amount(5_000));

    // Applied, then pulled before the PCN reached the server.
    let (mut session, info, update) =
        prepared(&mut card, [8; 16], TransactionKind::OnlinePayment, 900);
    let spc = session.seal(ins::SETTLE, &update.encode()).unwrap();
    let lost = send(&mut card, online(ins::SETTLE, spc));
    assert_eq!(lost.sw, StatusWord::SUCCESS);
    card.reset();
    assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
    let mut recovery = authenticate(&mut card);
    let status = completion_status(&mut card, &mut recovery, [8; 16]);
    let applied = status.applied.unwrap();
    assert_eq!(applied.balance_after, amount(4_100));
    assert_eq!(applied.counter, info.counter + 1);
    // Asked about the earlier settlement, the card says it did not apply it.
    let earlier = completion_status(&mut card, &mut recovery, [7; 16]);
    assert_eq!(earlier.applied, None);
    let info = read_balance(&mut card, &mut recovery, [9; 16]);
    assert_eq!(info.last_settlement, Some([8; 16]));
    // BI hands the security server the record that the next online record follows.
    let last = info.last_usage.unwrap();
    assert_eq!(last.kind, TransactionKind::OnlinePayment);
    assert_eq!(
        (last.counter, last.balance_after),
        (info.counter, info.balance)
    );
}

fn completion_status(
    card: &mut TestCard,
    session: &mut SecureSession,
    settlement_id: SettlementId,
) -> CompletionStatus {
    let query = session
        .seal(
            ins::GET_COMPLETION,
            &CompletionQuery { settlement_id }.encode(),
        )
        .unwrap();
    let response = send(card, online(ins::GET_COMPLETION, query));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    CompletionStatus::decode(&session.open(ins::GET_COMPLETION, &response.data).unwrap()).unwrap()
}

/// A power cut at every write of SETTLE and CHARGE: the card powers up with the old state
/// or the whole new one (balance, counter, record, log and completion together), and GET
/// COMPLETION says which.
#[test]
fn a_power_cut_at_any_write_applies_all_of_an_update_or_none_of_it() {
    let (mut applied, mut not_applied) = (0, 0);
    for kind in [
        TransactionKind::OnlinePayment,
        TransactionKind::OnlineCharge,
    ] {
        // How many writes the update takes when nothing fails: every one of them, and the
        // one after the last, is a place to cut.
        let writes = {
            let memory = MemoryEeprom::new(EEPROM_SIZE);
            let mut card = card_with_key(5_000, &memory);
            let (mut session, _, update) = prepared(&mut card, [0; 16], kind, 1_000);
            let sealed = session
                .seal(instruction_for(kind), &update.encode())
                .unwrap();
            let before = card.eeprom_mut().writes();
            let response = send(&mut card, online(instruction_for(kind), sealed));
            assert_eq!(response.sw, StatusWord::SUCCESS);
            card.eeprom_mut().writes() - before
        };
        assert!(writes > 1);
        for cut in 1..=writes + 1 {
            for (numerator, denominator) in [(0, 1), (1, 2), (1, 1)] {
                let memory = MemoryEeprom::new(EEPROM_SIZE);
                let mut card = card_with_key(5_000, &memory);
                let mut session = authenticate(&mut card);
                let id = [(cut % 251) as u8 + 1; 16];
                let info = read_balance(&mut card, &mut session, id);
                let update = update_for(&session, &info, kind, 1_000);
                let sealed = session
                    .seal(instruction_for(kind), &update.encode())
                    .unwrap();
                card.eeprom_mut().cut_power_at(cut, numerator, denominator);
                let outcome = card.process(&online(instruction_for(kind), sealed).encode());
                let mut card = match outcome {
                    Err(CardError::PowerLost) => Card::open(
                        FaultInjectingEeprom::new(memory.clone()),
                        ChaCha20Rng::seed_from_u64(8),
                    )
                    .unwrap(),
                    Ok(response) => {
                        assert_eq!(response.sw, StatusWord::SUCCESS);
                        card
                    }
                    Err(other) => panic!("{other:?}"),
                };
                assert_eq!(select(&mut card, &ONLINE_AID).sw, StatusWord::SUCCESS);
                let purse = purse(&card).clone();
                let mut recovery = authenticate(&mut card);
                let status = completion_status(&mut card, &mut recovery, id);
                match status.applied {
                    Some(completion) => {
                        applied += 1;
                        assert_eq!(purse.balance, update.balance_after);
                        assert_eq!(purse.counter, 1);
                        assert_eq!(completion.balance_after, update.balance_after);
                        assert_eq!(purse.last_usage.as_ref().unwrap().kind, kind);
                        assert_eq!(purse.log.len(), 1);
                    }
                    None => {
                        not_applied += 1;
                        assert_eq!(purse.balance, amount(5_000));
                        assert_eq!(purse.counter, 0);
                        assert!(purse.last_usage.is_none());
                        assert!(purse.log.is_empty());
                    }
                }
            }
        }
    }
    // Cuts early in the write lose the update, cuts after it landed keep it.
    assert!(
        applied > 0 && not_applied > 0,
        "{applied} applied, {not_applied} not"
    );
}
