//! Payment terminals over HTTP: usage uploads with clone detection, list updates, stamp
//! reports, and the refusals that keep dispensers and terminals to their own endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::Center;
use valuecard_core::messages::center::{CenterError, ListReason, TerminalLink, UsageUpload};
use valuecard_reader::InProcessReader;
use valuecard_sam::Sam;
use valuecard_sim::{read_purse, WorldRng};
use valuecard_terminal::payment::PaymentTerminal;
use valuecard_terminal::store::MemoryStore;
use valuecard_terminal::TerminalError;

#[test]
fn terminals_upload_usage_and_fetch_lists_over_http() {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(41)).unwrap();
    let mut h = Harness::start(center, 41);
    let (mut reader, card_id) = issue_and_load(&mut h);
    // A copy of the card's memory: a clone.
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    memory.restore(&reader.card().unwrap().store().eeprom().snapshot());
    let mut clone = InProcessReader::with_card(
        "clone",
        Card::open(memory, WorldRng::seed_from_u64(7)).unwrap(),
    );

    let mut terminal = PaymentTerminal::new(
        sam(&h.terminal),
        MemoryStore::default(),
        clock(),
        WorldRng::seed_from_u64(8),
    )
    .unwrap();
    let mut link = h.link(&h.terminal);
    terminal.purchase(&mut reader, amount(100)).unwrap();
    terminal.purchase(&mut clone, amount(200)).unwrap();
    let receipt = terminal.upload_usage(&mut link).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (2, 0), "{receipt:?}");
    assert_eq!(receipt.clones_detected, vec![card_id]);
    assert_eq!(
        h.with_center(|center| center.cloned_cards().unwrap()),
        vec![card_id]
    );
    // Nothing left to send; a repeated batch is recognized, not stored twice.
    assert_eq!(terminal.upload_usage(&mut link).unwrap().stored, 0);

    let version = terminal.update_lists(&mut link).unwrap();
    assert!(version >= 1);
    let refused = terminal.purchase(&mut reader, amount(1));
    assert!(
        matches!(
            refused,
            Err(TerminalError::CardListed {
                reason: ListReason::Cloned,
                ..
            })
        ),
        "{refused:?}"
    );

    // Installed today: the SAM's chain is at 0 and the center verifies the signed report.
    assert_eq!(terminal.advance_stamp(&mut link).unwrap(), 0);
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(6_150));
}

#[test]
fn terminal_endpoints_refuse_dispensers_and_other_terminals() {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(42)).unwrap();
    let h = Harness::start(center, 42);
    let terminal_id = device_id(&h.terminal);
    // A dispenser may not upload usage or fetch lists.
    let mut dispenser_link = h.link(&h.dispenser);
    let upload = UsageUpload {
        terminal_id: device_id(&h.dispenser),
        items: Vec::new(),
    };
    assert!(matches!(
        dispenser_link.upload_usage(&upload),
        Err(CenterError::NotAuthorized(_))
    ));
    assert!(matches!(
        dispenser_link.list_delta(device_id(&h.dispenser), 0),
        Err(CenterError::NotAuthorized(_))
    ));
    // A terminal may not speak for another device.
    let mut terminal_link = h.link(&h.terminal);
    let foreign = UsageUpload {
        terminal_id: device_id(&h.dispenser),
        items: Vec::new(),
    };
    assert!(matches!(
        terminal_link.upload_usage(&foreign),
        Err(CenterError::NotAuthorized(_))
    ));
    let own_stamp = sam(&h.terminal).stamp().unwrap();
    assert!(terminal_link
        .report_stamp(device_id(&h.dispenser), &own_stamp)
        .is_err());
    // Its own empty upload and list request are fine.
    let own = UsageUpload {
        terminal_id,
        items: Vec::new(),
    };
    assert_eq!(terminal_link.upload_usage(&own).unwrap().stored, 0);
    assert_eq!(
        terminal_link
            .list_delta(terminal_id, 0)
            .unwrap()
            .entries
            .len(),
        0
    );
}

#[test]
fn service_records_reach_the_statement_over_http() {
    use valuecard_core::messages::credit::Password;
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(43)).unwrap();
    let mut h = Harness::start(center, 43);
    let (mut reader, card_id) = issue_and_load(&mut h);
    let mut dispenser = h.dispenser();
    let setting = h.with_center(|center| {
        let enabled = dispenser.enable_credit(&mut reader, center, None).unwrap();
        center.take_setting_number(&enabled.card_id).unwrap()
    });
    let mut terminal = PaymentTerminal::new(
        sam(&h.terminal),
        MemoryStore::default(),
        clock(),
        WorldRng::seed_from_u64(9),
    )
    .unwrap();
    let password = Password::parse("5678").unwrap();
    let session = terminal.open_credit(&mut reader).unwrap();
    terminal
        .register_password(&mut reader, &session, &setting, &password)
        .unwrap();
    terminal
        .credit_service(&mut reader, &password, amount(990))
        .unwrap();
    let mut link = h.link(&h.terminal);
    let receipt = terminal.upload_service_records(&mut link).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    let statement = h.with_center(|center| center.statement("2026-06").unwrap());
    assert_eq!(statement.cards.len(), 1);
    assert_eq!(
        (statement.cards[0].card_id, statement.cards[0].total_minor),
        (card_id, 990)
    );
}
