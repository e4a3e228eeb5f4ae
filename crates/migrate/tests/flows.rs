//! A chip with three services moved to a new chip, and a move rolled back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::OsRng;
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::messages::services::{KeyState, ServiceOperation};
use valuecard_core::StatusWord;
use valuecard_migrate::client::Mode;
use valuecard_migrate::provider::normal::UseError;

#[test]
fn every_service_moves_to_the_new_chip_and_the_old_one_stays_a_locked_backup() {
    let mut world = World::new();
    assert_one_home_for_everything(&world);
    assert_eq!(initialize_purchase(&mut world.old).sw, StatusWord::SUCCESS);

    let uploaded = world.upload().unwrap();
    assert_eq!(uploaded.state, "uploaded");
    assert!(uploaded
        .services
        .iter()
        .all(|(_, _, state)| state == "uploaded"));
    // The old chip is on temporary keys: no purchase, no normal use of any service.
    for service in SERVICES {
        assert_eq!(
            key_state(world.chip(Which::Old), service),
            Some(KeyState::Temporary)
        );
    }
    assert_eq!(
        initialize_purchase(&mut world.old).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let gate = world.provider(TICKETS).provider().clone();
    assert!(matches!(
        gate.normal_use(&mut world.old, None, &mut OsRng),
        Err(UseError::Temporary)
    ));
    // The value is in flight: held only by the providers' transfer SAMs, sealed.
    assert_eq!(world.copies_held(), 3);

    let done = world.download().unwrap();
    assert_eq!(done.state, "done");
    assert!(done.services.iter().all(|(_, _, state)| state == "cleared"));
    assert_one_home_for_everything(&world);

    let new = world.chip(Which::New);
    for service in SERVICES {
        assert_eq!(key_state(new, service), Some(KeyState::Main));
    }
    assert_eq!(balance(new), OLD_BALANCE + NEW_BALANCE);
    assert_eq!(content(new, TICKETS), Some(original_tickets()));
    assert_eq!(content(new, POINTS), Some(original_points()));
    // The new chip keeps its own identity; the moved value came with a signed record.
    let valuecard_card::state::PersistentState::Personalized(purse) = new.state() else {
        panic!("not personalized");
    };
    assert_eq!(purse.keys.card_id, valuecard_card::testing::card_id(2));
    let record = purse.last_usage.clone().unwrap();
    assert_eq!(record.kind, TransactionKind::MigrationIn);
    assert_eq!(record.amount.minor(), OLD_BALANCE);
    assert_eq!(
        purse.last_writer_certificate.as_ref().unwrap().subject(),
        valuecard_card::testing::service_transfer(1).1.subject()
    );

    // The old chip is still a locked backup; the new one is in normal use.
    for service in SERVICES {
        assert_eq!(
            key_state(world.chip(Which::Old), service),
            Some(KeyState::Temporary)
        );
    }
    assert_eq!(balance(world.chip(Which::Old)), OLD_BALANCE);
    assert_eq!(
        initialize_purchase(&mut world.old).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(initialize_purchase(&mut world.new).sw, StatusWord::SUCCESS);
    let ride = gate
        .normal_use(
            &mut world.new,
            Some(&ServiceOperation::UseRide {
                ticket_id: TICKET_ID,
                date: today(),
            }),
            &mut OsRng,
        )
        .unwrap();
    assert_ne!(ride, original_tickets());
    assert!(matches!(
        gate.normal_use(&mut world.old, None, &mut OsRng),
        Err(UseError::Temporary)
    ));

    // S17: no copy is left, and each provider keeps the record of the move.
    assert_eq!(world.copies_held(), 0);
    for service in SERVICES {
        let record = world
            .provider(service)
            .with_db(|p, db| p.copy_state(db, &done.move_id).unwrap())
            .unwrap();
        assert_eq!(record.state, "cleared");
        assert!(!record.holds_copy);
        assert_eq!(
            record.destination,
            Some(valuecard_card::testing::card_id(2))
        );
    }

    // Running either side again changes nothing.
    assert_eq!(world.download().unwrap().state, "done");
    assert!(matches!(
        world.upload(),
        Err(valuecard_migrate::client::ClientError::Server(
            valuecard_migrate::server::MoveError::AlreadyMoved
        ))
    ));
    for service in SERVICES {
        assert_eq!(
            key_state(world.chip(Which::New), service),
            Some(KeyState::Main)
        );
        assert_eq!(
            key_state(world.chip(Which::Old), service),
            Some(KeyState::Temporary)
        );
    }
    assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);
}

#[test]
fn a_move_rolled_back_after_its_upload_gives_the_old_chip_everything_back() {
    let mut world = World::new();
    let uploaded = world.upload().unwrap();
    assert_eq!(world.copies_held(), 3);
    let rolled = world.run(Which::Old, Mode::Rollback).unwrap();
    assert_eq!(rolled.state, "rolled_back");
    assert_eq!(world.copies_held(), 0);
    for service in SERVICES {
        assert_eq!(
            key_state(world.chip(Which::Old), service),
            Some(KeyState::Main)
        );
        let record = world
            .provider(service)
            .with_db(|p, db| p.copy_state(db, &uploaded.move_id).unwrap())
            .unwrap();
        assert_eq!(record.state, "discarded");
    }
    assert_one_home_for_everything(&world);
    assert_eq!(initialize_purchase(&mut world.old).sw, StatusWord::SUCCESS);
    // Nothing waits for a new chip any more.
    assert!(world.download().is_err());
    // And the chip can be moved again, from the start.
    assert_eq!(world.upload().unwrap().state, "uploaded");
    assert_eq!(world.download().unwrap().state, "done");
    assert_one_home_for_everything(&world);
}
