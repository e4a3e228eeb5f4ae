//! Card-to-card value transfer on the card (seed 000, claims 1, 3, 5, 8 with the settlement
//! terminal of claims 10-16), driven with real APDUs: the four command pairs, every attack a
//! terminal, a network or the owner of one card could try (each refused with its status word
//! and no change of value). The recovery rule is in `transfer_recovery.rs`, key update and
//! key delivery in `transfer_keys.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use transfer_common::*;
use valuecard_card::testing;
use valuecard_core::apdu::Command;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::limits::BALANCE_MAX_MINOR;
use valuecard_core::messages::purse::{ins as purse_ins, InitializePurchase, TransactionKind};
use valuecard_core::messages::transfer::{ins, ProofStatus, TransferInfo};
use valuecard_core::StatusWord;

#[test]
fn a_transfer_moves_value_and_both_cards_keep_a_signed_record() {
    let (mut a, mut b) = pair(10_000, 2_000);
    let mut terminal = Terminal::default();
    let mut flow = terminal
        .initialize_in(&mut b, a.id(), amount(2_500))
        .unwrap();
    assert_eq!(flow.offer_in.counter, 0);
    assert_eq!(flow.offer_in.balance, amount(2_000));
    assert_eq!(flow.offer_in.transfer_key_id, 1);

    terminal.transfer_out(&mut a, &mut flow).unwrap();
    // Reserved, not debited: the balance moves only against B's proof.
    assert_eq!(a.balance(), 10_000);
    assert_eq!(a.reserved(), 2_500);
    assert_eq!(a.purse().spendable(), amount(7_500));
    let pending = a.info().pending.unwrap();
    assert_eq!(pending.destination, b.id());
    assert_eq!(pending.destination_counter, 0);
    assert_eq!(pending.amount, amount(2_500));

    terminal.transfer_in(&mut b, &mut flow).unwrap();
    assert_eq!(b.balance(), 4_500);
    assert_eq!(b.counter(), 1);
    let proof = flow.proof.clone().unwrap();
    assert_eq!(proof.status, ProofStatus::Received);
    assert_eq!(proof.destination_counter, 1);

    terminal.complete(&mut a, &flow).unwrap();
    assert_eq!(a.balance(), 7_500);
    assert_eq!(a.counter(), 1);
    assert_eq!(a.reserved(), 0);
    assert!(a.info().pending.is_none());

    let (terminal_key, _) = testing::settlement_terminal();
    for (card, kind, balance_after) in [
        (&a, TransactionKind::TransferOut, 7_500),
        (&b, TransactionKind::TransferIn, 4_500),
    ] {
        let purse = card.purse();
        let record = purse.last_usage.as_ref().unwrap();
        assert_eq!(record.kind, kind);
        assert_eq!(record.counter, 1);
        assert_eq!(record.amount, amount(2_500));
        assert_eq!(record.balance_after.minor(), balance_after);
        assert_eq!(record.writer.0, *b"SETTLE01");
        terminal_key
            .public_key()
            .verify(&record.signed_message(&card.id()), &record.signature)
            .unwrap();
        assert_eq!(
            purse.last_writer_certificate.as_ref(),
            Some(&terminal.certificate)
        );
        let entry = &purse.log[0];
        assert_eq!(entry.kind, kind);
        assert_eq!(entry.amount, amount(2_500));
        assert_eq!(entry.balance_after.minor(), balance_after);
        assert_eq!(entry.party.0, *b"SETTLE01");
    }
    let receipt = &b.purse().transfer.received[0];
    assert_eq!(receipt.source, a.id());
    assert_eq!(receipt.amount, amount(2_500));
    assert_eq!(receipt.counter, 1);
}

#[test]
fn get_transfer_info_shows_keys_limit_and_certificate() {
    let (mut a, _) = pair(1_000, 0);
    let info: TransferInfo = a.info();
    assert_eq!(info.card_id, a.id());
    assert_eq!(info.balance, amount(1_000));
    assert_eq!(info.transfer_key_id, 1);
    assert_eq!(info.key_limit, 5);
    assert_eq!(info.held_key_ids, vec![1]);
    assert_eq!(info.update_key_id, 1);
    assert_eq!(info.certificate, testing::card_certificate(1));
    assert!(info.pending.is_none());
    // No data is allowed, and P1 must be zero.
    let response = a.transfer(ins::GET_TRANSFER_INFO, 0, vec![0x01]);
    assert_eq!(response.sw, StatusWord::WRONG_LENGTH);
    let response = a.transfer(ins::GET_TRANSFER_INFO, 1, Vec::new());
    assert_eq!(response.sw, StatusWord::INCORRECT_P1_P2);
}

