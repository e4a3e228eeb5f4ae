//! The center's reconciliation (`valuecard_center::reconcile`) against the real records of a
//! running system: purchases not yet uploaded, a load left in flight by a power cut, and a
//! destroyed card replaced with its remaining value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_sim::read_purse;

#[test]
fn the_reconciliation_follows_uploads_loads_in_flight_and_restored_cards() {
    let mut world = world(7, 1);
    let (mut first, first_memory) = issued_card(&mut world, "first", 5_000);
    let (mut second, _) = issued_card(&mut world, "second", 2_000);
    let totals = world.center.reconciliation().unwrap();
    assert_eq!((totals.issued, totals.remaining), (7_000, 7_000));
    assert_eq!(totals.status(), ReconciliationStatus::Reconciled);

    // A purchase not uploaded, then a load that shows the lower balance.
    world.terminals[0]
        .purchase(&mut first, amount(1_200))
        .unwrap();
    let writes = {
        let start = first.card_mut().unwrap().eeprom_mut().writes();
        world.load(&mut first, amount(1)).unwrap();
        first.card_mut().unwrap().eeprom_mut().writes() - start
    };
    let totals = world.center.reconciliation().unwrap();
    assert_eq!((totals.spent, totals.difference()), (0, -1_200));
    assert_eq!(totals.status(), ReconciliationStatus::UploadsOutstanding);
    world.terminals[0].upload_usage(&mut world.center).unwrap();
    let totals = world.center.reconciliation().unwrap();
    assert_eq!((totals.spent, totals.purchases), (1_200, 1));
    assert_eq!(totals.status(), ReconciliationStatus::Reconciled);

    // A load whose answer is lost stays in flight until a dispenser settles it.
    arm_cut(&mut first, writes, 1, 1);
    assert!(world.load(&mut first, amount(300)).is_err());
    let totals = world.center.reconciliation().unwrap();
    assert_eq!((totals.in_flight, totals.in_flight_count), (300, 1));
    assert_eq!(totals.status(), ReconciliationStatus::LoadsInFlight);
    power_up(&mut world, &mut first, &first_memory);
    let card_id = read_purse(&mut first).unwrap().card_id;
    world.settle_card(&mut first, card_id).unwrap();
    let totals = world.center.reconciliation().unwrap();
    assert_eq!(totals.in_flight_count, 0);
    assert_eq!(
        totals.status(),
        ReconciliationStatus::Reconciled,
        "{totals:?}"
    );

    // A destroyed card: its remaining value moves to a replacement, and is counted once.
    let second_id = read_purse(&mut second).unwrap().card_id;
    let restoration = world.center.restore_card_holding(&second_id, 0).unwrap();
    let valuecard_center::lists::Restoration::Restored { amount: value } = restoration else {
        panic!("no holding period was asked: {restoration:?}")
    };
    assert_eq!(value.minor(), 2_000);
    let (mut replacement, _) = issued_card(&mut world, "replacement", value.minor());
    let totals = world.center.reconciliation().unwrap();
    assert_eq!((totals.restored, totals.issued), (2_000, 9_000));
    assert_eq!(
        totals.status(),
        ReconciliationStatus::Reconciled,
        "{totals:?}"
    );
    // With everything uploaded and settled, the remaining value is what the live cards hold.
    let held = read_purse(&mut first).unwrap().balance.minor()
        + read_purse(&mut replacement).unwrap().balance.minor();
    assert_eq!(totals.remaining, held);
    assert_eq!(totals.cards_with_remaining, 2);
}
