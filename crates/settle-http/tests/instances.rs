//! Two instances of the settlement service on one PostgreSQL database: an update started at
//! one instance is finished at the other (nothing of it lives in a process), holders buy
//! through both at once, and when both instances are asked at the same moment to start an
//! update of the same card, or to settle the same order, the database lets exactly one
//! through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../center/tests/scratch/mod.rs"]
mod scratch;

use common::restart::Restartable;
use common::{amount, rig};
use valuecard_settle_http::holder::HolderError;
use valuecard_settle_http::wire::{Embodiment, PaymentRequestBody, StartedBody};
use valuecard_settle_http::{DatabaseLocation, Problem, ProblemKind};

#[test]
fn two_instances_share_one_database_and_its_uniqueness() {
    let Some(scratch) = scratch::scratch("settle_instances") else {
        return;
    };
    let mut rig = rig(6_000, 70);
    let other = rig.issue_another(6_000);
    let system = Restartable::start_on(&rig, Some(DatabaseLocation::Postgres(scratch.url.clone())));
    let first = system.holder();
    let (_second_instance, second) = system.another_instance();

    // An update started at the first instance is completed at the second.
    let order = first.order(&[("book-1".into(), 1)]).unwrap();
    let prepared = first
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    let paid = second
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    assert_eq!(paid.balance_after, amount(6_000 - 1_250));

    // Two holders buy at once, each through its own instance.
    std::thread::scope(|scope| {
        let (one, two) = (&first, &second);
        let reader = &mut rig.reader;
        let other_reader = &mut rig.others[other];
        let a = scope.spawn(move || {
            for _ in 0..5 {
                let order = one.order(&[("track-1".into(), 1)]).unwrap();
                let prepared = one
                    .prepare_payment(reader, &order, Embodiment::Signed)
                    .unwrap();
                one.confirm_payment(reader, &order, &prepared).unwrap();
            }
        });
        let b = scope.spawn(move || {
            for _ in 0..5 {
                let order = two.order(&[("album-1".into(), 1)]).unwrap();
                let prepared = two
                    .prepare_payment(other_reader, &order, Embodiment::Sealed)
                    .unwrap();
                two.confirm_payment(other_reader, &order, &prepared)
                    .unwrap();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
    });

    // The same order asked of both instances at once: whichever came second either is
    // refused or voided the first (it had sealed nothing), so at most one update of the card
    // is unresolved and the order is in at most one live settlement.
    let order = first.order(&[("book-2".into(), 1)]).unwrap();
    let card_id = valuecard_sim::read_purse(&mut rig.reader).unwrap().card_id;
    let request = PaymentRequestBody {
        bill: hex::encode(&order.encoded),
        bill_signature: hex::encode(order.signature.0),
        card_id: hex::encode(card_id.as_bytes()),
        embodiment: Embodiment::Signed,
    };
    let outcomes: Vec<Result<StartedBody, HolderError>> = std::thread::scope(|scope| {
        let racers: Vec<_> = [&first, &second]
            .into_iter()
            .map(|holder| {
                let request = request.clone();
                scope.spawn(move || {
                    holder
                        .settlement
                        .post::<_, StartedBody>("/v1/payments", &request)
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect()
    });
    for outcome in &outcomes {
        assert!(
            matches!(
                outcome,
                Ok(_)
                    | Err(HolderError::Service(Problem {
                        kind: ProblemKind::Conflict,
                        ..
                    }))
            ),
            "{outcome:?}"
        );
    }
    let started: Vec<[u8; 16]> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().ok())
        .map(|started| {
            hex::decode(&started.settlement_id)
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert!(!started.is_empty(), "{outcomes:?}");
    let live: Vec<&[u8; 16]> = started
        .iter()
        .filter(|id| system.step(id) != "voided")
        .collect();
    assert_eq!(live.len(), 1, "{outcomes:?}");
    // The live one never sealed anything: resolving it with the card voids it.
    second.resolve(&mut rig.reader, live[0]).unwrap();
    assert_eq!(system.step(live[0]), "voided");
    let (spent, charged) = rig.report_and_reconcile_pool(&system.pool);
    assert_eq!((spent, charged), (1_250 + 5 * 150 + 5 * 990, 0));
}
