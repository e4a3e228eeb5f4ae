//! Building the purse's command APDUs and checking their answers, in one place for every
//! terminal role.

use valuecard_core::apdu::Command;
use valuecard_core::messages::purse::{ins, CLA_ISO, CLA_PROPRIETARY, PURSE_AID};
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;

use crate::TerminalError;

/// Le for responses that may exceed 256 bytes (extended length).
const LE_EXTENDED: u32 = 65_536;
const LE_SHORT: u32 = 256;

pub fn select() -> Command {
    Command::new(CLA_ISO, ins::SELECT, 0x04, 0x00)
        .with_data(PURSE_AID.to_vec())
        .with_le(LE_SHORT)
}

pub fn get_challenge() -> Command {
    Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(16)
}

pub fn proprietary(instruction: u8, data: Vec<u8>) -> Command {
    let command = Command::new(CLA_PROPRIETARY, instruction, 0, 0).with_data(data);
    match instruction {
        ins::INITIALIZE_PURCHASE | ins::READ_LOG | ins::READ_PURSE | ins::READ_SERVICE_LOG => {
            command.with_le(LE_EXTENDED)
        }
        _ => command.with_le(LE_SHORT),
    }
}

/// A command of the transfer application (seed 000); `p1` selects the key-update form.
pub fn transfer(instruction: u8, p1: u8, data: Vec<u8>) -> Command {
    use valuecard_core::messages::transfer::ins as transfer_ins;
    let command = Command::new(CLA_PROPRIETARY, instruction, p1, 0).with_data(data);
    match instruction {
        transfer_ins::GET_TRANSFER_INFO
        | transfer_ins::INITIALIZE_TRANSFER_IN
        | transfer_ins::TRANSFER_OUT => command.with_le(LE_EXTENDED),
        _ => command.with_le(LE_SHORT),
    }
}

/// SELECT the purse for a transaction: the FCI of an active card; a blocked card (6283) is
/// refused as such, any other status word as the card's answer.
pub fn select_active(reader: &mut impl CardReader) -> Result<Vec<u8>, TerminalError> {
    let response = reader.exchange(&select())?;
    if response.sw == StatusWord::FILE_DEACTIVATED {
        return Err(TerminalError::CardBlocked);
    }
    if response.sw != StatusWord::SUCCESS {
        return Err(TerminalError::Card {
            command: "SELECT",
            sw: response.sw,
        });
    }
    Ok(response.data)
}

/// Sends a command and returns its data if the card answered 9000.
pub fn run(
    reader: &mut impl CardReader,
    name: &'static str,
    command: &Command,
) -> Result<Vec<u8>, TerminalError> {
    let response = reader.exchange(command)?;
    if response.sw != StatusWord::SUCCESS {
        return Err(TerminalError::Card {
            command: name,
            sw: response.sw,
        });
    }
    Ok(response.data)
}
