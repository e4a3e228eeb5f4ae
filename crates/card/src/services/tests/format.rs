//! FORMAT AREA by the administrative SAM, and what SELECT shows of the areas.

use super::*;
use valuecard_core::limits::CHIP_AREAS_MAX;
use valuecard_core::messages::services::AreaSummary;

#[test]
fn select_shows_the_card_and_its_areas() {
    let mut chip = Chip::new(1, 10_000);
    let fci = chip.fci();
    assert_eq!(fci.card_id, testing::card_id(1));
    assert!(fci.areas.is_empty());
    assert!(chip.stored().services.is_empty());

    // Three providers' services, each at issuance (main keys).
    for service in [PURSE, TRANSIT, SHOP] {
        assert_eq!(chip.format(service, KeyState::Main).sw, StatusWord::SUCCESS);
    }
    let fci = chip.fci();
    assert_eq!(fci.card_id, testing::card_id(1));
    let expected: Vec<AreaSummary> = [PURSE, TRANSIT, SHOP]
        .iter()
        .map(|service| AreaSummary {
            service: service.code,
            kind: service.kind,
            key_state: KeyState::Main,
            provider: testing::service_provider(service.provider).1.subject(),
            mover: testing::service_transfer(service.provider).1.subject(),
            exported_for: None,
            imported_for: None,
        })
        .collect();
    assert_eq!(fci.areas, expected);

    // Each area holds its provider's two keys for this card, and the content of a fresh
    // area of its kind (the purse's value is the purse's balance).
    let stored = chip.stored();
    assert_eq!(stored.services.areas.len(), 3);
    for service in [PURSE, TRANSIT, SHOP] {
        let area = stored.services.area(service.code).unwrap();
        assert_eq!(area.format, service.format());
        assert_eq!(area.key_state, KeyState::Main);
        assert_eq!(area.key_version, 1);
        assert!(area.main_key == service.key(1, KeyState::Main));
        assert!(area.temporary_key == service.key(1, KeyState::Temporary));
        assert_eq!(
            area.mover_certificate,
            testing::service_transfer(service.provider).1
        );
        assert_eq!(area.content, AreaContent::empty(service.kind));
        assert_eq!((area.exported_for, area.imported), (None, None));
    }
    // Formatting the purse's area changes nothing of its value.
    assert_eq!(stored.balance, amount(10_000));
    assert_eq!(stored.counter, 0);
    assert_eq!(chip.purchase(100), StatusWord::SUCCESS);
}

#[test]
fn an_area_can_start_on_temporary_keys() {
    let mut chip = Chip::new(2, 0);
    assert_eq!(
        chip.format(TRANSIT, KeyState::Temporary).sw,
        StatusWord::SUCCESS
    );
    assert_eq!(chip.fci().areas[0].key_state, KeyState::Temporary);
    assert_eq!(chip.area(TRANSIT).key_state, KeyState::Temporary);
}

#[test]
fn the_same_format_again_succeeds_without_a_change() {
    let mut chip = Chip::new(1, 0);
    assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    let writes = chip.writes();
    // A repeated S10: a new challenge, the packages sealed again with fresh randomness,
    // the same keys.
    for _ in 0..2 {
        assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
    }
    assert_eq!(chip.writes(), writes, "a repeated format wrote");
    assert_eq!(chip.stored_bytes(), before);
    assert_eq!(chip.fci().areas.len(), 1);
}

