//! The day loop: each morning's injected events, the day's purchases and reloads run by
//! shard on worker threads (`shard.rs`), the thief's sales, and the night's stamp
//! reports, uploads and list syncs, in terminal order on one thread.

use std::sync::atomic::AtomicU64;

use rand_core::SeedableRng;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::Card;
use valuecard_reader::{CardReader, InProcessReader};

use super::cards::SimReader;
use super::lanes::{run_lanes, split};
use super::report::FINDINGS_KEPT;
use super::shard::DayShard;
use super::world::{lane_dispensers, SimTerminal, SimWorld};
use super::{Progress, SimError};
use crate::WorldRng;

/// One card command in this many meets a fault, at least a handful per run.
pub(super) const FAULT_ONE_IN: u64 = 1_000;
/// The most writes a purchase or load makes on the card (its image pages, the flush, the
/// old header's erase); a cut is armed at one of these.
pub(super) const WRITES_MAX: u64 = 10;

/// A fault to inject into one card transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    /// Power is cut at this write of the card, leaving `torn` eighths of it written.
    PowerCut {
        write: u64,
        torn: usize,
    },
    /// The answer to the value-moving command is lost; with `delivered` the card got it.
    LostAnswer {
        delivered: bool,
    },
}

/// Powers a card up again on the memory it lost power on.
pub(super) fn power_up(memory: &MemoryEeprom, rng: crate::WorldRng) -> Result<SimReader, SimError> {
    let card = Card::open(FaultInjectingEeprom::new(memory.clone()), rng)
        .map_err(|error| SimError::CardImage(format!("after a power cut: {error}")))?;
    Ok(InProcessReader::with_card("sim", card))
}

pub(super) fn powered(reader: &SimReader) -> bool {
    reader.card().is_some_and(|card| card.is_powered())
}

/// The random stream of one lane: the run's key for the phase, on a stream numbered by
/// the day and the shard, so that it depends on nothing else.
pub(super) fn lane_rng(key: [u8; 32], day: u32, shard: u32) -> WorldRng {
    let mut rng = WorldRng::from_seed(key);
    rng.set_stream((u64::from(day) << 32) | u64::from(shard));
    rng
}

impl SimWorld {
    pub(super) fn run_days(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<(), SimError> {
        let per_day = self.config.purchases_per_day();
        let total = per_day * u64::from(self.config.days);
        let plan = self.plan_events();
        let key = self.lane_key();
        for day in 0..self.config.days {
            self.morning(&plan, day)?;
            let done_before = u64::from(day) * per_day;
            self.run_shards(key, day, &mut |done| {
                progress(Progress {
                    phase: "simulating days",
                    done: done_before + done,
                    total,
                })
            })?;
            self.thief_sells()?;
            self.night()?;
            self.clock.pass_days(1);
            progress(Progress {
                phase: "simulating days",
                done: u64::from(day + 1) * per_day,
                total,
            });
        }
        Ok(())
    }

    /// The day's purchases and reloads, shard by shard on the worker threads; what they
    /// counted is added to the report in shard order.
    fn run_shards(
        &mut self,
        key: [u8; 32],
        day: u32,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), SimError> {
        let shards = self.config.shards();
        let card_ranges = split(self.config.cards as usize, shards);
        let terminal_ranges = split(self.config.terminals as usize, shards);
        let purchases = split(self.config.purchases_per_day() as usize, shards);
        let stolen_device = self.stolen.map(|stolen| self.terminals[stolen].device_id());
        let done = AtomicU64::new(0);
        let mut flags: &mut [u8] = &mut self.flags;
        let mut terminals: &mut [SimTerminal] = &mut self.terminals;
        let mut lanes = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            let cards = &card_ranges[shard as usize];
            let owned = &terminal_ranges[shard as usize];
            let (shard_flags, rest) = std::mem::take(&mut flags).split_at_mut(cards.len());
            flags = rest;
            let (shard_terminals, rest) = std::mem::take(&mut terminals).split_at_mut(owned.len());
            terminals = rest;
            let mut rng = lane_rng(key, day, shard);
            lanes.push(DayShard {
                config: self.config,
                first_card: cards.start as u32,
                flags: shard_flags,
                card_ids: &self.card_ids,
                terminals: shard_terminals,
                stolen: self
                    .stolen
                    .filter(|stolen| owned.contains(stolen))
                    .map(|stolen| stolen - owned.start),
                stolen_device,
                thief_sold: &self.thief_sold,
                dispensers: lane_dispensers(&self.dispenser_sams, &self.clock, &mut rng)?,
                cards: &self.cards,
                purchases: purchases[shard as usize].len() as u64,
                rng,
                done: &done,
            });
        }
        let days = run_lanes(
            &mut self.center,
            self.threads,
            lanes,
            &done,
            progress,
            |shard, center| shard.run(center),
        )?;
        for day in days {
            self.report.absorb(day.tally);
            for index in day.revealed {
                self.thief_sold.remove(&index);
            }
        }
        Ok(())
    }

    /// The night: every honest terminal reports its stamp and uploads its purchases; then
    /// every one fetches the lists (so a clone found in one upload reaches all of them).
    pub(super) fn night(&mut self) -> Result<(), SimError> {
        let center = &mut self.center;
        for (index, terminal) in self.terminals.iter_mut().enumerate() {
            if Some(index) == self.stolen {
                continue;
            }
            terminal.advance_stamp(&mut *center)?;
            self.report.uploads.stamp_reports += 1;
            let receipt = terminal.upload_usage(&mut *center)?;
            self.report.uploads.uploads += 1;
            self.report.uploads.records_stored += u64::from(receipt.stored);
            self.report.uploads.duplicates += u64::from(receipt.duplicates);
            self.report.uploads.refused += receipt.refused.len() as u64;
            let held = terminal.store().held() as u64;
            let uploads = &mut self.report.uploads;
            uploads.held_after_upload_max = uploads.held_after_upload_max.max(held);
            for card in receipt.clones_detected {
                self.report.clones_in_receipts.insert(card.to_string());
            }
            for (_, reason) in receipt.refused {
                if self.report.findings.len() < FINDINGS_KEPT {
                    self.report
                        .findings
                        .push(format!("upload refused a record: {reason}"));
                }
                self.report.findings_total += 1;
            }
        }
        for (index, terminal) in self.terminals.iter_mut().enumerate() {
            if Some(index) != self.stolen {
                terminal.update_lists(&mut *center)?;
                self.report.uploads.list_syncs += 1;
            }
        }
        Ok(())
    }
}

/// Reads the purse of the card in `reader` (its balance), as the holder would.
pub(super) fn balance(reader: &mut impl CardReader) -> Result<u64, SimError> {
    Ok(crate::read_purse(reader)?.balance.minor())
}
