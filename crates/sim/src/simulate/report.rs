//! What a run reports: the deterministic [`Report`] (the same seed and arguments give the
//! same report byte for byte) and the wall-clock [`Timing`], kept apart so that a
//! determinism check can leave it out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use valuecard_core::crypto::{verify_batch, SigningKeyPair};

use super::Config;
use crate::WorldRng;

/// The whole run, reproducible from its seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub config: Config,
    pub dispensers: u32,
    pub cards_issued: u64,
    pub purchases: Purchases,
    pub loads: Loads,
    pub uploads: Uploads,
    pub faults: Faults,
    /// Per kind of injected event, what the center (and the terminals under its lists)
    /// found.
    pub detections: Vec<Detection>,
    /// Alerts the center raised that no injected event explains: findings, not hidden.
    pub unexplained_alerts: Vec<String>,
    /// Anything else the run did not expect (the first few, and how many in all).
    pub findings: Vec<String>,
    pub findings_total: u64,
    pub conservation: Conservation,
    pub(super) injected_clones: BTreeSet<String>,
    pub(super) injected_stolen: BTreeSet<String>,
    pub(super) injected_lost: BTreeSet<String>,
    pub(super) clones_in_receipts: BTreeSet<String>,
    pub(super) stolen_writer_refusals: BTreeSet<String>,
    pub(super) lost_refusals: BTreeSet<String>,
}

impl Report {
    pub(super) fn new(config: &Config) -> Self {
        Report {
            config: *config,
            dispensers: config.dispensers(),
            cards_issued: 0,
            purchases: Purchases::default(),
            loads: Loads::default(),
            uploads: Uploads::default(),
            faults: Faults::default(),
            detections: Vec::new(),
            unexplained_alerts: Vec::new(),
            findings: Vec::new(),
            findings_total: 0,
            conservation: Conservation::default(),
            injected_clones: BTreeSet::new(),
            injected_stolen: BTreeSet::new(),
            injected_lost: BTreeSet::new(),
            clones_in_receipts: BTreeSet::new(),
            stolen_writer_refusals: BTreeSet::new(),
            lost_refusals: BTreeSet::new(),
        }
    }

    /// Adds what one lane of a parallel phase counted. Lanes are absorbed in lane order,
    /// so the findings kept are the same whatever the threads did.
    pub(super) fn absorb(&mut self, tally: Tally) {
        self.purchases += tally.purchases;
        self.loads += tally.loads;
        self.faults += tally.faults;
        for finding in tally.findings {
            if self.findings.len() < FINDINGS_KEPT {
                self.findings.push(finding);
            }
        }
        self.findings_total += tally.findings_total;
        self.lost_refusals.extend(tally.lost_refusals);
        self.stolen_writer_refusals
            .extend(tally.stolen_writer_refusals);
        self.conservation.stolen_sales_revealed_minor += tally.stolen_sales_revealed_minor;
    }

    /// Every injected event found, no false alarm, no unexplained alert, nothing
    /// unexpected, and value conserved.
    pub fn held(&self) -> bool {
        self.detections.iter().all(Detection::exact)
            && self.unexplained_alerts.is_empty()
            && self.findings_total == 0
            && self.conservation.conserved
    }
}

/// How many findings a report keeps word for word (all are counted).
pub(super) const FINDINGS_KEPT: usize = 40;

/// What one lane of a parallel phase (or one serial step) counts, for [`Report::absorb`].
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) purchases: Purchases,
    pub(super) loads: Loads,
    pub(super) faults: Faults,
    pub(super) findings: Vec<String>,
    pub(super) findings_total: u64,
    pub(super) lost_refusals: BTreeSet<String>,
    pub(super) stolen_writer_refusals: BTreeSet<String>,
    pub(super) stolen_sales_revealed_minor: u64,
}

