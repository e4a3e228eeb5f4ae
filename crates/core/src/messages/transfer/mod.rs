//! Card-to-card value transfer and transfer-key rotation (seed 000): the commands of the
//! transfer application on the purse, their data, and the byte strings each party
//! authenticates. `docs/card-commands.md` documents the same bytes and `docs/protocols.md`
//! the protocol and its recovery rule.
//!
//! Value moves between two cards under their common *transfer key* (claims 1, 3, 5, 8): the
//! source card encrypts the amount under a key derived from it, bound to both card IDs, both
//! counters and both cards' fresh challenges, and the destination answers with a proof of
//! receipt under the same key. The transfer key has an identifier (higher is newer) and the
//! card accepts a new one from a peer card only up to its *upper limit*, either under the
//! *update key* (claims 2, 6, 9: symmetric) or under the two cards' certified key pairs
//! (claims 4, 7: public key). The settlement terminal signs each card's usage record, as a
//! payment terminal does, so the next terminal and the center can check every balance.

use crate::cert::Certificate;
use crate::crypto::{
    aes_cmac, aes_gcm_open, aes_gcm_seal, diversify_key, AesKey, CryptoError, Signature,
    AES_KEY_LEN, GCM_NONCE_LEN, GCM_TAG_LEN, MAC_LEN, SIGNATURE_LEN,
};
use crate::ids::CardId;
use crate::messages::field::{amount as amount_field, refused as field, u32_field};
use crate::messages::purse::{
    last_writer, put_last_writer, tag as purse_tag, Challenge, TerminalStamp, UsageRecord,
};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{TlvReader, TlvWriter};
use zeroize::Zeroize;

mod keys;
mod release;
mod report;
mod value;

pub use keys::*;
pub use release::*;
pub use report::*;
pub use value::*;

/// Instruction bytes of the transfer commands (class `80`, on the purse application).
pub mod ins {
    pub const GET_TRANSFER_INFO: u8 = 0x40;
    pub const UPDATE_PERMISSION: u8 = 0x42;
    pub const GET_TRANSFER_KEY: u8 = 0x44;
    pub const UPDATE_TRANSFER_KEY: u8 = 0x48;
    pub const INITIALIZE_TRANSFER_IN: u8 = 0x60;
    pub const TRANSFER_OUT: u8 = 0x62;
    pub const TRANSFER_IN: u8 = 0x64;
    pub const TRANSFER_COMPLETE: u8 = 0x66;
    pub const TRANSFER_STATUS: u8 = 0x68;
}

/// P1 of TRANSFER COMPLETE: what settles the source's pending transfer.
pub mod complete_p1 {
    /// The destination's proof (received, with the terminal's record; or not received).
    pub const PROOF: u8 = 0x00;
    /// The center's [`super::TransferRelease`]: the destination will never come back.
    pub const RELEASE: u8 = 0x01;
}

/// Tags of the transfer commands' data (two-byte context tags, distinct from the purse's).
pub mod tag {
    pub const TRANSFER_KEY_ID: u32 = 0x9F21;
    pub const KEY_LIMIT: u32 = 0x9F22;
    pub const HELD_KEY_IDS: u32 = 0x9F23;
    pub const UPDATE_KEY_ID: u32 = 0x9F24;
    pub const RANDOM: u32 = 0x9F25;
    pub const NONCE: u32 = 0x9F26;
    pub const CIPHERTEXT: u32 = 0x9F27;
    pub const PEER_CARD_ID: u32 = 0x9F28;
    pub const PEER_COUNTER: u32 = 0x9F29;
    pub const PEER_CHALLENGE: u32 = 0x9F2A;
    pub const PROOF_STATUS: u32 = 0x9F2B;
    pub const PENDING: u32 = 0xBF2C;
    pub const SEALED: u32 = 0x9F2D;
    pub const TRANSFER_KEYS: u32 = 0x9F2E;
    pub const SUMMARY: u32 = 0x9F2F;
}

