//! The security server reports its completed updates to the center's HTTPS service, signing
//! with the key the center certified (role 09); the center stores each record once and its
//! reconciliation covers them. A device that is not the certified security server cannot
//! report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{amount, rig, today, visa};
use valuecard_center_http::{BackgroundServer, HttpCenterLink};
use valuecard_core::crypto::SigningKeyPair;
use valuecard_settle::security::{SecurityKeys, SoftwareSecurityKeys};
use valuecard_settle_http::authorizer::TestAuthorizer;
use valuecard_settle_http::embedded::{EmbeddedOptions, OnlineSystem};
use valuecard_settle_http::holder::Resolution;
use valuecard_settle_http::settlement::reporter::{report_pending, SecurityServerSigner};
use valuecard_settle_http::settlement::ServiceKeys;
use valuecard_settle_http::wire::Embodiment;

#[test]
fn completed_updates_reach_the_center_over_https_once() {
    let mut rig = rig(4_000, 40);
    let anchor = rig.world.center.anchor();
    let keys = Arc::clone(&rig.keys);
    let world = rig.world;
    let center = Arc::new(Mutex::new(world.center));
    let server = BackgroundServer::bind("127.0.0.1:0", Arc::clone(&center)).unwrap();
    let link = HttpCenterLink::with_signer(
        &server.url(),
        server.pin(),
        Box::new(SecurityServerSigner::new(Arc::clone(&keys), anchor)),
    )
    .unwrap();
    let system = OnlineSystem::start(
        keys,
        anchor,
        Arc::new(TestAuthorizer::new()),
        Some(Box::new(link)),
        &EmbeddedOptions::in_memory(today()),
    )
    .unwrap();
    let holder = system.holder();
    let order = holder.order(&[("book-1".into(), 2)]).unwrap();
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    let charge = holder
        .prepare_charge(&mut rig.reader, amount(700), visa())
        .unwrap();
    assert_eq!(
        holder.confirm_charge(&mut rig.reader, &charge).unwrap(),
        Resolution::Completed {
            balance_after: amount(4_000 - 2_500 + 700)
        }
    );

    // The reporter sends on each completion; the center holds both records.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let totals = center.lock().unwrap().online_totals().unwrap();
        if (totals.spent, totals.charged) == (2_500, 700) {
            break;
        }
        assert!(Instant::now() < deadline, "the center got {totals:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let balance = valuecard_sim::read_purse(&mut rig.reader).unwrap().balance;
    let books = center.lock().unwrap().reconciliation().unwrap();
    assert_eq!(
        books.status(),
        valuecard_center::reconcile::ReconciliationStatus::Reconciled,
        "{books:?}"
    );
    assert_eq!(books.remaining, balance.minor());
    system.shutdown();
    drop(server);
}

#[test]
fn a_report_signed_by_another_key_is_refused_and_stores_nothing() {
    let mut rig = rig(3_000, 50);
    let anchor = rig.world.center.anchor();
    let system = rig.start(&EmbeddedOptions::in_memory(today()));
    let holder = system.holder();
    let order = holder.order(&[("track-1".into(), 1)]).unwrap();
    let prepared = holder
        .prepare_payment(&mut rig.reader, &order, Embodiment::Signed)
        .unwrap();
    holder
        .confirm_payment(&mut rig.reader, &order, &prepared)
        .unwrap();
    // An impostor claims the security server's ID with a key of its own.
    let impostor: ServiceKeys = Arc::new(SoftwareSecurityKeys::new(
        valuecard_core::crypto::AesKey::random(&mut rand_core::OsRng),
        SigningKeyPair::generate(&mut rand_core::OsRng),
        rig.keys.certificate().clone(),
    ));
    let world = rig.world;
    let center = Arc::new(Mutex::new(world.center));
    let server = BackgroundServer::bind("127.0.0.1:0", Arc::clone(&center)).unwrap();
    let mut forger = HttpCenterLink::with_signer(
        &server.url(),
        server.pin(),
        Box::new(SecurityServerSigner::new(impostor, anchor)),
    )
    .unwrap();
    let refused = report_pending(&system.settlement_pool, &mut forger, today().0);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(center.lock().unwrap().online_totals().unwrap().spent, 0);
    // The genuine server's report then goes through: nothing was marked reported.
    let mut genuine = HttpCenterLink::with_signer(
        &server.url(),
        server.pin(),
        Box::new(SecurityServerSigner::new(Arc::clone(&rig.keys), anchor)),
    )
    .unwrap();
    let summary = report_pending(&system.settlement_pool, &mut genuine, today().0).unwrap();
    assert_eq!(summary.reported, 1, "{summary:?}");
    assert_eq!(center.lock().unwrap().online_totals().unwrap().spent, 150);
    system.shutdown();
}
