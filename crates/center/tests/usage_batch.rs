//! Usage uploads stored as one batch: a batch holding retries, repeats, clones, a load's
//! settlement, a reported card and a forged item comes to the same receipts and the same
//! records on SQLite and on PostgreSQL. PostgreSQL needs a server (`VALUECARD_POSTGRES_URL`,
//! default the local one with trust authentication); without one that half says SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod usage_world;

use rand_core::SeedableRng;
use usage_world::{amount, card, copy_of, scratch, upload};
use valuecard_center::alerts::Alert;
use valuecard_center::sql::{Database, Executor};
use valuecard_center::{CenterError, RemainingValue};
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{UploadReceipt, UsageItem};
use valuecard_core::time::Date;
use valuecard_sim::{read_purse, Storage, World, WorldRng};
use valuecard_terminal::payment::usage_item;

/// Everything the center holds after the uploads that the batch path writes or decides.
#[derive(Debug, PartialEq)]
struct Outcome {
    receipts: Vec<UploadReceipt>,
    clones: Vec<CardId>,
    alerts: Vec<Alert>,
    spending: (u64, u64),
    remaining: Vec<Option<RemainingValue>>,
    pending_loads: usize,
    cards: Vec<CardId>,
}

/// The same seeded story on the given storage.
fn story(storage: Storage) -> Outcome {
    let today = Date::from_ymd(2026, 6, 1).unwrap();
    let mut world = World::create_seeded(storage, 1, today, WorldRng::seed_from_u64(77)).unwrap();
    let (mut plain, _, plain_id) = card(&mut world, "plain", 5_000);
    let (mut cloned, cloned_memory, cloned_id) = card(&mut world, "cloned", 5_000);
    let mut clone = copy_of(&mut world, &cloned_memory);
    // A copy taken before a recharge: the recharge commits on the original, the copy then
    // spends the state the recharge started from.
    let (mut recharged, recharged_memory, recharged_id) = card(&mut world, "recharged", 1_000);
    let mut stale = copy_of(&mut world, &recharged_memory);
    let (mut reported, _, reported_id) = card(&mut world, "reported", 2_000);
    world.load(&mut recharged, amount(700)).unwrap();

    let shop = 0;
    for cents in [100, 200, 300] {
        world.terminals[shop]
            .purchase(&mut plain, amount(cents))
            .unwrap();
    }
    world.terminals[shop]
        .purchase(&mut cloned, amount(400))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut recharged, amount(50))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut reported, amount(60))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut clone, amount(450))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut stale, amount(25))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut recharged, amount(75))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut plain, amount(10))
        .unwrap();
    assert_eq!(read_purse(&mut plain).unwrap().balance, amount(4_390));
    // Reported destroyed after it paid, before the terminal uploaded.
    assert!(matches!(
        world.center.restore_card(&reported_id),
        Ok(valuecard_center::lists::Restoration::Held { .. })
    ));

    let pending = world.terminals[shop].store().pending_uploads(100).unwrap();
    let items: Vec<UsageItem> = pending.iter().filter_map(usage_item).collect();
    assert_eq!(items.len(), 10);

    // First the first three, then everything: the three again (retries), one of them twice
    // more in the same upload, and a copy of the last with a forged card signature under a
    // sequence of its own.
    let mut receipts = vec![upload(&mut world, items[..3].to_vec())];
    let mut second = items.clone();
    second.insert(5, items[1].clone());
    second.push(items[1].clone());
    let mut forged = items[9].clone();
    forged.terminal_sequence += 100;
    forged.card_signature.0[0] ^= 1;
    second.push(forged);
    receipts.push(upload(&mut world, second));
    // And the whole of it once more: nothing new.
    receipts.push(upload(&mut world, items.clone()));

    let cards = vec![plain_id, cloned_id, recharged_id, reported_id];
    Outcome {
        receipts,
        clones: world.center.cloned_cards().unwrap(),
        alerts: world.center.alerts().unwrap(),
        spending: world.center.reported_spending().unwrap(),
        remaining: cards
            .iter()
            .map(|card| world.center.remaining_value(card).unwrap())
            .collect(),
        pending_loads: world.center.pending_loads().unwrap().len(),
        cards,
    }
}

