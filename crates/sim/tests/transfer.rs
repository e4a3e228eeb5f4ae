//! Card-to-card transfer through the settlement terminal (seed 000), end to end in one
//! process: one purse balance spent at terminals and passed on card to card, and every lost
//! answer settled exactly once by a later session with the same two cards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::ChaCha20Rng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::messages::transfer::ins;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::InProcessReader;
use valuecard_sim::WorldError;
use valuecard_sim::{read_purse, LosingAnswer, Storage, World};
use valuecard_terminal::transfer::RecoveryOutcome;
use valuecard_terminal::TerminalError;

type Reader = InProcessReader<MemoryEeprom, ChaCha20Rng>;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

/// A world with two issued cards holding `a` and `b`.
fn two_cards(a: u64, b: u64) -> (World, Reader, Reader) {
    let mut world =
        World::create(Storage::Memory, 1, Date::from_ymd(2026, 11, 30).unwrap()).unwrap();
    let card_a = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    let card_b = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    let mut reader_a = InProcessReader::with_card("A", card_a);
    let mut reader_b = InProcessReader::with_card("B", card_b);
    world.issue(&mut reader_a, amount(a)).unwrap();
    world.issue(&mut reader_b, amount(b)).unwrap();
    (world, reader_a, reader_b)
}

fn balance(reader: &mut Reader) -> u64 {
    read_purse(reader).unwrap().balance.minor()
}

#[test]
fn value_moves_card_to_card_and_is_spent_at_a_terminal() {
    let (mut world, mut a, mut b) = two_cards(10_000, 500);
    let receipt = world.transfer(&mut a, &mut b, amount(2_500)).unwrap();
    assert_eq!(receipt.source_balance_after, amount(7_500));
    assert_eq!(receipt.destination_balance_after, amount(3_000));
    assert_eq!(
        receipt.command_pairs, 4,
        "four command pairs after the SELECTs"
    );
    assert_eq!(receipt.key_update, None);
    assert_eq!((balance(&mut a), balance(&mut b)), (7_500, 3_000));
    // The received value is spent at a payment terminal, which checks the settlement
    // terminal's record as the card's last writer ...
    world.terminals[0].purchase(&mut b, amount(2_900)).unwrap();
    assert_eq!(balance(&mut b), 100);
    // ... and the source, whose last writer is the settlement terminal too.
    world.terminals[0].purchase(&mut a, amount(500)).unwrap();
    // Value passes on: back from A to B after both were used at a terminal.
    world.transfer(&mut a, &mut b, amount(7_000)).unwrap();
    assert_eq!((balance(&mut a), balance(&mut b)), (0, 7_100));
    // A transfer beyond what the source holds is refused and changes nothing.
    let refused = world.transfer(&mut a, &mut b, amount(1)).unwrap_err();
    assert!(
        matches!(
            refused,
            WorldError::Terminal(TerminalError::InsufficientBalance { .. })
        ),
        "{refused}"
    );
    assert_eq!((balance(&mut a), balance(&mut b)), (0, 7_100));
}

/// Loses the answer to `instruction` (after the card processed it when `delivered`), then
/// settles with a fresh session and checks that exactly `moved` went from A to B.
fn lose_and_settle(instruction: u8, delivered: bool, moved: u64) {
    let (mut world, mut a, mut b) = two_cards(10_000, 0);
    let result = if instruction == ins::TRANSFER_IN {
        let mut to = LosingAnswer {
            inner: &mut b,
            ins: instruction,
            delivered,
        };
        world.transfer(&mut a, &mut to, amount(4_000))
    } else {
        let mut from = LosingAnswer {
            inner: &mut a,
            ins: instruction,
            delivered,
        };
        world.transfer(&mut from, &mut b, amount(4_000))
    };
    assert!(result.is_err(), "the lost answer must surface");
    // Until it is settled, the reserved (or already sent) value cannot be spent from A.
    if delivered || instruction != ins::TRANSFER_OUT {
        let spend = world.terminals[0].purchase(&mut a, amount(10_000));
        assert!(spend.is_err(), "reserved value was spendable");
    }
    let settled = world.settle_transfer(&mut a, &mut b).unwrap();
    match (moved, settled) {
        (0, None) | (0, Some(RecoveryOutcome::Undone { .. })) => {}
        (4_000, Some(RecoveryOutcome::Completed { .. })) => {}
        (_, other) => panic!("settlement {other:?} for a transfer that moved {moved}"),
    }
    assert_eq!(
        (balance(&mut a), balance(&mut b)),
        (10_000 - moved, moved),
        "lost {instruction:02X} (delivered: {delivered})"
    );
    // Settling again changes nothing, and the cards are free for the next transfer.
    assert_eq!(world.settle_transfer(&mut a, &mut b).unwrap(), None);
    world.transfer(&mut a, &mut b, amount(1_000)).unwrap();
    assert_eq!(
        (balance(&mut a), balance(&mut b)),
        (9_000 - moved, moved + 1_000)
    );
}

