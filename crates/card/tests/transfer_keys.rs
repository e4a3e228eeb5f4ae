//! The transfer key on the card (seed 000): the three update forms between two cards —
//! under the shared update key (claims 2, 6), under the cards' certified key pairs (claims
//! 4, 7), and the move of the selection to a key already held (claim 9) — every refusal
//! with the card's key state unchanged, and the center's delivery at personalization and
//! with a load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use transfer_common::*;
use valuecard_card::state::{AbnormalCode, PersistentState, TransferState};
use valuecard_card::testing;
use valuecard_core::apdu::Command;
use valuecard_core::cert::{CertificateBody, Role};
use valuecard_core::crypto::{aes_cmac, seal_to, AesKey, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::purse::{ins as purse_ins, PersonalizeCommand};
use valuecard_core::messages::transfer::{
    ins, GetTransferKey, ProofStatus, PublicKeyExport, SymmetricKeyExport, UpdatePermission,
    UpdatePermissionResponse,
};
use valuecard_core::StatusWord;

const SYMMETRIC: u8 = 0;
const PUBLIC_KEY: u8 = 1;
const SELECTION: u8 = 2;

fn transfer_state(device: &Device) -> TransferState {
    device.purse().transfer.clone()
}

/// The older card O (card 1) and the newer card N (card 2).
fn cards(older: (u32, u32, u32), newer: (u32, u32, u32)) -> (Device, Device) {
    let set = |(transfer, limit, update)| testing::key_set(transfer, limit, update);
    (
        Device::new(1, 5_000, Some(&set(older))),
        Device::new(2, 5_000, Some(&set(newer))),
    )
}

#[test]
fn the_symmetric_update_moves_the_newer_key_and_retires_the_older() {
    let (mut older, mut newer) = cards((1, 5, 1), (3, 5, 1));
    key_update(&mut older, &mut newer, SYMMETRIC).unwrap();
    let state = transfer_state(&older);
    assert_eq!(state.selected, 3);
    assert_eq!(state.held_ids(), vec![3]);
    assert_eq!(state.selected_key(), Some(&testing::transfer_key(3)));
    assert_eq!(state.limit, 5);
    // The giving card is unchanged, and the two cards now transfer under generation 3.
    assert_eq!(transfer_state(&newer).selected, 3);
    let flow = Terminal::default()
        .run(&mut older, &mut newer, amount(700))
        .unwrap();
    assert_eq!(flow.proof.unwrap().key_id, 3);
    assert_eq!((older.balance(), newer.balance()), (4_300, 5_700));
}

#[test]
fn a_pending_transfer_keeps_the_generation_it_was_sent_under() {
    // A sends under 1, then takes generation 3 from C before B's proof reaches it.
    let mut a = Device::new(1, 5_000, Some(&testing::key_set(1, 5, 1)));
    let mut b = Device::new(2, 0, Some(&testing::key_set(1, 5, 1)));
    let mut c = Device::new(3, 0, Some(&testing::key_set(3, 5, 1)));
    let mut terminal = Terminal::default();
    let mut flow = terminal.initialize_in(&mut b, a.id(), amount(400)).unwrap();
    terminal.transfer_out(&mut a, &mut flow).unwrap();
    terminal.transfer_in(&mut b, &mut flow).unwrap();
    key_update(&mut a, &mut c, SYMMETRIC).unwrap();
    assert_eq!(transfer_state(&a).held_ids(), vec![3]);
    terminal.complete(&mut a, &flow).unwrap();
    assert_eq!((a.balance(), a.reserved()), (4_600, 0));
}

#[test]
fn a_proof_under_a_generation_the_source_took_later_settles_its_transfer() {
    // B moved to generation 2 before A's value arrived: B refuses it and proves so under 2;
    // A takes generation 2 and can then check that proof.
    let mut a = Device::new(1, 5_000, Some(&testing::key_set(1, 5, 1)));
    let mut b = Device::new(2, 0, Some(&testing::key_set(2, 5, 1)));
    let mut terminal = Terminal::default();
    let mut flow = terminal.initialize_in(&mut b, a.id(), amount(400)).unwrap();
    terminal.transfer_out(&mut a, &mut flow).unwrap();
    assert_eq!(
        terminal.transfer_in(&mut b, &mut flow),
        Err(StatusWord::REFERENCE_DATA_NOT_USABLE)
    );
    let proof = terminal.status(&mut b, &flow.status_query()).unwrap();
    key_update(&mut a, &mut b, SYMMETRIC).unwrap();
    terminal.complete_with(&mut a, &flow, proof).unwrap();
    assert_eq!((a.balance(), a.reserved(), b.balance()), (5_000, 0, 0));
}

#[test]
fn the_public_key_update_works_where_update_keys_differ() {
    let (mut older, mut newer) = cards((1, 5, 1), (3, 5, 2));
    let before = transfer_state(&older);
    // Claim 14: the symmetric form needs one update key on both cards.
    assert_eq!(
        key_update(&mut older, &mut newer, SYMMETRIC),
        Err(StatusWord::REFERENCE_DATA_NOT_USABLE)
    );
    assert_eq!(transfer_state(&older), before);
    key_update(&mut older, &mut newer, PUBLIC_KEY).unwrap();
    let state = transfer_state(&older);
    assert_eq!(state.selected, 3);
    assert_eq!(state.selected_key(), Some(&testing::transfer_key(3)));
    // The update key is not part of this exchange.
    assert_eq!(state.update_key_id(), 1);
}

#[test]
fn the_public_key_export_is_sealed_to_the_receiver_and_signed_by_the_sender() {
    let (mut older, mut newer) = cards((1, 5, 1), (3, 5, 1));
    let permission = UpdatePermission {
        peer_certificate: Some(testing::card_certificate(2)),
    };
    let response = older.transfer(ins::UPDATE_PERMISSION, PUBLIC_KEY, permission.encode());
    let random = UpdatePermissionResponse::decode(&response.data)
        .unwrap()
        .random;
    let request = GetTransferKey {
        random,
        peer_certificate: Some(testing::card_certificate(1)),
    };
    let response = newer.transfer(ins::GET_TRANSFER_KEY, PUBLIC_KEY, request.encode());
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let export = PublicKeyExport::decode(&response.data).unwrap();
    let (sender, receiver) = (testing::card_id(2), testing::card_id(1));
    testing::card_keys(2)
        .signing
        .public_key()
        .verify(
            &PublicKeyExport::signed_message(&sender, &receiver, &random, &export.sealed),
            &export.signature,
        )
        .unwrap();
    let plain = testing::card_keys(1)
        .sealing
        .open(
            &PublicKeyExport::sealed_aad(&sender, &receiver),
            &export.sealed,
        )
        .unwrap();
    assert_eq!(
        PublicKeyExport::key_from_plaintext(&plain).unwrap(),
        testing::transfer_key(3)
    );
    // Nobody else can open it.
    assert!(testing::card_keys(3)
        .sealing
        .open(
            &PublicKeyExport::sealed_aad(&sender, &receiver),
            &export.sealed
        )
        .is_err());
}

#[test]
fn the_selection_update_moves_to_a_key_already_held() {
    // O holds generations 1 and 3, with 1 selected (3 delivered ahead of its selection).
    let mut state = testing::personalized_card(1, amount(5_000), Some(&testing::key_set(1, 5, 1)));
    if let PersistentState::Personalized(purse) = &mut state {
        purse.transfer.keys.push(testing::transfer_key(3));
    }
    let mut older = Device::with_state(1, state);
    assert_eq!(older.info().held_key_ids, vec![1, 3]);
    let mut newer = Device::new(2, 5_000, Some(&testing::key_set(3, 5, 1)));
    key_update(&mut older, &mut newer, SELECTION).unwrap();
    let state = transfer_state(&older);
    assert_eq!(state.selected, 3);
    assert_eq!(state.held_ids(), vec![3]);

    // A selection of a key the card does not hold is refused.
    let mut state = testing::personalized_card(1, amount(5_000), Some(&testing::key_set(1, 5, 1)));
    if let PersistentState::Personalized(purse) = &mut state {
        purse.transfer.keys.push(testing::transfer_key(3));
    }
    let mut older = Device::with_state(1, state);
    let before = transfer_state(&older);
    let mut other = Device::new(3, 0, Some(&testing::key_set(4, 5, 1)));
    assert_eq!(
        key_update(&mut older, &mut other, SELECTION),
        Err(StatusWord::REFERENCE_DATA_NOT_USABLE)
    );
    assert_eq!(transfer_state(&older), before);
}

#[test]
fn a_key_not_newer_or_above_the_limit_is_refused() {
    for (older, newer, form, refusal) in [
        (
            (3, 5, 1),
            (3, 5, 1),
            SYMMETRIC,
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            (3, 5, 1),
            (2, 5, 1),
            SYMMETRIC,
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            (3, 5, 1),
            (2, 5, 1),
            PUBLIC_KEY,
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            (1, 2, 1),
            (3, 5, 1),
            SYMMETRIC,
            StatusWord::REFERENCE_DATA_NOT_USABLE,
        ),
        (
            (1, 2, 1),
            (3, 5, 1),
            PUBLIC_KEY,
            StatusWord::REFERENCE_DATA_NOT_USABLE,
        ),
        (
            (1, 5, 1),
            (3, 5, 2),
            SYMMETRIC,
            StatusWord::REFERENCE_DATA_NOT_USABLE,
        ),
    ] {
        let (mut o, mut n) = cards(older, newer);
        let before = transfer_state(&o);
        assert_eq!(
            key_update(&mut o, &mut n, form),
            Err(refusal),
            "{older:?} <- {newer:?} in form {form}"
        );
        assert_eq!(transfer_state(&o), before, "{older:?} <- {newer:?}");
    }
}

#[test]
fn a_wrong_random_a_forged_signature_or_a_tampered_export_is_refused() {
    // The newer card was given another random than the older card drew.
    for form in [SYMMETRIC, PUBLIC_KEY] {
        let (mut older, mut newer) = cards((1, 5, 1), (3, 5, 1));
        let before = transfer_state(&older);
        let public = form == PUBLIC_KEY;
        let permission = UpdatePermission {
            peer_certificate: public.then(|| testing::card_certificate(2)),
        };
        let response = older.transfer(ins::UPDATE_PERMISSION, form, permission.encode());
        let mut random = UpdatePermissionResponse::decode(&response.data)
            .unwrap()
            .random;
        random[0] ^= 0x01;
        let request = GetTransferKey {
            random,
            peer_certificate: public.then(|| testing::card_certificate(1)),
        };
        let export = newer.transfer(ins::GET_TRANSFER_KEY, form, request.encode());
        let response = older.transfer(ins::UPDATE_TRANSFER_KEY, form, export.data);
        assert_eq!(
            response.sw,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            "form {form}"
        );
        assert_eq!(transfer_state(&older), before);
    }

    type Alter = fn(&[u8; 16], Vec<u8>) -> Vec<u8>;
    let alterations: [(&str, u8, Alter); 4] = [
        ("forged signature", PUBLIC_KEY, |_, data| {
            let mut export = PublicKeyExport::decode(&data).unwrap();
            export.signature = SigningKeyPair::from_seed(&[0x66; 32]).sign(b"a key");
            export.encode()
        }),
        ("tampered sealed key", PUBLIC_KEY, |_, data| {
            let mut export = PublicKeyExport::decode(&data).unwrap();
            export.sealed[40] ^= 0x01;
            export.encode()
        }),
        ("tampered ciphertext", SYMMETRIC, |_, data| {
            let mut export = SymmetricKeyExport::decode(&data).unwrap();
            export.ciphertext[3] ^= 0x01;
            export.encode()
        }),
        (
            "key sealed under a guessed update key",
            SYMMETRIC,
            |random, _| {
                SymmetricKeyExport::seal(
                    valuecard_core::messages::transfer::KeyUpdateMode::Symmetric,
                    &valuecard_core::messages::transfer::TransferKey {
                        id: 1,
                        key: AesKey::from_slice(&[0x01; 16]).unwrap(),
                    },
                    [0; 12],
                    random,
                    &testing::transfer_key(4),
                )
                .encode()
            },
        ),
    ];
    for (what, form, alter) in alterations {
        let (mut older, mut newer) = cards((1, 5, 1), (3, 5, 1));
        let before = transfer_state(&older);
        assert_eq!(
            key_update_with(&mut older, &mut newer, form, alter),
            Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED),
            "{what}"
        );
        assert_eq!(transfer_state(&older), before, "{what}");
    }
}

