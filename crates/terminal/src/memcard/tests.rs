//! The machines against the memory-card double: charges and payments, the attacks a cheap
//! card cannot stop itself (each refused, each judged by its error and an unchanged card),
//! and writes cut at every UPDATE BINARY, repaired on the next presentation.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use valuecard_core::cert::Role;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::memcard::{map, PlainValue, ValueArea, WriteKind, COUNTER_START};
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};
use valuecard_sam::testing::TestCenter;
use valuecard_sam::{MemcardCheckError, Sam, SamError, SoftwareSam, ValueFormat};

use super::testing::{Cut, MemcardLinkDouble, MemoryCardDouble};
use super::*;
use crate::store::{LocalLists, MemcardLog, MemoryStore, SqliteStore, TerminalStore, WriteStatus};

const TODAY: Date = Date(20_600);

pub(super) fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

pub(super) fn card(n: u8) -> MemoryCardDouble {
    MemoryCardDouble::new(CardId([0x4D, 0, 0, 0, 0, 0, 0, n]))
}

pub(super) type Charger = ChargeMachine<SoftwareSam, MemoryStore>;
pub(super) type Payer = PaymentMachine<SoftwareSam, MemoryStore>;

pub(super) struct World {
    pub(super) link: MemcardLinkDouble,
    pub(super) charger: Charger,
    pub(super) payer: Payer,
    pub(super) payer_2: Payer,
    pub(super) rng: ChaCha20Rng,
}

pub(super) fn world() -> World {
    world_seeded(1)
}

fn world_seeded(seed: u64) -> World {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut center = TestCenter::new(&mut rng, DeviceId([0xCE; 8]), TODAY);
    let charge_sam = center.install(Role::ChargeMachine, &mut rng);
    let pay_sam = center.install(Role::PaymentMachine, &mut rng);
    let pay_sam_2 = center.install(Role::PaymentMachine, &mut rng);
    let mut link = MemcardLinkDouble::new(center);
    for sam in [&charge_sam, &pay_sam, &pay_sam_2] {
        link.know(sam.certificate().unwrap());
    }
    let clock = || Box::new(FixedClock(TODAY));
    let mut charger = ChargeMachine::new(charge_sam, MemoryStore::default(), clock()).unwrap();
    charger.refill_float(&mut link, amount(100_000)).unwrap();
    World {
        charger,
        payer: PaymentMachine::new(pay_sam, MemoryStore::default(), clock()).unwrap(),
        payer_2: PaymentMachine::new(pay_sam_2, MemoryStore::default(), clock()).unwrap(),
        link,
        rng,
    }
}

/// The card's balance as a payment machine's SAM checks it.
pub(super) fn balance(payer: &Payer, card: &mut MemoryCardDouble) -> Result<Amount, TerminalError> {
    let presented = PresentedCard::read(card)?;
    let state = payer
        .machine()
        .sam()
        .check_memcard_content(&presented.content()?, TODAY)
        .map_err(MemcardRefusal::from_sam)?;
    Ok(state.balance())
}

pub(super) fn refused_state(result: Result<MachineReceipt, TerminalError>) -> MemcardCheckError {
    match result {
        Err(TerminalError::Memcard(MemcardRefusal::State(state))) => state,
        other => panic!("expected a refused card state, got {other:?}"),
    }
}

