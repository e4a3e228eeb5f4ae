//! Memory cards (seed 001) at machines whose SAMs are PKCS#11 tokens, next to machines with
//! software SAMs, against an in-process center: float taken from the center, charges in the
//! clear and sealed (claim 4), payments at a PKCS#11 payment machine of values a software
//! charge machine wrote and the other way round, a reopened PKCS#11 SAM that keeps its float
//! and sequence, a replayed float grant refused, and the uploads the center accepts only if
//! every signature in them verifies, with its memory-card books reconciled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_address, installed_sam, softhsm, Kind};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::memcard::MemoryCard;
use valuecard_center::memcard::MemcardStatus;
use valuecard_core::cert::Role;
use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{MemcardLink, ValueArea, WriteKind};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::EmulatedReader;
use valuecard_sam::memcard::ValueFormat;
use valuecard_sam::{Sam, SamError};
use valuecard_sam_pkcs11::{Pkcs11Sam, TokenAddress};
use valuecard_sim::{Storage, World};
use valuecard_terminal::memcard::{ChargeMachine, MachineReceipt, PaymentMachine, PresentedCard};
use valuecard_terminal::store::MemoryStore;

type Reader = EmulatedReader<MemoryCard<MemoryEeprom>>;
type Charger = ChargeMachine<Box<dyn Sam>, MemoryStore>;
type Payer = PaymentMachine<Box<dyn Sam>, MemoryStore>;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn new_card(number: u8) -> Reader {
    let card = MemoryCard::manufacture(
        MemoryEeprom::new(EEPROM_SIZE),
        CardId([0xC1, 0, 0, 0, 0, 0, 0, number]),
    )
    .unwrap();
    EmulatedReader::with_card(format!("memory card {number}"), card)
}

fn sealed_on_card(reader: &mut Reader) -> bool {
    let content = PresentedCard::read(reader).unwrap().content().unwrap();
    matches!(content.value_area, ValueArea::Sealed { .. })
}

/// The address of the SAM object `object` in the test's token.
fn object_address(token: &TokenAddress, object: &str) -> TokenAddress {
    let mut address = token.clone();
    address.uri.object = object.to_owned();
    address
}

fn charge(
    world: &mut World,
    charger: &mut Charger,
    reader: &mut Reader,
    minor: u64,
    format: ValueFormat,
) -> MachineReceipt {
    let link: &mut dyn MemcardLink = &mut world.center;
    charger
        .charge(reader, amount(minor), format, Some(link))
        .unwrap()
}

fn pay(world: &mut World, payer: &mut Payer, reader: &mut Reader, minor: u64) -> MachineReceipt {
    let link: &mut dyn MemcardLink = &mut world.center;
    payer.pay(reader, amount(minor), Some(link)).unwrap()
}

