//! The service's routes, each with its OpenAPI description next to it: [`routes`] registers
//! every handler together with its description (utoipa-axum), so a route cannot be served
//! without being published in `/openapi.json`, nor published without being served. What all
//! signed routes share (the authentication headers, the refusals, the answer's signature) is
//! added to the document in one place, [`crate::openapi`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use valuecard_center::auth::AuthenticatedDevice;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterLink;

use crate::problem::{Problem, ProblemKind};
use crate::request::{
    charge_machine_request, dispenser_request, list_request, machine_request,
    online_settlement_request, service_transfer_request, settlement_request, terminal_request,
};
use crate::server::{json_response, lock, App};
use crate::{
    content_type, memcard_wire, move_wire, online_wire, paths, terminal_wire, transfer_wire, wire,
};

/// Tags group the operations by the device that calls them.
pub(crate) mod tags {
    pub const DISPENSERS: &str = "dispensers";
    pub const PAYMENT_TERMINALS: &str = "payment terminals";
    pub const SETTLEMENT_TERMINALS: &str = "settlement terminals";
    pub const MEMCARD_MACHINES: &str = "memory-card machines";
    pub const ONLINE_SETTLEMENT: &str = "online settlement";
    pub const SERVICE_MOVES: &str = "service moves";
    pub const SERVICE: &str = "service";
}

/// Every route of the service with its description. The fallbacks and layers are added by
/// [`crate::server::build`].
pub(crate) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(assign))
        .routes(routes!(resume))
        .routes(routes!(certify))
        .routes(routes!(authorize))
        .routes(routes!(settle))
        .routes(routes!(settlement_challenge))
        .routes(routes!(pending_loads))
        .routes(routes!(usage))
        .routes(routes!(lists))
        .routes(routes!(stamps))
        .routes(routes!(services))
        .routes(routes!(transfers))
        .routes(routes!(transfer_release))
        .routes(routes!(online_records))
        .routes(routes!(purse_moves))
        .routes(routes!(memcard_writes))
        .routes(routes!(memcard_pending))
        .routes(routes!(memcard_float))
        .routes(routes!(memcard_latest))
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(openapi_document))
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

/// Assign a card ID to a blank card.
///
/// `CenterLink::assign_card_id`: the answer is the new card ID and the MAC the card checks
/// it with.
#[utoipa::path(
    post,
    path = paths::ASSIGN,
    tag = tags::DISPENSERS,
    operation_id = "assign_card_id",
    request_body = wire::AssignBody,
    responses((status = 200, description = "The card's new ID", body = wire::AssignmentBody))
)]
async fn assign(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let (request, challenge) = parse_json::<wire::AssignBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let assignment = center.assign_card_id(&request, &challenge)?;
        Ok(wire::AssignmentBody::new(&assignment))
    })
    .await
}

/// Resume the assignment of a card ID after an interrupted issuance.
///
/// `CenterLink::resume_card_id`.
#[utoipa::path(
    post,
    path = paths::RESUME,
    tag = tags::DISPENSERS,
    operation_id = "resume_card_id",
    request_body = wire::ResumeBody,
    responses((status = 200, description = "The card's ID, for it to take again", body = wire::AssignmentBody))
)]
async fn resume(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let (request, card, challenge) = parse_json::<wire::ResumeBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let assignment = center.resume_card_id(&request, &card, &challenge)?;
        Ok(wire::AssignmentBody::new(&assignment))
    })
    .await
}

/// Certify a card's keys.
///
/// `CenterLink::certify_card`: the answer is everything the card's PERSONALIZE carries.
#[utoipa::path(
    post,
    path = paths::CERTIFY,
    tag = tags::DISPENSERS,
    operation_id = "certify_card",
    request_body = wire::CertifyBody,
    responses((status = 200, description = "The card's certificate and sealed keys", body = wire::PersonalizationBody))
)]
async fn certify(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let request = parse_json::<wire::CertifyBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let personalization = center.certify_card(&request)?;
        Ok(wire::PersonalizationBody::new(&personalization))
    })
    .await
}

/// Authorize a load on a card.
///
/// `CenterLink::authorize_load`: the answer is ready for the card's CREDIT command.
#[utoipa::path(
    post,
    path = paths::AUTHORIZE,
    tag = tags::DISPENSERS,
    operation_id = "authorize_load",
    request_body = wire::AuthorizeBody,
    responses((status = 200, description = "The center's approval of the load", body = wire::ApprovalBody))
)]
async fn authorize(State(app): State<App>, request: Request) -> Response {
    dispenser_request(app, request, |center, device, body| {
        let request = parse_json::<wire::AuthorizeBody>(body)?.decode()?;
        same_device(device, request.dispenser_id)?;
        let approval = center.authorize_load(&request)?;
        Ok(wire::ApprovalBody::new(&approval))
    })
    .await
}

