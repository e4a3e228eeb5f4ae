//! The settlement service stopped between any two steps of an update and started again on
//! the same SQLite file with the same keys: the client either carries on with the new
//! instance (asking it again for the last answer, as a client whose answer was lost would)
//! or resolves the update with the card. Whatever the cut, the card's value is taken or
//! charged once or not at all, the order is paid at most once, the update ends completed or
//! voided, a charge's approval follows it, and the center's books reconcile with the card.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::restart::Restartable;
use common::steps::{decode, online, problem, read_balance, Manual};
use common::{amount, rig, visa};
use valuecard_core::StatusWord;
use valuecard_settle_http::holder::{Holder, Resolution};
use valuecard_settle_http::wire::{
    AuthenticatedBody, Embodiment, OfferBody, OutcomeBody, UpdateOutcome,
};
use valuecard_settle_http::ProblemKind;

const INITIAL: u64 = 5_000;
const VISA: &str = "4111111111111111";

/// Where the service is stopped, in the order of the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cut {
    /// After `POST /v1/payments` (or `/v1/charges`) answered.
    Started,
    /// After `…/authenticate` answered (the card answered INITIALIZE UPDATE before it).
    Authenticated,
    /// After `…/offer` answered.
    Offered,
    /// After the card applied SETTLE (or CHARGE), before `…/complete`.
    Applied,
    /// After `…/complete` answered.
    Completed,
}

/// How the client goes on with the new instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Continue,
    Resolve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Payment,
    Charge,
}

/// What the client holds when the service stops.
#[derive(Default)]
struct Held {
    answer: Vec<u8>,
    authenticated: Vec<u8>,
    sealed_info: Vec<u8>,
    offer: Vec<u8>,
    pcn: Vec<u8>,
    outcome: Vec<u8>,
}

/// Runs the update up to `cut` with the first instance.
fn run_to(cut: Cut, manual: &Manual, holder: &Holder, reader: &mut common::Reader) -> Held {
    let mut held = Held::default();
    if cut == Cut::Started {
        return held;
    }
    held.answer = manual.initialize(reader);
    held.authenticated = manual.authenticate(holder, &held.answer).unwrap();
    if cut == Cut::Authenticated {
        return held;
    }
    let authenticated: AuthenticatedBody = decode(&held.authenticated);
    held.sealed_info = read_balance(reader, &authenticated);
    held.offer = manual.offer(holder, &held.sealed_info).unwrap();
    if cut == Cut::Offered {
        return held;
    }
    held.pcn = manual.apply(reader, &decode(&held.offer));
    if cut == Cut::Applied {
        return held;
    }
    held.outcome = manual.complete(holder, &held.pcn).unwrap();
    held
}

/// Carries on from `cut` with the new instance, asking it first for the answer the old one
/// gave last: the same bytes come back. Gives the outcome.
fn continue_from(
    cut: Cut,
    held: Held,
    manual: &Manual,
    holder: &Holder,
    reader: &mut common::Reader,
) -> OutcomeBody {
    let mut held = held;
    if cut == Cut::Started {
        held.answer = manual.initialize(reader);
    }
    if cut <= Cut::Authenticated {
        let again = manual.authenticate(holder, &held.answer).unwrap();
        if cut == Cut::Authenticated {
            assert_eq!(again, held.authenticated, "authenticate asked again");
        }
        let authenticated: AuthenticatedBody = decode(&again);
        held.offer = manual
            .offer(holder, &read_balance(reader, &authenticated))
            .unwrap();
    }
    if cut == Cut::Offered {
        let again = manual.offer(holder, &held.sealed_info).unwrap();
        assert_eq!(again, held.offer, "offer asked again");
    }
    if cut <= Cut::Offered {
        held.pcn = manual.apply(reader, &decode(&held.offer));
    }
    let outcome = manual.complete(holder, &held.pcn).unwrap();
    if cut == Cut::Completed {
        assert_eq!(outcome, held.outcome, "complete asked again");
    }
    decode(&outcome)
}

