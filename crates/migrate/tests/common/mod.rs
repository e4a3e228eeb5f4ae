//! A whole move in one process: the center's test root, an administrative SAM, three
//! providers (the purse, a transit operator's tickets, a retailer's points) each with its
//! own database, the move server on its own database, an old chip issued with all three
//! services and a new chip.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_center::sql::Database;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::{ins, InitializePurchase, PURSE_AID};
use valuecard_core::messages::services::MoveId;
use valuecard_core::messages::services::{ServiceCode, ServiceKind};
use valuecard_core::money::Amount;
use valuecard_core::time::FixedClock;
use valuecard_migrate::client::{self, ClientError, Mode, Outcome};
use valuecard_migrate::provider::store;
use valuecard_migrate::provider::Exchange;
use valuecard_migrate::sam::SoftwareAdminSam;
use valuecard_migrate::server::{
    accounts, schema, LinkError, LocalMoveServer, LocalProvider, MoveServer, ProviderLink,
};
use valuecard_reader::{CardReader, ReaderError};

pub use valuecard_migrate::testing::*;

/// Everything of one test.
pub struct World {
    pub server: LocalMoveServer,
    pub providers: Vec<Arc<LocalProvider>>,
    pub admin: Arc<SoftwareAdminSam>,
    pub old: Reader,
    pub new: Reader,
}

fn provider(
    number: u8,
    service: ServiceCode,
    kind: ServiceKind,
    mut db: Database,
) -> Arc<LocalProvider> {
    db.migrate_schema(store::MIGRATION_TABLE, store::MIGRATIONS)
        .unwrap();
    Arc::new(LocalProvider::new(
        Arc::new(software_provider(number, service, kind)),
        db,
        Box::new(FixedClock(today())),
    ))
}

pub fn server_db(mut db: Database) -> Database {
    db.migrate_schema(schema::MIGRATION_TABLE, schema::MIGRATIONS)
        .unwrap();
    db
}

impl World {
    pub fn new() -> World {
        World::with_links(|link| link)
    }

    /// The same world with the server reaching each provider through `wrap` (a link that
    /// fails on purpose, say).
    pub fn with_links(wrap: impl Fn(Arc<dyn ProviderLink>) -> Arc<dyn ProviderLink>) -> World {
        World::build(wrap, &mut || Database::open_sqlite_in_memory().unwrap())
    }

    /// The same world with each provider and the server on a database of its own from
    /// `open` (SQLite in memory, or a PostgreSQL schema each).
    pub fn build(
        wrap: impl Fn(Arc<dyn ProviderLink>) -> Arc<dyn ProviderLink>,
        open: &mut dyn FnMut() -> Database,
    ) -> World {
        let providers = vec![
            provider(1, PURSE, ServiceKind::Purse, open()),
            provider(2, TICKETS, ServiceKind::Tickets, open()),
            provider(3, POINTS, ServiceKind::Points, open()),
        ];
        let admin = admin();
        let links: Vec<Arc<dyn ProviderLink>> = providers
            .iter()
            .map(|p| wrap(p.clone() as Arc<dyn ProviderLink>))
            .collect();
        let server = LocalMoveServer::new(MoveServer::new(admin.clone(), links), server_db(open()));
        World::issued(server, providers, admin)
    }