/// P1 of UPDATE PERMISSION, GET TRANSFER KEY and UPDATE TRANSFER KEY: which of the seed's
/// three key-update forms the command belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyUpdateMode {
    /// Claims 2 and 6: the key travels under the update key both cards share.
    Symmetric = 0x00,
    /// Claims 4 and 7: sealed to the receiving card's certified key, signed by the sender's.
    PublicKey = 0x01,
    /// Claim 9: only the selected identifier moves, to a key the receiving card holds.
    Selection = 0x02,
}

impl KeyUpdateMode {
    pub fn from_p1(p1: u8) -> Option<Self> {
        Some(match p1 {
            0x00 => KeyUpdateMode::Symmetric,
            0x01 => KeyUpdateMode::PublicKey,
            0x02 => KeyUpdateMode::Selection,
            _ => return None,
        })
    }
}

/// Length of the first and second random numbers of claims 2-9.
pub const KEY_UPDATE_RANDOM_LEN: usize = 16;
pub type KeyUpdateRandom = [u8; KEY_UPDATE_RANDOM_LEN];

/// Transfer keys a card holds at once (claim 8): the selected one and newer ones delivered
/// ahead of their selection.
pub const HELD_TRANSFER_KEYS_MAX: usize = 4;

/// Derivation constants of the keys used under a transfer or update key (SP 800-108 CMAC
/// KDF, `diversify_key`), continuing the constants of `crypto::derivation`.
pub mod derivation {
    /// Encrypts the amount of a value message.
    pub const VALUE: u8 = 0x21;
    /// MACs a proof of receipt or of non-receipt.
    pub const PROOF: u8 = 0x22;
    /// Encrypts a transfer key exported under the update key (claims 2, 6, 9).
    pub const KEY_EXPORT: u8 = 0x23;
    /// Encrypts the transfer keys the center delivers with a load, under the card key KU.
    pub const LOAD_DELIVERY: u8 = 0x24;
}

/// A transfer-key generation: its identifier (higher is newer) and the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TransferKey {
    pub id: u32,
    pub key: AesKey,
}

impl core::fmt::Debug for TransferKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TransferKey(id {})", self.id)
    }
}

impl TransferKey {
    /// The key that encrypts value messages under this generation.
    pub fn value_key(&self) -> AesKey {
        diversify_key(&self.key, derivation::VALUE, &self.id.to_be_bytes())
    }

    /// The key that MACs proofs under this generation.
    pub fn proof_key(&self) -> AesKey {
        diversify_key(&self.key, derivation::PROOF, &self.id.to_be_bytes())
    }
}

/// What the center gives a card at personalization and with a load: the newest
/// transfer-key generation, the upper limit of identifiers the card may accept from a peer,
/// and the newest update key. A fixed 44-byte layout.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferKeySet {
    pub transfer: TransferKey,
    pub limit: u32,
    pub update: TransferKey,
}

pub const TRANSFER_KEY_SET_LEN: usize = 4 + AES_KEY_LEN + 4 + 4 + AES_KEY_LEN;

impl TransferKeySet {
    pub fn to_bytes(&self) -> [u8; TRANSFER_KEY_SET_LEN] {
        let mut out = [0u8; TRANSFER_KEY_SET_LEN];
        out[..4].copy_from_slice(&self.transfer.id.to_be_bytes());
        out[4..20].copy_from_slice(self.transfer.key.expose());
        out[20..24].copy_from_slice(&self.limit.to_be_bytes());
        out[24..28].copy_from_slice(&self.update.id.to_be_bytes());
        out[28..44].copy_from_slice(self.update.key.expose());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != TRANSFER_KEY_SET_LEN {
            return Err(field("transfer keys", "wrong length"));
        }
        let set = TransferKeySet {
            transfer: TransferKey {
                id: u32_at(bytes, 0),
                key: key_at(bytes, 4),
            },
            limit: u32_at(bytes, 20),
            update: TransferKey {
                id: u32_at(bytes, 24),
                key: key_at(bytes, 28),
            },
        };
        if set.transfer.id == 0 || set.update.id == 0 || set.limit < set.transfer.id {
            return Err(field("transfer keys", "identifiers out of range"));
        }
        Ok(set)
    }

