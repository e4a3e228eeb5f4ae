//! The persistent state of card-to-card transfer (seed 000): the transfer keys with the
//! selected identifier and the upper limit (claims 1, 8), the update key (claims 1, 5), the
//! pending-transfer log of a transfer sent and not yet settled, and the receipts of transfers
//! received. One TLV encoding inside the purse state (image format 5).

use std::collections::VecDeque;

use valuecard_core::crypto::AesKey;
use valuecard_core::ids::CardId;
use valuecard_core::limits::CARD_RECEIVED_TRANSFERS_MAX;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::transfer::{PendingTransfer, TransferKey, HELD_TRANSFER_KEYS_MAX};
use valuecard_core::money::Amount;
use valuecard_core::tlv::{be_u32, be_u64, TlvReader, TlvWriter};
use zeroize::Zeroize;

use crate::state::StateError;

/// A transfer this card sent: the value is reserved (no balance changes until it settles),
/// and the key generation the value message was made under is kept so that the proof can
/// still be checked after the card moved to a newer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentTransfer {
    pub pending: PendingTransfer,
    pub key: TransferKey,
}

/// A transfer this card applied: enough to prove it to the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedTransfer {
    pub source: CardId,
    pub challenge_source: Challenge,
    pub amount: Amount,
    /// This card's counter after it applied the transfer.
    pub counter: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferState {
    /// Held transfer keys, strictly ascending by identifier, at most
    /// [`HELD_TRANSFER_KEYS_MAX`]; none older than the selected one.
    pub keys: Vec<TransferKey>,
    /// The selected transfer key's identifier; 0 while the card has none.
    pub selected: u32,
    /// The highest identifier the card accepts from a peer card.
    pub limit: u32,
    pub update_key: Option<TransferKey>,
    pub sent: Option<SentTransfer>,
    /// Newest first, at most [`CARD_RECEIVED_TRANSFERS_MAX`].
    pub received: VecDeque<ReceivedTransfer>,
    /// The highest counter among receipts dropped from `received`: below it the card can no
    /// longer say that it did *not* apply a transfer.
    pub received_floor: u32,
}

/// Why a new transfer key was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// At or below the current identifier: not newer.
    NotNewer,
    /// Above the upper limit the center set.
    AboveLimit,
}

impl TransferState {
    pub fn is_empty(&self) -> bool {
        *self == TransferState::default()
    }

    pub fn selected_key(&self) -> Option<&TransferKey> {
        self.key(self.selected)
    }

    pub fn key(&self, id: u32) -> Option<&TransferKey> {
        if id == 0 {
            return None;
        }
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn held_ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.id).collect()
    }

    pub fn update_key_id(&self) -> u32 {
        self.update_key.as_ref().map_or(0, |k| k.id)
    }

    /// Claims 2, 4, 6: adopt `key` as the selected transfer key, if its identifier lies
    /// above the current one and not above the upper limit. Older keys are retired (dropped).
    pub fn adopt(&mut self, key: TransferKey) -> Result<(), KeyRefusal> {
        if key.id <= self.selected {
            return Err(KeyRefusal::NotNewer);
        }
        if key.id > self.limit {
            return Err(KeyRefusal::AboveLimit);
        }
        self.keys.retain(|k| k.id > key.id);
        self.keys.insert(0, key.clone());
        self.selected = key.id;
        self.keys.truncate(HELD_TRANSFER_KEYS_MAX);
        Ok(())
    }

    /// Claim 9: move the selection to a key the card already holds (and that is newer).
    pub fn select(&mut self, id: u32) -> Result<(), KeyRefusal> {
        if id <= self.selected {
            return Err(KeyRefusal::NotNewer);
        }
        if self.key(id).is_none() {
            return Err(KeyRefusal::AboveLimit);
        }
        self.keys.retain(|k| k.id >= id);
        self.selected = id;
        Ok(())
    }

    /// What the center delivers (personalization, load): the limit rises first, then a
    /// generation newer than the selected one is adopted and selected at once (the center's
    /// own delivery needs no peer to vouch for it), and a newer update key replaces the
    /// old one. Nothing here moves down: an older delivery changes nothing. Keys held ahead
    /// of their selection (claim 8) arrive only card to card, through the selection form.
    pub fn accept_delivery(&mut self, key: TransferKey, limit: u32, update: TransferKey) {
        self.limit = self.limit.max(limit);
        if key.id > self.selected {
            // The center's own delivery is authoritative: adopt it (it is within the limit
            // it just raised).
            let _ = self.adopt(key);
        }
        if update.id > self.update_key_id() {
            self.update_key = Some(update);
        }
    }

    /// Records a receipt, dropping the oldest beyond the ring's size.
    pub fn record_receipt(&mut self, receipt: ReceivedTransfer) {
        self.received.push_front(receipt);
        while self.received.len() > CARD_RECEIVED_TRANSFERS_MAX {
            if let Some(dropped) = self.received.pop_back() {
                self.received_floor = self.received_floor.max(dropped.counter);
            }
        }
    }

    pub fn receipt(
        &self,
        source: &CardId,
        challenge_source: &Challenge,
    ) -> Option<&ReceivedTransfer> {
        self.received
            .iter()
            .find(|r| r.source == *source && r.challenge_source == *challenge_source)
    }
}

