//! The signed documents between a mall, the application server and the holder's client:
//! each of SIG1 to SIG5 forged or its document altered is refused by whoever checks it, and a
//! bill swapped between the store and the application server is caught by the client before
//! the card is touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use valuecard_core::crypto::{Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::{BalanceInfo, Bill, Completion, SettlementId};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_settle::application::{ApplicationServer, ClientChecks, DocumentError};
use valuecard_settle::store::{CatalogItem, Store, StoreError};

const MALL: DeviceId = DeviceId(*b"MALL0001");
const RECORDS: DeviceId = DeviceId(*b"RECORDS1");
const BOOKS: DeviceId = DeviceId(*b"BOOKS001");
const CARD: CardId = CardId(*b"CARD0001");
const SETTLEMENT: SettlementId = [5; 16];

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn today() -> Date {
    Date::from_ymd(2026, 11, 30).unwrap()
}

struct Parties {
    mall: Store,
    application: ApplicationServer,
    client: ClientChecks,
    rng: ChaCha20Rng,
}

fn parties() -> Parties {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut application = ApplicationServer::new(SigningKeyPair::generate(&mut rng));
    let item = |sku: &str, member, title: &str, price| CatalogItem {
        sku: sku.into(),
        member_store: member,
        title: title.into(),
        price: amount(price),
    };
    let mall = Store::new(
        MALL,
        SigningKeyPair::generate(&mut rng),
        vec![
            item("album", RECORDS, "An album (download)", 900),
            item("single", RECORDS, "A single (download)", 150),
            item("novel", BOOKS, "A novel (e-book)", 1_200),
        ],
        application.public_key(),
    );
    application.register_store(MALL, mall.public_key());
    let client = ClientChecks {
        application_key: application.public_key(),
    };
    Parties {
        mall,
        application,
        client,
        rng,
    }
}

