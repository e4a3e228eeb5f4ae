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
    /// The center's release this terminal gave the source: its reservation was dropped
    /// with no proof from the destination (the center keeps its own record of it).
    pub release: Option<TransferRelease>,
}

/// How far a reported transfer got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferOutcome {
    /// The destination has the value and the source debited it.
    Completed,
    /// The destination has the value; the source still holds it reserved (pending).
    Received,
    /// The destination proved it never applied the transfer, or the center released the
    /// source's reservation: nothing moved.
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
            (None, _) if self.release.is_some() => TransferOutcome::Undone,
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

/// Tags inside an encoded report: each optional record in its own template, since records
/// share one tag.
mod report_tag {
    pub const SEQUENCE: u32 = 0x9F31;
    pub const VALUE: u32 = 0xBF32;
    pub const PROOF: u32 = 0xBF33;
    pub const DESTINATION_RECORD: u32 = 0xBF34;
    pub const DESTINATION_PREVIOUS: u32 = 0xBF35;
    pub const SOURCE_RECORD: u32 = 0xBF36;
    pub const SOURCE_PREVIOUS: u32 = 0xBF37;
    pub const SOURCE: u32 = 0x9F38;
    pub const DESTINATION: u32 = 0x9F39;
    pub const SOURCE_COUNTER: u32 = 0x9F3A;
    pub const DESTINATION_CHALLENGE: u32 = 0x9F3B;
    pub const RELEASE: u32 = 0xBF3C;
}

impl TransferBinding {
    fn encode_into(&self, w: &mut TlvWriter) {
        w.put_u32(tag::TRANSFER_KEY_ID, self.key_id)
            .put(report_tag::SOURCE, self.source.as_bytes())
            .put_u32(report_tag::SOURCE_COUNTER, self.source_counter)
            .put(tag::PEER_CHALLENGE, &self.challenge_source)
            .put(report_tag::DESTINATION, self.destination.as_bytes())
            .put_u32(tag::PEER_COUNTER, self.destination_counter)
            .put(
                report_tag::DESTINATION_CHALLENGE,
                &self.challenge_destination,
            )
            .put(purse_tag::CHALLENGE_TERMINAL, &self.challenge_terminal)
            .put_u32(purse_tag::DATE, self.date.0);
    }

    fn decode_from(r: &mut TlvReader<'_>) -> Result<Self, DecodeError> {
        Ok(TransferBinding {
            key_id: u32_field(r, tag::TRANSFER_KEY_ID)?,
            source: card_id_field(r, report_tag::SOURCE)?,
            source_counter: u32_field(r, report_tag::SOURCE_COUNTER)?,
            challenge_source: r.expect_array(tag::PEER_CHALLENGE)?,
            destination: card_id_field(r, report_tag::DESTINATION)?,
            destination_counter: u32_field(r, tag::PEER_COUNTER)?,
            challenge_destination: r.expect_array(report_tag::DESTINATION_CHALLENGE)?,
            challenge_terminal: r.expect_array(purse_tag::CHALLENGE_TERMINAL)?,
            date: Date(u32_field(r, purse_tag::DATE)?),
        })
    }
}

fn put_record(w: &mut TlvWriter, template: u32, record: &Option<UsageRecord>) {
    if let Some(record) = record {
        w.nested(template, |t| record.encode_into(t));
    }
}

fn record_in(r: &mut TlvReader<'_>, template: u32) -> Result<Option<UsageRecord>, DecodeError> {
    r.optional(template)?.map(UsageRecord::decode).transpose()
}

