//! The center's HTTP service: axum on a tokio runtime, the [`Center`] behind a mutex and
//! called on the blocking pool (it is not `Sync`, and its database calls block).
//!
//! Every `/v1/` request goes the same way: its body is read up to [`MAX_BODY_BYTES`], the
//! center authenticates the device (signature and sequence, see [`valuecard_center::auth`]),
//! the body is parsed and checked against the authenticated device, and the center does the
//! work and commits before the answer is sent. On shutdown the service stops accepting,
//! finishes the requests in flight, and returns: an acknowledged request is committed.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use valuecard_center::auth::{AuthenticatedDevice, SignedRequest};
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::Signature;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterLink;

use crate::metrics::{endpoint_label, Metrics};
use crate::problem::{Problem, ProblemKind, Refusal, INTERNAL_DETAIL};
use crate::{content_type, headers, paths, terminal_wire, wire, MAX_BODY_BYTES};

/// What every handler shares.
#[derive(Debug, Clone)]
struct App {
    center: Arc<Mutex<Center>>,
    metrics: Arc<Metrics>,
    /// `sqlite` or `postgresql`.
    database: &'static str,
}

impl App {
    fn new(center: Arc<Mutex<Center>>) -> Self {
        let database = if lock(&center).database().is_postgres() {
            "postgresql"
        } else {
            "sqlite"
        };
        App {
            center,
            metrics: Arc::new(Metrics::default()),
            database,
        }
    }
}

/// The center, also after a panic in another request: every change it makes is one database
/// transaction, which a panic rolls back, so what it holds stays consistent.
fn lock(center: &Mutex<Center>) -> std::sync::MutexGuard<'_, Center> {
    center.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The service's routes, on a center shared with the caller.
pub fn router(center: Arc<Mutex<Center>>) -> Router {
    build(App::new(center))
}

fn build(app: App) -> Router {
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
        .route(paths::HEALTH, get(health))
        .route(paths::METRICS, get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Serves on `listener` until `shutdown` completes; then stops accepting, finishes the
/// requests in flight, and returns. Keep a clone of `center` and drop it outside the
/// runtime: a center on PostgreSQL blocks when it closes its connection.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    center: Arc<Mutex<Center>>,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_app(listener, App::new(center), shutdown).await
}

async fn serve_app<F>(listener: tokio::net::TcpListener, app: App, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, build(app))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Serves `center` on `listener` on the calling thread until SIGINT or SIGTERM, then
/// finishes the requests in flight and returns.
pub fn run_until_signal(listener: StdTcpListener, center: Center) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let center = Arc::new(Mutex::new(center));
    let runtime = runtime()?;
    let served = runtime.block_on({
        let center = Arc::clone(&center);
        async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tracing::info!(address = %listener.local_addr()?, "center listening");
            serve(listener, center, shutdown_signal()).await?;
            tracing::info!("requests in flight finished; stopped");
            Ok(())
        }
    });
    // The center is dropped here, outside the runtime: its PostgreSQL client closes its
    // connection by blocking, which a thread driving the runtime must not do.
    drop(runtime);
    drop(center);
    served
}

