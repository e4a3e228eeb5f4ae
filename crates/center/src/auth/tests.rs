#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use rand_core::OsRng;
use valuecard_core::crypto::{random_array, SigningKeyPair};
use valuecard_core::messages::center::InstallationRequest;
use valuecard_core::time::{Date, FixedClock};

/// The center's clock in the tests: 2026-06-01 in microseconds since the epoch.
const NOW: u64 = 1_780_272_000_000_000;

/// The body every request of these tests carries.
const BODY: &[u8] = b"{}";

/// A center on 2026-06-01 with one installed device of `role`, whose key the test holds.
fn center_with(role: Role) -> (Center, DeviceId, SigningKeyPair) {
    let clock = Box::new(FixedClock(Date::from_ymd(2026, 6, 1).unwrap()));
    let mut center = Center::ephemeral(clock, &mut OsRng).unwrap();
    let (device, key) = installed(&mut center, role);
    (center, device, key)
}

/// The device's signature over a request of these tests at `sequence`.
fn sign(key: &SigningKeyPair, sequence: u64) -> Signature {
    key.sign(&request_signing_input(
        "POST",
        "/v1/loads/settle",
        sequence,
        BODY,
    ))
}

fn installed(center: &mut Center, role: Role) -> (DeviceId, SigningKeyPair) {
    let device_id = center.allocate_device_id().unwrap();
    let signing = SigningKeyPair::generate(&mut OsRng);
    let request = InstallationRequest {
        device_id,
        signing_key: signing.public_key(),
        sealing_key: [7; 32],
        challenge: random_array(&mut OsRng),
    };
    center.install_device(&request, role).unwrap();
    (device_id, signing)
}

fn signed<'a>(
    device_id: DeviceId,
    sequence: u64,
    body: &'a [u8],
    signature: &'a Signature,
) -> SignedRequest<'a> {
    SignedRequest {
        device_id,
        sequence,
        method: "POST",
        path: "/v1/loads/settle",
        body,
        signature,
    }
}

#[test]
fn signed_requests_pass_once_in_sequence_order() {
    let (mut center, device, key) = center_with(Role::Dispenser);
    let body = BODY;
    let sign = |sequence| sign(&key, sequence);

    let first = sign(10);
    let accepted = center
        .authenticate_request(&signed(device, 10, body, &first), NOW)
        .unwrap();
    assert_eq!(accepted.role, Role::Dispenser);
    assert_eq!(center.last_request_sequence(&device).unwrap(), Some(10));
    // The same request again, and an older one, are replays.
    assert_eq!(
        center.authenticate_request(&signed(device, 10, body, &first), NOW),
        Err(AuthError::Replayed {
            device_id: device,
            sequence: 10
        })
    );
    let older = sign(9);
    assert!(matches!(
        center.authenticate_request(&signed(device, 9, body, &older), NOW),
        Err(AuthError::Replayed { .. })
    ));
    // A signature over another body, or by another key, does not verify and moves nothing.
    let other_body = sign(11);
    assert_eq!(
        center.authenticate_request(&signed(device, 11, b"{\"x\":1}", &other_body), NOW),
        Err(AuthError::BadSignature(device))
    );
    let stranger = SigningKeyPair::generate(&mut OsRng).sign(&request_signing_input(
        "POST",
        "/v1/loads/settle",
        12,
        body,
    ));
    assert_eq!(
        center.authenticate_request(&signed(device, 12, body, &stranger), NOW),
        Err(AuthError::BadSignature(device))
    );
    assert_eq!(center.last_request_sequence(&device).unwrap(), Some(10));
    let next = sign(11);
    center
        .authenticate_request(&signed(device, 11, body, &next), NOW)
        .unwrap();
    assert_eq!(center.last_request_sequence(&device).unwrap(), Some(11));
    // An unknown device is refused before anything else.
    let unknown = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 0x77]);
    assert_eq!(
        center.authenticate_request(&signed(unknown, 50, body, &next), NOW),
        Err(AuthError::UnknownDevice(unknown))
    );
    center.check_database().unwrap();
}

#[test]
fn a_sequence_far_ahead_is_refused_and_does_not_lock_the_device_out() {
    let (mut center, device, key) = center_with(Role::PaymentTerminal);
    let body = BODY;
    let send = |center: &mut Center, sequence: u64| {
        let signature = sign(&key, sequence);
        center.authenticate_request(&signed(device, sequence, body, &signature), NOW)
    };
    // Far ahead of the center's clock (a device clock in 2099, or a sequence near the
    // end of the range): refused, and nothing recorded.
    for far in [
        NOW + SEQUENCE_WINDOW_MICROS + 1,
        i64::MAX as u64,
        i64::MAX as u64 - 1,
    ] {
        assert!(
            matches!(send(&mut center, far), Err(AuthError::AheadOfWindow { .. })),
            "{far}"
        );
        assert_eq!(center.last_request_sequence(&device).unwrap(), None);
    }
    // The device goes on from its own clock; the edge of the window is accepted.
    send(&mut center, NOW).unwrap();
    assert_eq!(center.last_request_sequence(&device).unwrap(), Some(NOW));
    send(&mut center, NOW + SEQUENCE_WINDOW_MICROS).unwrap();
    // The window also moves with the last accepted sequence.
    let last = NOW + SEQUENCE_WINDOW_MICROS;
    assert!(matches!(
        send(&mut center, last + SEQUENCE_WINDOW_MICROS + 1),
        Err(AuthError::AheadOfWindow { .. })
    ));
    send(&mut center, last + 1).unwrap();
    assert_eq!(
        center.last_request_sequence(&device).unwrap(),
        Some(last + 1)
    );
}

#[test]
fn a_device_retired_after_its_key_was_read_is_refused_and_moves_nothing() {
    let (mut center, device, key) = center_with(Role::PaymentTerminal);
    let body = BODY;
    let sign = |sequence| sign(&key, sequence);
    let first = sign(NOW);
    center
        .authenticate_request(&signed(device, NOW, body, &first), NOW)
        .unwrap();
    // The signature is checked with the key as the directory read it...
    let directory_key = center.installed_device_key(device).unwrap();
    let next = sign(NOW + 1);
    let verified = directory_key
        .verify(&signed(device, NOW + 1, body, &next))
        .unwrap();
    // ...and the device is retired before the request is accepted.
    center
        .db
        .execute(
            "UPDATE devices SET status = 'retired' WHERE device_id = $1",
            &[device.0[..].into()],
        )
        .unwrap();
    assert_eq!(
        center.accept_request(&verified, NOW),
        Err(AuthError::UnknownDevice(device))
    );
    assert_eq!(center.last_request_sequence(&device).unwrap(), Some(NOW));
}

#[test]
fn answers_are_bound_to_their_request() {
    let device = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 1]);
    let other = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 2]);
    let base = answer_signing_input(&device, 7, "POST", "/v1/usage", b"{}");
    for changed in [
        answer_signing_input(&other, 7, "POST", "/v1/usage", b"{}"),
        answer_signing_input(&device, 8, "POST", "/v1/usage", b"{}"),
        answer_signing_input(&device, 7, "POST", "/v1/lists/delta", b"{}"),
        answer_signing_input(&device, 7, "POST", "/v1/usage", b"{\"stored\":1}"),
    ] {
        assert_ne!(base, changed);
    }
    assert!(!base.starts_with(&request_signing_input("POST", "/v1/usage", 7, b"{}")[..20]));
}
