//! The states of one memory-card write, and the charge and payment machines built on them.

use valuecard_core::cert::Role;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::TerminalLink;
use valuecard_core::messages::memcard::{
    encode_certificate_area, map, MemcardLink, ValueArea, WriteKind, WriteReceipt, WriteRecord,
    WriteUpload, VALUE_AREA_LEN,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_reader::CardReader;
use valuecard_sam::{MemcardWriteOrder, Sam, ValueFormat, VerifiedMemcardState};

use super::repair::RepairOutcome;
use super::{read_memory, write_memory, write_memory_changed, MemcardRefusal, PresentedCard};
use crate::store::{ListCache, LocalLists, MemcardLog, TerminalStore, WriteStatus};
use crate::TerminalError;

/// How many records one upload carries.
pub const WRITE_UPLOAD_BATCH_MAX: usize = 256;

/// A card whose value the SAM checked (certificate of a certified machine, signature over
/// ID, counter and value area, sealed value opened) and whose card and writer are not on
/// the center's list. Only [`MemcardMachine::verify`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedValue {
    presented: PresentedCard,
    state: VerifiedMemcardState,
}

impl VerifiedValue {
    pub fn card_id(&self) -> CardId {
        self.state.card_id()
    }

    pub fn counter(&self) -> u32 {
        self.state.counter()
    }

    pub fn balance(&self) -> Amount {
        self.state.balance()
    }

    pub fn date(&self) -> Option<Date> {
        self.state.date()
    }

    /// The machine that wrote the value; `None` for a new card.
    pub fn writer(&self) -> Option<DeviceId> {
        self.state.writer()
    }

    pub fn state(&self) -> &VerifiedMemcardState {
        &self.state
    }
}

/// A write the SAM signed and the log holds as pending; the card is not touched yet.
#[derive(Debug, Clone)]
pub struct WritePending {
    record: WriteRecord,
    /// The card's certificate area as it was, so an equal one is not written again.
    certificate_area_before: Vec<u8>,
}

impl WritePending {
    pub fn record(&self) -> &WriteRecord {
        &self.record
    }
}

/// A write the SAM signed and the log does not hold yet: the card may not be written.
#[derive(Debug, Clone)]
pub struct SignedWrite(WritePending);

impl SignedWrite {
    pub fn record(&self) -> &WriteRecord {
        &self.0.record
    }
}

/// The value area is on the card, and the card showed the counter the SAM signed.
#[derive(Debug, Clone)]
pub struct ValueWritten {
    pending: WritePending,
}

/// Signature and certificate are on the card too: the card verifies again.
#[derive(Debug, Clone)]
pub struct Signed {
    record: WriteRecord,
}

/// A finished write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineReceipt {
    pub sequence: u32,
    pub kind: WriteKind,
    pub card_id: CardId,
    pub amount: Amount,
    pub balance_before: Amount,
    pub balance_after: Amount,
    pub counter_after: u32,
    /// Earlier writes finished, voided or restored when the card was presented.
    pub repairs: Vec<RepairOutcome>,
}

/// What charge and payment machines share: the SAM, the store (lists and the log of
/// writes), the clock.
pub struct MemcardMachine<S: Sam, T: TerminalStore + MemcardLog> {
    pub(super) sam: S,
    pub(super) store: T,
    pub(super) clock: Box<dyn Clock>,
    lists: ListCache,
}

impl<S: Sam, T: TerminalStore + MemcardLog> core::fmt::Debug for MemcardMachine<S, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemcardMachine")
            .field("device_id", &self.sam.device_id())
            .finish_non_exhaustive()
    }
}

impl<S: Sam, T: TerminalStore + MemcardLog> MemcardMachine<S, T> {
    /// A machine over an installed SAM.
    pub fn new(sam: S, store: T, clock: Box<dyn Clock>) -> Result<Self, TerminalError> {
        sam.certificate()?;
        Ok(MemcardMachine {
            sam,
            store,
            clock,
            lists: ListCache::default(),
        })
    }

    pub fn device_id(&self) -> DeviceId {
        self.sam.device_id()
    }

    pub fn role(&self) -> Result<Role, TerminalError> {
        Ok(self.sam.certificate()?.body.role)
    }

    pub fn sam(&self) -> &S {
        &self.sam
    }

    pub fn store(&self) -> &T {
        &self.store
    }

    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    pub fn into_parts(self) -> (S, T) {
        (self.sam, self.store)
    }

    pub(super) fn lists(&mut self) -> Result<&LocalLists, TerminalError> {
        self.lists.get(&self.store)
    }

    /// Fetches the list entries the machine does not have yet and stores them.
    pub fn update_lists(&mut self, link: &mut impl TerminalLink) -> Result<u64, TerminalError> {
        self.lists
            .update(&mut self.store, link, self.sam.device_id())
    }

