//! The online settlement system over HTTPS with a real (emulated) card: a purchase from a
//! member store of the mall in both embodiments, content delivered for the receipt, a
//! charge, the card's log, and the center's one reconciliation over all of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{amount, rig, today, visa};
use valuecard_settle_http::embedded::EmbeddedOptions;
use valuecard_settle_http::holder::{HolderError, Resolution};
use valuecard_settle_http::wire::{CreditCardBody, Embodiment};
use valuecard_settle_http::ProblemKind;

fn books() -> Vec<(String, u32)> {
    vec![("book-1".into(), 1), ("book-2".into(), 2)]
}

#[test]
fn a_holder_buys_content_from_a_member_store_and_charges_the_card() {
    let mut rig = rig(5_000, 10);
    let system = rig.start(&EmbeddedOptions::in_memory(today()));
    let holder = system.holder();

    let catalog = holder.catalog().unwrap();
    assert_eq!(catalog.store_name, "Valuecard Mall");
    assert!(catalog
        .items
        .iter()
        .any(|item| item.member_store == "Chapter & Chip Books"));
    let estimate = holder.estimate(&books()).unwrap();
    assert_eq!(estimate.total, 1250 + 2 * 890);
    assert_eq!(estimate.order_number, None, "an estimate binds nobody");

    let order = holder.order(&books()).unwrap();
    assert_eq!(order.bill.total, amount(3_030));
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    // ST15: what the holder sees before the card is touched.
    assert_eq!(
        (prepared.balance, prepared.total, prepared.balance_after),
        (amount(5_000), amount(3_030), amount(1_970))
    );

    let paid = holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    assert_eq!(paid.balance_after, amount(1_970));
    assert_eq!(paid.receipt.order_number, order.bill.order_number);
    assert_eq!(rig.balance(), amount(1_970));
    let content = String::from_utf8(holder.download(&paid).unwrap()).unwrap();
    assert!(content.contains("The Purse and the Card"), "{content}");

    // A charge of 20.00 against a credit card.
    let charge = holder
        .prepare_charge(&mut rig.reader, amount(2_000), visa())
        .unwrap();
    assert_eq!(
        (charge.balance, charge.balance_after),
        (amount(1_970), amount(3_970))
    );
    assert!(charge.authorization.starts_with('T'));
    assert_eq!(
        holder.confirm_charge(&mut rig.reader, &charge).unwrap(),
        Resolution::Completed {
            balance_after: amount(3_970)
        }
    );
    assert_eq!(rig.balance(), amount(3_970));
    assert_eq!(rig.authorizer.used("4111111111111111"), amount(2_000));

    // The information server's log of the card, read with the token of its session.
    let log = holder.card_log(&charge.card_id, &charge.log_token).unwrap();
    let kinds: Vec<_> = log
        .entries
        .iter()
        .map(|entry| entry.kind.as_str())
        .collect();
    assert_eq!(kinds, ["payment", "charge"]);
    let stranger = holder.card_log(&charge.card_id, &"00".repeat(32));
    assert!(
        matches!(stranger, Err(HolderError::Service(ref p)) if p.kind == ProblemKind::SignatureFailure),
        "{stranger:?}"
    );

    // One balance, one reconciliation.
    assert_eq!(rig.report_and_reconcile(&system), (3_030, 2_000));
    system.shutdown();
}

#[test]
fn the_sealed_embodiment_pays_after_the_card_itself_shows_the_offer() {
    let mut rig = rig(2_000, 20);
    let system = rig.start(&EmbeddedOptions::in_memory(today()));
    let holder = system.holder();
    let order = holder.order(&[("album-1".into(), 1)]).unwrap();
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Sealed)
        .unwrap();
    assert_eq!(prepared.embodiment, Embodiment::Sealed);
    assert_eq!(
        (prepared.balance, prepared.balance_after),
        (amount(2_000), amount(1_010))
    );
    let paid = holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    assert_eq!(paid.amount, amount(990));
    assert_eq!(rig.balance(), amount(1_010));
    assert_eq!(rig.report_and_reconcile(&system), (990, 0));
}

#[test]
fn a_declined_charge_and_an_insufficient_balance_change_nothing() {
    let mut rig = rig(1_000, 30);
    let system = rig.start(&EmbeddedOptions::in_memory(today()));
    let holder = system.holder();

    let declined = holder.prepare_charge(
        &mut rig.reader,
        amount(500),
        CreditCardBody {
            number: "4000 0000 0000 0002".into(),
            ..visa()
        },
    );
    assert!(
        matches!(declined, Err(HolderError::Service(ref p)) if p.kind == ProblemKind::Declined),
        "{declined:?}"
    );
    // Over this card's limit of 30.00.
    let over = holder.prepare_charge(
        &mut rig.reader,
        amount(3_500),
        CreditCardBody {
            number: "5555 5555 5555 4444".into(),
            ..visa()
        },
    );
    assert!(
        matches!(over, Err(HolderError::Service(ref p)) if p.kind == ProblemKind::Declined),
        "{over:?}"
    );
    let mistyped = holder.prepare_charge(
        &mut rig.reader,
        amount(500),
        CreditCardBody {
            number: "4111 1111 1111 1112".into(),
            ..visa()
        },
    );
    assert!(
        matches!(mistyped, Err(HolderError::Service(ref p)) if p.kind == ProblemKind::BadRequest),
        "{mistyped:?}"
    );

    let order = holder.order(&[("book-1".into(), 1)]).unwrap();
    let short = holder.prepare_payment(&mut rig.reader, &order, Embodiment::Signed);
    assert!(
        matches!(short, Err(HolderError::Service(ref p)) if p.kind == ProblemKind::InsufficientBalance),
        "{short:?}"
    );
    assert_eq!(rig.balance(), amount(1_000));
    // The insufficient payment was voided, so the card is free for the next update.
    let order = holder.order(&[("track-1".into(), 1)]).unwrap();
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    assert_eq!(rig.balance(), amount(850));
    assert_eq!(rig.report_and_reconcile(&system), (150, 0));
}
