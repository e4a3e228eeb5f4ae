//! Writes cut short: a memory card cannot sign, so a write torn between its value area and
//! its signature leaves a card whose value does not verify. The machine that was writing
//! holds the signed record in its log and finishes the write when the card comes back; a
//! machine without a record writes back the center's evidence, and only when the card
//! shows exactly that state.

use valuecard_core::ids::DeviceId;
use valuecard_core::messages::memcard::{
    CardContent, MemcardLink, SignedState, ValueArea, WriteKind, WriteRecord, WriteUpload,
    COUNTER_START,
};
use valuecard_core::money::Amount;
use valuecard_reader::CardReader;
use valuecard_sam::Sam;

use super::machine::{MemcardMachine, WRITE_UPLOAD_BATCH_MAX};
use super::{MemcardRefusal, PresentedCard};
use crate::store::{MemcardLog, TerminalStore, WriteStatus};
use crate::TerminalError;

/// What a presentation did about an earlier write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The card held this write's value area: its signature and certificate were written.
    Finished { sequence: u32 },
    /// A charge whose value area never reached the card (the money was taken in and the
    /// float spent): written whole now.
    Redone { sequence: u32 },
    /// A payment whose value area never reached the card: nothing moved, nothing is
    /// uploaded.
    Voided { sequence: u32 },
    /// The card moved on since this write and the machine cannot tell whether it landed;
    /// it stays pending for the center to settle.
    Unresolved { sequence: u32 },
    /// A write torn at another machine, finished from the center's evidence.
    RestoredFromCenter { writer: DeviceId, counter: u32 },
}

/// What the center made of this machine's pending writes (`MemcardMachine::report_pending`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingReport {
    /// Held by the center as restore evidence: any machine can now finish them on a card
    /// that shows their state.
    pub held: u32,
    /// Landed (a later record started from them): marked done and uploaded here.
    pub landed: u32,
    /// Superseded (the card took another write instead): voided here.
    pub superseded: u32,
    /// The money taken in for superseded charges, which no card received: owed back to
    /// whoever paid it.
    pub charges_owed: Amount,
    pub refused: Vec<(u32, String)>,
}

/// Whether the card shows `previous` (or a new card, for a first charge) in counter and
/// value area: the state a write started from.
fn shows_start(presented: &PresentedCard, previous: Option<&SignedState>) -> bool {
    match previous {
        Some(previous) => presented.shows(previous.counter, &previous.value_area),
        None => presented.shows(COUNTER_START, &ValueArea::Blank),
    }
}

