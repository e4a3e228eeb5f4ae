//! Power cuts at every write of an UPDATE BINARY of the memory card: after each, the card
//! reopens with the whole old or the whole new memory (no half-written area), and its
//! counter never goes back up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::rand_core::{RngCore, SeedableRng};
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::memcard::{Memory, MemoryCard};
use valuecard_card::CardError;
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{map, COUNTER_START};
use valuecard_core::StatusWord;

const ID: CardId = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x01]);
const TORN: [(usize, usize); 4] = [(0, 1), (1, 3), (1, 2), (1, 1)];

fn update(address: u16, data: &[u8]) -> Vec<u8> {
    let [p1, p2] = address.to_be_bytes();
    let mut apdu = vec![0xFF, 0xD6, p1, p2, data.len() as u8];
    apdu.extend_from_slice(data);
    apdu
}

/// A card on `memory` that has already taken one value write and a signature.
fn used_card(memory: &MemoryEeprom) -> Memory {
    let mut card = MemoryCard::manufacture(memory.clone(), ID).unwrap();
    for apdu in [
        update(map::VALUE_AREA, &[0x01; 13]),
        update(map::SIGNATURE_AREA, &[0x11; 64]),
    ] {
        assert_eq!(card.process(&apdu).unwrap().sw, StatusWord::SUCCESS);
    }
    card.memory().clone()
}

/// How many physical writes `apdu` makes on a card in the state `used_card` leaves.
fn writes_of(apdu: &[u8]) -> u64 {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    used_card(&memory);
    let mut card = MemoryCard::open(FaultInjectingEeprom::new(memory)).unwrap();
    assert_eq!(card.process(apdu).unwrap().sw, StatusWord::SUCCESS);
    card.eeprom_mut().writes()
}

#[test]
fn a_cut_at_every_write_of_every_kind_of_update_leaves_old_or_new() {
    let updates = [
        (
            "value area",
            update(map::VALUE_AREA, &[0x01, 0x00, 0x00, 0x51, 0x10]),
        ),
        (
            "value and signature areas",
            update(map::VALUE_AREA + 40, &[0x22; 40]),
        ),
        ("signature area", update(map::SIGNATURE_AREA, &[0x33; 64])),
        (
            "certificate area",
            update(map::CERTIFICATE_AREA + 100, &[0x44; 255]),
        ),
    ];
    for (name, apdu) in updates {
        let writes = writes_of(&apdu);
        assert!(writes >= 2, "{name}: a commit is more than one write");
        let mut saw_old = false;
        let mut saw_new = false;
        for cut in 1..=writes {
            for (numerator, denominator) in TORN {
                let memory = MemoryEeprom::new(EEPROM_SIZE);
                let old = used_card(&memory);
                let expected_new = old
                    .written(
                        usize::from(u16::from_be_bytes([apdu[2], apdu[3]])),
                        &apdu[5..],
                    )
                    .unwrap();
                let mut eeprom = FaultInjectingEeprom::new(memory.clone());
                eeprom.cut_power_at(cut, numerator, denominator);
                let mut card = MemoryCard::open(eeprom).unwrap();
                let outcome = card.process(&apdu);
                assert!(
                    matches!(outcome, Err(CardError::PowerLost)),
                    "{name}, cut {cut}: the card answered {outcome:?} although its power was cut"
                );
                assert!(!card.is_powered());
                assert!(matches!(card.process(&apdu), Err(CardError::PowerLost)));
                drop(card);

                let reopened = MemoryCard::open(memory).unwrap();
                let after = reopened.memory();
                if after == &old {
                    saw_old = true;
                } else if after == &expected_new {
                    saw_new = true;
                } else {
                    panic!("{name}, cut {cut} ({numerator}/{denominator}): a mixed memory");
                }
                assert!(
                    reopened.counter() <= old.counter(),
                    "{name}: the counter went up"
                );
                assert_eq!(reopened.card_id(), ID);
            }
        }
        assert!(saw_old, "{name}: no cut left the old memory");
        assert!(
            saw_new,
            "{name}: no cut left the new memory (the erase after the commit)"
        );
    }
}

/// Random writes anywhere with power cut at random writes: the counter seen at each
/// power-up never rises, and the memory is always one the card answered or was about to.
#[test]
fn the_counter_never_goes_back_over_random_writes_and_cuts() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0x001);
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    MemoryCard::manufacture(memory.clone(), ID).unwrap();
    let mut known = MemoryCard::open(memory.clone()).unwrap().memory().clone();
    let mut value_writes_committed = 0u32;
    for round in 0..400 {
        let address = (rng.next_u32() as usize % (map::MEMORY_LEN - map::VALUE_AREA as usize))
            + map::VALUE_AREA as usize;
        let room = map::MEMORY_LEN - address;
        let len = 1 + rng.next_u32() as usize % room.min(255);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let apdu = update(address as u16, &data);
        let expected = known.written(address, &data).unwrap();

        let mut eeprom = FaultInjectingEeprom::new(memory.clone());
        let cut = rng.next_u32() % 4 == 0;
        if cut {
            eeprom.cut_power_at(1 + u64::from(rng.next_u32() % 4), 1, 2);
        }
        let mut card = MemoryCard::open(eeprom).unwrap();
        assert_eq!(
            card.memory(),
            &known,
            "round {round}: the power-up shows the last state"
        );
        match card.process(&apdu) {
            Ok(response) => {
                assert_eq!(response.sw, StatusWord::SUCCESS, "round {round}");
                assert_eq!(card.memory(), &expected);
            }
            Err(CardError::PowerLost) => assert!(cut),
            Err(other) => panic!("round {round}: {other}"),
        }
        drop(card);
        let after = MemoryCard::open(memory.clone()).unwrap().memory().clone();
        assert!(
            after == known || after == expected,
            "round {round}: mixed memory"
        );
        assert!(
            after.counter() <= known.counter(),
            "round {round}: the counter went up"
        );
        if after.counter() < known.counter() {
            value_writes_committed += 1;
        }
        known = after;
    }
    assert_eq!(known.counter(), COUNTER_START - value_writes_committed);
    assert!(value_writes_committed > 0);
}
