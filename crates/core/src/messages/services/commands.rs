//! Command and response data of the services application, each with one encoder and one
//! decoder. The secured ones (READ AREA, UPDATE AREA, EXPORT AREA, IMPORT AREA) are the
//! plaintexts sealed under the service channel ([`super::channel`]).

use crate::crypto::{Signature, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::limits::CHIP_AREAS_MAX;
use crate::messages::field::u32_field;
use crate::messages::purse::{Challenge, TransactionKind, UsageRecord};
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{TlvReader, TlvWriter};

use super::keys::service_code;
use super::{
    tag, AreaContent, KeyState, MoveId, ServiceCode, ServiceKind, ServiceOperation, SERVICES_AID,
    SERVICE_CRYPTOGRAM_LEN,
};

/// The context label of a move's purse record (kind `MigrationIn`), signed by the purse
/// provider's transfer SAM.
pub const MIGRATION_RECORD_CONTEXT: &[u8] = b"valuecard/migration/record/v1";

/// What SELECT shows of one area: enough for the move server to find every service on the
/// chip (S2) and its state, nothing of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaSummary {
    pub service: ServiceCode,
    pub kind: ServiceKind,
    pub key_state: KeyState,
    pub provider: DeviceId,
    pub mover: DeviceId,
    /// The move the area was last exported for (S7), if it was since it last went back to
    /// main keys.
    pub exported_for: Option<MoveId>,
    /// The move whose content was imported into the area (S14), if any.
    pub imported_for: Option<MoveId>,
}

/// The FCI of SELECT on the services application: the chip's serial number (its card ID)
/// and its areas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesFci {
    pub card_id: CardId,
    pub areas: Vec<AreaSummary>,
}

impl ServicesFci {
    pub fn area(&self, service: ServiceCode) -> Option<&AreaSummary> {
        self.areas.iter().find(|area| area.service == service)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(64 + 64 * self.areas.len());
        w.nested(tag::FCI, |fci| {
            fci.put(tag::DF_NAME, &SERVICES_AID)
                .nested(tag::FCI_PROPRIETARY, |p| {
                    p.put(tag::CARD_ID, self.card_id.as_bytes());
                    for area in &self.areas {
                        p.nested(tag::AREA, |a| {
                            a.put(tag::SERVICE, &area.service.0.to_be_bytes())
                                .put_u8(tag::KIND, area.kind as u8)
                                .put_u8(tag::KEY_STATE, area.key_state as u8)
                                .put(tag::PROVIDER, area.provider.as_bytes())
                                .put(tag::SOURCE, area.mover.as_bytes());
                            if let Some(id) = &area.exported_for {
                                a.put(tag::EXPORTED_FOR, id);
                            }
                            if let Some(id) = &area.imported_for {
                                a.put(tag::IMPORTED_FOR, id);
                            }
                        });
                    }
                });
        });
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = TlvReader::new(bytes);
        let mut fci = TlvReader::new(outer.expect(tag::FCI)?);
        outer.finish()?;
        if fci.expect(tag::DF_NAME)? != SERVICES_AID {
            return Err(DecodeError::Field {
                field: "DF name",
                reason: "not the services application",
            });
        }
        let mut p = TlvReader::new(fci.expect(tag::FCI_PROPRIETARY)?);
        fci.finish()?;
        let card_id = CardId(p.expect_array(tag::CARD_ID)?);
        let mut areas: Vec<AreaSummary> = Vec::new();
        while let Some(value) = p.optional(tag::AREA)? {
            let mut a = TlvReader::new(value);
            let service = service_code(&mut a)?;
            let [kind] = a.expect_array::<1>(tag::KIND)?;
            let [state] = a.expect_array::<1>(tag::KEY_STATE)?;
            let area = AreaSummary {
                service,
                kind: ServiceKind::from_u8(kind)?,
                key_state: KeyState::from_u8(state)?,
                provider: DeviceId(a.expect_array(tag::PROVIDER)?),
                mover: DeviceId(a.expect_array(tag::SOURCE)?),
                exported_for: a.optional(tag::EXPORTED_FOR)?.map(move_id).transpose()?,
                imported_for: a.optional(tag::IMPORTED_FOR)?.map(move_id).transpose()?,
            };
            a.finish()?;
            if areas.len() >= CHIP_AREAS_MAX || areas.iter().any(|seen| seen.service == service) {
                return Err(DecodeError::Field {
                    field: "areas",
                    reason: "too many, or a service twice",
                });
            }
            areas.push(area);
        }
        p.finish()?;
        Ok(ServicesFci { card_id, areas })
    }
}

fn move_id(value: &[u8]) -> Result<MoveId, DecodeError> {
    MoveId::try_from(value).map_err(|_| DecodeError::Field {
        field: "move ID",
        reason: "wrong length",
    })
}

/// OPEN SERVICE command data: which area, and the host's challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenService {
    pub service: ServiceCode,
    pub host_challenge: Challenge,
}

