//! The center over HTTP on SQLite: a real issuance and loads through `HttpCenterLink`, the
//! refusals (each judged by its status, its problem document, and unchanged records),
//! graceful shutdown (health and metrics: `metrics.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand_core::SeedableRng;
use valuecard_center::Center;
use valuecard_center_http::{HttpCenterLink, MAX_BODY_BYTES};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CardIdRequest, CenterError, CenterLink};
use valuecard_core::messages::purse::LastTransaction;
use valuecard_sim::{last_transaction, read_purse, WorldRng};
use valuecard_terminal::TerminalError;

/// A chip serial for requests that never reach a real chip.
const CHIP: [u8; 8] = [0xC5, 0, 0, 0, 0, 0, 0, 1];

fn harness(seed: u64) -> Harness {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(seed)).unwrap();
    Harness::start(center, seed)
}

/// A settlement body carrying the card's signed last transaction over `challenge`.
fn settle_body(
    card: &CardId,
    dispenser: DeviceId,
    load_number: u32,
    challenge: [u8; 16],
    evidence: &LastTransaction,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "dispenser_id": dispenser.to_hex(),
        "card_id": card.to_hex(),
        "load_number": load_number,
        "challenge": hex::encode(challenge),
        "evidence": hex::encode(evidence.encode()),
    }))
    .unwrap()
}

#[test]
fn a_card_is_issued_loaded_and_settled_over_http() {
    let mut h = harness(1);
    let (mut reader, card_id) = issue_and_load(&mut h);
    let purse = read_purse(&mut reader).unwrap();
    assert_eq!(purse.card_id, card_id);
    assert_eq!(purse.balance, amount(6_250));
    let snapshot = h.snapshot();
    assert_eq!(snapshot.cards, 1);
    assert_eq!(snapshot.totals.issued, 5_000);
    assert_eq!(snapshot.totals.loaded, 1_250);
    assert_eq!(snapshot.totals.in_flight_count, 0);
    let record = h
        .with_center(|center| center.remaining_value(&card_id).unwrap())
        .unwrap();
    assert_eq!(record.balance, amount(6_250));

    // A load whose CREDIT answer is lost stays in flight at the center until a dispenser
    // settles it from the card's evidence, through the pending-loads endpoint.
    let mut dispenser = h.dispenser();
    let mut link = h.link(&h.dispenser);
    let mut losing = LosingReader {
        inner: &mut reader,
        lose_credit_answer: true,
    };
    let error = dispenser
        .load(&mut losing, &mut link, amount(300))
        .unwrap_err();
    let TerminalError::LoadInDoubt { load_number } = error else {
        panic!("{error:?}")
    };
    assert_eq!(h.snapshot().totals.in_flight_count, 1);
    let pending = link.pending_loads(&card_id).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].load_number, load_number);
    assert_eq!(pending[0].amount, amount(300));
    let committed = dispenser
        .settle_pending_load(&mut reader, &mut link, pending[0].load_number)
        .unwrap();
    assert_eq!(committed, Some(true));
    assert!(link.pending_loads(&card_id).unwrap().is_empty());
    let totals = h.snapshot().totals;
    assert_eq!((totals.loaded, totals.in_flight_count), (1_550, 0));
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(6_550));
}

