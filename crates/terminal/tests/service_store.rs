//! Both terminal stores keep credit service records (Fig. 17) exactly, through a reopen for
//! SQLite, and hand the signed ones out for upload once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_core::crypto::Signature;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_terminal::store::{
    MemoryStore, ServiceEntry, ServiceStatus, SqliteStore, TerminalStore,
};

fn entry(sequence: u32, card: u8) -> ServiceEntry {
    ServiceEntry {
        sequence,
        card_id: CardId([card; 8]),
        amount: Amount::new(120 + u64::from(sequence)).unwrap(),
        date: Date(20_600),
        service_number: sequence,
        status: ServiceStatus::InDoubt,
        card_signature: None,
        uploaded: false,
    }
}

fn exercise(store: &mut dyn TerminalStore) {
    let first = store.next_sequence().unwrap();
    let second = store.next_sequence().unwrap();
    let third = store.next_sequence().unwrap();
    for (sequence, card) in [(first, 1), (second, 1), (third, 2)] {
        store.record_service(&entry(sequence, card)).unwrap();
    }
    assert!(store.record_service(&entry(first, 1)).is_err());
    assert_eq!(
        store.services_in_doubt_for_card(&CardId([1; 8])).unwrap(),
        vec![entry(first, 1), entry(second, 1)]
    );
    store
        .settle_service(first, Some(Signature([5; 64])))
        .unwrap();
    store.settle_service(second, None).unwrap();
    store
        .settle_service(third, Some(Signature([6; 64])))
        .unwrap();
    assert!(store.settle_service(999, None).is_err());
    let pending = store.pending_service_uploads(10).unwrap();
    assert_eq!(
        pending.iter().map(|s| s.sequence).collect::<Vec<_>>(),
        vec![first, third]
    );
    let record = pending[0].record(DeviceId([9; 8])).unwrap();
    assert_eq!(
        (record.terminal_sequence, record.card_signature),
        (first, Signature([5; 64]))
    );
    assert!(entry(second, 1).record(DeviceId([9; 8])).is_none());
    store.mark_services_uploaded(&[first]).unwrap();
    assert_eq!(store.pending_service_uploads(10).unwrap().len(), 1);
    let statuses: Vec<_> = store.services().unwrap().iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        vec![
            ServiceStatus::Signed,
            ServiceStatus::Cancelled,
            ServiceStatus::Signed
        ]
    );
}

#[test]
fn memory_store_keeps_service_records() {
    exercise(&mut MemoryStore::default());
}

#[test]
fn sqlite_store_keeps_service_records_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("purchases.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    exercise(&mut store);
    let before = store.services().unwrap();
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.services().unwrap(), before);
    assert_eq!(reopened.pending_service_uploads(10).unwrap().len(), 1);
}
