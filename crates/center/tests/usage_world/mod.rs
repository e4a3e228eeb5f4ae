//! Shared set-up for the usage-upload tests: a scratch PostgreSQL schema (dropped at the
//! end), issued cards and their copies, and uploads from the world's first terminal.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::RngCore;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{UploadReceipt, UsageItem, UsageUpload};
use valuecard_core::money::Amount;
use valuecard_reader::InProcessReader;
use valuecard_sim::{World, WorldRng};

pub type Reader = InProcessReader<MemoryEeprom, WorldRng>;

pub fn postgres_url() -> String {
    std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// A scratch schema, dropped (with everything in it) when the test ends.
pub struct Scratch {
    admin: postgres::Client,
    pub schema: String,
    /// The server's connection string with the schema as its search path.
    pub url: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
    }
}

/// A scratch schema named after `purpose`, or `None` (with a note on stderr, which CI
/// reads) when no PostgreSQL server answers.
pub fn scratch(purpose: &str) -> Option<Scratch> {
    let url = postgres_url();
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL not reachable at {url:?}: {error}"
            );
            return None;
        }
    };
    let schema = format!(
        "valuecard_{purpose}_test_{:016x}",
        rand_core::OsRng.next_u64()
    );
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let url = format!("{url} options='-c search_path={schema}'");
    Some(Scratch { admin, schema, url })
}

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
