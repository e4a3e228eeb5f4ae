//! The value transfer's protocol states (claims 10-16, after the key comparison): each step
//! takes the state the previous one produced, so TRANSFER IN cannot be sent before the
//! source reserved the value and the report is stored, nor TRANSFER COMPLETE before the
//! destination proved receipt.
//!
//! `TransferPair` (both cards read, one key generation) → `DestinationReady` (INITIALIZE
//! TRANSFER IN answered, the destination's balance checked) → `ValueReserved` (TRANSFER OUT:
//! the source reserved the amount, its balance checked, the report stored) → `ValueDelivered`
//! (TRANSFER IN: the destination added the value and proved it) → `TransferReceipt`
//! (TRANSFER COMPLETE: the source debited).

use super::*;

/// Both cards read, on one transfer-key generation.
#[derive(Debug, Clone)]
pub struct TransferPair {
    pub(super) source: TransferCard,
    pub(super) destination: TransferCard,
}

/// The destination accepted to receive `amount`; its balance is one its last writer signed.
#[derive(Debug)]
pub struct DestinationReady {
    pair: TransferPair,
    amount: Amount,
    challenge_terminal: Challenge,
    date: Date,
    offer_in: TransferInOffer,
}

/// The source reserved the amount and answered the value message; the terminal's report of
/// the transfer is stored.
#[derive(Debug)]
pub struct ValueReserved {
    ready: DestinationReady,
    offer_out: TransferOutOffer,
    report: TransferReport,
}

