//! Settlement terminals' transfer reports at the center (seed 000): accepted when every
//! signature, MAC and value message checks out; each forged field refused with nothing
//! stored; a retry is a duplicate; halves merge across terminals; a state consumed by a
//! transfer and a purchase lists the card; reconciliation and the alerts of what cannot be
//! prevented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::SeedableRng;
use valuecard_center::reconcile::{Reconciliation, ReconciliationStatus};
use valuecard_center::transfers::TRANSFER_HOLD_DAYS;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{CenterError, UploadReceipt};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::messages::transfer::{
    ProofStatus, ProofSubject, TransferBinding, TransferLink, TransferProof, TransferReport,
    TransferUpload, ValueMessage,
};

fn upload(center: &mut Center, terminal: &Device, reports: Vec<TransferReport>) -> UploadReceipt {
    center
        .upload_transfers(&TransferUpload {
            terminal_id: terminal.id,
            reports,
        })
        .unwrap()
}

/// Everything a refused report must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Books {
    reconciliation: Reconciliation,
    remaining: Vec<Option<(u32, u64)>>,
    alerts: usize,
    cloned: Vec<CardId>,
}

fn books(center: &mut Center, cards: &[CardId]) -> Books {
    Books {
        reconciliation: center.reconciliation().unwrap(),
        remaining: cards
            .iter()
            .map(|card| {
                center
                    .remaining_value(card)
                    .unwrap()
                    .map(|r| (r.card_counter, r.balance.minor()))
            })
            .collect(),
        alerts: center.alerts().unwrap().len(),
        cloned: center.cloned_cards().unwrap(),
    }
}

#[test]
fn a_completed_transfer_moves_value_and_a_retry_is_a_duplicate() {
    let mut scene = Scene::new(10);
    let mut terminal = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();
    let report = scene.completed(&mut terminal, &a, &b, amount(300), &key);

    let receipt = upload(scene.center(), &terminal, vec![report.clone()]);
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert!(receipt.refused.is_empty() && receipt.clones_detected.is_empty());
    let center = scene.center();
    let a_after = center.remaining_value(&a.id).unwrap().unwrap();
    let b_after = center.remaining_value(&b.id).unwrap().unwrap();
    assert_eq!(
        (a_after.card_counter, a_after.balance.minor()),
        (a.counter + 1, 700)
    );
    assert_eq!(
        (b_after.card_counter, b_after.balance.minor()),
        (b.counter + 1, 800)
    );
    let totals = center.reconciliation().unwrap();
    assert_eq!(
        totals.status(),
        ReconciliationStatus::Reconciled,
        "{totals:?}"
    );
    assert_eq!((totals.issued, totals.remaining), (1500, 1500));
    assert_eq!(
        (totals.transfers.completed, totals.transfers.completed_count),
        (300, 1)
    );
    assert_eq!(totals.transfers.received, 300);
    assert_eq!(totals.transfers.in_flight_count, 0);
    assert!(center.alerts().unwrap().is_empty());

    // The same report again: recognized, not a second transfer.
    let before = books(center, &[a.id, b.id]);
    let again = upload(center, &terminal, vec![report.clone()]);
    assert_eq!((again.stored, again.duplicates), (0, 1), "{again:?}");
    assert_eq!(books(center, &[a.id, b.id]), before);
    // Another report under the same sequence is refused.
    let mut other = report;
    other.destination_previous = None;
    other.destination_record = None;
    let conflict = upload(center, &terminal, vec![other]);
    assert_eq!((conflict.stored, conflict.refused.len()), (0, 1));
    assert_eq!(books(center, &[a.id, b.id]), before);
}

/// One way of forging a report, and the check that must catch it.
type Forgery = fn(&mut TransferReport, &mut Scene, &mut Device);