/// An offer as the client receives it, one part altered: what, settlement, BI, SPC, SIG2.
type OfferCase = (&'static str, SettlementId, Vec<u8>, Vec<u8>, Signature);

/// A bill of one line (`quantity` of `sku`) from the mall, with SIG1.
fn one_line_bill(p: &Parties, sku: &str, quantity: u32, order_number: u64) -> (Bill, Signature) {
    p.mall
        .bill(&[(sku.to_owned(), quantity)], order_number, today())
        .unwrap()
}

/// The card's PCN for paying `bill` in [`SETTLEMENT`].
fn payment_of(bill: &Bill) -> Completion {
    Completion {
        settlement_id: SETTLEMENT,
        kind: TransactionKind::OnlinePayment,
        amount: bill.total,
        counter: 4,
        balance_after: amount(3_800),
    }
}

fn info(balance: u64) -> BalanceInfo {
    BalanceInfo {
        card_id: CARD,
        settlement_id: SETTLEMENT,
        balance: amount(balance),
        spendable: amount(balance),
        counter: 3,
        date: today(),
        last_settlement: None,
        last_usage: None,
    }
}

#[test]
fn a_member_stores_bill_is_settled_and_receipted_with_every_signature_checked() {
    let p = parties();
    let order = [("album".to_owned(), 1), ("single".to_owned(), 2)];
    let (bill, sig1) = p.mall.bill(&order, 1001, today()).unwrap();
    assert_eq!(bill.member_store, Some(RECORDS));
    assert_eq!(bill.total, amount(1_200));
    let checked = p
        .application
        .check_bill(&bill.encode(), &sig1, today())
        .unwrap();
    assert_eq!(checked, bill);

    let sealed = b"the sealed SPC".to_vec();
    let sig2 = p
        .application
        .sign_offer(&SETTLEMENT, &bill, &info(5_000), &sealed);
    let shown = p
        .client
        .offer(&SETTLEMENT, &bill, &info(5_000).encode(), &sealed, &sig2)
        .unwrap();
    assert_eq!(shown.balance, amount(5_000));

    let pcn = payment_of(&bill);
    let (acn, sig3) = p
        .application
        .complete(SETTLEMENT, &bill, CARD, &pcn, today());
    p.client
        .completion(&SETTLEMENT, &bill, &acn, &sig3)
        .unwrap();
    let (receipt, sig4) = p.mall.receipt(&bill, &acn, &sig3, today()).unwrap();
    p.application.check_receipt(&acn, &receipt, &sig4).unwrap();
    p.client
        .receipt(&p.mall.public_key(), &acn, &receipt, &sig4)
        .unwrap();
}

#[test]
fn a_forged_or_altered_bill_expired_or_from_an_unknown_store_is_refused() {
    let mut p = parties();
    let (bill, sig1) = one_line_bill(&p, "novel", 1, 1002);
    // SIG1 by another key.
    let stranger = SigningKeyPair::generate(&mut p.rng);
    let forged = stranger.sign(&bill.signed_message());
    assert_eq!(
        p.application.check_bill(&bill.encode(), &forged, today()),
        Err(DocumentError::ForgedBill)
    );
    // The bill made cheaper after it was signed (still holding together).
    let mut cheaper = bill.clone();
    cheaper.lines[0].unit_price = amount(1);
    cheaper.total = amount(1);
    assert_eq!(
        p.application.check_bill(&cheaper.encode(), &sig1, today()),
        Err(DocumentError::ForgedBill)
    );
    // Past its expiry.
    assert_eq!(
        p.application
            .check_bill(&bill.encode(), &sig1, today().add_days(2)),
        Err(DocumentError::ExpiredBill(bill.expires))
    );
    // A store the settlement system does not know, and bytes that are no bill.
    let mut unknown = bill.clone();
    unknown.store = DeviceId(*b"ROGUE001");
    let rogue_sig = stranger.sign(&unknown.signed_message());
    assert_eq!(
        p.application
            .check_bill(&unknown.encode(), &rogue_sig, today()),
        Err(DocumentError::UnknownStore(unknown.store))
    );
    assert!(matches!(
        p.application.check_bill(b"no bill", &sig1, today()),
        Err(DocumentError::MalformedBill(_))
    ));
    // Items of two member stores make no one bill; an unknown item none at all.
    assert_eq!(
        p.mall
            .bill(
                &[("album".to_owned(), 1), ("novel".to_owned(), 1)],
                1003,
                today()
            )
            .map(|_| ()),
        Err(StoreError::BadOrder)
    );
    assert_eq!(
        p.mall
            .bill(&[("poster".to_owned(), 1)], 1003, today())
            .map(|_| ()),
        Err(StoreError::UnknownItem("poster".into()))
    );
}

#[test]
fn the_client_refuses_an_offer_for_another_bill_or_with_anything_altered() {
    let mut p = parties();
    let (bill, _) = one_line_bill(&p, "single", 1, 1004);
    // Between the store and the application server, the client's bill was swapped for
    // another genuine bill of the same store (a dearer order): the application server checks
    // that one's SIG1 and signs an offer for it.
    let (swapped, swapped_sig1) = one_line_bill(&p, "album", 3, 1005);
    let at_server = p
        .application
        .check_bill(&swapped.encode(), &swapped_sig1, today())
        .unwrap();
    let sealed = b"sealed".to_vec();
    let sig2 = p
        .application
        .sign_offer(&SETTLEMENT, &at_server, &info(5_000), &sealed);
    assert_eq!(
        p.client
            .offer(&SETTLEMENT, &bill, &info(5_000).encode(), &sealed, &sig2)
            .map(|_| ()),
        Err(DocumentError::ForgedOffer)
    );
    // For the right bill, every altered part fails too.
    let sig2 = p
        .application
        .sign_offer(&SETTLEMENT, &bill, &info(5_000), &sealed);
    let stranger = SigningKeyPair::generate(&mut p.rng);
    let cases: Vec<OfferCase> = vec![
        (
            "a higher balance shown",
            SETTLEMENT,
            info(9_000).encode(),
            sealed.clone(),
            sig2,
        ),
        (
            "another SPC",
            SETTLEMENT,
            info(5_000).encode(),
            b"other".to_vec(),
            sig2,
        ),
        (
            "another settlement",
            [6; 16],
            info(5_000).encode(),
            sealed.clone(),
            sig2,
        ),
        (
            "signed by another key",
            SETTLEMENT,
            info(5_000).encode(),
            sealed.clone(),
            stranger.sign(b"anything"),
        ),
    ];
    for (what, settlement, encoded, spc, signature) in cases {
        assert_eq!(
            p.client
                .offer(&settlement, &bill, &encoded, &spc, &signature)
                .map(|_| ()),
            Err(DocumentError::ForgedOffer),
            "{what}"
        );
    }
}

#[test]
fn forged_completions_receipts_and_charge_offers_are_refused() {
    let mut p = parties();
    let (bill, _) = one_line_bill(&p, "novel", 1, 1006);
    let (other_bill, _) = one_line_bill(&p, "single", 1, 1007);
    let pcn = payment_of(&bill);
    let (acn, sig3) = p
        .application
        .complete(SETTLEMENT, &bill, CARD, &pcn, today());
    let stranger = SigningKeyPair::generate(&mut p.rng);

    // SIG3 forged: the store gives no receipt, the client shows no completion.
    let forged3 = stranger.sign(&acn.signed_message());
    assert_eq!(
        p.mall.receipt(&bill, &acn, &forged3, today()).map(|_| ()),
        Err(StoreError::ForgedCompletion)
    );
    assert_eq!(
        p.client.completion(&SETTLEMENT, &bill, &acn, &forged3),
        Err(DocumentError::ForgedCompletion)
    );
    // A genuine completion of another order does not receipt this one.
    assert_eq!(
        p.mall
            .receipt(&other_bill, &acn, &sig3, today())
            .map(|_| ()),
        Err(StoreError::WrongOrder(other_bill.order_number))
    );
    assert_eq!(
        p.client.completion(&SETTLEMENT, &other_bill, &acn, &sig3),
        Err(DocumentError::WrongCompletion)
    );

    // SIG4 forged, or a genuine receipt of another completion.
    let (receipt, _) = p.mall.receipt(&bill, &acn, &sig3, today()).unwrap();
    let forged4 = stranger.sign(&receipt.signed_message());
    assert_eq!(
        p.application.check_receipt(&acn, &receipt, &forged4),
        Err(DocumentError::ForgedReceipt)
    );
    assert_eq!(
        p.client
            .receipt(&p.mall.public_key(), &acn, &receipt, &forged4),
        Err(DocumentError::ForgedReceipt)
    );
    let other_pcn = Completion {
        settlement_id: [7; 16],
        amount: other_bill.total,
        ..pcn
    };
    let (other_acn, other_sig3) =
        p.application
            .complete([7; 16], &other_bill, CARD, &other_pcn, today());
    let (other_receipt, other_sig4) = p
        .mall
        .receipt(&other_bill, &other_acn, &other_sig3, today())
        .unwrap();
    assert_eq!(
        p.application
            .check_receipt(&acn, &other_receipt, &other_sig4),
        Err(DocumentError::WrongReceipt)
    );

    // SIG5: the client checks the charge offer before the card is touched.
    let sealed = b"sealed value update".to_vec();
    let sig5 = p
        .application
        .sign_charge(&[8; 16], &CARD, amount(2_000), "AUTH-1", &sealed);
    p.client
        .charge(&[8; 16], &CARD, amount(2_000), "AUTH-1", &sealed, &sig5)
        .unwrap();
    for (what, card, value, authorization, update) in [
        (
            "another card",
            CardId(*b"CARD0002"),
            amount(2_000),
            "AUTH-1",
            sealed.clone(),
        ),
        (
            "a larger amount",
            CARD,
            amount(20_000),
            "AUTH-1",
            sealed.clone(),
        ),
        (
            "another authorization",
            CARD,
            amount(2_000),
            "AUTH-2",
            sealed.clone(),
        ),
        (
            "another value update",
            CARD,
            amount(2_000),
            "AUTH-1",
            b"other".to_vec(),
        ),
    ] {
        assert_eq!(
            p.client
                .charge(&[8; 16], &card, value, authorization, &update, &sig5),
            Err(DocumentError::ForgedCharge),
            "{what}"
        );
    }
}
