//! The card's persistent state, kept apart from its volatile (per-power-up) state and
//! written whole at every commit. One encoding, versioned with the image format.

use std::collections::VecDeque;

use valuecard_core::cert::{Certificate, TrustAnchor};
use valuecard_core::crypto::{AesKey, PublicKey, SealingKeyPair, Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::limits::{
    CARD_ABNORMAL_EVENTS_MAX, CARD_LOG_ENTRIES_MAX, CARD_SERVICE_LOG_ENTRIES_MAX,
};
use valuecard_core::messages::credit::{ServiceLogEntry, CREDIT_TRIES, SETTING_SALT_LEN};
use valuecard_core::messages::purse::{CardState, ChipSerial, LogEntry, UsageRecord};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::tlv::{be_u32, be_u64, TlvReader, TlvWriter};
use zeroize::Zeroize;

pub use crate::online_state::OnlineApp;
pub use crate::services_state::{ServiceArea, ServicesApp};
pub use crate::transfer_state::{ReceivedTransfer, SentTransfer, TransferState};

/// What went wrong, recorded in the card in code form (seed 003, Fig. 5: "the abnormal
/// contents of the IC card are recorded in a code form").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AbnormalCode {
    /// A terminal certificate that did not verify under the center root.
    ForgedTerminalCertificate = 0x01,
    /// A DEBIT whose terminal signature did not verify.
    ForgedTerminalSignature = 0x02,
    /// A validly signed DEBIT that would have raised the balance: the card blocks itself.
    BalanceRaised = 0x03,
    /// A CREDIT whose center signature or card-key MAC did not verify.
    ForgedLoadAuthorization = 0x04,
}

impl AbnormalCode {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x01 => AbnormalCode::ForgedTerminalCertificate,
            0x02 => AbnormalCode::ForgedTerminalSignature,
            0x03 => AbnormalCode::BalanceRaised,
            0x04 => AbnormalCode::ForgedLoadAuthorization,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbnormalEvent {
    pub code: AbnormalCode,
    /// The card's transaction counter when it happened.
    pub counter: u32,
}

/// Keys and identity of a card that has generated its key pair.
#[derive(Clone)]
pub struct CardKeys {
    pub card_id: CardId,
    pub signing: SigningKeyPair,
    pub sealing: SealingKeyPair,
}

impl core::fmt::Debug for CardKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CardKeys")
            .field("card_id", &self.card_id)
            .finish_non_exhaustive()
    }
}

/// The credit function (seed 003, Figs. 13-17), present once the center enabled it.
#[derive(Clone)]
pub struct Credit {
    /// Last day on which the card records a service.
    pub expiry: Date,
    /// The secret salt of the setting commitment (sealed to the card with Ns).
    pub setting_salt: [u8; SETTING_SALT_LEN],
    /// C = SHA-256(label || card ID || salt || Ns); Ns itself is not kept.
    pub setting_commitment: [u8; 32],
    /// SA: the center's signature over (card ID, expiry, C).
    pub enablement_signature: Signature,
    /// Presentations left, shared by the setting number and the password; 0 blocks the
    /// credit function for good.
    pub tries_left: u8,
    /// H(Nc), once a password is registered; the password itself is never stored.
    pub password_digest: Option<[u8; 32]>,
    /// Service records signed so far (the number of the newest).
    pub services_recorded: u32,
    /// Newest first, at most `CARD_SERVICE_LOG_ENTRIES_MAX`.
    pub service_log: VecDeque<ServiceLogEntry>,
}

impl Credit {
    pub fn blocked(&self) -> bool {
        self.tries_left == 0
    }

    pub fn push_service(&mut self, entry: ServiceLogEntry) {
        self.service_log.push_front(entry);
        self.service_log.truncate(CARD_SERVICE_LOG_ENTRIES_MAX);
    }
}