/// A fresh challenge to settle a pending load with.
#[utoipa::path(
    post,
    path = paths::SETTLEMENT_CHALLENGE,
    tag = tags::DISPENSERS,
    operation_id = "settlement_challenge",
    request_body = wire::SettlementChallengeBody,
    responses((status = 200, description = "The challenge the card signs its evidence over", body = wire::ChallengeBody))
)]
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

/// Settle a load in flight with the card's signed last transaction.
///
/// `CenterLink::settle_load`.
#[utoipa::path(
    post,
    path = paths::SETTLE,
    tag = tags::DISPENSERS,
    operation_id = "settle_load",
    request_body = wire::SettleBody,
    responses((status = 200, description = "The outcome the center read from the evidence", body = wire::SettledBody))
)]
async fn settle(State(app): State<App>, request: Request) -> Response {
    let metrics = app.metrics.clone();
    dispenser_request(app, request, move |center, device, body| {
        let settlement = parse_json::<wire::SettleBody>(body)?.decode()?;
        same_device(device, settlement.dispenser_id)?;
        let outcome = center.settle_load(&settlement)?;
        metrics.settled(outcome.as_str());
        Ok(wire::SettledBody {
            card_id: hex::encode(settlement.card_id.as_bytes()),
            load_number: settlement.load_number,
            outcome: outcome.as_str().to_owned(),
        })
    })
    .await
}

/// The card's loads in flight, oldest first, for settling.
#[utoipa::path(
    get,
    path = paths::PENDING_LOADS_ROUTE,
    tag = tags::DISPENSERS,
    operation_id = "pending_loads",
    params(("card_id" = String, Path, description = "The card's ID, 16 hex digits", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, description = "The card's loads in flight", body = wire::PendingLoadsBody))
)]
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

/// Upload a payment terminal's usage records.
///
/// `TerminalLink::upload_usage`.
#[utoipa::path(
    post,
    path = paths::USAGE,
    tag = tags::PAYMENT_TERMINALS,
    operation_id = "upload_usage",
    request_body = terminal_wire::UsageUploadBody,
    responses((status = 200, description = "What the center stored, already had, or refused", body = terminal_wire::UploadReceiptBody))
)]
async fn usage(State(app): State<App>, request: Request) -> Response {
    let metrics = app.metrics.clone();
    terminal_request(app, request, move |center, device, body| {
        let upload = parse_json::<terminal_wire::UsageUploadBody>(body)?.decode()?;
        same_device(device, upload.terminal_id)?;
        let receipt = center.ingest_usage(&upload)?;
        metrics.uploaded("usage", &receipt);
        Ok(terminal_wire::UploadReceiptBody::new(&receipt))
    })
    .await
}

/// Upload a settlement terminal's transfer reports.
///
/// `TransferLink::upload_transfers`.
#[utoipa::path(
    post,
    path = paths::TRANSFERS,
    tag = tags::SETTLEMENT_TERMINALS,
    operation_id = "upload_transfers",
    request_body = transfer_wire::TransferUploadBody,
    responses((status = 200, description = "What the center stored, already had, or refused", body = terminal_wire::UploadReceiptBody))
)]
async fn transfers(State(app): State<App>, request: Request) -> Response {
    let metrics = app.metrics.clone();
    settlement_request(app, request, move |center, device, body| {
        let upload = parse_json::<transfer_wire::TransferUploadBody>(body)?.decode()?;
        same_device(device, upload.terminal_id)?;
        let receipt = center.ingest_transfers(&upload)?;
        metrics.uploaded("transfers", &receipt);
        Ok(terminal_wire::UploadReceiptBody::new(&receipt))
    })
    .await
}

/// Release a transfer whose destination will never come back.
///
/// `TransferLink::release_transfer`: a settlement terminal asks the center to release the
/// value a source card holds reserved; a refusal is a `409 mismatch` problem document saying
/// why (present the destination card).
#[utoipa::path(
    post,
    path = paths::TRANSFER_RELEASE,
    tag = tags::SETTLEMENT_TERMINALS,
    operation_id = "release_transfer",
    request_body = transfer_wire::ReleaseRequestBody,
    responses((status = 200, description = "The center's signed release for the source card", body = transfer_wire::ReleaseBody))
)]
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

