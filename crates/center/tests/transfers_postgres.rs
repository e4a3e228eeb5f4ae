//! Transfer-key rotation and transfer reports on PostgreSQL: the same statements as on
//! SQLite, checked against a real server. Needs one (`VALUECARD_POSTGRES_URL`, default the
//! local one with trust authentication); without one the test says SKIPPED and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_center::transfers::TRANSFER_HOLD_DAYS;
use valuecard_core::cert::Role;
use valuecard_core::messages::transfer::{TransferLink, TransferReport, TransferUpload};
use valuecard_sim::Storage;

fn send(scene: &mut Scene, terminal: &Device, reports: Vec<TransferReport>) -> (u32, u32) {
    let receipt = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports,
        })
        .unwrap();
    assert!(receipt.refused.is_empty(), "{receipt:?}");
    (receipt.stored, receipt.duplicates)
}

#[test]
fn rotation_reports_merging_clones_and_reconciliation_on_postgres() {
    let Some(scratch) = scratch::scratch("transfer") else {
        return;
    };
    let storage = Storage::Database(std::sync::Arc::new(std::sync::Mutex::new(Some(
        scratch.database(),
    ))));
    let mut scene = Scene::on(storage, 30);
    assert!(scene.center().database().is_postgres());
    let mut first = scene.install(Role::SettlementTerminal);
    let mut second = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();

    // One transfer completed, reported twice.
    let done = scene.completed(&mut first, &a, &b, amount(300), &key);
    assert_eq!(send(&mut scene, &first, vec![done.clone()]), (1, 0));
    assert_eq!(send(&mut scene, &first, vec![done.clone()]), (0, 1));
    let a = after_source(&a, &done);
    let b = after_destination(&b, &done);

    // One received at the first terminal, completed at the second after the hold period.
    let received = scene.received(&mut first, &b, &a, amount(50), &key);
    assert_eq!(send(&mut scene, &first, vec![received.clone()]), (1, 0));
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(totals.status(), ReconciliationStatus::LoadsInFlight);
    assert_eq!(totals.transfers.in_flight, 50);
    scene.world.pass_days(TRANSFER_HOLD_DAYS + 1);
    assert_eq!(scene.center().sweep_unsettled_transfers().unwrap(), 1);
    let mut completion = scene.completed(&mut second, &b, &a, amount(50), &key);
    completion.challenge_source = received.challenge_source;
    completion.value = None;
    completion.proof = received.proof.clone();
    completion.destination_record = None;
    completion.destination_previous = None;
    let record = completion.source_record.as_mut().unwrap();
    record.challenge_card = received.challenge_source;
    record.signature = second.key.sign(&record.signed_message(&b.id));
    assert_eq!(send(&mut scene, &second, vec![completion.clone()]), (1, 0));
    let b = after_source(&b, &completion);
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(
        totals.status(),
        ReconciliationStatus::Reconciled,
        "{totals:?}"
    );
    assert_eq!(
        (totals.transfers.completed, totals.transfers.completed_count),
        (350, 2)
    );
    assert_eq!(totals.remaining, 1500);

    // The state A's first transfer consumed, consumed again by another transfer: a clone.
    let a_before = CardState::read(&mut scene.a);
    let twice = scene.completed(&mut first, &a_before, &b, amount(10), &key);
    let receipt = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: first.id,
            reports: vec![twice],
        })
        .unwrap();
    assert_eq!(receipt.clones_detected, vec![a.id], "{receipt:?}");

    // Rotation on PostgreSQL, and the history.
    assert_eq!(scene.center().rotate_transfer_key().unwrap(), 2);
    assert_eq!(scene.center().rotate_update_key().unwrap(), 2);
    assert_eq!(scene.center().key_rotations().unwrap().len(), 2);
    assert_eq!(scene.center().transfer_key_set().unwrap().limit, 3);
    // The physical card B never ran these transfers: it still offers the state the first
    // transfer consumed, so a load from it is a copy's, refused and listed.
    assert!(scene.world.load(&mut scene.b, amount(5)).is_err());
    let cloned = scene.center().cloned_cards().unwrap();
    assert!(cloned.contains(&b.id), "{cloned:?}");
}

#[test]
fn releases_their_rule_totals_and_contradiction_on_postgres() {
    use valuecard_center::transfers::RELEASE_HOLD_DAYS;
    use valuecard_core::ids::CardId;
    use valuecard_core::messages::center::{CenterError, ListReason};
    use valuecard_core::messages::transfer::PendingTransfer;

    let Some(scratch) = scratch::scratch("transfer") else {
        return;
    };
    let storage = Storage::Database(std::sync::Arc::new(std::sync::Mutex::new(Some(
        scratch.database(),
    ))));
    let mut scene = Scene::on(storage, 31);
    assert!(scene.center().database().is_postgres());
    let mut terminal = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();

    // Toward a made-up card: released, twice the same, counted undone once.
    let made_up = PendingTransfer {
        destination: CardId(*b"NOBODY01"),
        destination_counter: 0,
        challenge_source: [0x42; 16],
        amount: amount(75),
        key_id: key.id,
    };
    let release = scene
        .center()
        .authorize_transfer_release(a.id, &made_up)
        .unwrap();
    assert_eq!(
        scene
            .center()
            .authorize_transfer_release(a.id, &made_up)
            .unwrap(),
        release
    );
    // Toward B, which received it on a terminal that has not uploaded yet.
    let late = scene.received(&mut terminal, &a, &b, amount(40), &key);
    let toward_b = PendingTransfer {
        destination: b.id,
        destination_counter: late.destination_counter,
        challenge_source: late.challenge_source,
        amount: late.amount,
        key_id: key.id,
    };
    assert!(matches!(
        scene.center().authorize_transfer_release(a.id, &toward_b),
        Err(CenterError::Mismatch(_))
    ));
    scene.center().report_card(&b.id, ListReason::Lost).unwrap();
    scene.world.pass_days(RELEASE_HOLD_DAYS);
    scene
        .center()
        .authorize_transfer_release(a.id, &toward_b)
        .unwrap();
    let totals = scene.center().transfer_totals().unwrap();
    assert_eq!((totals.undone, totals.undone_count), (115, 2));
    // The late report contradicts the second release: stored, alerted, counted received.
    assert_eq!(send(&mut scene, &terminal, vec![late]), (1, 0));
    let totals = scene.center().transfer_totals().unwrap();
    assert_eq!((totals.undone, totals.received), (75, 40));
    assert!(scene
        .center()
        .alerts_for(&b.id.0)
        .unwrap()
        .iter()
        .any(|alert| alert.kind == "transfer-contradiction"));
}
