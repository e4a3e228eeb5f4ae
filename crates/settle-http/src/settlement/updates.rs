//! The application server's routes for an update, ST8-ST19 and Figs. 24-32: start (SIG1
//! checked, or the charge authorized), authenticate (ST11-ST12), offer (ST13-ST14 with SIG2,
//! ST109 sealed only, or a charge's SIG5), complete (ST18-ST19, ACN signed SIG3). Each step
//! is stored before it is answered; asked again, a step answers what it stored.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use rand_core::OsRng;
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{random_array, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::{Bill, InitializeUpdateResponse, SettlementId};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_settle::application::check_bill_with;
use valuecard_settle::security::Step;

use super::steps::{SessionJson, StoredStep};
use super::{
    load_update, move_step, security_problem, settlement_id, Db, SettlementService, UpdateRow,
};
use crate::authorizer::{Authorization, CreditCard};
use crate::service::{hex_array, hex_field, json, parse, Answer, Problem, ProblemKind};
use crate::wire::{
    AuthenticatedBody, CardAnswerBody, ChargeRequestBody, Embodiment, KeyInstallationBody,
    KeyRequestBody, PaymentRequestBody, StartedBody, UpdateStatusBody,
};

type Service = State<Arc<SettlementService>>;

/// `POST /v1/cards/key`: KC for the card whose certificate the center issued, sealed to it.
pub(super) async fn install_key(State(service): Service, body: Bytes) -> Answer {
    let request: KeyRequestBody = parse(&body)?;
    let certificate =
        Certificate::decode(&hex_field("card_certificate", &request.card_certificate)?)
            .map_err(|error| Problem::bad_request(format!("card_certificate: {error}")))?;
    let installation = service
        .security
        .install_key(
            &certificate,
            &service.anchor,
            service.clock.today(),
            &mut OsRng,
        )
        .map_err(super::security_problem)?;
    Ok(json(&KeyInstallationBody {
        key_version: installation.key_version,
        installation: hex::encode(installation.encode()),
    }))
}

fn card_id(text: &str) -> Result<CardId, Problem> {
    hex_array("card_id", text).map(CardId)
}

/// A new update's row, written with its first step.
struct NewUpdate {
    settlement_id: SettlementId,
    kind: TransactionKind,
    card_id: CardId,
    amount: Amount,
    embodiment: Embodiment,
    bill: Option<(Bill, Vec<u8>, Signature)>,
    authorization: Option<(String, String)>,
    step: StoredStep,
}

/// Stores a new update. Unresolved steps of the card that sealed no update yet
/// (challenged, authenticated) are voided first: the card holds nothing of them it could
/// apply. An offered one must be recovered first (409 naming it). Gives the charges it
/// voided, whose approvals the caller releases once this committed.
fn insert_update(
    db: &mut Db,
    update: &NewUpdate,
    today: u32,
) -> Result<Vec<SettlementId>, Problem> {
    db.transaction_if(|tx| {
        if let Some(row) = tx.query_optional(
            "SELECT settlement_id FROM settle_updates WHERE card_id = $1 AND step = 'offered'",
            &[update.card_id.as_bytes()[..].into()],
        )? {
            let open = hex::encode(row.bytes(0)?);
            return Ok(Some(Err(Problem {
                open_update: Some(open.clone()),
                ..Problem::new(
                    ProblemKind::Conflict,
                    format!(
                        "update {open} of this card is unresolved: recover it with the card first"
                    ),
                )
            })));
        }
        let voided_charges = tx
            .query(
                "SELECT settlement_id FROM settle_updates
                 WHERE card_id = $1 AND kind = 'charge' AND step IN ('challenged', 'authenticated')",
                &[update.card_id.as_bytes()[..].into()],
            )?
            .iter()
            .map(|row| row.bytes(0))
            .collect::<Result<Vec<_>, _>>()?;
        tx.execute(
            "UPDATE settle_updates SET step = 'voided', state = $2, updated_on = $3
             WHERE card_id = $1 AND step IN ('challenged', 'authenticated')",
            &[
                update.card_id.as_bytes()[..].into(),
                StoredStep::Voided.to_json().as_str().into(),
                today.into(),
            ],
        )?;
        let (store, order, bill, bill_signature) = match &update.bill {
            Some((bill, encoded, signature)) => (
                Some(bill.store.as_bytes().to_vec()),
                Some(bill.order_number as i64),
                Some(encoded.clone()),
                Some(signature.0.to_vec()),
            ),
            None => (None, None, None, None),
        };
        let optional_bytes =
            |value: Option<Vec<u8>>| value.map_or(valuecard_center::sql::Value::Null, Into::into);
        let optional_text = |value: Option<&String>| {
            value.map_or(valuecard_center::sql::Value::Null, |text| {
                text.as_str().into()
            })
        };
        let inserted = tx.execute(
            "INSERT INTO settle_updates (settlement_id, kind, card_id, amount, embodiment,
                 store_id, order_number, bill, bill_signature, authorization_code,
                 credit_card_last4, step, state, created_on, updated_on)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
             ON CONFLICT DO NOTHING",
            &[
                update.settlement_id[..].into(),
                kind_name(update.kind).into(),
                update.card_id.as_bytes()[..].into(),
                update.amount.into(),
                match update.embodiment {
                    Embodiment::Signed => "signed",
                    Embodiment::Sealed => "sealed",
                }
                .into(),
                optional_bytes(store),
                order.map_or(valuecard_center::sql::Value::Null, Into::into),
                optional_bytes(bill),
                optional_bytes(bill_signature),
                optional_text(update.authorization.as_ref().map(|(code, _)| code)),
                optional_text(update.authorization.as_ref().map(|(_, last4)| last4)),
                update.step.name().into(),
                update.step.to_json().as_str().into(),
                today.into(),
            ],
        )?;
        if inserted == 1 {
            Ok(Some(Ok(voided_charges
                .iter()
                .filter_map(|id| SettlementId::try_from(id.as_slice()).ok())
                .collect())))
        } else {
            // Roll back the voiding: nothing of this request stays.
            Ok(None)
        }
    })?
    .unwrap_or_else(|| {
        Err(Problem::new(
            ProblemKind::Conflict,
            "this order is paid or being paid, or the card has another update starting",
        ))
    })
}

