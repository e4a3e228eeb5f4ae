//! Seed 002's provider SAMs in SoftHSM2: a master carried into the token gives the software
//! SAM's area keys and key packages a chip accepts; the transfer SAM's copies open only in the
//! token that sealed them; only the transfer SAM seals copies and signs records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod move_common;

use std::sync::Arc;

use common::softhsm;
use move_common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::messages::services::{
    area_key, ins, AreaContent, KeyState, MigrationRecord, ServiceCode, ServiceOperation,
};
use valuecard_core::money::Amount;
use valuecard_migrate::sam::{ProviderSam, SamError};
use valuecard_sam_pkcs11::NewMaster;

#[test]
fn a_token_with_the_software_master_derives_the_same_area_keys() {
    let Some(module) = softhsm("move_same_area_keys") else {
        return;
    };
    let token = Token::fresh(&module);
    let normal = token.normal("normal", 2, imported_master(2, KeyState::Main));
    let transfer = token.transfer(
        "transfer",
        2,
        imported_master(2, KeyState::Temporary),
        imported(STORAGE),
    );
    let software: [(&dyn ProviderSam, &dyn ProviderSam); 2] = [
        (&normal, &software_normal(2)),
        (&transfer, &software_transfer(2, STORAGE)),
    ];
    for (from_token, from_software) in software {
        let state = from_token.key_state();
        assert_eq!(state, from_software.key_state());
        for card in 1..=4 {
            for service in [ServiceCode(0x0001), TICKETS, ServiceCode(0xFFFF)] {
                let binding = binding(card, service, state);
                let cryptogram = card_cryptogram(2, binding);
                let (mut token_channel, token_host) =
                    from_token.open_channel(binding, &cryptogram).unwrap();
                let (mut software_channel, software_host) =
                    from_software.open_channel(binding, &cryptogram).unwrap();
                // Equal cryptograms and equal messages: equal session keys, so equal area keys.
                assert_eq!(token_host, software_host, "card {card} service {service}");
                assert_eq!(
                    token_channel.seal(ins::READ_AREA, b"area").unwrap(),
                    software_channel.seal(ins::READ_AREA, b"area").unwrap()
                );
                let mut resumed = from_token.resume_channel(binding, (1, 0)).unwrap();
                assert_eq!(
                    resumed.seal(ins::READ_AREA, b"next").unwrap(),
                    software_channel.seal(ins::READ_AREA, b"next").unwrap()
                );
                // A cryptogram of another area key is refused, as by the software SAM.
                let mut wrong = cryptogram;
                wrong[0] ^= 1;
                assert!(matches!(
                    from_token.open_channel(binding, &wrong),
                    Err(SamError::Channel(_))
                ));
            }
        }
        // A binding of the other key state is not this SAM's.
        let other = match state {
            KeyState::Main => KeyState::Temporary,
            KeyState::Temporary => KeyState::Main,
        };
        let binding = binding(1, TICKETS, other);
        assert!(matches!(
            from_token.open_channel(binding, &card_cryptogram(2, binding)),
            Err(SamError::Channel(_))
        ));
    }
}

#[test]
fn a_chip_accepts_the_token_s_key_packages_and_opens_a_channel_with_it() {
    let Some(module) = softhsm("move_key_packages") else {
        return;
    };
    let token = Token::fresh(&module);
    let normal = Arc::new(token.normal("normal", 2, imported_master(2, KeyState::Main)));
    let transfer = Arc::new(token.transfer(
        "transfer",
        2,
        imported_master(2, KeyState::Temporary),
        NewMaster::Generate,
    ));
    let provider = tickets_provider(normal.clone(), transfer.clone());
    let mut chip = reader(3, 1_000);
    provider
        .issue_area(&software_admin(), &mut chip, testing::today(), &mut OsRng)
        .unwrap();
    let area = area(&chip, TICKETS).unwrap();
    assert_eq!(area.key_state, KeyState::Main);
    let card_id = testing::card_id(3);
    for (state, key) in [
        (KeyState::Main, &area.main_key),
        (KeyState::Temporary, &area.temporary_key),
    ] {
        let expected = area_key(&testing::area_master(2, state), state, &card_id, TICKETS);
        assert_eq!(key.expose(), expected.expose(), "{state:?}");
    }
    assert_eq!(area.mover_certificate.subject(), transfer_subject(2));

    // Normal use through the token's normal SAM: a channel the chip accepts.
    let content = provider
        .normal_use(
            &mut chip,
            Some(&ServiceOperation::IssueTicket(ticket())),
            &mut OsRng,
        )
        .unwrap();
    let AreaContent::Tickets(book) = content else {
        panic!("not a ticket book: {content:?}");
    };
    assert_eq!(book.tickets, [ticket()]);
    assert_eq!(
        provider.normal_use(&mut chip, None, &mut OsRng).unwrap(),
        AreaContent::Tickets(book)
    );

    // A chip certified under another root gets no package.
    let foreign = testing::card_certificate(4)
        .body
        .sign(&SigningKeyPair::from_seed(&[0x99; 32]));
    assert!(matches!(
        normal.key_package(&foreign, TICKETS, testing::today(), &mut OsRng),
        Err(SamError::CardCertificate(_))
    ));
    // Nor does an expired one.
    assert!(matches!(
        transfer.key_package(
            &testing::card_certificate(4),
            TICKETS,
            testing::today().add_days(10 * 365),
            &mut OsRng
        ),
        Err(SamError::CardCertificate(_))
    ));
}

