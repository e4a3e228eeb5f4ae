//! Attacks on the online settlement protocol over HTTPS, each judged by the refusal it gets
//! and by what did not happen: the card's balance unchanged, no update the center is told
//! of, nothing the store delivers. Forged and altered bills (SIG1), a bill swapped between
//! the store and the settlement system (SIG2 checked against the client's own bill), forged
//! offers, completions, receipts and charges (SIG2, SIG3, SIG4, SIG5), a replayed SPC, a
//! card's sealed answer carried into another session, and another card's log token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::steps::{
    assert_problem, decode, install_key, online, online_ok, problem, read_balance, Manual,
};
use common::{amount, rig, today, visa};
use valuecard_core::crypto::{PublicKey, Signature, SigningKeyPair};
use valuecard_core::messages::online::{
    ins, BalanceInfo, Bill, Receipt, SettlementCompletion, SettlementId,
};
use valuecard_core::StatusWord;
use valuecard_settle::application::{ClientChecks, DocumentError};
use valuecard_settle_http::embedded::{EmbeddedOptions, OnlineSystem};
use valuecard_settle_http::holder::{HolderError, Order, Resolution};
use valuecard_settle_http::wire::{
    CompletionBody, ContentRequestBody, Embodiment, OfferBody, OutcomeBody, ReceiptBody,
    UpdateOutcome,
};
use valuecard_settle_http::ProblemKind;

fn start(rig: &common::Rig) -> OnlineSystem {
    rig.start(&EmbeddedOptions::in_memory(today()))
}

fn one(sku: &str) -> Vec<(String, u32)> {
    vec![(sku.into(), 1)]
}

/// The same signature with one bit changed.
fn flipped(signature: &Signature) -> Signature {
    let mut bytes = signature.0;
    bytes[17] ^= 0x01;
    Signature(bytes)
}

fn bytes_of(text: Option<&String>) -> Vec<u8> {
    hex::decode(text.expect("the field is present")).unwrap()
}

fn signature_of(text: Option<&String>) -> Signature {
    Signature::from_slice(&bytes_of(text)).unwrap()
}

/// The offer's parts as the client checks them: BI, the sealed update, the signature.
fn offer_parts(offer: &OfferBody) -> (Vec<u8>, Vec<u8>, Signature) {
    (
        bytes_of(offer.balance_info.as_ref()),
        hex::decode(&offer.update).unwrap(),
        signature_of(offer.signature.as_ref()),
    )
}

fn update_count(system: &OnlineSystem) -> usize {
    common::update_steps(&system.settlement_pool).len()
}

#[test]
fn a_bill_altered_after_the_store_signed_it_or_signed_by_another_key_is_refused() {
    let mut rig = rig(5_000, 100);
    let system = start(&rig);
    let holder = system.holder();
    let order = holder.order(&one("book-1")).unwrap();
    assert_eq!(order.bill.total, amount(1_250));

    // The line's price and the total lowered together, so that the bill still adds up and
    // decodes: only SIG1 stands in the way.
    let mut cheaper = order.bill.clone();
    cheaper.lines[0].unit_price = amount(1);
    cheaper.total = amount(1);
    let altered = cheaper.encode();
    assert_eq!(Bill::decode(&altered).unwrap(), cheaper);
    let forged = Manual::payment_of(
        &holder,
        &mut rig.reader,
        &altered,
        &order.signature.0,
        Embodiment::Signed,
    );
    assert_problem(forged, ProblemKind::SignatureFailure);
    // The holder's own client forwards what it was given: refused the same way.
    let tampered = Order {
        bill: cheaper.clone(),
        encoded: altered.clone(),
        ..order.clone()
    };
    let prepared = holder.prepare_payment(&mut rig.reader, &tampered, Embodiment::Signed);
    assert_problem(prepared, ProblemKind::SignatureFailure);

    // Signed by a key that is not the registered store's, the altered bill and the genuine
    // one alike.
    let stranger = SigningKeyPair::generate(&mut rand_core::OsRng);
    for bill in [&cheaper, &order.bill] {
        let signature = stranger.sign(&bill.signed_message());
        let forged = Manual::payment_of(
            &holder,
            &mut rig.reader,
            &bill.encode(),
            &signature.0,
            Embodiment::Sealed,
        );
        assert_problem(forged, ProblemKind::SignatureFailure);
    }

    // Nothing started, nothing charged; the genuine bill still pays, once.
    assert_eq!(update_count(&system), 0);
    assert_eq!(rig.balance(), amount(5_000));
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    assert_eq!(rig.balance(), amount(3_750));
    assert_eq!(rig.report_and_reconcile(&system), (1_250, 0));
}

