//! A service of the online settlement system reached over HTTPS, its certificate pinned.

use serde::de::DeserializeOwned;
use serde::Serialize;
use valuecard_center_http::CenterPin;

use super::{HolderError, REQUEST_TIMEOUT};
use crate::service::Problem;

/// A service reached over HTTPS with its certificate pinned.
#[derive(Clone)]
pub struct ServiceClient {
    name: &'static str,
    agent: ureq::Agent,
    origin: String,
}

impl core::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ServiceClient({} at {})", self.name, self.origin)
    }
}

impl ServiceClient {
    pub fn new(name: &'static str, url: &str, pin: &CenterPin) -> Self {
        ServiceClient {
            name,
            agent: valuecard_center_http::client::pinned_agent(REQUEST_TIMEOUT, pin),
            origin: url.trim_end_matches('/').to_owned(),
        }
    }

    fn unreachable(&self, reason: impl core::fmt::Display) -> HolderError {
        HolderError::Unreachable {
            service: self.name,
            reason: reason.to_string(),
        }
    }

    fn answer(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Vec<u8>, HolderError> {
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024)
            .read_to_vec()
            .map_err(|error| self.unreachable(error))?;
        if status == 200 {
            return Ok(body);
        }
        match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) => Err(HolderError::Service(problem)),
            Err(_) => Err(HolderError::Malformed {
                service: self.name,
                reason: format!("status {status} without a problem document"),
            }),
        }
    }

    pub(super) fn decode<A: DeserializeOwned>(&self, body: &[u8]) -> Result<A, HolderError> {
        serde_json::from_slice(body).map_err(|error| HolderError::Malformed {
            service: self.name,
            reason: error.to_string(),
        })
    }

    /// `POST path` with `body`, the answer's bytes.
    pub fn post_raw<B: Serialize>(&self, path: &str, body: &B) -> Result<Vec<u8>, HolderError> {
        let bytes = serde_json::to_vec(body).map_err(|error| self.unreachable(error))?;
        let response = self
            .agent
            .post(&format!("{}{path}", self.origin))
            .header("content-type", crate::service::JSON)
            .send(&bytes[..])
            .map_err(|error| self.unreachable(error))?;
        self.answer(response)
    }

    pub fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, HolderError> {
        let bytes = self.post_raw(path, body)?;
        self.decode(&bytes)
    }

    pub fn get<A: DeserializeOwned>(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<A, HolderError> {
        let mut request = self.agent.get(&format!("{}{path}", self.origin));
        if let Some(token) = bearer {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let response = request.call().map_err(|error| self.unreachable(error))?;
        let bytes = self.answer(response)?;
        self.decode(&bytes)
    }
}
