//! The tearing harness of the terminal's store: during purchases, the settlement of a
//! purchase left in doubt and usage uploads, the terminal's SQLite store fails at its 1st,
//! 2nd, 3rd, ... mutating call (before that write, or right after it) and everything after
//! it fails too, as when the terminal loses power. The terminal then restarts on its SAM and
//! its store file, the holder presents the card again, and every run must end where an
//! uncrashed run ends: each purchase committed and recorded exactly once (settled from the
//! card's signed last transaction where the terminal never heard the answer), uploaded once,
//! and value conserved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use common::*;
use valuecard_center::reconcile::{Reconciliation, ReconciliationStatus};
use valuecard_core::crypto::Signature;
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::ins;
use valuecard_core::time::FixedClock;
use valuecard_sam::{Sam, SoftwareSam};
use valuecard_sim::{read_purse, World};
use valuecard_terminal::payment::PaymentTerminal;
use valuecard_terminal::store::{
    LocalLists, PurchaseRecord, PurchaseStatus, ServiceEntry, SqliteStore, TerminalStore,
};
use valuecard_terminal::TerminalError;

/// Where the store fails: at its k-th mutating call, before or after that call's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreFault {
    Before(u64),
    After(u64),
}

thread_local! {
    static FAULT: Cell<Option<StoreFault>> = const { Cell::new(None) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static DEAD: Cell<bool> = const { Cell::new(false) };
}

fn arm(fault: StoreFault) {
    CALLS.set(0);
    DEAD.set(false);
    FAULT.set(Some(fault));
}

/// Disarms; returns the mutating calls made since `arm` and whether the fault fired.
fn disarm() -> (u64, bool) {
    FAULT.set(None);
    (CALLS.get(), DEAD.replace(false))
}

fn power_lost() -> TerminalError {
    TerminalError::Store("the terminal lost power".into())
}

/// The terminal's SQLite store, dying at the armed call: from then on every call fails.
struct CrashingStore {
    inner: SqliteStore,
}

impl CrashingStore {
    fn alive(&self) -> Result<(), TerminalError> {
        if DEAD.get() {
            return Err(power_lost());
        }
        Ok(())
    }

    fn write<T>(
        &mut self,
        write: impl FnOnce(&mut SqliteStore) -> Result<T, TerminalError>,
    ) -> Result<T, TerminalError> {
        self.alive()?;
        let call = CALLS.get() + 1;
        CALLS.set(call);
        let fault = FAULT.get();
        if fault == Some(StoreFault::Before(call)) {
            DEAD.set(true);
            return Err(power_lost());
        }
        let out = write(&mut self.inner)?;
        if fault == Some(StoreFault::After(call)) {
            DEAD.set(true);
            return Err(power_lost());
        }
        Ok(out)
    }
}

impl TerminalStore for CrashingStore {
    fn next_sequence(&mut self) -> Result<u32, TerminalError> {
        self.write(|store| store.next_sequence())
    }
    fn record(&mut self, record: &PurchaseRecord) -> Result<(), TerminalError> {
        self.write(|store| store.record(record))
    }
    fn set_status(&mut self, sequence: u32, status: PurchaseStatus) -> Result<(), TerminalError> {
        self.write(|store| store.set_status(sequence, status))
    }
    fn in_doubt_for_card(&self, card_id: &CardId) -> Result<Vec<PurchaseRecord>, TerminalError> {
        self.alive()?;
        self.inner.in_doubt_for_card(card_id)
    }
    fn records(&self) -> Result<Vec<PurchaseRecord>, TerminalError> {
        self.alive()?;
        self.inner.records()
    }
    fn pending_uploads(&self, limit: usize) -> Result<Vec<PurchaseRecord>, TerminalError> {
        self.alive()?;
        self.inner.pending_uploads(limit)
    }
    fn mark_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        self.write(|store| store.mark_uploaded(sequences))
    }
    fn lists(&self) -> Result<LocalLists, TerminalError> {
        self.alive()?;
        self.inner.lists()
    }
    fn save_lists(&mut self, lists: &LocalLists) -> Result<(), TerminalError> {
        self.write(|store| store.save_lists(lists))
    }
    fn record_service(&mut self, service: &ServiceEntry) -> Result<(), TerminalError> {
        self.write(|store| store.record_service(service))
    }
    fn settle_service(
        &mut self,
        sequence: u32,
        signature: Option<Signature>,
    ) -> Result<(), TerminalError> {
        self.write(|store| store.settle_service(sequence, signature))
    }
    fn services(&self) -> Result<Vec<ServiceEntry>, TerminalError> {
        self.alive()?;
        self.inner.services()
    }
    fn mark_services_uploaded(&mut self, sequences: &[u32]) -> Result<(), TerminalError> {
        self.write(|store| store.mark_services_uploaded(sequences))
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("terminal-1").join("purchases.sqlite")
}

/// Terminal 0 starts (again) on its SAM's image and its store file, the store wrapped.
fn start_terminal(world: &mut World, dir: &Path) {
    let sam = SoftwareSam::from_image(&world.terminals[0].sam().to_image()).unwrap();
    assert_eq!(sam.device_id(), world.terminals[0].device_id());
    let store: Box<dyn TerminalStore> = Box::new(CrashingStore {
        inner: SqliteStore::open(&store_path(dir)).unwrap(),
    });
    let rng = world.fork_rng();
    world.terminals[0] =
        PaymentTerminal::new(sam, store, Box::new(FixedClock(today())), rng).unwrap();
}

/// What must hold in the store file after a crash: the sequence stays ahead of every
/// record, so no number is used twice.
fn store_invariants(dir: &Path) {
    let db = rusqlite::Connection::open(store_path(dir)).unwrap();
    let (next, highest): (i64, i64) = db
        .query_row(
            "SELECT (SELECT next FROM sequence), (SELECT COALESCE(MAX(sequence), 0) FROM purchases)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert!(
        next > highest,
        "sequence {next} is not past record {highest}"
    );
}

struct Scene {
    dir: tempfile::TempDir,
    world: World,
    cards: Vec<TestReader>,
}

type Setup = dyn Fn(&mut World) -> Vec<TestReader>;
type Operation = dyn Fn(&mut World, &mut [TestReader]) -> Result<(), TerminalError>;
type Recovery = dyn Fn(&mut World, &mut [TestReader]);

impl Scene {
    fn new(seed: u64, setup: &Setup) -> Self {
        let (dir, mut world) = world_on_disk(seed, 2);
        let cards = setup(&mut world);
        start_terminal(&mut world, dir.path());
        Scene { dir, world, cards }
    }

    /// Every card presented again and every terminal's records settled and uploaded; then
    /// each purchase must be counted once at its terminal and once at the center.
    fn finish(&mut self) -> Outcome {
        let mut balances = Vec::new();
        for reader in &mut self.cards {
            let card_id = read_purse(reader).unwrap().card_id;
            self.world.settle_card(reader, card_id).unwrap();
            balances.push(read_purse(reader).unwrap().balance.minor());
        }
        let mut committed = (0, 0);
        for terminal in &self.world.terminals {
            let totals = terminal.store().totals().unwrap();
            assert_eq!(totals.in_doubt_count, 0, "{totals:?}");
            assert!(terminal.store().pending_uploads(10).unwrap().is_empty());
            committed.0 += totals.committed_minor;
            committed.1 += totals.committed_count;
        }
        assert_eq!(self.world.center.reported_spending().unwrap(), committed);
        let amounts: Vec<_> = balances.iter().map(|minor| amount(*minor)).collect();
        let world_view = self.world.reconcile(&amounts).unwrap();
        assert!(world_view.conserved, "{world_view:?}");
        let totals = self.world.center.reconciliation().unwrap();
        assert_eq!(
            totals.status(),
            ReconciliationStatus::Reconciled,
            "{totals:?}"
        );
        store_invariants(self.dir.path());
        Outcome {
            balances,
            committed,
            totals,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    balances: Vec<u64>,
    /// Committed purchases at the terminals: amount, count.
    committed: (u64, u64),
    totals: Reconciliation,
}

/// Runs the operation once with no fault, then with the store failing before and after
/// each of its mutating calls; after each failure the terminal restarts and `recover` does
/// what the holder and the terminal do next. Every run must end where the clean one ended.
fn tear_store(seed: u64, setup: &Setup, operation: &Operation, recover: &Recovery) -> usize {
    let mut clean = Scene::new(seed, setup);
    arm(StoreFault::Before(u64::MAX));
    operation(&mut clean.world, &mut clean.cards).unwrap();
    let (calls, fired) = disarm();
    assert!(!fired && calls > 0);
    recover(&mut clean.world, &mut clean.cards);
    let expected = clean.finish();
    let mut runs = 0;
    for k in 1..=calls {
        for fault in [StoreFault::Before(k), StoreFault::After(k)] {
            let mut scene = Scene::new(seed, setup);
            arm(fault);
            let result = operation(&mut scene.world, &mut scene.cards);
            let (_, fired) = disarm();
            assert!(fired, "{fault:?} did not fire");
            assert!(
                result.is_err(),
                "{fault:?}: the operation went on after a crash"
            );
            store_invariants(scene.dir.path());
            start_terminal(&mut scene.world, scene.dir.path());
            recover(&mut scene.world, &mut scene.cards);
            let outcome = scene.finish();
            assert_eq!(outcome, expected, "{fault:?}");
            runs += 1;
        }
    }
    eprintln!("{calls} mutating calls, {runs} faulted runs");
    runs
}

fn balance(reader: &mut TestReader) -> u64 {
    read_purse(reader).unwrap().balance.minor()
}

/// The holder presents the card: the terminals settle what they hold in doubt for it from
/// its signed last transaction, and upload.
fn present(world: &mut World, reader: &mut TestReader) -> u64 {
    let card_id = read_purse(reader).unwrap().card_id;
    world.settle_card(reader, card_id).unwrap();
    balance(reader)
}

/// The terminal's committed records for a card agree with what the card lost.
fn assert_recorded(world: &World, reader: &mut TestReader, initial: u64) {
    let card_id = read_purse(reader).unwrap().card_id;
    let records = world.terminals[0].store().records().unwrap();
    let committed: u64 = records
        .iter()
        .filter(|r| r.card_id == card_id && r.status == PurchaseStatus::Committed)
        .map(|r| r.amount.minor())
        .sum();
    assert_eq!(committed, initial - balance(reader), "{records:?}");
}

#[test]
fn a_day_of_purchases_and_uploads_survives_a_store_crash_at_every_write() {
    // A pays 250, B pays 300, the terminal uploads, A pays 100, the terminal uploads.
    let runs = tear_store(
        31,
        &|world| {
            let (first, _) = issued_card(world, "first", 1_000);
            let (second, _) = issued_card(world, "second", 800);
            vec![first, second]
        },
        &|world, cards| {
            world.terminals[0].purchase(&mut cards[0], amount(250))?;
            world.terminals[0].purchase(&mut cards[1], amount(300))?;
            world.terminals[0].upload_usage(&mut world.center)?;
            world.terminals[0].purchase(&mut cards[0], amount(100))?;
            world.terminals[0].upload_usage(&mut world.center)?;
            Ok(())
        },
        &|world, cards| {
            // Both holders come back; each purchase the card shows is recorded once, and
            // the ones the card never took are made again.
            let first = present(world, &mut cards[0]);
            let second = present(world, &mut cards[1]);
            assert!([1_000, 750, 650].contains(&first), "{first}");
            assert!([800, 500].contains(&second), "{second}");
            assert_recorded(world, &mut cards[0], 1_000);
            assert_recorded(world, &mut cards[1], 800);
            if first == 1_000 {
                world.terminals[0]
                    .purchase(&mut cards[0], amount(250))
                    .unwrap();
            }
            if second == 800 {
                world.terminals[0]
                    .purchase(&mut cards[1], amount(300))
                    .unwrap();
            }
            if first != 650 {
                world.terminals[0]
                    .purchase(&mut cards[0], amount(100))
                    .unwrap();
            }
            world.terminals[0].upload_usage(&mut world.center).unwrap();
        },
    );
    assert!(runs >= 22, "{runs}");
}

/// A purchase of 250 whose DEBIT answer was lost (`delivered`: after the card committed
/// it), then the card is presented for a purchase of 100: the terminal first settles the
/// purchase in doubt from the card's evidence.
fn settlement_survives_a_store_crash(seed: u64, delivered: bool) -> usize {
    tear_store(
        seed,
        &move |world| {
            let (mut reader, _) = issued_card(world, "in doubt", 1_000);
            let mut losing = LosingAnswer {
                inner: &mut reader,
                ins: ins::DEBIT,
                delivered,
            };
            let lost = world.terminals[0].purchase(&mut losing, amount(250));
            assert!(
                matches!(lost, Err(TerminalError::PurchaseInDoubt { .. })),
                "{lost:?}"
            );
            vec![reader]
        },
        &|world, cards| {
            world.terminals[0].purchase(&mut cards[0], amount(100))?;
            Ok(())
        },
        &move |world, cards| {
            let before = if delivered { 750 } else { 1_000 };
            let now = present(world, &mut cards[0]);
            assert!(now == before || now == before - 100, "{now}");
            assert_recorded(world, &mut cards[0], 1_000);
            if now == before {
                world.terminals[0]
                    .purchase(&mut cards[0], amount(100))
                    .unwrap();
            }
        },
    )
}

#[test]
fn settling_a_debit_the_card_committed_survives_a_store_crash_at_every_write() {
    assert!(settlement_survives_a_store_crash(32, true) >= 8);
}

#[test]
fn settling_a_debit_the_card_never_took_survives_a_store_crash_at_every_write() {
    assert!(settlement_survives_a_store_crash(33, false) >= 8);
}
