//! The tearing harness of the center's database: for card issuance, a load with its
//! settlement, the settlement of a load left in doubt, and a usage upload, the center (on its
//! SQLite files, as in production) fails at statement 1, 2, 3, ... of the operation until the
//! operation runs through, and loses the answer to each of its requests in turn. A crash
//! rolls back the open transaction and stops the center; it is reopened from its files, which
//! must pass the invariants (`center_crash::invariants`). The device then either sends the
//! same request again or gets the error and recovers as a real one does (settling from the
//! card's signed evidence, uploading again, loading again), and every run must end where an
//! uncrashed run ends: the same balances, the same totals, value conserved, nothing counted
//! twice and no card flagged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod center_crash;
mod common;

use center_crash::{arm, disarm, invariants, reopen, CrashLink, Fault};
use common::*;
use valuecard_center::reconcile::{Reconciliation, ReconciliationStatus};
use valuecard_core::messages::purse::{ins, CardState};
use valuecard_sam::SoftwareSam;
use valuecard_sim::{read_purse, Terminal, World, WorldRng};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::TerminalError;

/// What the devices hold during an operation: the center is behind the link.
struct Devices<'a> {
    dispenser: &'a mut Dispenser<SoftwareSam, WorldRng>,
    terminals: &'a mut [Terminal],
    cards: &'a mut [TestReader],
    /// Load numbers the set-up left pending.
    loads: &'a [u32],
}

/// A world on disk with its cards, the center on a connection with the fault hooks.
struct Scene {
    dir: tempfile::TempDir,
    world: World,
    cards: Vec<TestReader>,
    loads: Vec<u32>,
}

impl Scene {
    fn new(seed: u64, setup: &Setup) -> Self {
        let (dir, mut world) = world_on_disk(seed, 2);
        let (cards, loads) = setup(&mut world);
        world.center = reopen(&dir.path().join("center"), today());
        Scene {
            dir,
            world,
            cards,
            loads,
        }
    }

    /// Runs `operation` with `fault` armed.
    fn run(&mut self, fault: Fault, resend: bool, operation: &Operation) -> Run {
        let center_dir = self.dir.path().join("center");
        let world = &mut self.world;
        let mut link = CrashLink::new(&mut world.center, &center_dir, today(), resend);
        let mut devices = Devices {
            dispenser: &mut world.dispenser,
            terminals: &mut world.terminals,
            cards: &mut self.cards,
            loads: &self.loads,
        };
        arm(fault);
        let result = operation(&mut devices, &mut link);
        let statements = disarm();
        Run {
            faults: link.faults,
            statements,
            requests: link.requests(),
            result,
        }
    }

    /// Settles everything for every card, checks conservation and the files, and reads
    /// the outcome.
    fn finish(&mut self) -> Outcome {
        let mut balances = Vec::new();
        for reader in &mut self.cards {
            let status = read_purse(reader).unwrap();
            self.world.settle_card(reader, status.card_id).unwrap();
            balances.push(read_purse(reader).unwrap().balance.minor());
        }
        let amounts: Vec<_> = balances.iter().map(|minor| amount(*minor)).collect();
        let world_view = self.world.reconcile(&amounts).unwrap();
        assert!(world_view.conserved, "{world_view:?}");
        let totals = self.world.center.reconciliation().unwrap();
        assert_eq!(
            totals.status(),
            ReconciliationStatus::Reconciled,
            "{totals:?}"
        );
        assert_eq!(totals.remaining, world_view.balances_total, "{totals:?}");
        let violations = invariants(&self.dir.path().join("center"), today());
        assert!(violations.is_empty(), "{violations:?}");
        Outcome { balances, totals }
    }
}

/// What one run of an operation did.
struct Run {
    /// Faults that fired.
    faults: u32,
    /// Statements the center ran.
    statements: u64,
    /// Requests the device sent.
    requests: u64,
    /// What the device saw.
    result: Result<(), TerminalError>,
}

/// Where a run ends: what the cards hold and the center's totals.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    balances: Vec<u64>,
    totals: Reconciliation,
}

type Setup = dyn Fn(&mut World) -> (Vec<TestReader>, Vec<u32>);
type Operation = dyn Fn(&mut Devices, &mut CrashLink) -> Result<(), TerminalError>;
type Recovery = dyn Fn(&mut World, &mut [TestReader]);

