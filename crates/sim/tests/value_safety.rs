//! Attacks by an insider: the owner of one card's chip (its image edited, or copied), a
//! dishonest dispenser, a dishonest terminal. Each test performs the attack, then checks the
//! refusal, the list, the alert and that no value was created.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::state::PersistentState;
use valuecard_card::Card;
use valuecard_center::alerts::AlertKind;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, Signature};
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::{
    CenterError, CenterLink, ListReason, LoadOutcome, LoadRequest, LoadSettlement,
    SettlementChallengeRequest, UsageUpload,
};
use valuecard_core::messages::purse::{
    ins, CreditCommand, GetLastTransaction, InitializeLoad, LastTransaction, LoadOffer,
};
use valuecard_core::time::FixedClock;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_sam::Sam;
use valuecard_sim::{install_sam, last_transaction, read_purse, World};
use valuecard_terminal::card_commands::{proprietary, select};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::TerminalError;

/// A copy of a card's memory in a new card: what the owner of the chip can make.
fn copy_card(world: &mut World, memory: &MemoryEeprom, name: &str) -> TestReader {
    let copy = MemoryEeprom::new(EEPROM_SIZE);
    copy.restore(&memory.snapshot());
    let card = Card::open(FaultInjectingEeprom::new(copy), world.fork_rng()).unwrap();
    InProcessReader::with_card(name, card)
}

/// The card's image edited by its owner: the same keys, another balance, checksum fixed.
fn edited_card(world: &mut World, reader: &TestReader, balance: u64) -> TestReader {
    let PersistentState::Personalized(purse) = reader.card().unwrap().state().clone() else {
        panic!("the card must be personalized")
    };
    let mut purse = *purse;
    purse.balance = amount(balance);
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = Card::with_state(
        FaultInjectingEeprom::new(memory),
        PersistentState::Personalized(Box::new(purse)),
        world.fork_rng(),
    )
    .unwrap();
    InProcessReader::with_card("edited", card)
}

fn card_id(reader: &mut TestReader) -> CardId {
    read_purse(reader).unwrap().card_id
}

fn listed_reason(world: &mut World, card: CardId) -> Option<ListReason> {
    world.center.listed_reason(&card).unwrap()
}

fn alert_kinds(world: &mut World, card: CardId) -> Vec<String> {
    world
        .center
        .alerts_for(&card.0)
        .unwrap()
        .into_iter()
        .map(|alert| alert.kind)
        .collect()
}

fn upload_all(world: &mut World) {
    let center = &mut world.center;
    for terminal in &mut world.terminals {
        terminal.upload_usage(&mut *center).unwrap();
    }
}

/// Loads through a lost CREDIT answer: the card commits, the center holds the load pending.
fn load_with_lost_answer(world: &mut World, reader: &mut TestReader, value: u64) -> u32 {
    let mut losing = LosingAnswer {
        inner: reader,
        ins: ins::CREDIT,
        delivered: true,
    };
    match world
        .dispenser
        .load(&mut losing, &mut world.center, amount(value))
    {
        Err(TerminalError::LoadInDoubt { load_number }) => load_number,
        other => panic!("the load must be in doubt: {other:?}"),
    }
}

