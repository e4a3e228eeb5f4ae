//! The day loop: purchases at random terminals (some with a power cut at a random write of
//! the card or a lost answer), reloads at a dispenser, and the night's stamp reports,
//! uploads and list syncs.

use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::Card;
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::messages::purse::ins;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_terminal::store::TerminalStore;
use valuecard_terminal::TerminalError;

use super::cards::SimReader;
use super::world::{
    amount, SimWorld, CLONED, LOST, PROGRESS_EVERY, RELOAD_BELOW_MINOR, RELOAD_MINOR, STOLEN_WRITER,
};
use super::{Progress, SimError};
use crate::LosingAnswer;

/// One card command in this many meets a fault, at least a handful per run.
const FAULT_ONE_IN: u64 = 1_000;
/// The most writes a purchase or load makes on the card (its image pages, the flush, the
/// old header's erase); a cut is armed at one of these.
const WRITES_MAX: u64 = 10;

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

fn powered(reader: &SimReader) -> bool {
    reader.card().is_some_and(|card| card.is_powered())
}

impl SimWorld {
    /// The fault for the next card transaction, drawn from the run's stream. The rate is
    /// one in [`FAULT_ONE_IN`], raised so that even a small run sees a few.
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

    pub(super) fn run_days(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<(), SimError> {
        let per_day = self.config.purchases_per_day();
        let total = per_day * u64::from(self.config.days);
        let plan = self.plan_events();
        for day in 0..self.config.days {
            self.morning(&plan, day)?;
            for index in 0..per_day {
                self.random_purchase()?;
                let done = u64::from(day) * per_day + index + 1;
                if done.is_multiple_of(PROGRESS_EVERY) {
                    progress(Progress {
                        phase: "simulating days",
                        done,
                        total,
                    });
                }
            }
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

    /// A random card buys at a random honest terminal.
    fn random_purchase(&mut self) -> Result<(), SimError> {
        let index = self.below(u64::from(self.config.cards)) as u32;
        let terminal = self.honest_terminal(None);
        let minor = 100 + self.below(1_901);
        let fault = self.draw_fault();
        if self.flags[index as usize] & LOST != 0 {
            // The holder lost it: nobody presents it.
            self.report.purchases.skipped_lost += 1;
            return Ok(());
        }
        self.purchase(index, terminal, minor, fault)
    }

    /// A random terminal other than the stolen one and `except`.
    pub(super) fn honest_terminal(&mut self, except: Option<usize>) -> usize {
        let count = self.terminals.len() as u64;
        loop {
            let pick = self.below(count) as usize;
            if Some(pick) != self.stolen && (Some(pick) != except || count <= 2) {
                return pick;
            }
        }
    }

    /// One purchase by card `index` at `terminal`, with its reload when the card runs low.
    pub(super) fn purchase(
        &mut self,
        index: u32,
        terminal: usize,
        minor: u64,
        fault: Fault,
    ) -> Result<(), SimError> {
        let session_rng = self.fork_rng();
        let (mut reader, memory) = self.cards.open(index, session_rng)?;
        let outcome = self.purchase_on(&mut reader, &memory, index, terminal, minor, fault)?;
        if let Some(balance) = outcome {
            if balance < RELOAD_BELOW_MINOR {
                // The holder goes to a dispenser with the card.
                let fault = self.draw_fault();
                self.load(reader, &memory, index, RELOAD_MINOR, fault)?;
            }
        }
        self.cards.save(index, &memory)
    }

    /// Arms a power cut at the card's chosen write when `fault` is one, counted.
    fn arm_power_cut(&mut self, reader: &mut SimReader, fault: Fault) {
        if let Fault::PowerCut { write, torn } = fault {
            if let Some(card) = reader.card_mut() {
                card.eeprom_mut().cut_power_at(write, torn, 8);
            }
            self.report.faults.power_cuts_armed += 1;
        }
    }

    /// Runs the purchase on a card already in a reader. Returns the card's balance after a
    /// committed purchase.
    fn purchase_on(
        &mut self,
        reader: &mut SimReader,
        memory: &MemoryEeprom,
        index: u32,
        terminal: usize,
        minor: u64,
        fault: Fault,
    ) -> Result<Option<u64>, SimError> {
        let value = amount(minor)?;
        self.report.purchases.attempted += 1;
        self.arm_power_cut(reader, fault);
        let result = match fault {
            Fault::LostAnswer { delivered } => {
                self.report.faults.lost_answers += 1;
                let mut losing = LosingAnswer {
                    inner: &mut *reader,
                    ins: ins::DEBIT,
                    delivered,
                };
                self.terminals[terminal].purchase(&mut losing, value)
            }
            _ => self.terminals[terminal].purchase(reader, value),
        };
        if !powered(reader) {
            self.report.faults.power_cuts_fired += 1;
            let rng = self.fork_rng();
            *reader = power_up(memory, rng)?;
        } else if let Some(card) = reader.card_mut() {
            // A cut armed beyond the purchase's writes did not happen: disarm it.
            card.eeprom_mut().cut_power_at(u64::MAX / 2, 0, 1);
        }
        match result {
            Ok(receipt) => {
                self.report.purchases.committed += 1;
                self.report.purchases.committed_minor += minor;
                Ok(Some(receipt.balance_after.minor()))
            }
            Err(TerminalError::PurchaseInDoubt { .. }) | Err(TerminalError::Reader(_))
                if fault != Fault::None =>
            {
                self.settle_purchase(reader, index, terminal)?;
                Ok(None)
            }
            Err(TerminalError::InsufficientBalance { .. }) => {
                // The holder reloads at a dispenser and buys again.
                self.report.purchases.insufficient += 1;
                let taken = std::mem::replace(reader, InProcessReader::new("sim"));
                *reader = self.load(taken, memory, index, RELOAD_MINOR, Fault::None)?;
                match self.terminals[terminal].purchase(reader, value) {
                    Ok(receipt) => {
                        self.report.purchases.committed += 1;
                        self.report.purchases.committed_minor += minor;
                        Ok(Some(receipt.balance_after.minor()))
                    }
                    Err(error) => {
                        self.refused(index, error);
                        Ok(None)
                    }
                }
            }
            Err(error) => {
                self.refused(index, error);
                Ok(None)
            }
        }
    }

    /// The terminal's in-doubt recovery with the card back in the reader: it settles the
    /// purchase from the card's signed last transaction.
    fn settle_purchase(
        &mut self,
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
            self.report.purchases.interrupted += 1;
            return Ok(());
        }
        let card = self.terminals[terminal].select_for_settlement(reader)?;
        let settled = self.terminals[terminal].settle_in_doubt(reader, &card)?;
        for settlement in &settled {
            match settlement.status {
                valuecard_terminal::store::PurchaseStatus::Committed => {
                    self.report.purchases.settled_committed += 1;
                    let amount = held
                        .iter()
                        .find(|record| record.sequence == settlement.sequence)
                        .map_or(0, |record| record.amount.minor());
                    self.report.purchases.committed += 1;
                    self.report.purchases.committed_minor += amount;
                }
                valuecard_terminal::store::PurchaseStatus::Cancelled => {
                    self.report.purchases.settled_cancelled += 1;
                }
                valuecard_terminal::store::PurchaseStatus::InDoubt => {}
            }
        }
        if settled.len() != held.len() {
            self.finding(format!(
                "card {card_id}: {} purchase(s) still in doubt after the card came back",
                held.len() - settled.len()
            ));
        }
        Ok(())
    }

    /// Why a purchase did not happen: the refusals the center's lists cause are tallied,
    /// anything else is a finding.
    pub(super) fn refused(&mut self, index: u32, error: TerminalError) {
        let flags = self.flags[index as usize];
        let card_id = self.card_ids[index as usize];
        match error {
            TerminalError::CardListed {
                reason: ListReason::Lost,
                ..
            } if flags & LOST != 0 => {
                self.report.purchases.refused_lost += 1;
                self.report.lost_refusals.insert(card_id.to_string());
            }
            TerminalError::CardListed {
                reason: ListReason::Cloned,
                ..
            } if flags & CLONED != 0 => self.report.purchases.refused_cloned += 1,
            TerminalError::WrittenByStolenTerminal { terminal, .. }
                if flags & STOLEN_WRITER != 0
                    && self
                        .stolen
                        .is_some_and(|stolen| self.terminals[stolen].device_id() == terminal) =>
            {
                self.report.purchases.refused_stolen_writer += 1;
                self.report
                    .stolen_writer_refusals
                    .insert(terminal.to_string());
            }
            other => self.finding(format!("card {card_id}: purchase refused: {other}")),
        }
    }

    /// A load at a random dispenser on the card in `reader`; returns the reader (a new one
    /// if the card lost power).
    pub(super) fn load(
        &mut self,
        mut reader: SimReader,
        memory: &MemoryEeprom,
        index: u32,
        minor: u64,
        fault: Fault,
    ) -> Result<SimReader, SimError> {
        let dispenser = self.below(self.dispensers.len() as u64) as usize;
        let value = amount(minor)?;
        self.report.loads.attempted += 1;
        self.arm_power_cut(&mut reader, fault);
        let result = match fault {
            Fault::LostAnswer { delivered } => {
                self.report.faults.lost_answers += 1;
                let mut losing = LosingAnswer {
                    inner: &mut reader,
                    ins: ins::CREDIT,
                    delivered,
                };
                self.dispensers[dispenser].load(&mut losing, &mut self.center, value)
            }
            _ => self.dispensers[dispenser].load(&mut reader, &mut self.center, value),
        };
        if !powered(&reader) {
            self.report.faults.power_cuts_fired += 1;
            let rng = self.fork_rng();
            reader = power_up(memory, rng)?;
        } else if let Some(card) = reader.card_mut() {
            card.eeprom_mut().cut_power_at(u64::MAX / 2, 0, 1);
        }
        let card_id = self.card_ids[index as usize];
        match result {
            Ok(_) => {
                self.report.loads.committed += 1;
                self.report.loads.committed_minor += minor;
                self.loaded_over_thief(index);
            }
            Err(TerminalError::LoadInDoubt { load_number }) => {
                match self.dispensers[dispenser].settle_pending_load(
                    &mut reader,
                    &mut self.center,
                    load_number,
                )? {
                    Some(true) => {
                        self.report.loads.settled_committed += 1;
                        self.report.loads.committed += 1;
                        self.report.loads.committed_minor += minor;
                        self.loaded_over_thief(index);
                    }
                    Some(false) => self.report.loads.settled_cancelled += 1,
                    None => self.finding(format!(
                        "card {card_id}: load {load_number} undecided after the card came back"
                    )),
                }
            }
            Err(TerminalError::Reader(_)) if fault != Fault::None => {
                self.report.loads.interrupted += 1;
            }
            Err(TerminalError::Center(CenterError::CardBlocked(_))) => {
                self.report.loads.refused += 1;
            }
            Err(other) => self.finding(format!("card {card_id}: load failed: {other}")),
        }
        Ok(reader)
    }

    /// A load committed on card `index`. If the stolen terminal's sale was the card's last
    /// record, the load's record replaces it: no terminal can tell any more that the thief
    /// wrote the card, and honest terminals accept it again (the dispenser does not check
    /// the troubled-terminal list). The center learns of the thief's sales only now, from
    /// the balance the card shows the load: they appear as a shortfall of its remaining
    /// values, and the run counts them so (`stolen_sales_revealed_minor`).
    fn loaded_over_thief(&mut self, index: u32) {
        if self.flags[index as usize] & STOLEN_WRITER == 0 {
            return;
        }
        self.flags[index as usize] &= !STOLEN_WRITER;
        self.report.loads.over_stolen_writer += 1;
        let sold = self.thief_sold.remove(&index).unwrap_or(0);
        self.report.conservation.stolen_sales_revealed_minor += sold;
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
                if self.report.findings.len() < 40 {
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
