//! The JSON bodies of the payment terminals' endpoints: usage uploads (Fig. 9), list
//! deltas, and time-stamp reports (Figs. 10-12). Signed protocol objects (the card's previous
//! usage record) travel as their TLV encoding in hex.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_core::crypto::{Signature, SIGNATURE_LEN};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    ListDelta, ListEntry, ListReason, UploadReceipt, UsageItem, UsageUpload, LIST_DELTA_MAX,
    USAGE_BATCH_MAX,
};
use valuecard_core::messages::purse::{TerminalStamp, UsageRecord};

use crate::wire::{amount, date, hex_array as array, refuse, WireError};

/// One usage item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageItemBody {
    pub terminal_sequence: u32,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    pub card_counter: u32,
    pub amount: u64,
    pub balance_before: u64,
    pub balance_after: u64,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_terminal: String,
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub challenge_card: String,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    pub stamp_count: u32,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub stamp_signature: String,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub terminal_signature: String,
    /// The card's previous usage record, `UsageRecord::encode()` in hex.
    pub previous_usage: String,
    /// The bound the card agreed to, minor units.
    pub amount_max: u64,
    /// The card's own signature over the state it spent from, hex.
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub card_signature: String,
}

impl UsageItemBody {
    pub fn new(item: &UsageItem) -> Self {
        UsageItemBody {
            terminal_sequence: item.terminal_sequence,
            card_id: hex::encode(item.card_id.as_bytes()),
            card_counter: item.card_counter,
            amount: item.amount.minor(),
            balance_before: item.balance_before.minor(),
            balance_after: item.balance_after.minor(),
            challenge_terminal: hex::encode(item.challenge_terminal),
            challenge_card: hex::encode(item.challenge_card),
            date: item.date.to_string(),
            stamp_count: item.stamp.count,
            stamp_signature: hex::encode(item.stamp.signature.0),
            terminal_signature: hex::encode(item.terminal_signature.0),
            previous_usage: hex::encode(item.previous_usage.encode()),
            amount_max: item.amount_max.minor(),
            card_signature: hex::encode(item.card_signature.0),
        }
    }

    pub fn decode(&self) -> Result<UsageItem, WireError> {
        let previous = hex::decode(&self.previous_usage)
            .map_err(|e| refuse("previous_usage", format!("not hex: {e}")))?;
        Ok(UsageItem {
            terminal_sequence: self.terminal_sequence,
            card_id: CardId(array("card_id", &self.card_id)?),
            card_counter: self.card_counter,
            amount: amount("amount", self.amount)?,
            balance_before: amount("balance_before", self.balance_before)?,
            balance_after: amount("balance_after", self.balance_after)?,
            challenge_terminal: array("challenge_terminal", &self.challenge_terminal)?,
            challenge_card: array("challenge_card", &self.challenge_card)?,
            date: date("date", &self.date)?,
            stamp: TerminalStamp {
                count: self.stamp_count,
                signature: Signature(array::<SIGNATURE_LEN>(
                    "stamp_signature",
                    &self.stamp_signature,
                )?),
            },
            terminal_signature: Signature(array::<SIGNATURE_LEN>(
                "terminal_signature",
                &self.terminal_signature,
            )?),
            previous_usage: UsageRecord::decode(&previous)
                .map_err(|e| refuse("previous_usage", e.to_string()))?,
            amount_max: amount("amount_max", self.amount_max)?,
            card_signature: Signature(array::<SIGNATURE_LEN>(
                "card_signature",
                &self.card_signature,
            )?),
        })
    }
}

/// `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageUploadBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    pub items: Vec<UsageItemBody>,
}

impl UsageUploadBody {
    pub fn new(upload: &UsageUpload) -> Self {
        UsageUploadBody {
            terminal_id: hex::encode(upload.terminal_id.as_bytes()),
            items: upload.items.iter().map(UsageItemBody::new).collect(),
        }
    }