#[test]
fn memory_card_machines_with_pkcs11_and_software_sams_serve_each_others_cards() {
    let Some(module) = softhsm("memory_card_machines_with_pkcs11_sams") else {
        return;
    };
    let token = fresh_address(&module, "unused");
    let pkcs11 = Kind::Pkcs11(Box::new(token.clone()));
    let mut world =
        World::create(Storage::Memory, 0, Date::from_ymd(2026, 11, 30).unwrap()).unwrap();

    // The PKCS#11 charge machine takes float from the center before it is put in service;
    // the same grant a second time is refused and changes nothing.
    let mut hsm_charge_sam = installed_sam(&mut world, &pkcs11, Role::ChargeMachine, "charger");
    let hsm_charger_id = hsm_charge_sam.device_id();
    let grant = world
        .center
        .request_float(hsm_charger_id, amount(10_000))
        .unwrap();
    assert_eq!(grant.amount, amount(10_000));
    assert_eq!(
        hsm_charge_sam.take_float_grant(&grant).unwrap(),
        amount(10_000)
    );
    assert!(matches!(
        hsm_charge_sam.take_float_grant(&grant),
        Err(SamError::FloatGrantRefused(_))
    ));
    assert_eq!(hsm_charge_sam.float(), amount(10_000));
    let mut hsm_charger = Charger::new(hsm_charge_sam, MemoryStore::default(), world.clock())
        .expect("a PKCS#11 SAM certified as a charge machine");
    let hsm_pay_sam = installed_sam(&mut world, &pkcs11, Role::PaymentMachine, "payer");
    let mut hsm_payer = Payer::new(hsm_pay_sam, MemoryStore::default(), world.clock()).unwrap();

    let soft_charge_sam = installed_sam(&mut world, &Kind::Software, Role::ChargeMachine, "-");
    let mut soft_charger =
        Charger::new(soft_charge_sam, MemoryStore::default(), world.clock()).unwrap();
    soft_charger
        .refill_float(&mut world.center, amount(5_000))
        .unwrap();
    let soft_pay_sam = installed_sam(&mut world, &Kind::Software, Role::PaymentMachine, "-");
    let mut soft_payer = Payer::new(soft_pay_sam, MemoryStore::default(), world.clock()).unwrap();
    hsm_charger
        .machine_mut()
        .update_lists(&mut world.center)
        .unwrap();
    hsm_payer
        .machine_mut()
        .update_lists(&mut world.center)
        .unwrap();
    soft_payer
        .machine_mut()
        .update_lists(&mut world.center)
        .unwrap();

    // Charged at the PKCS#11 machine, in the clear and sealed; both spent at the software
    // payment machine (which opens the token's seal with its own KO) and then at the
    // PKCS#11 one.
    let (mut plain, mut sealed) = (new_card(1), new_card(2));
    let first = charge(
        &mut world,
        &mut hsm_charger,
        &mut plain,
        3_000,
        ValueFormat::Plain,
    );
    assert_eq!(
        (first.kind, first.balance_after),
        (WriteKind::Charge, amount(3_000))
    );
    let second = charge(
        &mut world,
        &mut hsm_charger,
        &mut sealed,
        2_000,
        ValueFormat::Sealed,
    );
    assert!(second.sequence > first.sequence);
    assert!(sealed_on_card(&mut sealed));
    assert!(!sealed_on_card(&mut plain));
    assert_eq!(hsm_charger.float(), amount(5_000));
    let paid = pay(&mut world, &mut soft_payer, &mut plain, 1_200);
    assert_eq!(paid.balance_after, amount(1_800));
    let paid = pay(&mut world, &mut soft_payer, &mut sealed, 500);
    assert_eq!(paid.balance_after, amount(1_500));
    assert!(sealed_on_card(&mut sealed), "a sealed value stays sealed");
    let paid = pay(&mut world, &mut hsm_payer, &mut plain, 300);
    assert_eq!(paid.balance_after, amount(1_500));
    let paid = pay(&mut world, &mut hsm_payer, &mut sealed, 250);
    assert_eq!(paid.balance_after, amount(1_250));
    assert!(sealed_on_card(&mut sealed));

    // Charged at the software machine (sealed under its own value key): the PKCS#11 payment
    // machine opens it with the key it derives from KO in the token.
    let mut from_software = new_card(3);
    charge(
        &mut world,
        &mut soft_charger,
        &mut from_software,
        1_000,
        ValueFormat::Sealed,
    );
    let paid = pay(&mut world, &mut hsm_payer, &mut from_software, 400);
    assert_eq!(
        (paid.balance_before, paid.balance_after),
        (amount(1_000), amount(600))
    );
    assert_eq!(hsm_payer.machine().sam().memcard_sequence(), paid.sequence);

    // Above the float the PKCS#11 SAM refuses, and the card is unchanged.
    let counter_before = PresentedCard::read(&mut plain).unwrap().counter();
    let link: &mut dyn MemcardLink = &mut world.center;
    assert!(hsm_charger
        .charge(&mut plain, amount(5_001), ValueFormat::Plain, Some(link))
        .is_err());
    assert_eq!(
        PresentedCard::read(&mut plain).unwrap().counter(),
        counter_before
    );

    // The PKCS#11 charge machine's SAM closed and opened again: its float, last grant and
    // sequence come back from the token.
    let sequence_before = hsm_charger.machine().sam().memcard_sequence();
    assert_eq!(sequence_before, second.sequence);
    let (sam, store) = hsm_charger.into_parts();
    drop(sam);
    let mut reopened = Pkcs11Sam::open(&object_address(&token, "charger"))
        .unwrap()
        .with_clock(world.clock());
    assert_eq!(reopened.device_id(), hsm_charger_id);
    assert_eq!(reopened.float(), amount(5_000));
    assert_eq!(reopened.memcard_sequence(), sequence_before);
    assert!(matches!(
        reopened.take_float_grant(&grant),
        Err(SamError::FloatGrantRefused(_))
    ));
    assert_eq!(reopened.float(), amount(5_000));
    let mut hsm_charger = Charger::new(Box::new(reopened), store, world.clock()).unwrap();
    let third = charge(
        &mut world,
        &mut hsm_charger,
        &mut from_software,
        700,
        ValueFormat::Sealed,
    );
    assert_eq!(third.balance_after, amount(1_300));
    assert!(third.sequence > sequence_before);
    assert_eq!(hsm_charger.float(), amount(4_300));
    let paid = pay(&mut world, &mut soft_payer, &mut from_software, 300);
    assert_eq!(paid.balance_after, amount(1_000));

    // Every machine uploads; the center verifies every signature and its books close.
    let mut stored = 0;
    for receipt in [
        hsm_charger
            .machine_mut()
            .upload_writes(&mut world.center)
            .unwrap(),
        hsm_payer
            .machine_mut()
            .upload_writes(&mut world.center)
            .unwrap(),
        soft_charger
            .machine_mut()
            .upload_writes(&mut world.center)
            .unwrap(),
        soft_payer
            .machine_mut()
            .upload_writes(&mut world.center)
            .unwrap(),
    ] {
        assert!(receipt.refused.is_empty(), "{receipt:?}");
        stored += receipt.stored;
    }
    assert_eq!(stored, 10);
    let books = world.center.reconciliation().unwrap().memcards;
    assert_eq!(books.status(), MemcardStatus::Reconciled, "{books:?}");
    assert_eq!(books.charged, 3_000 + 2_000 + 1_000 + 700);
    assert_eq!(books.spent, 1_200 + 500 + 300 + 250 + 400 + 300);
    assert_eq!(books.on_cards, 1_500 + 1_250 + 1_000);
    assert_eq!(books.float_granted, 10_000 + 5_000);
    assert_eq!(books.float_in_machines, 4_300 + 4_000);
}
