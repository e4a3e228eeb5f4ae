//! The memory card's commands, status words and counter rules, over RAM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_core::apdu::Response;
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{map, CardContent, ValueArea, COUNTER_START};
use valuecard_core::StatusWord;

use super::*;
use crate::eeprom::MemoryEeprom;

const ID: CardId = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x2A]);

fn card() -> (MemoryCard<MemoryEeprom>, MemoryEeprom) {
    let eeprom = MemoryEeprom::new(EEPROM_SIZE);
    (MemoryCard::manufacture(eeprom.clone(), ID).unwrap(), eeprom)
}

fn send(card: &mut MemoryCard<MemoryEeprom>, apdu: &[u8]) -> Response {
    card.process(apdu).unwrap()
}

fn read(address: u16, le: u8) -> Vec<u8> {
    let [p1, p2] = address.to_be_bytes();
    vec![0xFF, 0xB0, p1, p2, le]
}

fn update(address: u16, data: &[u8]) -> Vec<u8> {
    let [p1, p2] = address.to_be_bytes();
    let mut apdu = vec![0xFF, 0xD6, p1, p2, data.len() as u8];
    apdu.extend_from_slice(data);
    apdu
}

/// The whole memory through short READ BINARY commands of `chunk` bytes.
fn read_all_in_chunks(card: &mut MemoryCard<MemoryEeprom>, chunk: u8) -> Vec<u8> {
    let mut memory = Vec::new();
    while memory.len() < map::MEMORY_LEN {
        let response = send(card, &read(memory.len() as u16, chunk));
        assert!(
            response.sw == StatusWord::SUCCESS || response.sw == sw::END_OF_DATA,
            "{}",
            response.sw
        );
        assert!(!response.data.is_empty());
        memory.extend_from_slice(&response.data);
    }
    memory
}

#[test]
fn the_atr_is_a_pc_sc_part_3_storage_card_atr_with_a_correct_check_byte() {
    assert_eq!(
        ATR,
        [
            0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x00, 0x56,
            0x4D, 0x00, 0x00, 0x00, 0x00, 0x73
        ]
    );
    assert_eq!(ATR[1] & 0x0F, 15, "15 historical bytes");
    assert_eq!(
        &ATR[4..12],
        &[0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06]
    );
    assert_eq!(ATR[1..].iter().fold(0u8, |acc, byte| acc ^ byte), 0, "TCK");
    assert!(is_memory_card_atr(&ATR));
    assert!(!is_memory_card_atr(&storage_card_atr(0x03, [0x00, 0x01])));
}

#[test]
fn a_new_card_shows_its_id_the_counter_start_and_blank_areas() {
    let (mut card, _) = card();
    let memory = read_all_in_chunks(&mut card, 0);
    let content = CardContent::decode(&memory).unwrap();
    assert_eq!(content.card_id, ID);
    assert_eq!(content.counter, COUNTER_START);
    assert_eq!(content.value_area, ValueArea::Blank);
    assert_eq!(content.certificate, None);
}

