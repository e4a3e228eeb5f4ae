//! A whole move over HTTPS in one process: three providers (the purse, a transit
//! operator's tickets, a retailer's points), each its own service with its own database,
//! the move server's service reaching them with its access secret, an old chip issued with
//! all three services and a new chip, both registered over HTTPS to one user.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod http;
pub mod links;

use std::cell::RefCell;
use std::sync::Arc;

use rand_core::OsRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::{testing, Card};
use valuecard_core::crypto::SecretBytes;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::{
    AreaContent, KeyState, MoveId, PointsAccount, ServiceCode, ServiceKind, ServiceOperation,
    Ticket, TicketBook,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_migrate::client::{self, ClientError, Mode, MoveServerLink, Outcome};
use valuecard_migrate::provider::{CopyRecord, Provider};
use valuecard_migrate::sam::{SoftwareAdminSam, SoftwareProviderSam};
use valuecard_migrate_http::embedded::{MoveOptions, MoveSystem, ProviderSetup};
use valuecard_migrate_http::HttpMoveServer;
use valuecard_reader::InProcessReader;
use valuecard_settle_http::{DatabaseLocation, DatabasePool};

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

/// Provider `number`'s application server for `service`, its normal and transfer SAMs
/// in software with the test keys.
pub fn provider(number: u8, service: ServiceCode, kind: ServiceKind) -> Arc<Provider> {
    let (normal_key, normal_certificate) = testing::service_provider(number);
    let (transfer_key, transfer_certificate) = testing::service_transfer(number);
    let normal = SoftwareProviderSam::normal(
        testing::area_master(number, KeyState::Main),
        normal_key,
        normal_certificate,
        testing::anchor(),
    )
    .unwrap();
    let transfer = SoftwareProviderSam::transfer(
        testing::area_master(number, KeyState::Temporary),
        SecretBytes::random(&mut OsRng),
        transfer_key,
        transfer_certificate,
        testing::anchor(),
    )
    .unwrap();
    Arc::new(
        Provider::new(
            service,
            kind,
            8,
            Arc::new(normal),
            Arc::new(transfer),
            testing::anchor(),
        )
        .unwrap(),
    )
}

pub fn admin() -> Arc<SoftwareAdminSam> {
    let (key, certificate) = testing::move_administrator();
    Arc::new(SoftwareAdminSam::new(key, certificate).unwrap())
}

pub fn card(number: u8, balance: u64) -> TestCard {
    Card::with_state(
        MemoryEeprom::new(EEPROM_SIZE),
        testing::personalized_card(number, Amount::new(balance).unwrap(), None),
        OsRng,
    )
    .unwrap()
}

pub fn ticket() -> Ticket {
    Ticket {
        ticket_id: TICKET_ID,
        product: 0x7A3C,
        valid_from: today(),
        valid_until: today().add_days(30),
        rides_left: Some(10),
    }
}

/// Everything of one test.
pub struct Rig {
    /// In a cell, so that a holder's device can stop and start it between its calls.
    pub system: RefCell<MoveSystem>,
    pub client: HttpMoveServer,
    pub providers: Vec<Arc<Provider>>,
    pub old: Reader,
    pub new: Reader,
}

/// The three providers, the old chip (card 1) issued with their services (one ride of its
/// ticket used, points earned) and the new chip (card 2), both registered to the user.
pub fn rig(options: &MoveOptions, mut provider_database: impl FnMut() -> DatabaseLocation) -> Rig {
    let providers = vec![
        provider(1, PURSE, ServiceKind::Purse),
        provider(2, TICKETS, ServiceKind::Tickets),
        provider(3, POINTS, ServiceKind::Points),
    ];
    let admin = admin();
    let mut old = Reader::with_card("old", card(1, OLD_BALANCE));
    let new = Reader::with_card("new", card(2, NEW_BALANCE));
    for p in &providers {
        p.issue_area(admin.as_ref(), &mut old, today(), &mut OsRng)
            .unwrap();
    }
    providers[1]
        .normal_use(
            &mut old,
            Some(&ServiceOperation::IssueTicket(ticket())),
            &mut OsRng,
        )
        .unwrap();
    providers[1]
        .normal_use(
            &mut old,
            Some(&ServiceOperation::UseRide {
                ticket_id: TICKET_ID,
                date: today(),
            }),
            &mut OsRng,
        )
        .unwrap();
    providers[2]
        .normal_use(
            &mut old,
            Some(&ServiceOperation::EarnPoints {
                points: POINTS_HELD,
                expiry: today().add_days(365),
            }),
            &mut OsRng,
        )
        .unwrap();
    let setups = providers
        .iter()
        .map(|provider| ProviderSetup {
            provider: Arc::clone(provider),
            database: provider_database(),
        })
        .collect();
    let system = MoveSystem::start(admin, setups, options).unwrap();
    let client = system.client();
    client.create_user(USER, PASSWORD).unwrap();
    client
        .register_chip(USER, PASSWORD, &testing::card_id(1))
        .unwrap();
    client
        .register_chip(USER, PASSWORD, &testing::card_id(2))
        .unwrap();
    Rig {
        system: RefCell::new(system),
        client,
        providers,
        old,
        new,
    }
}

/// The rig with every database in memory.
pub fn rig_in_memory() -> Rig {
    rig(&MoveOptions::in_memory(today()), || {
        DatabaseLocation::Memory
    })
}

/// One run of the holder's device through `server`.
pub fn run(
    server: &dyn MoveServerLink,
    reader: &mut Reader,
    mode: Mode,
) -> Result<Outcome, ClientError> {
    client::run(server, reader, USER, PASSWORD, mode, &mut |_| {})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Old,
    New,
}

impl Rig {
    pub fn reader(&mut self, which: Which) -> &mut Reader {
        match which {
            Which::Old => &mut self.old,
            Which::New => &mut self.new,
        }
    }

    pub fn run(&mut self, which: Which, mode: Mode) -> Result<Outcome, ClientError> {
        let client = self.client.clone();
        run(&client, self.reader(which), mode)
    }

    pub fn upload(&mut self) -> Result<Outcome, ClientError> {
        self.run(Which::Old, Mode::Upload)
    }

    pub fn download(&mut self) -> Result<Outcome, ClientError> {
        self.run(Which::New, Mode::Download)
    }

    pub fn chip(&self, which: Which) -> &TestCard {
        match which {
            Which::Old => self.old.card().unwrap(),
            Which::New => self.new.card().unwrap(),
        }
    }

    /// Copies the providers' transfer SAMs still hold.
    pub fn copies_held(&self) -> i64 {
        self.system.borrow().copies_held().unwrap()
    }

    fn provider_of(&self, service: ServiceCode) -> &Arc<Provider> {
        self.providers
            .iter()
            .find(|p| p.service() == service)
            .unwrap()
    }

    /// The provider's record of its copy of `move_id`.
    pub fn copy(&self, service: ServiceCode, move_id: &MoveId) -> Option<CopyRecord> {
        let provider = Arc::clone(self.provider_of(service));
        let move_id = *move_id;
        self.provider_pool(service)
            .run_blocking(move |db| {
                provider
                    .copy_state(db, &move_id)
                    .map_err(|error| CenterError::Storage(error.to_string()))
            })
            .unwrap()
    }

    pub fn provider_pool(&self, service: ServiceCode) -> DatabasePool {
        self.system.borrow().provider_pool(service).unwrap().clone()
    }
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

pub fn original_tickets() -> AreaContent {
    let mut ticket = ticket();
    ticket.rides_left = Some(9);
    AreaContent::Tickets(TicketBook {
        tickets: vec![ticket],
    })
}

pub fn original_points() -> AreaContent {
    AreaContent::Points(PointsAccount {
        points: POINTS_HELD,
        expiry: today().add_days(365),
    })
}

/// Every service usable on main keys on exactly one chip with its original content, and
/// the purse value usable equal to what both chips held before.
pub fn assert_one_home_for_everything(rig: &Rig) {
    for service in SERVICES {
        let homes: Vec<Which> = [Which::Old, Which::New]
            .into_iter()
            .filter(|which| key_state(rig.chip(*which), service) == Some(KeyState::Main))
            .collect();
        assert_eq!(homes.len(), 1, "service {service} usable on {homes:?}");
        let home = rig.chip(homes[0]);
        match service {
            TICKETS => assert_eq!(content(home, service), Some(original_tickets())),
            POINTS => assert_eq!(content(home, service), Some(original_points())),
            _ => {}
        }
    }
    let usable = |card: &TestCard| -> u64 {
        match key_state(card, PURSE) {
            Some(KeyState::Temporary) => 0,
            _ => balance(card),
        }
    };
    let (old, new) = (usable(rig.chip(Which::Old)), usable(rig.chip(Which::New)));
    assert_eq!(
        old + new,
        OLD_BALANCE + NEW_BALANCE,
        "usable purse value: old {old}, new {new}"
    );
}

/// The end state of a finished move: everything on the new chip on main keys, the old chip
/// a locked backup, no copy left at any provider, each provider's record cleared.
pub fn assert_moved(rig: &Rig, done: &Outcome) {
    assert_eq!(done.state, "done");
    assert!(done.services.iter().all(|(_, _, state)| state == "cleared"));
    assert_one_home_for_everything(rig);
    let new = rig.chip(Which::New);
    let old = rig.chip(Which::Old);
    for service in SERVICES {
        assert_eq!(key_state(new, service), Some(KeyState::Main));
        assert_eq!(key_state(old, service), Some(KeyState::Temporary));
        let record = rig.copy(service, &done.move_id).unwrap();
        assert_eq!(record.state, "cleared");
        assert!(!record.holds_copy);
        assert_eq!(record.destination, Some(testing::card_id(2)));
    }
    assert_eq!(balance(new), OLD_BALANCE + NEW_BALANCE);
    assert_eq!(balance(old), OLD_BALANCE);
    assert_eq!(content(new, TICKETS), Some(original_tickets()));
    assert_eq!(content(new, POINTS), Some(original_points()));
    assert_eq!(rig.copies_held(), 0);
}

/// One provider's service on its own (the tickets provider, its database in memory) with
/// an access secret the test knows.
pub struct Standalone {
    pub service: valuecard_settle_http::BackgroundService,
    pub pool: DatabasePool,
    pub secret: valuecard_migrate_http::AccessSecret,
    pub raw: http::Raw,
}

impl Standalone {
    pub fn start() -> Standalone {
        use valuecard_migrate_http::provider_service::{open_database, ProviderService};
        let secret = valuecard_migrate_http::AccessSecret::generate(&mut OsRng);
        let pool = DatabasePool::new(open_database(&DatabaseLocation::Memory).unwrap(), 1).unwrap();
        let service = ProviderService::new(
            provider(2, TICKETS, ServiceKind::Tickets),
            pool.clone(),
            Box::new(valuecard_core::time::FixedClock(today())),
            secret.digest(),
        );
        let identity = valuecard_center_http::ServiceIdentity::generate(&[]).unwrap();
        let service = valuecard_settle_http::BackgroundService::start(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            service.router(),
            &identity,
            "provider-test",
        )
        .unwrap()
        .keeping(pool.clone());
        let raw = http::Raw::new(&service.url(), service.pin());
        Standalone {
            service,
            pool,
            secret,
            raw,
        }
    }

    /// The `Authorization` header the move server sends.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.secret.to_hex().as_str())
    }

    /// Conversations in progress.
    pub fn sessions(&self) -> i64 {
        use valuecard_center::sql::Executor;
        self.pool
            .run_blocking(|db| {
                db.query_one("SELECT COUNT(*) FROM provider_sessions", &[])?
                    .int(0)
            })
            .unwrap()
    }
}