impl OpenService {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(24);
        w.put(tag::SERVICE, &self.service.0.to_be_bytes())
            .put(tag::CHALLENGE_HOST, &self.host_challenge);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let open = OpenService {
            service: service_code(&mut r)?,
            host_challenge: r.expect_array(tag::CHALLENGE_HOST)?,
        };
        r.finish()?;
        Ok(open)
    }
}

/// OPEN SERVICE response: the card's challenge, the key state whose key the card used, and
/// its cryptogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenServiceResponse {
    pub card_challenge: Challenge,
    pub key_state: KeyState,
    pub key_version: u32,
    pub card_cryptogram: [u8; SERVICE_CRYPTOGRAM_LEN],
}

impl OpenServiceResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(40);
        w.put(tag::CHALLENGE_CARD, &self.card_challenge)
            .put_u8(tag::KEY_STATE, self.key_state as u8)
            .put_u32(tag::KEY_VERSION, self.key_version)
            .put(tag::CRYPTOGRAM, &self.card_cryptogram);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let card_challenge = r.expect_array(tag::CHALLENGE_CARD)?;
        let [state] = r.expect_array::<1>(tag::KEY_STATE)?;
        let response = OpenServiceResponse {
            card_challenge,
            key_state: KeyState::from_u8(state)?,
            key_version: u32_field(&mut r, tag::KEY_VERSION)?,
            card_cryptogram: r.expect_array(tag::CRYPTOGRAM)?,
        };
        r.finish()?;
        Ok(response)
    }
}

/// EXTERNAL AUTHENTICATE command data: the host's cryptogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceAuthenticate {
    pub host_cryptogram: [u8; SERVICE_CRYPTOGRAM_LEN],
}

impl ServiceAuthenticate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(12);
        w.put(tag::CRYPTOGRAM, &self.host_cryptogram);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let host_cryptogram = r.expect_array(tag::CRYPTOGRAM)?;
        r.finish()?;
        Ok(ServiceAuthenticate { host_cryptogram })
    }
}

/// EXPORT AREA request (sealed): the move the upload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRequest {
    pub move_id: MoveId,
}

impl ExportRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(20);
        w.put(tag::MOVE_ID, &self.move_id);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let move_id = r.expect_array(tag::MOVE_ID)?;
        r.finish()?;
        Ok(ExportRequest { move_id })
    }
}

/// EXPORT AREA response (sealed): the area's content for the move and, for the purse, the
/// card's signature over [`ExportedArea::purse_signed_message`] with its own key, the
/// center's evidence that this card gave up that value at that counter for that move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedArea {
    pub move_id: MoveId,
    pub card_id: CardId,
    pub service: ServiceCode,
    pub content: AreaContent,
    pub card_signature: Option<Signature>,
}

impl ExportedArea {
    /// What the card signs when it exports its purse.
    pub fn purse_signed_message(
        move_id: &MoveId,
        card_id: &CardId,
        balance: Amount,
        counter: u32,
    ) -> Vec<u8> {
        let mut m = b"valuecard/services/export/purse/v1".to_vec();
        m.extend_from_slice(move_id);
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(&balance.to_be_bytes());
        m.extend_from_slice(&counter.to_be_bytes());
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        w.put(tag::MOVE_ID, &self.move_id)
            .put(tag::CARD_ID, self.card_id.as_bytes())
            .put(tag::SERVICE, &self.service.0.to_be_bytes());
        self.content.encode_into(&mut w);
        if let Some(signature) = &self.card_signature {
            w.put(tag::SIGNATURE, &signature.0);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let exported = ExportedArea {
            move_id: r.expect_array(tag::MOVE_ID)?,
            card_id: CardId(r.expect_array(tag::CARD_ID)?),
            service: service_code(&mut r)?,
            content: AreaContent::decode_value(r.expect(tag::CONTENT)?)?,
            card_signature: r
                .optional(tag::SIGNATURE)?
                .map(|value| {
                    <[u8; SIGNATURE_LEN]>::try_from(value)
                        .map(Signature)
                        .map_err(|_| DecodeError::Field {
                            field: "signature",
                            reason: "wrong length",
                        })
                })
                .transpose()?,
        };
        r.finish()?;
        if exported.card_signature.is_some() != (exported.content.kind() == ServiceKind::Purse) {
            return Err(DecodeError::Field {
                field: "signature",
                reason: "a purse's export and only it is signed",
            });
        }
        Ok(exported)
    }
}

/// The fields of a move's purse record that the purse provider's transfer SAM signs: the
/// value moved in, bound to the destination card's counter and balance and to the session
/// it is applied in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    /// The destination card.
    pub card_id: CardId,
    /// The transfer SAM.
    pub writer: DeviceId,
    pub challenge_host: Challenge,
    pub challenge_card: Challenge,
    /// The destination card's counter after the update.
    pub counter: u32,
    pub amount: Amount,
    pub balance_after: Amount,
    /// The transfer SAM's own sequence of signed records.
    pub writer_sequence: u32,
    pub date: Date,
}

impl MigrationRecord {
    pub fn signed_message(&self) -> Vec<u8> {
        self.usage_record(Signature([0; SIGNATURE_LEN]))
            .signed_message(&self.card_id)
    }

