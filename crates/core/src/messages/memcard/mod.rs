//! The memory card of seed 001: a storage card with no crypto engine, whose value the
//! machines' SAMs sign.
//!
//! The card has a card ID in ROM, a backward counter that the card itself lowers by one on
//! every write of the value area (no command sets or raises it), and three writable areas:
//! the value area (date and amount, in the clear or sealed under the writer's key, claim 4),
//! the signature area, and the certificate area holding the writing machine's
//! center-certified public key. A machine that writes value signs
//! `(card ID, counter after the write, value area)` in its SAM (claims 1-3); a machine that
//! reads value checks the certificate against the center's key, then the signature against
//! what it read from the card. Because the counter moves on every value write and is in the
//! signature, an older image written back, an image copied to another card, an edited amount
//! or a signature from another card never verify.
//!
//! This module holds the memory map, the value area's two formats, the byte string a writer
//! signs, and the record a machine keeps of each write and uploads to the center.
//! `docs/memory-card.md` documents the same bytes.

use crate::cert::Certificate;
use crate::crypto::{
    aes_gcm_open, aes_gcm_seal, derivation, diversification_input, diversify_key, AesKey,
    Signature, GCM_NONCE_LEN, GCM_TAG_LEN, SIGNATURE_LEN,
};
use crate::ids::{CardId, DeviceId};
use crate::limits::CERTIFICATE_LEN_MAX;
use crate::messages::center::CenterError;
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u32, be_u64, TlvReader, TlvWriter};

/// The memory map: where each area starts and how long it is. Addresses are byte offsets
/// as READ BINARY and UPDATE BINARY name them.
pub mod map {
    use crate::crypto::SIGNATURE_LEN;
    use crate::ids::CardId;

    /// The card ID, in ROM: written once at manufacture, never again.
    pub const CARD_ID: u16 = 0x0000;
    pub const CARD_ID_LEN: usize = CardId::LEN;
    /// The backward counter, big-endian u32, read only: the card lowers it by one on every
    /// write that touches the value area.
    pub const COUNTER: u16 = 0x0008;
    pub const COUNTER_LEN: usize = 4;
    /// The value area (date + amount, area 12C of the seed).
    pub const VALUE_AREA: u16 = 0x0010;
    pub const VALUE_AREA_LEN: usize = super::VALUE_AREA_LEN;
    /// The signature area (12A).
    pub const SIGNATURE_AREA: u16 = 0x0040;
    pub const SIGNATURE_AREA_LEN: usize = SIGNATURE_LEN;
    /// The certificate area (12B): a 2-byte big-endian length, the writer's certificate,
    /// zeros after it.
    pub const CERTIFICATE_AREA: u16 = 0x0080;
    pub const CERTIFICATE_AREA_LEN: usize = super::CERTIFICATE_AREA_LEN;
    /// The whole memory; everything from `VALUE_AREA` on is writable.
    pub const MEMORY_LEN: usize = CERTIFICATE_AREA as usize + CERTIFICATE_AREA_LEN;
}

/// The value area's length: one format byte, then up to 47 bytes of content.
pub const VALUE_AREA_LEN: usize = 48;
/// The certificate area's length: a 2-byte length and the longest certificate, rounded up.
pub const CERTIFICATE_AREA_LEN: usize = 528;
const _: () = assert!(2 + CERTIFICATE_LEN_MAX <= CERTIFICATE_AREA_LEN);
/// A new card's counter: the number of value writes the card will ever accept.
pub const COUNTER_START: u32 = 0x0001_0000;
/// What a clear value holds: the date (4 bytes) and the amount (8 bytes).
pub const PLAIN_VALUE_LEN: usize = 12;
/// A sealed value: nonce, ciphertext of the plain value, tag.
pub const SEALED_VALUE_LEN: usize = GCM_NONCE_LEN + PLAIN_VALUE_LEN + GCM_TAG_LEN;
// The format byte and a sealed value fit in the area.
const _: () = assert!(SEALED_VALUE_LEN < VALUE_AREA_LEN);

/// The first byte of the value area.
pub mod format {
    /// Never written: a new card, no value.
    pub const BLANK: u8 = 0x00;
    /// Date and amount in the clear (claims 1-3).
    pub const PLAIN: u8 = 0x01;
    /// Date and amount sealed under the writer's value key (claim 4).
    pub const SEALED: u8 = 0x02;
}

