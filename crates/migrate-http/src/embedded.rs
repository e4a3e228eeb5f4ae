//! The value move server and its providers embedded in one process, each an HTTPS service
//! on 127.0.0.1 with its own certificate and database; the move server reaches the
//! providers through [`HttpProviderLink`] with an access secret drawn at start. The
//! demonstration, the tests and a laptop trial start the move this way.
//!
//! The move server keeps nothing of a move in the process: it can be stopped and started
//! again on the same database (and the same address and certificate, so that a holder's
//! device carries on), and further instances can be started over the same database. A
//! provider can be stopped and started again the same way.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use valuecard_center::sql::Database;
use valuecard_center_http::{CenterPin, ServiceIdentity};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::ServiceCode;
use valuecard_core::time::{Clock, Date, FixedClock, SystemClock};
use valuecard_migrate::provider::Provider;
use valuecard_migrate::sam::AdminSam;
use valuecard_migrate::server::{LinkError, MoveServer, ProviderLink};
use valuecard_settle_http::db::PoolError;
use valuecard_settle_http::{BackgroundService, DatabaseLocation, DatabasePool};

use crate::access::AccessSecret;
use crate::move_client::HttpMoveServer;
use crate::move_service::{self, MoveService};
use crate::provider_link::HttpProviderLink;
use crate::provider_service::{self, ProviderService};

/// A provider to start: its application server (built by the caller from its SAMs) and
/// where it keeps its books.
#[derive(Debug)]
pub struct ProviderSetup {
    pub provider: Arc<Provider>,
    pub database: DatabaseLocation,
}

/// Where the move server keeps its state, what day the providers see, and where it serves.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    pub server_database: DatabaseLocation,
    /// `None`: the system clock.
    pub today: Option<Date>,
    /// Connections per service.
    pub pool_size: usize,
    /// Binds `127.0.0.1:PORT` (0: any free port); the providers always take free ports.
    pub server_port: u16,
}

impl MoveOptions {
    /// The move server in memory on a free port, the providers seeing `today`.
    pub fn in_memory(today: Date) -> Self {
        MoveOptions {
            server_database: DatabaseLocation::Memory,
            today: Some(today),
            pool_size: 1,
            server_port: 0,
        }
    }

    fn clock(&self) -> Box<dyn Clock + Sync> {
        match self.today {
            Some(today) => Box::new(FixedClock(today)),
            None => Box::new(SystemClock),
        }
    }
}

/// Why the embedded system, or one of its services, did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("database: {0}")]
    Database(String),
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
    #[error("the provider of service {service} cannot be reached: {error}")]
    Provider {
        service: ServiceCode,
        error: LinkError,
    },
    #[error("no provider of service {0} runs here")]
    NoSuchProvider(ServiceCode),
}

impl From<CenterError> for EmbeddedError {
    fn from(error: CenterError) -> Self {
        EmbeddedError::Database(error.to_string())
    }
}

impl From<PoolError> for EmbeddedError {
    fn from(error: PoolError) -> Self {
        EmbeddedError::Database(error.to_string())
    }
}

fn identity() -> Result<ServiceIdentity, EmbeddedError> {
    ServiceIdentity::generate(&[]).map_err(|error| EmbeddedError::Database(error.to_string()))
}

/// How a service's database is opened, its migrations applied.
type OpenDatabase = fn(&DatabaseLocation) -> Result<Database, CenterError>;

/// One service's fixed parts, kept while it is stopped so that it comes back as itself.
struct Station {
    identity: ServiceIdentity,
    address: SocketAddr,
    location: DatabaseLocation,
    pool: DatabasePool,
    /// The socket bound at first, until the service first serves on it.
    bound: Option<TcpListener>,
    running: Option<BackgroundService>,
}