impl TransferReport {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(1200);
        w.put_u32(report_tag::SEQUENCE, self.sequence)
            .put(report_tag::SOURCE, self.source.as_bytes())
            .put(report_tag::DESTINATION, self.destination.as_bytes())
            .put(tag::PEER_CHALLENGE, &self.challenge_source)
            .put_u64(purse_tag::AMOUNT, self.amount.minor())
            .put_u32(tag::PEER_COUNTER, self.destination_counter);
        if let Some(evidence) = &self.value {
            w.nested(report_tag::VALUE, |v| {
                evidence.binding.encode_into(v);
                v.put(tag::CIPHERTEXT, &evidence.value.ciphertext);
            });
        }
        if let Some(proof) = &self.proof {
            w.nested(report_tag::PROOF, |p| proof.encode_into(p));
        }
        put_record(
            &mut w,
            report_tag::DESTINATION_RECORD,
            &self.destination_record,
        );
        put_record(
            &mut w,
            report_tag::DESTINATION_PREVIOUS,
            &self.destination_previous,
        );
        put_record(&mut w, report_tag::SOURCE_RECORD, &self.source_record);
        put_record(&mut w, report_tag::SOURCE_PREVIOUS, &self.source_previous);
        if let Some(release) = &self.release {
            w.nested(report_tag::RELEASE, |t| {
                t.put(purse_tag::SIGNATURE, &release.signature.0);
            });
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let sequence = u32_field(&mut r, report_tag::SEQUENCE)?;
        let source = card_id_field(&mut r, report_tag::SOURCE)?;
        let destination = card_id_field(&mut r, report_tag::DESTINATION)?;
        let challenge_source = r.expect_array(tag::PEER_CHALLENGE)?;
        let amount = amount_field(&mut r, purse_tag::AMOUNT)?;
        let destination_counter = u32_field(&mut r, tag::PEER_COUNTER)?;
        let value = r
            .optional(report_tag::VALUE)?
            .map(|bytes| -> Result<ValueEvidence, DecodeError> {
                let mut v = TlvReader::new(bytes);
                let binding = TransferBinding::decode_from(&mut v)?;
                let ciphertext = v.expect_array(tag::CIPHERTEXT)?;
                v.finish()?;
                Ok(ValueEvidence {
                    value: ValueMessage {
                        key_id: binding.key_id,
                        ciphertext,
                    },
                    binding,
                })
            })
            .transpose()?;
        let proof = r
            .optional(report_tag::PROOF)?
            .map(TransferProof::decode)
            .transpose()?;
        let report = TransferReport {
            sequence,
            source,
            destination,
            challenge_source,
            amount,
            destination_counter,
            value,
            proof,
            destination_record: record_in(&mut r, report_tag::DESTINATION_RECORD)?,
            destination_previous: record_in(&mut r, report_tag::DESTINATION_PREVIOUS)?,
            source_record: record_in(&mut r, report_tag::SOURCE_RECORD)?,
            source_previous: record_in(&mut r, report_tag::SOURCE_PREVIOUS)?,
            release: r
                .optional(report_tag::RELEASE)?
                .map(TransferRelease::decode)
                .transpose()?,
        };
        r.finish()?;
        if let Some(evidence) = &report.value {
            let b = &evidence.binding;
            if b.source != report.source
                || b.destination != report.destination
                || b.challenge_source != report.challenge_source
                || b.destination_counter != report.destination_counter
            {
                return Err(field("value", "binding disagrees with the report"));
            }
        }
        Ok(report)
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

    /// Asks the center to release the transfer `source` holds pending toward a destination
    /// that will never come back (docs/protocols.md § 13). The center signs only when the
    /// value cannot have reached a card that could still spend it, and records the release;
    /// otherwise it refuses, and the terminal must present the destination card.
    fn release_transfer(
        &mut self,
        terminal_id: DeviceId,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferRelease, CenterError>;
}

impl<T: TransferLink + ?Sized> TransferLink for &mut T {
    fn upload_transfers(&mut self, upload: &TransferUpload) -> Result<UploadReceipt, CenterError> {
        (**self).upload_transfers(upload)
    }

    fn release_transfer(
        &mut self,
        terminal_id: DeviceId,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferRelease, CenterError> {
        (**self).release_transfer(terminal_id, source, pending)
    }
}