#[test]
fn copies_sealed_by_the_token_open_only_in_it_and_only_as_sealed() {
    let Some(module) = softhsm("move_copies") else {
        return;
    };
    let token = Token::fresh(&module);
    let transfer = token.transfer(
        "transfer",
        1,
        imported_master(1, KeyState::Temporary),
        imported(STORAGE),
    );
    let other_token = token.transfer(
        "other",
        1,
        imported_master(1, KeyState::Temporary),
        NewMaster::Generate,
    );
    let same_key = software_transfer(1, STORAGE);
    let other_key = software_transfer(1, [0x5D; 16]);
    let source = testing::card_id(1);
    let exported = b"the exported purse area, 87654321 minor units".to_vec();

    let sealed = transfer
        .seal_copy(&MOVE, TICKETS, &source, &exported, &mut OsRng)
        .unwrap();
    assert!(
        !sealed
            .windows(8)
            .any(|w| exported.windows(8).any(|e| e == w)),
        "the copy must not show its content"
    );
    assert_eq!(
        transfer
            .open_copy(&MOVE, TICKETS, &source, &sealed)
            .unwrap(),
        exported
    );
    // Two seals of one copy differ (fresh nonces).
    assert_ne!(
        sealed,
        transfer
            .seal_copy(&MOVE, TICKETS, &source, &exported, &mut OsRng)
            .unwrap()
    );
    // The software SAM's layout: a software SAM holding the same storage key (one carried
    // into the token) reads the token's copies and the token reads its.
    assert_eq!(
        same_key
            .open_copy(&MOVE, TICKETS, &source, &sealed)
            .unwrap(),
        exported
    );
    let by_software = same_key
        .seal_copy(&MOVE, TICKETS, &source, &exported, &mut OsRng)
        .unwrap();
    assert_eq!(
        transfer
            .open_copy(&MOVE, TICKETS, &source, &by_software)
            .unwrap(),
        exported
    );
    // Nobody else opens it.
    assert_eq!(
        other_key.open_copy(&MOVE, TICKETS, &source, &sealed),
        Err(SamError::Copy)
    );
    assert_eq!(
        other_token.open_copy(&MOVE, TICKETS, &source, &sealed),
        Err(SamError::Copy)
    );
    // Another move's, service's or chip's copy is refused.
    for (move_id, service, chip) in [
        (OTHER_MOVE, TICKETS, source),
        (MOVE, ServiceCode(0x0001), source),
        (MOVE, TICKETS, testing::card_id(2)),
    ] {
        assert_eq!(
            transfer.open_copy(&move_id, service, &chip, &sealed),
            Err(SamError::Copy),
            "{move_id:?} {service} {chip:?}"
        );
    }
    // Every altered byte and every cut is refused.
    for index in 0..sealed.len() {
        let mut altered = sealed.clone();
        altered[index] ^= 0x01;
        assert_eq!(
            transfer.open_copy(&MOVE, TICKETS, &source, &altered),
            Err(SamError::Copy),
            "byte {index}"
        );
    }
    for length in [0, 1, 11, 12, 13, 27, sealed.len() - 1] {
        assert_eq!(
            transfer.open_copy(&MOVE, TICKETS, &source, &sealed[..length]),
            Err(SamError::Copy),
            "length {length}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(
        transfer.open_copy(&MOVE, TICKETS, &source, &longer),
        Err(SamError::Copy)
    );
}

#[test]
fn the_transfer_sam_signs_records_and_the_normal_sam_neither_seals_nor_signs() {
    let Some(module) = softhsm("move_records") else {
        return;
    };
    let token = Token::fresh(&module);
    let transfer = token.transfer("transfer", 1, NewMaster::Generate, NewMaster::Generate);
    let normal = token.normal("normal", 1, NewMaster::Generate);
    let record = MigrationRecord {
        card_id: testing::card_id(2),
        writer: transfer_subject(1),
        challenge_host: [0x11; 16],
        challenge_card: [0x22; 16],
        counter: 7,
        amount: Amount::new(87_654_321).unwrap(),
        balance_after: Amount::new(87_655_021).unwrap(),
        writer_sequence: 1,
        date: testing::today(),
    };
    let signature = transfer.sign_migration_record(&record).unwrap();
    transfer
        .certificate()
        .body
        .signing_key
        .verify(&record.signed_message(), &signature)
        .unwrap();
    assert_eq!(
        transfer.public_key(),
        transfer.certificate().body.signing_key
    );
    let mut other_writer = record.clone();
    other_writer.writer = normal_subject(1);
    assert!(matches!(
        transfer.sign_migration_record(&other_writer),
        Err(SamError::Unsupported(_))
    ));

    assert_eq!(normal.key_state(), KeyState::Main);
    assert!(matches!(
        normal.seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng),
        Err(SamError::Unsupported(_))
    ));
    let sealed = transfer
        .seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng)
        .unwrap();
    assert!(matches!(
        normal.open_copy(&MOVE, TICKETS, &testing::card_id(1), &sealed),
        Err(SamError::Unsupported(_))
    ));
    let mut by_normal = record.clone();
    by_normal.writer = normal_subject(1);
    assert!(matches!(
        normal.sign_migration_record(&by_normal),
        Err(SamError::Unsupported(_))
    ));
}