    /// The key set encrypted under the card key KU for one load, bound to the load's signed
    /// authorization (`aad`) and to the card's fresh challenge X (the nonce).
    pub fn seal_for_load(
        &self,
        card_key: &AesKey,
        challenge_card: &Challenge,
        aad: &[u8],
    ) -> Vec<u8> {
        let key = diversify_key(card_key, derivation::LOAD_DELIVERY, b"transfer keys");
        let mut plain = self.to_bytes();
        let sealed = aes_gcm_seal(&key, &load_nonce(challenge_card), aad, &plain);
        plain.zeroize();
        sealed
    }

    pub fn open_from_load(
        card_key: &AesKey,
        challenge_card: &Challenge,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Self, CryptoError> {
        let key = diversify_key(card_key, derivation::LOAD_DELIVERY, b"transfer keys");
        let mut plain = aes_gcm_open(&key, &load_nonce(challenge_card), aad, sealed)?;
        let set = TransferKeySet::from_bytes(&plain).map_err(|_| CryptoError::BadLength);
        plain.zeroize();
        set
    }
}

fn load_nonce(challenge_card: &Challenge) -> [u8; GCM_NONCE_LEN] {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    nonce.copy_from_slice(&challenge_card[..GCM_NONCE_LEN]);
    nonce
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn key_at(bytes: &[u8], at: usize) -> AesKey {
    let mut b = [0u8; AES_KEY_LEN];
    b.copy_from_slice(&bytes[at..at + AES_KEY_LEN]);
    let key = crate::crypto::SecretBytes(b);
    b.zeroize();
    key
}

fn card_id_field(r: &mut TlvReader<'_>, tag: u32) -> Result<CardId, DecodeError> {
    Ok(CardId(r.expect_array(tag)?))
}

fn certificate_field(r: &mut TlvReader<'_>) -> Result<Certificate, DecodeError> {
    Ok(Certificate::decode_value(
        r.expect(purse_tag::CERTIFICATE)?,
    )?)
}

fn optional_certificate(r: &mut TlvReader<'_>) -> Result<Option<Certificate>, DecodeError> {
    Ok(r.optional(purse_tag::CERTIFICATE)?
        .map(Certificate::decode_value)
        .transpose()?)
}

fn put_certificate(w: &mut TlvWriter, certificate: &Certificate) {
    w.put_raw(&certificate.encode());
}

fn signature_field(r: &mut TlvReader<'_>) -> Result<Signature, DecodeError> {
    Ok(Signature(
        r.expect_array::<SIGNATURE_LEN>(purse_tag::SIGNATURE)?,
    ))
}

// ---------------------------------------------------------------------------------------
// Card information (claims 2, 4, 6, 9).

/// The card information a SELECT answer carries (claims 2, 6): a fixed 13-byte layout of the
/// transfer-key identifier, the update-key identifier, the upper limit and a pending flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSummary {
    pub transfer_key_id: u32,
    pub update_key_id: u32,
    pub key_limit: u32,
    /// A transfer sent and not yet settled: GET TRANSFER INFO shows it.
    pub pending: bool,
}

impl TransferSummary {
    pub fn to_bytes(&self) -> [u8; 13] {
        let mut out = [0u8; 13];
        out[..4].copy_from_slice(&self.transfer_key_id.to_be_bytes());
        out[4..8].copy_from_slice(&self.update_key_id.to_be_bytes());
        out[8..12].copy_from_slice(&self.key_limit.to_be_bytes());
        out[12] = self.pending as u8;
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != 13 {
            return Err(field("transfer summary", "must be 13 bytes"));
        }
        Ok(TransferSummary {
            transfer_key_id: u32_at(bytes, 0),
            update_key_id: u32_at(bytes, 4),
            key_limit: u32_at(bytes, 8),
            pending: match bytes[12] {
                0 => false,
                1 => true,
                _ => return Err(field("transfer summary", "pending flag must be 0 or 1")),
            },
        })
    }
}

/// A transfer the card sent out and whose outcome it does not know yet (the pending-transfer
/// log): its value is reserved and the card changes no balance until a proof from the
/// destination settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransfer {
    pub destination: CardId,
    /// The destination's counter when it accepted to receive.
    pub destination_counter: u32,
    /// The source card's challenge, which names this transfer.
    pub challenge_source: Challenge,
    pub amount: Amount,
    /// The transfer-key generation the value message was made under.
    pub key_id: u32,
}