#[test]
fn the_centers_refusals_come_back_as_center_errors() {
    let mut h = harness(2);
    let (mut reader, card_id) = issue_and_load(&mut h);
    let dispenser_id = device_id(&h.dispenser);
    let mut link = h.link(&h.dispenser);

    let unknown = CardId([0xC0, 0, 0, 0, 0, 0, 0x7F, 0xFF]);
    assert_eq!(
        link.resume_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &unknown,
            &[1; 16]
        ),
        Err(CenterError::UnknownCard(unknown))
    );
    // Resuming an issued card is allowed (its PERSONALIZE may have been cut), but only at
    // the dispenser that issued it.
    let resumed = link
        .resume_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &card_id,
            &[1; 16],
        )
        .unwrap();
    assert_eq!(resumed.card_id, card_id);
    let mut other = h.link(&h.other_dispenser);
    let other_id = other.device_id();
    assert_eq!(
        other.resume_card_id(
            &CardIdRequest {
                dispenser_id: other_id,
                chip_serial: CHIP,
            },
            &card_id,
            &[1; 16]
        ),
        Err(CenterError::NotAuthorized(other_id))
    );
    // A body naming another device than the one that signs: refused, as the center would.
    assert_eq!(
        other.assign_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &[1; 16]
        ),
        Err(CenterError::NotAuthorized(other_id))
    );
    // A payment terminal is not a dispenser.
    let mut terminal = h.link(&h.terminal);
    let terminal_id = terminal.device_id();
    assert_eq!(
        terminal.assign_card_id(
            &CardIdRequest {
                dispenser_id: terminal_id,
                chip_serial: CHIP,
            },
            &[1; 16]
        ),
        Err(CenterError::NotAuthorized(terminal_id))
    );

    h.with_center(|center| center.block_card(&card_id).unwrap());
    let before = h.snapshot();
    let mut dispenser = h.dispenser();
    assert_eq!(
        dispenser.load(&mut reader, &mut link, amount(100)),
        Err(TerminalError::Center(CenterError::CardBlocked(card_id)))
    );
    assert_eq!(h.snapshot(), before);

    // Nothing listens: the link says unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut nowhere = HttpCenterLink::new(&url, h.server.pin(), Box::new(sam(&h.dispenser)))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    assert!(matches!(
        nowhere.assign_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &[1; 16]
        ),
        Err(CenterError::Unreachable(_))
    ));
    assert!(matches!(
        HttpCenterLink::new(
            "http://127.0.0.1:1",
            h.server.pin(),
            Box::new(sam(&h.dispenser))
        ),
        Err(CenterError::Setup(_))
    ));
}

