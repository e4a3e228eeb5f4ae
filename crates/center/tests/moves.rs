//! Purse moves from an old chip to a new one (seed 002) at the center: the purse provider's
//! certified transfer SAM reports each completed move with the old chip's signed export and
//! the new chip's migration record. The value changes cards and none is created; the old
//! card leaves the remaining value and is listed and blocked; every forged or inconsistent
//! report is refused with nothing stored; a chip moved twice is alerted and shows as excess;
//! the old chip updated online after its move is alerted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::hand::{personalize, HandCard};
use common::online::SecurityServer;
use common::*;
use rand_core::SeedableRng;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{CenterError, CenterLink, ListReason};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::messages::services::{MigrationRecord, MoveId, PurseMove};
use valuecard_core::time::FixedClock;
use valuecard_sim::WorldRng;

/// The purse provider's transfer SAM as the center knows it: certified, its key held by the
/// test.
struct TransferSam {
    id: DeviceId,
    key: SigningKeyPair,
    sequence: u32,
}

impl TransferSam {
    fn certify(center: &mut Center, rng: &mut WorldRng) -> Self {
        let key = SigningKeyPair::generate(rng);
        let sealing = SealingKeyPair::generate(rng).public_key();
        let (id, certificate) = center
            .certify_service_transfer(key.public_key(), sealing)
            .unwrap();
        center
            .anchor()
            .verify_unexpired(
                std::slice::from_ref(&certificate),
                Role::ServiceTransfer,
                today(),
            )
            .unwrap();
        TransferSam {
            id,
            key,
            sequence: 0,
        }
    }

    /// The report of moving all of `old`'s value onto `new` under `move_id`: the old chip
    /// signs its export, the transfer SAM the new chip's record.
    fn moved(&mut self, move_id: MoveId, old: &HandCard, new: &HandCard) -> PurseMove {
        self.sequence += 1;
        let record = MigrationRecord {
            card_id: new.id,
            writer: self.id,
            challenge_host: [self.sequence as u8; 16],
            challenge_card: [0x5C; 16],
            counter: new.counter + 1,
            amount: old.balance,
            balance_after: new.balance.checked_add(old.balance).unwrap(),
            writer_sequence: self.sequence,
            date: today(),
        };
        let mut report = PurseMove {
            move_id,
            source: old.id,
            destination: new.id,
            amount: old.balance,
            source_counter: old.counter,
            export_signature: valuecard_core::crypto::Signature([0; 64]),
            record: record.usage_record(self.key.sign(&record.signed_message())),
        };
        report.export_signature = old.signing.sign(&report.export_message());
        report
    }
}

struct Moves {
    center: Center,
    rng: WorldRng,
    sam: TransferSam,
    old: HandCard,
    new: HandCard,
}

fn moves(seed: u64) -> Moves {
    let mut rng = WorldRng::seed_from_u64(seed);
    let mut center = Center::ephemeral(Box::new(FixedClock(today())), &mut rng).unwrap();
    let sam = TransferSam::certify(&mut center, &mut rng);
    let mut old = personalize(&mut center, &mut rng);
    old.load(&mut center, amount(87_654), &mut rng);
    let mut new = personalize(&mut center, &mut rng);
    new.load(&mut center, amount(700), &mut rng);
    Moves {
        center,
        rng,
        sam,
        old,
        new,
    }
}

