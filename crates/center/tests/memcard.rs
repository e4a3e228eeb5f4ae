//! Memory cards at the center (seed 001): write records stored idempotently, every check
//! that refuses a record, a card state spent twice alerted once, float bounded and
//! numbered, restore evidence, and the reconciliation of charges, payments and the value on
//! cards, holding after a series of writes and failing visibly when a record is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memcard_world;

use memcard_world::*;
use valuecard_center::memcard::{MemcardStatus, FLOAT_LIMIT_DEFAULT_MINOR};
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::messages::memcard::{
    FloatGrant, MemcardLink, PlainValue, ValueArea, WriteKind, WriteRecord, WriteUpload,
};

fn reasons(receipt: &valuecard_core::messages::memcard::WriteReceipt) -> String {
    format!("{:?}", receipt.refused)
}

#[test]
fn uploads_are_idempotent_on_machine_and_sequence() {
    let (mut center, mut rng) = center(1);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut card = MemoryCard::blank(1);
    let charge = charger.write(&center, &mut card, amount(5_000), &mut rng);
    let upload = charger.upload(vec![charge.clone()]);

    let first = center.upload_writes(&upload).unwrap();
    assert_eq!((first.stored, first.duplicates), (1, 0), "{first:?}");
    // The answer was lost: the same upload again is a duplicate and changes nothing.
    let totals = center.memcard_totals().unwrap();
    let again = center.upload_writes(&upload).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1), "{again:?}");
    assert!(again.refused.is_empty());
    assert_eq!(center.memcard_totals().unwrap(), totals);
    assert_eq!((totals.charged, totals.charges), (5_000, 1));

    // Another record under the used sequence is refused, and not counted.
    let mut other = charger.write(&center, &mut card, amount(6_000), &mut rng);
    other.sequence = charge.sequence;
    let receipt = center.upload_writes(&charger.upload(vec![other])).unwrap();
    assert_eq!(receipt.stored, 0);
    assert_eq!(receipt.refused.len(), 1);
    assert!(
        receipt.refused[0].1.contains("other content"),
        "{receipt:?}"
    );
    assert_eq!(center.memcard_totals().unwrap(), totals);
}

