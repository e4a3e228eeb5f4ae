//! Problem documents (RFC 9457) of both services, and the one place where errors become
//! problems and problems become errors again.
//!
//! Every refusal has its own `type` (a slug, [`ProblemKind`]) with a fixed status; the
//! `detail` is the error's own words, and what a client needs to rebuild the error (the
//! service concerned, a chip's status word, a reason) travels in extension members. So the
//! holder's device shows exactly what the move server would have said in process
//! ([`move_error`]), and the move server tells a provider's refusal from its absence.
//! Database failures are logged and never described to a client.
//!
//! | type | status | from |
//! |---|---|---|
//! | `bad-request` | 400 | a body or path that does not decode |
//! | `body-too-large` | 413 | a body above [`crate::MAX_BODY_BYTES`] |
//! | `not-found`, `method-not-allowed` | 404, 405 | the router |
//! | `unauthorized` | 401 | a provider's transfer route without the move server's secret |
//! | `storage` | 503 | a database failure (either service) |
//! | `card-status`, `card-answer` | 422 | the chip refused, or answered out of the step |
//! | `out-of-order`, `no-copy`, `copy-elsewhere`, `already-uploaded`, `copy-downloaded` | 409, 404, 403, 409, 409 | a provider's refusals |
//! | `sam-refused`, `sam-unavailable` | 403, 503 | a provider's SAM |
//! | `wrong-password` | 401 | the move server: unknown user or wrong password |
//! | `unknown-chip`, `not-your-chip`, `no-session`, `unknown-move` | 404, 403, 404, 404 | the move server |
//! | `provider-down`, `provider-refused` | 503, 502 | the move server's provider calls |
//! | `admin-sam` | 503 | the move server's administrative SAM |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use valuecard_core::messages::center::CenterError;
use valuecard_core::StatusWord;
use valuecard_migrate::provider::ProviderError;
use valuecard_migrate::sam::SamError;
use valuecard_migrate::server::MoveError;
use valuecard_settle_http::db::PoolError;

use crate::wire::{service_code, service_text, WireError};

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

/// Every kind of refusal of either service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProblemKind {
    BadRequest,
    BodyTooLarge,
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    Storage,
    Internal,
    CardStatus,
    CardAnswer,
    OutOfOrder,
    NoCopy,
    CopyElsewhere,
    AlreadyUploaded,
    CopyDownloaded,
    SamRefused,
    SamUnavailable,
    WrongPassword,
    UserExists,
    Invalid,
    UnknownChip,
    NotYourChip,
    AlreadyMoved,
    NothingToDownload,
    UploadUnfinished,
    WrongDestination,
    TooLateToRollBack,
    NothingToRollBack,
    UnknownService,
    ProviderDown,
    ProviderRefused,
    NoSession,
    UnknownMove,
    AdminSam,
    Unavailable,
    /// A type this build does not know (a newer service); read by its status alone.
    #[serde(other)]
    Unknown,
}

impl ProblemKind {
    pub fn status(self) -> StatusCode {
        use ProblemKind::*;
        match self {
            BadRequest | Invalid => StatusCode::BAD_REQUEST,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            NotFound | NoCopy | UnknownChip | NoSession | UnknownMove => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Unauthorized | WrongPassword => StatusCode::UNAUTHORIZED,
            CopyElsewhere | SamRefused | NotYourChip => StatusCode::FORBIDDEN,
            OutOfOrder | AlreadyUploaded | CopyDownloaded | UserExists | AlreadyMoved
            | NothingToDownload | UploadUnfinished | WrongDestination | TooLateToRollBack
            | NothingToRollBack => StatusCode::CONFLICT,
            CardStatus | CardAnswer | UnknownService => StatusCode::UNPROCESSABLE_ENTITY,
            ProviderRefused => StatusCode::BAD_GATEWAY,
            Storage | SamUnavailable | ProviderDown | AdminSam | Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Internal | Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn title(self) -> &'static str {
        use ProblemKind::*;
        match self {
            BadRequest => "The request is malformed",
            BodyTooLarge => "The request body is too large",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            Unauthorized => "Only the value move server may call this",
            Storage => "The service's database is unavailable",
            Internal | Unknown => "Internal error",
            CardStatus => "The chip refused",
            CardAnswer => "The chip's answer does not fit the step",
            OutOfOrder => "The step is out of order",
            NoCopy => "No copy of that move is held",
            CopyElsewhere => "The copy belongs to another destination chip",
            AlreadyUploaded => "The chip's service was uploaded for another move",
            CopyDownloaded => "The copy was downloaded",
            SamRefused => "The SAM refused",
            SamUnavailable => "The SAM is unavailable",
            WrongPassword => "Wrong user ID or password",
            UserExists => "The user ID is taken",
            Invalid => "The request is refused",
            UnknownChip => "The chip is not registered",
            NotYourChip => "The chip belongs to another user",
            AlreadyMoved => "The chip's services were moved already",
            NothingToDownload => "No move waits for a new chip",
            UploadUnfinished => "The upload is not finished",
            WrongDestination => "The chip is not the move's destination",
            TooLateToRollBack => "The move can no longer be rolled back",
            NothingToRollBack => "No move to roll back",
            UnknownService => "No provider is known for a service",
            ProviderDown => "A provider is unavailable",
            ProviderRefused => "A provider refused",
            NoSession => "No such session",
            UnknownMove => "No such move",
            AdminSam => "The administrative SAM failed",
            Unavailable => "The move server is unavailable",
        }
    }
}

/// A problem document: what either service answers instead of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{title}: {detail}")]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: ProblemKind,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The extension members, boxed: most problems have none.
    #[serde(flatten)]
    pub extensions: Box<Extensions>,
}

