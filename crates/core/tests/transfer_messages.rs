//! The transfer messages of seed 000 (`messages/transfer/`): every message, with each
//! optional field present and absent, round trips exactly and refuses truncation, trailing
//! bytes and fields of the wrong length; the key set, the two key exports, the value message
//! and the proof open or verify only under exactly what they were made for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_fixtures;

use transfer_fixtures::*;

use valuecard_core::cert::Role;
use valuecard_core::crypto::{seal_to, SealingKeyPair, SigningKeyPair};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::messages::transfer::{
    CompletionRecord, GetTransferKey, InitializeTransferIn, KeyUpdateMode, PendingTransfer,
    ProofStatus, PublicKeyExport, SymmetricKeyExport, TransferComplete, TransferIn,
    TransferInOffer, TransferInfo, TransferKeySet, TransferOut, TransferOutOffer, TransferProof,
    TransferStatusQuery, UpdatePermission, UpdatePermissionResponse, TRANSFER_KEY_SET_LEN,
};
use valuecard_core::messages::DecodeError;
use valuecard_core::tlv::{TlvReader, TlvWriter};

/// Whether bytes decode to the sample's own value.
type SameValue = Box<dyn Fn(&[u8]) -> Result<bool, DecodeError>>;
/// Whether bytes decode at all.
type Decodes = Box<dyn Fn(&[u8]) -> bool>;

/// One sample: its name, its encoding, and its decoder seen two ways.
struct Sample {
    name: &'static str,
    bytes: Vec<u8>,
    decodes_to_itself: SameValue,
    decodes: Decodes,
}

macro_rules! sample {
    ($name:expr, $ty:ty, $value:expr) => {{
        let value: $ty = $value;
        let bytes = value.encode();
        Sample {
            name: $name,
            bytes,
            decodes_to_itself: Box::new(move |bytes| <$ty>::decode(bytes).map(|v| v == value)),
            decodes: Box::new(|bytes| <$ty>::decode(bytes).is_ok()),
        }
    }};
}

