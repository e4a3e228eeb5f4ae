//! What both services share: problem documents (RFC 9457) for every refusal, JSON bodies,
//! and a service running in the background on its own runtime (`valuecard online try`,
//! the demo, the tests and the benchmark run the services this way).

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use valuecard_center_http::{CenterPin, ServiceIdentity, ServiceLimits};

use crate::db::PoolError;

/// The kinds of refusal, each with its status and the `type` the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The request does not decode or misses a field.
    BadRequest,
    NotFound,
    /// A signature or cryptogram did not verify: something was altered or forged.
    SignatureFailure,
    /// The card's balance does not cover the payment.
    InsufficientBalance,
    /// The credit authorizer declined the charge.
    Declined,
    /// The state does not allow the step (another settlement of the card is unresolved, a
    /// step out of order, an order already paid by another settlement).
    Conflict,
    /// The charge would pass the card's largest balance.
    OverLimit,
    /// A service this one needs (its database, the store, the authorizer) is down.
    ServiceUnavailable,
    Internal,
}

impl ProblemKind {
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::BadRequest => StatusCode::BAD_REQUEST,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::SignatureFailure => StatusCode::FORBIDDEN,
            ProblemKind::InsufficientBalance | ProblemKind::OverLimit => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ProblemKind::Declined => StatusCode::PAYMENT_REQUIRED,
            ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "The request is malformed",
            ProblemKind::NotFound => "Not found",
            ProblemKind::SignatureFailure => "A signature or cryptogram does not verify",
            ProblemKind::InsufficientBalance => "The card's balance is insufficient",
            ProblemKind::Declined => "The credit card was declined",
            ProblemKind::Conflict => "The request conflicts with the current state",
            ProblemKind::OverLimit => "The card cannot hold that much",
            ProblemKind::ServiceUnavailable => "A service is unavailable",
            ProblemKind::Internal => "Internal error",
        }
    }
}

/// A problem document: what the services answer instead of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{title}: {detail}")]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: ProblemKind,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A 409 to a new update: the card's unresolved update (hex ID), to resolve with the card
    /// first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_update: Option<String>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            open_update: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::BadRequest, detail)
    }
}

impl From<PoolError> for Problem {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Busy => Problem::new(ProblemKind::ServiceUnavailable, error.to_string()),
            PoolError::Stopped => Problem::new(ProblemKind::Internal, error.to_string()),
            PoolError::Database(error) => Problem::from(error),
        }
    }
}

/// A database failure: the detail stays in the log, the client learns only that the
/// service could not answer (nothing of the database's message leaks).
impl From<valuecard_core::messages::center::CenterError> for Problem {
    fn from(error: valuecard_core::messages::center::CenterError) -> Self {
        tracing::error!(%error, "database");
        Problem::new(
            ProblemKind::ServiceUnavailable,
            "the service's database could not complete the request; nothing was changed, try again",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// A 200 answer with `body` as JSON.
pub fn json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (StatusCode::OK, bytes).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            response
        }
        Err(error) => Problem::new(ProblemKind::Internal, error.to_string()).into_response(),
    }
}

/// A request body as `T`, or a 400 saying which field is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|error| Problem::bad_request(error.to_string()))
}

/// Bytes from a hex field, or a 400 naming it.
pub fn hex_field(field: &str, text: &str) -> Result<Vec<u8>, Problem> {
    hex::decode(text).map_err(|error| Problem::bad_request(format!("{field}: not hex: {error}")))
}

/// A fixed-size hex field.
pub fn hex_array<const N: usize>(field: &str, text: &str) -> Result<[u8; N], Problem> {
    let bytes = hex_field(field, text)?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| Problem::bad_request(format!("{field}: expected {N} bytes")))
}

/// Either answer of a handler.
pub type Answer = Result<Response, Problem>;

/// `GET /health` of either service: its database answers `SELECT 1` on a pooled connection.
pub async fn health(pool: &crate::db::DatabasePool) -> Answer {
    use valuecard_center::sql::Executor;
    let postgres = pool.is_postgres();
    pool.run(
        |db: &mut valuecard_center::sql::Database| -> Result<(), Problem> {
            db.query_one("SELECT 1", &[])?;
            Ok(())
        },
    )
    .await?;
    Ok(json(&crate::wire::HealthBody {
        status: "ok".into(),
        database: if postgres { "postgresql" } else { "sqlite" }.into(),
    }))
}

/// One of the services serving in the background over TLS until dropped.
pub struct BackgroundService {
    address: SocketAddr,
    pin: CenterPin,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    /// The service's database connections, closed here after its runtime stopped: a
    /// PostgreSQL connection blocks to close, which it must not do on the runtime's thread
    /// (where the routes are dropped).
    pools: Vec<crate::db::DatabasePool>,
}

impl core::fmt::Debug for BackgroundService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackgroundService")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl BackgroundService {
    /// Serves `router` on `listener` with `identity`'s certificate, on a runtime of its own.
    pub fn start(
        listener: StdTcpListener,
        router: axum::Router,
        identity: &ServiceIdentity,
        name: &str,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let tls = identity
            .server_config()
            .map_err(|error| io::Error::other(error.to_string()))?;
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(format!("valuecard-{name}"))
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("valuecard-{name}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    valuecard_center_http::serve::serve_router(
                        listener,
                        router,
                        tls,
                        ServiceLimits::default(),
                        async {
                            let _ = signal.await;
                        },
                    )
                    .await
                })
            })?;
        Ok(BackgroundService {
            address,
            pin: identity.pin(),
            shutdown: Some(shutdown),
            thread: Some(thread),
            pools: Vec::new(),
        })
    }

    /// Keeps `pool` (the one the routes work on) until the service has stopped, so that its
    /// connections close off the runtime.
    pub fn keeping(mut self, pool: crate::db::DatabasePool) -> Self {
        self.pools.push(pool);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// The certificate clients pin.
    pub fn pin(&self) -> &CenterPin {
        &self.pin
    }

    /// Stops accepting, finishes the requests in flight and waits for the thread.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let stopped = match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the service's thread panicked"))),
            None => Ok(()),
        };
        self.pools.clear();
        stopped
    }
}

impl Drop for BackgroundService {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