impl core::fmt::Debug for Credit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credit")
            .field("expiry", &self.expiry)
            .field("tries_left", &self.tries_left)
            .field("password_registered", &self.password_digest.is_some())
            .field("services_recorded", &self.services_recorded)
            .finish_non_exhaustive()
    }
}

/// A personalized purse.
#[derive(Clone, Debug)]
pub struct Purse {
    pub keys: CardKeys,
    /// KU: the card's own key, diversified from IDU (Fig. 8).
    pub card_key: AesKey,
    /// KO: the scheme's common key (Fig. 8).
    pub common_key: AesKey,
    pub anchor: TrustAnchor,
    pub certificate: Certificate,
    /// IDC of the dispenser that issued the card.
    pub dispenser_id: DeviceId,
    pub balance: Amount,
    /// Increments at every committed balance update.
    pub counter: u32,
    /// The latest date the card has from an authenticated source (personalization and
    /// center-signed loads); certificates that expired before it are refused.
    pub known_date: Date,
    pub last_usage: Option<UsageRecord>,
    /// The certificate of the terminal that wrote `last_usage` (none after a load).
    pub last_writer_certificate: Option<Certificate>,
    /// Newest first, at most `CARD_LOG_ENTRIES_MAX`.
    pub log: VecDeque<LogEntry>,
    /// Newest first, at most `CARD_ABNORMAL_EVENTS_MAX`.
    pub abnormal_events: VecDeque<AbnormalEvent>,
    pub blocked: bool,
    /// The credit function, absent until ENABLE CREDIT (image format 3).
    pub credit: Option<Credit>,
    /// Card-to-card transfer (seed 000): keys, pending-transfer log and receipts (image
    /// format 5; empty on older images).
    pub transfer: TransferState,
    /// The common-key application of seed 004, present once a security server installed
    /// the card's KC.
    pub online: Option<OnlineApp>,
    /// The service areas of the multi-service chip (seed 002; image format 6, empty on
    /// older images), the purse's own among them once it is formatted.
    pub services: ServicesApp,
}

impl Purse {
    /// The balance less the amount reserved by a transfer sent and not yet settled.
    pub fn spendable(&self) -> Amount {
        let reserved = self
            .transfer
            .sent
            .as_ref()
            .map_or(Amount::ZERO, |sent| sent.pending.amount);
        self.balance.checked_sub(reserved).unwrap_or(Amount::ZERO)
    }

    pub fn push_log(&mut self, entry: LogEntry) {
        self.log.push_front(entry);
        self.log.truncate(CARD_LOG_ENTRIES_MAX);
    }

    pub fn record_abnormal(&mut self, code: AbnormalCode) {
        self.abnormal_events.push_front(AbnormalEvent {
            code,
            counter: self.counter,
        });
        self.abnormal_events.truncate(CARD_ABNORMAL_EVENTS_MAX);
    }
}

/// The life cycle of the card (seed 003, Figs. 4B and 8), each state holding exactly what
/// exists at that point.
#[derive(Clone, Debug)]
pub enum PersistentState {
    /// From the factory: the chip's serial and its own transport key Ktemp, diversified from
    /// that serial. Images of format 3 and older carry no serial (their Ktemp was shared).
    Manufactured {
        transport_key: AesKey,
        chip_serial: Option<ChipSerial>,
    },
    /// Card ID assigned and key pair generated on the card.
    KeysGenerated {
        transport_key: AesKey,
        chip_serial: Option<ChipSerial>,
        keys: Box<CardKeys>,
    },
    /// Personalized (possibly blocked). The transport key is gone.
    Personalized(Box<Purse>),
}

impl PersistentState {
    pub fn card_state(&self) -> CardState {
        match self {
            PersistentState::Manufactured { .. } => CardState::Manufactured,
            PersistentState::KeysGenerated { .. } => CardState::KeysGenerated,
            PersistentState::Personalized(purse) if purse.blocked => CardState::Blocked,
            PersistentState::Personalized(_) => CardState::Active,
        }
    }

