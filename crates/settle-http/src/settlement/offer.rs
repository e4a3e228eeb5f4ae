//! ST13-ST14 at the application and security servers: the card's BI opened, the update
//! sealed for the card with the security server's record (its number drawn in the same
//! transaction that stores the offer), signed SIG2 (a payment, signed embodiment), SIG5 (a
//! charge) or not at all (sealed embodiment); an update the card cannot take is voided.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use valuecard_center::sql::{Dialect, Executor};
use valuecard_core::crypto::Signature;
use valuecard_core::messages::online::Bill;
use valuecard_core::messages::purse::TransactionKind;
use valuecard_settle::security::UpdateRequest;

use super::steps::{offered_parts, StoredStep};
use super::{load_update, move_step, security_problem, Db, SettlementService, UpdateRow};
use crate::service::{json, Answer, Problem, ProblemKind};
use crate::wire::{Embodiment, OfferBody};

type Service = State<Arc<SettlementService>>;

/// The next number of the security server's records.
fn next_writer_sequence(db: &mut dyn Executor) -> Result<u32, Problem> {
    let next = match db.dialect() {
        Dialect::Postgres => db.query_one("SELECT nextval('settle_writer_sequence')", &[])?,
        Dialect::Sqlite => db.query_one(
            "UPDATE settle_writer_sequence SET next = next + 1 WHERE id = 1 RETURNING next - 1",
            &[],
        )?,
    }
    .int(0)?;
    u32::try_from(next).map_err(|_| {
        Problem::new(
            ProblemKind::Internal,
            "the security server's record numbers are used up",
        )
    })
}

/// ST13-ST14: the card's sealed BI; answers the sealed update, with BI and SIG2 (signed
/// embodiment), without them (sealed embodiment), or with SIG5 (a charge). An update the
/// card cannot take (insufficient balance, past the largest balance) is voided: nothing
/// was sealed that could apply.
pub(super) async fn offer(State(service): Service, Path(id): Path<String>, body: Bytes) -> Answer {
    let (settlement_id, sealed_info) = super::sealed_request(&id, &body)?;
    let worker = Arc::clone(&service);
    let offering = service
        .pool
        .run(move |db: &mut Db| -> Result<Offering, Problem> {
            let row = load_update(db, &settlement_id)?;
            if let Some(parts) = offered_parts(settlement_id, &row.step)? {
                return Ok(Offering::Sealed(worker.offer_body(
                    &row,
                    &parts.offered.info,
                    &parts.sealed_update,
                    parts.signature,
                )));
            }
            let StoredStep::Authenticated { session } = &row.step else {
                return Err(Problem::new(
                    ProblemKind::Conflict,
                    format!("the update is {}", row.step.name()),
                ));
            };
            let session = session.decode()?;
            let today = worker.clock.today();
            let party = match (&row.bill, row.kind) {
                (Some(bill), TransactionKind::OnlinePayment) => {
                    let bill = Bill::decode(bill).map_err(|e| super::corrupt(&e.to_string()))?;
                    bill.member_store.unwrap_or(bill.store)
                }
                _ => worker.security_server_id(),
            };
            // The record's number and the offered step in one transaction: one durable
            // commit, and no number taken by an offer that was not stored.
            let mut answer = None;
            db.transaction_if(|tx| {
                let step = (|| -> Result<Offering, Problem> {
                    let sequence = next_writer_sequence(tx)?;
                    let offered = worker.security.offer(
                        settlement_id,
                        &session,
                        &sealed_info,
                        &UpdateRequest {
                            kind: row.kind,
                            amount: row.amount,
                            party,
                            date: today,
                        },
                        sequence,
                    );
                    let (offered, sealed) = match offered {
                        Ok(pair) => pair,
                        Err(error) => {
                            let problem = security_problem(error);
                            if matches!(
                                problem.kind,
                                ProblemKind::InsufficientBalance | ProblemKind::OverLimit
                            ) {
                                move_step(
                                    tx,
                                    &settlement_id,
                                    &row.step,
                                    &StoredStep::Voided,
                                    today,
                                )?;
                                return Ok(Offering::Voided(problem));
                            }
                            return Err(problem);
                        }
                    };
                    let signature = worker.sign_offer(&row, &offered.info, &sealed)?;
                    let next = StoredStep::offered(&offered, &sealed, signature.as_ref());
                    move_step(tx, &settlement_id, &row.step, &next, today)?;
                    Ok(Offering::Sealed(worker.offer_body(
                        &row,
                        &offered.info,
                        &sealed,
                        signature.map(|signature| hex::encode(signature.0)),
                    )))
                })();
                let commit = step.is_ok();
                answer = Some(step);
                Ok(commit.then_some(()))
            })?;
            answer.unwrap_or_else(|| Err(Problem::new(ProblemKind::Internal, "no offer")))
        })
        .await?;
    match offering {
        Offering::Sealed(offer) => Ok(json(&offer)),
        Offering::Voided(problem) => {
            service.release_authorization(settlement_id).await;
            Err(problem)
        }
    }
}

/// How an offer ended: sealed for the card, or voided because the card cannot take it.
enum Offering {
    Sealed(OfferBody),
    Voided(Problem),
}

impl SettlementService {
    /// SIG2 over BI, the bill and the sealed SPC (signed embodiment), SIG5 over a charge's
    /// sealed update, or nothing (sealed embodiment).
    fn sign_offer(
        &self,
        row: &UpdateRow,
        info: &valuecard_core::messages::online::BalanceInfo,
        sealed: &[u8],
    ) -> Result<Option<Signature>, Problem> {
        match (row.kind, row.embodiment) {
            (TransactionKind::OnlineCharge, _) => Ok(Some(self.application.sign_charge(
                &row.settlement_id,
                &row.card_id,
                row.amount,
                row.authorization.as_deref().unwrap_or_default(),
                sealed,
            ))),
            (_, Embodiment::Signed) => {
                let bill = Bill::decode(row.bill.as_deref().unwrap_or_default())
                    .map_err(|e| super::corrupt(&e.to_string()))?;
                Ok(Some(self.application.sign_offer(
                    &row.settlement_id,
                    &bill,
                    info,
                    sealed,
                )))
            }
            (_, Embodiment::Sealed) => Ok(None),
        }
    }

    fn offer_body(
        &self,
        row: &UpdateRow,
        info: &valuecard_core::messages::online::BalanceInfo,
        sealed: &[u8],
        signature: Option<String>,
    ) -> OfferBody {
        let shows_info =
            row.kind == TransactionKind::OnlineCharge || row.embodiment == Embodiment::Signed;
        OfferBody {
            update: hex::encode(sealed),
            balance_info: shows_info.then(|| hex::encode(info.encode())),
            signature,
            authorization: row.authorization.clone(),
        }
    }
}
