//! The purse application's command set: constants, the data of every command and response,
//! and the signed byte strings. `docs/card-commands.md` documents the same bytes.
//!
//! Signed strings are fixed-width concatenations behind a distinct context label for each
//! signer and step, so no signature made for one step verifies for another.

use crate::cert::{Certificate, TrustAnchor};
use crate::crypto::{PublicKey, Signature, MAC_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::limits::CHALLENGE_LEN;
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u32, be_u64, TlvReader, TlvWriter};

/// The purse application identifier: a proprietary (unregistered, `F`-prefixed) AID.
pub const PURSE_AID: [u8; 8] = [0xF0, 0x56, 0x43, 0x50, 0x55, 0x52, 0x53, 0x45];

/// Class byte of the ISO commands (SELECT, GET CHALLENGE).
pub const CLA_ISO: u8 = 0x00;
/// Class byte of the proprietary purse commands.
pub const CLA_PROPRIETARY: u8 = 0x80;

/// Instruction bytes. ISO instructions keep their ISO codes.
pub mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const GET_CHALLENGE: u8 = 0x84;
    pub const GENERATE_KEY_PAIR: u8 = 0x46;
    pub const PERSONALIZE: u8 = 0xE2;
    pub const READ_PURSE: u8 = 0x30;
    pub const READ_LOG: u8 = 0x32;
    pub const INITIALIZE_PURCHASE: u8 = 0x50;
    pub const DEBIT: u8 = 0x52;
    pub const INITIALIZE_LOAD: u8 = 0x54;
    pub const CREDIT: u8 = 0x56;
    pub const GET_LAST_TRANSACTION: u8 = 0x5C;
    // Credit mode (Figs. 13-17; data in `messages::credit`).
    pub const READ_CREDIT: u8 = 0x34;
    pub const READ_SERVICE_LOG: u8 = 0x36;
    pub const ENABLE_CREDIT: u8 = 0x70;
    pub const VERIFY_SETTING_NUMBER: u8 = 0x72;
    pub const VERIFY_PASSWORD: u8 = 0x74;
    pub const INITIALIZE_PASSWORD: u8 = 0x76;
    pub const SET_PASSWORD: u8 = 0x78;
    pub const INITIALIZE_SERVICE: u8 = 0x7A;
    pub const RECORD_SERVICE: u8 = 0x7C;
}

/// Tags used inside purse command and response data (context-specific within each command).
pub mod tag {
    pub const FCI: u32 = 0x6F;
    pub const DF_NAME: u32 = 0x84;
    pub const FCI_PROPRIETARY: u32 = 0xA5;
    pub const CHALLENGE_TERMINAL: u32 = 0x80;
    pub const CHALLENGE_CARD: u32 = 0x81;
    pub const AMOUNT: u32 = 0x82;
    pub const BALANCE: u32 = 0x83;
    pub const COUNTER: u32 = 0x84;
    pub const DATE: u32 = 0x85;
    pub const CARD_ID: u32 = 0x86;
    pub const DEVICE_ID: u32 = 0x87;
    pub const SEQUENCE: u32 = 0x88;
    pub const STATE: u32 = 0x89;
    pub const KIND: u32 = 0x8A;
    pub const SIGNING_KEY: u32 = 0x8B;
    pub const SEALING_KEY: u32 = 0x8C;
    pub const SEALED_KEYS: u32 = 0x8D;
    pub const ABNORMAL_EVENTS: u32 = 0x8E;
    pub const STAMP_COUNT: u32 = 0x8F;
    pub const STAMP_SIGNATURE: u32 = 0x9C;
    pub const MAC: u32 = 0x9D;
    pub const SIGNATURE: u32 = 0x9E;
    pub const ANCHOR: u32 = 0xA1;
    pub const USAGE_RECORD: u32 = 0xA2;
    pub const LOG_ENTRY: u32 = 0xA3;
    pub const CHIP_SERIAL: u32 = 0x90;
    pub const CERTIFICATE: u32 = crate::cert::TAG_CERTIFICATE;
}

pub type Challenge = [u8; CHALLENGE_LEN];

/// A chip's manufacture serial (Fig. 8): written at the factory, shown by SELECT until the
/// card is personalized, and the identifier from which the chip's own transport key Ktemp is
/// diversified (a card has no card ID before issuance).
pub type ChipSerial = [u8; 8];