/// What a client needs, beside the detail, to rebuild the error it stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extensions {
    /// The service the refusal concerns (four hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The chip's status word (four hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_word: Option<String>,
    /// The reason inside the detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            extensions: Box::default(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::BadRequest, detail)
    }

    fn with_service(mut self, service: valuecard_core::messages::services::ServiceCode) -> Self {
        self.extensions.service = Some(service_text(service));
        self
    }

    fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.extensions.reason = Some(reason.into());
        self
    }

    fn with_status_word(mut self, sw: StatusWord) -> Self {
        self.extensions.status_word = Some(format!("{:04X}", sw.0));
        self
    }

    /// A database failure: the detail stays in the log.
    pub fn storage(error: &CenterError) -> Self {
        tracing::error!(%error, "database");
        Problem::new(
            ProblemKind::Storage,
            "the service's database could not complete the request; nothing was changed, try again",
        )
    }
}

impl From<WireError> for Problem {
    fn from(error: WireError) -> Self {
        Problem::bad_request(error.to_string())
    }
}

impl From<PoolError> for Problem {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Busy => Problem::new(ProblemKind::Storage, error.to_string()),
            PoolError::Stopped => Problem::new(ProblemKind::Internal, error.to_string()),
            PoolError::Database(error) => Problem::storage(&error),
        }
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
        if self.kind == ProblemKind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A provider's refusal or failure as its service answers it.
pub fn provider_problem(error: &ProviderError) -> Problem {
    let detail = error.to_string();
    match error {
        ProviderError::Card(sw) => {
            Problem::new(ProblemKind::CardStatus, detail).with_status_word(*sw)
        }
        ProviderError::Answer(_) => Problem::new(ProblemKind::CardAnswer, detail),
        ProviderError::OutOfOrder(_) => Problem::new(ProblemKind::OutOfOrder, detail),
        ProviderError::NoCopy => Problem::new(ProblemKind::NoCopy, detail),
        ProviderError::WrongDestination => Problem::new(ProblemKind::CopyElsewhere, detail),
        ProviderError::AlreadyUploaded => Problem::new(ProblemKind::AlreadyUploaded, detail),
        ProviderError::Downloaded => Problem::new(ProblemKind::CopyDownloaded, detail),
        ProviderError::Sam(SamError::Unavailable(_)) => {
            tracing::error!(error = %detail, "transfer SAM");
            Problem::new(ProblemKind::SamUnavailable, detail)
        }
        ProviderError::Sam(_) => Problem::new(ProblemKind::SamRefused, detail),
        ProviderError::Storage(error) => Problem::storage(error),
        _ => Problem::new(ProblemKind::Internal, detail),
    }
}