#[test]
fn a_reported_move_puts_the_value_on_the_new_card_and_creates_none() {
    let Moves {
        mut center,
        mut rng,
        mut sam,
        old,
        mut new,
    } = moves(1);
    let before = center.reconciliation().unwrap();
    let report = sam.moved([1; 16], &old, &new);
    let receipt = center
        .store_purse_moves(sam.id, std::slice::from_ref(&report))
        .unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert!(receipt.refused.is_empty() && receipt.clones_detected.is_empty());

    // The new card's record carries both values; the old card left the sum.
    let value = center.remaining_value(&new.id).unwrap().unwrap();
    assert_eq!(
        (value.card_counter, value.balance.minor()),
        (new.counter + 1, 87_654 + 700)
    );
    // Both chips showed the states their loads wrote, so those loads are no longer in
    // flight: the one reconciliation holds, with the old card out of the sum.
    assert_eq!(before.in_flight_count, 2, "{before:?}");
    let after = center.reconciliation().unwrap();
    assert_eq!(
        after.status(),
        ReconciliationStatus::Reconciled,
        "{after:?}"
    );
    assert_eq!(after.difference(), 0);
    assert_eq!(after.issued, 87_654 + 700);
    assert_eq!(after.remaining, 87_654 + 700);
    assert_eq!(after.cards_with_remaining, 1);
    assert_eq!((after.moves.moved, after.moves.moves), (87_654, 1));
    assert_eq!(center.move_totals().unwrap(), after.moves);

    // The old card is listed for every terminal and blocked for loads.
    assert_eq!(
        center.listed_reason(&old.id).unwrap(),
        Some(ListReason::Migrated)
    );
    let request = old.load_request(amount(1), random_array(&mut rng), random_array(&mut rng));
    assert!(
        matches!(center.authorize_load(&request), Err(CenterError::CardBlocked(id)) if id == old.id)
    );
    let recorded = center.move_from(&old.id).unwrap().unwrap();
    assert_eq!(
        (
            recorded.destination,
            recorded.amount,
            recorded.source_counter
        ),
        (new.id, amount(87_654), old.counter)
    );
    assert_eq!(center.moves_to(&new.id).unwrap(), vec![recorded]);

    // Reported again after a lost answer: a duplicate, nothing counted twice.
    let again = center
        .store_purse_moves(sam.id, std::slice::from_ref(&report))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1), "{again:?}");
    assert_eq!(center.reconciliation().unwrap(), after);

    // The new card loads from its moved balance: never taken for an edited one.
    new.apply(report.record.clone());
    let (approval, _) = new.load(&mut center, amount(100), &mut rng);
    assert_eq!(approval.balance_after, amount(87_654 + 700 + 100));
    assert!(center.alerts().unwrap().is_empty(), "{:?}", center.alerts());
}

#[test]
fn forged_and_inconsistent_reports_are_refused_and_change_nothing() {
    let Moves {
        mut center,
        mut rng,
        mut sam,
        old,
        new,
    } = moves(2);
    let before = center.reconciliation().unwrap();
    let genuine = sam.moved([2; 16], &old, &new);

    let mut cases: Vec<(&str, PurseMove)> = Vec::new();
    // The old chip's export signed by someone else (the holder of the new card).
    let mut forged_export = genuine.clone();
    forged_export.export_signature = new.signing.sign(&genuine.export_message());
    cases.push(("export signature", forged_export));
    // More credited than the old chip gave up, the record made to match.
    let mut inflated = genuine.clone();
    inflated.amount = amount(99_999);
    inflated.record.amount = amount(99_999);
    inflated.record.balance_after = amount(99_999 + 700);
    inflated.record.signature = sam.key.sign(
        &valuecard_core::messages::services::MigrationRecord::of_usage_record(
            &inflated.destination,
            &inflated.record,
        )
        .signed_message(),
    );
    cases.push(("export signature", inflated));
    // A record whose amount differs from the export.
    let mut record_amount = sam.moved([3; 16], &old, &new);
    record_amount.record.amount = amount(1);
    cases.push(("amount", record_amount));
    // A record signed by a key the center never certified.
    let mut rogue = genuine.clone();
    rogue.record.signature =
        SigningKeyPair::generate(&mut rng).sign(&rogue.record.signed_message(&rogue.destination));
    cases.push(("signature", rogue));
    // Not a migration record.
    let mut purchase = genuine.clone();
    purchase.record.kind = TransactionKind::Purchase;
    cases.push(("migration record", purchase));
    // A card onto itself.
    let mut itself = genuine.clone();
    itself.destination = itself.source;
    cases.push(("same card", itself));
    // A card the center never issued.
    let mut stranger = genuine.clone();
    stranger.destination = valuecard_core::ids::CardId([0x77; 8]);
    cases.push(("did not issue", stranger));

    for (expected, report) in cases {
        let receipt = center
            .store_purse_moves(sam.id, std::slice::from_ref(&report))
            .unwrap();
        assert_eq!(receipt.stored, 0, "{expected}: {receipt:?}");
        assert_eq!(receipt.refused.len(), 1, "{expected}: {receipt:?}");
        assert!(
            receipt.refused[0].1.contains(expected),
            "{expected}: {:?}",
            receipt.refused
        );
    }
    assert_eq!(center.reconciliation().unwrap(), before);
    assert_eq!(center.move_from(&old.id).unwrap(), None);
    assert_eq!(center.listed_reason(&old.id).unwrap(), None);

    // A device that is not a transfer SAM cannot report a move at all.
    let terminal = Device::install(&mut center, Role::PaymentTerminal, &mut rng);
    assert!(matches!(
        center.store_purse_moves(terminal.id, std::slice::from_ref(&genuine)),
        Err(CenterError::NotAuthorized(id)) if id == terminal.id
    ));
    // Nor another transfer SAM with this one's record.
    let other = TransferSam::certify(&mut center, &mut rng);
    let receipt = center
        .store_purse_moves(other.id, std::slice::from_ref(&genuine))
        .unwrap();
    assert_eq!(receipt.stored, 0, "{receipt:?}");
    assert_eq!(center.reconciliation().unwrap(), before);

    // The genuine report still goes in.
    let receipt = center
        .store_purse_moves(sam.id, std::slice::from_ref(&genuine))
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
}

