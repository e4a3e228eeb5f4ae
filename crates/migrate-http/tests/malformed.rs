//! What a broken or hostile client sends either service: bodies that are not JSON, fields
//! that are not hex or of the wrong length, unknown fields and modes, bad identifiers in
//! paths, bodies too large (declared or not), unknown routes and methods. Each gets a
//! problem document naming what is wrong, nothing changes, and the service goes on
//! serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::http::{Payload, Raw};
use common::*;
use serde_json::json;
use valuecard_card::testing;
use valuecard_migrate::client::{Mode, MoveServerLink};
use valuecard_migrate_http::wire::{Body, UploadRequest, UploadRequestBody};
use valuecard_migrate_http::MAX_BODY_BYTES;

#[test]
fn the_move_server_answers_malformed_requests_with_problems() {
    let mut rig = rig_in_memory();
    let raw = Raw::new(&rig.system.borrow().url(), &rig.system.borrow().pin());
    let bad = |path: &str, body: &[u8]| raw.post(path, Payload::Bytes(body), None);

    bad("/v1/sessions", b"{").problem(400, "bad-request");
    bad("/v1/sessions", b"").problem(400, "bad-request");
    bad("/v1/users", b"[]").problem(400, "bad-request");
    bad("/v1/sessions", &[0xFF, 0xFE, 0x00]).problem(400, "bad-request");
    let detail = raw
        .post_json(
            "/v1/sessions",
            &json!({"user_id": USER, "password": PASSWORD, "mode": "sideways"}),
        )
        .problem(400, "bad-request");
    assert!(detail.starts_with("mode:"), "{detail}");
    let detail = raw
        .post_json(
            "/v1/sessions",
            &json!({"user_id": USER, "password": PASSWORD, "mode": "upload", "admin": true}),
        )
        .problem(400, "bad-request");
    assert!(detail.contains("unknown field"), "{detail}");
    let detail = raw
        .post_json(
            "/v1/chips",
            &json!({"user_id": USER, "password": PASSWORD, "card_id": "00112233"}),
        )
        .problem(400, "bad-request");
    assert!(detail.starts_with("card_id:"), "{detail}");

    let started = rig.client.start(USER, PASSWORD, Mode::Upload).unwrap();
    let next = format!("/v1/sessions/{}/next", hex::encode(started.session));
    let detail = raw
        .post_json(&next, &json!({"response": "zz"}))
        .problem(400, "bad-request");
    assert!(detail.starts_with("response: not hex"), "{detail}");
    raw.post_json("/v1/sessions/xyz/next", &json!({"response": "9000"}))
        .problem(400, "bad-request");
    raw.post_json("/v1/sessions/00/next", &json!({"response": "9000"}))
        .problem(400, "bad-request");
    raw.get("/v1/moves/not-a-move", None)
        .problem(400, "bad-request");

    // Too large, with its length declared and without.
    let large = vec![b' '; MAX_BODY_BYTES + 1];
    raw.post(&next, Payload::Bytes(&large), None)
        .problem(413, "body-too-large");
    raw.post(&next, Payload::Chunked(&large), None)
        .problem(413, "body-too-large");
    // The router's own refusals.
    raw.get("/v1/nothing", None).problem(404, "not-found");
    raw.get("/v1/sessions", None)
        .problem(405, "method-not-allowed");

    // The session that met all of this is unharmed, and so is the server.
    let health = raw.get("/health", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body["database"], "sqlite");
    assert!(matches!(
        rig.client.next(&started.session, &[0x90]),
        Err(valuecard_migrate::server::MoveError::Answer(_))
    ));
    assert_eq!(rig.copies_held(), 0);
    let uploaded = rig.upload().unwrap();
    assert_eq!(uploaded.state, "uploaded");
    let done = rig.download().unwrap();
    assert_moved(&rig, &done);
}

#[test]
fn a_provider_answers_malformed_requests_with_problems() {
    let provider = Standalone::start();
    let bearer = provider.bearer();
    let raw = &provider.raw;
    let post = |path: &str, body: &[u8]| raw.post(path, Payload::Bytes(body), Some(&bearer));
    let move_id = hex::encode([0x42; 16]);
    let upload_path = format!("/v1/moves/{move_id}/upload");
    let request = UploadRequestBody::encode(&UploadRequest {
        source: testing::card_id(1),
        source_certificate: testing::card_certificate(1),
        response: None,
    });

    post("/v1/key-packages", b"{").problem(400, "bad-request");
    let detail =
        post("/v1/key-packages", br#"{"card_certificate":"7f21"}"#).problem(400, "bad-request");
    assert!(detail.starts_with("card_certificate:"), "{detail}");
    // A certificate that decodes but is no card's: the SAM refuses it.
    let (_, terminal) = testing::terminal();
    let body = json!({"card_certificate": hex::encode(terminal.encode())});
    post("/v1/key-packages", &serde_json::to_vec(&body).unwrap()).problem(403, "sam-refused");

    let mut bad = request.clone();
    bad.source_certificate = "zz".into();
    let detail = post(&upload_path, &serde_json::to_vec(&bad).unwrap()).problem(400, "bad-request");
    assert!(detail.starts_with("source_certificate:"), "{detail}");
    let mut bad = request.clone();
    bad.source_card_id = hex::encode([1u8; 9]);
    let detail = post(&upload_path, &serde_json::to_vec(&bad).unwrap()).problem(400, "bad-request");
    assert!(detail.starts_with("source_card_id:"), "{detail}");
    let good = serde_json::to_vec(&request).unwrap();
    post("/v1/moves/42/upload", &good).problem(400, "bad-request");
    post("/v1/moves/nothex/upload", &good).problem(400, "bad-request");

    // A continuation without a conversation, and the end of a copy never made.
    let mut answer = request.clone();
    answer.response = Some("9000".into());
    post(&upload_path, &serde_json::to_vec(&answer).unwrap()).problem(409, "out-of-order");
    raw.post(
        &format!("/v1/moves/{move_id}/clear"),
        Payload::None,
        Some(&bearer),
    )
    .problem(404, "no-copy");
    let download = json!({"destination_card_id": hex::encode(testing::card_id(2).as_bytes())});
    post(
        &format!("/v1/moves/{move_id}/download"),
        &serde_json::to_vec(&download).unwrap(),
    )
    .problem(404, "no-copy");

    let large = vec![b' '; MAX_BODY_BYTES + 1];
    raw.post(&upload_path, Payload::Bytes(&large), Some(&bearer))
        .problem(413, "body-too-large");
    raw.post(&upload_path, Payload::Chunked(&large), Some(&bearer))
        .problem(413, "body-too-large");
    // Without the secret, even a body too large is refused for the secret first.
    raw.post(&upload_path, Payload::Bytes(&large), None)
        .problem(401, "unauthorized");

    assert_eq!(provider.sessions(), 0);
    assert_eq!(raw.get("/health", None).status, 200);
    // A well-formed first step still begins a conversation: the service is unharmed.
    let begun = post(&upload_path, &good);
    assert_eq!(begun.status, 200, "{begun:?}");
    assert_eq!(begun.body["exchange"], "apdu");
    assert_eq!(provider.sessions(), 1);
    provider.service.shutdown().unwrap();
}
