//! A move cut at every step: the holder's device gone before a command reached the chip, or
//! after (its answer lost), a provider gone before or after its work; in every case running
//! the same command again finishes the move (or a rollback undoes it) with each service on
//! exactly one chip, the value whole, and no copy left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use valuecard_core::messages::services::KeyState;
use valuecard_migrate::client::Mode;
use valuecard_migrate::server::MoveError;

/// How many commands a clean upload and download send.
fn commands() -> (usize, usize) {
    let mut world = World::new();
    let (_, upload) = world.run_counted(Which::Old, Mode::Upload);
    let (_, download) = world.run_counted(Which::New, Mode::Download);
    (upload, download)
}

#[test]
fn the_device_cut_at_every_command_of_the_upload_resumes_or_rolls_back() {
    let (upload, _) = commands();
    assert!(
        upload >= 13,
        "an upload of three services sends {upload} commands"
    );
    for cut in 0..upload {
        for deliver in [false, true] {
            // Resumed.
            let mut world = World::new();
            assert!(world
                .run_cut(Which::Old, Mode::Upload, cut, deliver)
                .is_err());
            world.run_until_done(Which::Old, Mode::Upload, 2);
            let done = world.run_until_done(Which::New, Mode::Download, 2);
            assert_eq!(done.state, "done", "cut at {cut}, deliver {deliver}");
            assert_one_home_for_everything(&world);
            assert_eq!(world.copies_held(), 0);
            assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);

            // Rolled back instead.
            let mut world = World::new();
            assert!(world
                .run_cut(Which::Old, Mode::Upload, cut, deliver)
                .is_err());
            match world.run(Which::Old, Mode::Rollback) {
                Ok(rolled) => {
                    assert_eq!(
                        rolled.state, "rolled_back",
                        "cut at {cut}, deliver {deliver}"
                    )
                }
                // Cut before the move was recorded: there is nothing to undo.
                Err(valuecard_migrate::client::ClientError::Server(
                    MoveError::NothingToRollBack,
                )) => assert!(cut < 2, "cut at {cut}"),
                Err(error) => panic!("cut at {cut}, deliver {deliver}: {error}"),
            }
            assert_one_home_for_everything(&world);
            assert_eq!(world.copies_held(), 0);
            for service in SERVICES {
                assert_eq!(
                    key_state(world.chip(Which::Old), service),
                    Some(KeyState::Main)
                );
            }
        }
    }
}

#[test]
fn the_device_cut_at_every_command_of_the_download_resumes() {
    let (_, download) = commands();
    assert!(
        download >= 20,
        "a download of three services sends {download} commands"
    );
    for cut in 0..download {
        for deliver in [false, true] {
            let mut world = World::new();
            world.upload().unwrap();
            assert!(world
                .run_cut(Which::New, Mode::Download, cut, deliver)
                .is_err());
            let done = world.run_until_done(Which::New, Mode::Download, 2);
            assert_eq!(done.state, "done", "cut at {cut}, deliver {deliver}");
            assert_one_home_for_everything(&world);
            assert_eq!(world.copies_held(), 0);
            assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);
            assert_eq!(balance(world.chip(Which::Old)), OLD_BALANCE);
        }
    }
}

fn faulty_world(fail_at: usize, after: bool) -> World {
    let calls = Arc::new(AtomicUsize::new(0));
    World::with_links(move |inner| {
        Arc::new(FaultyLink {
            inner,
            calls: calls.clone(),
            fail_at,
            after,
        })
    })
}

#[test]
fn a_provider_gone_at_every_call_is_reported_and_the_move_resumes() {
    let mut failures = 0;
    for fail_at in 0..40 {
        for after in [false, true] {
            let mut world = faulty_world(fail_at, after);
            let mut outcomes = Vec::new();
            for mode_which in [(Mode::Upload, Which::Old), (Mode::Download, Which::New)] {
                match world.run(mode_which.1, mode_which.0) {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(error) => {
                        failures += 1;
                        let text = error.to_string();
                        assert!(
                            text.contains("unavailable"),
                            "a provider gone is named as such: {text}"
                        );
                        world.run_until_done(mode_which.1, mode_which.0, 2);
                    }
                }
            }
            let last = world.run_until_done(Which::New, Mode::Download, 2);
            assert_eq!(last.state, "done", "fail at call {fail_at}, after {after}");
            assert_one_home_for_everything(&world);
            assert_eq!(world.copies_held(), 0);
        }
    }
    assert!(failures >= 40, "the faults were met: {failures}");
}

#[test]
fn a_rollback_is_refused_once_the_download_began() {
    let mut world = World::new();
    let uploaded = world.upload().unwrap();
    // Formatting the new chip's three areas is six commands after its two SELECTs, then
    // the first provider's download begins.
    assert!(world
        .run_cut(Which::New, Mode::Download, 12, false)
        .is_err());
    // The provider whose download began refuses to discard its copy, whatever a server
    // asks.
    let refused = world
        .provider(PURSE)
        .with_db(|p, db| p.discard(db, &uploaded.move_id, 0));
    assert!(
        matches!(
            refused,
            Err(valuecard_migrate::provider::ProviderError::Downloaded)
        ),
        "{refused:?}"
    );
    assert!(matches!(
        world.run(Which::Old, Mode::Rollback),
        Err(valuecard_migrate::client::ClientError::Server(
            MoveError::TooLateToRollBack
        ))
    ));
    world.run_until_done(Which::New, Mode::Download, 2);
    assert_one_home_for_everything(&world);
}

#[derive(Debug, Clone)]
enum Fault {
    /// The device stops after this many commands, the last delivered or not.
    Cut { left: usize, deliver: bool },
    /// A run that goes through.
    Clean,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => (0usize..25, any::<bool>()).prop_map(|(left, deliver)| Fault::Cut { left, deliver }),
        1 => Just(Fault::Clean),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random faults on both sides, each followed by the holder trying again (or, on the
    /// old chip before the download, rolling back); the end state always has one home for
    /// everything.
    #[test]
    fn random_faults_never_double_or_lose_a_service(
        faults in proptest::collection::vec(fault(), 1..8),
        roll_back in any::<bool>(),
    ) {
        let mut world = World::new();
        let mut uploaded = false;
        for fault in &faults {
            let (which, mode) = if uploaded {
                (Which::New, Mode::Download)
            } else {
                (Which::Old, Mode::Upload)
            };
            let result = match fault {
                Fault::Cut { left, deliver } => world.run_cut(which, mode, *left, *deliver),
                Fault::Clean => world.run(which, mode),
            };
            if result.is_ok() && mode == Mode::Upload {
                uploaded = true;
            }
        }
        if !uploaded && roll_back {
            match world.run(Which::Old, Mode::Rollback) {
                Ok(rolled) => prop_assert_eq!(rolled.state, "rolled_back"),
                // No move was recorded: there is nothing to undo.
                Err(valuecard_migrate::client::ClientError::Server(
                    MoveError::NothingToRollBack,
                )) => {}
                Err(error) => panic!("rollback: {error}"),
            }
        } else {
            if !uploaded {
                world.run_until_done(Which::Old, Mode::Upload, 2);
            }
            let done = world.run_until_done(Which::New, Mode::Download, 2);
            prop_assert_eq!(done.state, "done");
        }
        assert_one_home_for_everything(&world);
        prop_assert_eq!(world.copies_held(), 0);
    }
}