#[test]
fn a_replayed_value_message_is_refused() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut terminal = Terminal::default();
    let flow = terminal.run(&mut a, &mut b, amount(1_000)).unwrap();
    let before = value(&b);
    let replay = flow.transfer_in.clone().unwrap();

    // Straight after: the session it belonged to is gone.
    let response = b.transfer(ins::TRANSFER_IN, 0, replay.encode());
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    assert_eq!(value(&b), before);

    // In a new session: B's counter and challenge are new, so the value message opens no
    // more.
    terminal
        .initialize_in(&mut b, a.id(), amount(1_000))
        .unwrap();
    let response = b.transfer(ins::TRANSFER_IN, 0, replay.encode());
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(value(&b), before);
    assert_eq!(b.balance(), 1_000);
}

#[test]
fn a_value_message_sent_to_a_third_card_is_refused() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut c = Device::new(3, 0, Some(&keys()));
    let mut terminal = Terminal::default();
    let mut flow = sent(&mut terminal, &mut a, &mut b, 1_000);
    // C is told it receives from A, and gets the value message made for B.
    let flow_c = terminal
        .initialize_in(&mut c, a.id(), amount(1_000))
        .unwrap();
    flow.offer_in = flow_c.offer_in.clone();
    flow.destination = c.id();
    flow.challenge_terminal = flow_c.challenge_terminal;
    let before = value(&c);
    assert_eq!(
        terminal.transfer_in(&mut c, &mut flow),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(value(&c), before);
    assert_eq!(c.balance(), 0);
}

