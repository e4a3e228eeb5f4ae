//! The memory card's commands: PC/SC Part 3 storage-card pseudo-APDUs (PC/SC Specification
//! Part 3, § 3.2.2.1, "Storage Card Functionality Support"), parsed in one place into a typed
//! command, and each handled as a pure function from (memory, command) to an [`Effect`].
//!
//! `FF B0 P1 P2 Le` READ BINARY, `FF D6 P1 P2 Lc data` UPDATE BINARY, and `FF CA 00 00 Le`
//! GET DATA (the UID: the card ID). P1-P2 is the byte address, P1 its high byte.
//! `docs/memory-card.md` gives every status word with an example.

use valuecard_core::apdu::Command;
use valuecard_core::messages::memcard::map;
use valuecard_core::StatusWord;

use super::memory::{Memory, Protected};

/// The class byte of PC/SC Part 3 pseudo-APDUs.
pub const CLA_PSEUDO: u8 = 0xFF;

/// Instruction bytes (PC/SC Part 3 § 3.2.2.1).
pub mod ins {
    pub const READ_BINARY: u8 = 0xB0;
    pub const UPDATE_BINARY: u8 = 0xD6;
    pub const GET_DATA: u8 = 0xCA;
}

/// Status words of the storage-card commands beyond those in `valuecard_core::StatusWord`.
pub mod sw {
    use valuecard_core::StatusWord;

    /// 6282: end of data reached before Le bytes (READ BINARY past the end, GET DATA with a
    /// longer Le than the UID).
    pub const END_OF_DATA: StatusWord = StatusWord(0x6282);
    /// 6981: command incompatible: an UPDATE BINARY over the card ID, which is ROM.
    pub const ROM_NOT_WRITABLE: StatusWord = StatusWord(0x6981);
    /// 6982: security status not satisfied: an UPDATE BINARY over the counter, which only
    /// the card itself lowers.
    pub const COUNTER_PROTECTED: StatusWord = StatusWord(0x6982);
    /// 6985: conditions of use not satisfied: a value write on a card whose counter is at
    /// zero (the card is exhausted).
    pub const EXHAUSTED: StatusWord = StatusWord(0x6985);
    /// 6B00: wrong parameters P1-P2: an address outside the memory, or GET DATA with other
    /// parameters than the UID's.
    pub const WRONG_ADDRESS: StatusWord = StatusWord(0x6B00);
    /// 6Cxx: wrong Le; xx is the exact length (GET DATA with Le shorter than the UID).
    pub fn exact_length(len: u8) -> StatusWord {
        StatusWord(0x6C00 | u16::from(len))
    }
}

/// What a command does: the response, and the new memory to commit before answering.
#[derive(Debug)]
pub struct Effect {
    pub data: Vec<u8>,
    pub sw: StatusWord,
    pub commit: Option<Memory>,
}

impl Effect {
    fn reply(data: Vec<u8>, sw: StatusWord) -> Self {
        Effect {
            data,
            sw,
            commit: None,
        }
    }
}

/// One parsed storage-card command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemcardCommand {
    /// READ BINARY of up to `le` bytes from `address`; `to_end` when Le was `00` (or
    /// extended `0000`): everything up to the end of the memory, within `le`.
    ReadBinary { address: u16, le: u32, to_end: bool },
    /// UPDATE BINARY of `data` at `address`.
    UpdateBinary { address: u16, data: Vec<u8> },
    /// GET DATA of the UID (P1 = 00), with Le as for READ BINARY.
    GetUid { le: u32, to_end: bool },
}

