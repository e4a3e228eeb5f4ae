//! The in-process reader of any emulated card.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::OsRng;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::memcard::{self, MemoryCard};
use valuecard_card::{testing, Card};
use valuecard_core::apdu::Command;
use valuecard_core::ids::CardId;
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;

use super::*;

const ID: CardId = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x03]);

#[test]
fn a_memory_card_plugs_into_a_reader_as_a_purse_card_does() {
    let mut reader = EmulatedReader::with_card(
        "machine",
        MemoryCard::manufacture(MemoryEeprom::new(EEPROM_SIZE), ID).unwrap(),
    );
    assert_eq!(reader.atr(), Some(&memcard::ATR[..]));
    let response = reader
        .exchange(&Command::new(0xFF, 0xCA, 0x00, 0x00).with_le(256))
        .unwrap();
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(response.data, ID.as_bytes());
    let response = reader
        .exchange(&Command::new(0xFF, 0xD6, 0x00, 0x10).with_data(vec![0x01]))
        .unwrap();
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(
        reader.card().unwrap().counter(),
        valuecard_core::messages::memcard::COUNTER_START - 1
    );
    // Through the trait object a terminal holds.
    let dynamic: &mut dyn CardReader = &mut reader;
    assert_eq!(dynamic.name(), "machine");
    let card = reader.remove().unwrap();
    assert_eq!(
        reader.transmit_raw(&[0xFF, 0xB0, 0, 0, 0]),
        Err(ReaderError::NoCard)
    );
    reader.insert(card);
    assert!(reader.transmit_raw(&[0xFF, 0xB0, 0, 0, 0]).is_ok());
}

#[test]
fn the_purse_card_is_an_emulated_card_with_its_own_atr() {
    let card = Card::with_state(
        MemoryEeprom::new(EEPROM_SIZE),
        testing::personalized(Amount::ZERO),
        OsRng,
    )
    .unwrap();
    let reader = EmulatedReader::with_card("terminal", card);
    assert_eq!(reader.atr(), Some(&vpcd::ATR[..]));
}

#[test]
fn a_power_cut_during_a_write_is_a_card_removed() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    MemoryCard::manufacture(memory.clone(), ID).unwrap();
    let mut eeprom = FaultInjectingEeprom::new(memory.clone());
    eeprom.cut_power_at(1, 1, 2);
    let mut reader = EmulatedReader::with_card("machine", MemoryCard::open(eeprom).unwrap());
    assert_eq!(
        reader.transmit_raw(&[0xFF, 0xD6, 0x00, 0x10, 0x01, 0x01]),
        Err(ReaderError::CardRemoved)
    );
    assert_eq!(
        MemoryCard::open(memory).unwrap().counter(),
        valuecard_core::messages::memcard::COUNTER_START,
        "the torn write left the old content"
    );
}
