//! The credit commands' data (Figs. 13-17), each with its one encoding and decoding.

use crate::cert::Certificate;
use crate::crypto::Signature;
use crate::ids::{CardId, DeviceId};
use crate::messages::field::{amount, u32_field};
use crate::messages::purse::{tag as purse_tag, Challenge};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{TlvReader, TlvWriter};

use super::{signature, tag, Password, SettingNumber, CREDIT_TRIES, SEALED_SETTING_LEN};

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