#[test]
fn every_check_refuses_its_record_and_lets_the_others_through() {
    let (mut center, mut rng) = center(2);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let other_payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let terminal = Machine::install(&mut center, Role::PaymentTerminal, &mut rng);
    let mut card = MemoryCard::blank(2);
    let charge = charger.write(&center, &mut card, amount(1_000), &mut rng);
    assert_eq!(
        center
            .upload_writes(&charger.upload(vec![charge.clone()]))
            .unwrap()
            .stored,
        1
    );
    let charged = card.clone();
    let pay = |center: &valuecard_center::Center, payer: &mut Machine, rng: &mut Rng| {
        let mut card = charged.clone();
        payer.write(center, &mut card, amount(700), rng)
    };
    let good = pay(&center, &mut payer, &mut rng);

    // An amount edited by hand: the record says 900 left, the signed state says 700.
    let mut edited = pay(&center, &mut payer, &mut rng);
    edited.balance_after = amount(900);
    // The written state signed under another machine's name.
    let mut foreign = pay(&center, &mut payer, &mut rng);
    foreign.written.writer = other_payer.id;
    // A signature copied from another card: valid for card 3, not for this one.
    let mut copied = pay(&center, &mut payer, &mut rng);
    let mut elsewhere = MemoryCard::blank(3);
    elsewhere.counter = copied.written.counter + 1;
    copied.written.signature = payer
        .state(
            &center,
            elsewhere.id,
            copied.written.counter,
            amount(700),
            &mut rng,
        )
        .signature;
    // A previous state no certified machine signed (an image written by hand).
    let mut forged_previous = pay(&center, &mut payer, &mut rng);
    let forger = valuecard_core::crypto::SigningKeyPair::generate(&mut rng);
    let forged = sign(
        &forger,
        charger.id,
        card.id,
        charged.counter,
        ValueArea::Plain(PlainValue {
            date: today(),
            amount: amount(1_000),
        }),
    );
    forged_previous.previous = Some(forged);
    // A previous state signed by a device that writes no memory cards.
    let mut terminal_previous = pay(&center, &mut payer, &mut rng);
    terminal_previous.previous = Some(sign(
        &terminal.key,
        terminal.id,
        card.id,
        charged.counter,
        ValueArea::Plain(PlainValue {
            date: today(),
            amount: amount(1_000),
        }),
    ));
    // An older state restored on the card: the machine read state 1000 at counter N but
    // the record claims to start from a counter below the one it wrote.
    let mut counter_up = pay(&center, &mut payer, &mut rng);
    counter_up.written.counter = charged.counter + 1;
    // A payment that did not take value, and one without any previous state.
    let mut upwards = pay(&center, &mut payer, &mut rng);
    upwards.kind = WriteKind::Charge;
    let mut no_previous = pay(&center, &mut payer, &mut rng);
    no_previous.previous = None;
    // A sealed value that does not open under the writer's key (claim 4).
    let mut broken_seal = pay(&center, &mut payer, &mut rng);
    broken_seal.written = {
        let key = center.memcard_value_key(&other_payer.id);
        let area = ValueArea::seal(
            &key,
            random_array(&mut rng),
            &card.id,
            broken_seal.written.counter,
            &payer.id,
            &PlainValue {
                date: today(),
                amount: amount(700),
            },
        );
        sign(
            &payer.key,
            payer.id,
            card.id,
            broken_seal.written.counter,
            area,
        )
    };
    let upload = payer.upload(vec![
        edited.clone(),
        foreign.clone(),
        copied.clone(),
        forged_previous.clone(),
        terminal_previous.clone(),
        counter_up.clone(),
        upwards.clone(),
        no_previous.clone(),
        broken_seal.clone(),
        good.clone(),
    ]);
    let before = center.memcard_totals().unwrap();
    let receipt = center.upload_writes(&upload).unwrap();
    assert_eq!(receipt.stored, 1, "{}", reasons(&receipt));
    let refused: std::collections::BTreeMap<u32, String> = receipt.refused.into_iter().collect();
    for (record, words) in [
        (&edited, "holds"),
        (&foreign, "another machine"),
        (&copied, "signature over the written state"),
        (&forged_previous, "previous state does not verify"),
        (&terminal_previous, "not a memory-card machine"),
        (&counter_up, "counter"),
        (&upwards, "not a charge machine"),
        (&no_previous, "first charge"),
        (&broken_seal, "does not open"),
    ] {
        let reason = refused
            .get(&record.sequence)
            .unwrap_or_else(|| panic!("record {} was not refused: {refused:?}", record.sequence));
        assert!(reason.contains(words), "{}: {reason}", record.sequence);
    }
    assert!(!refused.contains_key(&good.sequence));
    let after = center.memcard_totals().unwrap();
    assert_eq!(after.spent - before.spent, 300);
    assert_eq!(after.payments - before.payments, 1);

    // A charge from the payment machine, a payment from a charge machine: the role must
    // fit the kind.
    let mut fresh = MemoryCard::blank(4);
    let mut wrong = payer.write(&center, &mut fresh, amount(50), &mut rng);
    wrong.kind = WriteKind::Charge;
    let receipt = center.upload_writes(&payer.upload(vec![wrong])).unwrap();
    assert!(
        receipt.refused[0].1.contains("not a charge machine"),
        "{receipt:?}"
    );

    // Devices that are no machines, or unknown, cannot upload at all.
    assert!(matches!(
        center.upload_writes(&WriteUpload {
            machine: terminal.id,
            records: Vec::new()
        }),
        Err(CenterError::NotAuthorized(id)) if id == terminal.id
    ));
    let stranger = valuecard_core::ids::DeviceId([0xD0, 0, 0, 0, 0, 0, 0x77, 0x77]);
    assert!(matches!(
        center.upload_writes(&WriteUpload {
            machine: stranger,
            records: Vec::new()
        }),
        Err(CenterError::UnknownDevice(_))
    ));
}