/// A move server's refusal or failure as its service answers it: the detail is the
/// error's own words (worded for the holder), but a database failure's.
pub fn move_problem(error: &MoveError) -> Problem {
    use ProblemKind as K;
    let detail = error.to_string();
    let plain = |kind: ProblemKind| Problem::new(kind, detail.clone());
    match error {
        MoveError::WrongPassword => plain(K::WrongPassword),
        MoveError::UserExists => plain(K::UserExists),
        MoveError::Invalid(_) => plain(K::Invalid),
        MoveError::UnknownChip => plain(K::UnknownChip),
        MoveError::NotYourChip => plain(K::NotYourChip),
        MoveError::AlreadyMoved => plain(K::AlreadyMoved),
        MoveError::NothingToDownload => plain(K::NothingToDownload),
        MoveError::UploadUnfinished => plain(K::UploadUnfinished),
        MoveError::WrongDestination => plain(K::WrongDestination),
        MoveError::TooLateToRollBack => plain(K::TooLateToRollBack),
        MoveError::NothingToRollBack => plain(K::NothingToRollBack),
        MoveError::UnknownService(service) => plain(K::UnknownService).with_service(*service),
        MoveError::ProviderDown { service, reason } => {
            tracing::warn!(%service, %reason, "provider unavailable");
            plain(K::ProviderDown)
                .with_service(*service)
                .with_reason(reason.clone())
        }
        MoveError::ProviderRefused { service, reason } => plain(K::ProviderRefused)
            .with_service(*service)
            .with_reason(reason.clone()),
        MoveError::Card(sw) => plain(K::CardStatus).with_status_word(*sw),
        MoveError::Answer(reason) => plain(K::CardAnswer).with_reason(reason.to_string()),
        MoveError::NoSession => plain(K::NoSession),
        MoveError::UnknownMove => plain(K::UnknownMove),
        MoveError::Sam(reason) => {
            tracing::error!(%reason, "administrative SAM");
            plain(K::AdminSam).with_reason(reason.clone())
        }
        MoveError::Storage(error) => Problem::storage(error),
        MoveError::ServerUnavailable(reason) => plain(K::Unavailable).with_reason(reason.clone()),
        _ => plain(K::Internal),
    }
}

