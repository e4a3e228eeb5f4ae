//! The center releases a transfer whose destination will never come back (docs/protocols.md
//! § 13.6), end to end: a source that reserved value toward a made-up card ID, and one whose
//! destination was reported lost, get their value back and spend it; a destination that
//! exists and is not listed, or that received the value, keeps the reservation in place; a
//! replayed or forged release is refused by the card; and value is conserved throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_center::transfers::RELEASE_HOLD_DAYS;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::messages::transfer::{
    complete_p1, ins, PendingTransfer, TransferInfo, TransferLink, TransferOut, TransferRelease,
    TransferUpload,
};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;
use valuecard_sim::{read_purse, LosingAnswer, World, WorldError};
use valuecard_terminal::card_commands::{select, transfer as transfer_command};
use valuecard_terminal::TerminalError;

/// A card ID this center never issued.
const NOBODY: CardId = CardId(*b"NOBODY01");

fn send(reader: &mut TestReader, instruction: u8, p1: u8, data: Vec<u8>) -> (StatusWord, Vec<u8>) {
    let response = reader.exchange(&select()).unwrap();
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let response = reader
        .exchange(&transfer_command(instruction, p1, data))
        .unwrap();
    (response.sw, response.data)
}

fn info(reader: &mut TestReader) -> TransferInfo {
    let (sw, data) = send(reader, ins::GET_TRANSFER_INFO, 0, Vec::new());
    assert_eq!(sw, StatusWord::SUCCESS);
    TransferInfo::decode(&data).unwrap()
}

/// A dishonest reader makes the card reserve `minor` toward [`NOBODY`]: TRANSFER OUT is not
/// authenticated, and the value message it gets can never be opened by any card.
fn strand(reader: &mut TestReader, minor: u64) -> PendingTransfer {
    let request = TransferOut {
        challenge_terminal: [0x5A; 16],
        destination: NOBODY,
        destination_counter: 0,
        challenge_destination: [0xA5; 16],
        amount: amount(minor),
        date: today(),
    };
    let (sw, _) = send(reader, ins::TRANSFER_OUT, 0, request.encode());
    assert_eq!(sw, StatusWord::SUCCESS);
    info(reader).pending.expect("reserved")
}

fn balance(reader: &mut TestReader) -> u64 {
    read_purse(reader).unwrap().balance.minor()
}

fn card_id(reader: &mut TestReader) -> CardId {
    read_purse(reader).unwrap().card_id
}

fn reserved(reader: &mut TestReader) -> u64 {
    info(reader).pending.map_or(0, |p| p.amount.minor())
}

fn conserved(world: &mut World, readers: &mut [&mut TestReader]) {
    let balances: Vec<Amount> = readers
        .iter_mut()
        .map(|r| read_purse(*r).unwrap().balance)
        .collect();
    world.upload_transfers().unwrap();
    let reconciliation = world.reconcile(&balances).unwrap();
    assert!(reconciliation.conserved, "{reconciliation:?}");
    assert_eq!(reconciliation.transfers_in_flight, 0);
}

/// A world with A (50.00) and B (10.00), and 20.00 sent from A to B with the answer to
/// `instruction` lost before the card processed it; the cards, A's ID, B's ID and A's
/// pending transfer.
fn interrupted_transfer(
    seed: u64,
    instruction: u8,
) -> (
    World,
    TestReader,
    TestReader,
    CardId,
    CardId,
    valuecard_core::messages::transfer::PendingTransfer,
) {
    let mut world = world(seed, 1);
    let (mut a, _) = issued_card(&mut world, "A", 5_000);
    let (mut b, _) = issued_card(&mut world, "B", 1_000);
    let outcome = if instruction == ins::TRANSFER_IN {
        let mut to = LosingAnswer {
            inner: &mut b,
            ins: instruction,
            delivered: false,
        };
        world.transfer(&mut a, &mut to, amount(2_000))
    } else {
        let mut from = LosingAnswer {
            inner: &mut a,
            ins: instruction,
            delivered: false,
        };
        world.transfer(&mut from, &mut b, amount(2_000))
    };
    assert!(outcome.is_err());
    let source = card_id(&mut a);
    let destination = card_id(&mut b);
    let pending = info(&mut a).pending.unwrap();
    (world, a, b, source, destination, pending)
}

