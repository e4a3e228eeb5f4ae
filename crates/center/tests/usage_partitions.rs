//! Usage records by month: on PostgreSQL each record lands in its month's partition (made
//! on demand, or ahead), a month without one falls into the DEFAULT partition until one is
//! made, and a card state spent in one month and again in another is a clone on both
//! databases. PostgreSQL needs a server (`VALUECARD_POSTGRES_URL`, default the local one
//! with trust authentication); without one that half says SKIPPED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

mod usage_world;

use rand_core::SeedableRng;
use usage_world::{amount, card, copy_of, scratch, upload};
use valuecard_center::sql::{Database, Executor};
use valuecard_center::usage::partitions::{ensure_partitions, Month};
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{UploadReceipt, UsageItem};
use valuecard_core::time::Date;
use valuecard_sim::{Storage, World, WorldRng};
use valuecard_terminal::payment::usage_item;

/// Purchases in June, July and September 2026; in July a copy of a card spends the state
/// the card itself spent in June. Everything is uploaded in September, in one batch, and
/// once more (all duplicates). Returns the world, the receipts and the cloned card.
fn story(storage: Storage) -> (World, Vec<UploadReceipt>, CardId) {
    let june = Date::from_ymd(2026, 6, 20).unwrap();
    let mut world = World::create_seeded(storage, 1, june, WorldRng::seed_from_u64(9)).unwrap();
    let (mut plain, _, _) = card(&mut world, "plain", 5_000);
    let (mut cloned, memory, cloned_id) = card(&mut world, "cloned", 5_000);
    let mut copy = copy_of(&mut world, &memory);
    let shop = 0;
    world.terminals[shop]
        .purchase(&mut plain, amount(100))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut cloned, amount(200))
        .unwrap();
    world.pass_days(15);
    world.terminals[shop]
        .purchase(&mut plain, amount(300))
        .unwrap();
    world.terminals[shop]
        .purchase(&mut copy, amount(400))
        .unwrap();
    world.pass_days(60);
    assert_eq!(Month::of(world.today()).month, 9);
    world.terminals[shop]
        .purchase(&mut plain, amount(500))
        .unwrap();
    let pending = world.terminals[shop].store().pending_uploads(100).unwrap();
    let items: Vec<UsageItem> = pending.iter().filter_map(usage_item).collect();
    assert_eq!(items.len(), 5);
    let receipts = vec![upload(&mut world, items.clone()), upload(&mut world, items)];
    (world, receipts, cloned_id)
}

fn check_receipts(receipts: &[UploadReceipt], cloned: CardId) {
    assert_eq!((receipts[0].stored, receipts[0].duplicates), (5, 0));
    assert!(receipts[0].refused.is_empty(), "{receipts:?}");
    assert_eq!(receipts[0].clones_detected, vec![cloned]);
    assert_eq!((receipts[1].stored, receipts[1].duplicates), (0, 5));
    assert!(receipts[1].clones_detected.is_empty());
}

fn count(db: &mut Database, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().int(0).unwrap()
}

/// (partition, purchase date) of every stored record.
fn placement(db: &mut Database) -> Vec<(String, u32)> {
    db.query(
        "SELECT CAST(CAST(tableoid AS regclass) AS TEXT), purchase_date FROM usage_records
         ORDER BY purchase_date",
        &[],
    )
    .unwrap()
    .iter()
    .map(|row| {
        (
            row.text(0).unwrap(),
            u32::try_from(row.int(1).unwrap()).unwrap(),
        )
    })
    .collect()
}

#[test]
fn a_state_spent_in_two_months_is_a_clone_on_sqlite() {
    let (mut world, receipts, cloned) = story(Storage::Memory);
    check_receipts(&receipts, cloned);
    assert_eq!(world.center.cloned_cards().unwrap(), vec![cloned]);
    assert_eq!(world.center.reported_spending().unwrap(), (1_500, 5));
}

#[test]
fn records_land_in_their_months_partitions_on_postgresql() {
    let Some(scratch) = scratch("partition") else {
        return;
    };
    let database = Database::connect_postgres(&scratch.url).unwrap();
    let (mut world, receipts, cloned) = story(Storage::on(database));
    check_receipts(&receipts, cloned);
    assert_eq!(world.center.cloned_cards().unwrap(), vec![cloned]);
    assert_eq!(world.center.reported_spending().unwrap(), (1_500, 5));
    drop(world);

    let mut db = Database::connect_postgres(&scratch.url).unwrap();
    let placed = placement(&mut db);
    assert_eq!(placed.len(), 5);
    for (partition, date) in &placed {
        assert_eq!(*partition, Month::of(Date(*date)).partition(), "{placed:?}");
    }
    let months: BTreeSet<String> = placed.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        months,
        BTreeSet::from([
            "usage_records_y2026m06".to_owned(),
            "usage_records_y2026m07".to_owned(),
            "usage_records_y2026m09".to_owned(),
        ])
    );
    // The months after the current one were made ahead, August was never needed.
    let partitions: BTreeSet<String> = db
        .query(
            "SELECT CAST(c.relname AS TEXT) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = CAST('usage_records' AS regclass)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.text(0).unwrap())
        .collect();
    for made in [
        "usage_records_y2026m10",
        "usage_records_y2026m11",
        "usage_records_default",
    ] {
        assert!(partitions.contains(made), "{partitions:?}");
    }
    assert!(
        !partitions.contains("usage_records_y2026m08"),
        "{partitions:?}"
    );
    // One first record per state: the clone's July record is stored, its state's first
    // record stays the June one.
    assert_eq!(
        count(&mut db, "SELECT CAST(COUNT(*) AS BIGINT) FROM card_states"),
        4
    );
    let first = db
        .query_one(
            "SELECT purchase_date FROM card_states WHERE card_id = $1",
            &[cloned.0[..].into()],
        )
        .unwrap()
        .int(0)
        .unwrap();
    assert_eq!(Month::of(Date(first as u32)).month, 6);

    // A record of a month without a partition waits in the default one, and moves to its
    // month's partition when that is made.
    let far = Date::from_ymd(2031, 1, 15).unwrap();
    db.execute(
        "INSERT INTO usage_records (card_id, card_counter, terminal_id, terminal_sequence,
             amount_minor, balance_after_minor, usage_digest, purchase_date,
             terminal_signature, previous_writer, card_signature)
         VALUES ($1, 1, $2, 999, 1, 0, $3, $4, $5, $2, NULL)",
        &[
            [7u8; 8][..].into(),
            [8u8; 8][..].into(),
            [0u8; 32][..].into(),
            far.0.into(),
            [0u8; 64][..].into(),
        ],
    )
    .unwrap();
    let in_default = |db: &mut Database| {
        count(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records_default",
        )
    };
    assert_eq!(in_default(&mut db), 1);
    let month = Month::of(far);
    assert_eq!(
        ensure_partitions(&mut db, &BTreeSet::from([month])).unwrap(),
        1
    );
    assert_eq!(in_default(&mut db), 0);
    assert_eq!(
        count(
            &mut db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records_y2031m01"
        ),
        1
    );
    assert_eq!(
        ensure_partitions(&mut db, &BTreeSet::from([month])).unwrap(),
        0,
        "a partition is made once"
    );
    drop(db);
}