#[test]
fn chunked_reads_of_any_size_give_the_same_memory() {
    let (mut card, _) = card();
    assert_eq!(
        send(&mut card, &update(map::SIGNATURE_AREA, &[0x5A; 64])).sw,
        StatusWord::SUCCESS
    );
    let whole = card.memory().as_bytes().to_vec();
    for chunk in [0u8, 1, 7, 64, 100, 255] {
        assert_eq!(read_all_in_chunks(&mut card, chunk), whole, "chunk {chunk}");
    }
    // One extended READ BINARY (Le 0000) gives everything at once.
    let response = send(&mut card, &[0xFF, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(response.data, whole);
}

#[test]
fn reads_cross_area_boundaries_and_stop_at_the_end() {
    let (mut card, _) = card();
    // ID and counter in one read: 8 + 4 bytes from 0.
    let response = send(&mut card, &read(0, 12));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(&response.data[..8], ID.as_bytes());
    assert_eq!(response.data[8..], COUNTER_START.to_be_bytes());
    // The last 4 bytes of the signature area and the first 4 of the certificate area.
    let response = send(&mut card, &read(map::CERTIFICATE_AREA - 4, 8));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(response.data, vec![0; 8]);
    // Le 10 from 4 bytes before the end: 4 bytes and 6282 (end of data before Le bytes).
    let last = (map::MEMORY_LEN - 4) as u16;
    let response = send(&mut card, &read(last, 10));
    assert_eq!(response.sw, sw::END_OF_DATA);
    assert_eq!(response.data.len(), 4);
    // Le 00 from there: everything to the end, and that is a full answer.
    let response = send(&mut card, &read(last, 0));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(response.data.len(), 4);
}

#[test]
fn addresses_outside_the_memory_are_refused_6b00() {
    let (mut card, _) = card();
    let end = map::MEMORY_LEN as u16;
    assert_eq!(send(&mut card, &read(end, 1)).sw, sw::WRONG_ADDRESS);
    assert_eq!(send(&mut card, &read(0xFFFF, 0)).sw, sw::WRONG_ADDRESS);
    assert_eq!(send(&mut card, &update(end, &[1])).sw, sw::WRONG_ADDRESS);
    assert_eq!(send(&mut card, &update(0x8000, &[1])).sw, sw::WRONG_ADDRESS);
}

#[test]
fn wrong_lengths_are_refused_6700_and_change_nothing() {
    let (mut card, _) = card();
    let before = card.memory().clone();
    let end = map::MEMORY_LEN as u16;
    for apdu in [
        // READ BINARY without Le, and with data.
        vec![0xFF, 0xB0, 0x00, 0x00],
        vec![0xFF, 0xB0, 0x00, 0x00, 0x01, 0xAA, 0x00],
        // UPDATE BINARY without data, with Le, and running past the end.
        vec![0xFF, 0xD6, 0x00, 0x10],
        vec![0xFF, 0xD6, 0x00, 0x10, 0x01, 0x01, 0x00],
        update(end - 2, &[1, 2, 3]),
        // GET DATA without Le.
        vec![0xFF, 0xCA, 0x00, 0x00],
        // Malformed APDUs: shorter than a header, length fields that do not match.
        vec![0xFF, 0xB0, 0x00],
        vec![0xFF, 0xD6, 0x00, 0x10, 0x05, 0x01],
    ] {
        assert_eq!(
            send(&mut card, &apdu).sw,
            StatusWord::WRONG_LENGTH,
            "{apdu:02X?}"
        );
    }
    assert_eq!(card.memory(), &before);
}

#[test]
fn other_classes_and_instructions_are_refused() {
    let (mut card, _) = card();
    // The purse's SELECT (class 00) and a proprietary class.
    assert_eq!(
        send(&mut card, &[0x00, 0xA4, 0x04, 0x00, 0x01, 0xF0, 0x00]).sw,
        StatusWord::CLA_NOT_SUPPORTED
    );
    assert_eq!(
        send(&mut card, &[0x80, 0xB0, 0, 0, 0]).sw,
        StatusWord::CLA_NOT_SUPPORTED
    );
    // Part 3 instructions this card does not have: LOAD KEYS, GENERAL AUTHENTICATE, VERIFY.
    for instruction in [0x82, 0x86, 0x20, 0x00] {
        assert_eq!(
            send(&mut card, &[0xFF, instruction, 0, 0, 0]).sw,
            StatusWord::INS_NOT_SUPPORTED,
            "{instruction:02X}"
        );
    }
}

#[test]
fn get_data_gives_the_card_id_as_uid() {
    let (mut card, _) = card();
    let response = send(&mut card, &[0xFF, 0xCA, 0x00, 0x00, 0x00]);
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(response.data, ID.as_bytes());
    let response = send(&mut card, &[0xFF, 0xCA, 0x00, 0x00, 0x08]);
    assert_eq!((response.sw, response.data.len()), (StatusWord::SUCCESS, 8));
    // Le longer than the UID: the UID and 6282; shorter: 6C08, the exact length.
    let response = send(&mut card, &[0xFF, 0xCA, 0x00, 0x00, 0x0A]);
    assert_eq!((response.sw, response.data.len()), (sw::END_OF_DATA, 8));
    let response = send(&mut card, &[0xFF, 0xCA, 0x00, 0x00, 0x04]);
    assert_eq!(response.sw, StatusWord(0x6C08));
    assert!(response.data.is_empty());
    // The ATS historical bytes of a contactless card: this card has none.
    assert_eq!(
        send(&mut card, &[0xFF, 0xCA, 0x01, 0x00, 0x00]).sw,
        StatusWord::FUNCTION_NOT_SUPPORTED
    );
    assert_eq!(
        send(&mut card, &[0xFF, 0xCA, 0x02, 0x00, 0x00]).sw,
        sw::WRONG_ADDRESS
    );
    assert_eq!(
        send(&mut card, &[0xFF, 0xCA, 0x00, 0x01, 0x00]).sw,
        sw::WRONG_ADDRESS
    );
}

#[test]
fn the_card_id_and_the_counter_cannot_be_written() {
    let (mut card, _) = card();
    let before = card.memory().clone();
    let cases: [(u16, &[u8], StatusWord); 6] = [
        (0x0000, &[0xEE; 8], sw::ROM_NOT_WRITABLE),
        (0x0007, &[0xEE], sw::ROM_NOT_WRITABLE),
        // From the ID into the counter: the ROM is named first.
        (0x0004, &[0xEE; 8], sw::ROM_NOT_WRITABLE),
        // The counter, raised to its start or to anything.
        (
            map::COUNTER,
            &COUNTER_START.to_be_bytes(),
            sw::COUNTER_PROTECTED,
        ),
        (0x000B, &[0xFF], sw::COUNTER_PROTECTED),
        // From the counter into the value area: refused whole.
        (0x000A, &[0x01; 10], sw::COUNTER_PROTECTED),
    ];
    for (address, data, expected) in cases {
        assert_eq!(
            send(&mut card, &update(address, data)).sw,
            expected,
            "{address:04X}"
        );
    }
    assert_eq!(
        card.memory(),
        &before,
        "nothing of a refused write is applied"
    );
    assert_eq!(card.counter(), COUNTER_START);
}

#[test]
fn every_write_touching_the_value_area_lowers_the_counter_by_exactly_one() {
    let (mut card, _) = card();
    let value_end = map::VALUE_AREA + map::VALUE_AREA_LEN as u16;
    let writes: [(u16, usize); 5] = [
        (map::VALUE_AREA, map::VALUE_AREA_LEN),
        (map::VALUE_AREA + 47, 1),
        // Across the value and signature areas: one value write, one step.
        (value_end - 2, 10),
        // The same bytes again: a write is a write.
        (map::VALUE_AREA, 1),
        (map::VALUE_AREA, 1),
    ];
    for (step, (address, len)) in writes.into_iter().enumerate() {
        let data = vec![0x01; len];
        assert_eq!(
            send(&mut card, &update(address, &data)).sw,
            StatusWord::SUCCESS
        );
        assert_eq!(card.counter(), COUNTER_START - 1 - step as u32);
        let shown = send(&mut card, &read(map::COUNTER, 4));
        assert_eq!(
            shown.data,
            card.counter().to_be_bytes(),
            "READ BINARY shows it"
        );
        assert_eq!(
            &card.memory().as_bytes()[address as usize..][..len],
            &data[..]
        );
    }
}

#[test]
fn signature_and_certificate_writes_do_not_move_the_counter() {
    let (mut card, _) = card();
    let end = map::MEMORY_LEN as u16;
    for (address, len) in [
        (map::SIGNATURE_AREA, 64),
        (map::CERTIFICATE_AREA, 255),
        (map::CERTIFICATE_AREA + 255, 255),
        (end - 18, 18),
        // Across the signature and certificate areas.
        (map::CERTIFICATE_AREA - 2, 4),
    ] {
        assert_eq!(
            send(&mut card, &update(address, &vec![0x77; len])).sw,
            StatusWord::SUCCESS
        );
        assert_eq!(card.counter(), COUNTER_START);
    }
}

#[test]
fn an_exhausted_card_refuses_value_writes_and_still_takes_the_others() {
    let eeprom = MemoryEeprom::new(EEPROM_SIZE);
    let mut bytes = *Memory::new(ID).as_bytes();
    bytes[map::COUNTER as usize..][..4].copy_from_slice(&1u32.to_be_bytes());
    let memory = Memory::from_bytes(&bytes).unwrap();
    let mut card = MemoryCard::with_memory(eeprom, memory).unwrap();
    assert_eq!(
        send(&mut card, &update(map::VALUE_AREA, &[1])).sw,
        StatusWord::SUCCESS
    );
    assert_eq!(card.counter(), 0);
    let before = card.memory().clone();
    assert_eq!(
        send(&mut card, &update(map::VALUE_AREA, &[2])).sw,
        sw::EXHAUSTED
    );
    assert_eq!(
        send(&mut card, &update(map::VALUE_AREA + 40, &[2; 20])).sw,
        sw::EXHAUSTED
    );
    assert_eq!(card.memory(), &before);
    assert_eq!(card.counter(), 0, "the counter never wraps round");
    assert_eq!(
        send(&mut card, &update(map::SIGNATURE_AREA, &[3; 64])).sw,
        StatusWord::SUCCESS
    );
}

#[test]
fn a_card_reopened_from_its_memory_holds_what_it_answered() {
    let (mut card, eeprom) = card();
    send(&mut card, &update(map::VALUE_AREA, &[0x01, 0x02]));
    send(&mut card, &update(map::SIGNATURE_AREA, &[0x03; 64]));
    let expected = card.memory().clone();
    drop(card);
    let reopened = MemoryCard::open(eeprom).unwrap();
    assert_eq!(reopened.memory(), &expected);
    assert_eq!(reopened.counter(), COUNTER_START - 1);
}

#[test]
fn two_chips_can_hold_the_same_writable_content_under_their_own_ids() {
    let (mut original, _) = card();
    send(&mut original, &update(map::VALUE_AREA, &[0x01; 13]));
    send(&mut original, &update(map::SIGNATURE_AREA, &[0x09; 64]));
    let other_id = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x2B]);
    let copy = Memory::with_writable_areas_of(other_id, COUNTER_START - 7, original.memory());
    let copy_card = MemoryCard::with_memory(MemoryEeprom::new(EEPROM_SIZE), copy).unwrap();
    assert_eq!(copy_card.card_id(), other_id);
    assert_eq!(copy_card.counter(), COUNTER_START - 7);
    assert_eq!(
        copy_card.memory().as_bytes()[map::VALUE_AREA as usize..],
        original.memory().as_bytes()[map::VALUE_AREA as usize..]
    );
}

