//! Codec tests for every protocol message and the certificate: one sample of each message
//! (and of each optional field present and absent), then the same properties checked over
//! all of them: exact round trip, refusal of truncations, trailing bytes, out-of-range
//! amounts and unknown enumerations, and decoders that never panic.
//!
//! Samples carry real Ed25519 keys, real signatures and real MACs, so a decoder that only
//! accepted well-formed cryptographic material would still be exercised.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod messages_fixture;

use std::collections::BTreeSet;

use proptest::prelude::*;

use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::{CertError, Role};
use valuecard_core::limits::{BALANCE_MAX_MINOR, CARD_LOG_ENTRIES_MAX, CHALLENGE_LEN};
use valuecard_core::messages::purse::{ins, tag, LogEntry, CLA_ISO, CLA_PROPRIETARY, PURSE_AID};
use valuecard_core::messages::DecodeError;
use valuecard_core::money::AmountError;
use valuecard_core::sw::StatusWord;

use messages_fixture::*;

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn samples_cover_every_kind() {
    let covered: BTreeSet<Kind> = fixture().samples.iter().map(|s| s.message.kind()).collect();
    let all: BTreeSet<Kind> = Kind::ALL.into_iter().collect();
    assert_eq!(covered, all);
    let mut names: Vec<&str> = fixture().samples.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        fixture().samples.len(),
        "sample names must be unique"
    );
}

#[test]
fn sample_signatures_verify() {
    let fixture = fixture();
    assert!(!fixture.signatures.is_empty());
    for (key, message, signature) in &fixture.signatures {
        key.verify(message, signature).unwrap();
    }
    for (certificate, role) in &fixture.certificates {
        fixture
            .anchor
            .verify(std::slice::from_ref(certificate), *role, TODAY)
            .unwrap();
    }
}

#[test]
fn can_round_trip_all_messages() {
    for sample in &fixture().samples {
        let bytes = sample.message.encode();
        let decoded =
            sample.message.kind().decode(&bytes).unwrap_or_else(|e| {
                panic!("{}: decoding its own encoding failed: {e:?}", sample.name)
            });
        assert_eq!(
            decoded, sample.message,
            "{}: decoded differently",
            sample.name
        );
        assert_eq!(
            decoded.encode(),
            bytes,
            "{}: re-encoding differs",
            sample.name
        );
        // The encoding is strict BER-TLV: a re-encoding of its parse tree is byte-identical.
        assert_eq!(
            encode_tree(&parse_tree(&bytes)),
            bytes,
            "{}: TLV not minimal",
            sample.name
        );
    }
}

#[test]
fn can_detect_truncation_of_all_messages() {
    for sample in &fixture().samples {
        let bytes = sample.message.encode();
        let kind = sample.message.kind();
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            match sample
                .shorter
                .iter()
                .find(|shorter| shorter.encode() == prefix)
            {
                // A complete shorter message: it must decode as exactly that message.
                Some(shorter) => assert_eq!(
                    &kind
                        .decode(prefix)
                        .unwrap_or_else(|e| panic!("{}: prefix {cut}: {e:?}", sample.name)),
                    shorter,
                    "{}: prefix of {cut} bytes",
                    sample.name
                ),
                None => assert!(
                    kind.decode(prefix).is_err(),
                    "{}: accepted truncation to {cut} of {} bytes",
                    sample.name,
                    bytes.len()
                ),
            }
        }
    }
}

#[test]
fn rejects_trailing_bytes_on_all_messages() {
    let trailers: [&[u8]; 5] = [
        &[0x00],
        &[0xFF],
        &[0x90],
        &[0x90, 0x00],
        &[0x9F, 0x7F, 0x01, 0x55],
    ];
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        let bytes = sample.message.encode();
        for trailer in trailers {
            let mut long = bytes.clone();
            long.extend_from_slice(trailer);
            assert!(
                kind.decode(&long).is_err(),
                "{}: accepted trailer {trailer:02X?}",
                sample.name
            );
        }
    }
}