#[test]
fn a_bill_swapped_on_its_way_to_the_settlement_service_fails_sig2_before_the_card_is_touched() {
    let mut rig = rig(5_000, 110);
    let system = start(&rig);
    let holder = system.holder();
    let checks = ClientChecks {
        application_key: system.application_key,
    };
    // The holder ordered A; B is a genuine bill of the same store for another order.
    let bill_a = holder.order(&one("track-1")).unwrap();
    let bill_b = holder.order(&one("album-1")).unwrap();

    let swapped = Manual::payment(&holder, &mut rig.reader, &bill_b, Embodiment::Signed).unwrap();
    let offer = swapped.offered(&holder, &mut rig.reader);
    let (info, update, signature) = offer_parts(&offer);
    assert_eq!(
        checks.offer(&swapped.id, &bill_a.bill, &info, &update, &signature),
        Err(DocumentError::ForgedOffer)
    );
    // The same offer verifies against the bill the service really got: the refusal is the
    // swap's, not a broken signature's.
    let shown = checks
        .offer(&swapped.id, &bill_b.bill, &info, &update, &signature)
        .unwrap();
    assert_eq!(shown.balance, amount(5_000));
    let (resolution, _) = holder.resolve(&mut rig.reader, &swapped.id).unwrap();
    assert_eq!(resolution, Resolution::Voided);

    // The holder's client, holding bill A while B's bytes go out, stops at the offer.
    let mixed = Order {
        encoded: bill_b.encoded.clone(),
        signature: bill_b.signature,
        ..bill_a.clone()
    };
    let refused = holder.prepare_payment(&mut rig.reader, &mixed, Embodiment::Signed);
    assert!(
        matches!(
            refused,
            Err(HolderError::Document(DocumentError::ForgedOffer))
        ),
        "{refused:?}"
    );
    assert_eq!(rig.balance(), amount(5_000));

    // Both orders are still unpaid; A pays for A.
    let prepared = holder
        .prepare_payment(&mut rig.reader, &bill_a, Embodiment::Signed)
        .unwrap();
    assert_eq!(prepared.total, amount(150));
    holder
        .confirm_payment(&mut rig.reader, &bill_a, &prepared)
        .unwrap();
    assert_eq!(rig.balance(), amount(4_850));
    assert_eq!(rig.report_and_reconcile(&system), (150, 0));
    assert_eq!(rig.online_counts(), (1, 0));
}

