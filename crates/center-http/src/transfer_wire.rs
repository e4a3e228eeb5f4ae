//! The JSON bodies of the settlement terminals' endpoint (seed 000): transfer reports. The
//! protocol objects the center verifies (the destination's proof, the usage records) travel
//! as their TLV encoding in hex; the value message and its binding field by field.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::USAGE_BATCH_MAX;
use valuecard_core::messages::purse::UsageRecord;
use valuecard_core::messages::transfer::{
    PendingTransfer, TransferBinding, TransferProof, TransferRelease, TransferReport,
    TransferUpload, ValueEvidence, ValueMessage,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::wire::{hex_array as array, hex_bytes as bytes, refuse, WireError};

/// Transfer reports per HTTP upload, so one body stays far below the service's size limit
/// (a report with four records is about four times a usage item).
pub const TRANSFER_REPORTS_PER_REQUEST: usize = 16;

fn record(field: &'static str, text: &Option<String>) -> Result<Option<UsageRecord>, WireError> {
    text.as_deref()
        .map(|text| {
            UsageRecord::decode(&bytes(field, text)?).map_err(|e| refuse(field, e.to_string()))
        })
        .transpose()
}

fn encode_record(record: &Option<UsageRecord>) -> Option<String> {
    record.as_ref().map(|r| hex::encode(r.encode()))
}

/// The source's value message and everything it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueEvidenceBody {
    pub key_id: u32,
    pub source_counter: u32,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_destination: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_terminal: String,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    /// The value message's key generation and ciphertext (hex).
    pub value_key_id: u32,
    pub ciphertext: String,
}

/// One transfer report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferReportBody {
    pub sequence: u32,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub source: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub destination: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_source: String,
    pub amount: u64,
    pub destination_counter: u32,
    pub value: Option<ValueEvidenceBody>,
    /// `TransferProof::encode()` in hex.
    pub proof: Option<String>,
    /// `UsageRecord::encode()` in hex, each.
    pub destination_record: Option<String>,
    pub destination_previous: Option<String>,
    pub source_record: Option<String>,
    pub source_previous: Option<String>,
    /// `TransferRelease::encode()` in hex: the center's release the terminal gave the
    /// source (absent in reports of terminals that never asked for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

impl TransferReportBody {
    pub fn new(report: &TransferReport) -> Self {
        TransferReportBody {
            sequence: report.sequence,
            source: hex::encode(report.source.as_bytes()),
            destination: hex::encode(report.destination.as_bytes()),
            challenge_source: hex::encode(report.challenge_source),
            amount: report.amount.minor(),
            destination_counter: report.destination_counter,
            value: report.value.as_ref().map(|evidence| {
                let b = &evidence.binding;
                ValueEvidenceBody {
                    key_id: b.key_id,
                    source_counter: b.source_counter,
                    challenge_destination: hex::encode(b.challenge_destination),
                    challenge_terminal: hex::encode(b.challenge_terminal),
                    date: b.date.to_string(),
                    value_key_id: evidence.value.key_id,
                    ciphertext: hex::encode(evidence.value.ciphertext),
                }
            }),
            proof: report.proof.as_ref().map(|p| hex::encode(p.encode())),
            destination_record: encode_record(&report.destination_record),
            destination_previous: encode_record(&report.destination_previous),
            source_record: encode_record(&report.source_record),
            source_previous: encode_record(&report.source_previous),
            release: report.release.as_ref().map(|r| hex::encode(r.encode())),
        }
    }

