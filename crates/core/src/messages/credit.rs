//! Credit mode (seed 003, Figs. 13-17): the card as a credit card. The center enables it at
//! issuance with a secret setting number Ns, the holder registers a password Nc with that
//! number, and each service at a terminal ends with a service record M = (V, D, IDT, ...)
//! signed by the card, SU(M * IDU), which terminals collect and send to the center for the
//! monthly statement.
//!
//! This module holds the credit commands' data, the byte strings each party signs, the
//! secrets' types (which never print), and the two small links to the center: the
//! dispenser's [`CreditLink`] and the terminal's [`ServiceLink`]. `docs/card-commands.md`
//! documents the same bytes.

use crate::messages::field::{amount, u32_field};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::cert::Certificate;
use crate::crypto::{sha256, Signature, SEAL_OVERHEAD, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::limits::CARD_SERVICE_LOG_ENTRIES_MAX;
use crate::messages::center::CenterError;
use crate::messages::purse::{tag as purse_tag, Challenge};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{TlvReader, TlvWriter};

/// Wrong presentations (setting number or password, one shared counter) before the credit
/// function blocks for good.
pub const CREDIT_TRIES: u8 = 3;
/// The setting number Ns: this many decimal digits.
pub const SETTING_NUMBER_LEN: usize = 8;
/// The password Nc: between these many decimal digits.
pub const PASSWORD_LEN_MIN: usize = 4;
pub const PASSWORD_LEN_MAX: usize = 12;
/// The secret salt of the setting commitment, sealed to the card with Ns.
pub const SETTING_SALT_LEN: usize = 16;
/// What the center seals to the card: the salt, then Ns in ASCII.
pub const SEALED_SETTING_PLAINTEXT_LEN: usize = SETTING_SALT_LEN + SETTING_NUMBER_LEN;
/// The sealed box in ENABLE CREDIT (ephemeral key, ciphertext, tag).
pub const SEALED_SETTING_LEN: usize = SEAL_OVERHEAD + SEALED_SETTING_PLAINTEXT_LEN;
/// Largest number of service records in one upload.
pub const SERVICE_BATCH_MAX: usize = 4096;

/// Tags of the credit commands (context-specific, next to [`purse_tag`]).
pub mod tag {
    pub const SETTING_NUMBER: u32 = 0x90;
    pub const PASSWORD: u32 = 0x91;
    pub const SETTING_COMMITMENT: u32 = 0x92;
    pub const TRIES_LEFT: u32 = 0x93;
    pub const PASSWORD_REGISTERED: u32 = 0x94;
    pub const SERVICE_ENTRY: u32 = 0xA4;
}

fn digits_only(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_digit)
}

fn signature(reader: &mut TlvReader<'_>) -> Result<Signature, DecodeError> {
    Ok(Signature(
        reader.expect_array::<SIGNATURE_LEN>(purse_tag::SIGNATURE)?,
    ))
}

/// The password setting number Ns of Fig. 13: eight decimal digits the center draws for one
/// card and tells only its holder. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SettingNumber([u8; SETTING_NUMBER_LEN]);

impl SettingNumber {
    /// Exactly eight ASCII digits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let digits: [u8; SETTING_NUMBER_LEN] =
            bytes.try_into().map_err(|_| DecodeError::Field {
                field: "setting number",
                reason: "must be 8 decimal digits",
            })?;
        if !digits_only(&digits) {
            return Err(DecodeError::Field {
                field: "setting number",
                reason: "must be 8 decimal digits",
            });
        }
        Ok(SettingNumber(digits))
    }

    pub fn parse(text: &str) -> Result<Self, DecodeError> {
        Self::from_bytes(text.as_bytes())
    }

    /// A uniformly random setting number (rejection sampling, no modulo bias).
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        const RANGE: u32 = 100_000_000;
        const LIMIT: u32 = u32::MAX - u32::MAX % RANGE;
        let mut value = loop {
            let candidate = rng.next_u32();
            if candidate < LIMIT {
                break candidate % RANGE;
            }
        };
        let mut digits = [0u8; SETTING_NUMBER_LEN];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
        SettingNumber(digits)
    }

    pub fn as_bytes(&self) -> &[u8; SETTING_NUMBER_LEN] {
        &self.0
    }

    /// The digits as text, to be shown to the holder once.
    pub fn expose(&self) -> &str {
        // Invariant: every constructor admits ASCII digits only.
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl core::fmt::Debug for SettingNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SettingNumber(..)")
    }
}

