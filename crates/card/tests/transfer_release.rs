//! The center's release on the card (TRANSFER COMPLETE, P1 = 01; docs/protocols.md § 13):
//! a source that reserved value toward a destination that never existed gets it back
//! against the center's signature over exactly its pending transfer, with no balance change;
//! a forged, replayed or misdirected release changes nothing; and the release commit
//! survives a power cut at every write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use transfer_common::*;
use valuecard_card::testing;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::UpdateConfirmation;
use valuecard_core::messages::transfer::{
    complete_p1, ins, PendingTransfer, ProofStatus, TransferComplete, TransferOut, TransferRelease,
};
use valuecard_core::StatusWord;

/// A card ID no card holds: TRANSFER OUT is not authenticated, so a dishonest reader can
/// make a source reserve value toward it.
const NOBODY: CardId = CardId(*b"NOBODY01");

/// A reserves `minor` toward [`NOBODY`] and shows its pending transfer.
fn stranded(a: &mut Device, minor: u64, challenge: u8) -> PendingTransfer {
    let request = TransferOut {
        challenge_terminal: [challenge; 16],
        destination: NOBODY,
        destination_counter: 3,
        challenge_destination: [challenge ^ 0xFF; 16],
        amount: amount(minor),
        date: testing::today(),
    };
    let response = a.transfer(ins::TRANSFER_OUT, 0, request.encode());
    assert_eq!(response.sw, StatusWord::SUCCESS);
    a.info().pending.expect("the reservation shows")
}

fn signed_by(key: &SigningKeyPair, source: &CardId, pending: &PendingTransfer) -> TransferRelease {
    TransferRelease {
        signature: key.sign(&TransferRelease::signed_message(source, pending)),
    }
}

fn center_release(source: &CardId, pending: &PendingTransfer) -> TransferRelease {
    signed_by(&testing::root_key(), source, pending)
}

fn release(a: &mut Device, release: &TransferRelease) -> StatusWord {
    a.transfer(
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        release.encode(),
    )
    .sw
}

