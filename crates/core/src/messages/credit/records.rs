//! The service records the card signs (Fig. 17) and the card's service log.

use crate::crypto::Signature;
use crate::ids::{CardId, DeviceId};
use crate::limits::CARD_SERVICE_LOG_ENTRIES_MAX;
use crate::messages::field::{amount, u32_field};
use crate::messages::purse::tag as purse_tag;
use crate::messages::DecodeError;
use crate::money::Amount;
use crate::time::Date;
use crate::tlv::{TlvReader, TlvWriter};

use super::{signature, tag};

/// A service record as the center receives it: M = (V, D, IDT, terminal sequence, the
/// card's service number) with the card's SU(M * IDU) over it (Fig. 17).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub card_id: CardId,
    pub terminal_id: DeviceId,
    pub terminal_sequence: u32,
    /// The card's own number for this record: 1 for its first, then +1.
    pub service_number: u32,
    pub amount: Amount,
    pub date: Date,
    pub card_signature: Signature,
}

impl ServiceRecord {
    /// SU(M * IDU): what the card signs when it records a service.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(72);
        m.extend_from_slice(b"valuecard/credit/service/v1");
        m.extend_from_slice(self.card_id.as_bytes());
        m.extend_from_slice(self.terminal_id.as_bytes());
        m.extend_from_slice(&self.terminal_sequence.to_be_bytes());
        m.extend_from_slice(&self.service_number.to_be_bytes());
        m.extend_from_slice(&self.amount.to_be_bytes());
        m.extend_from_slice(&self.date.0.to_be_bytes());
        m
    }
}

/// RECORD SERVICE response: the card's number for the record and SU(M * IDU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecorded {
    pub service_number: u32,
    pub signature: Signature,
}

impl ServiceRecorded {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(80);
        w.put_u32(purse_tag::COUNTER, self.service_number)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let service_number = u32_field(&mut r, purse_tag::COUNTER)?;
        let signature = signature(&mut r)?;
        r.finish()?;
        Ok(ServiceRecorded {
            service_number,
            signature,
        })
    }
}

/// One entry of the card's service log (READ SERVICE LOG, newest first): the service
/// information M the holder may check afterwards, with the card's signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLogEntry {
    pub service_number: u32,
    pub terminal_id: DeviceId,
    pub terminal_sequence: u32,
    pub amount: Amount,
    pub date: Date,
    pub signature: Signature,
}

impl ServiceLogEntry {
    /// The signed record this entry holds.
    pub fn record(&self, card_id: CardId) -> ServiceRecord {
        ServiceRecord {
            card_id,
            terminal_id: self.terminal_id,
            terminal_sequence: self.terminal_sequence,
            service_number: self.service_number,
            amount: self.amount,
            date: self.date,
            card_signature: self.signature,
        }
    }

    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::SERVICE_ENTRY, |e| {
            e.put_u32(purse_tag::COUNTER, self.service_number)
                .put(purse_tag::DEVICE_ID, self.terminal_id.as_bytes())
                .put_u32(purse_tag::SEQUENCE, self.terminal_sequence)
                .put_u64(purse_tag::AMOUNT, self.amount.minor())
                .put_u32(purse_tag::DATE, self.date.0)
                .put(purse_tag::SIGNATURE, &self.signature.0);
        });
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let entry = ServiceLogEntry {
            service_number: u32_field(&mut r, purse_tag::COUNTER)?,
            terminal_id: DeviceId(r.expect_array(purse_tag::DEVICE_ID)?),
            terminal_sequence: u32_field(&mut r, purse_tag::SEQUENCE)?,
            amount: amount(&mut r, purse_tag::AMOUNT)?,
            date: Date(u32_field(&mut r, purse_tag::DATE)?),
            signature: signature(&mut r)?,
        };
        r.finish()?;
        Ok(entry)
    }

    pub fn encode_list(entries: &[ServiceLogEntry]) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(entries.len() * 110);
        for entry in entries {
            entry.encode_into(&mut w);
        }
        w.into_bytes()
    }

    pub fn decode_list(bytes: &[u8]) -> Result<Vec<ServiceLogEntry>, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let mut entries = Vec::new();
        while !r.is_empty() {
            if entries.len() >= CARD_SERVICE_LOG_ENTRIES_MAX {
                return Err(DecodeError::Field {
                    field: "service log",
                    reason: "too many entries",
                });
            }
            entries.push(ServiceLogEntry::decode_value(
                r.expect(tag::SERVICE_ENTRY)?,
            )?);
        }
        Ok(entries)
    }
}
