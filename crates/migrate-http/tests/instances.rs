//! Two instances of the move server over one SQLite file, every call of a session at the
//! other instance: nothing of a move lives in a server's process, so the move completes as
//! if one server had taken every call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::links::Alternating;
use common::*;
use valuecard_migrate::client::Mode;
use valuecard_migrate_http::embedded::MoveOptions;
use valuecard_settle_http::DatabaseLocation;

#[test]
fn two_instances_on_one_sqlite_file_take_turns_in_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let options = MoveOptions {
        server_database: DatabaseLocation::Sqlite(dir.path().join("move.db")),
        pool_size: 2,
        ..MoveOptions::in_memory(today())
    };
    let mut providers = 0;
    let mut rig = rig(&options, || {
        providers += 1;
        DatabaseLocation::Sqlite(dir.path().join(format!("provider-{providers}.db")))
    });
    let second = rig.system.borrow().another_instance().unwrap();
    let alternating = Alternating::new(vec![rig.client.clone(), second.client()]);

    let uploaded = run(&alternating, &mut rig.old, Mode::Upload).unwrap();
    assert_eq!(uploaded.state, "uploaded");
    assert_eq!(rig.copies_held(), 3);
    let done = run(&alternating, &mut rig.new, Mode::Download).unwrap();
    assert_eq!(done.move_id, uploaded.move_id);
    assert_moved(&rig, &done);

    // Both instances took calls of each session, turn about.
    let answered = alternating.answered.borrow().clone();
    assert!(answered.iter().all(|&calls| calls > 10), "{answered:?}");
    assert!(answered[0].abs_diff(answered[1]) <= 1, "{answered:?}");
    // Each sees the same move.
    assert_eq!(second.client().status(&done.move_id).unwrap(), done);
    assert_eq!(rig.client.status(&done.move_id).unwrap(), done);
    second.service.shutdown().unwrap();
}
