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

use crate::card_commands::{run, select, transfer as command};
use crate::payment::{verify_previous_usage, verify_select, ClaimedState, VerifiedCard};
use crate::store::{LocalLists, TerminalStore};
use crate::TerminalError;

mod keys;
mod recovery;
mod release;

pub use keys::{KeyUpdate, KeyUpdatePath};
pub use recovery::RecoveryOutcome;
pub use release::Released;

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
    lists: Option<LocalLists>,
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
            lists: None,
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
        if self.lists.is_none() {
            self.lists = Some(self.store.lists()?);
        }
        self.lists
            .as_ref()
            .ok_or_else(|| TerminalError::Store("lists unavailable".into()))
    }

    /// Fetches the list entries the terminal does not have yet and stores them.
    pub fn update_lists(
        &mut self,
        link: &mut impl valuecard_core::messages::center::TerminalLink,
    ) -> Result<u64, TerminalError> {
        let mut lists = self.lists()?.clone();
        loop {
            let delta = link.list_delta(self.sam.device_id(), lists.version)?;
            let before = lists.version;
            lists.apply(&delta);
            if delta.entries.is_empty() || lists.version == before {
                break;
            }
        }
        self.store.save_lists(&lists)?;
        let version = lists.version;
        self.lists = Some(lists);
        Ok(version)
    }

    /// One command pair with a card, counted.
    fn exchange(
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
        let response = reader.exchange(&select())?;
        if response.sw == StatusWord::FILE_DEACTIVATED {
            return Err(TerminalError::CardBlocked);
        }
        if response.sw != StatusWord::SUCCESS {
            return Err(TerminalError::Card {
                command: "SELECT",
                sw: response.sw,
            });
        }
        let card = verify_select(&response.data, &self.anchor()?, self.clock.today())?;
        let fci =
            SelectResponse::decode(&response.data).map_err(|error| TerminalError::Malformed {
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
        self.move_value(from, &source, to, &destination, amount)
            .map(|mut receipt| {
                receipt.key_update = key_update;
                receipt.settled_first = settled_first;
                receipt
            })
    }

    /// The four command pairs of a transfer between two cards on one key generation.
    fn move_value(
        &mut self,
        from: &mut impl CardReader,
        source: &TransferCard,
        to: &mut impl CardReader,
        destination: &TransferCard,
        amount: Amount,
    ) -> Result<TransferReceipt, TerminalError> {
        let challenge_terminal: Challenge = random_array(&mut self.rng);
        let date = self.clock.today();
        let terminal_certificate = self.sam.certificate()?.clone();
        // 1. The destination: may it receive this much, and at what state.
        let data = self.exchange(
            to,
            "INITIALIZE TRANSFER IN",
            ins::INITIALIZE_TRANSFER_IN,
            0,
            InitializeTransferIn {
                terminal_certificate: terminal_certificate.clone(),
                challenge_terminal,
                source: source.card_id(),
                amount,
                date,
            }
            .encode(),
        )?;
        let offer_in =
            TransferInOffer::decode(&data).map_err(|error| TerminalError::Malformed {
                message: "transfer-in offer",
                error,
            })?;
        self.check_claim(
            &destination.card,
            ClaimedState {
                balance: offer_in.balance,
                counter: offer_in.counter,
                last_usage: offer_in.last_usage.as_ref(),
                last_writer_certificate: offer_in.last_writer_certificate.as_ref(),
            },
            date,
        )?;
        if offer_in.transfer_key_id != source.transfer_key_id() {
            return Err(TerminalError::Mismatch(
                "the destination's transfer key changed since SELECT",
            ));
        }
        // 2. The source reserves the amount and answers the value message.
        let data = match self.exchange(
            from,
            "TRANSFER OUT",
            ins::TRANSFER_OUT,
            0,
            TransferOut {
                challenge_terminal,
                destination: destination.card_id(),
                destination_counter: offer_in.counter,
                challenge_destination: offer_in.challenge_destination,
                amount,
                date,
            }
            .encode(),
        ) {
            Err(TerminalError::Card {
                sw: StatusWord::INSUFFICIENT_FUNDS,
                ..
            }) => {
                return Err(TerminalError::InsufficientBalance {
                    balance: self.spendable(from)?,
                    amount,
                })
            }
            other => other?,
        };
        let offer_out =
            TransferOutOffer::decode(&data).map_err(|error| TerminalError::Malformed {
                message: "transfer-out offer",
                error,
            })?;
        let sequence = self.store.next_sequence()?;
        let mut report = TransferReport {
            sequence,
            source: source.card_id(),
            destination: destination.card_id(),
            challenge_source: offer_out.challenge_source,
            amount,
            destination_counter: offer_in.counter,
            value: Some(ValueEvidence {
                binding: TransferBinding {
                    key_id: offer_out.value.key_id,
                    source: source.card_id(),
                    source_counter: offer_out.counter,
                    challenge_source: offer_out.challenge_source,
                    destination: destination.card_id(),
                    destination_counter: offer_in.counter,
                    challenge_destination: offer_in.challenge_destination,
                    challenge_terminal,
                    date,
                },
                value: offer_out.value.clone(),
            }),
            proof: None,
            destination_record: None,
            destination_previous: offer_in.last_usage.clone(),
            source_record: None,
            source_previous: offer_out.last_usage.clone(),
            release: None,
        };
        self.store.save_transfer(&report)?;
        // The source's balance must be one its last writer signed before its value may
        // reach another card; if not, the transfer is undone at once.
        if let Err(refusal) = self.check_claim(
            &source.card,
            ClaimedState {
                balance: offer_out.balance,
                counter: offer_out.counter,
                last_usage: offer_out.last_usage.as_ref(),
                last_writer_certificate: offer_out.last_writer_certificate.as_ref(),
            },
            date,
        ) {
            self.undo(from, to, &mut report)?;
            return Err(refusal);
        }
        // 3. The destination adds the value under the terminal's signed record.
        let destination_record = self.sam.sign_transfer_record(&TransferRecordOrder {
            card_id: destination.card_id(),
            kind: TransactionKind::TransferIn,
            challenge_terminal,
            challenge_card: offer_in.challenge_destination,
            counter: offer_in.counter,
            balance_before: offer_in.balance,
            amount,
            date,
            sequence_floor: self.store.next_sequence()?,
        })?;
        report.destination_record = Some(destination_record.clone());
        self.store.save_transfer(&report)?;
        let transfer_in = TransferIn {
            source_counter: offer_out.counter,
            challenge_source: offer_out.challenge_source,
            value: offer_out.value.clone(),
            record: record_signature(&destination_record),
        };
        self.pairs += 1;
        let response = match to.exchange(&command(ins::TRANSFER_IN, 0, transfer_in.encode())) {
            Ok(response) => response,
            Err(
                lost @ (ReaderError::MalformedResponse(_)
                | ReaderError::CardRemoved
                | ReaderError::Transport(_)),
            ) => {
                let _ = lost;
                return Err(TerminalError::TransferInDoubt { sequence });
            }
            Err(other) => return Err(other.into()),
        };
        if response.sw != StatusWord::SUCCESS {
            // The destination refused: nothing reached it, and the source's reservation is
            // released against its proof of that.
            self.undo(from, to, &mut report)?;
            return Err(TerminalError::Card {
                command: "TRANSFER IN",
                sw: response.sw,
            });
        }
        let proof =
            TransferProof::decode(&response.data).map_err(|error| TerminalError::Malformed {
                message: "transfer proof",
                error,
            })?;
        if proof.status != ProofStatus::Received {
            return Err(TerminalError::Mismatch("TRANSFER IN answered no receipt"));
        }
        report.proof = Some(proof.clone());
        self.store.save_transfer(&report)?;
        // 4. The source debits against the proof, under the terminal's signed record.
        let confirmation = match self.complete_received(
            from,
            source.card_id(),
            &mut report,
            proof,
            (offer_out.counter, offer_out.balance),
        ) {
            Err(TerminalError::Reader(_)) => {
                return Err(TerminalError::TransferInDoubt { sequence })
            }
            other => other?,
        };
        Ok(TransferReceipt {
            sequence,
            source: source.card_id(),
            destination: destination.card_id(),
            amount,
            source_balance_after: confirmation.balance,
            destination_balance_after: destination_record.balance_after,
            key_update: None,
            settled_first: None,
            command_pairs: self.pairs,
        })
    }

    /// TRANSFER COMPLETE with a proof of receipt: the SAM signs the source's record from
    /// its state before, and the card's confirmation must match it.
    fn complete_received(
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
        self.store.save_transfer(report)?;
        Ok(confirmation)
    }

    /// Verifies what a card claims about its state against its last writer's record.
    fn check_claim(
        &mut self,
        card: &VerifiedCard,
        claim: ClaimedState<'_>,
        today: Date,
    ) -> Result<(), TerminalError> {
        let anchor = self.anchor()?;
        let lists = self.lists()?.clone();
        verify_previous_usage(card, claim, &anchor, today, &lists)
    }

    /// What the source may still spend, for an error message.
    fn spendable(&mut self, from: &mut impl CardReader) -> Result<Amount, TerminalError> {
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
                reports,
            };
            let receipt = link.upload_transfers(&upload)?;
            let answered: Vec<u32> = upload.reports.iter().map(|r| r.sequence).collect();
            self.store.mark_transfers_uploaded(&answered)?;
            total.stored += receipt.stored;
            total.duplicates += receipt.duplicates;
            total.refused.extend(receipt.refused);
            for card in receipt.clones_detected {
                if !total.clones_detected.contains(&card) {
                    total.clones_detected.push(card);
                }
            }
        }
    }
}

fn record_signature(record: &UsageRecord) -> RecordSignature {
    RecordSignature {
        writer_sequence: record.writer_sequence,
        signature: record.signature,
        stamp: record.stamp,
    }
}
