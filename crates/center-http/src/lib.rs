//! The management center as an HTTPS/JSON service ([`server`], run by [`serve`]), and the
//! devices' link to it ([`client::HttpCenterLink`], a
//! [`valuecard_core::messages::center::CenterLink`]).
//!
//! # Transport
//!
//! Only TLS (rustls with the ring provider), with the service certificate that `center init`
//! makes ([`tls::ServiceIdentity`]); a device trusts exactly that certificate
//! ([`tls::CenterPin`]), given to it at installation. Connections must finish the handshake
//! and each request head within [`ServiceLimits`], bodies arrive within the body timeout
//! (else 408), and shutdown closes what is still open at its deadline.
//!
//! # Endpoints
//!
//! | method and path | does | answers |
//! | --- | --- | --- |
//! | `POST /v1/cards/assign` | `CenterLink::assign_card_id` | [`wire::AssignmentBody`] |
//! | `POST /v1/cards/resume` | `CenterLink::resume_card_id` | [`wire::AssignmentBody`] |
//! | `POST /v1/cards/certify` | `CenterLink::certify_card` | [`wire::PersonalizationBody`] |
//! | `POST /v1/loads/authorize` | `CenterLink::authorize_load` | [`wire::ApprovalBody`] |
//! | `POST /v1/loads/settle` | `CenterLink::settle_load` | [`wire::SettledBody`] |
//! | `POST /v1/loads/challenge` | `CenterLink::settlement_challenge`: a fresh challenge to settle a pending load with | [`wire::ChallengeBody`] |
//! | `GET /v1/cards/{card_id}/pending-loads` | the card's loads in flight, for settling | [`wire::PendingLoadsBody`] |
//! | `POST /v1/usage` | `TerminalLink::upload_usage` (payment terminals) | [`terminal_wire::UploadReceiptBody`] |
//! | `POST /v1/lists/delta` | `TerminalLink::list_delta` (payment terminals, charge and payment machines) | [`terminal_wire::ListDeltaBody`] |
//! | `POST /v1/services` | `ServiceLink::upload_service_records` (payment terminals) | [`terminal_wire::ServiceReceiptBody`] |
//! | `POST /v1/stamps` | `TerminalLink::report_stamp` (payment terminals) | [`terminal_wire::StampBody`] |
//! | `POST /v1/transfers` | `TransferLink::upload_transfers` (settlement terminals) | [`terminal_wire::UploadReceiptBody`] |
//! | `POST /v1/transfers/release` | `TransferLink::release_transfer` (settlement terminals); a refusal is `409 mismatch` | [`transfer_wire::ReleaseBody`] |
//! | `POST /v1/memcard/writes` | `MemcardLink::upload_writes` (charge and payment machines) | [`memcard_wire::WriteReceiptBody`] |
//! | `POST /v1/memcard/pending-writes` | `MemcardLink::report_pending` (charge and payment machines) | [`memcard_wire::PendingReceiptBody`] |
//! | `POST /v1/memcard/float` | `MemcardLink::request_float` (charge machines); nothing left to grant is `422 amount` | [`memcard_wire::FloatGrantBody`] |
//! | `GET /v1/memcard/cards/{card_id}/latest` | `MemcardLink::latest_state` (charge and payment machines) | [`memcard_wire::LatestStateBody`] |
//! | `POST /v1/online/records` | `HttpCenterLink::report_online_records` (the online settlement system's security server, seed 004) | [`terminal_wire::UploadReceiptBody`] |
//! | `POST /v1/moves/purse` | `HttpCenterLink::report_purse_moves` (the purse provider's transfer SAM, seed 002) | [`terminal_wire::UploadReceiptBody`] |
//! | `GET /health` | `SELECT 1` on the service's own database connection | 200 [`wire::HealthBody`], or 503 while the database is away |
//! | `GET /metrics` | Prometheus text exposition | `text/plain; version=0.0.4` |
//! | `GET /openapi.json` | this table as an OpenAPI 3.1 document ([`openapi`]), also published as `docs/openapi.json` | `application/json` |
//!
//! Bodies are JSON. Binary fields are hex; signed protocol objects travel as their canonical
//! TLV encoding in hex (the certificate as `Certificate::encode()`, the card's load offer as
//! `LoadOffer::encode()`), so what a card or the center signed crosses the wire byte for byte.
//! Amounts are integers in minor units; dates are `YYYY-MM-DD`. A request body must be declared
//! `application/json` (else 415); bodies above [`MAX_BODY_BYTES`] are refused with 413.
//!
//! # Device authentication
//!
//! Every `/v1/` request carries three headers:
//!
//! - `Valuecard-Device`: the device ID, hex;
//! - `Valuecard-Sequence`: a decimal `u64`, strictly increasing per device;
//! - `Valuecard-Signature`: hex Ed25519 signature, by the device's SAM, over
//!   `"valuecard/http/v1" || method || 0x00 || path || 0x00 || sequence (8 bytes big-endian)
//!   || SHA-256(body)` (see [`valuecard_center::auth`]).
//!
//! The service verifies the signature with the key the center certified when it installed the
//! device, before it takes a center handle; then the center accepts the sequence (above the
//! last one, and inside the window of [`valuecard_center::auth`]) and advances it in one
//! statement. A missing header, a forged signature, an unknown device, a sequence not above
//! the last one or too far ahead is refused with 401 and changes nothing.
//!
//! Every 200 answer carries `Valuecard-Answer-Signature`: the center's root-key signature over
//! `"valuecard/http/v1/answer" || device ID || sequence (8 bytes big-endian) || method || 0x00
//! || path || 0x00 || SHA-256(answer body)`. The client verifies it against the device's trust
//! anchor and refuses any answer that does not verify, so an answer altered on the way, or
//! replayed from another request, is never acted on. The device a body names (`dispenser_id`, `terminal_id`) must be the
//! authenticated device; the card and load endpoints are for dispensers, the usage, list and
//! stamp endpoints for payment terminals, the transfer endpoints for settlement terminals,
//! the memory-card endpoints for charge and payment machines (float for charge machines
//! only), the list endpoint for payment terminals and both machines (403 otherwise). `/health`, `/metrics` and `/openapi.json` need no signature.
//!
//! # Errors
//!
//! Every refusal is an RFC 9457 problem document (`application/problem+json`), mapped in one
//! place ([`problem`]); see [`problem::ProblemKind`] for the types and status codes. Storage
//! and set-up failures answer 500 with a generic detail; their cause is logged with `tracing`
//! and never reaches a client.