#[test]
fn a_lost_transfer_out_is_undone() {
    lose_and_settle(ins::TRANSFER_OUT, true, 0);
    lose_and_settle(ins::TRANSFER_OUT, false, 0);
}

#[test]
fn a_lost_transfer_in_is_completed_or_undone_by_what_the_destination_did() {
    lose_and_settle(ins::TRANSFER_IN, true, 4_000);
    lose_and_settle(ins::TRANSFER_IN, false, 0);
}

#[test]
fn a_lost_completion_is_completed() {
    lose_and_settle(ins::TRANSFER_COMPLETE, true, 4_000);
    lose_and_settle(ins::TRANSFER_COMPLETE, false, 4_000);
}

#[test]
fn rotations_reach_cards_by_load_and_card_to_card_by_both_paths() {
    use valuecard_terminal::transfer::KeyUpdatePath;
    let mut world =
        World::create(Storage::Memory, 1, Date::from_ymd(2026, 11, 30).unwrap()).unwrap();
    let mut readers: Vec<Reader> = (0..4)
        .map(|index| {
            let card = world
                .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
                .unwrap();
            let mut reader = InProcessReader::with_card(format!("card {index}"), card);
            world.issue(&mut reader, amount(5_000)).unwrap();
            reader
        })
        .collect();
    let show = valuecard_sim::transfer_scenarios::card_to_card(&mut world, &mut readers).unwrap();
    assert_eq!(show.transfers.len(), 3);
    let paths: Vec<_> = show.key_updates.iter().map(|u| u.path).collect();
    assert_eq!(
        paths,
        vec![KeyUpdatePath::Symmetric, KeyUpdatePath::PublicKey]
    );
    assert!(show.transfers.iter().all(|t| t.command_pairs >= 4));
    assert_eq!(show.transfers[0].command_pairs, 4);
    // 5,000 each, +10.00 loads to cards 3 and 1, 25.00 spent by card 2.
    let balances: Vec<u64> = readers.iter_mut().map(balance).collect();
    assert_eq!(balances.iter().sum::<u64>(), 20_000 + 2_000 - 2_500);
    assert_eq!(
        balances,
        vec![
            5_000 - 2_000 + 1_000 - 750,
            5_000 + 2_000 - 2_500 + 750,
            5_000 + 1_000 - 500,
            5_500
        ]
    );
    let reconciliation = world
        .reconcile(&balances.iter().map(|b| amount(*b)).collect::<Vec<_>>())
        .unwrap();
    assert!(reconciliation.conserved, "{reconciliation:?}");
    assert_eq!(reconciliation.transfers_in_flight, 0);
}

