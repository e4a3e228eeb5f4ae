use proptest::prelude::*;

use super::*;
use crate::crypto::{SecretBytes, SigningKeyPair};

fn card() -> CardId {
    CardId([0x4D, 0x43, 0, 0, 0, 0, 0, 1])
}

fn writer() -> DeviceId {
    DeviceId([0x43, 0x4D, 0, 0, 0, 0, 0, 7])
}

fn key() -> AesKey {
    SecretBytes([0x5A; 16])
}

fn value(amount: u64) -> PlainValue {
    PlainValue {
        date: Date(20_000),
        amount: Amount::new(amount).unwrap(),
    }
}

fn state(counter: u32, amount: u64, signer: &SigningKeyPair) -> SignedState {
    let value_area = ValueArea::Plain(value(amount));
    let signature = signer.sign(&state_signing_input(&card(), counter, &value_area.encode()));
    SignedState {
        card_id: card(),
        counter,
        value_area,
        writer: writer(),
        signature,
    }
}

#[test]
fn value_area_round_trips_in_every_format() {
    let sealed = ValueArea::seal(&key(), [7; 12], &card(), 41, &writer(), &value(1234));
    for area in [ValueArea::Blank, ValueArea::Plain(value(1234)), sealed] {
        assert_eq!(ValueArea::decode(&area.encode()).unwrap(), area);
    }
}

#[test]
fn value_area_refuses_unknown_format_dirty_padding_and_large_amounts() {
    let mut bytes = ValueArea::Plain(value(5)).encode();
    bytes[0] = 0x03;
    assert!(ValueArea::decode(&bytes).is_err());
    let mut bytes = ValueArea::Plain(value(5)).encode();
    bytes[VALUE_AREA_LEN - 1] = 1;
    assert!(ValueArea::decode(&bytes).is_err());
    let mut bytes = ValueArea::Blank.encode();
    bytes[5] = 1;
    assert!(ValueArea::decode(&bytes).is_err());
    let mut bytes = ValueArea::Plain(value(5)).encode();
    bytes[5..13].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(ValueArea::decode(&bytes).is_err());
    assert!(ValueArea::decode(&bytes[..47]).is_err());
}

#[test]
fn a_sealed_value_opens_only_for_its_card_counter_and_writer() {
    let area = ValueArea::seal(&key(), [9; 12], &card(), 41, &writer(), &value(700));
    assert_eq!(
        area.open(Some(&key()), &card(), 41, &writer()).unwrap(),
        Some(value(700))
    );
    let other_card = CardId([0x4D, 0x43, 0, 0, 0, 0, 0, 2]);
    let other_writer = DeviceId([0x43, 0x4D, 0, 0, 0, 0, 0, 8]);
    assert_eq!(
        area.open(Some(&key()), &other_card, 41, &writer()),
        Err(MemcardError::SealBroken)
    );
    assert_eq!(
        area.open(Some(&key()), &card(), 40, &writer()),
        Err(MemcardError::SealBroken)
    );
    assert_eq!(
        area.open(Some(&key()), &card(), 41, &other_writer),
        Err(MemcardError::SealBroken)
    );
    assert_eq!(
        area.open(None, &card(), 41, &writer()),
        Err(MemcardError::SealedWithoutKey)
    );
    let other_key = writer_value_key(&key(), &other_writer);
    assert_eq!(
        area.open(Some(&other_key), &card(), 41, &writer()),
        Err(MemcardError::SealBroken)
    );
}

#[test]
fn a_token_derives_the_writers_value_key_with_one_cmac() {
    for writer in [writer(), DeviceId([0xFF; 8])] {
        assert_eq!(
            &crate::crypto::aes_cmac(&key(), &writer_value_key_input(&writer)),
            writer_value_key(&key(), &writer).expose()
        );
    }
}

#[test]
fn the_signed_string_covers_card_counter_and_area() {
    let area = ValueArea::Plain(value(10)).encode();
    let base = state_signing_input(&card(), 5, &area);
    assert!(base.starts_with(STATE_CONTEXT));
    assert_ne!(
        base,
        state_signing_input(&CardId([0x4D, 0x43, 0, 0, 0, 0, 0, 2]), 5, &area)
    );
    assert_ne!(base, state_signing_input(&card(), 4, &area));
    assert_ne!(
        base,
        state_signing_input(&card(), 5, &ValueArea::Plain(value(11)).encode())
    );
}

#[test]
fn certificate_area_round_trips_and_refuses_garbage() {
    let blank = [0u8; CERTIFICATE_AREA_LEN];
    assert_eq!(decode_certificate_area(&blank).unwrap(), None);
    let mut dirty = blank;
    dirty[100] = 1;
    assert!(decode_certificate_area(&dirty).is_err());
    let mut too_long = blank;
    too_long[..2].copy_from_slice(&600u16.to_be_bytes());
    assert!(decode_certificate_area(&too_long).is_err());
    let mut not_a_certificate = blank;
    not_a_certificate[..2].copy_from_slice(&3u16.to_be_bytes());
    not_a_certificate[2..5].copy_from_slice(&[0x80, 0x01, 0x00]);
    assert!(decode_certificate_area(&not_a_certificate).is_err());
    assert!(decode_certificate_area(&blank[1..]).is_err());
}

