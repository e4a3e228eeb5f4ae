//! The bodies of the value move server's service: users and their chips, a device session
//! (its start, each chip answer and the next command or the end) and a move's status.
//! The user ID and password are checked by the server's accounts, not here, so that a
//! malformed one gets the same answer as a wrong one.

use serde::{Deserialize, Serialize};
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{ServiceCode, ServiceKind};
use valuecard_migrate::client::{Mode, Outcome};
use valuecard_migrate::server::{Next, Progress, Started};

use super::{
    card_id, hex_array, hex_bytes, move_id, refuse, service_code, service_kind, service_text, Body,
    WireError,
};

/// A user's ID and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user_id: String,
    pub password: String,
}

impl core::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Credentials({:?}, password hidden)", self.user_id)
    }
}

/// `POST /v1/users`: a new user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequestBody {
    pub user_id: String,
    pub password: String,
}

impl core::fmt::Debug for UserRequestBody {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "UserRequestBody({:?}, password hidden)", self.user_id)
    }
}

impl Body for UserRequestBody {
    type Message = Credentials;

    fn encode(credentials: &Credentials) -> Self {
        UserRequestBody {
            user_id: credentials.user_id.clone(),
            password: credentials.password.clone(),
        }
    }

    fn decode(&self) -> Result<Credentials, WireError> {
        Ok(Credentials {
            user_id: self.user_id.clone(),
            password: self.password.clone(),
        })
    }
}

/// The answer to `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreatedBody {
    pub user_id: String,
}

impl Body for UserCreatedBody {
    type Message = String;

    fn encode(user_id: &String) -> Self {
        UserCreatedBody {
            user_id: user_id.clone(),
        }
    }

    fn decode(&self) -> Result<String, WireError> {
        Ok(self.user_id.clone())
    }
}

/// A chip's serial number (its card ID) registered to the user who proves the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipRegistration {
    pub credentials: Credentials,
    pub card_id: CardId,
}

/// `POST /v1/chips`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChipRequestBody {
    pub user_id: String,
    pub password: String,
    pub card_id: String,
}

impl core::fmt::Debug for ChipRequestBody {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "ChipRequestBody({:?}, card {}, password hidden)",
            self.user_id, self.card_id
        )
    }
}

impl Body for ChipRequestBody {
    type Message = ChipRegistration;

    fn encode(registration: &ChipRegistration) -> Self {
        ChipRequestBody {
            user_id: registration.credentials.user_id.clone(),
            password: registration.credentials.password.clone(),
            card_id: hex::encode(registration.card_id.as_bytes()),
        }
    }

    fn decode(&self) -> Result<ChipRegistration, WireError> {
        Ok(ChipRegistration {
            credentials: Credentials {
                user_id: self.user_id.clone(),
                password: self.password.clone(),
            },
            card_id: card_id("card_id", &self.card_id)?,
        })
    }
}

/// A chip registered to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipRegistered {
    pub user_id: String,
    pub card_id: CardId,
}

/// The answer to `POST /v1/chips`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChipRegisteredBody {
    pub user_id: String,
    pub card_id: String,
}

impl Body for ChipRegisteredBody {
    type Message = ChipRegistered;

    fn encode(registered: &ChipRegistered) -> Self {
        ChipRegisteredBody {
            user_id: registered.user_id.clone(),
            card_id: hex::encode(registered.card_id.as_bytes()),
        }
    }

    fn decode(&self) -> Result<ChipRegistered, WireError> {
        Ok(ChipRegistered {
            user_id: self.user_id.clone(),
            card_id: card_id("card_id", &self.card_id)?,
        })
    }
}

/// A device session's start (S1 / S9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub credentials: Credentials,
    pub mode: Mode,
}

/// `POST /v1/sessions`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequestBody {
    pub user_id: String,
    pub password: String,
    /// `upload`, `download` or `rollback`.
    pub mode: String,
}

impl core::fmt::Debug for SessionRequestBody {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SessionRequestBody({:?}, {}, password hidden)",
            self.user_id, self.mode
        )
    }
}

/// Every mode, for reading one by name.
const MODES: [Mode; 3] = [Mode::Upload, Mode::Download, Mode::Rollback];

fn mode(field: &'static str, text: &str) -> Result<Mode, WireError> {
    MODES
        .into_iter()
        .find(|mode| mode.name() == text)
        .ok_or_else(|| refuse(field, "expected upload, download or rollback"))
}

impl Body for SessionRequestBody {
    type Message = SessionRequest;

    fn encode(request: &SessionRequest) -> Self {
        SessionRequestBody {
            user_id: request.credentials.user_id.clone(),
            password: request.credentials.password.clone(),
            mode: request.mode.name().to_owned(),
        }
    }

