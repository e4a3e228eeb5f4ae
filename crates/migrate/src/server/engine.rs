//! The move as a conversation of APDUs between the server and one chip, every step stored
//! before the next command is given.
//!
//! A device session starts with the user's ID and password and a mode (upload from the old
//! chip, download into the new one, or roll back). The server reads the chip (SELECT of the
//! purse for its card ID and certificate, SELECT of the services application for its areas)
//! and then takes the move wherever it stands:
//!
//! ```text
//! upload:   registered --S3 lock--> locked --S5-S7 per service--> uploaded
//! download: uploaded --S10 format per service--> formatted --S12-S14 per service-->
//!           downloaded --S16 activate--> activated --S17 clear--> done
//! rollback: registered | locked | uploaded --discard copies, restore main keys--> rolled_back
//! ```
//!
//! Every card command of a step can be sent again: a switch or a format to the state the
//! chip already has changes nothing, an export for the same move answers the same content,
//! an import already applied answers its receipt. So a session cut anywhere (the device, the
//! server or a provider gone, a chip pulled, an answer lost) is resumed by starting a new
//! session, which redoes only the step that was not recorded.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rand_core::CryptoRngCore;
use valuecard_center::sql::{Database, Executor};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::{SelectResponse, CLA_ISO, PURSE_AID};
use valuecard_core::messages::services::{
    ins, AreaFormat, KeyChange, KeyState, MoveId, ServiceCode, ServiceKind, ServicesFci,
    CLA_SERVICES, SERVICES_AID,
};
use valuecard_core::StatusWord;

use super::accounts::{authenticate, chip_owner};
use super::link::{LinkError, ProviderLink};
use super::moves::{
    attach_destination, find_move_state, insert_move, live_move_of_source, move_state, services,
    set_move_state, set_service_state, MoveService,
};
use super::sessions::{load_session, pending_text, store_session, Act, Pending, Session};
use super::MoveError;
use crate::now;
use crate::provider::Exchange;
use crate::sam::AdminSam;

/// What a device session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// S1-S8 with the old chip.
    Upload,
    /// S9-S17 with the new chip.
    Download,
    /// Give the old chip its services back (before any download began).
    Rollback,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Upload => "upload",
            Mode::Download => "download",
            Mode::Rollback => "rollback",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, MoveError> {
        match text {
            "upload" => Ok(Mode::Upload),
            "download" => Ok(Mode::Download),
            "rollback" => Ok(Mode::Rollback),
            _ => Err(MoveError::Invalid(
                "a stored session mode is unknown".into(),
            )),
        }
    }
}

/// A device session's identifier.
pub type SessionId = [u8; 16];

/// The first command of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub session: SessionId,
    pub apdu: Vec<u8>,
}

/// What the device does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this command to the chip and bring back its answer.
    Apdu { apdu: Vec<u8>, progress: Progress },
    /// Nothing more to do with this chip now.
    Finished(Outcome),
}

/// Where the move stands, for the holder's screen: the step, and the service it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub step: Cow<'static, str>,
    pub service: Option<(ServiceCode, ServiceKind)>,
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub move_id: MoveId,
    /// The move's state (`uploaded`, `done`, `rolled_back`, ...).
    pub state: String,
    /// Each service and its state in the move.
    pub services: Vec<(ServiceCode, ServiceKind, String)>,
}

/// The value move server's logic over its database.
pub struct MoveServer {
    admin: Arc<dyn AdminSam>,
    providers: BTreeMap<ServiceCode, Arc<dyn ProviderLink>>,
}

impl core::fmt::Debug for MoveServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveServer")
            .field("services", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn select(aid: &[u8]) -> Vec<u8> {
    Command::new(CLA_ISO, 0xA4, 0x04, 0x00)
        .with_data(aid.to_vec())
        .with_le(256)
        .encode()
}

fn get_challenge() -> Vec<u8> {
    Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0)
        .with_le(16)
        .encode()
}

fn admin_command(instruction: u8, data: Vec<u8>) -> Vec<u8> {
    Command::new(CLA_SERVICES, instruction, 0, 0)
        .with_data(data)
        .encode()
}

fn success(response: &Response) -> Result<(), MoveError> {
    if response.sw.is_success() {
        Ok(())
    } else {
        Err(MoveError::Card(response.sw))
    }
}

