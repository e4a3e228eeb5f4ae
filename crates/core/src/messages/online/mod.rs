//! The common-key application of seed 004: the card holds only a key KC it shares with the
//! settlement system's security server (diversified per card from the security server's
//! master key) and no signing key of its own for online use. Everything the card and the
//! security server exchange travels under a session key KSES derived from KC after mutual
//! authentication (ST11), through the holder's computer and the application server, which
//! can read none of it.
//!
//! - [`session`]: mutual authentication (cryptograms) and the secured messages under KSES.
//! - [`commands`]: the command and response data of every online command, each with one
//!   encoder and one decoder.
//! - [`documents`]: the signed documents among the store, the application server and the
//!   holder's client (the bill and SIG1 to SIG5).
//! - [`record`]: the usage record the security server signs for each online payment or
//!   charge, so that one card's chain of records (terminals, transfers, online) reaches the
//!   center as one history.
//!
//! The card commands are documented in `docs/card-commands.md`.

pub mod commands;
pub mod documents;
pub mod record;
pub mod session;
#[cfg(test)]
mod tests;

pub use commands::*;
pub use documents::*;
pub use record::*;
pub use session::*;

/// The common-key application's AID: proprietary, `F0` then "VCONLNE".
pub const ONLINE_AID: [u8; 8] = [0xF0, 0x56, 0x43, 0x4F, 0x4E, 0x4C, 0x4E, 0x45];

/// Every online command is proprietary.
pub const CLA_ONLINE: u8 = 0x80;

/// Instruction bytes of the online application (meaningful only while it is selected).
pub mod ins {
    /// Installs or replaces KC, sealed to the card by a certified security server.
    pub const INSTALL_KEY: u8 = 0xE4;
    /// ST11, first half: the server's challenge in, the card's challenge and cryptogram out.
    pub const INITIALIZE_UPDATE: u8 = 0x50;
    /// ST11, second half: the server's cryptogram; the session is open once it verifies.
    pub const EXTERNAL_AUTHENTICATE: u8 = 0x82;
    /// ST12-ST13: BRC in, BI out, both under KSES.
    pub const READ_BALANCE: u8 = 0xB0;
    /// ST109 (second embodiment): the card opens an SPC for the holder to read, without
    /// applying it.
    pub const PREVIEW: u8 = 0xB2;
    /// ST16-ST18: SPC in, applied once, PCN out.
    pub const SETTLE: u8 = 0xD0;
    /// Figs. 24-32: a value update (charge) in, applied once, its completion out.
    pub const CHARGE: u8 = 0xD2;
    /// Recovers a lost PCN: the completion of a settlement the card applied, or that it
    /// did not.
    pub const GET_COMPLETION: u8 = 0xD4;
}

/// TLV tags of the online messages (context-specific, inside each message).
pub mod tag {
    pub const CARD_ID: u32 = 0x80;
    pub const KEY_VERSION: u32 = 0x81;
    pub const SEALED_KEY: u32 = 0x82;
    pub const SIGNATURE: u32 = 0x83;
    pub const CHALLENGE_HOST: u32 = 0x84;
    pub const CHALLENGE_CARD: u32 = 0x85;
    pub const CRYPTOGRAM: u32 = 0x86;
    pub const SETTLEMENT_ID: u32 = 0x87;
    pub const KIND: u32 = 0x88;
    pub const AMOUNT: u32 = 0x89;
    pub const BALANCE: u32 = 0x8A;
    pub const COUNTER: u32 = 0x8B;
    pub const DATE: u32 = 0x8C;
    pub const WRITER: u32 = 0x8D;
    pub const WRITER_SEQUENCE: u32 = 0x8E;
    pub const PARTY: u32 = 0x8F;
    pub const SPENDABLE: u32 = 0x90;
    pub const APPLIED: u32 = 0x91;
    pub const BALANCE_BEFORE: u32 = 0x92;
    pub const LAST_SETTLEMENT: u32 = 0x93;
    pub const FCI: u32 = 0x6F;
    pub const DF_NAME: u32 = 0x84;
    pub const FCI_PROPRIETARY: u32 = 0xA5;
    pub const COMPLETION: u32 = 0xA1;
    /// The card's last usage record, encoded as the purse encodes it (§ 6.12).
    pub const LAST_USAGE: u32 = crate::messages::purse::tag::USAGE_RECORD;
    pub const CERTIFICATE: u32 = crate::cert::TAG_CERTIFICATE;
}

/// Derivation constants of the online keys (SCP03-style KDF, `crypto::kdf`).
pub mod derivation {
    /// KC: one card's common key, diversified from the card ID under the security server's
    /// master key.
    pub const CARD_KEY: u8 = 0x31;
    /// KSES: the session key, derived from KC with both challenges.
    pub const SESSION_KEY: u8 = 0x32;
    /// The card's cryptogram, derived from KSES.
    pub const CARD_CRYPTOGRAM: u8 = 0x33;
    /// The server's cryptogram, derived from KSES.
    pub const HOST_CRYPTOGRAM: u8 = 0x34;
}

/// Length of a settlement's identifier, drawn at random by the security server.
pub const SETTLEMENT_ID_LEN: usize = 16;

/// One settlement (or charge): the identifier the SPC, the PCN and every record of it
/// carry.
pub type SettlementId = [u8; SETTLEMENT_ID_LEN];

/// Length of a cryptogram of mutual authentication.
pub const CRYPTOGRAM_LEN: usize = 8;
