//! What machines and the center exchange about memory cards: uploads, receipts, restore evidence, and the link itself.

use super::*;
/// A batch of write records from one machine (charge or payment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteUpload {
    pub machine: DeviceId,
    pub records: Vec<WriteRecord>,
}

/// What the center did with a batch of write records: each stored, already stored (a
/// retry), or refused with a reason (by the machine's sequence).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteReceipt {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<(u32, String)>,
}

/// What the center made of writes still pending in a machine's log (signed and logged, the
/// card's answer never seen to the end), by the machine's sequence. A pending write is
/// evidence, never counted as such: the center counts it once a later record shows it
/// landed, and offers it to repair a card that shows exactly its state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingReceipt {
    /// Held as restore evidence: no record of the card after it is known yet.
    pub held: u32,
    /// A later record started from the state this write signed, so the card held it: the
    /// center counted it, and the machine marks it done and uploaded.
    pub landed: Vec<u32>,
    /// A later record started from the state this write started from, so the card took
    /// another write instead and this one can no longer land: nothing of it counts, and the
    /// machine voids it (a charge's money is owed back to its payer).
    pub superseded: Vec<u32>,
    pub refused: Vec<(u32, String)>,
}

/// The newest state the center holds for a memory card, with the certificate of the
/// machine that wrote it: what any machine may write back onto a card whose signature or
/// certificate write was torn, once it has checked that the card's counter and value area
/// are exactly this state's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreEvidence {
    pub record: WriteRecord,
    pub writer_certificate: Certificate,
}

/// How charge and payment machines talk to the center about memory cards.
pub trait MemcardLink {
    /// Uploads write records; idempotent on (machine, sequence).
    fn upload_writes(&mut self, upload: &WriteUpload) -> Result<WriteReceipt, CenterError>;
    /// Asks for float for a charge machine; the center decides the amount it grants, never
    /// more than asked.
    fn request_float(
        &mut self,
        machine: DeviceId,
        amount: Amount,
    ) -> Result<FloatGrant, CenterError>;
    /// The newest state of `card` the center holds evidence of, if any: its newest counted
    /// state, or a pending write reported after it.
    fn latest_state(&mut self, card: &CardId) -> Result<Option<RestoreEvidence>, CenterError>;
    /// Reports writes pending in the machine's log; idempotent on (machine, sequence).
    fn report_pending(&mut self, upload: &WriteUpload) -> Result<PendingReceipt, CenterError>;
}

impl<T: MemcardLink + ?Sized> MemcardLink for &mut T {
    fn upload_writes(&mut self, upload: &WriteUpload) -> Result<WriteReceipt, CenterError> {
        (**self).upload_writes(upload)
    }
    fn request_float(
        &mut self,
        machine: DeviceId,
        amount: Amount,
    ) -> Result<FloatGrant, CenterError> {
        (**self).request_float(machine, amount)
    }
    fn latest_state(&mut self, card: &CardId) -> Result<Option<RestoreEvidence>, CenterError> {
        (**self).latest_state(card)
    }
    fn report_pending(&mut self, upload: &WriteUpload) -> Result<PendingReceipt, CenterError> {
        (**self).report_pending(upload)
    }
}