    pub fn decode(&self) -> Result<TransferReport, WireError> {
        let source = CardId(array("source", &self.source)?);
        let destination = CardId(array("destination", &self.destination)?);
        let challenge_source = array("challenge_source", &self.challenge_source)?;
        let destination_counter = self.destination_counter;
        let value = self
            .value
            .as_ref()
            .map(|v| -> Result<ValueEvidence, WireError> {
                Ok(ValueEvidence {
                    binding: TransferBinding {
                        key_id: v.key_id,
                        source,
                        source_counter: v.source_counter,
                        challenge_source,
                        destination,
                        destination_counter,
                        challenge_destination: array(
                            "challenge_destination",
                            &v.challenge_destination,
                        )?,
                        challenge_terminal: array("challenge_terminal", &v.challenge_terminal)?,
                        date: Date::parse(&v.date)
                            .ok_or_else(|| refuse("date", "expected a date YYYY-MM-DD"))?,
                    },
                    value: ValueMessage {
                        key_id: v.value_key_id,
                        ciphertext: array("ciphertext", &v.ciphertext)?,
                    },
                })
            })
            .transpose()?;
        let proof = self
            .proof
            .as_deref()
            .map(|text| {
                TransferProof::decode(&bytes("proof", text)?)
                    .map_err(|e| refuse("proof", e.to_string()))
            })
            .transpose()?;
        Ok(TransferReport {
            sequence: self.sequence,
            source,
            destination,
            challenge_source,
            amount: Amount::new(self.amount).map_err(|e| refuse("amount", e.to_string()))?,
            destination_counter,
            value,
            proof,
            destination_record: record("destination_record", &self.destination_record)?,
            destination_previous: record("destination_previous", &self.destination_previous)?,
            source_record: record("source_record", &self.source_record)?,
            source_previous: record("source_previous", &self.source_previous)?,
            release: self
                .release
                .as_deref()
                .map(|text| {
                    TransferRelease::decode(&bytes("release", text)?)
                        .map_err(|e| refuse("release", e.to_string()))
                })
                .transpose()?,
        })
    }
}

/// `POST /v1/transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferUploadBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    pub reports: Vec<TransferReportBody>,
}

impl TransferUploadBody {
    pub fn new(upload: &TransferUpload) -> Self {
        TransferUploadBody {
            terminal_id: hex::encode(upload.terminal_id.as_bytes()),
            reports: upload.reports.iter().map(TransferReportBody::new).collect(),
        }
    }