#![forbid(unsafe_code)]

pub mod client;

/// The clock devices count their request sequences in and the service bounds them by
/// (`valuecard_center::auth::SEQUENCE_WINDOW_MICROS`): microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
pub mod memcard_wire;
mod metrics;
pub mod move_wire;
pub mod online_wire;
pub mod openapi;
pub mod pool;
pub mod problem;
mod process_metrics;
mod request;
mod routes;
pub mod serve;
pub mod server;
pub mod terminal_wire;
pub mod tls;
pub mod transfer_wire;
pub mod wire;

pub use client::{HttpCenterLink, RequestSigner};
pub use pool::{PoolUse, SharedCenter};
pub use serve::{BackgroundServer, ServiceLimits};
pub use tls::{CenterPin, ServiceIdentity};

/// The largest request body the service reads.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Header names of the device authentication.
pub mod headers {
    pub const DEVICE: &str = "valuecard-device";
    pub const SEQUENCE: &str = "valuecard-sequence";
    pub const SIGNATURE: &str = "valuecard-signature";
    /// The center's signature over a 200 answer (see [`valuecard_center::auth`]).
    pub const ANSWER_SIGNATURE: &str = "valuecard-answer-signature";
}

/// The paths of the service.
pub mod paths {
    pub const ASSIGN: &str = "/v1/cards/assign";
    pub const RESUME: &str = "/v1/cards/resume";
    pub const CERTIFY: &str = "/v1/cards/certify";
    pub const AUTHORIZE: &str = "/v1/loads/authorize";
    pub const SETTLE: &str = "/v1/loads/settle";
    pub const SETTLEMENT_CHALLENGE: &str = "/v1/loads/challenge";
    /// `/v1/cards/{card_id}/pending-loads`: see [`pending_loads`].
    pub const PENDING_LOADS_ROUTE: &str = "/v1/cards/{card_id}/pending-loads";
    pub const USAGE: &str = "/v1/usage";
    pub const LISTS: &str = "/v1/lists/delta";
    pub const STAMPS: &str = "/v1/stamps";
    pub const SERVICES: &str = "/v1/services";
    pub const TRANSFERS: &str = "/v1/transfers";
    pub const TRANSFER_RELEASE: &str = "/v1/transfers/release";
    pub const MEMCARD_WRITES: &str = "/v1/memcard/writes";
    pub const MEMCARD_FLOAT: &str = "/v1/memcard/float";
    pub const MEMCARD_PENDING: &str = "/v1/memcard/pending-writes";
    /// `/v1/memcard/cards/{card_id}/latest`: see [`memcard_latest`].
    pub const MEMCARD_LATEST_ROUTE: &str = "/v1/memcard/cards/{card_id}/latest";
    pub const ONLINE_RECORDS: &str = "/v1/online/records";
    pub const PURSE_MOVES: &str = "/v1/moves/purse";
    pub const HEALTH: &str = "/health";
    pub const METRICS: &str = "/metrics";
    pub const OPENAPI: &str = "/openapi.json";

    /// The path of one memory card's newest state.
    pub fn memcard_latest(card_id: &valuecard_core::ids::CardId) -> String {
        format!("/v1/memcard/cards/{card_id}/latest")
    }

    /// The path of one card's pending loads.
    pub fn pending_loads(card_id: &valuecard_core::ids::CardId) -> String {
        format!("/v1/cards/{card_id}/pending-loads")
    }
}

/// Content types of the service.
pub mod content_type {
    pub const JSON: &str = "application/json";
    pub const PROBLEM: &str = "application/problem+json";
    pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
}
