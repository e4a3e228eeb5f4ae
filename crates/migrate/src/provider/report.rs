//! The purse provider's report to the center: every purse move whose value reached the new
//! chip is put in `provider_purse_moves` in the transaction that marks its copy downloaded,
//! and [`report_pending`] sends what is unreported. The center stores each move once, so a
//! report sent again after a lost answer changes nothing; a move the center refuses stays
//! unreported and is logged at every attempt, for an operator to look at.
//!
//! [`Center::store_purse_moves`]: valuecard_center::Center::store_purse_moves

use valuecard_center::sql::{Database, Executor};
use valuecard_core::crypto::{Signature, SIGNATURE_LEN};
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{CenterError, UploadReceipt};
use valuecard_core::messages::purse::UsageRecord;
use valuecard_core::messages::services::{MoveId, PurseMove};
use valuecard_core::money::Amount;

/// The most moves one report carries.
const REPORT_BATCH: usize = 256;

/// Where completed purse moves go: the center.
pub trait PurseMoveSink: Send {
    fn report(&mut self, moves: &[PurseMove]) -> Result<UploadReceipt, CenterError>;
}

/// The center in this process (the demo, tests): each report goes to
/// [`Center::store_purse_moves`] as the transfer SAM that wrote its records.
impl PurseMoveSink for valuecard_center::Center {
    fn report(&mut self, moves: &[PurseMove]) -> Result<UploadReceipt, CenterError> {
        let Some(first) = moves.first() else {
            return Ok(UploadReceipt::default());
        };
        self.store_purse_moves(first.record.writer, moves)
    }
}

/// What one pass of the reporter did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    /// Moves the center now holds (stored now or before).
    pub reported: usize,
    /// Moves the center refused, with its reasons.
    pub refused: Vec<String>,
    /// New cards the center found with a state consumed twice.
    pub clones_detected: Vec<CardId>,
}

/// The moves not reported yet, oldest first.
pub fn unreported(db: &mut dyn Executor, limit: usize) -> Result<Vec<PurseMove>, CenterError> {
    let rows = db.query(
        &format!(
            "SELECT move_id, source, destination, amount, source_counter, export_signature, record
             FROM provider_purse_moves WHERE reported = 0 ORDER BY move_id LIMIT {limit}"
        ),
        &[],
    )?;
    rows.iter()
        .map(|row| {
            let corrupt = |what: &str| CenterError::Storage(format!("purse move {what} corrupt"));
            let card = |index: usize| -> Result<CardId, CenterError> {
                Ok(CardId(
                    <[u8; 8]>::try_from(row.bytes(index)?.as_slice())
                        .map_err(|_| corrupt("card"))?,
                ))
            };
            Ok(PurseMove {
                move_id: MoveId::try_from(row.bytes(0)?.as_slice()).map_err(|_| corrupt("ID"))?,
                source: card(1)?,
                destination: card(2)?,
                amount: Amount::new(u64::try_from(row.int(3)?).map_err(|_| corrupt("amount"))?)
                    .map_err(|_| corrupt("amount"))?,
                source_counter: u32::try_from(row.int(4)?).map_err(|_| corrupt("counter"))?,
                export_signature: Signature(
                    <[u8; SIGNATURE_LEN]>::try_from(row.bytes(5)?.as_slice())
                        .map_err(|_| corrupt("signature"))?,
                ),
                record: UsageRecord::decode(&row.bytes(6)?).map_err(|_| corrupt("record"))?,
            })
        })
        .collect()
}

/// Sends every unreported move to `sink` and marks what the center holds.
pub fn report_pending(
    db: &mut Database,
    sink: &mut dyn PurseMoveSink,
) -> Result<ReportSummary, CenterError> {
    let mut summary = ReportSummary::default();
    let mut refused_moves: Vec<MoveId> = Vec::new();
    loop {
        let moves: Vec<PurseMove> = unreported(db, REPORT_BATCH + refused_moves.len())?
            .into_iter()
            .filter(|item| !refused_moves.contains(&item.move_id))
            .take(REPORT_BATCH)
            .collect();
        if moves.is_empty() {
            return Ok(summary);
        }
        let receipt = sink.report(&moves)?;
        for (sequence, reason) in &receipt.refused {
            tracing::error!(sequence, %reason, "the center refused a purse move");
            summary.refused.push(reason.clone());
        }
        for item in &moves {
            let refused = receipt
                .refused
                .iter()
                .any(|(sequence, _)| *sequence == item.record.writer_sequence);
            if refused {
                refused_moves.push(item.move_id);
                continue;
            }
            db.execute(
                "UPDATE provider_purse_moves SET reported = 1 WHERE move_id = $1",
                &[item.move_id[..].into()],
            )?;
            summary.reported += 1;
        }
        for card in receipt.clones_detected {
            if !summary.clones_detected.contains(&card) {
                summary.clones_detected.push(card);
            }
        }
    }
}
