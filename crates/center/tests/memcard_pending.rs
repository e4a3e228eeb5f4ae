//! Writes pending in a machine's log, reported to the center: held as restore evidence and
//! never counted as such, counted once a later record shows they landed, answered
//! superseded once a later record shows the card took another write, and checked as any
//! uploaded record is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memcard_world;

use memcard_world::*;
use valuecard_center::memcard::MemcardStatus;
use valuecard_core::cert::Role;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::memcard::{MemcardLink, PendingReceipt};

fn pending_rows(center: &mut valuecard_center::Center) -> u64 {
    center.memcard_pending_held().unwrap()
}

#[test]
fn a_pending_write_is_evidence_until_a_later_record_shows_it_landed() {
    let (mut center, mut rng) = center(21);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut torn_at = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let mut restorer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut card = MemoryCard::blank(30);
    let charge = charger.write(&center, &mut card, amount(5_000), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();

    // The value area landed, the signature did not: the machine reports the write pending.
    let torn = torn_at.write(&center, &mut card, amount(4_000), &mut rng);
    let report = torn_at.upload(vec![torn.clone()]);
    let receipt = center.report_pending(&report).unwrap();
    assert_eq!(
        receipt,
        PendingReceipt {
            held: 1,
            ..PendingReceipt::default()
        }
    );
    // Reported again (the machine synced twice): held once.
    assert_eq!(center.report_pending(&report).unwrap().held, 1);
    assert_eq!(pending_rows(&mut center), 1);
    // Evidence, not value: nothing of it is counted.
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (totals.spent, totals.payments, totals.on_cards),
        (0, 0, 5_000)
    );
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
    // It is what any machine gets to finish the card with.
    let evidence = center.latest_state(&card.id).unwrap().unwrap();
    assert_eq!(evidence.record, torn);
    assert_eq!(evidence.writer_certificate.subject(), torn_at.id);

    // Another machine finished the card from that evidence and took 500: its record
    // starts from the torn write's state, so the torn write landed and is counted now.
    let next = restorer.write(&center, &mut card, amount(3_500), &mut rng);
    let stored = center
        .upload_writes(&restorer.upload(vec![next.clone()]))
        .unwrap();
    assert_eq!((stored.stored, stored.refused.len()), (1, 0));
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.spent, totals.payments), (1_500, 2));
    assert_eq!(totals.on_cards, 3_500);
    assert_eq!(totals.gaps, 0);
    assert_eq!(totals.unexplained(), 0);
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
    assert_eq!(pending_rows(&mut center), 0);
    assert_eq!(center.latest_state(&card.id).unwrap().unwrap().record, next);

    // The writing machine learns that its write landed; its own upload of it is a
    // duplicate, counted once.
    let settled = center.report_pending(&report).unwrap();
    assert_eq!(settled.landed, [torn.sequence]);
    assert_eq!(settled.held, 0);
    let again = center.upload_writes(&report).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
    assert_eq!(center.memcard_totals().unwrap().spent, 1_500);
    assert_eq!(pending_rows(&mut center), 0);
}

#[test]
fn a_pending_write_the_card_passed_is_superseded_and_never_counted() {
    let (mut center, mut rng) = center(22);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut torn_at = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let mut other = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut card = MemoryCard::blank(31);
    let charge = charger.write(&center, &mut card, amount(5_000), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();

    // The payment never reached the card (its value area was not written) ...
    let never = torn_at.write(&center, &mut card.clone(), amount(4_000), &mut rng);
    let report = torn_at.upload(vec![never.clone()]);
    assert_eq!(center.report_pending(&report).unwrap().held, 1);
    // ... and the card went on to another machine, which wrote from the same state.
    let taken = other.write(&center, &mut card, amount(4_800), &mut rng);
    center
        .upload_writes(&other.upload(vec![taken.clone()]))
        .unwrap();
    // The evidence is no longer newer than what is counted: the card's own state is offered.
    assert_eq!(
        center.latest_state(&card.id).unwrap().unwrap().record,
        taken
    );

    let settled = center.report_pending(&report).unwrap();
    assert_eq!(settled.superseded, [never.sequence]);
    assert_eq!((settled.held, settled.landed.len()), (0, 0));
    assert_eq!(pending_rows(&mut center), 0);
    // Reported again before the machine voided it: still superseded, nothing held.
    assert_eq!(
        center.report_pending(&report).unwrap().superseded,
        [never.sequence]
    );
    assert_eq!(pending_rows(&mut center), 0);
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (totals.spent, totals.payments, totals.on_cards),
        (200, 1, 4_800)
    );
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
}

