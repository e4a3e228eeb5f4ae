//! A sequence of arbitrary APDUs against a RAM-backed memory card (seed 001), with a power
//! cut at a chosen write. The card must never panic, must answer every APDU with a status
//! word, must never change its card ID, must never raise its counter, must lower it by
//! exactly one for each accepted write that touches the value area, and after a power cut
//! must reopen with the memory from just before or just after the command it was cut in.
//!
//! Input: the first byte chooses the physical write at which power is cut (0: never); the
//! rest is APDUs, each preceded by a one-byte length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::memcard::{Memory, MemoryCard};
use valuecard_card::CardError;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{map, COUNTER_START};

const ID: CardId = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x01]);

/// The memory an accepted command leaves: what an UPDATE BINARY writes, nothing otherwise.
fn expected_after(before: &Memory, apdu: &[u8]) -> Memory {
    match Command::parse(apdu) {
        Ok(command) if command.cla == 0xFF && command.ins == 0xD6 => {
            let address = usize::from(u16::from_be_bytes([command.p1, command.p2]));
            before
                .written(address, &command.data)
                .expect("an accepted UPDATE BINARY is a valid write")
        }
        _ => before.clone(),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut_at, mut rest)) = input.split_first() else { return };
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    MemoryCard::manufacture(memory.clone(), ID).unwrap();
    let mut eeprom = FaultInjectingEeprom::new(memory.clone());
    if cut_at != 0 {
        eeprom.cut_power_at(u64::from(cut_at), 1, 2);
    }
    let mut card = MemoryCard::open(eeprom).unwrap();
    let mut value_writes = 0u32;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (apdu, next) = tail.split_at(len);
        rest = next;
        let before = card.memory().clone();
        match card.transmit(apdu) {
            Ok(bytes) => {
                let response = Response::parse(&bytes).expect("every answer ends with a status word");
                let after = card.memory();
                if response.sw.0 == 0x9000 {
                    assert_eq!(after, &expected_after(&before, apdu));
                } else {
                    assert_eq!(after, &before, "a refused command changed the memory");
                    if response.sw.0 != 0x6282 {
                        assert!(response.data.is_empty(), "error answers carry no data");
                    }
                }
                assert!(after.counter() <= before.counter(), "the counter went up");
                if after.counter() < before.counter() {
                    assert_eq!(after.counter() + 1, before.counter(), "more than one step");
                    value_writes += 1;
                }
            }
            Err(CardError::PowerLost) => {
                drop(card);
                let reopened = MemoryCard::open(memory.clone()).expect("a torn image reopens");
                let after = reopened.memory();
                assert!(
                    after == &before || after == &expected_after(&before, apdu),
                    "a mixed memory after a power cut"
                );
                assert!(after.counter() <= before.counter());
                return;
            }
            Err(other) => panic!("{other}"),
        }
        assert_eq!(card.card_id(), ID, "the ROM changed");
        assert_eq!(card.counter(), COUNTER_START - value_writes);
        assert_eq!(card.memory().as_bytes().len(), map::MEMORY_LEN);
    }
});