/// The holder's password Nc: four to twelve decimal digits. Zeroized on drop; `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if !(PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&bytes.len()) || !digits_only(bytes) {
            return Err(DecodeError::Field {
                field: "password",
                reason: "must be 4 to 12 decimal digits",
            });
        }
        Ok(Password(bytes.to_vec()))
    }

    pub fn parse(text: &str) -> Result<Self, DecodeError> {
        Self::from_bytes(text.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for Password {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// C = SHA-256("valuecard/credit/setting/v1" || card ID || salt || Ns): the card keeps C and
/// compares presented setting numbers against it. The secret salt makes C hiding, so the
/// card can show C (and the center's signature over it) without giving Ns away to anyone
/// who tries all 10^8 values.
pub fn setting_commitment(
    card_id: &CardId,
    salt: &[u8; SETTING_SALT_LEN],
    setting_number: &SettingNumber,
) -> [u8; 32] {
    let mut input = Vec::with_capacity(64);
    input.extend_from_slice(b"valuecard/credit/setting/v1");
    input.extend_from_slice(card_id.as_bytes());
    input.extend_from_slice(salt);
    input.extend_from_slice(setting_number.as_bytes());
    let digest = sha256(&input);
    input.zeroize();
    digest
}

/// H(Nc) = SHA-256("valuecard/credit/password/v1" || card ID || Nc): what the card stores
/// instead of the password, salted with the card ID. It never leaves the card; a terminal
/// computes it from the password the holder typed to check the card's SU(R * X * H(Nc)).
pub fn password_digest(card_id: &CardId, password: &Password) -> [u8; 32] {
    let mut input = Vec::with_capacity(48);
    input.extend_from_slice(b"valuecard/credit/password/v1");
    input.extend_from_slice(card_id.as_bytes());
    input.extend_from_slice(password.as_bytes());
    let digest = sha256(&input);
    input.zeroize();
    digest
}

/// Associated data of the sealed setting number: binds the box to one card.
pub fn sealed_setting_aad(card_id: &CardId) -> Vec<u8> {
    let mut aad = b"valuecard/credit/setting-number/v1".to_vec();
    aad.extend_from_slice(card_id.as_bytes());
    aad
}

/// ENABLE CREDIT command data (Fig. 13's issuance data), and the center's answer to a
/// dispenser's [`CreditRequest`]: the expiry date, SA over (IDU, expiry, C), and salt || Ns
/// sealed to the card's X25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnableCredit {
    pub expiry: Date,
    pub signature: Signature,
    pub sealed_setting: Vec<u8>,
}

impl EnableCredit {
    /// SA = Sign_root of this: the center's word that the card may act as a credit card until
    /// `expiry` (inclusive), with the setting number committed to in C.
    pub fn signed_message(card_id: &CardId, expiry: Date, commitment: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(72);
        m.extend_from_slice(b"valuecard/credit/enable/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(&expiry.0.to_be_bytes());
        m.extend_from_slice(commitment);
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(160);
        w.put_u32(purse_tag::DATE, self.expiry.0)
            .put(purse_tag::SIGNATURE, &self.signature.0)
            .put(purse_tag::SEALED_KEYS, &self.sealed_setting);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let expiry = Date(u32_field(&mut r, purse_tag::DATE)?);
        let signature = signature(&mut r)?;
        let sealed_setting = r.expect(purse_tag::SEALED_KEYS)?;
        if sealed_setting.len() != SEALED_SETTING_LEN {
            return Err(DecodeError::Field {
                field: "sealed setting number",
                reason: "must be 72 bytes",
            });
        }
        let sealed_setting = sealed_setting.to_vec();
        r.finish()?;
        Ok(EnableCredit {
            expiry,
            signature,
            sealed_setting,
        })
    }
}

/// READ CREDIT response: what a terminal checks before it offers credit (Figs. 13 and 14:
/// the card shows SA and IDU, the terminal verifies them with nA and checks the expiry
/// against its calendar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditStatus {
    pub expiry: Date,
    pub setting_commitment: [u8; 32],
    /// SA over [`EnableCredit::signed_message`].
    pub signature: Signature,
    /// Presentations left before the credit function blocks (0: blocked for good).
    pub tries_left: u8,
    pub password_registered: bool,
    /// Service records the card has signed so far (the number of the last one).
    pub services_recorded: u32,
}

impl CreditStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(120);
        w.put_u32(purse_tag::DATE, self.expiry.0)
            .put(tag::SETTING_COMMITMENT, &self.setting_commitment)
            .put(purse_tag::SIGNATURE, &self.signature.0)
            .put_u8(tag::TRIES_LEFT, self.tries_left)
            .put_u8(tag::PASSWORD_REGISTERED, self.password_registered as u8)
            .put_u32(purse_tag::COUNTER, self.services_recorded);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let expiry = Date(u32_field(&mut r, purse_tag::DATE)?);
        let setting_commitment = r.expect_array(tag::SETTING_COMMITMENT)?;
        let signature = signature(&mut r)?;
        let [tries_left] = r.expect_array::<1>(tag::TRIES_LEFT)?;
        if tries_left > CREDIT_TRIES {
            return Err(DecodeError::Field {
                field: "tries left",
                reason: "at most 3",
            });
        }
        let password_registered = match r.expect_array::<1>(tag::PASSWORD_REGISTERED)? {
            [0] => false,
            [1] => true,
            _ => {
                return Err(DecodeError::Field {
                    field: "password registered",
                    reason: "must be 00 or 01",
                })
            }
        };
        let services_recorded = u32_field(&mut r, purse_tag::COUNTER)?;
        r.finish()?;
        Ok(CreditStatus {
            expiry,
            setting_commitment,
            signature,
            tries_left,
            password_registered,
            services_recorded,
        })
    }
}

