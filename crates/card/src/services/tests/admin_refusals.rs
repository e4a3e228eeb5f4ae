//! Forged, replayed and misdirected FORMAT AREA and SWITCH KEYS: each refused, and none
//! changes anything.

use super::*;
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{seal_to, SigningKeyPair};
use valuecard_core::messages::services::{KeyPackage, SwitchKeys};

type Signer = (SigningKeyPair, Certificate);

/// FORMAT AREA signed by `signer` over `card_id` and `challenge`, with the given packages.
fn signed_format(
    signer: Signer,
    card_id: &CardId,
    challenge: &Challenge,
    format: AreaFormat,
    main_package: KeyPackage,
    temporary_package: KeyPackage,
) -> FormatArea {
    let (key, admin_certificate) = signer;
    FormatArea {
        signature: key.sign(&FormatArea::signed_message(
            card_id,
            challenge,
            &format,
            KeyState::Main,
            &main_package.signature,
            &temporary_package.signature,
        )),
        admin_certificate,
        format,
        initial_state: KeyState::Main,
        main_package,
        temporary_package,
    }
}

fn package(card: u8, service: Service, state: KeyState, provider: u8) -> KeyPackage {
    testing::key_package(card, service.code, state, provider, &mut OsRng)
}

/// A key package for test card `card`, signed by `issuer`, its key sealed to the sealing key
/// of test card `sealed_for`.
fn package_by(
    card: u8,
    sealed_for: u8,
    service: Service,
    state: KeyState,
    issuer: Signer,
) -> KeyPackage {
    let card_id = testing::card_id(card);
    let sealed_key = seal_to(
        &mut OsRng,
        &testing::card_keys(sealed_for).sealing.public_key(),
        &KeyPackage::seal_context(&card_id, service.code, state, 1),
        service.key(card, state).expose(),
    )
    .unwrap();
    let (key, issuer_certificate) = issuer;
    KeyPackage {
        signature: key.sign(&KeyPackage::signed_message(
            &card_id,
            service.code,
            state,
            1,
            &sealed_key,
        )),
        issuer_certificate,
        service: service.code,
        key_state: state,
        key_version: 1,
        sealed_key,
    }
}

/// Card 1 with the purse's area formatted: the state every refusal must leave alone.
fn chip() -> (Chip, Vec<u8>) {
    let mut chip = Chip::new(1, 5_000);
    assert_eq!(chip.format(PURSE, KeyState::Main).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    (chip, before)
}

fn assert_refused(chip: &mut Chip, response: Response, sw: StatusWord, before: &[u8]) {
    assert_eq!(response.sw, sw);
    assert!(response.data.is_empty());
    assert_eq!(
        chip.stored_bytes(),
        before,
        "a refused command changed the card"
    );
    assert_eq!(chip.fci().areas.len(), 1);
}

/// Sends a FORMAT AREA of TRANSIT made by `make` over a fresh challenge, and checks that it
/// is refused with `sw` and that the challenge is spent either way.
fn format_refused(sw: StatusWord, make: impl Fn(&Challenge) -> FormatArea) {
    let (mut chip, before) = chip();
    let challenge = chip.challenge();
    let response = chip.send_format(&make(&challenge));
    // The refusal spent the challenge: a genuine format over it is refused too.
    let genuine = testing::format_area(
        1,
        &challenge,
        TRANSIT.format(),
        KeyState::Main,
        2,
        &mut OsRng,
    );
    let retried = chip.send_format(&genuine);
    assert_eq!(retried.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    assert_refused(&mut chip, response, sw, &before);
}

#[test]
fn format_without_a_challenge_is_refused() {
    let (mut chip, before) = chip();
    let request = testing::format_area(
        1,
        &fresh_challenge(),
        TRANSIT.format(),
        KeyState::Main,
        2,
        &mut OsRng,
    );
    let response = chip.send_format(&request);
    assert_refused(
        &mut chip,
        response,
        StatusWord::CONDITIONS_NOT_SATISFIED,
        &before,
    );
    // Nor does a challenge survive another command of the application.
    let challenge = chip.challenge();
    chip.open_service(PURSE, fresh_challenge());
    let request = testing::format_area(
        1,
        &challenge,
        TRANSIT.format(),
        KeyState::Main,
        2,
        &mut OsRng,
    );
    let response = chip.send_format(&request);
    assert_refused(
        &mut chip,
        response,
        StatusWord::CONDITIONS_NOT_SATISFIED,
        &before,
    );
}

#[test]
fn a_stale_challenge_is_refused() {
    let mut chip = Chip::new(1, 0);
    let challenge = chip.challenge();
    let first = testing::format_area(
        1,
        &challenge,
        TRANSIT.format(),
        KeyState::Main,
        2,
        &mut OsRng,
    );
    assert_eq!(chip.send_format(&first).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    // Another command signed over the same challenge, and the same command replayed.
    let second = testing::format_area(1, &challenge, SHOP.format(), KeyState::Main, 3, &mut OsRng);
    for request in [&second, &first] {
        let response = chip.send_format(request);
        assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
        assert_eq!(chip.stored_bytes(), before);
    }
    // Over a new challenge, the old signature does not verify.
    chip.challenge();
    let response = chip.send_format(&second);
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(chip.stored_bytes(), before);
    assert_eq!(chip.fci().areas.len(), 1);
}

#[test]
fn a_format_signed_by_another_role_is_refused() {
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        signed_format(
            testing::terminal(),
            &testing::card_id(1),
            challenge,
            TRANSIT.format(),
            package(1, TRANSIT, KeyState::Main, 2),
            package(1, TRANSIT, KeyState::Temporary, 2),
        )
    });
    // Nor may a provider's own SAM format its area.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        signed_format(
            testing::service_provider(2),
            &testing::card_id(1),
            challenge,
            TRANSIT.format(),
            package(1, TRANSIT, KeyState::Main, 2),
            package(1, TRANSIT, KeyState::Temporary, 2),
        )
    });
}

