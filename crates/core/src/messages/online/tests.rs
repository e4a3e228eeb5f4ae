use super::*;
use crate::cert::{CertificateBody, Role};
use crate::crypto::{AesKey, SecretBytes, Signature, SigningKeyPair};
use crate::ids::{CardId, DeviceId};
use crate::messages::purse::TransactionKind;
use crate::money::Amount;
use crate::time::Date;
use rand_core::OsRng;

const CARD: CardId = CardId([0xCA, 0, 0, 0, 0, 0, 0, 7]);

fn card_key() -> AesKey {
    SecretBytes([0x42; 16])
}

fn update() -> BalanceUpdate {
    BalanceUpdate {
        settlement_id: [9; SETTLEMENT_ID_LEN],
        kind: TransactionKind::OnlinePayment,
        amount: Amount::new(1_250).unwrap(),
        counter: 4,
        balance_after: Amount::new(3_750).unwrap(),
        date: Date::from_ymd(2026, 11, 30).unwrap(),
        party: DeviceId([0x5A, 0, 0, 0, 0, 0, 0, 1]),
        writer: DeviceId([0x55, 0, 0, 0, 0, 0, 0, 1]),
        writer_sequence: 77,
        signature: Signature([3; 64]),
    }
}

#[test]
fn card_and_server_derive_one_session_and_prove_it_to_each_other() {
    let host = [1u8; 16];
    let card = [2u8; 16];
    let at_card = SessionKeys::derive(&card_key(), &CARD, &host, &card);
    let at_server = SessionKeys::derive(&card_key(), &CARD, &host, &card);
    assert_eq!(at_card.card_cryptogram(), at_server.card_cryptogram());
    assert_eq!(at_card.host_cryptogram(), at_server.host_cryptogram());
    assert_ne!(at_card.card_cryptogram(), at_card.host_cryptogram());
    // Another key, card or challenge gives other cryptograms.
    for other in [
        SessionKeys::derive(&SecretBytes([0x43; 16]), &CARD, &host, &card),
        SessionKeys::derive(
            &card_key(),
            &CardId([0xCA, 0, 0, 0, 0, 0, 0, 8]),
            &host,
            &card,
        ),
        SessionKeys::derive(&card_key(), &CARD, &[9; 16], &card),
        SessionKeys::derive(&card_key(), &CARD, &host, &[9; 16]),
    ] {
        assert_ne!(other.card_cryptogram(), at_card.card_cryptogram());
        assert_ne!(other.host_cryptogram(), at_card.host_cryptogram());
    }
}

#[test]
fn a_secured_message_opens_only_in_its_session_direction_place_and_command() {
    let session = SessionKeys::derive(&card_key(), &CARD, &[1; 16], &[2; 16]);
    let plaintext = update().encode();
    let sealed = session.seal(Direction::ToCard, 3, ins::SETTLE, &plaintext);
    assert_eq!(sealed.len(), plaintext.len() + SECURED_OVERHEAD);
    assert_eq!(
        session
            .open(Direction::ToCard, 3, ins::SETTLE, &sealed)
            .unwrap(),
        plaintext
    );
    assert!(session
        .open(Direction::ToCard, 4, ins::SETTLE, &sealed)
        .is_err());
    assert!(session
        .open(Direction::ToServer, 3, ins::SETTLE, &sealed)
        .is_err());
    assert!(session
        .open(Direction::ToCard, 3, ins::CHARGE, &sealed)
        .is_err());
    let other_session = SessionKeys::derive(&card_key(), &CARD, &[1; 16], &[3; 16]);
    assert!(other_session
        .open(Direction::ToCard, 3, ins::SETTLE, &sealed)
        .is_err());
    let mut altered = sealed.clone();
    altered[5] ^= 1;
    assert!(session
        .open(Direction::ToCard, 3, ins::SETTLE, &altered)
        .is_err());
}