/// VERIFY SETTING NUMBER command data (Fig. 13): Ns' as the holder typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettingNumber {
    pub setting_number: SettingNumber,
}

impl VerifySettingNumber {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::SETTING_NUMBER, self.setting_number.as_bytes());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let setting_number = SettingNumber::from_bytes(r.expect(tag::SETTING_NUMBER)?)?;
        r.finish()?;
        Ok(VerifySettingNumber { setting_number })
    }
}

/// VERIFY PASSWORD command data (Figs. 14, 16 and 17): Nc' as the holder typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPassword {
    pub password: Password,
}

impl VerifyPassword {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::PASSWORD, self.password.as_bytes());
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let password = Password::from_bytes(r.expect(tag::PASSWORD)?)?;
        r.finish()?;
        Ok(VerifyPassword { password })
    }
}

/// INITIALIZE PASSWORD and INITIALIZE SERVICE command data (Figs. 15 and 16): the terminal's
/// certificate (nT, IDT, SA(nT * IDT)) and its challenge R.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditSessionRequest {
    pub terminal_certificate: Certificate,
    pub challenge_terminal: Challenge,
}

impl CreditSessionRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(220);
        w.put_raw(&self.terminal_certificate.encode())
            .put(purse_tag::CHALLENGE_TERMINAL, &self.challenge_terminal);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let terminal_certificate = Certificate::decode_value(r.expect(purse_tag::CERTIFICATE)?)?;
        let challenge_terminal = r.expect_array(purse_tag::CHALLENGE_TERMINAL)?;
        r.finish()?;
        Ok(CreditSessionRequest {
            terminal_certificate,
            challenge_terminal,
        })
    }
}

