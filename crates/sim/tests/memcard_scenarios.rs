//! The memory-card scenario of the demo, run against a real center, real memory card images
//! and real machines: every attack refused, the torn payment finished by the machine that
//! was writing, another torn payment finished at another machine from the evidence the
//! writing machine reported to the center, and the center's memory-card books reconciled
//! from the uploads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use valuecard_center::memcard::MemcardStatus;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_sim::memcard_scenarios::memory_cards;
use valuecard_sim::{Storage, World};
use valuecard_terminal::memcard::RepairOutcome;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

#[test]
fn memory_cards_are_charged_spent_attacked_repaired_and_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::create(
        Storage::Directory(dir.path().join("world")),
        1,
        Date(20_500),
    )
    .unwrap();
    let show = memory_cards(&mut world, dir.path()).unwrap();

    assert_eq!(show.attacks.len(), 4, "{:?}", show.attacks);
    for attack in &show.attacks {
        assert!(attack.refused, "{}: {}", attack.name, attack.detail);
    }
    assert!(
        matches!(
            show.repairs.as_slice(),
            [
                RepairOutcome::Finished { .. },
                RepairOutcome::RestoredFromCenter { .. }
            ]
        ),
        "one torn payment finished from the machine's log, one from the center's evidence: {:?}",
        show.repairs
    );

    // Card 1: 5000 - 1200 - 800 - 400 (torn, finished) - 100; card 2 sealed: 3000 - 500
    // - 300 (torn at one machine, restored at the other) - 200.
    // Card 3 and 4 carry what the attacker wrote: no machine reads value from them.
    let balances: Vec<_> = show.cards.iter().map(|card| card.balance).collect();
    assert_eq!(
        balances,
        [Some(amount(2_500)), Some(amount(2_000)), None, None]
    );
    assert!(show.cards[1].sealed && !show.cards[0].sealed);

    let charged: u64 = show
        .writes
        .iter()
        .filter(|w| w.machine.starts_with("charge"))
        .map(|w| w.receipt.amount.minor())
        .sum();
    let spent: u64 = show
        .writes
        .iter()
        .filter(|w| w.machine.starts_with("payment"))
        .map(|w| w.receipt.amount.minor())
        .sum();
    assert_eq!((charged, spent), (10_000, 3_600));
    // The torn payments of 400 and 300 have no receipts of their own: one was finished from
    // its machine's log, the other counted by the center once the next record showed it.
    let spent = spent + 400 + 300;

    let books = world.center.reconciliation().unwrap();
    let memcards = books.memcards;
    assert_eq!(memcards.charged, charged);
    assert_eq!(memcards.spent, spent);
    // Card 3's last signed state (2000 - 300 - 500) stays on the books: the attacker broke his own
    // card's image, the value it held is still accounted for.
    assert_eq!(memcards.on_cards, 2_500 + 2_000 + 1_200);
    assert_eq!(memcards.gaps, 0, "the promoted torn payment closes its gap");
    assert_eq!(memcards.unexplained(), 0);
    assert_eq!(memcards.states_spent_twice, 0);
    assert_eq!(memcards.status(), MemcardStatus::Reconciled);
    assert_eq!(
        memcards.float_in_machines,
        show.float_granted.minor() - charged
    );
    assert_ne!(books.status(), ReconciliationStatus::Excess);
}
