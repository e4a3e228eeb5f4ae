//! The cryptographic binding of the transfer messages of seed 000: the key set sealed for a
//! load, the two key exports, the value message and the proofs open or verify only under
//! exactly what they were made for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_fixtures;

use transfer_fixtures::*;
use valuecard_core::crypto::{seal_to, AesKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::messages::transfer::{
    KeyUpdateMode, ProofStatus, PublicKeyExport, SymmetricKeyExport, TransferBinding,
    TransferKeySet, TransferProof,
};

#[test]
fn the_key_set_sealed_for_a_load_opens_only_for_that_load() {
    let set = TransferKeySet {
        transfer: key(3, 0x33),
        limit: 9,
        update: key(2, 0x22),
    };
    let card_key = AesKey::from_slice(&[0x4B; 16]).unwrap();
    let challenge = [0x58; 16];
    let sealed = set.seal_for_load(&card_key, &challenge, b"authorization");
    let opened = TransferKeySet::open_from_load(&card_key, &challenge, b"authorization", &sealed);
    assert_eq!(opened.unwrap(), set);
    let other_key = AesKey::from_slice(&[0x4C; 16]).unwrap();
    let mut other_challenge = challenge;
    other_challenge[0] ^= 1;
    let mut tampered = sealed.clone();
    tampered[5] ^= 1;
    for (what, result) in [
        (
            "another card key",
            TransferKeySet::open_from_load(&other_key, &challenge, b"authorization", &sealed),
        ),
        (
            "another challenge",
            TransferKeySet::open_from_load(&card_key, &other_challenge, b"authorization", &sealed),
        ),
        (
            "another authorization",
            TransferKeySet::open_from_load(&card_key, &challenge, b"authorizatioN", &sealed),
        ),
        (
            "a tampered box",
            TransferKeySet::open_from_load(&card_key, &challenge, b"authorization", &tampered),
        ),
    ] {
        assert!(result.is_err(), "{what} opened it");
    }
}

#[test]
fn a_symmetric_export_opens_only_under_its_update_key_and_form() {
    let update = key(2, 0x22);
    let export = SymmetricKeyExport::seal(
        KeyUpdateMode::Symmetric,
        &update,
        [0x4E; 12],
        &[0x5A; 16],
        &key(4, 0x44),
    );
    let (random, opened) = export.open(KeyUpdateMode::Symmetric, &update).unwrap();
    assert_eq!(random, [0x5A; 16]);
    assert_eq!(opened, key(4, 0x44));
    // Another update-key generation (by identifier, or the same identifier with other bytes).
    assert!(export
        .open(KeyUpdateMode::Symmetric, &key(3, 0x22))
        .is_err());
    assert!(export
        .open(KeyUpdateMode::Symmetric, &key(2, 0x23))
        .is_err());
    // The same bytes presented as the other form.
    assert!(export.open(KeyUpdateMode::Selection, &update).is_err());
    // Tampered anywhere.
    for index in 0..export.ciphertext.len() {
        let mut tampered = export.clone();
        tampered.ciphertext[index] ^= 0x01;
        assert!(tampered.open(KeyUpdateMode::Symmetric, &update).is_err());
    }
    let mut tampered = export.clone();
    tampered.nonce[0] ^= 0x01;
    assert!(tampered.open(KeyUpdateMode::Symmetric, &update).is_err());
}

#[test]
fn a_public_key_export_binds_sender_receiver_and_random() {
    let receiver_keys = SealingKeyPair::from_secret([0x31; 32]);
    let sender_signing = SigningKeyPair::from_seed(&[0x32; 32]);
    let plain = PublicKeyExport::plaintext(&key(4, 0x44));
    let sealed = seal_to(
        &mut rand_core::OsRng,
        &receiver_keys.public_key(),
        &PublicKeyExport::sealed_aad(&DESTINATION, &SOURCE),
        &plain,
    )
    .unwrap();
    let message = PublicKeyExport::signed_message(&DESTINATION, &SOURCE, &[0x5A; 16], &sealed);
    let signature = sender_signing.sign(&message);
    let public = sender_signing.public_key();
    public.verify(&message, &signature).unwrap();
    for other in [
        PublicKeyExport::signed_message(&SOURCE, &DESTINATION, &[0x5A; 16], &sealed),
        PublicKeyExport::signed_message(&DESTINATION, &SOURCE, &[0x5B; 16], &sealed),
        PublicKeyExport::signed_message(&DESTINATION, &SOURCE, &[0x5A; 16], &sealed[1..]),
    ] {
        assert!(public.verify(&other, &signature).is_err());
    }
    let opened = receiver_keys
        .open(&PublicKeyExport::sealed_aad(&DESTINATION, &SOURCE), &sealed)
        .unwrap();
    assert_eq!(
        PublicKeyExport::key_from_plaintext(&opened).unwrap(),
        key(4, 0x44)
    );
    assert!(receiver_keys
        .open(&PublicKeyExport::sealed_aad(&SOURCE, &DESTINATION), &sealed)
        .is_err());
    assert!(PublicKeyExport::key_from_plaintext(&opened[1..]).is_err());
}

#[test]
fn a_value_message_opens_only_with_its_exact_binding() {
    let transfer_key = key(3, 0x33);
    let message = value_message();
    assert_eq!(
        message.open(&transfer_key, &binding()).unwrap(),
        amount(250)
    );
    type Flip = fn(&mut TransferBinding);
    let flips: [(&str, Flip); 9] = [
        ("key id", |b| b.key_id += 1),
        ("source", |b| b.source.0[7] ^= 1),
        ("source counter", |b| b.source_counter += 1),
        ("source challenge", |b| b.challenge_source[15] ^= 1),
        ("destination", |b| b.destination.0[7] ^= 1),
        ("destination counter", |b| b.destination_counter += 1),
        ("destination challenge", |b| b.challenge_destination[0] ^= 1),
        ("terminal challenge", |b| b.challenge_terminal[0] ^= 1),
        ("date", |b| b.date.0 += 1),
    ];
    for (what, flip) in flips {
        let mut other = binding();
        flip(&mut other);
        assert!(
            message.open(&transfer_key, &other).is_err(),
            "{what} flipped, still opens"
        );
    }
    // Under another generation, another key, or with the ciphertext touched.
    assert!(message.open(&key(4, 0x33), &binding()).is_err());
    assert!(message.open(&key(3, 0x34), &binding()).is_err());
    let mut relabelled = message.clone();
    relabelled.key_id = 4;
    assert!(relabelled.open(&key(4, 0x33), &binding()).is_err());
    for index in 0..message.ciphertext.len() {
        let mut tampered = message.clone();
        tampered.ciphertext[index] ^= 0x80;
        assert!(tampered.open(&transfer_key, &binding()).is_err());
    }
}

#[test]
fn a_proof_verifies_only_for_its_subject_status_counter_and_key() {
    let transfer_key = key(3, 0x33);
    let received = proof(ProofStatus::Received);
    received.verify(&transfer_key, &subject(250)).unwrap();
    let mut other_subjects = Vec::new();
    for flip in 0..4 {
        let mut s = subject(250);
        match flip {
            0 => s.source.0[0] ^= 1,
            1 => s.challenge_source[0] ^= 1,
            2 => s.destination.0[0] ^= 1,
            _ => s.amount = amount(251),
        }
        other_subjects.push(s);
    }
    for s in &other_subjects {
        assert!(received.verify(&transfer_key, s).is_err(), "{s:?}");
    }
    let flipped = TransferProof {
        status: ProofStatus::NotReceived,
        ..received.clone()
    };
    assert!(flipped.verify(&transfer_key, &subject(250)).is_err());
    let counter = TransferProof {
        destination_counter: 11,
        ..received.clone()
    };
    assert!(counter.verify(&transfer_key, &subject(250)).is_err());
    assert!(received.verify(&key(3, 0x34), &subject(250)).is_err());
    assert!(received.verify(&key(4, 0x33), &subject(250)).is_err());
    let relabelled = TransferProof {
        key_id: 4,
        ..received
    };
    assert!(relabelled.verify(&key(4, 0x33), &subject(250)).is_err());
    // A proof of non-receipt speaks of amount zero.
    let not_received = TransferProof::make(ProofStatus::NotReceived, &transfer_key, 9, &subject(0));
    not_received.verify(&transfer_key, &subject(0)).unwrap();
    assert!(not_received.verify(&transfer_key, &subject(250)).is_err());
}