fn samples() -> Vec<Sample> {
    let card = certificate(Role::Card, *b"CARD0001", true);
    let terminal = certificate(Role::SettlementTerminal, *b"SETTLE01", false);
    let info = TransferInfo {
        card_id: SOURCE,
        balance: amount(12_345),
        counter: 7,
        transfer_key_id: 3,
        key_limit: 9,
        held_key_ids: vec![3, 4],
        update_key_id: 2,
        certificate: card.clone(),
        pending: Some(PendingTransfer {
            destination: DESTINATION,
            destination_counter: 9,
            challenge_source: [0xA1; 16],
            amount: amount(250),
            key_id: 3,
        }),
    };
    let offer_in = TransferInOffer {
        counter: 9,
        balance: amount(100),
        challenge_destination: [0xB2; 16],
        transfer_key_id: 3,
        last_usage: Some(record(TransactionKind::Purchase, true)),
        last_writer_certificate: Some(certificate(Role::PaymentTerminal, *b"TERMINAL", false)),
    };
    let offer_out = TransferOutOffer {
        counter: 5,
        balance: amount(1_000),
        challenge_source: [0xA1; 16],
        value: value_message(),
        last_usage: Some(record(TransactionKind::TransferIn, false)),
        last_writer_certificate: Some(terminal.clone()),
    };
    let symmetric = SymmetricKeyExport::seal(
        KeyUpdateMode::Symmetric,
        &key(2, 0x22),
        [0x4E; 12],
        &[0x5A; 16],
        &key(4, 0x44),
    );
    let sealed = seal_to(
        &mut rand_core::OsRng,
        &SealingKeyPair::from_secret([7; 32]).public_key(),
        b"aad",
        &PublicKeyExport::plaintext(&key(4, 0x44)),
    )
    .unwrap();
    let public = PublicKeyExport {
        signature: SigningKeyPair::from_seed(&[1; 32]).sign(&sealed),
        sealed,
    };
    vec![
        sample!("transfer info", TransferInfo, info.clone()),
        sample!(
            "transfer info, nothing pending, no keys",
            TransferInfo,
            TransferInfo {
                pending: None,
                held_key_ids: Vec::new(),
                transfer_key_id: 0,
                ..info
            }
        ),
        sample!(
            "update permission, public key",
            UpdatePermission,
            UpdatePermission {
                peer_certificate: Some(card.clone())
            }
        ),
        sample!(
            "update permission response",
            UpdatePermissionResponse,
            UpdatePermissionResponse { random: [0x5A; 16] }
        ),
        sample!(
            "get transfer key",
            GetTransferKey,
            GetTransferKey {
                random: [0x5A; 16],
                peer_certificate: None
            }
        ),
        sample!(
            "get transfer key, public key",
            GetTransferKey,
            GetTransferKey {
                random: [0x5A; 16],
                peer_certificate: Some(card.clone())
            }
        ),
        sample!("symmetric key export", SymmetricKeyExport, symmetric),
        sample!("public key export", PublicKeyExport, public),
        sample!(
            "initialize transfer in",
            InitializeTransferIn,
            InitializeTransferIn {
                terminal_certificate: terminal.clone(),
                challenge_terminal: [0xC3; 16],
                source: SOURCE,
                amount: amount(250),
                date: TODAY,
            }
        ),
        sample!("transfer in offer", TransferInOffer, offer_in.clone()),
        sample!(
            "transfer in offer, fresh card",
            TransferInOffer,
            TransferInOffer {
                last_usage: None,
                last_writer_certificate: None,
                ..offer_in
            }
        ),
        sample!(
            "transfer out",
            TransferOut,
            TransferOut {
                challenge_terminal: [0xC3; 16],
                destination: DESTINATION,
                destination_counter: 9,
                challenge_destination: [0xB2; 16],
                amount: amount(250),
                date: TODAY,
            }
        ),
        sample!("transfer out offer", TransferOutOffer, offer_out.clone()),
        sample!(
            "transfer out offer, loaded card",
            TransferOutOffer,
            TransferOutOffer {
                last_usage: Some(record(TransactionKind::Load, false)),
                last_writer_certificate: None,
                ..offer_out
            }
        ),
        sample!(
            "transfer in",
            TransferIn,
            TransferIn {
                source_counter: 5,
                challenge_source: [0xA1; 16],
                value: value_message(),
                record: record_signature(false),
            }
        ),
        sample!(
            "transfer in, stamped",
            TransferIn,
            TransferIn {
                source_counter: 5,
                challenge_source: [0xA1; 16],
                value: value_message(),
                record: record_signature(true),
            }
        ),
        sample!(
            "proof, received",
            TransferProof,
            proof(ProofStatus::Received)
        ),
        sample!(
            "proof, not received",
            TransferProof,
            proof(ProofStatus::NotReceived)
        ),
        sample!(
            "transfer status query",
            TransferStatusQuery,
            TransferStatusQuery {
                source: SOURCE,
                challenge_source: [0xA1; 16],
                destination_counter: 9,
            }
        ),
        sample!(
            "transfer complete, received",
            TransferComplete,
            TransferComplete {
                proof: proof(ProofStatus::Received),
                record: Some(CompletionRecord {
                    terminal_certificate: terminal,
                    challenge_terminal: [0xD4; 16],
                    date: TODAY,
                    signature: record_signature(true),
                }),
            }
        ),
        sample!(
            "transfer complete, not received",
            TransferComplete,
            TransferComplete {
                proof: proof(ProofStatus::NotReceived),
                record: None,
            }
        ),
    ]
}

/// The top-level TLVs of an encoding as (start, end, tag, value start).
fn top_level(bytes: &[u8]) -> Vec<(usize, usize, u32, usize)> {
    let mut reader = TlvReader::new(bytes);
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(tlv) = reader.next_tlv().unwrap() {
        let end = reader.position();
        out.push((start, end, tlv.tag.0, end - tlv.value.len()));
        start = end;
    }
    out
}

#[test]
fn every_transfer_message_round_trips() {
    for sample in samples() {
        assert!(
            (sample.decodes_to_itself)(&sample.bytes).unwrap(),
            "{}: decoded to another value",
            sample.name
        );
    }
}

