//! Random sequences of loads, purchases, power cuts inside them, and malformed APDUs: after
//! everything in doubt is settled, issued + loaded - spent equals the sum of card balances,
//! and no malformed APDU ever changes a balance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use proptest::prelude::*;
use valuecard_core::messages::purse::ins;
use valuecard_reader::CardReader;
use valuecard_sim::read_purse;

#[derive(Debug, Clone)]
enum Op {
    Load {
        card: usize,
        amount: u64,
    },
    Purchase {
        terminal: usize,
        card: usize,
        amount: u64,
    },
    CutDuringLoad {
        card: usize,
        amount: u64,
        write: u64,
        half: bool,
    },
    CutDuringPurchase {
        terminal: usize,
        card: usize,
        amount: u64,
        write: u64,
        half: bool,
    },
    BadApdu {
        card: usize,
        bytes: Vec<u8>,
    },
    Settle {
        card: usize,
    },
}

const CARDS: usize = 3;
const TERMINALS: usize = 2;

fn bad_apdu() -> impl Strategy<Value = Vec<u8>> {
    let purse_ins = prop::sample::select(vec![
        ins::READ_PURSE,
        ins::INITIALIZE_PURCHASE,
        ins::DEBIT,
        ins::INITIALIZE_LOAD,
        ins::CREDIT,
        ins::GET_LAST_TRANSACTION,
        ins::PERSONALIZE,
        ins::GENERATE_KEY_PAIR,
        0xFF,
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        (purse_ins, prop::collection::vec(any::<u8>(), 1..255)).prop_map(|(ins, data)| {
            let mut apdu = vec![0x80, ins, 0x00, 0x00, data.len() as u8];
            apdu.extend(data);
            apdu.push(0x00);
            apdu
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let card = 0..CARDS;
    let terminal = 0..TERMINALS;
    prop_oneof![
        (card.clone(), 1u64..3_000).prop_map(|(card, amount)| Op::Load { card, amount }),
        (terminal.clone(), card.clone(), 1u64..2_000).prop_map(|(terminal, card, amount)| {
            Op::Purchase {
                terminal,
                card,
                amount,
            }
        }),
        (card.clone(), 1u64..3_000, 1u64..12, any::<bool>()).prop_map(
            |(card, amount, write, half)| Op::CutDuringLoad {
                card,
                amount,
                write,
                half
            }
        ),
        (terminal, card.clone(), 1u64..2_000, 1u64..12, any::<bool>()).prop_map(
            |(terminal, card, amount, write, half)| Op::CutDuringPurchase {
                terminal,
                card,
                amount,
                write,
                half
            }
        ),
        (card.clone(), bad_apdu()).prop_map(|(card, bytes)| Op::BadApdu { card, bytes }),
        card.prop_map(|card| Op::Settle { card }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn value_is_conserved(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..30)) {
        let mut world = world(seed, TERMINALS);
        let mut cards: Vec<_> = (0..CARDS).map(|index| issued_card(&mut world, &format!("card {index}"), 2_000)).collect();
        for op in ops {
            match op {
                Op::Load { card, amount: value } => {
                    let _ = world.load(&mut cards[card].0, amount(value));
                }
                Op::Purchase { terminal, card, amount: value } => {
                    let _ = world.terminals[terminal].purchase(&mut cards[card].0, amount(value));
                }
                Op::CutDuringLoad { card, amount: value, write, half } => {
                    let (reader, memory) = &mut cards[card];
                    arm_cut(reader, write, usize::from(half), 2);
                    let _ = world.load(reader, amount(value));
                    if !reader.card().unwrap().is_powered() {
                        power_up(&mut world, reader, memory);
                    } else {
                        arm_cut(reader, u64::MAX / 2, 0, 1);
                    }
                }
                Op::CutDuringPurchase { terminal, card, amount: value, write, half } => {
                    let (reader, memory) = &mut cards[card];
                    arm_cut(reader, write, usize::from(half), 2);
                    let _ = world.terminals[terminal].purchase(reader, amount(value));
                    if !reader.card().unwrap().is_powered() {
                        power_up(&mut world, reader, memory);
                    } else {
                        arm_cut(reader, u64::MAX / 2, 0, 1);
                    }
                }
                Op::BadApdu { card, bytes } => {
                    let reader = &mut cards[card].0;
                    let before = read_purse(reader).unwrap();
                    let response = reader.transmit_raw(&bytes).unwrap();
                    prop_assert!(response.len() >= 2);
                    let after = read_purse(reader).unwrap();
                    prop_assert_eq!((before.balance, before.counter), (after.balance, after.counter));
                }
                Op::Settle { card } => {
                    let status = read_purse(&mut cards[card].0).unwrap();
                    world.settle_card(&mut cards[card].0, status.card_id).unwrap();
                }
            }
        }
        let mut balances = Vec::new();
        for (reader, _) in &mut cards {
            let status = read_purse(reader).unwrap();
            world.settle_card(reader, status.card_id).unwrap();
            balances.push(read_purse(reader).unwrap().balance);
        }
        let reconciliation = world.reconcile(&balances).unwrap();
        prop_assert_eq!(reconciliation.loads_in_flight, 0);
        prop_assert_eq!(reconciliation.purchases_in_doubt, 0);
        prop_assert!(reconciliation.conserved, "{:?}", reconciliation);
        prop_assert_eq!(reconciliation.issued, 2_000 * CARDS as u64);
    }
}
