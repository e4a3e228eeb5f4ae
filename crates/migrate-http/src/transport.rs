//! One service reached over HTTPS with its certificate pinned: a JSON body out, the answer's
//! body or its problem document back. Both clients ([`crate::provider_link`],
//! [`crate::move_client`]) call through this and turn a [`Failure`] into their own error.

use std::time::Duration;

use valuecard_center_http::CenterPin;
use zeroize::Zeroizing;

use crate::problem::{Problem, JSON};
use crate::wire::Body;
use crate::MAX_ANSWER_BYTES;

/// Why a call gave no answer body.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer: the connection, TLS or the timeout failed.
    Unreachable(String),
    /// The service refused or failed, in its own words.
    Problem(Problem),
    /// An answer that is neither the expected body nor a problem document.
    Malformed(String),
}

/// A service at one origin, its certificate pinned.
#[derive(Clone)]
pub(crate) struct Endpoint {
    agent: ureq::Agent,
    origin: String,
    /// The `Authorization` header every request carries, if any.
    authorization: Option<Zeroizing<String>>,
}

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("origin", &self.origin)
            .field("authorized", &self.authorization.is_some())
            .finish()
    }
}

impl Endpoint {
    pub(crate) fn new(
        url: &str,
        pin: &CenterPin,
        timeout: Duration,
        authorization: Option<Zeroizing<String>>,
    ) -> Self {
        Endpoint {
            agent: valuecard_center_http::client::pinned_agent(timeout, pin),
            origin: url.trim_end_matches('/').to_owned(),
            authorization,
        }
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// `GET path`.
    pub(crate) fn get<A: Body>(&self, path: &str) -> Result<A::Message, Failure> {
        let mut request = self.agent.get(&self.url(path));
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.as_str());
        }
        let response = request.call().map_err(unreachable)?;
        answer::<A>(response)
    }

    /// `POST path` with `message` as its JSON body.
    pub(crate) fn post<Q: Body, A: Body>(
        &self,
        path: &str,
        message: &Q::Message,
    ) -> Result<A::Message, Failure> {
        let body = Q::to_json(message);
        let mut request = self
            .agent
            .post(&self.url(path))
            .header("content-type", JSON);
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.as_str());
        }
        let response = request.send(&body[..]).map_err(unreachable)?;
        answer::<A>(response)
    }

    /// `POST path` without a body.
    pub(crate) fn post_empty<A: Body>(&self, path: &str) -> Result<A::Message, Failure> {
        let mut request = self.agent.post(&self.url(path));
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.as_str());
        }
        let response = request.send_empty().map_err(unreachable)?;
        answer::<A>(response)
    }
}

fn unreachable(error: ureq::Error) -> Failure {
    Failure::Unreachable(error.to_string())
}

fn answer<A: Body>(mut response: ureq::http::Response<ureq::Body>) -> Result<A::Message, Failure> {
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(unreachable)?;
    if status == 200 {
        return A::from_json(&body)
            .map_err(|error| Failure::Malformed(format!("its answer does not decode: {error}")));
    }
    match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => Err(Failure::Problem(problem)),
        Err(_) => Err(Failure::Malformed(format!(
            "it answered status {} without a problem document",
            status.as_u16()
        ))),
    }
}
