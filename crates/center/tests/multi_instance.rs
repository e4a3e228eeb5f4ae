//! Several center processes on one PostgreSQL database: three `Center` handles, each on its
//! own connections as a `center serve` process opens them, take the same and overlapping
//! usage uploads at once. Every record is stored once, every clone flagged once, and the
//! totals are those of one center alone; load numbers and device request sequences hold
//! across the handles too. Needs a server (`VALUECARD_POSTGRES_URL`, default the local one
//! with trust authentication); without one each test says SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "scratch/mod.rs"]
mod scratch;

use std::collections::BTreeSet;
use std::sync::Barrier;

use rand_core::{OsRng, SeedableRng};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::auth::{request_signing_input, AuthError, SignedRequest};
use valuecard_center::sql::{Database, Executor};
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, SigningKeyPair};
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{
    InstallationRequest, UploadReceipt, UsageItem, UsageUpload,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};
use valuecard_reader::InProcessReader;
use valuecard_sam::SoftwareSam;
use valuecard_sim::{install_sam, read_purse, Storage, World, WorldRng};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::usage_item;

type Reader = InProcessReader<MemoryEeprom, WorldRng>;

/// How many center processes share the database.
const INSTANCES: usize = 3;

fn today() -> Date {
    Date::from_ymd(2026, 6, 1).unwrap()
}

