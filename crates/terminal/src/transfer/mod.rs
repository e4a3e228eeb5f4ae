//! The settlement terminal (seed 000, claims 10-16 and 19): two readers, one card in each.
//! It reads both cards' transfer-key identifiers from their SELECT answers, brings the card
//! with the older key up to the newer one (`keys.rs`: symmetric when both update keys agree,
//! public-key otherwise, claim 14), then moves the value in four command pairs, signing each
//! card's transfer record in its SAM. A transfer the source still holds pending is settled
//! first (`recovery.rs`), from the destination's proof; one whose destination will never
//! come back is released by the center (`release.rs`).
//!
//! The terminal never holds a transfer key: value travels card to card under it. It keeps a
//! report of each transfer before every command that can move value, and uploads the reports.

use rand_core::{CryptoRngCore, OsRng};
use valuecard_core::cert::{Certificate, Role, TrustAnchor};
use valuecard_core::crypto::random_array;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::UploadReceipt;
use valuecard_core::messages::purse::{
    Challenge, SelectResponse, TransactionKind, UpdateConfirmation, UsageRecord,
};
use valuecard_core::messages::transfer::{
    ins, CompletionRecord, InitializeTransferIn, ProofStatus, RecordSignature, TransferBinding,
    TransferComplete, TransferIn, TransferInOffer, TransferLink, TransferOut, TransferOutOffer,
    TransferProof, TransferReport, TransferStatusQuery, TransferSummary, TransferUpload,
    ValueEvidence,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::{Sam, TransferRecordOrder};

use crate::card_commands::{run, transfer as command};
use crate::payment::{verify_previous_usage, verify_select, ClaimedState, VerifiedCard};
use crate::store::{LocalLists, TerminalStore};
use crate::TerminalError;

mod keys;
mod recovery;
mod release;
mod steps;

pub use keys::{KeyUpdate, KeyUpdatePath};
pub use recovery::RecoveryOutcome;
pub use release::Released;
pub use steps::{DestinationReady, TransferPair, ValueDelivered, ValueReserved};

/// Reports per upload batch.
pub const TRANSFER_BATCH_MAX: usize = 64;

/// A card in one of the two readers, after SELECT: its verified certificate and the card
/// information of its SELECT answer.
#[derive(Debug, Clone)]
pub struct TransferCard {
    card: VerifiedCard,
    certificate: Certificate,
    summary: TransferSummary,
}

impl TransferCard {
    pub fn card_id(&self) -> CardId {
        self.card.card_id()
    }

    pub fn transfer_key_id(&self) -> u32 {
        self.summary.transfer_key_id
    }

    pub fn update_key_id(&self) -> u32 {
        self.summary.update_key_id
    }

    pub fn pending(&self) -> bool {
        self.summary.pending
    }
}

/// A completed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReceipt {
    pub sequence: u32,
    pub source: CardId,
    pub destination: CardId,
    pub amount: Amount,
    pub source_balance_after: Amount,
    pub destination_balance_after: Amount,
    /// The key update that had to come first, if any.
    pub key_update: Option<KeyUpdate>,
    /// A transfer the source held pending from an earlier session, settled first.
    pub settled_first: Option<RecoveryOutcome>,
    /// Command/response pairs exchanged after the two SELECTs.
    pub command_pairs: u32,
}

