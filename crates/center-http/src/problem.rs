//! Refusals as RFC 9457 problem documents (`application/problem+json`), mapped in one place
//! each way: [`Problem::from_center`] turns a [`CenterError`] into a document on the server,
//! [`ProblemDocument::into_center_error`] turns a document back into a [`CenterError`] on the
//! device.
//!
//! | type (`urn:valuecard:problem:…`) | status | from |
//! | --- | --- | --- |
//! | `malformed-request` | 400 | malformed JSON, bad hex, a field of the wrong length |
//! | `unauthenticated` | 401 | a missing or malformed authentication header |
//! | `unknown-device` | 401 | [`CenterError::UnknownDevice`], or a request signed by no installed device |
//! | `bad-signature` | 401 | a request signature that does not verify |
//! | `replayed-request` | 401 | a sequence not above the device's last |
//! | `not-authorized` | 403 | [`CenterError::NotAuthorized`], a body naming another device, a non-dispenser |
//! | `unknown-card` | 404 | [`CenterError::UnknownCard`] |
//! | `not-found` | 404 | an unknown path |
//! | `method-not-allowed` | 405 | a known path with the wrong method |
//! | `card-blocked` | 409 | [`CenterError::CardBlocked`]: the request is valid, the card's state at the center refuses it |
//! | `mismatch` | 409 | [`CenterError::Mismatch`] |
//! | `body-too-large` | 413 | a body above [`crate::MAX_BODY_BYTES`] |
//! | `request-timeout` | 408 | the body did not arrive within the service's body timeout |
//! | `unsupported-media-type` | 415 | a request body that is not `application/json` |
//! | `sequence-out-of-window` | 401 | a sequence too far ahead (see [`valuecard_center::auth`]); nothing recorded |
//! | `bad-card-signature` | 422 | [`CenterError::BadCardSignature`] |
//! | `amount` | 422 | [`CenterError::Amount`] |
//! | `internal` | 500 | [`CenterError::Storage`], [`CenterError::Setup`]: a generic detail; the cause is logged |
//! | `unavailable` | 503 | `/health` when the database does not answer |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use valuecard_center::auth::AuthError;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;

use crate::wire::WireError;

/// Every problem type begins with this.
pub const TYPE_PREFIX: &str = "urn:valuecard:problem:";

/// The generic detail of a failure inside the center.
pub const INTERNAL_DETAIL: &str = "the center could not complete the request";

/// The kinds of refusal, each with its type URI, title and status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProblemKind {
    Malformed,
    Unauthenticated,
    UnknownDevice,
    BadSignature,
    Replayed,
    NotAuthorized,
    UnknownCard,
    NotFound,
    MethodNotAllowed,
    CardBlocked,
    Mismatch,
    TooLarge,
    BadCardSignature,
    Amount,
    Internal,
    Unavailable,
    Timeout,
    UnsupportedMediaType,
    SequenceWindow,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 19] = [
        ProblemKind::Malformed,
        ProblemKind::Unauthenticated,
        ProblemKind::UnknownDevice,
        ProblemKind::BadSignature,
        ProblemKind::Replayed,
        ProblemKind::NotAuthorized,
        ProblemKind::UnknownCard,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::CardBlocked,
        ProblemKind::Mismatch,
        ProblemKind::TooLarge,
        ProblemKind::BadCardSignature,
        ProblemKind::Amount,
        ProblemKind::Internal,
        ProblemKind::Unavailable,
        ProblemKind::Timeout,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::SequenceWindow,
    ];

    /// The last part of the type URI; also the `reason` label of the refusal metric.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::Malformed => "malformed-request",
            ProblemKind::Unauthenticated => "unauthenticated",
            ProblemKind::UnknownDevice => "unknown-device",
            ProblemKind::BadSignature => "bad-signature",
            ProblemKind::Replayed => "replayed-request",
            ProblemKind::NotAuthorized => "not-authorized",
            ProblemKind::UnknownCard => "unknown-card",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::CardBlocked => "card-blocked",
            ProblemKind::Mismatch => "mismatch",
            ProblemKind::TooLarge => "body-too-large",
            ProblemKind::BadCardSignature => "bad-card-signature",
            ProblemKind::Amount => "amount",
            ProblemKind::Internal => "internal",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Timeout => "request-timeout",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::SequenceWindow => "sequence-out-of-window",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::Malformed => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthenticated
            | ProblemKind::UnknownDevice
            | ProblemKind::BadSignature
            | ProblemKind::Replayed
            | ProblemKind::SequenceWindow => StatusCode::UNAUTHORIZED,
            ProblemKind::NotAuthorized => StatusCode::FORBIDDEN,
            ProblemKind::UnknownCard | ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::CardBlocked | ProblemKind::Mismatch => StatusCode::CONFLICT,
            ProblemKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::BadCardSignature | ProblemKind::Amount => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::Malformed => "Malformed request",
            ProblemKind::Unauthenticated => "Request not authenticated",
            ProblemKind::UnknownDevice => "Unknown device",
            ProblemKind::BadSignature => "Request signature does not verify",
            ProblemKind::Replayed => "Request sequence already used",
            ProblemKind::NotAuthorized => "Device not authorized",
            ProblemKind::UnknownCard => "Unknown card",
            ProblemKind::NotFound => "No such resource",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::CardBlocked => "Card blocked at the center",
            ProblemKind::Mismatch => "Request does not match the center's records",
            ProblemKind::TooLarge => "Request body too large",
            ProblemKind::BadCardSignature => "Card signature does not verify",
            ProblemKind::Amount => "Amount refused",
            ProblemKind::Internal => "Center failure",
            ProblemKind::Unavailable => "Center unavailable",
            ProblemKind::Timeout => "Request not received in time",
            ProblemKind::UnsupportedMediaType => "Request body is not JSON",
            ProblemKind::SequenceWindow => "Request sequence too far ahead",
        }
    }

    /// The kind an error status of the HTTP layer stands for, for answers that were not
    /// made as problem documents (axum's own rejections).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => ProblemKind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::TooLarge,
            StatusCode::REQUEST_TIMEOUT => ProblemKind::Timeout,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => ProblemKind::Unauthenticated,
            StatusCode::FORBIDDEN => ProblemKind::NotAuthorized,
            StatusCode::SERVICE_UNAVAILABLE => ProblemKind::Unavailable,
            status if status.is_client_error() => ProblemKind::Malformed,
            _ => ProblemKind::Internal,
        }
    }

    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug())
    }

    pub fn from_type_uri(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix(TYPE_PREFIX)?;
        Self::ALL.into_iter().find(|kind| kind.slug() == slug)
    }
}