#[test]
fn a_card_is_charged_then_spent_at_two_payment_machines_and_the_records_go_up() {
    let mut w = world();
    let mut card = card(1);
    let charged = w
        .charger
        .charge(&mut card, amount(5_000), ValueFormat::Plain, None)
        .unwrap();
    assert_eq!(charged.balance_after, amount(5_000));
    assert_eq!(charged.counter_after, COUNTER_START - 1);
    assert_eq!(card.counter(), COUNTER_START - 1);
    assert_eq!(w.charger.float(), amount(95_000));
    let first = w.payer.pay(&mut card, amount(1_200), None).unwrap();
    assert_eq!(
        (first.balance_before, first.balance_after),
        (amount(5_000), amount(3_800))
    );
    let second = w.payer_2.pay(&mut card, amount(800), None).unwrap();
    assert_eq!(second.balance_after, amount(3_000));
    assert_eq!(card.counter(), COUNTER_START - 3);
    assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(3_000));
    // The second machine's certificate is on the card now.
    let content = PresentedCard::read(&mut card).unwrap().content().unwrap();
    assert_eq!(
        content.certificate.unwrap().subject(),
        w.payer_2.machine().device_id()
    );

    for (machine, expected) in [(0, 1u32), (1, 1), (2, 1)] {
        let receipt = match machine {
            0 => w.charger.machine_mut().upload_writes(&mut w.link),
            1 => w.payer.machine_mut().upload_writes(&mut w.link),
            _ => w.payer_2.machine_mut().upload_writes(&mut w.link),
        }
        .unwrap();
        assert_eq!(receipt.stored, expected);
    }
    // A second upload sends nothing.
    assert_eq!(
        w.payer
            .machine_mut()
            .upload_writes(&mut w.link)
            .unwrap()
            .stored,
        0
    );
    // The records chain: each payment starts from the state the one before wrote.
    let records: Vec<_> = w.link.records.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(records[1].previous.as_ref(), Some(&records[0].written));
    assert_eq!(records[2].previous.as_ref(), Some(&records[1].written));
}

#[test]
fn claim_4_a_sealed_value_stays_sealed_from_charge_to_payment() {
    let mut w = world();
    let mut card = card(1);
    w.charger
        .charge(&mut card, amount(4_000), ValueFormat::Sealed, None)
        .unwrap();
    let area = &card.memory()[map::VALUE_AREA as usize..][..48];
    assert_eq!(area[0], valuecard_core::messages::memcard::format::SEALED);
    assert!(!area.windows(8).any(|w| w == amount(4_000).to_be_bytes()));
    let paid = w.payer.pay(&mut card, amount(1_500), None).unwrap();
    assert_eq!(paid.balance_after, amount(2_500));
    let content = PresentedCard::read(&mut card).unwrap().content().unwrap();
    assert!(matches!(content.value_area, ValueArea::Sealed { .. }));
    assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(2_500));

    // A sealed value altered on the card.
    let mut altered = content.value_area.encode();
    altered[5] ^= 0x01;
    let before = card.clone();
    card.write_back(&{
        let mut image = card.memory().to_vec();
        image[map::VALUE_AREA as usize..][..48].copy_from_slice(&altered);
        image
    });
    assert_ne!(card.counter(), before.counter());
    assert_eq!(
        refused_state(w.payer.pay(&mut card, amount(1), None)),
        MemcardCheckError::BadSignature
    );
}

#[test]
fn an_older_image_written_back_is_refused() {
    let mut w = world();
    let mut card = card(1);
    w.charger
        .charge(&mut card, amount(5_000), ValueFormat::Plain, None)
        .unwrap();
    let rich = card.memory().to_vec();
    w.payer.pay(&mut card, amount(4_000), None).unwrap();
    card.write_back(&rich);
    let image = card.memory().to_vec();
    assert_eq!(
        refused_state(w.payer_2.pay(&mut card, amount(4_000), None)),
        MemcardCheckError::StaleImage {
            signed_counter: COUNTER_START - 1,
            card_counter: COUNTER_START - 3,
        }
    );
    assert_eq!(card.memory(), &image[..], "a refused card is not written");
    assert!(w.payer_2.machine().store().writes().unwrap().is_empty());
}

#[test]
fn an_image_copied_onto_another_card_is_refused() {
    let mut w = world();
    let mut original = card(1);
    w.charger
        .charge(&mut original, amount(5_000), ValueFormat::Plain, None)
        .unwrap();
    let mut copy = card(2);
    copy.write_back(original.memory());
    assert_eq!(
        refused_state(w.payer.pay(&mut copy, amount(1_000), None)),
        MemcardCheckError::BadSignature
    );
    // The original still pays.
    w.payer.pay(&mut original, amount(1_000), None).unwrap();
}