    /// The old chip (card 1, 50.00 in its purse) issued with the three services, one ride
    /// of its ticket used and 1,200 points on it; the new chip (card 2, 7.00) blank of
    /// services; both registered to the user.
    fn issued(
        server: LocalMoveServer,
        providers: Vec<Arc<LocalProvider>>,
        admin: Arc<SoftwareAdminSam>,
    ) -> World {
        let mut old = Reader::with_card("old", card(1, OLD_BALANCE));
        let new = Reader::with_card("new", card(2, NEW_BALANCE));
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
            admin,
            old,
            new,
        }
    }

    pub fn run(&mut self, which: Which, mode: Mode) -> Result<Outcome, ClientError> {
        self.run_cut(which, mode, usize::MAX, false)
    }

    /// A run whose device stops after `left` commands (see [`CutReader`]).
    pub fn run_cut(
        &mut self,
        which: Which,
        mode: Mode,
        left: usize,
        deliver: bool,
    ) -> Result<Outcome, ClientError> {
        let inner = match which {
            Which::Old => &mut self.old,
            Which::New => &mut self.new,
        };
        let mut reader = CutReader {
            inner,
            left,
            deliver,
        };
        client::run(&self.server, &mut reader, USER, PASSWORD, mode, &mut |_| {})
    }

    /// A clean run, and how many commands it sent to the chip.
    pub fn run_counted(&mut self, which: Which, mode: Mode) -> (Outcome, usize) {
        let reader = match which {
            Which::Old => &mut self.old,
            Which::New => &mut self.new,
        };
        let mut steps = 1;
        let outcome = client::run(&self.server, reader, USER, PASSWORD, mode, &mut |_| {
            steps += 1
        })
        .unwrap();
        (outcome, steps)
    }

    /// Runs `mode` until it finishes, at most `tries` runs.
    pub fn run_until_done(&mut self, which: Which, mode: Mode, tries: usize) -> Outcome {
        let mut last = None;
        for _ in 0..tries {
            match self.run(which, mode) {
                Ok(outcome) => return outcome,
                Err(error) => last = Some(error),
            }
        }
        panic!("{mode:?} did not finish in {tries} runs: {last:?}");
    }

    pub fn upload(&mut self) -> Result<Outcome, ClientError> {
        self.run(Which::Old, Mode::Upload)
    }

    pub fn download(&mut self) -> Result<Outcome, ClientError> {
        self.run(Which::New, Mode::Download)
    }

    pub fn provider(&self, service: ServiceCode) -> &Arc<LocalProvider> {
        self.providers
            .iter()
            .find(|p| p.provider().service() == service)
            .unwrap()
    }

    /// Copies the providers' transfer SAMs still hold.
    pub fn copies_held(&self) -> i64 {
        self.providers
            .iter()
            .map(|p| p.with_db(|provider, db| provider.copies_held(db).unwrap()))
            .sum()
    }

    pub fn chip(&self, which: Which) -> &TestCard {
        match which {
            Which::Old => self.old.card().unwrap(),
            Which::New => self.new.card().unwrap(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Old,
    New,
}

/// [`valuecard_migrate::testing::assert_one_home_for_everything`] on the world's chips.
pub fn assert_one_home_for_everything(world: &World) {
    valuecard_migrate::testing::assert_one_home_for_everything(
        world.chip(Which::Old),
        world.chip(Which::New),
    );
}

/// A purse purchase's first command, well formed, from the test terminal.
pub fn initialize_purchase(reader: &mut Reader) -> Response {
    reader
        .exchange(
            &Command::new(0x00, ins::SELECT, 0x04, 0x00)
                .with_data(PURSE_AID.to_vec())
                .with_le(256),
        )
        .unwrap();
    let (_, certificate) = testing::terminal();
    reader
        .exchange(
            &Command::new(0x80, ins::INITIALIZE_PURCHASE, 0, 0)
                .with_data(
                    InitializePurchase {
                        terminal_certificate: certificate,
                        challenge_terminal: [0x11; 16],
                        amount_max: Amount::new(100).unwrap(),
                        date: today(),
                    }
                    .encode(),
                )
                .with_le(65_536),
        )
        .unwrap()
}

/// A reader that stops after `left` commands: the holder's device gone. With `deliver`
/// the last command still reaches the chip (its answer is lost); without, it never does.
pub struct CutReader<'a> {
    pub inner: &'a mut Reader,
    pub left: usize,
    pub deliver: bool,
}

impl CardReader for CutReader<'_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        if self.left == 0 {
            if self.deliver {
                let _ = self.inner.transmit_raw(apdu);
            }
            if let Some(card) = self.inner.card_mut() {
                card.reset();
            }
            return Err(ReaderError::CardRemoved);
        }
        self.left -= 1;
        self.inner.transmit_raw(apdu)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// A provider link that fails its `fail_at`-th call (counting from 0 over every provider
/// sharing `calls`): before the provider did anything, or, with `after`, once the provider
/// did its work and only its answer is lost (a provider that died before answering).
pub struct FaultyLink {
    pub inner: Arc<dyn ProviderLink>,
    pub calls: Arc<std::sync::atomic::AtomicUsize>,
    pub fail_at: usize,
    pub after: bool,
}

impl FaultyLink {
    fn fault<T>(&self, work: impl FnOnce() -> Result<T, LinkError>) -> Result<T, LinkError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call != self.fail_at {
            return work();
        }
        if self.after {
            let _ = work();
        }
        Err(LinkError::Down("the provider went away".into()))
    }
}

impl ProviderLink for FaultyLink {
    fn format(&self) -> valuecard_core::messages::services::AreaFormat {
        self.inner.format()
    }
    fn key_packages(
        &self,
        card_certificate: &valuecard_core::cert::Certificate,
    ) -> Result<
        (
            valuecard_core::messages::services::KeyPackage,
            valuecard_core::messages::services::KeyPackage,
        ),
        LinkError,
    > {
        self.fault(|| self.inner.key_packages(card_certificate))
    }
    fn upload(
        &self,
        move_id: &MoveId,
        source: &CardId,
        certificate: &valuecard_core::cert::Certificate,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError> {
        self.fault(|| self.inner.upload(move_id, source, certificate, response))
    }
    fn download(
        &self,
        move_id: &MoveId,
        destination: &CardId,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError> {
        self.fault(|| self.inner.download(move_id, destination, response))
    }
    fn clear(&self, move_id: &MoveId) -> Result<(), LinkError> {
        self.fault(|| self.inner.clear(move_id))
    }
    fn discard(&self, move_id: &MoveId) -> Result<(), LinkError> {
        self.fault(|| self.inner.discard(move_id))
    }
}

/// A reader that keeps every command and answer that passed through the holder's device.
pub struct RecordingReader<'a> {
    pub inner: &'a mut Reader,
    pub seen: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CardReader for RecordingReader<'_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let response = self.inner.transmit_raw(apdu)?;
        self.seen.push((apdu.to_vec(), response.clone()));
        Ok(response)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}
