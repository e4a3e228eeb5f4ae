//! The move server and the three providers each on a PostgreSQL schema of its own: a whole
//! move, a device cut in the middle of the download and resumed, and the database's own
//! guard against a second live move of one chip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../center/tests/scratch/mod.rs"]
mod scratch;

use common::*;
use valuecard_migrate::client::Mode;

#[test]
fn a_move_on_postgresql() {
    let Some(probe) = scratch::scratch("migrate") else {
        return;
    };
    drop(probe);
    let mut schemas = Vec::new();
    let mut open = || {
        let schema = scratch::scratch("migrate").unwrap();
        let db = schema.database();
        schemas.push(schema);
        db
    };
    let mut world = World::build(|link| link, &mut open);
    assert!(world.server.with_db(|_, db| db.is_postgres()));
    world.upload().unwrap();
    assert!(world.run_cut(Which::New, Mode::Download, 11, true).is_err());
    let done = world.run_until_done(Which::New, Mode::Download, 2);
    assert_eq!(done.state, "done");
    assert_one_home_for_everything(&world);
    assert_eq!(world.copies_held(), 0);
    assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);
    // The database refuses a second live move of the same chip, whatever the server asks.
    let refused = world.server.with_db(|_, db| {
        use valuecard_center::sql::Executor;
        db.execute(
            "INSERT INTO migrate_moves (move_id, user_id, source, source_certificate, state, \
             created_on, updated_on) SELECT $1, user_id, source, source_certificate, \
             'registered', 0, 0 FROM migrate_moves WHERE move_id = $2",
            &[vec![9u8; 16].into(), done.move_id.to_vec().into()],
        )
    });
    assert!(refused.is_err());
    drop(world);
    drop(schemas);
}
