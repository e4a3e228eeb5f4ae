//! A service provider's application server 10 (seed 002) as an HTTPS service: its normal
//! SAM's and transfer SAM's part of a move, over its own database (`provider_` tables).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /health` | anyone | the database answers |
//! | `GET /v1/format` | anyone | the area format a new chip is formatted with (S10) |
//! | `POST /v1/key-packages` | move server | both key packages of the area for a chip |
//! | `POST /v1/moves/{move_id}/upload` | move server | one step of S5-S7 |
//! | `POST /v1/moves/{move_id}/download` | move server | one step of S12-S14 |
//! | `POST /v1/moves/{move_id}/clear` | move server | S17: the copy deleted |
//! | `POST /v1/moves/{move_id}/discard` | move server | a rollback: the copy deleted |
//!
//! The routes of the move are the move server's alone: each request shows its access
//! secret (`Authorization: Bearer`), checked against the digest this service keeps before
//! the request's body is read; without it, 401 and nothing changes. Every step is stored
//! in the database before its answer ([`valuecard_migrate::provider`]), so a restarted
//! service, or another instance on the same database, carries on.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand_core::OsRng;
use valuecard_center::sql::Database;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::MoveId;
use valuecard_core::time::Clock;
use valuecard_migrate::provider::{store, Exchange, Provider, Turn};
use valuecard_settle_http::{DatabaseLocation, DatabasePool};

use crate::access::AccessDigest;
use crate::problem::{provider_problem, Problem, ProblemKind};
use crate::serving::{answer, health, path_id, with_fallbacks, Answer, Wire};
use crate::wire::{
    CopyEnd, CopyEnded, CopyEndedBody, DownloadRequestBody, ExchangeBody, FormatBody,
    KeyPackagesBody, KeyPackagesRequestBody, UploadRequestBody,
};

/// One provider's service.
pub struct ProviderService {
    provider: Arc<Provider>,
    pool: DatabasePool,
    clock: Box<dyn Clock + Sync>,
    access: AccessDigest,
}

impl core::fmt::Debug for ProviderService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProviderService")
            .field("provider", &self.provider)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Opens a provider's database at `location` with the provider's migrations applied.
pub fn open_database(location: &DatabaseLocation) -> Result<Database, CenterError> {
    location.open(store::MIGRATION_TABLE, store::MIGRATIONS)
}

impl ProviderService {
    /// `provider` over `pool` (a database with the provider's migrations,
    /// [`open_database`]), admitting to the move's routes only the holder of the secret
    /// whose digest is `access`.
    pub fn new(
        provider: Arc<Provider>,
        pool: DatabasePool,
        clock: Box<dyn Clock + Sync>,
        access: AccessDigest,
    ) -> Self {
        ProviderService {
            provider,
            pool,
            clock,
            access,
        }
    }

    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// The router of the service.
    pub fn router(self) -> Router {
        let service = Arc::new(self);
        let transfer = Router::new()
            .route("/v1/key-packages", post(key_packages))
            .route("/v1/moves/{move_id}/upload", post(upload))
            .route("/v1/moves/{move_id}/download", post(download))
            .route("/v1/moves/{move_id}/clear", post(clear))
            .route("/v1/moves/{move_id}/discard", post(discard))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&service),
                move_server_only,
            ));
        with_fallbacks(
            Router::new()
                .route("/health", get(service_health))
                .route("/v1/format", get(format))
                .merge(transfer),
        )
        .with_state(service)
    }

    /// Runs one step of a conversation on a pooled connection, off the runtime.
    async fn step(
        self: &Arc<Self>,
        work: impl FnOnce(&Provider, &mut Database, i64) -> Result<Exchange, Problem> + Send + 'static,
    ) -> Result<Exchange, Problem> {
        let service = Arc::clone(self);
        self.pool
            .run(move |db: &mut Database| work(&service.provider, db, crate::now()))
            .await
    }
}