pub(super) fn kind_name(kind: TransactionKind) -> &'static str {
    if kind == TransactionKind::OnlineCharge {
        "charge"
    } else {
        "payment"
    }
}

/// ST8-ST10: the bill with SIG1 (checked against the store's registered key) for the card
/// the client named; answers INITIALIZE UPDATE for the card.
pub(super) async fn start_payment(State(service): Service, body: Bytes) -> Answer {
    let request: PaymentRequestBody = parse(&body)?;
    let encoded = hex_field("bill", &request.bill)?;
    let signature = Signature(hex_array("bill_signature", &request.bill_signature)?);
    let card_id = card_id(&request.card_id)?;
    let store = Bill::decode(&encoded)
        .map_err(|error| Problem::bad_request(format!("bill: {error}")))?
        .store;
    let worker = Arc::clone(&service);
    let (started, voided_charges) = service
        .pool
        .run(move |db: &mut Db| -> Result<_, Problem> {
            let key = super::information::store_key(db, &store)?;
            let today = worker.clock.today();
            let bill = check_bill_with(&encoded, &signature, today, |_| key).map_err(|error| {
                let kind = match error {
                    valuecard_settle::application::DocumentError::ForgedBill => {
                        ProblemKind::SignatureFailure
                    }
                    valuecard_settle::application::DocumentError::ExpiredBill(_) => {
                        ProblemKind::Conflict
                    }
                    _ => ProblemKind::BadRequest,
                };
                Problem::new(kind, error.to_string())
            })?;
            let settlement_id: SettlementId = random_array(&mut OsRng);
            let (step, initialize) = worker.security.challenge(settlement_id, &mut OsRng);
            let Step::Challenged { host_challenge, .. } = step else {
                return Err(Problem::new(ProblemKind::Internal, "no challenge"));
            };
            let voided_charges = insert_update(
                db,
                &NewUpdate {
                    settlement_id,
                    kind: TransactionKind::OnlinePayment,
                    card_id,
                    amount: bill.total,
                    embodiment: request.embodiment,
                    bill: Some((bill, encoded, signature)),
                    authorization: None,
                    step: StoredStep::Challenged {
                        host_challenge: hex::encode(host_challenge),
                    },
                },
                today.0,
            )?;
            let started = StartedBody {
                settlement_id: hex::encode(settlement_id),
                initialize_update: hex::encode(initialize.encode()),
                authorization: None,
            };
            Ok((started, voided_charges))
        })
        .await?;
    service.release_authorizations(voided_charges).await;
    Ok(json(&started))
}