/// Parses a command APDU into a storage-card command, or the status word to answer.
pub fn parse(command: &Command) -> Result<MemcardCommand, StatusWord> {
    if command.cla != CLA_PSEUDO {
        return Err(StatusWord::CLA_NOT_SUPPORTED);
    }
    let address = u16::from_be_bytes([command.p1, command.p2]);
    match command.ins {
        ins::READ_BINARY => {
            let le = expect_le_only(command)?;
            Ok(MemcardCommand::ReadBinary {
                address,
                le,
                to_end: is_maximum(le),
            })
        }
        ins::UPDATE_BINARY => {
            // Case 3: data and no Le. An empty write is no write.
            if command.data.is_empty() || command.le.is_some() {
                return Err(StatusWord::WRONG_LENGTH);
            }
            Ok(MemcardCommand::UpdateBinary {
                address,
                data: command.data.clone(),
            })
        }
        ins::GET_DATA => {
            let le = expect_le_only(command)?;
            match (command.p1, command.p2) {
                (0x00, 0x00) => Ok(MemcardCommand::GetUid {
                    le,
                    to_end: is_maximum(le),
                }),
                // P1 = 01: the historical bytes of a contactless card's ATS; this card has none.
                (0x01, 0x00) => Err(StatusWord::FUNCTION_NOT_SUPPORTED),
                _ => Err(sw::WRONG_ADDRESS),
            }
        }
        _ => Err(StatusWord::INS_NOT_SUPPORTED),
    }
}

/// Case 2: Le and no data.
fn expect_le_only(command: &Command) -> Result<u32, StatusWord> {
    match command.le {
        Some(le) if command.data.is_empty() => Ok(le),
        _ => Err(StatusWord::WRONG_LENGTH),
    }
}

/// Le `00` (256) or extended `0000` (65536): "as many as there are" (PC/SC Part 3: all the
/// bytes until the end, within the limit of the Le form).
fn is_maximum(le: u32) -> bool {
    le == 256 || le == 65_536
}

/// Handles one parsed command against the card's memory.
pub fn handle(memory: &Memory, command: MemcardCommand) -> Result<Effect, StatusWord> {
    match command {
        MemcardCommand::ReadBinary {
            address,
            le,
            to_end,
        } => read(memory.as_bytes(), usize::from(address), le, to_end),
        MemcardCommand::GetUid { le, to_end } => {
            if le < map::CARD_ID_LEN as u32 && !to_end {
                // A UID is given whole or not at all: say how long it is.
                return Ok(Effect::reply(
                    Vec::new(),
                    sw::exact_length(map::CARD_ID_LEN as u8),
                ));
            }
            read(memory.card_id().as_bytes(), 0, le, to_end)
        }
        MemcardCommand::UpdateBinary { address, data } => {
            update(memory, usize::from(address), &data)
        }
    }
}

/// Up to `le` bytes of `bytes` from `address`: 9000 when `le` bytes were there (or Le asked
/// for everything to the end), 6282 with what there is when the end came first.
fn read(bytes: &[u8], address: usize, le: u32, to_end: bool) -> Result<Effect, StatusWord> {
    if address >= bytes.len() {
        return Err(sw::WRONG_ADDRESS);
    }
    let available = bytes.len() - address;
    let wanted = usize::try_from(le).unwrap_or(usize::MAX);
    let len = available.min(wanted);
    let status = if len < wanted && !to_end {
        sw::END_OF_DATA
    } else {
        StatusWord::SUCCESS
    };
    Ok(Effect::reply(
        bytes[address..address + len].to_vec(),
        status,
    ))
}

/// UPDATE BINARY: refused whole or done whole, committed as one new memory.
fn update(memory: &Memory, address: usize, data: &[u8]) -> Result<Effect, StatusWord> {
    if address >= map::MEMORY_LEN {
        return Err(sw::WRONG_ADDRESS);
    }
    if address + data.len() > map::MEMORY_LEN {
        return Err(StatusWord::WRONG_LENGTH);
    }
    match Memory::protected_in(address, data.len()) {
        Some(Protected::CardId) => return Err(sw::ROM_NOT_WRITABLE),
        Some(Protected::Counter) => return Err(sw::COUNTER_PROTECTED),
        None => {}
    }
    if Memory::touches_value_area(address, data.len()) && memory.counter() == 0 {
        return Err(sw::EXHAUSTED);
    }
    // The checks above are exactly `written`'s conditions, so it gives a memory; should the
    // two ever disagree, the write is refused rather than half-applied.
    let next = memory.written(address, data).ok_or(StatusWord::UNKNOWN)?;
    Ok(Effect {
        data: Vec::new(),
        sw: StatusWord::SUCCESS,
        commit: Some(next),
    })
}