    /// The record as the card keeps it, with the transfer SAM's signature.
    pub fn usage_record(&self, signature: Signature) -> UsageRecord {
        UsageRecord {
            kind: TransactionKind::MigrationIn,
            counter: self.counter,
            challenge_writer: self.challenge_host,
            challenge_card: self.challenge_card,
            amount: self.amount,
            balance_after: self.balance_after,
            writer: self.writer,
            writer_sequence: self.writer_sequence,
            date: self.date,
            signature,
            stamp: None,
        }
    }

    pub fn of_usage_record(card_id: &CardId, record: &UsageRecord) -> Self {
        MigrationRecord {
            card_id: *card_id,
            writer: record.writer,
            challenge_host: record.challenge_writer,
            challenge_card: record.challenge_card,
            counter: record.counter,
            amount: record.amount,
            balance_after: record.balance_after,
            writer_sequence: record.writer_sequence,
            date: record.date,
        }
    }
}

/// IMPORT AREA request (sealed): the uploaded content for this move and, for the purse, the
/// transfer SAM's signed record that credits its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    pub move_id: MoveId,
    /// The old chip the content was uploaded from.
    pub source: CardId,
    pub content: AreaContent,
    pub record: Option<UsageRecord>,
}

impl ImportRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(500);
        w.put(tag::MOVE_ID, &self.move_id)
            .put(tag::SOURCE, self.source.as_bytes());
        self.content.encode_into(&mut w);
        if let Some(record) = &self.record {
            record.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let request = ImportRequest {
            move_id: r.expect_array(tag::MOVE_ID)?,
            source: CardId(r.expect_array(tag::SOURCE)?),
            content: AreaContent::decode_value(r.expect(tag::CONTENT)?)?,
            record: r
                .optional(tag::USAGE_RECORD)?
                .map(UsageRecord::decode_value)
                .transpose()?,
        };
        r.finish()?;
        let purse = request.content.kind() == ServiceKind::Purse;
        let record_fits = match &request.record {
            None => !purse,
            Some(record) => purse && record.kind == TransactionKind::MigrationIn,
        };
        if !record_fits {
            return Err(DecodeError::Field {
                field: "record",
                reason: "a purse's import and only it carries a move record",
            });
        }
        Ok(request)
    }
}

/// IMPORT AREA response (sealed): what the card applied, answered again on a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReceipt {
    pub move_id: MoveId,
    pub card_id: CardId,
    pub service: ServiceCode,
    /// [`AreaContent::digest`] of the imported content.
    pub digest: [u8; 32],
}

impl ImportReceipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(80);
        w.nested(tag::RECEIPT, |receipt| {
            receipt
                .put(tag::MOVE_ID, &self.move_id)
                .put(tag::CARD_ID, self.card_id.as_bytes())
                .put(tag::SERVICE, &self.service.0.to_be_bytes())
                .put(tag::DIGEST, &self.digest);
        });
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = TlvReader::new(bytes);
        let mut r = TlvReader::new(outer.expect(tag::RECEIPT)?);
        outer.finish()?;
        let receipt = ImportReceipt {
            move_id: r.expect_array(tag::MOVE_ID)?,
            card_id: CardId(r.expect_array(tag::CARD_ID)?),
            service: service_code(&mut r)?,
            digest: r.expect_array(tag::DIGEST)?,
        };
        r.finish()?;
        Ok(receipt)
    }
}

/// UPDATE AREA request (sealed): one operation of normal use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateArea {
    pub operation: ServiceOperation,
}

impl UpdateArea {
    pub fn encode(&self) -> Vec<u8> {
        self.operation.encode()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(UpdateArea {
            operation: ServiceOperation::decode(bytes)?,
        })
    }
}

/// READ AREA and UPDATE AREA responses (sealed): the area's content and, once a move's
/// content was imported into it, that move and the content's digest (so that a transfer
/// SAM whose receipt was lost learns from the chip itself that its import landed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaReadout {
    pub card_id: CardId,
    pub service: ServiceCode,
    pub content: AreaContent,
    pub imported: Option<(MoveId, [u8; 32])>,
}

impl AreaReadout {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(360);
        w.put(tag::CARD_ID, self.card_id.as_bytes())
            .put(tag::SERVICE, &self.service.0.to_be_bytes());
        self.content.encode_into(&mut w);
        if let Some((move_id, digest)) = &self.imported {
            w.put(tag::IMPORTED_FOR, move_id).put(tag::DIGEST, digest);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let card_id = CardId(r.expect_array(tag::CARD_ID)?);
        let service = service_code(&mut r)?;
        let content = AreaContent::decode_value(r.expect(tag::CONTENT)?)?;
        let imported = match r.optional(tag::IMPORTED_FOR)? {
            None => None,
            Some(id) => Some((move_id(id)?, r.expect_array(tag::DIGEST)?)),
        };
        r.finish()?;
        Ok(AreaReadout {
            card_id,
            service,
            content,
            imported,
        })
    }
}