/// Figs. 25-28: the amount and the credit card; the authorizer approves before anything
/// goes to the card. Answers INITIALIZE UPDATE for the card.
pub(super) async fn start_charge(State(service): Service, body: Bytes) -> Answer {
    let request: ChargeRequestBody = parse(&body)?;
    let card_id = card_id(&request.card_id)?;
    let amount = Amount::new_positive(request.amount)
        .map_err(|error| Problem::bad_request(format!("amount: {error}")))?;
    let today = service.clock.today();
    let card = CreditCard::parse(
        &request.credit_card.number,
        &request.credit_card.expiry,
        &request.credit_card.holder_name,
        today,
    )
    .map_err(|error| Problem::bad_request(format!("credit card: {error}")))?;
    let settlement_id: SettlementId = random_array(&mut OsRng);
    let authorizer = Arc::clone(&service.authorizer);
    let approval = {
        let card = card.clone();
        tokio::task::spawn_blocking(move || authorizer.authorize(&card, amount, &settlement_id))
            .await
            .map_err(|_| Problem::new(ProblemKind::Internal, "the authorizer's call failed"))?
            .map_err(|error| Problem::new(ProblemKind::ServiceUnavailable, error.to_string()))?
    };
    let code = match approval {
        Authorization::Approved(code) => code,
        Authorization::Declined(reason) => {
            return Err(Problem::new(ProblemKind::Declined, reason));
        }
    };
    let (step, initialize) = service.security.challenge(settlement_id, &mut OsRng);
    let Step::Challenged { host_challenge, .. } = step else {
        return Err(Problem::new(ProblemKind::Internal, "no challenge"));
    };
    let update = NewUpdate {
        settlement_id,
        kind: TransactionKind::OnlineCharge,
        card_id,
        amount,
        embodiment: Embodiment::Signed,
        bill: None,
        authorization: Some((code.clone(), card.last_four().to_owned())),
        step: StoredStep::Challenged {
            host_challenge: hex::encode(host_challenge),
        },
    };
    let stored = service
        .pool
        .run(move |db: &mut Db| insert_update(db, &update, today.0))
        .await;
    match stored {
        Ok(voided_charges) => service.release_authorizations(voided_charges).await,
        Err(problem) => {
            // Nothing will reach the card: the approval is released at once.
            let authorizer = Arc::clone(&service.authorizer);
            let code = code.clone();
            let _ = tokio::task::spawn_blocking(move || authorizer.reverse(&code)).await;
            return Err(problem);
        }
    }
    Ok(json(&StartedBody {
        settlement_id: hex::encode(settlement_id),
        initialize_update: hex::encode(initialize.encode()),
        authorization: Some(code),
    }))
}

/// `GET /v1/updates/{id}`.
pub(super) async fn status(State(service): Service, Path(id): Path<String>) -> Answer {
    let settlement_id = settlement_id(&id)?;
    let row = service
        .pool
        .run(move |db: &mut Db| load_update(db, &settlement_id))
        .await?;
    Ok(json(&UpdateStatusBody {
        settlement_id: hex::encode(row.settlement_id),
        kind: kind_name(row.kind).into(),
        step: row.step.name().into(),
        amount: row.amount.minor(),
        card_id: hex::encode(row.card_id.as_bytes()),
    }))
}

