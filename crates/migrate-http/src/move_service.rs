//! The value move server 20 (seed 002) as an HTTPS service over its movement database
//! (`migrate_` tables).
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | the database answers |
//! | `POST /v1/users` | a new user (ID and password) |
//! | `POST /v1/chips` | a chip's serial number registered to the user who proves the password |
//! | `POST /v1/sessions` | S1 / S9: a device session (upload, download or rollback) and its first command |
//! | `POST /v1/sessions/{session}/next` | the chip's answer; the next command or the end |
//! | `GET /v1/moves/{move_id}` | a move's state and its services' |
//!
//! The service holds nothing of a move between two requests: every step is in the
//! database before its command is answered ([`valuecard_migrate::server::engine`]), so any
//! instance over the same database takes any request of a session, and a restarted one
//! carries on. A session's and a move's identifiers are 16 random bytes known to the
//! holder's device: they are what entitles a request to them, as the password entitles
//! a start. Every refusal is a problem document whose detail is the server's own words
//! for the holder ([`crate::problem::move_problem`]).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use rand_core::OsRng;
use valuecard_center::sql::Database;
use valuecard_core::messages::center::CenterError;
use valuecard_migrate::server::{accounts, schema, MoveError, MoveServer};
use valuecard_settle_http::{DatabaseLocation, DatabasePool};

use crate::access::AccessDigest;
use crate::problem::{move_problem, Problem};
use crate::serving::{answer, health, path_id, with_fallbacks, Answer, Wire};
use crate::wire::{
    ChipRegistered, ChipRegisteredBody, ChipRequestBody, ChipServiceBody, NextBody,
    NextRequestBody, OutcomeBody, SessionRequestBody, StartedBody, UserCreatedBody,
    UserRequestBody,
};

/// The move server's service: its logic and its database, nothing else.
pub struct MoveService {
    server: MoveServer,
    pool: DatabasePool,
    /// Who may register a chip's issued services (S2's reference table): the holders of
    /// this secret, the system's providers. None: nobody.
    issuers: Option<AccessDigest>,
}

impl core::fmt::Debug for MoveService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveService")
            .field("server", &self.server)
            .field("pool", &self.pool)
            .finish()
    }
}

/// Opens the movement database at `location` with its migrations applied.
pub fn open_database(location: &DatabaseLocation) -> Result<Database, CenterError> {
    location.open(schema::MIGRATION_TABLE, schema::MIGRATIONS)
}

impl MoveService {
    /// `server` (its administrative SAM and its links to the providers) over `pool`, a
    /// movement database ([`open_database`]).
    pub fn new(server: MoveServer, pool: DatabasePool) -> Self {
        MoveService {
            server,
            pool,
            issuers: None,
        }
    }

    /// Admits the issuers who show the secret of `digest` to register a chip's services.
    pub fn admitting_issuers(mut self, digest: AccessDigest) -> Self {
        self.issuers = Some(digest);
        self
    }

    /// The router of the service.
    pub fn router(self) -> Router {
        with_fallbacks(
            Router::new()
                .route("/health", get(service_health))
                .route("/v1/users", post(create_user))
                .route("/v1/chips", post(register_chip))
                .route("/v1/chips/{card_id}/services", post(register_chip_service))
                .route("/v1/sessions", post(start))
                .route("/v1/sessions/{session}/next", post(next))
                .route("/v1/moves/{move_id}", get(status)),
        )
        .with_state(Arc::new(self))
    }

    /// Runs `work` with the move server on a pooled connection, off the runtime (password
    /// hashes, the database and the providers' calls all block).
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&MoveServer, &mut Database) -> Result<T, MoveError> + Send + 'static,
    ) -> Result<T, Problem> {
        let service = Arc::clone(self);
        self.pool
            .run(move |db: &mut Database| {
                work(&service.server, db).map_err(|error| move_problem(&error))
            })
            .await
    }
}

type Shared = State<Arc<MoveService>>;

async fn service_health(State(service): Shared) -> Answer {
    health(&service.pool).await
}

async fn create_user(State(service): Shared, Wire(user): Wire<UserRequestBody>) -> Answer {
    let user_id = user.user_id.clone();
    service
        .run(move |_, db| {
            accounts::create_user(db, &user.user_id, &user.password, crate::now(), &mut OsRng)
        })
        .await?;
    Ok(answer::<UserCreatedBody>(&user_id))
}

async fn register_chip(
    State(service): Shared,
    Wire(registration): Wire<ChipRequestBody>,
) -> Answer {
    let registered = service
        .run(move |_, db| {
            let credentials = &registration.credentials;
            let user = accounts::authenticate(db, &credentials.user_id, &credentials.password)?;
            accounts::register_chip(db, &user.0, &registration.card_id)?;
            Ok(ChipRegistered {
                user_id: user.0,
                card_id: registration.card_id,
            })
        })
        .await?;
    Ok(answer::<ChipRegisteredBody>(&registered))
}

/// S2's reference table: an issuer registers a service it issued to the chip. Only the
/// system's issuers, with the access secret, may: a holder who could register services
/// would defeat the check.
async fn register_chip_service(
    State(service): Shared,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
    Wire(code): Wire<ChipServiceBody>,
) -> Answer {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if !service
        .issuers
        .as_ref()
        .is_some_and(|issuers| issuers.admits(authorization))
    {
        return Err(Problem::new(
            crate::problem::ProblemKind::Unauthorized,
            "only the chip's issuers register its services: show their access secret as a bearer token",
        ));
    }
    let card_id = valuecard_core::ids::CardId(path_id("card_id", path)?);
    service
        .run(move |_, db| accounts::register_chip_service(db, &card_id, code))
        .await?;
    Ok(answer::<ChipServiceBody>(&code))
}

/// S1 / S9: a device session and its first command.
async fn start(State(service): Shared, Wire(request): Wire<SessionRequestBody>) -> Answer {
    let started = service
        .run(move |server, db| {
            let credentials = &request.credentials;
            server.start(
                db,
                &credentials.user_id,
                &credentials.password,
                request.mode,
                &mut OsRng,
            )
        })
        .await?;
    Ok(answer::<StartedBody>(&started))
}

/// The chip's answer to the last command; the next command or the end.
async fn next(
    State(service): Shared,
    path: Result<Path<String>, PathRejection>,
    Wire(response): Wire<NextRequestBody>,
) -> Answer {
    let session = path_id("session", path)?;
    let next = service
        .run(move |server, db| server.next(db, &session, &response))
        .await?;
    Ok(answer::<NextBody>(&next))
}

async fn status(State(service): Shared, path: Result<Path<String>, PathRejection>) -> Answer {
    let move_id = path_id("move_id", path)?;
    let outcome = service
        .run(move |server, db| server.status(db, &move_id))
        .await?;
    Ok(answer::<OutcomeBody>(&outcome))
}
