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
    /// The newest uploaded state of `card`, if any.
    fn latest_state(&mut self, card: &CardId) -> Result<Option<RestoreEvidence>, CenterError>;
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
}