#[test]
fn an_altered_amount_identifier_or_counter_is_refused() {
    let mut terminal = Terminal::default();

    // The amount B was told differs from the amount A sealed.
    let (mut a, mut b) = pair(10_000, 0);
    let mut flow = terminal
        .initialize_in(&mut b, a.id(), amount(9_000))
        .unwrap();
    flow.amount = amount(100);
    terminal.transfer_out(&mut a, &mut flow).unwrap();
    flow.amount = amount(9_000);
    assert_eq!(
        terminal.transfer_in(&mut b, &mut flow),
        Err(StatusWord::WRONG_DATA)
    );
    assert_eq!(b.balance(), 0);

    // A bit of the ciphertext flipped (the amount inside).
    let (mut a, mut b) = pair(10_000, 0);
    let mut flow = sent(&mut terminal, &mut a, &mut b, 100);
    flow.offer_out.as_mut().unwrap().value.ciphertext[7] ^= 0x01;
    assert_eq!(
        terminal.transfer_in(&mut b, &mut flow),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(value(&b).balance, 0);

    // The source's counter, the source's challenge, or the source card altered.
    type Alter = fn(&mut Flow);
    let alterations: [(&str, Alter); 3] = [
        ("source counter", |flow| {
            flow.offer_out.as_mut().unwrap().counter += 1
        }),
        ("source challenge", |flow| {
            flow.offer_out.as_mut().unwrap().challenge_source[0] ^= 1
        }),
        ("value key id", |flow| {
            flow.offer_out.as_mut().unwrap().value.key_id += 1
        }),
    ];
    for (what, alter) in alterations {
        let (mut a, mut b) = pair(10_000, 0);
        let mut flow = sent(&mut terminal, &mut a, &mut b, 100);
        alter(&mut flow);
        let refused = terminal.transfer_in(&mut b, &mut flow).unwrap_err();
        assert!(
            refused == StatusWord::SECURITY_STATUS_NOT_SATISFIED
                || refused == StatusWord::REFERENCE_DATA_NOT_USABLE,
            "{what}: {refused}"
        );
        assert_eq!(b.balance(), 0, "{what}");
        assert_eq!(b.counter(), 0, "{what}");
    }

    // B was told another source card than the one that sealed the value.
    let (mut a, mut b) = pair(10_000, 0);
    let mut flow = terminal
        .initialize_in(&mut b, testing::card_id(3), amount(100))
        .unwrap();
    flow.source = a.id();
    terminal.transfer_out(&mut a, &mut flow).unwrap();
    assert_eq!(
        terminal.transfer_in(&mut b, &mut flow),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(b.balance(), 0);

    // A was given another destination counter than B's.
    let (mut a, mut b) = pair(10_000, 0);
    let mut flow = terminal.initialize_in(&mut b, a.id(), amount(100)).unwrap();
    flow.offer_in.counter += 1;
    terminal.transfer_out(&mut a, &mut flow).unwrap();
    flow.offer_in.counter -= 1;
    assert_eq!(
        terminal.transfer_in(&mut b, &mut flow),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(b.balance(), 0);
}

#[test]
fn a_value_message_under_a_retired_key_is_refused() {
    // B already moved to generation 2; A still sends under generation 1.
    let mut a = Device::new(1, 10_000, Some(&testing::key_set(1, 5, 1)));
    let mut b = Device::new(2, 0, Some(&testing::key_set(2, 5, 1)));
    let mut terminal = Terminal::default();
    let mut flow = sent(&mut terminal, &mut a, &mut b, 100);
    assert_eq!(flow.offer_in.transfer_key_id, 2);
    assert_eq!(flow.offer_out.as_ref().unwrap().value.key_id, 1);
    let before = value(&b);
    assert_eq!(
        terminal.transfer_in(&mut b, &mut flow),
        Err(StatusWord::REFERENCE_DATA_NOT_USABLE)
    );
    assert_eq!(value(&b), before);
    // Nothing was received, and B can say so: A gets its reservation back.
    let proof = terminal.status(&mut b, &flow.status_query()).unwrap();
    assert_eq!(proof.status, ProofStatus::NotReceived);
    assert_eq!(proof.key_id, 2);
    // A does not hold generation 2: it cannot check B's proof and keeps the reservation.
    assert_eq!(
        terminal.complete_with(&mut a, &flow, proof),
        Err(StatusWord::REFERENCE_DATA_NOT_USABLE)
    );
    assert_eq!(a.reserved(), 100);
}

#[test]
fn a_transfer_that_would_pass_the_ceiling_is_refused() {
    let (mut a, mut b) = pair(10_000, BALANCE_MAX_MINOR - 100);
    let mut terminal = Terminal::default();
    let before = value(&b);
    assert_eq!(
        terminal
            .initialize_in(&mut b, a.id(), amount(101))
            .unwrap_err(),
        StatusWord::NOT_ENOUGH_MEMORY
    );
    assert_eq!(value(&b), before);
    // Up to the ceiling exactly is fine.
    terminal.run(&mut a, &mut b, amount(100)).unwrap();
    assert_eq!(b.balance(), BALANCE_MAX_MINOR);
}

#[test]
fn a_forged_terminal_record_signature_is_refused() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut terminal = Terminal::default();
    let flow = sent(&mut terminal, &mut a, &mut b, 500);
    let mut request = terminal.transfer_in_request(&flow);
    request.record.signature = SigningKeyPair::from_seed(&[0x99; 32]).sign(b"anything");
    let before = value(&b);
    let response = b.transfer(ins::TRANSFER_IN, 0, request.encode());
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(value(&b), before);

    // A forged record on the source's side at TRANSFER COMPLETE.
    let (mut a, mut b) = pair(10_000, 0);
    let mut flow = sent(&mut terminal, &mut a, &mut b, 500);
    terminal.transfer_in(&mut b, &mut flow).unwrap();
    let mut record = terminal.completion(&mut a, &flow);
    record.signature.signature.0[0] ^= 0x01;
    let data = valuecard_core::messages::transfer::TransferComplete {
        proof: flow.proof.clone().unwrap(),
        record: Some(record),
    };
    let before = value(&a);
    let response = a.transfer(ins::TRANSFER_COMPLETE, 0, data.encode());
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(value(&a), before);
    // The genuine completion still settles it.
    terminal.complete(&mut a, &flow).unwrap();
    assert_eq!(a.balance(), 9_500);
}

#[test]
fn a_payment_terminal_certificate_cannot_run_a_transfer() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut payment = Terminal::new(testing::terminal());
    let before = value(&b);
    assert_eq!(
        payment
            .initialize_in(&mut b, a.id(), amount(100))
            .unwrap_err(),
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    assert_eq!(value(&b), before);

    // Nor complete one: the source's debit record must be a settlement terminal's.
    let mut terminal = Terminal::default();
    let mut flow = sent(&mut terminal, &mut a, &mut b, 100);
    terminal.transfer_in(&mut b, &mut flow).unwrap();
    let before = value(&a);
    assert_eq!(
        payment.complete(&mut a, &flow),
        Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
    );
    assert_eq!(value(&a), before);
}

#[test]
fn a_second_transfer_out_while_one_is_pending_is_refused() {
    let (mut a, mut b) = pair(10_000, 0);
    let mut c = Device::new(3, 0, Some(&keys()));
    let mut terminal = Terminal::default();
    sent(&mut terminal, &mut a, &mut b, 1_000);
    let mut flow = terminal
        .initialize_in(&mut c, a.id(), amount(1_000))
        .unwrap();
    let before = value(&a);
    assert_eq!(
        terminal.transfer_out(&mut a, &mut flow),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(value(&a), before);
}

#[test]
fn the_reserved_amount_cannot_be_spent_by_a_purchase_or_sent_again() {
    let (mut a, mut b) = pair(1_000, 0);
    let mut terminal = Terminal::default();
    sent(&mut terminal, &mut a, &mut b, 800);
    let (_, certificate) = testing::terminal();
    let purchase = |amount_max: u64| {
        Command::new(0x80, purse_ins::INITIALIZE_PURCHASE, 0, 0)
            .with_data(
                InitializePurchase {
                    terminal_certificate: certificate.clone(),
                    challenge_terminal: [0x11; 16],
                    amount_max: amount(amount_max),
                    date: testing::today(),
                }
                .encode(),
            )
            .with_le(65_536)
    };
    let before = value(&a);
    assert_eq!(
        a.send_command(purchase(201)).sw,
        StatusWord::INSUFFICIENT_FUNDS
    );
    assert_eq!(value(&a), before);
    // What is not reserved can still be spent.
    assert_eq!(a.send_command(purchase(200)).sw, StatusWord::SUCCESS);
}

#[test]
fn transfer_commands_need_a_selected_personalized_unblocked_card() {
    let (mut a, _) = pair(10_000, 0);
    // Not selected.
    let response = a.send_command(
        Command::new(0x00, purse_ins::SELECT, 0x04, 0x00)
            .with_data(vec![0xF0, 0, 0, 0, 0, 0, 0, 0])
            .with_le(256),
    );
    assert_eq!(response.sw, StatusWord::FILE_NOT_FOUND);
    let response = a.transfer(ins::GET_TRANSFER_INFO, 0, Vec::new());
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    a.select();
    // P2 and unknown P1.
    let response = a.send_command(Command::new(0x80, ins::TRANSFER_OUT, 0, 1).with_le(256));
    assert_eq!(response.sw, StatusWord::INCORRECT_P1_P2);
    let response = a.transfer(ins::UPDATE_PERMISSION, 3, Vec::new());
    assert_eq!(response.sw, StatusWord::INCORRECT_P1_P2);
    // Commands that need a session without one.
    for instruction in [ins::TRANSFER_IN, ins::UPDATE_TRANSFER_KEY] {
        let response = a.transfer(instruction, 0, Vec::new());
        assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    // TRANSFER COMPLETE with nothing pending.
    let response = a.transfer(ins::TRANSFER_COMPLETE, 0, Vec::new());
    assert_eq!(response.sw, StatusWord::WRONG_DATA);

    // A blocked card moves no value.
    let mut state = testing::personalized_card(1, amount(1_000), Some(&keys()));
    if let valuecard_card::state::PersistentState::Personalized(purse) = &mut state {
        purse.blocked = true;
    }
    let mut blocked = Device::with_state(1, state);
    let mut terminal = Terminal::default();
    assert_eq!(
        terminal
            .initialize_in(&mut blocked, testing::card_id(2), amount(1))
            .unwrap_err(),
        StatusWord::FUNCTION_NOT_SUPPORTED
    );
    // But it still says what it holds.
    assert_eq!(
        blocked.transfer(ins::GET_TRANSFER_INFO, 0, Vec::new()).sw,
        StatusWord::SUCCESS
    );

    // A card without transfer keys cannot take part.
    let mut bare = Device::new(4, 1_000, None);
    assert_eq!(
        terminal
            .initialize_in(&mut bare, testing::card_id(1), amount(1))
            .unwrap_err(),
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
}
