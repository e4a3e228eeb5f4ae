//! The center's transfer release (`messages/transfer/release.rs`): it round trips exactly,
//! refuses truncation, trailing bytes and a signature of the wrong length, verifies only
//! under the root key it was made with and only for the one pending transfer it names; a
//! transfer report carrying it round trips and reads as undone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_fixtures;

use transfer_fixtures::*;

use valuecard_core::crypto::{Signature, SigningKeyPair, SIGNATURE_LEN};
use valuecard_core::ids::CardId;
use valuecard_core::messages::transfer::{
    PendingTransfer, ProofStatus, TransferOutcome, TransferRelease, TransferReport,
};
use valuecard_core::tlv::TlvWriter;

fn root() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[0x5A; 32])
}

fn pending() -> PendingTransfer {
    PendingTransfer {
        destination: DESTINATION,
        destination_counter: 9,
        challenge_source: [0xA1; 16],
        amount: amount(250),
        key_id: 3,
    }
}

fn release_for(source: &CardId, pending: &PendingTransfer) -> TransferRelease {
    TransferRelease {
        signature: root().sign(&TransferRelease::signed_message(source, pending)),
    }
}

#[test]
fn round_trips_and_refuses_truncation_and_trailing_bytes() {
    let release = release_for(&SOURCE, &pending());
    let bytes = release.encode();
    assert_eq!(TransferRelease::decode(&bytes).unwrap(), release);
    for cut in 0..bytes.len() {
        assert!(
            TransferRelease::decode(&bytes[..cut]).is_err(),
            "decoded a release cut to {cut} bytes"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(TransferRelease::decode(&longer).is_err());
}

#[test]
fn refuses_a_signature_of_the_wrong_length() {
    for length in [SIGNATURE_LEN - 1, SIGNATURE_LEN + 1] {
        let mut w = TlvWriter::with_capacity(80);
        w.put(0x9E, &vec![0x11; length]);
        let bytes = w.into_bytes();
        assert!(TransferRelease::decode(&bytes).is_err(), "length {length}");
    }
    // The right length under the signature tag is what the encoder writes.
    let mut w = TlvWriter::with_capacity(80);
    w.put(0x9E, &[0x11; SIGNATURE_LEN]);
    let sample = TransferRelease {
        signature: Signature([0x11; SIGNATURE_LEN]),
    };
    assert_eq!(w.into_bytes(), sample.encode());
}

#[test]
fn verifies_only_for_the_pending_transfer_it_names() {
    let root_key = root().public_key();
    let release = release_for(&SOURCE, &pending());
    release.verify(&root_key, &SOURCE, &pending()).unwrap();

    let mut others = Vec::new();
    let mut p = pending();
    p.destination = CardId(*b"CARD0003");
    others.push(("destination", SOURCE, p));
    let mut p = pending();
    p.destination_counter += 1;
    others.push(("destination counter", SOURCE, p));
    let mut p = pending();
    p.challenge_source[0] ^= 1;
    others.push(("challenge", SOURCE, p));
    let mut p = pending();
    p.amount = amount(251);
    others.push(("amount", SOURCE, p));
    let mut p = pending();
    p.key_id = 4;
    others.push(("key id", SOURCE, p));
    others.push(("source", DESTINATION, pending()));
    for (what, source, other) in others {
        assert!(
            release.verify(&root_key, &source, &other).is_err(),
            "a release verified for another {what}"
        );
    }

    let stranger = SigningKeyPair::from_seed(&[0x77; 32]).public_key();
    assert!(release.verify(&stranger, &SOURCE, &pending()).is_err());
}

#[test]
fn the_signed_message_carries_its_own_label() {
    let message = TransferRelease::signed_message(&SOURCE, &pending());
    assert!(message.starts_with(b"valuecard/transfer/release/v1"));
    // Label, source, challenge, destination, counter, amount, key id: fixed length.
    assert_eq!(message.len(), 29 + 8 + 16 + 8 + 4 + 8 + 4);
}

#[test]
fn a_report_with_a_release_round_trips_and_reads_as_undone() {
    let mut report = TransferReport {
        sequence: 4,
        source: SOURCE,
        destination: DESTINATION,
        challenge_source: [0xA1; 16],
        amount: amount(250),
        destination_counter: 9,
        value: None,
        proof: None,
        destination_record: None,
        destination_previous: None,
        source_record: None,
        source_previous: None,
        release: None,
    };
    assert_eq!(report.outcome(), TransferOutcome::InDoubt);
    report.release = Some(release_for(&SOURCE, &pending()));
    assert_eq!(report.outcome(), TransferOutcome::Undone);
    let bytes = report.encode();
    assert_eq!(TransferReport::decode(&bytes).unwrap(), report);
    // Cut at the release's template it is the report without the release; cut anywhere
    // else it decodes to nothing.
    let without = {
        let mut r = report.clone();
        r.release = None;
        r.encode()
    };
    for cut in 0..bytes.len() {
        match TransferReport::decode(&bytes[..cut]) {
            Ok(decoded) => {
                assert_eq!(cut, without.len(), "cut {cut} decoded");
                assert_eq!(decoded.release, None);
            }
            Err(_) => assert_ne!(cut, without.len()),
        }
    }
    // A proof of receipt outweighs the release: the report says what the destination did.
    report.proof = Some(proof(ProofStatus::Received));
    assert_eq!(report.outcome(), TransferOutcome::Received);
}
