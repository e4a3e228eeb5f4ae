//! The center's HTTP service: the routes and the way every request goes. The center sits
//! behind a mutex and is called on the blocking pool (it is not `Sync`, and its database
//! calls block); [`crate::serve`] runs the routes over TLS.
//!
//! Every `/v1/` request goes the same way: a body must be declared `application/json`; it is
//! read up to [`crate::MAX_BODY_BYTES`] within the body timeout; the device's signature is checked
//! with its certified key, looked up on a database connection of the service's own, before
//! the center is locked (a flood of forged requests never waits for, nor holds, the center);
//! then, under the lock, the sequence is accepted, the body is parsed and checked against the
//! authenticated device, the center does the work and commits, and it signs the answer,
//! bound to the request. `/health` asks the database on the service's own connection and
//! never waits for the center either.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use valuecard_center::auth::{AuthenticatedDevice, DeviceDirectory};
use valuecard_center::Center;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterLink;

use crate::metrics::{endpoint_label, Metrics};
use crate::problem::{Problem, ProblemKind, Refusal, INTERNAL_DETAIL};
use crate::request::{dispenser_request, settlement_request, terminal_request};
use crate::{content_type, paths, terminal_wire, transfer_wire, wire};

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) center: Arc<Mutex<Center>>,
    /// Device keys and health on a connection of their own.
    pub(crate) directory: Arc<Mutex<Directory>>,
    pub(crate) metrics: Arc<Metrics>,
    /// `sqlite` or `postgresql`.
    database: &'static str,
    /// How long a request body may take to arrive.
    pub(crate) body_read_timeout: Duration,
}

impl App {
    pub(crate) fn new(
        center: Arc<Mutex<Center>>,
        body_read_timeout: Duration,
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
        Ok(App {
            center,
            directory: Arc::new(Mutex::new(Directory(Some(directory)))),
            metrics: Arc::new(Metrics::default()),
            database,
            body_read_timeout,
        })
    }
}

/// The service's [`DeviceDirectory`], closed off the runtime: the routes are dropped on a
/// thread that drives the runtime, where a PostgreSQL client must not block to close.
#[derive(Debug)]
pub(crate) struct Directory(Option<DeviceDirectory>);

impl Directory {
    pub(crate) fn device_key(
        &mut self,
        device: DeviceId,
    ) -> Option<Result<valuecard_center::auth::DeviceKey, valuecard_center::auth::AuthError>> {
        self.0.as_mut()?.device_key(device)
    }

    fn check_database(&mut self) -> Option<Result<(), valuecard_center::CenterError>> {
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
    let limits = crate::serve::ServiceLimits::default();
    Ok(build(App::new(center, limits.body_read_timeout)?))
}

pub(crate) fn build(app: App) -> Router {
    Router::new()
        .route(paths::ASSIGN, post(assign))
        .route(paths::RESUME, post(resume))
        .route(paths::CERTIFY, post(certify))
        .route(paths::AUTHORIZE, post(authorize))
        .route(paths::SETTLE, post(settle))
        .route(paths::SETTLEMENT_CHALLENGE, post(settlement_challenge))
        .route(paths::PENDING_LOADS_ROUTE, get(pending_loads))
        .route(paths::USAGE, post(usage))
        .route(paths::LISTS, post(lists))
        .route(paths::STAMPS, post(stamps))
        .route(paths::SERVICES, post(services))
        .route(paths::TRANSFERS, post(transfers))
        .route(paths::TRANSFER_RELEASE, post(transfer_release))
        .route(paths::HEALTH, get(health))
        .route(paths::METRICS, get(metrics))
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

fn parse_json<B: DeserializeOwned>(body: &[u8]) -> Result<B, Problem> {
    serde_json::from_slice(body)
        .map_err(|error| Problem::new(ProblemKind::Malformed, format!("malformed JSON: {error}")))
}

/// The device a body names must be the one that signed the request.
fn same_device(device: &AuthenticatedDevice, named: DeviceId) -> Result<(), Problem> {
    if named == device.device_id {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemKind::NotAuthorized,
            format!(
                "the body names device {named}, the request is signed by device {}",
                device.device_id
            ),
        )
        .device(device.device_id))
    }
}

async fn assign(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let (request, challenge) = parse_json::<wire::AssignBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let assignment = center.assign_card_id(&request, &challenge)?;
        Ok(wire::AssignmentBody::new(&assignment))
    })
    .await
}

async fn resume(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let (request, card, challenge) = parse_json::<wire::ResumeBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let assignment = center.resume_card_id(&request, &card, &challenge)?;
        Ok(wire::AssignmentBody::new(&assignment))
    })
    .await
}

async fn certify(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let request = parse_json::<wire::CertifyBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let personalization = center.certify_card(&request)?;
        Ok(wire::PersonalizationBody::new(&personalization))
    })
    .await
}

async fn authorize(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let request = parse_json::<wire::AuthorizeBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let approval = center.authorize_load(&request)?;
        Ok(wire::ApprovalBody::new(&approval))
    })
    .await
}

