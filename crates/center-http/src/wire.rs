//! The JSON bodies of the service and their conversion to and from the protocol types.
//!
//! Each body is a flat JSON object of strings (hex), integers and booleans; unknown fields
//! are refused. Decoding checks every field (length of each hex string, amounts, dates, the
//! TLV encoding of signed objects) and names the field it refuses.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_center::PendingLoad;
use valuecard_core::cert::{Certificate, TrustAnchor};
use valuecard_core::crypto::{PublicKey, Signature, MAC_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdAssignment, CardIdRequest, CardPersonalization, LoadApproval,
    LoadRequest, LoadSettlement, SettlementChallengeRequest,
};
use valuecard_core::messages::purse::{Challenge, LastTransaction, LoadOffer};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

/// A field of a body that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WireError {
    pub field: &'static str,
    pub reason: String,
}

// The field-level helpers every body module decodes with (`terminal_wire`, `transfer_wire`,
// `memcard_wire` share them, and so do the value move's bodies in valuecard-migrate-http).

/// The error naming `field` and why it was refused.
pub fn refuse(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError {
        field,
        reason: reason.into(),
    }
}

/// `text` as hex bytes of any length.
pub fn hex_bytes(field: &'static str, text: &str) -> Result<Vec<u8>, WireError> {
    hex::decode(text).map_err(|error| refuse(field, format!("not hex: {error}")))
}

/// `text` as exactly `N` hex bytes.
pub fn hex_array<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], WireError> {
    let bytes = hex_bytes(field, text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
        refuse(
            field,
            format!(
                "expected {N} bytes ({} hex digits), got {}",
                N * 2,
                bytes.len()
            ),
        )
    })
}

fn device_id(field: &'static str, text: &str) -> Result<DeviceId, WireError> {
    hex_array(field, text).map(DeviceId)
}

fn card_id(field: &'static str, text: &str) -> Result<CardId, WireError> {
    hex_array(field, text).map(CardId)
}

fn challenge(field: &'static str, text: &str) -> Result<Challenge, WireError> {
    hex_array(field, text)
}

fn mac(field: &'static str, text: &str) -> Result<[u8; MAC_LEN], WireError> {
    hex_array(field, text)
}

fn public_key(field: &'static str, text: &str) -> Result<PublicKey, WireError> {
    let bytes: [u8; PUBLIC_KEY_LEN] = hex_array(field, text)?;
    PublicKey::from_bytes(&bytes).map_err(|error| refuse(field, error.to_string()))
}

fn signature(field: &'static str, text: &str) -> Result<Signature, WireError> {
    hex_array::<SIGNATURE_LEN>(field, text).map(Signature)
}

pub(crate) fn amount(field: &'static str, minor: u64) -> Result<Amount, WireError> {
    Amount::new(minor).map_err(|error| refuse(field, error.to_string()))
}

pub(crate) fn date(field: &'static str, text: &str) -> Result<Date, WireError> {
    Date::parse(text).ok_or_else(|| refuse(field, "expected a date YYYY-MM-DD"))
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

/// `POST /v1/cards/assign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub chip_serial: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub card_challenge: String,
}

impl AssignBody {
    pub fn new(request: &CardIdRequest, card_challenge: &Challenge) -> Self {
        AssignBody {
            dispenser_id: hex(request.dispenser_id.as_bytes()),
            chip_serial: hex(request.chip_serial),
            card_challenge: hex(card_challenge),
        }
    }

    pub fn decode(&self) -> Result<(CardIdRequest, Challenge), WireError> {
        Ok((
            CardIdRequest {
                dispenser_id: device_id("dispenser_id", &self.dispenser_id)?,
                chip_serial: hex_array("chip_serial", &self.chip_serial)?,
            },
            challenge("card_challenge", &self.card_challenge)?,
        ))
    }
}

/// `POST /v1/cards/resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub chip_serial: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub card_challenge: String,
}

impl ResumeBody {
    pub fn new(request: &CardIdRequest, card: &CardId, card_challenge: &Challenge) -> Self {
        ResumeBody {
            dispenser_id: hex(request.dispenser_id.as_bytes()),
            chip_serial: hex(request.chip_serial),
            card_id: hex(card.as_bytes()),
            card_challenge: hex(card_challenge),
        }
    }

    pub fn decode(&self) -> Result<(CardIdRequest, CardId, Challenge), WireError> {
        Ok((
            CardIdRequest {
                dispenser_id: device_id("dispenser_id", &self.dispenser_id)?,
                chip_serial: hex_array("chip_serial", &self.chip_serial)?,
            },
            card_id("card_id", &self.card_id)?,
            challenge("card_challenge", &self.card_challenge)?,
        ))
    }
}

/// The answer to assign and resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub mac: String,
}

