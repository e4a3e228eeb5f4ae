//! The multi-service chip of seed 002: several providers' services side by side on one chip,
//! each in its own area behind its own keys, and the messages with which a value move server
//! moves every service from an old chip to a new one without seeing a value or a key.
//!
//! Each area holds two AES-128 keys, both diversified from the chip's card ID with the SCP03
//! KDF: the **main key**, from the provider's normal SAM, and the **temporary key**, from the
//! provider's transfer SAM. The area's **key state** says which one opens it: on main keys the
//! provider's normal SAM serves it (normal use), on temporary keys only the transfer SAM can
//! (the move's upload and download), and normal use is refused. Only the move server's
//! administrative SAM, certified by the center, switches the state (S3, S10, S16), and it
//! never holds either key: the keys reach the chip sealed to the chip's own X25519 key by
//! each provider's SAM ([`keys`]).
//!
//! - [`content`]: what each kind of area holds (the purse's value, a ticket book, a points
//!   account) and the operations of normal use.
//! - [`channel`]: mutual authentication with an area's key in its current state and the
//!   secured messages of that session.
//! - [`keys`]: the key packages a provider's SAM seals to a chip.
//! - [`admin`]: what the administrative SAM signs (formatting an area, switching key states).
//! - [`commands`]: the command and response data of every command of the services
//!   application, each with one encoder and one decoder.
//! - [`report`]: a completed purse move as its provider reports it to the center.
//!
//! The card commands are documented in `docs/card-commands.md` § 16 and the move in
//! `docs/protocols.md` § 15.

pub mod admin;
pub mod channel;
pub mod commands;
pub mod content;
pub mod keys;
pub mod report;
#[cfg(test)]
mod tests;

pub use admin::*;
pub use channel::*;
pub use commands::*;
pub use content::*;
pub use keys::*;
pub use report::*;

use crate::messages::DecodeError;

/// The services application's AID: proprietary, `F0` then "VCSERVS".
pub const SERVICES_AID: [u8; 8] = [0xF0, 0x56, 0x43, 0x53, 0x45, 0x52, 0x56, 0x53];

/// Every services command but GET CHALLENGE is proprietary.
pub const CLA_SERVICES: u8 = 0x80;

/// Instruction bytes of the services application (meaningful only while it is selected).
pub mod ins {
    /// A fresh card challenge for the administrative SAM's next signed command (ISO class).
    pub const GET_CHALLENGE: u8 = 0x84;
    /// S10 (and issuance): one area formatted from a signed format and two key packages.
    pub const FORMAT_AREA: u8 = 0xE0;
    /// S3, S16 and a rollback: key states switched by the administrative SAM.
    pub const SWITCH_KEYS: u8 = 0xE2;
    /// Mutual authentication, first half: service code and host challenge in; card challenge,
    /// key state and card cryptogram out.
    pub const OPEN_SERVICE: u8 = 0x50;
    /// Mutual authentication, second half: the host cryptogram.
    pub const EXTERNAL_AUTHENTICATE: u8 = 0x82;
    /// The area's content, sealed, on either key state (the normal SAM reads it in normal
    /// use, the transfer SAM reads the new purse before it signs the move's record).
    pub const READ_AREA: u8 = 0xB0;
    /// Normal use (main keys): one operation on the area, sealed; the new content out.
    pub const UPDATE_AREA: u8 = 0xD6;
    /// S7 (temporary keys): the area's content for the transfer SAM, sealed; the area is
    /// marked as exported for that move.
    pub const EXPORT_AREA: u8 = 0xC0;
    /// S14 (temporary keys): the content from the transfer SAM, sealed; applied once per
    /// move, its receipt answered again on a repeat.
    pub const IMPORT_AREA: u8 = 0xC2;
}