#[test]
fn an_amount_edited_by_hand_and_a_signature_from_another_card_are_refused() {
    let mut w = world();
    let mut card_1 = card(1);
    let mut card_2 = card(2);
    for card in [&mut card_1, &mut card_2] {
        w.charger
            .charge(card, amount(1_000), ValueFormat::Plain, None)
            .unwrap();
    }
    // Same amount, same date, same counter: only the card ID tells the states apart.
    let mut edited = card_1.memory().to_vec();
    edited[map::VALUE_AREA as usize..][..48].copy_from_slice(
        &ValueArea::Plain(PlainValue {
            date: TODAY,
            amount: amount(90_000),
        })
        .encode(),
    );
    card_1.write_back(&edited);
    assert_eq!(
        refused_state(w.payer.pay(&mut card_1, amount(50_000), None)),
        MemcardCheckError::BadSignature
    );

    let mut borrowed = card_2.memory().to_vec();
    let mut other = card(3);
    w.charger
        .charge(&mut other, amount(1_000), ValueFormat::Plain, None)
        .unwrap();
    borrowed[map::SIGNATURE_AREA as usize..][..64]
        .copy_from_slice(&other.memory()[map::SIGNATURE_AREA as usize..][..64]);
    let mut image = card_2.memory().to_vec();
    image[map::SIGNATURE_AREA as usize..][..64]
        .copy_from_slice(&borrowed[map::SIGNATURE_AREA as usize..][..64]);
    // Only the signature area is written: the counter stays.
    let at = map::SIGNATURE_AREA as usize;
    card_2
        .transmit_raw(&update_binary(map::SIGNATURE_AREA, &image[at..at + 64]).encode())
        .unwrap();
    assert_eq!(card_2.counter(), COUNTER_START - 1);
    assert_eq!(
        refused_state(w.payer.pay(&mut card_2, amount(500), None)),
        MemcardCheckError::BadSignature
    );
}

#[test]
fn a_machine_of_another_center_and_a_listed_machine_are_refused() {
    let mut w = world();
    // Another center with the same name but its own root key installs a charge machine,
    // which charges a card from its own float.
    let mut foreign = world_seeded(2);
    let mut card = card(1);
    foreign
        .charger
        .charge(&mut card, amount(9_000), ValueFormat::Plain, None)
        .unwrap();
    assert!(matches!(
        refused_state(w.payer.pay(&mut card, amount(100), None)),
        MemcardCheckError::Certificate(_)
    ));

    // This center lists its own charge machine (stolen): the cards it wrote are refused.
    let mut card = card_of(&mut w, 1, 2_000);
    let stolen = w.charger.machine().device_id();
    let mut lists = LocalLists::default();
    lists.terminals.insert(stolen, ([0; 32], 0));
    let (sam, mut store) = w.payer.into_parts();
    store.save_lists(&lists).unwrap();
    let mut payer = PaymentMachine::new(sam, store, Box::new(FixedClock(TODAY))).unwrap();
    assert_eq!(
        payer.pay(&mut card, amount(100), None),
        Err(TerminalError::Memcard(MemcardRefusal::WriterListed(stolen)))
    );
    assert_eq!(card.counter(), COUNTER_START - 1);
}

pub(super) fn card_of(w: &mut World, n: u8, minor: u64) -> MemoryCardDouble {
    let mut card = card(n);
    w.charger
        .charge(&mut card, amount(minor), ValueFormat::Plain, None)
        .unwrap();
    card
}

#[test]
fn a_listed_card_is_refused() {
    let mut w = world();
    let mut card = card_of(&mut w, 1, 2_000);
    let mut lists = LocalLists::default();
    lists.cards.insert(
        CardId([0x4D, 0, 0, 0, 0, 0, 0, 1]),
        valuecard_core::messages::center::ListReason::Cloned,
    );
    let (sam, mut store) = w.payer.into_parts();
    store.save_lists(&lists).unwrap();
    let mut payer = PaymentMachine::new(sam, store, Box::new(FixedClock(TODAY))).unwrap();
    let writes = card.writes;
    assert!(matches!(
        payer.pay(&mut card, amount(100), None),
        Err(TerminalError::CardListed { .. })
    ));
    assert_eq!(card.writes, writes);
    assert!(payer.machine().store().writes().unwrap().is_empty());
}

