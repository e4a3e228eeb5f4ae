//! The move's test fixtures (feature `testing`), shared by the value move's test suites in
//! this crate, in `valuecard-migrate-http` and in `valuecard-sam-pkcs11`: the test root's
//! administrative SAM and provider SAMs (`valuecard_card::testing`'s keys), the old chip
//! issued with three services and the new chip, and the invariant every end state of a move
//! must hold. Values are distinctive, so that a search for them in what a server saw cannot
//! hit by chance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::{testing, Card};
use valuecard_core::crypto::{AesKey, SecretBytes};
use valuecard_core::messages::services::{
    AreaContent, KeyState, PointsAccount, ServiceCode, ServiceKind, ServiceOperation, Ticket,
    TicketBook,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::{CardReader, InProcessReader};

use crate::provider::Provider;
use crate::sam::{AdminSam, ProviderSam, SoftwareAdminSam, SoftwareProviderSam};

pub type TestCard = Card<MemoryEeprom, OsRng>;
pub type Reader = InProcessReader<MemoryEeprom, OsRng>;

pub const PURSE: ServiceCode = ServiceCode(0x0001);
pub const TICKETS: ServiceCode = ServiceCode(0x0102);
pub const POINTS: ServiceCode = ServiceCode(0x0203);
pub const SERVICES: [ServiceCode; 3] = [PURSE, TICKETS, POINTS];

pub const USER: &str = "hanako";
pub const PASSWORD: &str = "correct horse battery";
pub const OLD_BALANCE: u64 = 87_654_321;
pub const NEW_BALANCE: u64 = 700;
pub const TICKET_ID: u32 = 0x51F0_2E9A;
pub const POINTS_HELD: u64 = 918_273;

pub fn today() -> Date {
    testing::today()
}

/// The ticket the old chip is issued (one ride of it is then used).
pub fn ticket() -> Ticket {
    Ticket {
        ticket_id: TICKET_ID,
        product: 0x7A3C,
        valid_from: today(),
        valid_until: today().add_days(30),
        rides_left: Some(10),
    }
}

/// Test card `number` with `balance` minor units in its purse and no services yet.
pub fn card(number: u8, balance: u64) -> TestCard {
    Card::with_state(
        MemoryEeprom::new(EEPROM_SIZE),
        testing::personalized_card(number, Amount::new(balance).unwrap(), None),
        OsRng,
    )
    .unwrap()
}

/// The move server's administrative SAM under the test root.
pub fn admin() -> Arc<SoftwareAdminSam> {
    let (key, certificate) = testing::move_administrator();
    Arc::new(SoftwareAdminSam::new(key, certificate).unwrap())
}

/// Provider `number`'s normal SAM in software, with the test keys.
pub fn software_normal(number: u8) -> SoftwareProviderSam {
    let (key, certificate) = testing::service_provider(number);
    SoftwareProviderSam::normal(
        testing::area_master(number, KeyState::Main),
        key,
        certificate,
        testing::anchor(),
    )
    .unwrap()
}

/// Provider `number`'s transfer SAM in software, its copies sealed under `storage`.
pub fn software_transfer(number: u8, storage: AesKey) -> SoftwareProviderSam {
    let (key, certificate) = testing::service_transfer(number);
    SoftwareProviderSam::transfer(
        testing::area_master(number, KeyState::Temporary),
        storage,
        key,
        certificate,
        testing::anchor(),
    )
    .unwrap()
}

/// The provider of `service` with the two SAMs given, up to 8 tickets an area.
pub fn provider_with(
    service: ServiceCode,
    kind: ServiceKind,
    normal: Arc<dyn ProviderSam>,
    transfer: Arc<dyn ProviderSam>,
) -> Provider {
    Provider::new(service, kind, 8, normal, transfer, testing::anchor()).unwrap()
}

/// Provider `number` of `service`, both SAMs in software.
pub fn software_provider(number: u8, service: ServiceCode, kind: ServiceKind) -> Provider {
    provider_with(
        service,
        kind,
        Arc::new(software_normal(number)),
        Arc::new(software_transfer(number, SecretBytes::random(&mut OsRng))),
    )
}

/// The three providers' services issued on the old chip by `admin`: one ride of its ticket
/// used and points earned. `providers` are the purse's, the tickets' and the points'.
pub fn issue_old_chip(providers: [&Provider; 3], admin: &dyn AdminSam, old: &mut dyn CardReader) {
    for provider in providers {
        provider
            .issue_area(admin, old, today(), &mut OsRng)
            .unwrap();
    }
    let [_, tickets, points] = providers;
    for operation in [
        ServiceOperation::IssueTicket(ticket()),
        ServiceOperation::UseRide {
            ticket_id: TICKET_ID,
            date: today(),
        },
    ] {
        tickets
            .normal_use(old, Some(&operation), &mut OsRng)
            .unwrap();
    }
    points
        .normal_use(
            old,
            Some(&ServiceOperation::EarnPoints {
                points: POINTS_HELD,
                expiry: today().add_days(365),
            }),
            &mut OsRng,
        )
        .unwrap();
}

/// The key state of `service` on a chip, if it has the area.
pub fn key_state(card: &TestCard, service: ServiceCode) -> Option<KeyState> {
    testing::area_key_state(card.state(), service)
}

pub fn content(card: &TestCard, service: ServiceCode) -> Option<AreaContent> {
    testing::area_content(card.state(), service)
}

pub fn balance(card: &TestCard) -> u64 {
    testing::purse_balance(card.state())
}

/// The ticket book the old chip holds after [`issue_old_chip`].
pub fn original_tickets() -> AreaContent {
    let mut ticket = ticket();
    ticket.rides_left = Some(9);
    AreaContent::Tickets(TicketBook {
        tickets: vec![ticket],
    })
}

/// The points account the old chip holds after [`issue_old_chip`].
pub fn original_points() -> AreaContent {
    AreaContent::Points(PointsAccount {
        points: POINTS_HELD,
        expiry: today().add_days(365),
    })
}

/// The invariant of every end state: each service usable on main keys on exactly one chip,
/// with its original content there, and the purse value usable on main keys equal to what
/// both chips held before ([`OLD_BALANCE`] + [`NEW_BALANCE`]).
pub fn assert_one_home_for_everything(old: &TestCard, new: &TestCard) {
    for service in SERVICES {
        let homes: Vec<&TestCard> = [old, new]
            .into_iter()
            .filter(|chip| key_state(chip, service) == Some(KeyState::Main))
            .collect();
        assert_eq!(
            homes.len(),
            1,
            "service {service} usable on {} chips",
            homes.len()
        );
        match service {
            TICKETS => assert_eq!(content(homes[0], service), Some(original_tickets())),
            POINTS => assert_eq!(content(homes[0], service), Some(original_points())),
            _ => {}
        }
    }
    // The purse: the value usable is a chip's balance unless its purse is on temporary
    // keys (a new chip without a purse area yet spends its own value).
    let usable = |card: &TestCard| -> u64 {
        match key_state(card, PURSE) {
            Some(KeyState::Temporary) => 0,
            _ => balance(card),
        }
    };
    let (old_usable, new_usable) = (usable(old), usable(new));
    assert_eq!(
        old_usable + new_usable,
        OLD_BALANCE + NEW_BALANCE,
        "usable purse value: old {old_usable}, new {new_usable}"
    );
}