/// Report online payments and charges (seed 004).
///
/// The online settlement system's security server reports each online update it completed
/// with a card, as it signed it, and the card's previous record from BI. Each is checked
/// and stored once; a record reported again is a duplicate.
#[utoipa::path(
    post,
    path = paths::ONLINE_RECORDS,
    tag = tags::ONLINE_SETTLEMENT,
    operation_id = "report_online_records",
    request_body = online_wire::OnlineRecordsBody,
    responses((status = 200, description = "What the center stored, already had, or refused", body = terminal_wire::UploadReceiptBody))
)]
async fn online_records(State(app): State<App>, request: Request) -> Response {
    let metrics = app.metrics.clone();
    online_settlement_request(app, request, move |center, device, body| {
        let (writer, items) = parse_json::<online_wire::OnlineRecordsBody>(body)?.decode()?;
        same_device(device, writer)?;
        let receipt = center.store_online_records(writer, &items)?;
        metrics.uploaded("online", &receipt);
        Ok(terminal_wire::UploadReceiptBody::new(&receipt))
    })
    .await
}

/// Report completed purse moves (seed 002).
///
/// The purse provider's transfer SAM reports each move whose value reached the new chip:
/// the old chip's signed export and the new chip's migration record. Each is checked and
/// stored once; the old card is listed and blocked; a move reported again is a duplicate.
#[utoipa::path(
    post,
    path = paths::PURSE_MOVES,
    tag = tags::SERVICE_MOVES,
    operation_id = "report_purse_moves",
    request_body = move_wire::PurseMovesBody,
    responses((status = 200, description = "What the center stored, already had, or refused", body = terminal_wire::UploadReceiptBody))
)]
async fn purse_moves(State(app): State<App>, request: Request) -> Response {
    let metrics = app.metrics.clone();
    service_transfer_request(app, request, move |center, device, body| {
        let (writer, moves) = parse_json::<move_wire::PurseMovesBody>(body)?.decode()?;
        same_device(device, writer)?;
        let receipt = center.store_purse_moves(writer, &moves)?;
        metrics.uploaded("moves", &receipt);
        Ok(terminal_wire::UploadReceiptBody::new(&receipt))
    })
    .await
}

/// The changes to the blocking lists since a version.
///
/// `TerminalLink::list_delta`: for payment terminals, and for charge and payment machines
/// of memory cards, which refuse a card written by a listed machine.
#[utoipa::path(
    post,
    path = paths::LISTS,
    tag = tags::PAYMENT_TERMINALS,
    operation_id = "list_delta",
    request_body = terminal_wire::ListRequestBody,
    responses((status = 200, description = "The list entries after the terminal's version", body = terminal_wire::ListDeltaBody))
)]
async fn lists(State(app): State<App>, request: Request) -> Response {
    list_request(app, request, |center, device, body| {
        let (terminal_id, since) = parse_json::<terminal_wire::ListRequestBody>(body)?.decode()?;
        same_device(device, terminal_id)?;
        let delta = center.list_delta_since(since)?;
        Ok(terminal_wire::ListDeltaBody::new(&delta))
    })
    .await
}

/// Report a payment terminal's signed time stamp.
///
/// `TerminalLink::report_stamp`: the answer is the count the center holds, without a
/// signature.
#[utoipa::path(
    post,
    path = paths::STAMPS,
    tag = tags::PAYMENT_TERMINALS,
    operation_id = "report_stamp",
    request_body = terminal_wire::StampBody,
    responses((status = 200, description = "The stamp count the center holds", body = terminal_wire::StampBody))
)]
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

/// Upload card-signed service records.
///
/// `ServiceLink::upload_service_records`.
#[utoipa::path(
    post,
    path = paths::SERVICES,
    tag = tags::PAYMENT_TERMINALS,
    operation_id = "upload_service_records",
    request_body = terminal_wire::ServiceUploadBody,
    responses((status = 200, description = "What the center stored, already had, or refused", body = terminal_wire::ServiceReceiptBody))
)]
async fn services(State(app): State<App>, request: Request) -> Response {
    terminal_request(app, request, |center, device, body| {
        let upload = parse_json::<terminal_wire::ServiceUploadBody>(body)?.decode()?;
        same_device(device, upload.terminal_id)?;
        let receipt = center.ingest_service_records(&upload)?;
        Ok(terminal_wire::ServiceReceiptBody::new(&receipt))
    })
    .await
}

/// Upload a memory-card machine's write records.
///
/// `MemcardLink::upload_writes`: charge machines upload charges, payment machines payments;
/// each record is checked on its own and a refused one is listed in the receipt.
#[utoipa::path(
    post,
    path = paths::MEMCARD_WRITES,
    tag = tags::MEMCARD_MACHINES,
    operation_id = "upload_memcard_writes",
    request_body = memcard_wire::WriteUploadBody,
    responses((status = 200, description = "What the center stored, already had, or refused", body = memcard_wire::WriteReceiptBody))
)]
async fn memcard_writes(State(app): State<App>, request: Request) -> Response {
    machine_request(app, request, |center, device, body| {
        let upload = parse_json::<memcard_wire::WriteUploadBody>(body)?.decode()?;
        same_device(device, upload.machine)?;
        let receipt = center.ingest_memcard_writes(&upload)?;
        Ok(memcard_wire::WriteReceiptBody::new(&receipt))
    })
    .await
}