#[test]
fn roles_are_kept_apart() {
    let mut w = world();
    let (sam, store) = w.payer.into_parts();
    // A payment machine's SAM does not make a charge machine.
    assert!(matches!(
        ChargeMachine::new(sam, store, Box::new(FixedClock(TODAY))),
        Err(TerminalError::Memcard(MemcardRefusal::WrongMachine(
            Role::PaymentMachine
        )))
    ));
    // A purse terminal's SAM makes neither.
    let purse_sam = w.link.center.install(Role::PaymentTerminal, &mut w.rng);
    assert!(matches!(
        PaymentMachine::new(
            purse_sam,
            MemoryStore::default(),
            Box::new(FixedClock(TODAY))
        ),
        Err(TerminalError::Memcard(MemcardRefusal::WrongMachine(
            Role::PaymentTerminal
        )))
    ));
    // A payment machine driven to charge: its SAM refuses, the card is not touched.
    let mut card = card(1);
    let machine = w.payer_2.machine_mut();
    let (verified, _) = machine.present(&mut card, None).unwrap();
    assert!(matches!(
        machine.begin_write(verified, WriteKind::Charge, amount(10), ValueFormat::Plain),
        Err(TerminalError::Sam(SamError::MemcardRefused(_)))
    ));
    assert_eq!(card.writes, 0);
}

#[test]
fn a_charge_above_the_float_and_a_payment_above_the_balance_touch_nothing() {
    let mut w = world();
    let mut card = card(1);
    assert_eq!(
        w.charger
            .charge(&mut card, amount(100_001), ValueFormat::Plain, None),
        Err(TerminalError::Sam(SamError::InsufficientFloat {
            float: amount(100_000),
            amount: amount(100_001)
        }))
    );
    assert_eq!(card.writes, 0);
    assert!(w.charger.machine().store().writes().unwrap().is_empty());
    let mut card = card_of(&mut w, 2, 300);
    let writes = card.writes;
    assert_eq!(
        w.payer.pay(&mut card, amount(301), None),
        Err(TerminalError::Memcard(
            MemcardRefusal::InsufficientBalance {
                balance: amount(300),
                amount: amount(301)
            }
        ))
    );
    assert_eq!(card.writes, writes);
    assert!(w.payer.machine().store().writes().unwrap().is_empty());
}

/// The sum of what a machine's log holds as done, signed: charges positive.
pub(super) fn logged_done(log: &impl MemcardLog) -> i64 {
    log.writes()
        .unwrap()
        .iter()
        .filter(|w| w.status == WriteStatus::Done)
        .map(|w| {
            let amount = w.record.amount().unwrap().minor() as i64;
            match w.record.kind {
                WriteKind::Charge => amount,
                WriteKind::Payment => -amount,
            }
        })
        .sum()
}

pub(super) fn pending(log: &impl MemcardLog) -> usize {
    log.writes()
        .unwrap()
        .iter()
        .filter(|w| w.status == WriteStatus::Pending)
        .count()
}

/// The UPDATE BINARY commands of a first write by a machine: the value area, the one chunk
/// of the certificate area that differs from the card's (the rest is zero on both), the
/// signature.
const WRITES_PER_WRITE: usize = 3;