#[test]
fn rejects_trailing_objects_inside_every_constructed_object() {
    let mut checked = 0;
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        let edit = |node: &Node| match node {
            Node::Constructed(object, children) => {
                let mut children = children.clone();
                children.push(Node::Primitive(0x90, vec![0x01]));
                Some(Node::Constructed(*object, children))
            }
            Node::Primitive(..) => None,
        };
        for tree in single_edits(&parse_tree(&sample.message.encode()), &edit) {
            let bytes = encode_tree(&tree);
            assert!(
                kind.decode(&bytes).is_err(),
                "{}: accepted {}",
                sample.name,
                hex::encode(&bytes)
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} nested objects checked");
}

#[test]
fn rejects_out_of_range_amounts() {
    let mut kinds_with_amounts = BTreeSet::new();
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        for field in [tag::AMOUNT, tag::BALANCE] {
            // The largest balance a purse may hold is accepted...
            for bytes in with_field(sample, field, 8, &BALANCE_MAX_MINOR.to_be_bytes()) {
                let decoded = kind.decode(&bytes).unwrap_or_else(|e| {
                    panic!("{}: refused the maximum amount: {e:?}", sample.name)
                });
                assert_eq!(decoded.encode(), bytes, "{}", sample.name);
            }
            // ...and anything above it is refused.
            for too_large in [BALANCE_MAX_MINOR + 1, 1 << 53, u64::MAX] {
                for bytes in with_field(sample, field, 8, &too_large.to_be_bytes()) {
                    kinds_with_amounts.insert(kind);
                    match kind.decode(&bytes) {
                        Err(Refusal::Message(DecodeError::Amount(AmountError::TooLarge(
                            value,
                        )))) => {
                            assert_eq!(value, too_large, "{}", sample.name)
                        }
                        other => panic!("{}: amount {too_large} gave {other:?}", sample.name),
                    }
                }
            }
        }
    }
    let expected: BTreeSet<Kind> = [
        Kind::UsageRecord,
        Kind::PurseStatus,
        Kind::Log,
        Kind::InitializePurchase,
        Kind::PurchaseOffer,
        Kind::Debit,
        Kind::UpdateConfirmation,
        Kind::InitializeLoad,
        Kind::LoadOffer,
        Kind::Credit,
        Kind::LastTransaction,
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds_with_amounts, expected);
}

#[test]
fn rejects_unknown_state_and_kind() {
    let mut covered = BTreeSet::new();
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        for (field_tag, field, valid) in [
            (tag::STATE, "state", &[0x01u8, 0x02, 0x03, 0x7F][..]),
            // Purchase, load, the transfer out and in of seed 000, the online payment
            // and charge of seed 004, and the move's record of seed 002.
            (
                tag::KIND,
                "kind",
                &[0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07][..],
            ),
        ] {
            for value in 0..=u8::MAX {
                for bytes in with_field(sample, field_tag, 1, &[value]) {
                    covered.insert((field, kind));
                    match kind.decode(&bytes) {
                        Ok(decoded) if valid.contains(&value) => {
                            assert_eq!(decoded.encode(), bytes)
                        }
                        Err(Refusal::Message(DecodeError::Field { field: refused, .. }))
                            if !valid.contains(&value) && refused == field => {}
                        // A purchase record turned into a load, an online update or a
                        // move's record still carries the purchase's stamp, which those
                        // may not have.
                        Err(Refusal::Message(DecodeError::Field { field: "stamp", .. }))
                            if field == "kind" && matches!(value, 0x02 | 0x05 | 0x06 | 0x07) => {}
                        other => panic!("{}: {field} {value:#04x} gave {other:?}", sample.name),
                    }
                }
            }
        }
    }
    let expected: BTreeSet<(&str, Kind)> = [
        ("state", Kind::Select),
        ("state", Kind::PurseStatus),
        ("kind", Kind::UsageRecord),
        ("kind", Kind::PurseStatus),
        ("kind", Kind::Log),
        ("kind", Kind::PurchaseOffer),
        ("kind", Kind::LoadOffer),
        ("kind", Kind::LastTransaction),
    ]
    .into_iter()
    .collect();
    assert_eq!(covered, expected);
}