    pub fn decode(&self) -> Result<UsageUpload, WireError> {
        if self.items.len() > USAGE_BATCH_MAX {
            return Err(refuse(
                "items",
                format!("at most {USAGE_BATCH_MAX} per upload"),
            ));
        }
        Ok(UsageUpload {
            terminal_id: DeviceId(array("terminal_id", &self.terminal_id)?),
            items: self
                .items
                .iter()
                .map(UsageItemBody::decode)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefusedItemBody {
    pub terminal_sequence: u32,
    pub reason: String,
}

/// The answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadReceiptBody {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<RefusedItemBody>,
    pub clones_detected: Vec<String>,
}

impl UploadReceiptBody {
    pub fn new(receipt: &UploadReceipt) -> Self {
        UploadReceiptBody {
            stored: receipt.stored,
            duplicates: receipt.duplicates,
            refused: receipt
                .refused
                .iter()
                .map(|(terminal_sequence, reason)| RefusedItemBody {
                    terminal_sequence: *terminal_sequence,
                    reason: reason.clone(),
                })
                .collect(),
            clones_detected: receipt
                .clones_detected
                .iter()
                .map(|card| hex::encode(card.as_bytes()))
                .collect(),
        }
    }

    pub fn decode(&self) -> Result<UploadReceipt, WireError> {
        Ok(UploadReceipt {
            stored: self.stored,
            duplicates: self.duplicates,
            refused: self
                .refused
                .iter()
                .map(|item| (item.terminal_sequence, item.reason.clone()))
                .collect(),
            clones_detected: self
                .clones_detected
                .iter()
                .map(|card| array("clones_detected", card).map(CardId))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `POST /v1/lists/delta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequestBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    pub since: u64,
}

impl ListRequestBody {
    pub fn decode(&self) -> Result<(DeviceId, u64), WireError> {
        Ok((
            DeviceId(array("terminal_id", &self.terminal_id)?),
            self.since,
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEntryBody {
    pub version: u64,
    pub kind: String,
    pub subject: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_stamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDeltaBody {
    pub version: u64,
    pub entries: Vec<ListEntryBody>,
}

impl ListDeltaBody {
    pub fn new(delta: &ListDelta) -> Self {
        let entries = delta
            .entries
            .iter()
            .map(|entry| match entry {
                ListEntry::Card {
                    version,
                    card_id,
                    reason,
                } => ListEntryBody {
                    version: *version,
                    kind: "card".into(),
                    subject: hex::encode(card_id.as_bytes()),
                    reason: reason.as_str().into(),
                    first_stamp: None,
                    stamp_count: None,
                },
                ListEntry::Terminal {
                    version,
                    device_id,
                    first_stamp,
                    stamp_count,
                } => ListEntryBody {
                    version: *version,
                    kind: "terminal".into(),
                    subject: hex::encode(device_id.as_bytes()),
                    reason: ListReason::TroubledTerminal.as_str().into(),
                    first_stamp: Some(hex::encode(first_stamp)),
                    stamp_count: Some(*stamp_count),
                },
            })
            .collect();
        ListDeltaBody {
            version: delta.version,
            entries,
        }
    }

    pub fn decode(&self) -> Result<ListDelta, WireError> {
        if self.entries.len() > LIST_DELTA_MAX {
            return Err(refuse(
                "entries",
                format!("at most {LIST_DELTA_MAX} per delta"),
            ));
        }
        let entries = self
            .entries
            .iter()
            .map(|entry| match entry.kind.as_str() {
                "card" => Ok(ListEntry::Card {
                    version: entry.version,
                    card_id: CardId(array("subject", &entry.subject)?),
                    reason: ListReason::parse(&entry.reason)
                        .ok_or_else(|| refuse("reason", "unknown reason"))?,
                }),
                "terminal" => Ok(ListEntry::Terminal {
                    version: entry.version,
                    device_id: DeviceId(array("subject", &entry.subject)?),
                    first_stamp: array(
                        "first_stamp",
                        entry.first_stamp.as_deref().unwrap_or_default(),
                    )?,
                    stamp_count: entry
                        .stamp_count
                        .ok_or_else(|| refuse("stamp_count", "missing"))?,
                }),
                _ => Err(refuse("kind", "expected card or terminal")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ListDelta {
            version: self.version,
            entries,
        })
    }
}

/// `POST /v1/stamps` (with the terminal's signature over its stamp), and its answer (the
/// count the center holds, without a signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StampBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: Option<String>,
}

impl StampBody {
    pub fn new(terminal_id: DeviceId, stamp: &TerminalStamp) -> Self {
        StampBody {
            terminal_id: hex::encode(terminal_id.as_bytes()),
            count: stamp.count,
            signature: Some(hex::encode(stamp.signature.0)),
        }
    }

    /// A report: the stamp must carry its signature.
    pub fn decode(&self) -> Result<(DeviceId, TerminalStamp), WireError> {
        let signature = self
            .signature
            .as_deref()
            .ok_or_else(|| refuse("signature", "missing"))?;
        Ok((
            DeviceId(array("terminal_id", &self.terminal_id)?),
            TerminalStamp {
                count: self.count,
                signature: Signature(array::<SIGNATURE_LEN>("signature", signature)?),
            },
        ))
    }
}

/// One card-signed service record (Fig. 17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecordBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub card_id: String,
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    pub terminal_sequence: u32,
    pub service_number: u32,
    pub amount: u64,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub card_signature: String,
}

/// `POST /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUploadBody {
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub terminal_id: String,
    pub records: Vec<ServiceRecordBody>,
}

impl ServiceUploadBody {
    pub fn new(upload: &valuecard_core::messages::credit::ServiceUpload) -> Self {
        ServiceUploadBody {
            terminal_id: hex::encode(upload.terminal_id.as_bytes()),
            records: upload
                .records
                .iter()
                .map(|record| ServiceRecordBody {
                    card_id: hex::encode(record.card_id.as_bytes()),
                    terminal_id: hex::encode(record.terminal_id.as_bytes()),
                    terminal_sequence: record.terminal_sequence,
                    service_number: record.service_number,
                    amount: record.amount.minor(),
                    date: record.date.to_string(),
                    card_signature: hex::encode(record.card_signature.0),
                })
                .collect(),
        }
    }

    pub fn decode(&self) -> Result<valuecard_core::messages::credit::ServiceUpload, WireError> {
        if self.records.len() > USAGE_BATCH_MAX {
            return Err(refuse(
                "records",
                format!("at most {USAGE_BATCH_MAX} per upload"),
            ));
        }
        let records = self
            .records
            .iter()
            .map(|record| {
                Ok(valuecard_core::messages::credit::ServiceRecord {
                    card_id: CardId(array("card_id", &record.card_id)?),
                    terminal_id: DeviceId(array("terminal_id", &record.terminal_id)?),
                    terminal_sequence: record.terminal_sequence,
                    service_number: record.service_number,
                    amount: amount("amount", record.amount)?,
                    date: date("date", &record.date)?,
                    card_signature: Signature(array::<SIGNATURE_LEN>(
                        "card_signature",
                        &record.card_signature,
                    )?),
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(valuecard_core::messages::credit::ServiceUpload {
            terminal_id: DeviceId(array("terminal_id", &self.terminal_id)?),
            records,
        })
    }
}

/// The answer to a service upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceReceiptBody {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<RefusedItemBody>,
}

impl ServiceReceiptBody {
    pub fn new(receipt: &valuecard_core::messages::credit::ServiceReceipt) -> Self {
        ServiceReceiptBody {
            stored: receipt.stored,
            duplicates: receipt.duplicates,
            refused: receipt
                .refused
                .iter()
                .map(|(terminal_sequence, reason)| RefusedItemBody {
                    terminal_sequence: *terminal_sequence,
                    reason: reason.clone(),
                })
                .collect(),
        }
    }

    pub fn decode(&self) -> valuecard_core::messages::credit::ServiceReceipt {
        valuecard_core::messages::credit::ServiceReceipt {
            stored: self.stored,
            duplicates: self.duplicates,
            refused: self
                .refused
                .iter()
                .map(|item| (item.terminal_sequence, item.reason.clone()))
                .collect(),
        }
    }
}