fn step_name(act: Act) -> &'static str {
    match act {
        Act::Lock => "S3: switching the old chip to temporary keys",
        Act::Format(_) => "S10: formatting the new chip's area",
        Act::Activate => "S16: switching the new chip to main keys",
        Act::Restore => "rollback: switching the old chip back to main keys",
    }
}

impl MoveServer {
    pub fn new(admin: Arc<dyn AdminSam>, providers: Vec<Arc<dyn ProviderLink>>) -> Self {
        MoveServer {
            admin,
            providers: providers
                .into_iter()
                .map(|link| (link.format().service, link))
                .collect(),
        }
    }

    fn link(&self, service: ServiceCode) -> Result<&Arc<dyn ProviderLink>, MoveError> {
        self.providers
            .get(&service)
            .ok_or(MoveError::UnknownService(service))
    }

    /// S1 / S9: a session for the user, its first command (SELECT of the purse).
    pub fn start(
        &self,
        db: &mut Database,
        user_id: &str,
        password: &str,
        mode: Mode,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Started, MoveError> {
        let user = authenticate(db, user_id, password)?;
        let session: SessionId = random_array(rng);
        db.execute(
            "INSERT INTO migrate_sessions (session_id, user_id, mode, pending, updated_on) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                session.to_vec().into(),
                user.0.as_str().into(),
                mode.name().into(),
                pending_text(Pending::SelectPurse)?,
                now().into(),
            ],
        )?;
        Ok(Started {
            session,
            apdu: select(&PURSE_AID),
        })
    }

    /// The chip's answer to the last command; the next command, or the end.
    pub fn next(
        &self,
        db: &mut Database,
        session_id: &SessionId,
        response: &[u8],
    ) -> Result<Next, MoveError> {
        let mut session = load_session(db, session_id)?;
        let response = Response::parse(response)
            .map_err(|_| MoveError::Answer("not an APDU answer".into()))?;
        match session.pending {
            Pending::SelectPurse => {
                // A purse on temporary keys answers with the warning 6283, its data intact.
                if !response.sw.is_success() && response.sw != StatusWord::FILE_DEACTIVATED {
                    return Err(MoveError::Card(response.sw));
                }
                let selected = SelectResponse::decode(&response.data)
                    .map_err(|_| MoveError::Answer("the purse's SELECT answer".into()))?;
                let (Some(card), Some(certificate)) = (selected.card_id, selected.certificate)
                else {
                    return Err(MoveError::Answer("the chip is not an issued card".into()));
                };
                if certificate.subject().0 != card.0 {
                    return Err(MoveError::Answer(
                        "the chip's certificate is another card's".into(),
                    ));
                }
                session.card = Some((card, certificate));
                self.send(
                    db,
                    &mut session,
                    Pending::SelectServices,
                    select(&SERVICES_AID),
                    "S2: reading the chip's services",
                    None,
                )
            }
            Pending::SelectServices => {
                success(&response)?;
                let fci = ServicesFci::decode(&response.data).map_err(|_| {
                    MoveError::Answer("the services application's SELECT answer".into())
                })?;
                let (card, _) = session.card.clone().ok_or(MoveError::NoSession)?;
                if fci.card_id != card {
                    return Err(MoveError::Answer(
                        "the services application is another card's".into(),
                    ));
                }
                self.attach(db, &mut session, &fci)?;
                self.advance(db, &mut session)
            }
            Pending::Challenge { act } => {
                success(&response)?;
                let challenge: [u8; 16] = response
                    .data
                    .as_slice()
                    .try_into()
                    .map_err(|_| MoveError::Answer("GET CHALLENGE answer".into()))?;
                let apdu = self.admin_apdu(db, &session, act, &challenge)?;
                let service = self.act_service(db, &session, act)?;
                self.send(
                    db,
                    &mut session,
                    Pending::Admin { act },
                    apdu,
                    step_name(act),
                    service,
                )
            }
            Pending::Admin { act } => {
                success(&response)?;
                self.record(db, &session, act)?;
                self.advance(db, &mut session)
            }
            Pending::Provider { service } => {
                let service = ServiceCode(service);
                let exchange = self.provider_step(&session, service, Some(&response.encode()));
                self.after_provider(db, &mut session, service, exchange)
            }
            Pending::Finished => Err(MoveError::NoSession),
        }
    }