/// The context label of the string a writer signs.
pub const STATE_CONTEXT: &[u8] = b"valuecard/memcard/state/v1";
/// The context label of a sealed value's associated data.
pub const SEAL_CONTEXT: &[u8] = b"valuecard/memcard/seal/v1";

/// Date and amount: what a memory card is worth and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainValue {
    pub date: Date,
    pub amount: Amount,
}

impl PlainValue {
    pub fn encode(&self) -> [u8; PLAIN_VALUE_LEN] {
        let mut out = [0u8; PLAIN_VALUE_LEN];
        out[..4].copy_from_slice(&self.date.0.to_be_bytes());
        out[4..].copy_from_slice(&self.amount.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bytes: &[u8; PLAIN_VALUE_LEN] = bytes.try_into().map_err(|_| DecodeError::Field {
            field: "value",
            reason: "must be 12 bytes",
        })?;
        let date = Date(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        let mut amount = [0u8; 8];
        amount.copy_from_slice(&bytes[4..]);
        Ok(PlainValue {
            date,
            amount: Amount::new(u64::from_be_bytes(amount))?,
        })
    }
}

/// The value area as it is on the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueArea {
    /// Never written.
    Blank,
    /// Claims 1-3: date and amount in the clear.
    Plain(PlainValue),
    /// Claim 4: date and amount sealed under the writer's value key; only a SAM holding the
    /// common key (or the center) opens it.
    Sealed {
        nonce: [u8; GCM_NONCE_LEN],
        ciphertext: [u8; PLAIN_VALUE_LEN + GCM_TAG_LEN],
    },
}

impl ValueArea {
    /// The area's bytes, zero-padded to [`VALUE_AREA_LEN`].
    pub fn encode(&self) -> [u8; VALUE_AREA_LEN] {
        let mut out = [0u8; VALUE_AREA_LEN];
        match self {
            ValueArea::Blank => {}
            ValueArea::Plain(value) => {
                out[0] = format::PLAIN;
                out[1..1 + PLAIN_VALUE_LEN].copy_from_slice(&value.encode());
            }
            ValueArea::Sealed { nonce, ciphertext } => {
                out[0] = format::SEALED;
                out[1..1 + GCM_NONCE_LEN].copy_from_slice(nonce);
                out[1 + GCM_NONCE_LEN..1 + SEALED_VALUE_LEN].copy_from_slice(ciphertext);
            }
        }
        out
    }

    /// Parses the whole area; the padding after the content must be zero, so one area has
    /// one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != VALUE_AREA_LEN {
            return Err(DecodeError::Field {
                field: "value area",
                reason: "must be 48 bytes",
            });
        }
        let (area, used) = match bytes[0] {
            format::BLANK => (ValueArea::Blank, 1),
            format::PLAIN => (
                ValueArea::Plain(PlainValue::decode(&bytes[1..1 + PLAIN_VALUE_LEN])?),
                1 + PLAIN_VALUE_LEN,
            ),
            format::SEALED => {
                let mut nonce = [0u8; GCM_NONCE_LEN];
                nonce.copy_from_slice(&bytes[1..1 + GCM_NONCE_LEN]);
                let mut ciphertext = [0u8; PLAIN_VALUE_LEN + GCM_TAG_LEN];
                ciphertext.copy_from_slice(&bytes[1 + GCM_NONCE_LEN..1 + SEALED_VALUE_LEN]);
                (
                    ValueArea::Sealed { nonce, ciphertext },
                    1 + SEALED_VALUE_LEN,
                )
            }
            _ => {
                return Err(DecodeError::Field {
                    field: "value area",
                    reason: "unknown format",
                })
            }
        };
        if bytes[used..].iter().any(|&b| b != 0) {
            return Err(DecodeError::Field {
                field: "value area",
                reason: "padding must be zero",
            });
        }
        Ok(area)
    }

    /// Claim 4: seals `value` for `card` at the counter the card will show after this
    /// write, under `writer`'s value key. The nonce must be fresh for every call (a SAM
    /// draws it at random: a torn write retried at the same counter must not reuse it).
    pub fn seal(
        value_key: &AesKey,
        nonce: [u8; GCM_NONCE_LEN],
        card: &CardId,
        counter: u32,
        writer: &DeviceId,
        value: &PlainValue,
    ) -> Self {
        let sealed = aes_gcm_seal(
            value_key,
            &nonce,
            &seal_aad(card, counter, writer),
            &value.encode(),
        );
        let mut ciphertext = [0u8; PLAIN_VALUE_LEN + GCM_TAG_LEN];
        // AES-GCM output is the plaintext's length plus the tag: exactly this array.
        ciphertext.copy_from_slice(&sealed[..PLAIN_VALUE_LEN + GCM_TAG_LEN]);
        ValueArea::Sealed { nonce, ciphertext }
    }

    /// The value this area holds, opening a sealed one with `writer`'s value key. `None`
    /// for a blank area.
    pub fn open(
        &self,
        value_key: Option<&AesKey>,
        card: &CardId,
        counter: u32,
        writer: &DeviceId,
    ) -> Result<Option<PlainValue>, MemcardError> {
        match self {
            ValueArea::Blank => Ok(None),
            ValueArea::Plain(value) => Ok(Some(*value)),
            ValueArea::Sealed { nonce, ciphertext } => {
                let key = value_key.ok_or(MemcardError::SealedWithoutKey)?;
                let plain = aes_gcm_open(key, nonce, &seal_aad(card, counter, writer), ciphertext)
                    .map_err(|_| MemcardError::SealBroken)?;
                Ok(Some(PlainValue::decode(&plain)?))
            }
        }
    }
}