#[test]
fn forged_offers_completions_receipts_and_charges_are_refused() {
    let mut rig = rig(5_000, 120);
    let system = start(&rig);
    let holder = system.holder();
    let checks = ClientChecks {
        application_key: system.application_key,
    };
    let order = holder.order(&one("book-1")).unwrap();
    let other = holder.order(&one("book-2")).unwrap();
    let manual = Manual::payment(&holder, &mut rig.reader, &order, Embodiment::Signed).unwrap();
    let offer = manual.offered(&holder, &mut rig.reader);

    // SIG2: the genuine offer checks; a changed bit of the signature, of BI or of the
    // sealed SPC does not.
    let (info, update, signature) = offer_parts(&offer);
    checks
        .offer(&manual.id, &order.bill, &info, &update, &signature)
        .unwrap();
    let mut richer = BalanceInfo::decode(&info).unwrap();
    richer.balance = amount(50_000);
    let mut other_update = update.clone();
    other_update[5] ^= 0x01;
    for (info, update, signature) in [
        (info.clone(), update.clone(), flipped(&signature)),
        (richer.encode(), update.clone(), signature),
        (info.clone(), other_update, signature),
    ] {
        assert_eq!(
            checks.offer(&manual.id, &order.bill, &info, &update, &signature),
            Err(DocumentError::ForgedOffer)
        );
    }

    let pcn = manual.apply(&mut rig.reader, &offer);
    let outcome: OutcomeBody = decode(&manual.complete(&holder, &pcn).unwrap());
    let completion = SettlementCompletion::decode(&bytes_of(outcome.completion.as_ref())).unwrap();
    let completion_signature = signature_of(outcome.completion_signature.as_ref());

    // SIG3 at the client: genuine, then a changed bit, then a lowered amount.
    checks
        .completion(&manual.id, &order.bill, &completion, &completion_signature)
        .unwrap();
    let mut lowered = completion.clone();
    lowered.amount = amount(1);
    for (document, signature) in [
        (&completion, flipped(&completion_signature)),
        (&lowered, completion_signature),
    ] {
        assert_eq!(
            checks.completion(&manual.id, &order.bill, document, &signature),
            Err(DocumentError::ForgedCompletion)
        );
    }

    // SIG3 at the store: an altered completion gets no receipt.
    let receipt_at = |number: u64, document: &SettlementCompletion, signature: &Signature| {
        holder.store.post::<_, ReceiptBody>(
            &format!("/v1/orders/{number}/completion"),
            &CompletionBody {
                completion: hex::encode(document.encode()),
                signature: hex::encode(signature.0),
            },
        )
    };
    let number = order.bill.order_number;
    assert_problem(
        receipt_at(number, &completion, &flipped(&completion_signature)),
        ProblemKind::SignatureFailure,
    );
    assert_problem(
        receipt_at(number, &lowered, &completion_signature),
        ProblemKind::SignatureFailure,
    );
    // A genuine completion of this order buys no receipt for another order.
    assert_problem(
        receipt_at(other.bill.order_number, &completion, &completion_signature),
        ProblemKind::Conflict,
    );
    // The genuine completion again: the same receipt the settlement service got.
    let genuine = receipt_at(number, &completion, &completion_signature).unwrap();
    assert_eq!(Some(&genuine.receipt), outcome.receipt.as_ref());
    assert_eq!(Some(&genuine.signature), outcome.receipt_signature.as_ref());

    // SIG4: the receipt under the store's registered key; altered, it is refused.
    let receipt = Receipt::decode(&bytes_of(outcome.receipt.as_ref())).unwrap();
    let receipt_signature = signature_of(outcome.receipt_signature.as_ref());
    checks
        .receipt(&system.store_key, &completion, &receipt, &receipt_signature)
        .unwrap();
    let mut inflated = receipt.clone();
    inflated.amount = amount(9_999);
    let stranger: PublicKey = SigningKeyPair::generate(&mut rand_core::OsRng).public_key();
    for (key, document, signature) in [
        (system.store_key, &receipt, flipped(&receipt_signature)),
        (system.store_key, &inflated, receipt_signature),
        (stranger, &receipt, receipt_signature),
    ] {
        assert_eq!(
            checks.receipt(&key, &completion, document, &signature),
            Err(DocumentError::ForgedReceipt)
        );
    }
    // The content is the receipt's only: a changed bit fetches nothing.
    let content = holder.store.post_raw(
        &format!("/v1/orders/{number}/content"),
        &ContentRequestBody {
            receipt_signature: hex::encode(flipped(&receipt_signature).0),
        },
    );
    assert_problem(content, ProblemKind::SignatureFailure);

    // SIG5 over a charge's sealed value update, checked before it goes to the card.
    let charge = Manual::charge(&holder, &mut rig.reader, amount(2_000), visa()).unwrap();
    let offer = charge.offered(&holder, &mut rig.reader);
    let update = hex::decode(&offer.update).unwrap();
    let signature = signature_of(offer.signature.as_ref());
    let code = offer.authorization.clone().unwrap();
    let card_id = charge.card_id;
    checks
        .charge(
            &charge.id,
            &card_id,
            amount(2_000),
            &code,
            &update,
            &signature,
        )
        .unwrap();
    let cases: [(SettlementId, u64, &str, Signature); 4] = [
        (charge.id, 2_000, &code, flipped(&signature)),
        (charge.id, 20_000, &code, signature),
        (charge.id, 2_000, "T-OTHER", signature),
        (manual.id, 2_000, &code, signature),
    ];
    for (id, minor, code, signature) in cases {
        assert_eq!(
            checks.charge(&id, &card_id, amount(minor), code, &update, &signature),
            Err(DocumentError::ForgedCharge)
        );
    }
    // The holder drops the charge: it is voided and its approval given back.
    assert_eq!(rig.authorizer.used("4111111111111111"), amount(2_000));
    let (resolution, _) = holder.resolve(&mut rig.reader, &charge.id).unwrap();
    assert_eq!(resolution, Resolution::Voided);
    assert_eq!(rig.authorizer.used("4111111111111111"), amount(0));

    assert_eq!(rig.balance(), amount(3_750));
    assert_eq!(rig.report_and_reconcile(&system), (1_250, 0));
    assert_eq!(rig.online_counts(), (1, 0));
}