/// A problem document as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProblemDocument {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Extension: the device the refusal is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Extension: the card the refusal is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_id: Option<String>,
    /// Extension (`/health`): the kind of database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl ProblemDocument {
    pub fn kind(&self) -> Option<ProblemKind> {
        ProblemKind::from_type_uri(&self.type_uri)
    }

    /// The device side of the mapping: the [`CenterError`] a refusal stands for. `device` is
    /// the device that sent the request.
    pub fn into_center_error(self, device: DeviceId) -> CenterError {
        let named_device = self
            .device_id
            .as_deref()
            .and_then(|text| text.parse::<DeviceId>().ok())
            .unwrap_or(device);
        let named_card = self
            .card_id
            .as_deref()
            .and_then(|text| text.parse::<CardId>().ok());
        match (self.kind(), named_card) {
            (Some(ProblemKind::UnknownDevice), _) => CenterError::UnknownDevice(named_device),
            (
                Some(
                    ProblemKind::NotAuthorized
                    | ProblemKind::Unauthenticated
                    | ProblemKind::BadSignature
                    | ProblemKind::Replayed
                    | ProblemKind::SequenceWindow,
                ),
                _,
            ) => CenterError::NotAuthorized(named_device),
            (Some(ProblemKind::UnknownCard), Some(card)) => CenterError::UnknownCard(card),
            (Some(ProblemKind::CardBlocked), Some(card)) => CenterError::CardBlocked(card),
            (Some(ProblemKind::BadCardSignature), _) => CenterError::BadCardSignature,
            (Some(ProblemKind::Mismatch), _) => CenterError::Mismatch(self.detail),
            (Some(ProblemKind::Amount), _) => CenterError::Amount(self.detail),
            (Some(ProblemKind::Internal), _) => CenterError::Storage(self.detail),
            (Some(ProblemKind::Unavailable), _) => CenterError::Unreachable(self.detail),
            _ => CenterError::Setup(format!(
                "the center refused the request ({} {}): {}",
                self.status, self.title, self.detail
            )),
        }
    }
}

/// A refusal on its way to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
    pub device_id: Option<DeviceId>,
    pub card_id: Option<CardId>,
    pub database: Option<&'static str>,
    /// The center failed on its database (counted apart in the metrics).
    storage_failure: bool,
}

/// Marks a response as a refusal, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(pub ProblemKind);

