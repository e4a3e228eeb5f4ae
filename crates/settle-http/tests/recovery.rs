//! Updates whose end the client did not see: a card pulled (or its session ended by a
//! SELECT) before SETTLE or CHARGE, a PCN lost after the card applied the update, a charge
//! dropped before the card took it, and answers lost and asked for again. Each is judged by
//! the card's balance, the settlement service's stored step, the credit authorizer's
//! approvals and the center's reconciled books: value is charged once or not at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::steps::{decode, id_hex, online, problem, read_balance, Manual};
use common::{amount, rig, step_of, today, visa, Reader, Rig};
use valuecard_core::StatusWord;
use valuecard_settle_http::embedded::{EmbeddedOptions, OnlineSystem};
use valuecard_settle_http::holder::{HolderError, Resolution};
use valuecard_settle_http::wire::{Embodiment, OfferBody, OutcomeBody};
use valuecard_settle_http::ProblemKind;

const VISA: &str = "4111111111111111";

fn start(rig: &Rig) -> OnlineSystem {
    rig.start(&EmbeddedOptions::in_memory(today()))
}

fn one(sku: &str) -> Vec<(String, u32)> {
    vec![(sku.into(), 1)]
}

/// How the card's online session ends before the update reaches it.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    /// The card leaves the reader and comes back (a reset).
    Pulled,
    /// Another application is selected (here the purse, to show the balance).
    PurseSelected,
}

fn interrupt(reader: &mut Reader, how: Interruption) {
    match how {
        Interruption::Pulled => {
            let card = reader.remove().expect("a card in the reader");
            reader.insert(card);
        }
        Interruption::PurseSelected => {
            valuecard_sim::read_purse(reader).unwrap();
        }
    }
}

#[test]
fn a_card_pulled_before_settle_leaves_an_update_that_resolves_to_void() {
    for (seed, how) in [
        (200, Interruption::Pulled),
        (210, Interruption::PurseSelected),
    ] {
        let mut rig = rig(5_000, seed);
        let system = start(&rig);
        let holder = system.holder();
        let order = holder.order(&one("book-1")).unwrap();
        let prepared = holder
            .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
            .unwrap();
        interrupt(&mut rig.reader, how);
        let late = holder.confirm_payment(&mut rig.reader, &order, &prepared);
        assert!(
            matches!(late, Err(HolderError::CardRefused { .. })),
            "{how:?}: {late:?}"
        );
        assert_eq!(rig.balance(), amount(5_000), "{how:?}");

        // The next payment of the card is refused, naming the update left open.
        let next = holder.order(&one("track-1")).unwrap();
        let refused = problem(Manual::payment(
            &holder,
            &mut rig.reader,
            &next,
            Embodiment::Signed,
        ));
        assert_eq!(refused.kind, ProblemKind::Conflict, "{how:?}");
        assert_eq!(
            refused.open_update,
            Some(id_hex(&prepared.settlement_id)),
            "{how:?}: {refused:?}"
        );
        let (resolution, outcome) = holder
            .resolve(&mut rig.reader, &prepared.settlement_id)
            .unwrap();
        assert_eq!(resolution, Resolution::Voided, "{how:?}");
        assert_eq!(outcome.completion, None);
        assert_eq!(
            step_of(&system.settlement_pool, &prepared.settlement_id),
            "voided"
        );
        assert_eq!(rig.balance(), amount(5_000), "{how:?}");

        // Both orders then pay, each once.
        for order in [&order, &next] {
            let prepared = holder
                .prepare_payment(&mut rig.reader, order, Embodiment::Signed)
                .unwrap();
            holder
                .confirm_payment(&mut rig.reader, order, &prepared)
                .unwrap();
        }
        assert_eq!(rig.balance(), amount(3_600), "{how:?}");
        assert_eq!(rig.report_and_reconcile(&system), (1_400, 0), "{how:?}");
        assert_eq!(rig.online_counts(), (2, 0), "{how:?}");
    }
}

