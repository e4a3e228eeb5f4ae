//! S2 by serial number: where the issuers registered the services a chip was issued, the
//! move server checks what the chip shows against them, and moves nothing when they differ
//! (a chip that hides a service, or shows one nobody issued to it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_core::messages::services::{KeyState, ServiceCode};
use valuecard_migrate::server::accounts::{chip_services, register_chip_service};

fn old_chip() -> valuecard_core::ids::CardId {
    valuecard_card::testing::card_id(1)
}

fn register(world: &World, services: &[ServiceCode]) {
    world.server.with_db(|_, db| {
        for service in services {
            register_chip_service(db, &old_chip(), *service).unwrap();
            // Registered twice: the same.
            register_chip_service(db, &old_chip(), *service).unwrap();
        }
    });
}

fn all_main(world: &World) -> bool {
    SERVICES
        .iter()
        .all(|service| key_state(world.chip(Which::Old), *service) == Some(KeyState::Main))
}

#[test]
fn a_chip_showing_exactly_its_registered_services_moves() {
    let mut world = World::new();
    register(&world, &SERVICES);
    let listed = world
        .server
        .with_db(|_, db| chip_services(db, &old_chip()))
        .unwrap();
    assert_eq!(listed, SERVICES.to_vec());
    assert_eq!(world.upload().unwrap().state, "uploaded");
    assert_eq!(world.download().unwrap().state, "done");
}

#[test]
fn a_chip_that_hides_a_registered_service_is_not_moved() {
    let mut world = World::new();
    register(&world, &[PURSE, TICKETS, POINTS, ServiceCode(0x0304)]);
    let refused = world.upload().unwrap_err().to_string();
    assert!(refused.contains("does not show service 0304"), "{refused}");
    assert!(all_main(&world), "the refused chip was touched");
    assert_eq!(world.copies_held(), 0);
}

#[test]
fn a_chip_showing_a_service_nobody_registered_is_not_moved() {
    let mut world = World::new();
    register(&world, &[PURSE, TICKETS]);
    let refused = world.upload().unwrap_err().to_string();
    assert!(
        refused.contains("shows service 0203, not registered"),
        "{refused}"
    );
    assert!(all_main(&world), "the refused chip was touched");
    assert_eq!(world.copies_held(), 0);
}
