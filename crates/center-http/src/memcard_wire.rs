//! The JSON bodies of the memory-card machines' endpoints (seed 001): write-record uploads,
//! float requests and grants, and the restore evidence of a card. The records and the
//! writer's certificate travel as their TLV encoding in hex, so what a machine signed crosses
//! the wire byte for byte; a float grant field by field with the center's signature.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{Signature, SIGNATURE_LEN};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::memcard::{
    FloatGrant, PendingReceipt, RestoreEvidence, WriteReceipt, WriteRecord, WriteUpload,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::wire::{amount, hex_array as array, hex_bytes as bytes, refuse, WireError};

/// Write records per HTTP upload, so one body stays far below the service's size limit (a
/// record with both states is about 400 bytes, 800 in hex).
pub const WRITE_RECORDS_PER_REQUEST: usize = 32;

/// `POST /v1/memcard/writes`: a machine's write records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteUploadBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub machine_id: String,
    /// `WriteRecord::encode()` in hex, each.
    pub records: Vec<String>,
}

impl WriteUploadBody {
    pub fn new(upload: &WriteUpload) -> Self {
        WriteUploadBody {
            machine_id: hex::encode(upload.machine.as_bytes()),
            records: upload
                .records
                .iter()
                .map(|record| hex::encode(record.encode()))
                .collect(),
        }
    }

    pub fn decode(&self) -> Result<WriteUpload, WireError> {
        if self.records.len() > valuecard_center::memcard::WRITE_UPLOAD_MAX {
            return Err(refuse("records", "too many records in one upload"));
        }
        Ok(WriteUpload {
            machine: DeviceId(array("machine_id", &self.machine_id)?),
            records: self
                .records
                .iter()
                .map(|text| {
                    WriteRecord::decode(&bytes("records", text)?)
                        .map_err(|error| refuse("records", error.to_string()))
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

/// One refused record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefusedRecordBody {
    /// The machine's sequence of the record.
    pub sequence: u32,
    pub reason: String,
}

impl RefusedRecordBody {
    fn list(refused: &[(u32, String)]) -> Vec<Self> {
        refused
            .iter()
            .map(|(sequence, reason)| RefusedRecordBody {
                sequence: *sequence,
                reason: reason.clone(),
            })
            .collect()
    }

    fn decode_list(bodies: &[Self]) -> Vec<(u32, String)> {
        bodies
            .iter()
            .map(|refused| (refused.sequence, refused.reason.clone()))
            .collect()
    }
}

/// The answer to a write-record upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteReceiptBody {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<RefusedRecordBody>,
}

impl WriteReceiptBody {
    pub fn new(receipt: &WriteReceipt) -> Self {
        WriteReceiptBody {
            stored: receipt.stored,
            duplicates: receipt.duplicates,
            refused: RefusedRecordBody::list(&receipt.refused),
        }
    }

    pub fn decode(&self) -> WriteReceipt {
        WriteReceipt {
            stored: self.stored,
            duplicates: self.duplicates,
            refused: RefusedRecordBody::decode_list(&self.refused),
        }
    }
}

/// The answer to a report of pending writes (`POST /v1/memcard/pending-writes`, whose
/// body is a [`WriteUploadBody`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingReceiptBody {
    /// How many are held as restore evidence.
    pub held: u32,
    /// The sequences of writes a later record shows landed: counted now.
    pub landed: Vec<u32>,
    /// The sequences of writes a later record shows can no longer land.
    pub superseded: Vec<u32>,
    pub refused: Vec<RefusedRecordBody>,
}

impl PendingReceiptBody {
    pub fn new(receipt: &PendingReceipt) -> Self {
        PendingReceiptBody {
            held: receipt.held,
            landed: receipt.landed.clone(),
            superseded: receipt.superseded.clone(),
            refused: RefusedRecordBody::list(&receipt.refused),
        }
    }

    /// Refuses lists longer than an upload may be: a report answers at most its records.
    pub fn decode(&self) -> Result<PendingReceipt, WireError> {
        let max = valuecard_center::memcard::WRITE_UPLOAD_MAX;
        if self.landed.len() > max || self.superseded.len() > max || self.refused.len() > max {
            return Err(refuse("landed", "more sequences than one report carries"));
        }
        Ok(PendingReceipt {
            held: self.held,
            landed: self.landed.clone(),
            superseded: self.superseded.clone(),
            refused: RefusedRecordBody::decode_list(&self.refused),
        })
    }
}

/// `POST /v1/memcard/float`: a charge machine asks for float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatRequestBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub machine_id: String,
    /// What the machine asks for, in minor units; the center grants at most this.
    pub amount: u64,
}

impl FloatRequestBody {
    pub fn new(machine: DeviceId, asked: Amount) -> Self {
        FloatRequestBody {
            machine_id: hex::encode(machine.as_bytes()),
            amount: asked.minor(),
        }
    }

    pub fn decode(&self) -> Result<(DeviceId, Amount), WireError> {
        Ok((
            DeviceId(array("machine_id", &self.machine_id)?),
            amount("amount", self.amount)?,
        ))
    }
}

/// A float grant, signed with the center's root key over
/// `FloatGrant::signed_message()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatGrantBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub machine_id: String,
    pub grant_number: u32,
    pub amount: u64,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: String,
}

impl FloatGrantBody {
    pub fn new(grant: &FloatGrant) -> Self {
        FloatGrantBody {
            machine_id: hex::encode(grant.machine.as_bytes()),
            grant_number: grant.grant_number,
            amount: grant.amount.minor(),
            date: grant.date.to_string(),
            signature: hex::encode(grant.signature.0),
        }
    }