/// The owner of a chip rolls its memory back after sending value (the card image from
/// before TRANSFER OUT written back): the value now sits on both cards. The card cannot
/// prevent it; the center sees the same card state consumed by the transfer and by a later
/// purchase, lists the card as cloned, and every terminal refuses it after its list update.
#[test]
fn a_chip_rolled_back_after_sending_is_detected_as_a_clone() {
    use valuecard_card::Card;
    use valuecard_core::messages::center::ListReason;
    let mut world =
        World::create(Storage::Memory, 1, Date::from_ymd(2026, 11, 30).unwrap()).unwrap();
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = world.manufacture_card(memory.clone()).unwrap();
    let mut a = InProcessReader::with_card("A", card);
    let card_b = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    let mut b = InProcessReader::with_card("B", card_b);
    let a_id = world.issue(&mut a, amount(5_000)).unwrap();
    world.issue(&mut b, amount(0)).unwrap();
    let before = memory.snapshot();
    world.transfer(&mut a, &mut b, amount(4_000)).unwrap();
    // The attacker writes the old image back: A holds 50.00 again, B holds 40.00.
    a.remove();
    memory.restore(&before);
    a.insert(Card::open(memory.clone(), world.fork_rng()).unwrap());
    assert_eq!(balance(&mut a), 5_000);
    world.terminals[0].purchase(&mut a, amount(4_500)).unwrap();
    let transfers = world.upload_transfers().unwrap();
    assert_eq!(transfers.refused, vec![]);
    let (clones, _) = valuecard_sim::scenarios::sync_all(&mut world).unwrap();
    let mut detected = clones;
    detected.extend(transfers.clones_detected);
    assert!(
        detected.contains(&a_id),
        "the rolled-back card was not detected: {detected:?}"
    );
    // Listed everywhere: the terminal and the settlement terminal refuse it.
    let refused = world.terminals[0].purchase(&mut a, amount(1));
    assert!(
        matches!(
            refused,
            Err(TerminalError::CardListed {
                reason: ListReason::Cloned,
                ..
            })
        ),
        "{refused:?}"
    );
}

/// Claims 8-9 through the settlement terminal: a card that already holds the newer
/// generation (delivered ahead of its selection, here written into its memory as an issuer
/// pre-distributing keys would) only moves its selection, by the selection form.
#[test]
fn a_card_holding_the_newer_generation_moves_its_selection() {
    use valuecard_card::state::PersistentState;
    use valuecard_card::Card;
    use valuecard_terminal::transfer::KeyUpdatePath;
    let (mut world, mut a, mut b) = two_cards(3_000, 1_000);
    world.center.rotate_transfer_key().unwrap();
    let newer = world.center.transfer_key_set().unwrap();
    // B keeps generation 1 selected and holds generation 2 beside it.
    let mut state = b.card().unwrap().state().clone();
    let PersistentState::Personalized(purse) = &mut state else {
        panic!("B is personalized")
    };
    purse.transfer.keys.push(newer.transfer.clone());
    purse.transfer.limit = newer.limit;
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    b.remove();
    b.insert(Card::with_state(memory, state, world.fork_rng()).unwrap());
    // A takes generation 2 with a load.
    world.load(&mut a, amount(100)).unwrap();
    let receipt = world.transfer(&mut a, &mut b, amount(1_000)).unwrap();
    let update = receipt.key_update.expect("B had to move to generation 2");
    assert_eq!(update.path, KeyUpdatePath::Selection);
    assert_eq!((update.from_key_id, update.to_key_id), (1, 2));
    assert_eq!((balance(&mut a), balance(&mut b)), (2_100, 2_000));
}

/// A report uploaded while its transfer was still in flight goes out again, under a new
/// sequence, once the transfer settles: the center keeps what a terminal reported under a
/// sequence and merges the later report into the same transfer.
#[test]
fn a_report_uploaded_in_flight_is_uploaded_again_when_it_settles() {
    let (mut world, mut a, mut b) = two_cards(10_000, 0);
    let lost = {
        let mut from = LosingAnswer {
            inner: &mut a,
            ins: ins::TRANSFER_COMPLETE,
            delivered: false,
        };
        world.transfer(&mut from, &mut b, amount(4_000))
    };
    assert!(lost.is_err());
    let first = world.upload_transfers().unwrap();
    assert_eq!((first.stored, first.refused.len()), (1, 0), "{first:?}");
    let totals = world.center.transfer_totals().unwrap();
    assert_eq!((totals.in_flight, totals.completed), (4_000, 0));
    world.settle_transfer(&mut a, &mut b).unwrap();
    let second = world.upload_transfers().unwrap();
    assert_eq!((second.stored, second.refused.len()), (1, 0), "{second:?}");
    let totals = world.center.transfer_totals().unwrap();
    assert_eq!(
        (totals.in_flight, totals.completed, totals.completed_count),
        (0, 4_000, 1)
    );
    // Nothing more to send.
    let third = world.upload_transfers().unwrap();
    assert_eq!((third.stored, third.duplicates), (0, 0));
}
