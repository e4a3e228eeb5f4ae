//! Writes pending in a machine's log, reported to the center: a card torn at one machine is
//! finished at another from the center's evidence, the writing machine then learns that its
//! write landed; a write the card passed is voided, and a charge that never reached its card
//! is reported as owed.

use valuecard_core::messages::memcard::COUNTER_START;
use valuecard_sam::{MemcardCheckError, Sam, ValueFormat};

use super::testing::Cut;
use super::tests::{amount, balance, card, card_of, logged_done, pending, refused_state, world};
use super::*;
use crate::store::{MemcardLog, WriteStatus};

#[test]
fn a_card_torn_at_one_machine_is_finished_at_another_from_the_reported_write() {
    let mut w = world();
    let mut card = card_of(&mut w, 1, 5_000);
    // Cut before the signature: the value area and counter moved, the signature is old.
    card.cut_at_write(1, Cut::Before);
    assert!(w.payer.pay(&mut card, amount(1_000), None).is_err());
    // Before the writing machine reports, no one else can finish it.
    assert_eq!(
        refused_state(w.payer_2.pay(&mut card, amount(1), Some(&mut w.link))),
        MemcardCheckError::BadSignature
    );
    let report = w.payer.machine_mut().report_pending(&mut w.link).unwrap();
    assert_eq!(report.held, 1);
    assert_eq!(pending(w.payer.machine().store()), 1);

    let receipt = w
        .payer_2
        .pay(&mut card, amount(500), Some(&mut w.link))
        .unwrap();
    assert_eq!(
        receipt.repairs,
        [RepairOutcome::RestoredFromCenter {
            writer: w.payer.machine().device_id(),
            counter: COUNTER_START - 2,
        }]
    );
    assert_eq!(receipt.balance_after, amount(3_500));
    assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(3_500));

    // The restoring machine's record starts from the torn write's state: at its next report
    // the writing machine learns it landed, marks it done, and has nothing left to upload.
    w.payer_2.machine_mut().upload_writes(&mut w.link).unwrap();
    let report = w.payer.machine_mut().report_pending(&mut w.link).unwrap();
    assert_eq!((report.landed, report.held), (1, 0));
    let log = w.payer.machine().store();
    assert_eq!(pending(log), 0);
    assert_eq!(logged_done(log), -1_000);
    assert!(log.pending_write_uploads(10).unwrap().is_empty());
    // Nothing more to report.
    let report = w.payer.machine_mut().report_pending(&mut w.link).unwrap();
    assert_eq!(report, PendingReport::default());
}

#[test]
fn a_charge_the_card_passed_is_voided_and_reported_as_owed() {
    let mut w = world();
    let mut card = card(1);
    // The charge's value area never reached the card (cut before the first write) ...
    card.cut_at_write(0, Cut::Before);
    assert!(w
        .charger
        .charge(&mut card, amount(2_000), ValueFormat::Plain, None)
        .is_err());
    assert_eq!(
        w.charger
            .machine_mut()
            .report_pending(&mut w.link)
            .unwrap()
            .held,
        1
    );
    // ... and the blank card was charged at another charge machine instead.
    let other_sam = w
        .link
        .center
        .install(valuecard_core::cert::Role::ChargeMachine, &mut w.rng);
    w.link.know(other_sam.certificate().unwrap());
    let clock = Box::new(valuecard_core::time::FixedClock(
        valuecard_core::time::Date(20_600),
    ));
    let mut second =
        ChargeMachine::new(other_sam, crate::store::MemoryStore::default(), clock).unwrap();
    second.refill_float(&mut w.link, amount(10_000)).unwrap();
    second
        .charge(&mut card, amount(700), ValueFormat::Plain, None)
        .unwrap();
    second.machine_mut().upload_writes(&mut w.link).unwrap();

    let report = w.charger.machine_mut().report_pending(&mut w.link).unwrap();
    assert_eq!((report.superseded, report.held, report.landed), (1, 0, 0));
    assert_eq!(report.charges_owed, amount(2_000));
    let writes = w.charger.machine().store().writes().unwrap();
    assert_eq!(writes[0].status, WriteStatus::Voided);
    assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(700));
}
