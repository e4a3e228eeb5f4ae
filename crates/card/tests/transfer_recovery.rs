//! The recovery rule on the card (docs/protocols.md § 13.5): a lost TRANSFER IN answer, a
//! card pulled between the halves, forged or misplaced proofs, receipts that no longer cover
//! a transfer, and a blocked destination.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use transfer_common::*;
use valuecard_core::limits::CARD_RECEIVED_TRANSFERS_MAX;
use valuecard_core::messages::transfer::{ProofStatus, TransferProof, TransferStatusQuery};
use valuecard_core::StatusWord;

#[test]
fn a_lost_transfer_in_answer_is_recovered_and_debited() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut terminal = Terminal::default();
    let mut flow = sent(&mut terminal, &mut a, &mut b, 2_000);
    terminal.transfer_in(&mut b, &mut flow).unwrap();
    // The answer never reached the terminal.
    flow.proof = None;
    a.power_cycle();
    b.power_cycle();

    let proof = terminal.status(&mut b, &flow.status_query()).unwrap();
    assert_eq!(proof.status, ProofStatus::Received);
    assert_eq!(proof.destination_counter, 1);
    terminal
        .complete_with(&mut a, &flow, proof.clone())
        .unwrap();
    assert_eq!((a.balance(), a.reserved()), (8_000, 0));
    assert_eq!(b.balance(), 2_000);

    // A second recovery does nothing: nothing is pending, and the proof cannot debit twice.
    assert!(!terminal.recover(&mut a, &mut b));
    assert_eq!(
        terminal.complete_with(&mut a, &flow, proof),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(a.balance(), 8_000);
}

#[test]
fn a_card_pulled_before_transfer_in_gets_its_reservation_back() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut terminal = Terminal::default();
    let flow = sent(&mut terminal, &mut a, &mut b, 2_000);
    b.power_cycle();

    let proof = terminal.status(&mut b, &flow.status_query()).unwrap();
    assert_eq!(proof.status, ProofStatus::NotReceived);
    assert_eq!(proof.destination_counter, 0);
    terminal.complete_with(&mut a, &flow, proof).unwrap();
    assert_eq!((a.balance(), a.counter(), a.reserved()), (10_000, 0, 0));

    // The proof is final: the value message can no longer be applied in any session.
    let mut late = flow.clone();
    let fresh = terminal
        .initialize_in(&mut b, a.id(), amount(2_000))
        .unwrap();
    late.offer_in = fresh.offer_in;
    late.challenge_terminal = fresh.challenge_terminal;
    assert_eq!(
        terminal.transfer_in(&mut b, &mut late),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(b.balance(), 0);
}

#[test]
fn a_not_received_proof_for_another_counter_is_refused() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut c = Device::new(3, 10_000, Some(&keys()));
    let mut terminal = Terminal::default();
    let flow = sent(&mut terminal, &mut a, &mut b, 2_000);
    b.power_cycle();
    // B moves on (C sends it something), so a later counter exists at which B truthfully
    // did not receive A's transfer.
    terminal.run(&mut c, &mut b, amount(10)).unwrap();
    let query = TransferStatusQuery {
        destination_counter: 1,
        ..flow.status_query()
    };
    let proof = terminal.status(&mut b, &query).unwrap();
    assert_eq!(proof.status, ProofStatus::NotReceived);
    let before = value(&a);
    assert_eq!(
        terminal.complete_with(&mut a, &flow, proof.clone()),
        Err(StatusWord::WRONG_DATA)
    );
    // The counter altered inside a genuine proof breaks its MAC.
    let forged = TransferProof {
        destination_counter: 0,
        ..proof
    };
    assert_eq!(
        terminal.complete_with(&mut a, &flow, forged),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    // A proof of receipt turned into one of non-receipt.
    let mut flipped = terminal.status(&mut b, &flow.status_query()).unwrap();
    flipped.status = ProofStatus::Received;
    assert_eq!(
        terminal.complete_with(&mut a, &flow, flipped),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    // A query for a counter B has not reached yet gets no proof at all.
    let future = TransferStatusQuery {
        destination_counter: 5,
        ..flow.status_query()
    };
    assert_eq!(
        terminal.status(&mut b, &future),
        Err(StatusWord::REFERENCED_DATA_NOT_FOUND)
    );
    assert_eq!(value(&a), before);
    // The honest answer still settles it.
    assert!(terminal.recover(&mut a, &mut b));
    assert_eq!((a.balance(), a.reserved()), (10_000, 0));
}

#[test]
fn once_receipts_no_longer_cover_a_transfer_the_card_answers_6a88() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut terminal = Terminal::default();
    let first = terminal.run(&mut a, &mut b, amount(1)).unwrap();
    // Received: B proves it while the receipt is kept.
    let proof = terminal.status(&mut b, &first.status_query()).unwrap();
    assert_eq!(proof.status, ProofStatus::Received);
    for _ in 0..CARD_RECEIVED_TRANSFERS_MAX {
        terminal.run(&mut a, &mut b, amount(1)).unwrap();
    }
    assert_eq!(
        b.purse().transfer.received.len(),
        CARD_RECEIVED_TRANSFERS_MAX
    );
    assert_eq!(b.purse().transfer.received_floor, 1);
    // Neither "received" (the receipt is gone) nor "not received" (it might have been).
    assert_eq!(
        terminal.status(&mut b, &first.status_query()),
        Err(StatusWord::REFERENCED_DATA_NOT_FOUND)
    );
}

#[test]
fn a_blocked_destination_still_answers_the_status_of_a_transfer() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut terminal = Terminal::default();
    let mut flow = sent(&mut terminal, &mut a, &mut b, 300);
    terminal.transfer_in(&mut b, &mut flow).unwrap();
    // B is blocked afterwards (as a raised-balance DEBIT would), before A got the proof.
    let mut state = b.card.state().clone();
    if let valuecard_card::state::PersistentState::Personalized(purse) = &mut state {
        purse.blocked = true;
    }
    let mut blocked = Device::with_state(2, state);
    let proof = terminal.status(&mut blocked, &flow.status_query()).unwrap();
    assert_eq!(proof.status, ProofStatus::Received);
    terminal.complete_with(&mut a, &flow, proof).unwrap();
    assert_eq!((a.balance(), a.reserved()), (9_700, 0));
    // It still moves no value.
    assert_eq!(
        terminal
            .initialize_in(&mut blocked, a.id(), amount(1))
            .unwrap_err(),
        StatusWord::FUNCTION_NOT_SUPPORTED
    );
}
