//! `valuecard simulate`: the whole system over simulated days at scale, with real
//! cryptography, the real card emulator, real terminals and the real center.
//!
//! Each day cards buy at random terminals, cards low on value reload at a dispenser, and
//! every terminal reports its stamp, uploads its purchases and syncs its lists at night.
//! Faults are injected from the seed: power cuts at a random write of a card, lost answers,
//! cloned cards, a stolen terminal and lost cards. At the end the run reports what the
//! center detected against what was injected and the conservation equation.
//!
//! Everything that decides the run comes from the seed (one ChaCha20 stream, forked in a
//! fixed order), the simulated calendar and fixed iteration orders, so the same arguments
//! give the same [`Report`] byte for byte. Wall-clock measurements live apart in
//! [`Timing`].
//!
//! Issuance and the days' purchases run on worker threads: the cards and terminals are
//! split into [`Config::shards`] shards, fixed by the sizes; each shard draws from its own
//! stream (derived from the seed, the day and the shard), the center serves the shards in a
//! fixed turn (`lanes.rs`), and their tallies are added in shard order. The events, the
//! nights and the audit run on one thread. The number of threads changes how fast a run
//! goes, never what it reports.
//!
//! Memory stays bounded: cards live on disk ([`cards`]), terminals keep only what the
//! center has not acknowledged (`MemoryStore::forgetting_acknowledged`), and per card the run keeps its ID and one byte
//! of flags.

mod cards;
mod day;
mod events;
mod issuance;
mod lanes;
mod report;
mod shard;
mod world;

pub use report::{
    Conservation, Detection, Faults, Loads, Outcome, Purchases, Report, Timing, Uploads,
};
pub use world::INITIAL_MINOR;

use std::path::Path;

/// The most shards a run is split into: enough for a few cores to stay busy while some
/// shards wait for their turn at the center, few enough that each has many cards.
pub const SHARDS_MAX: u32 = 16;

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub cards: u32,
    pub terminals: u32,
    pub days: u32,
    pub seed: u64,
}

impl Config {
    /// Purchases a day: one per ten cards (0.1 per card per day), at least one.
    pub fn purchases_per_day(&self) -> u64 {
        u64::from(self.cards).div_ceil(10).max(1)
    }

    /// A few dispensers: one per 2,500 terminals, between one and four.
    pub fn dispensers(&self) -> u32 {
        (self.terminals / 2_500).clamp(1, 4)
    }

    /// Cloned cards injected: a few, more at scale.
    pub fn clones(&self) -> u32 {
        (2 + self.cards / 250_000).min(self.cards / 4)
    }

    /// Cards reported lost.
    pub fn lost_cards(&self) -> u32 {
        (2 + self.cards / 100_000).min(self.cards / 4)
    }

    /// The shards the cards and terminals are split into for the parallel phases: fixed
    /// by the sizes alone (never by the threads), at least two terminals each (one may be
    /// stolen and a shard's cards still need an honest one), at most [`SHARDS_MAX`], and no
    /// more than the cards.
    pub fn shards(&self) -> u32 {
        (self.terminals / 2)
            .clamp(1, SHARDS_MAX)
            .min(self.cards.max(1))
    }

    /// Stolen terminals: one, if there is another terminal to notice it and a day after
    /// the first for the thief to sell on.
    pub fn stolen_terminals(&self) -> u32 {
        u32::from(self.terminals >= 2 && self.days >= 2)
    }

    fn check(&self) -> Result<(), SimError> {
        if self.cards == 0 || self.terminals == 0 || self.days == 0 {
            return Err(SimError::Setup(
                "cards, terminals and days must each be at least 1".into(),
            ));
        }
        if self.days > 3_000 {
            return Err(SimError::Setup(
                "at most 3,000 days: a terminal's stamp chain is not longer".into(),
            ));
        }
        Ok(())
    }
}

/// Where the run stands, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("{0}")]
    Setup(String),
    #[error("center: {0}")]
    Center(#[from] valuecard_core::messages::center::CenterError),
    #[error("SAM: {0}")]
    Sam(#[from] valuecard_sam::SamError),
    #[error("terminal: {0}")]
    Terminal(#[from] valuecard_terminal::TerminalError),
    #[error("card store: {0}")]
    CardStore(String),
    /// A card's memory did not open as a whole image: the card's atomic commit failed.
    #[error("card image: {0}")]
    CardImage(String),
    #[error(transparent)]
    World(#[from] crate::WorldError),
}

/// Runs the simulation in `dir` (created; it must not hold an earlier run), with the
/// center on SQLite there or on the PostgreSQL database at `database`, with at most
/// `threads` shards computing at once while the center serves one shard's request beside
/// them (the report does not depend on how many).
pub fn run(
    config: &Config,
    dir: &Path,
    database: Option<&str>,
    threads: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, SimError> {
    config.check()?;
    let started = std::time::Instant::now();
    let floor = report::FloorRates::measure(config.seed);
    let mut world = world::SimWorld::create(config, dir, database, threads)?;
    let setup = started.elapsed();
    let issuing = std::time::Instant::now();
    world.issue_cards(progress)?;
    let issuance = issuing.elapsed();
    let running = std::time::Instant::now();
    world.run_days(progress)?;
    let days = running.elapsed();
    let auditing = std::time::Instant::now();
    let report = world.audit(progress)?;
    let audit = auditing.elapsed();
    let timing = Timing::new(&report, &floor, world.threads, setup, issuance, days, audit);
    Ok(Outcome { report, timing })
}
