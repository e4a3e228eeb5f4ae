//! Properties over many runs: any one byte of a valid card changed is refused without a
//! write; and value is conserved through any sequence of charges and payments at three
//! machines with power cut at any write, once each machine has seen the card again.

use proptest::prelude::*;
use valuecard_core::messages::memcard::{map, WriteKind};
use valuecard_sam::ValueFormat;

use super::testing::Cut;
use super::tests::{amount, balance, card_of, logged_done, world};
use crate::store::{MemcardLog, WriteStatus};

#[derive(Debug, Clone)]
enum Op {
    Charge { minor: u64, sealed: bool },
    Pay { second: bool, minor: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..5_000, any::<bool>()).prop_map(|(minor, sealed)| Op::Charge { minor, sealed }),
        (any::<bool>(), 1u64..3_000).prop_map(|(second, minor)| Op::Pay { second, minor }),
    ]
}

fn cut() -> impl Strategy<Value = Option<(usize, Cut)>> {
    prop::option::weighted(
        0.5,
        (0usize..5, prop_oneof![Just(Cut::Before), Just(Cut::After)]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn one_byte_changed_anywhere_is_refused_and_nothing_is_written(
        at in 0usize..map::MEMORY_LEN,
        flip in 1u8..=255,
    ) {
        // Bytes 0x0C-0x0F lie between the counter and the value area: no area holds them and
        // nothing reads them.
        let unused = map::COUNTER as usize + map::COUNTER_LEN..map::VALUE_AREA as usize;
        prop_assume!(!unused.contains(&at));
        let mut w = world();
        let mut card = card_of(&mut w, 1, 3_000);
        let mut image = card.memory().to_vec();
        image[at] ^= flip;
        let mut changed = super::testing::MemoryCardDouble::from_memory(&image);
        prop_assert!(w.payer.pay(&mut changed, amount(1), None).is_err());
        prop_assert_eq!(changed.memory(), &image[..]);
        prop_assert_eq!(changed.writes, 0);
        // The card itself still pays.
        prop_assert!(w.payer.pay(&mut card, amount(1), None).is_ok());
    }

    #[test]
    fn value_is_conserved_through_cuts_at_any_write(
        steps in prop::collection::vec((op(), cut()), 1..10),
    ) {
        let mut w = world();
        let mut card = super::tests::card(1);
        for (op, cut) in &steps {
            card.clear_cut();
            if let Some((at, cut)) = cut {
                card.cut_at_write(*at, *cut);
            }
            // Refusals are part of the game (a torn card elsewhere, a balance too low).
            let _ = match op {
                Op::Charge { minor, sealed } => w.charger.charge(
                    &mut card,
                    amount(*minor),
                    if *sealed { ValueFormat::Sealed } else { ValueFormat::Plain },
                    None,
                ),
                Op::Pay { second: false, minor } => w.payer.pay(&mut card, amount(*minor), None),
                Op::Pay { second: true, minor } => w.payer_2.pay(&mut card, amount(*minor), None),
            };
        }
        card.clear_cut();
        // Each machine sees the card again and settles what it left unfinished.
        for _ in 0..2 {
            let _ = w.charger.machine_mut().present(&mut card, None);
            let _ = w.payer.machine_mut().present(&mut card, None);
            let _ = w.payer_2.machine_mut().present(&mut card, None);
        }
        let on_card = balance(&w.payer, &mut card).expect("the card verifies once settled");
        let logs = [
            w.charger.machine().store(),
            w.payer.machine().store(),
            w.payer_2.machine().store(),
        ];
        let all: Vec<_> = logs.iter().flat_map(|log| log.writes().unwrap()).collect();
        let current = super::PresentedCard::read(&mut card).unwrap();
        // A write still pending landed if the card shows it or another write started from
        // it (the answer to its signature was lost, then the card moved on): the center
        // tells the two apart the same way from the uploaded records.
        let landed = |open: &crate::store::LoggedWrite| {
            current.shows(open.record.written.counter, &open.record.written.value_area)
                || all.iter().any(|other| other.record.previous.as_ref() == Some(&open.record.written))
        };
        let signed = |record: &valuecard_core::messages::memcard::WriteRecord| {
            let amount = record.amount().unwrap().minor() as i64;
            if record.kind == WriteKind::Charge { amount } else { -amount }
        };
        let done: i64 = logs.iter().map(|log| logged_done(*log)).sum();
        let landed_pending: i64 = all
            .iter()
            .filter(|w| w.status == WriteStatus::Pending && landed(w))
            .map(|w| signed(&w.record))
            .sum();
        prop_assert_eq!(on_card.minor() as i64, done + landed_pending);
        // The float paid for every charge logged, done or still pending (never voided).
        let charges = w.charger.machine().store().writes().unwrap();
        prop_assert!(charges.iter().all(|c| c.status != WriteStatus::Voided));
        let charged: u64 = charges.iter().map(|c| c.record.amount().unwrap().minor()).sum();
        prop_assert_eq!(w.charger.float().minor(), 100_000 - charged);
        // A voided write never reached the card.
        for voided in all.iter().filter(|w| w.status == WriteStatus::Voided) {
            prop_assert!(!landed(voided));
        }
    }
}