#[test]
fn an_edited_balance_cannot_mint_through_a_load_and_the_card_is_listed() {
    let mut world = world(101, 1);
    let (mut genuine, _) = issued_card(&mut world, "genuine", 5_000);
    let card = card_id(&mut genuine);
    let mut edited = edited_card(&mut world, &genuine, 1_000_000);
    let before = world.center.load_totals().unwrap();

    let outcome = world.load(&mut edited, amount(100));
    assert!(
        matches!(
            outcome,
            Err(valuecard_sim::WorldError::Terminal(TerminalError::Center(
                CenterError::CardBlocked(_)
            )))
        ),
        "{outcome:?}"
    );
    assert_eq!(read_purse(&mut edited).unwrap().balance, amount(1_000_000));
    assert_eq!(
        read_purse(&mut edited).unwrap().counter,
        1,
        "no CREDIT reached it"
    );
    assert_eq!(listed_reason(&mut world, card), Some(ListReason::Tampered));
    assert_eq!(
        alert_kinds(&mut world, card),
        vec![AlertKind::TamperedBalance.as_str()]
    );
    let after = world.center.load_totals().unwrap();
    assert_eq!(
        (after.loaded, after.in_flight),
        (before.loaded, before.in_flight)
    );
    // A terminal refuses the edited card offline too: no writer signed that balance.
    let sale = world.terminals[0].purchase(&mut edited, amount(10));
    assert!(
        matches!(sale, Err(TerminalError::BadUsageRecord(_))),
        "{sale:?}"
    );
}

#[test]
fn an_edited_balance_below_the_bound_is_refused_because_no_writer_signed_it() {
    let mut world = world(102, 1);
    let (mut genuine, _) = issued_card(&mut world, "genuine", 5_000);
    let card = card_id(&mut genuine);
    world.terminals[0]
        .purchase(&mut genuine, amount(2_000))
        .unwrap();
    // 4,500 is below everything the center ever loaded, but the last record says 3,000.
    let mut edited = edited_card(&mut world, &genuine, 4_500);
    let outcome = world.load(&mut edited, amount(100));
    assert!(
        matches!(
            outcome,
            Err(valuecard_sim::WorldError::Terminal(TerminalError::Center(
                CenterError::Mismatch(ref reason)
            ))) if reason.contains("does not describe")
        ),
        "{outcome:?}"
    );
    assert_eq!(read_purse(&mut edited).unwrap().balance, amount(4_500));
    // The genuine card still loads normally.
    world.load(&mut genuine, amount(100)).unwrap();
    assert_eq!(read_purse(&mut genuine).unwrap().balance, amount(3_100));
    assert_eq!(listed_reason(&mut world, card), None);
}

#[test]
fn a_clone_spending_the_state_of_a_pending_load_is_caught() {
    let mut world = world(103, 2);
    let (mut original, memory) = issued_card(&mut world, "original", 5_000);
    let card = card_id(&mut original);
    let mut copy = copy_card(&mut world, &memory, "copy");
    // The original takes a load whose answer is lost: it holds the value, the center
    // holds the load pending.
    let load_number = load_with_lost_answer(&mut world, &mut original, 3_000);
    assert_eq!(read_purse(&mut original).unwrap().balance, amount(8_000));
    // The copy spends the state the load started from, and the terminal uploads it.
    world.terminals[0]
        .purchase(&mut copy, amount(4_000))
        .unwrap();
    upload_all(&mut world);
    // Then the original spends the loaded value at another terminal.
    world.terminals[1]
        .purchase(&mut original, amount(7_000))
        .unwrap();
    upload_all(&mut world);
    assert_eq!(world.center.cloned_cards().unwrap(), vec![card]);
    assert_eq!(listed_reason(&mut world, card), Some(ListReason::Cloned));
    assert!(
        alert_kinds(&mut world, card)
            .contains(&AlertKind::CancelledLoadApplied.as_str().to_owned()),
        "{:?}",
        alert_kinds(&mut world, card)
    );
    // The load is booked as applied: the value exists, on one of the copies.
    let totals = world.center.load_totals().unwrap();
    assert_eq!((totals.loaded, totals.in_flight_count), (3_000, 0));
    assert!(world
        .center
        .pending_loads()
        .unwrap()
        .iter()
        .all(|pending| pending.load_number != load_number));
}