impl<S: Sam, T: TerminalStore + MemcardLog> MemcardMachine<S, T> {
    /// Settles this machine's pending writes on the presented card, oldest first, reading
    /// the card again after each one that wrote to it.
    pub(super) fn repair_from_log(
        &mut self,
        reader: &mut impl CardReader,
        presented: &mut PresentedCard,
    ) -> Result<Vec<RepairOutcome>, TerminalError> {
        let mut outcomes = Vec::new();
        for logged in self.store.pending_writes_for_card(&presented.card_id())? {
            let outcome = self.settle(reader, presented, logged.record)?;
            if matches!(
                outcome,
                RepairOutcome::Finished { .. } | RepairOutcome::Redone { .. }
            ) {
                *presented = PresentedCard::read(reader)?;
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    fn settle(
        &mut self,
        reader: &mut impl CardReader,
        presented: &PresentedCard,
        record: WriteRecord,
    ) -> Result<RepairOutcome, TerminalError> {
        let sequence = record.sequence;
        if presented.shows(record.written.counter, &record.written.value_area) {
            // The value landed; the signature or the certificate did not (or the answer
            // was lost after them).
            self.write_tail(reader, &record, presented.certificate_area_bytes())?;
            self.store.set_write_status(sequence, WriteStatus::Done)?;
            return Ok(RepairOutcome::Finished { sequence });
        }
        if !shows_start(presented, record.previous.as_ref()) {
            return Ok(RepairOutcome::Unresolved { sequence });
        }
        match record.kind {
            WriteKind::Charge => {
                // The signed state is for exactly the counter the card will show after one
                // value write, so writing it now is the write that was meant.
                let pending = self.pending_from_log(record, presented);
                let written = self.write_value(reader, pending)?;
                let signed = self.write_signature(reader, written)?;
                self.finish(signed, Vec::new())?;
                Ok(RepairOutcome::Redone { sequence })
            }
            WriteKind::Payment => {
                // Nothing was served for it. Its state, signed at a counter the card has not
                // reached, could only ever lower the card's value.
                self.store.set_write_status(sequence, WriteStatus::Voided)?;
                Ok(RepairOutcome::Voided { sequence })
            }
        }
    }

    /// Reports the writes still pending in the log to the center, in batches, and settles
    /// the ones it answers for: landed ones are done (the center counted them), superseded
    /// ones voided. The rest stay pending, held by the center as evidence, until the card
    /// comes back here or a later record settles them.
    pub fn report_pending(
        &mut self,
        link: &mut impl MemcardLink,
    ) -> Result<PendingReport, TerminalError> {
        let mut report = PendingReport::default();
        let mut after = 0;
        loop {
            let records = self.store.pending_writes(after, WRITE_UPLOAD_BATCH_MAX)?;
            let Some(last) = records.last() else {
                return Ok(report);
            };
            after = last.sequence;
            let upload = WriteUpload {
                machine: self.sam.device_id(),
                records,
            };
            let receipt = link.report_pending(&upload)?;
            for record in &upload.records {
                let sequence = record.sequence;
                if receipt.landed.contains(&sequence) {
                    self.store.set_write_status(sequence, WriteStatus::Done)?;
                    self.store.mark_writes_uploaded(&[sequence])?;
                    report.landed += 1;
                } else if receipt.superseded.contains(&sequence) {
                    self.store.set_write_status(sequence, WriteStatus::Voided)?;
                    report.superseded += 1;
                    if record.kind == WriteKind::Charge {
                        let amount = record.amount().unwrap_or(Amount::ZERO);
                        report.charges_owed = report
                            .charges_owed
                            .checked_add(amount)
                            .unwrap_or(report.charges_owed);
                    }
                }
            }
            report.held += receipt.held;
            report.refused.extend(receipt.refused);
        }
    }

    /// Writes back the signature and certificate of the card's newest state as the center
    /// holds it, if the card's counter and value area are exactly that state's and the
    /// evidence checks as any card does. `None` when the evidence does not fit the card.
    pub(super) fn repair_from_center(
        &mut self,
        reader: &mut impl CardReader,
        presented: &PresentedCard,
        link: &mut dyn MemcardLink,
    ) -> Result<Option<RepairOutcome>, TerminalError> {
        let Some(evidence) = link.latest_state(&presented.card_id())? else {
            return Ok(None);
        };
        let written = &evidence.record.written;
        if written.card_id != presented.card_id()
            || !presented.shows(written.counter, &written.value_area)
        {
            return Ok(None);
        }
        let repaired = CardContent {
            card_id: written.card_id,
            counter: written.counter,
            value_area: written.value_area.clone(),
            signature: written.signature,
            certificate: Some(evidence.writer_certificate.clone()),
        };
        let state = self
            .sam
            .check_memcard_content(&repaired, self.clock.today())
            .map_err(MemcardRefusal::from_sam)?;
        if state.writer() != Some(written.writer) {
            return Ok(None);
        }
        self.check_writer_not_listed(state.writer())?;
        let certificate_area = valuecard_core::messages::memcard::encode_certificate_area(
            &evidence.writer_certificate,
        );
        super::write_memory_changed(
            reader,
            valuecard_core::messages::memcard::map::CERTIFICATE_AREA,
            &certificate_area,
            presented.certificate_area_bytes(),
        )?;
        super::write_memory(
            reader,
            valuecard_core::messages::memcard::map::SIGNATURE_AREA,
            &written.signature.0,
        )?;
        Ok(Some(RepairOutcome::RestoredFromCenter {
            writer: written.writer,
            counter: written.counter,
        }))
    }
}
