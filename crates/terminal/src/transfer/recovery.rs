//! Settling a transfer the source holds pending (the recovery rule of docs/protocols.md
//! § 13): ask the destination whether it applied it (TRANSFER STATUS), then complete the
//! source with that proof: debit against a receipt, release against a proof of non-receipt.
//! Any settlement terminal can do it, in any later session with the same two cards.

use valuecard_core::messages::purse::PurseStatus;
use valuecard_core::messages::transfer::{PendingTransfer, TransferInfo, TransferOutcome};

use super::*;

/// How a pending transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The destination had the value: the source debited it now.
    Completed { sequence: u32, amount: Amount },
    /// The destination never applied it: the source's reservation was released.
    Undone { sequence: u32, amount: Amount },
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> SettlementTerminal<S, T, R> {
    /// GET TRANSFER INFO (claims 2, 4, 6).
    pub fn transfer_info(
        &mut self,
        reader: &mut impl CardReader,
    ) -> Result<TransferInfo, TerminalError> {
        let data = self.exchange(
            reader,
            "GET TRANSFER INFO",
            ins::GET_TRANSFER_INFO,
            0,
            Vec::new(),
        )?;
        TransferInfo::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "transfer information",
            error,
        })
    }

    /// Settles the transfer the card in `from` holds pending, with the card in `to` (its
    /// destination). `None` when the source holds nothing pending.
    pub fn settle(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
    ) -> Result<Option<RecoveryOutcome>, TerminalError> {
        let mut source = self.read_card(from)?;
        let mut destination = self.read_card(to)?;
        let pending = if source.pending() {
            self.transfer_info(from)?.pending
        } else {
            None
        };
        // First the older transfers between the two whose answers this terminal lost (the
        // source no longer holds them), then the one it holds pending.
        let noted = self.note_completed(
            from,
            &source,
            to,
            &destination,
            pending.as_ref().map(|p| p.challenge_source),
        )?;
        let settled = match pending {
            Some(_) => {
                self.sync_keys(from, &mut source, to, &mut destination)?;
                self.settle_pending(from, &source, to, &destination)?
            }
            None => None,
        };
        Ok(settled.or(noted))
    }

    pub(super) fn settle_pending(
        &mut self,
        from: &mut impl CardReader,
        source: &TransferCard,
        to: &mut impl CardReader,
        destination: &TransferCard,
    ) -> Result<Option<RecoveryOutcome>, TerminalError> {
        let info = self.transfer_info(from)?;
        if info.card_id != source.card_id() {
            return Err(TerminalError::Mismatch(
                "GET TRANSFER INFO names another card",
            ));
        }
        let Some(pending) = info.pending.clone() else {
            return Ok(None);
        };
        if pending.destination != destination.card_id() {
            return Err(TerminalError::TransferPendingElsewhere {
                source_card: source.card_id(),
                destination: pending.destination,
            });
        }
        let mut report = self.report_for(source.card_id(), &pending)?;
        let proof = self.ask_destination(to, source.card_id(), &pending, report.sequence)?;
        report.proof = Some(proof.clone());
        self.save_report(&mut report)?;
        let sequence = report.sequence;
        match proof.status {
            ProofStatus::Received => {
                // The state the source debits from is the one it has now (it may have been
                // used since); its record is what the center chains the debit to.
                let status = self.read_purse(from, source.card_id())?;
                report.source_previous = status.last_usage.clone();
                self.complete_received(
                    from,
                    source.card_id(),
                    &mut report,
                    proof,
                    (status.counter, status.balance),
                )?;
                Ok(Some(RecoveryOutcome::Completed {
                    sequence,
                    amount: pending.amount,
                }))
            }
            ProofStatus::NotReceived => {
                self.release(from, &mut report, proof)?;
                Ok(Some(RecoveryOutcome::Undone {
                    sequence,
                    amount: pending.amount,
                }))
            }
        }
    }

    /// The source holds nothing pending, but this terminal may hold reports of its transfers
    /// whose answers were lost. The destination tells which it applied (TRANSFER STATUS);
    /// a transfer it applied and the source no longer holds was debited by the source (a
    /// pending transfer is only released against a proof of non-receipt), so it is settled;
    /// the source's record of it is taken when it is still the card's last.
    fn note_completed(
        &mut self,
        from: &mut impl CardReader,
        source: &TransferCard,
        to: &mut impl CardReader,
        destination: &TransferCard,
        still_pending: Option<Challenge>,
    ) -> Result<Option<RecoveryOutcome>, TerminalError> {
        let unfinished: Vec<TransferReport> = self
            .store
            .transfers()?
            .into_iter()
            .filter(|stored| {
                !stored.settled
                    && Some(stored.report.challenge_source) != still_pending
                    && stored.report.source == source.card_id()
                    && stored.report.destination == destination.card_id()
                    && matches!(
                        stored.report.outcome(),
                        TransferOutcome::Received | TransferOutcome::InDoubt
                    )
            })
            .map(|stored| stored.report)
            .collect();
        let mut outcome = None;
        for mut report in unfinished {
            if report.proof.is_none() {
                let pending = PendingTransfer {
                    destination: report.destination,
                    destination_counter: report.destination_counter,
                    challenge_source: report.challenge_source,
                    amount: report.amount,
                    key_id: report.value.as_ref().map_or(0, |v| v.value.key_id),
                };
                let proof =
                    self.ask_destination(to, source.card_id(), &pending, report.sequence)?;
                report.proof = Some(proof);
                self.save_report(&mut report)?;
            }
            let sequence = report.sequence;
            let amount = report.amount;
            if report.outcome() != TransferOutcome::Received {
                continue;
            }
            let status = self.read_purse(from, source.card_id())?;
            // The card's last record is this debit, and the report holds the record it
            // debited from (the card may have been loaded since TRANSFER OUT; then only the
            // source's later records can tell the center which state it debited).
            if let Some(last) = status.last_usage.filter(|last| {
                last.kind == TransactionKind::TransferOut
                    && last.challenge_card == report.challenge_source
                    && report.source_previous.as_ref().is_some_and(|previous| {
                        previous.counter.checked_add(1) == Some(last.counter)
                    })
            }) {
                report.source_record = Some(last);
                self.save_report(&mut report)?;
            } else {
                self.store.mark_transfer_settled(sequence)?;
            }
            outcome = Some(RecoveryOutcome::Completed { sequence, amount });
        }
        Ok(outcome)
    }

    /// Undoes the transfer in `report` in this same session: the destination's proof that it
    /// did not (and now cannot) apply it releases the source's reservation.
    pub(super) fn undo(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
        report: &mut TransferReport,
    ) -> Result<(), TerminalError> {
        let pending = PendingTransfer {
            destination: report.destination,
            destination_counter: report.destination_counter,
            challenge_source: report.challenge_source,
            amount: report.amount,
            key_id: report.value.as_ref().map_or(0, |v| v.value.key_id),
        };
        let proof = self.ask_destination(to, report.source, &pending, report.sequence)?;
        report.proof = Some(proof.clone());
        self.save_report(report)?;
        match proof.status {
            ProofStatus::NotReceived => self.release(from, report, proof),
            ProofStatus::Received => Err(TerminalError::Mismatch(
                "the destination reports a transfer it was never sent",
            )),
        }
    }

    fn ask_destination(
        &mut self,
        to: &mut impl CardReader,
        source: CardId,
        pending: &PendingTransfer,
        sequence: u32,
    ) -> Result<TransferProof, TerminalError> {
        let query = TransferStatusQuery {
            source,
            challenge_source: pending.challenge_source,
            destination_counter: pending.destination_counter,
        };
        let data = match self.exchange(
            to,
            "TRANSFER STATUS",
            ins::TRANSFER_STATUS,
            0,
            query.encode(),
        ) {
            Err(TerminalError::Card {
                sw: StatusWord::REFERENCED_DATA_NOT_FOUND,
                ..
            }) => return Err(TerminalError::TransferUnresolvable { sequence }),
            other => other?,
        };
        TransferProof::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "transfer proof",
            error,
        })
    }

    fn release(
        &mut self,
        from: &mut impl CardReader,
        report: &mut TransferReport,
        proof: TransferProof,
    ) -> Result<(), TerminalError> {
        self.exchange(
            from,
            "TRANSFER COMPLETE",
            ins::TRANSFER_COMPLETE,
            0,
            TransferComplete {
                proof,
                record: None,
            }
            .encode(),
        )?;
        self.save_report(report)
    }

    fn read_purse(
        &mut self,
        reader: &mut impl CardReader,
        card_id: CardId,
    ) -> Result<PurseStatus, TerminalError> {
        self.pairs += 1;
        let data = run(
            reader,
            "READ PURSE",
            &crate::card_commands::proprietary(
                valuecard_core::messages::purse::ins::READ_PURSE,
                Vec::new(),
            ),
        )?;
        let status = PurseStatus::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "purse status",
            error,
        })?;
        if status.card_id != card_id {
            return Err(TerminalError::Mismatch("READ PURSE names another card"));
        }
        Ok(status)
    }

    /// The report this terminal already keeps for the pending transfer, or a new one.
    pub(super) fn report_for(
        &mut self,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferReport, TerminalError> {
        if let Some(stored) = self.store.transfer_of(&source, &pending.challenge_source)? {
            return Ok(stored.report);
        }
        Ok(TransferReport {
            sequence: self.store.next_sequence()?,
            source,
            destination: pending.destination,
            challenge_source: pending.challenge_source,
            amount: pending.amount,
            destination_counter: pending.destination_counter,
            value: None,
            proof: None,
            destination_record: None,
            destination_previous: None,
            source_record: None,
            source_previous: None,
            release: None,
        })
    }
}
