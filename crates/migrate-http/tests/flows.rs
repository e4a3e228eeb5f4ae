//! A chip with three services moved to a new chip over HTTPS, every party its own service;
//! and a move rolled back the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_core::messages::services::KeyState;
use valuecard_migrate::client::{ClientError, Mode};
use valuecard_migrate::server::MoveError;

#[test]
fn every_service_moves_to_the_new_chip_over_https() {
    let mut rig = rig_in_memory();
    assert_one_home_for_everything(&rig);

    let uploaded = rig.upload().unwrap();
    assert_eq!(uploaded.state, "uploaded");
    assert_eq!(
        uploaded
            .services
            .iter()
            .map(|(service, _, state)| (*service, state.as_str()))
            .collect::<Vec<_>>(),
        SERVICES.map(|service| (service, "uploaded")).to_vec()
    );
    // The old chip is on temporary keys; its value is held only by the transfer SAMs,
    // one sealed copy per service.
    for service in SERVICES {
        assert_eq!(
            key_state(rig.chip(Which::Old), service),
            Some(KeyState::Temporary)
        );
        let copy = rig.copy(service, &uploaded.move_id).unwrap();
        assert_eq!(copy.state, "uploaded");
        assert!(copy.holds_copy);
        assert_eq!(copy.source, valuecard_card::testing::card_id(1));
    }
    assert_eq!(rig.copies_held(), 3);
    assert_eq!(balance(rig.chip(Which::Old)), OLD_BALANCE);
    // The new chip has nothing of the move yet.
    assert_eq!(balance(rig.chip(Which::New)), NEW_BALANCE);
    assert_eq!(key_state(rig.chip(Which::New), TICKETS), None);
    // The move's status over HTTPS is what the session ended with.
    assert_eq!(rig.client.status(&uploaded.move_id).unwrap(), uploaded);

    let done = rig.download().unwrap();
    assert_eq!(done.move_id, uploaded.move_id);
    assert_moved(&rig, &done);
    assert_eq!(rig.client.status(&done.move_id).unwrap(), done);

    // Running either side again changes nothing.
    assert_eq!(rig.download().unwrap().state, "done");
    assert!(matches!(
        rig.upload(),
        Err(ClientError::Server(MoveError::AlreadyMoved))
    ));
    assert_moved(&rig, &done);
}

#[test]
fn a_move_rolled_back_over_https_gives_the_old_chip_everything_back() {
    let mut rig = rig_in_memory();
    let uploaded = rig.upload().unwrap();
    assert_eq!(rig.copies_held(), 3);
    let rolled = rig.run(Which::Old, Mode::Rollback).unwrap();
    assert_eq!(rolled.state, "rolled_back");
    assert_eq!(rig.copies_held(), 0);
    for service in SERVICES {
        assert_eq!(
            key_state(rig.chip(Which::Old), service),
            Some(KeyState::Main)
        );
        assert_eq!(
            rig.copy(service, &uploaded.move_id).unwrap().state,
            "discarded"
        );
    }
    assert_one_home_for_everything(&rig);
    assert_eq!(balance(rig.chip(Which::Old)), OLD_BALANCE);
    // Nothing waits for a new chip; the chip can be moved again from the start.
    assert!(matches!(
        rig.download(),
        Err(ClientError::Server(MoveError::NothingToDownload))
    ));
    assert_eq!(rig.upload().unwrap().state, "uploaded");
    let done = rig.download().unwrap();
    assert_ne!(done.move_id, uploaded.move_id);
    assert_moved(&rig, &done);
}