impl Tally {
    /// Something the run did not expect: kept for the report, never hidden.
    pub(super) fn finding(&mut self, text: String) {
        self.findings_total += 1;
        if self.findings.len() < FINDINGS_KEPT {
            self.findings.push(text);
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purchases {
    /// Purchases presented at honest terminals (the thief's sales apart).
    pub attempted: u64,
    pub committed: u64,
    pub committed_minor: u64,
    /// The holder had reported the card lost: nobody presented it.
    pub skipped_lost: u64,
    /// The card held too little: its holder reloaded and bought again.
    pub insufficient: u64,
    /// A power cut before the terminal recorded anything: nothing moved.
    pub interrupted: u64,
    /// Purchases left in doubt (power cut or lost answer) that the terminal settled from the
    /// card's signed last transaction, as committed or as cancelled.
    pub settled_committed: u64,
    pub settled_cancelled: u64,
    /// Refused because the card is on the center's list as lost, as cloned, or because
    /// the stolen terminal wrote it after the theft.
    pub refused_lost: u64,
    pub refused_cloned: u64,
    pub refused_stolen_writer: u64,
    /// Sales the thief made with the stolen terminal.
    pub thief_sales: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loads {
    /// Reloads (the initial loads at issuance apart).
    pub attempted: u64,
    pub committed: u64,
    pub committed_minor: u64,
    pub settled_committed: u64,
    pub settled_cancelled: u64,
    /// A power cut before the center authorized anything.
    pub interrupted: u64,
    /// Refused by the center (a listed card).
    pub refused: u64,
    /// Loads on a card whose last record the stolen terminal wrote after the theft: the
    /// load's record replaced it, and honest terminals accept the card again.
    pub over_stolen_writer: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploads {
    pub stamp_reports: u64,
    /// Nightly uploads (one per honest terminal per night, in batches).
    pub uploads: u64,
    pub records_stored: u64,
    pub duplicates: u64,
    pub refused: u64,
    pub list_syncs: u64,
    /// The most records any terminal still held right after its nightly upload: what its
    /// store cannot drop yet (0 when every purchase was settled and acknowledged).
    pub held_after_upload_max: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Power cuts armed at a random write of a purchase or load, and how many fell within
    /// the transaction's writes (the card then reopened whole every time, or the run stops).
    pub power_cuts_armed: u64,
    pub power_cuts_fired: u64,
    pub lost_answers: u64,
}

impl core::ops::AddAssign for Purchases {
    fn add_assign(&mut self, other: Self) {
        // Destructured whole, so that a new field cannot be left out of the sum.
        let Self {
            attempted,
            committed,
            committed_minor,
            skipped_lost,
            insufficient,
            interrupted,
            settled_committed,
            settled_cancelled,
            refused_lost,
            refused_cloned,
            refused_stolen_writer,
            thief_sales,
        } = other;
        self.attempted += attempted;
        self.committed += committed;
        self.committed_minor += committed_minor;
        self.skipped_lost += skipped_lost;
        self.insufficient += insufficient;
        self.interrupted += interrupted;
        self.settled_committed += settled_committed;
        self.settled_cancelled += settled_cancelled;
        self.refused_lost += refused_lost;
        self.refused_cloned += refused_cloned;
        self.refused_stolen_writer += refused_stolen_writer;
        self.thief_sales += thief_sales;
    }
}

impl core::ops::AddAssign for Loads {
    fn add_assign(&mut self, other: Self) {
        // Destructured whole, so that a new field cannot be left out of the sum.
        let Self {
            attempted,
            committed,
            committed_minor,
            settled_committed,
            settled_cancelled,
            interrupted,
            refused,
            over_stolen_writer,
        } = other;
        self.attempted += attempted;
        self.committed += committed;
        self.committed_minor += committed_minor;
        self.settled_committed += settled_committed;
        self.settled_cancelled += settled_cancelled;
        self.interrupted += interrupted;
        self.refused += refused;
        self.over_stolen_writer += over_stolen_writer;
    }
}

impl core::ops::AddAssign for Faults {
    fn add_assign(&mut self, other: Self) {
        // Destructured whole, so that a new field cannot be left out of the sum.
        let Self {
            power_cuts_armed,
            power_cuts_fired,
            lost_answers,
        } = other;
        self.power_cuts_armed += power_cuts_armed;
        self.power_cuts_fired += power_cuts_fired;
        self.lost_answers += lost_answers;
    }
}

/// Injected against detected, for one kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: String,
    pub injected: u64,
    pub detected: u64,
    /// Injected and not found.
    pub missed: Vec<String>,
    /// Found and never injected.
    pub false_alarms: Vec<String>,
}

impl Detection {
    pub(super) fn new(kind: &str, injected: &BTreeSet<String>, found: &BTreeSet<String>) -> Self {
        Detection {
            kind: kind.to_owned(),
            injected: injected.len() as u64,
            detected: injected.intersection(found).count() as u64,
            missed: injected.difference(found).cloned().collect(),
            false_alarms: found.difference(injected).cloned().collect(),
        }
    }

    /// Every injected event found and nothing else.
    pub fn exact(&self) -> bool {
        self.missed.is_empty() && self.false_alarms.is_empty()
    }
}

/// The conservation equation, from the center's reconciliation and the cards' balances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conservation {
    pub issued_minor: u64,
    pub loaded_minor: u64,
    pub restored_minor: u64,
    /// Purchases the terminals uploaded, as the center counts them.
    pub spent_minor: u64,
    pub purchases_uploaded: u64,
    /// The sum of the center's remaining-value records.
    pub remaining_minor: u64,
    pub center_status: String,
    /// remaining - (issued + loaded - restored - spent), as the center computes it.
    pub center_difference: i128,
    pub loads_in_flight: u64,
    pub purchases_in_doubt: u64,
    /// What the honest terminals committed (the thief's sales apart).
    pub terminals_committed_minor: u64,
    /// The sum of every card's balance as the card reports it.
    pub card_balances_minor: u64,
    /// The sum of the clones' copies' balances.
    pub copy_balances_minor: u64,
    /// Value spent twice from one card state: each clone's second spend.
    pub duplicated_minor: u64,
    /// The balances the copies started with: value the attacker made by copying.
    pub copied_minor: u64,
    /// The thief's sales, never uploaded.
    pub stolen_sales_minor: u64,
    /// The part of them on cards loaded afterwards: the load showed the center the card's
    /// lower balance, so its remaining values already account for them.
    pub stolen_sales_revealed_minor: u64,
    pub conserved: bool,
}

impl Conservation {
    /// Nothing in flight, and:
    /// - the center: remaining = issued + loaded - restored - spent + duplicated - revealed
    ///   (a clone's second spend from one state counts in spent but moves no remaining
    ///   value; a load after the thief's sale records the card's lower balance);
    /// - the uploads: what the center counts spent is what the honest terminals committed;
    /// - the cards: remaining - the thief's sales not yet revealed = the cards' balances;
    /// - the money: issued + loaded - restored + copied = spent + the thief's sales + the
    ///   cards' balances + the copies' balances.
    pub fn holds(&self) -> bool {
        let wide = i128::from;
        let settled = self.loads_in_flight == 0 && self.purchases_in_doubt == 0;
        let revealed = wide(self.stolen_sales_revealed_minor);
        let center = self.center_difference == wide(self.duplicated_minor) - revealed;
        let uploads = self.spent_minor == self.terminals_committed_minor;
        let cards = wide(self.remaining_minor) - (wide(self.stolen_sales_minor) - revealed)
            == wide(self.card_balances_minor);
        let money = wide(self.issued_minor) + wide(self.loaded_minor) - wide(self.restored_minor)
            + wide(self.copied_minor)
            == wide(self.spent_minor)
                + wide(self.stolen_sales_minor)
                + wide(self.card_balances_minor)
                + wide(self.copy_balances_minor);
        settled && center && uploads && cards && money
    }
}

/// The whole run: the report and its timing.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Report,
    pub timing: Timing,
}

/// Wall-clock measurements: they differ from run to run and are not part of the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Worker threads the parallel phases ran on.
    pub threads: usize,
    pub setup_seconds: f64,
    pub issuance_seconds: f64,
    pub days_seconds: f64,
    pub audit_seconds: f64,
    pub total_seconds: f64,
    pub cards_issued_per_second: f64,
    /// Committed purchases and uploaded records per second of the day loop.
    pub purchases_per_second: f64,
    pub records_per_second: f64,
    pub sign_micros: f64,
    pub verify_micros: f64,
    pub batch_verify_micros: f64,
    /// The pure signature work of the day loop's purchases and uploads at the measured
    /// rates, the purchases' share spread over the cores the workers had, and its ratio to
    /// the day loop's time (1.0 would be nothing but signatures).
    pub floor_seconds: f64,
    pub ratio_to_floor: f64,
}

/// Signature operations of one purchase (as `bench purchase` counts them): the terminal
/// verifies the card certificate, the card's signature, the last writer's certificate and
/// its signature, and signs the commit; the card verifies the terminal certificate and the
/// commit, and signs its offer.
const PURCHASE_VERIFIES: f64 = 6.0;
const PURCHASE_SIGNS: f64 = 2.0;
/// Signatures the center verifies per uploaded record (as `bench ingest` counts them): the
/// card's, the terminal's and the previous writer's, in batches.
const RECORD_SIGNATURES: f64 = 3.0;

impl Timing {
    pub(super) fn new(
        report: &Report,
        floor: &FloorRates,
        threads: usize,
        setup: Duration,
        issuance: Duration,
        days: Duration,
        audit: Duration,
    ) -> Self {
        let per = |count: u64, time: Duration| count as f64 / time.as_secs_f64().max(1e-9);
        let purchases = report.purchases.committed as f64;
        let records = report.uploads.records_stored as f64;
        // The purchases' signatures spread over the cores the workers had; the center's
        // batch verification was measured on every core already.
        let cores = threads.clamp(
            1,
            std::thread::available_parallelism().map_or(1, usize::from),
        );
        let floor_seconds = purchases
            * (PURCHASE_VERIFIES * floor.verify + PURCHASE_SIGNS * floor.sign)
            / cores as f64
            + records * RECORD_SIGNATURES * floor.batch_verify;
        Timing {
            threads,
            setup_seconds: setup.as_secs_f64(),
            issuance_seconds: issuance.as_secs_f64(),
            days_seconds: days.as_secs_f64(),
            audit_seconds: audit.as_secs_f64(),
            total_seconds: (setup + issuance + days + audit).as_secs_f64(),
            cards_issued_per_second: per(report.cards_issued, issuance),
            purchases_per_second: per(report.purchases.committed, days),
            records_per_second: per(report.uploads.records_stored, days),
            sign_micros: floor.sign * 1e6,
            verify_micros: floor.verify * 1e6,
            batch_verify_micros: floor.batch_verify * 1e6,
            floor_seconds,
            ratio_to_floor: floor_seconds / days.as_secs_f64().max(1e-9),
        }
    }
}

/// Seconds per Ed25519 operation on this machine, measured at the start of the run.
#[derive(Debug, Clone, Copy)]
pub(super) struct FloorRates {
    sign: f64,
    verify: f64,
    /// Per signature, in batches as the center verifies uploads (on every core).
    batch_verify: f64,
}

impl FloorRates {
    pub(super) fn measure(seed: u64) -> Self {
        const KEYS: usize = 64;
        const ROUNDS: usize = 8;
        let mut rng = WorldRng::seed_from_u64(seed ^ 0x0066_6c6f_6f72);
        let keys: Vec<SigningKeyPair> = (0..KEYS)
            .map(|_| SigningKeyPair::generate(&mut rng))
            .collect();
        // Message sizes of the real signed strings (certificate bodies and protocol
        // messages are 110-130 bytes).
        let messages: Vec<Vec<u8>> = (0..KEYS).map(|i| vec![i as u8; 120]).collect();
        let started = Instant::now();
        let mut signatures = Vec::with_capacity(KEYS * ROUNDS);
        for _ in 0..ROUNDS {
            for (key, message) in keys.iter().zip(&messages) {
                signatures.push(key.sign(message));
            }
        }
        let sign = started.elapsed().as_secs_f64() / (KEYS * ROUNDS) as f64;
        let publics: Vec<_> = keys.iter().map(SigningKeyPair::public_key).collect();
        let started = Instant::now();
        for round in 0..ROUNDS {
            for index in 0..KEYS {
                let _ = std::hint::black_box(
                    publics[index].verify(&messages[index], &signatures[round * KEYS + index]),
                );
            }
        }
        let verify = started.elapsed().as_secs_f64() / (KEYS * ROUNDS) as f64;
        let items: Vec<_> = signatures
            .iter()
            .enumerate()
            .map(|(at, signature)| {
                let index = at % KEYS;
                (publics[index], messages[index].as_slice(), *signature)
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let _ = std::hint::black_box(verify_batch(&items, threads));
        }
        let batch_verify = started.elapsed().as_secs_f64() / (items.len() * ROUNDS) as f64;
        FloorRates {
            sign,
            verify,
            batch_verify,
        }
    }
}
