//! A whole value move with the secure modules in a token: the move server's administrative
//! SAM and the purse provider's normal and transfer SAMs in SoftHSM2 (their keys generated
//! there), the transit operator's transfer SAM in it too (its master carried over from the
//! software SAM), the retailer's SAMs in software. The old chip is issued by the token's
//! administrative SAM, uploaded, and downloaded to the new chip through
//! `valuecard_migrate`'s move server and client, as with software SAMs only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod move_common;

use std::sync::Arc;

use common::softhsm;
use move_common::*;
use rand_core::OsRng;
use valuecard_card::state::PersistentState;
use valuecard_card::testing;
use valuecard_center::sql::Database;
use valuecard_core::crypto::SecretBytes;
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::messages::services::{KeyState, ServiceCode, ServiceKind};
use valuecard_migrate::client::{self, Mode, Outcome};
use valuecard_migrate::provider::store;
use valuecard_migrate::sam::{AdminSam, ProviderSam};
use valuecard_migrate::server::{accounts, schema, LocalMoveServer, LocalProvider, MoveServer};
use valuecard_migrate::testing::{
    assert_one_home_for_everything, issue_old_chip, original_points, original_tickets,
    provider_with, today, NEW_BALANCE, OLD_BALANCE, PASSWORD, POINTS, PURSE, SERVICES, TICKETS,
    USER,
};
use valuecard_sam_pkcs11::NewMaster;

fn local_provider(
    service: ServiceCode,
    kind: ServiceKind,
    normal: Arc<dyn ProviderSam>,
    transfer: Arc<dyn ProviderSam>,
) -> Arc<LocalProvider> {
    let mut db = Database::open_sqlite_in_memory().unwrap();
    db.migrate_schema(store::MIGRATION_TABLE, store::MIGRATIONS)
        .unwrap();
    Arc::new(LocalProvider::new(
        Arc::new(provider_with(service, kind, normal, transfer)),
        db,
        Box::new(valuecard_core::time::FixedClock(today())),
    ))
}

struct World {
    server: LocalMoveServer,
    providers: Vec<Arc<LocalProvider>>,
    old: Reader,
    new: Reader,
}

impl World {
    fn new(token: &Token) -> World {
        let purse = local_provider(
            PURSE,
            ServiceKind::Purse,
            Arc::new(token.normal("purse-normal", 1, NewMaster::Generate)),
            Arc::new(token.transfer(
                "purse-transfer",
                1,
                NewMaster::Generate,
                NewMaster::Generate,
            )),
        );
        let tickets = local_provider(
            TICKETS,
            ServiceKind::Tickets,
            Arc::new(software_normal(2)),
            Arc::new(token.transfer(
                "tickets-transfer",
                2,
                imported_master(2, KeyState::Temporary),
                NewMaster::Import(SecretBytes::random(&mut OsRng)),
            )),
        );
        let points = local_provider(
            POINTS,
            ServiceKind::Points,
            Arc::new(software_normal(3)),
            Arc::new(software_transfer(3, [0x3C; 16])),
        );
        let providers = vec![purse, tickets, points];
        let admin: Arc<dyn AdminSam> = Arc::new(token.admin("admin"));
        let links = providers
            .iter()
            .map(|p| p.clone() as Arc<dyn valuecard_migrate::server::ProviderLink>)
            .collect();
        let mut db = Database::open_sqlite_in_memory().unwrap();
        db.migrate_schema(schema::MIGRATION_TABLE, schema::MIGRATIONS)
            .unwrap();
        let server = LocalMoveServer::new(MoveServer::new(admin.clone(), links), db);

        let mut old = reader(1, OLD_BALANCE);
        let new = reader(2, NEW_BALANCE);
        issue_old_chip(
            [
                providers[0].provider(),
                providers[1].provider(),
                providers[2].provider(),
            ],
            admin.as_ref(),
            &mut old,
        );
        server.with_db(|_, db| {
            accounts::create_user(db, USER, PASSWORD, 0, &mut OsRng).unwrap();
            accounts::register_chip(db, USER, &testing::card_id(1)).unwrap();
            accounts::register_chip(db, USER, &testing::card_id(2)).unwrap();
        });
        World {
            server,
            providers,
            old,
            new,
        }
    }

    fn run(&mut self, mode: Mode) -> Outcome {
        let reader = match mode {
            Mode::Upload => &mut self.old,
            _ => &mut self.new,
        };
        client::run(&self.server, reader, USER, PASSWORD, mode, &mut |_| {}).unwrap()
    }

    /// Copies the providers' transfer SAMs still hold.
    fn copies_held(&self) -> i64 {
        self.providers
            .iter()
            .map(|p| p.with_db(|provider, db| provider.copies_held(db).unwrap()))
            .sum()
    }
}

#[test]
fn a_whole_move_with_the_secure_modules_in_a_token() {
    let Some(module) = softhsm("move_run") else {
        return;
    };
    let token = Token::fresh(&module);
    let mut world = World::new(&token);
    for service in SERVICES {
        assert_eq!(area(&world.old, service).unwrap().key_state, KeyState::Main);
        assert!(area(&world.new, service).is_none());
    }

    let uploaded = world.run(Mode::Upload);
    assert_eq!(uploaded.state, "uploaded");
    assert!(uploaded
        .services
        .iter()
        .all(|(_, _, state)| state == "uploaded"));
    for service in SERVICES {
        assert_eq!(
            area(&world.old, service).unwrap().key_state,
            KeyState::Temporary
        );
    }
    // The value is in flight, sealed in the transfer SAMs' copies, two of them the token's.
    assert_eq!(world.copies_held(), 3);

    let done = world.run(Mode::Download);
    assert_eq!(done.state, "done");
    assert_eq!(done.move_id, uploaded.move_id);
    assert!(done.services.iter().all(|(_, _, state)| state == "cleared"));
    assert_eq!(world.copies_held(), 0, "no copy may remain");

    // The balance arrived, once, with the token's signed record; the rest came along.
    assert_eq!(balance(&world.new), OLD_BALANCE + NEW_BALANCE);
    assert_eq!(balance(&world.old), OLD_BALANCE);
    for service in SERVICES {
        assert_eq!(area(&world.new, service).unwrap().key_state, KeyState::Main);
        assert_eq!(
            area(&world.old, service).unwrap().key_state,
            KeyState::Temporary
        );
    }
    assert_eq!(
        area(&world.new, TICKETS).unwrap().content,
        Some(original_tickets())
    );
    assert_eq!(
        area(&world.new, POINTS).unwrap().content,
        Some(original_points())
    );
    assert_one_home_for_everything(world.old.card().unwrap(), world.new.card().unwrap());
    let PersistentState::Personalized(purse) = world.new.card().unwrap().state() else {
        panic!("not personalized");
    };
    let record = purse.last_usage.clone().unwrap();
    assert_eq!(record.kind, TransactionKind::MigrationIn);
    assert_eq!(record.amount.minor(), OLD_BALANCE);
    assert_eq!(
        purse.last_writer_certificate.as_ref().unwrap().subject(),
        transfer_subject(1)
    );

    // The new chip is in normal use through the token's normal SAM.
    let gate = world.providers[0].provider().clone();
    assert!(gate.normal_use(&mut world.new, None, &mut OsRng).is_ok());
}
