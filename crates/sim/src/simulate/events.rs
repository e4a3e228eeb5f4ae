//! The injected events (cloned cards, a stolen terminal, lost cards) and the final audit:
//! what the center detected against what was injected, and the conservation equation.

use valuecard_core::ids::CardId;
use valuecard_core::messages::center::ListReason;
use valuecard_terminal::store::TerminalStore;

use super::cards::{compact, insert};
use super::day::balance;
use super::report::{Conservation, Detection, Report};
use super::world::{amount, SimWorld, CLONED, LOST, PROGRESS_EVERY, STOLEN_WRITER};
use super::{Progress, SimError};

/// What a clone spends, by the original and by its copy, each from the same card state.
const CLONE_SPEND_MINOR: u64 = 500;
/// How many sales the thief makes a day with the stolen terminal.
const THIEF_SALES_PER_DAY: u32 = 3;

/// The days the injected events happen on, drawn at the start of the run.
pub(super) struct Plan {
    clone_days: Vec<u32>,
    lost_days: Vec<u32>,
    theft_day: Option<u32>,
}

impl SimWorld {
    pub(super) fn plan_events(&mut self) -> Plan {
        let days = u64::from(self.config.days);
        let clone_days = (0..self.config.clones())
            .map(|_| self.below(days) as u32)
            .collect();
        let lost_days = (0..self.config.lost_cards())
            .map(|_| self.below(days) as u32)
            .collect();
        // A stamp counts days, so the thief's sales must come on a day after the last count
        // the terminal reported: it is stolen overnight, after the night's report, and its
        // operator reports it the next morning (day 1 at the earliest).
        let theft_day =
            (self.config.stolen_terminals() > 0).then(|| 1 + self.below(days - 1) as u32);
        Plan {
            clone_days,
            lost_days,
            theft_day,
        }
    }

    /// A card no event has touched yet, drawn at random.
    fn untouched_card(&mut self) -> Option<u32> {
        for _ in 0..1_000 {
            let index = self.below(u64::from(self.config.cards)) as u32;
            if self.flags[index as usize] == 0 {
                return Some(index);
            }
        }
        None
    }

    /// The day's events before business opens: the terminal stolen overnight (after it
    /// reported its stamp) is reported by its operator, holders report lost cards, and cloned cards are made and spent.
    pub(super) fn morning(&mut self, plan: &Plan, day: u32) -> Result<(), SimError> {
        if plan.theft_day == Some(day) {
            let stolen = self.below(self.terminals.len() as u64) as usize;
            let device = self.terminals[stolen].device_id();
            self.stolen = Some(stolen);
            self.center.report_stolen_terminal(device)?;
            self.report.injected_stolen.insert(device.to_string());
        }
        for _ in plan.lost_days.iter().filter(|&&lost| lost == day) {
            let Some(index) = self.untouched_card() else {
                continue;
            };
            let card_id = self.card_ids[index as usize];
            self.flags[index as usize] |= LOST;
            self.center.report_card(&card_id, ListReason::Lost)?;
            self.report.injected_lost.insert(card_id.to_string());
        }
        for _ in plan.clone_days.iter().filter(|&&clone| clone == day) {
            self.inject_clone()?;
        }
        Ok(())
    }