/// Marks a response as a failure of the database, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StorageFailure;

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            device_id: None,
            card_id: None,
            database: None,
            storage_failure: false,
        }
    }

    pub fn device(mut self, device_id: DeviceId) -> Self {
        self.device_id = Some(device_id);
        self
    }

    pub fn card(mut self, card_id: CardId) -> Self {
        self.card_id = Some(card_id);
        self
    }

    pub fn database(mut self, database: &'static str) -> Self {
        self.database = Some(database);
        self
    }

    /// The server side of the mapping: the one place a [`CenterError`] becomes a status
    /// code. Failures inside the center are logged here and reach the client only as a
    /// generic detail.
    pub fn from_center(error: CenterError) -> Self {
        let detail = error.to_string();
        match error {
            CenterError::UnknownDevice(device) => {
                Problem::new(ProblemKind::UnknownDevice, detail).device(device)
            }
            CenterError::NotAuthorized(device) => {
                Problem::new(ProblemKind::NotAuthorized, detail).device(device)
            }
            CenterError::UnknownCard(card) => {
                Problem::new(ProblemKind::UnknownCard, detail).card(card)
            }
            CenterError::CardBlocked(card) => {
                Problem::new(ProblemKind::CardBlocked, detail).card(card)
            }
            CenterError::BadCardSignature => Problem::new(ProblemKind::BadCardSignature, detail),
            CenterError::Mismatch(reason) => Problem::new(ProblemKind::Mismatch, reason),
            CenterError::BadStamp(_) => Problem::new(ProblemKind::Mismatch, detail),
            CenterError::Amount(reason) => Problem::new(ProblemKind::Amount, reason),
            other => {
                tracing::error!(error = %other, "center failure");
                let mut problem = Problem::new(ProblemKind::Internal, INTERNAL_DETAIL);
                problem.storage_failure = matches!(other, CenterError::Storage(_));
                problem
            }
        }
    }

    /// A refused authentication.
    pub fn from_auth(error: AuthError) -> Self {
        let detail = error.to_string();
        match error {
            AuthError::UnknownDevice(device) => {
                Problem::new(ProblemKind::UnknownDevice, detail).device(device)
            }
            AuthError::BadSignature(device) => {
                Problem::new(ProblemKind::BadSignature, detail).device(device)
            }
            AuthError::Replayed { device_id, .. } => {
                Problem::new(ProblemKind::Replayed, detail).device(device_id)
            }
            AuthError::AheadOfWindow { device_id, .. } => {
                Problem::new(ProblemKind::SequenceWindow, detail).device(device_id)
            }
            AuthError::SequenceOutOfRange(_) => Problem::new(ProblemKind::Unauthenticated, detail),
            AuthError::Center(error) => Problem::from_center(error),
            other => {
                tracing::error!(error = %other, "authentication failure");
                Problem::new(ProblemKind::Internal, INTERNAL_DETAIL)
            }
        }
    }

    pub fn document(&self) -> ProblemDocument {
        ProblemDocument {
            type_uri: self.kind.type_uri(),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            device_id: self.device_id.map(|id| id.to_hex()),
            card_id: self.card_id.map(|id| id.to_hex()),
            database: self.database.map(str::to_owned),
        }
    }
}

impl From<CenterError> for Problem {
    fn from(error: CenterError) -> Self {
        Problem::from_center(error)
    }
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        Problem::from_auth(error)
    }
}

impl From<WireError> for Problem {
    fn from(error: WireError) -> Self {
        Problem::new(ProblemKind::Malformed, error.to_string())
    }
}

impl Problem {
    /// Marks the problem as a failure of the database (the health check's).
    pub(crate) fn storage_failure(mut self) -> Self {
        self.storage_failure = true;
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = match serde_json::to_vec(&self.document()) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot encode a problem document");
                Vec::new()
            }
        };
        let mut response = (self.kind.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::content_type::PROBLEM),
        );
        if self.kind.status() == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Valuecard-Signature realm=\"valuecard\""),
            );
        }
        response.extensions_mut().insert(Refusal(self.kind));
        if self.storage_failure {
            response.extensions_mut().insert(StorageFailure);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn center_errors_survive_the_round_trip() {
        let device = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 1]);
        let card = CardId([0xC0, 0, 0, 0, 0, 0, 0, 9]);
        for error in [
            CenterError::UnknownDevice(device),
            CenterError::NotAuthorized(device),
            CenterError::UnknownCard(card),
            CenterError::CardBlocked(card),
            CenterError::BadCardSignature,
            CenterError::Mismatch("load 3 is already cancelled".into()),
            CenterError::Amount("a load must be positive".into()),
        ] {
            let document = Problem::from_center(error.clone()).document();
            let json = serde_json::to_string(&document).unwrap();
            let back: ProblemDocument = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_center_error(device), error, "{json}");
        }
    }

    #[test]
    fn storage_details_never_reach_the_client() {
        let problem = Problem::from_center(CenterError::Storage(
            "relation \"loads\" does not exist at 10.0.0.5".into(),
        ));
        let document = problem.document();
        assert_eq!(document.status, 500);
        assert_eq!(document.detail, INTERNAL_DETAIL);
        assert!(!serde_json::to_string(&document).unwrap().contains("loads"));
    }

    #[test]
    fn every_kind_has_a_distinct_type() {
        for kind in ProblemKind::ALL {
            assert_eq!(ProblemKind::from_type_uri(&kind.type_uri()), Some(kind));
        }
    }
}
