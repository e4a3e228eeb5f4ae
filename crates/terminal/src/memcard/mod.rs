//! Charge and payment machines for the memory card of seed 001 (Fig. 3).
//!
//! A memory card has no crypto engine: it holds a card ID in ROM, a counter that it lowers
//! itself on every write of its value area, and areas for the value (date and amount), the
//! writer's signature and the writer's certificate. Machines reach it with the storage-card
//! pseudo-APDUs of PC/SC Part 3 (`FF B0` READ BINARY, `FF D6` UPDATE BINARY), as any PC/SC
//! application drives a memory card.
//!
//! Each write goes through explicit states, each consumed by the next step:
//! [`PresentedCard`] (memory read) → [`VerifiedValue`] (certificate, lists, signature and
//! sealed value checked in the SAM) → [`WritePending`] (signed by the SAM and stored in the
//! machine's log *before* the card is touched) → [`ValueWritten`] (value area written, the
//! counter and area read back as expected) → [`Signed`] (signature and certificate written)
//! → done in the log. A write cut short is finished or voided from the log when the card is
//! presented again (`repair.rs`), or, when this machine has no record of it, written back
//! from the center's evidence.
//!
//! **Architecture invariant:** a machine never writes a value area that its SAM did not sign
//! and its log does not hold.

mod machine;
#[cfg(test)]
mod pending_tests;
#[cfg(test)]
mod property_tests;
mod repair;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use machine::{
    ChargeMachine, MachineReceipt, MemcardMachine, PaymentMachine, Signed, SignedWrite,
    ValueWritten, VerifiedValue, WritePending,
};
pub use repair::{PendingReport, RepairOutcome};

use valuecard_core::apdu::Command;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::memcard::{map, CardContent, ValueArea, VALUE_AREA_LEN};
use valuecard_core::messages::DecodeError;
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;
use valuecard_sam::MemcardCheckError;

use crate::TerminalError;

/// The class byte of the PC/SC Part 3 storage-card pseudo-APDUs.
pub const CLA_STORAGE: u8 = 0xFF;
/// READ BINARY (PC/SC Part 3 § 3.2.2.1.8): P1-P2 the address, Le the length.
pub const INS_READ_BINARY: u8 = 0xB0;
/// UPDATE BINARY (PC/SC Part 3 § 3.2.2.1.9): P1-P2 the address, the data to write.
pub const INS_UPDATE_BINARY: u8 = 0xD6;
/// The most bytes one READ BINARY asks for (a short Le of `00`).
pub const READ_CHUNK_MAX: usize = 256;
/// The most bytes one UPDATE BINARY carries (a short Lc).
pub const UPDATE_CHUNK_MAX: usize = 255;

/// Why a machine refused a memory card or could not finish a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemcardRefusal {
    #[error("the card's memory is malformed: {0}")]
    Malformed(DecodeError),
    #[error("{0}")]
    State(MemcardCheckError),
    #[error("the card was last written by machine {0}, which is on the center's list")]
    WriterListed(DeviceId),
    #[error("the card holds {balance}, the payment needs {amount}")]
    InsufficientBalance { balance: Amount, amount: Amount },
    #[error("after the value write the card shows counter {found}, expected {expected}")]
    CounterMismatch { expected: u32, found: u32 },
    #[error("after the value write the card's value area is not what was written")]
    ValueMismatch,
    #[error("another card is in the reader: {found}, expected {expected}")]
    CardSwapped { expected: CardId, found: CardId },
    #[error("the SAM is certified as {0:?}, not as this kind of machine")]
    WrongMachine(valuecard_core::cert::Role),
}

impl MemcardRefusal {
    /// The refusal inside a SAM error about a card's content, if it is one.
    pub(crate) fn from_sam(error: valuecard_sam::SamError) -> TerminalError {
        match error {
            valuecard_sam::SamError::MemcardState(state) => MemcardRefusal::State(state).into(),
            other => other.into(),
        }
    }
}

/// READ BINARY of `len` bytes at `address`.
pub fn read_binary(address: u16, len: usize) -> Command {
    let [p1, p2] = address.to_be_bytes();
    Command::new(CLA_STORAGE, INS_READ_BINARY, p1, p2).with_le(len as u32)
}

/// UPDATE BINARY of `data` at `address`.
pub fn update_binary(address: u16, data: &[u8]) -> Command {
    let [p1, p2] = address.to_be_bytes();
    Command::new(CLA_STORAGE, INS_UPDATE_BINARY, p1, p2).with_data(data.to_vec())
}