mod field {
    pub const KEYS: u32 = 0x80;
    pub const SELECTED: u32 = 0x81;
    pub const LIMIT: u32 = 0x82;
    pub const UPDATE_KEY: u32 = 0x83;
    pub const SENT: u32 = 0xA4;
    pub const RECEIVED: u32 = 0x85;
    pub const RECEIVED_FLOOR: u32 = 0x86;
    // Inside SENT:
    pub const DESTINATION: u32 = 0x87;
    pub const DESTINATION_COUNTER: u32 = 0x88;
    pub const CHALLENGE: u32 = 0x89;
    pub const AMOUNT: u32 = 0x8A;
    pub const KEY: u32 = 0x8B;
}

/// One key as id (4) || key (16).
const KEY_ENTRY_LEN: usize = 20;
/// One receipt as source (8) || challenge (16) || amount (8) || counter (4).
const RECEIPT_LEN: usize = 36;

fn key_bytes(key: &TransferKey) -> [u8; KEY_ENTRY_LEN] {
    let mut out = [0u8; KEY_ENTRY_LEN];
    out[..4].copy_from_slice(&key.id.to_be_bytes());
    out[4..].copy_from_slice(key.key.expose());
    out
}

fn key_from(bytes: &[u8]) -> Result<TransferKey, StateError> {
    let id = u32::from_be_bytes(
        bytes[..4]
            .try_into()
            .map_err(|_| StateError("transfer key"))?,
    );
    let key =
        AesKey::from_slice(&bytes[4..KEY_ENTRY_LEN]).map_err(|_| StateError("transfer key"))?;
    if id == 0 {
        return Err(StateError("transfer key id"));
    }
    Ok(TransferKey { id, key })
}

