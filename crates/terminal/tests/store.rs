//! Both terminal stores keep exactly what they are given, through a reopen for SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_core::crypto::Signature;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{ListDelta, ListEntry, ListReason};
use valuecard_core::messages::purse::{TerminalStamp, TransactionKind, UsageRecord};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_terminal::store::{
    MemoryStore, PurchaseRecord, PurchaseStatus, SqliteStore, TerminalStore,
};

fn record(sequence: u32) -> PurchaseRecord {
    let stamp = TerminalStamp {
        count: 4,
        signature: Signature([7; 64]),
    };
    PurchaseRecord {
        sequence,
        card_id: CardId([1; 8]),
        card_counter: 5,
        amount: Amount::new(250).unwrap(),
        balance_before: Amount::new(1_000).unwrap(),
        balance_after: Amount::new(750).unwrap(),
        challenge_terminal: [2; 16],
        challenge_card: [sequence as u8; 16],
        date: Date(20_500),
        status: PurchaseStatus::InDoubt,
        previous_usage: Some(UsageRecord {
            kind: TransactionKind::Purchase,
            counter: 5,
            challenge_writer: [4; 16],
            challenge_card: [5; 16],
            amount: Amount::new(10).unwrap(),
            balance_after: Amount::new(1_000).unwrap(),
            writer: DeviceId([6; 8]),
            writer_sequence: 9,
            date: Date(20_499),
            signature: Signature([8; 64]),
            stamp: Some(stamp),
        }),
        terminal_signature: Signature([9; 64]),
        stamp,
        uploaded: false,
        amount_max: Amount::new(300).unwrap(),
        card_signature: Some(Signature([3; 64])),
    }
}

fn exercise(store: &mut dyn TerminalStore) {
    let first = store.next_sequence().unwrap();
    let second = store.next_sequence().unwrap();
    assert!(second > first);
    store.record(&record(first)).unwrap();
    store.record(&record(second)).unwrap();
    assert_eq!(
        store.in_doubt_for_card(&CardId([1; 8])).unwrap(),
        vec![record(first), record(second)]
    );
    store.set_status(first, PurchaseStatus::Committed).unwrap();
    store.set_status(second, PurchaseStatus::Cancelled).unwrap();
    assert!(store.set_status(999, PurchaseStatus::Committed).is_err());
    let pending = store.pending_uploads(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].sequence, first);
    store.mark_uploaded(&[first]).unwrap();
    assert!(store.pending_uploads(10).unwrap().is_empty());
    let totals = store.totals().unwrap();
    assert_eq!(
        (
            totals.committed_count,
            totals.committed_minor,
            totals.in_doubt_count
        ),
        (1, 250, 0)
    );
    let mut lists = store.lists().unwrap();
    lists.apply(&ListDelta {
        version: 2,
        entries: vec![
            ListEntry::Card {
                version: 1,
                card_id: CardId([1; 8]),
                reason: ListReason::Lost,
            },
            ListEntry::Terminal {
                version: 2,
                device_id: DeviceId([6; 8]),
                first_stamp: [1; 32],
                stamp_count: 3,
            },
        ],
    });
    store.save_lists(&lists).unwrap();
    assert_eq!(store.lists().unwrap(), lists);
}

#[test]
fn memory_store_keeps_what_it_is_given() {
    exercise(&mut MemoryStore::default());
}

#[test]
fn sqlite_store_keeps_what_it_is_given_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("purchases.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    exercise(&mut store);
    let before = store.records().unwrap();
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.records().unwrap(), before);
    assert_eq!(reopened.lists().unwrap().version, 2);
}

#[test]
fn a_forgetting_memory_store_drops_what_needs_no_more_work_and_keeps_its_totals() {
    let mut store = MemoryStore::forgetting_acknowledged();
    for sequence in 1..=4 {
        store.record(&record(sequence)).unwrap();
    }
    store.set_status(1, PurchaseStatus::Committed).unwrap();
    store.set_status(2, PurchaseStatus::Committed).unwrap();
    store.set_status(3, PurchaseStatus::Cancelled).unwrap();
    let before = store.totals().unwrap();
    assert_eq!((before.committed_count, before.committed_minor), (2, 500));
    assert_eq!((before.in_doubt_count, before.in_doubt_minor), (1, 250));

    // Purchase 1 acknowledged: it and the cancelled one go; the totals stay.
    store.mark_uploaded(&[1]).unwrap();
    assert_eq!(store.held(), 2);
    assert_eq!(store.totals().unwrap(), before);
    let pending: Vec<u32> = store
        .pending_uploads(10)
        .unwrap()
        .iter()
        .map(|record| record.sequence)
        .collect();
    assert_eq!(pending, vec![2]);
    assert_eq!(store.in_doubt_for_card(&CardId([1; 8])).unwrap().len(), 1);

    // A plain memory store keeps everything.
    let mut keeping = MemoryStore::default();
    keeping.record(&record(1)).unwrap();
    keeping.set_status(1, PurchaseStatus::Committed).unwrap();
    keeping.mark_uploaded(&[1]).unwrap();
    assert_eq!(keeping.held(), 1);
}
