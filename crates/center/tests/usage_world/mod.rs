//! Shared set-up for the usage-upload tests: a scratch PostgreSQL schema (dropped at the
//! end), issued cards and their copies, and uploads from the world's first terminal.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{UploadReceipt, UsageItem, UsageUpload};
use valuecard_core::money::Amount;
use valuecard_reader::InProcessReader;
use valuecard_sim::{World, WorldRng};

pub type Reader = InProcessReader<MemoryEeprom, WorldRng>;

#[path = "../scratch/mod.rs"]
mod scratch;
pub use scratch::*;

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

/// A card issued with `initial`, its reader and its memory (to copy).
pub fn card(world: &mut World, name: &str, initial: u64) -> (Reader, MemoryEeprom, CardId) {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = world.manufacture_card(memory.clone()).unwrap();
    let mut reader = InProcessReader::with_card(name, card);
    let card_id = world.issue(&mut reader, amount(initial)).unwrap();
    (reader, memory, card_id)
}

/// A copy of a card made from its memory: an attacker's clone.
pub fn copy_of(world: &mut World, memory: &MemoryEeprom) -> Reader {
    let copy = MemoryEeprom::new(EEPROM_SIZE);
    copy.restore(&memory.snapshot());
    InProcessReader::with_card("copy", Card::open(copy, world.fork_rng()).unwrap())
}

/// `items` uploaded by the world's first terminal.
pub fn upload(world: &mut World, items: Vec<UsageItem>) -> UploadReceipt {
    let terminal_id = world.terminals[0].device_id();
    world
        .center
        .ingest_usage(&UsageUpload { terminal_id, items })
        .unwrap()
}
