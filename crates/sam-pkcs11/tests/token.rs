//! What the token holds and refuses: keys that never leave it, a wrong PIN, a second SAM
//! under one label, a SAM opened again with its state, a second installation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{address_in, fresh_address, installed_sam, softhsm, Kind};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::InstallationRequest;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_sam::{request_signing_input, PurchaseOrder, Sam, SamError};
use valuecard_sam_pkcs11::softhsm::THROWAWAY_USER_PIN;
use valuecard_sam_pkcs11::{context, Pkcs11Sam, Pkcs11SamError};
use valuecard_sim::{Storage, World};

fn world() -> World {
    World::create(Storage::Memory, 0, Date::from_ymd(2026, 11, 30).unwrap()).unwrap()
}

#[test]
fn private_and_secret_keys_are_sensitive_and_never_extractable() {
    let Some(module) = softhsm("keys_are_sensitive") else {
        return;
    };
    let address = fresh_address(&module, "sam");
    let mut world = world();
    let sam = installed_sam(
        &mut world,
        &Kind::Pkcs11(Box::new(address.clone())),
        Role::PaymentTerminal,
        "sam",
    );
    let pkcs11 = context::context(&module).unwrap();
    let token = address.uri.token.clone().unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == token)
        .unwrap();
    let session = pkcs11.open_ro_session(slot).unwrap();
    // The SAM's session keeps the user logged in for the application already.
    let _ = session.login(
        UserType::User,
        Some(&AuthPin::from(THROWAWAY_USER_PIN.to_owned())),
    );
    let mut checked = Vec::new();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
        for key in session.find_objects(&[Attribute::Class(class)]).unwrap() {
            let info = session
                .get_attribute_info(key, &[AttributeType::Value])
                .unwrap();
            assert!(
                matches!(info.as_slice(), [AttributeInfo::Sensitive]),
                "CKA_VALUE must not be readable: {info:?}"
            );
            let attributes = session
                .get_attributes(
                    key,
                    &[
                        AttributeType::Label,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Token,
                        AttributeType::Value,
                        AttributeType::Decrypt,
                        AttributeType::Unwrap,
                    ],
                )
                .unwrap();
            // Nothing but its one use: no key can decrypt or unwrap (SoftHSM2's defaults).
            assert!(attributes.contains(&Attribute::Decrypt(false)));
            assert!(attributes.contains(&Attribute::Unwrap(false)));
            assert!(attributes.contains(&Attribute::Sensitive(true)));
            assert!(attributes.contains(&Attribute::Extractable(false)));
            assert!(attributes.contains(&Attribute::Token(true)));
            assert!(
                !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
                "no key value may come back"
            );
            let label = attributes.iter().find_map(|a| match a {
                Attribute::Label(label) => Some(String::from_utf8_lossy(label).into_owned()),
                _ => None,
            });
            checked.push(label.unwrap());
        }
    }
    checked.sort();
    // The two private keys, KT and KO; the transport key was destroyed at installation.
    assert_eq!(
        checked,
        ["sam", "sam/common-key", "sam/sealing", "sam/terminal-key"],
    );
    drop(sam);
}

#[test]
fn a_wrong_pin_is_refused_with_a_clear_error() {
    let Some(module) = softhsm("wrong_pin") else {
        return;
    };
    let address = fresh_address(&module, "sam");
    let mut world = world();
    let sam = installed_sam(
        &mut world,
        &Kind::Pkcs11(Box::new(address.clone())),
        Role::Dispenser,
        "sam",
    );
    // Closing the last session of the token logs the user out.
    drop(sam);
    let label = address.uri.token.clone().unwrap();
    let wrong = address_in(&module, &label, "sam", "99999999");
    let error = Pkcs11Sam::open(&wrong).unwrap_err();
    assert_eq!(error, Pkcs11SamError::WrongPin);
    assert!(error.to_string().contains("wrong user PIN"), "{error}");
    // The right PIN still opens it (one wrong try did not lock the token).
    Pkcs11Sam::open(&address).unwrap();
}

#[test]
fn a_reopened_sam_keeps_its_identity_stamp_and_sequence() {
    let Some(module) = softhsm("reopened") else {
        return;
    };
    let address = fresh_address(&module, "sam");
    let mut world = world();
    let mut sam = installed_sam(
        &mut world,
        &Kind::Pkcs11(Box::new(address.clone())),
        Role::PaymentTerminal,
        "sam",
    );
    let device_id = sam.device_id();
    let signing_key = sam.signing_key();
    world.pass_days(3);
    assert_eq!(sam.stamp().unwrap().count, 3);
    drop(sam);

    let mut again = Pkcs11Sam::open_for(&address, device_id)
        .unwrap()
        .with_clock(world.clock());
    assert_eq!(again.signing_key(), signing_key);
    let stamp = again.stamp().unwrap();
    assert_eq!(stamp.count, 3, "the chain neither restarts nor jumps");
    // A signed request verifies under the certified key, over the shared construction.
    let signature = again
        .sign_device_request("POST", "/v1/x", 7, b"body")
        .unwrap();
    signing_key
        .verify(
            &request_signing_input("POST", "/v1/x", 7, b"body"),
            &signature,
        )
        .unwrap();
    assert_eq!(again.certificate().unwrap().body.subject, device_id);

    let other = Pkcs11Sam::open_for(&address, DeviceId([0xEE; 8])).unwrap_err();
    assert!(
        matches!(other, Pkcs11SamError::OtherDevice { .. }),
        "{other}"
    );
}