    /// The chip's manufacture serial, until personalization.
    pub fn chip_serial(&self) -> Option<ChipSerial> {
        match self {
            PersistentState::Manufactured { chip_serial, .. }
            | PersistentState::KeysGenerated { chip_serial, .. } => *chip_serial,
            PersistentState::Personalized(_) => None,
        }
    }

    pub fn card_id(&self) -> Option<CardId> {
        match self {
            PersistentState::Manufactured { .. } => None,
            PersistentState::KeysGenerated { keys, .. } => Some(keys.card_id),
            PersistentState::Personalized(purse) => Some(purse.keys.card_id),
        }
    }
}

/// Why a persisted state could not be decoded (the image passed its checksum, so this
/// means a bug or a foreign image, and the card refuses to start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("card state field {0} is malformed")]
pub struct StateError(pub &'static str);

mod field {
    pub const STATE: u32 = 0x80;
    pub const TRANSPORT_KEY: u32 = 0x81;
    pub const CARD_ID: u32 = 0x82;
    pub const SIGNING_SEED: u32 = 0x83;
    pub const SEALING_SECRET: u32 = 0x84;
    pub const CARD_KEY: u32 = 0x85;
    pub const COMMON_KEY: u32 = 0x86;
    pub const ANCHOR_ID: u32 = 0x87;
    pub const ANCHOR_KEY: u32 = 0x88;
    pub const DISPENSER_ID: u32 = 0x89;
    pub const BALANCE: u32 = 0x8A;
    pub const COUNTER: u32 = 0x8B;
    pub const KNOWN_DATE: u32 = 0x8C;
    pub const BLOCKED: u32 = 0x8D;
    pub const ABNORMAL: u32 = 0x8E;
    pub const LOG: u32 = 0xA0;
    pub const LAST_USAGE: u32 = 0xA1;
    pub const LAST_WRITER_CERTIFICATE: u32 = 0xA2;
    pub const CREDIT: u32 = 0xA3;
    pub const CHIP_SERIAL: u32 = 0x8F;
    pub const TRANSFER: u32 = 0xA4;
    pub const ONLINE: u32 = 0xA5;
    pub const SERVICES: u32 = 0xA6;
}

/// Fields inside the credit template.
mod credit_field {
    pub const EXPIRY: u32 = 0x80;
    pub const SALT: u32 = 0x81;
    pub const COMMITMENT: u32 = 0x82;
    pub const SIGNATURE: u32 = 0x83;
    pub const TRIES_LEFT: u32 = 0x84;
    pub const PASSWORD_DIGEST: u32 = 0x85;
    pub const SERVICES_RECORDED: u32 = 0x86;
    pub const SERVICE_LOG: u32 = 0xA0;
}

impl PersistentState {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(2048);
        match self {
            PersistentState::Manufactured {
                transport_key,
                chip_serial,
            } => {
                w.put_u8(field::STATE, CardState::Manufactured as u8)
                    .put(field::TRANSPORT_KEY, transport_key.expose());
                if let Some(serial) = chip_serial {
                    w.put(field::CHIP_SERIAL, serial);
                }
            }
            PersistentState::KeysGenerated {
                transport_key,
                chip_serial,
                keys,
            } => {
                w.put_u8(field::STATE, CardState::KeysGenerated as u8)
                    .put(field::TRANSPORT_KEY, transport_key.expose());
                if let Some(serial) = chip_serial {
                    w.put(field::CHIP_SERIAL, serial);
                }
                encode_keys(&mut w, keys);
            }
            PersistentState::Personalized(purse) => {
                w.put_u8(field::STATE, CardState::Active as u8);
                encode_keys(&mut w, &purse.keys);
                w.put(field::CARD_KEY, purse.card_key.expose())
                    .put(field::COMMON_KEY, purse.common_key.expose())
                    .put(field::ANCHOR_ID, purse.anchor.center.as_bytes())
                    .put(field::ANCHOR_KEY, &purse.anchor.public_key.to_bytes())
                    .put_raw(&purse.certificate.encode())
                    .put(field::DISPENSER_ID, purse.dispenser_id.as_bytes())
                    .put_u64(field::BALANCE, purse.balance.minor())
                    .put_u32(field::COUNTER, purse.counter)
                    .put_u32(field::KNOWN_DATE, purse.known_date.0)
                    .put_u8(field::BLOCKED, purse.blocked as u8);
                let mut abnormal = Vec::with_capacity(purse.abnormal_events.len() * 5);
                for event in &purse.abnormal_events {
                    abnormal.push(event.code as u8);
                    abnormal.extend_from_slice(&event.counter.to_be_bytes());
                }
                w.put(field::ABNORMAL, &abnormal);
                let log: Vec<LogEntry> = purse.log.iter().cloned().collect();
                w.put(field::LOG, &LogEntry::encode_list(&log));
                if let Some(record) = &purse.last_usage {
                    w.put(field::LAST_USAGE, &record.encode());
                }
                if let Some(certificate) = &purse.last_writer_certificate {
                    w.put(field::LAST_WRITER_CERTIFICATE, &certificate.encode());
                }
                if let Some(credit) = &purse.credit {
                    encode_credit(&mut w, credit);
                }
                if !purse.transfer.is_empty() {
                    w.put(field::TRANSFER, &purse.transfer.encode());
                }
                if let Some(online) = &purse.online {
                    w.put(field::ONLINE, &online.encode());
                }
                if !purse.services.is_empty() {
                    w.put(field::SERVICES, &purse.services.encode());
                }
            }
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = TlvReader::new(bytes);
        let [state] = r
            .expect_array::<1>(field::STATE)
            .map_err(|_| StateError("state"))?;
        let state = match CardState::from_u8(state).map_err(|_| StateError("state"))? {
            CardState::Manufactured => PersistentState::Manufactured {
                transport_key: aes_key(&mut r, field::TRANSPORT_KEY)?,
                chip_serial: chip_serial(&mut r)?,
            },
            CardState::KeysGenerated => {
                let transport_key = aes_key(&mut r, field::TRANSPORT_KEY)?;
                let chip_serial = chip_serial(&mut r)?;
                PersistentState::KeysGenerated {
                    transport_key,
                    chip_serial,
                    keys: Box::new(decode_keys(&mut r)?),
                }
            }
            CardState::Active | CardState::Blocked => {
                PersistentState::Personalized(Box::new(decode_purse(&mut r)?))
            }
        };
        r.finish().map_err(|_| StateError("trailing bytes"))?;
        Ok(state)
    }
}

/// The chip serial, absent from images of format 3 and older.
fn chip_serial(r: &mut TlvReader<'_>) -> Result<Option<ChipSerial>, StateError> {
    r.optional(field::CHIP_SERIAL)
        .map_err(|_| StateError("chip serial"))?
        .map(<ChipSerial>::try_from)
        .transpose()
        .map_err(|_| StateError("chip serial"))
}

fn encode_credit(w: &mut TlvWriter, credit: &Credit) {
    w.nested(field::CREDIT, |c| {
        c.put_u32(credit_field::EXPIRY, credit.expiry.0)
            .put(credit_field::SALT, &credit.setting_salt)
            .put(credit_field::COMMITMENT, &credit.setting_commitment)
            .put(credit_field::SIGNATURE, &credit.enablement_signature.0)
            .put_u8(credit_field::TRIES_LEFT, credit.tries_left);
        if let Some(digest) = &credit.password_digest {
            c.put(credit_field::PASSWORD_DIGEST, digest);
        }
        let log: Vec<ServiceLogEntry> = credit.service_log.iter().cloned().collect();
        c.put_u32(credit_field::SERVICES_RECORDED, credit.services_recorded)
            .put(
                credit_field::SERVICE_LOG,
                &ServiceLogEntry::encode_list(&log),
            );
    });
}

fn decode_credit(value: &[u8]) -> Result<Credit, StateError> {
    let bad = |_| StateError("credit");
    let mut r = TlvReader::new(value);
    let expiry = Date(
        be_u32(
            credit_field::EXPIRY,
            r.expect(credit_field::EXPIRY).map_err(bad)?,
        )
        .map_err(bad)?,
    );
    let setting_salt = r.expect_array(credit_field::SALT).map_err(bad)?;
    let setting_commitment = r.expect_array(credit_field::COMMITMENT).map_err(bad)?;
    let enablement_signature = Signature(r.expect_array(credit_field::SIGNATURE).map_err(bad)?);
    let [tries_left] = r.expect_array::<1>(credit_field::TRIES_LEFT).map_err(bad)?;
    if tries_left > CREDIT_TRIES {
        return Err(StateError("credit tries"));
    }
    let password_digest = r
        .optional(credit_field::PASSWORD_DIGEST)
        .map_err(bad)?
        .map(<[u8; 32]>::try_from)
        .transpose()
        .map_err(|_| StateError("credit password digest"))?;
    let services_recorded = be_u32(
        credit_field::SERVICES_RECORDED,
        r.expect(credit_field::SERVICES_RECORDED).map_err(bad)?,
    )
    .map_err(bad)?;
    let service_log =
        ServiceLogEntry::decode_list(r.expect(credit_field::SERVICE_LOG).map_err(bad)?)
            .map_err(|_| StateError("credit service log"))?
            .into();
    r.finish().map_err(bad)?;
    Ok(Credit {
        expiry,
        setting_salt,
        setting_commitment,
        enablement_signature,
        tries_left,
        password_digest,
        services_recorded,
        service_log,
    })
}

fn encode_keys(w: &mut TlvWriter, keys: &CardKeys) {
    w.put(field::CARD_ID, keys.card_id.as_bytes())
        .put(field::SIGNING_SEED, keys.signing.seed().expose())
        .put(field::SEALING_SECRET, keys.sealing.secret().expose());
}

fn aes_key(r: &mut TlvReader<'_>, tag: u32) -> Result<AesKey, StateError> {
    let mut raw: [u8; 16] = r.expect_array(tag).map_err(|_| StateError("aes key"))?;
    let key = AesKey::from_slice(&raw).map_err(|_| StateError("aes key"));
    raw.zeroize();
    key
}

fn decode_keys(r: &mut TlvReader<'_>) -> Result<CardKeys, StateError> {
    let card_id = CardId(
        r.expect_array(field::CARD_ID)
            .map_err(|_| StateError("card id"))?,
    );
    let mut seed: [u8; 32] = r
        .expect_array(field::SIGNING_SEED)
        .map_err(|_| StateError("signing seed"))?;
    let signing = SigningKeyPair::from_seed(&seed);
    seed.zeroize();
    let mut secret: [u8; 32] = r
        .expect_array(field::SEALING_SECRET)
        .map_err(|_| StateError("sealing secret"))?;
    let sealing = SealingKeyPair::from_secret(secret);
    secret.zeroize();
    Ok(CardKeys {
        card_id,
        signing,
        sealing,
    })
}

fn decode_purse(r: &mut TlvReader<'_>) -> Result<Purse, StateError> {
    let keys = decode_keys(r)?;
    let card_key = aes_key(r, field::CARD_KEY)?;
    let common_key = aes_key(r, field::COMMON_KEY)?;
    let center = DeviceId(
        r.expect_array(field::ANCHOR_ID)
            .map_err(|_| StateError("anchor id"))?,
    );
    let public_key = PublicKey::from_bytes(
        r.expect(field::ANCHOR_KEY)
            .map_err(|_| StateError("anchor key"))?,
    )
    .map_err(|_| StateError("anchor key"))?;
    let certificate = Certificate::decode_value(
        r.expect(valuecard_core::cert::TAG_CERTIFICATE)
            .map_err(|_| StateError("certificate"))?,
    )
    .map_err(|_| StateError("certificate"))?;
    let dispenser_id = DeviceId(
        r.expect_array(field::DISPENSER_ID)
            .map_err(|_| StateError("dispenser id"))?,
    );
    let balance = r
        .expect(field::BALANCE)
        .ok()
        .and_then(|v| be_u64(field::BALANCE, v).ok())
        .and_then(|v| Amount::new(v).ok())
        .ok_or(StateError("balance"))?;
    let counter = r
        .expect(field::COUNTER)
        .ok()
        .and_then(|v| be_u32(field::COUNTER, v).ok())
        .ok_or(StateError("counter"))?;
    let known_date = r
        .expect(field::KNOWN_DATE)
        .ok()
        .and_then(|v| be_u32(field::KNOWN_DATE, v).ok())
        .map(Date)
        .ok_or(StateError("known date"))?;
    let [blocked] = r
        .expect_array::<1>(field::BLOCKED)
        .map_err(|_| StateError("blocked"))?;
    let abnormal_bytes = r
        .expect(field::ABNORMAL)
        .map_err(|_| StateError("abnormal events"))?;
    if abnormal_bytes.len() % 5 != 0 || abnormal_bytes.len() / 5 > CARD_ABNORMAL_EVENTS_MAX {
        return Err(StateError("abnormal events"));
    }
    let mut abnormal_events = VecDeque::new();
    for chunk in abnormal_bytes.chunks(5) {
        let code = AbnormalCode::from_u8(chunk[0]).ok_or(StateError("abnormal code"))?;
        let counter = u32::from_be_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]);
        abnormal_events.push_back(AbnormalEvent { code, counter });
    }
    let log = LogEntry::decode_list(r.expect(field::LOG).map_err(|_| StateError("log"))?)
        .map_err(|_| StateError("log"))?
        .into();
    let last_usage = r
        .optional(field::LAST_USAGE)
        .map_err(|_| StateError("last usage"))?
        .map(UsageRecord::decode)
        .transpose()
        .map_err(|_| StateError("last usage"))?;
    let last_writer_certificate = r
        .optional(field::LAST_WRITER_CERTIFICATE)
        .map_err(|_| StateError("last writer certificate"))?
        .map(Certificate::decode)
        .transpose()
        .map_err(|_| StateError("last writer certificate"))?;
    // Images before format 3 have no credit template.
    let credit = r
        .optional(field::CREDIT)
        .map_err(|_| StateError("credit"))?
        .map(decode_credit)
        .transpose()?;
    // Images before format 5 have no transfer state.
    let transfer = r
        .optional(field::TRANSFER)
        .map_err(|_| StateError("transfer"))?
        .map(TransferState::decode)
        .transpose()?
        .unwrap_or_default();
    // The common-key application (seed 004) exists once a security server installed KC.
    let online = r
        .optional(field::ONLINE)
        .map_err(|_| StateError("online application"))?
        .map(OnlineApp::decode)
        .transpose()?;
    // The service areas (seed 002), image format 6.
    let services = r
        .optional(field::SERVICES)
        .map_err(|_| StateError("service areas"))?
        .map(ServicesApp::decode)
        .transpose()?
        .unwrap_or_default();
    Ok(Purse {
        keys,
        card_key,
        common_key,
        anchor: TrustAnchor { center, public_key },
        certificate,
        dispenser_id,
        balance,
        counter,
        known_date,
        last_usage,
        last_writer_certificate,
        log,
        abnormal_events,
        blocked: match blocked {
            0 => false,
            1 => true,
            _ => return Err(StateError("blocked")),
        },
        credit,
        transfer,
        online,
        services,
    })
}
