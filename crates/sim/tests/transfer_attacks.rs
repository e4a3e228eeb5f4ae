//! Every attack on card-to-card transfer the seed's system must refuse, performed against
//! real cards: each refused with its status word, and no balance, counter or key changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::ChaCha20Rng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::messages::transfer::KeyUpdateMode;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::InProcessReader;
use valuecard_sim::attacks::AttackOutcome;
use valuecard_sim::transfer_attacks::{self, Spoil};
use valuecard_sim::{read_purse, Storage, World};

type Reader = InProcessReader<MemoryEeprom, ChaCha20Rng>;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn world_with_cards(balances: &[u64]) -> (World, Vec<Reader>) {
    let mut world =
        World::create(Storage::Memory, 1, Date::from_ymd(2026, 11, 30).unwrap()).unwrap();
    let mut readers = Vec::new();
    for (index, balance) in balances.iter().enumerate() {
        let card = world
            .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
            .unwrap();
        let mut reader = InProcessReader::with_card(format!("card {index}"), card);
        world.issue(&mut reader, amount(*balance)).unwrap();
        readers.push(reader);
    }
    (world, readers)
}

fn assert_refused(outcome: AttackOutcome) {
    assert!(outcome.refused, "{}: {}", outcome.name, outcome.detail);
}

fn total(readers: &mut [Reader]) -> u64 {
    readers
        .iter_mut()
        .map(|r| read_purse(r).unwrap().balance.minor())
        .sum()
}

#[test]
fn value_message_attacks_are_refused() {
    let (mut world, mut cards) = world_with_cards(&[5_000, 1_000, 0]);
    let [a, b, c] = cards.as_mut_slice() else {
        unreachable!()
    };
    assert_refused(transfer_attacks::replayed_value_message(&mut world, a, b).unwrap());
    assert_refused(transfer_attacks::value_message_to_third_card(&mut world, a, b, c).unwrap());
    assert_refused(transfer_attacks::altered_value_message(&mut world, a, b, false).unwrap());
    assert_refused(transfer_attacks::altered_value_message(&mut world, a, b, true).unwrap());
    assert_refused(transfer_attacks::transfer_over_ceiling(&mut world, a, b).unwrap());
    // The only value that moved is the one genuine transfer the replay attack started with,
    // and no card holds anything pending.
    assert_eq!(total(&mut cards), 6_000);
    let a_balance = read_purse(&mut cards[0]).unwrap().balance.minor();
    assert_eq!(a_balance, 4_700);
    let (a, b) = cards.split_at_mut(1);
    world.transfer(&mut a[0], &mut b[0], amount(700)).unwrap();
}

#[test]
fn key_update_attacks_are_refused() {
    let (_world, mut cards) = world_with_cards(&[100, 100]);
    let (victim, peer) = cards.split_at_mut(1);
    let (victim, peer) = (&mut victim[0], &mut peer[0]);
    // Both cards hold generation 1: an export of it is not newer.
    assert_refused(
        transfer_attacks::key_update_attack(
            "update to an identifier that is not newer",
            KeyUpdateMode::Symmetric,
            victim,
            peer,
            Spoil::Nothing,
            StatusWord::CONDITIONS_NOT_SATISFIED,
        )
        .unwrap(),
    );
    assert_refused(
        transfer_attacks::key_update_attack(
            "update with a wrong random number",
            KeyUpdateMode::Symmetric,
            victim,
            peer,
            Spoil::WrongRandom,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        )
        .unwrap(),
    );
    assert_refused(
        transfer_attacks::key_update_attack(
            "public-key update with a forged signature",
            KeyUpdateMode::PublicKey,
            victim,
            peer,
            Spoil::ForgedSignature,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        )
        .unwrap(),
    );
    assert_refused(
        transfer_attacks::key_update_attack(
            "public-key update with a wrong random number",
            KeyUpdateMode::PublicKey,
            victim,
            peer,
            Spoil::WrongRandom,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        )
        .unwrap(),
    );
    assert_refused(transfer_attacks::forged_peer_certificate(victim).unwrap());
}

#[test]
fn every_attack_of_the_demo_is_refused_in_its_own_world() {
    let outcomes =
        valuecard_sim::transfer_scenarios::attacks(Date::from_ymd(2026, 11, 30).unwrap()).unwrap();
    assert_eq!(outcomes.len(), 11);
    for outcome in outcomes {
        assert_refused(outcome);
    }
}