async fn settlement_challenge(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let request = parse_json::<wire::SettlementChallengeBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let challenge = center.settlement_challenge(&request)?;
        Ok(wire::ChallengeBody {
            load_number: request.load_number,
            challenge: hex::encode(challenge),
        })
    })
    .await
}

async fn settle(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let settlement = parse_json::<wire::SettleBody>(body)?.decode()?;
        same_device(device, settlement.dispenser_id)?;
        let outcome = center.settle_load(&settlement)?;
        Ok(wire::SettledBody {
            card_id: hex::encode(settlement.card_id.as_bytes()),
            load_number: settlement.load_number,
            outcome: outcome.as_str().to_owned(),
        })
    })
    .await
}

async fn pending_loads(State(app): State<App>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    dispenser_request(app, request, move |center, _device, body| {
        if !body.is_empty() {
            return Err(Problem::new(
                ProblemKind::Malformed,
                "this request carries no body",
            ));
        }
        let segment = path
            .strip_prefix("/v1/cards/")
            .and_then(|rest| rest.strip_suffix("/pending-loads"))
            .unwrap_or_default();
        let card = wire::card_id_segment(segment)?;
        let loads = center.pending_loads()?;
        Ok(wire::PendingLoadsBody::new(&card, &loads))
    })
    .await
}

async fn usage(State(app): State<App>, request: Request) -> Response {
    terminal_request(app, request, |center, device, body| {
        let upload = parse_json::<terminal_wire::UsageUploadBody>(body)?.decode()?;
        same_device(device, upload.terminal_id)?;
        let receipt = center.ingest_usage(&upload)?;
        Ok(terminal_wire::UploadReceiptBody::new(&receipt))
    })
    .await
}

async fn transfers(State(app): State<App>, request: Request) -> Response {
    settlement_request(app, request, |center, device, body| {
        let upload = parse_json::<transfer_wire::TransferUploadBody>(body)?.decode()?;
        same_device(device, upload.terminal_id)?;
        let receipt = center.ingest_transfers(&upload)?;
        Ok(terminal_wire::UploadReceiptBody::new(&receipt))
    })
    .await
}

/// A settlement terminal asks the center to release a transfer whose destination will never
/// come back; a refusal is a problem document saying why (present the destination card).
async fn transfer_release(State(app): State<App>, request: Request) -> Response {
    settlement_request(app, request, |center, device, body| {
        let (terminal_id, source, pending) =
            parse_json::<transfer_wire::ReleaseRequestBody>(body)?.decode()?;
        same_device(device, terminal_id)?;
        let release = center.authorize_transfer_release_for(terminal_id, source, &pending)?;
        Ok(transfer_wire::ReleaseBody::new(&release))
    })
    .await
}

async fn lists(State(app): State<App>, request: Request) -> Response {
    terminal_request(app, request, |center, device, body| {
        let (terminal_id, since) = parse_json::<terminal_wire::ListRequestBody>(body)?.decode()?;
        same_device(device, terminal_id)?;
        let delta = center.list_delta_since(since)?;
        Ok(terminal_wire::ListDeltaBody::new(&delta))
    })
    .await
}

async fn stamps(State(app): State<App>, request: Request) -> Response {
    terminal_request(app, request, |center, device, body| {
        let (terminal_id, stamp) = parse_json::<terminal_wire::StampBody>(body)?.decode()?;
        same_device(device, terminal_id)?;
        let count = center.record_stamp(terminal_id, &stamp)?;
        Ok(terminal_wire::StampBody {
            terminal_id: hex::encode(terminal_id.as_bytes()),
            count,
            signature: None,
        })
    })
    .await
}

async fn services(State(app): State<App>, request: Request) -> Response {
    terminal_request(app, request, |center, device, body| {
        let upload = parse_json::<terminal_wire::ServiceUploadBody>(body)?.decode()?;
        same_device(device, upload.terminal_id)?;
        let receipt = center.ingest_service_records(&upload)?;
        Ok(terminal_wire::ServiceReceiptBody::new(&receipt))
    })
    .await
}

/// Whether the database answers, asked on the service's own connection (which reconnects
/// after the database came back): never waits for the center, so a long request does not
/// make the service look down. A database in memory is always there.
async fn health(State(app): State<App>) -> Response {
    let directory = Arc::clone(&app.directory);
    let outcome =
        tokio::task::spawn_blocking(move || lock(&directory).check_database().unwrap_or(Ok(())))
            .await;
    let failure = match outcome {
        Ok(Ok(())) => {
            return json_response(&wire::HealthBody {
                status: "ok".to_owned(),
                database: app.database.to_owned(),
            })
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    tracing::error!(error = %failure, "health check: the database does not answer");
    Problem::new(ProblemKind::Unavailable, "the database does not answer")
        .database(app.database)
        .into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type::PROMETHEUS),
        )],
        app.metrics.render(),
    )
        .into_response()
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
