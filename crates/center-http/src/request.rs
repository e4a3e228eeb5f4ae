//! The way one device request goes, from its headers to the center's signed answer: the
//! body must be declared JSON and arrive within the body timeout and size limit; the
//! signature is checked with the device's certified key before a center handle is taken
//! from the pool; on the handle the sequence is accepted, the work done and committed, and
//! the answer signed.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use valuecard_center::auth::{AuthenticatedDevice, SignedRequest, VerifiedRequest};
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::Signature;
use valuecard_core::ids::DeviceId;

use crate::problem::{Problem, ProblemKind, INTERNAL_DETAIL};
use crate::server::{lock, App};
use crate::{content_type, headers, MAX_BODY_BYTES};

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
    declared_length(headers).is_some_and(|length| length > MAX_BODY_BYTES as u64)
}

/// How much of a refused body the service still reads and throws away, so that a client
/// that is still sending receives the refusal rather than a reset connection. A body
/// declared larger than this is not read at all: the connection is closed after the answer.
const DISCARD_LIMIT_BYTES: usize = 16 * MAX_BODY_BYTES;

async fn discard(mut body: Body) {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
        if seen > DISCARD_LIMIT_BYTES {
            break;
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

/// The body, refused with 413 above [`MAX_BODY_BYTES`] whether or not it declares a length
/// (the caller bounds the time this takes).
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, Problem> {
    use http_body_util::BodyExt;
    if let Some(length) = declared_length(headers).filter(|&l| l > MAX_BODY_BYTES as u64) {
        if length <= DISCARD_LIMIT_BYTES as u64 {
            discard(body).await;
        }
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            Problem::new(ProblemKind::Malformed, "the request body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > MAX_BODY_BYTES {
                discard(body).await;
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// Runs `work` for an authenticated dispenser's request.
pub(crate) async fn dispenser_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, &[Role::Dispenser], work).await
}

/// Runs `work` for an authenticated payment terminal's request.
pub(crate) async fn terminal_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, &[Role::PaymentTerminal], work).await
}

/// Runs `work` for an authenticated settlement terminal's request (seed 000).
pub(crate) async fn settlement_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, &[Role::SettlementTerminal], work).await
}

/// Runs `work` for the online settlement system's authenticated security server (seed 004).
pub(crate) async fn online_settlement_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, &[Role::OnlineSettlement], work).await
}

/// Runs `work` for a provider's authenticated transfer SAM (seed 002).
pub(crate) async fn service_transfer_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, &[Role::ServiceTransfer], work).await
}

/// Runs `work` for an authenticated device that keeps the blocking lists: a payment
/// terminal, or a charge or payment machine of memory cards (seed 001), which check the
/// machines' certificates against the list.
pub(crate) async fn list_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    let roles = [
        Role::PaymentTerminal,
        Role::ChargeMachine,
        Role::PaymentMachine,
    ];
    device_request(app, request, &roles, work).await
}

/// Runs `work` for an authenticated charge or payment machine of memory cards (seed 001).
pub(crate) async fn machine_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(
        app,
        request,
        &[Role::ChargeMachine, Role::PaymentMachine],
        work,
    )
    .await
}

/// Runs `work` for an authenticated charge machine of memory cards (seed 001).
pub(crate) async fn charge_machine_request<T, F>(app: App, request: Request, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    device_request(app, request, &[Role::ChargeMachine], work).await
}

/// How a refusal names a role.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Dispenser => "a dispenser",
        Role::SettlementTerminal => "a settlement terminal",
        Role::ChargeMachine => "a charge machine",
        Role::PaymentMachine => "a payment machine",
        _ => "a payment terminal",
    }
}

async fn device_request<T, F>(app: App, request: Request, roles: &[Role], work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    match device_request_inner(app, request, roles, work).await {
        Ok((body, signature)) => signed_json_response(body, &signature),
        Err(problem) => problem.into_response(),
    }
}