    /// A card's image is read out of its chip and put on a second chip; the original and
    /// the copy each spend from the same state at two different terminals.
    fn inject_clone(&mut self) -> Result<(), SimError> {
        let Some(index) = self.untouched_card() else {
            return Ok(());
        };
        let card_id = self.card_ids[index as usize];
        let image = self.cards.get(index)?;
        let rng = self.fork_rng();
        let (mut original, memory) = insert(&image, rng)?;
        let held = balance(&mut original)?;
        if held < CLONE_SPEND_MINOR {
            return Ok(());
        }
        self.flags[index as usize] |= CLONED;
        self.report.injected_clones.insert(card_id.to_string());
        let first = self.honest_terminal(None);
        let second = self.honest_terminal(Some(first));
        let spend = amount(CLONE_SPEND_MINOR)?;
        match self.terminals[first].purchase(&mut original, spend) {
            Ok(_) => self.count_clone_spend(),
            Err(error) => {
                self.finding(format!("clone {card_id}: the original's purchase: {error}"))
            }
        }
        self.cards.save(index, &memory)?;
        let rng = self.fork_rng();
        let (mut copy, copy_memory) = insert(&image, rng)?;
        match self.terminals[second].purchase(&mut copy, spend) {
            Ok(_) => {
                self.count_clone_spend();
                self.report.conservation.duplicated_minor += CLONE_SPEND_MINOR;
            }
            Err(error) => self.finding(format!("clone {card_id}: the copy's purchase: {error}")),
        }
        self.report.conservation.copied_minor += held;
        self.copies.push((index, compact(&copy_memory)?));
        Ok(())
    }

    fn count_clone_spend(&mut self) {
        self.report.purchases.attempted += 1;
        self.report.purchases.committed += 1;
        self.report.purchases.committed_minor += CLONE_SPEND_MINOR;
    }

    /// After the theft the thief sells with the stolen terminal, never reporting its stamp
    /// or uploading: the value leaves the cards and the center never hears of it.
    pub(super) fn thief_sells(&mut self) -> Result<(), SimError> {
        let Some(stolen) = self.stolen else {
            return Ok(());
        };
        for _ in 0..THIEF_SALES_PER_DAY {
            let Some(index) = self.untouched_card() else {
                continue;
            };
            let card_id = self.card_ids[index as usize];
            let minor = 100 + self.below(901);
            let rng = self.fork_rng();
            let (mut reader, memory) = self.cards.open(index, rng)?;
            match self.terminals[stolen].purchase(&mut reader, amount(minor)?) {
                Ok(_) => {
                    self.flags[index as usize] |= STOLEN_WRITER;
                    *self.thief_sold.entry(index).or_default() += minor;
                    self.report.purchases.thief_sales += 1;
                    self.report.conservation.stolen_sales_minor += minor;
                }
                Err(error) => self.finding(format!("thief's sale to {card_id}: {error}")),
            }
            self.cards.save(index, &memory)?;
        }
        Ok(())
    }

    /// Presents card `index` (or an image of it) at an honest terminal, as its holder, a
    /// finder or the copy's owner would; the answer is tallied by [`SimWorld::refused`].
    fn present(&mut self, index: u32, image: &[u8]) -> Result<(), SimError> {
        let terminal = self.honest_terminal(None);
        let rng = self.fork_rng();
        let (mut reader, memory) = insert(image, rng)?;
        match self.terminals[terminal].purchase(&mut reader, amount(1)?) {
            Ok(_) => {
                let card_id = self.card_ids[index as usize];
                self.finding(format!(
                    "card {card_id} (flags {:#04x}) was accepted at the final presentation",
                    self.flags[index as usize]
                ));
                // The purchase happened: keep the card's new state.
                self.cards.save(index, &memory)?;
            }
            Err(error) => self.refused(index, error),
        }
        Ok(())
    }