#[test]
fn each_forged_field_is_refused_and_nothing_is_stored() {
    let mut scene = Scene::new(11);
    let mut terminal = scene.install(Role::SettlementTerminal);
    let mut payment = scene.install(Role::PaymentTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();
    let cards = [a.id, b.id];
    let before = books(scene.center(), &cards);

    let forgeries: Vec<(&str, &str, Forgery)> = vec![
        (
            "terminal signature over the destination's record",
            "signature over a transfer record",
            |r, _, _| {
                r.destination_record.as_mut().unwrap().signature.0[0] ^= 1;
            },
        ),
        (
            "terminal signature over the source's record",
            "signature over a transfer record",
            |r, _, _| {
                r.source_record.as_mut().unwrap().signature.0[5] ^= 1;
            },
        ),
        (
            "value message carrying another amount",
            "carries another amount",
            |r, scene, _| {
                let key = scene.key();
                let evidence = r.value.as_mut().unwrap();
                evidence.value = ValueMessage::seal(&key, &evidence.binding, amount(3000));
            },
        ),
        (
            "amount raised everywhere but the value message",
            "carries another amount",
            |r, _, _| {
                r.amount = amount(301);
            },
        ),
        ("forged proof MAC", "proof does not verify", |r, _, _| {
            r.proof.as_mut().unwrap().mac[3] ^= 0x80;
        }),
        (
            "proof of receipt for another amount",
            "proof does not verify",
            |r, scene, _| {
                let key = scene.key();
                let proof = r.proof.as_mut().unwrap();
                *proof = TransferProof::make(
                    ProofStatus::Received,
                    &key,
                    proof.destination_counter,
                    &ProofSubject {
                        source: r.source,
                        challenge_source: r.challenge_source,
                        destination: r.destination,
                        amount: amount(30),
                    },
                );
            },
        ),
        (
            "value message for another destination",
            "does not open",
            |r, scene, _| {
                let key = scene.key();
                let evidence = r.value.as_mut().unwrap();
                let elsewhere = TransferBinding {
                    destination: CardId([0xC0, 0, 0, 0, 0, 0, 0, 0x77]),
                    ..evidence.binding.clone()
                };
                evidence.value = ValueMessage::seal(&key, &elsewhere, r.amount);
            },
        ),
        (
            "value message under a generation never issued",
            "never issued",
            |r, scene, _| {
                let mut key = scene.key();
                key.id += 1;
                let evidence = r.value.as_mut().unwrap();
                evidence.binding.key_id = key.id;
                evidence.value = ValueMessage::seal(&key, &evidence.binding, r.amount);
            },
        ),
        (
            "destination's balance not raised by the amount",
            "balances do not add up",
            |r, _, terminal| {
                // Re-signed by the terminal: only the chaining of balances catches it.
                let record = r.destination_record.as_ref().unwrap();
                let fields = RecordFields {
                    kind: TransactionKind::TransferIn,
                    counter: record.counter,
                    challenge_writer: record.challenge_writer,
                    challenge_card: record.challenge_card,
                    amount: record.amount,
                    balance_after: amount(record.balance_after.minor() + 1),
                };
                r.destination_record = Some(terminal.record(&r.destination, fields));
            },
        ),
        (
            "source's record at a state its previous record does not describe",
            "does not describe the state",
            |r, _, terminal| {
                let record = r.source_record.as_ref().unwrap();
                let fields = RecordFields {
                    kind: TransactionKind::TransferOut,
                    counter: record.counter + 1,
                    challenge_writer: record.challenge_writer,
                    challenge_card: record.challenge_card,
                    amount: record.amount,
                    balance_after: record.balance_after,
                };
                r.source_record = Some(terminal.record(&r.source, fields));
            },
        ),
        (
            "destination's record without a proof",
            "without the destination's proof",
            |r, _, _| {
                r.proof = None;
            },
        ),
    ];
    for (name, reason, forge) in forgeries {
        let mut report = scene.completed(&mut terminal, &a, &b, amount(300), &key);
        forge(&mut report, &mut scene, &mut terminal);
        let receipt = upload(scene.center(), &terminal, vec![report]);
        assert_eq!(
            (receipt.stored, receipt.refused.len()),
            (0, 1),
            "{name}: {receipt:?}"
        );
        assert!(receipt.refused[0].1.contains(reason), "{name}: {receipt:?}");
        assert_eq!(books(scene.center(), &cards), before, "{name}");
    }

    // A record the payment terminal wrote passes for nothing in a transfer: neither as the
    // writer of a transfer record the card showed before, ...
    let mut report = scene.completed(&mut terminal, &a, &b, amount(300), &key);
    let shown = report.destination_previous.clone().unwrap();
    let posing = payment.record(
        &b.id,
        RecordFields {
            kind: TransactionKind::TransferIn,
            counter: shown.counter,
            challenge_writer: random_array(&mut scene.rng),
            challenge_card: random_array(&mut scene.rng),
            amount: amount(1),
            balance_after: shown.balance_after,
        },
    );
    report.destination_previous = Some(posing);
    let receipt = upload(scene.center(), &terminal, vec![report]);
    assert_eq!(
        (receipt.stored, receipt.refused.len()),
        (0, 1),
        "{receipt:?}"
    );
    assert!(
        receipt.refused[0].1.contains("not written by a party"),
        "{receipt:?}"
    );
    // ... nor as the uploader.
    let report = scene.completed(&mut payment, &a, &b, amount(300), &key);
    let refused = scene.center().upload_transfers(&TransferUpload {
        terminal_id: payment.id,
        reports: vec![report],
    });
    assert!(
        matches!(refused, Err(CenterError::NotAuthorized(id)) if id == payment.id),
        "{refused:?}"
    );
    // A terminal cannot upload in another's name, and a record another terminal wrote is
    // not this terminal's to report.
    let mut other = scene.install(Role::SettlementTerminal);
    let report = scene.completed(&mut other, &a, &b, amount(300), &key);
    let receipt = upload(scene.center(), &terminal, vec![report]);
    assert_eq!((receipt.stored, receipt.refused.len()), (0, 1));
    assert_eq!(books(scene.center(), &cards), before);
}

#[test]
fn halves_from_two_terminals_merge_into_one_transfer_and_the_hold_period_is_watched() {
    let mut scene = Scene::new(12);
    let mut first = scene.install(Role::SettlementTerminal);
    let mut second = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();

    // The first terminal lost the source after TRANSFER IN: B has the value, A holds it
    // reserved.
    let received = scene.received(&mut first, &a, &b, amount(120), &key);
    let receipt = upload(scene.center(), &first, vec![received.clone()]);
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(
        (totals.transfers.in_flight, totals.transfers.in_flight_count),
        (120, 1)
    );
    assert_eq!(totals.remaining, 1620);
    assert_eq!(totals.difference(), 120);
    assert_eq!(totals.status(), ReconciliationStatus::LoadsInFlight);

    // Within the hold period nothing is alerted; past it, the source is named once.
    scene.world.pass_days(TRANSFER_HOLD_DAYS);
    assert_eq!(scene.center().sweep_unsettled_transfers().unwrap(), 0);
    scene.world.pass_days(1);
    assert_eq!(scene.center().sweep_unsettled_transfers().unwrap(), 1);
    assert_eq!(scene.center().sweep_unsettled_transfers().unwrap(), 0);
    let alerts = scene.center().alerts_for(&a.id.0).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "transfer-unsettled");

    // A later session at the second terminal asks B for the proof and completes A.
    let challenge_terminal = random_array(&mut scene.rng);
    let source_record = second.record(
        &a.id,
        RecordFields {
            kind: TransactionKind::TransferOut,
            counter: a.counter + 1,
            challenge_writer: challenge_terminal,
            challenge_card: received.challenge_source,
            amount: amount(120),
            balance_after: amount(880),
        },
    );
    let completion = TransferReport {
        sequence: second.next_sequence(),
        value: None,
        destination_record: None,
        destination_previous: None,
        source_record: Some(source_record),
        source_previous: a.last.clone(),
        release: None,
        ..received.clone()
    };
    let receipt = upload(scene.center(), &second, vec![completion.clone()]);
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert!(receipt.clones_detected.is_empty());
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(
        totals.status(),
        ReconciliationStatus::Reconciled,
        "{totals:?}"
    );
    assert_eq!(
        (
            totals.transfers.completed,
            totals.transfers.completed_count,
            totals.transfers.in_flight_count
        ),
        (120, 1, 0)
    );
    assert_eq!(totals.remaining, 1500);

    // The next transfer from A starts from the state the settlement terminal wrote: that
    // record is genuine (a settlement terminal's, for a transfer kind).
    let a_now = after_source(&a, &completion);
    let b_now = after_destination(&b, &received);
    let next = scene.completed(&mut first, &a_now, &b_now, amount(80), &key);
    let receipt = upload(scene.center(), &first, vec![next]);
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(
        totals.status(),
        ReconciliationStatus::Reconciled,
        "{totals:?}"
    );
    assert_eq!(totals.transfers.completed, 200);
}

