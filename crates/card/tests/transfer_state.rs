//! The persisted transfer state (image format 5): every field round trips, inside the purse
//! too, and a state that breaks an invariant the card relies on is refused on decode rather
//! than half-used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use valuecard_card::state::{PersistentState, ReceivedTransfer, SentTransfer, TransferState};
use valuecard_card::testing;
use valuecard_core::limits::CARD_RECEIVED_TRANSFERS_MAX;
use valuecard_core::messages::transfer::{PendingTransfer, HELD_TRANSFER_KEYS_MAX};
use valuecard_core::money::Amount;

fn receipt(index: u8) -> ReceivedTransfer {
    ReceivedTransfer {
        source: testing::card_id(index),
        challenge_source: [index; 16],
        amount: Amount::new(u64::from(index) * 10).unwrap(),
        counter: u32::from(index) + 100,
    }
}

fn full() -> TransferState {
    TransferState {
        keys: vec![testing::transfer_key(2), testing::transfer_key(4)],
        selected: 2,
        limit: 9,
        update_key: Some(testing::update_key(3)),
        sent: Some(SentTransfer {
            pending: PendingTransfer {
                destination: testing::card_id(7),
                destination_counter: 41,
                challenge_source: [0xC5; 16],
                amount: Amount::new(1_234).unwrap(),
                key_id: 1,
            },
            key: testing::transfer_key(1),
        }),
        received: (1..=CARD_RECEIVED_TRANSFERS_MAX as u8)
            .map(receipt)
            .collect(),
        received_floor: 17,
    }
}

#[test]
fn every_field_round_trips() {
    for state in [TransferState::default(), full()] {
        assert_eq!(TransferState::decode(&state.encode()).unwrap(), state);
    }
    // Without the optional parts.
    let state = TransferState {
        update_key: None,
        sent: None,
        ..full()
    };
    assert_eq!(TransferState::decode(&state.encode()).unwrap(), state);
}

#[test]
fn the_purse_persists_its_transfer_state() {
    let mut state = testing::personalized_card(1, Amount::new(10).unwrap(), None);
    if let PersistentState::Personalized(purse) = &mut state {
        purse.transfer = full();
    }
    let PersistentState::Personalized(decoded) = PersistentState::decode(&state.encode()).unwrap()
    else {
        panic!("not a purse")
    };
    assert_eq!(decoded.transfer, full());
    // A purse without transfer state writes none (older images read the same way).
    let empty = testing::personalized_card(1, Amount::new(10).unwrap(), None);
    let PersistentState::Personalized(decoded) = PersistentState::decode(&empty.encode()).unwrap()
    else {
        panic!("not a purse")
    };
    assert!(decoded.transfer.is_empty());
}

#[test]
fn a_malformed_state_is_refused() {
    let mut too_many_keys = full();
    too_many_keys.keys = (1..=HELD_TRANSFER_KEYS_MAX as u32 + 1)
        .map(testing::transfer_key)
        .collect();
    too_many_keys.selected = 1;
    let mut too_many_receipts = full();
    too_many_receipts.received.push_back(receipt(9));
    let cases: Vec<(&str, TransferState)> = vec![
        (
            "keys not ascending",
            TransferState {
                keys: vec![testing::transfer_key(4), testing::transfer_key(2)],
                ..full()
            },
        ),
        (
            "a key held twice",
            TransferState {
                keys: vec![testing::transfer_key(2), testing::transfer_key(2)],
                ..full()
            },
        ),
        (
            "selected key not held",
            TransferState {
                selected: 3,
                ..full()
            },
        ),
        (
            "a key with identifier 0",
            TransferState {
                keys: vec![testing::transfer_key(0), testing::transfer_key(2)],
                ..full()
            },
        ),
        ("more keys than a card holds", too_many_keys),
        (
            "a retired key still held",
            TransferState {
                keys: vec![testing::transfer_key(1), testing::transfer_key(2)],
                ..full()
            },
        ),
        (
            "keys without a selection",
            TransferState {
                selected: 0,
                ..full()
            },
        ),
        ("more receipts than the ring", too_many_receipts),
        (
            "an update key with identifier 0",
            TransferState {
                update_key: Some(testing::update_key(0)),
                ..full()
            },
        ),
    ];
    for (what, state) in cases {
        assert!(
            TransferState::decode(&state.encode()).is_err(),
            "{what} was accepted"
        );
    }
    let bytes = full().encode();
    for len in 0..bytes.len() {
        assert!(
            TransferState::decode(&bytes[..len]).is_err(),
            "truncated to {len}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0x80, 0x00]);
    assert!(TransferState::decode(&trailing).is_err());
}

#[test]
fn the_receipts_ring_keeps_the_newest_and_raises_its_floor() {
    let mut state = TransferState::default();
    for index in 1..=CARD_RECEIVED_TRANSFERS_MAX as u8 + 2 {
        state.record_receipt(receipt(index));
    }
    assert_eq!(state.received.len(), CARD_RECEIVED_TRANSFERS_MAX);
    assert_eq!(state.received_floor, receipt(2).counter);
    assert!(state.receipt(&testing::card_id(1), &[1; 16]).is_none());
    let newest = CARD_RECEIVED_TRANSFERS_MAX as u8 + 2;
    assert_eq!(
        state.receipt(&testing::card_id(newest), &[newest; 16]),
        Some(&receipt(newest))
    );
    let expected: VecDeque<ReceivedTransfer> = (3..=newest).rev().map(receipt).collect();
    assert_eq!(state.received, expected);
}