impl Station {
    fn new(
        location: &DatabaseLocation,
        pool: DatabasePool,
        port: u16,
    ) -> Result<Self, EmbeddedError> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        Ok(Station {
            identity: identity()?,
            address: listener.local_addr()?,
            location: location.clone(),
            pool,
            bound: Some(listener),
            running: None,
        })
    }

    fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    fn serve(&mut self, router: axum::Router, name: &str) -> Result<(), EmbeddedError> {
        let listener = match self.bound.take() {
            Some(listener) => listener,
            None => TcpListener::bind(self.address)?,
        };
        let service = BackgroundService::start(listener, router, &self.identity, name)?
            .keeping(self.pool.clone());
        self.running = Some(service);
        Ok(())
    }

    /// Stops the service; its database connections close with it, but for a database in
    /// memory, which is the service's state and is kept.
    fn stop(&mut self) -> std::io::Result<()> {
        self.running
            .take()
            .map_or(Ok(()), BackgroundService::shutdown)
    }

    /// The pool a restarted service works on: the same database, new connections.
    fn reopen(&mut self, open: OpenDatabase, size: usize) -> Result<(), EmbeddedError> {
        if self.location != DatabaseLocation::Memory {
            self.pool = DatabasePool::new(open(&self.location)?, size)?;
        }
        Ok(())
    }
}

struct RunningProvider {
    provider: Arc<Provider>,
    station: Station,
}

/// The running move server and its providers.
pub struct MoveSystem {
    admin: Arc<dyn AdminSam>,
    access: AccessSecret,
    options: MoveOptions,
    providers: Vec<RunningProvider>,
    server: Station,
}

impl core::fmt::Debug for MoveSystem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveSystem")
            .field("server", &self.server.address)
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|p| (p.provider.service(), p.station.address))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Another instance of the move server over the same database.
#[derive(Debug)]
pub struct MoveInstance {
    pub service: BackgroundService,
    pub pool: DatabasePool,
}

impl MoveInstance {
    pub fn client(&self) -> HttpMoveServer {
        HttpMoveServer::new(&self.service.url(), self.service.pin())
    }
}

impl MoveSystem {
    /// Starts each provider, then the move server with the administrative SAM `admin`,
    /// reaching them over HTTPS.
    pub fn start(
        admin: Arc<dyn AdminSam>,
        providers: Vec<ProviderSetup>,
        options: &MoveOptions,
    ) -> Result<Self, EmbeddedError> {
        let access = AccessSecret::generate(&mut rand_core::OsRng);
        let mut running = Vec::with_capacity(providers.len());
        for setup in providers {
            let pool = DatabasePool::new(
                provider_service::open_database(&setup.database)?,
                options.pool_size,
            )?;
            let mut provider = RunningProvider {
                provider: setup.provider,
                station: Station::new(&setup.database, pool, 0)?,
            };
            serve_provider(&mut provider, &access, options)?;
            running.push(provider);
        }
        let pool = DatabasePool::new(
            move_service::open_database(&options.server_database)?,
            options.pool_size,
        )?;
        let server = Station::new(&options.server_database, pool, options.server_port)?;
        let mut system = MoveSystem {
            admin,
            access,
            options: options.clone(),
            providers: running,
            server,
        };
        system.start_server()?;
        Ok(system)
    }

    /// Registers, as the chip's issuer, that `service` was issued to `card_id` (S2's
    /// reference table).
    pub fn register_chip_service(
        &self,
        card_id: &valuecard_core::ids::CardId,
        service: ServiceCode,
    ) -> Result<(), valuecard_migrate::server::MoveError> {
        crate::move_client::register_chip_service(
            &self.url(),
            &self.pin(),
            &self.access,
            card_id,
            service,
        )
    }

    /// The move server's address (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The certificate the holder's device pins.
    pub fn pin(&self) -> CenterPin {
        self.server.identity.pin()
    }

    /// A holder's device's client of the move server.
    pub fn client(&self) -> HttpMoveServer {
        HttpMoveServer::new(&self.url(), &self.pin())
    }

    /// The movement database.
    pub fn server_pool(&self) -> &DatabasePool {
        &self.server.pool
    }

    /// The services whose providers run here, in the order they were given.
    pub fn services(&self) -> Vec<ServiceCode> {
        self.providers
            .iter()
            .map(|p| p.provider.service())
            .collect()
    }

    fn provider(&self, service: ServiceCode) -> Result<&RunningProvider, EmbeddedError> {
        self.providers
            .iter()
            .find(|p| p.provider.service() == service)
            .ok_or(EmbeddedError::NoSuchProvider(service))
    }

    fn provider_mut(
        &mut self,
        service: ServiceCode,
    ) -> Result<&mut RunningProvider, EmbeddedError> {
        self.providers
            .iter_mut()
            .find(|p| p.provider.service() == service)
            .ok_or(EmbeddedError::NoSuchProvider(service))
    }

