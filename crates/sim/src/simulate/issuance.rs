//! Card issuance by shard: every card is manufactured, issued at a dispenser (its ID, key
//! pair and certificate from the center) and loaded with its initial value, by the real
//! protocol, card by card. Shards of contiguous card indices run on the worker threads;
//! the center serves them in turn (`lanes.rs`), so card IDs and load numbers follow the
//! same order whatever the threads do.

use std::sync::atomic::{AtomicU64, Ordering};

use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_core::ids::CardId;
use valuecard_reader::InProcessReader;

use super::cards::{compact, CardStore};
use super::day::lane_rng;
use super::lanes::{run_lanes, split, LaneCenter};
use super::world::{amount, fork, lane_dispensers, SimDispenser, SimWorld, INITIAL_MINOR};
use super::{Progress, SimError};
use crate::WorldRng;

/// Chips a shard has manufactured in one turn at the center.
const CHIPS_PER_TURN: usize = 64;

/// The stream number of issuance lanes (days use their day number, from 0).
const ISSUANCE_DAY: u32 = u32::MAX;

/// One shard of the cards to issue.
struct IssueShard<'w> {
    cards: std::ops::Range<usize>,
    dispensers: Vec<SimDispenser>,
    store: &'w CardStore,
    rng: WorldRng,
    done: &'w AtomicU64,
}

impl IssueShard<'_> {
    /// Issues the shard's cards in index order; returns their IDs in that order.
    fn issue(mut self, center: &mut LaneCenter<'_, '_>) -> Result<Vec<CardId>, SimError> {
        let initial = amount(INITIAL_MINOR)?;
        let mut card_ids = Vec::with_capacity(self.cards.len());
        let mut chips = std::collections::VecDeque::new();
        for index in self.cards.clone() {
            if chips.is_empty() {
                // The chip factory's serials come from the center's randomness: a batch
                // per turn, rather than a turn per chip.
                let batch = (self.cards.end - index).min(CHIPS_PER_TURN);
                chips = center
                    .in_turn(|center| (0..batch).map(|_| center.manufacture_chip()).collect());
            }
            let Some((serial, transport_key)) = chips.pop_front() else {
                return Err(SimError::Setup("the chip factory made no chip".into()));
            };
            let memory = MemoryEeprom::new(EEPROM_SIZE);
            let card =
                Card::manufacture(memory.clone(), serial, transport_key, fork(&mut self.rng))
                    .map_err(|error| SimError::CardImage(error.to_string()))?;
            let mut reader = InProcessReader::with_card("issue", card);
            let which = index % self.dispensers.len();
            let dispenser = &mut self.dispensers[which];
            let card_id = dispenser.issue_card(&mut reader, center)?;
            dispenser.load(&mut reader, center, initial)?;
            self.store.put(index as u32, &compact(&memory)?)?;
            card_ids.push(card_id);
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(card_ids)
    }
}

impl SimWorld {
    /// Manufactures, issues and loads every card, shard by shard on the worker threads.
    pub(super) fn issue_cards(
        &mut self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), SimError> {
        let total = u64::from(self.config.cards);
        let key = self.lane_key();
        let done = AtomicU64::new(0);
        let mut lanes = Vec::new();
        for (shard, cards) in split(self.config.cards as usize, self.config.shards())
            .into_iter()
            .enumerate()
        {
            let mut rng = lane_rng(key, ISSUANCE_DAY, shard as u32);
            lanes.push(IssueShard {
                cards,
                dispensers: lane_dispensers(&self.dispenser_sams, &self.clock, &mut rng)?,
                store: &self.cards,
                rng,
                done: &done,
            });
        }
        let issued = run_lanes(
            &mut self.center,
            self.threads,
            lanes,
            &done,
            &mut |done| {
                progress(Progress {
                    phase: "issuing cards",
                    done,
                    total,
                })
            },
            |shard, center| shard.issue(center),
        )?;
        self.card_ids = issued.into_iter().flatten().collect();
        self.flags = vec![0; self.card_ids.len()];
        self.report.cards_issued = self.card_ids.len() as u64;
        Ok(())
    }
}