    pub fn decode(&self) -> Result<TransferUpload, WireError> {
        if self.reports.len() > USAGE_BATCH_MAX {
            return Err(refuse(
                "reports",
                format!("at most {USAGE_BATCH_MAX} per upload"),
            ));
        }
        Ok(TransferUpload {
            terminal_id: DeviceId(array("terminal_id", &self.terminal_id)?),
            reports: self
                .reports
                .iter()
                .map(TransferReportBody::decode)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `POST /v1/transfers/release`: the source card and the pending transfer it showed
/// (GET TRANSFER INFO), field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequestBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub source: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub destination: String,
    pub destination_counter: u32,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_source: String,
    pub amount: u64,
    pub key_id: u32,
}

impl ReleaseRequestBody {
    pub fn new(terminal_id: DeviceId, source: CardId, pending: &PendingTransfer) -> Self {
        ReleaseRequestBody {
            terminal_id: hex::encode(terminal_id.as_bytes()),
            source: hex::encode(source.as_bytes()),
            destination: hex::encode(pending.destination.as_bytes()),
            destination_counter: pending.destination_counter,
            challenge_source: hex::encode(pending.challenge_source),
            amount: pending.amount.minor(),
            key_id: pending.key_id,
        }
    }

    pub fn decode(&self) -> Result<(DeviceId, CardId, PendingTransfer), WireError> {
        Ok((
            DeviceId(array("terminal_id", &self.terminal_id)?),
            CardId(array("source", &self.source)?),
            PendingTransfer {
                destination: CardId(array("destination", &self.destination)?),
                destination_counter: self.destination_counter,
                challenge_source: array("challenge_source", &self.challenge_source)?,
                amount: Amount::new(self.amount).map_err(|e| refuse("amount", e.to_string()))?,
                key_id: self.key_id,
            },
        ))
    }
}

/// The answer to `POST /v1/transfers/release`: the center's signature (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
}

impl ReleaseBody {
    pub fn new(release: &TransferRelease) -> Self {
        ReleaseBody {
            signature: hex::encode(release.signature.0),
        }
    }

    pub fn decode(&self) -> Result<TransferRelease, WireError> {
        Ok(TransferRelease {
            signature: valuecard_core::crypto::Signature(array("signature", &self.signature)?),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use valuecard_core::crypto::{Signature, MAC_LEN, SIGNATURE_LEN};
    use valuecard_core::messages::purse::{TerminalStamp, TransactionKind};
    use valuecard_core::messages::transfer::ProofStatus;

    /// A report with every optional part present and every number at its widest.
    fn widest() -> TransferReport {
        let record = UsageRecord {
            kind: TransactionKind::TransferIn,
            counter: u32::MAX,
            challenge_writer: [0xFF; 16],
            challenge_card: [0xFF; 16],
            amount: Amount::MAX,
            balance_after: Amount::MAX,
            writer: DeviceId([0xFF; 8]),
            writer_sequence: u32::MAX,
            date: Date(u32::MAX),
            signature: Signature([0xFF; SIGNATURE_LEN]),
            stamp: Some(TerminalStamp {
                count: u32::MAX,
                signature: Signature([0xFF; SIGNATURE_LEN]),
            }),
        };
        let source = CardId([0xFF; 8]);
        let destination = CardId([0xFE; 8]);
        TransferReport {
            sequence: u32::MAX,
            source,
            destination,
            challenge_source: [0xFF; 16],
            amount: record.amount,
            destination_counter: u32::MAX,
            value: Some(ValueEvidence {
                binding: TransferBinding {
                    key_id: u32::MAX,
                    source,
                    source_counter: u32::MAX,
                    challenge_source: [0xFF; 16],
                    destination,
                    destination_counter: u32::MAX,
                    challenge_destination: [0xFF; 16],
                    challenge_terminal: [0xFF; 16],
                    date: Date::from_ymd(2099, 12, 31).unwrap(),
                },
                value: ValueMessage {
                    key_id: u32::MAX,
                    ciphertext: [0xFF; 24],
                },
            }),
            proof: Some(TransferProof {
                status: ProofStatus::NotReceived,
                key_id: u32::MAX,
                destination_counter: u32::MAX,
                mac: [0xFF; MAC_LEN],
            }),
            destination_record: Some(record.clone()),
            destination_previous: Some(record.clone()),
            source_record: Some(record.clone()),
            source_previous: Some(record),
            release: Some(TransferRelease {
                signature: Signature([0xFF; SIGNATURE_LEN]),
            }),
        }
    }

    #[test]
    fn a_full_request_of_the_widest_reports_fits_the_body_limit() {
        let report = widest();
        assert_eq!(TransferReportBody::new(&report).decode().unwrap(), report);
        let upload = TransferUpload {
            terminal_id: DeviceId([0xFF; 8]),
            reports: vec![report; TRANSFER_REPORTS_PER_REQUEST],
        };
        let body = serde_json::to_vec(&TransferUploadBody::new(&upload)).unwrap();
        assert!(
            body.len() < crate::MAX_BODY_BYTES,
            "{} bytes for {TRANSFER_REPORTS_PER_REQUEST} reports",
            body.len()
        );
    }
}

#[cfg(test)]
mod release_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_release_request_and_answer_round_trip_and_refuse_bad_fields() {
        let pending = PendingTransfer {
            destination: CardId(*b"NOBODY01"),
            destination_counter: u32::MAX,
            challenge_source: [0xA5; 16],
            amount: Amount::MAX,
            key_id: 7,
        };
        let body = ReleaseRequestBody::new(DeviceId(*b"SETTLE01"), CardId(*b"CARD0001"), &pending);
        let json = serde_json::to_string(&body).unwrap();
        let back: ReleaseRequestBody = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.decode().unwrap(),
            (DeviceId(*b"SETTLE01"), CardId(*b"CARD0001"), pending)
        );
        let mut short = body.clone();
        short.challenge_source.pop();
        short.challenge_source.pop();
        assert_eq!(short.decode().unwrap_err().field, "challenge_source");
        let mut beyond = body.clone();
        beyond.amount = u64::MAX;
        assert_eq!(beyond.decode().unwrap_err().field, "amount");
        let unknown = json.replacen('{', "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<ReleaseRequestBody>(&unknown).is_err());

        let release = TransferRelease {
            signature: valuecard_core::crypto::Signature([0x3C; 64]),
        };
        assert_eq!(ReleaseBody::new(&release).decode().unwrap(), release);
        let bad = ReleaseBody {
            signature: "00".into(),
        };
        assert_eq!(bad.decode().unwrap_err().field, "signature");
    }

    #[test]
    fn a_report_without_a_release_serializes_as_before() {
        let report = TransferReport {
            sequence: 1,
            source: CardId(*b"CARD0001"),
            destination: CardId(*b"CARD0002"),
            challenge_source: [1; 16],
            amount: Amount::new(5).unwrap(),
            destination_counter: 0,
            value: None,
            proof: None,
            destination_record: None,
            destination_previous: None,
            source_record: None,
            source_previous: None,
            release: None,
        };
        let json = serde_json::to_string(&TransferReportBody::new(&report)).unwrap();
        assert!(!json.contains("release"), "{json}");
        let back: TransferReportBody = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decode().unwrap(), report);
    }
}