#[test]
fn a_different_format_over_an_existing_area_is_refused() {
    let mut chip = Chip::new(1, 0);
    assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    let smaller = AreaFormat {
        capacity: 4,
        ..TRANSIT.format()
    };
    let points = AreaFormat {
        kind: ServiceKind::Points,
        ..TRANSIT.format()
    };
    // Another provider's format and keys under the same service code.
    let other_provider = testing::area_format(TRANSIT.code, ServiceKind::Tickets, 3);
    for (format, provider) in [(smaller, 2), (points, 2), (other_provider, 3)] {
        let response = chip.format_as(format, provider, KeyState::Main);
        assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
        assert_eq!(chip.stored_bytes(), before);
    }
    // The same format with other keys (provider 3's packages for provider 2's format are
    // refused before that, as packages from the wrong SAMs).
    let response = chip.format_as(TRANSIT.format(), 3, KeyState::Main);
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn a_ninth_area_is_refused() {
    let mut chip = Chip::new(1, 0);
    let service = |i: u16| Service {
        code: ServiceCode(0x0300 + i),
        kind: if i.is_multiple_of(2) {
            ServiceKind::Tickets
        } else {
            ServiceKind::Points
        },
        provider: 2 + (i % 3) as u8,
    };
    for i in 0..CHIP_AREAS_MAX as u16 {
        assert_eq!(
            chip.format(service(i), KeyState::Main).sw,
            StatusWord::SUCCESS,
            "area {i}"
        );
    }
    let before = chip.stored_bytes();
    let ninth = service(CHIP_AREAS_MAX as u16);
    assert_eq!(
        chip.format(ninth, KeyState::Main).sw,
        StatusWord::NOT_ENOUGH_MEMORY
    );
    assert_eq!(chip.stored_bytes(), before);
    assert_eq!(chip.stored().services.areas.len(), CHIP_AREAS_MAX);
    assert_eq!(chip.fci().areas.len(), CHIP_AREAS_MAX);
    // A repeat of an existing one is still answered.
    assert_eq!(
        chip.format(service(0), KeyState::Main).sw,
        StatusWord::SUCCESS
    );
}

#[test]
fn a_second_purse_area_is_refused() {
    let mut chip = Chip::new(1, 0);
    assert_eq!(chip.format(PURSE, KeyState::Main).sw, StatusWord::SUCCESS);
    let before = chip.stored_bytes();
    let second = Service {
        code: ServiceCode(0x0002),
        ..PURSE
    };
    assert_eq!(
        chip.format(second, KeyState::Main).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn a_chip_refuses_what_its_memory_cannot_keep() {
    use valuecard_core::limits::{AREA_TICKETS_MAX, TLV_VALUE_MAX};
    use valuecard_core::messages::services::{ServiceOperation, UpdateArea};
    // Tickets areas of the largest capacity, formatted and filled as far as the chip takes:
    // the areas together are one field of the image, so the chip runs out of memory before
    // eight full areas. What it refuses ("not enough memory") changes nothing, and the card
    // still powers up.
    let mut chip = Chip::new(1, 5_000);
    let mut refused = 0;
    for i in 0..CHIP_AREAS_MAX as u16 {
        let service = Service {
            code: ServiceCode(0x0400 + i),
            kind: ServiceKind::Tickets,
            provider: 2,
        };
        let format = AreaFormat {
            capacity: AREA_TICKETS_MAX as u16,
            ..service.format()
        };
        let before = chip.stored_bytes();
        let sw = chip.format_as(format, service.provider, KeyState::Main).sw;
        if sw != StatusWord::SUCCESS {
            assert_eq!(sw, StatusWord::NOT_ENOUGH_MEMORY);
            assert_eq!(chip.stored_bytes(), before);
            refused += 1;
            continue;
        }
        for ticket in 0..AREA_TICKETS_MAX as u32 {
            let mut channel = chip.open(service, KeyState::Main).unwrap();
            let before = chip.stored_bytes();
            let operation = UpdateArea {
                operation: ServiceOperation::IssueTicket(carnet(ticket, 10)),
            };
            if let Err(sw) = chip.secured(&mut channel, ins::UPDATE_AREA, &operation.encode()) {
                assert_eq!(sw, StatusWord::NOT_ENOUGH_MEMORY);
                assert_eq!(chip.stored_bytes(), before);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the test no longer reaches the limit");
    assert!(chip.stored().services.encode().len() <= TLV_VALUE_MAX);
    chip.power_up();
    // The purse is not starved: a purchase still commits.
    assert_eq!(chip.purchase(1_000), StatusWord::SUCCESS);
    assert_eq!(chip.stored().balance, amount(4_000));
}
