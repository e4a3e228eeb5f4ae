//! Memory cards on PostgreSQL with several center processes: two records spending one card
//! state, sent at once to two centers on one database, are both stored and alerted once;
//! float requests at once never grant past the limit nor share a grant number; and the
//! books read the same as on SQLite. Needs a server (`VALUECARD_POSTGRES_URL`, default the
//! local one with trust authentication); without one each test says SKIPPED and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "scratch/mod.rs"]
mod scratch;

mod memcard_world;

use std::sync::Barrier;

use memcard_world::*;
use rand_core::SeedableRng;
use valuecard_center::memcard::MemcardStatus;
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::messages::memcard::MemcardLink;
use valuecard_core::time::FixedClock;

/// A center on `url` and a second process's handle on it (its own key file copy and
/// connection, as a second `center serve` opens it).
fn two_centers(url: &str, seed: u64) -> (Center, Center, Rng, tempfile::TempDir) {
    let mut rng = Rng::seed_from_u64(seed);
    let first = Center::ephemeral_on(
        Database::connect_postgres(url).unwrap(),
        Box::new(FixedClock(today())),
        &mut rng,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    first.save_keys(dir.path()).unwrap();
    let second = Center::open(
        dir.path(),
        Some(Database::connect_postgres(url).unwrap()),
        Box::new(FixedClock(today())),
    )
    .unwrap();
    (first, second, rng, dir)
}

#[test]
fn a_state_spent_twice_at_two_centers_at_once_is_alerted_once() {
    let Some(scratch) = scratch::scratch("memcard") else {
        return;
    };
    let url = scratch.url.clone();
    let (mut first, mut second, mut rng, _dir) = two_centers(&url, 21);
    assert!(first.database().is_postgres());
    let mut charger = Machine::install(&mut first, Role::ChargeMachine, &mut rng);
    let mut left = Machine::install(&mut first, Role::PaymentMachine, &mut rng);
    let mut right = Machine::install(&mut first, Role::PaymentMachine, &mut rng);
    first.grant_float(charger.id, amount(100_000)).unwrap();

    // Several cards, each with a copy spending its charged state at the other machine.
    let mut left_records = Vec::new();
    let mut right_records = Vec::new();
    let mut charges = Vec::new();
    for number in 0..6u8 {
        let mut card = MemoryCard::blank(40 + number);
        charges.push(charger.write(&first, &mut card, amount(1_000), &mut rng));
        let mut copy = card.clone();
        left_records.push(left.write(&first, &mut card, amount(900), &mut rng));
        right_records.push(right.write(&first, &mut copy, amount(800), &mut rng));
    }
    first.upload_writes(&charger.upload(charges)).unwrap();

    let barrier = Barrier::new(2);
    let (left_upload, right_upload) = (left.upload(left_records), right.upload(right_records));
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            barrier.wait();
            first.upload_writes(&left_upload).unwrap()
        });
        let b = scope.spawn(|| {
            barrier.wait();
            second.upload_writes(&right_upload).unwrap()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a.stored, b.stored), (6, 6), "{a:?} {b:?}");
    let twice = first.memcard_states_spent_twice().unwrap();
    assert_eq!(twice.len(), 6, "{twice:?}");
    let alerts: Vec<_> = first
        .alerts()
        .unwrap()
        .into_iter()
        .filter(|alert| alert.kind == "memcard-spent-twice")
        .collect();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    // Sent again to the other center: duplicates, no new alert.
    let again = second.upload_writes(&left_upload).unwrap();
    assert_eq!(again.duplicates, 6);
    assert_eq!(first.memcard_states_spent_twice().unwrap().len(), 6);
    let totals = second.memcard_totals().unwrap();
    assert_eq!((totals.charged, totals.spent), (6_000, 6 * 100 + 6 * 200));
    assert_eq!(totals.states_spent_twice, 6);
    assert_eq!(totals.status(), MemcardStatus::Excess);
}