#[test]
fn every_truncation_is_refused_or_is_another_message() {
    for sample in samples() {
        let mut boundaries: Vec<usize> = top_level(&sample.bytes).iter().map(|t| t.1).collect();
        boundaries.push(0);
        for len in 0..sample.bytes.len() {
            let prefix = &sample.bytes[..len];
            assert_ne!(
                (sample.decodes_to_itself)(prefix).ok(),
                Some(true),
                "{}: a prefix of {len} bytes decodes to the whole message",
                sample.name
            );
            // Cut inside a field: always refused. Cut between fields: only a message whose
            // remaining fields are all optional may decode.
            if !boundaries.contains(&len) {
                assert!(
                    !(sample.decodes)(prefix),
                    "{}: cut at {len} inside a field accepted",
                    sample.name
                );
            }
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for sample in samples() {
        for tail in [&[0x00][..], &[0x80, 0x00], &[0x9F, 0x21, 0x04, 0, 0, 0, 1]] {
            let mut bytes = sample.bytes.clone();
            bytes.extend_from_slice(tail);
            assert!(
                !(sample.decodes)(&bytes),
                "{}: trailing {tail:02X?} accepted",
                sample.name
            );
        }
    }
}

#[test]
fn a_field_one_byte_longer_or_shorter_is_refused() {
    for sample in samples() {
        for (start, end, tag, value_start) in top_level(&sample.bytes) {
            if valuecard_core::tlv::Tag(tag).is_constructed() {
                // A nested object: its own fields are checked where it is the sample.
                continue;
            }
            let value = &sample.bytes[value_start..end];
            let mut variants = vec![[value, &[0x00][..]].concat()];
            if !value.is_empty() {
                variants.push(value[..value.len() - 1].to_vec());
            }
            for changed in variants {
                let mut w = TlvWriter::new();
                w.put(tag, &changed);
                let bytes = [&sample.bytes[..start], w.as_bytes(), &sample.bytes[end..]].concat();
                assert!(
                    !(sample.decodes)(&bytes),
                    "{}: tag {tag:X} of {} bytes accepted",
                    sample.name,
                    changed.len()
                );
            }
        }
    }
}

#[test]
fn held_key_ids_must_ascend_and_stay_few() {
    let card = certificate(Role::Card, *b"CARD0001", true);
    let info = |held: Vec<u32>| TransferInfo {
        card_id: SOURCE,
        balance: amount(1),
        counter: 0,
        transfer_key_id: 3,
        key_limit: 9,
        held_key_ids: held,
        update_key_id: 2,
        certificate: card.clone(),
        pending: None,
    };
    assert!(TransferInfo::decode(&info(vec![3, 4, 5, 6]).encode()).is_ok());
    for held in [vec![4, 3], vec![3, 3], vec![1, 2, 3, 4, 5]] {
        assert!(
            TransferInfo::decode(&info(held.clone()).encode()).is_err(),
            "{held:?}"
        );
    }
}

#[test]
fn an_unknown_proof_status_is_refused() {
    let mut bytes = proof(ProofStatus::Received).encode();
    // 9F2B 01 <status>
    assert_eq!(&bytes[..3], &[0x9F, 0x2B, 0x01]);
    for status in [0x00, 0x03, 0xFF] {
        bytes[3] = status;
        assert!(TransferProof::decode(&bytes).is_err(), "{status:02X}");
    }
}

#[test]
fn the_key_set_round_trips_and_refuses_nonsense() {
    let set = TransferKeySet {
        transfer: key(3, 0x33),
        limit: 9,
        update: key(2, 0x22),
    };
    let bytes = set.to_bytes();
    assert_eq!(bytes.len(), TRANSFER_KEY_SET_LEN);
    assert_eq!(TransferKeySet::from_bytes(&bytes).unwrap(), set);
    assert!(TransferKeySet::from_bytes(&bytes[..TRANSFER_KEY_SET_LEN - 1]).is_err());
    assert!(TransferKeySet::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
    for bad in [
        TransferKeySet {
            transfer: key(0, 0x33),
            ..set.clone()
        },
        TransferKeySet {
            update: key(0, 0x22),
            ..set.clone()
        },
        TransferKeySet {
            limit: 2,
            ..set.clone()
        },
    ] {
        assert!(
            TransferKeySet::from_bytes(&bad.to_bytes()).is_err(),
            "{bad:?}"
        );
    }
}
