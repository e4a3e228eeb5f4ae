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
use crate::messages::purse::{
    last_writer, put_last_writer, tag as purse_tag, Challenge, TerminalStamp, UsageRecord,
};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u32, be_u64, TlvReader, TlvWriter};
use zeroize::Zeroize;

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

fn field(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Field { field, reason }
}

fn u32_field(r: &mut TlvReader<'_>, tag: u32) -> Result<u32, DecodeError> {
    Ok(be_u32(tag, r.expect(tag)?)?)
}

fn amount_field(r: &mut TlvReader<'_>, tag: u32) -> Result<Amount, DecodeError> {
    Ok(Amount::new(be_u64(tag, r.expect(tag)?)?)?)
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

// ---------------------------------------------------------------------------------------
// Transfer-key update (claims 2-9, 11, 13, 15, 16).

/// UPDATE PERMISSION command data: empty in the symmetric and selection forms; the peer's
/// certificate in the public-key form (claims 4, 7: the second public key certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePermission {
    pub peer_certificate: Option<Certificate>,
}

impl UpdatePermission {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        if let Some(certificate) = &self.peer_certificate {
            put_certificate(&mut w, certificate);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let peer_certificate = optional_certificate(&mut r)?;
        r.finish()?;
        Ok(UpdatePermission { peer_certificate })
    }
}

/// UPDATE PERMISSION response: the first random number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePermissionResponse {
    pub random: KeyUpdateRandom,
}

impl UpdatePermissionResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::RANDOM, &self.random);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let random = r.expect_array(tag::RANDOM)?;
        r.finish()?;
        Ok(UpdatePermissionResponse { random })
    }
}

/// GET TRANSFER KEY command data: the second random number (the receiving card's first),
/// and in the public-key form the receiving card's certificate (the third certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTransferKey {
    pub random: KeyUpdateRandom,
    pub peer_certificate: Option<Certificate>,
}

impl GetTransferKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::RANDOM, &self.random);
        if let Some(certificate) = &self.peer_certificate {
            put_certificate(&mut w, certificate);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let random = r.expect_array(tag::RANDOM)?;
        let peer_certificate = optional_certificate(&mut r)?;
        r.finish()?;
        Ok(GetTransferKey {
            random,
            peer_certificate,
        })
    }
}