fn refused_by_center(
    result: Result<Option<valuecard_terminal::transfer::Released>, WorldError>,
) -> String {
    match result {
        Err(WorldError::Terminal(TerminalError::Center(CenterError::Mismatch(reason)))) => reason,
        other => panic!("expected the center's refusal, got {other:?}"),
    }
}

#[test]
fn value_reserved_toward_a_made_up_card_is_released_and_spent() {
    let mut world = world(1, 1);
    let (mut a, _) = issued_card(&mut world, "A", 5_000);
    let pending = strand(&mut a, 2_000);
    assert_eq!(pending.destination, NOBODY);
    // Reserved: a purchase of the whole balance is refused.
    assert!(world.terminals[0].purchase(&mut a, amount(5_000)).is_err());

    let released = world.release_transfer(&mut a).unwrap().expect("released");
    assert_eq!(released.amount, amount(2_000));
    assert_eq!((balance(&mut a), reserved(&mut a)), (5_000, 0));
    // The whole balance is spendable again.
    world.terminals[0].purchase(&mut a, amount(5_000)).unwrap();
    assert_eq!(balance(&mut a), 0);
    // Nothing more to release.
    assert_eq!(world.release_transfer(&mut a).unwrap(), None);

    // The center counts it as undone, and the terminal's report of it is accepted.
    let receipt = world.upload_transfers().unwrap();
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    let totals = world.center.transfer_totals().unwrap();
    assert_eq!((totals.undone, totals.undone_count), (2_000, 1));
    assert_eq!(totals.in_doubt_count, 0);
    conserved(&mut world, &mut [&mut a]);
}