#[test]
fn a_replayed_spc_applies_nowhere_and_an_order_is_settled_once() {
    let mut rig = rig(5_000, 130);
    let system = start(&rig);
    let holder = system.holder();
    let order = holder.order(&one("track-1")).unwrap();
    let manual = Manual::payment(&holder, &mut rig.reader, &order, Embodiment::Signed).unwrap();
    let offer = manual.offered(&holder, &mut rig.reader);
    let spc = hex::decode(&offer.update).unwrap();
    let pcn = online_ok(&mut rig.reader, ins::SETTLE, spc.clone());

    // The same SPC again in the same session.
    let again = online(&mut rig.reader, ins::SETTLE, spc.clone());
    assert_ne!(again.sw, StatusWord::SUCCESS);
    let outcome: OutcomeBody = decode(&manual.complete(&holder, &pcn).unwrap());
    assert_eq!(outcome.outcome, UpdateOutcome::Completed);
    assert_eq!(rig.balance(), amount(4_850));

    // In a new session, opened for another payment of the same card.
    let order_2 = holder.order(&one("book-2")).unwrap();
    let second = Manual::payment(&holder, &mut rig.reader, &order_2, Embodiment::Signed).unwrap();
    let authenticated = second.authenticated(&holder, &mut rig.reader);
    read_balance(&mut rig.reader, &authenticated);
    let replayed = online(&mut rig.reader, ins::SETTLE, spc.clone());
    assert_eq!(replayed.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // In a session only half open.
    install_key(&holder, &mut rig.reader);
    second.initialize(&mut rig.reader);
    let half_open = online(&mut rig.reader, ins::SETTLE, spc);
    assert_ne!(half_open.sw, StatusWord::SUCCESS);
    assert_eq!(rig.balance(), amount(4_850));
    let (resolution, _) = holder.resolve(&mut rig.reader, &second.id).unwrap();
    assert_eq!(resolution, Resolution::Voided);

    // The paid order's bill a second time: one settlement per order.
    let twice = Manual::payment(&holder, &mut rig.reader, &order, Embodiment::Signed);
    assert_problem(twice, ProblemKind::Conflict);
    let twice = holder.prepare_payment(&mut rig.reader, &order, Embodiment::Sealed);
    assert_problem(twice, ProblemKind::Conflict);
    assert_eq!(rig.balance(), amount(4_850));
    assert_eq!(rig.report_and_reconcile(&system), (150, 0));
    assert_eq!(rig.online_counts(), (1, 0));
}

#[test]
fn a_sealed_answer_of_another_session_or_card_does_not_open() {
    let mut rig = rig(5_000, 140);
    let other = rig.issue_another(2_000);
    let system = start(&rig);
    let holder = system.holder();
    let order_a = holder.order(&one("track-1")).unwrap();
    let order_b = holder.order(&one("book-2")).unwrap();

    let a = Manual::payment(&holder, &mut rig.reader, &order_a, Embodiment::Signed).unwrap();
    let authenticated_a = a.authenticated(&holder, &mut rig.reader);
    let info_a = read_balance(&mut rig.reader, &authenticated_a);
    // B starts for the same card: A, which sealed nothing yet, is voided.
    let b = Manual::payment(&holder, &mut rig.reader, &order_b, Embodiment::Signed).unwrap();
    assert_eq!(
        common::step_of(&system.settlement_pool, &a.id),
        "voided",
        "starting B voids A"
    );
    let authenticated_b = b.authenticated(&holder, &mut rig.reader);
    let info_b = read_balance(&mut rig.reader, &authenticated_b);

    // A's BI under B's session key.
    assert_problem(b.offer(&holder, &info_a), ProblemKind::SignatureFailure);
    assert_problem(a.offer(&holder, &info_a), ProblemKind::Conflict);
    // Another card's BI, in its own session for a payment of its own.
    let order_c = holder.order(&one("album-1")).unwrap();
    let c = Manual::payment(
        &holder,
        &mut rig.others[other],
        &order_c,
        Embodiment::Signed,
    )
    .unwrap();
    let authenticated_c = c.authenticated(&holder, &mut rig.others[other]);
    let info_c = read_balance(&mut rig.others[other], &authenticated_c);
    assert_problem(b.offer(&holder, &info_c), ProblemKind::SignatureFailure);
    assert_problem(c.offer(&holder, &info_b), ProblemKind::SignatureFailure);
    assert_eq!(
        common::step_of(&system.settlement_pool, &b.id),
        "authenticated"
    );

    // The foreign answers moved nothing: B's own BI opens, in the session the card still
    // holds, and B pays once.
    let offer: OfferBody = decode(&b.offer(&holder, &info_b).unwrap());
    let pcn = b.apply(&mut rig.reader, &offer);
    // BI where the PCN belongs does not open either.
    assert_problem(b.complete(&holder, &info_b), ProblemKind::SignatureFailure);
    let outcome: OutcomeBody = decode(&b.complete(&holder, &pcn).unwrap());
    assert_eq!(outcome.balance_after, Some(4_110));
    let (resolution, _) = holder.resolve(&mut rig.others[other], &c.id).unwrap();
    assert_eq!(resolution, Resolution::Voided);
    assert_eq!(rig.balance(), amount(4_110));
    assert_eq!(rig.report_and_reconcile(&system), (890, 0));
    assert_eq!(rig.online_counts(), (1, 0));
}

#[test]
fn a_cards_log_is_read_with_its_own_token_only() {
    let mut rig = rig(5_000, 150);
    let other = rig.issue_another(2_000);
    let system = start(&rig);
    let holder = system.holder();
    let pay = |reader: &mut common::Reader, sku: &str| {
        let order = holder.order(&one(sku)).unwrap();
        let prepared = holder
            .prepare_payment(reader, &order, Embodiment::Signed)
            .unwrap();
        holder.confirm_payment(reader, &order, &prepared).unwrap();
        (prepared.card_id, prepared.log_token)
    };
    let (card_1, token_1) = pay(&mut rig.reader, "track-1");
    let (card_2, token_2) = pay(&mut rig.others[other], "album-1");
    assert_ne!(card_1, card_2);
    assert_ne!(token_1, token_2);

    for (card, token) in [(&card_1, &token_1), (&card_2, &token_2)] {
        let log = holder.card_log(card, token).unwrap();
        assert_eq!(log.entries.len(), 1);
    }
    for (card, token) in [(&card_1, &token_2), (&card_2, &token_1)] {
        assert_problem(holder.card_log(card, token), ProblemKind::SignatureFailure);
    }
    let path = format!("/v1/cards/{}/log", hex::encode(card_1.as_bytes()));
    let anonymous = holder
        .settlement
        .get::<valuecard_settle_http::wire::CardLogBody>(&path, None);
    assert_problem(anonymous, ProblemKind::SignatureFailure);
    // A token cut short or lengthened is no token.
    let short = holder.card_log(&card_1, &token_1[..token_1.len() - 2]);
    assert_problem(short, ProblemKind::SignatureFailure);
    let long = holder.card_log(&card_1, &format!("{token_1}00"));
    assert_eq!(problem(long).kind, ProblemKind::SignatureFailure);
    assert_eq!(rig.report_and_reconcile(&system), (1_140, 0));
}
