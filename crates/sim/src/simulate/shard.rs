//! One shard's business day: its cards buy at its honest terminals (some purchases with a
//! power cut at a random write of the card or a lost answer), and cards running low reload
//! at a dispenser through the center.
//!
//! A shard owns a contiguous range of the cards and one of the terminals, so shards run on
//! threads of their own without sharing a card or a terminal; everything random comes from
//! the shard's own stream, derived from (seed, day, shard). It must never touch another
//! shard's cards or terminals, nor the center outside its turn (`lanes.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rand_core::RngCore;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, CenterLink, ListReason};
use valuecard_core::messages::purse::ins;
use valuecard_reader::InProcessReader;
use valuecard_terminal::store::{PurchaseStatus, TerminalStore};
use valuecard_terminal::TerminalError;

use super::cards::{CardStore, SimReader};
use super::day::{power_up, powered, Fault, FAULT_ONE_IN, WRITES_MAX};
use super::report::Tally;
use super::world::{
    amount, fork, SimDispenser, SimTerminal, CLONED, LOST, RELOAD_BELOW_MINOR, RELOAD_MINOR,
    STOLEN_WRITER,
};
use super::{Config, SimError};
use crate::{LosingAnswer, WorldRng};

/// One shard's part of a day, with borrows of its own cards and terminals.
pub(super) struct DayShard<'w> {
    pub(super) config: Config,
    /// The shard's cards are `first_card..first_card + flags.len()`.
    pub(super) first_card: u32,
    pub(super) flags: &'w mut [u8],
    pub(super) card_ids: &'w [CardId],
    pub(super) terminals: &'w mut [SimTerminal],
    /// The stolen terminal, if it is one of this shard's (an index into `terminals`).
    pub(super) stolen: Option<usize>,
    pub(super) stolen_device: Option<DeviceId>,
    /// What the thief sold to each card it wrote, as of this morning.
    pub(super) thief_sold: &'w BTreeMap<u32, u64>,
    pub(super) dispensers: Vec<SimDispenser>,
    pub(super) cards: &'w CardStore,
    /// Purchases the shard's cards make today.
    pub(super) purchases: u64,
    pub(super) rng: WorldRng,
    /// Purchases done by every shard, for the progress display.
    pub(super) done: &'w AtomicU64,
}

/// What a shard's day changed beyond its cards and terminals.
#[derive(Debug, Default)]
pub(super) struct ShardDay {
    pub(super) tally: Tally,
    /// Cards whose record of the thief's sale a load replaced today.
    pub(super) revealed: Vec<u32>,
}

impl Tally {
    /// Why a purchase did not happen: the refusals the center's lists cause are tallied,
    /// anything else is a finding.
    pub(super) fn refused(
        &mut self,
        flags: u8,
        card_id: CardId,
        stolen_device: Option<DeviceId>,
        error: TerminalError,
    ) {
        match error {
            TerminalError::CardListed {
                reason: ListReason::Lost,
                ..
            } if flags & LOST != 0 => {
                self.purchases.refused_lost += 1;
                self.lost_refusals.insert(card_id.to_string());
            }
            TerminalError::CardListed {
                reason: ListReason::Cloned,
                ..
            } if flags & CLONED != 0 => self.purchases.refused_cloned += 1,
            TerminalError::WrittenByStolenTerminal { terminal, .. }
                if flags & STOLEN_WRITER != 0 && stolen_device == Some(terminal) =>
            {
                self.purchases.refused_stolen_writer += 1;
                self.stolen_writer_refusals.insert(terminal.to_string());
            }
            other => self.finding(format!("card {card_id}: purchase refused: {other}")),
        }
    }
}