#[test]
fn a_forged_certificate_or_a_mixed_form_is_refused() {
    let (mut older, mut newer) = cards((1, 5, 1), (3, 5, 1));
    let before = transfer_state(&older);
    // A card certificate for N's keys, signed by a root the card does not trust.
    let keys = testing::card_keys(2);
    let forged = CertificateBody {
        issuer: testing::anchor().center,
        subject: DeviceId(keys.card_id.0),
        role: Role::Card,
        effective: testing::today(),
        expiry: testing::today().add_days(365),
        signing_key: keys.signing.public_key(),
        sealing_key: Some(keys.sealing.public_key()),
    }
    .sign(&SigningKeyPair::from_seed(&[0x13; 32]));
    let permission = UpdatePermission {
        peer_certificate: Some(forged.clone()),
    };
    let response = older.transfer(ins::UPDATE_PERMISSION, PUBLIC_KEY, permission.encode());
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // The newer card will not seal its key to a forged certificate either.
    let request = GetTransferKey {
        random: [0; 16],
        peer_certificate: Some(forged),
    };
    let response = newer.transfer(ins::GET_TRANSFER_KEY, PUBLIC_KEY, request.encode());
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // A settlement terminal's certificate is not a card's.
    let (_, terminal) = testing::settlement_terminal();
    let permission = UpdatePermission {
        peer_certificate: Some(terminal),
    };
    let response = older.transfer(ins::UPDATE_PERMISSION, PUBLIC_KEY, permission.encode());
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // A certificate in the symmetric form, none in the public-key form.
    let permission = UpdatePermission {
        peer_certificate: Some(testing::card_certificate(2)),
    };
    let response = older.transfer(ins::UPDATE_PERMISSION, SYMMETRIC, permission.encode());
    assert_eq!(response.sw, StatusWord::WRONG_DATA);
    let response = older.transfer(ins::UPDATE_PERMISSION, PUBLIC_KEY, Vec::new());
    assert_eq!(response.sw, StatusWord::WRONG_DATA);
    // Permission in one form, update in another.
    let response = older.transfer(ins::UPDATE_PERMISSION, SYMMETRIC, Vec::new());
    let random = UpdatePermissionResponse::decode(&response.data)
        .unwrap()
        .random;
    let request = GetTransferKey {
        random,
        peer_certificate: None,
    };
    let export = newer.transfer(ins::GET_TRANSFER_KEY, SELECTION, request.encode());
    let response = older.transfer(ins::UPDATE_TRANSFER_KEY, SELECTION, export.data);
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    // The permission lives until the next command only.
    let response = older.transfer(ins::UPDATE_PERMISSION, SYMMETRIC, Vec::new());
    let random = UpdatePermissionResponse::decode(&response.data)
        .unwrap()
        .random;
    older.info();
    let request = GetTransferKey {
        random,
        peer_certificate: None,
    };
    let export = newer.transfer(ins::GET_TRANSFER_KEY, SYMMETRIC, request.encode());
    let response = older.transfer(ins::UPDATE_TRANSFER_KEY, SYMMETRIC, export.data);
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    assert_eq!(transfer_state(&older), before);
}

