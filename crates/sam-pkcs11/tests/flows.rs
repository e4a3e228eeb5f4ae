//! The same device flows on both SAM kinds: a load at a dispenser, purchases at a payment
//! terminal over two days (the stamp chain advances), a card-to-card transfer at a
//! settlement terminal, and the uploads the center accepts only if every signature in them
//! verifies. With a PKCS#11 SAM every one of those signatures was made in SoftHSM2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_address, installed_sam, softhsm, Kind};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_core::cert::Role;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::InProcessReader;
use valuecard_sam::Sam;
use valuecard_sim::{read_purse, Storage, World, WorldRng};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::PaymentTerminal;
use valuecard_terminal::store::{MemoryStore, TerminalStore};
use valuecard_terminal::transfer::SettlementTerminal;

type Reader = InProcessReader<MemoryEeprom, WorldRng>;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn balance(reader: &mut Reader) -> u64 {
    read_purse(reader).unwrap().balance.minor()
}

/// Runs the flows with every device's SAM of `kind`; returns the stamp count the payment
/// terminal's second purchase carried.
fn device_flows(kind: &Kind) {
    let mut world =
        World::create(Storage::Memory, 0, Date::from_ymd(2026, 11, 30).unwrap()).unwrap();
    let mut card_a: Reader = InProcessReader::with_card(
        "A",
        world
            .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
            .unwrap(),
    );
    let mut card_b: Reader = InProcessReader::with_card(
        "B",
        world
            .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
            .unwrap(),
    );
    world.issue(&mut card_a, Amount::ZERO).unwrap();
    world.issue(&mut card_b, Amount::ZERO).unwrap();

    // A load at a dispenser whose SAM is of this kind: the center checks the dispenser's
    // signed request through the device-request path of the load.
    let dispenser_sam = installed_sam(&mut world, kind, Role::Dispenser, "dispenser");
    let mut dispenser = Dispenser::new(dispenser_sam, world.clock(), world.fork_rng()).unwrap();
    dispenser
        .load(&mut card_a, &mut world.center, amount(5_000))
        .unwrap();
    assert_eq!(balance(&mut card_a), 5_000);

    // Purchases on two days: the second carries the next stamp of the chain.
    let terminal_sam = installed_sam(&mut world, kind, Role::PaymentTerminal, "terminal");
    let terminal_id = terminal_sam.device_id();
    let mut terminal = PaymentTerminal::new(
        terminal_sam,
        MemoryStore::default(),
        world.clock(),
        world.fork_rng(),
    )
    .unwrap();
    let first = terminal.purchase(&mut card_a, amount(1_200)).unwrap();
    world.pass_days(1);
    let second = terminal.purchase(&mut card_a, amount(300)).unwrap();
    assert!(second.sequence > first.sequence);
    assert_eq!(balance(&mut card_a), 3_500);
    assert_eq!(terminal.sam_mut().stamp().unwrap().count, 1);
    let receipt = terminal.upload_usage(&mut world.center).unwrap();
    assert_eq!(
        (receipt.stored, receipt.refused.len()),
        (2, 0),
        "the center verified both purchases of terminal {terminal_id}: {receipt:?}"
    );

    // Card to card at a settlement terminal of this kind.
    let settlement_sam = installed_sam(&mut world, kind, Role::SettlementTerminal, "settlement");
    let store: Box<dyn TerminalStore> = Box::new(MemoryStore::default());
    let mut settlement =
        SettlementTerminal::new(settlement_sam, store, world.clock(), world.fork_rng()).unwrap();
    let moved = settlement
        .transfer(&mut card_a, &mut card_b, amount(800))
        .unwrap();
    assert_eq!(moved.source_balance_after, amount(2_700));
    assert_eq!((balance(&mut card_a), balance(&mut card_b)), (2_700, 800));
    let receipt = settlement.upload_transfers(&mut world.center).unwrap();
    assert!(
        receipt.stored >= 1 && receipt.refused.is_empty(),
        "{receipt:?}"
    );

    // The value received is spent at the payment terminal, which checks the settlement
    // terminal's signed record as the card's last writer.
    terminal.purchase(&mut card_b, amount(100)).unwrap();
    assert_eq!(balance(&mut card_b), 700);
}

#[test]
fn device_flows_with_software_sams() {
    device_flows(&Kind::Software);
}

#[test]
fn device_flows_with_pkcs11_sams() {
    let Some(module) = softhsm("device_flows_with_pkcs11_sams") else {
        return;
    };
    device_flows(&Kind::Pkcs11(Box::new(fresh_address(&module, "unused"))));
}