/// The transfer key exported under the update key (claims 2, 6, 9): AES-128-GCM under a key
/// derived from the update key, over (random number, identifier, key). It is both the GET
/// TRANSFER KEY response and the UPDATE TRANSFER KEY command data of the symmetric and
/// selection forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymmetricKeyExport {
    /// The update-key generation it is encrypted under.
    pub update_key_id: u32,
    pub nonce: [u8; GCM_NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Plaintext of a symmetric export: random number, transfer-key identifier, transfer key.
pub const KEY_EXPORT_PLAINTEXT_LEN: usize = KEY_UPDATE_RANDOM_LEN + 4 + AES_KEY_LEN;

impl SymmetricKeyExport {
    fn aad(mode: KeyUpdateMode, update_key_id: u32) -> Vec<u8> {
        let mut m = b"valuecard/transfer/key-export/v1".to_vec();
        m.push(mode as u8);
        m.extend_from_slice(&update_key_id.to_be_bytes());
        m
    }

    /// Encrypts (random, key) under `update_key`; `nonce` must be fresh random.
    pub fn seal(
        mode: KeyUpdateMode,
        update_key: &TransferKey,
        nonce: [u8; GCM_NONCE_LEN],
        random: &KeyUpdateRandom,
        key: &TransferKey,
    ) -> Self {
        let export_key = diversify_key(
            &update_key.key,
            derivation::KEY_EXPORT,
            &update_key.id.to_be_bytes(),
        );
        let mut plain = [0u8; KEY_EXPORT_PLAINTEXT_LEN];
        plain[..16].copy_from_slice(random);
        plain[16..20].copy_from_slice(&key.id.to_be_bytes());
        plain[20..].copy_from_slice(key.key.expose());
        let ciphertext = aes_gcm_seal(&export_key, &nonce, &Self::aad(mode, update_key.id), &plain);
        plain.zeroize();
        SymmetricKeyExport {
            update_key_id: update_key.id,
            nonce,
            ciphertext,
        }
    }

    /// Decrypts with `update_key`: the random number and the transfer key.
    pub fn open(
        &self,
        mode: KeyUpdateMode,
        update_key: &TransferKey,
    ) -> Result<(KeyUpdateRandom, TransferKey), CryptoError> {
        if self.update_key_id != update_key.id {
            return Err(CryptoError::DecryptFailed);
        }
        let export_key = diversify_key(
            &update_key.key,
            derivation::KEY_EXPORT,
            &update_key.id.to_be_bytes(),
        );
        let mut plain = aes_gcm_open(
            &export_key,
            &self.nonce,
            &Self::aad(mode, update_key.id),
            &self.ciphertext,
        )?;
        if plain.len() != KEY_EXPORT_PLAINTEXT_LEN {
            plain.zeroize();
            return Err(CryptoError::BadLength);
        }
        let mut random = [0u8; KEY_UPDATE_RANDOM_LEN];
        random.copy_from_slice(&plain[..16]);
        let key = TransferKey {
            id: u32_at(&plain, 16),
            key: key_at(&plain, 20),
        };
        plain.zeroize();
        Ok((random, key))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(96);
        w.put_u32(tag::UPDATE_KEY_ID, self.update_key_id)
            .put(tag::NONCE, &self.nonce)
            .put(tag::CIPHERTEXT, &self.ciphertext);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let update_key_id = u32_field(&mut r, tag::UPDATE_KEY_ID)?;
        let nonce = r.expect_array(tag::NONCE)?;
        let ciphertext = r.expect(tag::CIPHERTEXT)?.to_vec();
        if ciphertext.len() != KEY_EXPORT_PLAINTEXT_LEN + GCM_TAG_LEN {
            return Err(field("ciphertext", "wrong length"));
        }
        r.finish()?;
        Ok(SymmetricKeyExport {
            update_key_id,
            nonce,
            ciphertext,
        })
    }
}

/// The transfer key exported in the public-key form (claims 4, 7): (identifier, key) sealed
/// to the receiving card's certified X25519 key, and the sending card's signature over that
/// ciphertext and the receiving card's random number. Both the GET TRANSFER KEY response and
/// the UPDATE TRANSFER KEY command data of the public-key form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyExport {
    pub sealed: Vec<u8>,
    pub signature: Signature,
}

/// Plaintext of a public-key export: identifier and key.
pub const PUBLIC_KEY_EXPORT_PLAINTEXT_LEN: usize = 4 + AES_KEY_LEN;

impl PublicKeyExport {
    /// Associated data of the sealed box: it is for one receiving card, from one sender.
    pub fn sealed_aad(sender: &CardId, receiver: &CardId) -> Vec<u8> {
        let mut m = b"valuecard/transfer/key-seal/v1".to_vec();
        m.extend_from_slice(sender.as_bytes());
        m.extend_from_slice(receiver.as_bytes());
        m
    }

    /// What the sending card signs (claim 4: the first digital signature data).
    pub fn signed_message(
        sender: &CardId,
        receiver: &CardId,
        random: &KeyUpdateRandom,
        sealed: &[u8],
    ) -> Vec<u8> {
        let mut m = b"valuecard/transfer/key-export/v1".to_vec();
        m.extend_from_slice(sender.as_bytes());
        m.extend_from_slice(receiver.as_bytes());
        m.extend_from_slice(random);
        m.extend_from_slice(sealed);
        m
    }