#[test]
fn images_that_hold_no_memory_card_are_refused() {
    // Blank memory.
    assert!(matches!(
        MemoryCard::open(MemoryEeprom::new(EEPROM_SIZE)),
        Err(CardError::Blank)
    ));
    // A purse card's image.
    let purse = MemoryEeprom::new(EEPROM_SIZE);
    crate::Card::with_state(
        purse.clone(),
        crate::testing::personalized(valuecard_core::money::Amount::ZERO),
        rand_core::OsRng,
    )
    .unwrap();
    assert!(matches!(
        MemoryCard::open(purse),
        Err(CardError::Memory(MemoryError::NotAMemoryCard))
    ));
    // A counter above its start was never written by a card.
    let mut bytes = *Memory::new(ID).as_bytes();
    bytes[map::COUNTER as usize..][..4].copy_from_slice(&(COUNTER_START + 1).to_be_bytes());
    assert_eq!(
        Memory::from_bytes(&bytes),
        Err(MemoryError::CounterAboveStart(COUNTER_START + 1))
    );
    let mut payload = Memory::new(ID).encode_payload();
    payload[4] = 9;
    assert_eq!(
        Memory::decode_payload(&payload),
        Err(MemoryError::UnsupportedVersion(9))
    );
    assert_eq!(
        Memory::decode_payload(&payload[..100]),
        Err(MemoryError::UnsupportedVersion(9))
    );
    payload[4] = PAYLOAD_VERSION;
    assert_eq!(
        Memory::decode_payload(&payload[..100]),
        Err(MemoryError::WrongLength(95))
    );
}