/// The service on a thread of its own (tests, and programs that embed the center).
/// Dropping it shuts it down gracefully and waits.
#[derive(Debug)]
pub struct BackgroundServer {
    address: SocketAddr,
    center: Arc<Mutex<Center>>,
    metrics: Arc<Metrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl BackgroundServer {
    /// Binds `address` (port 0 picks a free one) and starts serving.
    pub fn bind(address: impl ToSocketAddrs, center: Arc<Mutex<Center>>) -> io::Result<Self> {
        Self::start(StdTcpListener::bind(address)?, center)
    }

    pub fn start(listener: StdTcpListener, center: Arc<Mutex<Center>>) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let app = App::new(Arc::clone(&center));
        let metrics = Arc::clone(&app.metrics);
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let runtime = runtime()?;
        let thread = std::thread::Builder::new()
            .name("valuecard-center-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    serve_app(listener, app, async {
                        let _ = signal.await;
                    })
                    .await
                })
            })?;
        Ok(BackgroundServer {
            address,
            center,
            metrics,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDRESS`, for [`crate::HttpCenterLink::new`].
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The center the service runs on (lock it to inspect or change it in process).
    pub fn center(&self) -> &Arc<Mutex<Center>> {
        &self.center
    }

    /// `/v1/` requests being processed now.
    pub fn requests_in_flight(&self) -> i64 {
        self.metrics.in_flight()
    }

    /// Stops accepting; requests in flight go on to their answer.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Whether the service has stopped.
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Shuts down gracefully and waits until every request in flight is answered.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.begin_shutdown();
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        let _ = self.join();
    }
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

fn json_response<T: Serialize>(body: &T) -> Response {
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

/// The authentication headers of a request.
#[derive(Debug, Clone, Copy)]
struct Credentials {
    device_id: DeviceId,
    sequence: u64,
    signature: Signature,
}

fn unauthenticated(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemKind::Unauthenticated, detail)
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Problem> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| unauthenticated(format!("the {name} header is missing")))?;
    if values.next().is_some() {
        return Err(unauthenticated(format!("the {name} header is repeated")));
    }
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| unauthenticated(format!("the {name} header is not text")))
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, Problem> {
    let device_id = single_header(headers, headers::DEVICE)?
        .parse::<DeviceId>()
        .map_err(|error| unauthenticated(format!("{}: {error}", headers::DEVICE)))?;
    let sequence = single_header(headers, headers::SEQUENCE)?;
    let sequence = if !sequence.is_empty()
        && sequence.len() <= 20
        && sequence.bytes().all(|b| b.is_ascii_digit())
    {
        sequence.parse::<u64>().ok()
    } else {
        None
    }
    .ok_or_else(|| {
        unauthenticated(format!(
            "{}: expected a decimal number below 2^64",
            headers::SEQUENCE
        ))
    })?;
    let signature = hex::decode(single_header(headers, headers::SIGNATURE)?)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or_else(|| {
            unauthenticated(format!("{}: expected 64 bytes of hex", headers::SIGNATURE))
        })?;
    Ok(Credentials {
        device_id,
        sequence,
        signature,
    })
}

fn too_large() -> Problem {
    Problem::new(
        ProblemKind::TooLarge,
        format!("a request body may hold at most {MAX_BODY_BYTES} bytes"),
    )
}

fn declares_too_large(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
}

/// The body, refused with 413 above [`MAX_BODY_BYTES`] whether or not it declares a length.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    if declares_too_large(headers) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                if cause.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                source = cause.source();
            }
            Problem::new(ProblemKind::Malformed, "the request body could not be read")
        })
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

/// Runs `work` for an authenticated dispenser's request, on the blocking pool with the
/// center locked: authentication (which advances the device's sequence) and the work happen
/// under one lock, in that order.
async fn dispenser_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, Role::Dispenser, work).await
}

/// Runs `work` for an authenticated payment terminal's request.
async fn terminal_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, Role::PaymentTerminal, work).await
}

async fn device_request<T, F>(app: App, request: Request, role: Role, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    match dispenser_request_inner(app, request, role, work).await {
        Ok(answer) => json_response(&answer),
        Err(problem) => problem.into_response(),
    }
}

async fn dispenser_request_inner<T, F>(
    app: App,
    request: Request,
    role: Role,
    work: F,
) -> Result<T, Problem>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    // A body declared too large is refused before anything else, unread.
    if declares_too_large(&parts.headers) {
        return Err(too_large());
    }
    let credentials = credentials(&parts.headers)?;
    let body = read_body(&parts.headers, body).await?;
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let center = Arc::clone(&app.center);
    tokio::task::spawn_blocking(move || {
        let mut center = lock(&center);
        let device = center.authenticate_request(&SignedRequest {
            device_id: credentials.device_id,
            sequence: credentials.sequence,
            method: &method,
            path: &path,
            body: &body,
            signature: &credentials.signature,
        })?;
        if device.role != role {
            let wanted = if role == Role::Dispenser {
                "a dispenser"
            } else {
                "a payment terminal"
            };
            return Err(Problem::new(
                ProblemKind::NotAuthorized,
                format!("device {} is not {wanted}", device.device_id),
            )
            .device(device.device_id));
        }
        work(&mut center, &device, &body)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "request worker failed");
        Problem::new(ProblemKind::Internal, INTERNAL_DETAIL)
    })?
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

async fn health(State(app): State<App>) -> Response {
    let center = Arc::clone(&app.center);
    let outcome = tokio::task::spawn_blocking(move || lock(&center).check_database()).await;
    match outcome {
        Ok(Ok(())) => json_response(&wire::HealthBody {
            status: "ok".to_owned(),
            database: app.database.to_owned(),
        }),
        Ok(Err(error)) => {
            tracing::error!(%error, "health check: the database does not answer");
            Problem::new(ProblemKind::Unavailable, "the database does not answer")
                .database(app.database)
                .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "health check failed");
            Problem::new(ProblemKind::Unavailable, "the database does not answer")
                .database(app.database)
                .into_response()
        }
    }
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