#[test]
fn a_first_charge_that_never_landed_is_superseded_by_another_first_charge() {
    let (mut center, mut rng) = center(23);
    let mut torn_at = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut other = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    for machine in [&torn_at, &other] {
        center.grant_float(machine.id, amount(10_000)).unwrap();
    }
    let mut card = MemoryCard::blank(32);
    let never = torn_at.write(&center, &mut card.clone(), amount(2_000), &mut rng);
    let report = torn_at.upload(vec![never.clone()]);
    assert_eq!(center.report_pending(&report).unwrap().held, 1);
    let taken = other.write(&center, &mut card, amount(1_000), &mut rng);
    center.upload_writes(&other.upload(vec![taken])).unwrap();
    assert_eq!(
        center.report_pending(&report).unwrap().superseded,
        [never.sequence]
    );
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.charged, totals.on_cards), (1_000, 1_000));
}

#[test]
fn a_reported_write_is_checked_as_an_uploaded_record_is() {
    let (mut center, mut rng) = center(24);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let thief = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut card = MemoryCard::blank(33);
    let charge = charger.write(&center, &mut card, amount(5_000), &mut rng);
    center
        .upload_writes(&charger.upload(vec![charge.clone()]))
        .unwrap();

    // A raised balance signed by nobody the center certified.
    let mut forged = payer.write(&center, &mut card.clone(), amount(4_000), &mut rng);
    forged.written.value_area = charger
        .state(
            &center,
            card.id,
            forged.written.counter,
            amount(9_000),
            &mut rng,
        )
        .value_area;
    let receipt = center.report_pending(&payer.upload(vec![forged])).unwrap();
    assert_eq!(receipt.held, 0);
    assert_eq!(receipt.refused.len(), 1, "{receipt:?}");

    // Another machine's pending write reported as one's own.
    let someone_elses = payer.write(&center, &mut card.clone(), amount(4_000), &mut rng);
    let receipt = center
        .report_pending(&thief.upload(vec![someone_elses.clone()]))
        .unwrap();
    assert_eq!((receipt.held, receipt.refused.len()), (0, 1));

    // A counted sequence reported again with other content.
    let mut changed = charge.clone();
    changed.date = changed.date.add_days(1);
    let receipt = center
        .report_pending(&charger.upload(vec![changed]))
        .unwrap();
    assert_eq!(
        (receipt.held, receipt.landed.len(), receipt.refused.len()),
        (0, 0, 1)
    );

    // A device that writes no memory cards reports nothing.
    let terminal = Machine::install(&mut center, Role::PaymentTerminal, &mut rng);
    assert!(matches!(
        center.report_pending(&terminal.upload(Vec::new())),
        Err(CenterError::NotAuthorized(_))
    ));
    assert_eq!(pending_rows(&mut center), 0);

    // The honest one is held, and a second report under its sequence with other content is
    // refused.
    let honest = payer.write(&center, &mut card.clone(), amount(4_000), &mut rng);
    assert_eq!(
        center
            .report_pending(&payer.upload(vec![honest.clone()]))
            .unwrap()
            .held,
        1
    );
    let mut altered = honest.clone();
    altered.date = altered.date.add_days(1);
    let receipt = center.report_pending(&payer.upload(vec![altered])).unwrap();
    assert_eq!((receipt.held, receipt.refused.len()), (0, 1), "{receipt:?}");
    assert_eq!(pending_rows(&mut center), 1);
}

#[test]
fn a_retired_machines_pending_write_stays_evidence_and_the_upload_after_it_goes_on() {
    let (mut center, mut rng) = center(25);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut torn_at = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let mut restorer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut card = MemoryCard::blank(34);
    let charge = charger.write(&center, &mut card, amount(5_000), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();
    let torn = torn_at.write(&center, &mut card, amount(4_000), &mut rng);
    assert_eq!(
        center
            .report_pending(&torn_at.upload(vec![torn]))
            .unwrap()
            .held,
        1
    );
    // The machine is reported stolen and retired before the card's next record arrives.
    center.report_stolen_terminal(torn_at.id).unwrap();
    let next = restorer.write(&center, &mut card, amount(3_500), &mut rng);
    let receipt = center.upload_writes(&restorer.upload(vec![next])).unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    // Not counted: the record after it shows the payment as a gap, and the evidence stays.
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (totals.spent, totals.gaps, totals.spent_in_gaps),
        (500, 1, 1_000)
    );
    assert_eq!(pending_rows(&mut center), 1);
}

#[test]
fn a_write_the_machine_finished_itself_is_counted_once_and_its_evidence_dropped() {
    let (mut center, mut rng) = center(26);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut card = MemoryCard::blank(35);
    let charge = charger.write(&center, &mut card, amount(5_000), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();
    let torn = payer.write(&center, &mut card, amount(4_200), &mut rng);
    let upload = payer.upload(vec![torn]);
    assert_eq!(center.report_pending(&upload).unwrap().held, 1);
    // The card came back to the same machine, which finished the write and uploads it done.
    let receipt = center.upload_writes(&upload).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0));
    assert_eq!(pending_rows(&mut center), 0);
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (totals.spent, totals.payments, totals.on_cards),
        (800, 1, 4_200)
    );
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
}