#[test]
fn a_charge_cut_at_any_write_is_finished_when_the_card_comes_back() {
    for at in 0..WRITES_PER_WRITE {
        for cut in [Cut::Before, Cut::After] {
            let mut w = world();
            let mut card = card(1);
            card.cut_at_write(at, cut);
            assert!(
                w.charger
                    .charge(&mut card, amount(2_000), ValueFormat::Plain, None)
                    .is_err(),
                "cut {cut:?} at write {at}"
            );
            assert_eq!(card.writes, at + usize::from(cut == Cut::After));
            assert_eq!(pending(w.charger.machine().store()), 1);
            // The float is spent: the money was taken in.
            assert_eq!(w.charger.float(), amount(98_000));
            // Meanwhile the card shows either no value (the cut came before the first
            // write), or the whole charge (only the answer to the signature was lost), or it
            // does not verify at all: never another value.
            let untouched = at == 0 && cut == Cut::Before;
            let whole = at == WRITES_PER_WRITE - 1 && cut == Cut::After;
            match balance(&w.payer, &mut card) {
                Ok(found) if untouched => assert_eq!(found, Amount::ZERO),
                Ok(found) => assert_eq!((found, whole), (amount(2_000), true), "{cut:?} {at}"),
                Err(_) => assert!(!untouched && !whole, "cut {cut:?} at {at}"),
            }
            // Presented again for a new charge: the torn one is finished first.
            let receipt = w
                .charger
                .charge(&mut card, amount(500), ValueFormat::Plain, None)
                .unwrap();
            assert_eq!(receipt.repairs.len(), 1, "cut {cut:?} at {at}");
            assert_eq!(receipt.balance_after, amount(2_500));
            assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(2_500));
            assert_eq!(pending(w.charger.machine().store()), 0);
            assert_eq!(logged_done(w.charger.machine().store()), 2_500);
            assert_eq!(w.charger.float(), amount(97_500));
        }
    }
}

#[test]
fn a_payment_cut_at_any_write_is_finished_or_voided_when_the_card_comes_back() {
    for at in 0..WRITES_PER_WRITE {
        for cut in [Cut::Before, Cut::After] {
            let mut w = world();
            let mut card = card_of(&mut w, 1, 5_000);
            card.cut_at_write(at, cut);
            assert!(w.payer.pay(&mut card, amount(1_000), None).is_err());
            let receipt = w.payer.pay(&mut card, amount(100), None).unwrap();
            let landed = !(at == 0 && cut == Cut::Before);
            let expected_repair = if landed {
                RepairOutcome::Finished { sequence: 1 }
            } else {
                RepairOutcome::Voided { sequence: 1 }
            };
            assert_eq!(receipt.repairs, [expected_repair], "cut {cut:?} at {at}");
            let spent = if landed { 1_100 } else { 100 };
            assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(5_000 - spent));
            assert_eq!(logged_done(w.payer.machine().store()), -(spent as i64));
            assert_eq!(pending(w.payer.machine().store()), 0);
        }
    }
}

#[test]
fn a_card_torn_at_one_machine_is_refused_elsewhere_until_that_machine_finishes_it() {
    let mut w = world();
    let mut card = card_of(&mut w, 1, 5_000);
    // Cut before the certificate: the value is written, the old signature stays.
    card.cut_at_write(1, Cut::Before);
    assert!(w.payer.pay(&mut card, amount(1_000), None).is_err());
    assert_eq!(
        refused_state(w.payer_2.pay(&mut card, amount(1), Some(&mut w.link))),
        MemcardCheckError::BadSignature
    );
    let receipt = w.payer.pay(&mut card, amount(1), None).unwrap();
    assert_eq!(receipt.repairs, [RepairOutcome::Finished { sequence: 1 }]);
    assert_eq!(
        w.payer_2
            .pay(&mut card, amount(1), None)
            .unwrap()
            .balance_after,
        amount(3_998)
    );
}