#[test]
fn settling_a_load_whose_state_was_already_spent_reveals_the_clone() {
    let mut world = world(104, 1);
    let (mut original, memory) = issued_card(&mut world, "original", 5_000);
    let card = card_id(&mut original);
    let mut copy = copy_card(&mut world, &memory, "copy");
    let load_number = load_with_lost_answer(&mut world, &mut original, 1_000);
    world.terminals[0].purchase(&mut copy, amount(500)).unwrap();
    upload_all(&mut world);
    assert_eq!(world.center.cloned_cards().unwrap(), Vec::<CardId>::new());
    // The dispenser settles the load from the original's evidence: it committed, and the
    // state it started from was already spent by the copy.
    let settled =
        world
            .dispenser
            .settle_pending_load(&mut original, &mut world.center, load_number);
    assert!(
        matches!(
            settled,
            Err(TerminalError::Center(CenterError::CardBlocked(_)))
        ),
        "{settled:?}"
    );
    assert_eq!(world.center.cloned_cards().unwrap(), vec![card]);
}

#[test]
fn a_new_offer_at_the_same_state_does_not_cancel_a_load_a_copy_applied() {
    let mut world = world(105, 1);
    let (mut original, memory) = issued_card(&mut world, "original", 5_000);
    let card = card_id(&mut original);
    let mut copy = copy_card(&mut world, &memory, "copy");
    let first = load_with_lost_answer(&mut world, &mut original, 1_000);
    // The copy asks for a load from the same state: authorized, and the first load stays
    // pending (the center cannot tell a dropped session from a copy).
    world.load(&mut copy, amount(2_000)).unwrap();
    // Committing the second load on the copy's evidence releases the first one for the
    // copy; the original then spends the first load's value.
    world.terminals[0]
        .purchase(&mut original, amount(5_500))
        .unwrap();
    upload_all(&mut world);
    assert_eq!(world.center.cloned_cards().unwrap(), vec![card]);
    let totals = world.center.load_totals().unwrap();
    // Both loads are booked: 1,000 on the original, 2,000 on the copy.
    assert_eq!(totals.loaded, 3_000, "{totals:?}");
    assert!(world
        .center
        .pending_loads()
        .unwrap()
        .iter()
        .all(|pending| pending.load_number != first));
}

/// A second dispenser, installed at the world's center.
fn second_dispenser(
    world: &mut World,
) -> Dispenser<valuecard_sam::SoftwareSam, valuecard_sim::WorldRng> {
    let mut rng = world.fork_rng();
    let sam = install_sam(
        &mut world.center,
        Role::Dispenser,
        Box::new(FixedClock(today())),
        &mut rng,
    )
    .unwrap();
    Dispenser::new(sam, Box::new(FixedClock(today())), world.fork_rng()).unwrap()
}

#[test]
fn a_dispenser_cannot_settle_a_load_on_its_word_or_another_dispensers_load() {
    let mut world = world(106, 1);
    let (mut reader, _) = issued_card(&mut world, "card", 5_000);
    let card = card_id(&mut reader);
    // Genuine evidence of the card's state before the load, over the holder's own challenge.
    let before_credit = last_transaction(&mut reader, [9; 16]).unwrap();
    let load_number = load_with_lost_answer(&mut world, &mut reader, 700);
    let holder = world.dispenser.device_id();
    let pending = world.center.pending_loads().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].dispenser_id, holder, "the holder's liability");

    // Another dispenser, even with the card's real evidence, may not settle it.
    let mut other = second_dispenser(&mut world);
    let challenge = [7; 16];
    let evidence = last_transaction(&mut reader, challenge).unwrap();
    let foreign = LoadSettlement {
        card_id: card,
        dispenser_id: other.device_id(),
        load_number,
        challenge,
        evidence: evidence.clone(),
    };
    assert_eq!(
        world.center.settle_load(&foreign),
        Err(CenterError::NotAuthorized(other.device_id()))
    );
    assert!(other
        .settle_pending_load(&mut reader, &mut world.center, load_number)
        .is_err());
    // The holder, with evidence whose card signature is forged.
    let mut forged = evidence.clone();
    forged.signature = Signature([0x42; 64]);
    assert_eq!(
        world.center.settle_load(&LoadSettlement {
            card_id: card,
            dispenser_id: holder,
            load_number,
            challenge,
            evidence: forged,
        }),
        Err(CenterError::BadCardSignature)
    );
    // The holder claiming "cancelled" with the card's genuine answer from before the load:
    // a signature over the holder's own challenge is not fresh evidence.
    assert_eq!(before_credit.record.counter + 1, evidence.record.counter);
    let refused = world.center.settle_load(&LoadSettlement {
        card_id: card,
        dispenser_id: holder,
        load_number,
        challenge: [9; 16],
        evidence: before_credit,
    });
    assert!(
        matches!(&refused, Err(CenterError::Mismatch(reason)) if reason.contains("challenge")),
        "{refused:?}"
    );
    assert_eq!(world.center.pending_loads().unwrap().len(), 1);
    // The card's own evidence settles it as committed.
    assert_eq!(
        world
            .dispenser
            .settle_pending_load(&mut reader, &mut world.center, load_number)
            .unwrap(),
        Some(true)
    );
    assert!(world.center.pending_loads().unwrap().is_empty());
    assert_eq!(world.center.load_totals().unwrap().loaded, 700);
}