/// Reads `len` bytes from `address` in chunks of at most [`READ_CHUNK_MAX`].
pub fn read_memory(
    reader: &mut impl CardReader,
    address: u16,
    len: usize,
) -> Result<Vec<u8>, TerminalError> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let chunk = (len - out.len()).min(READ_CHUNK_MAX);
        let at = address as usize + out.len();
        let at = u16::try_from(at).map_err(|_| TerminalError::Mismatch("address beyond 64 KiB"))?;
        let response = reader.exchange(&read_binary(at, chunk))?;
        if response.sw != StatusWord::SUCCESS {
            return Err(TerminalError::Card {
                command: "READ BINARY",
                sw: response.sw,
            });
        }
        if response.data.len() != chunk {
            return Err(TerminalError::Mismatch(
                "READ BINARY answered another length than asked",
            ));
        }
        out.extend_from_slice(&response.data);
    }
    Ok(out)
}

/// Writes `data` at `address` in chunks of at most [`UPDATE_CHUNK_MAX`].
pub fn write_memory(
    reader: &mut impl CardReader,
    address: u16,
    data: &[u8],
) -> Result<(), TerminalError> {
    for (index, chunk) in data.chunks(UPDATE_CHUNK_MAX).enumerate() {
        let at = address as usize + index * UPDATE_CHUNK_MAX;
        let at = u16::try_from(at).map_err(|_| TerminalError::Mismatch("address beyond 64 KiB"))?;
        let response = reader.exchange(&update_binary(at, chunk))?;
        if response.sw != StatusWord::SUCCESS {
            return Err(TerminalError::Card {
                command: "UPDATE BINARY",
                sw: response.sw,
            });
        }
    }
    Ok(())
}

/// Writes `data` at `address` as [`write_memory`] does, skipping the chunks equal to
/// `before` (what the card held there when it was read).
pub fn write_memory_changed(
    reader: &mut impl CardReader,
    address: u16,
    data: &[u8],
    before: &[u8],
) -> Result<(), TerminalError> {
    for (index, chunk) in data.chunks(UPDATE_CHUNK_MAX).enumerate() {
        let offset = index * UPDATE_CHUNK_MAX;
        if before.get(offset..offset + chunk.len()) == Some(chunk) {
            continue;
        }
        let at = u16::try_from(address as usize + offset)
            .map_err(|_| TerminalError::Mismatch("address beyond 64 KiB"))?;
        write_memory(reader, at, chunk)?;
    }
    Ok(())
}

/// A memory card as read: its whole memory, with the parts a repair needs parsed on their
/// own (a certificate area torn mid-write does not parse, and must not stop a repair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCard {
    memory: Vec<u8>,
    card_id: CardId,
    counter: u32,
}

impl PresentedCard {
    /// Reads the whole memory ([`map::MEMORY_LEN`] bytes).
    pub fn read(reader: &mut impl CardReader) -> Result<Self, TerminalError> {
        let memory = read_memory(reader, 0, map::MEMORY_LEN)?;
        Self::from_memory(memory)
    }

    pub fn from_memory(memory: Vec<u8>) -> Result<Self, TerminalError> {
        let malformed = |error| TerminalError::Memcard(MemcardRefusal::Malformed(error));
        if memory.len() != map::MEMORY_LEN {
            return Err(malformed(DecodeError::Field {
                field: "memory",
                reason: "wrong length",
            }));
        }
        let card_id = CardId::from_slice(&memory[..map::CARD_ID_LEN]).map_err(|_| {
            malformed(DecodeError::Field {
                field: "card id",
                reason: "wrong length",
            })
        })?;
        let counter_at = map::COUNTER as usize;
        let mut counter = [0u8; 4];
        counter.copy_from_slice(&memory[counter_at..counter_at + map::COUNTER_LEN]);
        Ok(PresentedCard {
            card_id,
            counter: u32::from_be_bytes(counter),
            memory,
        })
    }

    pub fn card_id(&self) -> CardId {
        self.card_id
    }

    pub fn counter(&self) -> u32 {
        self.counter
    }

    pub fn memory(&self) -> &[u8] {
        &self.memory
    }

    fn area(&self, address: u16, len: usize) -> &[u8] {
        &self.memory[address as usize..address as usize + len]
    }

    /// The value area's bytes, parsed or not.
    pub fn value_area_bytes(&self) -> &[u8] {
        self.area(map::VALUE_AREA, VALUE_AREA_LEN)
    }

    pub fn signature_bytes(&self) -> &[u8] {
        self.area(map::SIGNATURE_AREA, map::SIGNATURE_AREA_LEN)
    }

    pub fn certificate_area_bytes(&self) -> &[u8] {
        self.area(map::CERTIFICATE_AREA, map::CERTIFICATE_AREA_LEN)
    }

    /// Whether the card's counter and value area are exactly those of `area` at `counter`.
    pub fn shows(&self, counter: u32, area: &ValueArea) -> bool {
        self.counter == counter && self.value_area_bytes() == area.encode()
    }

    /// The whole content, parsed.
    pub fn content(&self) -> Result<CardContent, TerminalError> {
        CardContent::decode(&self.memory)
            .map_err(|error| TerminalError::Memcard(MemcardRefusal::Malformed(error)))
    }
}