    pub fn plaintext(key: &TransferKey) -> [u8; PUBLIC_KEY_EXPORT_PLAINTEXT_LEN] {
        let mut plain = [0u8; PUBLIC_KEY_EXPORT_PLAINTEXT_LEN];
        plain[..4].copy_from_slice(&key.id.to_be_bytes());
        plain[4..].copy_from_slice(key.key.expose());
        plain
    }

    pub fn key_from_plaintext(plain: &[u8]) -> Result<TransferKey, DecodeError> {
        if plain.len() != PUBLIC_KEY_EXPORT_PLAINTEXT_LEN {
            return Err(field("sealed key", "wrong length"));
        }
        Ok(TransferKey {
            id: u32_at(plain, 0),
            key: key_at(plain, 4),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(160);
        w.put(tag::SEALED, &self.sealed)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let sealed = r.expect(tag::SEALED)?.to_vec();
        if sealed.len() != PUBLIC_KEY_EXPORT_PLAINTEXT_LEN + crate::crypto::SEAL_OVERHEAD {
            return Err(field("sealed key", "wrong length"));
        }
        let signature = signature_field(&mut r)?;
        r.finish()?;
        Ok(PublicKeyExport { sealed, signature })
    }
}

// ---------------------------------------------------------------------------------------
// Value transfer (claims 1, 3, 5, 8: "updates the value data by performing encryption using
// the transfer key"; claims 10-16: the settlement terminal between the two cards).

/// What a settlement terminal signs for a card's transfer record, and what the card checks
/// before it commits: the writer's half of a [`UsageRecord`] of kind `TransferOut` or
/// `TransferIn` (the card fills in the rest from its own state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSignature {
    pub writer_sequence: u32,
    pub signature: Signature,
    pub stamp: Option<TerminalStamp>,
}

impl RecordSignature {
    fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(purse_tag::SEQUENCE, self.writer_sequence)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        if let Some(stamp) = &self.stamp {
            stamp.encode_into(w);
        }
    }

    fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        Ok(RecordSignature {
            writer_sequence: u32_field(r, purse_tag::SEQUENCE)?,
            signature: signature_field(r)?,
            stamp: TerminalStamp::decode_optional(r)?,
        })
    }
}

/// INITIALIZE TRANSFER IN command data, to the destination card: the settlement terminal's
/// certificate and challenge, the source card, the amount and the terminal's date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeTransferIn {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
    pub source: CardId,
    pub amount: Amount,
    pub date: Date,
}