/// Runs INITIALIZE LOAD on the card and asks the center to authorize it.
fn authorized_load(
    world: &mut World,
    reader: &mut TestReader,
    value: u64,
) -> (u32, valuecard_core::messages::center::LoadApproval) {
    let card = card_id(reader);
    let dispenser_id = world.dispenser.device_id();
    let challenge_dispenser = random_array(&mut world.fork_rng());
    let request = InitializeLoad {
        challenge_dispenser,
        amount: amount(value),
        dispenser_id,
    };
    reader.exchange(&select()).unwrap();
    let response = reader
        .exchange(&proprietary(ins::INITIALIZE_LOAD, request.encode()))
        .unwrap();
    assert!(response.sw.is_success(), "{}", response.sw);
    let offer = LoadOffer::decode(&response.data).unwrap();
    let approval = world
        .center
        .authorize_load(&LoadRequest {
            card_id: card,
            dispenser_id,
            challenge_dispenser,
            amount: amount(value),
            offer,
        })
        .unwrap();
    (approval.load_number, approval)
}

#[test]
fn evidence_drawn_before_the_credit_kills_the_load_instead_of_hiding_it() {
    let mut world = world(107, 1);
    let (mut reader, _) = issued_card(&mut world, "card", 5_000);
    let card = card_id(&mut reader);
    let dispenser_id = world.dispenser.device_id();
    let (load_number, approval) = authorized_load(&mut world, &mut reader, 900);
    // A dishonest dispenser gathers "not committed" evidence first, then sends CREDIT,
    // hoping to keep the value on the card and report the load cancelled.
    let challenge = world
        .center
        .settlement_challenge(&SettlementChallengeRequest {
            dispenser_id,
            card_id: card,
            load_number,
        })
        .unwrap();
    let response = reader
        .exchange(&proprietary(
            ins::GET_LAST_TRANSACTION,
            GetLastTransaction { challenge }.encode(),
        ))
        .unwrap();
    let evidence = LastTransaction::decode(&response.data).unwrap();
    let credit = CreditCommand {
        amount: amount(900),
        balance_after: approval.balance_after,
        load_number,
        date: approval.date,
        signature: approval.signature,
        mac: approval.mac,
        transfer_keys: None,
    };
    let answer = reader
        .exchange(&proprietary(ins::CREDIT, credit.encode()))
        .unwrap();
    assert!(
        !answer.sw.is_success(),
        "GET LAST TRANSACTION ended the load session: CREDIT must fail"
    );
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(5_000));
    assert_eq!(
        world.center.settle_load(&LoadSettlement {
            card_id: card,
            dispenser_id,
            load_number,
            challenge,
            evidence,
        }),
        Ok(LoadOutcome::Cancelled)
    );
    assert_eq!(world.center.load_totals().unwrap().in_flight_count, 0);
}

