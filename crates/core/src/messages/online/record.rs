//! The usage record of an online payment or charge. The card keeps it as its last usage
//! record, the way it keeps a terminal's or a settlement terminal's, so the next terminal
//! the card meets carries it to the center and the card's history stays one chain; the
//! security server signs it with the key the center certified (role `OnlineSettlement`)
//! and uploads it itself as well.

use crate::crypto::Signature;
use crate::ids::{CardId, DeviceId};
use crate::messages::purse::{Challenge, TransactionKind, UsageRecord};
use crate::money::Amount;
use crate::time::Date;

/// The context label of an online record's signed string.
pub const ONLINE_RECORD_CONTEXT: &[u8] = b"valuecard/online/record/v1";

/// The fields of an online usage record that the security server signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineRecord {
    /// `OnlinePayment` or `OnlineCharge`.
    pub kind: TransactionKind,
    pub card_id: CardId,
    /// The security server.
    pub writer: DeviceId,
    /// H, the server's challenge of the session the update was applied in.
    pub challenge_host: Challenge,
    /// C, the card's challenge of that session.
    pub challenge_card: Challenge,
    /// The card's counter after the update.
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    pub writer_sequence: u32,
    pub date: Date,
}

impl OnlineRecord {
    /// The signed byte string: the record's fields after [`ONLINE_RECORD_CONTEXT`], laid out
    /// as a settlement terminal's record is (without a stamp).
    pub fn signed_message(&self) -> Vec<u8> {
        self.usage_record(Signature([0; crate::crypto::SIGNATURE_LEN]))
            .fields_message(ONLINE_RECORD_CONTEXT, &self.card_id)
    }

    /// The record as the card keeps it, with the security server's signature.
    pub fn usage_record(&self, signature: Signature) -> UsageRecord {
        UsageRecord {
            kind: self.kind,
            counter: self.counter,
            challenge_writer: self.challenge_host,
            challenge_card: self.challenge_card,
            amount: self.amount,
            balance_after: self.balance_after,
            writer: self.writer,
            writer_sequence: self.writer_sequence,
            date: self.date,
            signature,
            stamp: None,
        }
    }

    /// The signed fields of a kept record (for whoever verifies it).
    pub fn of_usage_record(card_id: &CardId, record: &UsageRecord) -> Self {
        OnlineRecord {
            kind: record.kind,
            card_id: *card_id,
            writer: record.writer,
            challenge_host: record.challenge_writer,
            challenge_card: record.challenge_card,
            counter: record.counter,
            amount: record.amount,
            balance_after: record.balance_after,
            writer_sequence: record.writer_sequence,
            date: record.date,
        }
    }
}

/// One online update as the security server reports it to the center: the card, the
/// settlement, the card's record before it (from BI; none when the update is the card's
/// first) and the online record itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineItem {
    pub card_id: CardId,
    pub settlement_id: super::SettlementId,
    pub previous: Option<UsageRecord>,
    pub record: UsageRecord,
}
