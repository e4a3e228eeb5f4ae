//! Terminals: the payment terminal (seed 003, Figs. 5, 6, 9) and the card dispenser
//! (Figs. 4B, 4C, 7, 8), each written as explicit protocol states over a [`CardReader`]
//! and a [`Sam`].
//!
//! Every step consumes the state the previous step produced: a DEBIT can only be built from
//! a [`payment::PurchaseReady`], which only exists once the card's certificate, its signature
//! over (R, X, V) and its previous usage record have been verified.

#![forbid(unsafe_code)]

pub mod card_commands;
pub mod credit;
pub mod dispenser;
pub mod memcard;
pub mod payment;
pub mod store;
pub mod transfer;

use valuecard_core::cert::CertError;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::DecodeError;
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::ReaderError;
use valuecard_sam::SamError;

/// Why a terminal or dispenser step failed, split by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TerminalError {
    #[error("card reader: {0}")]
    Reader(#[from] ReaderError),
    #[error("the card answered {command} with {sw}")]
    Card {
        command: &'static str,
        sw: StatusWord,
    },
    #[error("the card is blocked")]
    CardBlocked,
    #[error("card {card_id} is on the center's list ({}): refused", reason.as_str())]
    CardListed {
        card_id: valuecard_core::ids::CardId,
        reason: valuecard_core::messages::center::ListReason,
    },
    #[error("the card is not personalized (state {0:?})")]
    CardNotReady(valuecard_core::messages::purse::CardState),
    #[error("the card's certificate was refused: {0}")]
    CardCertificate(CertError),
    #[error("the card's signature does not verify")]
    BadCardSignature,
    #[error("the card was last written by stolen terminal {terminal} after its theft (stamp {stamp_count} > {listed_count})")]
    WrittenByStolenTerminal {
        terminal: valuecard_core::ids::DeviceId,
        stamp_count: u32,
        listed_count: u32,
    },
    #[error("the card's previous usage record does not verify: {0}")]
    BadUsageRecord(&'static str),
    #[error("the card sent a malformed {message}: {error}")]
    Malformed {
        message: &'static str,
        error: DecodeError,
    },
    #[error("the card holds {balance}, the purchase needs {amount}")]
    InsufficientBalance { balance: Amount, amount: Amount },
    #[error("amount refused: {0}")]
    Amount(String),
    #[error("purchase {sequence} is in doubt: the card may have committed; present the card again to settle it")]
    PurchaseInDoubt { sequence: u32 },
    #[error("load {load_number} is in doubt: the card may have committed; present the card again to settle it")]
    LoadInDoubt { load_number: u32 },
    #[error("the card's answer does not match the request: {0}")]
    Mismatch(&'static str),
    #[error("SAM: {0}")]
    Sam(#[from] SamError),
    #[error("center: {0}")]
    Center(#[from] CenterError),
    #[error("terminal storage: {0}")]
    Store(String),
    #[error("the card has no credit function")]
    CreditNotEnabled,
    #[error("the card's credit expired on {expiry} (today is {today})")]
    CreditExpired {
        expiry: valuecard_core::time::Date,
        today: valuecard_core::time::Date,
    },
    #[error("the card's credit function is blocked after three wrong entries")]
    CreditBlocked,
    #[error("no password is registered on the card: register one with the setting number")]
    NoPasswordRegistered,
    #[error("wrong setting number: {tries_left} tries left")]
    WrongSettingNumber { tries_left: u8 },
    #[error("wrong password: {tries_left} tries left")]
    WrongPassword { tries_left: u8 },
    #[error("the center's credit enablement on the card does not verify")]
    BadCreditEnablement,
    #[error("service {sequence} is in doubt: the card may have signed it; present the card again to settle it")]
    ServiceInDoubt { sequence: u32 },
    #[error("transfer {sequence} is in doubt: present both cards again to settle it")]
    TransferInDoubt { sequence: u32 },
    #[error("card {source_card} holds an unsettled transfer to card {destination}: present those two cards together first")]
    TransferPendingElsewhere {
        source_card: valuecard_core::ids::CardId,
        destination: valuecard_core::ids::CardId,
    },
    #[error("card {0} has no transfer key yet: load it once at a dispenser")]
    NoTransferKey(valuecard_core::ids::CardId),
    #[error("card {card} cannot take transfer-key generation {key_id} (its limit is {limit}): load it at a dispenser first")]
    TransferKeyAboveLimit {
        card: valuecard_core::ids::CardId,
        key_id: u32,
        limit: u32,
    },
    #[error("the destination card cannot be told whether it received transfer {sequence}; the center settles it from the uploaded reports")]
    TransferUnresolvable { sequence: u32 },
    #[error("the two cards are the same card")]
    SameCard,
    #[error("memory card refused: {0}")]
    Memcard(#[from] memcard::MemcardRefusal),
}
