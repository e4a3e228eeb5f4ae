//! Shared set-up for the system tests: a seeded world and cards on fault-injecting memory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::SeedableRng;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::{CardReader, InProcessReader, ReaderError};
use valuecard_sim::{Storage, World, WorldRng};

pub type TestEeprom = FaultInjectingEeprom<MemoryEeprom>;
pub type TestReader = InProcessReader<TestEeprom, WorldRng>;

pub fn today() -> Date {
    Date::from_ymd(2026, 6, 1).unwrap()
}

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

pub fn world(seed: u64, terminals: usize) -> World {
    World::create_seeded(
        Storage::Memory,
        terminals,
        today(),
        WorldRng::seed_from_u64(seed),
    )
    .unwrap()
}

/// A manufactured (not yet issued) card in a reader, and a handle on its memory.
pub fn blank_card(world: &mut World, name: &str) -> (TestReader, MemoryEeprom) {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = world
        .manufacture_card(FaultInjectingEeprom::new(memory.clone()))
        .unwrap();
    (InProcessReader::with_card(name, card), memory)
}

/// An issued card holding `initial`.
pub fn issued_card(world: &mut World, name: &str, initial: u64) -> (TestReader, MemoryEeprom) {
    let (mut reader, memory) = blank_card(world, name);
    world.issue(&mut reader, amount(initial)).unwrap();
    (reader, memory)
}

/// Power-up after a cut: a new card on the same memory, in the same reader.
pub fn power_up(world: &mut World, reader: &mut TestReader, memory: &MemoryEeprom) {
    reader.remove();
    let card = Card::open(FaultInjectingEeprom::new(memory.clone()), world.fork_rng()).unwrap();
    reader.insert(card);
}

/// Arms a power cut at the `write`-th write from now, leaving `numerator/denominator` of it.
pub fn arm_cut(reader: &mut TestReader, write: u64, numerator: usize, denominator: usize) {
    reader
        .card_mut()
        .unwrap()
        .eeprom_mut()
        .cut_power_at(write, numerator, denominator);
}

/// A world whose center and terminals keep their records in SQLite files, as in production
/// (`Storage::Directory`): the center under `dir/center`, terminal N's records in
/// `dir/terminal-N/purchases.sqlite`. The directory goes away with the returned handle.
pub fn world_on_disk(seed: u64, terminals: usize) -> (tempfile::TempDir, World) {
    // In memory-backed files where the system has them: the tearing harnesses build hundreds
    // of worlds, and on a disk SQLite's fsyncs dominate their time. They kill the process
    // (its connections), not the machine, so what the fsyncs add is not under test there.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let world = World::create_seeded(
        Storage::Directory(dir.path().to_path_buf()),
        terminals,
        today(),
        WorldRng::seed_from_u64(seed),
    )
    .unwrap();
    (dir, world)
}

/// A reader that loses the card's answer to `ins`: after the card ran the command
/// (`delivered`), or before the command reached it.
pub struct LosingAnswer<'a> {
    pub inner: &'a mut TestReader,
    pub ins: u8,
    pub delivered: bool,
}

impl CardReader for LosingAnswer<'_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        if apdu.get(1) != Some(&self.ins) {
            return self.inner.transmit_raw(apdu);
        }
        if self.delivered {
            self.inner.transmit_raw(apdu)?;
        }
        Err(ReaderError::CardRemoved)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}
