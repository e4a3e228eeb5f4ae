//! S2's reference table over HTTPS: only the chip's issuers (with the system's access
//! secret) register a chip's services; a holder cannot. Once registered, a chip that hides a
//! registered service is not moved, and nothing on it changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::http::{Payload, Raw};
use common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_core::messages::services::{KeyState, ServiceCode};
use valuecard_migrate_http::wire::{Body, ChipServiceBody};
use valuecard_migrate_http::AccessSecret;

#[test]
fn only_issuers_register_a_chip_s_services_and_a_chip_hiding_one_is_not_moved() {
    let mut rig = rig_in_memory();
    let (url, pin) = {
        let system = rig.system.borrow();
        (system.url(), system.pin())
    };
    let raw = Raw::new(&url, &pin);
    let path = format!(
        "/v1/chips/{}/services",
        hex::encode(testing::card_id(1).as_bytes())
    );
    let body = ChipServiceBody::to_json(&ServiceCode(0x0304));
    let other = AccessSecret::generate(&mut OsRng);
    for authorization in [
        None,
        Some(format!("Bearer {}", other.to_hex().as_str())),
        Some("Bearer".to_owned()),
    ] {
        raw.post(&path, Payload::Bytes(&body), authorization.as_deref())
            .problem(401, "unauthorized");
    }
    // Nothing was registered by those: the chip moves on what it shows.
    // The issuers register the three services it was issued and one more it hides.
    {
        let system = rig.system.borrow();
        for service in [PURSE, TICKETS, POINTS, ServiceCode(0x0304)] {
            system
                .register_chip_service(&testing::card_id(1), service)
                .unwrap();
        }
    }
    let refused = rig.upload().unwrap_err().to_string();
    assert!(refused.contains("does not show service 0304"), "{refused}");
    for service in SERVICES {
        assert_eq!(
            key_state(rig.chip(Which::Old), service),
            Some(KeyState::Main)
        );
    }
    assert_eq!(rig.copies_held(), 0);
}

#[test]
fn a_chip_showing_exactly_its_registered_services_moves_over_https() {
    let mut rig = rig_in_memory();
    {
        let system = rig.system.borrow();
        for service in SERVICES {
            system
                .register_chip_service(&testing::card_id(1), service)
                .unwrap();
        }
    }
    assert_eq!(rig.upload().unwrap().state, "uploaded");
    assert_eq!(rig.download().unwrap().state, "done");
}