/// The card's life-cycle state, as reported in the FCI and READ PURSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CardState {
    /// Holds only the transport key Ktemp (seed 003, Fig. 8).
    Manufactured = 0x01,
    /// Has its card ID and key pair; waits for its certificate and keys.
    KeysGenerated = 0x02,
    /// Personalized: can be loaded and used.
    Active = 0x03,
    /// Refused further use after an abnormal event (Fig. 5: a raised balance).
    Blocked = 0x7F,
}

impl CardState {
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        Ok(match value {
            0x01 => CardState::Manufactured,
            0x02 => CardState::KeysGenerated,
            0x03 => CardState::Active,
            0x7F => CardState::Blocked,
            _ => {
                return Err(DecodeError::Field {
                    field: "state",
                    reason: "unknown card state",
                })
            }
        })
    }
}

/// What kind of balance update a usage record or log entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TransactionKind {
    Purchase = 0x01,
    Load = 0x02,
}

impl TransactionKind {
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            0x01 => Ok(TransactionKind::Purchase),
            0x02 => Ok(TransactionKind::Load),
            _ => Err(DecodeError::Field {
                field: "kind",
                reason: "unknown transaction kind",
            }),
        }
    }
}

fn challenge(reader: &mut TlvReader<'_>, tag: u32) -> Result<Challenge, DecodeError> {
    Ok(reader.expect_array::<CHALLENGE_LEN>(tag)?)
}

fn amount(reader: &mut TlvReader<'_>, tag: u32) -> Result<Amount, DecodeError> {
    Ok(Amount::new(be_u64(tag, reader.expect(tag)?)?)?)
}

fn u32_field(reader: &mut TlvReader<'_>, tag: u32) -> Result<u32, DecodeError> {
    Ok(be_u32(tag, reader.expect(tag)?)?)
}

fn signature(reader: &mut TlvReader<'_>) -> Result<Signature, DecodeError> {
    Ok(Signature(
        reader.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?,
    ))
}

fn certificate(reader: &mut TlvReader<'_>) -> Result<Certificate, DecodeError> {
    Ok(Certificate::decode_value(reader.expect(tag::CERTIFICATE)?)?)
}

fn put_certificate(w: &mut TlvWriter, certificate: &Certificate) {
    w.put_raw(&certificate.encode());
}

/// The FCI returned by SELECT:
/// `6F { 84 AID, A5 { 89 state, [86 card ID], [90 chip serial], [7F21 cert] } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectResponse {
    pub state: CardState,
    pub card_id: Option<CardId>,
    /// Present before personalization: the dispenser sends it to the center, which MACs the
    /// issuance commands under this chip's own transport key.
    pub chip_serial: Option<ChipSerial>,
    pub certificate: Option<Certificate>,
}

impl SelectResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(300);
        w.nested(tag::FCI, |fci| {
            fci.put(tag::DF_NAME, &PURSE_AID)
                .nested(tag::FCI_PROPRIETARY, |p| {
                    p.put_u8(tag::STATE, self.state as u8);
                    if let Some(card_id) = &self.card_id {
                        p.put(tag::CARD_ID, card_id.as_bytes());
                    }
                    if let Some(serial) = &self.chip_serial {
                        p.put(tag::CHIP_SERIAL, serial);
                    }
                    if let Some(certificate) = &self.certificate {
                        put_certificate(p, certificate);
                    }
                });
        });
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = TlvReader::new(bytes);
        let mut fci = TlvReader::new(outer.expect(tag::FCI)?);
        outer.finish()?;
        if fci.expect(tag::DF_NAME)? != PURSE_AID {
            return Err(DecodeError::Field {
                field: "df_name",
                reason: "not the purse AID",
            });
        }
        let mut p = TlvReader::new(fci.expect(tag::FCI_PROPRIETARY)?);
        fci.finish()?;
        let [state] = p.expect_array::<1>(tag::STATE)?;
        let state = CardState::from_u8(state)?;
        let card_id = p
            .optional(tag::CARD_ID)?
            .map(CardId::from_slice)
            .transpose()
            .map_err(|_| DecodeError::Field {
                field: "card_id",
                reason: "must be 8 bytes",
            })?;
        let chip_serial = p
            .optional(tag::CHIP_SERIAL)?
            .map(<ChipSerial>::try_from)
            .transpose()
            .map_err(|_| DecodeError::Field {
                field: "chip_serial",
                reason: "must be 8 bytes",
            })?;
        let certificate = p
            .optional(tag::CERTIFICATE)?
            .map(Certificate::decode_value)
            .transpose()?;
        p.finish()?;
        Ok(SelectResponse {
            state,
            card_id,
            chip_serial,
            certificate,
        })
    }
}