impl DayShard<'_> {
    pub(super) fn run(mut self, center: &mut impl CenterLink) -> Result<ShardDay, SimError> {
        let mut day = ShardDay::default();
        for _ in 0..self.purchases {
            self.random_purchase(center, &mut day)?;
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(day)
    }

    /// A number below `bound` (at least 1), from the shard's stream.
    fn below(&mut self, bound: u64) -> u64 {
        self.rng.next_u64() % bound.max(1)
    }

    fn flags_of(&mut self, index: u32) -> &mut u8 {
        &mut self.flags[(index - self.first_card) as usize]
    }

    /// The fault for the next card transaction. The rate is one in [`FAULT_ONE_IN`],
    /// raised so that even a small run sees a few.
    fn draw_fault(&mut self) -> Fault {
        let total = self
            .config
            .purchases_per_day()
            .saturating_mul(u64::from(self.config.days));
        let one_in = FAULT_ONE_IN.min((total / 8).max(2));
        match self.below(one_in * 2) {
            0 => Fault::PowerCut {
                write: 1 + self.below(WRITES_MAX),
                torn: self.below(9) as usize,
            },
            1 => Fault::LostAnswer {
                delivered: self.below(2) == 0,
            },
            _ => Fault::None,
        }
    }

    /// A random card of the shard buys at a random honest terminal of the shard.
    fn random_purchase(
        &mut self,
        center: &mut impl CenterLink,
        day: &mut ShardDay,
    ) -> Result<(), SimError> {
        let index = self.first_card + self.below(self.flags.len() as u64) as u32;
        let terminal = self.honest_terminal()?;
        let minor = 100 + self.below(1_901);
        let fault = self.draw_fault();
        if *self.flags_of(index) & LOST != 0 {
            // The holder lost it: nobody presents it.
            day.tally.purchases.skipped_lost += 1;
            return Ok(());
        }
        self.purchase(center, day, index, terminal, minor, fault)
    }

    /// A random terminal of the shard other than the stolen one: one draw among the
    /// honest ones.
    fn honest_terminal(&mut self) -> Result<usize, SimError> {
        let stolen = self.stolen;
        let honest = self.terminals.len() - usize::from(stolen.is_some());
        if honest == 0 {
            return Err(SimError::Setup("a shard has no honest terminal".into()));
        }
        let pick = self.below(honest as u64) as usize;
        Ok(match stolen {
            Some(stolen) if pick >= stolen => pick + 1,
            _ => pick,
        })
    }

    /// One purchase by card `index` at `terminal`, with its reload when the card runs low.
    fn purchase(
        &mut self,
        center: &mut impl CenterLink,
        day: &mut ShardDay,
        index: u32,
        terminal: usize,
        minor: u64,
        fault: Fault,
    ) -> Result<(), SimError> {
        let session_rng = fork(&mut self.rng);
        let (mut reader, memory) = self.cards.open(index, session_rng)?;
        let outcome = self.purchase_on(
            center,
            day,
            &mut reader,
            &memory,
            index,
            terminal,
            minor,
            fault,
        )?;
        if let Some(balance) = outcome {
            if balance < RELOAD_BELOW_MINOR {
                // The holder goes to a dispenser with the card.
                let fault = self.draw_fault();
                self.load(center, day, reader, &memory, index, RELOAD_MINOR, fault)?;
            }
        }
        self.cards.save(index, &memory)
    }

    /// Arms a power cut at the card's chosen write when `fault` is one, counted.
    fn arm_power_cut(day: &mut ShardDay, reader: &mut SimReader, fault: Fault) {
        if let Fault::PowerCut { write, torn } = fault {
            if let Some(card) = reader.card_mut() {
                card.eeprom_mut().cut_power_at(write, torn, 8);
            }
            day.tally.faults.power_cuts_armed += 1;
        }
    }

    /// After a transaction that may have had a power cut armed: a card that lost power
    /// comes back whole on its memory; a cut armed beyond the transaction's writes did not
    /// happen and is disarmed.
    fn after_power_cut(
        &mut self,
        day: &mut ShardDay,
        reader: &mut SimReader,
        memory: &MemoryEeprom,
    ) -> Result<(), SimError> {
        if !powered(reader) {
            day.tally.faults.power_cuts_fired += 1;
            let rng = fork(&mut self.rng);
            *reader = power_up(memory, rng)?;
        } else if let Some(card) = reader.card_mut() {
            card.eeprom_mut().cut_power_at(u64::MAX / 2, 0, 1);
        }
        Ok(())
    }

    /// Runs the purchase on a card already in a reader. Returns the card's balance after a
    /// committed purchase.
    #[allow(clippy::too_many_arguments)]
    fn purchase_on(
        &mut self,
        center: &mut impl CenterLink,
        day: &mut ShardDay,
        reader: &mut SimReader,
        memory: &MemoryEeprom,
        index: u32,
        terminal: usize,
        minor: u64,
        fault: Fault,
    ) -> Result<Option<u64>, SimError> {
        let value = amount(minor)?;
        day.tally.purchases.attempted += 1;
        Self::arm_power_cut(day, reader, fault);
        let result = match fault {
            Fault::LostAnswer { delivered } => {
                day.tally.faults.lost_answers += 1;
                let mut losing = LosingAnswer {
                    inner: &mut *reader,
                    ins: ins::DEBIT,
                    delivered,
                };
                self.terminals[terminal].purchase(&mut losing, value)
            }
            _ => self.terminals[terminal].purchase(reader, value),
        };
        self.after_power_cut(day, reader, memory)?;
        match result {
            Ok(receipt) => {
                day.tally.purchases.committed += 1;
                day.tally.purchases.committed_minor += minor;
                Ok(Some(receipt.balance_after.minor()))
            }
            Err(TerminalError::PurchaseInDoubt { .. }) | Err(TerminalError::Reader(_))
                if fault != Fault::None =>
            {
                self.settle_purchase(day, reader, index, terminal)?;
                Ok(None)
            }
            Err(TerminalError::InsufficientBalance { .. }) => {
                // The holder reloads at a dispenser and buys again.
                day.tally.purchases.insufficient += 1;
                let taken = std::mem::replace(reader, InProcessReader::new("sim"));
                *reader =
                    self.load(center, day, taken, memory, index, RELOAD_MINOR, Fault::None)?;
                match self.terminals[terminal].purchase(reader, value) {
                    Ok(receipt) => {
                        day.tally.purchases.committed += 1;
                        day.tally.purchases.committed_minor += minor;
                        Ok(Some(receipt.balance_after.minor()))
                    }
                    Err(error) => {
                        self.refused(day, index, error);
                        Ok(None)
                    }
                }
            }
            Err(error) => {
                self.refused(day, index, error);
                Ok(None)
            }
        }
    }

    fn refused(&mut self, day: &mut ShardDay, index: u32, error: TerminalError) {
        let flags = *self.flags_of(index);
        let card_id = self.card_ids[index as usize];
        day.tally.refused(flags, card_id, self.stolen_device, error);
    }

    /// The terminal's in-doubt recovery with the card back in the reader: it settles the
    /// purchase from the card's signed last transaction.
    fn settle_purchase(
        &mut self,
        day: &mut ShardDay,
        reader: &mut SimReader,
        index: u32,
        terminal: usize,
    ) -> Result<(), SimError> {
        let card_id = self.card_ids[index as usize];
        let held = self.terminals[terminal]
            .store()
            .in_doubt_for_card(&card_id)?;
        if held.is_empty() {
            // Cut before the purchase was recorded: nothing moved and nothing is owed.
            day.tally.purchases.interrupted += 1;
            return Ok(());
        }
        let card = self.terminals[terminal].select_for_settlement(reader)?;
        let settled = self.terminals[terminal].settle_in_doubt(reader, &card)?;
        let purchases = &mut day.tally.purchases;
        for settlement in &settled {
            match settlement.status {
                PurchaseStatus::Committed => {
                    purchases.settled_committed += 1;
                    let amount = held
                        .iter()
                        .find(|record| record.sequence == settlement.sequence)
                        .map_or(0, |record| record.amount.minor());
                    purchases.committed += 1;
                    purchases.committed_minor += amount;
                }
                PurchaseStatus::Cancelled => purchases.settled_cancelled += 1,
                PurchaseStatus::InDoubt => {}
            }
        }
        if settled.len() != held.len() {
            day.tally.finding(format!(
                "card {card_id}: {} purchase(s) still in doubt after the card came back",
                held.len() - settled.len()
            ));
        }
        Ok(())
    }

    /// A load at a random dispenser on the card in `reader`; returns the reader (a new one
    /// if the card lost power).
    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        center: &mut impl CenterLink,
        day: &mut ShardDay,
        mut reader: SimReader,
        memory: &MemoryEeprom,
        index: u32,
        minor: u64,
        fault: Fault,
    ) -> Result<SimReader, SimError> {
        let dispenser = self.below(self.dispensers.len() as u64) as usize;
        let value = amount(minor)?;
        day.tally.loads.attempted += 1;
        Self::arm_power_cut(day, &mut reader, fault);
        let result = match fault {
            Fault::LostAnswer { delivered } => {
                day.tally.faults.lost_answers += 1;
                let mut losing = LosingAnswer {
                    inner: &mut reader,
                    ins: ins::CREDIT,
                    delivered,
                };
                self.dispensers[dispenser].load(&mut losing, center, value)
            }
            _ => self.dispensers[dispenser].load(&mut reader, center, value),
        };
        self.after_power_cut(day, &mut reader, memory)?;
        let card_id = self.card_ids[index as usize];
        match result {
            Ok(_) => {
                day.tally.loads.committed += 1;
                day.tally.loads.committed_minor += minor;
                self.loaded_over_thief(day, index);
            }
            Err(TerminalError::LoadInDoubt { load_number }) => {
                match self.dispensers[dispenser].settle_pending_load(
                    &mut reader,
                    center,
                    load_number,
                )? {
                    Some(true) => {
                        day.tally.loads.settled_committed += 1;
                        day.tally.loads.committed += 1;
                        day.tally.loads.committed_minor += minor;
                        self.loaded_over_thief(day, index);
                    }
                    Some(false) => day.tally.loads.settled_cancelled += 1,
                    None => day.tally.finding(format!(
                        "card {card_id}: load {load_number} undecided after the card came back"
                    )),
                }
            }
            Err(TerminalError::Reader(_)) if fault != Fault::None => {
                day.tally.loads.interrupted += 1;
            }
            Err(TerminalError::Center(CenterError::CardBlocked(_))) => {
                day.tally.loads.refused += 1;
            }
            Err(other) => day
                .tally
                .finding(format!("card {card_id}: load failed: {other}")),
        }
        Ok(reader)
    }

    /// A load committed on card `index`. If the stolen terminal's sale was the card's last
    /// record, the load's record replaces it: no terminal can tell any more that the thief
    /// wrote the card, and honest terminals accept it again (the dispenser does not check
    /// the troubled-terminal list). The center learns of the thief's sales only now, from
    /// the balance the card shows the load: they appear as a shortfall of its remaining
    /// values, and the run counts them so (`stolen_sales_revealed_minor`).
    fn loaded_over_thief(&mut self, day: &mut ShardDay, index: u32) {
        let flags = self.flags_of(index);
        if *flags & STOLEN_WRITER == 0 {
            return;
        }
        *flags &= !STOLEN_WRITER;
        day.tally.loads.over_stolen_writer += 1;
        day.tally.stolen_sales_revealed_minor += self.thief_sold.get(&index).copied().unwrap_or(0);
        day.revealed.push(index);
    }
}
