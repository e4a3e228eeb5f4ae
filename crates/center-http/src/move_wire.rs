//! The purse provider's report of completed purse moves (seed 002), `POST /v1/moves/purse`:
//! each move with the old chip's signed export and the new chip's migration record, so that
//! the center can check both and count the value once, on the new card.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_core::crypto::{Signature, SIGNATURE_LEN};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::UsageRecord;
use valuecard_core::messages::services::PurseMove;
use valuecard_core::money::Amount;

use crate::wire::{hex_array, hex_bytes, refuse, WireError};

/// The most moves one request carries; the client sends larger reports in parts.
pub const PURSE_MOVES_MAX: usize = 256;

/// `POST /v1/moves/purse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurseMovesBody {
    /// The purse provider's transfer SAM.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub transfer_sam_id: String,
    pub moves: Vec<PurseMoveBody>,
}

/// One completed purse move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurseMoveBody {
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub move_id: String,
    /// The old chip.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub source: String,
    /// The new chip.
    #[schema(pattern = "^[0-9a-fA-F]{16}$")]
    pub destination: String,
    /// The value moved, in minor units: the old chip's whole balance at its export.
    pub amount_minor: u64,
    /// The old chip's purse counter at its export.
    pub source_counter: u32,
    /// The old chip's signature over its export (hex).
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub export_signature: String,
    /// The new chip's migration record as the transfer SAM signed it (hex).
    pub record: String,
}

impl PurseMoveBody {
    pub fn new(item: &PurseMove) -> Self {
        PurseMoveBody {
            move_id: hex::encode(item.move_id),
            source: hex::encode(item.source.as_bytes()),
            destination: hex::encode(item.destination.as_bytes()),
            amount_minor: item.amount.minor(),
            source_counter: item.source_counter,
            export_signature: hex::encode(item.export_signature.0),
            record: hex::encode(item.record.encode()),
        }
    }

    pub fn decode(&self) -> Result<PurseMove, WireError> {
        Ok(PurseMove {
            move_id: hex_array("move_id", &self.move_id)?,
            source: CardId(hex_array("source", &self.source)?),
            destination: CardId(hex_array("destination", &self.destination)?),
            amount: Amount::new(self.amount_minor)
                .map_err(|error| refuse("amount_minor", error.to_string()))?,
            source_counter: self.source_counter,
            export_signature: Signature(hex_array::<SIGNATURE_LEN>(
                "export_signature",
                &self.export_signature,
            )?),
            record: UsageRecord::decode(&hex_bytes("record", &self.record)?)
                .map_err(|error| refuse("record", error.to_string()))?,
        })
    }
}

impl PurseMovesBody {
    pub fn new(transfer_sam: DeviceId, moves: &[PurseMove]) -> Self {
        PurseMovesBody {
            transfer_sam_id: hex::encode(transfer_sam.as_bytes()),
            moves: moves.iter().map(PurseMoveBody::new).collect(),
        }
    }

    pub fn decode(&self) -> Result<(DeviceId, Vec<PurseMove>), WireError> {
        if self.moves.len() > PURSE_MOVES_MAX {
            return Err(refuse(
                "moves",
                format!("at most {PURSE_MOVES_MAX} per request"),
            ));
        }
        Ok((
            DeviceId(hex_array("transfer_sam_id", &self.transfer_sam_id)?),
            self.moves
                .iter()
                .map(PurseMoveBody::decode)
                .collect::<Result<_, _>>()?,
        ))
    }
}

impl crate::HttpCenterLink {
    /// Reports the purse provider's completed moves, in parts of at most
    /// [`PURSE_MOVES_MAX`]; a move the center already holds counts as a duplicate, so a
    /// report sent again after a lost answer changes nothing.
    pub fn report_purse_moves(
        &mut self,
        moves: &[PurseMove],
    ) -> Result<
        valuecard_core::messages::center::UploadReceipt,
        valuecard_core::messages::center::CenterError,
    > {
        let mut total = valuecard_core::messages::center::UploadReceipt::default();
        for chunk in moves.chunks(PURSE_MOVES_MAX) {
            let body = PurseMovesBody::new(self.device_id(), chunk);
            let answer: crate::terminal_wire::UploadReceiptBody =
                self.call("POST", crate::paths::PURSE_MOVES, Some(&body))?;
            total.absorb(crate::client::decoded(
                crate::paths::PURSE_MOVES,
                answer.decode(),
            )?);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use valuecard_core::messages::purse::TransactionKind;
    use valuecard_core::time::Date;

    fn sample() -> PurseMove {
        PurseMove {
            move_id: [0x4D; 16],
            source: CardId([1; 8]),
            destination: CardId([2; 8]),
            amount: Amount::new(87_654_321).unwrap(),
            source_counter: 7,
            export_signature: Signature([0xE5; SIGNATURE_LEN]),
            record: UsageRecord {
                kind: TransactionKind::MigrationIn,
                counter: 3,
                challenge_writer: [0x11; 16],
                challenge_card: [0x22; 16],
                amount: Amount::new(87_654_321).unwrap(),
                balance_after: Amount::new(87_655_021).unwrap(),
                writer: DeviceId([9; 8]),
                writer_sequence: 4,
                date: Date(20_000),
                signature: Signature([0x5A; SIGNATURE_LEN]),
                stamp: None,
            },
        }
    }

    #[test]
    fn a_report_round_trips_through_its_json_body() {
        let body = PurseMovesBody::new(DeviceId([9; 8]), &[sample(), sample()]);
        let json = serde_json::to_vec(&body).unwrap();
        let parsed: PurseMovesBody = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed, body);
        assert_eq!(
            parsed.decode().unwrap(),
            (DeviceId([9; 8]), vec![sample(), sample()])
        );
    }

    #[test]
    fn a_body_that_is_not_hex_or_too_long_is_refused() {
        let body = PurseMovesBody {
            transfer_sam_id: "zz".into(),
            moves: vec![],
        };
        assert_eq!(body.decode().unwrap_err().field, "transfer_sam_id");
        let mut item = PurseMoveBody::new(&sample());
        item.record = "0102".into();
        assert_eq!(item.decode().unwrap_err().field, "record");
        let mut short = PurseMoveBody::new(&sample());
        short.export_signature = "00".repeat(63);
        assert_eq!(short.decode().unwrap_err().field, "export_signature");
        let many = PurseMovesBody {
            transfer_sam_id: "0011223344556677".into(),
            moves: vec![PurseMoveBody::new(&sample()); PURSE_MOVES_MAX + 1],
        };
        assert_eq!(many.decode().unwrap_err().field, "moves");
    }
}
