//! The simulated system: one center, a few dispensers, the payment terminals, the cards on
//! disk, and the run's tallies; set-up and card issuance.

use std::path::Path;

use rand_core::{RngCore, SeedableRng};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::ids::CardId;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_reader::InProcessReader;
use valuecard_sam::SoftwareSam;
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::PaymentTerminal;

use super::cards::{compact, CardStore};
use super::report::Report;
use super::{Config, Progress, SimError};
use crate::{install_sam, SimClock, WorldRng};
use valuecard_terminal::store::MemoryStore;

/// A simulated payment terminal.
pub(super) type SimTerminal = PaymentTerminal<SoftwareSam, MemoryStore, WorldRng>;

/// What each card holds initially, in minor units.
pub const INITIAL_MINOR: u64 = 5_000;
/// A holder reloads when a purchase leaves less than this on the card.
pub(super) const RELOAD_BELOW_MINOR: u64 = 1_500;
/// What a holder reloads.
pub(super) const RELOAD_MINOR: u64 = 10_000;

/// Per-card flags, one byte per card.
pub(super) const LOST: u8 = 1;
pub(super) const CLONED: u8 = 2;
/// A card the thief sold to with the stolen terminal after the theft.
pub(super) const STOLEN_WRITER: u8 = 4;

/// How often progress is reported, in units of work.
pub(super) const PROGRESS_EVERY: u64 = 1_000;

/// The day the simulation starts.
pub(super) fn first_day() -> Date {
    Date::from_ymd(2026, 6, 1).unwrap_or(Date(0))
}

pub(super) fn amount(minor: u64) -> Result<Amount, SimError> {
    Amount::new(minor).map_err(|error| SimError::Setup(error.to_string()))
}

pub(super) struct SimWorld {
    pub(super) config: Config,
    pub(super) center: Center,
    pub(super) dispensers: Vec<Dispenser<SoftwareSam, WorldRng>>,
    pub(super) terminals: Vec<SimTerminal>,
    pub(super) clock: SimClock,
    pub(super) rng: WorldRng,
    pub(super) cards: CardStore,
    pub(super) card_ids: Vec<CardId>,
    pub(super) flags: Vec<u8>,
    /// The terminal stolen, once it is.
    pub(super) stolen: Option<usize>,
    /// The copies the clone injections made: the card's index and the copy's image.
    pub(super) copies: Vec<(u32, Vec<u8>)>,
    /// What the thief sold to each card it wrote (until a load replaces its record).
    pub(super) thief_sold: std::collections::BTreeMap<u32, u64>,
    pub(super) report: Report,
}

impl SimWorld {
    pub(super) fn create(
        config: &Config,
        dir: &Path,
        database: Option<&str>,
    ) -> Result<Self, SimError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| SimError::Setup(format!("{}: {error}", dir.display())))?;
        let mut rng = WorldRng::seed_from_u64(config.seed);
        let clock = SimClock::new(first_day());
        let boxed = || -> Box<dyn Clock> { Box::new(clock.clone()) };
        let center_dir = dir.join("center");
        let db = match database {
            Some(url) => Database::connect_postgres(url)?,
            None => {
                std::fs::create_dir_all(&center_dir).map_err(|error| {
                    SimError::Setup(format!("{}: {error}", center_dir.display()))
                })?;
                relaxed_sqlite(&center_dir.join("center.sqlite"))?
            }
        };
        let mut center = Center::init(&center_dir, Some(db), boxed(), &mut rng)?;
        let mut dispensers = Vec::new();
        for _ in 0..config.dispensers() {
            let sam = install_sam(&mut center, Role::Dispenser, boxed(), &mut rng)?;
            dispensers.push(Dispenser::new(sam, boxed(), fork(&mut rng))?);
        }
        let mut terminals = Vec::new();
        for _ in 0..config.terminals {
            let sam = install_sam(&mut center, Role::PaymentTerminal, boxed(), &mut rng)?;
            terminals.push(PaymentTerminal::new(
                sam,
                MemoryStore::forgetting_acknowledged(),
                boxed(),
                fork(&mut rng),
            )?);
        }
        let cards = CardStore::create(&dir.join("cards.sqlite"))?;
        Ok(SimWorld {
            config: *config,
            center,
            dispensers,
            terminals,
            clock,
            rng,
            cards,
            card_ids: Vec::new(),
            flags: Vec::new(),
            stolen: None,
            copies: Vec::new(),
            thief_sold: std::collections::BTreeMap::new(),
            report: Report::new(config),
        })
    }

    /// A random source for one party or one card session, drawn from the run's stream.
    pub(super) fn fork_rng(&mut self) -> WorldRng {
        fork(&mut self.rng)
    }

    /// A number below `bound` (at least 1), from the run's stream.
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        self.rng.next_u64() % bound.max(1)
    }

    /// Manufactures every card, issues it at a dispenser (its ID, key pair, certificate)
    /// and loads its initial value: the real protocol, card by card.
    pub(super) fn issue_cards(
        &mut self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), SimError> {
        let total = u64::from(self.config.cards);
        let initial = amount(INITIAL_MINOR)?;
        self.card_ids.reserve_exact(self.config.cards as usize);
        self.flags.reserve_exact(self.config.cards as usize);
        for index in 0..self.config.cards {
            let memory = MemoryEeprom::new(EEPROM_SIZE);
            let (serial, transport_key) = self.center.manufacture_chip();
            let rng = self.fork_rng();
            let card = Card::manufacture(memory.clone(), serial, transport_key, rng)
                .map_err(|error| SimError::CardImage(error.to_string()))?;
            let mut reader = InProcessReader::with_card("issue", card);
            let which = index as usize % self.dispensers.len();
            let dispenser = &mut self.dispensers[which];
            let card_id = dispenser.issue_card(&mut reader, &mut self.center)?;
            dispenser.load(&mut reader, &mut self.center, initial)?;
            self.cards.put(index, &compact(&memory)?)?;
            self.card_ids.push(card_id);
            self.flags.push(0);
            self.report.cards_issued += 1;
            let done = u64::from(index) + 1;
            if done.is_multiple_of(PROGRESS_EVERY) || done == total {
                progress(Progress {
                    phase: "issuing cards",
                    done,
                    total,
                });
            }
        }
        Ok(())
    }

    /// Something the run did not expect: kept for the report, never hidden.
    pub(super) fn finding(&mut self, text: String) {
        const KEPT: usize = 40;
        self.report.findings_total += 1;
        if self.report.findings.len() < KEPT {
            self.report.findings.push(text);
        }
    }
}

/// The center's SQLite file with commits that do not wait for the disk (synchronous OFF),
/// held by this one connection (locking mode EXCLUSIVE: no file lock taken and released per
/// transaction), with room to keep every statement of the center prepared. Simulation
/// only: a crash of the machine could lose the last commits, and the run is lost with it
/// anyway. `center serve` and every other command open the center through
/// `Database::open_sqlite`, which keeps synchronous FULL; these settings are per connection
/// and are not stored in the file.
fn relaxed_sqlite(path: &Path) -> Result<Database, SimError> {
    /// More than the distinct statements the center runs, so none is parsed twice.
    const STATEMENTS: usize = 512;
    let database = Database::open_sqlite(path)?;
    if let Database::Sqlite { connection, .. } = &database {
        connection
            .execute_batch("PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE;")
            .map_err(|error| SimError::Setup(format!("center database: {error}")))?;
        connection.set_prepared_statement_cache_capacity(STATEMENTS);
    }
    Ok(database)
}

pub(super) fn fork(rng: &mut WorldRng) -> WorldRng {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    WorldRng::from_seed(seed)
}