#[test]
fn every_message_round_trips() {
    let fci = OnlineFci {
        card_id: CARD,
        key_version: Some(2),
    };
    assert_eq!(OnlineFci::decode(&fci.encode()).unwrap(), fci);
    let bare = OnlineFci {
        card_id: CARD,
        key_version: None,
    };
    assert_eq!(OnlineFci::decode(&bare.encode()).unwrap(), bare);

    let root = SigningKeyPair::generate(&mut OsRng);
    let server = SigningKeyPair::generate(&mut OsRng);
    let certificate = CertificateBody {
        issuer: DeviceId([0xCE, 0, 0, 0, 0, 0, 0, 1]),
        subject: DeviceId([0x55, 0, 0, 0, 0, 0, 0, 1]),
        role: Role::OnlineSettlement,
        effective: Date::from_ymd(2026, 1, 1).unwrap(),
        expiry: Date::from_ymd(2030, 1, 1).unwrap(),
        signing_key: server.public_key(),
        sealing_key: None,
    }
    .sign(&root);
    let installation = KeyInstallation {
        server_certificate: certificate,
        key_version: 1,
        sealed_key: vec![7; 64],
        signature: Signature([5; 64]),
    };
    assert_eq!(
        KeyInstallation::decode(&installation.encode()).unwrap(),
        installation
    );

    let init = InitializeUpdate {
        host_challenge: [4; 16],
    };
    assert_eq!(InitializeUpdate::decode(&init.encode()).unwrap(), init);
    let answer = InitializeUpdateResponse {
        card_challenge: [5; 16],
        card_cryptogram: [6; 8],
        key_version: 1,
    };
    assert_eq!(
        InitializeUpdateResponse::decode(&answer.encode()).unwrap(),
        answer
    );
    let external = ExternalAuthenticate {
        host_cryptogram: [7; 8],
    };
    assert_eq!(
        ExternalAuthenticate::decode(&external.encode()).unwrap(),
        external
    );
    let readout = BalanceReadout {
        settlement_id: [8; 16],
    };
    assert_eq!(BalanceReadout::decode(&readout.encode()).unwrap(), readout);
    let record = OnlineRecord {
        kind: TransactionKind::OnlineCharge,
        card_id: CARD,
        writer: DeviceId([0x55, 0, 0, 0, 0, 0, 0, 1]),
        challenge_host: [1; 16],
        challenge_card: [2; 16],
        counter: 4,
        amount: Amount::new(5_000).unwrap(),
        balance_after: Amount::new(5_000).unwrap(),
        writer_sequence: 3,
        date: Date::from_ymd(2026, 11, 30).unwrap(),
    }
    .usage_record(Signature([7; 64]));
    for (last_settlement, last_usage) in [(None, None), (Some([1; 16]), Some(record.clone()))] {
        let info = BalanceInfo {
            card_id: CARD,
            settlement_id: [8; 16],
            balance: Amount::new(5_000).unwrap(),
            spendable: Amount::new(4_000).unwrap(),
            counter: 4,
            date: Date::from_ymd(2026, 11, 30).unwrap(),
            last_settlement,
            last_usage,
        };
        assert_eq!(BalanceInfo::decode(&info.encode()).unwrap(), info);
    }
    // A last record that does not describe the balance and counter is refused.
    let mismatched = BalanceInfo {
        card_id: CARD,
        settlement_id: [8; 16],
        balance: Amount::new(4_999).unwrap(),
        spendable: Amount::new(4_000).unwrap(),
        counter: 4,
        date: Date::from_ymd(2026, 11, 30).unwrap(),
        last_settlement: None,
        last_usage: Some(record),
    };
    assert!(BalanceInfo::decode(&mismatched.encode()).is_err());
    for kind in [
        TransactionKind::OnlinePayment,
        TransactionKind::OnlineCharge,
    ] {
        let update = BalanceUpdate { kind, ..update() };
        assert_eq!(BalanceUpdate::decode(&update.encode()).unwrap(), update);
    }
    let completion = Completion {
        settlement_id: [9; 16],
        kind: TransactionKind::OnlinePayment,
        amount: Amount::new(1_250).unwrap(),
        counter: 5,
        balance_after: Amount::new(3_750).unwrap(),
    };
    assert_eq!(
        Completion::decode(&completion.encode()).unwrap(),
        completion
    );
    let query = CompletionQuery {
        settlement_id: [9; 16],
    };
    assert_eq!(CompletionQuery::decode(&query.encode()).unwrap(), query);
    for applied in [None, Some(completion.clone())] {
        let status = CompletionStatus {
            settlement_id: [9; 16],
            applied,
            counter: 5,
            balance: Amount::new(3_750).unwrap(),
        };
        assert_eq!(CompletionStatus::decode(&status.encode()).unwrap(), status);
    }
    let preview = SettlementPreview {
        settlement_id: [9; 16],
        kind: TransactionKind::OnlinePayment,
        amount: Amount::new(1_250).unwrap(),
        balance_before: Amount::new(5_000).unwrap(),
        balance_after: Amount::new(3_750).unwrap(),
        party: DeviceId([0x5A, 0, 0, 0, 0, 0, 0, 1]),
        date: Date::from_ymd(2026, 11, 30).unwrap(),
    };
    assert_eq!(
        SettlementPreview::decode(&preview.encode()).unwrap(),
        preview
    );
}