impl TransferState {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(512);
        let mut keys = Vec::with_capacity(self.keys.len() * KEY_ENTRY_LEN);
        for key in &self.keys {
            keys.extend_from_slice(&key_bytes(key));
        }
        w.put(field::KEYS, &keys)
            .put_u32(field::SELECTED, self.selected)
            .put_u32(field::LIMIT, self.limit);
        keys.zeroize();
        if let Some(update) = &self.update_key {
            let mut bytes = key_bytes(update);
            w.put(field::UPDATE_KEY, &bytes);
            bytes.zeroize();
        }
        if let Some(sent) = &self.sent {
            let mut key = key_bytes(&sent.key);
            w.nested(field::SENT, |s| {
                s.put(field::DESTINATION, sent.pending.destination.as_bytes())
                    .put_u32(field::DESTINATION_COUNTER, sent.pending.destination_counter)
                    .put(field::CHALLENGE, &sent.pending.challenge_source)
                    .put_u64(field::AMOUNT, sent.pending.amount.minor())
                    .put(field::KEY, &key);
            });
            key.zeroize();
        }
        let mut received = Vec::with_capacity(self.received.len() * RECEIPT_LEN);
        for receipt in &self.received {
            received.extend_from_slice(receipt.source.as_bytes());
            received.extend_from_slice(&receipt.challenge_source);
            received.extend_from_slice(&receipt.amount.to_be_bytes());
            received.extend_from_slice(&receipt.counter.to_be_bytes());
        }
        w.put(field::RECEIVED, &received)
            .put_u32(field::RECEIVED_FLOOR, self.received_floor);
        w.into_bytes()
    }

    pub fn decode(value: &[u8]) -> Result<Self, StateError> {
        let bad = |_| StateError("transfer");
        let mut r = TlvReader::new(value);
        let key_bytes = r.expect(field::KEYS).map_err(bad)?;
        if key_bytes.len() % KEY_ENTRY_LEN != 0
            || key_bytes.len() / KEY_ENTRY_LEN > HELD_TRANSFER_KEYS_MAX
        {
            return Err(StateError("transfer keys"));
        }
        let keys = key_bytes
            .chunks_exact(KEY_ENTRY_LEN)
            .map(key_from)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(StateError("transfer keys order"));
        }
        let selected =
            be_u32(field::SELECTED, r.expect(field::SELECTED).map_err(bad)?).map_err(bad)?;
        let limit = be_u32(field::LIMIT, r.expect(field::LIMIT).map_err(bad)?).map_err(bad)?;
        if selected != 0 && !keys.iter().any(|k| k.id == selected) {
            return Err(StateError("selected transfer key"));
        }
        // Keys are held only from the selected one up (older ones are retired when the
        // selection moves), and none without a selection.
        if keys.iter().any(|k| k.id < selected) || (selected == 0 && !keys.is_empty()) {
            return Err(StateError("retired transfer key held"));
        }
        let update_key = r
            .optional(field::UPDATE_KEY)
            .map_err(bad)?
            .map(|bytes| {
                if bytes.len() == KEY_ENTRY_LEN {
                    key_from(bytes)
                } else {
                    Err(StateError("update key"))
                }
            })
            .transpose()?;
        let sent = r
            .optional(field::SENT)
            .map_err(bad)?
            .map(decode_sent)
            .transpose()?;
        let received_bytes = r.expect(field::RECEIVED).map_err(bad)?;
        if received_bytes.len() % RECEIPT_LEN != 0
            || received_bytes.len() / RECEIPT_LEN > CARD_RECEIVED_TRANSFERS_MAX
        {
            return Err(StateError("transfer receipts"));
        }
        let mut received = VecDeque::new();
        for chunk in received_bytes.chunks_exact(RECEIPT_LEN) {
            let mut source = [0u8; 8];
            source.copy_from_slice(&chunk[..8]);
            let mut challenge_source = [0u8; 16];
            challenge_source.copy_from_slice(&chunk[8..24]);
            let mut amount = [0u8; 8];
            amount.copy_from_slice(&chunk[24..32]);
            let mut counter = [0u8; 4];
            counter.copy_from_slice(&chunk[32..36]);
            received.push_back(ReceivedTransfer {
                source: CardId(source),
                challenge_source,
                amount: Amount::new(u64::from_be_bytes(amount))
                    .map_err(|_| StateError("transfer receipt amount"))?,
                counter: u32::from_be_bytes(counter),
            });
        }
        let received_floor = be_u32(
            field::RECEIVED_FLOOR,
            r.expect(field::RECEIVED_FLOOR).map_err(bad)?,
        )
        .map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok(TransferState {
            keys,
            selected,
            limit,
            update_key,
            sent,
            received,
            received_floor,
        })
    }
}

fn decode_sent(value: &[u8]) -> Result<SentTransfer, StateError> {
    let bad = |_| StateError("pending transfer");
    let mut r = TlvReader::new(value);
    let destination = CardId(r.expect_array(field::DESTINATION).map_err(bad)?);
    let destination_counter = be_u32(
        field::DESTINATION_COUNTER,
        r.expect(field::DESTINATION_COUNTER).map_err(bad)?,
    )
    .map_err(bad)?;
    let challenge_source = r.expect_array(field::CHALLENGE).map_err(bad)?;
    let amount =
        Amount::new(be_u64(field::AMOUNT, r.expect(field::AMOUNT).map_err(bad)?).map_err(bad)?)
            .map_err(|_| StateError("pending transfer amount"))?;
    let key_bytes = r.expect(field::KEY).map_err(bad)?;
    if key_bytes.len() != KEY_ENTRY_LEN {
        return Err(StateError("pending transfer key"));
    }
    let key = key_from(key_bytes)?;
    r.finish().map_err(bad)?;
    Ok(SentTransfer {
        pending: PendingTransfer {
            destination,
            destination_counter,
            challenge_source,
            amount,
            key_id: key.id,
        },
        key,
    })
}
