//! What both services' routers share: a JSON body read within [`MAX_BODY_BYTES`] and
//! decoded to its message, identifiers in paths, answers as JSON, `GET /health`, and the
//! router's own refusals (unknown path, wrong method) as problem documents.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use valuecard_center::sql::{Database, Executor};
use valuecard_settle_http::DatabasePool;

use crate::problem::{Problem, ProblemKind, JSON};
use crate::wire::{hex_array, Body, HealthBody};
use crate::MAX_BODY_BYTES;

/// Either answer of a handler.
pub(crate) type Answer = Result<Response, Problem>;

/// A request body decoded to `B`'s message: 413 above [`MAX_BODY_BYTES`] (whether or not
/// its length was declared), 400 naming the field that does not decode.
pub(crate) struct Wire<B: Body>(pub B::Message);

fn too_large() -> Problem {
    Problem::new(
        ProblemKind::BodyTooLarge,
        format!("a request body is at most {MAX_BODY_BYTES} bytes"),
    )
}

impl<S, B> FromRequest<S> for Wire<B>
where
    S: Send + Sync,
    B: Body,
    B::Message: Send,
{
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Problem> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|error| {
                if error.into_inner().is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    Problem::bad_request("the request body could not be read")
                }
            })?;
        Ok(Wire(B::from_json(&bytes)?))
    }
}

/// A 200 answer with `message` as `B`'s JSON body.
pub(crate) fn answer<B: Body>(message: &B::Message) -> Response {
    let mut response = (StatusCode::OK, B::to_json(message)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A fixed-size identifier (hex) from the path.
pub(crate) fn path_id<const N: usize>(
    field: &'static str,
    path: Result<Path<String>, PathRejection>,
) -> Result<[u8; N], Problem> {
    let Path(text) = path.map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
    Ok(hex_array(field, &text)?)
}

/// `GET /health`: the database answers `SELECT 1` on a pooled connection.
pub(crate) async fn health(pool: &DatabasePool) -> Answer {
    let postgres = pool.is_postgres();
    pool.run(|db: &mut Database| -> Result<(), Problem> {
        db.query_one("SELECT 1", &[])
            .map_err(|error| Problem::storage(&error))?;
        Ok(())
    })
    .await?;
    let body = HealthBody {
        status: "ok".into(),
        database: if postgres { "postgresql" } else { "sqlite" }.into(),
    };
    let mut response = (
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    Ok(response)
}

async fn not_found() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        "the resource does not take that method",
    )
}

/// The router with its own refusals as problem documents.
pub(crate) fn with_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