/// INITIALIZE PASSWORD and INITIALIZE SERVICE response: the card's challenge X and its
/// signature, SU(R * X) for a registration and SU(R * X * H(Nc)) for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditSessionOffer {
    pub challenge_card: Challenge,
    pub signature: Signature,
}

impl CreditSessionOffer {
    /// SU(R * X) of Fig. 15: what the card signs to answer INITIALIZE PASSWORD.
    pub fn password_message(
        card_id: &CardId,
        terminal_id: &DeviceId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(80);
        m.extend_from_slice(b"valuecard/credit/password/card/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(challenge_terminal);
        m.extend_from_slice(challenge_card);
        m
    }

    /// SU(R * X * Nc) of Fig. 17 (with H(Nc) for Nc): what the card signs to answer
    /// INITIALIZE SERVICE, after the password was verified.
    pub fn service_message(
        card_id: &CardId,
        terminal_id: &DeviceId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        password_digest: &[u8; 32],
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(112);
        m.extend_from_slice(b"valuecard/credit/service-session/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(challenge_terminal);
        m.extend_from_slice(challenge_card);
        m.extend_from_slice(password_digest);
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(90);
        w.put(purse_tag::CHALLENGE_CARD, &self.challenge_card)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let challenge_card = r.expect_array(purse_tag::CHALLENGE_CARD)?;
        let signature = signature(&mut r)?;
        r.finish()?;
        Ok(CreditSessionOffer {
            challenge_card,
            signature,
        })
    }
}

/// SET PASSWORD command data (Fig. 15, second exchange): the new password Nc and the
/// terminal's ST(R * X * Nc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPassword {
    pub password: Password,
    pub signature: Signature,
}

impl SetPassword {
    /// ST(R * X * Nc): the terminal's signature, bound to the card, both challenges and the
    /// new password (its length first).
    pub fn signed_message(
        card_id: &CardId,
        terminal_id: &DeviceId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        password: &Password,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(96);
        m.extend_from_slice(b"valuecard/credit/password/terminal/v1");
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(terminal_id.as_bytes());
        m.extend_from_slice(challenge_terminal);
        m.extend_from_slice(challenge_card);
        m.push(password.as_bytes().len() as u8);
        m.extend_from_slice(password.as_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(90);
        w.put(tag::PASSWORD, self.password.as_bytes())
            .put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let password = Password::from_bytes(r.expect(tag::PASSWORD)?)?;
        let signature = signature(&mut r)?;
        r.finish()?;
        Ok(SetPassword {
            password,
            signature,
        })
    }
}

/// RECORD SERVICE command data (Fig. 17): the charge V, the date D and the terminal's
/// sequence number for this service. The terminal ID comes from INITIALIZE SERVICE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordService {
    pub amount: Amount,
    pub date: Date,
    pub terminal_sequence: u32,
}

impl RecordService {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(32);
        w.put_u64(purse_tag::AMOUNT, self.amount.minor())
            .put_u32(purse_tag::DATE, self.date.0)
            .put_u32(purse_tag::SEQUENCE, self.terminal_sequence);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let message = RecordService {
            amount: amount(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
            terminal_sequence: u32_field(&mut r, purse_tag::SEQUENCE)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// A service record as the center receives it: M = (V, D, IDT, terminal sequence, the
/// card's service number) with the card's SU(M * IDU) over it (Fig. 17).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub card_id: CardId,
    pub terminal_id: DeviceId,
    pub terminal_sequence: u32,
    /// The card's own number for this record: 1 for its first, then +1.
    pub service_number: u32,
    pub amount: Amount,
    pub date: Date,
    pub card_signature: Signature,
}

impl ServiceRecord {
    /// SU(M * IDU): what the card signs when it records a service.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(72);
        m.extend_from_slice(b"valuecard/credit/service/v1");
        m.extend_from_slice(self.card_id.as_bytes());
        m.extend_from_slice(self.terminal_id.as_bytes());
        m.extend_from_slice(&self.terminal_sequence.to_be_bytes());
        m.extend_from_slice(&self.service_number.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }
}

/// RECORD SERVICE response: the card's number for the record and SU(M * IDU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecorded {
    pub service_number: u32,
    pub signature: Signature,
}

impl ServiceRecorded {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(80);
        w.put_u32(purse_tag::COUNTER, self.service_number)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let service_number = u32_field(&mut r, purse_tag::COUNTER)?;
        let signature = signature(&mut r)?;
        r.finish()?;
        Ok(ServiceRecorded {
            service_number,
            signature,
        })
    }
}

/// One entry of the card's service log (READ SERVICE LOG, newest first): the service
/// information M the holder may check afterwards, with the card's signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLogEntry {
    pub service_number: u32,
    pub terminal_id: DeviceId,
    pub terminal_sequence: u32,
    pub amount: Amount,
    pub date: Date,
    pub signature: Signature,
}