#[test]
fn a_terminal_cannot_invent_a_sale_or_frame_a_card_as_a_clone() {
    let mut world = world(108, 2);
    let (mut reader, _) = issued_card(&mut world, "card", 5_000);
    let card = card_id(&mut reader);
    world.terminals[0]
        .purchase(&mut reader, amount(300))
        .unwrap();
    let record = world.terminals[0]
        .store()
        .pending_uploads(10)
        .unwrap()
        .remove(0);
    let genuine = valuecard_terminal::payment::usage_item(&record).unwrap();
    let terminal_id = world.terminals[0].device_id();
    // Invented: the same state spent again at the terminal's own choice of challenge and
    // amount, signed by the terminal itself (its SAM signs what it is given) but not by the
    // card. Uploaded first, it would frame the genuine card as a clone.
    let mut invented = genuine.clone();
    invented.terminal_sequence += 100;
    invented.challenge_terminal = [0x99; 16];
    invented.amount = amount(5_000);
    invented.amount_max = amount(5_000);
    invented.balance_after = amount(0);
    // The terminal's key copied out of its SAM, as the owner of a dishonest terminal has it.
    let terminal_key = world.terminals[0].sam().extract_signing_key();
    invented.terminal_signature = terminal_key.sign(&invented.commit(terminal_id).signed_message());
    let receipt = world
        .center
        .ingest_usage(&UsageUpload {
            terminal_id,
            items: vec![invented.clone()],
        })
        .unwrap();
    assert_eq!(receipt.stored, 0, "{receipt:?}");
    assert_eq!(receipt.refused.len(), 1, "{receipt:?}");
    // An amount above what the card agreed to, with the card's real signature.
    let mut overcharged = genuine.clone();
    overcharged.amount = amount(400);
    overcharged.balance_after = amount(4_600);
    overcharged.terminal_signature =
        terminal_key.sign(&overcharged.commit(terminal_id).signed_message());
    let receipt = world
        .center
        .ingest_usage(&UsageUpload {
            terminal_id,
            items: vec![overcharged],
        })
        .unwrap();
    assert_eq!(
        (receipt.stored, receipt.refused.len()),
        (0, 1),
        "{receipt:?}"
    );
    // The genuine sale is stored, and the card is not framed.
    let receipt = world
        .center
        .ingest_usage(&UsageUpload {
            terminal_id,
            items: vec![genuine],
        })
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    assert!(receipt.clones_detected.is_empty());
    assert_eq!(world.center.cloned_cards().unwrap(), Vec::<CardId>::new());
    assert_eq!(listed_reason(&mut world, card), None);
    assert_eq!(world.center.reported_spending().unwrap(), (300, 1));
}

#[test]
fn a_purchase_record_signed_by_a_dispenser_is_not_a_previous_writer() {
    let mut world = world(109, 1);
    let (mut reader, _) = issued_card(&mut world, "card", 5_000);
    world.terminals[0]
        .purchase(&mut reader, amount(300))
        .unwrap();
    world.terminals[0]
        .purchase(&mut reader, amount(200))
        .unwrap();
    let records = world.terminals[0].store().pending_uploads(10).unwrap();
    let mut second = valuecard_terminal::payment::usage_item(&records[1]).unwrap();
    // A dispenser's key "writes" the previous purchase record instead of the terminal.
    let mut rng = world.fork_rng();
    let sam = install_sam(
        &mut world.center,
        Role::Dispenser,
        Box::new(FixedClock(today())),
        &mut rng,
    )
    .unwrap();
    second.previous_usage.writer = sam.device_id();
    second.previous_usage.signature = sam
        .extract_signing_key()
        .sign(&second.previous_usage.signed_message(&second.card_id));
    let terminal_id = world.terminals[0].device_id();
    let receipt = world
        .center
        .ingest_usage(&UsageUpload {
            terminal_id,
            items: vec![second],
        })
        .unwrap();
    assert_eq!(receipt.stored, 0, "{receipt:?}");
    assert!(
        receipt.refused[0].1.contains("previous writer"),
        "{receipt:?}"
    );
}