    /// The end of the run: every flagged card is presented once more at an honest
    /// terminal (the lost ones by a finder, the clones and their copies, the cards the thief
    /// sold to), every card's balance is read, and the center's books are compared.
    pub(super) fn audit(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<Report, SimError> {
        for index in 0..self.config.cards {
            if self.flags[index as usize] != 0 {
                let image = self.cards.get(index)?;
                self.present(index, &image)?;
            }
        }
        for position in 0..self.copies.len() {
            let (index, image) = self.copies[position].clone();
            self.present_copy(index, &image)?;
        }
        // One more upload, so that anything a terminal accepted at the presentations is
        // counted at the center too.
        self.night()?;
        let total = u64::from(self.config.cards);
        let mut balances = 0u64;
        for index in 0..self.config.cards {
            let rng = self.fork_rng();
            let (mut reader, _) = self.cards.open(index, rng)?;
            balances += balance(&mut reader)?;
            let done = u64::from(index) + 1;
            if done.is_multiple_of(PROGRESS_EVERY) || done == total {
                progress(Progress {
                    phase: "reading balances",
                    done,
                    total,
                });
            }
        }
        let mut copy_balances = 0u64;
        for (_, image) in self.copies.clone() {
            let rng = self.fork_rng();
            let (mut reader, _) = insert(&image, rng)?;
            copy_balances += balance(&mut reader)?;
        }
        self.books(balances, copy_balances)?;
        self.cards.flush()?;
        Ok(std::mem::replace(
            &mut self.report,
            Report::new(&self.config),
        ))
    }

    /// The copy of a cloned card, presented by its owner: refused as a clone.
    fn present_copy(&mut self, index: u32, image: &[u8]) -> Result<(), SimError> {
        let terminal = self.honest_terminal(None);
        let rng = self.fork_rng();
        let (mut reader, _) = insert(image, rng)?;
        match self.terminals[terminal].purchase(&mut reader, amount(1)?) {
            Ok(_) => {
                let card_id = self.card_ids[index as usize];
                self.finding(format!(
                    "the copy of card {card_id} was accepted at the end"
                ));
            }
            Err(error) => self.refused(index, error),
        }
        Ok(())
    }

    /// Detection against injection, and the conservation equation over the center's
    /// reconciliation and the cards' balances.
    fn books(&mut self, balances: u64, copy_balances: u64) -> Result<(), SimError> {
        let reconciliation = self.center.reconciliation()?;
        let alerts = self.center.alerts()?;
        let mut detected_clones = self.report.clones_in_receipts.clone();
        let mut unexplained = Vec::new();
        for alert in &alerts {
            let subject = CardId(alert.subject).to_string();
            if alert.kind == "cloned" && self.report.injected_clones.contains(&subject) {
                detected_clones.insert(subject);
            } else {
                unexplained.push(format!("{} {}: {}", alert.kind, subject, alert.detail));
            }
        }
        self.report.detections = vec![
            Detection::new(
                "cloned cards",
                &self.report.injected_clones,
                &detected_clones,
            ),
            Detection::new(
                "stolen terminals",
                &self.report.injected_stolen,
                &self.report.stolen_writer_refusals,
            ),
            Detection::new(
                "lost cards",
                &self.report.injected_lost,
                &self.report.lost_refusals,
            ),
        ];
        self.report.unexplained_alerts = unexplained;
        let mut terminals_committed = 0u64;
        let mut in_doubt = 0u64;
        for terminal in &self.terminals {
            let totals = terminal.store().totals()?;
            terminals_committed += totals.committed_minor;
            in_doubt += totals.in_doubt_count;
        }
        let previous = std::mem::take(&mut self.report.conservation);
        let stolen_sales = previous.stolen_sales_minor;
        let mut conservation = Conservation {
            issued_minor: reconciliation.issued,
            loaded_minor: reconciliation.loaded,
            restored_minor: reconciliation.restored,
            spent_minor: reconciliation.spent,
            purchases_uploaded: reconciliation.purchases,
            remaining_minor: reconciliation.remaining,
            center_status: reconciliation.status().as_str().to_owned(),
            center_difference: reconciliation.difference(),
            loads_in_flight: reconciliation.in_flight_count,
            purchases_in_doubt: in_doubt,
            terminals_committed_minor: terminals_committed.saturating_sub(stolen_sales),
            card_balances_minor: balances,
            copy_balances_minor: copy_balances,
            ..previous
        };
        conservation.conserved = conservation.holds();
        self.report.conservation = conservation;
        Ok(())
    }
}