#[test]
fn a_fresh_memory_decodes_as_blank_content() {
    let mut memory = vec![0u8; map::MEMORY_LEN];
    memory[..8].copy_from_slice(card().as_bytes());
    memory[map::COUNTER as usize..map::COUNTER as usize + 4]
        .copy_from_slice(&COUNTER_START.to_be_bytes());
    let content = CardContent::decode(&memory).unwrap();
    assert_eq!(content.card_id, card());
    assert_eq!(content.counter, COUNTER_START);
    assert_eq!(content.value_area, ValueArea::Blank);
    assert_eq!(content.certificate, None);
    assert!(CardContent::decode(&memory[1..]).is_err());
}

#[test]
fn write_record_round_trips_and_checks_its_own_consistency() {
    let signer = SigningKeyPair::from_seed(&[3; 32]);
    let record = WriteRecord {
        kind: WriteKind::Payment,
        sequence: 9,
        date: Date(20_001),
        balance_before: Amount::new(500).unwrap(),
        balance_after: Amount::new(380).unwrap(),
        previous: Some(state(COUNTER_START - 1, 500, &signer)),
        written: state(COUNTER_START - 2, 380, &signer),
    };
    assert_eq!(WriteRecord::decode(&record.encode()).unwrap(), record);
    assert_eq!(record.amount(), Some(Amount::new(120).unwrap()));

    let first_charge = WriteRecord {
        kind: WriteKind::Charge,
        previous: None,
        balance_before: Amount::ZERO,
        balance_after: Amount::new(500).unwrap(),
        written: state(COUNTER_START - 1, 500, &signer),
        ..record.clone()
    };
    assert_eq!(
        WriteRecord::decode(&first_charge.encode()).unwrap(),
        first_charge
    );

    // A payment that adds value, a zero move, a previous state later than the written one,
    // or trailing bytes: each refused.
    let wrong_direction = WriteRecord {
        balance_after: Amount::new(600).unwrap(),
        ..record.clone()
    };
    assert!(WriteRecord::decode(&wrong_direction.encode()).is_err());
    let zero = WriteRecord {
        balance_after: Amount::new(500).unwrap(),
        ..record.clone()
    };
    assert!(WriteRecord::decode(&zero.encode()).is_err());
    let backwards = WriteRecord {
        previous: Some(state(COUNTER_START - 3, 500, &signer)),
        ..record.clone()
    };
    assert!(WriteRecord::decode(&backwards.encode()).is_err());
    let mut trailing = record.encode();
    trailing.push(0);
    assert!(WriteRecord::decode(&trailing).is_err());
}

#[test]
fn float_grant_round_trips_and_signs_every_field() {
    let root = SigningKeyPair::from_seed(&[4; 32]);
    let mut grant = FloatGrant {
        machine: writer(),
        grant_number: 3,
        amount: Amount::new(50_000).unwrap(),
        date: Date(20_002),
        signature: Signature([0; 64]),
    };
    grant.signature = root.sign(&grant.signed_message());
    assert_eq!(FloatGrant::decode(&grant.encode()).unwrap(), grant);
    assert!(root
        .public_key()
        .verify(&grant.signed_message(), &grant.signature)
        .is_ok());
    for changed in [
        FloatGrant {
            grant_number: 4,
            ..grant.clone()
        },
        FloatGrant {
            amount: Amount::new(50_001).unwrap(),
            ..grant.clone()
        },
        FloatGrant {
            machine: DeviceId([1; 8]),
            ..grant.clone()
        },
        FloatGrant {
            date: Date(20_003),
            ..grant.clone()
        },
    ] {
        assert!(root
            .public_key()
            .verify(&changed.signed_message(), &grant.signature)
            .is_err());
    }
    let zero = FloatGrant {
        amount: Amount::ZERO,
        ..grant.clone()
    };
    assert!(FloatGrant::decode(&zero.encode()).is_err());
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = WriteRecord::decode(&bytes);
        let _ = FloatGrant::decode(&bytes);
        let _ = ValueArea::decode(&bytes);
        let _ = decode_certificate_area(&bytes);
        let _ = CardContent::decode(&bytes);
    }

    #[test]
    fn plain_values_round_trip(date in any::<u32>(), amount in 0..=crate::limits::BALANCE_MAX_MINOR) {
        let value = PlainValue { date: Date(date), amount: Amount::new(amount).unwrap() };
        prop_assert_eq!(PlainValue::decode(&value.encode()).unwrap(), value);
    }
}