#[test]
fn a_replayed_or_forged_release_is_refused_by_the_card() {
    let mut world = world(2, 1);
    let (mut a, _) = issued_card(&mut world, "A", 5_000);
    let first = strand(&mut a, 1_000);
    let source = card_id(&mut a);
    let terminal = valuecard_core::ids::DeviceId(*b"NOSUCHTM");
    // The center answers only its settlement terminals.
    assert!(matches!(
        world.center.release_transfer(terminal, source, &first),
        Err(CenterError::UnknownDevice(_))
    ));
    let release = world
        .center
        .authorize_transfer_release(source, &first)
        .unwrap();
    // Asked again, the center gives the same release (a retry after a lost answer).
    assert_eq!(
        world
            .center
            .authorize_transfer_release(source, &first)
            .unwrap(),
        release
    );
    let (sw, _) = send(
        &mut a,
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        release.encode(),
    );
    assert_eq!(sw, StatusWord::SUCCESS);
    // Replayed: nothing is pending.
    let (sw, _) = send(
        &mut a,
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        release.encode(),
    );
    assert_eq!(sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    // Replayed against the next reservation toward the same made-up card.
    let second = strand(&mut a, 1_000);
    let (sw, _) = send(
        &mut a,
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        release.encode(),
    );
    assert_eq!(sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // Forged: signed by anyone but the center's root key.
    let forger = SigningKeyPair::from_seed(&[0x13; 32]);
    let forged = TransferRelease {
        signature: forger.sign(&TransferRelease::signed_message(&source, &second)),
    };
    let (sw, _) = send(
        &mut a,
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        forged.encode(),
    );
    assert_eq!(sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!((balance(&mut a), reserved(&mut a)), (5_000, 1_000));
    // A release the center gave for other terms than the card's is refused too.
    let mut other = second.clone();
    other.amount = amount(999);
    let misdirected = world
        .center
        .authorize_transfer_release(source, &other)
        .unwrap();
    let (sw, _) = send(
        &mut a,
        ins::TRANSFER_COMPLETE,
        complete_p1::RELEASE,
        misdirected.encode(),
    );
    assert_eq!(sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(reserved(&mut a), 1_000);
    // And a second release of the same transfer with other terms is refused by the center.
    assert!(matches!(
        world.center.authorize_transfer_release(source, &second),
        Err(CenterError::Mismatch(_))
    ));
}

/// A and B with A's transfer of `minor` to B reserved on A and never applied on B: A's
/// answer to TRANSFER OUT was lost, so the value message never left the terminal.
fn reserved_toward_b(world: &mut World, minor: u64) -> (TestReader, TestReader) {
    let (mut a, _) = issued_card(world, "A", 5_000);
    let (mut b, _) = issued_card(world, "B", 1_000);
    let mut from = LosingAnswer {
        inner: &mut a,
        ins: ins::TRANSFER_OUT,
        delivered: true,
    };
    assert!(world.transfer(&mut from, &mut b, amount(minor)).is_err());
    assert_eq!(reserved(&mut a), minor);
    (a, b)
}

/// The settlement terminal's report of the transfer `source` holds pending, as a terminal
/// that only asked the destination would upload it: the destination's half and its proof,
/// without the source's state (nothing of the source happened there).
fn destination_half(world: &mut World, source: CardId) -> TransferUpload {
    let stored = world
        .transfer_reports()
        .unwrap()
        .into_iter()
        .map(|stored| stored.report)
        .find(|report| report.source == source)
        .expect("the terminal's report");
    let terminal_id = stored
        .destination_record
        .as_ref()
        .expect("the destination's record")
        .writer;
    let mut report = stored;
    report.source_previous = None;
    report.sequence += 1_000;
    TransferUpload {
        terminal_id,
        reports: vec![report],
    }
}

#[test]
fn a_destination_reported_lost_is_released_after_the_hold() {
    let mut world = world(3, 1);
    let (mut a, mut b) = reserved_toward_b(&mut world, 2_000);
    let b_id = card_id(&mut b);
    world.center.report_card(&b_id, ListReason::Lost).unwrap();
    // Not before every terminal can have synced the list and uploaded.
    let reason = refused_by_center(world.release_transfer(&mut a));
    assert!(reason.contains("listed as lost"), "{reason}");
    assert_eq!(reserved(&mut a), 2_000);

    world.pass_days(RELEASE_HOLD_DAYS);
    let released = world.release_transfer(&mut a).unwrap().expect("released");
    assert_eq!(released.amount, amount(2_000));
    assert_eq!((balance(&mut a), reserved(&mut a)), (5_000, 0));
    // The terminal's report (with the value message and the release) is accepted, and the
    // transfer counts as undone at the center.
    let receipt = world.upload_transfers().unwrap();
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    let totals = world.center.transfer_totals().unwrap();
    assert_eq!((totals.undone, totals.in_doubt_count), (2_000, 0));
    conserved(&mut world, &mut [&mut a, &mut b]);
}

#[test]
fn a_destination_that_exists_and_is_not_listed_must_be_presented() {
    let mut world = world(4, 1);
    let (mut a, mut b) = reserved_toward_b(&mut world, 2_000);
    world.pass_days(RELEASE_HOLD_DAYS * 10);
    let reason = refused_by_center(world.release_transfer(&mut a));
    assert!(reason.contains("present the destination card"), "{reason}");
    assert_eq!((balance(&mut a), reserved(&mut a)), (5_000, 2_000));
    // Presenting it settles the transfer the ordinary way.
    world
        .settle_transfer(&mut a, &mut b)
        .unwrap()
        .expect("settled");
    assert_eq!(
        (balance(&mut a), reserved(&mut a), balance(&mut b)),
        (5_000, 0, 1_000)
    );
    conserved(&mut world, &mut [&mut a, &mut b]);
}

#[test]
fn a_destination_that_received_is_never_released_even_once_listed() {
    // B applied the value; the TRANSFER COMPLETE never reached A.
    let (mut world, mut a, mut b, source, _, pending) =
        interrupted_transfer(5, ins::TRANSFER_COMPLETE);
    assert_eq!((reserved(&mut a), balance(&mut b)), (2_000, 3_000));
    // The settlement terminal itself holds the proof of receipt and does not ask.
    assert!(matches!(
        world.release_transfer(&mut a),
        Err(WorldError::Terminal(TerminalError::Mismatch(_)))
    ));
    // The center, once it has the proof, refuses anyone who asks.
    let upload = destination_half(&mut world, source);
    let receipt = world.center.ingest_transfers(&upload).unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let b_id = card_id(&mut b);
    world.center.report_card(&b_id, ListReason::Lost).unwrap();
    world.pass_days(RELEASE_HOLD_DAYS);
    let refusal = world
        .center
        .authorize_transfer_release(source, &pending)
        .unwrap_err();
    assert!(
        matches!(&refusal, CenterError::Mismatch(reason) if reason.contains("received")),
        "{refusal}"
    );
    assert_eq!((balance(&mut a), reserved(&mut a)), (5_000, 2_000));
}

#[test]
fn a_release_later_contradicted_by_a_proof_of_receipt_raises_an_alert() {
    let (mut world, _a, _b, source, b_id, pending) =
        interrupted_transfer(6, ins::TRANSFER_COMPLETE);
    // The terminal has not uploaded within the hold: the center sees a listed destination
    // and nothing against the release.
    world.center.report_card(&b_id, ListReason::Stolen).unwrap();
    world.pass_days(RELEASE_HOLD_DAYS);
    world
        .center
        .authorize_transfer_release(source, &pending)
        .unwrap();
    assert!(world
        .center
        .alerts_for(&b_id.0)
        .unwrap()
        .iter()
        .all(|alert| alert.kind != "transfer-contradiction"));
    // The late upload proves B received it: the evidence is stored, and the center says
    // that its release was wrong.
    let upload = destination_half(&mut world, source);
    let receipt = world.center.ingest_transfers(&upload).unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let alerts = world.center.alerts_for(&b_id.0).unwrap();
    assert_eq!(
        alerts
            .iter()
            .filter(|alert| alert.kind == "transfer-contradiction")
            .count(),
        1,
        "{alerts:?}"
    );
    let totals = world.center.transfer_totals().unwrap();
    assert_eq!((totals.received, totals.undone), (2_000, 0));
}

#[test]
fn a_transfer_in_sent_without_an_answer_is_never_released() {
    // The TRANSFER IN never reached B, but the terminal cannot know that.
    let (mut world, mut a, _b, source, b_id, pending) = interrupted_transfer(7, ins::TRANSFER_IN);
    world.center.report_card(&b_id, ListReason::Lost).unwrap();
    world.pass_days(RELEASE_HOLD_DAYS);
    // The terminal knows it sent the value: it does not ask.
    assert!(matches!(
        world.release_transfer(&mut a),
        Err(WorldError::Terminal(TerminalError::Mismatch(_)))
    ));
    // Its report is taken as in doubt, and what it says makes the center refuse any other
    // terminal that asks.
    let receipt = world.upload_transfers().unwrap();
    assert_eq!(
        (receipt.stored, receipt.refused.len()),
        (1, 0),
        "{receipt:?}"
    );
    assert_eq!(world.center.transfer_totals().unwrap().in_doubt_count, 1);
    let refusal = world
        .center
        .authorize_transfer_release(source, &pending)
        .unwrap_err();
    assert!(
        matches!(&refusal, CenterError::Mismatch(reason) if reason.contains("lost the answer")),
        "{refusal}"
    );
    assert_eq!((balance(&mut a), reserved(&mut a)), (5_000, 2_000));
}