impl ServiceLogEntry {
    /// The signed record this entry holds.
    pub fn record(&self, card_id: CardId) -> ServiceRecord {
        ServiceRecord {
            card_id,
            terminal_id: self.terminal_id,
            terminal_sequence: self.terminal_sequence,
            service_number: self.service_number,
            amount: self.amount,
            date: self.date,
            card_signature: self.signature,
        }
    }

    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::SERVICE_ENTRY, |e| {
            e.put_u32(purse_tag::COUNTER, self.service_number)
                .put(purse_tag::DEVICE_ID, self.terminal_id.as_bytes())
                .put_u32(purse_tag::SEQUENCE, self.terminal_sequence)
                .put_u64(purse_tag::AMOUNT, self.amount.minor())
                .put_u32(purse_tag::DATE, self.date.0)
                .put(purse_tag::SIGNATURE, &self.signature.0);
        });
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let entry = ServiceLogEntry {
            service_number: u32_field(&mut r, purse_tag::COUNTER)?,
            terminal_id: DeviceId(r.expect_array(purse_tag::DEVICE_ID)?),
            terminal_sequence: u32_field(&mut r, purse_tag::SEQUENCE)?,
            amount: amount(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
            signature: signature(&mut r)?,
        };
        r.finish()?;
        Ok(entry)
    }

    pub fn encode_list(entries: &[ServiceLogEntry]) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(entries.len() * 110);
        for entry in entries {
            entry.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode_list(bytes: &[u8]) -> Result<Vec<ServiceLogEntry>, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let mut entries = Vec::new();
        while !r.is_empty() {
            if entries.len() >= CARD_SERVICE_LOG_ENTRIES_MAX {
                return Err(DecodeError::Field {
                    field: "service log",
                    reason: "too many entries",
                });
            }
            entries.push(ServiceLogEntry::decode_value(
                r.expect(tag::SERVICE_ENTRY)?,
            )?);
        }
        Ok(entries)
    }
}

/// Fig. 13's issuance data: a dispenser asks the center to enable credit on a card it
/// holds. `expiry` is the last day of use the operator asks for (the center's default when
/// absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRequest {
    pub dispenser_id: DeviceId,
    pub card_id: CardId,
    pub expiry: Option<Date>,
}

/// How a dispenser asks the center to enable credit (kept apart from [`super::center::CenterLink`]
/// so that links which do not offer credit need not change).
pub trait CreditLink {
    /// The ENABLE CREDIT data for the card. The setting number itself goes to the holder
    /// through the center, never through the dispenser.
    fn enable_credit(&mut self, request: &CreditRequest) -> Result<EnableCredit, CenterError>;
}

impl<T: CreditLink + ?Sized> CreditLink for &mut T {
    fn enable_credit(&mut self, request: &CreditRequest) -> Result<EnableCredit, CenterError> {
        (**self).enable_credit(request)
    }
}

