//! Transfer-key and update-key generations (seed 000): rotation, the limit the center hands
//! out, the history, and delivery at personalization and with every load, opened with the
//! keys the card holds, as the card opens them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::hand::{personalize, HandCard};
use common::*;
use rand_core::SeedableRng;
use valuecard_center::transfer_keys::{KeyGenerations, KeyKind};
use valuecard_center::Center;
use valuecard_core::crypto::random_array;
use valuecard_core::messages::center::{CenterLink, LoadApproval};
use valuecard_core::messages::purse::{Challenge, LoadAuthorization};
use valuecard_core::messages::transfer::TransferKeySet;
use valuecard_core::time::FixedClock;
use valuecard_sim::WorldRng;

fn center(seed: u64) -> (Center, WorldRng) {
    let mut rng = WorldRng::seed_from_u64(seed);
    let center = Center::ephemeral(Box::new(FixedClock(today())), &mut rng).unwrap();
    (center, rng)
}

#[test]
fn rotations_move_each_generation_up_by_one_and_are_recorded() {
    let (mut center, _) = center(1);
    let start = center.key_generations().unwrap();
    assert_eq!(
        start,
        KeyGenerations {
            transfer: 1,
            update: 1
        }
    );
    assert_eq!(start.limit(), 2);
    let set = center.transfer_key_set().unwrap();
    assert_eq!((set.transfer.id, set.limit, set.update.id), (1, 2, 1));

    assert_eq!(center.rotate_transfer_key().unwrap(), 2);
    assert_eq!(center.rotate_transfer_key().unwrap(), 3);
    assert_eq!(center.rotate_update_key().unwrap(), 2);
    let now = center.key_generations().unwrap();
    assert_eq!(
        (now.transfer, now.limit(), now.update),
        (3, 4, 2),
        "{now:?}"
    );
    let rotated = center.transfer_key_set().unwrap();
    assert_eq!(
        (rotated.transfer.id, rotated.limit, rotated.update.id),
        (3, 4, 2)
    );
    // A new generation is a new key; the same generation is always the same key.
    assert_ne!(rotated.transfer.key, set.transfer.key);
    assert_ne!(rotated.update.key, set.update.key);
    assert_eq!(
        center.transfer_key_set().unwrap().transfer.key,
        rotated.transfer.key
    );
    // The transfer key and the update key of one generation number differ.
    assert_ne!(set.transfer.key, set.update.key);

    let history: Vec<(KeyKind, u32)> = center
        .key_rotations()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r.rotated_on, today());
            (r.kind, r.generation)
        })
        .collect();
    assert_eq!(history.len(), 3);
    for expected in [
        (KeyKind::Transfer, 2),
        (KeyKind::Transfer, 3),
        (KeyKind::Update, 2),
    ] {
        assert!(history.contains(&expected), "{history:?}");
    }
}

#[test]
fn rotations_from_two_centers_on_one_database_never_reuse_a_generation() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = WorldRng::seed_from_u64(2);
    let clock = || -> Box<dyn valuecard_core::time::Clock> { Box::new(FixedClock(today())) };
    let mut first = Center::init(dir.path(), None, clock(), &mut rng).unwrap();
    let mut second = Center::open(dir.path(), None, clock()).unwrap();
    let mut seen = Vec::new();
    for round in 0..4 {
        let center = if round % 2 == 0 {
            &mut first
        } else {
            &mut second
        };
        seen.push(center.rotate_transfer_key().unwrap());
    }
    assert_eq!(seen, vec![2, 3, 4, 5]);
    assert_eq!(second.key_generations().unwrap().transfer, 5);
    // Both processes derive the same key for a generation.
    assert_eq!(
        first.transfer_key_set().unwrap(),
        second.transfer_key_set().unwrap()
    );
}

fn load(
    center: &mut Center,
    card: &HandCard,
    challenge_card: Challenge,
    challenge_dispenser: Challenge,
) -> (LoadApproval, LoadAuthorization) {
    let request = card.load_request(amount(300), challenge_card, challenge_dispenser);
    let approval = center.authorize_load(&request).unwrap();
    let authorization = card.authorization(&request, &approval);
    (approval, authorization)
}

fn open_delivery(
    card: &HandCard,
    approval: &LoadApproval,
    authorization: &LoadAuthorization,
) -> TransferKeySet {
    TransferKeySet::open_from_load(
        &card.card_key,
        &authorization.challenge_card,
        &authorization.signed_message(),
        approval
            .transfer_keys
            .as_deref()
            .expect("a load carries the transfer keys"),
    )
    .unwrap()
}

#[test]
fn personalization_and_every_load_deliver_the_current_key_set() {
    let (mut center, mut rng) = center(3);
    let card = personalize(&mut center, &mut rng);
    assert_eq!(card.delivered, center.transfer_key_set().unwrap());
    assert_eq!(
        (
            card.delivered.transfer.id,
            card.delivered.limit,
            card.delivered.update.id
        ),
        (1, 2, 1)
    );

    let challenge_card: Challenge = random_array(&mut rng);
    let challenge_dispenser: Challenge = random_array(&mut rng);
    let (first, authorization) = load(&mut center, &card, challenge_card, challenge_dispenser);
    assert_eq!(open_delivery(&card, &first, &authorization), card.delivered);
    // Sealed for this load only: another load's authorization does not open it.
    let mut other = authorization.clone();
    other.load_number += 1;
    assert!(TransferKeySet::open_from_load(
        &card.card_key,
        &other.challenge_card,
        &other.signed_message(),
        first.transfer_keys.as_deref().unwrap()
    )
    .is_err());

    // After a rotation, a retried request gets the very same answer (same key set under
    // the same nonce), and a new load the new generation with the limit above it.
    center.rotate_transfer_key().unwrap();
    center.rotate_update_key().unwrap();
    let (retried, _) = load(&mut center, &card, challenge_card, challenge_dispenser);
    assert_eq!(retried, first);
    let (fresh, fresh_authorization) = load(
        &mut center,
        &card,
        random_array(&mut rng),
        random_array(&mut rng),
    );
    let delivered = open_delivery(&card, &fresh, &fresh_authorization);
    assert_eq!(delivered, center.transfer_key_set().unwrap());
    assert_eq!(
        (delivered.transfer.id, delivered.limit, delivered.update.id),
        (2, 3, 2)
    );
}

#[test]
fn a_card_issued_and_loaded_through_the_dispenser_holds_the_key_set() {
    use valuecard_core::messages::transfer::{ins, TransferInfo};
    use valuecard_reader::CardReader;
    use valuecard_terminal::card_commands::{proprietary, select};
    let mut scene = Scene::new(4);
    let info = |reader: &mut Reader| -> TransferInfo {
        assert!(reader.exchange(&select()).unwrap().sw.is_success());
        let response = reader
            .exchange(&proprietary(ins::GET_TRANSFER_INFO, Vec::new()))
            .unwrap();
        assert!(response.sw.is_success(), "{}", response.sw);
        TransferInfo::decode(&response.data).unwrap()
    };
    let before = info(&mut scene.a);
    assert_eq!(
        (
            before.transfer_key_id,
            before.key_limit,
            before.update_key_id
        ),
        (1, 2, 1)
    );
    scene.center().rotate_transfer_key().unwrap();
    scene.world.load(&mut scene.a, amount(1)).unwrap();
    let after = info(&mut scene.a);
    assert_eq!(
        (after.transfer_key_id, after.key_limit, after.update_key_id),
        (2, 3, 1)
    );
    // The card keeps no key older than its selected one.
    assert_eq!(after.held_key_ids, vec![2]);
}
