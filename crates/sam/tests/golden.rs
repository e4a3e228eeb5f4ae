//! Golden software-SAM images, one per image version. Every version this build reads has a
//! golden file that must load, and the current build must write the current golden file
//! byte for byte: a change of the persisted format without a new version fails here.
//! `VALUECARD_BLESS=1 cargo test -p valuecard-sam --test golden` writes them again (the older
//! versions are the current image without the fields they did not have).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use valuecard_core::cert::Role;
use valuecard_core::crypto::Signature;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::memcard::{CardContent, ValueArea, WriteKind, COUNTER_START};
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};
use valuecard_core::tlv::TlvReader;
use valuecard_sam::testing::TestCenter;
use valuecard_sam::{MemcardWriteOrder, Sam, SoftwareSam, ValueFormat};

const TODAY: Date = Date(20_600);
const VERSIONS: [u8; 3] = [1, 2, 3];
const CURRENT: u8 = 3;

fn golden_path(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("sam-v{version}.bin"))
}

/// An installed charge machine that took a float grant and signed one charge: every
/// persisted field is present.
fn reference() -> SoftwareSam {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let mut center = TestCenter::new(&mut rng, DeviceId([0xCE; 8]), TODAY);
    let mut sam = center.install(Role::ChargeMachine, &mut rng);
    sam.take_float_grant(&center.grant(sam.device_id(), 3, Amount::new(12_345).unwrap()))
        .unwrap();
    let blank = CardContent {
        card_id: CardId([0x4D, 0, 0, 0, 0, 0, 0, 1]),
        counter: COUNTER_START,
        value_area: ValueArea::Blank,
        signature: Signature([0; 64]),
        certificate: None,
    };
    let card = sam.check_memcard_content(&blank, TODAY).unwrap();
    sam.sign_memcard_write(&MemcardWriteOrder {
        kind: WriteKind::Charge,
        card,
        amount: Amount::new(345).unwrap(),
        date: TODAY,
        format: ValueFormat::Plain,
        sequence_floor: 0,
    })
    .unwrap();
    sam
}

/// `image` with the magic of `version` and without the TLVs of `tags`.
fn older(image: &[u8], version: u8, tags: &[u32]) -> Vec<u8> {
    const MAGIC: u32 = 0x8F;
    let mut reader = TlvReader::new(image);
    let mut out = Vec::new();
    loop {
        let start = reader.position();
        let Some(tlv) = reader.next_tlv().unwrap() else {
            return out;
        };
        let raw = &image[start..reader.position()];
        if tlv.tag.0 == MAGIC {
            let magic = format!("valuecard-sam-v{version}");
            out.extend_from_slice(&[0x8F, magic.len() as u8]);
            out.extend_from_slice(magic.as_bytes());
        } else if !tags.contains(&tlv.tag.0) {
            out.extend_from_slice(raw);
        }
    }
}

#[test]
fn every_image_version_has_a_golden_file_that_loads_and_the_current_one_is_written_unchanged() {
    let current = reference().to_image();
    if std::env::var_os("VALUECARD_BLESS").is_some() {
        std::fs::write(golden_path(3), &current).unwrap();
        // Version 2 had no memory-card state; version 1 neither installation date nor
        // sequence.
        std::fs::write(golden_path(2), older(&current, 2, &[0x8C, 0x8D, 0x8E])).unwrap();
        std::fs::write(
            golden_path(1),
            older(&current, 1, &[0x8A, 0x8B, 0x8C, 0x8D, 0x8E]),
        )
        .unwrap();
    }
    assert_eq!(
        std::fs::read(golden_path(CURRENT)).unwrap(),
        current,
        "the current image format changed: give it a new version and a golden file"
    );
    for version in VERSIONS {
        let image = std::fs::read(golden_path(version))
            .unwrap_or_else(|_| panic!("no golden image of version {version}"));
        let sam = SoftwareSam::from_image(&image)
            .unwrap_or_else(|error| panic!("version {version} does not load: {error}"))
            .with_clock(Box::new(FixedClock(TODAY)));
        assert_eq!(sam.device_id(), reference().device_id());
        assert_eq!(sam.certificate().unwrap().body.role, Role::ChargeMachine);
        let (float, sequence) = if version >= 3 { (12_000, 1) } else { (0, 0) };
        assert_eq!(
            sam.float(),
            Amount::new(float).unwrap(),
            "version {version}"
        );
        assert_eq!(sam.memcard_sequence(), sequence, "version {version}");
        // Loaded and stored again, any version is written as the current one.
        assert!(sam.to_image().starts_with(&[0x8F, 16]));
        assert!(sam.to_image().windows(16).any(|w| w == b"valuecard-sam-v3"));
    }
}
