//! Settlement terminals over HTTP (seed 000): `POST /v1/transfers` round trip, duplicates,
//! refusals inside the receipt, and the problem documents of a device that may not upload
//! transfers and of a body that does not parse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::SeedableRng;
use valuecard_center::Center;
use valuecard_center_http::paths;
use valuecard_center_http::transfer_wire::{TransferReportBody, TransferUploadBody};
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::transfer::{
    ProofStatus, ProofSubject, TransferBinding, TransferKey, TransferLink, TransferProof,
    TransferReport, TransferUpload, ValueEvidence, ValueMessage,
};
use valuecard_sim::{install_sam, read_purse, WorldRng};

/// The destination's proof of receipt and the source's value message, as a terminal that
/// ran TRANSFER OUT and TRANSFER IN holds them (no records: the center needs none to
/// store the transfer as received).
fn report(
    rng: &mut WorldRng,
    key: &TransferKey,
    sequence: u32,
    source: (valuecard_core::ids::CardId, u32),
    destination: (valuecard_core::ids::CardId, u32),
) -> TransferReport {
    let challenge_source: Challenge = random_array(rng);
    let binding = TransferBinding {
        key_id: key.id,
        source: source.0,
        source_counter: source.1,
        challenge_source,
        destination: destination.0,
        destination_counter: destination.1,
        challenge_destination: random_array(rng),
        challenge_terminal: random_array(rng),
        date: today(),
    };
    let value = ValueMessage::seal(key, &binding, amount(250));
    let proof = TransferProof::make(
        ProofStatus::Received,
        key,
        destination.1 + 1,
        &ProofSubject {
            source: source.0,
            challenge_source,
            destination: destination.0,
            amount: amount(250),
        },
    );
    TransferReport {
        sequence,
        source: source.0,
        destination: destination.0,
        challenge_source,
        amount: amount(250),
        destination_counter: destination.1,
        value: Some(ValueEvidence { binding, value }),
        proof: Some(proof),
        destination_record: None,
        destination_previous: None,
        source_record: None,
        source_previous: None,
        release: None,
    }
}

#[test]
fn transfer_reports_round_trip_over_http() {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(61)).unwrap();
    let mut h = Harness::start(center, 61);
    let mut rng = WorldRng::seed_from_u64(62);
    let settlement = h.with_center(|center| {
        install_sam(center, Role::SettlementTerminal, clock(), &mut rng)
            .unwrap()
            .to_image()
    });
    let (mut a_reader, a) = issue_and_load(&mut h);
    let (mut b_reader, b) = issue_and_load(&mut h);
    let a_state = read_purse(&mut a_reader).unwrap();
    let b_state = read_purse(&mut b_reader).unwrap();
    let key = h.with_center(|center| center.transfer_key_set().unwrap().transfer);
    let good = report(
        &mut rng,
        &key,
        1,
        (a, a_state.counter),
        (b, b_state.counter),
    );
    let mut forged = report(
        &mut rng,
        &key,
        2,
        (a, a_state.counter),
        (b, b_state.counter),
    );
    forged.proof.as_mut().unwrap().mac[0] ^= 1;

    // The JSON body carries every field, records included, byte for byte.
    let mut with_records = good.clone();
    with_records.destination_previous = b_state.last_usage.clone();
    with_records.source_previous = a_state.last_usage.clone();
    assert_eq!(
        TransferReportBody::new(&with_records).decode().unwrap(),
        with_records
    );

    let mut link = h.link(&settlement);
    let upload = TransferUpload {
        terminal_id: device_id(&settlement),
        reports: vec![good, forged],
    };
    let receipt = link.upload_transfers(&upload).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert_eq!(receipt.refused.len(), 1);
    assert_eq!(receipt.refused[0].0, 2);
    assert!(receipt.refused[0].1.contains("proof"), "{receipt:?}");
    let totals = h.with_center(|center| center.transfer_totals().unwrap());
    assert_eq!(
        (totals.received, totals.in_flight, totals.in_flight_count),
        (250, 250, 1)
    );

    // Sent again (the answer was lost): a duplicate, nothing new.
    let again = link.upload_transfers(&upload).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1), "{again:?}");
    assert_eq!(
        h.with_center(|center| center.transfer_totals().unwrap()),
        totals
    );
    // An empty upload is answered (the terminal may upload).
    let empty = TransferUpload {
        terminal_id: device_id(&settlement),
        reports: Vec::new(),
    };
    assert_eq!(link.upload_transfers(&empty).unwrap().stored, 0);
}