/// A batch of signed service records from one terminal (Fig. 17: sent daily, weekly, or
/// when the terminal's memory fills).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUpload {
    pub terminal_id: DeviceId,
    pub records: Vec<ServiceRecord>,
}

/// What the center did with a batch of service records: every record is stored, already
/// stored (a retry), or refused with a reason (by terminal sequence).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceReceipt {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<(u32, String)>,
}

/// How a terminal sends its service records to the center.
pub trait ServiceLink {
    fn upload_service_records(
        &mut self,
        upload: &ServiceUpload,
    ) -> Result<ServiceReceipt, CenterError>;
}

impl<T: ServiceLink + ?Sized> ServiceLink for &mut T {
    fn upload_service_records(
        &mut self,
        upload: &ServiceUpload,
    ) -> Result<ServiceReceipt, CenterError> {
        (**self).upload_service_records(upload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn secrets_parse_strictly_and_never_print() {
        assert!(SettingNumber::parse("12345678").is_ok());
        for bad in ["1234567", "123456789", "1234567a", "", "-1234567"] {
            assert!(SettingNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Password::parse("0000").is_ok());
        assert!(Password::parse("123456789012").is_ok());
        for bad in ["123", "1234567890123", "12a4", " 1234"] {
            assert!(Password::parse(bad).is_err(), "{bad:?}");
        }
        let number = SettingNumber::parse("87654321").unwrap();
        assert!(!format!("{number:?}").contains("8765"));
        let password = Password::parse("4242").unwrap();
        assert!(!format!("{password:?}").contains("4242"));
    }

    #[test]
    fn random_setting_numbers_are_eight_digits() {
        for _ in 0..200 {
            let number = SettingNumber::random(&mut OsRng);
            assert_eq!(number.expose().len(), 8);
            assert!(SettingNumber::parse(number.expose()).is_ok());
        }
    }

    #[test]
    fn leading_zeros_matter() {
        let card = CardId(*b"CARD0001");
        let short = Password::parse("1234").unwrap();
        let padded = Password::parse("01234").unwrap();
        assert_ne!(
            password_digest(&card, &short),
            password_digest(&card, &padded)
        );
        let other = CardId(*b"CARD0002");
        assert_ne!(
            password_digest(&card, &short),
            password_digest(&other, &short)
        );
    }

    #[test]
    fn messages_round_trip() {
        let status = CreditStatus {
            expiry: Date(20_000),
            setting_commitment: [7; 32],
            signature: Signature([9; 64]),
            tries_left: 2,
            password_registered: true,
            services_recorded: 5,
        };
        assert_eq!(CreditStatus::decode(&status.encode()).unwrap(), status);
        let mut bad = status.clone();
        bad.tries_left = 4;
        assert!(CreditStatus::decode(&bad.encode()).is_err());
        let record = RecordService {
            amount: Amount::new(250).unwrap(),
            date: Date(20_001),
            terminal_sequence: 3,
        };
        assert_eq!(RecordService::decode(&record.encode()).unwrap(), record);
        let entries: Vec<_> = (1..=3)
            .map(|n| ServiceLogEntry {
                service_number: n,
                terminal_id: DeviceId(*b"TERMINAL"),
                terminal_sequence: n + 10,
                amount: Amount::new(100 * u64::from(n)).unwrap(),
                date: Date(20_000 + n),
                signature: Signature([n as u8; 64]),
            })
            .collect();
        assert_eq!(
            ServiceLogEntry::decode_list(&ServiceLogEntry::encode_list(&entries)).unwrap(),
            entries
        );
        let enable = EnableCredit {
            expiry: Date(21_000),
            signature: Signature([1; 64]),
            sealed_setting: vec![2; SEALED_SETTING_LEN],
        };
        assert_eq!(EnableCredit::decode(&enable.encode()).unwrap(), enable);
        let short = EnableCredit {
            sealed_setting: vec![2; SEALED_SETTING_LEN - 1],
            ..enable
        };
        assert!(EnableCredit::decode(&short.encode()).is_err());
    }
}
