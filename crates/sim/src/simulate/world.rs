//! The simulated system: one center, a few dispensers, the payment terminals, the cards on
//! disk, and the run's tallies; set-up.

use std::path::Path;

use rand_core::{RngCore, SeedableRng};
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::ids::CardId;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_sam::SoftwareSam;
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::PaymentTerminal;

use super::cards::CardStore;
use super::report::{Report, Tally};
use super::{Config, SimError};
use crate::{install_sam, SimClock, WorldRng};
use valuecard_terminal::store::MemoryStore;

/// A simulated payment terminal.
pub(super) type SimTerminal = PaymentTerminal<SoftwareSam, MemoryStore, WorldRng>;
/// A dispenser as one lane uses it (`lane_dispensers`).
pub(super) type SimDispenser = Dispenser<SoftwareSam, WorldRng>;

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
    /// The dispensers' SAM images: every lane works with its own copy of each dispenser
    /// (a dispenser keeps nothing between loads but its random stream, which must be the
    /// lane's own for the run to be reproducible).
    pub(super) dispenser_sams: Vec<zeroize::Zeroizing<Vec<u8>>>,
    /// Worker threads for the parallel phases (issuance, the days' purchases).
    pub(super) threads: usize,
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
        threads: usize,
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
        let mut dispenser_sams = Vec::new();
        for _ in 0..config.dispensers() {
            let sam = install_sam(&mut center, Role::Dispenser, boxed(), &mut rng)?;
            dispenser_sams.push(zeroize::Zeroizing::new(sam.to_image()));
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
            dispenser_sams,
            threads: threads.max(1),
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

    /// A random terminal other than the stolen one and `except`, for the serial events.
    pub(super) fn honest_terminal(&mut self, except: Option<usize>) -> usize {
        let count = self.terminals.len() as u64;
        loop {
            let pick = self.below(count) as usize;
            if Some(pick) != self.stolen && (Some(pick) != except || count <= 2) {
                return pick;
            }
        }
    }

    /// Why a purchase at a serial event did not happen (see `Tally::refused`).
    pub(super) fn refused(&mut self, index: u32, error: valuecard_terminal::TerminalError) {
        let stolen_device = self.stolen.map(|stolen| self.terminals[stolen].device_id());
        let mut tally = Tally::default();
        tally.refused(
            self.flags[index as usize],
            self.card_ids[index as usize],
            stolen_device,
            error,
        );
        self.report.absorb(tally);
    }

    /// The key of a parallel phase's random streams (`day::lane_rng`), from the run's
    /// stream.
    pub(super) fn lane_key(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        key
    }

    /// Something the run did not expect: kept for the report, never hidden.
    pub(super) fn finding(&mut self, text: String) {
        let mut tally = Tally::default();
        tally.finding(text);
        self.report.absorb(tally);
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

/// A lane's own copy of every dispenser, on its SAM's image, drawing from `rng`.
pub(super) fn lane_dispensers(
    sams: &[zeroize::Zeroizing<Vec<u8>>],
    clock: &SimClock,
    rng: &mut WorldRng,
) -> Result<Vec<SimDispenser>, SimError> {
    sams.iter()
        .map(|image| {
            let sam = SoftwareSam::from_image(image)?.with_clock(Box::new(clock.clone()));
            Ok(Dispenser::new(sam, Box::new(clock.clone()), fork(rng))?)
        })
        .collect()
}

pub(super) fn fork(rng: &mut WorldRng) -> WorldRng {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    WorldRng::from_seed(seed)
}