/// PERSONALIZE of test card 5 with the sealed keys `plain` (KU || KO || transfer keys).
fn personalize(plain: &[u8]) -> (Device, StatusWord) {
    let transport_key = AesKey::from_slice(&[0x77; 16]).unwrap();
    let keys = testing::card_keys(5);
    let state = PersistentState::KeysGenerated {
        transport_key: transport_key.clone(),
        chip_serial: None,
        keys: Box::new(keys.clone()),
    };
    let mut device = Device::with_state(5, state);
    let challenge =
        device.send_command(Command::new(0x00, purse_ins::GET_CHALLENGE, 0, 0).with_le(16));
    assert_eq!(challenge.sw, StatusWord::SUCCESS);
    let mut rng = rand_core::OsRng;
    let mut command = PersonalizeCommand {
        certificate: testing::card_certificate(5),
        anchor: testing::anchor(),
        dispenser_id: DeviceId(*b"DISPENSR"),
        date: testing::today(),
        sealed_keys: seal_to(
            &mut rng,
            &keys.sealing.public_key(),
            &PersonalizeCommand::sealed_keys_aad(&keys.card_id),
            plain,
        )
        .unwrap(),
        mac: [0; 16],
    };
    let challenge: [u8; 16] = challenge.data.try_into().unwrap();
    command.mac = aes_cmac(
        &transport_key,
        &PersonalizeCommand::mac_input(&challenge, &command.encode_unmacced()),
    );
    let response = device.send_command(
        Command::new(0x80, purse_ins::PERSONALIZE, 0, 0)
            .with_data(command.encode())
            .with_le(256),
    );
    (device, response.sw)
}