#[test]
fn an_old_chip_moved_twice_is_alerted_and_its_second_credit_shows_as_excess() {
    let Moves {
        mut center,
        mut rng,
        mut sam,
        old,
        new,
    } = moves(3);
    let mut third = personalize(&mut center, &mut rng);
    third.load(&mut center, amount(50), &mut rng);
    let before = center.reconciliation().unwrap();
    let first = sam.moved([4; 16], &old, &new);
    assert_eq!(
        center
            .store_purse_moves(sam.id, std::slice::from_ref(&first))
            .unwrap()
            .stored,
        1
    );
    assert_eq!(
        center.reconciliation().unwrap().difference(),
        before.difference()
    );

    // The same export state carried to a second chip under another move: value created.
    let second = sam.moved([5; 16], &old, &third);
    let receipt = center
        .store_purse_moves(sam.id, std::slice::from_ref(&second))
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let alerts = center.alerts_for(&old.id.0).unwrap();
    assert!(
        alerts.iter().any(|alert| alert.kind == "moved-twice"),
        "{alerts:?}"
    );
    let after = center.reconciliation().unwrap();
    assert_eq!(
        after.difference() - before.difference(),
        i128::from(old.balance.minor()),
        "{after:?}"
    );
}

/// The old chip, switched back to main keys (or written back to its image before the move),
/// pays online: the security server's record is genuine and stored, but the center alerts
/// it as a use after the move, and the reconciliation shows the amount as excess.
#[test]
fn an_old_chip_updated_online_after_its_move_is_alerted() {
    let Moves {
        mut center,
        mut rng,
        mut sam,
        old,
        new,
    } = moves(4);
    let report = sam.moved([6; 16], &old, &new);
    center
        .store_purse_moves(sam.id, std::slice::from_ref(&report))
        .unwrap();
    let before = center.reconciliation().unwrap();
    let mut server = SecurityServer::certify(&mut center, &mut rng);
    let state = old.state();
    let payment = server.update(&state, TransactionKind::OnlinePayment, 400);
    let receipt = center
        .store_online_records(
            server.id,
            &[SecurityServer::item(&state, 1, payment.clone())],
        )
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let alerts = center.alerts_for(&old.id.0).unwrap();
    assert!(
        alerts
            .iter()
            .any(|alert| alert.kind == "spent-after-move"
                && alert.detail.starts_with("updated online")),
        "{alerts:?}"
    );
    // An update before the move's export would raise nothing: the new card's records are
    // clean.
    assert!(center.alerts_for(&new.id.0).unwrap().is_empty());
    let after = center.reconciliation().unwrap();
    assert_eq!(after.difference() - before.difference(), 400, "{after:?}");
}