    fn decode(&self) -> Result<SessionRequest, WireError> {
        Ok(SessionRequest {
            credentials: Credentials {
                user_id: self.user_id.clone(),
                password: self.password.clone(),
            },
            mode: mode("mode", &self.mode)?,
        })
    }
}

/// The answer to `POST /v1/sessions`: the session and its first command for the chip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartedBody {
    pub session: String,
    pub apdu: String,
}

fn command(field: &'static str, text: &str) -> Result<Vec<u8>, WireError> {
    let apdu = hex_bytes(field, text)?;
    if apdu.len() < 4 {
        return Err(refuse(field, "a command APDU has at least four bytes"));
    }
    Ok(apdu)
}

impl Body for StartedBody {
    type Message = Started;

    fn encode(started: &Started) -> Self {
        StartedBody {
            session: hex::encode(started.session),
            apdu: hex::encode(&started.apdu),
        }
    }

    fn decode(&self) -> Result<Started, WireError> {
        Ok(Started {
            session: hex_array("session", &self.session)?,
            apdu: command("apdu", &self.apdu)?,
        })
    }
}

/// `POST /v1/sessions/{session}/next`: the chip's answer to the last command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextRequestBody {
    pub response: String,
}

impl Body for NextRequestBody {
    type Message = Vec<u8>;

    fn encode(response: &Vec<u8>) -> Self {
        NextRequestBody {
            response: hex::encode(response),
        }
    }

    fn decode(&self) -> Result<Vec<u8>, WireError> {
        hex_bytes("response", &self.response)
    }
}

/// Where the move stands, for the holder's screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    pub step: String,
    /// The service the step concerns (four hex digits) and its kind, both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl ProgressBody {
    fn encode(progress: &Progress) -> Self {
        ProgressBody {
            step: progress.step.to_string(),
            service: progress.service.map(|(code, _)| service_text(code)),
            kind: progress.service.map(|(_, kind)| kind.name().to_owned()),
        }
    }

    fn decode(&self) -> Result<Progress, WireError> {
        let service = match (&self.service, &self.kind) {
            (Some(service), Some(kind)) => Some((
                service_code("progress.service", service)?,
                service_kind("progress.kind", kind)?,
            )),
            (None, None) => None,
            _ => return Err(refuse("progress", "a service comes with its kind")),
        };
        Ok(Progress {
            step: self.step.clone().into(),
            service,
        })
    }
}

/// The answer to `POST /v1/sessions/{session}/next`: the next command with the progress
/// it makes, or the session's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apdu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<OutcomeBody>,
}

impl Body for NextBody {
    type Message = Next;

    fn encode(next: &Next) -> Self {
        match next {
            Next::Apdu { apdu, progress } => NextBody {
                apdu: Some(hex::encode(apdu)),
                progress: Some(ProgressBody::encode(progress)),
                finished: None,
            },
            Next::Finished(outcome) => NextBody {
                apdu: None,
                progress: None,
                finished: Some(OutcomeBody::encode(outcome)),
            },
        }
    }

    fn decode(&self) -> Result<Next, WireError> {
        match (&self.apdu, &self.progress, &self.finished) {
            (Some(apdu), Some(progress), None) => Ok(Next::Apdu {
                apdu: command("apdu", apdu)?,
                progress: progress.decode()?,
            }),
            (None, None, Some(outcome)) => Ok(Next::Finished(outcome.decode()?)),
            _ => Err(refuse(
                "next",
                "either an apdu with its progress, or finished",
            )),
        }
    }
}

/// One service of a move and its state there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStateBody {
    pub service: String,
    pub kind: String,
    pub state: String,
}

/// A move's state and its services': the end of a session, and `GET /v1/moves/{move_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    pub move_id: String,
    pub state: String,
    pub services: Vec<ServiceStateBody>,
}

impl Body for OutcomeBody {
    type Message = Outcome;

    fn encode(outcome: &Outcome) -> Self {
        OutcomeBody {
            move_id: hex::encode(outcome.move_id),
            state: outcome.state.clone(),
            services: outcome
                .services
                .iter()
                .map(|(service, kind, state)| ServiceStateBody {
                    service: service_text(*service),
                    kind: kind.name().to_owned(),
                    state: state.clone(),
                })
                .collect(),
        }
    }

