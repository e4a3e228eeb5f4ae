//! The purse application's command set: constants, the data of every command and response,
//! and the signed byte strings. `docs/card-commands.md` documents the same bytes.
//!
//! Signed strings are fixed-width concatenations behind a distinct context label for each
//! signer and step, so no signature made for one step verifies for another.

use crate::cert::{Certificate, TrustAnchor};
use crate::crypto::{PublicKey, Signature, MAC_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::limits::CHALLENGE_LEN;
use crate::messages::field::{amount, u32_field};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{be_u32, TlvReader, TlvWriter};

mod load;
mod purchase;
mod records;

pub use load::*;
pub use purchase::*;
pub use records::*;

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
    /// Value sent to another card (seed 000), written by a settlement terminal.
    TransferOut = 0x03,
    /// Value received from another card (seed 000), written by a settlement terminal.
    TransferIn = 0x04,
    /// A payment from the card to a web store (seed 004), written by the settlement
    /// system's security server.
    OnlinePayment = 0x05,
    /// Value charged into the card online against a credit authorization (seed 004),
    /// written by the settlement system's security server.
    OnlineCharge = 0x06,
    /// Value moved into the card from an old chip's purse (seed 002), written by the purse
    /// provider's transfer SAM at the move's download.
    MigrationIn = 0x07,
}

impl TransactionKind {
    /// The role of the device that writes (and signs) records of this kind; `None` for a
    /// load, which the center itself authorizes. Each role signs only its own kinds.
    pub fn writer_role(self) -> Option<crate::cert::Role> {
        use crate::cert::Role;
        match self {
            TransactionKind::Load => None,
            TransactionKind::Purchase => Some(Role::PaymentTerminal),
            TransactionKind::TransferOut | TransactionKind::TransferIn => {
                Some(Role::SettlementTerminal)
            }
            TransactionKind::OnlinePayment | TransactionKind::OnlineCharge => {
                Some(Role::OnlineSettlement)
            }
            TransactionKind::MigrationIn => Some(Role::ServiceTransfer),
        }
    }

    /// Whether the update raised the balance (a load, a transfer received, an online
    /// charge) rather than lowered it.
    pub fn raises_balance(self) -> bool {
        matches!(
            self,
            TransactionKind::Load
                | TransactionKind::TransferIn
                | TransactionKind::OnlineCharge
                | TransactionKind::MigrationIn
        )
    }

    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            0x01 => Ok(TransactionKind::Purchase),
            0x02 => Ok(TransactionKind::Load),
            0x03 => Ok(TransactionKind::TransferOut),
            0x04 => Ok(TransactionKind::TransferIn),
            0x05 => Ok(TransactionKind::OnlinePayment),
            0x06 => Ok(TransactionKind::OnlineCharge),
            0x07 => Ok(TransactionKind::MigrationIn),
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

fn signature(reader: &mut TlvReader<'_>) -> Result<Signature, DecodeError> {
    Ok(Signature(
        reader.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?,
    ))
}

fn certificate(reader: &mut TlvReader<'_>) -> Result<Certificate, DecodeError> {
    Ok(Certificate::decode_value(reader.expect(tag::CERTIFICATE)?)?)
}

/// The card's last usage record and the certificate of the terminal that wrote it, as both
/// offers (purchase and load) carry them: each optional, in this order.
pub(crate) fn put_last_writer(
    w: &mut TlvWriter,
    usage: &Option<UsageRecord>,
    certificate: &Option<Certificate>,
) {
    if let Some(record) = usage {
        record.encode_into(w);
    }
    if let Some(certificate) = certificate {
        put_certificate(w, certificate);
    }
}

pub(crate) fn last_writer(
    r: &mut TlvReader<'_>,
) -> Result<(Option<UsageRecord>, Option<Certificate>), DecodeError> {
    let usage = r
        .optional(tag::USAGE_RECORD)?
        .map(UsageRecord::decode_value)
        .transpose()?;
    let certificate = r
        .optional(tag::CERTIFICATE)?
        .map(Certificate::decode_value)
        .transpose()?;
    Ok((usage, certificate))
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
    /// Card information for a settlement terminal (seed 000, claims 2, 6): the transfer- and
    /// update-key identifiers and whether a transfer is pending, so that a transfer needs no
    /// extra command when the two cards' keys agree. Absent on a card without transfer keys.
    pub transfer: Option<crate::messages::transfer::TransferSummary>,
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
                    if let Some(summary) = &self.transfer {
                        p.put(crate::messages::transfer::tag::SUMMARY, &summary.to_bytes());
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
        let transfer = p
            .optional(crate::messages::transfer::tag::SUMMARY)?
            .map(crate::messages::transfer::TransferSummary::from_bytes)
            .transpose()?;
        p.finish()?;
        Ok(SelectResponse {
            state,
            card_id,
            chip_serial,
            certificate,
            transfer,
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

/// The card keys delivered under the transport key (Fig. 8): KU, diversified from IDU, and
/// the common key KO.
pub const SEALED_KEYS_PLAINTEXT_LEN: usize = 32;
