//! Seed 002's administrative SAM in SoftHSM2: a chip accepts its FORMAT AREA and SWITCH KEYS,
//! and refuses them under a foreign certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod move_common;

use std::sync::Arc;

use common::softhsm;
use move_common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_core::apdu::Command;
use valuecard_core::cert::Role;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::messages::purse::{Challenge, CLA_ISO};
use valuecard_core::messages::services::{
    ins, KeyChange, KeyState, ServiceCode, CLA_SERVICES, SERVICES_AID,
};
use valuecard_core::StatusWord;
use valuecard_migrate::sam::{AdminSam, SamError};
use valuecard_sam_pkcs11::{MoveSamError, Pkcs11AdminSam, Pkcs11SamError};

/// SELECT of the services application and GET CHALLENGE: the chip's next challenge.
fn challenge(chip: &mut Reader) -> Challenge {
    use valuecard_reader::CardReader;
    let selected = chip
        .exchange(
            &Command::new(CLA_ISO, 0xA4, 0x04, 0x00)
                .with_data(SERVICES_AID.to_vec())
                .with_le(256),
        )
        .unwrap();
    assert_eq!(selected.sw, StatusWord::SUCCESS);
    let answer = chip
        .exchange(&Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(16))
        .unwrap();
    assert_eq!(answer.sw, StatusWord::SUCCESS);
    answer.data.try_into().unwrap()
}

/// SWITCH KEYS of `service` on test card `card` to `state`, signed by `admin` over the
/// chip's fresh challenge: the chip's status word.
fn switch(
    admin: &dyn AdminSam,
    chip: &mut Reader,
    card: u8,
    service: ServiceCode,
    state: KeyState,
) -> StatusWord {
    use valuecard_reader::CardReader;
    let challenge = challenge(chip);
    let command = admin
        .switch_keys(
            &testing::card_id(card),
            &challenge,
            MOVE,
            vec![KeyChange {
                service,
                key_state: state,
            }],
        )
        .unwrap();
    chip.exchange(&Command::new(CLA_SERVICES, ins::SWITCH_KEYS, 0, 0).with_data(command.encode()))
        .unwrap()
        .sw
}

#[test]
fn a_chip_accepts_the_token_admin_s_format_and_switch_and_refuses_a_foreign_one() {
    let Some(module) = softhsm("move_admin") else {
        return;
    };
    let token = Token::fresh(&module);
    let admin = token.admin("admin");
    assert_eq!(admin.certificate().body.signing_key, admin.public_key());
    let provider = tickets_provider(
        Arc::new(software_normal(2)),
        Arc::new(software_transfer(2, STORAGE)),
    );
    let mut chip = reader(1, 500);
    provider
        .issue_area(&admin, &mut chip, testing::today(), &mut OsRng)
        .unwrap();
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Main);
    assert_eq!(
        switch(&admin, &mut chip, 1, TICKETS, KeyState::Temporary),
        StatusWord::SUCCESS
    );
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Temporary);
    assert_eq!(
        switch(&admin, &mut chip, 1, TICKETS, KeyState::Main),
        StatusWord::SUCCESS
    );
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Main);

    // The token refuses to sign FORMAT AREA with packages that are not the area's.
    let (main, temporary) = provider
        .key_packages(&testing::card_certificate(2), testing::today(), &mut OsRng)
        .unwrap();
    let card_id = testing::card_id(2);
    let challenge: Challenge = [0x33; 16];
    assert!(matches!(
        admin.format_area(
            &card_id,
            &challenge,
            provider.format(),
            KeyState::Main,
            temporary.clone(),
            main.clone(),
        ),
        Err(SamError::Unsupported(_))
    ));
    let mut other_service = provider.format();
    other_service.service = ServiceCode(0x0203);
    assert!(matches!(
        admin.format_area(
            &card_id,
            &challenge,
            other_service,
            KeyState::Main,
            main.clone(),
            temporary.clone(),
        ),
        Err(SamError::Unsupported(_))
    ));

    // The token's key under another scheme's root: the SAM opens (its certificate is the
    // center's business), but no chip of this scheme obeys it.
    let address = token.address("admin");
    let foreign = Pkcs11AdminSam::open(
        &address,
        certificate_under(
            &SigningKeyPair::from_seed(&[0x99; 32]),
            admin.public_key(),
            admin_subject(),
            Role::MoveAdministrator,
        ),
    )
    .unwrap();
    assert_ne!(
        switch(&foreign, &mut chip, 1, TICKETS, KeyState::Temporary),
        StatusWord::SUCCESS
    );
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Main);
    let mut fresh = reader(2, 0);
    assert!(provider
        .issue_area(&foreign, &mut fresh, testing::today(), &mut OsRng)
        .is_err());
    assert!(area(&fresh, TICKETS).is_none());

    // Certificates the token's SAM refuses to open with: another key's, another role's.
    assert_eq!(
        Pkcs11AdminSam::open(&address, testing::move_administrator().1).unwrap_err(),
        MoveSamError::ForeignCertificate
    );
    assert_eq!(
        Pkcs11AdminSam::open(
            &address,
            certificate(admin.public_key(), admin_subject(), Role::ServiceProvider)
        )
        .unwrap_err(),
        MoveSamError::WrongRole(Role::ServiceProvider)
    );
    // A second administrative SAM under the same label is refused.
    assert!(matches!(
        Pkcs11AdminSam::provision(&address),
        Err(MoveSamError::Token(Pkcs11SamError::AlreadyExists(_)))
    ));
}
