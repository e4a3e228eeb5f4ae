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
//! - [`services`]: the multi-service chip of seed 002 and the messages of a move between
//!   chips through the value move server.
//!
//! Decoders refuse trailing bytes, unknown tags and out-of-range values; the card maps each
//! decode error to `6A80`.

pub mod center;
pub mod credit;
pub mod memcard;
pub mod online;
pub mod purse;
pub mod services;
pub mod transfer;

use crate::tlv::TlvError;

/// The field readers every decoder here shares.
pub(crate) mod field {
    use super::DecodeError;
    use crate::money::Amount;
    use crate::time::Date;
    use crate::tlv::{be_u32, be_u64, TlvReader};

    /// An amount in minor units (8 bytes), within the largest balance.
    pub(crate) fn amount(r: &mut TlvReader<'_>, tag: u32) -> Result<Amount, DecodeError> {
        Ok(Amount::new(be_u64(tag, r.expect(tag)?)?)?)
    }

    /// A 4-byte unsigned number.
    pub(crate) fn u32_field(r: &mut TlvReader<'_>, tag: u32) -> Result<u32, DecodeError> {
        Ok(be_u32(tag, r.expect(tag)?)?)
    }

    /// A date (4 bytes, days since 1970-01-01).
    pub(crate) fn date(r: &mut TlvReader<'_>, tag: u32) -> Result<Date, DecodeError> {
        Ok(Date(u32_field(r, tag)?))
    }

    /// A field that decoded but does not hold what the message needs.
    pub(crate) fn refused(field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::Field { field, reason }
    }
}

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
