//! `valuecard card apdu`: drive a card image by hand from the card command document (a purse
//! card, docs/card-commands.md) or the memory card document (docs/memory-card.md).

use std::path::Path;
use std::process::ExitCode;

use valuecard_card::memcard::{FileMemoryCard, MemoryError};
use valuecard_card::{CardError, FileCard};
use valuecard_core::apdu::Response;
use valuecard_reader::EmulatedCard;

/// The card in an image file, of whichever kind it is.
fn open_any(card_path: &Path) -> Result<Box<dyn EmulatedCard>, CardError> {
    match FileMemoryCard::open_file(card_path) {
        Ok(card) => Ok(Box::new(card)),
        // Closed again before the purse card opens the (locked) file.
        Err(CardError::Memory(MemoryError::NotAMemoryCard)) => {
            Ok(Box::new(FileCard::open_file(card_path)?))
        }
        Err(error) => Err(error),
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&cleaned).map_err(|error| format!("{text:?} is not hex: {error}"))
}

pub fn apdu(card_path: &Path, json: bool, apdus: &[String]) -> Result<ExitCode, String> {
    let commands = apdus
        .iter()
        .map(|text| parse_hex(text))
        .collect::<Result<Vec<_>, _>>()?;
    let mut card =
        open_any(card_path).map_err(|error| format!("{}: {error}", card_path.display()))?;
    let mut exchanges = Vec::new();
    for command in &commands {
        let bytes = card
            .transmit(command)
            .map_err(|error| format!("card: {error}"))?;
        let response = Response::parse(&bytes)
            .map_err(|error| format!("card answered malformed bytes: {error}"))?;
        if json {
            exchanges.push(serde_json::json!({
                "command": hex::encode_upper(command),
                "data": hex::encode_upper(&response.data),
                "sw": format!("{:04X}", response.sw.0),
                "meaning": response.sw.meaning(),
            }));
        } else {
            println!("=> {}", hex::encode_upper(command));
            if !response.data.is_empty() {
                println!("<= {}", hex::encode_upper(&response.data));
            }
            println!("<= {}", response.sw);
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "card": card_path.display().to_string(), "exchanges": exchanges })
        );
    }
    Ok(ExitCode::SUCCESS)
}