#[test]
fn refused_requests_change_nothing() {
    let mut h = harness(3);
    let (mut reader, card_id) = issue_and_load(&mut h);
    // One load left in flight, so that a wrongly accepted settlement would show.
    let mut dispenser = h.dispenser();
    let mut link = h.link(&h.dispenser);
    let mut losing = LosingReader {
        inner: &mut reader,
        lose_credit_answer: true,
    };
    let TerminalError::LoadInDoubt { load_number } = dispenser
        .load(&mut losing, &mut link, amount(700))
        .unwrap_err()
    else {
        panic!("the load must be in doubt")
    };
    let url = h.url();
    let a = device_id(&h.dispenser);
    let b = device_id(&h.other_dispenser);
    let terminal = device_id(&h.terminal);
    let settle = "/v1/loads/settle";
    // The card committed the load whose answer was lost: its signed last transaction is
    // the evidence a settlement carries.
    let challenge = [0x5E; 16];
    let evidence = last_transaction(&mut reader, challenge).unwrap();
    let body = settle_body(&card_id, a, load_number, challenge, &evidence);
    let before = h.snapshot();
    assert_eq!(before.pending.len(), 1);
    let sequences = |h: &Harness| {
        (
            h.last_sequence(&h.dispenser),
            h.last_sequence(&h.other_dispenser),
            h.last_sequence(&h.terminal),
        )
    };

    // Authentication refusals: nothing stored, and no sequence moves.
    let quiet = sequences(&h);
    let json = [("content-type".to_owned(), "application/json".to_owned())];
    let answer = send(&url, "POST", settle, &json, &body);
    let document = answer.problem(401, "unauthenticated");
    assert!(document.detail.contains("valuecard-device"), "{document:?}");
    let mut headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &body,
    );
    headers.retain(|(name, _)| name != "valuecard-signature");
    send(&url, "POST", settle, &headers, &body).problem(401, "unauthenticated");
    let mut headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &body,
    );
    for (name, value) in &mut headers {
        if name == "valuecard-sequence" {
            *value = "-5".into();
        }
    }
    send(&url, "POST", settle, &headers, &body).problem(401, "unauthenticated");
    let headers = signed_by(&h.dispenser, "POST", settle, u64::MAX, &body);
    send(&url, "POST", settle, &headers, &body).problem(401, "unauthenticated");

    // Forged: a signature of zeros, and a real signature over another body.
    let mut headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &body,
    );
    for (name, value) in &mut headers {
        if name == "valuecard-signature" {
            *value = "11".repeat(64);
        }
    }
    send(&url, "POST", settle, &headers, &body).problem(401, "bad-signature");
    let cancel = settle_body(&card_id, a, load_number, [0x5F; 16], &evidence);
    let headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &cancel,
    );
    send(&url, "POST", settle, &headers, &body).problem(401, "bad-signature");
    // Signed for another path.
    let headers = signed_by(
        &h.dispenser,
        "POST",
        "/v1/loads/authorize",
        h.next_sequence(&h.dispenser),
        &body,
    );
    send(&url, "POST", settle, &headers, &body).problem(401, "bad-signature");
    // Signed by another device in A's name.
    let mut signer = sam(&h.other_dispenser);
    let headers = signed_headers(
        &mut signer,
        a,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &body,
    );
    let document = send(&url, "POST", settle, &headers, &body).problem(401, "bad-signature");
    assert_eq!(document.device_id, Some(a.to_hex()));
    // A device the center never installed.
    let stranger = DeviceId([0xD0, 0, 0, 0, 0, 0, 0x7E, 0x01]);
    let mut signer = sam(&h.dispenser);
    let headers = signed_headers(&mut signer, stranger, "POST", settle, 1, &body);
    send(&url, "POST", settle, &headers, &body).problem(401, "unknown-device");
    assert_eq!(sequences(&h), quiet);
    assert_eq!(h.snapshot(), before);

    // Another dispenser cannot settle A's load, even with the card's real evidence.
    let by_b = settle_body(&card_id, b, load_number, challenge, &evidence);
    let headers = signed_by(
        &h.other_dispenser,
        "POST",
        settle,
        h.next_sequence(&h.other_dispenser),
        &by_b,
    );
    send(&url, "POST", settle, &headers, &by_b).problem(403, "not-authorized");
    assert_eq!(h.snapshot(), before);

    // Replay: the settlement is accepted once (the card's evidence commits the load), and
    // the same bytes again are refused.
    let sequence = h.next_sequence(&h.dispenser);
    let headers = signed_by(&h.dispenser, "POST", settle, sequence, &body);
    let answer = send(&url, "POST", settle, &headers, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.json()["outcome"], "committed");
    assert_eq!(h.last_sequence(&h.dispenser), Some(sequence));
    let settled = h.snapshot();
    assert!(settled.pending.is_empty(), "{settled:?}");
    send(&url, "POST", settle, &headers, &body).problem(401, "replayed-request");
    let older = signed_by(&h.dispenser, "POST", settle, sequence - 1, &body);
    send(&url, "POST", settle, &older, &body).problem(401, "replayed-request");
    assert_eq!(h.last_sequence(&h.dispenser), Some(sequence));
    assert_eq!(h.snapshot(), settled);
    let before = settled;

    // Authenticated, but refused: malformed JSON, bad hex, the body naming another device,
    // a payment terminal at a dispenser endpoint.
    let malformed = b"{\"dispenser_id\": ";
    let headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        malformed,
    );
    let document =
        send(&url, "POST", settle, &headers, malformed).problem(400, "malformed-request");
    assert!(document.detail.contains("JSON"), "{document:?}");
    let bad_hex = serde_json::to_vec(&serde_json::json!({
        "dispenser_id": a.to_hex(),
        "card_id": "zz00000000000001",
        "load_number": load_number,
        "committed": true,
    }))
    .unwrap();
    let headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &bad_hex,
    );
    let document = send(&url, "POST", settle, &headers, &bad_hex).problem(400, "malformed-request");
    assert!(document.detail.contains("card_id"), "{document:?}");
    let short = serde_json::to_vec(&serde_json::json!({
        "dispenser_id": a.to_hex(),
        "chip_serial": "c500000000000001",
        "card_challenge": "00ff",
    }))
    .unwrap();
    let assign = "/v1/cards/assign";
    let headers = signed_by(
        &h.dispenser,
        "POST",
        assign,
        h.next_sequence(&h.dispenser),
        &short,
    );
    let document = send(&url, "POST", assign, &headers, &short).problem(400, "malformed-request");
    assert!(document.detail.contains("card_challenge"), "{document:?}");
    let headers = signed_by(
        &h.other_dispenser,
        "POST",
        settle,
        h.next_sequence(&h.other_dispenser),
        &body,
    );
    let document = send(&url, "POST", settle, &headers, &body).problem(403, "not-authorized");
    assert_eq!(document.device_id, Some(b.to_hex()));
    let as_terminal = settle_body(&card_id, terminal, load_number, challenge, &evidence);
    let headers = signed_by(
        &h.terminal,
        "POST",
        settle,
        h.next_sequence(&h.terminal),
        &as_terminal,
    );
    send(&url, "POST", settle, &headers, &as_terminal).problem(403, "not-authorized");
    let pending_path = format!("/v1/cards/{card_id}/pending-loads");
    let headers = signed_by(
        &h.terminal,
        "GET",
        &pending_path,
        h.next_sequence(&h.terminal),
        b"",
    );
    send(&url, "GET", &pending_path, &headers, b"").problem(403, "not-authorized");
    assert_eq!(h.snapshot(), before);

    // Oversized bodies, with a declared length and streamed.
    let mut huge = body.clone();
    huge.resize(MAX_BODY_BYTES + 1, b' ');
    let headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &huge,
    );
    send(&url, "POST", settle, &headers, &huge).problem(413, "body-too-large");
    let headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &huge,
    );
    send_chunked(&url, settle, &headers, &huge).problem(413, "body-too-large");
    // Exactly at the limit is read (and then refused for what it says, not its size).
    let mut at_limit = settle_body(&card_id, b, load_number, challenge, &evidence);
    at_limit.resize(MAX_BODY_BYTES, b' ');
    let headers = signed_by(
        &h.dispenser,
        "POST",
        settle,
        h.next_sequence(&h.dispenser),
        &at_limit,
    );
    send(&url, "POST", settle, &headers, &at_limit).problem(403, "not-authorized");
    assert_eq!(h.snapshot(), before);

    // Wrong method and unknown path.
    let answer = send(&url, "GET", settle, &[], b"");
    answer.problem(405, "method-not-allowed");
    assert!(
        answer
            .allow
            .as_deref()
            .is_some_and(|allow| allow.contains("POST")),
        "{answer:?}"
    );
    send(&url, "DELETE", "/v1/cards/assign", &[], b"").problem(405, "method-not-allowed");
    send(&url, "POST", "/health", &[], b"").problem(405, "method-not-allowed");
    let headers = signed_by(
        &h.dispenser,
        "POST",
        "/v1/loads/refund",
        h.next_sequence(&h.dispenser),
        &body,
    );
    send(&url, "POST", "/v1/loads/refund", &headers, &body).problem(404, "not-found");
    send(&url, "GET", "/", &[], b"").problem(404, "not-found");
    assert_eq!(h.snapshot(), before);

    // After all of that the device still works, from a fresh link.
    let mut link = h.link(&h.dispenser);
    let pending = link.pending_loads(&card_id).unwrap();
    assert_eq!(pending, before.pending);
}

