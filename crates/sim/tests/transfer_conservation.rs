//! Random sequences of card-to-card transfers (seed 000) mixed with loads and purchases
//! (seed 003), with power cuts at random writes of either card during a transfer and answers
//! lost after or before the card processed them: after every pending transfer and every
//! purchase and load in doubt is settled, issued + loaded - spent equals the sum of card
//! balances, no card holds anything pending, and settling again changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use proptest::prelude::*;
use valuecard_core::messages::transfer::ins;
use valuecard_sim::{read_purse, LosingAnswer};

#[derive(Debug, Clone)]
enum Op {
    Load {
        card: usize,
        amount: u64,
    },
    Purchase {
        card: usize,
        amount: u64,
    },
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    /// A power cut at the `write`-th write from the transfer's start on the source (or
    /// destination) card, leaving half of that write when `half`.
    CutDuringTransfer {
        from: usize,
        to: usize,
        amount: u64,
        on_source: bool,
        write: u64,
        half: bool,
    },
    /// The answer to one transfer command is lost, after (`delivered`) or before the card
    /// processed it.
    LoseAnswer {
        from: usize,
        to: usize,
        amount: u64,
        instruction: u8,
        delivered: bool,
    },
    Settle {
        from: usize,
        to: usize,
    },
    /// The settlement terminal uploads its reports, in whatever state they are.
    Upload,
}

const CARDS: usize = 3;

fn pair() -> impl Strategy<Value = (usize, usize)> {
    (0..CARDS, 1..CARDS).prop_map(|(from, offset)| (from, (from + offset) % CARDS))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..CARDS, 1u64..3_000).prop_map(|(card, amount)| Op::Load { card, amount }),
        (0..CARDS, 1u64..1_500).prop_map(|(card, amount)| Op::Purchase { card, amount }),
        (pair(), 1u64..2_500).prop_map(|((from, to), amount)| Op::Transfer { from, to, amount }),
        (pair(), 1u64..2_500, any::<bool>(), 1u64..6, any::<bool>()).prop_map(
            |((from, to), amount, on_source, write, half)| Op::CutDuringTransfer {
                from,
                to,
                amount,
                on_source,
                write,
                half
            }
        ),
        (
            pair(),
            1u64..2_500,
            prop::sample::select(vec![
                ins::INITIALIZE_TRANSFER_IN,
                ins::TRANSFER_OUT,
                ins::TRANSFER_IN,
                ins::TRANSFER_COMPLETE,
            ]),
            any::<bool>()
        )
            .prop_map(
                |((from, to), amount, instruction, delivered)| Op::LoseAnswer {
                    from,
                    to,
                    amount,
                    instruction,
                    delivered
                }
            ),
        pair().prop_map(|(from, to)| Op::Settle { from, to }),
        Just(Op::Upload),
    ]
}

/// Two distinct cards of `cards`, mutably.
fn two(
    cards: &mut [(TestReader, valuecard_card::eeprom::MemoryEeprom)],
    a: usize,
    b: usize,
) -> (
    &mut (TestReader, valuecard_card::eeprom::MemoryEeprom),
    &mut (TestReader, valuecard_card::eeprom::MemoryEeprom),
) {
    assert_ne!(a, b);
    if a < b {
        let (low, high) = cards.split_at_mut(b);
        (&mut low[a], &mut high[0])
    } else {
        let (low, high) = cards.split_at_mut(a);
        (&mut high[0], &mut low[b])
    }
}

fn pending(reader: &mut TestReader) -> bool {
    use valuecard_core::messages::purse::SelectResponse;
    use valuecard_reader::CardReader;
    let response = reader
        .exchange(&valuecard_terminal::card_commands::select())
        .unwrap();
    SelectResponse::decode(&response.data)
        .unwrap()
        .transfer
        .is_some_and(|summary| summary.pending)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn value_is_conserved_with_transfers(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..30)) {
        let mut world = world(seed, 1);
        let mut cards: Vec<_> = (0..CARDS)
            .map(|index| issued_card(&mut world, &format!("card {index}"), 3_000))
            .collect();
        for op in ops {
            match op {
                Op::Load { card, amount: value } => {
                    let _ = world.load(&mut cards[card].0, amount(value));
                }
                Op::Purchase { card, amount: value } => {
                    let _ = world.terminals[0].purchase(&mut cards[card].0, amount(value));
                }
                Op::Transfer { from, to, amount: value } => {
                    let (a, b) = two(&mut cards, from, to);
                    let _ = world.transfer(&mut a.0, &mut b.0, amount(value));
                }
                Op::CutDuringTransfer { from, to, amount: value, on_source, write, half } => {
                    let (a, b) = two(&mut cards, from, to);
                    let victim = if on_source { &mut *a } else { &mut *b };
                    arm_cut(&mut victim.0, write, usize::from(half), 2);
                    let _ = world.transfer(&mut a.0, &mut b.0, amount(value));
                    for card in [a, b] {
                        if !card.0.card().unwrap().is_powered() {
                            power_up(&mut world, &mut card.0, &card.1);
                        } else {
                            arm_cut(&mut card.0, u64::MAX / 2, 0, 1);
                        }
                    }
                }
                Op::LoseAnswer { from, to, amount: value, instruction, delivered } => {
                    let (a, b) = two(&mut cards, from, to);
                    if matches!(instruction, ins::INITIALIZE_TRANSFER_IN | ins::TRANSFER_IN) {
                        let mut lossy = LosingAnswer { inner: &mut b.0, ins: instruction, delivered };
                        let _ = world.transfer(&mut a.0, &mut lossy, amount(value));
                    } else {
                        let mut lossy = LosingAnswer { inner: &mut a.0, ins: instruction, delivered };
                        let _ = world.transfer(&mut lossy, &mut b.0, amount(value));
                    }
                }
                Op::Settle { from, to } => {
                    let (a, b) = two(&mut cards, from, to);
                    let _ = world.settle_transfer(&mut a.0, &mut b.0);
                }
                Op::Upload => {
                    let receipt = world.upload_transfers().unwrap();
                    prop_assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
                }
            }
        }
        // Every pair is presented to the settlement terminal: pending transfers settle with
        // their destination, and completions whose answer was lost are noted.
        for from in 0..CARDS {
            for to in 0..CARDS {
                if from != to {
                    let (a, b) = two(&mut cards, from, to);
                    {
                        match world.settle_transfer(&mut a.0, &mut b.0) {
                            Ok(_) | Err(valuecard_sim::WorldError::Terminal(
                                valuecard_terminal::TerminalError::TransferPendingElsewhere { .. },
                            )) => {}
                            Err(error) => panic!("settling {from} -> {to}: {error}"),
                        }
                    }
                }
            }
        }
        let mut balances = Vec::new();
        for (reader, _) in &mut cards {
            prop_assert!(!pending(reader), "a transfer is still pending");
            let status = read_purse(reader).unwrap();
            world.settle_card(reader, status.card_id).unwrap();
            balances.push(read_purse(reader).unwrap().balance);
        }
        // Settling again changes nothing.
        for from in 0..CARDS {
            let to = (from + 1) % CARDS;
            let (a, b) = two(&mut cards, from, to);
            prop_assert_eq!(world.settle_transfer(&mut a.0, &mut b.0).unwrap(), None);
        }
        let reconciliation = world.reconcile(&balances).unwrap();
        prop_assert!(reconciliation.conserved, "{:?}", reconciliation);
        // Every report the settlement terminal made is taken by the center, whatever state
        // it was uploaded in before.
        let receipt = world.upload_transfers().unwrap();
        prop_assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    }
}
