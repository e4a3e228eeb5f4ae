//! The card's commands as the holder's client sends them.

use valuecard_core::apdu::Command;
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::CLA_ONLINE;
use valuecard_core::messages::purse::{PurseStatus, SelectResponse, PURSE_AID};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};

use super::HolderError;

pub(super) fn exchange(
    reader: &mut dyn CardReader,
    command: &'static str,
    apdu: &Command,
) -> Result<Vec<u8>, HolderError> {
    let response = reader.exchange(apdu).map_err(|error| match error {
        ReaderError::MalformedResponse(_) => HolderError::CardAnswer {
            command,
            reason: error.to_string(),
        },
        other => HolderError::CardMissing(other),
    })?;
    if response.sw != StatusWord::SUCCESS {
        return Err(HolderError::CardRefused {
            command,
            status: response.sw,
        });
    }
    Ok(response.data)
}

pub(super) fn online(
    reader: &mut dyn CardReader,
    command: &'static str,
    instruction: u8,
    p1: u8,
    data: Vec<u8>,
) -> Result<Vec<u8>, HolderError> {
    exchange(
        reader,
        command,
        &Command::new(CLA_ONLINE, instruction, p1, 0)
            .with_data(data)
            .with_le(256),
    )
}

pub(super) fn card_answer<T>(
    command: &'static str,
    decoded: Result<T, valuecard_core::messages::DecodeError>,
) -> Result<T, HolderError> {
    decoded.map_err(|error| HolderError::CardAnswer {
        command,
        reason: error.to_string(),
    })
}

/// What the purse application shows: the card's certificate and its balance (ST104).
#[derive(Debug, Clone)]
pub struct CardView {
    pub card_id: CardId,
    pub certificate: Option<Certificate>,
    pub status: PurseStatus,
}

/// Reads the purse application: the card's ID, certificate and balance, in the clear.
pub fn read_card(reader: &mut dyn CardReader) -> Result<CardView, HolderError> {
    let select = exchange(
        reader,
        "SELECT",
        &Command::new(0x00, 0xA4, 0x04, 0x00)
            .with_data(PURSE_AID.to_vec())
            .with_le(256),
    )?;
    let selected = card_answer("SELECT", SelectResponse::decode(&select))?;
    let status = exchange(
        reader,
        "READ PURSE",
        &Command::new(
            valuecard_core::messages::purse::CLA_PROPRIETARY,
            valuecard_core::messages::purse::ins::READ_PURSE,
            0,
            0,
        )
        .with_le(256),
    )?;
    let status = card_answer("READ PURSE", PurseStatus::decode(&status))?;
    Ok(CardView {
        card_id: status.card_id,
        certificate: selected.certificate,
        status,
    })
}