#[test]
fn a_request_in_flight_when_shutdown_starts_is_answered_and_committed() {
    let mut h = harness(4);
    let dispenser_id = device_id(&h.dispenser);
    let mut link = h.link(&h.dispenser);
    let url = h.url();
    let center = Arc::clone(h.server.center());
    // Hold the center so that the request waits inside the service.
    let held = center.lock().unwrap();
    let worker = std::thread::spawn(move || {
        link.assign_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &[5; 16],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.server.requests_in_flight() < 1 {
        assert!(Instant::now() < deadline, "the request never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    h.server.begin_shutdown();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !h.server.is_finished(),
        "the service must wait for the request in flight"
    );
    // No new connection is accepted meanwhile.
    let mut late = HttpCenterLink::new(&url, h.server.pin(), Box::new(sam(&h.other_dispenser)))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let late_id = late.device_id();
    assert!(matches!(
        late.assign_card_id(
            &CardIdRequest {
                dispenser_id: late_id,
                chip_serial: CHIP,
            },
            &[6; 16]
        ),
        Err(CenterError::Unreachable(_))
    ));
    drop(held);
    let assignment = worker.join().unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.server.is_finished() {
        assert!(Instant::now() < deadline, "the service never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    // What was acknowledged is committed: the center knows the card ID it assigned.
    let mut center = center.lock().unwrap();
    assert!(matches!(
        center.card_public_key(&assignment.card_id),
        Err(CenterError::Mismatch(_))
    ));
    assert!(center
        .last_request_sequence(&dispenser_id)
        .unwrap()
        .is_some());
}

#[test]
fn two_links_of_one_device_both_get_through() {
    let h = harness(6);
    let dispenser_id = device_id(&h.dispenser);
    let mut first = h.link(&h.dispenser);
    std::thread::sleep(Duration::from_millis(2));
    let mut second = h.link(&h.dispenser);
    assert!(second.next_sequence() > first.next_sequence());
    second
        .assign_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &[1; 16],
        )
        .unwrap();
    // The first link's next sequence is below the second's: refused as a replay, which
    // changed nothing, so the link signs again from the current time once.
    let stale = first.next_sequence();
    first
        .assign_card_id(
            &CardIdRequest {
                dispenser_id,
                chip_serial: CHIP,
            },
            &[2; 16],
        )
        .unwrap();
    assert!(first.next_sequence() > stale + 1);
    let refusals = send(&h.url(), "GET", "/metrics", &[], b"").text();
    assert_eq!(
        metric(
            &refusals,
            "valuecard_http_refusals_total{reason=\"replayed-request\"}"
        ),
        Some(1.0)
    );
}
