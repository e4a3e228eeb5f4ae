//! Random runs over three cards: transfers between any two (with answers lost, cards pulled
//! between the halves, and power cut at a random write of either card), recoveries, key
//! updates and loads that deliver keys. After every step the value the cards hold is what
//! they started with plus what was loaded, counting a reserved amount once (on the source
//! until the destination applied it), and no transfer is applied twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use std::collections::HashSet;

use proptest::prelude::*;
use transfer_common::*;
use valuecard_card::testing;
use valuecard_core::apdu::Response;
use valuecard_core::ids::CardId;
use valuecard_core::messages::transfer::{
    ins, ProofStatus, TransferComplete, TransferInOffer, TransferOutOffer, TransferProof,
    TransferStatusQuery,
};
use valuecard_core::StatusWord;

const CARDS: usize = 3;
const START_BALANCE: u64 = 1_000;
const LOAD_AMOUNT: u64 = 100;

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// The destination is pulled before TRANSFER IN.
    PullDestinationBeforeIn,
    /// The destination applied the value; its answer is lost.
    LoseInAnswer,
    /// The source is pulled before TRANSFER COMPLETE.
    PullSourceBeforeComplete,
    /// Power is cut at write `write` from TRANSFER OUT on (source) or TRANSFER IN on
    /// (destination), torn `tear` / 2.
    Cut {
        on_source: bool,
        write: u64,
        tear: usize,
    },
}

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
        fault: Fault,
    },
    Recover {
        card: usize,
    },
    KeyUpdate {
        older: usize,
        newer: usize,
        form: u8,
    },
    Load {
        card: usize,
        key_id: u32,
    },
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => Just(Fault::None),
        1 => Just(Fault::PullDestinationBeforeIn),
        1 => Just(Fault::LoseInAnswer),
        1 => Just(Fault::PullSourceBeforeComplete),
        2 => (any::<bool>(), 1u64..12, 0usize..=2).prop_map(|(on_source, write, tear)| {
            Fault::Cut { on_source, write, tear }
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CARDS, 1..CARDS, 1u64..600, fault()).prop_map(|(from, step, amount, fault)| {
            Op::Transfer { from, to: (from + step) % CARDS, amount, fault }
        }),
        3 => (0..CARDS).prop_map(|card| Op::Recover { card }),
        1 => (0..CARDS, 1..CARDS, 0u8..=1).prop_map(|(older, step, form)| {
            Op::KeyUpdate { older, newer: (older + step) % CARDS, form }
        }),
        1 => (0..CARDS, 1u32..=4).prop_map(|(card, key_id)| Op::Load { card, key_id }),
    ]
}

struct Run {
    cards: Vec<Device>,
    terminal: Terminal,
    /// The value the cards must hold: the start plus every load.
    expected: u64,
    /// Every transfer ever seen applied, by (source, source challenge): receipts leave the
    /// ring, but what was applied stays applied.
    applied: HashSet<(CardId, [u8; 16])>,
}

/// Two distinct cards, mutably.
fn two(cards: &mut [Device], first: usize, second: usize) -> (&mut Device, &mut Device) {
    assert_ne!(first, second);
    if first < second {
        let (low, high) = cards.split_at_mut(second);
        (&mut low[first], &mut high[0])
    } else {
        let (low, high) = cards.split_at_mut(first);
        (&mut high[0], &mut low[second])
    }
}

/// Brings the card with the older transfer key up to the other's: under the update key if
/// they share one, else under their certified key pairs.
fn align_keys(first: &mut Device, second: &mut Device) {
    let (older, newer) = match first
        .purse()
        .transfer
        .selected
        .cmp(&second.purse().transfer.selected)
    {
        std::cmp::Ordering::Less => (first, second),
        std::cmp::Ordering::Greater => (second, first),
        std::cmp::Ordering::Equal => return,
    };
    if key_update(older, newer, 0).is_err() {
        let _ = key_update(older, newer, 1);
    }
}

/// Sends `data` with INS `instruction`; `None` if power was cut (the card is then powered up
/// again, its session lost).
fn send(device: &mut Device, instruction: u8, data: Vec<u8>) -> Option<Response> {
    match device.try_send(transfer_command(instruction, 0, data)) {
        Ok(response) => Some(response),
        Err(_) => {
            device.power_cycle();
            None
        }
    }
}

impl Run {
    fn new() -> Self {
        let keys = [(1, 4, 1), (1, 4, 1), (1, 4, 2)];
        let cards = keys
            .iter()
            .enumerate()
            .map(|(index, &(transfer, limit, update))| {
                Device::new(
                    index as u8 + 1,
                    START_BALANCE,
                    Some(&testing::key_set(transfer, limit, update)),
                )
            })
            .collect();
        Run {
            cards,
            terminal: Terminal::default(),
            expected: START_BALANCE * CARDS as u64,
            applied: HashSet::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Transfer {
                from,
                to,
                amount: minor,
                fault,
            } => self.transfer(from, to, minor, fault),
            Op::Recover { card } => self.recover(card),
            Op::KeyUpdate { older, newer, form } => {
                let (older, newer) = two(&mut self.cards, older, newer);
                // Refusals (not newer, above the limit, update keys differ) are part of the
                // run; what matters is that they change nothing of value.
                let _ = key_update(older, newer, form);
            }
            Op::Load { card, key_id } => {
                let set = testing::key_set(key_id, 4, 1);
                let response = load(&mut self.cards[card], LOAD_AMOUNT, Delivery::Sealed(&set));
                if response.sw == StatusWord::SUCCESS {
                    self.expected += LOAD_AMOUNT;
                }
            }
        }
        // Every card is pulled between steps: no session and no armed cut outlives a step.
        for card in &mut self.cards {
            card.power_cycle();
        }
        self.check();
    }