/// Runs the operation once with no fault, then with every fault: a crash at each statement
/// (the device getting the error, or sending the same request again), a transient failure
/// of each statement, and the loss of each answer (both ways). After each run `recover`
/// does what the device does next, and the run must end where the clean one ended.
/// Returns how many faulted runs there were.
fn tear_center(seed: u64, setup: &Setup, operation: &Operation, recover: &Recovery) -> usize {
    let mut clean = Scene::new(seed, setup);
    let run = clean.run(Fault::Crash(u64::MAX), false, operation);
    assert_eq!(run.faults, 0);
    run.result.unwrap();
    let (statements, requests) = (run.statements, run.requests);
    recover(&mut clean.world, &mut clean.cards);
    let expected = clean.finish();
    assert!(statements > 0 && requests > 0);
    let mut plans = Vec::new();
    for k in 1..=statements {
        plans.push((Fault::Crash(k), false));
        plans.push((Fault::Crash(k), true));
        plans.push((Fault::Transient(k), false));
    }
    for n in 1..=requests {
        plans.push((Fault::LostAnswer(n), false));
        plans.push((Fault::LostAnswer(n), true));
    }
    for (fault, resend) in &plans {
        let mut scene = Scene::new(seed, setup);
        let run = scene.run(*fault, *resend, operation);
        assert_eq!(run.faults, 1, "{fault:?} did not fire once");
        if *resend {
            // The same request sent again to the restarted center completes the operation.
            run.result
                .unwrap_or_else(|error| panic!("{fault:?}, resent: {error}"));
        }
        recover(&mut scene.world, &mut scene.cards);
        let outcome = scene.finish();
        assert_eq!(outcome, expected, "{fault:?}, resend {resend}");
    }
    eprintln!(
        "{statements} statements, {requests} requests, {} faulted runs",
        plans.len()
    );
    plans.len()
}

/// A load whose CREDIT answer is lost: the center holds it pending. Returns its number.
fn load_in_doubt(world: &mut World, reader: &mut TestReader, minor: u64, delivered: bool) -> u32 {
    let mut losing = LosingAnswer {
        inner: reader,
        ins: ins::CREDIT,
        delivered,
    };
    match world
        .dispenser
        .load(&mut losing, &mut world.center, amount(minor))
    {
        Err(TerminalError::LoadInDoubt { load_number }) => load_number,
        other => panic!("the load must be in doubt: {other:?}"),
    }
}

fn balance(reader: &mut TestReader) -> u64 {
    read_purse(reader).unwrap().balance.minor()
}

#[test]
fn issuance_survives_a_center_crash_at_every_statement() {
    let runs = tear_center(
        21,
        &|world| {
            let (reader, _) = blank_card(world, "issue");
            (vec![reader], Vec::new())
        },
        &|devices, link| {
            devices
                .dispenser
                .issue_card(&mut devices.cards[0], link)
                .map(|_| ())
        },
        &|world, cards| {
            // The dispenser issues again: the card resumes under the ID it holds, or starts
            // over if the center never gave it one. Then it must take a load.
            let reader = &mut cards[0];
            if reader.card().unwrap().state().card_state() != CardState::Active {
                world
                    .dispenser
                    .issue_card(reader, &mut world.center)
                    .unwrap();
            }
            world.load(reader, amount(1_000)).unwrap();
            assert_eq!(world.center.card_count().unwrap(), 1);
        },
    );
    assert!(runs >= 20, "{runs}");
}

#[test]
fn a_load_and_its_settlement_survive_a_center_crash_at_every_statement() {
    let runs = tear_center(
        22,
        &|world| {
            // The card's last record is a purchase, uploaded: the center checks the claimed
            // balance against that terminal's signature and its own remaining value.
            let (mut reader, _) = issued_card(world, "load", 1_000);
            world.terminals[0]
                .purchase(&mut reader, amount(200))
                .unwrap();
            world.terminals[0].upload_usage(&mut world.center).unwrap();
            (vec![reader], Vec::new())
        },
        &|devices, link| {
            devices
                .dispenser
                .load(&mut devices.cards[0], link, amount(500))
                .map(|_| ())
        },
        &|world, cards| {
            // The dispenser settles what it holds from the card's signed last transaction;
            // then value is conserved whether or not the load went through, and the holder
            // loads again only if it did not.
            let reader = &mut cards[0];
            let card_id = read_purse(reader).unwrap().card_id;
            world.settle_card(reader, card_id).unwrap();
            let now = balance(reader);
            assert!(now == 800 || now == 1_300, "{now}");
            assert!(world.reconcile(&[amount(now)]).unwrap().conserved);
            if now == 800 {
                world.load(reader, amount(500)).unwrap();
            }
        },
    );
    assert!(runs >= 60, "{runs}");
}

fn settlement_survives_a_crash(seed: u64, delivered: bool) -> usize {
    tear_center(
        seed,
        &move |world| {
            let (mut reader, _) = issued_card(world, "settle", 1_000);
            let load = load_in_doubt(world, &mut reader, 500, delivered);
            (vec![reader], vec![load])
        },
        &|devices, link| {
            devices
                .dispenser
                .settle_pending_load(&mut devices.cards[0], link, devices.loads[0])
                .map(|_| ())
        },
        &move |world, cards| {
            let reader = &mut cards[0];
            let card_id = read_purse(reader).unwrap().card_id;
            world.settle_card(reader, card_id).unwrap();
            assert!(world.center.pending_loads().unwrap().is_empty());
            let expected = if delivered { 1_500 } else { 1_000 };
            assert_eq!(balance(reader), expected);
        },
    )
}