/// TLV tags of the services messages (context-specific, inside each message).
pub mod tag {
    pub const CARD_ID: u32 = 0x80;
    pub const SERVICE: u32 = 0x81;
    pub const KIND: u32 = 0x82;
    pub const KEY_STATE: u32 = 0x83;
    pub const PROVIDER: u32 = 0x84;
    pub const CAPACITY: u32 = 0x85;
    pub const CHALLENGE_HOST: u32 = 0x86;
    pub const CHALLENGE_CARD: u32 = 0x87;
    pub const CRYPTOGRAM: u32 = 0x88;
    pub const MOVE_ID: u32 = 0x89;
    pub const SIGNATURE: u32 = 0x8A;
    pub const SEALED_KEY: u32 = 0x8B;
    pub const KEY_VERSION: u32 = 0x8C;
    pub const DIGEST: u32 = 0x8D;
    pub const SOURCE: u32 = 0x8E;
    pub const EXPORTED_FOR: u32 = 0x8F;
    pub const IMPORTED_FOR: u32 = 0x90;
    pub const COUNTER: u32 = 0x91;
    pub const AMOUNT: u32 = 0x92;
    pub const BALANCE: u32 = 0x93;
    pub const DATE: u32 = 0x94;
    pub const WRITER_SEQUENCE: u32 = 0x95;
    pub const FCI: u32 = 0x6F;
    pub const DF_NAME: u32 = 0x84;
    pub const FCI_PROPRIETARY: u32 = 0xA5;
    pub const AREA: u32 = 0xA1;
    pub const CHANGE: u32 = 0xA2;
    pub const FORMAT: u32 = 0xA3;
    pub const MAIN_PACKAGE: u32 = 0xA4;
    pub const TEMPORARY_PACKAGE: u32 = 0xA6;
    pub const CONTENT: u32 = 0xA7;
    pub const OPERATION: u32 = 0xA8;
    pub const RECEIPT: u32 = 0xA9;
    pub const CERTIFICATE: u32 = crate::cert::TAG_CERTIFICATE;
    pub const USAGE_RECORD: u32 = crate::messages::purse::tag::USAGE_RECORD;
}

/// Derivation constants of the services keys (SCP03-style KDF, `crypto::kdf`).
pub mod derivation {
    /// An area's main key, diversified from (card ID, service code) under the provider's
    /// normal master key.
    pub const MAIN_KEY: u8 = 0x41;
    /// An area's temporary key, diversified from (card ID, service code) under the
    /// provider's transfer master key.
    pub const TEMPORARY_KEY: u8 = 0x42;
    /// The session key of one service session.
    pub const SESSION_KEY: u8 = 0x43;
    /// The card's cryptogram.
    pub const CARD_CRYPTOGRAM: u8 = 0x44;
    /// The host's cryptogram.
    pub const HOST_CRYPTOGRAM: u8 = 0x45;
}

/// A service's code: which provider's service an area holds (unique on a chip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceCode(pub u16);

impl core::fmt::Display for ServiceCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// What kind of value an area holds; each has its own data model ([`content`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ServiceKind {
    /// The valuecard purse: its value is the purse's one balance, moved as value (the new
    /// chip keeps its own key pair and certificate). Its provider is the center.
    Purse = 0x01,
    /// Tickets and passes (a transit or event operator).
    Tickets = 0x02,
    /// A loyalty points account (a retailer).
    Points = 0x03,
}

impl ServiceKind {
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        Ok(match value {
            0x01 => ServiceKind::Purse,
            0x02 => ServiceKind::Tickets,
            0x03 => ServiceKind::Points,
            _ => {
                return Err(DecodeError::Field {
                    field: "service kind",
                    reason: "unknown",
                })
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Purse => "purse",
            ServiceKind::Tickets => "tickets",
            ServiceKind::Points => "points",
        }
    }
}

/// Which of an area's two keys opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyState {
    /// Normal use by the provider's normal SAM.
    Main = 0x01,
    /// Reachable only by the provider's transfer SAM (during and after a move); normal use
    /// is refused.
    Temporary = 0x02,
}

impl KeyState {
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            0x01 => Ok(KeyState::Main),
            0x02 => Ok(KeyState::Temporary),
            _ => Err(DecodeError::Field {
                field: "key state",
                reason: "unknown",
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyState::Main => "main",
            KeyState::Temporary => "temporary",
        }
    }
}

/// Length of a move's identifier, drawn at random by the move server.
pub const MOVE_ID_LEN: usize = 16;

/// One move of a chip's services: every signed or sealed message of the move carries it.
pub type MoveId = [u8; MOVE_ID_LEN];