    pub fn decode(&self) -> Result<FloatGrant, WireError> {
        Ok(FloatGrant {
            machine: DeviceId(array("machine_id", &self.machine_id)?),
            grant_number: self.grant_number,
            amount: amount("amount", self.amount)?,
            date: Date::parse(&self.date)
                .ok_or_else(|| refuse("date", "expected a date YYYY-MM-DD"))?,
            signature: Signature(array::<SIGNATURE_LEN>("signature", &self.signature)?),
        })
    }
}

/// The newest state the center holds of a card and the certificate of its writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreEvidenceBody {
    /// `WriteRecord::encode()` in hex.
    pub record: String,
    /// `Certificate::encode()` in hex.
    pub writer_certificate: String,
}

/// `GET /v1/memcard/cards/{card_id}/latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatestStateBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    /// Absent when no uploaded record names the card.
    pub evidence: Option<RestoreEvidenceBody>,
}

impl LatestStateBody {
    pub fn new(card: &CardId, evidence: Option<&RestoreEvidence>) -> Self {
        LatestStateBody {
            card_id: hex::encode(card.as_bytes()),
            evidence: evidence.map(|evidence| RestoreEvidenceBody {
                record: hex::encode(evidence.record.encode()),
                writer_certificate: hex::encode(evidence.writer_certificate.encode()),
            }),
        }
    }