#[test]
fn sealed_values_of_claim_4_are_opened_and_checked() {
    let (mut center, mut rng) = center(3);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    charger.sealing = true;
    payer.sealing = true;
    center.grant_float(charger.id, amount(2_000)).unwrap();
    let mut card = MemoryCard::blank(5);
    let charge = charger.write(&center, &mut card, amount(2_000), &mut rng);
    assert!(matches!(
        charge.written.value_area,
        ValueArea::Sealed { .. }
    ));
    let payment = payer.write(&center, &mut card, amount(1_250), &mut rng);
    assert_eq!(
        center
            .upload_writes(&charger.upload(vec![charge]))
            .unwrap()
            .stored,
        1
    );
    let receipt = center
        .upload_writes(&payer.upload(vec![payment.clone()]))
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.on_cards, totals.spent), (1_250, 750));
    assert_eq!(totals.status(), MemcardStatus::Reconciled);

    // The same sealed payment claiming another balance is refused: the seal holds 1250.
    let mut edited = payment;
    edited.sequence = payer.next_sequence();
    edited.balance_after = amount(1_500);
    let receipt = center.upload_writes(&payer.upload(vec![edited])).unwrap();
    assert!(receipt.refused[0].1.contains("holds"), "{receipt:?}");
}

#[test]
fn a_state_spent_twice_is_alerted_once_and_the_card_listed() {
    let (mut center, mut rng) = center(4);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut first = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let mut second = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut card = MemoryCard::blank(6);
    let charge = charger.write(&center, &mut card, amount(1_000), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();
    // A copy of the card (same ID, same counter) spends the same state at a second machine.
    let mut copy = card.clone();
    let spend = first.write(&center, &mut card, amount(600), &mut rng);
    let copied_spend = second.write(&center, &mut copy, amount(700), &mut rng);
    let third_spend = {
        let mut another = copy.clone();
        another.counter = card.counter + 1;
        another.balance = amount(1_000);
        another.state = spend.previous.clone();
        second.write(&center, &mut another, amount(900), &mut rng)
    };

    assert_eq!(
        center
            .upload_writes(&first.upload(vec![spend]))
            .unwrap()
            .stored,
        1
    );
    assert!(center.alerts().unwrap().is_empty());
    let receipt = center
        .upload_writes(&second.upload(vec![copied_spend.clone(), third_spend]))
        .unwrap();
    // Both stored: the copy really was served, and its spending is counted.
    assert_eq!(receipt.stored, 2, "{receipt:?}");
    let twice = center.memcard_states_spent_twice().unwrap();
    assert_eq!(twice.len(), 1, "{twice:?}");
    assert_eq!((twice[0].card_id, twice[0].machine), (card.id, second.id));
    assert_eq!(twice[0].sequence, copied_spend.sequence);
    let alerts = center.alerts_for(&card.id.0).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "memcard-spent-twice");
    assert_eq!(
        center.listed_reason(&card.id).unwrap(),
        Some(ListReason::Cloned)
    );
    // Sent again: duplicates, still one alert.
    let again = center
        .upload_writes(&second.upload(vec![copied_spend]))
        .unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(center.alerts_for(&card.id.0).unwrap().len(), 1);
    // The books show it: more spent than the cards lost.
    let totals = center.memcard_totals().unwrap();
    assert_eq!(totals.states_spent_twice, 1);
    assert_ne!(totals.unexplained(), 0);
    assert_eq!(totals.status(), MemcardStatus::Excess);
    assert_eq!(
        center.reconciliation().unwrap().status(),
        ReconciliationStatus::Excess
    );
}