/// GENERATE KEY PAIR command data (personalization, Fig. 4B): the card ID the center
/// assigned, authenticated under the transport key with the card's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateKeyPairCommand {
    pub card_id: CardId,
    pub mac: [u8; MAC_LEN],
}

impl GenerateKeyPairCommand {
    pub fn mac_input(card_challenge: &Challenge, card_id: &CardId) -> Vec<u8> {
        let mut m = Vec::with_capacity(48);
        m.extend_from_slice(b"valuecard/generate-key-pair/v1");
        m.extend_from_slice(card_challenge);
        m.extend_from_slice(card_id.as_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::CARD_ID, self.card_id.as_bytes())
            .put(tag::MAC, &self.mac);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let card_id = CardId(r.expect_array(tag::CARD_ID)?);
        let mac = r.expect_array(tag::MAC)?;
        r.finish()?;
        Ok(GenerateKeyPairCommand { card_id, mac })
    }
}

/// GENERATE KEY PAIR response: the card's new public keys. The private keys never leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateKeyPairResponse {
    pub signing_key: PublicKey,
    pub sealing_key: [u8; PUBLIC_KEY_LEN],
}

impl GenerateKeyPairResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::SIGNING_KEY, &self.signing_key.to_bytes())
            .put(tag::SEALING_KEY, &self.sealing_key);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let signing_key =
            PublicKey::from_bytes(r.expect(tag::SIGNING_KEY)?).map_err(|_| DecodeError::Field {
                field: "signing_key",
                reason: "invalid Ed25519 key",
            })?;
        let sealing_key = r.expect_array(tag::SEALING_KEY)?;
        r.finish()?;
        Ok(GenerateKeyPairResponse {
            signing_key,
            sealing_key,
        })
    }
}

/// PERSONALIZE command data (Figs. 4B and 8): the card certificate, the center's root, the
/// dispenser ID (IDC), today's date, and the card keys KU and KO sealed under a session key
/// derived from the transport key and the card's challenge. The MAC covers everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalizeCommand {
    pub certificate: Certificate,
    pub anchor: TrustAnchor,
    pub dispenser_id: DeviceId,
    pub date: Date,
    pub sealed_keys: Vec<u8>,
    pub mac: [u8; MAC_LEN],
}

impl PersonalizeCommand {
    /// The bytes before the MAC field, which the MAC covers.
    pub fn encode_unmacced(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        put_certificate(&mut w, &self.certificate);
        w.nested(tag::ANCHOR, |a| {
            a.put(tag::DEVICE_ID, self.anchor.center.as_bytes())
                .put(tag::SIGNING_KEY, &self.anchor.public_key.to_bytes());
        })
        .put(tag::DEVICE_ID, self.dispenser_id.as_bytes())
        .put_u32(tag::DATE, self.date.0)
        .put(tag::SEALED_KEYS, &self.sealed_keys);
        w.into_bytes()
    }