#[test]
fn an_undone_transfer_moves_nothing() {
    let mut scene = Scene::new(13);
    let mut terminal = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();
    let mut report = scene.received(&mut terminal, &a, &b, amount(50), &key);
    report.destination_record = None;
    report.destination_previous = None;
    report.proof = Some(TransferProof::make(
        ProofStatus::NotReceived,
        &key,
        b.counter,
        &ProofSubject {
            source: a.id,
            challenge_source: report.challenge_source,
            destination: b.id,
            amount: amount(0),
        },
    ));
    let receipt = upload(scene.center(), &terminal, vec![report.clone()]);
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let totals = scene.center().reconciliation().unwrap();
    assert_eq!(
        (totals.transfers.undone, totals.transfers.undone_count),
        (50, 1)
    );
    assert_eq!(totals.transfers.received, 0);
    assert_eq!(totals.status(), ReconciliationStatus::Reconciled);

    // A proof of receipt for the same transfer contradicts it: refused, and alerted.
    let mut contradiction = scene.received(&mut terminal, &a, &b, amount(50), &key);
    contradiction.challenge_source = report.challenge_source;
    contradiction.value = None;
    contradiction.proof = Some(TransferProof::make(
        ProofStatus::Received,
        &key,
        b.counter + 1,
        &ProofSubject {
            source: a.id,
            challenge_source: report.challenge_source,
            destination: b.id,
            amount: amount(50),
        },
    ));
    let receipt = upload(scene.center(), &terminal, vec![contradiction]);
    assert_eq!(
        (receipt.stored, receipt.refused.len()),
        (0, 1),
        "{receipt:?}"
    );
    let alerts = scene.center().alerts_for(&b.id.0).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, "transfer-contradiction");
}

