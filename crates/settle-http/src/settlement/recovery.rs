//! Resolving an update whose end is unknown (the card was pulled, the client or a service
//! died after the update was sealed): a new session with the same card asks it, under
//! KSES, whether it applied the update (GET COMPLETION). Its answer is final, because the
//! sealed update belongs to a session that has ended: applied (completed, with its
//! documents, exactly as a PCN would have) or never to apply (voided, and a charge's
//! approval is released). An update that never got as far as being sealed is voided at
//! once: the card holds nothing of it.
//!
//! Steps: `recover` (INITIALIZE UPDATE) → `recover/authenticate` (EXTERNAL AUTHENTICATE,
//! BRC) → `recover/query` (BI → GET COMPLETION) → `recover/resolve` (the card's status).
//! The recovery session is stored beside the update (`recovery` column).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use valuecard_center::sql::Executor;
use valuecard_core::messages::online::{InitializeUpdateResponse, SettlementId};
use valuecard_settle::security::Step;

use super::steps::{offered_parts, OfferedParts, SessionJson, StoredStep};
use super::{
    load_update, move_step, security_problem, settlement_id, Db, SettlementService, UpdateRow,
};
use crate::service::{hex_array, hex_field, json, parse, Answer, Problem, ProblemKind};
use crate::wire::{CardAnswerBody, SealedBody, StartedBody};

type Service = State<Arc<SettlementService>>;

/// The recovery session's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case", deny_unknown_fields)]
enum Recovery {
    Challenged { host_challenge: String },
    Authenticated { session: SessionJson },
    Queried { session: SessionJson },
}

impl Recovery {
    fn parse(text: Option<&str>) -> Result<Option<Self>, Problem> {
        text.map(|text| {
            serde_json::from_str(text).map_err(|error| {
                Problem::new(
                    ProblemKind::Internal,
                    format!("a stored recovery does not decode: {error}"),
                )
            })
        })
        .transpose()
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Stores the recovery's next state, if the recovery stood at `from`.
fn move_recovery(
    db: &mut Db,
    settlement_id: &SettlementId,
    from: Option<&Recovery>,
    to: &Recovery,
) -> Result<(), Problem> {
    let moved = match from {
        Some(from) => db.execute(
            "UPDATE settle_updates SET recovery = $3 WHERE settlement_id = $1 AND recovery = $2
                 AND step = 'offered'",
            &[
                settlement_id[..].into(),
                from.to_json().as_str().into(),
                to.to_json().as_str().into(),
            ],
        )?,
        None => db.execute(
            "UPDATE settle_updates SET recovery = $2 WHERE settlement_id = $1 AND step = 'offered'",
            &[settlement_id[..].into(), to.to_json().as_str().into()],
        )?,
    };
    if moved == 1 {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemKind::Conflict,
            "the recovery moved on meanwhile; begin it again",
        ))
    }
}

/// The offered update a recovery works on; an update never sealed is voided here.
fn offered_or_void(
    worker: &SettlementService,
    db: &mut Db,
    settlement_id: SettlementId,
) -> Result<Result<(super::UpdateRow, OfferedParts), bool>, Problem> {
    let row = load_update(db, &settlement_id)?;
    match &row.step {
        StoredStep::Challenged { .. } | StoredStep::Authenticated { .. } => {
            move_step(
                db,
                &settlement_id,
                &row.step,
                &StoredStep::Voided,
                worker.clock.today(),
            )?;
            Ok(Err(true))
        }
        StoredStep::Completed { .. } | StoredStep::Voided => Ok(Err(false)),
        StoredStep::Offered { .. } => {
            let parts = offered_parts(settlement_id, &row.step)?
                .ok_or_else(|| Problem::new(ProblemKind::Internal, "not offered"))?;
            Ok(Ok((row, parts)))
        }
    }
}

/// `POST /v1/updates/{id}/recover`: INITIALIZE UPDATE of a new session; an update already
/// ended (or never sealed, now voided) answers its outcome instead (200 with `outcome`).
pub(super) async fn begin(State(service): Service, Path(id): Path<String>) -> Answer {
    let settlement_id = settlement_id(&id)?;
    let worker = Arc::clone(&service);
    let begun = service
        .pool
        .run(
            move |db: &mut Db| -> Result<Result<StartedBody, bool>, Problem> {
                let (row, _) = match offered_or_void(&worker, db, settlement_id)? {
                    Ok(pair) => pair,
                    Err(voided_now) => return Ok(Err(voided_now)),
                };
                let (step, initialize) = worker.security.challenge(settlement_id, &mut OsRng);
                let Step::Challenged { host_challenge, .. } = step else {
                    return Err(Problem::new(ProblemKind::Internal, "no challenge"));
                };
                let from = Recovery::parse(row.recovery.as_deref())?;
                move_recovery(
                    db,
                    &settlement_id,
                    from.as_ref(),
                    &Recovery::Challenged {
                        host_challenge: hex::encode(host_challenge),
                    },
                )?;
                Ok(Ok(StartedBody {
                    settlement_id: hex::encode(settlement_id),
                    initialize_update: hex::encode(initialize.encode()),
                    authorization: row.authorization,
                }))
            },
        )
        .await?;
    match begun {
        Ok(started) => Ok(json(&started)),
        Err(voided_now) => {
            if voided_now {
                service.release_authorization(settlement_id).await;
            }
            Ok(json(&service.outcome(settlement_id).await?))
        }
    }
}

