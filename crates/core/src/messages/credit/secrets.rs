//! The secrets of credit mode (the setting number Ns and the password Nc, which never print)
//! and what the card and the center keep of them.

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::sha256;
use crate::ids::CardId;
use crate::messages::DecodeError;

use super::{
    digits_only, PASSWORD_LEN_MAX, PASSWORD_LEN_MIN, SETTING_NUMBER_LEN, SETTING_SALT_LEN,
};

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
