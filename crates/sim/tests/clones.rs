//! Fig. 9: usage records go to the center, a card state spent twice reveals a clone, and the
//! lists reach every terminal, which then refuses the card.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_core::messages::center::{
    CenterError, ListDelta, ListReason, TerminalLink, UploadReceipt, UsageUpload,
};
use valuecard_reader::InProcessReader;
use valuecard_sim::{read_purse, World};
use valuecard_terminal::TerminalError;

/// A copy of a card, made by copying its memory: what an attacker with the chip's contents has.
fn clone_card(world: &mut World, memory: &MemoryEeprom) -> TestReader {
    let copy = MemoryEeprom::new(EEPROM_SIZE);
    copy.restore(&memory.snapshot());
    let card = Card::open(FaultInjectingEeprom::new(copy), world.fork_rng()).unwrap();
    InProcessReader::with_card("clone", card)
}

fn upload_all(world: &mut World) -> Vec<UploadReceipt> {
    let center = &mut world.center;
    world
        .terminals
        .iter_mut()
        .map(|terminal| terminal.upload_usage(&mut *center).unwrap())
        .collect()
}

fn update_all(world: &mut World) {
    let center = &mut world.center;
    for terminal in &mut world.terminals {
        terminal.update_lists(&mut *center).unwrap();
    }
}

#[test]
fn a_cloned_card_is_detected_and_then_refused_everywhere() {
    let mut world = world(21, 2);
    let (mut original, memory) = issued_card(&mut world, "original", 5_000);
    let card_id = read_purse(&mut original).unwrap().card_id;
    let mut clone = clone_card(&mut world, &memory);
    world.terminals[0]
        .purchase(&mut original, amount(1_000))
        .unwrap();
    world.terminals[1]
        .purchase(&mut clone, amount(1_500))
        .unwrap();
    let receipts = upload_all(&mut world);
    let detected: Vec<_> = receipts
        .iter()
        .flat_map(|receipt| receipt.clones_detected.clone())
        .collect();
    assert_eq!(detected, vec![card_id]);
    assert_eq!(world.center.cloned_cards().unwrap(), vec![card_id]);
    update_all(&mut world);
    for terminal in &mut world.terminals {
        for reader in [&mut original, &mut clone] {
            let outcome = terminal.purchase(reader, amount(1));
            assert!(
                matches!(
                    outcome,
                    Err(TerminalError::CardListed {
                        reason: ListReason::Cloned,
                        ..
                    })
                ),
                "{outcome:?}"
            );
        }
    }
    // The center refuses to load either copy.
    assert!(world.load(&mut original, amount(100)).is_err());
}

#[test]
fn a_clone_that_loads_is_caught_by_the_center() {
    let mut world = world(22, 1);
    let (mut original, memory) = issued_card(&mut world, "original", 5_000);
    let mut clone = clone_card(&mut world, &memory);
    world.terminals[0]
        .purchase(&mut original, amount(1_000))
        .unwrap();
    upload_all(&mut world);
    // The copy offers the state the purchase already spent.
    let outcome = world.load(&mut clone, amount(500));
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(world.center.cloned_cards().unwrap().len(), 1);
}

#[test]
fn a_lost_card_is_refused_after_the_next_list_update() {
    let mut world = world(23, 2);
    let (mut lost, _) = issued_card(&mut world, "lost", 3_000);
    let (mut other, _) = issued_card(&mut world, "other", 3_000);
    let card_id = read_purse(&mut lost).unwrap().card_id;
    assert!(world
        .center
        .report_card(&card_id, ListReason::Lost)
        .unwrap());
    assert!(
        !world
            .center
            .report_card(&card_id, ListReason::Lost)
            .unwrap(),
        "listed once"
    );
    // Before the update the terminal does not know yet.
    world.terminals[0].purchase(&mut lost, amount(100)).unwrap();
    update_all(&mut world);
    for terminal in &mut world.terminals {
        let outcome = terminal.purchase(&mut lost, amount(100));
        assert!(
            matches!(
                outcome,
                Err(TerminalError::CardListed {
                    reason: ListReason::Lost,
                    ..
                })
            ),
            "{outcome:?}"
        );
        terminal.purchase(&mut other, amount(100)).unwrap();
    }
    assert!(
        world.load(&mut lost, amount(100)).is_err(),
        "the center refuses to load a lost card"
    );
}