#[test]
fn float_is_bounded_by_the_limit_less_what_is_unaccounted_and_numbered() {
    let (mut center, mut rng) = center(5);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let anchor = center.anchor();
    assert_eq!(
        center.float_limit(charger.id).unwrap(),
        FLOAT_LIMIT_DEFAULT_MINOR
    );
    center.set_float_limit(charger.id, 10_000).unwrap();

    let charger_id = charger.id;
    let grant = |center: &mut valuecard_center::Center, asked: u64| {
        center.request_float(charger_id, amount(asked))
    };
    let first = grant(&mut center, 4_000).unwrap();
    let second = grant(&mut center, 9_000).unwrap();
    // The second is cut to what is left under the limit.
    assert_eq!((first.grant_number, first.amount), (1, amount(4_000)));
    assert_eq!((second.grant_number, second.amount), (2, amount(6_000)));
    for grant in [&first, &second] {
        assert_eq!(grant.machine, charger.id);
        assert_eq!(grant.date, today());
        anchor
            .public_key
            .verify(&grant.signed_message(), &grant.signature)
            .unwrap();
        // Survives its encoding as a SAM receives it.
        assert_eq!(&FloatGrant::decode(&grant.encode()).unwrap(), grant);
    }
    // At the limit: nothing more until charges are uploaded.
    assert!(matches!(
        grant(&mut center, 1),
        Err(CenterError::Amount(reason)) if reason.contains("upload")
    ));
    let mut card = MemoryCard::blank(7);
    let charge = charger.write(&center, &mut card, amount(2_500), &mut rng);
    center.upload_writes(&charger.upload(vec![charge])).unwrap();
    let third = grant(&mut center, 5_000).unwrap();
    assert_eq!((third.grant_number, third.amount), (3, amount(2_500)));
    assert_eq!(
        center.float_grants(charger.id).unwrap(),
        vec![first, second, third]
    );

    // Only charge machines, and only for value.
    assert!(matches!(
        center.request_float(payer.id, amount(100)),
        Err(CenterError::NotAuthorized(_))
    ));
    assert!(matches!(
        center.request_float(charger.id, amount(0)),
        Err(CenterError::Amount(_))
    ));
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (totals.float_granted, totals.grants, totals.charged),
        (12_500, 3, 2_500)
    );
    assert_eq!(totals.float_in_machines, 10_000);
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
}

#[test]
fn a_charge_machine_past_its_float_is_alerted_once() {
    let (mut center, mut rng) = center(6);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    center.grant_float(charger.id, amount(1_000)).unwrap();
    let mut card = MemoryCard::blank(8);
    let charges = vec![
        charger.write(&center, &mut card, amount(800), &mut rng),
        charger.write(&center, &mut card, amount(1_600), &mut rng),
    ];
    center.upload_writes(&charger.upload(charges)).unwrap();
    let more = charger.write(&center, &mut card, amount(1_700), &mut rng);
    center.upload_writes(&charger.upload(vec![more])).unwrap();
    let alerts = center.alerts_for(&charger.id.0).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "memcard-float-exceeded");
    let totals = center.memcard_totals().unwrap();
    assert_eq!(totals.charged_beyond_float, 700);
    assert_eq!(totals.status(), MemcardStatus::Excess);
}

#[test]
fn restore_evidence_is_the_newest_state_with_its_writers_certificate() {
    let (mut center, mut rng) = center(7);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    let mut card = MemoryCard::blank(9);
    assert_eq!(center.latest_state(&card.id).unwrap(), None);
    let charge = charger.write(&center, &mut card, amount(3_000), &mut rng);
    let payment = payer.write(&center, &mut card, amount(2_000), &mut rng);
    // Uploaded newest first: the newest state is still the payment's.
    center
        .upload_writes(&payer.upload(vec![payment.clone()]))
        .unwrap();
    center
        .upload_writes(&charger.upload(vec![charge.clone()]))
        .unwrap();
    let evidence = center.latest_state(&card.id).unwrap().unwrap();
    assert_eq!(evidence.record, payment);
    assert_eq!(Some(&evidence.record.written), card.state.as_ref());
    let certificate = center
        .anchor()
        .verify(
            core::slice::from_ref(&evidence.writer_certificate),
            Role::PaymentMachine,
            today(),
        )
        .unwrap();
    assert_eq!(certificate.subject(), payer.id);
    assert_eq!(certificate.signing_key(), &payer.key.public_key());
    // Another card's evidence is its own.
    let mut other = MemoryCard::blank(10);
    let other_charge = charger.write(&center, &mut other, amount(100), &mut rng);
    center
        .upload_writes(&charger.upload(vec![other_charge.clone()]))
        .unwrap();
    assert_eq!(
        center.latest_state(&other.id).unwrap().unwrap().record,
        other_charge
    );
    assert_eq!(
        center.latest_state(&card.id).unwrap().unwrap().record,
        payment
    );
}

