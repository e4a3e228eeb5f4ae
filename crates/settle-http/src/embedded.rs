//! The online settlement system embedded in one process: the store (a mall of two member
//! stores with a small catalog of content) and the settlement service, each an HTTPS service
//! on 127.0.0.1 with its own database, the settlement service's reporter sending completed
//! updates to the center. The demo, the holder's wallet for trying the system, the
//! benchmark and the tests start it this way.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use valuecard_center_http::ServiceIdentity;
use valuecard_core::cert::TrustAnchor;
use valuecard_core::crypto::{PublicKey, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, FixedClock};
use valuecard_settle::application::ApplicationServer;
use valuecard_settle::store::{CatalogItem, Store};

use crate::authorizer::{CreditAuthorizer, TestAuthorizer};
use crate::db::{DatabaseLocation, DatabasePool};
use crate::holder::Holder;
use crate::service::BackgroundService;
use crate::settlement::reporter::{OnlineRecordSink, Reporter};
use crate::settlement::{ServiceKeys, SettlementService, StoreRegistration};
use crate::store_service::{ContentSource, StoreService};

/// The mall's ID and its two member stores'.
pub const MALL: DeviceId = DeviceId(*b"MALL0001");
pub const BOOKSHOP: DeviceId = DeviceId(*b"BOOKS001");
pub const MUSIC_SHOP: DeviceId = DeviceId(*b"MUSIC001");

/// The demonstration mall's catalog: content from two member stores.
pub fn demo_catalog() -> Vec<CatalogItem> {
    let item = |sku: &str, member: DeviceId, title: &str, minor: u64| CatalogItem {
        sku: sku.into(),
        member_store: member,
        title: title.into(),
        price: Amount::new(minor).unwrap_or(Amount::ZERO),
    };
    vec![
        item("book-1", BOOKSHOP, "The Purse and the Card (e-book)", 1250),
        item(
            "book-2",
            BOOKSHOP,
            "Offline Value, Online Checks (e-book)",
            890,
        ),
        item("album-1", MUSIC_SHOP, "Chip Songs (album)", 990),
        item("track-1", MUSIC_SHOP, "Counter Plus One (single)", 150),
    ]
}

/// The member stores' names.
pub fn demo_member_names() -> BTreeMap<DeviceId, String> {
    BTreeMap::from([
        (MALL, "Valuecard Mall".to_owned()),
        (BOOKSHOP, "Chapter & Chip Books".to_owned()),
        (MUSIC_SHOP, "Secure Element Records".to_owned()),
    ])
}

/// Each item's content: a small text file saying what it is.
#[derive(Debug, Default)]
pub struct DemoContent;

impl ContentSource for DemoContent {
    fn content(&self, sku: &str) -> Option<(String, Vec<u8>)> {
        let item = demo_catalog().into_iter().find(|item| item.sku == sku)?;
        Some((
            format!("{sku}.txt"),
            format!(
                "{}\n\nDelivered by the Valuecard Mall after its receipt was signed.\n",
                item.title
            )
            .into_bytes(),
        ))
    }
}

/// Where the embedded services keep their state and what day they see.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub store_database: DatabaseLocation,
    pub settlement_database: DatabaseLocation,
    /// `None`: the system clock.
    pub today: Option<valuecard_core::time::Date>,
    /// Connections per service.
    pub pool_size: usize,
    /// Binds `127.0.0.1:PORT` (0: any free port).
    pub store_port: u16,
    pub settlement_port: u16,
}

impl EmbeddedOptions {
    /// Both services in memory on free ports.
    pub fn in_memory(today: valuecard_core::time::Date) -> Self {
        EmbeddedOptions {
            store_database: DatabaseLocation::Memory,
            settlement_database: DatabaseLocation::Memory,
            today: Some(today),
            pool_size: 1,
            store_port: 0,
            settlement_port: 0,
        }
    }

    fn clock(&self) -> Box<dyn Clock + Sync> {
        match self.today {
            Some(today) => Box::new(FixedClock(today)),
            None => Box::new(valuecard_core::time::SystemClock),
        }
    }
}

/// Why the embedded system did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("database: {0}")]
    Database(String),
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
}

impl From<valuecard_core::messages::center::CenterError> for EmbeddedError {
    fn from(error: valuecard_core::messages::center::CenterError) -> Self {
        EmbeddedError::Database(error.to_string())
    }
}

impl From<crate::db::PoolError> for EmbeddedError {
    fn from(error: crate::db::PoolError) -> Self {
        EmbeddedError::Database(error.to_string())
    }
}

/// The running store and settlement service.
#[derive(Debug)]
pub struct OnlineSystem {
    pub store: BackgroundService,
    pub settlement: BackgroundService,
    pub application_key: PublicKey,
    pub store_key: PublicKey,
    pub security_server: DeviceId,
    pub settlement_pool: DatabasePool,
    pub store_pool: DatabasePool,
    reporter: Option<Reporter>,
}

