//! The settlement system's security server (seed 004) as the center's tests drive it: its
//! key held by the test, its records built by hand from the core types.

use rand_core::CryptoRngCore;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{OnlineItem, OnlineRecord};
use valuecard_core::messages::purse::{TransactionKind, UsageRecord};

use super::{amount, today, CardState};

/// The settlement system's security server as the center knows it: certified, its key held
/// by the test.
pub struct SecurityServer {
    pub id: DeviceId,
    key: SigningKeyPair,
    sequence: u32,
}

impl SecurityServer {
    pub fn certify(center: &mut Center, rng: &mut impl CryptoRngCore) -> Self {
        let key = SigningKeyPair::generate(rng);
        let sealing = SealingKeyPair::generate(rng).public_key();
        let (id, certificate) = center
            .certify_online_settlement(key.public_key(), sealing)
            .unwrap();
        assert_eq!(certificate.subject(), id);
        let anchor = center.anchor();
        anchor
            .verify_unexpired(
                std::slice::from_ref(&certificate),
                Role::OnlineSettlement,
                today(),
            )
            .unwrap();
        SecurityServer {
            id,
            key,
            sequence: 0,
        }
    }

    /// The record of an online update of `kind` on the card in `state`, signed.
    pub fn update(&mut self, state: &CardState, kind: TransactionKind, minor: u64) -> UsageRecord {
        self.sequence += 1;
        let balance_after = if kind == TransactionKind::OnlinePayment {
            state.balance.checked_sub(amount(minor)).unwrap()
        } else {
            state.balance.checked_add(amount(minor)).unwrap()
        };
        let record = OnlineRecord {
            kind,
            card_id: state.id,
            writer: self.id,
            challenge_host: [self.sequence as u8; 16],
            challenge_card: [0xC0; 16],
            counter: state.counter + 1,
            amount: amount(minor),
            balance_after,
            writer_sequence: self.sequence,
            date: today(),
        };
        record.usage_record(self.key.sign(&record.signed_message()))
    }

    /// The item the security server reports for `record` made on the card in `state`.
    pub fn item(state: &CardState, settlement: u8, record: UsageRecord) -> OnlineItem {
        OnlineItem {
            card_id: state.id,
            settlement_id: [settlement; 16],
            previous: state.last.clone(),
            record,
        }
    }
}

/// The card state after `record`.
pub fn after(state: &CardState, record: &UsageRecord) -> CardState {
    CardState {
        id: state.id,
        counter: record.counter,
        balance: record.balance_after,
        last: Some(record.clone()),
    }
}
