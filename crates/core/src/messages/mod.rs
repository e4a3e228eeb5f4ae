//! Every protocol message, each with exactly one encoding and one decoder.
//!
//! - [`purse`]: the purse application's APDUs (seed 003, Figs. 4B, 4C, 5, 6, 7, 8) and
//!   the byte strings each party signs.
//! - [`center`]: what dispensers and terminals exchange with the management center.
//! - [`credit`]: credit mode (Figs. 13-17): the credit commands' data, the signed strings,
//!   and the dispenser's and terminal's links to the center for it.
//!
//! - [`online`]: the common-key application of seed 004 (online settlement and charge
//!   through the security server) and the records it signs.
//!
//! Decoders refuse trailing bytes, unknown tags and out-of-range values; the card maps each
//! decode error to `6A80`.

pub mod center;
pub mod credit;
pub mod memcard;
pub mod online;
pub mod purse;
pub mod transfer;

use crate::tlv::TlvError;

/// A message that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("TLV: {0}")]
    Tlv(#[from] TlvError),
    #[error("certificate: {0}")]
    Certificate(#[from] crate::cert::CertError),
    #[error("amount: {0}")]
    Amount(#[from] crate::money::AmountError),
    #[error("field {field}: {reason}")]
    Field {
        field: &'static str,
        reason: &'static str,
    },
}