#[test]
fn personalization_delivers_the_transfer_keys() {
    let set = testing::key_set(2, 7, 3);
    let mut plain = vec![0x4B; 16];
    plain.extend_from_slice(&[0x4F; 16]);
    let without = plain.clone();
    plain.extend_from_slice(&set.to_bytes());
    let (mut device, sw) = personalize(&plain);
    assert_eq!(sw, StatusWord::SUCCESS);
    let state = transfer_state(&device);
    assert_eq!(state.selected_key(), Some(&set.transfer));
    assert_eq!(state.limit, 7);
    assert_eq!(state.update_key.as_ref(), Some(&set.update));
    let info = device.info();
    assert_eq!((info.transfer_key_id, info.update_key_id), (2, 3));

    // Older centers send KU || KO only: the card has no transfer keys yet.
    let (device, sw) = personalize(&without);
    assert_eq!(sw, StatusWord::SUCCESS);
    assert!(transfer_state(&device).is_empty());

    // A set whose identifiers make no sense, or one byte short, is refused.
    let mut bad = without.clone();
    bad.extend_from_slice(&testing::key_set(6, 5, 1).to_bytes());
    let (device, sw) = personalize(&bad);
    assert_eq!(sw, StatusWord::WRONG_DATA);
    assert!(!matches!(
        device.card.state(),
        PersistentState::Personalized(_)
    ));
    plain.pop();
    let (_, sw) = personalize(&plain);
    assert_eq!(sw, StatusWord::WRONG_DATA);
}