/// What a sealed value is bound to: the card, the counter after the write, the writer.
fn seal_aad(card: &CardId, counter: u32, writer: &DeviceId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SEAL_CONTEXT.len() + 20);
    aad.extend_from_slice(SEAL_CONTEXT);
    aad.extend_from_slice(card.as_bytes());
    aad.extend_from_slice(&counter.to_be_bytes());
    aad.extend_from_slice(writer.as_bytes());
    aad
}

/// A writer's value key for claim 4: diversified from its device ID under the common key
/// KO that every installed SAM and the center hold, so any SAM of the system opens what
/// another sealed, and nothing without a SAM does.
pub fn writer_value_key(common_key: &AesKey, writer: &DeviceId) -> AesKey {
    diversify_key(common_key, derivation::MEMCARD_VALUE_KEY, writer.as_bytes())
}

/// What one AES-CMAC under KO turns into `writer`'s value key ([`writer_value_key`]): a SAM
/// whose KO is a token object derives the key there (PKCS#11 CKM_AES_CMAC) from this input.
pub fn writer_value_key_input(writer: &DeviceId) -> Vec<u8> {
    diversification_input(derivation::MEMCARD_VALUE_KEY, writer.as_bytes())
}

/// The byte string a writing machine signs (claim 3's message digest is Ed25519's own):
/// `"valuecard/memcard/state/v1" || card ID || counter (4 bytes, big-endian) || value area
/// (48 bytes)`. The counter is the one the card shows after the write.
pub fn state_signing_input(card: &CardId, counter: u32, area: &[u8; VALUE_AREA_LEN]) -> Vec<u8> {
    let mut input = Vec::with_capacity(STATE_CONTEXT.len() + 12 + VALUE_AREA_LEN);
    input.extend_from_slice(STATE_CONTEXT);
    input.extend_from_slice(card.as_bytes());
    input.extend_from_slice(&counter.to_be_bytes());
    input.extend_from_slice(area);
    input
}

/// The certificate area's bytes for `certificate`: length, certificate, zeros.
pub fn encode_certificate_area(certificate: &Certificate) -> [u8; CERTIFICATE_AREA_LEN] {
    let mut out = [0u8; CERTIFICATE_AREA_LEN];
    let encoded = certificate.encode();
    // Certificate::decode refuses more than CERTIFICATE_LEN_MAX bytes, and the area holds
    // that many plus the length (checked at compile time above).
    let len = encoded.len().min(CERTIFICATE_LEN_MAX);
    out[..2].copy_from_slice(&(len as u16).to_be_bytes());
    out[2..2 + len].copy_from_slice(&encoded[..len]);
    out
}

/// Parses the certificate area: `None` when it was never written (length zero).
pub fn decode_certificate_area(bytes: &[u8]) -> Result<Option<Certificate>, DecodeError> {
    if bytes.len() != CERTIFICATE_AREA_LEN {
        return Err(DecodeError::Field {
            field: "certificate area",
            reason: "wrong length",
        });
    }
    let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    if len == 0 {
        return if bytes.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(DecodeError::Field {
                field: "certificate area",
                reason: "padding must be zero",
            })
        };
    }
    if len > CERTIFICATE_LEN_MAX {
        return Err(DecodeError::Field {
            field: "certificate area",
            reason: "length above the certificate limit",
        });
    }
    if bytes[2 + len..].iter().any(|&b| b != 0) {
        return Err(DecodeError::Field {
            field: "certificate area",
            reason: "padding must be zero",
        });
    }
    Ok(Some(Certificate::decode(&bytes[2..2 + len])?))
}