impl AssignmentBody {
    pub fn new(assignment: &CardIdAssignment) -> Self {
        AssignmentBody {
            card_id: hex(assignment.card_id.as_bytes()),
            mac: hex(assignment.mac),
        }
    }

    pub fn decode(&self) -> Result<CardIdAssignment, WireError> {
        Ok(CardIdAssignment {
            card_id: card_id("card_id", &self.card_id)?,
            mac: mac("mac", &self.mac)?,
        })
    }
}

/// `POST /v1/cards/certify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertifyBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub chip_serial: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub signing_key: String,
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sealing_key: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub card_challenge: String,
}

impl CertifyBody {
    pub fn new(request: &CardCertificationRequest) -> Self {
        CertifyBody {
            dispenser_id: hex(request.dispenser_id.as_bytes()),
            chip_serial: hex(request.chip_serial),
            card_id: hex(request.card_id.as_bytes()),
            signing_key: hex(request.signing_key.to_bytes()),
            sealing_key: hex(request.sealing_key),
            card_challenge: hex(request.card_challenge),
        }
    }

    pub fn decode(&self) -> Result<CardCertificationRequest, WireError> {
        Ok(CardCertificationRequest {
            dispenser_id: device_id("dispenser_id", &self.dispenser_id)?,
            chip_serial: hex_array("chip_serial", &self.chip_serial)?,
            card_id: card_id("card_id", &self.card_id)?,
            signing_key: public_key("signing_key", &self.signing_key)?,
            sealing_key: hex_array("sealing_key", &self.sealing_key)?,
            card_challenge: challenge("card_challenge", &self.card_challenge)?,
        })
    }
}

/// The center's root key as the card will hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnchorBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub center: String,
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub public_key: String,
}

/// The answer to certify: everything PERSONALIZE carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonalizationBody {
    /// `Certificate::encode()`, hex.
    pub certificate: String,
    pub anchor: AnchorBody,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    pub sealed_keys: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub mac: String,
}

impl PersonalizationBody {
    pub fn new(personalization: &CardPersonalization) -> Self {
        PersonalizationBody {
            certificate: hex(personalization.certificate.encode()),
            anchor: AnchorBody {
                center: hex(personalization.anchor.center.as_bytes()),
                public_key: hex(personalization.anchor.public_key.to_bytes()),
            },
            date: personalization.date.to_string(),
            sealed_keys: hex(&personalization.sealed_keys),
            mac: hex(personalization.mac),
        }
    }

    pub fn decode(&self) -> Result<CardPersonalization, WireError> {
        let certificate = Certificate::decode(&hex_bytes("certificate", &self.certificate)?)
            .map_err(|error| refuse("certificate", error.to_string()))?;
        Ok(CardPersonalization {
            certificate,
            anchor: TrustAnchor {
                center: device_id("anchor.center", &self.anchor.center)?,
                public_key: public_key("anchor.public_key", &self.anchor.public_key)?,
            },
            date: date("date", &self.date)?,
            sealed_keys: hex_bytes("sealed_keys", &self.sealed_keys)?,
            mac: mac("mac", &self.mac)?,
        })
    }
}

/// `POST /v1/loads/authorize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_dispenser: String,
    /// Minor units.
    pub amount: u64,
    /// The card's signed offer, `LoadOffer::encode()`, hex.
    pub offer: String,
}

impl AuthorizeBody {
    pub fn new(request: &LoadRequest) -> Self {
        AuthorizeBody {
            dispenser_id: hex(request.dispenser_id.as_bytes()),
            card_id: hex(request.card_id.as_bytes()),
            challenge_dispenser: hex(request.challenge_dispenser),
            amount: request.amount.minor(),
            offer: hex(request.offer.encode()),
        }
    }

    pub fn decode(&self) -> Result<LoadRequest, WireError> {
        let offer = LoadOffer::decode(&hex_bytes("offer", &self.offer)?)
            .map_err(|error| refuse("offer", error.to_string()))?;
        Ok(LoadRequest {
            card_id: card_id("card_id", &self.card_id)?,
            dispenser_id: device_id("dispenser_id", &self.dispenser_id)?,
            challenge_dispenser: challenge("challenge_dispenser", &self.challenge_dispenser)?,
            amount: amount("amount", self.amount)?,
            offer,
        })
    }
}

/// The answer to authorize: ready for the card's CREDIT command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    pub balance_after: u64,
    pub load_number: u32,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub mac: String,
    /// Hex of the sealed transfer keys (seed 000), when the center sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_keys: Option<String>,
}

impl ApprovalBody {
    pub fn new(approval: &LoadApproval) -> Self {
        ApprovalBody {
            balance_after: approval.balance_after.minor(),
            load_number: approval.load_number,
            date: approval.date.to_string(),
            signature: hex(approval.signature.0),
            mac: hex(approval.mac),
            transfer_keys: approval.transfer_keys.as_ref().map(hex),
        }
    }

