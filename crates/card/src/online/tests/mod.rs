//! The common-key application driven with real APDUs, the security server's side played
//! with `SecureSession`: the whole ST11-ST18 exchange, the charge, the preview
//! (`exchange.rs`); each attack the card must bound: replays, other sessions, altered
//! messages, stale counters, forged key installations (`refusals.rs`); and a power cut at
//! every write (`power.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exchange;
mod power;
mod refusals;

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::crypto::random_array;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{
    ins, BalanceInfo, BalanceReadout, BalanceUpdate, CompletionQuery, CompletionStatus,
    OnlineRecord, SecureSession, SettlementId, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::{ins as purse_ins, TransactionKind};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;

use crate::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use crate::image::EEPROM_SIZE;
use crate::state::{PersistentState, Purse};
use crate::{testing, Card};

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

/// Test card 1 in `memory` with `balance`, KC installed at version 1, the online
/// application selected.
fn card_on(memory: &MemoryEeprom, balance: u64) -> TestCard {
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

/// The same in a memory of its own.
fn card_with_key(balance: u64) -> TestCard {
    card_on(&MemoryEeprom::new(EEPROM_SIZE), balance)
}

/// ST11: mutual authentication; the server's session.
fn authenticate(card: &mut TestCard) -> SecureSession {
    testing::online_session(card, random_array(&mut OsRng)).expect("mutual authentication")
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

/// `update` sealed as the session's next message and sent with `instruction`.
fn submit(
    card: &mut TestCard,
    session: &mut SecureSession,
    instruction: u8,
    update: &BalanceUpdate,
) -> Response {
    let sealed = session.seal(instruction, &update.encode()).unwrap();
    send(card, online(instruction, sealed))
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
