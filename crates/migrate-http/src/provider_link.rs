//! How the move server reaches a provider's service: `ProviderLink` over HTTPS, the
//! provider's certificate pinned and the move server's access secret shown on every call
//! of the move.
//!
//! A provider that cannot be reached, fails (5xx) or answers outside its protocol is
//! `LinkError::Down`, its message naming the provider's address; a provider that answers
//! with a refusal (4xx) is `LinkError::Refused`, in the provider's own words, exactly as a
//! provider in the same process would have said it.

use std::time::Duration;

use valuecard_center_http::CenterPin;
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{AreaFormat, KeyPackage, MoveId};
use valuecard_migrate::provider::Exchange;
use valuecard_migrate::server::{LinkError, ProviderLink};

use crate::access::AccessSecret;
use crate::transport::{Endpoint, Failure};
use crate::wire::{
    CopyEnd, CopyEndedBody, DownloadRequest, DownloadRequestBody, ExchangeBody, FormatBody,
    KeyPackagesBody, KeyPackagesRequestBody, UploadRequest, UploadRequestBody,
};

/// How long one call to a provider may take.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);

/// A provider's service as the move server sees it.
#[derive(Debug)]
pub struct HttpProviderLink {
    endpoint: Endpoint,
    /// Fetched once when connecting: [`ProviderLink::format`] cannot fail.
    format: AreaFormat,
}

impl HttpProviderLink {
    /// Connects to the provider at `url` (`https://host:port`), accepting only the
    /// certificate `pin`, and reads its area format; every call of the move shows `secret`.
    pub fn connect(url: &str, pin: &CenterPin, secret: &AccessSecret) -> Result<Self, LinkError> {
        Self::connect_with_timeout(url, pin, secret, PROVIDER_TIMEOUT)
    }

    /// [`HttpProviderLink::connect`] with each call bounded by `timeout`.
    pub fn connect_with_timeout(
        url: &str,
        pin: &CenterPin,
        secret: &AccessSecret,
        timeout: Duration,
    ) -> Result<Self, LinkError> {
        let endpoint = Endpoint::new(url, pin, timeout, Some(secret.bearer()));
        let format = endpoint
            .get::<FormatBody>("/v1/format")
            .map_err(|failure| link_error(&endpoint, failure))?;
        Ok(HttpProviderLink { endpoint, format })
    }

    /// The provider's address.
    pub fn url(&self) -> &str {
        self.endpoint.origin()
    }

    fn fail(&self, failure: Failure) -> LinkError {
        link_error(&self.endpoint, failure)
    }

    fn move_path(move_id: &MoveId, action: &str) -> String {
        format!("/v1/moves/{}/{action}", hex::encode(move_id))
    }

    fn end(&self, move_id: &MoveId, end: CopyEnd) -> Result<(), LinkError> {
        let action = match end {
            CopyEnd::Cleared => "clear",
            CopyEnd::Discarded => "discard",
        };
        let ended = self
            .endpoint
            .post_empty::<CopyEndedBody>(&Self::move_path(move_id, action))
            .map_err(|failure| self.fail(failure))?;
        if ended.move_id != *move_id || ended.state != end {
            return Err(LinkError::Down(format!(
                "{}: the answer to {action} is for another move or end",
                self.url()
            )));
        }
        Ok(())
    }
}

/// A call's failure as the link reports it.
fn link_error(endpoint: &Endpoint, failure: Failure) -> LinkError {
    let origin = endpoint.origin();
    match failure {
        Failure::Unreachable(reason) => LinkError::Down(format!(
            "the provider at {origin} cannot be reached: {reason}"
        )),
        Failure::Problem(problem) if (400..500).contains(&problem.status) => {
            LinkError::Refused(problem.detail)
        }
        Failure::Problem(problem) => LinkError::Down(format!(
            "the provider at {origin} failed ({}): {}",
            problem.status, problem.detail
        )),
        Failure::Malformed(reason) => {
            LinkError::Down(format!("the provider at {origin} misbehaved: {reason}"))
        }
    }
}

impl ProviderLink for HttpProviderLink {
    fn format(&self) -> AreaFormat {
        self.format
    }

    fn key_packages(
        &self,
        card_certificate: &Certificate,
    ) -> Result<(KeyPackage, KeyPackage), LinkError> {
        let (main, temporary) = self
            .endpoint
            .post::<KeyPackagesRequestBody, KeyPackagesBody>("/v1/key-packages", card_certificate)
            .map_err(|failure| self.fail(failure))?;
        if main.service != self.format.service {
            return Err(LinkError::Down(format!(
                "the provider at {} sealed keys of another service",
                self.url()
            )));
        }
        Ok((main, temporary))
    }

    fn upload(
        &self,
        move_id: &MoveId,
        source: &CardId,
        source_certificate: &Certificate,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError> {
        let request = UploadRequest {
            source: *source,
            source_certificate: source_certificate.clone(),
            response: response.map(<[u8]>::to_vec),
        };
        self.endpoint
            .post::<UploadRequestBody, ExchangeBody>(&Self::move_path(move_id, "upload"), &request)
            .map_err(|failure| self.fail(failure))
    }

    fn download(
        &self,
        move_id: &MoveId,
        destination: &CardId,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError> {
        let request = DownloadRequest {
            destination: *destination,
            response: response.map(<[u8]>::to_vec),
        };
        self.endpoint
            .post::<DownloadRequestBody, ExchangeBody>(
                &Self::move_path(move_id, "download"),
                &request,
            )
            .map_err(|failure| self.fail(failure))
    }

    fn clear(&self, move_id: &MoveId) -> Result<(), LinkError> {
        self.end(move_id, CopyEnd::Cleared)
    }

    fn discard(&self, move_id: &MoveId) -> Result<(), LinkError> {
        self.end(move_id, CopyEnd::Discarded)
    }
}
