//! The holder's device's side of the move server's service: `MoveServerLink` over HTTPS,
//! the server's certificate pinned, and the account calls (a new user, a chip registered).
//!
//! Every refusal comes back as the server's own `MoveError` ([`crate::problem::move_error`]),
//! so the device shows what the server said ("wrong user ID or password", "this chip is
//! not registered with the move server", "the provider of service 0102 is unavailable:
//! ..."); a server that cannot be reached or answers outside its protocol is
//! `MoveError::ServerUnavailable`, naming its address.

use std::time::Duration;

use valuecard_center_http::CenterPin;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::MoveId;
use valuecard_migrate::client::{Mode, MoveServerLink, Outcome, SessionId};
use valuecard_migrate::server::{MoveError, Next, Started};

use crate::problem::move_error;
use crate::transport::{Endpoint, Failure};
use crate::wire::{
    ChipRegisteredBody, ChipRegistration, ChipRequestBody, Credentials, NextBody, NextRequestBody,
    OutcomeBody, SessionRequest, SessionRequestBody, StartedBody, UserCreatedBody, UserRequestBody,
};

/// How long one call to the move server may take: longer than a provider call, since one
/// step may call several providers (S17 clears every copy).
pub const MOVE_SERVER_TIMEOUT: Duration = Duration::from_secs(90);

/// The move server's service.
#[derive(Debug, Clone)]
pub struct HttpMoveServer {
    endpoint: Endpoint,
}

impl HttpMoveServer {
    /// The service at `url` (`https://host:port`), accepting only the certificate `pin`.
    pub fn new(url: &str, pin: &CenterPin) -> Self {
        Self::with_timeout(url, pin, MOVE_SERVER_TIMEOUT)
    }

    /// [`HttpMoveServer::new`] with each call bounded by `timeout`.
    pub fn with_timeout(url: &str, pin: &CenterPin, timeout: Duration) -> Self {
        HttpMoveServer {
            endpoint: Endpoint::new(url, pin, timeout, None),
        }
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        self.endpoint.origin()
    }

    fn fail(&self, failure: Failure) -> MoveError {
        match failure {
            Failure::Problem(problem) => move_error(problem),
            Failure::Unreachable(reason) => {
                MoveError::ServerUnavailable(format!("{} cannot be reached: {reason}", self.url()))
            }
            Failure::Malformed(reason) => {
                MoveError::ServerUnavailable(format!("{} misbehaved: {reason}", self.url()))
            }
        }
    }

    /// A new user with `password`.
    pub fn create_user(&self, user_id: &str, password: &str) -> Result<(), MoveError> {
        let credentials = Credentials {
            user_id: user_id.to_owned(),
            password: password.to_owned(),
        };
        self.endpoint
            .post::<UserRequestBody, UserCreatedBody>("/v1/users", &credentials)
            .map_err(|failure| self.fail(failure))?;
        Ok(())
    }

    /// Registers the chip `card_id` (its serial number) to the user.
    pub fn register_chip(
        &self,
        user_id: &str,
        password: &str,
        card_id: &CardId,
    ) -> Result<(), MoveError> {
        let registration = ChipRegistration {
            credentials: Credentials {
                user_id: user_id.to_owned(),
                password: password.to_owned(),
            },
            card_id: *card_id,
        };
        let registered = self
            .endpoint
            .post::<ChipRequestBody, ChipRegisteredBody>("/v1/chips", &registration)
            .map_err(|failure| self.fail(failure))?;
        if registered.card_id != *card_id {
            return Err(MoveError::ServerUnavailable(format!(
                "{} registered another chip than the one asked",
                self.url()
            )));
        }
        Ok(())
    }

    /// A move's state and its services'.
    pub fn status(&self, move_id: &MoveId) -> Result<Outcome, MoveError> {
        self.endpoint
            .get::<OutcomeBody>(&format!("/v1/moves/{}", hex::encode(move_id)))
            .map_err(|failure| self.fail(failure))
    }
}

impl MoveServerLink for HttpMoveServer {
    fn start(&self, user_id: &str, password: &str, mode: Mode) -> Result<Started, MoveError> {
        let request = SessionRequest {
            credentials: Credentials {
                user_id: user_id.to_owned(),
                password: password.to_owned(),
            },
            mode,
        };
        self.endpoint
            .post::<SessionRequestBody, StartedBody>("/v1/sessions", &request)
            .map_err(|failure| self.fail(failure))
    }

    fn next(&self, session: &SessionId, response: &[u8]) -> Result<Next, MoveError> {
        self.endpoint
            .post::<NextRequestBody, NextBody>(
                &format!("/v1/sessions/{}/next", hex::encode(session)),
                &response.to_vec(),
            )
            .map_err(|failure| self.fail(failure))
    }
}

/// An issuer registers that it issued `service` to the chip `card_id` (S2's reference table),
/// with the system's access secret.
pub fn register_chip_service(
    url: &str,
    pin: &CenterPin,
    secret: &crate::access::AccessSecret,
    card_id: &CardId,
    service: valuecard_core::messages::services::ServiceCode,
) -> Result<(), MoveError> {
    let server = HttpMoveServer {
        endpoint: Endpoint::new(url, pin, MOVE_SERVER_TIMEOUT, Some(secret.bearer())),
    };
    server
        .endpoint
        .post::<crate::wire::ChipServiceBody, crate::wire::ChipServiceBody>(
            &format!("/v1/chips/{}/services", hex::encode(card_id.as_bytes())),
            &service,
        )
        .map_err(|failure| server.fail(failure))?;
    Ok(())
}
