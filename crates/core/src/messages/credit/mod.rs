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
//!
//! By concept: the secrets and what the card keeps of them (`secrets.rs`), the commands'
//! data (`commands.rs`), the signed service records and the card's service log
//! (`records.rs`); the links to the center are here.

mod commands;
mod records;
mod secrets;

pub use commands::*;
pub use records::*;
pub use secrets::*;

use crate::crypto::{Signature, SEAL_OVERHEAD, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::messages::center::CenterError;
use crate::messages::purse::tag as purse_tag;
use crate::messages::DecodeError;
use crate::time::Date;
use crate::tlv::TlvReader;
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
    use crate::money::Amount;
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