#[test]
fn a_format_signed_for_another_card_is_refused() {
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        signed_format(
            testing::move_administrator(),
            &testing::card_id(2),
            challenge,
            TRANSIT.format(),
            package(1, TRANSIT, KeyState::Main, 2),
            package(1, TRANSIT, KeyState::Temporary, 2),
        )
    });
    // The whole command made for card 2.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        testing::format_area(
            2,
            challenge,
            TRANSIT.format(),
            KeyState::Main,
            2,
            &mut OsRng,
        )
    });
}

#[test]
fn a_package_from_the_wrong_provider_is_refused() {
    // The main key from provider 3's normal SAM for provider 2's area.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        signed_format(
            testing::move_administrator(),
            &testing::card_id(1),
            challenge,
            TRANSIT.format(),
            package(1, TRANSIT, KeyState::Main, 3),
            package(1, TRANSIT, KeyState::Temporary, 2),
        )
    });
    // The temporary key from provider 3's transfer SAM.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        signed_format(
            testing::move_administrator(),
            &testing::card_id(1),
            challenge,
            TRANSIT.format(),
            package(1, TRANSIT, KeyState::Main, 2),
            package(1, TRANSIT, KeyState::Temporary, 3),
        )
    });
}

#[test]
fn a_package_sealed_to_another_card_is_refused() {
    for state in [KeyState::Main, KeyState::Temporary] {
        format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
            let issuer = match state {
                KeyState::Main => testing::service_provider(2),
                KeyState::Temporary => testing::service_transfer(2),
            };
            // Signed for card 1, but its key sealed to card 2.
            let stray = package_by(1, 2, TRANSIT, state, issuer);
            let (main, temporary) = match state {
                KeyState::Main => (stray, package(1, TRANSIT, KeyState::Temporary, 2)),
                KeyState::Temporary => (package(1, TRANSIT, KeyState::Main, 2), stray),
            };
            signed_format(
                testing::move_administrator(),
                &testing::card_id(1),
                challenge,
                TRANSIT.format(),
                main,
                temporary,
            )
        });
    }
    // A genuine package for card 2, signed and sealed for it.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        signed_format(
            testing::move_administrator(),
            &testing::card_id(1),
            challenge,
            TRANSIT.format(),
            package(2, TRANSIT, KeyState::Main, 2),
            package(1, TRANSIT, KeyState::Temporary, 2),
        )
    });
}

#[test]
fn a_package_of_the_wrong_role_is_refused() {
    // The main key issued by the transfer SAM, the format naming that SAM as the provider:
    // only the role is wrong.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        let format = AreaFormat {
            provider: testing::service_transfer(2).1.subject(),
            ..TRANSIT.format()
        };
        signed_format(
            testing::move_administrator(),
            &testing::card_id(1),
            challenge,
            format,
            package_by(1, 1, TRANSIT, KeyState::Main, testing::service_transfer(2)),
            package(1, TRANSIT, KeyState::Temporary, 2),
        )
    });
    // The temporary key issued by the normal SAM.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        let format = AreaFormat {
            mover: testing::service_provider(2).1.subject(),
            ..TRANSIT.format()
        };
        signed_format(
            testing::move_administrator(),
            &testing::card_id(1),
            challenge,
            format,
            package(1, TRANSIT, KeyState::Main, 2),
            package_by(
                1,
                1,
                TRANSIT,
                KeyState::Temporary,
                testing::service_provider(2),
            ),
        )
    });
}