/// A later recovery step (`authenticate`, `query`): `work` runs on the offered update and
/// its stored recovery. An update found ended is refused; one never sealed is voided by
/// whichever step finds it first, and a charge voided just now gives its approval back, as
/// it would had `recover` voided it.
async fn recovery_step<T: serde::Serialize + Send + 'static>(
    service: Arc<SettlementService>,
    settlement_id: SettlementId,
    work: impl FnOnce(
            &SettlementService,
            &mut Db,
            &UpdateRow,
            &OfferedParts,
            Option<Recovery>,
        ) -> Result<T, Problem>
        + Send
        + 'static,
) -> Answer {
    let worker = Arc::clone(&service);
    let body = service
        .pool
        .run(move |db: &mut Db| -> Result<Result<T, bool>, Problem> {
            let (row, parts) = match offered_or_void(&worker, db, settlement_id)? {
                Ok(pair) => pair,
                Err(voided_now) => return Ok(Err(voided_now)),
            };
            let from = Recovery::parse(row.recovery.as_deref())?;
            work(&worker, db, &row, &parts, from).map(Ok)
        })
        .await?;
    match body {
        Ok(body) => Ok(json(&body)),
        Err(voided_now) => {
            if voided_now {
                service.release_authorization(settlement_id).await;
            }
            Err(Problem::new(ProblemKind::Conflict, "the update has ended"))
        }
    }
}

/// `POST /v1/updates/{id}/recover/authenticate`.
pub(super) async fn authenticate(
    State(service): Service,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let settlement_id = settlement_id(&id)?;
    let request: CardAnswerBody = parse(&body)?;
    let answer = InitializeUpdateResponse::decode(&hex_field("card_answer", &request.card_answer)?)
        .map_err(|error| Problem::bad_request(format!("card_answer: {error}")))?;
    recovery_step(service, settlement_id, move |worker, db, row, _, from| {
        let Some(Recovery::Challenged { host_challenge }) = &from else {
            return Err(Problem::new(
                ProblemKind::Conflict,
                "begin the recovery first",
            ));
        };
        let host_challenge = hex_array("host_challenge", host_challenge)?;
        let (session, body) =
            worker.authenticate_card(settlement_id, &host_challenge, row.card_id, &answer)?;
        move_recovery(
            db,
            &settlement_id,
            from.as_ref(),
            &Recovery::Authenticated { session },
        )?;
        Ok(body)
    })
    .await
}

/// `POST /v1/updates/{id}/recover/query`: the card's sealed BI; answers GET COMPLETION.
pub(super) async fn query(State(service): Service, Path(id): Path<String>, body: Bytes) -> Answer {
    let (settlement_id, sealed_info) = super::sealed_request(&id, &body)?;
    recovery_step(service, settlement_id, move |worker, db, _, parts, from| {
        let Some(Recovery::Authenticated { session }) = &from else {
            return Err(Problem::new(
                ProblemKind::Conflict,
                "authenticate the recovery first",
            ));
        };
        let (session, query) = worker
            .security
            .completion_query(&parts.offered, &session.decode()?, &sealed_info)
            .map_err(security_problem)?;
        move_recovery(
            db,
            &settlement_id,
            from.as_ref(),
            &Recovery::Queried {
                session: SessionJson::new(&session),
            },
        )?;
        Ok(SealedBody {
            sealed: hex::encode(query),
        })
    })
    .await
}

/// `POST /v1/updates/{id}/recover/resolve`: the card's sealed completion status; the
/// update ends completed or voided, and the outcome is answered.
pub(super) async fn resolve(
    State(service): Service,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let (settlement_id, sealed_status) = super::sealed_request(&id, &body)?;
    let worker = Arc::clone(&service);
    let voided = service
        .pool
        .run(move |db: &mut Db| -> Result<bool, Problem> {
            let (row, parts) = match offered_or_void(&worker, db, settlement_id)? {
                Ok(pair) => pair,
                Err(voided_now) => return Ok(voided_now),
            };
            let from = Recovery::parse(row.recovery.as_deref())?;
            let Some(Recovery::Queried { session }) = &from else {
                return Err(Problem::new(ProblemKind::Conflict, "query the card first"));
            };
            match worker
                .security
                .resolve(&parts.offered, &session.decode()?, &sealed_status)
                .map_err(security_problem)?
            {
                Step::Completed {
                    completion, item, ..
                } => {
                    worker.finish(db, &row, &completion, &item)?;
                    Ok(false)
                }
                Step::Voided { .. } => {
                    move_step(
                        db,
                        &settlement_id,
                        &row.step,
                        &StoredStep::Voided,
                        worker.clock.today(),
                    )?;
                    Ok(true)
                }
                _ => Err(Problem::new(ProblemKind::Internal, "not resolved")),
            }
        })
        .await?;
    if voided {
        service.release_authorization(settlement_id).await;
    }
    Ok(json(&service.outcome(settlement_id).await?))
}