impl OnlineSystem {
    /// Starts the mall and the settlement service whose security server holds `keys` (its
    /// certificate issued by the center whose root is `anchor`), reporting to `sink` if
    /// given, charges authorized by `authorizer`.
    pub fn start(
        keys: ServiceKeys,
        anchor: TrustAnchor,
        authorizer: Arc<dyn CreditAuthorizer>,
        sink: Option<Box<dyn OnlineRecordSink>>,
        options: &EmbeddedOptions,
    ) -> Result<Self, EmbeddedError> {
        let mut rng = rand_core::OsRng;
        let application = ApplicationServer::new(SigningKeyPair::generate(&mut rng));
        let application_key = application.public_key();
        let store_signing = SigningKeyPair::generate(&mut rng);
        let store_key = store_signing.public_key();
        let store = Store::new(MALL, store_signing, demo_catalog(), application_key);

        let store_pool = DatabasePool::new(
            options.store_database.open(
                crate::store_service::MIGRATION_TABLE,
                crate::store_service::MIGRATIONS,
            )?,
            options.pool_size,
        )?;
        let store_identity =
            ServiceIdentity::generate(&[]).map_err(|e| EmbeddedError::Database(e.to_string()))?;
        let store_service = StoreService::new(
            store,
            "Valuecard Mall",
            demo_member_names(),
            Box::new(DemoContent),
            store_pool.clone(),
            options.clock(),
        );
        let store_background = BackgroundService::start(
            TcpListener::bind(("127.0.0.1", options.store_port))?,
            store_service.router(),
            &store_identity,
            "store",
        )?
        .keeping(store_pool.clone());

        let settlement_pool = DatabasePool::new(
            options.settlement_database.open(
                crate::settlement::MIGRATION_TABLE,
                crate::settlement::MIGRATIONS,
            )?,
            options.pool_size,
        )?;
        let security_server = keys.device_id();
        let mut service = SettlementService::new(
            Arc::clone(&keys),
            application,
            anchor,
            authorizer,
            settlement_pool.clone(),
            options.clock(),
        )?;
        service.register_store(&StoreRegistration {
            store_id: MALL,
            public_key: store_key,
            name: "Valuecard Mall".into(),
            url: Some(store_background.url()),
            certificate: Some(store_identity.certificate_pem()),
        })?;
        let reporter = match sink {
            Some(sink) => {
                let (reporter, handle) = Reporter::spawn(
                    settlement_pool.clone(),
                    sink,
                    Duration::from_secs(2),
                    options.clock(),
                )?;
                service = service.with_reporter(handle);
                Some(reporter)
            }
            None => None,
        };
        let settlement_identity =
            ServiceIdentity::generate(&[]).map_err(|e| EmbeddedError::Database(e.to_string()))?;
        let settlement_background = BackgroundService::start(
            TcpListener::bind(("127.0.0.1", options.settlement_port))?,
            service.router(),
            &settlement_identity,
            "settlement",
        )?
        .keeping(settlement_pool.clone());
        Ok(OnlineSystem {
            store: store_background,
            settlement: settlement_background,
            application_key,
            store_key,
            security_server,
            settlement_pool,
            store_pool,
            reporter,
        })
    }

    /// A holder's client of the two services.
    pub fn holder(&self) -> Holder {
        Holder::new(
            &self.store.url(),
            self.store.pin(),
            &self.settlement.url(),
            self.settlement.pin(),
            self.application_key,
        )
    }

    /// Stops both services and the reporter.
    pub fn shutdown(self) {
        let OnlineSystem {
            store,
            settlement,
            reporter,
            ..
        } = self;
        let _ = settlement.shutdown();
        let _ = store.shutdown();
        drop(reporter);
    }
}

/// A security server whose keys live in memory (a new master key M and a new signing key),
/// certified by `center` with role `OnlineSettlement`.
pub fn certify_software_security_server(
    center: &mut valuecard_center::Center,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<
    valuecard_settle::security::SoftwareSecurityKeys,
    valuecard_core::messages::center::CenterError,
> {
    let signing = SigningKeyPair::generate(rng);
    // The center's registry of devices wants an X25519 key; nothing is ever sealed to the
    // security server with it.
    let sealing = valuecard_core::crypto::SealingKeyPair::generate(rng).public_key();
    let (_, certificate) = center.certify_online_settlement(signing.public_key(), sealing)?;
    Ok(valuecard_settle::security::SoftwareSecurityKeys::new(
        valuecard_core::crypto::AesKey::random(rng),
        signing,
        certificate,
    ))
}

/// A test authorizer for the demonstration: every valid number up to 1000.00, except the
/// number `4000 0000 0000 0002`, which is always declined.
pub fn demo_authorizer() -> TestAuthorizer {
    TestAuthorizer::new().declining("4000000000000002", "the card issuer declined the charge")
}