impl InitializeTransferIn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        put_certificate(&mut w, &self.terminal_certificate);
        w.put(purse_tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put(tag::PEER_CARD_ID, self.source.as_bytes())
            .put_u64(purse_tag::AMOUNT, self.amount.minor())
            .put_u32(purse_tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = InitializeTransferIn {
            terminal_certificate: certificate_field(&mut r)?,
            challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
            source: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            amount: amount_field(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE TRANSFER IN response: the destination's state and fresh challenge, and its
/// last usage record with the certificate of its writer, as in a purchase offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInOffer {
    pub counter: u32,
    pub balance: Amount,
    pub challenge_destination: Challenge,
    pub transfer_key_id: u32,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl TransferInOffer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(600);
        w.put_u32(purse_tag::COUNTER, self.counter)
            .put_u64(purse_tag::BALANCE, self.balance.minor())
            .put(purse_tag::CHALLENGE_CARD, &self.challenge_destination)
            .put_u32(tag::TRANSFER_KEY_ID, self.transfer_key_id);
        put_last_writer(&mut w, &self.last_usage, &self.last_writer_certificate);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let counter = u32_field(&mut r, purse_tag::COUNTER)?;
        let balance = amount_field(&mut r, purse_tag::BALANCE)?;
        let challenge_destination = r.expect_array(purse_tag::CHALLENGE_CARD)?;
        let transfer_key_id = u32_field(&mut r, tag::TRANSFER_KEY_ID)?;
        let (last_usage, last_writer_certificate) = last_writer(&mut r)?;
        r.finish()?;
        Ok(TransferInOffer {
            counter,
            balance,
            challenge_destination,
            transfer_key_id,
            last_usage,
            last_writer_certificate,
        })
    }
}

/// TRANSFER OUT command data, to the source card: what the destination said, and the
/// terminal's challenge and date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOut {
    pub challenge_terminal: Challenge,
    pub destination: CardId,
    pub destination_counter: u32,
    pub challenge_destination: Challenge,
    pub amount: Amount,
    pub date: Date,
}

impl TransferOut {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(120);
        w.put(purse_tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put(tag::PEER_CARD_ID, self.destination.as_bytes())
            .put_u32(tag::PEER_COUNTER, self.destination_counter)
            .put(tag::PEER_CHALLENGE, &self.challenge_destination)
            .put_u64(purse_tag::AMOUNT, self.amount.minor())
            .put_u32(purse_tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = TransferOut {
            challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
            destination: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            destination_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
            challenge_destination: r.expect_array(tag::PEER_CHALLENGE)?,
            amount: amount_field(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// Everything a value message is bound to: both cards, both counters, all three challenges,
/// the amount, the date and the key generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferBinding {
    pub key_id: u32,
    pub source: CardId,
    pub source_counter: u32,
    pub challenge_source: Challenge,
    pub destination: CardId,
    pub destination_counter: u32,
    pub challenge_destination: Challenge,
    pub challenge_terminal: Challenge,
    pub date: Date,
}

impl TransferBinding {
    fn bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(140);
        m.extend_from_slice(b"valuecard/transfer/value/v1");
        m.extend_from_slice(&self.key_id.to_be_bytes());
        m.extend_from_slice(self.source.as_bytes());
        m.extend_from_slice(&self.source_counter.to_be_bytes());
        m.extend_from_slice(&self.challenge_source);
        m.extend_from_slice(self.destination.as_bytes());
        m.extend_from_slice(&self.destination_counter.to_be_bytes());
        m.extend_from_slice(&self.challenge_destination);
        m.extend_from_slice(&self.challenge_terminal);
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }

    fn nonce(&self) -> [u8; GCM_NONCE_LEN] {
        // The source's challenge is fresh random per transfer, so the nonce never repeats
        // under one value key.
        let mut nonce = [0u8; GCM_NONCE_LEN];
        nonce.copy_from_slice(&self.challenge_source[..GCM_NONCE_LEN]);
        nonce
    }
}

/// The value message: the amount, AES-128-GCM under the value key of one transfer-key
/// generation, with everything in the [`TransferBinding`] as associated data, so that it is
/// good for one destination, at one counter, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMessage {
    pub key_id: u32,
    pub ciphertext: [u8; 8 + GCM_TAG_LEN],
}

impl ValueMessage {
    pub fn seal(key: &TransferKey, binding: &TransferBinding, amount: Amount) -> Self {
        let sealed = aes_gcm_seal(
            &key.value_key(),
            &binding.nonce(),
            &binding.bytes(),
            &amount.to_be_bytes(),
        );
        let mut ciphertext = [0u8; 8 + GCM_TAG_LEN];
        ciphertext.copy_from_slice(&sealed);
        ValueMessage {
            key_id: key.id,
            ciphertext,
        }
    }

    pub fn open(
        &self,
        key: &TransferKey,
        binding: &TransferBinding,
    ) -> Result<Amount, CryptoError> {
        if self.key_id != key.id || binding.key_id != key.id {
            return Err(CryptoError::DecryptFailed);
        }
        let plain = aes_gcm_open(
            &key.value_key(),
            &binding.nonce(),
            &binding.bytes(),
            &self.ciphertext,
        )?;
        let bytes: [u8; 8] = plain.try_into().map_err(|_| CryptoError::BadLength)?;
        Amount::new(u64::from_be_bytes(bytes)).map_err(|_| CryptoError::BadLength)
    }

    fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(tag::TRANSFER_KEY_ID, self.key_id)
            .put(tag::CIPHERTEXT, &self.ciphertext);
    }

    fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        Ok(ValueMessage {
            key_id: u32_field(r, tag::TRANSFER_KEY_ID)?,
            ciphertext: r.expect_array(tag::CIPHERTEXT)?,
        })
    }
}

/// TRANSFER OUT response: the source's state, its fresh challenge, the value message, and
/// its last usage record with its writer's certificate (the terminal checks the balance
/// was signed before it lets the value reach the destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutOffer {
    pub counter: u32,
    pub balance: Amount,
    pub challenge_source: Challenge,
    pub value: ValueMessage,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl TransferOutOffer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(600);
        w.put_u32(purse_tag::COUNTER, self.counter)
            .put_u64(purse_tag::BALANCE, self.balance.minor())
            .put(purse_tag::CHALLENGE_CARD, &self.challenge_source);
        self.value.encode_into(&mut w);
        put_last_writer(&mut w, &self.last_usage, &self.last_writer_certificate);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let counter = u32_field(&mut r, purse_tag::COUNTER)?;
        let balance = amount_field(&mut r, purse_tag::BALANCE)?;
        let challenge_source = r.expect_array(purse_tag::CHALLENGE_CARD)?;
        let value = ValueMessage::decode_from(&mut r)?;
        let (last_usage, last_writer_certificate) = last_writer(&mut r)?;
        r.finish()?;
        Ok(TransferOutOffer {
            counter,
            balance,
            challenge_source,
            value,
            last_usage,
            last_writer_certificate,
        })
    }
}

