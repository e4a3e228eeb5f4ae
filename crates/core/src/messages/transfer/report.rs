//! What a settlement terminal uploads about the transfers it ran (seed 000 with Fig. 9 of
//! seed 003): for each transfer, the binding and value message the source produced, the
//! destination's proof, the records the terminal signed for either card, and the records
//! each card showed for the state it moved from. The center holds the transfer keys, so it
//! checks the value message and the proof itself: a terminal cannot invent a transfer or
//! frame a card as a clone.

use super::*;
use crate::ids::DeviceId;
use crate::messages::center::{CenterError, UploadReceipt};

/// The source's half as the terminal saw it at TRANSFER OUT (absent when the terminal only
/// completed a transfer that another session started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueEvidence {
    pub binding: TransferBinding,
    pub value: ValueMessage,
}

/// One transfer, as far as this terminal took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// The terminal's own number for this report, unique per terminal.
    pub sequence: u32,
    pub source: CardId,
    pub destination: CardId,
    /// Names the transfer (the source's challenge at TRANSFER OUT).
    pub challenge_source: Challenge,
    pub amount: Amount,
    /// The destination's counter when it accepted to receive.
    pub destination_counter: u32,
    pub value: Option<ValueEvidence>,
    /// The destination's proof: received, or not received (the transfer was undone).
    pub proof: Option<TransferProof>,
    /// The destination's `TransferIn` record, signed by this terminal, and the record the
    /// destination showed before it.
    pub destination_record: Option<UsageRecord>,
    pub destination_previous: Option<UsageRecord>,
    /// The source's `TransferOut` record, signed by this terminal once the source debited,
    /// and the record the source showed before it.
    pub source_record: Option<UsageRecord>,
    pub source_previous: Option<UsageRecord>,
}

/// How far a reported transfer got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferOutcome {
    /// The destination has the value and the source debited it.
    Completed,
    /// The destination has the value; the source still holds it reserved (pending).
    Received,
    /// The destination proved it never applied the transfer: nothing moved.
    Undone,
    /// Nobody knows yet: the source holds it pending, the destination was not asked.
    InDoubt,
}

impl TransferReport {
    pub fn outcome(&self) -> TransferOutcome {
        match (&self.proof, &self.source_record) {
            (Some(proof), _) if proof.status == ProofStatus::NotReceived => TransferOutcome::Undone,
            (Some(_), Some(_)) => TransferOutcome::Completed,
            (Some(_), None) => TransferOutcome::Received,
            (None, _) => TransferOutcome::InDoubt,
        }
    }

    /// What the proof in this report speaks about.
    pub fn proof_subject(&self) -> ProofSubject {
        let received = self
            .proof
            .as_ref()
            .is_some_and(|p| p.status == ProofStatus::Received);
        ProofSubject {
            source: self.source,
            challenge_source: self.challenge_source,
            destination: self.destination,
            amount: if received { self.amount } else { Amount::ZERO },
        }
    }
}

/// One batch of a settlement terminal's transfer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferUpload {
    pub terminal_id: DeviceId,
    pub reports: Vec<TransferReport>,
}

/// The settlement terminal's link to the center.
pub trait TransferLink {
    /// Uploads reports; the center verifies every signature, MAC and value message before
    /// it stores anything, stores each report once (a retry is a duplicate), and lists a
    /// card whose state was moved twice.
    fn upload_transfers(&mut self, upload: &TransferUpload) -> Result<UploadReceipt, CenterError>;
}

impl<T: TransferLink + ?Sized> TransferLink for &mut T {
    fn upload_transfers(&mut self, upload: &TransferUpload) -> Result<UploadReceipt, CenterError> {
        (**self).upload_transfers(upload)
    }
}