#[test]
fn a_restored_card_is_held_its_late_spending_netted_and_later_spending_flagged() {
    let mut world = world(110, 2);
    let (mut old, memory) = issued_card(&mut world, "old", 5_000);
    let card = card_id(&mut old);
    // Spent at a terminal that has not uploaded when the holder reports the card destroyed.
    world.terminals[0]
        .purchase(&mut old, amount(1_200))
        .unwrap();
    let held = world.center.restore_card(&card).unwrap();
    let valuecard_center::lists::Restoration::Held { until } = held else {
        panic!("the value must be held first: {held:?}")
    };
    assert_eq!(
        until.0,
        today().0 + valuecard_center::lists::RESTORE_HOLD_DAYS
    );
    assert_eq!(
        world.center.restore_card(&card).unwrap(),
        valuecard_center::lists::Restoration::Held { until }
    );
    // The late upload arrives during the holding period: netted, and flagged.
    upload_all(&mut world);
    assert_eq!(
        alert_kinds(&mut world, card),
        vec![AlertKind::SpentAfterReport.as_str()]
    );
    world.center.set_clock(Box::new(FixedClock(until)));
    let restored = world.center.restore_card(&card).unwrap();
    assert_eq!(
        restored,
        valuecard_center::lists::Restoration::Restored {
            amount: amount(3_800)
        }
    );
    assert!(world.center.restore_card(&card).is_err(), "once only");
    // The old chip still works at a terminal that never synced the list: the center sees it.
    let mut chip = copy_card(&mut world, &memory, "chip");
    world.terminals[1].purchase(&mut chip, amount(100)).unwrap();
    upload_all(&mut world);
    assert_eq!(
        alert_kinds(&mut world, card),
        vec![
            AlertKind::SpentAfterReport.as_str(),
            AlertKind::SpentAfterRestore.as_str()
        ]
    );
}

#[test]
fn evidence_of_another_load_settles_both() {
    let mut world = world(111, 1);
    let (mut reader, _) = issued_card(&mut world, "card", 5_000);
    let card = card_id(&mut reader);
    // The first CREDIT never reaches the card; the retry's does, but its answer is lost.
    let mut dropped = LosingAnswer {
        inner: &mut reader,
        ins: ins::CREDIT,
        delivered: false,
    };
    let first = match world
        .dispenser
        .load(&mut dropped, &mut world.center, amount(300))
    {
        Err(TerminalError::LoadInDoubt { load_number }) => load_number,
        other => panic!("the first load must be in doubt: {other:?}"),
    };
    let second = load_with_lost_answer(&mut world, &mut reader, 400);
    let pending: Vec<u32> = world
        .center
        .pending_loads()
        .unwrap()
        .iter()
        .map(|load| load.load_number)
        .collect();
    assert_eq!(pending, vec![first, second]);
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(5_400));
    // Settling the first with the card's evidence shows the second took the state.
    assert_eq!(
        world
            .dispenser
            .settle_pending_load(&mut reader, &mut world.center, first)
            .unwrap(),
        Some(false)
    );
    assert!(world.center.pending_loads().unwrap().is_empty());
    let totals = world.center.load_totals().unwrap();
    assert_eq!((totals.loaded, totals.cancelled), (400, 300), "{totals:?}");
    assert_eq!(
        world
            .center
            .remaining_value(&card)
            .unwrap()
            .unwrap()
            .balance,
        amount(5_400)
    );
    assert_eq!(listed_reason(&mut world, card), None);
}
