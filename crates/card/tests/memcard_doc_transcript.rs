//! The worked example of docs/memory-card.md § 7, replayed against a new memory card byte
//! for byte: the document cannot drift from the card.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::memcard::MemoryCard;
use valuecard_core::ids::CardId;

fn bytes(line: &str) -> Vec<u8> {
    let digits: String = line.split_whitespace().collect();
    hex::decode(&digits).unwrap_or_else(|error| panic!("{line:?}: {error}"))
}

#[test]
fn the_documented_transcript_is_what_the_card_answers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/memory-card.md");
    let document = std::fs::read_to_string(path).unwrap();
    let transcript = document
        .split("<!-- transcript: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- transcript: end -->").next())
        .expect("the transcript markers");
    let mut card = MemoryCard::manufacture(
        MemoryEeprom::new(EEPROM_SIZE),
        CardId([0xC1, 0, 0, 0, 0, 0, 0, 1]),
    )
    .unwrap();
    let mut pairs = 0;
    let mut pending: Option<Vec<u8>> = None;
    for line in transcript.lines() {
        if let Some(command) = line.strip_prefix("> ") {
            assert!(pending.is_none(), "two commands in a row before {line:?}");
            pending = Some(bytes(command));
        } else if let Some(expected) = line.strip_prefix("< ") {
            let command = pending.take().expect("a response without its command");
            let answer = card.transmit(&command).unwrap();
            assert_eq!(
                hex::encode_upper(&answer),
                hex::encode_upper(bytes(expected)),
                "the card's answer to {}",
                hex::encode_upper(&command)
            );
            pairs += 1;
        }
    }
    assert!(pending.is_none(), "a command without its response");
    assert!(pairs >= 10, "only {pairs} command pairs in the transcript");
}
