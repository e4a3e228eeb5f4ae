//! The move server and the three providers each on a PostgreSQL schema of its own, two
//! instances of the move server taking turns at every call of each session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../center/tests/scratch/mod.rs"]
mod scratch;

use common::links::Alternating;
use common::*;
use valuecard_migrate::client::Mode;
use valuecard_migrate_http::embedded::MoveOptions;
use valuecard_settle_http::DatabaseLocation;

#[test]
fn a_move_on_postgresql_through_two_instances() {
    let Some(server_schema) = scratch::scratch("migrate_http") else {
        return;
    };
    let mut schemas = Vec::new();
    let options = MoveOptions {
        server_database: DatabaseLocation::Postgres(server_schema.url.clone()),
        pool_size: 2,
        ..MoveOptions::in_memory(today())
    };
    let mut rig = rig(&options, || {
        let schema = scratch::scratch("migrate_http_provider").unwrap();
        let location = DatabaseLocation::Postgres(schema.url.clone());
        schemas.push(schema);
        location
    });
    assert!(rig.system.borrow().server_pool().is_postgres());
    assert!(rig.provider_pool(TICKETS).is_postgres());
    let second = rig.system.borrow().another_instance().unwrap();
    assert!(second.pool.is_postgres());
    let alternating = Alternating::new(vec![rig.client.clone(), second.client()]);

    let uploaded = run(&alternating, &mut rig.old, Mode::Upload).unwrap();
    assert_eq!(uploaded.state, "uploaded");
    assert_eq!(rig.copies_held(), 3);
    let done = run(&alternating, &mut rig.new, Mode::Download).unwrap();
    assert_moved(&rig, &done);
    let answered = alternating.answered.borrow().clone();
    assert!(answered.iter().all(|&calls| calls > 10), "{answered:?}");

    second.service.shutdown().unwrap();
    let Rig { system, .. } = rig;
    system.into_inner().shutdown();
    drop(schemas);
    drop(server_schema);
}
