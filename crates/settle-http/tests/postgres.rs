//! Both services on PostgreSQL (a scratch schema shared by the mall and the settlement
//! service, whose tables and migration histories are their own): a purchase and a charge,
//! and the center's reconciliation of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../center/tests/scratch/mod.rs"]
mod scratch;

use common::{amount, rig, today, visa};
use valuecard_settle_http::embedded::EmbeddedOptions;
use valuecard_settle_http::holder::Resolution;
use valuecard_settle_http::wire::Embodiment;
use valuecard_settle_http::DatabaseLocation;

#[test]
fn a_purchase_and_a_charge_on_postgresql() {
    let Some(scratch) = scratch::scratch("settle") else {
        return;
    };
    let mut rig = rig(5_000, 60);
    let options = EmbeddedOptions {
        store_database: DatabaseLocation::Postgres(scratch.url.clone()),
        settlement_database: DatabaseLocation::Postgres(scratch.url.clone()),
        today: Some(today()),
        pool_size: 4,
        store_port: 0,
        settlement_port: 0,
    };
    let system = rig.start(&options);
    assert!(system.settlement_pool.is_postgres() && system.store_pool.is_postgres());
    let holder = system.holder();
    for embodiment in [Embodiment::Signed, Embodiment::Sealed] {
        let order = holder.order(&[("album-1".into(), 1)]).unwrap();
        let prepared = holder
            .prepare_payment(&mut rig.reader, &order, embodiment)
            .unwrap();
        let paid = holder
            .confirm_payment(&mut rig.reader, &order, &prepared)
            .unwrap();
        assert_eq!(paid.amount, amount(990));
        assert!(!holder.download(&paid).unwrap().is_empty());
    }
    let charge = holder
        .prepare_charge(&mut rig.reader, amount(1_000), visa())
        .unwrap();
    assert_eq!(
        holder.confirm_charge(&mut rig.reader, &charge).unwrap(),
        Resolution::Completed {
            balance_after: amount(5_000 - 1_980 + 1_000)
        }
    );
    assert_eq!(rig.report_and_reconcile(&system), (1_980, 1_000));
    system.shutdown();
}