#[test]
fn a_state_consumed_by_a_purchase_and_a_transfer_lists_the_card() {
    let mut scene = Scene::new(14);
    let mut terminal = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();
    // A copy of A's memory, which spends the same state at a payment terminal.
    let mut copy = scene.copy_of_a();
    scene.world.terminals[0]
        .purchase(&mut copy, amount(200))
        .unwrap();
    let receipt = scene.world.terminals[0]
        .upload_usage(&mut scene.world.center)
        .unwrap();
    assert_eq!(receipt.stored, 1);
    assert!(receipt.clones_detected.is_empty());

    // The original sends 300 from the same state: the transfer's upload finds it spent.
    let report = scene.completed(&mut terminal, &a, &b, amount(300), &key);
    let receipt = upload(scene.center(), &terminal, vec![report]);
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    assert_eq!(receipt.clones_detected, vec![a.id]);
    assert_eq!(scene.center().cloned_cards().unwrap(), vec![a.id]);
    assert!(scene
        .center()
        .alerts_for(&a.id.0)
        .unwrap()
        .iter()
        .any(|alert| alert.kind == "cloned"));
}

#[test]
fn a_purchase_of_a_state_a_transfer_consumed_lists_the_card() {
    let mut scene = Scene::new(15);
    let mut terminal = scene.install(Role::SettlementTerminal);
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let key = scene.key();
    // B received at its current state; then B itself spends that same state at a shop.
    let report = scene.received(&mut terminal, &a, &b, amount(100), &key);
    assert_eq!(upload(scene.center(), &terminal, vec![report]).stored, 1);
    scene.world.terminals[0]
        .purchase(&mut scene.b, amount(50))
        .unwrap();
    let receipt = scene.world.terminals[0]
        .upload_usage(&mut scene.world.center)
        .unwrap();
    assert_eq!(receipt.stored, 1);
    assert_eq!(receipt.clones_detected, vec![b.id]);
}