/// Two cards, two charge machines (one sealing), two payment machines, charges and
/// payments in turn.
fn series(
    seed: u64,
) -> (
    valuecard_center::Center,
    Vec<(usize, WriteRecord)>,
    Vec<Machine>,
) {
    let (mut center, mut rng) = center(seed);
    let mut machines = vec![
        Machine::install(&mut center, Role::ChargeMachine, &mut rng),
        Machine::install(&mut center, Role::ChargeMachine, &mut rng),
        Machine::install(&mut center, Role::PaymentMachine, &mut rng),
        Machine::install(&mut center, Role::PaymentMachine, &mut rng),
    ];
    machines[1].sealing = true;
    machines[3].sealing = true;
    for charger in &machines[..2] {
        center.grant_float(charger.id, amount(50_000)).unwrap();
    }
    let mut cards = [MemoryCard::blank(11), MemoryCard::blank(12)];
    let mut records = Vec::new();
    let steps: [(usize, usize, i64); 8] = [
        (0, 0, 5_000),
        (1, 1, 2_000),
        (2, 0, -1_200),
        (3, 1, -500),
        (3, 0, -300),
        (1, 0, 1_000),
        (2, 1, -1_500),
        (2, 0, -4_000),
    ];
    for (machine, card, delta) in steps {
        let card = &mut cards[card];
        let after = amount((card.balance.minor() as i64 + delta) as u64);
        let record = machines[machine].write(&center, card, after, &mut rng);
        records.push((machine, record));
    }
    (center, records, machines)
}

fn upload_all(
    center: &mut valuecard_center::Center,
    machines: &[Machine],
    records: &[(usize, WriteRecord)],
) {
    for (machine, record) in records {
        let receipt = center
            .upload_writes(&machines[*machine].upload(vec![record.clone()]))
            .unwrap();
        assert_eq!(receipt.stored + receipt.duplicates, 1, "{receipt:?}");
    }
}

#[test]
fn reconciliation_holds_after_charges_and_payments() {
    let (mut center, records, machines) = series(8);
    upload_all(&mut center, &machines, &records);
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.charged, totals.charges), (8_000, 3));
    assert_eq!((totals.spent, totals.payments), (7_500, 5));
    // Card 11: 5000 - 1200 - 300 + 1000 - 4000 = 500; card 12: 2000 - 500 - 1500 = 0.
    assert_eq!((totals.on_cards, totals.cards), (500, 2));
    assert_eq!(totals.float_granted, 100_000);
    assert_eq!(
        totals.float_granted,
        totals.charged + totals.float_in_machines - totals.charged_beyond_float
    );
    assert_eq!(totals.gaps, 0);
    assert_eq!(totals.expected_on_cards(), 500);
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
    let reconciliation = center.reconciliation().unwrap();
    assert_eq!(reconciliation.memcards, totals);
    assert_eq!(reconciliation.status(), ReconciliationStatus::Reconciled);
    assert_eq!(center.memcard_gap_records().unwrap(), 0);
}