#[test]
fn only_settlement_terminals_upload_transfers_and_refusals_are_problem_documents() {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(63)).unwrap();
    let h = Harness::start(center, 63);
    let mut rng = WorldRng::seed_from_u64(64);
    let settlement = h.with_center(|center| {
        install_sam(center, Role::SettlementTerminal, clock(), &mut rng)
            .unwrap()
            .to_image()
    });
    // A payment terminal, through the client: refused as not authorized.
    let mut terminal_link = h.link(&h.terminal);
    let own = TransferUpload {
        terminal_id: device_id(&h.terminal),
        reports: Vec::new(),
    };
    assert!(matches!(
        terminal_link.upload_transfers(&own),
        Err(CenterError::NotAuthorized(_))
    ));
    // The same, raw: a 403 problem document naming the role it lacks.
    let body = serde_json::to_vec(&TransferUploadBody::new(&own)).unwrap();
    let headers = signed_by(
        &h.terminal,
        "POST",
        paths::TRANSFERS,
        h.next_sequence(&h.terminal),
        &body,
    );
    let problem =
        send(&h.url(), "POST", paths::TRANSFERS, &headers, &body).problem(403, "not-authorized");
    assert!(
        problem.detail.contains("settlement terminal"),
        "{problem:?}"
    );
    // A settlement terminal that speaks for another device is refused too.
    let mut settlement_link = h.link(&settlement);
    assert!(matches!(
        settlement_link.upload_transfers(&own),
        Err(CenterError::NotAuthorized(_))
    ));
    // A body that is not a transfer upload: 400, and nothing stored.
    let body = br#"{"terminal_id":"00","reports":[],"extra":1}"#;
    let headers = signed_by(
        &settlement,
        "POST",
        paths::TRANSFERS,
        h.next_sequence(&settlement),
        body,
    );
    send(&h.url(), "POST", paths::TRANSFERS, &headers, body).problem(400, "malformed-request");
    assert_eq!(
        h.with_center(|center| center.transfer_totals().unwrap()),
        Default::default()
    );
}

/// A pending transfer of `source` toward `destination`, as GET TRANSFER INFO shows it.
fn pending_toward(
    rng: &mut WorldRng,
    destination: valuecard_core::ids::CardId,
) -> valuecard_core::messages::transfer::PendingTransfer {
    valuecard_core::messages::transfer::PendingTransfer {
        destination,
        destination_counter: 4,
        challenge_source: random_array(rng),
        amount: amount(700),
        key_id: 1,
    }
}

#[test]
fn the_center_releases_over_http_and_refuses_with_a_problem_document() {
    use valuecard_center_http::transfer_wire::ReleaseRequestBody;
    use valuecard_core::messages::transfer::TransferRelease;

    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(65)).unwrap();
    let mut h = Harness::start(center, 65);
    let mut rng = WorldRng::seed_from_u64(66);
    let settlement = h.with_center(|center| {
        install_sam(center, Role::SettlementTerminal, clock(), &mut rng)
            .unwrap()
            .to_image()
    });
    let root_key = h.with_center(|center| center.anchor().public_key);
    let (_a_reader, a) = issue_and_load(&mut h);
    let (_b_reader, b) = issue_and_load(&mut h);
    let terminal_id = device_id(&settlement);
    let mut link = h.link(&settlement);

    // Toward a card this center never issued: released, and the signature verifies under
    // the root key for exactly that pending transfer.
    let made_up = pending_toward(&mut rng, valuecard_core::ids::CardId(*b"NOBODY01"));
    let release: TransferRelease = link.release_transfer(terminal_id, a, &made_up).unwrap();
    release.verify(&root_key, &a, &made_up).unwrap();
    // Asked again (a lost answer): the same release.
    assert_eq!(
        link.release_transfer(terminal_id, a, &made_up).unwrap(),
        release
    );
    let totals = h.with_center(|center| center.transfer_totals().unwrap());
    assert_eq!((totals.undone, totals.undone_count), (700, 1));

    // Toward an issued card that is not listed: refused through the client ...
    let toward_b = pending_toward(&mut rng, b);
    assert!(matches!(
        link.release_transfer(terminal_id, a, &toward_b),
        Err(CenterError::Mismatch(reason)) if reason.contains("present the destination card")
    ));
    // ... and raw: a 409 problem document that says what to do.
    let body = serde_json::to_vec(&ReleaseRequestBody::new(terminal_id, a, &toward_b)).unwrap();
    let headers = signed_by(
        &settlement,
        "POST",
        paths::TRANSFER_RELEASE,
        h.next_sequence(&settlement),
        &body,
    );
    let problem =
        send(&h.url(), "POST", paths::TRANSFER_RELEASE, &headers, &body).problem(409, "mismatch");
    assert!(
        problem.detail.contains("present the destination card"),
        "{problem:?}"
    );

    // A payment terminal may not ask, nor a settlement terminal in another's name.
    let mut terminal_link = h.link(&h.terminal);
    assert!(matches!(
        terminal_link.release_transfer(device_id(&h.terminal), a, &made_up),
        Err(CenterError::NotAuthorized(_))
    ));
    assert!(matches!(
        link.release_transfer(device_id(&h.terminal), a, &made_up),
        Err(CenterError::NotAuthorized(_))
    ));
    // A body that is not a release request: 400.
    let body = br#"{"terminal_id":"00","source":"00"}"#;
    let headers = signed_by(
        &settlement,
        "POST",
        paths::TRANSFER_RELEASE,
        h.next_sequence(&settlement),
        body,
    );
    send(&h.url(), "POST", paths::TRANSFER_RELEASE, &headers, body)
        .problem(400, "malformed-request");
    // Nothing but the one release was recorded.
    let totals = h.with_center(|center| center.transfer_totals().unwrap());
    assert_eq!((totals.undone, totals.undone_count), (700, 1));
}
