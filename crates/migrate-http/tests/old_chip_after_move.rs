//! The owner of an old chip opens it and writes back the image it had before the move (its
//! purse on main keys, the moved balance still on it), then spends at a terminal that has
//! not synced since the move. The chip cannot be stopped offline; the center must see it:
//! once the purse provider reported the move, the old card is listed for every terminal, the
//! purchase uploaded from a state at or after the export is alerted `spent-after-move`, as
//! is a card-to-card transfer it sends at a settlement terminal that has not synced either,
//! and the reconciliation shows the amounts spent as value created.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_core::messages::center::ListReason;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_migrate::client::{self, Mode};
use valuecard_migrate::provider::report::report_pending;
use valuecard_migrate::setup::{demo_services, MoveKeys};
use valuecard_migrate_http::{MoveOptions, MoveSystem, ProviderSetup};
use valuecard_reader::InProcessReader;
use valuecard_settle_http::DatabaseLocation;
use valuecard_sim::{scenarios::sync_all, Storage, World};
use valuecard_terminal::TerminalError;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

#[test]
fn an_old_chip_written_back_and_spent_after_its_move_is_caught_at_the_center() {
    let today = SystemClock.today();
    let mut world = World::create(Storage::Memory, 2, today).unwrap();
    let old_memory = MemoryEeprom::new(EEPROM_SIZE);
    let card = world.manufacture_card(old_memory.clone()).unwrap();
    let mut old = InProcessReader::with_card("old", card);
    let old_id = world.issue(&mut old, amount(5_000)).unwrap();
    let card = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    let mut new = InProcessReader::with_card("new", card);
    let new_id = world.issue(&mut new, amount(700)).unwrap();
    let card = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    let mut friend = InProcessReader::with_card("friend", card);
    world.issue(&mut friend, amount(100)).unwrap();
    // The settlement terminal is installed before the move and does not sync after it.
    world.settlement().unwrap();

    let keys = MoveKeys::certify(&mut world.center, &demo_services(), &mut OsRng).unwrap();
    let admin = Arc::new(keys.admin().unwrap());
    let providers: Vec<_> = keys
        .offers()
        .iter()
        .map(|offer| Arc::new(keys.provider(offer.code()).unwrap()))
        .collect();
    for provider in &providers {
        provider
            .issue_area(admin.as_ref(), &mut old, today, &mut OsRng)
            .unwrap();
    }
    // The image the owner reads out of the chip before the move.
    let before_move = old_memory.snapshot();

    let system = MoveSystem::start(
        admin,
        providers
            .iter()
            .map(|provider| ProviderSetup {
                provider: provider.clone(),
                database: DatabaseLocation::Memory,
            })
            .collect(),
        &MoveOptions::in_memory(today),
    )
    .unwrap();
    let server = system.client();
    server.create_user("hanako", "a long passphrase").unwrap();
    for card in [old_id, new_id] {
        server
            .register_chip("hanako", "a long passphrase", &card)
            .unwrap();
    }
    client::run(
        &server,
        &mut old,
        "hanako",
        "a long passphrase",
        Mode::Upload,
        &mut |_| {},
    )
    .unwrap();
    let done = client::run(
        &server,
        &mut new,
        "hanako",
        "a long passphrase",
        Mode::Download,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(done.state, "done");
    let pool = system
        .provider_pool(valuecard_core::messages::services::ServiceCode(0x0001))
        .unwrap()
        .clone();
    let summary = pool
        .run_blocking(|db| report_pending(db, &mut world.center))
        .unwrap();
    assert_eq!(summary.reported, 1, "{summary:?}");
    system.shutdown();
    assert_eq!(
        world.center.listed_reason(&old_id).unwrap(),
        Some(ListReason::Migrated)
    );
    let reconciled = world.center.reconciliation().unwrap();
    assert_eq!(reconciled.moves.moved, 5_000);

    // The owner writes the old image back: the purse is on main keys again, 50.00 on it.
    old_memory.restore(&before_move);
    let mut restored = InProcessReader::with_card(
        "restored",
        Card::open(old_memory.clone(), world.fork_rng()).unwrap(),
    );
    // Terminal 2 has not synced since the move: offline, it cannot know.
    let spent = world.terminals[1]
        .purchase(&mut restored, amount(1_200))
        .unwrap();
    assert_eq!(spent.card_id, old_id);
    // And it sends value to a friend's card at the settlement terminal.
    let sent = world
        .transfer(&mut restored, &mut friend, amount(300))
        .unwrap();
    assert_eq!(sent.source, old_id);
    let uploaded = world.upload_transfers().unwrap();
    assert!(uploaded.refused.is_empty(), "{uploaded:?}");

    // Its next sync brings the purchase to the center, which sees it.
    sync_all(&mut world).unwrap();
    let alerts = world.center.alerts_for(&old_id.0).unwrap();
    let after_move: Vec<&str> = alerts
        .iter()
        .filter(|alert| alert.kind == "spent-after-move")
        .map(|alert| alert.detail.as_str())
        .collect();
    assert!(
        after_move.iter().any(|detail| detail.starts_with("spent")),
        "{alerts:?}"
    );
    assert!(
        after_move
            .iter()
            .any(|detail| detail.starts_with("sent 3.00 by transfer")),
        "{alerts:?}"
    );
    let after = world.center.reconciliation().unwrap();
    assert_eq!(after.status(), ReconciliationStatus::Excess, "{after:?}");
    assert_eq!(after.difference() - reconciled.difference(), 1_200 + 300);

    // And every terminal, now synced, refuses the old card by the list.
    for terminal in &mut world.terminals {
        assert!(matches!(
            terminal.purchase(&mut restored, amount(100)),
            Err(TerminalError::CardListed {
                reason: ListReason::Migrated,
                ..
            })
        ));
    }
}