    pub fn decode(&self) -> Result<(CardId, Option<RestoreEvidence>), WireError> {
        let card = CardId(array("card_id", &self.card_id)?);
        let evidence = self
            .evidence
            .as_ref()
            .map(|evidence| {
                let record = WriteRecord::decode(&bytes("record", &evidence.record)?)
                    .map_err(|error| refuse("record", error.to_string()))?;
                let writer_certificate = Certificate::decode(&bytes(
                    "writer_certificate",
                    &evidence.writer_certificate,
                )?)
                .map_err(|error| refuse("writer_certificate", error.to_string()))?;
                Ok::<_, WireError>(RestoreEvidence {
                    record,
                    writer_certificate,
                })
            })
            .transpose()?;
        Ok((card, evidence))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rand_core::SeedableRng;
    use valuecard_core::cert::{CertificateBody, Role};
    use valuecard_core::crypto::SigningKeyPair;
    use valuecard_core::messages::memcard::{
        state_signing_input, PlainValue, SignedState, ValueArea, WriteKind, COUNTER_START,
    };

    use super::*;

    fn date() -> Date {
        Date::from_ymd(2026, 6, 1).unwrap()
    }

    fn record(key: &SigningKeyPair, writer: DeviceId, card: CardId) -> WriteRecord {
        let state = |counter: u32, minor: u64| {
            let value_area = ValueArea::Plain(PlainValue {
                date: date(),
                amount: Amount::new(minor).unwrap(),
            });
            SignedState {
                card_id: card,
                counter,
                signature: key.sign(&state_signing_input(&card, counter, &value_area.encode())),
                value_area,
                writer,
            }
        };
        WriteRecord {
            kind: WriteKind::Payment,
            sequence: 7,
            date: date(),
            balance_before: Amount::new(500).unwrap(),
            balance_after: Amount::new(200).unwrap(),
            previous: Some(state(COUNTER_START - 1, 500)),
            written: state(COUNTER_START - 2, 200),
        }
    }

    #[test]
    fn every_memcard_body_round_trips() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let key = SigningKeyPair::generate(&mut rng);
        let machine = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 3]);
        let card = CardId([0x3C, 0, 0, 0, 0, 0, 0, 1]);
        let upload = WriteUpload {
            machine,
            records: vec![record(&key, machine, card)],
        };
        assert_eq!(WriteUploadBody::new(&upload).decode().unwrap(), upload);
        let receipt = WriteReceipt {
            stored: 1,
            duplicates: 2,
            refused: vec![(3, "why".into())],
        };
        assert_eq!(WriteReceiptBody::new(&receipt).decode(), receipt);
        let pending = PendingReceipt {
            held: 2,
            landed: vec![4, 9],
            superseded: vec![5],
            refused: vec![(6, "no".into())],
        };
        assert_eq!(PendingReceiptBody::new(&pending).decode().unwrap(), pending);
        let mut flood = PendingReceiptBody::new(&pending);
        flood.landed = vec![1; valuecard_center::memcard::WRITE_UPLOAD_MAX + 1];
        assert!(flood.decode().is_err());
        let asked = (machine, Amount::new(1_000).unwrap());
        assert_eq!(
            FloatRequestBody::new(asked.0, asked.1).decode().unwrap(),
            asked
        );
        let grant = FloatGrant {
            machine,
            grant_number: 4,
            amount: Amount::new(1_000).unwrap(),
            date: date(),
            signature: key.sign(b"grant"),
        };
        assert_eq!(FloatGrantBody::new(&grant).decode().unwrap(), grant);
        let certificate = CertificateBody {
            issuer: DeviceId([0xCE, 0, 0, 0, 0, 0, 0, 1]),
            subject: machine,
            role: Role::PaymentMachine,
            effective: date(),
            expiry: date().add_days(365),
            signing_key: key.public_key(),
            sealing_key: Some([7; 32]),
        }
        .sign(&key);
        let evidence = RestoreEvidence {
            record: record(&key, machine, card),
            writer_certificate: certificate,
        };
        for evidence in [None, Some(evidence)] {
            let body = LatestStateBody::new(&card, evidence.as_ref());
            assert_eq!(body.decode().unwrap(), (card, evidence));
        }
    }

    #[test]
    fn malformed_memcard_bodies_are_refused_by_field() {
        let bad = WriteUploadBody {
            machine_id: "d0".into(),
            records: Vec::new(),
        };
        assert_eq!(bad.decode().unwrap_err().field, "machine_id");
        let bad = WriteUploadBody {
            machine_id: "d000000000000003".into(),
            records: vec!["e100".into()],
        };
        assert_eq!(bad.decode().unwrap_err().field, "records");
        let bad = FloatRequestBody {
            machine_id: "d000000000000003".into(),
            amount: u64::MAX,
        };
        assert_eq!(bad.decode().unwrap_err().field, "amount");
        let bad = LatestStateBody {
            card_id: "3c00000000000001".into(),
            evidence: Some(RestoreEvidenceBody {
                record: "zz".into(),
                writer_certificate: String::new(),
            }),
        };
        assert_eq!(bad.decode().unwrap_err().field, "record");
    }
}