#[test]
fn a_damaged_signature_is_written_back_from_the_center_when_the_card_shows_its_state() {
    let mut w = world();
    let mut card = card_of(&mut w, 1, 5_000);
    w.payer.pay(&mut card, amount(1_000), None).unwrap();
    w.payer.machine_mut().upload_writes(&mut w.link).unwrap();
    // The signature area is overwritten (its writes leave the counter).
    card.transmit_raw(&update_binary(map::SIGNATURE_AREA, &[0x55; 64]).encode())
        .unwrap();
    assert!(w.payer_2.pay(&mut card, amount(1), None).is_err());
    let receipt = w
        .payer_2
        .pay(&mut card, amount(1), Some(&mut w.link))
        .unwrap();
    assert_eq!(
        receipt.repairs,
        [RepairOutcome::RestoredFromCenter {
            writer: w.payer.machine().device_id(),
            counter: COUNTER_START - 2,
        }]
    );
    assert_eq!(receipt.balance_after, amount(3_999));

    // The center's evidence does not fit a card that was written since: refused.
    let mut card = card_of(&mut w, 2, 5_000);
    w.charger.machine_mut().upload_writes(&mut w.link).unwrap();
    let mut image = card.memory().to_vec();
    image[map::SIGNATURE_AREA as usize..][..64].copy_from_slice(&[0x55; 64]);
    card.write_back(&image);
    assert_eq!(
        refused_state(w.payer.pay(&mut card, amount(1), Some(&mut w.link))),
        MemcardCheckError::BadSignature
    );
}

#[test]
fn the_sqlite_log_carries_a_torn_charge_across_a_restart() {
    let mut w = world();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charger.db");
    let (sam, _) = w.charger.into_parts();
    let image = sam.to_image();
    let open = |image: &[u8]| {
        let sam = SoftwareSam::from_image(image)
            .unwrap()
            .with_clock(Box::new(FixedClock(TODAY)));
        ChargeMachine::new(
            sam,
            SqliteStore::open(&path).unwrap(),
            Box::new(FixedClock(TODAY)),
        )
        .unwrap()
    };
    let mut charger = open(&image);
    let mut card = card(1);
    card.cut_at_write(0, Cut::Before);
    assert!(charger
        .charge(&mut card, amount(700), ValueFormat::Plain, None)
        .is_err());
    let image = charger.machine().sam().to_image();
    drop(charger);
    let mut charger = open(&image);
    assert_eq!(charger.float(), amount(99_300));
    let receipt = charger
        .charge(&mut card, amount(300), ValueFormat::Plain, None)
        .unwrap();
    assert_eq!(receipt.repairs, [RepairOutcome::Redone { sequence: 1 }]);
    assert_eq!(receipt.sequence, 2);
    assert_eq!(balance(&w.payer, &mut card).unwrap(), amount(1_000));
    assert_eq!(
        charger
            .machine_mut()
            .upload_writes(&mut w.link)
            .unwrap()
            .stored,
        2
    );
}

/// A reader in front of a card that always reports the same counter: a card that does not
/// lower it (or a reader that lies about it).
struct StuckCounter<'a> {
    card: &'a mut MemoryCardDouble,
    counter: u32,
}

impl valuecard_reader::CardReader for StuckCounter<'_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, valuecard_reader::ReaderError> {
        let mut response = self.card.transmit_raw(apdu)?;
        let reads_counter =
            apdu.get(1) == Some(&INS_READ_BINARY) && apdu.get(2..4) == Some(&[0, 0]);
        if reads_counter && response.len() >= 12 + 2 {
            response[8..12].copy_from_slice(&self.counter.to_be_bytes());
        }
        Ok(response)
    }

    fn name(&self) -> String {
        "stuck counter".into()
    }
}

#[test]
fn a_card_that_does_not_lower_its_counter_is_caught_and_the_write_stays_pending() {
    let mut w = world();
    let mut card = card_of(&mut w, 1, 3_000);
    let counter = card.counter();
    let mut stuck = StuckCounter {
        card: &mut card,
        counter,
    };
    assert_eq!(
        w.payer.pay(&mut stuck, amount(100), None),
        Err(TerminalError::Memcard(MemcardRefusal::CounterMismatch {
            expected: counter - 1,
            found: counter,
        }))
    );
    assert_eq!(pending(w.payer.machine().store()), 1);
    // Through an honest reader the card shows the written value: the write is finished.
    let receipt = w.payer.pay(&mut card, amount(1), None).unwrap();
    assert_eq!(receipt.repairs, [RepairOutcome::Finished { sequence: 1 }]);
    assert_eq!(receipt.balance_after, amount(2_899));
}
