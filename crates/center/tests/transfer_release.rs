//! The center's release of a transfer whose destination will never come back
//! (`transfers/release.rs`): each clause of the rule, the record of each release and its
//! place in the totals, and the alert when a proof of receipt arrives after a release.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_center::transfers::RELEASE_HOLD_DAYS;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::messages::transfer::{
    PendingTransfer, TransferLink, TransferReport, TransferUpload,
};

const NOBODY: CardId = CardId(*b"NOBODY01");

fn pending_of(report: &TransferReport) -> PendingTransfer {
    PendingTransfer {
        destination: report.destination,
        destination_counter: report.destination_counter,
        challenge_source: report.challenge_source,
        amount: report.amount,
        key_id: report.value.as_ref().unwrap().value.key_id,
    }
}

fn refusal(result: Result<impl std::fmt::Debug, CenterError>) -> String {
    match result {
        Err(CenterError::Mismatch(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn contradictions(scene: &mut Scene, card: &CardId) -> usize {
    scene
        .center()
        .alerts_for(&card.0)
        .unwrap()
        .iter()
        .filter(|alert| alert.kind == "transfer-contradiction")
        .count()
}

#[test]
fn the_source_must_be_an_issued_card_that_is_not_listed() {
    let mut scene = Scene::new(81);
    let a = CardState::read(&mut scene.a).id;
    let pending = PendingTransfer {
        destination: NOBODY,
        destination_counter: 0,
        challenge_source: random_array(&mut scene.rng),
        amount: amount(100),
        key_id: 1,
    };
    assert!(matches!(
        scene
            .center()
            .authorize_transfer_release(CardId(*b"UNKNOWN1"), &pending),
        Err(CenterError::UnknownCard(_))
    ));
    // To itself, or of nothing: not a transfer any card holds.
    let mut to_itself = pending.clone();
    to_itself.destination = a;
    refusal(scene.center().authorize_transfer_release(a, &to_itself));
    scene.center().report_card(&a, ListReason::Stolen).unwrap();
    let reason = refusal(scene.center().authorize_transfer_release(a, &pending));
    assert!(reason.contains("listed"), "{reason}");
    assert_eq!(scene.center().transfer_totals().unwrap().undone_count, 0);
}

#[test]
fn a_made_up_destination_is_released_once_and_counted_as_undone() {
    let mut scene = Scene::new(82);
    let a = CardState::read(&mut scene.a).id;
    let pending = PendingTransfer {
        destination: NOBODY,
        destination_counter: 7,
        challenge_source: random_array(&mut scene.rng),
        amount: amount(300),
        key_id: 1,
    };
    let before = scene.center().reconciliation().unwrap();
    let release = scene
        .center()
        .authorize_transfer_release(a, &pending)
        .unwrap();
    let root = scene.center().anchor().public_key;
    release.verify(&root, &a, &pending).unwrap();
    // The same transfer with other terms is refused; the same terms give the same release.
    let mut other = pending.clone();
    other.amount = amount(301);
    let reason = refusal(scene.center().authorize_transfer_release(a, &other));
    assert!(reason.contains("other terms"), "{reason}");
    assert_eq!(
        scene
            .center()
            .authorize_transfer_release(a, &pending)
            .unwrap(),
        release
    );
    let after = scene.center().reconciliation().unwrap();
    assert_eq!(
        (after.transfers.undone, after.transfers.undone_count),
        (300, 1)
    );
    assert_eq!(after.transfers.in_doubt_count, 0);
    // Nothing moved: the equation and its status are those of before.
    assert_eq!(after.difference(), before.difference());
    assert_eq!(after.status(), before.status());
}

#[test]
fn a_listed_destination_is_released_only_after_the_hold() {
    let mut scene = Scene::new(83);
    let source = CardState::read(&mut scene.a);
    let destination = CardState::read(&mut scene.b);
    let key = scene.key();
    let mut terminal = scene.install(Role::SettlementTerminal);
    // The destination's half exists only on a terminal that never uploads it.
    let report = scene.received(&mut terminal, &source, &destination, amount(200), &key);
    let pending = pending_of(&report);
    scene
        .center()
        .report_card(&destination.id, ListReason::Cloned)
        .unwrap();
    let reason = refusal(
        scene
            .center()
            .authorize_transfer_release(source.id, &pending),
    );
    assert!(reason.contains("listed as cloned"), "{reason}");
    scene.world.pass_days(RELEASE_HOLD_DAYS - 1);
    refusal(
        scene
            .center()
            .authorize_transfer_release(source.id, &pending),
    );
    scene.world.pass_days(1);
    scene
        .center()
        .authorize_transfer_release(source.id, &pending)
        .unwrap();
    assert_eq!(contradictions(&mut scene, &destination.id), 0);

    // The late upload proves the destination received it: stored as evidence, the totals
    // say received (not undone), and the center raises the contradiction once.
    let receipt = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports: vec![report.clone()],
        })
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let totals = scene.center().transfer_totals().unwrap();
    assert_eq!(
        (totals.received, totals.undone, totals.undone_count),
        (200, 0, 0)
    );
    assert_eq!(contradictions(&mut scene, &destination.id), 1);
    // A retry of the upload is a duplicate and raises nothing more.
    let again = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports: vec![report],
        })
        .unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(contradictions(&mut scene, &destination.id), 1);
}