#[test]
fn decoders_refuse_what_no_encoder_writes() {
    let mut trailing = update().encode();
    trailing.extend_from_slice(&[0x80, 0x00]);
    assert!(BalanceUpdate::decode(&trailing).is_err());
    // An offline kind in an online update, and a zero amount.
    let purchase = BalanceUpdate {
        kind: TransactionKind::Purchase,
        ..update()
    };
    assert!(BalanceUpdate::decode(&purchase.encode()).is_err());
    let zero = BalanceUpdate {
        amount: Amount::ZERO,
        ..update()
    };
    assert!(BalanceUpdate::decode(&zero.encode()).is_err());
    // A balance readout whose spendable part exceeds the balance.
    let info = BalanceInfo {
        card_id: CARD,
        settlement_id: [8; 16],
        balance: Amount::new(1).unwrap(),
        spendable: Amount::new(2).unwrap(),
        counter: 0,
        date: Date(0),
        last_settlement: None,
        last_usage: None,
    };
    assert!(BalanceInfo::decode(&info.encode()).is_err());
    // A completion status whose completion names another settlement.
    let status = CompletionStatus {
        settlement_id: [9; 16],
        applied: Some(Completion {
            settlement_id: [1; 16],
            kind: TransactionKind::OnlineCharge,
            amount: Amount::new(1).unwrap(),
            counter: 1,
            balance_after: Amount::new(1).unwrap(),
        }),
        counter: 1,
        balance: Amount::new(1).unwrap(),
    };
    assert!(CompletionStatus::decode(&status.encode()).is_err());
    assert!(OnlineFci::decode(&[]).is_err());
    assert!(InitializeUpdate::decode(&[0x84, 0x01, 0x00]).is_err());
}

#[test]
fn the_record_signature_covers_every_field_and_reads_back_from_the_kept_record() {
    let record = OnlineRecord {
        kind: TransactionKind::OnlinePayment,
        card_id: CARD,
        writer: DeviceId([0x55, 0, 0, 0, 0, 0, 0, 1]),
        challenge_host: [1; 16],
        challenge_card: [2; 16],
        counter: 5,
        amount: Amount::new(1_250).unwrap(),
        balance_after: Amount::new(3_750).unwrap(),
        writer_sequence: 77,
        date: Date::from_ymd(2026, 11, 30).unwrap(),
    };
    let kept = record.usage_record(Signature([3; 64]));
    assert_eq!(OnlineRecord::of_usage_record(&CARD, &kept), record);
    assert_eq!(kept.signed_message(&CARD), record.signed_message());
    let base = record.signed_message();
    let changed = [
        OnlineRecord {
            kind: TransactionKind::OnlineCharge,
            ..record.clone()
        },
        OnlineRecord {
            card_id: CardId([0xCA, 0, 0, 0, 0, 0, 0, 8]),
            ..record.clone()
        },
        OnlineRecord {
            writer: DeviceId([0x55, 0, 0, 0, 0, 0, 0, 2]),
            ..record.clone()
        },
        OnlineRecord {
            challenge_host: [9; 16],
            ..record.clone()
        },
        OnlineRecord {
            challenge_card: [9; 16],
            ..record.clone()
        },
        OnlineRecord {
            counter: 6,
            ..record.clone()
        },
        OnlineRecord {
            amount: Amount::new(1_251).unwrap(),
            ..record.clone()
        },
        OnlineRecord {
            balance_after: Amount::new(3_749).unwrap(),
            ..record.clone()
        },
        OnlineRecord {
            writer_sequence: 78,
            ..record.clone()
        },
        OnlineRecord {
            date: Date::from_ymd(2026, 12, 1).unwrap(),
            ..record.clone()
        },
    ];
    for other in changed {
        assert_ne!(other.signed_message(), base);
    }
}

/// How a test breaks a genuine bill.
type BillChange = Box<dyn Fn(&mut Bill)>;

fn bill() -> Bill {
    Bill {
        store: DeviceId(*b"MALL0001"),
        member_store: Some(DeviceId(*b"STORE001")),
        order_number: 1001,
        lines: vec![
            BillLine {
                item: "An album (download)".into(),
                quantity: 1,
                unit_price: Amount::new(900).unwrap(),
            },
            BillLine {
                item: "Liner notes".into(),
                quantity: 2,
                unit_price: Amount::new(175).unwrap(),
            },
        ],
        total: Amount::new(1_250).unwrap(),
        issued: Date::from_ymd(2026, 11, 30).unwrap(),
        expires: Date::from_ymd(2026, 12, 1).unwrap(),
    }
}