/// A body must be declared JSON; a request without a body (a GET) needs no type.
fn require_json(method: &Method, headers: &HeaderMap) -> Result<(), Problem> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("(not text)"));
    let has_body = *method != Method::GET
        || headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    let is_json = |value: &str| {
        value
            .split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(content_type::JSON))
    };
    match declared {
        None if !has_body => Ok(()),
        Some(value) if is_json(value) => Ok(()),
        Some(value) => Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!("a request body must be {}, not {value}", content_type::JSON),
        )),
        None => Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!("a request body must be declared {}", content_type::JSON),
        )),
    }
}

fn worker_failed(error: tokio::task::JoinError) -> Problem {
    tracing::error!(%error, "request worker failed");
    Problem::new(ProblemKind::Internal, INTERNAL_DETAIL)
}

/// A request whose signature verified, with what it asks.
struct Verified {
    request: VerifiedRequest,
    method: String,
    path: String,
    body: Bytes,
}

/// Checks the request's signature with the device's certified key, looked up on a
/// connection for lookups (`pool.rs`); checking it holds no connection.
async fn verify_request(
    app: &App,
    credentials: Credentials,
    method: String,
    path: String,
    body: Bytes,
) -> Result<Verified, Problem> {
    let key = app.centers.device_key(credentials.device_id).await?;
    tokio::task::spawn_blocking(move || {
        let request = key.verify(&SignedRequest {
            device_id: credentials.device_id,
            sequence: credentials.sequence,
            method: &method,
            path: &path,
            body: &body,
            signature: &credentials.signature,
        })?;
        Ok(Verified {
            request,
            method,
            path,
            body,
        })
    })
    .await
    .map_err(worker_failed)?
}

/// The answer's JSON and the center's signature over it.
type SignedAnswer = (Vec<u8>, Signature);

async fn device_request_inner<T, F>(
    app: App,
    request: Request,
    roles: &[Role],
    work: F,
) -> Result<SignedAnswer, Problem>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut Center, &AuthenticatedDevice, &[u8]) -> Result<T, Problem> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let timeout = app.body_read_timeout;
    // A body declared too large is refused before anything else.
    if declares_too_large(&parts.headers) {
        let _ = tokio::time::timeout(timeout, read_body(&parts.headers, body)).await;
        return Err(too_large());
    }
    require_json(&parts.method, &parts.headers)?;
    let credentials = credentials(&parts.headers)?;
    let body = tokio::time::timeout(timeout, read_body(&parts.headers, body))
        .await
        .map_err(|_| {
            Problem::new(
                ProblemKind::Timeout,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
        })??;
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let verified = verify_request(&app, credentials, method, path, body).await?;
    let device_id = verified.request.device_id();
    if !roles.contains(&verified.request.role()) {
        let wanted = roles
            .iter()
            .map(|role| role_name(*role))
            .collect::<Vec<_>>()
            .join(" or ");
        return Err(Problem::new(
            ProblemKind::NotAuthorized,
            format!("device {device_id} is not {wanted}"),
        )
        .device(device_id));
    }
    let handle = app.centers.lend().await?;
    let received_at = crate::now_micros();
    tokio::task::spawn_blocking(move || {
        let mut center = lock(&handle);
        let device = center.accept_request(&verified.request, received_at)?;
        let answer = work(&mut center, &device, &verified.body)?;
        let answer = serde_json::to_vec(&answer).map_err(|error| {
            tracing::error!(%error, "cannot encode an answer");
            Problem::new(ProblemKind::Internal, INTERNAL_DETAIL)
        })?;
        let signature = center.sign_answer(&device, &verified.method, &verified.path, &answer)?;
        Ok((answer, signature))
    })
    .await
    .map_err(worker_failed)?
}

fn signed_json_response(body: Vec<u8>, signature: &Signature) -> Response {
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type::JSON),
        )],
        body,
    )
        .into_response();
    match HeaderValue::from_str(&hex::encode(signature.0)) {
        Ok(value) => {
            response
                .headers_mut()
                .insert(headers::ANSWER_SIGNATURE, value);
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot attach the answer's signature");
            Problem::new(ProblemKind::Internal, INTERNAL_DETAIL).into_response()
        }
    }
}