#[test]
fn one_label_holds_one_sam_and_installs_once() {
    let Some(module) = softhsm("one_label") else {
        return;
    };
    let address = fresh_address(&module, "sam");
    let mut world = world();
    let device_id = world.center.allocate_device_id().unwrap();
    let transport_key = world.center.transport_key_for_device(&device_id);
    let mut sam = Pkcs11Sam::manufacture(&address, device_id, transport_key)
        .unwrap()
        .with_clock(world.clock());
    let again = Pkcs11Sam::manufacture(
        &address,
        device_id,
        world.center.transport_key_for_device(&device_id),
    )
    .unwrap_err();
    assert_eq!(again, Pkcs11SamError::AlreadyExists("sam".into()));

    // Not installed: it signs nothing.
    assert_eq!(
        sam.sign_device_request("GET", "/", 1, b"").unwrap_err(),
        SamError::NotInstalled
    );
    let challenge = random_array(&mut world.fork_rng());
    let request = InstallationRequest {
        device_id,
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge,
    };
    let installation = world
        .center
        .install_device(&request, Role::PaymentTerminal)
        .unwrap();
    // A tampered MAC is refused in the token and installs nothing.
    let mut forged = installation.clone();
    forged.mac[0] ^= 1;
    assert_eq!(
        sam.install(&forged, &challenge, Role::PaymentTerminal, world.today())
            .unwrap_err(),
        SamError::BadInstallationMac
    );
    assert!(!sam.has_link_keys().unwrap());
    sam.install(
        &installation,
        &challenge,
        Role::PaymentTerminal,
        world.today(),
    )
    .unwrap();
    assert!(sam.has_link_keys().unwrap());
    // Ktemp is gone: the same installation cannot be replayed.
    assert_eq!(
        sam.install(
            &installation,
            &challenge,
            Role::PaymentTerminal,
            world.today()
        )
        .unwrap_err(),
        SamError::BadInstallationMac
    );
}

fn order(today: Date) -> PurchaseOrder {
    let balance = Amount::new(10_000).unwrap();
    PurchaseOrder {
        card_id: CardId([3; 8]),
        challenge_terminal: [1; 16],
        challenge_card: [2; 16],
        counter: 1,
        balance_before: balance,
        amount_max: balance,
        amount: Amount::new(5).unwrap(),
        date: today,
        sequence_floor: 0,
    }
}

#[test]
fn sequences_never_repeat_across_reopening_and_two_open_objects() {
    let Some(module) = softhsm("sequences") else {
        return;
    };
    let address = fresh_address(&module, "sam");
    let mut world = world();
    let mut first = installed_sam(
        &mut world,
        &Kind::Pkcs11(Box::new(address.clone())),
        Role::PaymentTerminal,
        "sam",
    );
    let device_id = first.device_id();
    let order = order(world.today());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let signed = first.sign_purchase(&order).unwrap();
        first
            .signing_key()
            .verify(&signed.commit.signed_message(), &signed.signature)
            .unwrap();
        seen.push(signed.commit.terminal_sequence);
    }
    assert_eq!(seen, [1, 2, 3]);
    // A second object of the same SAM, open at the same time (as a device's link to the
    // center is), reserves its own sequences; neither signs under the other's.
    let mut second = Pkcs11Sam::open_for(&address, device_id)
        .unwrap()
        .with_clock(world.clock());
    for _ in 0..3 {
        seen.push(
            second
                .sign_purchase(&order)
                .unwrap()
                .commit
                .terminal_sequence,
        );
        seen.push(
            first
                .sign_purchase(&order)
                .unwrap()
                .commit
                .terminal_sequence,
        );
    }
    drop(first);
    drop(second);
    // Reopened after both are gone: past every reserved sequence, and the floor holds.
    let mut again = Pkcs11Sam::open_for(&address, device_id)
        .unwrap()
        .with_clock(world.clock());
    seen.push(
        again
            .sign_purchase(&order)
            .unwrap()
            .commit
            .terminal_sequence,
    );
    let floor = PurchaseOrder {
        sequence_floor: 10_000,
        ..order
    };
    seen.push(
        again
            .sign_purchase(&floor)
            .unwrap()
            .commit
            .terminal_sequence,
    );
    let last = seen.len() - 1;
    assert_eq!(seen[last], 10_000);
    assert!(seen[last - 1] > 2 * valuecard_sam_pkcs11::SEQUENCE_BLOCK);
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a sequence was signed twice: {seen:?}"
    );
}