/// A settlement terminal: SAM, records and clock.
pub struct SettlementTerminal<S: Sam, T: TerminalStore, R: CryptoRngCore = OsRng> {
    pub(crate) sam: S,
    pub(crate) store: T,
    pub(crate) clock: Box<dyn Clock>,
    pub(crate) rng: R,
    lists: crate::store::ListCache,
    /// Command pairs sent since the last count was taken (SELECTs excluded).
    pairs: u32,
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> core::fmt::Debug for SettlementTerminal<S, T, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SettlementTerminal")
            .field("device_id", &self.sam.device_id())
            .finish_non_exhaustive()
    }
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> SettlementTerminal<S, T, R> {
    /// A settlement terminal over a SAM the center installed as one.
    pub fn new(sam: S, store: T, clock: Box<dyn Clock>, rng: R) -> Result<Self, TerminalError> {
        if sam.certificate()?.body.role != Role::SettlementTerminal {
            return Err(TerminalError::Mismatch(
                "the SAM is not certified as a settlement terminal",
            ));
        }
        Ok(SettlementTerminal {
            sam,
            store,
            clock,
            rng,
            lists: Default::default(),
            pairs: 0,
        })
    }

    pub fn device_id(&self) -> DeviceId {
        self.sam.device_id()
    }

    pub fn store(&self) -> &T {
        &self.store
    }

    pub fn sam(&self) -> &S {
        &self.sam
    }

    pub fn sam_mut(&mut self) -> &mut S {
        &mut self.sam
    }

    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    fn anchor(&self) -> Result<TrustAnchor, TerminalError> {
        Ok(*self.sam.anchor()?)
    }

    fn lists(&mut self) -> Result<&LocalLists, TerminalError> {
        self.lists.get(&self.store)
    }

    /// Fetches the list entries the terminal does not have yet and stores them.
    pub fn update_lists(
        &mut self,
        link: &mut impl valuecard_core::messages::center::TerminalLink,
    ) -> Result<u64, TerminalError> {
        self.lists
            .update(&mut self.store, link, self.sam.device_id())
    }

    /// One command pair with a card, counted.
    pub(super) fn exchange(
        &mut self,
        reader: &mut impl CardReader,
        name: &'static str,
        instruction: u8,
        p1: u8,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, TerminalError> {
        self.pairs += 1;
        run(reader, name, &command(instruction, p1, data))
    }

    /// Claim 10, first step: SELECT the purse, verify the card's certificate, refuse a
    /// listed card, and take the transfer-key information from the SELECT answer.
    pub fn read_card(
        &mut self,
        reader: &mut impl CardReader,
    ) -> Result<TransferCard, TerminalError> {
        let fci = crate::card_commands::select_active(reader)?;
        let card = verify_select(&fci, &self.anchor()?, self.clock.today())?;
        let fci = SelectResponse::decode(&fci).map_err(|error| TerminalError::Malformed {
            message: "SELECT answer",
            error,
        })?;
        let certificate = fci.certificate.ok_or(TerminalError::Mismatch(
            "an active card must show its certificate",
        ))?;
        if let Some(reason) = self.lists()?.cards.get(&card.card_id()) {
            return Err(TerminalError::CardListed {
                card_id: card.card_id(),
                reason: *reason,
            });
        }
        Ok(TransferCard {
            summary: fci.transfer.unwrap_or(TransferSummary {
                transfer_key_id: 0,
                update_key_id: 0,
                key_limit: 0,
                pending: false,
            }),
            card,
            certificate,
        })
    }

    /// Claims 10-16: moves `amount` from the card in `from` to the card in `to`.
    pub fn transfer(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
        amount: Amount,
    ) -> Result<TransferReceipt, TerminalError> {
        if amount == Amount::ZERO {
            return Err(TerminalError::Amount("a transfer must be positive".into()));
        }
        let mut source = self.read_card(from)?;
        let mut destination = self.read_card(to)?;
        self.pairs = 0;
        if source.card_id() == destination.card_id() {
            return Err(TerminalError::SameCard);
        }
        let key_update = self.sync_keys(from, &mut source, to, &mut destination)?;
        let settled_first = if source.pending() {
            let outcome = self.settle_pending(from, &source, to, &destination)?;
            source.summary.pending = false;
            outcome
        } else {
            None
        };
        if source.transfer_key_id() == 0 {
            return Err(TerminalError::NoTransferKey(source.card_id()));
        }
        let pair = TransferPair {
            source,
            destination,
        };
        let ready = self.initialize_transfer_in(to, pair, amount)?;
        let reserved = self.transfer_out(from, to, ready)?;
        let delivered = self.deliver(from, to, reserved)?;
        let mut receipt = self.complete(from, delivered)?;
        receipt.key_update = key_update;
        receipt.settled_first = settled_first;
        Ok(receipt)
    }

    /// TRANSFER COMPLETE with a proof of receipt: the SAM signs the source's record from
    /// its state before, and the card's confirmation must match it.
    pub(super) fn complete_received(
        &mut self,
        from: &mut impl CardReader,
        source: CardId,
        report: &mut TransferReport,
        proof: TransferProof,
        (counter, balance): (u32, Amount),
    ) -> Result<UpdateConfirmation, TerminalError> {
        let challenge_terminal: Challenge = random_array(&mut self.rng);
        let date = self.clock.today();
        let source_record = self.sam.sign_transfer_record(&TransferRecordOrder {
            card_id: source,
            kind: TransactionKind::TransferOut,
            challenge_terminal,
            challenge_card: report.challenge_source,
            counter,
            balance_before: balance,
            amount: report.amount,
            date,
            sequence_floor: self.store.next_sequence()?,
        })?;
        let complete = TransferComplete {
            proof,
            record: Some(CompletionRecord {
                terminal_certificate: self.sam.certificate()?.clone(),
                challenge_terminal,
                date,
                signature: record_signature(&source_record),
            }),
        };
        let data = self.exchange(
            from,
            "TRANSFER COMPLETE",
            ins::TRANSFER_COMPLETE,
            0,
            complete.encode(),
        )?;
        let confirmation =
            UpdateConfirmation::decode(&data).map_err(|error| TerminalError::Malformed {
                message: "transfer confirmation",
                error,
            })?;
        if confirmation.counter != source_record.counter
            || confirmation.balance != source_record.balance_after
        {
            return Err(TerminalError::Mismatch(
                "the source's confirmation does not match its record",
            ));
        }
        report.source_record = Some(source_record);
        self.save_report(report)?;
        Ok(confirmation)
    }

    /// Stores `report`. One the center already has in an earlier form goes out again under a
    /// new sequence: the center keeps what a terminal reported under a sequence unchanged,
    /// and merges every report of one transfer.
    pub(super) fn save_report(&mut self, report: &mut TransferReport) -> Result<(), TerminalError> {
        let stored = self
            .store
            .transfer_of(&report.source, &report.challenge_source)?;
        if let Some(stored) = stored {
            if stored.report == *report {
                // Nothing new: it stays as uploaded (or not) as it was.
                return Ok(());
            }
            if stored.uploaded {
                report.sequence = self.store.next_sequence()?;
            }
        }
        self.store.save_transfer(report)
    }

    /// Verifies what a card claims about its state against its last writer's record.
    pub(super) fn check_claim(
        &mut self,
        card: &VerifiedCard,
        claim: ClaimedState<'_>,
        today: Date,
    ) -> Result<(), TerminalError> {
        let anchor = self.anchor()?;
        let lists = self.lists.get(&self.store)?;
        verify_previous_usage(card, claim, &anchor, today, lists)
    }

    /// What the source may still spend, for an error message.
    pub(super) fn spendable(
        &mut self,
        from: &mut impl CardReader,
    ) -> Result<Amount, TerminalError> {
        let info = self.transfer_info(from)?;
        let reserved = info.pending.map_or(Amount::ZERO, |p| p.amount);
        Ok(info.balance.checked_sub(reserved).unwrap_or(Amount::ZERO))
    }

    /// Uploads every report the center has not acknowledged in its current form.
    pub fn upload_transfers(
        &mut self,
        link: &mut impl TransferLink,
    ) -> Result<UploadReceipt, TerminalError> {
        let mut total = UploadReceipt::default();
        loop {
            let reports = self.store.pending_transfer_uploads(TRANSFER_BATCH_MAX)?;
            if reports.is_empty() {
                return Ok(total);
            }
            let upload = TransferUpload {
                terminal_id: self.sam.device_id(),
                reports: reports.iter().map(uploadable).collect(),
            };
            let receipt = link.upload_transfers(&upload)?;
            let answered: Vec<u32> = upload.reports.iter().map(|r| r.sequence).collect();
            self.store.mark_transfers_uploaded(&answered)?;
            total.absorb(receipt);
        }
    }
}

/// What of a report the center can take now: a card's previous record only with the record
/// that follows it, except while the destination's answer is in doubt (then the center
/// keeps what was sent, which bars a release). The rest goes out with the report's next
/// form, under a new sequence (`save_report`).
fn uploadable(report: &TransferReport) -> TransferReport {
    let mut sent = report.clone();
    match report.proof.as_ref().map(|proof| proof.status) {
        // Undone: no record of either card describes anything that happened.
        Some(ProofStatus::NotReceived) => {
            sent.destination_record = None;
            sent.destination_previous = None;
            sent.source_record = None;
            sent.source_previous = None;
        }
        Some(ProofStatus::Received) => {
            if sent.source_record.is_none() {
                sent.source_previous = None;
            }
        }
        None => {
            if sent.destination_record.is_none() {
                sent.destination_previous = None;
                sent.source_previous = None;
            }
        }
    }
    sent
}

pub(super) fn record_signature(record: &UsageRecord) -> RecordSignature {
    RecordSignature {
        writer_sequence: record.writer_sequence,
        signature: record.signature,
        stamp: record.stamp,
    }
}