#[test]
fn the_packages_are_bound_by_the_administrators_signature() {
    // The administrator signed one pair of packages; another genuine pair is swapped in.
    format_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        let mut request = signed_format(
            testing::move_administrator(),
            &testing::card_id(1),
            challenge,
            TRANSIT.format(),
            package(1, TRANSIT, KeyState::Main, 2),
            package(1, TRANSIT, KeyState::Temporary, 2),
        );
        request.main_package = package(1, TRANSIT, KeyState::Main, 2);
        request
    });
}

/// Card 1 with TRANSIT on main keys, and SWITCH KEYS of it to temporary keys made by `make`
/// over a fresh challenge: refused with `sw`, nothing changed.
fn switch_refused(sw: StatusWord, make: impl Fn(&Challenge) -> SwitchKeys) {
    let mut chip = Chip::new(1, 0);
    assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    let challenge = chip.challenge();
    let response = chip.send(services_command(
        ins::SWITCH_KEYS,
        make(&challenge).encode(),
    ));
    assert_eq!(response.sw, sw);
    assert_eq!(chip.stored_bytes(), before);
    assert_eq!(chip.fci().areas[0].key_state, KeyState::Main);
    assert!(chip.open(TRANSIT, KeyState::Main).is_ok());
}

fn to_temporary() -> Vec<KeyChange> {
    vec![KeyChange {
        service: TRANSIT.code,
        key_state: KeyState::Temporary,
    }]
}

#[test]
fn switch_keys_without_a_fresh_challenge_is_refused() {
    let mut chip = Chip::new(1, 0);
    assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    // No GET CHALLENGE at all.
    let request = testing::switch_keys(1, &fresh_challenge(), MOVE, to_temporary());
    let response = chip.send(services_command(ins::SWITCH_KEYS, request.encode()));
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    assert_eq!(chip.stored_bytes(), before);

    // A second command over a challenge already used.
    let challenge = chip.challenge();
    let request = testing::switch_keys(1, &challenge, MOVE, to_temporary());
    let response = chip.send(services_command(ins::SWITCH_KEYS, request.encode()));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let switched = chip.stored_bytes();
    assert_ne!(switched, before);
    let back = testing::switch_keys(
        1,
        &challenge,
        MOVE,
        vec![KeyChange {
            service: TRANSIT.code,
            key_state: KeyState::Main,
        }],
    );
    let response = chip.send(services_command(ins::SWITCH_KEYS, back.encode()));
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    assert_eq!(chip.stored_bytes(), switched);
    assert_eq!(chip.area(TRANSIT).key_state, KeyState::Temporary);
}

#[test]
fn switch_keys_signed_by_another_role_is_refused() {
    for (key, certificate) in [testing::terminal(), testing::service_transfer(2)] {
        switch_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
            SwitchKeys {
                signature: key.sign(&SwitchKeys::signed_message(
                    &testing::card_id(1),
                    challenge,
                    &MOVE,
                    &to_temporary(),
                )),
                admin_certificate: certificate.clone(),
                move_id: MOVE,
                changes: to_temporary(),
            }
        });
    }
}

#[test]
fn switch_keys_signed_for_another_card_is_refused() {
    switch_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        testing::switch_keys(2, challenge, MOVE, to_temporary())
    });
}

#[test]
fn switch_keys_altered_after_signing_is_refused() {
    switch_refused(StatusWord::SECURITY_STATUS_NOT_SATISFIED, |challenge| {
        let mut request = testing::switch_keys(1, challenge, MOVE, to_temporary());
        request.move_id = OTHER_MOVE;
        request
    });
}

#[test]
fn switch_keys_of_an_unknown_area_changes_nothing() {
    // One area the chip has and one it has not: neither switches.
    switch_refused(StatusWord::REFERENCED_DATA_NOT_FOUND, |challenge| {
        let mut changes = to_temporary();
        changes.push(KeyChange {
            service: SHOP.code,
            key_state: KeyState::Temporary,
        });
        testing::switch_keys(1, challenge, MOVE, changes)
    });
}