    pub fn mac_input(card_challenge: &Challenge, unmacced: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(40 + unmacced.len());
        m.extend_from_slice(b"valuecard/personalize/v1");
        m.extend_from_slice(card_challenge);
        m.extend_from_slice(unmacced);
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.encode_unmacced();
        let mut w = TlvWriter::new();
        w.put(tag::MAC, &self.mac);
        bytes.extend_from_slice(w.as_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let certificate = certificate(&mut r)?;
        let mut a = TlvReader::new(r.expect(tag::ANCHOR)?);
        let center = DeviceId(a.expect_array(tag::DEVICE_ID)?);
        let public_key =
            PublicKey::from_bytes(a.expect(tag::SIGNING_KEY)?).map_err(|_| DecodeError::Field {
                field: "anchor",
                reason: "invalid Ed25519 key",
            })?;
        a.finish()?;
        let dispenser_id = DeviceId(r.expect_array(tag::DEVICE_ID)?);
        let date = Date(u32_field(&mut r, tag::DATE)?);
        let sealed_keys = r.expect(tag::SEALED_KEYS)?.to_vec();
        let mac = r.expect_array(tag::MAC)?;
        r.finish()?;
        Ok(PersonalizeCommand {
            certificate,
            anchor: TrustAnchor { center, public_key },
            dispenser_id,
            date,
            sealed_keys,
            mac,
        })
    }

    /// Associated data for the sealed keys: binds them to this card.
    pub fn sealed_keys_aad(card_id: &CardId) -> Vec<u8> {
        let mut aad = b"valuecard/card-keys/v1".to_vec();
        aad.extend_from_slice(card_id.as_bytes());
        aad
    }
}

/// A terminal's signed time stamp (seed 003, Figs. 10-12): its update count t and its
/// signature ST(TS_t) over its current stamp TS_t. Stamps form a one-way chain
/// (TS_{t+1} = SHA-256(label || TS_t)) from a first stamp TS_0 that only the center keeps,
/// so a stolen terminal cannot produce a stamp older than the one it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalStamp {
    pub count: u32,
    pub signature: Signature,
}

/// Longest chain walk a verifier does (about 270 years of daily stamps).
pub const STAMP_COUNT_MAX: u32 = 100_000;

impl TerminalStamp {
    /// TS_{t+1} from TS_t.
    pub fn next(stamp: &[u8; 32]) -> [u8; 32] {
        let mut input = [0u8; 52];
        input[..20].copy_from_slice(b"valuecard/stamp/next");
        input[20..].copy_from_slice(stamp);
        crate::crypto::sha256(&input)
    }

    /// TS_t, walked from TS_0; `None` beyond [`STAMP_COUNT_MAX`].
    pub fn at(first: &[u8; 32], count: u32) -> Option<[u8; 32]> {
        if count > STAMP_COUNT_MAX {
            return None;
        }
        let mut stamp = *first;
        for _ in 0..count {
            stamp = Self::next(&stamp);
        }
        Some(stamp)
    }

    /// What the terminal signs: ST(TS_t), bound to the terminal and the count.
    pub fn signed_message(terminal_id: &DeviceId, count: u32, stamp: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(b"valuecard/stamp/v1");
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(&count.to_be_bytes());
        m.extend_from_slice(stamp);
        m
    }

    fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(tag::STAMP_COUNT, self.count)
            .put(tag::STAMP_SIGNATURE, &self.signature.0);
    }

    fn decode_optional(r: &mut TlvReader<'_>) -> Result<Option<Self>, DecodeError> {
        let Some(count) = r.optional(tag::STAMP_COUNT)? else {
            return Ok(None);
        };
        let count = be_u32(tag::STAMP_COUNT, count)?;
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::STAMP_SIGNATURE)?);
        Ok(Some(TerminalStamp { count, signature }))
    }

    fn extend(&self, m: &mut Vec<u8>) {
        m.extend_from_slice(&self.count.to_be_bytes());
        m.extend_from_slice(&self.signature.0);
    }
}

/// The card's record of its last balance update: the usage information of Fig. 9 that the
/// next terminal reads and later uploads, so the center can see a record used twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub kind: TransactionKind,
    /// The card's transaction counter after this update.
    pub counter: u32,
    /// The other party's challenge (R of a purchase, Y of a load).
    pub challenge_writer: Challenge,
    /// The card's challenge X.
    pub challenge_card: Challenge,
    pub amount: Amount,
    pub balance_after: Amount,
    /// The terminal (purchase) or dispenser (load) that wrote the update.
    pub writer: DeviceId,
    /// The writer's own sequence number (purchase) or the center's load number (load).
    pub writer_sequence: u32,
    pub date: Date,
    /// The writer's signature: ST of Fig. 6, or SA of Fig. 7 by the center.
    pub signature: Signature,
    /// The writing terminal's stamp (purchases only; Figs. 10-12).
    pub stamp: Option<TerminalStamp>,
}

