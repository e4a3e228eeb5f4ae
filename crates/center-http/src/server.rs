//! The center's HTTP service: the router (its handlers, each with its OpenAPI description,
//! are in `routes.rs`) and the way every request goes. Requests work on center handles lent
//! by the service's pool (`pool.rs`), one database connection each, called on the blocking
//! pool (their database calls block); [`crate::serve`] runs the routes over TLS.
//!
//! Every `/v1/` request goes the same way: a body must be declared `application/json`; it is
//! read up to [`crate::MAX_BODY_BYTES`] within the body timeout; the device's certified key is
//! looked up on a handle that is given back at once, and the signature is checked holding
//! none (a flood of forged requests holds no connection while its signatures fail); then, on
//! a handle, the sequence is accepted, the body is parsed and checked against the
//! authenticated device, the center does the work and commits, and it signs the answer,
//! bound to the request. `/health` asks the database on a connection of its own and never
//! waits for a handle.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use valuecard_center::auth::DeviceDirectory;
use valuecard_center::Center;

use crate::content_type;
use crate::metrics::{endpoint_label, Metrics};
use crate::pool::CenterPool;
use crate::problem::{Problem, ProblemKind, Refusal, StorageFailure, INTERNAL_DETAIL};

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct App {
    /// The center handles requests work on, one each (see `pool.rs`).
    pub(crate) centers: Arc<CenterPool>,
    /// The health check's own connection.
    pub(crate) directory: Arc<Mutex<Directory>>,
    pub(crate) metrics: Arc<Metrics>,
    /// `sqlite` or `postgresql`.
    pub(crate) database: &'static str,
    /// How long a request body may take to arrive.
    pub(crate) body_read_timeout: Duration,
}

impl App {
    pub(crate) fn new(
        center: Arc<Mutex<Center>>,
        limits: &crate::serve::ServiceLimits,
    ) -> Result<Self, valuecard_center::CenterError> {
        let (database, directory) = {
            let center = lock(&center);
            let database = if center.database().is_postgres() {
                "postgresql"
            } else {
                "sqlite"
            };
            (database, center.device_directory()?)
        };
        let centers = CenterPool::open(center, limits.pool_size, limits.pool_wait)?;
        crate::process_metrics::mark_start();
        Ok(App {
            centers: Arc::new(centers),
            directory: Arc::new(Mutex::new(Directory(Some(directory)))),
            metrics: Arc::new(Metrics::default()),
            database,
            body_read_timeout: limits.body_read_timeout,
        })
    }
}

/// The service's [`DeviceDirectory`], closed off the runtime: the routes are dropped on a
/// thread that drives the runtime, where a PostgreSQL client must not block to close.
#[derive(Debug)]
pub(crate) struct Directory(Option<DeviceDirectory>);

impl Directory {
    pub(crate) fn check_database(&mut self) -> Option<Result<(), valuecard_center::CenterError>> {
        self.0.as_mut()?.check_database()
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        if let Some(directory) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() && directory.has_own_connection() {
                let _ = std::thread::Builder::new()
                    .name("valuecard-directory-close".into())
                    .spawn(move || drop(directory));
            }
        }
    }
}

/// The center (or the directory), also after a panic in another request: every change the
/// center makes is one database transaction, which a panic rolls back, so what it holds
/// stays consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The service's routes, on a center shared with the caller, without TLS (for embedding
/// behind a TLS terminator of one's own; [`crate::serve`] adds TLS).
pub fn router(center: Arc<Mutex<Center>>) -> Result<Router, valuecard_center::CenterError> {
    Ok(build(App::new(
        center,
        &crate::serve::ServiceLimits::default(),
    )?))
}

pub(crate) fn build(app: App) -> Router {
    // The routes come with their OpenAPI description (served by one of them); only the
    // router is needed here.
    let (routes, _document) = crate::routes::routes().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(problems_only))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Every error answer is a problem document: one the service did not make as one (a
/// rejection inside axum) is replaced by the problem its status stands for.
async fn problems_only(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(content_type::PROBLEM));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let kind = ProblemKind::for_status(status);
    let detail = format!("{method} {path}: {}", kind.title().to_lowercase());
    Problem::new(kind, detail).into_response()
}

/// Metrics and the access log around every request.
async fn track(State(app): State<App>, request: Request, next: Next) -> Response {
    let endpoint = endpoint_label(request.uri().path());
    let method = request.method().clone();
    let started = Instant::now();
    let in_flight = endpoint.starts_with("/v1/").then(|| app.metrics.begin());
    let response = next.run(request).await;
    drop(in_flight);
    let elapsed = started.elapsed();
    let refusal = response.extensions().get::<Refusal>().map(|r| r.0.slug());
    if response.extensions().get::<StorageFailure>().is_some() {
        app.metrics.database_failed();
    }
    let status = response.status().as_u16();
    app.metrics.record(endpoint, status, refusal, elapsed);
    if endpoint.starts_with("/v1/") {
        tracing::info!(
            %method,
            endpoint,
            status,
            refusal = refusal.unwrap_or(""),
            micros = elapsed.as_micros() as u64,
            "request"
        );
    }
    response
}

pub(crate) fn json_response<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type::JSON),
            )],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode an answer");
            Problem::new(ProblemKind::Internal, INTERNAL_DETAIL).into_response()
        }
    }
}

async fn not_found(uri: Uri) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!("there is nothing at {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// Errors made inside the HTTP layer (not by the service's handlers) leave as problem
    /// documents of the kind their status stands for; the service's own pass unchanged.
    #[tokio::test]
    async fn error_answers_of_the_http_layer_become_problem_documents() {
        let routes = Router::new()
            .route("/large", get(|| async { StatusCode::PAYLOAD_TOO_LARGE }))
            .route(
                "/slow",
                get(|| async { (StatusCode::REQUEST_TIMEOUT, "timed out") }),
            )
            .route("/bad", get(|| async { (StatusCode::BAD_REQUEST, "no") }))
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/own",
                get(|| async { Problem::new(ProblemKind::Mismatch, "load 3 is settled") }),
            )
            .layer(middleware::from_fn(problems_only));
        for (path, status, slug) in [
            ("/large", 413, "body-too-large"),
            ("/slow", 408, "request-timeout"),
            ("/bad", 400, "malformed-request"),
            ("/own", 409, "mismatch"),
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = routes.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                content_type::PROBLEM,
                "{path}"
            );
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let document: crate::problem::ProblemDocument = serde_json::from_slice(&body).unwrap();
            assert_eq!(document.kind().map(ProblemKind::slug), Some(slug), "{path}");
            assert_eq!(document.status, status);
        }
        let request = Request::get("/ok").body(Body::empty()).unwrap();
        let response = routes.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