/// A link that fails on demand, as a network does.
struct FlakyLink<'a> {
    inner: &'a mut valuecard_center::Center,
    fail_next: bool,
}

impl TerminalLink for FlakyLink<'_> {
    fn upload_usage(&mut self, upload: &UsageUpload) -> Result<UploadReceipt, CenterError> {
        if std::mem::take(&mut self.fail_next) {
            // The center stored the batch, but the answer was lost on the way back.
            self.inner.upload_usage(upload)?;
            return Err(CenterError::Unreachable("connection reset".into()));
        }
        self.inner.upload_usage(upload)
    }

    fn list_delta(
        &mut self,
        terminal_id: valuecard_core::ids::DeviceId,
        since: u64,
    ) -> Result<ListDelta, CenterError> {
        self.inner.list_delta(terminal_id, since)
    }

    fn report_stamp(
        &mut self,
        terminal_id: valuecard_core::ids::DeviceId,
        stamp: &valuecard_core::messages::purse::TerminalStamp,
    ) -> Result<u32, CenterError> {
        self.inner.report_stamp(terminal_id, stamp)
    }
}

#[test]
fn uploads_resume_after_failures_without_loss_or_duplicates() {
    let mut world = world(24, 1);
    let (mut card, _) = issued_card(&mut world, "card", 9_000);
    let card_id = read_purse(&mut card).unwrap().card_id;
    for value in [100, 200, 300] {
        world.terminals[0]
            .purchase(&mut card, amount(value))
            .unwrap();
    }
    let mut flaky = FlakyLink {
        inner: &mut world.center,
        fail_next: true,
    };
    assert!(world.terminals[0].upload_usage(&mut flaky).is_err());
    world.terminals[0].purchase(&mut card, amount(400)).unwrap();
    let receipt = world.terminals[0].upload_usage(&mut flaky).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 3), "{receipt:?}");
    assert!(receipt.refused.is_empty() && receipt.clones_detected.is_empty());
    let again = world.terminals[0].upload_usage(&mut world.center).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 0));
    assert_eq!(world.center.reported_spending().unwrap(), (1_000, 4));
    // The remaining-value record follows the uploads.
    let record = world.center.remaining_value(&card_id).unwrap().unwrap();
    assert_eq!(record.balance.minor(), 8_000);
    assert_eq!(record.card_counter, read_purse(&mut card).unwrap().counter);
}

#[test]
fn forged_and_inconsistent_usage_items_are_refused_and_not_stored() {
    let mut world = world(25, 2);
    let (mut card, _) = issued_card(&mut world, "card", 9_000);
    world.terminals[0].purchase(&mut card, amount(100)).unwrap();
    let record = world.terminals[0]
        .store()
        .pending_uploads(10)
        .unwrap()
        .remove(0);
    let item = valuecard_terminal::payment::usage_item(&record).unwrap();
    let terminal_id = world.terminals[0].device_id();
    let other_terminal = world.terminals[1].device_id();
    let mut forged_amount = item.clone();
    forged_amount.amount = amount(1);
    forged_amount.balance_after = amount(8_999);
    let mut forged_previous = item.clone();
    forged_previous.previous_usage.signature.0[0] ^= 1;
    let cases = [
        UsageUpload {
            terminal_id,
            items: vec![forged_amount],
        },
        UsageUpload {
            terminal_id,
            items: vec![forged_previous],
        },
        UsageUpload {
            terminal_id: other_terminal,
            items: vec![item.clone()],
        },
    ];
    for upload in &cases {
        let receipt = world.center.upload_usage(upload).unwrap();
        assert_eq!(receipt.stored, 0, "{receipt:?}");
        assert_eq!(receipt.refused.len(), 1, "{receipt:?}");
    }
    assert_eq!(world.center.reported_spending().unwrap(), (0, 0));
    let good = world
        .center
        .upload_usage(&UsageUpload {
            terminal_id,
            items: vec![item],
        })
        .unwrap();
    assert_eq!(good.stored, 1);
}
