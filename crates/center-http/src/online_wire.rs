//! The security server's report of online records (seed 004), `POST /v1/online/records`:
//! each completed online payment or charge as the security server signed it, with the card's
//! previous record it read in BI, so that the center can check the chain.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::{OnlineItem, SettlementId};
use valuecard_core::messages::purse::UsageRecord;

use crate::wire::{hex_array, hex_bytes, refuse, WireError};

/// The most records one request carries; the client sends larger reports in parts.
pub const ONLINE_RECORDS_MAX: usize = 256;

/// `POST /v1/online/records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnlineRecordsBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub security_server_id: String,
    pub items: Vec<OnlineItemBody>,
}

/// One completed online update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnlineItemBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub settlement_id: String,
    /// The card's previous usage record (hex), absent for a card's first.
    pub previous_usage: Option<String>,
    /// The record the security server signed (hex).
    pub record: String,
}

impl OnlineItemBody {
    pub fn new(item: &OnlineItem) -> Self {
        OnlineItemBody {
            card_id: hex::encode(item.card_id.as_bytes()),
            settlement_id: hex::encode(item.settlement_id),
            previous_usage: item
                .previous
                .as_ref()
                .map(|record| hex::encode(record.encode())),
            record: hex::encode(item.record.encode()),
        }
    }

    pub fn decode(&self) -> Result<OnlineItem, WireError> {
        let record = |field: &'static str, text: &str| {
            UsageRecord::decode(&hex_bytes(field, text)?)
                .map_err(|error| refuse(field, error.to_string()))
        };
        Ok(OnlineItem {
            card_id: CardId(hex_array("card_id", &self.card_id)?),
            settlement_id: hex_array::<{ core::mem::size_of::<SettlementId>() }>(
                "settlement_id",
                &self.settlement_id,
            )?,
            previous: self
                .previous_usage
                .as_deref()
                .map(|text| record("previous_usage", text))
                .transpose()?,
            record: record("record", &self.record)?,
        })
    }
}

impl OnlineRecordsBody {
    pub fn new(security_server: DeviceId, items: &[OnlineItem]) -> Self {
        OnlineRecordsBody {
            security_server_id: hex::encode(security_server.as_bytes()),
            items: items.iter().map(OnlineItemBody::new).collect(),
        }
    }

    pub fn decode(&self) -> Result<(DeviceId, Vec<OnlineItem>), WireError> {
        if self.items.len() > ONLINE_RECORDS_MAX {
            return Err(refuse(
                "items",
                format!("at most {ONLINE_RECORDS_MAX} per request"),
            ));
        }
        Ok((
            DeviceId(hex_array("security_server_id", &self.security_server_id)?),
            self.items
                .iter()
                .map(OnlineItemBody::decode)
                .collect::<Result<_, _>>()?,
        ))
    }
}

impl crate::HttpCenterLink {
    /// Reports the security server's completed online records, in parts of at most
    /// [`ONLINE_RECORDS_MAX`]; a record the center already holds counts as a duplicate, so a
    /// report sent again after a lost answer changes nothing.
    pub fn report_online_records(
        &mut self,
        items: &[OnlineItem],
    ) -> Result<
        valuecard_core::messages::center::UploadReceipt,
        valuecard_core::messages::center::CenterError,
    > {
        let mut total = valuecard_core::messages::center::UploadReceipt::default();
        for chunk in items.chunks(ONLINE_RECORDS_MAX) {
            let body = OnlineRecordsBody::new(self.device_id(), chunk);
            let answer: crate::terminal_wire::UploadReceiptBody =
                self.call("POST", crate::paths::ONLINE_RECORDS, Some(&body))?;
            total.absorb(crate::client::decoded(
                crate::paths::ONLINE_RECORDS,
                answer.decode(),
            )?);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_hex_or_too_long_is_refused() {
        let body = OnlineRecordsBody {
            security_server_id: "zz".into(),
            items: vec![],
        };
        assert_eq!(body.decode().unwrap_err().field, "security_server_id");
        let item = OnlineItemBody {
            card_id: "0011223344556677".into(),
            settlement_id: "00".repeat(16),
            previous_usage: None,
            record: "0102".into(),
        };
        assert_eq!(item.decode().unwrap_err().field, "record");
        let many = OnlineRecordsBody {
            security_server_id: "0011223344556677".into(),
            items: vec![item; ONLINE_RECORDS_MAX + 1],
        };
        assert_eq!(many.decode().unwrap_err().field, "items");
    }
}