impl UsageRecord {
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::USAGE_RECORD, |r| {
            r.put_u8(tag::KIND, self.kind as u8)
                .put_u32(tag::COUNTER, self.counter)
                .put(tag::CHALLENGE_TERMINAL, &self.challenge_writer)
                .put(tag::CHALLENGE_CARD, &self.challenge_card)
                .put_u64(tag::AMOUNT, self.amount.minor())
                .put_u64(tag::BALANCE, self.balance_after.minor())
                .put(tag::DEVICE_ID, self.writer.as_bytes())
                .put_u32(tag::SEQUENCE, self.writer_sequence)
                .put_u32(tag::DATE, self.date.0)
                .put(tag::SIGNATURE, &self.signature.0);
            if let Some(stamp) = &self.stamp {
                stamp.encode_into(r);
            }
        });
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(240);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let [kind] = r.expect_array::<1>(tag::KIND)?;
        let record = UsageRecord {
            kind: TransactionKind::from_u8(kind)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            challenge_writer: challenge(&mut r, tag::CHALLENGE_TERMINAL)?,
            challenge_card: challenge(&mut r, tag::CHALLENGE_CARD)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            writer: DeviceId(r.expect_array(tag::DEVICE_ID)?),
            writer_sequence: u32_field(&mut r, tag::SEQUENCE)?,
            date: Date(u32_field(&mut r, tag::DATE)?),
            signature: signature(&mut r)?,
            stamp: TerminalStamp::decode_optional(&mut r)?,
        };
        // Records written before stamps existed (card image format 1) have none; a load
        // never has one.
        if record.kind == TransactionKind::Load && record.stamp.is_some() {
            return Err(DecodeError::Field {
                field: "stamp",
                reason: "loads carry no stamp",
            });
        }
        r.finish()?;
        Ok(record)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let record = Self::decode_value(r.expect(tag::USAGE_RECORD)?)?;
        r.finish()?;
        Ok(record)
    }

    /// The byte string the writer signed for this record.
    pub fn signed_message(&self, card_id: &CardId) -> Vec<u8> {
        let stamp = self.stamp.unwrap_or(TerminalStamp {
            count: 0,
            signature: Signature([0; SIGNATURE_LEN]),
        });
        match self.kind {
            TransactionKind::Purchase => PurchaseCommit {
                stamp,
                card_id: *card_id,
                terminal_id: self.writer,
                challenge_terminal: self.challenge_writer,
                challenge_card: self.challenge_card,
                counter: self.counter.wrapping_sub(1),
                amount: self.amount,
                balance_after: self.balance_after,
                terminal_sequence: self.writer_sequence,
                date: self.date,
            }
            .signed_message(),
            TransactionKind::Load => LoadAuthorization {
                card_id: *card_id,
                dispenser_id: self.writer,
                challenge_dispenser: self.challenge_writer,
                challenge_card: self.challenge_card,
                counter: self.counter.wrapping_sub(1),
                amount: self.amount,
                balance_after: self.balance_after,
                load_number: self.writer_sequence,
                date: self.date,
            }
            .signed_message(),
        }
    }
}

/// READ PURSE response: what the holder may always read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurseStatus {
    pub state: CardState,
    pub card_id: CardId,
    pub balance: Amount,
    pub counter: u32,
    /// Number of abnormal events recorded (forged signatures, raised balances).
    pub abnormal_events: u8,
    pub last_usage: Option<UsageRecord>,
}

impl PurseStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(200);
        w.put_u8(tag::STATE, self.state as u8)
            .put(tag::CARD_ID, self.card_id.as_bytes())
            .put_u64(tag::BALANCE, self.balance.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put_u8(tag::ABNORMAL_EVENTS, self.abnormal_events);
        if let Some(record) = &self.last_usage {
            record.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let [state] = r.expect_array::<1>(tag::STATE)?;
        let status = PurseStatus {
            state: CardState::from_u8(state)?,
            card_id: CardId(r.expect_array(tag::CARD_ID)?),
            balance: amount(&mut r, tag::BALANCE)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            abnormal_events: r.expect_array::<1>(tag::ABNORMAL_EVENTS)?[0],
            last_usage: r
                .optional(tag::USAGE_RECORD)?
                .map(UsageRecord::decode_value)
                .transpose()?,
        };
        r.finish()?;
        Ok(status)
    }
}

/// One entry of the holder-readable transaction log (READ LOG, newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub kind: TransactionKind,
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    pub party: DeviceId,
    pub date: Date,
}

