//! Golden memory card payloads, one per memory card format version: every version this build
//! reads has a golden file that still opens as the same card, and the current build writes
//! the current golden file byte for byte (a change of the format without a new version fails
//! here). The two-slot image around the payload is the purse's, covered by `golden.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::{ImageStore, EEPROM_SIZE};
use valuecard_card::memcard::{Memory, MemoryCard, PAYLOAD_VERSION};
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{map, COUNTER_START};
use valuecard_core::StatusWord;

const ID: CardId = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x01]);

fn golden_path(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("memcard-v{version}.bin"))
}

fn update(address: u16, data: &[u8]) -> Vec<u8> {
    let [p1, p2] = address.to_be_bytes();
    let mut apdu = vec![0xFF, 0xD6, p1, p2, data.len() as u8];
    apdu.extend_from_slice(data);
    apdu
}

/// A card with one value write, a signature and the start of a certificate: every area set.
fn reference_memory() -> Memory {
    let mut card = MemoryCard::manufacture(MemoryEeprom::new(EEPROM_SIZE), ID).unwrap();
    let mut value = vec![0x01, 0x00, 0x00, 0x51, 0x33];
    value.extend_from_slice(&2_500u64.to_be_bytes());
    for apdu in [
        update(map::VALUE_AREA, &value),
        update(map::SIGNATURE_AREA, &[0x5A; 64]),
        update(map::CERTIFICATE_AREA, &[0x00, 0x03, 0x7F, 0x21, 0x00]),
    ] {
        assert_eq!(card.process(&apdu).unwrap().sw, StatusWord::SUCCESS);
    }
    card.memory().clone()
}

#[test]
#[ignore = "writes the golden file of the current memory card format; run once per new version"]
fn write_golden_memcard() {
    std::fs::write(
        golden_path(PAYLOAD_VERSION),
        reference_memory().encode_payload(),
    )
    .unwrap();
}

#[test]
fn every_memcard_format_version_has_a_golden_payload_that_opens() {
    for version in 1..=PAYLOAD_VERSION {
        let path = golden_path(version);
        let payload = std::fs::read(&path)
            .unwrap_or_else(|_| panic!("no golden memory card v{version} at {}", path.display()));
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let (mut store, _) = ImageStore::open(memory.clone()).unwrap();
        store.commit(&payload).unwrap();
        let card = MemoryCard::open(memory).unwrap();
        assert_eq!(card.card_id(), ID);
        assert_eq!(card.counter(), COUNTER_START - 1);
        assert_eq!(card.memory().as_bytes()[map::SIGNATURE_AREA as usize], 0x5A);
    }
}

#[test]
fn the_current_build_writes_the_current_golden_payload() {
    let golden = std::fs::read(golden_path(PAYLOAD_VERSION)).unwrap();
    assert!(
        reference_memory().encode_payload() == golden,
        "the memory card's persisted format changed: give it a new PAYLOAD_VERSION and a \
         golden file (cargo test -p valuecard-card --test memcard_golden -- --ignored)"
    );
}