/// The move server's error rebuilt from its problem document. A problem that lacks what its
/// type needs, or a type this build does not know, is read by its status: a refusal of the
/// request (4xx) or the server unavailable (5xx).
pub fn move_error(problem: Problem) -> MoveError {
    use ProblemKind as K;
    let service = problem
        .extensions
        .service
        .as_deref()
        .and_then(|text| service_code("service", text).ok());
    let status_word = problem.extensions.status_word.as_deref().and_then(|text| {
        u16::from_str_radix(text, 16)
            .ok()
            .filter(|_| text.len() == 4)
    });
    let rebuilt = match (
        problem.kind,
        service,
        status_word,
        problem.extensions.reason.clone(),
    ) {
        (K::WrongPassword, ..) => Some(MoveError::WrongPassword),
        (K::UserExists, ..) => Some(MoveError::UserExists),
        (K::Invalid | K::BadRequest | K::BodyTooLarge, ..) => {
            Some(MoveError::Invalid(problem.detail.clone().into()))
        }
        (K::UnknownChip, ..) => Some(MoveError::UnknownChip),
        (K::NotYourChip, ..) => Some(MoveError::NotYourChip),
        (K::AlreadyMoved, ..) => Some(MoveError::AlreadyMoved),
        (K::NothingToDownload, ..) => Some(MoveError::NothingToDownload),
        (K::UploadUnfinished, ..) => Some(MoveError::UploadUnfinished),
        (K::WrongDestination, ..) => Some(MoveError::WrongDestination),
        (K::TooLateToRollBack, ..) => Some(MoveError::TooLateToRollBack),
        (K::NothingToRollBack, ..) => Some(MoveError::NothingToRollBack),
        (K::UnknownService, Some(service), ..) => Some(MoveError::UnknownService(service)),
        (K::ProviderDown, Some(service), _, Some(reason)) => {
            Some(MoveError::ProviderDown { service, reason })
        }
        (K::ProviderRefused, Some(service), _, Some(reason)) => {
            Some(MoveError::ProviderRefused { service, reason })
        }
        (K::CardStatus, _, Some(sw), _) => Some(MoveError::Card(StatusWord(sw))),
        (K::CardAnswer, _, _, Some(reason)) => Some(MoveError::Answer(reason.into())),
        (K::NoSession, ..) => Some(MoveError::NoSession),
        (K::UnknownMove, ..) => Some(MoveError::UnknownMove),
        (K::AdminSam, _, _, Some(reason)) => Some(MoveError::Sam(reason)),
        (K::Unavailable, _, _, Some(reason)) => Some(MoveError::ServerUnavailable(reason)),
        _ => None,
    };
    rebuilt.unwrap_or_else(|| {
        if (400..500).contains(&problem.status) {
            MoveError::Invalid(problem.detail.into())
        } else {
            MoveError::ServerUnavailable(problem.detail)
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use valuecard_core::messages::services::ServiceCode;

    use super::*;

    fn every_move_error() -> Vec<MoveError> {
        let service = ServiceCode(0x0102);
        vec![
            MoveError::WrongPassword,
            MoveError::UserExists,
            MoveError::Invalid("a password is 8 to 256 bytes".into()),
            MoveError::UnknownChip,
            MoveError::NotYourChip,
            MoveError::AlreadyMoved,
            MoveError::NothingToDownload,
            MoveError::UploadUnfinished,
            MoveError::WrongDestination,
            MoveError::TooLateToRollBack,
            MoveError::NothingToRollBack,
            MoveError::UnknownService(service),
            MoveError::ProviderDown {
                service,
                reason: "https://127.0.0.1:1: connection refused".into(),
            },
            MoveError::ProviderRefused {
                service,
                reason: "this provider holds no copy of that move".into(),
            },
            MoveError::Card(StatusWord(0x6A82)),
            MoveError::Answer("GET CHALLENGE answer".into()),
            MoveError::NoSession,
            MoveError::UnknownMove,
            MoveError::Sam("the SAM is unavailable: token gone".into()),
            MoveError::ServerUnavailable("connection refused".into()),
        ]
    }

    /// Each error crosses the network as itself: the same words, the same variant.
    #[test]
    fn every_move_error_is_rebuilt_from_its_problem() {
        let mut kinds = BTreeSet::new();
        for error in every_move_error() {
            let problem = move_problem(&error);
            assert_eq!(problem.detail, error.to_string());
            assert_eq!(problem.status, problem.kind.status().as_u16());
            assert!(kinds.insert(format!("{:?}", problem.kind)), "{error:?}");
            let json = serde_json::to_vec(&problem).unwrap();
            let back = move_error(serde_json::from_slice(&json).unwrap());
            assert_eq!(back.to_string(), error.to_string());
            assert_eq!(
                core::mem::discriminant(&back),
                core::mem::discriminant(&error),
                "{error:?} came back as {back:?}"
            );
        }
    }

    #[test]
    fn statuses_are_the_ones_the_holder_is_told() {
        let status = |error: MoveError| move_problem(&error).status;
        assert_eq!(status(MoveError::WrongPassword), 401);
        assert_eq!(status(MoveError::UnknownChip), 404);
        assert_eq!(status(MoveError::NotYourChip), 403);
        assert_eq!(status(MoveError::NoSession), 404);
        assert_eq!(status(MoveError::Card(StatusWord(0x6985))), 422);
        let service = ServiceCode(1);
        let reason = String::new();
        assert_eq!(
            status(MoveError::ProviderDown {
                service,
                reason: reason.clone()
            }),
            503
        );
        assert_eq!(status(MoveError::ProviderRefused { service, reason }), 502);
    }

    #[test]
    fn a_database_failure_is_not_described() {
        let problem = move_problem(&MoveError::Storage(CenterError::Storage(
            "relation migrate_moves: disk I/O error".into(),
        )));
        assert_eq!(problem.kind, ProblemKind::Storage);
        assert_eq!(problem.status, 503);
        assert!(!problem.detail.contains("migrate_moves"));
        assert!(matches!(
            move_error(problem),
            MoveError::ServerUnavailable(_)
        ));
    }

    #[test]
    fn an_unknown_type_is_read_by_its_status() {
        let refused: Problem = serde_json::from_str(
            r#"{"type":"too-early","title":"t","status":425,"detail":"come back later"}"#,
        )
        .unwrap();
        assert_eq!(refused.kind, ProblemKind::Unknown);
        assert!(
            matches!(move_error(refused), MoveError::Invalid(text) if text == "come back later")
        );
        let failed: Problem = serde_json::from_str(
            r#"{"type":"provider-down","title":"t","status":503,"detail":"gone"}"#,
        )
        .unwrap();
        // A provider-down without its service cannot be rebuilt as one.
        assert!(matches!(move_error(failed), MoveError::ServerUnavailable(text) if text == "gone"));
    }

    #[test]
    fn provider_refusals_and_failures_have_their_statuses() {
        let status = |error: ProviderError| provider_problem(&error).status;
        assert_eq!(status(ProviderError::NoCopy), 404);
        assert_eq!(status(ProviderError::WrongDestination), 403);
        assert_eq!(status(ProviderError::Downloaded), 409);
        assert_eq!(status(ProviderError::OutOfOrder("x")), 409);
        assert_eq!(status(ProviderError::Card(StatusWord(0x6982))), 422);
        assert_eq!(
            status(ProviderError::Sam(SamError::Unavailable("token".into()))),
            503
        );
        assert_eq!(status(ProviderError::Sam(SamError::Copy)), 403);
        let storage = provider_problem(&ProviderError::Storage(CenterError::Storage(
            "provider_copies: locked".into(),
        )));
        assert_eq!(storage.status, 503);
        assert!(!storage.detail.contains("provider_copies"));
    }
}