impl LogEntry {
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::LOG_ENTRY, |e| {
            e.put_u8(tag::KIND, self.kind as u8)
                .put_u32(tag::COUNTER, self.counter)
                .put_u64(tag::AMOUNT, self.amount.minor())
                .put_u64(tag::BALANCE, self.balance_after.minor())
                .put(tag::DEVICE_ID, self.party.as_bytes())
                .put_u32(tag::DATE, self.date.0);
        });
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let [kind] = r.expect_array::<1>(tag::KIND)?;
        let entry = LogEntry {
            kind: TransactionKind::from_u8(kind)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            party: DeviceId(r.expect_array(tag::DEVICE_ID)?),
            date: Date(u32_field(&mut r, tag::DATE)?),
        };
        r.finish()?;
        Ok(entry)
    }

    pub fn encode_list(entries: &[LogEntry]) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(entries.len() * 48);
        for entry in entries {
            entry.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode_list(bytes: &[u8]) -> Result<Vec<LogEntry>, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let mut entries = Vec::new();
        while !r.is_empty() {
            if entries.len() >= crate::limits::CARD_LOG_ENTRIES_MAX {
                return Err(DecodeError::Field {
                    field: "log",
                    reason: "too many entries",
                });
            }
            entries.push(LogEntry::decode_value(r.expect(tag::LOG_ENTRY)?)?);
        }
        Ok(entries)
    }
}

/// INITIALIZE PURCHASE command data (Fig. 6): the terminal certificate (nT, IDT, SA(nT*IDT)),
/// the terminal challenge R, the amount the terminal may debit at most, and its date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializePurchase {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
    pub amount_max: Amount,
    pub date: Date,
}

