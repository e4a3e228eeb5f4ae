//! Decoding of the dispenser bodies: fields are checked by name, bodies round-trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[test]
fn fields_are_checked_by_name() {
    let body = AssignBody {
        dispenser_id: "d000000000000001".into(),
        chip_serial: "c5".repeat(8),
        card_challenge: "00".repeat(15),
    };
    let error = body.decode().unwrap_err();
    assert_eq!(error.field, "card_challenge");
    let body = AssignBody {
        dispenser_id: "zz".into(),
        chip_serial: "c5".repeat(8),
        card_challenge: "00".repeat(16),
    };
    assert_eq!(body.decode().unwrap_err().field, "dispenser_id");
    let good = AssignBody {
        dispenser_id: "D000000000000001".into(),
        chip_serial: "c5".repeat(8),
        card_challenge: "ab".repeat(16),
    };
    let (request, challenge) = good.decode().unwrap();
    assert_eq!(request.dispenser_id.0[0], 0xD0);
    assert_eq!(challenge, [0xAB; 16]);
    assert_eq!(
        AssignBody::new(&request, &challenge).dispenser_id,
        "d000000000000001"
    );
}

fn evidence() -> LastTransaction {
    use valuecard_core::messages::purse::{TransactionKind, UsageRecord};
    LastTransaction {
        record: UsageRecord {
            kind: TransactionKind::Load,
            counter: 3,
            challenge_writer: [1; 16],
            challenge_card: [2; 16],
            amount: Amount::new(500).unwrap(),
            balance_after: Amount::new(1_500).unwrap(),
            writer: DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 1]),
            writer_sequence: 7,
            date: Date(20_600),
            signature: Signature([3; 64]),
            stamp: None,
        },
        signature: Signature([4; 64]),
    }
}

#[test]
fn settlement_bodies_round_trip() {
    let settlement = LoadSettlement {
        card_id: CardId([0xC0, 0, 0, 0, 0, 0, 0, 9]),
        dispenser_id: DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 1]),
        load_number: 7,
        challenge: [5; 16],
        evidence: evidence(),
    };
    let json = serde_json::to_string(&SettleBody::new(&settlement)).unwrap();
    let body: SettleBody = serde_json::from_str(&json).unwrap();
    assert_eq!(body.decode().unwrap(), settlement);
    let request = SettlementChallengeRequest {
        dispenser_id: DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 2]),
        card_id: CardId([0xC0, 0, 0, 0, 0, 0, 0, 9]),
        load_number: 9,
    };
    let json = serde_json::to_string(&SettlementChallengeBody::new(&request)).unwrap();
    let body: SettlementChallengeBody = serde_json::from_str(&json).unwrap();
    assert_eq!(body.decode().unwrap(), request);
    let answer = ChallengeBody {
        load_number: 9,
        challenge: "ab".repeat(16),
    };
    assert_eq!(answer.decode().unwrap(), [0xAB; 16]);
}

#[test]
fn settlement_bodies_refuse_bad_fields() {
    let good = SettleBody::new(&LoadSettlement {
        card_id: CardId([0xC0, 0, 0, 0, 0, 0, 0, 9]),
        dispenser_id: DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 1]),
        load_number: 7,
        challenge: [5; 16],
        evidence: evidence(),
    });
    let mut truncated = good.clone();
    truncated.evidence.truncate(truncated.evidence.len() - 2);
    assert_eq!(truncated.decode().unwrap_err().field, "evidence");
    let mut short = good.clone();
    short.challenge = "ab".repeat(15);
    assert_eq!(short.decode().unwrap_err().field, "challenge");
    let mut not_hex = good;
    not_hex.card_id = "xyz".into();
    assert_eq!(not_hex.decode().unwrap_err().field, "card_id");
    let answer = ChallengeBody {
        load_number: 9,
        challenge: "ab".repeat(17),
    };
    assert_eq!(answer.decode().unwrap_err().field, "challenge");
}

#[test]
fn unknown_fields_are_refused() {
    let error = serde_json::from_str::<SettleBody>(
        r#"{"dispenser_id":"d000000000000001","card_id":"c000000000000001","load_number":1,"challenge":"","evidence":"","extra":1}"#,
    )
    .unwrap_err();
    assert!(error.to_string().contains("extra"), "{error}");
}