/// The destination holds the value and proved it.
#[derive(Debug)]
pub struct ValueDelivered {
    reserved: ValueReserved,
    proof: TransferProof,
    destination_balance_after: Amount,
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> SettlementTerminal<S, T, R> {
    /// INITIALIZE TRANSFER IN: may the destination receive `amount`, and at what state.
    pub fn initialize_transfer_in(
        &mut self,
        to: &mut impl CardReader,
        pair: TransferPair,
        amount: Amount,
    ) -> Result<DestinationReady, TerminalError> {
        let challenge_terminal: Challenge = random_array(&mut self.rng);
        let date = self.clock.today();
        let terminal_certificate = self.sam.certificate()?.clone();
        let data = self.exchange(
            to,
            "INITIALIZE TRANSFER IN",
            ins::INITIALIZE_TRANSFER_IN,
            0,
            InitializeTransferIn {
                terminal_certificate,
                challenge_terminal,
                source: pair.source.card_id(),
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
            &pair.destination.card,
            ClaimedState {
                balance: offer_in.balance,
                counter: offer_in.counter,
                last_usage: offer_in.last_usage.as_ref(),
                last_writer_certificate: offer_in.last_writer_certificate.as_ref(),
            },
            date,
        )?;
        if offer_in.transfer_key_id != pair.source.transfer_key_id() {
            return Err(TerminalError::Mismatch(
                "the destination's transfer key changed since SELECT",
            ));
        }
        Ok(DestinationReady {
            pair,
            amount,
            challenge_terminal,
            date,
            offer_in,
        })
    }

    /// TRANSFER OUT: the source reserves the amount and answers the value message. The
    /// report is stored at once; if the source's balance is not one its last writer signed,
    /// the transfer is undone in this session and refused.
    pub fn transfer_out(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
        ready: DestinationReady,
    ) -> Result<ValueReserved, TerminalError> {
        let (source, destination) = (
            ready.pair.source.card_id(),
            ready.pair.destination.card_id(),
        );
        let data = match self.exchange(
            from,
            "TRANSFER OUT",
            ins::TRANSFER_OUT,
            0,
            TransferOut {
                challenge_terminal: ready.challenge_terminal,
                destination,
                destination_counter: ready.offer_in.counter,
                challenge_destination: ready.offer_in.challenge_destination,
                amount: ready.amount,
                date: ready.date,
            }
            .encode(),
        ) {
            Err(TerminalError::Card {
                sw: StatusWord::INSUFFICIENT_FUNDS,
                ..
            }) => {
                return Err(TerminalError::InsufficientBalance {
                    balance: self.spendable(from)?,
                    amount: ready.amount,
                })
            }
            other => other?,
        };
        let offer_out =
            TransferOutOffer::decode(&data).map_err(|error| TerminalError::Malformed {
                message: "transfer-out offer",
                error,
            })?;
        let mut report = TransferReport {
            sequence: self.store.next_sequence()?,
            source,
            destination,
            challenge_source: offer_out.challenge_source,
            amount: ready.amount,
            destination_counter: ready.offer_in.counter,
            value: Some(ValueEvidence {
                binding: TransferBinding {
                    key_id: offer_out.value.key_id,
                    source,
                    source_counter: offer_out.counter,
                    challenge_source: offer_out.challenge_source,
                    destination,
                    destination_counter: ready.offer_in.counter,
                    challenge_destination: ready.offer_in.challenge_destination,
                    challenge_terminal: ready.challenge_terminal,
                    date: ready.date,
                },
                value: offer_out.value.clone(),
            }),
            proof: None,
            destination_record: None,
            destination_previous: ready.offer_in.last_usage.clone(),
            source_record: None,
            source_previous: offer_out.last_usage.clone(),
            release: None,
        };
        self.save_report(&mut report)?;
        // The source's balance must be one its last writer signed before its value may
        // reach another card.
        if let Err(refusal) = self.check_claim(
            &ready.pair.source.card,
            ClaimedState {
                balance: offer_out.balance,
                counter: offer_out.counter,
                last_usage: offer_out.last_usage.as_ref(),
                last_writer_certificate: offer_out.last_writer_certificate.as_ref(),
            },
            ready.date,
        ) {
            self.undo(from, to, &mut report)?;
            return Err(refusal);
        }
        Ok(ValueReserved {
            ready,
            offer_out,
            report,
        })
    }

    /// TRANSFER IN: the SAM signs the destination's record, the report takes it, and the
    /// destination adds the value and proves it. A lost answer leaves the transfer in doubt;
    /// a refusal is undone at once against the destination's proof of non-receipt.
    pub fn deliver(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
        mut reserved: ValueReserved,
    ) -> Result<ValueDelivered, TerminalError> {
        let ready = &reserved.ready;
        let destination_record = self.sam.sign_transfer_record(&TransferRecordOrder {
            card_id: ready.pair.destination.card_id(),
            kind: TransactionKind::TransferIn,
            challenge_terminal: ready.challenge_terminal,
            challenge_card: ready.offer_in.challenge_destination,
            counter: ready.offer_in.counter,
            balance_before: ready.offer_in.balance,
            amount: ready.amount,
            date: ready.date,
            sequence_floor: self.store.next_sequence()?,
        })?;
        reserved.report.destination_record = Some(destination_record.clone());
        self.save_report(&mut reserved.report)?;
        let transfer_in = TransferIn {
            source_counter: reserved.offer_out.counter,
            challenge_source: reserved.offer_out.challenge_source,
            value: reserved.offer_out.value.clone(),
            record: record_signature(&destination_record),
        };
        self.pairs += 1;
        let sequence = reserved.report.sequence;
        let response = match to.exchange(&command(ins::TRANSFER_IN, 0, transfer_in.encode())) {
            Ok(response) => response,
            Err(
                ReaderError::MalformedResponse(_)
                | ReaderError::CardRemoved
                | ReaderError::Transport(_),
            ) => return Err(TerminalError::TransferInDoubt { sequence }),
            Err(other) => return Err(other.into()),
        };
        if response.sw != StatusWord::SUCCESS {
            // The destination refused: nothing reached it, and the source's reservation is
            // released against its proof of that.
            self.undo(from, to, &mut reserved.report)?;
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
        reserved.report.proof = Some(proof.clone());
        self.save_report(&mut reserved.report)?;
        Ok(ValueDelivered {
            reserved,
            proof,
            destination_balance_after: destination_record.balance_after,
        })
    }

    /// TRANSFER COMPLETE: the source debits against the destination's proof, under the
    /// terminal's signed record. A lost answer leaves the transfer in doubt.
    pub fn complete(
        &mut self,
        from: &mut impl CardReader,
        delivered: ValueDelivered,
    ) -> Result<TransferReceipt, TerminalError> {
        let ValueDelivered {
            reserved,
            proof,
            destination_balance_after,
        } = delivered;
        let ValueReserved {
            ready,
            offer_out,
            mut report,
        } = reserved;
        let sequence = report.sequence;
        let confirmation = match self.complete_received(
            from,
            ready.pair.source.card_id(),
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
            source: ready.pair.source.card_id(),
            destination: ready.pair.destination.card_id(),
            amount: ready.amount,
            source_balance_after: confirmation.balance,
            destination_balance_after,
            key_update: None,
            settled_first: None,
            command_pairs: self.pairs,
        })
    }
}
