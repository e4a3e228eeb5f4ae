//! The move server stopped after every k-th call of a holder's session and started again
//! on the same database (a SQLite file): nothing of a move is lost with the process, the
//! session carries on or is run again, and the value is conserved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::links::{AfterCall, Interrupting};
use common::*;
use valuecard_migrate::client::{ClientError, Mode, Outcome};
use valuecard_migrate::server::MoveError;
use valuecard_migrate_http::embedded::MoveOptions;
use valuecard_settle_http::DatabaseLocation;

fn on_file(dir: &tempfile::TempDir) -> Rig {
    let options = MoveOptions {
        server_database: DatabaseLocation::Sqlite(dir.path().join("move.db")),
        ..MoveOptions::in_memory(today())
    };
    rig(&options, || DatabaseLocation::Memory)
}

/// Restarted before the next call: each session goes on where it stood.
#[test]
fn a_session_goes_on_across_restarts_of_the_move_server() {
    for every in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut rig = on_file(&dir);
        let link = Interrupting::new(&rig.system, every, AfterCall::Restart);
        let uploaded = run(&link, &mut rig.old, Mode::Upload).unwrap();
        assert_eq!(uploaded.state, "uploaded");
        let done = run(&link, &mut rig.new, Mode::Download).unwrap();
        assert_eq!(done.move_id, uploaded.move_id);
        assert!(
            link.stops.get() >= 10,
            "every {every}: {} stops",
            link.stops.get()
        );
        assert_eq!(link.stops.get(), link.calls.get() / every);
        drop(link);
        assert_moved(&rig, &done);
    }
}

/// Runs `mode` until it finishes; whenever the server is found stopped, starts it again
/// and runs the session again from its start.
fn run_through_stops(
    link: &Interrupting<'_>,
    reader: &mut Reader,
    mode: Mode,
    tries: usize,
) -> (Outcome, usize) {
    for attempt in 1..=tries {
        match run(link, reader, mode) {
            Ok(outcome) => return (outcome, attempt),
            Err(ClientError::Server(MoveError::ServerUnavailable(reason))) => {
                assert!(reason.contains(link.client.url()), "{reason}");
                link.system.borrow_mut().start_server().unwrap();
            }
            Err(other) => panic!("{mode:?}, attempt {attempt}: {other}"),
        }
    }
    panic!("{mode:?} did not finish in {tries} runs");
}

/// Stopped and found stopped by the next call: the holder runs the session again once
/// the server is back, and the move picks up at its last stored step. A new session first
/// reads the chip again (three calls) and a provider's part of a service is recorded when
/// it is done (up to four more), so a session must get at least eight calls to make
/// progress: a server cut more often than that never finishes a move, whatever it stores.
#[test]
fn a_session_cut_by_a_stopped_move_server_is_run_again_to_the_end() {
    for every in [9, 12] {
        let dir = tempfile::tempdir().unwrap();
        let mut rig = on_file(&dir);
        let link = Interrupting::new(&rig.system, every, AfterCall::Stop);
        let (uploaded, upload_runs) = run_through_stops(&link, &mut rig.old, Mode::Upload, 200);
        assert_eq!(uploaded.state, "uploaded");
        assert!(upload_runs >= 2, "every {every}: {upload_runs} runs");
        rig.system.borrow_mut().start_server().unwrap();
        assert_eq!(rig.copies_held(), 3);
        assert_eq!(balance(rig.chip(Which::Old)), OLD_BALANCE);
        assert_eq!(balance(rig.chip(Which::New)), NEW_BALANCE);
        let (done, download_runs) = run_through_stops(&link, &mut rig.new, Mode::Download, 200);
        assert!(download_runs >= 2, "every {every}: {download_runs} runs");
        assert_eq!(link.stops.get(), link.calls.get() / every);
        assert!(
            link.stops.get() >= 4,
            "every {every}: {} stops",
            link.stops.get()
        );
        drop(link);
        rig.system.borrow_mut().start_server().unwrap();
        assert_moved(&rig, &done);
        assert_eq!(rig.client.status(&done.move_id).unwrap(), done);
    }
}