impl PendingTransfer {
    fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::PENDING, |p| {
            p.put(tag::PEER_CARD_ID, self.destination.as_bytes())
                .put_u32(tag::PEER_COUNTER, self.destination_counter)
                .put(purse_tag::CHALLENGE_CARD, &self.challenge_source)
                .put_u64(purse_tag::AMOUNT, self.amount.minor())
                .put_u32(tag::TRANSFER_KEY_ID, self.key_id);
        });
    }

    fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let pending = PendingTransfer {
            destination: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            destination_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
            challenge_source: r.expect_array(purse_tag::CHALLENGE_CARD)?,
            amount: amount_field(&mut r, purse_tag::AMOUNT)?,
            key_id: u32_field(&mut r, tag::TRANSFER_KEY_ID)?,
        };
        r.finish()?;
        Ok(pending)
    }
}

/// GET TRANSFER INFO response: everything a settlement terminal needs to choose the key
/// update path (claim 14) and to see a transfer waiting for its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInfo {
    pub card_id: CardId,
    pub balance: Amount,
    pub counter: u32,
    /// The selected transfer key's identifier (claim 9: the selection identifier); 0 if the
    /// card has none yet.
    pub transfer_key_id: u32,
    /// The highest identifier the card accepts from a peer.
    pub key_limit: u32,
    /// Every transfer-key identifier the card holds, ascending (claim 8).
    pub held_key_ids: Vec<u32>,
    /// The update key's identifier; 0 if the card has none.
    pub update_key_id: u32,
    /// The card's certificate (claims 4, 6): its Ed25519 and X25519 keys, center-signed.
    pub certificate: Certificate,
    pub pending: Option<PendingTransfer>,
}

impl TransferInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        let held: Vec<u8> = self
            .held_key_ids
            .iter()
            .flat_map(|id| id.to_be_bytes())
            .collect();
        w.put(purse_tag::CARD_ID, self.card_id.as_bytes())
            .put_u64(purse_tag::BALANCE, self.balance.minor())
            .put_u32(purse_tag::COUNTER, self.counter)
            .put_u32(tag::TRANSFER_KEY_ID, self.transfer_key_id)
            .put_u32(tag::KEY_LIMIT, self.key_limit)
            .put(tag::HELD_KEY_IDS, &held)
            .put_u32(tag::UPDATE_KEY_ID, self.update_key_id);
        put_certificate(&mut w, &self.certificate);
        if let Some(pending) = &self.pending {
            pending.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let card_id = card_id_field(&mut r, purse_tag::CARD_ID)?;
        let balance = amount_field(&mut r, purse_tag::BALANCE)?;
        let counter = u32_field(&mut r, purse_tag::COUNTER)?;
        let transfer_key_id = u32_field(&mut r, tag::TRANSFER_KEY_ID)?;
        let key_limit = u32_field(&mut r, tag::KEY_LIMIT)?;
        let held = r.expect(tag::HELD_KEY_IDS)?;
        if held.len() % 4 != 0 || held.len() / 4 > HELD_TRANSFER_KEYS_MAX {
            return Err(field(
                "held key ids",
                "not a short list of 4-byte identifiers",
            ));
        }
        let held_key_ids: Vec<u32> = held.chunks_exact(4).map(|c| u32_at(c, 0)).collect();
        if held_key_ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(field("held key ids", "not strictly ascending"));
        }
        let update_key_id = u32_field(&mut r, tag::UPDATE_KEY_ID)?;
        let certificate = certificate_field(&mut r)?;
        let pending = r
            .optional(tag::PENDING)?
            .map(PendingTransfer::decode_value)
            .transpose()?;
        r.finish()?;
        Ok(TransferInfo {
            card_id,
            balance,
            counter,
            transfer_key_id,
            key_limit,
            held_key_ids,
            update_key_id,
            certificate,
            pending,
        })
    }
}