#[test]
fn a_lost_pcn_is_recovered_from_the_card_and_counted_once() {
    let mut rig = rig(5_000, 220);
    let system = start(&rig);
    let holder = system.holder();
    let order = holder.order(&one("book-1")).unwrap();
    let manual = Manual::payment(&holder, &mut rig.reader, &order, Embodiment::Signed).unwrap();
    let authenticated = manual.authenticated(&holder, &mut rig.reader);
    let sealed_info = read_balance(&mut rig.reader, &authenticated);
    let offer: OfferBody = decode(&manual.offer(&holder, &sealed_info).unwrap());
    // The card applies the SPC; its PCN never reaches the settlement service.
    let lost = manual.apply(&mut rig.reader, &offer);
    assert_eq!(rig.balance(), amount(3_750));
    assert_eq!(step_of(&system.settlement_pool, &manual.id), "offered");

    let (resolution, outcome) = holder.resolve(&mut rig.reader, &manual.id).unwrap();
    assert_eq!(
        resolution,
        Resolution::Completed {
            balance_after: amount(3_750)
        }
    );
    assert_eq!(step_of(&system.settlement_pool, &manual.id), "completed");
    // The documents are those a PCN would have given: SIG3, the store's receipt SIG4, and
    // the content for it.
    let paid = holder.paid(&order, &outcome).unwrap();
    assert_eq!(paid.receipt.order_number, order.bill.order_number);
    assert_eq!(paid.amount, amount(1_250));
    assert!(!holder.download(&paid).unwrap().is_empty());

    // Resolved again, and the lost PCN found later: the same outcome, nothing new.
    let (_, again) = holder.resolve(&mut rig.reader, &manual.id).unwrap();
    assert_eq!(again, outcome);
    let late: OutcomeBody = decode(&manual.complete(&holder, &lost).unwrap());
    assert_eq!(late, outcome);

    assert_eq!(rig.balance(), amount(3_750));
    assert_eq!(rig.report_and_reconcile(&system), (1_250, 0));
    assert_eq!(rig.online_counts(), (1, 0));
    // A second report tells the center nothing twice.
    assert_eq!(rig.report_and_reconcile(&system), (1_250, 0));
    assert_eq!(rig.online_counts(), (1, 0));
    let log = holder
        .card_log(&manual.card_id, &authenticated.log_token)
        .unwrap();
    assert_eq!(log.entries.len(), 1);
}

#[test]
fn a_charge_dropped_before_the_card_took_it_gives_its_approval_back() {
    let mut rig = rig(1_000, 230);
    let system = start(&rig);
    let holder = system.holder();

    // Pulled after the offer: the card is asked in a new session.
    let prepared = holder
        .prepare_charge(&mut rig.reader, amount(2_000), visa())
        .unwrap();
    assert_eq!(rig.authorizer.used(VISA), amount(2_000));
    interrupt(&mut rig.reader, Interruption::Pulled);
    let late = holder.confirm_charge(&mut rig.reader, &prepared);
    assert!(
        matches!(late, Err(HolderError::CardRefused { .. })),
        "{late:?}"
    );
    let (resolution, _) = holder
        .resolve(&mut rig.reader, &prepared.settlement_id)
        .unwrap();
    assert_eq!(resolution, Resolution::Voided);
    assert_eq!(rig.authorizer.used(VISA), amount(0));

    // Pulled before the offer: nothing was sealed, the update is voided at once.
    let manual = Manual::charge(&holder, &mut rig.reader, amount(700), visa()).unwrap();
    manual.authenticated(&holder, &mut rig.reader);
    assert_eq!(rig.authorizer.used(VISA), amount(700));
    interrupt(&mut rig.reader, Interruption::Pulled);
    let (resolution, _) = holder.resolve(&mut rig.reader, &manual.id).unwrap();
    assert_eq!(resolution, Resolution::Voided);
    assert_eq!(rig.authorizer.used(VISA), amount(0));

    // Dropped before the offer and never resolved: the holder's next update voids it, and
    // its approval must come back all the same.
    let manual = Manual::charge(&holder, &mut rig.reader, amount(300), visa()).unwrap();
    manual.authenticated(&holder, &mut rig.reader);
    assert_eq!(rig.authorizer.used(VISA), amount(300));
    let order = holder.order(&one("track-1")).unwrap();
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    assert_eq!(step_of(&system.settlement_pool, &manual.id), "voided");
    assert_eq!(rig.authorizer.used(VISA), amount(0));
    holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();

    assert_eq!(rig.balance(), amount(850));
    assert_eq!(rig.report_and_reconcile(&system), (150, 0));
    assert_eq!(rig.online_counts(), (1, 0));
}