impl InitializePurchase {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(260);
        put_certificate(&mut w, &self.terminal_certificate);
        w.put(tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put_u64(tag::AMOUNT, self.amount_max.minor())
            .put_u32(tag::DATE, self.date.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = InitializePurchase {
            terminal_certificate: certificate(&mut r)?,
            challenge_terminal: challenge(&mut r, tag::CHALLENGE_TERMINAL)?,
            amount_max: amount(&mut r, tag::AMOUNT)?,
            date: Date(u32_field(&mut r, tag::DATE)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE PURCHASE response: X, the balance V, the counter, the card's signature
/// SU(R * X * V) (over the fields of [`PurchaseOffer::signed_message`]), the previous
/// usage record, and the certificate of the terminal that wrote it (nT, IDT, SA(nT * IDT)
/// of Fig. 9), absent when the last writer was the center (a load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOffer {
    pub challenge_card: Challenge,
    pub balance: Amount,
    pub counter: u32,
    pub signature: Signature,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl PurchaseOffer {
    /// SU: what the card signs to answer INITIALIZE PURCHASE.
    #[allow(clippy::too_many_arguments)]
    pub fn signed_message(
        card_id: &CardId,
        terminal_id: &DeviceId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        balance: Amount,
        counter: u32,
        amount_max: Amount,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(112);
        m.extend_from_slice(b"valuecard/purchase/card/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(challenge_terminal);
        m.extend_from_slice(challenge_card);
        m.extend_from_slice(&balance.to_be_bytes());
        m.extend_from_slice(&counter.to_be_bytes());
        m.extend_from_slice(&amount_max.to_be_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(300);
        w.put(tag::CHALLENGE_CARD, &self.challenge_card)
            .put_u64(tag::BALANCE, self.balance.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put(tag::SIGNATURE, &self.signature.0);
        if let Some(record) = &self.last_usage {
            record.encode_into(&mut w);
        }
        if let Some(certificate) = &self.last_writer_certificate {
            put_certificate(&mut w, certificate);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = PurchaseOffer {
            challenge_card: challenge(&mut r, tag::CHALLENGE_CARD)?,
            balance: amount(&mut r, tag::BALANCE)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            signature: signature(&mut r)?,
            last_usage: r
                .optional(tag::USAGE_RECORD)?
                .map(UsageRecord::decode_value)
                .transpose()?,
            last_writer_certificate: r
                .optional(tag::CERTIFICATE)?
                .map(Certificate::decode_value)
                .transpose()?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// The content of a DEBIT: the terminal's ST(R * X * V' * IDU) of Fig. 6 covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseCommit {
    pub card_id: CardId,
    pub terminal_id: DeviceId,
    pub challenge_terminal: Challenge,
    pub challenge_card: Challenge,
    /// The card's counter before this update, as the card reported it.
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    pub terminal_sequence: u32,
    pub date: Date,
    /// The terminal's current stamp, which the card keeps with the record.
    pub stamp: TerminalStamp,
}

impl PurchaseCommit {
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(200);
        m.extend_from_slice(b"valuecard/purchase/terminal/v2");
        m.extend_from_slice(self.card_id.as_bytes());
        m.extend_from_slice(self.terminal_id.as_bytes());
        m.extend_from_slice(&self.challenge_terminal);
        m.extend_from_slice(&self.challenge_card);
        m.extend_from_slice(&self.counter.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.balance_after.to_be_bytes());
        m.extend_from_slice(&self.terminal_sequence.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        self.stamp.extend(&mut m);
        m
    }
}

/// DEBIT command data: only what the card does not already hold from INITIALIZE PURCHASE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitCommand {
    pub amount: Amount,
    pub balance_after: Amount,
    pub terminal_sequence: u32,
    pub stamp: TerminalStamp,
    pub signature: Signature,
}

impl DebitCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(180);
        w.put_u64(tag::AMOUNT, self.amount.minor())
            .put_u64(tag::BALANCE, self.balance_after.minor())
            .put_u32(tag::SEQUENCE, self.terminal_sequence);
        self.stamp.encode_into(&mut w);
        w.put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = DebitCommand {
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            terminal_sequence: u32_field(&mut r, tag::SEQUENCE)?,
            stamp: TerminalStamp::decode_optional(&mut r)?.ok_or(DecodeError::Field {
                field: "stamp",
                reason: "a DEBIT carries the terminal's stamp",
            })?,
            signature: signature(&mut r)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// DEBIT and CREDIT response: the card's counter and balance after the committed update
/// (the "OK" of Fig. 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfirmation {
    pub counter: u32,
    pub balance: Amount,
}

impl UpdateConfirmation {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put_u32(tag::COUNTER, self.counter)
            .put_u64(tag::BALANCE, self.balance.minor());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = UpdateConfirmation {
            counter: u32_field(&mut r, tag::COUNTER)?,
            balance: amount(&mut r, tag::BALANCE)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE LOAD command data (Fig. 7): the dispenser's challenge Y, the amount V to add,
/// and the dispenser ID IDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeLoad {
    pub challenge_dispenser: Challenge,
    pub amount: Amount,
    pub dispenser_id: DeviceId,
}

impl InitializeLoad {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        w.put(tag::CHALLENGE_TERMINAL, &self.challenge_dispenser)
            .put_u64(tag::AMOUNT, self.amount.minor())
            .put(tag::DEVICE_ID, self.dispenser_id.as_bytes());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = InitializeLoad {
            challenge_dispenser: challenge(&mut r, tag::CHALLENGE_TERMINAL)?,
            amount: amount(&mut r, tag::AMOUNT)?,
            dispenser_id: DeviceId(r.expect_array(tag::DEVICE_ID)?),
        };
        r.finish()?;
        Ok(message)
    }
}

/// INITIALIZE LOAD response: X, the current balance and counter, SU(Y * X * V), and, as in
/// a purchase, the card's last usage record with the certificate of the terminal that wrote
/// it. The record is the writer's signed word for the balance the card claims: the center
/// refuses to add value to a balance that no writer signed (a card whose image was edited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOffer {
    pub challenge_card: Challenge,
    pub balance: Amount,
    pub counter: u32,
    pub signature: Signature,
    pub last_usage: Option<UsageRecord>,
    pub last_writer_certificate: Option<Certificate>,
}

impl LoadOffer {
    pub fn signed_message(
        card_id: &CardId,
        request: &InitializeLoad,
        challenge_card: &Challenge,
        balance: Amount,
        counter: u32,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(100);
        m.extend_from_slice(b"valuecard/load/card/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(request.dispenser_id.as_bytes());
        m.extend_from_slice(&request.challenge_dispenser);
        m.extend_from_slice(challenge_card);
        m.extend_from_slice(&request.amount.to_be_bytes());
        m.extend_from_slice(&balance.to_be_bytes());
        m.extend_from_slice(&counter.to_be_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(300);
        w.put(tag::CHALLENGE_CARD, &self.challenge_card)
            .put_u64(tag::BALANCE, self.balance.minor())
            .put_u32(tag::COUNTER, self.counter)
            .put(tag::SIGNATURE, &self.signature.0);
        if let Some(record) = &self.last_usage {
            record.encode_into(&mut w);
        }
        if let Some(certificate) = &self.last_writer_certificate {
            put_certificate(&mut w, certificate);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = LoadOffer {
            challenge_card: challenge(&mut r, tag::CHALLENGE_CARD)?,
            balance: amount(&mut r, tag::BALANCE)?,
            counter: u32_field(&mut r, tag::COUNTER)?,
            signature: signature(&mut r)?,
            last_usage: r
                .optional(tag::USAGE_RECORD)?
                .map(UsageRecord::decode_value)
                .transpose()?,
            last_writer_certificate: r
                .optional(tag::CERTIFICATE)?
                .map(Certificate::decode_value)
                .transpose()?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// The center's load authorization SA(Y * X * V * IDU) of Fig. 7, which the card verifies
/// with the root key before it adds value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAuthorization {
    pub card_id: CardId,
    pub dispenser_id: DeviceId,
    pub challenge_dispenser: Challenge,
    pub challenge_card: Challenge,
    /// The card's counter before this load.
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    /// The center's number for this load, unique per center.
    pub load_number: u32,
    /// The center's date, which the card adopts as its notion of today.
    pub date: Date,
}

impl LoadAuthorization {
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"valuecard/load/center/v1");
        m.extend_from_slice(self.card_id.as_bytes());
        m.extend_from_slice(self.dispenser_id.as_bytes());
        m.extend_from_slice(&self.challenge_dispenser);
        m.extend_from_slice(&self.challenge_card);
        m.extend_from_slice(&self.counter.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.balance_after.to_be_bytes());
        m.extend_from_slice(&self.load_number.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }
}

/// CREDIT command data: the center's signature and a MAC under the card key KU (Fig. 8,
/// last paragraph: the center derives KU from IDU and uses it for loads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditCommand {
    pub amount: Amount,
    pub balance_after: Amount,
    pub load_number: u32,
    pub date: Date,
    pub signature: Signature,
    pub mac: [u8; MAC_LEN],
}

impl CreditCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(140);
        w.put_u64(tag::AMOUNT, self.amount.minor())
            .put_u64(tag::BALANCE, self.balance_after.minor())
            .put_u32(tag::SEQUENCE, self.load_number)
            .put_u32(tag::DATE, self.date.0)
            .put(tag::SIGNATURE, &self.signature.0)
            .put(tag::MAC, &self.mac);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = CreditCommand {
            amount: amount(&mut r, tag::AMOUNT)?,
            balance_after: amount(&mut r, tag::BALANCE)?,
            load_number: u32_field(&mut r, tag::SEQUENCE)?,
            date: Date(u32_field(&mut r, tag::DATE)?),
            signature: signature(&mut r)?,
            mac: r.expect_array(tag::MAC)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// GET LAST TRANSACTION command data: a fresh challenge from the asking terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetLastTransaction {
    pub challenge: Challenge,
}

impl GetLastTransaction {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::CHALLENGE_TERMINAL, &self.challenge);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let challenge = challenge(&mut r, tag::CHALLENGE_TERMINAL)?;
        r.finish()?;
        Ok(GetLastTransaction { challenge })
    }
}

/// GET LAST TRANSACTION response: the last usage record, signed by the card together with
/// the asker's challenge, so a terminal that lost a response learns whether the card
/// committed without having to trust the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTransaction {
    pub record: UsageRecord,
    pub signature: Signature,
}

impl LastTransaction {
    pub fn signed_message(
        card_id: &CardId,
        challenge: &Challenge,
        record: &UsageRecord,
    ) -> Vec<u8> {
        let mut m = b"valuecard/last-transaction/v1".to_vec();
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(challenge);
        m.extend_from_slice(&record.encode());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(200);
        self.record.encode_into(&mut w);
        w.put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let record = UsageRecord::decode_value(r.expect(tag::USAGE_RECORD)?)?;
        let signature = signature(&mut r)?;
        r.finish()?;
        Ok(LastTransaction { record, signature })
    }
}

/// The card keys delivered under the transport key (Fig. 8): KU, diversified from IDU, and
/// the common key KO.
pub const SEALED_KEYS_PLAINTEXT_LEN: usize = 32;