#[test]
fn a_proof_under_a_generation_the_card_had_left_behind_is_alerted() {
    let mut scene = Scene::new(16);
    let mut terminal = scene.install(Role::SettlementTerminal);
    let old = scene.key();
    scene.center().rotate_transfer_key().unwrap();
    // B takes generation 2 with a load; a genuine B never MACs under generation 1 again.
    scene.world.load(&mut scene.b, amount(10)).unwrap();
    let a = CardState::read(&mut scene.a);
    let b = CardState::read(&mut scene.b);
    let report = scene.received(&mut terminal, &a, &b, amount(100), &old);
    let receipt = upload(scene.center(), &terminal, vec![report]);
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let alerts = scene.center().alerts_for(&b.id.0).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "stale-transfer-key");
    // A has not been given generation 2: its value message under 1 is no sign of anything.
    assert!(scene.center().alerts_for(&a.id.0).unwrap().is_empty());
}

#[test]
fn a_load_from_a_balance_raised_by_a_transfer_waits_for_the_report_and_is_never_taken_for_tampering(
) {
    use common::hand::personalize;
    use valuecard_core::messages::center::CenterLink;
    use valuecard_core::time::FixedClock;
    let mut rng = valuecard_sim::WorldRng::seed_from_u64(18);
    let mut center = Center::ephemeral(Box::new(FixedClock(today())), &mut rng).unwrap();
    let mut terminal = Device::install(&mut center, Role::SettlementTerminal, &mut rng);
    let mut source = personalize(&mut center, &mut rng);
    source.load(&mut center, amount(500), &mut rng);
    let mut card = personalize(&mut center, &mut rng);
    card.load(&mut center, amount(300), &mut rng);
    let key = center.transfer_key_set().unwrap().transfer;

    // The card receives 100 at a settlement terminal that has not synced yet.
    let mut scene_rng = valuecard_sim::WorldRng::seed_from_u64(19);
    let report = received_report(
        &mut terminal,
        &mut scene_rng,
        &source.state(),
        &card.state(),
        amount(100),
        &key,
    );
    card.apply(report.destination_record.clone().unwrap());
    assert_eq!(card.balance, amount(400));

    // Above everything the center loaded, but signed by a settlement terminal: refused
    // until the terminal reports, and the card is not listed.
    let request = card.load_request(amount(50), random_array(&mut rng), random_array(&mut rng));
    let refused = center.authorize_load(&request);
    assert!(
        matches!(&refused, Err(CenterError::Mismatch(reason)) if reason.contains("settlement terminal")),
        "{refused:?}"
    );
    assert!(center.cloned_cards().unwrap().is_empty());
    assert!(center.alerts().unwrap().is_empty());

    // Once the report is in, the same card loads from its raised balance.
    let receipt = upload(&mut center, &terminal, vec![report]);
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let (approval, _) = card.load(&mut center, amount(50), &mut rng);
    assert_eq!(approval.balance_after, amount(450));

    // A balance no writer signed is still the card's own edit: listed and blocked.
    let mut forged = card.last.clone().unwrap();
    forged.balance_after = amount(5000);
    card.apply(forged);
    let request = card.load_request(amount(1), random_array(&mut rng), random_array(&mut rng));
    assert!(matches!(
        center.authorize_load(&request),
        Err(CenterError::CardBlocked(id)) if id == card.id
    ));
    assert!(center
        .alerts_for(&card.id.0)
        .unwrap()
        .iter()
        .any(|alert| alert.kind == "tampered-balance"));
}