#[test]
fn a_load_delivers_newer_transfer_keys_and_never_older_ones() {
    let mut card = Device::new(1, 1_000, Some(&testing::key_set(1, 5, 1)));
    let newer = testing::key_set(2, 6, 2);
    let response = load(&mut card, 500, Delivery::Sealed(&newer));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(card.balance(), 1_500);
    let state = transfer_state(&card);
    assert_eq!(state.selected_key(), Some(&newer.transfer));
    assert_eq!(state.held_ids(), vec![2]);
    assert_eq!((state.limit, state.update_key_id()), (6, 2));

    // An older set moves nothing back.
    let before = transfer_state(&card);
    let response = load(&mut card, 500, Delivery::Sealed(&testing::key_set(1, 3, 1)));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!(card.balance(), 2_000);
    assert_eq!(transfer_state(&card), before);
}

#[test]
fn a_forged_transfer_key_delivery_is_refused_and_recorded() {
    let mut card = Device::new(1, 1_000, Some(&testing::key_set(1, 5, 1)));
    let before = transfer_state(&card);
    let response = load(&mut card, 500, Delivery::Forged(&testing::key_set(4, 9, 4)));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!((card.balance(), card.counter()), (1_000, 0));
    assert_eq!(transfer_state(&card), before);
    let events = &card.purse().abnormal_events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].code, AbnormalCode::ForgedLoadAuthorization);

    // Sealed under KU with the genuine authorization, but for another challenge of the
    // card (moved from another load): refused and recorded the same way.
    let before = transfer_state(&card);
    let response = load(
        &mut card,
        500,
        Delivery::AnotherLoad(&testing::key_set(4, 9, 4)),
    );
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!((card.balance(), card.counter()), (1_000, 0));
    assert_eq!(transfer_state(&card), before);
    assert_eq!(card.purse().abnormal_events.len(), 2);
    // The genuine delivery for this load goes through.
    let response = load(&mut card, 500, Delivery::Sealed(&testing::key_set(4, 9, 4)));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    assert_eq!((card.balance(), transfer_state(&card).selected), (1_500, 4));
}