    fn send(
        &self,
        db: &mut Database,
        session: &mut Session,
        pending: Pending,
        apdu: Vec<u8>,
        step: &'static str,
        service: Option<(ServiceCode, ServiceKind)>,
    ) -> Result<Next, MoveError> {
        session.pending = pending;
        store_session(db, session)?;
        Ok(Next::Apdu {
            apdu,
            progress: Progress {
                step: step.into(),
                service,
            },
        })
    }

    fn act_service(
        &self,
        db: &mut Database,
        session: &Session,
        act: Act,
    ) -> Result<Option<(ServiceCode, ServiceKind)>, MoveError> {
        let Act::Format(code) = act else {
            return Ok(None);
        };
        let move_id = session.move_id.ok_or(MoveError::NoSession)?;
        Ok(services(db, &move_id)?
            .into_iter()
            .find(|s| s.service.0 == code)
            .map(|s| (s.service, s.kind)))
    }

    /// Finds or makes the move this chip belongs to, by mode.
    fn attach(
        &self,
        db: &mut Database,
        session: &mut Session,
        fci: &ServicesFci,
    ) -> Result<(), MoveError> {
        let (card, certificate) = session.card.clone().ok_or(MoveError::NoSession)?;
        let owner = chip_owner(db, &card)?.ok_or(MoveError::UnknownChip)?;
        if owner != session.user {
            return Err(MoveError::NotYourChip);
        }
        let move_id = match session.mode {
            Mode::Upload => self.attach_source(db, session, &card, &certificate, fci)?,
            Mode::Download => attach_destination(db, &session.user, &card)?,
            Mode::Rollback => {
                let (move_id, state) =
                    live_move_of_source(db, &card)?.ok_or(MoveError::NothingToRollBack)?;
                if !matches!(state.as_str(), "registered" | "locked" | "uploaded") {
                    return Err(MoveError::TooLateToRollBack);
                }
                move_id
            }
        };
        session.move_id = Some(move_id);
        store_session(db, session)?;
        Ok(())
    }

    /// S2: the old chip's move, or a new one with every service the chip shows.
    fn attach_source(
        &self,
        db: &mut Database,
        session: &Session,
        card: &CardId,
        certificate: &Certificate,
        fci: &ServicesFci,
    ) -> Result<MoveId, MoveError> {
        if let Some((move_id, state)) = live_move_of_source(db, card)? {
            return if state == "done" {
                Err(MoveError::AlreadyMoved)
            } else {
                Ok(move_id)
            };
        }
        if fci.areas.is_empty() {
            return Err(MoveError::Invalid(
                "this chip holds no services to move".into(),
            ));
        }
        // S2 by serial number: where the issuers registered the chip's services, the chip
        // must show exactly those; a chip that hides one (or shows one nobody issued) is
        // not moved.
        let registered = super::accounts::chip_services(db, card)?;
        if !registered.is_empty() {
            let shown: Vec<ServiceCode> = fci.areas.iter().map(|area| area.service).collect();
            if let Some(missing) = registered.iter().find(|s| !shown.contains(s)) {
                return Err(MoveError::Invalid(
                    format!(
                        "the chip does not show service {missing}, registered for its serial number"
                    )
                    .into(),
                ));
            }
            if let Some(extra) = shown.iter().find(|s| !registered.contains(s)) {
                return Err(MoveError::Invalid(
                    format!("the chip shows service {extra}, not registered for its serial number")
                        .into(),
                ));
            }
        }
        if fci
            .areas
            .iter()
            .any(|area| area.key_state != KeyState::Main)
        {
            // Temporary keys without a live move: the chip was moved or is being moved
            // by a move this server does not hold.
            return Err(MoveError::AlreadyMoved);
        }
        let mut formats: Vec<AreaFormat> = Vec::with_capacity(fci.areas.len());
        for area in &fci.areas {
            let format = self.link(area.service)?.format();
            if format.kind != area.kind
                || format.provider != area.provider
                || format.mover != area.mover
            {
                return Err(MoveError::UnknownService(area.service));
            }
            formats.push(format);
        }
        let move_id: MoveId = random_array(&mut rand_core::OsRng);
        let inserted = insert_move(db, &move_id, &session.user, card, certificate, &formats)?;
        if inserted {
            Ok(move_id)
        } else {
            Err(MoveError::Invalid(
                "another move of this user is in progress: finish or roll it back first".into(),
            ))
        }
    }