fn check(outcome: &Outcome) {
    let [plain, cloned, recharged, reported] = outcome.cards[..] else {
        panic!("four cards");
    };
    let receipts = &outcome.receipts;
    assert_eq!(
        (receipts[0].stored, receipts[0].duplicates),
        (3, 0),
        "{receipts:?}"
    );
    assert!(receipts[0].refused.is_empty() && receipts[0].clones_detected.is_empty());
    // Seven new, the first three again plus the repeat twice within the upload.
    assert_eq!(
        (receipts[1].stored, receipts[1].duplicates),
        (7, 5),
        "{receipts:?}"
    );
    assert_eq!(receipts[1].refused.len(), 1, "{receipts:?}");
    assert_eq!(receipts[1].refused[0].1, "a signature does not verify");
    // Two clones, each once: the copy spent a state the original spent, the stale copy a
    // state the recharge started from.
    assert_eq!(receipts[1].clones_detected, vec![cloned, recharged]);
    assert_eq!(
        (
            receipts[2].stored,
            receipts[2].duplicates,
            receipts[2].refused.len()
        ),
        (0, 10, 0)
    );
    assert!(receipts[2].clones_detected.is_empty());
    assert_eq!(outcome.clones, vec![cloned, recharged]);
    let spent: u64 = [100, 200, 300, 400, 50, 60, 450, 25, 75, 10].iter().sum();
    assert_eq!(outcome.spending, (spent, 10));
    // The reported card's purchase is flagged, and each clone is alerted.
    let kinds: Vec<(&str, [u8; 8])> = outcome
        .alerts
        .iter()
        .map(|alert| (alert.kind.as_str(), alert.subject))
        .collect();
    assert!(
        kinds.contains(&("spent-after-report", reported.0)),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("cloned", cloned.0)), "{kinds:?}");
    assert!(kinds.contains(&("cloned", recharged.0)), "{kinds:?}");
    assert!(
        !kinds.iter().any(|(_, subject)| *subject == plain.0),
        "{kinds:?}"
    );
    // Remaining values follow the newest state each card reached.
    let plain_value = outcome.remaining[0].as_ref().unwrap();
    assert_eq!(plain_value.balance, amount(4_390));
    let recharged_value = outcome.remaining[2].as_ref().unwrap();
    assert_eq!(recharged_value.balance, amount(1_700 - 50 - 75));
    assert_eq!(outcome.pending_loads, 0);
}

#[test]
fn a_mixed_batch_comes_out_the_same_on_sqlite_and_postgresql() {
    let on_sqlite = story(Storage::Memory);
    check(&on_sqlite);
    let Some(scratch) = scratch("usage") else {
        return;
    };
    let database = Database::connect_postgres(&scratch.url).unwrap();
    let on_postgres = story(Storage::on(database));
    check(&on_postgres);
    assert_eq!(on_sqlite, on_postgres);
}

#[test]
fn a_statement_prepared_in_a_rolled_back_transaction_still_runs() {
    let Some(scratch) = scratch("usage") else {
        return;
    };
    let mut database = Database::connect_postgres(&scratch.url).unwrap();
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records WHERE card_counter = $1";
    let failed: Result<(), CenterError> = database.transaction(|tx| {
        assert_eq!(tx.query_one(sql, &[7u32.into()])?.int(0)?, 0);
        Err(CenterError::Storage("given up on purpose".into()))
    });
    assert!(failed.is_err());
    assert_eq!(
        database
            .query_one(sql, &[7u32.into()])
            .unwrap()
            .int(0)
            .unwrap(),
        0
    );
    let inside = database
        .transaction(|tx| tx.query_one(sql, &[8u32.into()])?.int(0))
        .unwrap();
    assert_eq!(inside, 0);
}

#[test]
fn a_failed_statement_leaves_the_connection_usable() {
    let Some(scratch) = scratch("usage") else {
        return;
    };
    let mut database = Database::connect_postgres(&scratch.url).unwrap();
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records WHERE card_counter = $1";
    assert_eq!(
        database
            .query_one(sql, &[1u32.into()])
            .unwrap()
            .int(0)
            .unwrap(),
        0
    );
    // A statement that fails inside a transaction (the cache of prepared statements is
    // forgotten then), and one that fails on its own.
    let failed = database.transaction(|tx| {
        tx.query_one(sql, &[2u32.into()])?;
        tx.query_one("SELECT CAST(1 / $1 AS BIGINT)", &[0u32.into()])
    });
    assert!(matches!(failed, Err(CenterError::Storage(_))), "{failed:?}");
    assert!(database
        .query_one("SELECT CAST(1 / $1 AS BIGINT)", &[0u32.into()])
        .is_err());
    assert_eq!(
        database
            .query_one(sql, &[3u32.into()])
            .unwrap()
            .int(0)
            .unwrap(),
        0
    );
    let inside = database
        .transaction(|tx| tx.query_one(sql, &[4u32.into()])?.int(0))
        .unwrap();
    assert_eq!(inside, 0);
}
