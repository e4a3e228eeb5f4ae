//! A provider's transfer routes are the move server's alone: a request without its access
//! secret, or with another, is refused 401 before anything is read, and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::http::{Payload, Raw};
use common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_center::sql::Executor;
use valuecard_migrate_http::wire::{
    Body, DownloadRequest, DownloadRequestBody, KeyPackagesRequestBody, UploadRequest,
    UploadRequestBody,
};
use valuecard_migrate_http::AccessSecret;
use valuecard_settle_http::DatabasePool;

fn sessions(pool: &DatabasePool) -> i64 {
    pool.run_blocking(|db| {
        db.query_one("SELECT COUNT(*) FROM provider_sessions", &[])?
            .int(0)
    })
    .unwrap()
}

/// The ways to call without the secret.
fn strangers() -> Vec<Option<String>> {
    let other = AccessSecret::generate(&mut OsRng);
    vec![
        None,
        Some(format!("Bearer {}", other.to_hex().as_str())),
        Some("Bearer".into()),
        Some("Bearer not-hex".into()),
        Some(format!("Basic {}", other.to_hex().as_str())),
    ]
}

#[test]
fn the_transfer_routes_refuse_anyone_but_the_move_server() {
    let mut rig = rig_in_memory();
    let uploaded = rig.upload().unwrap();
    let move_path = |action: &str| format!("/v1/moves/{}/{action}", hex::encode(uploaded.move_id));
    let pool = rig.provider_pool(TICKETS);
    let (url, pin) = rig.system.borrow().provider_endpoint(TICKETS).unwrap();
    let raw = Raw::new(&url, &pin);
    let sessions_before = sessions(&pool);

    let key_request = KeyPackagesRequestBody::to_json(&testing::card_certificate(2));
    let upload = UploadRequestBody::to_json(&UploadRequest {
        source: testing::card_id(1),
        source_certificate: testing::card_certificate(1),
        response: None,
    });
    let download = DownloadRequestBody::to_json(&DownloadRequest {
        destination: testing::card_id(2),
        response: None,
    });
    for authorization in strangers() {
        let authorization = authorization.as_deref();
        let answers = [
            raw.post(&move_path("discard"), Payload::None, authorization),
            raw.post(&move_path("clear"), Payload::None, authorization),
            raw.post(
                "/v1/key-packages",
                Payload::Bytes(&key_request),
                authorization,
            ),
            raw.post(&move_path("upload"), Payload::Bytes(&upload), authorization),
            raw.post(
                &move_path("download"),
                Payload::Bytes(&download),
                authorization,
            ),
            // Refused before the body is read: a malformed one changes nothing of that.
            raw.post(&move_path("upload"), Payload::Bytes(b"{"), authorization),
        ];
        for answer in answers {
            answer.problem(401, "unauthorized");
            assert_eq!(answer.authenticate.as_deref(), Some("Bearer"));
        }
    }
    // The format is public.
    assert_eq!(raw.get("/v1/format", None).status, 200);

    // Nothing changed: the copy is held, no conversation was begun.
    let copy = rig.copy(TICKETS, &uploaded.move_id).unwrap();
    assert_eq!(copy.state, "uploaded");
    assert!(copy.holds_copy);
    assert_eq!(copy.destination, None);
    assert_eq!(rig.copies_held(), 3);
    assert_eq!(sessions(&pool), sessions_before);

    // The move server, which holds the secret, carries on.
    let done = rig.download().unwrap();
    assert_moved(&rig, &done);
}

/// A provider's service on its own with a known secret: the secret opens the routes, its
/// digest (what the service keeps) does not.
#[test]
fn the_secret_opens_the_routes_and_its_digest_does_not() {
    let provider = Standalone::start();
    let request = KeyPackagesRequestBody::to_json(&testing::card_certificate(2));
    let answer = provider.raw.post(
        "/v1/key-packages",
        Payload::Bytes(&request),
        Some(&provider.bearer()),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body["main_package"].is_string());
    assert!(answer.body["temporary_package"].is_string());

    let digest = format!("Bearer {}", hex::encode(provider.secret.digest().0));
    provider
        .raw
        .post("/v1/key-packages", Payload::Bytes(&request), Some(&digest))
        .problem(401, "unauthorized");
    assert_eq!(provider.sessions(), 0);
    provider.service.shutdown().unwrap();
}