#[test]
fn settling_a_load_the_card_committed_survives_a_center_crash_at_every_statement() {
    assert!(settlement_survives_a_crash(23, true) >= 30);
}

#[test]
fn settling_a_load_the_card_never_took_survives_a_center_crash_at_every_statement() {
    assert!(settlement_survives_a_crash(24, false) >= 30);
}

/// Two cards and three purchases at terminal 0, one of them spending the state a load left
/// in doubt wrote (its upload settles that load).
fn purchases_to_upload(world: &mut World) -> (Vec<TestReader>, Vec<u32>) {
    let (mut first, _) = issued_card(world, "first", 1_000);
    let load = load_in_doubt(world, &mut first, 500, true);
    world.terminals[0]
        .purchase(&mut first, amount(250))
        .unwrap();
    let (mut second, _) = issued_card(world, "second", 800);
    world.terminals[0]
        .purchase(&mut second, amount(300))
        .unwrap();
    world.terminals[0]
        .purchase(&mut second, amount(100))
        .unwrap();
    (vec![first, second], vec![load])
}

#[test]
fn a_usage_upload_survives_a_center_crash_at_every_statement() {
    let runs = tear_center(
        25,
        &purchases_to_upload,
        &|devices, link| {
            let receipt = devices.terminals[0].upload_usage(link)?;
            assert!(receipt.refused.is_empty(), "{receipt:?}");
            Ok(())
        },
        &|world, _| {
            // The terminal uploads again at its next sync: whatever the center kept counts
            // as duplicates, the rest is stored, and nothing is counted twice.
            let receipt = world.terminals[0].upload_usage(&mut world.center).unwrap();
            assert!(receipt.refused.is_empty(), "{receipt:?}");
            assert_eq!(world.center.reported_spending().unwrap(), (650, 3));
        },
    );
    assert!(runs >= 60, "{runs}");
}

#[test]
fn an_upload_whose_answer_was_lost_is_counted_once() {
    let mut scene = Scene::new(26, &purchases_to_upload);
    let run = scene.run(Fault::LostAnswer(1), false, &|devices, link| {
        devices.terminals[0].upload_usage(link).map(|_| ())
    });
    assert_eq!(run.faults, 1);
    assert!(
        matches!(run.result, Err(TerminalError::Center(_))),
        "{:?}",
        run.result
    );
    // The terminal did not hear the receipt: its records stay unmarked and go again.
    let pending = scene.world.terminals[0].store();
    assert_eq!(
        valuecard_terminal::store::TerminalStore::pending_uploads(pending, 10)
            .unwrap()
            .len(),
        3
    );
    let receipt = scene.world.terminals[0]
        .upload_usage(&mut scene.world.center)
        .unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (0, 3), "{receipt:?}");
    assert_eq!(scene.world.center.reported_spending().unwrap(), (650, 3));
    let outcome = scene.finish();
    assert_eq!(outcome.balances, vec![1_250, 400]);
}

#[test]
fn a_failed_statement_changes_nothing_and_a_crash_fails_the_rest() {
    let nothing: &Setup = &|_| (Vec::new(), Vec::new());
    let expected = Scene::new(27, nothing)
        .world
        .center
        .allocate_device_id()
        .unwrap();
    // Taking a device number runs BEGIN, the sequence's UPDATE ... RETURNING, COMMIT.
    for k in 1..=3 {
        for fault in [Fault::Crash(k), Fault::Transient(k)] {
            let mut scene = Scene::new(27, nothing);
            let dir = scene.dir.path().join("center");
            arm(fault);
            let failed = scene.world.center.allocate_device_id();
            assert!(failed.is_err(), "{fault:?}: {failed:?}");
            let after = scene.world.center.card_count();
            match fault {
                // Nothing after a crash runs, until the center is started again.
                Fault::Crash(_) => {
                    assert!(after.is_err(), "{fault:?}: {after:?}");
                    disarm();
                    center_crash::restart(&mut scene.world.center, &dir, today());
                }
                _ => {
                    assert!(after.is_ok(), "{fault:?}: {after:?}");
                    disarm();
                }
            }
            // The failed statement's transaction left no trace: the same number comes next.
            assert_eq!(scene.world.center.allocate_device_id().unwrap(), expected);
        }
    }
    let mut scene = Scene::new(27, nothing);
    arm(Fault::Crash(4));
    assert_eq!(scene.world.center.allocate_device_id().unwrap(), expected);
    assert_eq!(disarm(), 3);
}