/// Everything a machine reads off a memory card, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardContent {
    pub card_id: CardId,
    pub counter: u32,
    pub value_area: ValueArea,
    pub signature: Signature,
    pub certificate: Option<Certificate>,
}

impl CardContent {
    /// Parses a whole memory dump ([`map::MEMORY_LEN`] bytes, as READ BINARY gives it).
    pub fn decode(memory: &[u8]) -> Result<Self, DecodeError> {
        if memory.len() != map::MEMORY_LEN {
            return Err(DecodeError::Field {
                field: "memory",
                reason: "wrong length",
            });
        }
        let at = |address: u16, len: usize| &memory[address as usize..address as usize + len];
        let card_id = CardId::from_slice(at(map::CARD_ID, map::CARD_ID_LEN)).map_err(|_| {
            DecodeError::Field {
                field: "card id",
                reason: "wrong length",
            }
        })?;
        let counter = be_u32(0, at(map::COUNTER, map::COUNTER_LEN))?;
        let value_area = ValueArea::decode(at(map::VALUE_AREA, VALUE_AREA_LEN))?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(at(map::SIGNATURE_AREA, SIGNATURE_LEN));
        let certificate = decode_certificate_area(at(map::CERTIFICATE_AREA, CERTIFICATE_AREA_LEN))?;
        Ok(CardContent {
            card_id,
            counter,
            value_area,
            signature: Signature(signature),
            certificate,
        })
    }

    /// The string the writer signed, as this content shows it.
    pub fn signing_input(&self) -> Vec<u8> {
        state_signing_input(&self.card_id, self.counter, &self.value_area.encode())
    }
}

/// A card state as its writer signed it: the evidence a machine logs and the center keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedState {
    pub card_id: CardId,
    pub counter: u32,
    pub value_area: ValueArea,
    pub writer: DeviceId,
    pub signature: Signature,
}

impl SignedState {
    pub fn signing_input(&self) -> Vec<u8> {
        state_signing_input(&self.card_id, self.counter, &self.value_area.encode())
    }

    fn put(&self, w: &mut TlvWriter, outer: u32) {
        w.nested(outer, |s| {
            s.put(tag::CARD_ID, self.card_id.as_bytes())
                .put_u32(tag::COUNTER, self.counter)
                .put(tag::VALUE_AREA, &self.value_area.encode())
                .put(tag::WRITER, self.writer.as_bytes())
                .put(tag::SIGNATURE, &self.signature.0);
        });
    }

    fn take(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let card_id =
            CardId::from_slice(r.expect(tag::CARD_ID)?).map_err(|_| DecodeError::Field {
                field: "card id",
                reason: "wrong length",
            })?;
        let counter = be_u32(tag::COUNTER, r.expect(tag::COUNTER)?)?;
        let value_area = ValueArea::decode(r.expect(tag::VALUE_AREA)?)?;
        let writer =
            DeviceId::from_slice(r.expect(tag::WRITER)?).map_err(|_| DecodeError::Field {
                field: "writer",
                reason: "wrong length",
            })?;
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?);
        r.finish()?;
        Ok(SignedState {
            card_id,
            counter,
            value_area,
            writer,
            signature,
        })
    }
}

/// What kind of write a record tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WriteKind {
    /// A charge machine added value (money taken in, its float lowered).
    Charge = 0x01,
    /// A payment machine served and deducted.
    Payment = 0x02,
}

impl WriteKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x01 => Some(WriteKind::Charge),
            0x02 => Some(WriteKind::Payment),
            _ => None,
        }
    }
}

/// A machine's record of one value write, logged in its SAM before the card is touched and
/// uploaded to the center. `previous` is the state the machine verified (absent for a first
/// charge of a blank card); `written` is the state it signed. The center counts value from
/// these records and flags two records that start from the same card state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub kind: WriteKind,
    /// The machine's own sequence number of this record: uploads are idempotent on
    /// (machine, sequence).
    pub sequence: u32,
    pub date: Date,
    pub balance_before: Amount,
    pub balance_after: Amount,
    pub previous: Option<SignedState>,
    pub written: SignedState,
}

