//! The checks of one transfer report, before anything of it is stored: the writer's
//! signatures over both records, the genuineness of the records each card showed before,
//! the destination's proof and the source's value message under the center's own derivation
//! of the transfer key, and the chaining of counters and balances.

use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::purse::{TransactionKind, UsageRecord};
use valuecard_core::messages::transfer::{ProofStatus, TransferReport};
use valuecard_core::money::Amount;

use crate::loads::Writer;
use crate::Center;

/// Why one report was not accepted: its own fault (refused, the rest of the batch goes on),
/// or the center's (the whole upload fails and is sent again).
pub(crate) enum ReportError {
    Refused(String),
    Center(CenterError),
}

impl From<&str> for ReportError {
    fn from(reason: &str) -> Self {
        ReportError::Refused(reason.to_owned())
    }
}

impl From<CenterError> for ReportError {
    fn from(error: CenterError) -> Self {
        ReportError::Center(error)
    }
}

/// One card's half of a transfer, proven by the terminal's signed record and the card's
/// genuine previous record.
pub(crate) struct Half {
    /// The card state the update consumed (its counter before).
    pub counter_before: u32,
    pub balance_after: Amount,
    pub writer_sequence: u32,
    /// The load that wrote the state consumed, when a load did: it reached the card.
    pub previous_load: Option<crate::loads::StoredLoad>,
}

/// A report every check passed.
pub(crate) struct Checked<'a> {
    pub report: &'a TransferReport,
    pub value_key_id: Option<u32>,
    pub destination: Option<Half>,
    pub source: Option<Half>,
}

impl Checked<'_> {
    pub fn received(&self) -> bool {
        self.report
            .proof
            .as_ref()
            .is_some_and(|p| p.status == ProofStatus::Received)
    }

    pub fn undone(&self) -> bool {
        self.report
            .proof
            .as_ref()
            .is_some_and(|p| p.status == ProofStatus::NotReceived)
    }
}