    fn transfer(&mut self, from: usize, to: usize, minor: u64, fault: Fault) {
        let (source, destination) = two(&mut self.cards, from, to);
        let terminal = &mut self.terminal;
        // Claim 14: the settlement terminal first brings the older card up to the newer key.
        align_keys(source, destination);
        let Ok(mut flow) = terminal.initialize_in(destination, source.id(), amount(minor)) else {
            return;
        };
        if let Fault::Cut {
            on_source,
            write,
            tear,
        } = fault
        {
            let card = if on_source {
                &mut *source
            } else {
                &mut *destination
            };
            card.arm_cut(write, tear, 2);
        }
        let request = terminal.transfer_out_request(&flow);
        let Some(response) = send(source, ins::TRANSFER_OUT, request.encode()) else {
            return;
        };
        if response.sw != StatusWord::SUCCESS {
            return;
        }
        flow.offer_out = Some(TransferOutOffer::decode(&response.data).unwrap());
        if matches!(fault, Fault::PullDestinationBeforeIn) {
            destination.power_cycle();
            return;
        }
        let request = terminal.transfer_in_request(&flow);
        let Some(response) = send(destination, ins::TRANSFER_IN, request.encode()) else {
            return;
        };
        if response.sw != StatusWord::SUCCESS
            || matches!(fault, Fault::LoseInAnswer | Fault::PullSourceBeforeComplete)
        {
            return;
        }
        flow.proof = Some(TransferProof::decode(&response.data).unwrap());
        let data = TransferComplete {
            proof: flow.proof.clone().unwrap(),
            record: Some(terminal.completion(source, &flow)),
        };
        let _ = send(source, ins::TRANSFER_COMPLETE, data.encode());
    }

    /// The recovery rule for `card`'s pending transfer, if any: ask its destination, settle
    /// with the proof. Refusals (a key the source does not hold yet, receipts that no longer
    /// cover it) leave it pending.
    fn recover(&mut self, card: usize) {
        let Some(pending) = self.cards[card].info().pending else {
            return;
        };
        let Some(to) = self
            .cards
            .iter()
            .position(|c| c.id() == pending.destination)
        else {
            return;
        };
        let (source, destination) = two(&mut self.cards, card, to);
        let terminal = &mut self.terminal;
        let query = TransferStatusQuery {
            source: source.id(),
            challenge_source: pending.challenge_source,
            destination_counter: pending.destination_counter,
        };
        let Ok(proof) = terminal.status(destination, &query) else {
            return;
        };
        if proof.key_id > source.purse().transfer.selected {
            // The proof is under a generation the source does not hold yet.
            align_keys(source, destination);
        }
        let flow = Flow {
            source: source.id(),
            destination: destination.id(),
            amount: pending.amount,
            challenge_terminal: [0; 16],
            offer_in: TransferInOffer {
                counter: pending.destination_counter,
                balance: valuecard_core::money::Amount::ZERO,
                challenge_destination: [0; 16],
                transfer_key_id: pending.key_id,
                last_usage: None,
                last_writer_certificate: None,
            },
            offer_out: Some(TransferOutOffer {
                counter: 0,
                balance: valuecard_core::money::Amount::ZERO,
                challenge_source: pending.challenge_source,
                value: valuecard_core::messages::transfer::ValueMessage {
                    key_id: pending.key_id,
                    ciphertext: [0; 24],
                },
                last_usage: None,
                last_writer_certificate: None,
            }),
            transfer_in: None,
            proof: None,
        };
        let record =
            (proof.status == ProofStatus::Received).then(|| terminal.completion(source, &flow));
        let _ = send(
            source,
            ins::TRANSFER_COMPLETE,
            TransferComplete { proof, record }.encode(),
        );
    }

    fn check(&mut self) {
        for card in &self.cards {
            let received = &card.purse().transfer.received;
            let unique: HashSet<_> = received
                .iter()
                .map(|r| (r.source, r.challenge_source))
                .collect();
            assert_eq!(unique.len(), received.len(), "a receipt kept twice");
            for receipt in received {
                self.applied
                    .insert((receipt.source, receipt.challenge_source));
            }
        }
        let balances: u64 = self.cards.iter().map(|c| c.balance()).sum();
        // A reservation whose destination applied the value is counted there already.
        let counted_twice: u64 = self
            .cards
            .iter()
            .filter_map(|card| {
                let sent = card.purse().transfer.sent.as_ref()?;
                self.applied
                    .contains(&(card.id(), sent.pending.challenge_source))
                    .then_some(sent.pending.amount.minor())
            })
            .sum();
        assert_eq!(
            balances - counted_twice,
            self.expected,
            "value created or lost"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn value_is_conserved_across_faults_recoveries_and_key_updates(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let mut run = Run::new();
        for op in &ops {
            run.apply(op);
        }
        // Finally recover everything the keys allow, and check once more.
        for card in 0..CARDS {
            run.recover(card);
            run.cards[card].power_cycle();
        }
        run.check();
    }
}