/// One update cut at `cut`, finished by `finish`, and every check of what it left.
fn cut_and_finish(kind: Kind, cut: Cut, finish: Finish, seed: u64) {
    let case = format!("{kind:?} cut {cut:?}, {finish:?}");
    let mut rig = rig(INITIAL, seed);
    let mut system = Restartable::start(&rig);
    let holder = system.holder();
    let order = holder.order(&[("book-1".into(), 1)]).unwrap();
    let value = 1_250;
    let manual = match kind {
        Kind::Payment => Manual::payment(&holder, &mut rig.reader, &order, Embodiment::Signed),
        Kind::Charge => Manual::charge(&holder, &mut rig.reader, amount(value), visa()),
    }
    .unwrap();
    let held = run_to(cut, &manual, &holder, &mut rig.reader);
    let offer = (!held.offer.is_empty()).then(|| decode::<OfferBody>(&held.offer));

    system.restart();
    assert_eq!(system.instances, 2);
    let holder = system.holder();
    let completed = match finish {
        Finish::Continue => {
            let outcome = continue_from(cut, held, &manual, &holder, &mut rig.reader);
            assert_eq!(outcome.outcome, UpdateOutcome::Completed, "{case}");
            true
        }
        Finish::Resolve => {
            let (resolution, _) = holder.resolve(&mut rig.reader, &manual.id).unwrap();
            resolution != Resolution::Voided
        }
    };
    // Resolved with the card, the update completed exactly if the card applied it.
    if finish == Finish::Resolve {
        assert_eq!(completed, cut >= Cut::Applied, "{case}");
    }
    let step = system.step(&manual.id);
    assert_eq!(
        step,
        if completed { "completed" } else { "voided" },
        "{case}"
    );
    // A voided update's sealed update applies nowhere any more.
    if let (false, Some(offer)) = (completed, &offer) {
        let late = online(
            &mut rig.reader,
            manual.instruction(),
            hex::decode(&offer.update).unwrap(),
        );
        assert_ne!(late.sw, StatusWord::SUCCESS, "{case}");
    }

    let expected_balance = match (kind, completed) {
        (_, false) => INITIAL,
        (Kind::Payment, true) => INITIAL - value,
        (Kind::Charge, true) => INITIAL + value,
    };
    assert_eq!(rig.balance(), amount(expected_balance), "{case}");
    match kind {
        Kind::Payment => {
            // The order is paid at most once: a completed one is refused a second
            // settlement; a voided one pays now, once.
            let again = holder.prepare_payment(&mut rig.reader, &order, Embodiment::Signed);
            if completed {
                assert_eq!(problem(again).kind, ProblemKind::Conflict, "{case}");
            } else {
                let prepared = again.unwrap();
                holder
                    .confirm_payment(&mut rig.reader, &order, &prepared)
                    .unwrap();
            }
            let (spent, charged) = rig.report_and_reconcile_pool(&system.pool);
            assert_eq!((spent, charged), (value, 0), "{case}");
            assert_eq!(rig.balance().minor() + spent, INITIAL, "{case}");
            assert_eq!(rig.online_counts(), (1, 0), "{case}");
        }
        Kind::Charge => {
            let approved = if completed { value } else { 0 };
            assert_eq!(rig.authorizer.used(VISA), amount(approved), "{case}");
            let (spent, charged) = rig.report_and_reconcile_pool(&system.pool);
            assert_eq!((spent, charged), (0, approved), "{case}");
            assert_eq!(rig.balance().minor(), INITIAL + charged, "{case}");
            assert_eq!(rig.online_counts(), (0, u64::from(completed)), "{case}");
        }
    }
    // Every update the service holds has ended.
    for (update_kind, step) in common::update_steps(&system.pool) {
        assert!(
            step == "completed" || step == "voided",
            "{case}: a {update_kind} left {step}"
        );
    }
}

fn every_way(cut: Cut, seed: u64) {
    let kinds = [Kind::Payment, Kind::Charge];
    let finishes = [Finish::Continue, Finish::Resolve];
    for (k, kind) in kinds.into_iter().enumerate() {
        for (f, finish) in finishes.into_iter().enumerate() {
            cut_and_finish(kind, cut, finish, seed + 10 * k as u64 + f as u64);
        }
    }
}

#[test]
fn the_service_stopped_after_an_update_started() {
    every_way(Cut::Started, 300);
}

#[test]
fn the_service_stopped_after_the_card_authenticated() {
    every_way(Cut::Authenticated, 400);
}

#[test]
fn the_service_stopped_after_the_offer() {
    every_way(Cut::Offered, 500);
}

#[test]
fn the_service_stopped_after_the_card_applied_the_update() {
    every_way(Cut::Applied, 600);
}

#[test]
fn the_service_stopped_after_the_completion() {
    every_way(Cut::Completed, 700);
}