/// ST11-ST12: the card's answer to INITIALIZE UPDATE; answers EXTERNAL AUTHENTICATE and the
/// sealed BRC. Asked again with the same answer, it answers the same bytes.
pub(super) async fn authenticate(
    State(service): Service,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let settlement_id = settlement_id(&id)?;
    let request: CardAnswerBody = parse(&body)?;
    let answer = InitializeUpdateResponse::decode(&hex_field("card_answer", &request.card_answer)?)
        .map_err(|error| Problem::bad_request(format!("card_answer: {error}")))?;
    let worker = Arc::clone(&service);
    let authenticated = service
        .pool
        .run(move |db: &mut Db| -> Result<AuthenticatedBody, Problem> {
            let row = load_update(db, &settlement_id)?;
            let host_challenge = match &row.step {
                StoredStep::Challenged { host_challenge } => {
                    hex_array("host_challenge", host_challenge)?
                }
                StoredStep::Authenticated { session } => session.decode()?.host_challenge,
                other => {
                    return Err(Problem::new(
                        ProblemKind::Conflict,
                        format!("the update is {}", other.name()),
                    ))
                }
            };
            let (session, body) =
                worker.authenticate_card(settlement_id, &host_challenge, row.card_id, &answer)?;
            let next = StoredStep::Authenticated { session };
            if row.step != next {
                move_step(db, &settlement_id, &row.step, &next, worker.clock.today())?;
            }
            Ok(body)
        })
        .await?;
    Ok(json(&authenticated))
}

impl SettlementService {
    /// ST11-ST12 for an update or its recovery: the card's cryptogram checked, EXTERNAL
    /// AUTHENTICATE and the sealed BRC made; gives the session to store and the answer.
    pub(super) fn authenticate_card(
        &self,
        settlement_id: SettlementId,
        host_challenge: &valuecard_core::messages::purse::Challenge,
        card_id: CardId,
        answer: &InitializeUpdateResponse,
    ) -> Result<(SessionJson, AuthenticatedBody), Problem> {
        let (step, external, brc) = self
            .security
            .authenticate(settlement_id, host_challenge, card_id, answer)
            .map_err(security_problem)?;
        let Step::Authenticated { session, .. } = step else {
            return Err(Problem::new(ProblemKind::Internal, "not authenticated"));
        };
        Ok((
            SessionJson::new(&session),
            AuthenticatedBody {
                external_authenticate: hex::encode(external.encode()),
                balance_request: hex::encode(brc),
                log_token: self.log_token(&card_id),
            },
        ))
    }
}

impl SettlementService {
    /// Gives back the approvals of charges a new update of their card voided.
    pub(super) async fn release_authorizations(&self, voided_charges: Vec<SettlementId>) {
        for settlement_id in voided_charges {
            self.release_authorization(settlement_id).await;
        }
    }

    /// Gives back a voided charge's approval to the authorizer.
    pub(super) async fn release_authorization(&self, settlement_id: SettlementId) {
        let row = self
            .pool
            .run(move |db: &mut Db| load_update(db, &settlement_id))
            .await;
        if let Ok(UpdateRow {
            authorization: Some(code),
            kind: TransactionKind::OnlineCharge,
            ..
        }) = row
        {
            let authorizer = Arc::clone(&self.authorizer);
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = authorizer.reverse(&code) {
                    tracing::warn!(%error, "a voided charge's approval could not be released");
                }
            })
            .await;
        }
    }
}

/// The party column's reading for the log.
pub(super) fn party_name(party: &[u8]) -> String {
    <[u8; 8]>::try_from(party)
        .map(|id| DeviceId(id).to_string())
        .unwrap_or_default()
}