#[test]
fn the_documents_round_trip_and_each_signature_covers_its_own_string() {
    let bill = bill();
    assert_eq!(Bill::decode(&bill.encode()).unwrap(), bill);
    let single_store = Bill {
        member_store: None,
        ..bill.clone()
    };
    assert_eq!(Bill::decode(&single_store.encode()).unwrap(), single_store);
    let completion = SettlementCompletion {
        settlement_id: [3; 16],
        bill_digest: bill.digest(),
        store: bill.store,
        order_number: bill.order_number,
        amount: bill.total,
        card_id: CARD,
        counter: 5,
        date: bill.issued,
    };
    assert_eq!(
        SettlementCompletion::decode(&completion.encode()).unwrap(),
        completion
    );
    let receipt = Receipt {
        settlement_id: [3; 16],
        completion_digest: completion.digest(),
        store: bill.store,
        order_number: bill.order_number,
        amount: bill.total,
        date: bill.issued,
    };
    assert_eq!(Receipt::decode(&receipt.encode()).unwrap(), receipt);
    // Five strings, five labels: no signature of one kind passes for another.
    let strings = [
        bill.signed_message(),
        settlement_offer_message(&[3; 16], &bill.digest(), b"bi", b"spc"),
        completion.signed_message(),
        receipt.signed_message(),
        charge_offer_message(&[3; 16], &CARD, bill.total, "AUTH1", b"update"),
    ];
    for (i, a) in strings.iter().enumerate() {
        for b in &strings[i + 1..] {
            assert_ne!(a[..20], b[..20]);
        }
    }
    // A bill changed anywhere has another digest.
    let mut other = bill.clone();
    other.order_number += 1;
    assert_ne!(other.digest(), bill.digest());
    // SIG2 binds BI and SPC apart: moving bytes between them changes the string.
    assert_ne!(
        settlement_offer_message(&[3; 16], &bill.digest(), b"bis", b"pc"),
        settlement_offer_message(&[3; 16], &bill.digest(), b"bi", b"spc")
    );
}

#[test]
fn a_bill_that_does_not_hold_together_is_refused() {
    let changes: Vec<(&str, BillChange)> = vec![
        (
            "a total above the lines",
            Box::new(|b| b.total = Amount::new(1_251).unwrap()),
        ),
        (
            "no lines",
            Box::new(|b| {
                b.lines.clear();
                b.total = Amount::ZERO;
            }),
        ),
        ("an empty item", Box::new(|b| b.lines[0].item.clear())),
        ("a zero quantity", Box::new(|b| b.lines[1].quantity = 0)),
        (
            "an expiry before the issue",
            Box::new(|b| b.expires = Date(b.issued.0 - 1)),
        ),
        (
            "too many lines",
            Box::new(|b| {
                let line = b.lines[1].clone();
                b.lines = vec![line; BILL_LINES_MAX + 1];
                b.total = Amount::new(175 * 2 * (BILL_LINES_MAX as u64 + 1)).unwrap();
            }),
        ),
    ];
    for (what, change) in changes {
        let mut bill = bill();
        change(&mut bill);
        assert!(Bill::decode(&bill.encode()).is_err(), "{what}");
    }
}

#[test]
fn the_card_and_the_server_hold_one_session_each_way_in_order() {
    let (host, card) = ([1u8; 16], [2u8; 16]);
    let at_card_keys = SessionKeys::derive(&card_key(), &CARD, &host, &card);
    let (mut server, _) = SecureSession::authenticate(
        &card_key(),
        &CARD,
        &host,
        &card,
        &at_card_keys.card_cryptogram(),
    )
    .unwrap();
    let mut at_card = SecureSession::for_card(at_card_keys, host, card);
    let first = server.seal(ins::READ_BALANCE, b"brc").unwrap();
    let second = server.seal(ins::SETTLE, b"spc").unwrap();
    // Out of order does not open; a peek does not consume.
    assert_eq!(
        at_card.open(ins::SETTLE, &second),
        Err(SessionError::Unreadable)
    );
    assert_eq!(at_card.peek(ins::READ_BALANCE, &first).unwrap(), b"brc");
    assert_eq!(at_card.open(ins::READ_BALANCE, &first).unwrap(), b"brc");
    assert_eq!(at_card.open(ins::SETTLE, &second).unwrap(), b"spc");
    let answer = at_card.seal(ins::SETTLE, b"pcn").unwrap();
    // A side never opens its own messages.
    assert_eq!(
        at_card.peek(ins::SETTLE, &answer),
        Err(SessionError::Unreadable)
    );
    assert_eq!(server.open(ins::SETTLE, &answer).unwrap(), b"pcn");
    assert_eq!(server.counters(), (2, 1));
    assert_eq!(at_card.counters(), (2, 1));
    // Taken up again from its counters, the server's session goes on where it was.
    let mut resumed = SecureSession::resume(&card_key(), &CARD, &host, &card, server.counters());
    let third = resumed.seal(ins::GET_COMPLETION, b"query").unwrap();
    assert_eq!(at_card.open(ins::GET_COMPLETION, &third).unwrap(), b"query");
}