/// Report the writes pending in a memory-card machine's log.
///
/// `MemcardLink::report_pending`: each is checked as an uploaded record and held as restore
/// evidence (uncounted), counted when a later record shows it landed, or answered
/// superseded when a later record shows the card took another write instead.
#[utoipa::path(
    post,
    path = paths::MEMCARD_PENDING,
    tag = tags::MEMCARD_MACHINES,
    operation_id = "report_memcard_pending_writes",
    request_body = memcard_wire::WriteUploadBody,
    responses((status = 200, description = "What the center holds, counted, found superseded, or refused", body = memcard_wire::PendingReceiptBody))
)]
async fn memcard_pending(State(app): State<App>, request: Request) -> Response {
    machine_request(app, request, |center, device, body| {
        let upload = parse_json::<memcard_wire::WriteUploadBody>(body)?.decode()?;
        same_device(device, upload.machine)?;
        let receipt = center.report_memcard_pending(&upload)?;
        Ok(memcard_wire::PendingReceiptBody::new(&receipt))
    })
    .await
}

/// Ask for float for a charge machine.
///
/// `MemcardLink::request_float`: the center grants at most what was asked and at most the
/// machine's limit less what it holds unaccounted; nothing left is a `422 amount` problem
/// document.
#[utoipa::path(
    post,
    path = paths::MEMCARD_FLOAT,
    tag = tags::MEMCARD_MACHINES,
    operation_id = "request_float",
    request_body = memcard_wire::FloatRequestBody,
    responses((status = 200, description = "The float granted, signed with the center's root key", body = memcard_wire::FloatGrantBody))
)]
async fn memcard_float(State(app): State<App>, request: Request) -> Response {
    charge_machine_request(app, request, |center, device, body| {
        let (machine, asked) = parse_json::<memcard_wire::FloatRequestBody>(body)?.decode()?;
        same_device(device, machine)?;
        let grant = center.grant_float(machine, asked)?;
        Ok(memcard_wire::FloatGrantBody::new(&grant))
    })
    .await
}

/// The newest uploaded state of a memory card, with its writer's certificate.
///
/// `MemcardLink::latest_state`: what a machine writes back onto a card whose signature or
/// certificate write was torn, after checking the card shows exactly this state.
#[utoipa::path(
    get,
    path = paths::MEMCARD_LATEST_ROUTE,
    tag = tags::MEMCARD_MACHINES,
    operation_id = "memcard_latest_state",
    params(("card_id" = String, Path, description = "The memory card's ID, 16 hex digits", pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, description = "The card's newest state, if any record names it", body = memcard_wire::LatestStateBody))
)]
async fn memcard_latest(State(app): State<App>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    machine_request(app, request, move |center, _device, body| {
        if !body.is_empty() {
            return Err(Problem::new(
                ProblemKind::Malformed,
                "this request carries no body",
            ));
        }
        let segment = path
            .strip_prefix("/v1/memcard/cards/")
            .and_then(|rest| rest.strip_suffix("/latest"))
            .unwrap_or_default();
        let card = wire::card_id_segment(segment)?;
        let evidence = center.latest_memcard_state(&card)?;
        Ok(memcard_wire::LatestStateBody::new(&card, evidence.as_ref()))
    })
    .await
}

/// Whether the service's database answers. Needs no signature.
///
/// Asked on the service's own connection (which reconnects after the database came back):
/// never waits for the center, so a long request does not make the service look down. A
/// database in memory is always there.
#[utoipa::path(
    get,
    path = paths::HEALTH,
    tag = tags::SERVICE,
    operation_id = "health",
    responses(
        (status = 200, description = "The database answers", body = wire::HealthBody),
        (status = 503, description = "The database does not answer (`unavailable`)",
            body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    )
)]
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
        .storage_failure()
        .into_response()
}

/// The service's metrics in the Prometheus text exposition format. Needs no signature.
#[utoipa::path(
    get,
    path = paths::METRICS,
    tag = tags::SERVICE,
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type::PROMETHEUS),
        )],
        app.metrics.render(app.centers.usage()),
    )
        .into_response()
}

/// This document: the service's OpenAPI description. Needs no signature.
#[utoipa::path(
    get,
    path = paths::OPENAPI,
    tag = tags::SERVICE,
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi_document() -> Response {
    match crate::openapi::json() {
        Ok(document) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type::JSON),
            )],
            document,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the OpenAPI document");
            Problem::new(ProblemKind::Internal, crate::problem::INTERNAL_DETAIL).into_response()
        }
    }
}