#[test]
fn rejects_unknown_certificate_role() {
    let mut checked = 0;
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        for value in (0..=u8::MAX).filter(|value| Role::from_u8(*value).is_none()) {
            for bytes in with_field(sample, valuecard_core::cert::TAG_ROLE, 1, &[value]) {
                checked += 1;
                match kind.decode(&bytes) {
                    Err(Refusal::Certificate(CertError::UnknownRole(role)))
                    | Err(Refusal::Message(DecodeError::Certificate(CertError::UnknownRole(
                        role,
                    )))) => {
                        assert_eq!(role, value)
                    }
                    other => panic!("{}: role {value:#04x} gave {other:?}", sample.name),
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn log_lists_are_bounded() {
    let full = LogEntry::encode_list(&log_entries(CARD_LOG_ENTRIES_MAX));
    assert_eq!(
        LogEntry::decode_list(&full).unwrap().len(),
        CARD_LOG_ENTRIES_MAX
    );
    let too_many = LogEntry::encode_list(&log_entries(CARD_LOG_ENTRIES_MAX + 1));
    assert!(matches!(
        LogEntry::decode_list(&too_many),
        Err(DecodeError::Field {
            field: "log",
            reason: "too many entries"
        })
    ));
}

#[test]
fn rejects_wrong_fixed_lengths() {
    // Every fixed-length field one byte short and one byte long.
    for sample in &fixture().samples {
        let kind = sample.message.kind();
        let shorten = |node: &Node| match node {
            Node::Primitive(field, value) if !value.is_empty() && *field != tag::SEALED_KEYS => {
                Some(Node::Primitive(*field, value[..value.len() - 1].to_vec()))
            }
            _ => None,
        };
        let lengthen = |node: &Node| match node {
            Node::Primitive(field, value) if *field != tag::SEALED_KEYS => {
                let mut value = value.clone();
                value.push(0);
                Some(Node::Primitive(*field, value))
            }
            _ => None,
        };
        for edit in [&shorten as &dyn Fn(&Node) -> Option<Node>, &lengthen] {
            for tree in single_edits(&parse_tree(&sample.message.encode()), edit) {
                let bytes = encode_tree(&tree);
                assert!(
                    kind.decode(&bytes).is_err(),
                    "{}: accepted {}",
                    sample.name,
                    hex::encode(&bytes)
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn decoders_never_panic_on_random_bytes(
        index in 0..Kind::ALL.len(),
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        if let Ok(message) = Kind::ALL[index].decode(&bytes) {
            prop_assert_eq!(message.encode(), bytes);
        }
    }

    #[test]
    fn decoders_never_panic_on_mutated_samples(
        index in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let sample = index.get(&fixture().samples);
        let mut bytes = sample.message.encode();
        for (at, byte, operation) in edits {
            let position = if bytes.is_empty() { 0 } else { at.index(bytes.len()) };
            match operation {
                0 if !bytes.is_empty() => bytes[position] = byte,
                1 => bytes.insert(position, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(position);
                }
                _ => bytes.push(byte),
            }
        }
        if let Ok(message) = sample.message.kind().decode(&bytes) {
            prop_assert_eq!(message.encode(), bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fuzz seeds.
// ---------------------------------------------------------------------------------------

/// Writes the seed corpora of the fuzz targets under `fuzz/seeds/`. Run with
/// `cargo test -p valuecard-core --test messages -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run explicitly to refresh fuzz/seeds"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let fixture = &build_fixture(SeedRng::new());
    let encoding_of = |name: &str| {
        fixture
            .samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.message.encode())
            .unwrap()
    };

    for sample in &fixture.samples {
        let bytes = sample.message.encode();
        match sample.message.kind().fuzz_selector() {
            Some(selector) => {
                let mut input = vec![selector];
                input.extend_from_slice(&bytes);
                write("purse_messages", sample.name, &input);
            }
            None => write("certificate", sample.name, &bytes),
        }
        if !bytes.is_empty() {
            write("tlv", sample.name, &bytes);
        }
    }

    let commands = [
        (
            "select",
            Command::new(CLA_ISO, ins::SELECT, 0x04, 0x00)
                .with_data(PURSE_AID.to_vec())
                .with_le(256),
        ),
        (
            "get_challenge",
            Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(CHALLENGE_LEN as u32),
        ),
        (
            "read_purse",
            Command::new(CLA_PROPRIETARY, ins::READ_PURSE, 0, 0).with_le(256),
        ),
        (
            "read_log_case1",
            Command::new(CLA_PROPRIETARY, ins::READ_LOG, 0, 0),
        ),
        (
            "read_log_extended_le",
            Command::new(CLA_PROPRIETARY, ins::READ_LOG, 0, 0).with_le(65_536),
        ),
        (
            "generate_key_pair",
            Command::new(CLA_PROPRIETARY, ins::GENERATE_KEY_PAIR, 0, 0)
                .with_data(encoding_of("generate_key_pair_command"))
                .with_le(256),
        ),
        (
            "personalize_extended",
            Command::new(CLA_PROPRIETARY, ins::PERSONALIZE, 0, 0)
                .with_data(encoding_of("personalize")),
        ),
        (
            "initialize_purchase",
            Command::new(CLA_PROPRIETARY, ins::INITIALIZE_PURCHASE, 0, 0)
                .with_data(encoding_of("initialize_purchase"))
                .with_le(65_536),
        ),
        (
            "debit",
            Command::new(CLA_PROPRIETARY, ins::DEBIT, 0, 0)
                .with_data(encoding_of("debit"))
                .with_le(256),
        ),
        (
            "initialize_load",
            Command::new(CLA_PROPRIETARY, ins::INITIALIZE_LOAD, 0, 0)
                .with_data(encoding_of("initialize_load"))
                .with_le(256),
        ),
        (
            "credit",
            Command::new(CLA_PROPRIETARY, ins::CREDIT, 0, 0).with_data(encoding_of("credit")),
        ),
        (
            "get_last_transaction",
            Command::new(CLA_PROPRIETARY, ins::GET_LAST_TRANSACTION, 0, 0)
                .with_data(encoding_of("get_last_transaction"))
                .with_le(256),
        ),
    ];
    for (name, command) in commands {
        let bytes = command.encode();
        assert_eq!(Command::parse(&bytes).unwrap(), command, "{name}");
        write("apdu_command", name, &bytes);
    }

    let responses = [
        ("select", Response::success(encoding_of("select_active"))),
        (
            "read_purse",
            Response::success(encoding_of("purse_status_after_purchase")),
        ),
        ("read_log", Response::success(encoding_of("log_full"))),
        (
            "purchase_offer",
            Response::success(encoding_of("purchase_offer_with_writer_certificate")),
        ),
        ("ok_empty", Response::success(Vec::new())),
        ("wrong_data", Response::error(StatusWord::WRONG_DATA)),
        (
            "insufficient_funds",
            Response::error(StatusWord::INSUFFICIENT_FUNDS),
        ),
    ];
    for (name, response) in responses {
        let bytes = response.encode();
        assert_eq!(Response::parse(&bytes).unwrap(), response, "{name}");
        write("apdu_response", name, &bytes);
    }
}
