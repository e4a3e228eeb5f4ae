//! The JSON bodies of both services, shared by the services and their clients.
//!
//! Each body is a flat JSON object of strings (hex for bytes, names for enumerations) and
//! unknown fields are refused. Every body has one encoding from its message
//! ([`Body::encode`]) and one decoding back to it ([`Body::decode`]), which checks every
//! field (hex, lengths, the TLV encoding of certificates, formats and key packages) and
//! names the field it refuses. Services and clients go through [`Body::to_json`] and
//! [`Body::from_json`] only.

pub mod mover;
pub mod provider;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{MoveId, ServiceCode, ServiceKind};

pub use mover::*;
pub use provider::*;

// A body, or a field of one, that does not decode, and the field-level helpers: the same
// as the center's bodies.
pub use valuecard_center_http::wire::WireError;
pub(crate) use valuecard_center_http::wire::{hex_array, hex_bytes, refuse};

/// A JSON body and the message it carries.
pub trait Body: Serialize + DeserializeOwned {
    type Message;

    /// The one encoding of `message`.
    fn encode(message: &Self::Message) -> Self;

    /// The one decoding, every field checked.
    fn decode(&self) -> Result<Self::Message, WireError>;

    /// `message` as the bytes of a JSON body.
    fn to_json(message: &Self::Message) -> Vec<u8> {
        // A body is strings, integers and options of them: serializing it cannot fail.
        serde_json::to_vec(&Self::encode(message)).unwrap_or_default()
    }

    /// The message of a JSON body's bytes.
    fn from_json(bytes: &[u8]) -> Result<Self::Message, WireError> {
        let body: Self = serde_json::from_slice(bytes).map_err(|error| WireError {
            field: "body",
            reason: error.to_string(),
        })?;
        body.decode()
    }
}

/// `GET /health` of either service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    pub status: String,
    /// `sqlite` or `postgresql`.
    pub database: String,
}

/// A card ID (8 bytes, hex).
pub fn card_id(field: &'static str, text: &str) -> Result<CardId, WireError> {
    hex_array(field, text).map(CardId)
}

/// A move's identifier (16 bytes, hex), in a body or a path.
pub fn move_id(field: &'static str, text: &str) -> Result<MoveId, WireError> {
    hex_array(field, text)
}

pub(crate) fn certificate(field: &'static str, text: &str) -> Result<Certificate, WireError> {
    Certificate::decode(&hex_bytes(field, text)?).map_err(|error| refuse(field, error.to_string()))
}

/// A service code: exactly four hex digits, as `ServiceCode` displays it.
pub(crate) fn service_code(field: &'static str, text: &str) -> Result<ServiceCode, WireError> {
    let [high, low] = hex_array::<2>(field, text)?;
    Ok(ServiceCode(u16::from_be_bytes([high, low])))
}

pub(crate) fn service_text(service: ServiceCode) -> String {
    service.to_string()
}

/// A service kind by its name (`purse`, `tickets`, `points`): every kind the core knows is
/// found by its code, so a kind added there is read here unchanged.
pub(crate) fn service_kind(field: &'static str, text: &str) -> Result<ServiceKind, WireError> {
    (1..=u8::MAX)
        .filter_map(|code| ServiceKind::from_u8(code).ok())
        .find(|kind| kind.name() == text)
        .ok_or_else(|| refuse(field, format!("unknown service kind {text:?}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes `message`, decodes it back, and checks that the JSON is the one encoding:
    /// the same message twice gives the same bytes.
    pub fn round_trip<B>(message: B::Message)
    where
        B: Body,
        B::Message: PartialEq + core::fmt::Debug,
    {
        let bytes = B::to_json(&message);
        let back = B::from_json(&bytes).unwrap();
        assert_eq!(back, message);
        assert_eq!(B::to_json(&back), bytes);
    }

    #[test]
    fn service_codes_are_four_hex_digits() {
        assert_eq!(service_code("s", "0102").unwrap(), ServiceCode(0x0102));
        assert_eq!(service_text(ServiceCode(0x0A0B)), "0A0B");
        assert_eq!(
            service_code("s", &service_text(ServiceCode(0xBEEF))).unwrap(),
            ServiceCode(0xBEEF)
        );
        assert!(service_code("s", "102").is_err());
        assert!(service_code("s", "000102").is_err());
        assert!(service_code("s", "zz01").is_err());
    }

    #[test]
    fn service_kinds_are_read_by_name() {
        for kind in [
            ServiceKind::Purse,
            ServiceKind::Tickets,
            ServiceKind::Points,
        ] {
            assert_eq!(service_kind("k", kind.name()).unwrap(), kind);
        }
        assert!(service_kind("k", "Purse").is_err());
        assert!(service_kind("k", "").is_err());
    }

    #[test]
    fn a_body_that_is_not_json_names_the_body() {
        let error = FormatBody::from_json(b"{").unwrap_err();
        assert_eq!(error.field, "body");
        let error = FormatBody::from_json(br#"{"format":"00","extra":1}"#).unwrap_err();
        assert!(error.reason.contains("unknown field"), "{error}");
    }
}