/// The move server's access secret, checked before anything of the request is read.
async fn move_server_only(
    State(service): State<Arc<ProviderService>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if service.access.admits(authorization) {
        next.run(request).await
    } else {
        tracing::warn!(path = %request.uri().path(), "a transfer route without the move server's secret");
        Problem::new(
            ProblemKind::Unauthorized,
            "this route is the value move server's: show its access secret as a bearer token",
        )
        .into_response()
    }
}

async fn service_health(State(service): State<Arc<ProviderService>>) -> Answer {
    health(&service.pool).await
}

async fn format(State(service): State<Arc<ProviderService>>) -> Response {
    answer::<FormatBody>(&service.provider.format())
}

/// Both key packages of the area for a chip: the SAMs seal and sign, off the runtime (a
/// SAM in a token blocks).
async fn key_packages(
    State(service): State<Arc<ProviderService>>,
    Wire(certificate): Wire<KeyPackagesRequestBody>,
) -> Answer {
    let today = service.clock.today();
    let worker = Arc::clone(&service);
    let packages = tokio::task::spawn_blocking(move || {
        worker
            .provider
            .key_packages(&certificate, today, &mut OsRng)
            .map_err(|error| provider_problem(&error))
    })
    .await
    .map_err(|_| Problem::new(ProblemKind::Internal, "the SAM's work stopped unexpectedly"))??;
    Ok(answer::<KeyPackagesBody>(&packages))
}

fn move_path(path: Result<Path<String>, PathRejection>) -> Result<MoveId, Problem> {
    path_id("move_id", path)
}

/// S5-S7: one step of the upload from the old chip.
async fn upload(
    State(service): State<Arc<ProviderService>>,
    path: Result<Path<String>, PathRejection>,
    Wire(request): Wire<UploadRequestBody>,
) -> Answer {
    let move_id = move_path(path)?;
    let today = service.clock.today();
    let exchange = service
        .step(move |provider, db, now| {
            let turn = Turn {
                move_id: &move_id,
                card: &request.source,
                now,
                today,
            };
            provider
                .upload(
                    db,
                    turn,
                    Some(&request.source_certificate),
                    request.response.as_deref(),
                    &mut OsRng,
                )
                .map_err(|error| provider_problem(&error))
        })
        .await?;
    Ok(answer::<ExchangeBody>(&exchange))
}

/// S12-S14: one step of the download into the new chip.
async fn download(
    State(service): State<Arc<ProviderService>>,
    path: Result<Path<String>, PathRejection>,
    Wire(request): Wire<DownloadRequestBody>,
) -> Answer {
    let move_id = move_path(path)?;
    let today = service.clock.today();
    let exchange = service
        .step(move |provider, db, now| {
            let turn = Turn {
                move_id: &move_id,
                card: &request.destination,
                now,
                today,
            };
            provider
                .download(db, turn, request.response.as_deref(), &mut OsRng)
                .map_err(|error| provider_problem(&error))
        })
        .await?;
    Ok(answer::<ExchangeBody>(&exchange))
}

async fn end_copy(service: Arc<ProviderService>, move_id: MoveId, end: CopyEnd) -> Answer {
    let worker = Arc::clone(&service);
    service
        .pool
        .run(move |db: &mut Database| -> Result<(), Problem> {
            let now = crate::now();
            match end {
                CopyEnd::Cleared => worker.provider.clear(db, &move_id, now),
                CopyEnd::Discarded => worker.provider.discard(db, &move_id, now),
            }
            .map_err(|error| provider_problem(&error))
        })
        .await?;
    Ok(answer::<CopyEndedBody>(&CopyEnded {
        move_id,
        state: end,
    }))
}

/// S17: the copy deleted once downloaded (again: nothing changes).
async fn clear(
    State(service): State<Arc<ProviderService>>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let move_id = move_path(path)?;
    end_copy(service, move_id, CopyEnd::Cleared).await
}

/// A rollback: the copy deleted before any download.
async fn discard(
    State(service): State<Arc<ProviderService>>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let move_id = move_path(path)?;
    end_copy(service, move_id, CopyEnd::Discarded).await
}