#[test]
fn a_stored_proof_of_receipt_or_other_terms_refuse_the_release() {
    let mut scene = Scene::new(84);
    let source = CardState::read(&mut scene.a);
    let destination = CardState::read(&mut scene.b);
    let key = scene.key();
    let mut terminal = scene.install(Role::SettlementTerminal);
    let report = scene.received(&mut terminal, &source, &destination, amount(200), &key);
    let pending = pending_of(&report);
    let receipt = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports: vec![report],
        })
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    scene
        .center()
        .report_card(&destination.id, ListReason::Lost)
        .unwrap();
    scene.world.pass_days(RELEASE_HOLD_DAYS);
    let reason = refusal(
        scene
            .center()
            .authorize_transfer_release(source.id, &pending),
    );
    assert!(reason.contains("received"), "{reason}");
    // The same transfer named with another amount: refused before anything else.
    let mut other = pending.clone();
    other.amount = amount(150);
    let reason = refusal(scene.center().authorize_transfer_release(source.id, &other));
    assert!(reason.contains("other terms"), "{reason}");
    let totals = scene.center().transfer_totals().unwrap();
    assert_eq!((totals.undone_count, totals.in_flight), (0, 200));
}

#[test]
fn a_report_may_carry_only_a_release_the_center_gave() {
    let mut scene = Scene::new(85);
    let a = CardState::read(&mut scene.a).id;
    let mut terminal = scene.install(Role::SettlementTerminal);
    let pending = PendingTransfer {
        destination: NOBODY,
        destination_counter: 2,
        challenge_source: random_array(&mut scene.rng),
        amount: amount(50),
        key_id: 1,
    };
    let release = scene
        .center()
        .authorize_transfer_release(a, &pending)
        .unwrap();
    let report = |sequence, release| TransferReport {
        sequence,
        source: a,
        destination: NOBODY,
        challenge_source: pending.challenge_source,
        amount: pending.amount,
        destination_counter: pending.destination_counter,
        value: None,
        proof: None,
        destination_record: None,
        destination_previous: None,
        source_record: None,
        source_previous: None,
        release: Some(release),
    };
    let mut forged = release.clone();
    forged.signature.0[0] ^= 1;
    let mut elsewhere = report(terminal.next_sequence(), release.clone());
    elsewhere.destination_counter += 1;
    let good = report(terminal.next_sequence(), release.clone());
    let forged = report(terminal.next_sequence(), forged);
    let receipt = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports: vec![elsewhere, good, forged],
        })
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    assert_eq!(receipt.refused.len(), 2, "{receipt:?}");
    assert!(receipt
        .refused
        .iter()
        .all(|(_, reason)| reason.contains("never gave")));
    // Stored, it is still one undone transfer, not two and not in doubt.
    let totals = scene.center().transfer_totals().unwrap();
    assert_eq!(
        (totals.undone, totals.undone_count, totals.in_doubt_count),
        (50, 1, 0)
    );
}

#[test]
fn a_release_and_a_proof_of_non_receipt_in_one_report_agree() {
    use valuecard_core::messages::transfer::{ProofStatus, ProofSubject, TransferProof};
    let mut scene = Scene::new(86);
    let source = CardState::read(&mut scene.a);
    let destination = CardState::read(&mut scene.b);
    let key = scene.key();
    let mut terminal = scene.install(Role::SettlementTerminal);
    let mut report = scene.received(&mut terminal, &source, &destination, amount(120), &key);
    let pending = pending_of(&report);
    scene
        .center()
        .report_card(&destination.id, ListReason::Lost)
        .unwrap();
    scene.world.pass_days(RELEASE_HOLD_DAYS);
    let release = scene
        .center()
        .authorize_transfer_release(source.id, &pending)
        .unwrap();
    // The terminal kept the release, then the destination came back and proved it never
    // applied the transfer.
    report.destination_record = None;
    report.destination_previous = None;
    report.proof = Some(TransferProof::make(
        ProofStatus::NotReceived,
        &key,
        report.destination_counter,
        &ProofSubject {
            source: source.id,
            challenge_source: report.challenge_source,
            destination: destination.id,
            amount: amount(0),
        },
    ));
    report.release = Some(release);
    let receipt = scene
        .center()
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports: vec![report],
        })
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let totals = scene.center().transfer_totals().unwrap();
    // One undone transfer, counted once (by its proof, not again by its release).
    assert_eq!(
        (totals.undone, totals.undone_count, totals.in_doubt_count),
        (120, 1, 0)
    );
    assert_eq!(contradictions(&mut scene, &destination.id), 0);
}