#[test]
fn a_recovery_step_asked_out_of_order_ends_a_charge_with_its_approval_released() {
    let mut rig = rig(1_000, 235);
    let system = start(&rig);
    let holder = system.holder();
    // A charge authenticated but not offered; the client skips `recover` (which would void
    // it at once) and goes straight to a later step of the recovery.
    for step in ["authenticate", "query"] {
        let manual = Manual::charge(&holder, &mut rig.reader, amount(400), visa()).unwrap();
        let answer = manual.initialize(&mut rig.reader);
        manual.authenticate(&holder, &answer).unwrap();
        assert_eq!(rig.authorizer.used(VISA), amount(400), "{step}");
        let path = format!("/v1/updates/{}/recover/{step}", id_hex(&manual.id));
        let body = match step {
            "authenticate" => serde_json::json!({ "card_answer": hex::encode(&answer) }),
            _ => serde_json::json!({ "sealed": hex::encode(&answer) }),
        };
        let refused = holder.settlement.post_raw(&path, &body);
        assert_eq!(problem(refused).kind, ProblemKind::Conflict, "{step}");
        // Whatever the step did to the update, the approval follows it.
        let stored = step_of(&system.settlement_pool, &manual.id);
        let expected = if stored == "voided" { 0 } else { 400 };
        assert_eq!(
            rig.authorizer.used(VISA),
            amount(expected),
            "{step}: {stored}"
        );
        let (resolution, _) = holder.resolve(&mut rig.reader, &manual.id).unwrap();
        assert_eq!(resolution, Resolution::Voided, "{step}");
        assert_eq!(rig.authorizer.used(VISA), amount(0), "{step}");
    }
    assert_eq!(rig.balance(), amount(1_000));
    assert_eq!(rig.report_and_reconcile(&system), (0, 0));
}

#[test]
fn a_payment_step_asked_again_answers_the_same_and_moves_nothing_twice() {
    let mut rig = rig(5_000, 240);
    let system = start(&rig);
    let holder = system.holder();
    let order = holder.order(&one("album-1")).unwrap();
    let manual = Manual::payment(&holder, &mut rig.reader, &order, Embodiment::Signed).unwrap();

    let answer = manual.initialize(&mut rig.reader);
    let authenticated = manual.authenticate(&holder, &answer).unwrap();
    assert_eq!(
        manual.authenticate(&holder, &answer).unwrap(),
        authenticated
    );
    let sealed_info = read_balance(&mut rig.reader, &decode(&authenticated));
    let offer = manual.offer(&holder, &sealed_info).unwrap();
    assert_eq!(manual.offer(&holder, &sealed_info).unwrap(), offer);
    // Once offered, the authentication is not done again.
    let again = manual.authenticate(&holder, &answer);
    assert_eq!(problem(again).kind, ProblemKind::Conflict);

    let pcn = manual.apply(&mut rig.reader, &decode::<OfferBody>(&offer));
    let outcome = manual.complete(&holder, &pcn).unwrap();
    assert_eq!(manual.complete(&holder, &pcn).unwrap(), outcome);
    let outcome: OutcomeBody = decode(&outcome);
    assert_eq!(outcome.balance_after, Some(4_010));
    // The SPC sent again after its PCN changes nothing either.
    let replayed = online(
        &mut rig.reader,
        valuecard_core::messages::online::ins::SETTLE,
        hex::decode(decode::<OfferBody>(&offer).update).unwrap(),
    );
    assert_ne!(replayed.sw, StatusWord::SUCCESS);

    assert_eq!(rig.balance(), amount(4_010));
    assert_eq!(rig.report_and_reconcile(&system), (990, 0));
    assert_eq!(rig.online_counts(), (1, 0));
}

#[test]
fn a_charge_asked_again_after_a_lost_answer_holds_one_approval_and_charges_once() {
    let mut rig = rig(1_000, 250);
    let system = start(&rig);
    let holder = system.holder();

    // The answer to POST /v1/charges is lost; the client asks again, which starts a new
    // charge and voids the first.
    let lost = Manual::charge(&holder, &mut rig.reader, amount(500), visa()).unwrap();
    let charge = Manual::charge(&holder, &mut rig.reader, amount(500), visa()).unwrap();
    assert_ne!(lost.id, charge.id);
    assert_eq!(step_of(&system.settlement_pool, &lost.id), "voided");
    assert_eq!(rig.authorizer.used(VISA), amount(500));

    let answer = charge.initialize(&mut rig.reader);
    let authenticated = charge.authenticate(&holder, &answer).unwrap();
    assert_eq!(
        charge.authenticate(&holder, &answer).unwrap(),
        authenticated
    );
    let sealed_info = read_balance(&mut rig.reader, &decode(&authenticated));
    let offer = charge.offer(&holder, &sealed_info).unwrap();
    assert_eq!(charge.offer(&holder, &sealed_info).unwrap(), offer);
    let pcn = charge.apply(&mut rig.reader, &decode::<OfferBody>(&offer));
    let outcome = charge.complete(&holder, &pcn).unwrap();
    assert_eq!(charge.complete(&holder, &pcn).unwrap(), outcome);
    assert_eq!(decode::<OutcomeBody>(&outcome).balance_after, Some(1_500));

    assert_eq!(rig.authorizer.used(VISA), amount(500));
    assert_eq!(rig.balance(), amount(1_500));
    assert_eq!(rig.report_and_reconcile(&system), (0, 500));
    assert_eq!(rig.online_counts(), (0, 1));
}
