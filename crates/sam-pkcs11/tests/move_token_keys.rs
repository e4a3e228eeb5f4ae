//! Seed 002's SAM keys in SoftHSM2: they never come out of the token, a SAM opens only with
//! a certificate for the token's keys, and a token that lost a key answers with an error, not
//! a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod move_common;

use common::{secret_keys, softhsm};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use move_common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_core::cert::Role;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::KeyState;
use valuecard_migrate::sam::{AdminSam, ProviderSam, SamError};
use valuecard_sam_pkcs11::{MoveSamError, NewMaster, Pkcs11ProviderSam, Pkcs11SamError};

#[test]
fn the_master_and_storage_keys_never_leave_the_token() {
    let Some(module) = softhsm("move_keys_sensitive") else {
        return;
    };
    let token = Token::fresh(&module);
    let _normal = token.normal("normal", 1, NewMaster::Generate);
    let _transfer = token.transfer(
        "transfer",
        1,
        imported_master(1, KeyState::Temporary),
        NewMaster::Generate,
    );
    let session = own_session(&token);
    let secret = secret_keys(
        &session,
        &[
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Token,
            AttributeType::Sign,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Derive,
        ],
    );
    for (label, attributes) in &secret {
        // A master computes CMACs only; a storage key seals and opens only.
        let storage = label.ends_with("/copy-storage");
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Token(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Sign(!storage),
            Attribute::Encrypt(storage),
            Attribute::Decrypt(storage),
        ] {
            assert!(
                attributes.contains(&expected),
                "{label}: {expected:?} in {attributes:?}"
            );
        }
        // Only the imported master ever existed outside the token.
        assert_eq!(
            attributes.contains(&Attribute::NeverExtractable(true)),
            label != "transfer/area-master",
            "{label}"
        );
    }
    let labels: Vec<&str> = secret.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "normal/area-master",
            "transfer/area-master",
            "transfer/copy-storage"
        ]
    );
    // The signing keys are as closed.
    for key in session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
    {
        let attributes = session
            .get_attributes(key, &[AttributeType::Sensitive, AttributeType::Extractable])
            .unwrap();
        assert!(attributes.contains(&Attribute::Sensitive(true)));
        assert!(attributes.contains(&Attribute::Extractable(false)));
    }
}

#[test]
fn opening_checks_the_certificate_against_the_token_s_keys() {
    let Some(module) = softhsm("move_open_checks") else {
        return;
    };
    let token = Token::fresh(&module);
    let normal_address = token.address("normal");
    let normal_public =
        Pkcs11ProviderSam::provision_normal(&normal_address, NewMaster::Generate).unwrap();
    let transfer_address = token.address("transfer");
    let transfer_public = Pkcs11ProviderSam::provision_transfer(
        &transfer_address,
        NewMaster::Generate,
        NewMaster::Generate,
    )
    .unwrap();
    let open = |address, key, role| {
        Pkcs11ProviderSam::open(
            address,
            certificate(key, normal_subject(1), role),
            testing::anchor(),
        )
    };
    assert_eq!(
        open(&normal_address, normal_public, Role::ServiceProvider)
            .unwrap()
            .key_state(),
        KeyState::Main
    );
    assert_eq!(
        open(&transfer_address, transfer_public, Role::ServiceTransfer)
            .unwrap()
            .key_state(),
        KeyState::Temporary
    );
    // A transfer SAM's certificate over a token without a storage key, and the reverse.
    assert_eq!(
        open(&normal_address, normal_public, Role::ServiceTransfer).unwrap_err(),
        MoveSamError::KindMismatch("transfer")
    );
    assert_eq!(
        open(&transfer_address, transfer_public, Role::ServiceProvider).unwrap_err(),
        MoveSamError::KindMismatch("normal")
    );
    assert_eq!(
        open(&normal_address, transfer_public, Role::ServiceProvider).unwrap_err(),
        MoveSamError::ForeignCertificate
    );
    assert_eq!(
        open(&normal_address, normal_public, Role::MoveAdministrator).unwrap_err(),
        MoveSamError::WrongRole(Role::MoveAdministrator)
    );
    assert!(matches!(
        Pkcs11ProviderSam::provision_normal(&normal_address, NewMaster::Generate),
        Err(MoveSamError::Token(Pkcs11SamError::AlreadyExists(_)))
    ));
    assert!(matches!(
        open(
            &token.address("nobody"),
            normal_public,
            Role::ServiceProvider
        ),
        Err(MoveSamError::Token(Pkcs11SamError::MissingObject(_)))
    ));
}

#[test]
fn a_token_that_lost_its_keys_answers_an_error_not_a_panic() {
    let Some(module) = softhsm("move_token_failure") else {
        return;
    };
    let token = Token::fresh(&module);
    let transfer = token.transfer("transfer", 1, NewMaster::Generate, NewMaster::Generate);
    let admin = token.admin("admin");
    let sealed = transfer
        .seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng)
        .unwrap();
    let session = own_session(&token);
    for object in session.find_objects(&[Attribute::Token(true)]).unwrap() {
        session.destroy_object(object).unwrap();
    }
    let unavailable = |result: Result<(), SamError>| {
        assert!(
            matches!(result, Err(SamError::Unavailable(_))),
            "{result:?}"
        );
    };
    unavailable(
        transfer
            .key_package(
                &testing::card_certificate(1),
                TICKETS,
                testing::today(),
                &mut OsRng,
            )
            .map(drop),
    );
    let binding = binding(1, TICKETS, KeyState::Temporary);
    unavailable(
        transfer
            .open_channel(binding, &card_cryptogram(1, binding))
            .map(drop),
    );
    unavailable(
        transfer
            .seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng)
            .map(drop),
    );
    unavailable(
        transfer
            .open_copy(&MOVE, TICKETS, &testing::card_id(1), &sealed)
            .map(drop),
    );
    unavailable(
        admin
            .switch_keys(&CardId([1; 8]), &[0; 16], MOVE, Vec::new())
            .map(drop),
    );
    // What the SAM holds outside the token is intact.
    assert_eq!(transfer.certificate().subject(), transfer_subject(1));
}