    /// A provider's database (its books: copies, records).
    pub fn provider_pool(&self, service: ServiceCode) -> Option<&DatabasePool> {
        self.provider(service).ok().map(|p| &p.station.pool)
    }

    /// A provider's address and certificate.
    pub fn provider_endpoint(&self, service: ServiceCode) -> Option<(String, CenterPin)> {
        self.provider(service)
            .ok()
            .map(|p| (p.station.url(), p.station.identity.pin()))
    }

    /// How many copies the providers' transfer SAMs still hold, all services together.
    pub fn copies_held(&self) -> Result<i64, EmbeddedError> {
        let mut held = 0;
        for running in &self.providers {
            let provider = Arc::clone(&running.provider);
            held += running.station.pool.run_blocking(move |db| {
                provider
                    .copies_held(db)
                    .map_err(|error| CenterError::Storage(error.to_string()))
            })?;
        }
        Ok(held)
    }

    /// Stops the move server (the requests in flight finish).
    pub fn stop_server(&mut self) -> std::io::Result<()> {
        self.server.stop()
    }

    /// Starts the move server (again): the same address, certificate and database, new
    /// connections to it, new links to the providers. Every provider must be running.
    pub fn start_server(&mut self) -> Result<(), EmbeddedError> {
        if self.server.running.is_some() {
            return Ok(());
        }
        self.server
            .reopen(move_service::open_database, self.options.pool_size)?;
        let router = self.move_service(self.server.pool.clone())?.router();
        self.server.serve(router, "move-server")
    }

    /// Another instance of the move server over the same database, on its own port with
    /// its own certificate.
    pub fn another_instance(&self) -> Result<MoveInstance, EmbeddedError> {
        let pool = match &self.server.location {
            DatabaseLocation::Memory => self.server.pool.clone(),
            location => DatabasePool::new(
                move_service::open_database(location)?,
                self.options.pool_size,
            )?,
        };
        let router = self.move_service(pool.clone())?.router();
        let service = BackgroundService::start(
            TcpListener::bind(("127.0.0.1", 0))?,
            router,
            &identity()?,
            "move-server",
        )?
        .keeping(pool.clone());
        Ok(MoveInstance { service, pool })
    }

    fn move_service(&self, pool: DatabasePool) -> Result<MoveService, EmbeddedError> {
        let mut links: Vec<Arc<dyn ProviderLink>> = Vec::with_capacity(self.providers.len());
        for running in &self.providers {
            let link = HttpProviderLink::connect(
                &running.station.url(),
                &running.station.identity.pin(),
                &self.access,
            )
            .map_err(|error| EmbeddedError::Provider {
                service: running.provider.service(),
                error,
            })?;
            links.push(Arc::new(link));
        }
        Ok(
            MoveService::new(MoveServer::new(Arc::clone(&self.admin), links), pool)
                .admitting_issuers(self.access.digest()),
        )
    }

    /// Stops the provider of `service`.
    pub fn stop_provider(&mut self, service: ServiceCode) -> Result<(), EmbeddedError> {
        Ok(self.provider_mut(service)?.station.stop()?)
    }

    /// Starts the provider of `service` again on its address, certificate and database.
    pub fn start_provider(&mut self, service: ServiceCode) -> Result<(), EmbeddedError> {
        let access = self.access.clone();
        let options = self.options.clone();
        let running = self.provider_mut(service)?;
        if running.station.running.is_some() {
            return Ok(());
        }
        running
            .station
            .reopen(provider_service::open_database, options.pool_size)?;
        serve_provider(running, &access, &options)
    }

    /// Stops the move server, then every provider.
    pub fn shutdown(mut self) {
        let _ = self.server.stop();
        for running in &mut self.providers {
            let _ = running.station.stop();
        }
    }
}

fn serve_provider(
    running: &mut RunningProvider,
    access: &AccessSecret,
    options: &MoveOptions,
) -> Result<(), EmbeddedError> {
    let service = ProviderService::new(
        Arc::clone(&running.provider),
        running.station.pool.clone(),
        options.clock(),
        access.digest(),
    );
    let name = format!("provider-{}", running.provider.service());
    running.station.serve(service.router(), &name)
}