    /// What to do next, from the move's stored state.
    fn advance(&self, db: &mut Database, session: &mut Session) -> Result<Next, MoveError> {
        let move_id = session.move_id.ok_or(MoveError::NoSession)?;
        loop {
            let state = move_state(db, &move_id)?;
            let services = services(db, &move_id)?;
            let first = |wanted: &str| services.iter().find(|s| s.state == wanted).cloned();
            match (session.mode, state.as_str()) {
                (Mode::Upload, "registered") => return self.challenge(db, session, Act::Lock),
                (Mode::Upload, "locked") => match first("listed") {
                    Some(service) => return self.begin_provider(db, session, &service),
                    None => set_move_state(db, &move_id, "locked", "uploaded")?,
                },
                (Mode::Download, "uploaded") => match first("uploaded") {
                    Some(service) => {
                        return self.challenge(db, session, Act::Format(service.service.0))
                    }
                    None => set_move_state(db, &move_id, "uploaded", "formatted")?,
                },
                (Mode::Download, "formatted") => match first("formatted") {
                    Some(service) => return self.begin_provider(db, session, &service),
                    None => set_move_state(db, &move_id, "formatted", "downloaded")?,
                },
                (Mode::Download, "downloaded") => {
                    return self.challenge(db, session, Act::Activate)
                }
                (Mode::Download, "activated") => {
                    // S17: the providers' copies cleared.
                    for service in services.iter().filter(|s| s.state == "downloaded") {
                        self.link(service.service)?
                            .clear(&move_id)
                            .map_err(|error| provider_error(service.service, error))?;
                        set_service_state(db, &move_id, service.service, "downloaded", "cleared")?;
                    }
                    set_move_state(db, &move_id, "activated", "done")?;
                }
                (Mode::Rollback, "registered" | "locked" | "uploaded") => {
                    for service in services
                        .iter()
                        .filter(|s| matches!(s.state.as_str(), "listed" | "uploaded" | "formatted"))
                    {
                        self.link(service.service)?
                            .discard(&move_id)
                            .map_err(|error| provider_error(service.service, error))?;
                        set_service_state(
                            db,
                            &move_id,
                            service.service,
                            &service.state,
                            "discarded",
                        )?;
                    }
                    // Even a move recorded as `registered` may have switched the chip (the
                    // answer to S3 lost): the chip is always restored, which changes nothing
                    // on a chip that was never switched.
                    return self.challenge(db, session, Act::Restore);
                }
                _ => return self.finish(db, session, &move_id),
            }
        }
    }

    fn finish(
        &self,
        db: &mut Database,
        session: &mut Session,
        move_id: &MoveId,
    ) -> Result<Next, MoveError> {
        session.pending = Pending::Finished;
        store_session(db, session)?;
        let state = move_state(db, move_id)?;
        if session.mode == Mode::Download && !matches!(state.as_str(), "done") {
            return Err(MoveError::NothingToDownload);
        }
        Ok(Next::Finished(Outcome {
            move_id: *move_id,
            state,
            services: services(db, move_id)?
                .into_iter()
                .map(|s| (s.service, s.kind, s.state))
                .collect(),
        }))
    }

    fn challenge(
        &self,
        db: &mut Database,
        session: &mut Session,
        act: Act,
    ) -> Result<Next, MoveError> {
        let service = self.act_service(db, session, act)?;
        self.send(
            db,
            session,
            Pending::Challenge { act },
            get_challenge(),
            step_name(act),
            service,
        )
    }