    pub fn decode(&self) -> Result<LoadApproval, WireError> {
        Ok(LoadApproval {
            balance_after: amount("balance_after", self.balance_after)?,
            load_number: self.load_number,
            date: date("date", &self.date)?,
            signature: signature("signature", &self.signature)?,
            mac: mac("mac", &self.mac)?,
            transfer_keys: self
                .transfer_keys
                .as_deref()
                .map(|sealed| hex_bytes("transfer_keys", sealed))
                .transpose()?,
        })
    }
}

/// `POST /v1/loads/challenge`: a fresh challenge to settle a pending load with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementChallengeBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    pub load_number: u32,
}

impl SettlementChallengeBody {
    pub fn new(request: &SettlementChallengeRequest) -> Self {
        SettlementChallengeBody {
            dispenser_id: hex(request.dispenser_id.as_bytes()),
            card_id: hex(request.card_id.as_bytes()),
            load_number: request.load_number,
        }
    }

    pub fn decode(&self) -> Result<SettlementChallengeRequest, WireError> {
        Ok(SettlementChallengeRequest {
            dispenser_id: device_id("dispenser_id", &self.dispenser_id)?,
            card_id: card_id("card_id", &self.card_id)?,
            load_number: self.load_number,
        })
    }
}

/// The answer: the challenge, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    pub load_number: u32,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge: String,
}

impl ChallengeBody {
    pub fn decode(&self) -> Result<Challenge, WireError> {
        challenge("challenge", &self.challenge)
    }
}

/// `POST /v1/loads/settle`: the card's signed last transaction as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    pub load_number: u32,
    /// The challenge the card signed over, hex.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge: String,
    /// `LastTransaction::encode()`, hex.
    pub evidence: String,
}

impl SettleBody {
    pub fn new(settlement: &LoadSettlement) -> Self {
        SettleBody {
            dispenser_id: hex(settlement.dispenser_id.as_bytes()),
            card_id: hex(settlement.card_id.as_bytes()),
            load_number: settlement.load_number,
            challenge: hex(settlement.challenge),
            evidence: hex(settlement.evidence.encode()),
        }
    }

    pub fn decode(&self) -> Result<LoadSettlement, WireError> {
        let evidence = LastTransaction::decode(&hex_bytes("evidence", &self.evidence)?)
            .map_err(|error| refuse("evidence", error.to_string()))?;
        Ok(LoadSettlement {
            card_id: card_id("card_id", &self.card_id)?,
            dispenser_id: device_id("dispenser_id", &self.dispenser_id)?,
            load_number: self.load_number,
            challenge: challenge("challenge", &self.challenge)?,
            evidence,
        })
    }
}

/// The answer to settle: the outcome the center read from the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettledBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    pub load_number: u32,
    /// `committed`, `cancelled` or `undecided`.
    pub outcome: String,
}

/// One load in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingLoadBody {
    pub load_number: u32,
    pub card_counter: u32,
    pub amount: u64,
    /// The dispenser that holds the load (only it may settle it).
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub dispenser_id: String,
}

/// The answer to `GET /v1/cards/{card_id}/pending-loads`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingLoadsBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    pub loads: Vec<PendingLoadBody>,
}

impl PendingLoadsBody {
    pub fn new(card: &CardId, loads: &[PendingLoad]) -> Self {
        PendingLoadsBody {
            card_id: hex(card.as_bytes()),
            loads: loads
                .iter()
                .filter(|load| load.card_id == *card)
                .map(|load| PendingLoadBody {
                    load_number: load.load_number,
                    card_counter: load.card_counter,
                    amount: load.amount.minor(),
                    dispenser_id: hex(load.dispenser_id.as_bytes()),
                })
                .collect(),
        }
    }

    pub fn decode(&self) -> Result<Vec<PendingLoad>, WireError> {
        let card = card_id("card_id", &self.card_id)?;
        self.loads
            .iter()
            .map(|load| {
                Ok(PendingLoad {
                    card_id: card,
                    load_number: load.load_number,
                    card_counter: load.card_counter,
                    amount: amount("loads.amount", load.amount)?,
                    dispenser_id: device_id("loads.dispenser_id", &load.dispenser_id)?,
                })
            })
            .collect()
    }
}

/// The answer to `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok`.
    pub status: String,
    /// `sqlite` or `postgresql`.
    pub database: String,
}

/// Parses a card ID from a path segment (hex).
pub fn card_id_segment(text: &str) -> Result<CardId, WireError> {
    card_id("card_id", text)
}

#[cfg(test)]
mod tests;
