//! The security server's steps against a real emulated card (its common-key application),
//! with the APDUs a holder's client would pass between them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_card::testing;
use valuecard_core::crypto::{AesKey, SigningKeyPair};
use valuecard_core::messages::online::{ins, InitializeUpdateResponse, SettlementId};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;

use super::*;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn master(byte: u8) -> AesKey {
    AesKey::from_slice(&[byte; 16]).unwrap()
}

/// The security server of the test scheme (its certificate from the card's test root).
fn server() -> SecurityServer<SoftwareSecurityKeys> {
    let (_, certificate) = testing::online_server();
    SecurityServer::new(SoftwareSecurityKeys::new(
        master(0x4D),
        SigningKeyPair::from_seed(&[0x5C; 32]),
        certificate,
    ))
}

use crate::testing::{TestHolder as Holder, STORE};

fn request(kind: TransactionKind, minor: u64) -> UpdateRequest {
    UpdateRequest {
        kind,
        amount: amount(minor),
        party: STORE,
        date: testing::today(),
    }
}

/// A whole update: offered, applied by the card, completed at the server.
fn run(
    server: &SecurityServer<SoftwareSecurityKeys>,
    holder: &mut Holder,
    settlement_id: SettlementId,
    kind: TransactionKind,
    minor: u64,
    sequence: u32,
) -> OnlineItem {
    let (session, bi) = holder.open(server, settlement_id);
    let (offered, sealed) = server
        .offer(
            settlement_id,
            &session,
            &bi,
            &request(kind, minor),
            sequence,
        )
        .unwrap();
    let instruction = if kind == TransactionKind::OnlinePayment {
        ins::SETTLE
    } else {
        ins::CHARGE
    };
    let pcn = holder.ok(instruction, sealed);
    match server.complete(&offered, &pcn).unwrap() {
        Step::Completed { item, .. } => item,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_payment_and_a_charge_chain_and_their_records_verify() {
    let server = server();
    let mut holder = Holder::new(&server, 5_000);
    let payment = run(
        &server,
        &mut holder,
        [1; 16],
        TransactionKind::OnlinePayment,
        1_250,
        1,
    );
    assert_eq!(holder.balance(), amount(3_750));
    assert_eq!(payment.previous, None);
    assert_eq!(payment.record.counter, 1);
    assert_eq!(payment.record.writer, server.keys().device_id());
    server
        .keys()
        .signing_key()
        .verify(
            &payment.record.signed_message(&payment.card_id),
            &payment.record.signature,
        )
        .unwrap();
    let charge = run(
        &server,
        &mut holder,
        [2; 16],
        TransactionKind::OnlineCharge,
        2_000,
        2,
    );
    assert_eq!(holder.balance(), amount(5_750));
    // The charge follows the payment in the card's one chain.
    assert_eq!(charge.previous.as_ref(), Some(&payment.record));
    assert_eq!(charge.record.counter, 2);
}

#[test]
fn an_insufficient_balance_is_refused_before_anything_reaches_the_card() {
    let server = server();
    let mut holder = Holder::new(&server, 1_000);
    let (session, bi) = holder.open(&server, [3; 16]);
    assert_eq!(
        server.offer(
            [3; 16],
            &session,
            &bi,
            &request(TransactionKind::OnlinePayment, 1_001),
            1
        ),
        Err(SecurityError::InsufficientBalance {
            spendable: amount(1_000),
            amount: amount(1_001)
        })
    );
    // A charge past the largest balance a card holds.
    let (session, bi) = holder.open(&server, [4; 16]);
    assert!(matches!(
        server.offer(
            [4; 16],
            &session,
            &bi,
            &request(TransactionKind::OnlineCharge, Amount::MAX.minor()),
            1
        ),
        Err(SecurityError::OverLimit { .. })
    ));
    assert_eq!(holder.balance(), amount(1_000));
}

#[test]
fn a_card_that_does_not_hold_this_cards_key_is_refused() {
    let server = server();
    let mut holder = Holder::new(&server, 1_000);
    holder.select();
    let (step, initialize) = server.challenge([5; 16], &mut holder.rng);
    let Step::Challenged { host_challenge, .. } = step else {
        panic!()
    };
    let answer =
        InitializeUpdateResponse::decode(&holder.ok(ins::INITIALIZE_UPDATE, initialize.encode()))
            .unwrap();
    // The chip claims to be card 2: its cryptogram does not prove card 2's KC.
    assert!(matches!(
        server.authenticate([5; 16], &host_challenge, testing::card_id(2), &answer),
        Err(SecurityError::Session(SessionError::CardCryptogram))
    ));
    // A KC version the server never had.
    let unknown = InitializeUpdateResponse {
        key_version: 9,
        ..answer
    };
    assert_eq!(
        server
            .authenticate([5; 16], &host_challenge, testing::card_id(1), &unknown)
            .map(|_| ()),
        Err(SecurityError::UnknownKeyVersion(9))
    );
}

#[test]
fn a_pcn_that_is_not_the_cards_answer_is_refused() {
    let server = server();
    let mut holder = Holder::new(&server, 5_000);
    let (session, bi) = holder.open(&server, [6; 16]);
    let (offered, sealed) = server
        .offer(
            [6; 16],
            &session,
            &bi,
            &request(TransactionKind::OnlinePayment, 500),
            1,
        )
        .unwrap();
    let mut pcn = holder.ok(ins::SETTLE, sealed);
    pcn[3] ^= 1;
    assert_eq!(
        server.complete(&offered, &pcn),
        Err(SecurityError::Session(SessionError::Unreadable))
    );
    // BI sent back as if it were the PCN does not open either (another place, another INS).
    assert!(server.complete(&offered, &bi).is_err());
}

#[test]
fn a_card_pulled_before_settle_voids_the_settlement_and_after_it_completes_it() {
    let server = server();
    let mut holder = Holder::new(&server, 5_000);

    // Pulled before SETTLE: the card never applies this SPC.
    let (session, bi) = holder.open(&server, [7; 16]);
    let (offered, sealed) = server
        .offer(
            [7; 16],
            &session,
            &bi,
            &request(TransactionKind::OnlinePayment, 800),
            1,
        )
        .unwrap();
    holder.card.reset();
    let (fresh, bi) = holder.open(&server, [7; 16]);
    let (fresh, query) = server.completion_query(&offered, &fresh, &bi).unwrap();
    let status = holder.ok(ins::GET_COMPLETION, query);
    assert_eq!(
        server.resolve(&offered, &fresh, &status),
        Ok(Step::Voided {
            settlement_id: [7; 16]
        })
    );
    assert_eq!(
        holder.exchange(ins::SETTLE, sealed).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    assert_eq!(holder.balance(), amount(5_000));

    // Applied, and the PCN lost: a new session recovers the completion.
    let (session, bi) = holder.open(&server, [8; 16]);
    let (offered, sealed) = server
        .offer(
            [8; 16],
            &session,
            &bi,
            &request(TransactionKind::OnlinePayment, 800),
            2,
        )
        .unwrap();
    let lost_pcn = holder.ok(ins::SETTLE, sealed);
    let (fresh, bi) = holder.open(&server, [8; 16]);
    let (fresh, query) = server.completion_query(&offered, &fresh, &bi).unwrap();
    let status = holder.ok(ins::GET_COMPLETION, query);
    let resolved = server.resolve(&offered, &fresh, &status).unwrap();
    assert_eq!(resolved, server.complete(&offered, &lost_pcn).unwrap());
    assert!(matches!(resolved, Step::Completed { .. }));
    assert_eq!(holder.balance(), amount(4_200));
    // The old session's answer cannot resolve it: the recovery needs a new session.
    assert!(server.resolve(&offered, &session, &status).is_err());
}

#[test]
fn a_newer_master_key_reaches_new_cards_while_older_cards_keep_working() {
    let mut server = server();
    let mut older = Holder::new(&server, 2_000);
    server.keys_mut().rotate(master(0x4E));
    assert_eq!(server.keys().current_version(), 2);
    // The older card still settles under version 1.
    run(
        &server,
        &mut older,
        [9; 16],
        TransactionKind::OnlinePayment,
        100,
        1,
    );
    // Given the newer key, it answers with version 2 and settles under it.
    let installation = server
        .install_key(
            &testing::card_certificate(1),
            &testing::anchor(),
            testing::today(),
            &mut older.rng,
        )
        .unwrap();
    older.select();
    older.ok(ins::INSTALL_KEY, installation.encode());
    assert_eq!(older.select().key_version, Some(2));
    run(
        &server,
        &mut older,
        [10; 16],
        TransactionKind::OnlinePayment,
        100,
        2,
    );
    assert_eq!(older.balance(), amount(1_800));
}