/// `INSTANCES` handles on the center of `first`, each with its own connection to `url`, as
/// further `center serve` processes open it from the same key file.
fn instances(first: &Center, url: &str) -> (tempfile::TempDir, Vec<Center>) {
    let dir = tempfile::tempdir().unwrap();
    first.save_keys(dir.path()).unwrap();
    let centers = (0..INSTANCES)
        .map(|_| {
            Center::open(
                dir.path(),
                Some(Database::connect_postgres(url).unwrap()),
                Box::new(FixedClock(today())),
            )
            .unwrap()
        })
        .collect();
    (dir, centers)
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn card(world: &mut World, name: &str, initial: u64) -> (Reader, MemoryEeprom, CardId) {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = world.manufacture_card(memory.clone()).unwrap();
    let mut reader = InProcessReader::with_card(name, card);
    let card_id = world.issue(&mut reader, amount(initial)).unwrap();
    (reader, memory, card_id)
}

/// Purchases on plain cards and on a cloned card and its copy (both spending the card's
/// first state): the terminal's usage items, the cloned card, and the amounts spent.
fn purchases(world: &mut World) -> (Vec<UsageItem>, CardId, Vec<u64>) {
    let mut spent = Vec::new();
    let mut plain: Vec<Reader> = (0..4)
        .map(|index| card(world, &format!("plain{index}"), 5_000).0)
        .collect();
    let (mut cloned, memory, cloned_id) = card(world, "cloned", 5_000);
    let copy_memory = MemoryEeprom::new(EEPROM_SIZE);
    copy_memory.restore(&memory.snapshot());
    let mut copy =
        InProcessReader::with_card("copy", Card::open(copy_memory, world.fork_rng()).unwrap());
    for round in 0..3u64 {
        for (index, reader) in plain.iter_mut().enumerate() {
            let cents = 100 + 10 * round + index as u64;
            world.terminals[0].purchase(reader, amount(cents)).unwrap();
            spent.push(cents);
        }
    }
    for (reader, cents) in [(&mut cloned, 400), (&mut copy, 450)] {
        world.terminals[0].purchase(reader, amount(cents)).unwrap();
        spent.push(cents);
    }
    let pending = world.terminals[0].store().pending_uploads(100).unwrap();
    let items: Vec<UsageItem> = pending.iter().filter_map(usage_item).collect();
    assert_eq!(items.len(), spent.len());
    (items, cloned_id, spent)
}

/// The uploads one instance sends in `round`. Round 0 splits the items among the instances
/// (so that the cloned card's two records, the last two items, reach two instances at once
/// and neither upload holds both); later rounds send overlapping windows of the items,
/// rotated by instance and round, the first item of each window twice.
fn batch(items: &[UsageItem], instance: usize, round: usize) -> Vec<UsageItem> {
    let count = items.len();
    if round == 0 {
        return (0..count)
            .filter(|index| (count - 1 - index) % INSTANCES == (instance + 1) % INSTANCES)
            .map(|index| items[index].clone())
            .collect();
    }
    let start = (instance * 5 + round * 3) % count;
    let mut batch: Vec<UsageItem> = (0..count / 2 + 2)
        .map(|offset| items[(start + offset) % count].clone())
        .collect();
    batch.push(batch[0].clone());
    batch
}

fn count(db: &mut Database, sql: &str, params: &[valuecard_center::sql::Value]) -> i64 {
    db.query_one(sql, params).unwrap().int(0).unwrap()
}

#[test]
fn three_instances_store_every_record_once_and_flag_every_clone_once() {
    // Collisions depend on timing: the story runs several times, each on a fresh schema.
    for _ in 0..4 {
        let Some(scratch) = scratch::scratch("multi") else {
            return;
        };
        let url = scratch.url.clone();
        uploads_at_once(&url);
    }
}

fn uploads_at_once(url: &str) {
    let world_db = Database::connect_postgres(url).unwrap();
    let mut world = World::create_seeded(
        Storage::on(world_db),
        1,
        today(),
        WorldRng::seed_from_u64(5),
    )
    .unwrap();
    let (items, cloned_id, spent) = purchases(&mut world);
    let terminal_id = world.terminals[0].device_id();
    let (_dir, mut centers) = instances(&world.center, url);

    const ROUNDS: usize = 4;
    let barrier = Barrier::new(INSTANCES);
    let receipts: Vec<Vec<(usize, UploadReceipt)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = centers
            .iter_mut()
            .enumerate()
            .map(|(instance, center)| {
                let (items, barrier) = (&items, &barrier);
                scope.spawn(move || {
                    let mut receipts = Vec::new();
                    for round in 0..ROUNDS {
                        let items = batch(items, instance, round);
                        // Every instance starts each round together, to collide.
                        barrier.wait();
                        let receipt = center
                            .ingest_usage(&UsageUpload {
                                terminal_id,
                                items: items.clone(),
                            })
                            .unwrap();
                        receipts.push((items.len(), receipt));
                    }
                    receipts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut stored = 0;
    let mut clones_reported = Vec::new();
    for (sent, receipt) in receipts.iter().flatten() {
        assert!(receipt.refused.is_empty(), "{receipt:?}");
        assert_eq!(
            receipt.stored + receipt.duplicates,
            *sent as u32,
            "{receipt:?}"
        );
        stored += receipt.stored;
        clones_reported.extend(receipt.clones_detected.iter().copied());
    }
    // Stored once across every instance, and the clone reported by exactly one upload.
    assert_eq!(stored as usize, items.len());
    assert_eq!(clones_reported, vec![cloned_id]);

    let mut db = Database::connect_postgres(url).unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records",
            &[]
        ),
        items.len() as i64
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM list_entries WHERE kind = 'card' AND subject = $1",
            &[cloned_id.0[..].into()]
        ),
        1
    );
    let total: u64 = spent.iter().sum();
    for center in &mut centers {
        assert_eq!(center.cloned_cards().unwrap(), vec![cloned_id]);
        let clone_alerts: Vec<_> = center
            .alerts()
            .unwrap()
            .into_iter()
            .filter(|alert| alert.kind == "cloned")
            .collect();
        assert_eq!(clone_alerts.len(), 1, "{clone_alerts:?}");
        assert_eq!(clone_alerts[0].subject, cloned_id.0);
        // The single-instance result: every purchase counted once.
        assert_eq!(
            center.reported_spending().unwrap(),
            (total, spent.len() as u64)
        );
    }
}

#[test]
fn instances_draw_distinct_numbers_from_one_sequence() {
    let Some(scratch) = scratch::scratch("multi") else {
        return;
    };
    let url = scratch.url.clone();
    const DRAWS: usize = 60;
    let mut databases: Vec<Database> = (0..INSTANCES)
        .map(|_| Database::connect_postgres(&url).unwrap())
        .collect();
    let barrier = Barrier::new(INSTANCES);
    let drawn: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = databases
            .iter_mut()
            .map(|db| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    (0..DRAWS)
                        .map(|_| {
                            db.transaction(|tx| valuecard_center::db::next_in_sequence(tx, "load"))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: BTreeSet<i64> = drawn.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        INSTANCES * DRAWS,
        "a load number was drawn twice"
    );
}

#[test]
fn a_request_accepted_by_one_instance_is_a_replay_at_another() {
    let Some(scratch) = scratch::scratch("multi") else {
        return;
    };
    let url = scratch.url.clone();
    let mut first = Center::init(
        &tempfile::tempdir().unwrap().path().join("center"),
        Some(Database::connect_postgres(&url).unwrap()),
        Box::new(FixedClock(today())),
        &mut OsRng,
    )
    .unwrap();
    let device_id = first.allocate_device_id().unwrap();
    let signing = SigningKeyPair::generate(&mut OsRng);
    first
        .install_device(
            &InstallationRequest {
                device_id,
                signing_key: signing.public_key(),
                sealing_key: [7; 32],
                challenge: random_array(&mut OsRng),
            },
            Role::Dispenser,
        )
        .unwrap();
    let (_dir, mut centers) = instances(&first, &url);
    // 2026-06-01 in microseconds since the epoch.
    let now = 1_780_272_000_000_000;
    let body = b"{}";
    let path = "/v1/loads/settle";

    // The same request at every instance at once: exactly one accepts it.
    let sequence = now + 1;
    let signature = signing.sign(&request_signing_input("POST", path, sequence, body));
    let request = SignedRequest {
        device_id,
        sequence,
        method: "POST",
        path,
        body,
        signature: &signature,
    };
    let barrier = Barrier::new(INSTANCES);
    let outcomes: Vec<Result<_, AuthError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = centers
            .iter_mut()
            .map(|center| {
                let (barrier, request) = (&barrier, &request);
                scope.spawn(move || {
                    barrier.wait();
                    center.authenticate_request(request, now)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    for outcome in outcomes.iter().filter(|o| o.is_err()) {
        assert!(
            matches!(outcome, Err(AuthError::Replayed { .. })),
            "{outcome:?}"
        );
    }

    // Accepted by one, then refused by each other one, and an older one everywhere.
    let next = sequence + 1;
    let signature = signing.sign(&request_signing_input("POST", path, next, body));
    let request = SignedRequest {
        sequence: next,
        signature: &signature,
        ..request
    };
    centers[0].authenticate_request(&request, now).unwrap();
    for center in &mut centers[1..] {
        assert!(matches!(
            center.authenticate_request(&request, now),
            Err(AuthError::Replayed { .. })
        ));
        assert_eq!(
            center.last_request_sequence(&device_id).unwrap(),
            Some(next)
        );
    }
}

#[test]
fn a_transaction_refused_for_a_conflict_runs_again_on_what_the_other_committed() {
    let Some(scratch) = scratch::scratch("multi") else {
        return;
    };
    let url = scratch.url.clone();
    let mut first = Database::connect_postgres(&url).unwrap();
    let mut second = Database::connect_postgres(&url).unwrap();
    let next_card =
        |db: &mut Database| count(db, "SELECT next FROM sequences WHERE name = 'card'", &[]);
    let start = next_card(&mut first);
    let (go, wait_go) = std::sync::mpsc::channel();
    let (done, wait_done) = std::sync::mpsc::channel();
    let mut runs = 0;
    let drawn = std::thread::scope(|scope| {
        let other = &mut second;
        scope.spawn(move || {
            wait_go.recv().unwrap();
            other
                .transaction(|tx| valuecard_center::db::next_in_sequence(tx, "card"))
                .unwrap();
            done.send(()).unwrap();
        });
        first
            .transaction(|tx| {
                runs += 1;
                // The first run reads the sequence, then another process draws from it and
                // commits before this run writes: the server refuses this run's write.
                tx.query_one("SELECT next FROM sequences WHERE name = 'card'", &[])?;
                if runs == 1 {
                    go.send(()).unwrap();
                    wait_done.recv().unwrap();
                }
                valuecard_center::db::next_in_sequence(tx, "card")
            })
            .unwrap()
    });
    assert_eq!(runs, 2, "the conflicting run was not run again");
    // The second run drew after the other process's draw, and nothing was drawn twice.
    assert_eq!(drawn, start + 1);
    assert_eq!(next_card(&mut first), start + 2);
}

#[test]
fn instances_authorizing_loads_for_different_cards_give_distinct_load_numbers() {
    let Some(scratch) = scratch::scratch("multi") else {
        return;
    };
    let url = scratch.url.clone();
    const CARDS_EACH: usize = 2;
    const ROUNDS: usize = 3;
    let world_db = Database::connect_postgres(&url).unwrap();
    let mut world = World::create_seeded(
        Storage::on(world_db),
        0,
        today(),
        WorldRng::seed_from_u64(9),
    )
    .unwrap();
    // One dispenser per instance, each loading cards of its own.
    let mut loaders: Vec<(Dispenser<SoftwareSam, WorldRng>, Vec<Reader>)> = (0..INSTANCES)
        .map(|instance| {
            let mut rng = world.fork_rng();
            let sam = install_sam(
                &mut world.center,
                Role::Dispenser,
                Box::new(FixedClock(today())),
                &mut rng,
            )
            .unwrap();
            let dispenser =
                Dispenser::new(sam, Box::new(FixedClock(today())), world.fork_rng()).unwrap();
            let cards = (0..CARDS_EACH)
                .map(|index| card(&mut world, &format!("card{instance}.{index}"), 1_000).0)
                .collect();
            (dispenser, cards)
        })
        .collect();
    let (_dir, mut centers) = instances(&world.center, &url);

    let barrier = Barrier::new(INSTANCES);
    let numbers: Vec<u32> = std::thread::scope(|scope| {
        let handles: Vec<_> = loaders
            .iter_mut()
            .zip(centers.iter_mut())
            .map(|((dispenser, cards), center)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut numbers = Vec::new();
                    for _ in 0..ROUNDS {
                        barrier.wait();
                        for reader in cards.iter_mut() {
                            let receipt = dispenser.load(reader, center, amount(100)).unwrap();
                            numbers.push(receipt.load_number);
                        }
                    }
                    numbers
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: BTreeSet<u32> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        INSTANCES * CARDS_EACH * ROUNDS,
        "{numbers:?}"
    );
    // Every load reached its card and is settled, each card holding its own loads.
    for (_, cards) in &mut loaders {
        for reader in cards {
            let balance = read_purse(reader).unwrap().balance;
            assert_eq!(balance, amount(1_000 + 100 * ROUNDS as u64));
        }
    }
    let mut db = Database::connect_postgres(&url).unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM loads WHERE status = 'pending'",
            &[]
        ),
        0
    );
}

#[test]
fn instances_starting_at_once_on_a_new_database_migrate_it_once() {
    let Some(scratch) = scratch::scratch("multi") else {
        return;
    };
    let url = scratch.url.clone();
    let barrier = Barrier::new(INSTANCES);
    let versions: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..INSTANCES)
            .map(|_| {
                let (barrier, url) = (&barrier, &url);
                scope.spawn(move || {
                    barrier.wait();
                    let mut db = Database::connect_postgres(url).unwrap();
                    count(
                        &mut db,
                        "SELECT CAST(MAX(version) AS BIGINT) FROM schema_migrations",
                        &[],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let newest = valuecard_center::db::MIGRATIONS.len() as i64;
    assert_eq!(versions, vec![newest; INSTANCES]);
    let mut db = Database::connect_postgres(&url).unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM schema_migrations",
            &[]
        ),
        newest
    );
}
