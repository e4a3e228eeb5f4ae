//! The store and the settlement service built part by part (as `OnlineSystem::start` does),
//! the settlement service on a SQLite file, so that a test can stop it between any two
//! steps and start a new instance on the same database with the same keys: the security
//! server's, the application server's (SIG2, SIG3, SIG5) and the store's registration.

use std::net::TcpListener;
use std::sync::Arc;

use valuecard_center_http::ServiceIdentity;
use valuecard_core::cert::TrustAnchor;
use valuecard_core::crypto::{PublicKey, SigningKeyPair};
use valuecard_core::messages::online::SettlementId;
use valuecard_core::time::FixedClock;
use valuecard_settle::application::ApplicationServer;
use valuecard_settle::store::Store;
use valuecard_settle_http::authorizer::TestAuthorizer;
use valuecard_settle_http::embedded::{demo_catalog, demo_member_names, DemoContent, MALL};
use valuecard_settle_http::holder::Holder;
use valuecard_settle_http::settlement::{ServiceKeys, StoreRegistration};
use valuecard_settle_http::{
    store_service, BackgroundService, DatabaseLocation, DatabasePool, SettlementService,
    StoreService,
};

use super::{today, Rig};

/// The store in memory and the settlement service on a file, restartable.
pub struct Restartable {
    pub store: BackgroundService,
    settlement: Option<BackgroundService>,
    /// The running instance's pool (another after each restart).
    pub pool: DatabasePool,
    location: DatabaseLocation,
    application: SigningKeyPair,
    pub application_key: PublicKey,
    keys: ServiceKeys,
    anchor: TrustAnchor,
    authorizer: Arc<TestAuthorizer>,
    /// How many instances of the settlement service have run.
    pub instances: u32,
    _directory: tempfile::TempDir,
}

impl Restartable {
    pub fn start(rig: &Rig) -> Self {
        Self::start_on(rig, None)
    }

    /// The settlement service on `location` (a SQLite file in a temporary directory when
    /// `None`).
    pub fn start_on(rig: &Rig, location: Option<DatabaseLocation>) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let location = location
            .unwrap_or_else(|| DatabaseLocation::Sqlite(directory.path().join("settlement.db")));
        let application = SigningKeyPair::generate(&mut rand_core::OsRng);
        let application_key = application.public_key();
        let store_signing = SigningKeyPair::generate(&mut rand_core::OsRng);
        let store_key = store_signing.public_key();
        let store_pool = DatabasePool::new(
            DatabaseLocation::Memory
                .open(store_service::MIGRATION_TABLE, store_service::MIGRATIONS)
                .unwrap(),
            1,
        )
        .unwrap();
        let store_identity = ServiceIdentity::generate(&[]).unwrap();
        let store = BackgroundService::start(
            TcpListener::bind(("127.0.0.1", 0)).unwrap(),
            StoreService::new(
                Store::new(MALL, store_signing, demo_catalog(), application_key),
                "Valuecard Mall",
                demo_member_names(),
                Box::new(DemoContent),
                store_pool,
                Box::new(FixedClock(today())),
            )
            .router(),
            &store_identity,
            "store",
        )
        .unwrap();
        let mut system = Restartable {
            pool: open(&location),
            store,
            settlement: None,
            location,
            application,
            application_key,
            keys: Arc::clone(&rig.keys),
            anchor: rig.world.center.anchor(),
            authorizer: Arc::clone(&rig.authorizer),
            instances: 0,
            _directory: directory,
        };
        system.serve();
        system
            .service()
            .register_store(&StoreRegistration {
                store_id: MALL,
                public_key: store_key,
                name: "Valuecard Mall".into(),
                url: Some(system.store.url()),
                certificate: Some(store_identity.certificate_pem()),
            })
            .unwrap();
        system
    }

    fn service(&self) -> SettlementService {
        SettlementService::new(
            Arc::clone(&self.keys),
            ApplicationServer::new(self.application.clone()),
            self.anchor,
            self.authorizer.clone(),
            self.pool.clone(),
            Box::new(FixedClock(today())),
        )
        .unwrap()
    }

    fn serve(&mut self) {
        let identity = ServiceIdentity::generate(&[]).unwrap();
        self.settlement = Some(
            BackgroundService::start(
                TcpListener::bind(("127.0.0.1", 0)).unwrap(),
                self.service().router(),
                &identity,
                "settlement",
            )
            .unwrap(),
        );
        self.instances += 1;
    }

    /// Another instance of the settlement service beside the running one, on its own pool
    /// of the same database with the same keys, and a holder's client of it.
    pub fn another_instance(&self) -> (BackgroundService, Holder) {
        let pool = open(&self.location);
        let service = SettlementService::new(
            Arc::clone(&self.keys),
            ApplicationServer::new(self.application.clone()),
            self.anchor,
            self.authorizer.clone(),
            pool.clone(),
            Box::new(FixedClock(today())),
        )
        .unwrap();
        let identity = ServiceIdentity::generate(&[]).unwrap();
        let instance = BackgroundService::start(
            TcpListener::bind(("127.0.0.1", 0)).unwrap(),
            service.router(),
            &identity,
            "settlement",
        )
        .unwrap()
        .keeping(pool);
        let holder = Holder::new(
            &self.store.url(),
            self.store.pin(),
            &instance.url(),
            instance.pin(),
            self.application_key,
        );
        (instance, holder)
    }

    /// Stops the settlement service and starts a new instance on the same database file
    /// with the same keys. Clients of the old instance must be made anew (`holder`).
    pub fn restart(&mut self) {
        let old = self.settlement.take().expect("the service runs");
        old.shutdown().unwrap();
        self.pool = open(&self.location);
        self.serve();
    }

    /// A holder's client of the store and the running settlement instance.
    pub fn holder(&self) -> Holder {
        let settlement = self.settlement.as_ref().expect("the service runs");
        Holder::new(
            &self.store.url(),
            self.store.pin(),
            &settlement.url(),
            settlement.pin(),
            self.application_key,
        )
    }

    /// The stored step of update `id` (`challenged` … `completed`, `voided`).
    pub fn step(&self, id: &SettlementId) -> String {
        super::step_of(&self.pool, id)
    }
}

fn open(location: &DatabaseLocation) -> DatabasePool {
    DatabasePool::new(
        location
            .open(
                valuecard_settle_http::settlement::MIGRATION_TABLE,
                valuecard_settle_http::settlement::MIGRATIONS,
            )
            .unwrap(),
        2,
    )
    .unwrap()
}