/// TRANSFER IN command data, to the destination: the source's counter and challenge, the
/// value message, and the terminal's signature over the destination's transfer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferIn {
    pub source_counter: u32,
    pub challenge_source: Challenge,
    pub value: ValueMessage,
    pub record: RecordSignature,
}

impl TransferIn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(220);
        w.put_u32(tag::PEER_COUNTER, self.source_counter)
            .put(tag::PEER_CHALLENGE, &self.challenge_source);
        self.value.encode_into(&mut w);
        self.record.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = TransferIn {
            source_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
            challenge_source: r.expect_array(tag::PEER_CHALLENGE)?,
            value: ValueMessage::decode_from(&mut r)?,
            record: RecordSignature::decode_from(&mut r)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// What the destination says about one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProofStatus {
    /// The destination applied the value (at the counter in the proof).
    Received = 0x01,
    /// The destination did not apply it and never will: it dropped any session in which
    /// it could have, and its log covers every transfer it could have applied it in.
    NotReceived = 0x02,
}

impl ProofStatus {
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            0x01 => Ok(ProofStatus::Received),
            0x02 => Ok(ProofStatus::NotReceived),
            _ => Err(field("status", "unknown proof status")),
        }
    }
}

/// A proof from the destination, MACed under the proof key of a transfer-key generation:
/// the TRANSFER IN response (received) and the TRANSFER STATUS response (either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferProof {
    pub status: ProofStatus,
    pub key_id: u32,
    /// The destination's counter: after the transfer (received), or now (not received).
    pub destination_counter: u32,
    pub mac: [u8; MAC_LEN],
}

/// What a proof speaks about: one transfer, named by its source and the source's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofSubject {
    pub source: CardId,
    pub challenge_source: Challenge,
    pub destination: CardId,
    /// The amount received; zero for a proof of non-receipt.
    pub amount: Amount,
}

impl TransferProof {
    pub fn mac_input(
        status: ProofStatus,
        key_id: u32,
        destination_counter: u32,
        subject: &ProofSubject,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(100);
        m.extend_from_slice(b"valuecard/transfer/proof/v1");
        m.push(status as u8);
        m.extend_from_slice(&key_id.to_be_bytes());
        m.extend_from_slice(subject.source.as_bytes());
        m.extend_from_slice(&subject.challenge_source);
        m.extend_from_slice(subject.destination.as_bytes());
        m.extend_from_slice(&destination_counter.to_be_bytes());
        m.extend_from_slice(&subject.amount.to_be_bytes());
        m
    }