impl Center {
    /// Every check of one report; `current` is the newest transfer-key generation (no genuine
    /// card holds a later one).
    pub(crate) fn check_transfer_report<'a>(
        &mut self,
        terminal_id: DeviceId,
        terminal_key: &PublicKey,
        report: &'a TransferReport,
        current: u32,
    ) -> Result<Checked<'a>, ReportError> {
        if report.amount == Amount::ZERO {
            return Err("a transfer must move a positive amount".into());
        }
        if report.source == report.destination {
            return Err("a card cannot transfer to itself".into());
        }
        let released = match &report.release {
            Some(release) => {
                let root_key = self.keys.root.public_key();
                if !super::release::release_given(&mut self.db, report, release, &root_key)? {
                    return Err("a release the center never gave for this transfer".into());
                }
                true
            }
            None => false,
        };
        self.require_issued(&report.source)?;
        // A released transfer's destination may be a card the center never issued: that is
        // one ground of the release.
        if !released {
            self.require_issued(&report.destination)?;
        }
        let value_key_id = self.check_value(report, current)?;
        let received = self.check_proof(report, current)?;
        // A release next to a proof: not received agrees with it (nothing moved); received
        // contradicts it, and is stored as the evidence it is (`release::contradict_release`).
        // A released transfer keeps the records each card showed at TRANSFER OUT: they
        // prove nothing without a half that follows them, and none is stored.
        let previous_shown =
            report.destination_previous.is_some() || report.source_previous.is_some();
        // A terminal that sent TRANSFER IN and lost the answer reports the destination's
        // record with no proof: in doubt. It proves nothing yet and no half of it is stored,
        // but it is taken (what it says bars a release, `release::note_destination_doubts`),
        // and its next form, with the proof, follows under a new sequence.
        let in_doubt = report.proof.is_none()
            && !released
            && report.destination_record.is_some()
            && report.source_record.is_none();
        if !received
            && !in_doubt
            && (report.destination_record.is_some()
                || report.source_record.is_some()
                || (previous_shown && !released))
        {
            return Err("a transfer record without the destination's proof of receipt".into());
        }
        let destination = match &report.destination_record {
            Some(_) if in_doubt => None,
            Some(record) => {
                Some(self.check_destination(terminal_id, terminal_key, report, record)?)
            }
            None if report.destination_previous.is_some() && !released => {
                return Err("a previous record without the record that follows it".into())
            }
            None => None,
        };
        let source = match &report.source_record {
            Some(record) => Some(self.check_source(terminal_id, terminal_key, report, record)?),
            None if report.source_previous.is_some() && !released && !in_doubt => {
                return Err("a previous record without the record that follows it".into())
            }
            None => None,
        };
        Ok(Checked {
            report,
            value_key_id,
            destination,
            source,
        })
    }

    fn require_issued(&mut self, card: &CardId) -> Result<(), ReportError> {
        match self.card_record(card) {
            Ok((status, _, _)) if status != "assigned" => Ok(()),
            Ok(_) => Err(ReportError::Refused(format!("card {card} is not issued"))),
            Err(error @ CenterError::Storage(_)) => Err(error.into()),
            Err(error) => Err(ReportError::Refused(error.to_string())),
        }
    }

    /// The value message opens, under the generation it names, with the binding the report
    /// gives, to the reported amount: the source card really sent this amount to this
    /// destination at this state.
    fn check_value(
        &mut self,
        report: &TransferReport,
        current: u32,
    ) -> Result<Option<u32>, ReportError> {
        let Some(evidence) = &report.value else {
            return Ok(None);
        };
        let binding = &evidence.binding;
        if binding.source != report.source
            || binding.destination != report.destination
            || binding.challenge_source != report.challenge_source
            || binding.destination_counter != report.destination_counter
        {
            return Err("the value message is bound to another transfer".into());
        }
        let key_id = evidence.value.key_id;
        if key_id == 0 || key_id > current || binding.key_id != key_id {
            return Err("the value message names a transfer key the center never issued".into());
        }
        let amount = evidence
            .value
            .open(&self.transfer_key(key_id), binding)
            .map_err(|_| "the value message does not open under the transfer key")?;
        if amount != report.amount {
            return Err("the value message carries another amount".into());
        }
        Ok(Some(key_id))
    }

    /// The destination's proof verifies under the generation it names, for this transfer,
    /// at the counter its status implies. Returns whether it proves receipt.
    fn check_proof(&mut self, report: &TransferReport, current: u32) -> Result<bool, ReportError> {
        let Some(proof) = &report.proof else {
            return Ok(false);
        };
        if proof.key_id == 0 || proof.key_id > current {
            return Err("the proof names a transfer key the center never issued".into());
        }
        proof
            .verify(&self.transfer_key(proof.key_id), &report.proof_subject())
            .map_err(|_| "the destination's proof does not verify")?;
        let expected = match proof.status {
            ProofStatus::Received => report.destination_counter.checked_add(1),
            ProofStatus::NotReceived => Some(report.destination_counter),
        };
        if Some(proof.destination_counter) != expected {
            return Err("the proof's counter does not match the transfer".into());
        }
        Ok(proof.status == ProofStatus::Received)
    }

    fn check_destination(
        &mut self,
        terminal_id: DeviceId,
        terminal_key: &PublicKey,
        report: &TransferReport,
        record: &UsageRecord,
    ) -> Result<Half, ReportError> {
        check_record(
            terminal_id,
            terminal_key,
            report,
            &report.destination,
            record,
            TransactionKind::TransferIn,
        )?;
        if Some(record.counter) != report.destination_counter.checked_add(1) {
            return Err("the destination's record is not at the counter it received at".into());
        }
        if let Some(evidence) = &report.value {
            let binding = &evidence.binding;
            if record.challenge_card != binding.challenge_destination
                || record.challenge_writer != binding.challenge_terminal
                || record.date != binding.date
            {
                return Err("the destination's record belongs to another session".into());
            }
        }
        let balance_before = match &report.destination_previous {
            Some(previous) => previous.balance_after,
            // A card fresh from personalization has no record yet, and nothing on it.
            None if report.destination_counter == 0 => Amount::ZERO,
            None => return Err("the destination's previous record is missing".into()),
        };
        let expected = balance_before
            .checked_add(report.amount)
            .map_err(|_| "the destination's balance overflows")?;
        if record.balance_after != expected {
            return Err("the destination's balances do not add up".into());
        }
        let previous_load = match &report.destination_previous {
            Some(previous) => {
                if previous.counter != report.destination_counter {
                    return Err(
                        "the destination's previous record does not describe the state it received in"
                            .into(),
                    );
                }
                self.previous_writer(&report.destination, previous)?
            }
            None => None,
        };
        Ok(Half {
            counter_before: report.destination_counter,
            balance_after: record.balance_after,
            writer_sequence: record.writer_sequence,
            previous_load,
        })
    }

    fn check_source(
        &mut self,
        terminal_id: DeviceId,
        terminal_key: &PublicKey,
        report: &TransferReport,
        record: &UsageRecord,
    ) -> Result<Half, ReportError> {
        check_record(
            terminal_id,
            terminal_key,
            report,
            &report.source,
            record,
            TransactionKind::TransferOut,
        )?;
        if record.challenge_card != report.challenge_source {
            return Err("the source's record belongs to another transfer".into());
        }
        let counter_before = record
            .counter
            .checked_sub(1)
            .ok_or("the source's record has no state before it")?;
        if let Some(evidence) = &report.value {
            // The source may have spent in between, never gone back.
            if counter_before < evidence.binding.source_counter {
                return Err("the source's record is older than the value message".into());
            }
        }
        let previous = report
            .source_previous
            .as_ref()
            .ok_or("the source's previous record is missing")?;
        if previous.counter != counter_before {
            return Err(
                "the source's previous record does not describe the state it debited".into(),
            );
        }
        let expected = previous
            .balance_after
            .checked_sub(report.amount)
            .map_err(|_| "the source did not hold the amount")?;
        if record.balance_after != expected {
            return Err("the source's balances do not add up".into());
        }
        let previous_load = self.previous_writer(&report.source, previous)?;
        Ok(Half {
            counter_before,
            balance_after: record.balance_after,
            writer_sequence: record.writer_sequence,
            previous_load,
        })
    }

    /// The previous record is genuine: the center's own load, or a terminal of the role
    /// that writes its kind.
    fn previous_writer(
        &mut self,
        card: &CardId,
        previous: &UsageRecord,
    ) -> Result<Option<crate::loads::StoredLoad>, ReportError> {
        match self.genuine_writer(card, previous)? {
            Some(Writer::Load(load)) => Ok(Some(load)),
            Some(Writer::Terminal) => Ok(None),
            None => Err(ReportError::Refused(format!(
                "the previous record of card {card} was not written by a party the center knows"
            ))),
        }
    }
}

/// The fields every transfer record shares, and the uploading terminal's signature.
fn check_record(
    terminal_id: DeviceId,
    terminal_key: &PublicKey,
    report: &TransferReport,
    card: &CardId,
    record: &UsageRecord,
    kind: TransactionKind,
) -> Result<(), ReportError> {
    if record.kind != kind {
        return Err("a transfer record of the wrong kind".into());
    }
    if record.writer != terminal_id {
        return Err("a transfer record written by another terminal".into());
    }
    if record.amount != report.amount {
        return Err("a transfer record of another amount".into());
    }
    terminal_key
        .verify(&record.signed_message(card), &record.signature)
        .map_err(|_| "the terminal's signature over a transfer record does not verify")?;
    Ok(())
}
