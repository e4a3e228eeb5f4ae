//! The simulated cards, kept on disk: each card is the slot in use of its memory (about a
//! kilobyte), one row per card in a SQLite table keyed by the card's index. A transaction
//! puts the slot back into a blank memory, runs the real card on it, and writes the slot
//! in use back. A million cards then cost a file of about a gigabyte and no memory beyond
//! SQLite's page cache.
//!
//! The store is shared by the simulation's worker threads: each card belongs to one shard,
//! so no two threads ever touch the same row, and one lock over the connection keeps
//! SQLite's use single-threaded (its calls are short beside a card transaction's
//! cryptography).

use std::path::Path;

use valuecard_card::eeprom::{Eeprom, FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::{ImageStore, EEPROM_SIZE};
use valuecard_card::Card;
use valuecard_reader::InProcessReader;

use super::SimError;
use crate::WorldRng;

/// A card in a reader on memory that can lose power at a chosen write.
pub type SimReader = InProcessReader<FaultInjectingEeprom<MemoryEeprom>, WorldRng>;

/// How many card writes go into one SQLite transaction: the store is the simulation's
/// scratch space, so a crash loses the run anyway, and one commit per card would cost more
/// than the card's own work.
const WRITES_PER_COMMIT: u32 = 20_000;

fn storage(error: rusqlite::Error) -> SimError {
    SimError::CardStore(error.to_string())
}

/// The card images, by card index.
pub struct CardStore {
    inner: std::sync::Mutex<Connection>,
}

/// The connection and the writes of its open transaction.
struct Connection {
    connection: rusqlite::Connection,
    uncommitted: u32,
}

impl core::fmt::Debug for CardStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CardStore").finish_non_exhaustive()
    }
}

impl CardStore {
    /// A new, empty store at `path`.
    pub fn create(path: &Path) -> Result<Self, SimError> {
        if path.exists() {
            return Err(SimError::Setup(format!(
                "{} already exists: the simulation starts from an empty directory",
                path.display()
            )));
        }
        let connection = rusqlite::Connection::open(path).map_err(storage)?;
        // Scratch data of one run: no journal to fsync.
        connection
            .execute_batch(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;
                 CREATE TABLE cards (card_index INTEGER PRIMARY KEY, image BLOB NOT NULL);
                 BEGIN;",
            )
            .map_err(storage)?;
        Ok(CardStore {
            inner: std::sync::Mutex::new(Connection {
                connection,
                uncommitted: 0,
            }),
        })
    }

    /// The connection, for one short use. A thread that panicked while holding it left
    /// nothing half-done that matters: its run fails at the join anyway.
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a card's slot in use (insert or replace).
    pub fn put(&self, index: u32, image: &[u8]) -> Result<(), SimError> {
        let mut inner = self.lock();
        inner
            .connection
            .prepare_cached("INSERT OR REPLACE INTO cards (card_index, image) VALUES (?1, ?2)")
            .map_err(storage)?
            .execute(rusqlite::params![index, image])
            .map_err(storage)?;
        inner.uncommitted += 1;
        if inner.uncommitted >= WRITES_PER_COMMIT {
            inner
                .connection
                .execute_batch("COMMIT; BEGIN;")
                .map_err(storage)?;
            inner.uncommitted = 0;
        }
        Ok(())
    }

    /// Commits what was written, so that the directory of a finished run holds every card.
    pub fn flush(&self) -> Result<(), SimError> {
        let mut inner = self.lock();
        inner
            .connection
            .execute_batch("COMMIT; BEGIN;")
            .map_err(storage)?;
        inner.uncommitted = 0;
        Ok(())
    }

    pub fn get(&self, index: u32) -> Result<Vec<u8>, SimError> {
        self.lock()
            .connection
            .prepare_cached("SELECT image FROM cards WHERE card_index = ?1")
            .map_err(storage)?
            .query_row([index], |row| row.get(0))
            .map_err(storage)
    }

    /// Powers the card up in a reader, on fresh memory holding its stored image.
    pub fn open(&self, index: u32, rng: WorldRng) -> Result<(SimReader, MemoryEeprom), SimError> {
        let image = self.get(index)?;
        insert(&image, rng)
    }

    /// Writes the card's state back: whatever its memory holds now, power cut or not.
    pub fn save(&self, index: u32, memory: &MemoryEeprom) -> Result<(), SimError> {
        let image = compact(memory)?;
        self.put(index, &image)
    }
}

/// A card made of `image` (a slot in use) on fresh memory, powered up in a reader.
pub fn insert(image: &[u8], rng: WorldRng) -> Result<(SimReader, MemoryEeprom), SimError> {
    let mut memory = MemoryEeprom::new(EEPROM_SIZE);
    memory
        .write(0, image)
        .map_err(|error| SimError::CardImage(error.to_string()))?;
    let card = Card::open(FaultInjectingEeprom::new(memory.clone()), rng)
        .map_err(|error| SimError::CardImage(error.to_string()))?;
    Ok((InProcessReader::with_card("sim", card), memory))
}

/// The slot in use of a card's memory. Opening the image checks it: after a power cut at
/// any write it must hold the whole old or the whole new state, never a damaged one.
pub fn compact(memory: &MemoryEeprom) -> Result<Vec<u8>, SimError> {
    let (store, _) =
        ImageStore::open(memory.clone()).map_err(|error| SimError::CardImage(error.to_string()))?;
    store
        .active_slot_bytes()
        .map_err(|error| SimError::CardImage(error.to_string()))?
        .ok_or_else(|| SimError::CardImage("a card's memory is blank".into()))
}