#[test]
fn reconciliation_fails_visibly_while_a_record_is_missing() {
    let (mut center, records, machines) = series(9);
    // The payment of 300 on card 11 (step 5) is held back by its machine.
    let (held_machine, held) = records[4].clone();
    assert_eq!(held.kind, WriteKind::Payment);
    let mut without: Vec<(usize, WriteRecord)> = records.clone();
    without.remove(4);
    upload_all(&mut center, &machines, &without);
    let totals = center.memcard_totals().unwrap();
    assert_eq!(
        (totals.gaps, totals.spent_in_gaps, totals.charged_in_gaps),
        (1, 300, 0)
    );
    assert_eq!(totals.unexplained(), 0);
    assert_eq!(totals.status(), MemcardStatus::UploadsOutstanding);
    assert_eq!(
        center.reconciliation().unwrap().status(),
        ReconciliationStatus::UploadsOutstanding
    );
    // The record after the gap was noted when it arrived.
    assert_eq!(center.memcard_gap_records().unwrap(), 1);

    // The machine uploads: the books close.
    upload_all(&mut center, &machines, &[(held_machine, held)]);
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.gaps, totals.spent_in_gaps), (0, 0));
    assert_eq!(totals.status(), MemcardStatus::Reconciled);
    assert_eq!(
        center.reconciliation().unwrap().status(),
        ReconciliationStatus::Reconciled
    );

    // A charge held back instead: seen as charged in a gap, covered by the float.
    let (mut center, records, machines) = series(10);
    let (_, held) = records[5].clone();
    assert_eq!(held.kind, WriteKind::Charge);
    let mut without = records.clone();
    without.remove(5);
    upload_all(&mut center, &machines, &without);
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.gaps, totals.charged_in_gaps), (1, 1_000));
    assert_eq!(totals.status(), MemcardStatus::UploadsOutstanding);
    assert_eq!(totals.unexplained(), 0);
}

#[test]
fn a_listed_machine_can_no_longer_act_and_its_unrecorded_states_are_alerted() {
    let (mut center, mut rng) = center(12);
    let mut charger = Machine::install(&mut center, Role::ChargeMachine, &mut rng);
    let mut payer = Machine::install(&mut center, Role::PaymentMachine, &mut rng);
    center.grant_float(charger.id, amount(10_000)).unwrap();
    let mut before = MemoryCard::blank(20);
    let uploaded = charger.write(&center, &mut before, amount(1_000), &mut rng);
    center
        .upload_writes(&charger.upload(vec![uploaded]))
        .unwrap();

    // Stolen: listed like a terminal, every other device learns it with its next list sync.
    center.report_stolen_terminal(charger.id).unwrap();
    let delta = center.list_delta_since(0).unwrap();
    assert!(
        delta.entries.iter().any(|entry| matches!(entry,
            valuecard_core::messages::center::ListEntry::Terminal { device_id, .. } if *device_id == charger.id)),
        "{delta:?}"
    );
    // It can no longer upload nor ask for float.
    let mut after = MemoryCard::blank(21);
    let unrecorded = charger.write(&center, &mut after, amount(5_000), &mut rng);
    assert!(matches!(
        center.upload_writes(&charger.upload(vec![unrecorded])),
        Err(CenterError::UnknownDevice(_))
    ));
    assert!(matches!(
        center.request_float(charger.id, amount(1)),
        Err(CenterError::UnknownDevice(_))
    ));

    // A payment from the state it wrote and uploaded before: stored, no alert.
    let fine = payer.write(&center, &mut before, amount(900), &mut rng);
    assert_eq!(
        center
            .upload_writes(&payer.upload(vec![fine]))
            .unwrap()
            .stored,
        1
    );
    assert!(center.alerts_for(&before.id.0).unwrap().is_empty());
    // A payment from a state it wrote after its listing (a machine that had not synced the
    // list served it): stored, since it was served, and alerted.
    let suspicious = payer.write(&center, &mut after, amount(4_000), &mut rng);
    assert_eq!(
        center
            .upload_writes(&payer.upload(vec![suspicious]))
            .unwrap()
            .stored,
        1
    );
    let alerts = center.alerts_for(&after.id.0).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "memcard-listed-writer");
    // The books show the charge nobody uploaded as charged in a gap.
    let totals = center.memcard_totals().unwrap();
    assert_eq!((totals.gaps, totals.charged_in_gaps), (1, 5_000));
    assert_eq!(totals.status(), MemcardStatus::UploadsOutstanding);
}
