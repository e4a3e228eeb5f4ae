//! Online payments and charges (seed 004) at the center: a certified security server reports
//! the records it wrote on cards; each is checked against the card's chain and counted once in
//! the one reconciliation; every forged or inconsistent record is refused with nothing stored;
//! a card state consumed online and elsewhere lists the card.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::online::{after, SecurityServer};
use common::*;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::online::OnlineItem;
use valuecard_core::messages::purse::TransactionKind;
use valuecard_sim::Storage;

fn remaining(center: &mut Center, card: &CardId) -> (u32, u64) {
    let value = center.remaining_value(card).unwrap().unwrap();
    (value.card_counter, value.balance.minor())
}

#[test]
fn online_payments_and_charges_count_once_in_the_one_reconciliation() {
    payments_and_charges(Scene::new(40));
}

#[test]
fn online_payments_and_charges_on_postgres() {
    let Some(scratch) = scratch::scratch("online") else {
        return;
    };
    let storage = Storage::Database(std::sync::Arc::new(std::sync::Mutex::new(Some(
        scratch.database(),
    ))));
    let mut scene = Scene::on(storage, 44);
    assert!(scene.center().database().is_postgres());
    payments_and_charges(scene);
}

fn payments_and_charges(mut scene: Scene) {
    let mut server = SecurityServer::certify(&mut scene.world.center, &mut scene.rng);
    let a = CardState::read(&mut scene.a);
    let before = scene.center().reconciliation().unwrap();
    assert_eq!(before.status(), ReconciliationStatus::Reconciled);

    let payment = server.update(&a, TransactionKind::OnlinePayment, 300);
    let item = SecurityServer::item(&a, 1, payment.clone());
    let receipt = scene
        .center()
        .store_online_records(server.id, std::slice::from_ref(&item))
        .unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert!(receipt.refused.is_empty() && receipt.clones_detected.is_empty());
    assert_eq!(remaining(scene.center(), &a.id), (2, 700));

    let paid = after(&a, &payment);
    let charge = server.update(&paid, TransactionKind::OnlineCharge, 500);
    let receipt = scene
        .center()
        .store_online_records(server.id, &[SecurityServer::item(&paid, 2, charge)])
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    assert_eq!(remaining(scene.center(), &a.id), (3, 1200));

    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(totals.online.spent, 300);
    assert_eq!(totals.online.payments, 1);
    assert_eq!(totals.online.charged, 500);
    assert_eq!(totals.online.charges, 1);
    assert_eq!(totals.difference(), 0);
    assert_eq!(totals.status(), ReconciliationStatus::Reconciled);
    assert_eq!(
        totals.expected_remaining(),
        before.expected_remaining() - 300 + 500
    );

    // Reported again (a lost answer): a duplicate, nothing counted twice.
    let receipt = scene
        .center()
        .store_online_records(server.id, &[item])
        .unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (0, 1), "{receipt:?}");
    assert_eq!(scene.center().reconciliation().unwrap(), totals);
}