#[test]
fn a_reservation_toward_a_card_that_never_existed_is_released_by_the_center() {
    let mut a = Device::new(1, 1_000, Some(&keys()));
    let pending = stranded(&mut a, 400, 0x11);
    assert_eq!((a.balance(), a.reserved()), (1_000, 400));
    assert_eq!(a.purse().spendable().minor(), 600);

    let response = a.transfer(
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        center_release(&a.id(), &pending).encode(),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let confirmation = UpdateConfirmation::decode(&response.data).unwrap();
    assert_eq!(
        (confirmation.counter, confirmation.balance.minor()),
        (0, 1_000)
    );
    assert_eq!((a.balance(), a.counter(), a.reserved()), (1_000, 0, 0));
    assert_eq!(a.info().pending, None);
    // Committed: it holds after the card is pulled, and the value is spendable again.
    a.power_cycle();
    assert_eq!(a.reserved(), 0);
    let mut b = Device::new(2, 0, Some(&keys()));
    let mut terminal = Terminal::default();
    terminal.run(&mut a, &mut b, amount(1_000)).unwrap();
    assert_eq!((a.balance(), b.balance()), (0, 1_000));
}

#[test]
fn a_replayed_release_finds_nothing_and_cannot_release_the_next_transfer() {
    let mut a = Device::new(1, 1_000, Some(&keys()));
    let first = stranded(&mut a, 400, 0x11);
    let old = center_release(&a.id(), &first);
    assert_eq!(release(&mut a, &old), StatusWord::SUCCESS);
    // Nothing pending any more.
    assert_eq!(release(&mut a, &old), StatusWord::CONDITIONS_NOT_SATISFIED);

    // The same terms toward the same made-up card, but a new transfer (a new challenge of
    // the source's): the old release names the old one only.
    let second = stranded(&mut a, 400, 0x11);
    assert_ne!(second.challenge_source, first.challenge_source);
    let before = value(&a);
    assert_eq!(
        release(&mut a, &old),
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    assert_eq!(value(&a), before);
    assert_eq!(a.info().pending, Some(second));
}

#[test]
fn a_forged_or_misdirected_release_changes_nothing() {
    let mut a = Device::new(1, 1_000, Some(&keys()));
    let pending = stranded(&mut a, 400, 0x22);
    let before = value(&a);
    let stranger = SigningKeyPair::from_seed(&[0x42; 32]);
    let mut forged = vec![
        ("another key", signed_by(&stranger, &a.id(), &pending)),
        (
            "another card",
            center_release(&testing::card_id(2), &pending),
        ),
    ];
    let mut other = pending.clone();
    other.amount = amount(399);
    forged.push(("another amount", center_release(&a.id(), &other)));
    let mut other = pending.clone();
    other.destination = testing::card_id(3);
    forged.push(("another destination", center_release(&a.id(), &other)));
    let mut other = pending.clone();
    other.destination_counter += 1;
    forged.push(("another counter", center_release(&a.id(), &other)));
    let mut other = pending.clone();
    other.key_id += 1;
    forged.push(("another key generation", center_release(&a.id(), &other)));
    let mut flipped = center_release(&a.id(), &pending);
    flipped.signature.0[5] ^= 0x01;
    forged.push(("a flipped bit", flipped));
    for (what, forged) in forged {
        assert_eq!(
            release(&mut a, &forged),
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            "{what}"
        );
        assert_eq!(value(&a), before, "{what}");
    }
    // The genuine one still works afterwards.
    assert_eq!(
        release(&mut a, &center_release(&testing::card_id(1), &pending)),
        StatusWord::SUCCESS
    );
}

#[test]
fn p1_data_and_pending_are_checked() {
    let mut a = Device::new(1, 1_000, Some(&keys()));
    let nothing = PendingTransfer {
        destination: NOBODY,
        destination_counter: 3,
        challenge_source: [0; 16],
        amount: amount(1),
        key_id: 1,
    };
    // Nothing pending.
    assert_eq!(
        release(&mut a, &center_release(&testing::card_id(1), &nothing)),
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let pending = stranded(&mut a, 400, 0x33);
    let genuine = center_release(&a.id(), &pending);
    let before = value(&a);
    for p1 in [0x02, 0x80, 0xFF] {
        let sw = a.transfer(ins::TRANSFER_COMPLETE, p1, genuine.encode()).sw;
        assert_eq!(sw, StatusWord::INCORRECT_P1_P2, "P1 {p1:02X}");
    }
    // P1 = 01 belongs to TRANSFER COMPLETE alone.
    for instruction in [
        ins::TRANSFER_OUT,
        ins::TRANSFER_STATUS,
        ins::GET_TRANSFER_INFO,
    ] {
        let sw = a.transfer(instruction, complete_p1::RELEASE, Vec::new()).sw;
        assert_eq!(sw, StatusWord::INCORRECT_P1_P2, "INS {instruction:02X}");
    }
    // A release is not a proof, and a proof is not a release.
    assert_eq!(
        a.transfer(ins::TRANSFER_COMPLETE, complete_p1::PROOF, genuine.encode())
            .sw,
        StatusWord::WRONG_DATA
    );
    let proof_bytes = TransferComplete {
        proof: valuecard_core::messages::transfer::TransferProof::make(
            ProofStatus::NotReceived,
            &testing::transfer_key(1),
            3,
            &valuecard_core::messages::transfer::ProofSubject {
                source: a.id(),
                challenge_source: pending.challenge_source,
                destination: NOBODY,
                amount: amount(0),
            },
        ),
        record: None,
    }
    .encode();
    assert_eq!(
        a.transfer(ins::TRANSFER_COMPLETE, complete_p1::RELEASE, proof_bytes)
            .sw,
        StatusWord::WRONG_DATA
    );
    let mut truncated = genuine.encode();
    truncated.pop();
    assert_eq!(
        a.transfer(ins::TRANSFER_COMPLETE, complete_p1::RELEASE, truncated)
            .sw,
        StatusWord::WRONG_DATA
    );
    assert_eq!(value(&a), before);
}

#[test]
fn a_blocked_source_refuses_the_release() {
    let mut a = Device::new(1, 1_000, Some(&keys()));
    let pending = stranded(&mut a, 400, 0x44);
    let mut blocked = a.card.state().clone();
    if let valuecard_card::state::PersistentState::Personalized(purse) = &mut blocked {
        purse.blocked = true;
    }
    let mut a = Device::with_state(1, blocked);
    let before = value(&a);
    assert_eq!(
        release(&mut a, &center_release(&testing::card_id(1), &pending)),
        StatusWord::FUNCTION_NOT_SUPPORTED
    );
    assert_eq!(value(&a), before);
}

const TEARS: [(usize, usize); 3] = [(0, 1), (1, 2), (1, 1)];

#[test]
fn the_release_survives_a_cut_at_every_write() {
    let setup = || {
        let mut a = Device::new(1, 1_000, Some(&keys()));
        let pending = stranded(&mut a, 400, 0x55);
        let command = center_release(&a.id(), &pending);
        (a, command)
    };
    let (mut clean, command) = setup();
    let before = clean.card.state().encode();
    let writes_before = clean.writes();
    assert_eq!(release(&mut clean, &command), StatusWord::SUCCESS);
    let writes = clean.writes() - writes_before;
    let after = clean.card.state().encode();
    assert!(writes > 0);
    assert_ne!(before, after);
    let mut cuts = 0;
    for cut in 1..=writes {
        for (numerator, denominator) in TEARS {
            let (mut a, command) = setup();
            assert_eq!(a.card.state().encode(), before);
            a.arm_cut(cut, numerator, denominator);
            assert!(
                a.try_send(transfer_command(
                    ins::TRANSFER_COMPLETE,
                    complete_p1::RELEASE,
                    command.encode()
                ))
                .is_err(),
                "cut at write {cut} was not reached"
            );
            a.power_cycle();
            let state = a.card.state().encode();
            assert!(
                state == before || state == after,
                "cut at write {cut} ({numerator}/{denominator}): neither the old nor the new state"
            );
            // The balance never moves; only the reservation goes, whole or not at all.
            assert_eq!(a.balance(), 1_000);
            assert!(a.reserved() == 400 || a.reserved() == 0);
            // The release can be sent again while the reservation is there, and not after.
            let again = release(&mut a, &command);
            if state == before {
                assert_eq!(again, StatusWord::SUCCESS);
            } else {
                assert_eq!(again, StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            assert_eq!(a.card.state().encode(), after);
            cuts += 1;
        }
    }
    assert!(cuts >= 3, "{cuts}");
}