#[test]
fn a_broken_chip_can_push_a_key_only_up_to_the_limit_and_the_center_overrides_it() {
    // The attacker owns card 9 (a genuine, certified chip) and rewrites its image: a key of
    // their choosing under generation 9, then 5.
    let mut victim = Device::new(1, 5_000, Some(&testing::key_set(1, 5, 1)));
    let forged = |id: u32| {
        let mut state = testing::personalized_card(9, amount(0), Some(&testing::key_set(1, 9, 7)));
        if let PersistentState::Personalized(purse) = &mut state {
            purse.transfer.keys = vec![valuecard_core::messages::transfer::TransferKey {
                id,
                key: AesKey::from_slice(&[0xEE; 16]).unwrap(),
            }];
            purse.transfer.selected = id;
        }
        Device::with_state(9, state)
    };
    let before = transfer_state(&victim);
    assert_eq!(
        key_update(&mut victim, &mut forged(9), PUBLIC_KEY),
        Err(StatusWord::REFERENCE_DATA_NOT_USABLE)
    );
    assert_eq!(transfer_state(&victim), before);
    // Within the limit it goes in: the victim now speaks a generation no honest card has.
    key_update(&mut victim, &mut forged(5), PUBLIC_KEY).unwrap();
    assert_eq!(transfer_state(&victim).selected, 5);
    let mut honest = Device::new(2, 0, Some(&testing::key_set(5, 5, 1)));
    let mut terminal = Terminal::default();
    let mut flow = terminal
        .initialize_in(&mut honest, victim.id(), amount(100))
        .unwrap();
    terminal.transfer_out(&mut victim, &mut flow).unwrap();
    assert_eq!(
        terminal.transfer_in(&mut honest, &mut flow),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(honest.balance(), 0);
    // The honest card's proof of non-receipt is under the honest generation 5, which the
    // victim cannot check: the reservation stays.
    let proof = terminal.status(&mut honest, &flow.status_query()).unwrap();
    assert_eq!(
        terminal.complete_with(&mut victim, &flow, proof),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(victim.reserved(), 100);
    // The center's next generation above the old limit replaces the pushed key on both cards,
    // and the honest card's proof under it settles the transfer.
    let next = testing::key_set(6, 8, 1);
    assert_eq!(
        load(&mut victim, 100, Delivery::Sealed(&next)).sw,
        StatusWord::SUCCESS
    );
    assert_eq!(
        load(&mut honest, 100, Delivery::Sealed(&next)).sw,
        StatusWord::SUCCESS
    );
    let state = transfer_state(&victim);
    assert_eq!(state.selected_key(), Some(&testing::transfer_key(6)));
    assert_eq!(state.held_ids(), vec![6]);
    let proof = terminal.status(&mut honest, &flow.status_query()).unwrap();
    assert_eq!((proof.status, proof.key_id), (ProofStatus::NotReceived, 6));
    terminal.complete_with(&mut victim, &flow, proof).unwrap();
    assert_eq!((victim.balance(), victim.reserved()), (5_100, 0));
}