    fn decode(&self) -> Result<Outcome, WireError> {
        let services = self
            .services
            .iter()
            .map(
                |entry| -> Result<(ServiceCode, ServiceKind, String), WireError> {
                    Ok((
                        service_code("services.service", &entry.service)?,
                        service_kind("services.kind", &entry.kind)?,
                        entry.state.clone(),
                    ))
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outcome {
            move_id: move_id("move_id", &self.move_id)?,
            state: self.state.clone(),
            services,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use valuecard_card::testing;

    use super::super::tests::round_trip;
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            user_id: "hanako".into(),
            password: "correct horse battery".into(),
        }
    }

    fn outcome() -> Outcome {
        Outcome {
            move_id: [0x5A; 16],
            state: "uploaded".into(),
            services: vec![
                (ServiceCode(0x0001), ServiceKind::Purse, "uploaded".into()),
                (ServiceCode(0x0102), ServiceKind::Tickets, "listed".into()),
            ],
        }
    }

    #[test]
    fn every_move_server_body_round_trips() {
        round_trip::<UserRequestBody>(credentials());
        round_trip::<UserCreatedBody>("hanako".to_owned());
        round_trip::<ChipRequestBody>(ChipRegistration {
            credentials: credentials(),
            card_id: testing::card_id(1),
        });
        round_trip::<ChipRegisteredBody>(ChipRegistered {
            user_id: "hanako".into(),
            card_id: testing::card_id(2),
        });
        for mode in MODES {
            round_trip::<SessionRequestBody>(SessionRequest {
                credentials: credentials(),
                mode,
            });
        }
        round_trip::<StartedBody>(Started {
            session: [3; 16],
            apdu: vec![0, 0xA4, 4, 0, 1, 0xF0],
        });
        round_trip::<NextRequestBody>(vec![0x6A, 0x82]);
        round_trip::<NextBody>(Next::Apdu {
            apdu: vec![0x80, 0xE2, 0, 0],
            progress: Progress {
                step: "S3: switching the old chip to temporary keys".into(),
                service: None,
            },
        });
        round_trip::<NextBody>(Next::Apdu {
            apdu: vec![0x80, 0xC0, 0, 0, 1, 2],
            progress: Progress {
                step: "S5-S7: uploading to the provider's transfer SAM".into(),
                service: Some((ServiceCode(0x0203), ServiceKind::Points)),
            },
        });
        round_trip::<NextBody>(Next::Finished(outcome()));
        round_trip::<OutcomeBody>(outcome());
        round_trip::<OutcomeBody>(Outcome {
            services: Vec::new(),
            ..outcome()
        });
    }

    #[test]
    fn the_next_step_is_an_apdu_or_the_end_never_both() {
        let apdu = NextBody::encode(&Next::Apdu {
            apdu: vec![0, 0x84, 0, 0],
            progress: Progress {
                step: "x".into(),
                service: None,
            },
        });
        let both = NextBody {
            finished: Some(OutcomeBody::encode(&outcome())),
            ..apdu.clone()
        };
        assert_eq!(both.decode().unwrap_err().field, "next");
        let neither = NextBody {
            apdu: None,
            progress: None,
            finished: None,
        };
        assert!(neither.decode().is_err());
        let half = ProgressBody {
            step: "x".into(),
            service: Some("0102".into()),
            kind: None,
        };
        assert!(NextBody {
            progress: Some(half),
            ..apdu
        }
        .decode()
        .is_err());
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let body = SessionRequestBody::encode(&SessionRequest {
            credentials: credentials(),
            mode: Mode::Upload,
        });
        for text in [
            format!("{body:?}"),
            format!("{:?}", credentials()),
            format!("{:?}", UserRequestBody::encode(&credentials())),
        ] {
            assert!(!text.contains("horse"), "{text}");
        }
    }

    #[test]
    fn an_unknown_mode_is_refused_by_name() {
        let mut body = SessionRequestBody::encode(&SessionRequest {
            credentials: credentials(),
            mode: Mode::Download,
        });
        body.mode = "sideways".into();
        assert_eq!(body.decode().unwrap_err().field, "mode");
    }
}

/// `POST /v1/chips/{card_id}/services`: a service the chip was issued (S2's reference
/// table), registered by its issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChipServiceBody {
    /// The service code, 4 hex digits.
    pub service: String,
}

impl Body for ChipServiceBody {
    type Message = valuecard_core::messages::services::ServiceCode;

    fn encode(service: &valuecard_core::messages::services::ServiceCode) -> Self {
        ChipServiceBody {
            service: service.to_string(),
        }
    }

    fn decode(&self) -> Result<valuecard_core::messages::services::ServiceCode, WireError> {
        let bytes: [u8; 2] = super::hex_array("service", &self.service)?;
        Ok(valuecard_core::messages::services::ServiceCode(
            u16::from_be_bytes(bytes),
        ))
    }
}

#[cfg(test)]
mod chip_service_tests {
    use super::*;
    use valuecard_core::messages::services::ServiceCode;

    #[test]
    fn a_chip_service_round_trips_and_a_bad_code_is_refused() {
        let code = ServiceCode(0x0102);
        let json = ChipServiceBody::to_json(&code);
        assert_eq!(ChipServiceBody::from_json(&json).unwrap(), code);
        let bad = ChipServiceBody {
            service: "12345".into(),
        };
        assert_eq!(bad.decode().unwrap_err().field, "service");
    }
}