#[test]
fn forged_or_inconsistent_online_records_are_refused_and_change_nothing() {
    let mut scene = Scene::new(41);
    let mut server = SecurityServer::certify(&mut scene.world.center, &mut scene.rng);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let genuine = server.update(&a, TransactionKind::OnlinePayment, 300);
    let stranger = SigningKeyPair::generate(&mut scene.rng);

    let mut cases: Vec<(&str, OnlineItem)> = Vec::new();
    let mut forged = genuine.clone();
    forged.signature = stranger.sign(&forged.signed_message(&a.id));
    cases.push(("signed by another key", SecurityServer::item(&a, 1, forged)));
    let mut raised = genuine.clone();
    raised.balance_after = amount(800);
    cases.push(("an altered balance", SecurityServer::item(&a, 1, raised)));
    let mut other_writer = genuine.clone();
    other_writer.writer = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 0x42]);
    cases.push(("another writer", SecurityServer::item(&a, 1, other_writer)));
    let mut unknown_card = SecurityServer::item(&a, 1, genuine.clone());
    unknown_card.card_id = CardId(*b"NOTACARD");
    cases.push(("a card the center did not issue", unknown_card));
    let mut no_previous = SecurityServer::item(&a, 1, genuine.clone());
    no_previous.previous = None;
    cases.push(("the previous record left out", no_previous));
    let mut other_card_previous = SecurityServer::item(&a, 1, genuine.clone());
    other_card_previous.previous = b.last.clone();
    cases.push(("another card's previous record", other_card_previous));
    let mut forged_previous = SecurityServer::item(&a, 1, genuine.clone());
    if let Some(previous) = forged_previous.previous.as_mut() {
        previous.signature = Signature([7; 64]);
    }
    cases.push(("a forged previous record", forged_previous));
    // Balances that do not follow from the previous record, correctly signed.
    let overdrawn = server.update(
        &CardState {
            balance: amount(5_000),
            ..a.clone()
        },
        TransactionKind::OnlinePayment,
        3_000,
    );
    cases.push((
        "more than the card held",
        SecurityServer::item(&a, 1, overdrawn),
    ));

    for (what, item) in cases {
        let before = scene.center().reconciliation().unwrap();
        let receipt = scene
            .center()
            .store_online_records(server.id, std::slice::from_ref(&item))
            .unwrap();
        assert_eq!(receipt.stored, 0, "{what}: {receipt:?}");
        assert_eq!(receipt.refused.len(), 1, "{what}: {receipt:?}");
        assert_eq!(scene.center().reconciliation().unwrap(), before, "{what}");
        assert_eq!(remaining(scene.center(), &a.id), (1, 1000), "{what}");
    }

    // A device that is not a security server cannot report online records at all.
    let terminal = scene.install(Role::PaymentTerminal);
    assert_eq!(
        scene
            .center()
            .store_online_records(terminal.id, &[SecurityServer::item(&a, 1, genuine.clone())]),
        Err(CenterError::NotAuthorized(terminal.id))
    );

    // The genuine record is stored; another record under its settlement is refused.
    let stored = scene
        .center()
        .store_online_records(server.id, &[SecurityServer::item(&a, 1, genuine.clone())])
        .unwrap();
    assert_eq!(stored.stored, 1);
    let paid = after(&a, &genuine);
    let next = server.update(&paid, TransactionKind::OnlinePayment, 100);
    let receipt = scene
        .center()
        .store_online_records(server.id, &[SecurityServer::item(&paid, 1, next)])
        .unwrap();
    assert_eq!(
        (receipt.stored, receipt.refused.len()),
        (0, 1),
        "{receipt:?}"
    );
}

#[test]
fn a_state_spent_online_and_at_a_terminal_lists_the_card() {
    let mut scene = Scene::new(42);
    let mut server = SecurityServer::certify(&mut scene.world.center, &mut scene.rng);
    let a = CardState::read(&mut scene.a);
    // A copy of A's memory spends the state at a payment terminal...
    let mut copy = scene.copy_of_a();
    scene.world.terminals[0]
        .purchase(&mut copy, amount(200))
        .unwrap();
    let receipt = scene.world.terminals[0]
        .upload_usage(&mut scene.world.center)
        .unwrap();
    assert_eq!(receipt.stored, 1);
    // ...and the original spends it online: the card is listed as cloned.
    let payment = server.update(&a, TransactionKind::OnlinePayment, 300);
    let receipt = scene
        .center()
        .store_online_records(server.id, &[SecurityServer::item(&a, 1, payment)])
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    assert_eq!(receipt.clones_detected, vec![a.id]);
    assert_eq!(scene.center().cloned_cards().unwrap(), vec![a.id]);
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(totals.status(), ReconciliationStatus::Excess);
}

#[test]
fn two_online_updates_of_one_state_list_the_card() {
    let mut scene = Scene::new(43);
    let mut server = SecurityServer::certify(&mut scene.world.center, &mut scene.rng);
    let b = CardState::read(&mut scene.b);
    // Two online records of one state, reported apart: the second lists the card.
    let first = server.update(&b, TransactionKind::OnlinePayment, 100);
    let second = server.update(&b, TransactionKind::OnlinePayment, 150);
    let receipt = scene
        .center()
        .store_online_records(server.id, &[SecurityServer::item(&b, 1, first)])
        .unwrap();
    assert!(receipt.clones_detected.is_empty());
    let receipt = scene
        .center()
        .store_online_records(server.id, &[SecurityServer::item(&b, 2, second)])
        .unwrap();
    assert_eq!(receipt.stored, 1);
    assert_eq!(receipt.clones_detected, vec![b.id]);
}