    /// The administrative SAM's command for `act` over the chip's challenge.
    fn admin_apdu(
        &self,
        db: &mut Database,
        session: &Session,
        act: Act,
        challenge: &[u8; 16],
    ) -> Result<Vec<u8>, MoveError> {
        let (card, certificate) = session.card.clone().ok_or(MoveError::NoSession)?;
        let move_id = session.move_id.ok_or(MoveError::NoSession)?;
        let services = services(db, &move_id)?;
        let all = |state: KeyState| -> Vec<KeyChange> {
            services
                .iter()
                .map(|s| KeyChange {
                    service: s.service,
                    key_state: state,
                })
                .collect()
        };
        let sam = |error: crate::sam::SamError| MoveError::Sam(error.to_string());
        match act {
            Act::Lock | Act::Restore | Act::Activate => {
                let state = if act == Act::Lock {
                    KeyState::Temporary
                } else {
                    KeyState::Main
                };
                let switch = self
                    .admin
                    .switch_keys(&card, challenge, move_id, all(state))
                    .map_err(sam)?;
                Ok(admin_command(ins::SWITCH_KEYS, switch.encode()))
            }
            Act::Format(code) => {
                let service = ServiceCode(code);
                let link = self.link(service)?;
                let (main, temporary) = link
                    .key_packages(&certificate)
                    .map_err(|error| provider_error(service, error))?;
                let format = self
                    .admin
                    .format_area(
                        &card,
                        challenge,
                        link.format(),
                        KeyState::Temporary,
                        main,
                        temporary,
                    )
                    .map_err(sam)?;
                Ok(admin_command(ins::FORMAT_AREA, format.encode()))
            }
        }
    }

    /// Records what the chip confirmed.
    fn record(&self, db: &mut Database, session: &Session, act: Act) -> Result<(), MoveError> {
        let move_id = session.move_id.ok_or(MoveError::NoSession)?;
        match act {
            Act::Lock => set_move_state(db, &move_id, "registered", "locked"),
            Act::Format(code) => {
                set_service_state(db, &move_id, ServiceCode(code), "uploaded", "formatted")
            }
            Act::Activate => set_move_state(db, &move_id, "downloaded", "activated"),
            Act::Restore => {
                let state = move_state(db, &move_id)?;
                set_move_state(db, &move_id, &state, "rolled_back")
            }
        }
    }

    fn begin_provider(
        &self,
        db: &mut Database,
        session: &mut Session,
        service: &MoveService,
    ) -> Result<Next, MoveError> {
        let exchange = self.provider_step(session, service.service, None);
        self.after_provider(db, session, service.service, exchange)
    }

    fn provider_step(
        &self,
        session: &Session,
        service: ServiceCode,
        response: Option<&[u8]>,
    ) -> Result<Exchange, MoveError> {
        let (card, certificate) = session.card.as_ref().ok_or(MoveError::NoSession)?;
        let move_id = session.move_id.ok_or(MoveError::NoSession)?;
        let link = self.link(service)?;
        let exchange = match session.mode {
            Mode::Upload => link.upload(&move_id, card, certificate, response),
            _ => link.download(&move_id, card, response),
        };
        exchange.map_err(|error| provider_error(service, error))
    }

    fn after_provider(
        &self,
        db: &mut Database,
        session: &mut Session,
        service: ServiceCode,
        exchange: Result<Exchange, MoveError>,
    ) -> Result<Next, MoveError> {
        let move_id = session.move_id.ok_or(MoveError::NoSession)?;
        let kind = services(db, &move_id)?
            .into_iter()
            .find(|s| s.service == service)
            .map(|s| s.kind);
        match exchange? {
            Exchange::Apdu(apdu) => {
                let step = if session.mode == Mode::Upload {
                    "S5-S7: uploading to the provider's transfer SAM"
                } else {
                    "S12-S14: downloading from the provider's transfer SAM"
                };
                self.send(
                    db,
                    session,
                    Pending::Provider { service: service.0 },
                    apdu,
                    step,
                    kind.map(|kind| (service, kind)),
                )
            }
            Exchange::Done => {
                let (from, to) = if session.mode == Mode::Upload {
                    ("listed", "uploaded")
                } else {
                    ("formatted", "downloaded")
                };
                set_service_state(db, &move_id, service, from, to)?;
                self.advance(db, session)
            }
        }
    }

    /// The move's state and its services' (for a status screen and tests).
    pub fn status(&self, db: &mut Database, move_id: &MoveId) -> Result<Outcome, MoveError> {
        Ok(Outcome {
            move_id: *move_id,
            state: find_move_state(db, move_id)?.ok_or(MoveError::UnknownMove)?,
            services: services(db, move_id)?
                .into_iter()
                .map(|s| (s.service, s.kind, s.state))
                .collect(),
        })
    }
}

fn provider_error(service: ServiceCode, error: LinkError) -> MoveError {
    match error {
        LinkError::Refused(reason) => MoveError::ProviderRefused { service, reason },
        LinkError::Down(reason) => MoveError::ProviderDown { service, reason },
    }
}
