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
use valuecard_card::testing;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::{KeyState, MoveId, ServiceCode, ServiceKind};
use valuecard_migrate::client::{self, ClientError, Mode, MoveServerLink, Outcome};
use valuecard_migrate::provider::{CopyRecord, Provider};
use valuecard_migrate_http::embedded::{MoveOptions, MoveSystem, ProviderSetup};
use valuecard_migrate_http::HttpMoveServer;
use valuecard_settle_http::{DatabaseLocation, DatabasePool};

pub use valuecard_migrate::testing::*;

/// Provider `number`'s application server for `service`, its normal and transfer SAMs
/// in software with the test keys.
pub fn provider(number: u8, service: ServiceCode, kind: ServiceKind) -> Arc<Provider> {
    Arc::new(software_provider(number, service, kind))
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
    issue_old_chip(
        [&providers[0], &providers[1], &providers[2]],
        admin.as_ref(),
        &mut old,
    );
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

/// [`valuecard_migrate::testing::assert_one_home_for_everything`] on the rig's chips.
pub fn assert_one_home_for_everything(rig: &Rig) {
    valuecard_migrate::testing::assert_one_home_for_everything(
        rig.chip(Which::Old),
        rig.chip(Which::New),
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