    pub fn make(
        status: ProofStatus,
        key: &TransferKey,
        destination_counter: u32,
        subject: &ProofSubject,
    ) -> Self {
        let mac = aes_cmac(
            &key.proof_key(),
            &Self::mac_input(status, key.id, destination_counter, subject),
        );
        TransferProof {
            status,
            key_id: key.id,
            destination_counter,
            mac,
        }
    }

    pub fn verify(&self, key: &TransferKey, subject: &ProofSubject) -> Result<(), CryptoError> {
        if self.key_id != key.id {
            return Err(CryptoError::BadMac);
        }
        crate::crypto::aes_cmac_verify(
            &key.proof_key(),
            &Self::mac_input(self.status, self.key_id, self.destination_counter, subject),
            &self.mac,
        )
    }

    fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u8(tag::PROOF_STATUS, self.status as u8)
            .put_u32(tag::TRANSFER_KEY_ID, self.key_id)
            .put_u32(tag::PEER_COUNTER, self.destination_counter)
            .put(purse_tag::MAC, &self.mac);
    }

    fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        let [status] = r.expect_array::<1>(tag::PROOF_STATUS)?;
        Ok(TransferProof {
            status: ProofStatus::from_u8(status)?,
            key_id: u32_field(r, tag::TRANSFER_KEY_ID)?,
            destination_counter: u32_field(r, tag::PEER_COUNTER)?,
            mac: r.expect_array(purse_tag::MAC)?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let proof = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(proof)
    }
}

/// TRANSFER STATUS command data, to the destination: which transfer the terminal asks
/// about (from the source's pending-transfer log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStatusQuery {
    pub source: CardId,
    pub challenge_source: Challenge,
    /// The destination's counter when it accepted to receive.
    pub destination_counter: u32,
}

impl TransferStatusQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        w.put(tag::PEER_CARD_ID, self.source.as_bytes())
            .put(tag::PEER_CHALLENGE, &self.challenge_source)
            .put_u32(tag::PEER_COUNTER, self.destination_counter);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let query = TransferStatusQuery {
            source: card_id_field(&mut r, tag::PEER_CARD_ID)?,
            challenge_source: r.expect_array(tag::PEER_CHALLENGE)?,
            destination_counter: u32_field(&mut r, tag::PEER_COUNTER)?,
        };
        r.finish()?;
        Ok(query)
    }
}

/// TRANSFER COMPLETE command data, to the source: the destination's proof and, when the
/// value was received, the (possibly another) settlement terminal's certificate, challenge,
/// date and signature over the source's transfer-out record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferComplete {
    pub proof: TransferProof,
    pub record: Option<CompletionRecord>,
}

/// The terminal's part of a completed transfer-out record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRecord {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
    pub date: Date,
    pub signature: RecordSignature,
}

impl TransferComplete {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(500);
        self.proof.encode_into(&mut w);
        if let Some(record) = &self.record {
            put_certificate(&mut w, &record.terminal_certificate);
            w.put(purse_tag::CHALLENGE_TERMINAL, &record.challenge_terminal)
                .put_u32(purse_tag::DATE, record.date.0);
            record.signature.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let proof = TransferProof::decode_from(&mut r)?;
        let record = match optional_certificate(&mut r)? {
            None => None,
            Some(terminal_certificate) => Some(CompletionRecord {
                terminal_certificate,
                challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
                date: Date(u32_field(&mut r, purse_tag::DATE)?),
                signature: RecordSignature::decode_from(&mut r)?,
            }),
        };
        r.finish()?;
        Ok(TransferComplete { proof, record })
    }
}
