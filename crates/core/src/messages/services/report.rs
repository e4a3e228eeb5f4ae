//! What the purse's provider reports to the center once a move's value reached the new
//! chip: the old chip's signed export (it gave up that balance at that counter for that
//! move) and the new chip's migration record (the transfer SAM credited that amount at the
//! new chip's next counter). With both, the center records the old card as moved, counts
//! the value on the new card, and recognises any later use of the old card.

use crate::crypto::{PublicKey, Signature};
use crate::ids::CardId;
use crate::messages::purse::{TransactionKind, UsageRecord};
use crate::money::Amount;

use super::{ExportedArea, MoveId};

/// One completed purse move, as the purse provider's transfer SAM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurseMove {
    pub move_id: MoveId,
    /// The old chip.
    pub source: CardId,
    /// The new chip.
    pub destination: CardId,
    /// What the old chip exported: its whole balance.
    pub amount: Amount,
    /// The old chip's purse counter at the export.
    pub source_counter: u32,
    /// The old chip's signature over [`ExportedArea::purse_signed_message`].
    pub export_signature: Signature,
    /// The new chip's usage record of the credit (kind `MigrationIn`), as the transfer SAM
    /// signed it.
    pub record: UsageRecord,
}

/// Why a reported move does not hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PurseMoveError {
    #[error("the record is not a migration record")]
    NotMigration,
    #[error("the old and the new chip are the same card")]
    SameCard,
    #[error("the record credits another amount than the old chip exported")]
    AmountMismatch,
    #[error("the record's balance after is below the amount it credits")]
    BalanceBelowAmount,
    #[error("the record is at counter 0")]
    CounterZero,
    #[error("the old chip's export signature does not verify")]
    ExportSignature,
    #[error("the record's signature does not verify under its writer's key")]
    RecordSignature,
}

impl PurseMove {
    /// The message the old chip signed when it exported its purse.
    pub fn export_message(&self) -> Vec<u8> {
        ExportedArea::purse_signed_message(
            &self.move_id,
            &self.source,
            self.amount,
            self.source_counter,
        )
    }

    /// The checks that need no database: the shape of the record, the old chip's export
    /// signature under `source_key`, and the record's under `writer_key`.
    pub fn verify(
        &self,
        source_key: &PublicKey,
        writer_key: &PublicKey,
    ) -> Result<(), PurseMoveError> {
        if self.record.kind != TransactionKind::MigrationIn {
            return Err(PurseMoveError::NotMigration);
        }
        if self.source == self.destination {
            return Err(PurseMoveError::SameCard);
        }
        if self.record.amount != self.amount {
            return Err(PurseMoveError::AmountMismatch);
        }
        if self.record.balance_after < self.amount {
            return Err(PurseMoveError::BalanceBelowAmount);
        }
        if self.record.counter == 0 {
            return Err(PurseMoveError::CounterZero);
        }
        source_key
            .verify(&self.export_message(), &self.export_signature)
            .map_err(|_| PurseMoveError::ExportSignature)?;
        writer_key
            .verify(
                &self.record.signed_message(&self.destination),
                &self.record.signature,
            )
            .map_err(|_| PurseMoveError::RecordSignature)?;
        Ok(())
    }
}