impl WriteRecord {
    /// The amount moved: added by a charge, deducted by a payment. `None` when the balances
    /// do not agree with the kind.
    pub fn amount(&self) -> Option<Amount> {
        match self.kind {
            WriteKind::Charge => self.balance_after.checked_sub(self.balance_before).ok(),
            WriteKind::Payment => self.balance_before.checked_sub(self.balance_after).ok(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(320);
        w.nested(tag::RECORD, |r| {
            r.put_u8(tag::KIND, self.kind as u8)
                .put_u32(tag::SEQUENCE, self.sequence)
                .put_u32(tag::DATE, self.date.0)
                .put_u64(tag::BALANCE_BEFORE, self.balance_before.minor())
                .put_u64(tag::BALANCE_AFTER, self.balance_after.minor());
            if let Some(previous) = &self.previous {
                previous.put(r, tag::PREVIOUS);
            }
            self.written.put(r, tag::WRITTEN);
        });
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = TlvReader::new(bytes);
        let value = outer.expect(tag::RECORD)?;
        outer.finish()?;
        let mut r = TlvReader::new(value);
        let kind =
            WriteKind::from_u8(one_byte(r.expect(tag::KIND)?)?).ok_or(DecodeError::Field {
                field: "kind",
                reason: "unknown write kind",
            })?;
        let sequence = be_u32(tag::SEQUENCE, r.expect(tag::SEQUENCE)?)?;
        let date = Date(be_u32(tag::DATE, r.expect(tag::DATE)?)?);
        let balance_before = balance(&mut r, tag::BALANCE_BEFORE)?;
        let balance_after = balance(&mut r, tag::BALANCE_AFTER)?;
        let previous = r
            .optional(tag::PREVIOUS)?
            .map(SignedState::take)
            .transpose()?;
        let written = SignedState::take(r.expect(tag::WRITTEN)?)?;
        r.finish()?;
        if written.counter == COUNTER_START || written.value_area == ValueArea::Blank {
            return Err(DecodeError::Field {
                field: "written",
                reason: "a written state has a lowered counter and a value",
            });
        }
        if let Some(previous) = &previous {
            if previous.card_id != written.card_id || previous.counter <= written.counter {
                return Err(DecodeError::Field {
                    field: "previous",
                    reason: "must be an earlier state of the same card",
                });
            }
        }
        let record = WriteRecord {
            kind,
            sequence,
            date,
            balance_before,
            balance_after,
            previous,
            written,
        };
        if record.amount().is_none_or(|amount| amount == Amount::ZERO) {
            return Err(DecodeError::Field {
                field: "balances",
                reason: "must move value in the direction of the kind of write",
            });
        }
        Ok(record)
    }
}

fn one_byte(value: &[u8]) -> Result<u8, DecodeError> {
    match value {
        [byte] => Ok(*byte),
        _ => Err(DecodeError::Field {
            field: "kind",
            reason: "must be one byte",
        }),
    }
}

fn balance(r: &mut TlvReader<'_>, tag: u32) -> Result<Amount, DecodeError> {
    Ok(Amount::new(be_u64(tag, r.expect(tag)?)?)?)
}

/// Tags of the memory-card records (context-specific, their own space: records never mix
/// with purse APDUs).
pub mod tag {
    pub const RECORD: u32 = 0xE1;
    pub const FLOAT_GRANT: u32 = 0xE2;
    pub const KIND: u32 = 0x80;
    pub const SEQUENCE: u32 = 0x81;
    pub const DATE: u32 = 0x82;
    pub const BALANCE_BEFORE: u32 = 0x83;
    pub const BALANCE_AFTER: u32 = 0x84;
    pub const PREVIOUS: u32 = 0xA5;
    pub const WRITTEN: u32 = 0xA6;
    pub const CARD_ID: u32 = 0x87;
    pub const COUNTER: u32 = 0x88;
    pub const VALUE_AREA: u32 = 0x89;
    pub const WRITER: u32 = 0x8A;
    pub const SIGNATURE: u32 = 0x8B;
}

/// Why a memory card's content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemcardError {
    #[error("the card's content is malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("the value area is sealed and no value key was given")]
    SealedWithoutKey,
    #[error("the sealed value does not open for this card, counter and writer")]
    SealBroken,
}

mod float;
mod link;

pub use float::*;
pub use link::*;

#[cfg(test)]
mod tests;