#[test]
fn a_manufactured_image_is_not_manufactured_twice() {
    let (_, eeprom) = card();
    assert!(matches!(
        MemoryCard::manufacture(eeprom, ID),
        Err(CardError::AlreadyManufactured)
    ));
}

#[test]
fn the_payload_round_trips() {
    let (mut card, _) = card();
    send(&mut card, &update(map::VALUE_AREA, &[0x01; 13]));
    let memory = card.memory().clone();
    assert_eq!(
        Memory::decode_payload(&memory.encode_payload()).unwrap(),
        memory
    );
}

/// Memory whose writes fail (a worn-out EEPROM), without losing power.
#[derive(Debug)]
struct WornOut(MemoryEeprom);

impl crate::eeprom::Eeprom for WornOut {
    fn size(&self) -> usize {
        self.0.size()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), crate::eeprom::StorageError> {
        self.0.read(offset, buf)
    }
    fn write(&mut self, _: usize, _: &[u8]) -> Result<(), crate::eeprom::StorageError> {
        Err(crate::eeprom::StorageError::Io("worn out".into()))
    }
    fn flush(&mut self) -> Result<(), crate::eeprom::StorageError> {
        Ok(())
    }
}

#[test]
fn a_write_the_memory_does_not_take_is_answered_6581_and_changes_nothing() {
    let (_, eeprom) = card();
    let mut card = MemoryCard::open(WornOut(eeprom.clone())).unwrap();
    let response = card.process(&update(map::VALUE_AREA, &[0x01])).unwrap();
    assert_eq!(response.sw, StatusWord::MEMORY_FAILURE);
    assert_eq!(
        card.counter(),
        COUNTER_START,
        "no counter step without the write"
    );
    assert!(card.is_powered());
    // Reads still work, and show the old content.
    let response = card.process(&read(map::COUNTER, 4)).unwrap();
    assert_eq!(response.data, COUNTER_START.to_be_bytes());
    assert_eq!(MemoryCard::open(eeprom).unwrap().counter(), COUNTER_START);
}