#[test]
fn float_requests_at_two_centers_at_once_stay_under_the_limit() {
    let Some(scratch) = scratch::scratch("memcard") else {
        return;
    };
    let url = scratch.url.clone();
    let (mut first, mut second, mut rng, _dir) = two_centers(&url, 22);
    let charger = Machine::install(&mut first, Role::ChargeMachine, &mut rng);
    first.set_float_limit(charger.id, 10_000).unwrap();
    let barrier = Barrier::new(2);
    let id = charger.id;
    let ask = |center: &mut Center| {
        barrier.wait();
        (0..6)
            .filter_map(|_| center.request_float(id, amount(1_500)).ok())
            .collect::<Vec<_>>()
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| ask(&mut first));
        let b = scope.spawn(|| ask(&mut second));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut numbers: Vec<u32> = a.iter().chain(&b).map(|g| g.grant_number).collect();
    numbers.sort_unstable();
    let total: u64 = a.iter().chain(&b).map(|g| g.amount.minor()).sum();
    assert_eq!(total, 10_000, "{a:?} {b:?}");
    // Six of 1500 and one of the 1000 left: numbered 1 to 7, each once.
    assert_eq!(numbers, (1..=7).collect::<Vec<u32>>());
    assert_eq!(first.float_grants(id).unwrap().len(), 7);
}

#[test]
fn the_books_and_restore_evidence_read_the_same_on_postgres() {
    let Some(scratch) = scratch::scratch("memcard") else {
        return;
    };
    let url = scratch.url.clone();
    let (mut center, _second, mut rng, _dir) = two_centers(&url, 23);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    payer.sealing = true;
    center.grant_float(charger.id, amount(9_000)).unwrap();
    let mut card = MemoryCard::blank(60);
    let charge = charger.write(&center, &mut card, amount(4_000), &mut rng);
    let first_payment = payer.write(&center, &mut card, amount(3_000), &mut rng);
    let second_payment = payer.write(&center, &mut card, amount(2_500), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();
    center
        .upload_writes(&payer.upload(vec![second_payment.clone()]))
        .unwrap();
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.gaps, totals.spent_in_gaps), (1, 1_000));
    assert_eq!(totals.status(), MemcardStatus::UploadsOutstanding);
    center
        .upload_writes(&payer.upload(vec![first_payment]))
        .unwrap();
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (
            totals.on_cards,
            totals.charged,
            totals.spent,
            totals.float_in_machines
        ),
        (2_500, 4_000, 1_500, 5_000)
    );
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
    assert_eq!(center.reconciliation().unwrap().memcards, totals);
    let evidence = center.latest_state(&card.id).unwrap().unwrap();
    assert_eq!(evidence.record, second_payment);
}

#[test]
fn a_pending_write_reported_to_one_center_is_counted_by_the_other_on_postgres() {
    let Some(scratch) = scratch::scratch("memcard") else {
        return;
    };
    let url = scratch.url.clone();
    let (mut first, mut second, mut rng, _dir) = two_centers(&url, 24);
    let mut charger = Machine::install(&mut first, Role::ChargeMachine, &mut rng);
    let mut torn_at = Machine::install(&mut first, Role::PaymentMachine, &mut rng);
    let mut restorer = Machine::install(&mut first, Role::PaymentMachine, &mut rng);
    first.grant_float(charger.id, amount(9_000)).unwrap();
    let mut card = MemoryCard::blank(61);
    let charge = charger.write(&first, &mut card, amount(4_000), &mut rng);
    first.upload_writes(&charger.upload(vec![charge])).unwrap();
    let torn = torn_at.write(&first, &mut card, amount(3_000), &mut rng);
    let report = torn_at.upload(vec![torn.clone()]);
    assert_eq!(first.report_pending(&report).unwrap().held, 1);
    // The other process offers it, and counts it when the next record arrives there.
    assert_eq!(second.latest_state(&card.id).unwrap().unwrap().record, torn);
    let next = restorer.write(&second, &mut card, amount(2_000), &mut rng);
    second.upload_writes(&restorer.upload(vec![next])).unwrap();
    assert_eq!(
        first.report_pending(&report).unwrap().landed,
        [torn.sequence]
    );
    assert_eq!(first.memcard_pending_held().unwrap(), 0);
    let totals = second.memcard_totals().unwrap();
    assert_eq!(
        (totals.spent, totals.on_cards, totals.gaps),
        (2_000, 2_000, 0)
    );
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
}