    /// Reads the card, finishes or voids this machine's unfinished writes on it from the
    /// log, and checks its value. When the value does not verify and `link` is given, the
    /// center's evidence of the card's newest state is written back if the card's counter
    /// and value area are exactly that state's (a write torn at another machine).
    pub fn present(
        &mut self,
        reader: &mut impl CardReader,
        link: Option<&mut dyn MemcardLink>,
    ) -> Result<(VerifiedValue, Vec<RepairOutcome>), TerminalError> {
        let mut presented = PresentedCard::read(reader)?;
        // A listed card is not written to, not even to finish an earlier write.
        self.check_card_not_listed(presented.card_id())?;
        let mut repairs = self.repair_from_log(reader, &mut presented)?;
        match self.verify(presented.clone()) {
            Ok(verified) => Ok((verified, repairs)),
            Err(error) => {
                let Some(link) = link else {
                    return Err(error);
                };
                match self.repair_from_center(reader, &presented, link)? {
                    Some(outcome) => {
                        repairs.push(outcome);
                        let presented = PresentedCard::read(reader)?;
                        Ok((self.verify(presented)?, repairs))
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Checks a card as read: not listed, content well formed, the SAM's check of the
    /// writer's certificate, signature and sealed value, the writer not listed.
    pub fn verify(&mut self, presented: PresentedCard) -> Result<VerifiedValue, TerminalError> {
        self.check_card_not_listed(presented.card_id())?;
        let content = presented.content()?;
        let state = self
            .sam
            .check_memcard_content(&content, self.clock.today())
            .map_err(MemcardRefusal::from_sam)?;
        self.check_writer_not_listed(state.writer())?;
        Ok(VerifiedValue { presented, state })
    }

    fn check_card_not_listed(&mut self, card_id: CardId) -> Result<(), TerminalError> {
        match self.lists()?.cards.get(&card_id) {
            Some(reason) => Err(TerminalError::CardListed {
                card_id,
                reason: *reason,
            }),
            None => Ok(()),
        }
    }

    /// A machine the center listed (stolen, withdrawn) vouches for nothing: a memory card
    /// carries no time stamp, so a card it wrote is refused whatever the date. Its value is
    /// restored by the center from the uploaded records.
    pub(super) fn check_writer_not_listed(
        &mut self,
        writer: Option<DeviceId>,
    ) -> Result<(), TerminalError> {
        if let Some(writer) = writer {
            if self.lists()?.terminals.contains_key(&writer) {
                return Err(MemcardRefusal::WriterListed(writer).into());
            }
        }
        Ok(())
    }

    /// Has the SAM sign the write and stores it in the log as pending, before the card is
    /// touched: [`MemcardMachine::sign_write`] then [`MemcardMachine::log_write`].
    pub fn begin_write(
        &mut self,
        verified: VerifiedValue,
        kind: WriteKind,
        amount: Amount,
        format: ValueFormat,
    ) -> Result<WritePending, TerminalError> {
        let signed = self.sign_write(verified, kind, amount, format)?;
        self.log_write(signed)
    }

    /// Has the SAM sign the write: its float (for a charge) and its sequence move now. A host
    /// whose SAM keeps its state in a file stores it before [`MemcardMachine::log_write`], so
    /// that no logged write is ever paid from float the stored SAM still holds.
    pub fn sign_write(
        &mut self,
        verified: VerifiedValue,
        kind: WriteKind,
        amount: Amount,
        format: ValueFormat,
    ) -> Result<SignedWrite, TerminalError> {
        if kind == WriteKind::Payment && amount > verified.balance() {
            return Err(MemcardRefusal::InsufficientBalance {
                balance: verified.balance(),
                amount,
            }
            .into());
        }
        let order = MemcardWriteOrder {
            kind,
            card: verified.state,
            amount,
            date: self.clock.today(),
            format,
            sequence_floor: self.store.write_sequence_floor()?,
        };
        let record = self
            .sam
            .sign_memcard_write(&order)
            .map_err(MemcardRefusal::from_sam)?;
        Ok(SignedWrite(WritePending {
            record,
            certificate_area_before: verified.presented.certificate_area_bytes().to_vec(),
        }))
    }

    /// Stores the signed write in the log as pending; only then may the card be written.
    pub fn log_write(&mut self, signed: SignedWrite) -> Result<WritePending, TerminalError> {
        self.store.log_write(&signed.0.record)?;
        Ok(signed.0)
    }

    /// The pending state of a logged write, for a repair that writes it again.
    pub(super) fn pending_from_log(
        &self,
        record: WriteRecord,
        presented: &PresentedCard,
    ) -> WritePending {
        WritePending {
            record,
            certificate_area_before: presented.certificate_area_bytes().to_vec(),
        }
    }

    /// Writes the value area (the card lowers its counter), then reads back the card ID,
    /// the counter and the area: they must be the card's and the ones the SAM signed.
    pub fn write_value(
        &mut self,
        reader: &mut impl CardReader,
        pending: WritePending,
    ) -> Result<ValueWritten, TerminalError> {
        let written = &pending.record.written;
        write_memory(reader, map::VALUE_AREA, &written.value_area.encode())?;
        let head = read_memory(reader, 0, map::VALUE_AREA as usize + VALUE_AREA_LEN)?;
        let found = PresentedCard::from_memory_head(&head)?;
        if found.0 != written.card_id {
            return Err(MemcardRefusal::CardSwapped {
                expected: written.card_id,
                found: found.0,
            }
            .into());
        }
        if found.1 != written.counter {
            return Err(MemcardRefusal::CounterMismatch {
                expected: written.counter,
                found: found.1,
            }
            .into());
        }
        if head[map::VALUE_AREA as usize..] != written.value_area.encode() {
            return Err(MemcardRefusal::ValueMismatch.into());
        }
        Ok(ValueWritten { pending })
    }

    /// Writes the certificate (the chunks of it the card does not hold already), then the
    /// signature.
    pub fn write_signature(
        &mut self,
        reader: &mut impl CardReader,
        written: ValueWritten,
    ) -> Result<Signed, TerminalError> {
        let pending = written.pending;
        self.write_tail(reader, &pending.record, &pending.certificate_area_before)?;
        Ok(Signed {
            record: pending.record,
        })
    }

    pub(super) fn write_tail(
        &mut self,
        reader: &mut impl CardReader,
        record: &WriteRecord,
        certificate_area_before: &[u8],
    ) -> Result<(), TerminalError> {
        let certificate_area = encode_certificate_area(self.sam.certificate()?);
        write_memory_changed(
            reader,
            map::CERTIFICATE_AREA,
            &certificate_area,
            certificate_area_before,
        )?;
        // The signature last: the card's content verifies only once this write landed, so
        // a cut anywhere before leaves a card that no machine accepts until it is repaired.
        write_memory(reader, map::SIGNATURE_AREA, &record.written.signature.0)
    }

    /// Marks the write done in the log: it is due for upload.
    pub fn finish(
        &mut self,
        signed: Signed,
        repairs: Vec<RepairOutcome>,
    ) -> Result<MachineReceipt, TerminalError> {
        let record = signed.record;
        self.store
            .set_write_status(record.sequence, WriteStatus::Done)?;
        Ok(receipt(&record, repairs))
    }

    /// The whole write after a card was presented and checked.
    pub fn write(
        &mut self,
        reader: &mut impl CardReader,
        verified: VerifiedValue,
        kind: WriteKind,
        amount: Amount,
        format: ValueFormat,
        repairs: Vec<RepairOutcome>,
    ) -> Result<MachineReceipt, TerminalError> {
        let pending = self.begin_write(verified, kind, amount, format)?;
        let written = self.write_value(reader, pending)?;
        let signed = self.write_signature(reader, written)?;
        self.finish(signed, repairs)
    }

    /// Uploads the done writes the center has not acknowledged, in batches. A record the
    /// center refused stays due (and ends this call), so it is seen again.
    pub fn upload_writes(
        &mut self,
        link: &mut impl MemcardLink,
    ) -> Result<WriteReceipt, TerminalError> {
        let mut total = WriteReceipt::default();
        loop {
            let records = self.store.pending_write_uploads(WRITE_UPLOAD_BATCH_MAX)?;
            if records.is_empty() {
                return Ok(total);
            }
            let upload = WriteUpload {
                machine: self.sam.device_id(),
                records,
            };
            let receipt = link.upload_writes(&upload)?;
            let accepted: Vec<u32> = upload
                .records
                .iter()
                .map(|record| record.sequence)
                .filter(|sequence| {
                    !receipt
                        .refused
                        .iter()
                        .any(|(refused, _)| refused == sequence)
                })
                .collect();
            self.store.mark_writes_uploaded(&accepted)?;
            total.stored += receipt.stored;
            total.duplicates += receipt.duplicates;
            let refused = !receipt.refused.is_empty();
            total.refused.extend(receipt.refused);
            if refused {
                return Ok(total);
            }
        }
    }
}

impl PresentedCard {
    /// The card ID and counter from the first bytes of the memory.
    fn from_memory_head(head: &[u8]) -> Result<(CardId, u32), TerminalError> {
        let id = head.get(..map::CARD_ID_LEN);
        let counter = head.get(map::COUNTER as usize..map::COUNTER as usize + map::COUNTER_LEN);
        match (id, counter) {
            (Some(id), Some(counter)) => {
                let mut bytes = [0u8; 4];
                bytes.copy_from_slice(counter);
                let id = CardId::from_slice(id)
                    .map_err(|_| TerminalError::Mismatch("card ID of the wrong length"))?;
                Ok((id, u32::from_be_bytes(bytes)))
            }
            _ => Err(TerminalError::Mismatch("READ BINARY answered too little")),
        }
    }
}

pub(super) fn receipt(record: &WriteRecord, repairs: Vec<RepairOutcome>) -> MachineReceipt {
    MachineReceipt {
        sequence: record.sequence,
        kind: record.kind,
        card_id: record.written.card_id,
        amount: record.amount().unwrap_or(Amount::ZERO),
        balance_before: record.balance_before,
        balance_after: record.balance_after,
        counter_after: record.written.counter,
        repairs,
    }
}

/// A charge machine (Fig. 3, 2A): takes money in and charges it onto memory cards within
/// the float its SAM holds.
#[derive(Debug)]
pub struct ChargeMachine<S: Sam, T: TerminalStore + MemcardLog> {
    machine: MemcardMachine<S, T>,
}

impl<S: Sam, T: TerminalStore + MemcardLog> ChargeMachine<S, T> {
    /// A charge machine over a SAM certified as one.
    pub fn new(sam: S, store: T, clock: Box<dyn Clock>) -> Result<Self, TerminalError> {
        let machine = MemcardMachine::new(sam, store, clock)?;
        match machine.role()? {
            Role::ChargeMachine => Ok(ChargeMachine { machine }),
            other => Err(MemcardRefusal::WrongMachine(other).into()),
        }
    }

    pub fn machine(&self) -> &MemcardMachine<S, T> {
        &self.machine
    }

    pub fn machine_mut(&mut self) -> &mut MemcardMachine<S, T> {
        &mut self.machine
    }

    pub fn into_parts(self) -> (S, T) {
        self.machine.into_parts()
    }

    /// What the SAM may still charge.
    pub fn float(&self) -> Amount {
        self.machine.sam.float()
    }

    /// Asks the center for float and has the SAM take the grant it answers.
    pub fn refill_float(
        &mut self,
        link: &mut impl MemcardLink,
        amount: Amount,
    ) -> Result<Amount, TerminalError> {
        let grant = link.request_float(self.machine.device_id(), amount)?;
        Ok(self.machine.sam.take_float_grant(&grant)?)
    }

    /// Presents the card and charges `amount` onto it (money taken in).
    pub fn charge(
        &mut self,
        reader: &mut impl CardReader,
        amount: Amount,
        format: ValueFormat,
        link: Option<&mut dyn MemcardLink>,
    ) -> Result<MachineReceipt, TerminalError> {
        let (verified, repairs) = self.machine.present(reader, link)?;
        self.machine
            .write(reader, verified, WriteKind::Charge, amount, format, repairs)
    }
}

/// A payment machine (Fig. 3, 2B): checks the card's value, deducts, re-signs with its own
/// key; the service is given once the receipt is in hand.
#[derive(Debug)]
pub struct PaymentMachine<S: Sam, T: TerminalStore + MemcardLog> {
    machine: MemcardMachine<S, T>,
}

impl<S: Sam, T: TerminalStore + MemcardLog> PaymentMachine<S, T> {
    /// A payment machine over a SAM certified as one.
    pub fn new(sam: S, store: T, clock: Box<dyn Clock>) -> Result<Self, TerminalError> {
        let machine = MemcardMachine::new(sam, store, clock)?;
        match machine.role()? {
            Role::PaymentMachine => Ok(PaymentMachine { machine }),
            other => Err(MemcardRefusal::WrongMachine(other).into()),
        }
    }

    pub fn machine(&self) -> &MemcardMachine<S, T> {
        &self.machine
    }

    pub fn machine_mut(&mut self) -> &mut MemcardMachine<S, T> {
        &mut self.machine
    }

    pub fn into_parts(self) -> (S, T) {
        self.machine.into_parts()
    }

    /// Presents the card and deducts `amount`. The value is written in the format it was
    /// in (sealed stays sealed, claim 4).
    pub fn pay(
        &mut self,
        reader: &mut impl CardReader,
        amount: Amount,
        link: Option<&mut dyn MemcardLink>,
    ) -> Result<MachineReceipt, TerminalError> {
        let (verified, repairs) = self.machine.present(reader, link)?;
        let format = match verified.state().signed_state().map(|s| &s.value_area) {
            Some(ValueArea::Sealed { .. }) => ValueFormat::Sealed,
            _ => ValueFormat::Plain,
        };
        self.machine.write(
            reader,
            verified,
            WriteKind::Payment,
            amount,
            format,
            repairs,
        )
    }
}
