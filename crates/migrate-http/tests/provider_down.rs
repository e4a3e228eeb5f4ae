//! A provider's service stopped in the middle of a move: the holder is told which service's
//! provider is unavailable, nothing is lost, and once the provider is back the same run
//! finishes the move.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_core::messages::services::{KeyState, ServiceCode};
use valuecard_migrate::client::{self, ClientError, Mode, Outcome};
use valuecard_migrate::server::MoveError;

/// Runs `mode` and stops the provider of `victim` as soon as a step of its service comes.
fn run_stopping(
    rig: &mut Rig,
    which: Which,
    mode: Mode,
    victim: ServiceCode,
) -> Result<Outcome, ClientError> {
    let client = rig.client.clone();
    let system = &rig.system;
    let reader = match which {
        Which::Old => &mut rig.old,
        Which::New => &mut rig.new,
    };
    let mut stopped = false;
    client::run(&client, reader, USER, PASSWORD, mode, &mut |progress| {
        if !stopped && progress.service.map(|(service, _)| service) == Some(victim) {
            system.borrow_mut().stop_provider(victim).unwrap();
            stopped = true;
        }
    })
}

fn assert_provider_down(result: Result<Outcome, ClientError>, rig: &Rig, victim: ServiceCode) {
    let (url, _) = rig.system.borrow().provider_endpoint(victim).unwrap();
    let error = match result {
        Err(ClientError::Server(error)) => error,
        other => panic!("{other:?}"),
    };
    let text = error.to_string();
    match error {
        MoveError::ProviderDown { service, reason } => {
            assert_eq!(service, victim);
            assert!(reason.contains(&url), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.starts_with(&format!(
            "the provider of service {victim} is unavailable: "
        )),
        "{text}"
    );
}

#[test]
fn a_provider_stopped_during_the_upload_is_named_and_the_rerun_completes() {
    let mut rig = rig_in_memory();
    let result = run_stopping(&mut rig, Which::Old, Mode::Upload, TICKETS);
    assert_provider_down(result, &rig, TICKETS);
    // The purse (first in order) is uploaded, the tickets' copy not made; the old chip is
    // locked, its value only in the purse provider's copy.
    assert_eq!(rig.copies_held(), 1);
    for service in SERVICES {
        assert_eq!(
            key_state(rig.chip(Which::Old), service),
            Some(KeyState::Temporary)
        );
    }
    assert_eq!(balance(rig.chip(Which::Old)), OLD_BALANCE);
    assert_eq!(balance(rig.chip(Which::New)), NEW_BALANCE);
    // While the provider is down, running again stops at the same place.
    let again = rig.upload();
    assert_provider_down(again, &rig, TICKETS);
    assert_eq!(rig.copies_held(), 1);

    rig.system.borrow_mut().start_provider(TICKETS).unwrap();
    let uploaded = rig.upload().unwrap();
    assert_eq!(uploaded.state, "uploaded");
    assert_eq!(rig.copies_held(), 3);
    let done = rig.download().unwrap();
    assert_moved(&rig, &done);
}

#[test]
fn a_provider_stopped_during_the_download_is_named_and_the_rerun_completes() {
    let mut rig = rig_in_memory();
    rig.upload().unwrap();
    let result = run_stopping(&mut rig, Which::New, Mode::Download, POINTS);
    assert_provider_down(result, &rig, POINTS);
    // Nothing was downloaded yet: the value is still only in the copies, the new chip's
    // formatted areas on temporary keys.
    assert_eq!(rig.copies_held(), 3);
    assert_eq!(balance(rig.chip(Which::New)), NEW_BALANCE);
    assert_eq!(key_state(rig.chip(Which::New), POINTS), None);
    for service in SERVICES {
        assert_ne!(
            key_state(rig.chip(Which::New), service),
            Some(KeyState::Main)
        );
    }

    rig.system.borrow_mut().start_provider(POINTS).unwrap();
    let done = rig.download().unwrap();
    assert_moved(&rig, &done);
}
