//! The end of an update: the completion stored with the card's log and the center's
//! outbox in one transaction (ST19 and the charge's end), the payment's ACN signed SIG3,
//! the store's receipt SIG4 fetched and kept, and the outcome the client is answered.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use valuecard_center::sql::Executor;
use valuecard_core::messages::online::{
    Bill, Completion, OnlineItem, SettlementCompletion, SettlementId,
};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_settle::security::Step;

use super::steps::{completed_parts, offered_parts, StoredStep};
use super::updates::kind_name;
use super::{load_update, security_problem, Db, SettlementService, UpdateRow};
use crate::service::{json, Answer, Problem, ProblemKind};
use crate::wire::{OutcomeBody, UpdateOutcome};

type Service = State<Arc<SettlementService>>;

impl SettlementService {
    /// ST19 and the charge's end: stores the completion (step, card log, the center's
    /// outbox) in one transaction, signs a payment's ACN SIG3; gives the update as now
    /// stored.
    pub(super) fn finish(
        &self,
        db: &mut Db,
        row: &UpdateRow,
        completion: &Completion,
        item: &OnlineItem,
    ) -> Result<UpdateRow, Problem> {
        let today = self.clock.today();
        let acn = match row.kind {
            TransactionKind::OnlinePayment => {
                let bill = Bill::decode(row.bill.as_deref().unwrap_or_default())
                    .map_err(|e| super::corrupt(&e.to_string()))?;
                Some(self.application.complete(
                    row.settlement_id,
                    &bill,
                    row.card_id,
                    completion,
                    today,
                ))
            }
            _ => None,
        };
        let next = StoredStep::completed(completion, item);
        let party = match &row.bill {
            Some(bill) => Bill::decode(bill)
                .map(|bill| bill.member_store.unwrap_or(bill.store))
                .map_err(|e| super::corrupt(&e.to_string()))?,
            None => self.security_server_id(),
        };
        let moved = db.transaction(|tx| {
            let moved = tx.execute(
                "UPDATE settle_updates SET step = 'completed', state = $3, recovery = NULL,
                     completion = $4, completion_signature = $5, updated_on = $6
                 WHERE settlement_id = $1 AND state = $2",
                &[
                    row.settlement_id[..].into(),
                    row.step.to_json().as_str().into(),
                    next.to_json().as_str().into(),
                    acn.as_ref()
                        .map_or(valuecard_center::sql::Value::Null, |(acn, _)| {
                            acn.encode().into()
                        }),
                    acn.as_ref()
                        .map_or(valuecard_center::sql::Value::Null, |(_, signature)| {
                            signature.0[..].into()
                        }),
                    today.0.into(),
                ],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO settle_card_log (card_id, settlement_id, kind, amount, balance_after,
                     counter, date, party)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    row.card_id.as_bytes()[..].into(),
                    row.settlement_id[..].into(),
                    kind_name(row.kind).into(),
                    completion.amount.into(),
                    completion.balance_after.into(),
                    completion.counter.into(),
                    item.record.date.0.into(),
                    party.as_bytes()[..].into(),
                ],
            )?;
            tx.execute(
                "INSERT INTO settle_center_outbox (settlement_id, card_id, previous, record)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    row.settlement_id[..].into(),
                    row.card_id.as_bytes()[..].into(),
                    item.previous
                        .as_ref()
                        .map_or(valuecard_center::sql::Value::Null, |record| {
                            record.encode().into()
                        }),
                    item.record.encode().into(),
                ],
            )?;
            Ok(true)
        })?;
        if !moved {
            return Err(Problem::new(
                ProblemKind::Conflict,
                "the update moved on meanwhile; ask for its status",
            ));
        }
        if let Some(reporter) = &self.reporter {
            reporter.wake();
        }
        Ok(UpdateRow {
            step: next,
            recovery: None,
            completion: acn.map(|(acn, signature)| (acn.encode(), signature.0.to_vec())),
            ..row.clone()
        })
    }

    /// The outcome of a completed or voided update, with its documents; asks the store for
    /// its receipt if it is registered with an address and none is stored yet.
    pub(super) async fn outcome(
        &self,
        settlement_id: SettlementId,
    ) -> Result<OutcomeBody, Problem> {
        let row = self
            .pool
            .run(move |db: &mut Db| load_update(db, &settlement_id))
            .await?;
        self.outcome_of(row).await
    }

    /// The outcome of the update `row` as stored.
    async fn outcome_of(&self, mut row: UpdateRow) -> Result<OutcomeBody, Problem> {
        let settlement_id = row.settlement_id;
        if row.kind == TransactionKind::OnlinePayment
            && row.receipt.is_none()
            && row.completion.is_some()
        {
            if let Some(receipt) = self.fetch_receipt(&row).await {
                row.receipt = Some(receipt);
            }
        }
        let (balance_after, outcome) = match &row.step {
            StoredStep::Completed { .. } => {
                let (completion, _) = completed_parts(row.card_id, settlement_id, &row.step)?
                    .ok_or_else(|| super::corrupt("completion"))?;
                (
                    Some(completion.balance_after.minor()),
                    UpdateOutcome::Completed,
                )
            }
            StoredStep::Voided => (None, UpdateOutcome::Voided),
            other => {
                return Err(Problem::new(
                    ProblemKind::Conflict,
                    format!("the update is {}", other.name()),
                ))
            }
        };
        Ok(OutcomeBody {
            outcome,
            settlement_id: hex::encode(settlement_id),
            amount: row.amount.minor(),
            balance_after,
            completion: row.completion.as_ref().map(|(acn, _)| hex::encode(acn)),
            completion_signature: row.completion.as_ref().map(|(_, sig)| hex::encode(sig)),
            receipt: row
                .receipt
                .as_ref()
                .map(|(receipt, _)| hex::encode(receipt)),
            receipt_signature: row.receipt.as_ref().map(|(_, sig)| hex::encode(sig)),
        })
    }

    /// ST111-ST112: the completion goes to the store, whose receipt SIG4 is checked and
    /// kept. A store that does not answer is no failure of the settlement: the client shows
    /// the completion to the store itself.
    async fn fetch_receipt(&self, row: &UpdateRow) -> Option<(Vec<u8>, Vec<u8>)> {
        let store_id = row.store_id?;
        let (completion, signature) = row.completion.clone()?;
        let settlement_id = row.settlement_id;
        let registration = self
            .pool
            .run(move |db: &mut Db| super::information::registration(db, &store_id))
            .await
            .ok()??;
        let acn = SettlementCompletion::decode(&completion).ok()?;
        let agents = Arc::clone(&self.store_agents);
        let (receipt, receipt_signature) = tokio::task::spawn_blocking(move || {
            registration.request_receipt(&agents, &acn, &signature)
        })
        .await
        .ok()?
        .map_err(|error| tracing::info!(%error, "the store gave no receipt yet"))
        .ok()?;
        let stored = (receipt.encode(), receipt_signature.0.to_vec());
        let keep = stored.clone();
        let _ = self
            .pool
            .run(move |db: &mut Db| -> Result<u64, Problem> {
                Ok(db.execute(
                    "UPDATE settle_updates SET receipt = $2, receipt_signature = $3
                     WHERE settlement_id = $1 AND receipt IS NULL",
                    &[settlement_id[..].into(), keep.0.into(), keep.1.into()],
                )?)
            })
            .await;
        Some(stored)
    }
}

/// ST18-ST19: the card's sealed PCN. The update is completed only if the PCN is the
/// completion of exactly the update offered; answers the outcome with ACN SIG3 (and the
/// store's receipt SIG4 when it answered). Asked again, it answers the same outcome.
pub(super) async fn complete(
    State(service): Service,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let (settlement_id, sealed) = super::sealed_request(&id, &body)?;
    let worker = Arc::clone(&service);
    let row = service
        .pool
        .run(move |db: &mut Db| -> Result<UpdateRow, Problem> {
            let row = load_update(db, &settlement_id)?;
            if matches!(row.step, StoredStep::Completed { .. }) {
                return Ok(row);
            }
            let parts = offered_parts(settlement_id, &row.step)?.ok_or_else(|| {
                Problem::new(
                    ProblemKind::Conflict,
                    format!("the update is {}", row.step.name()),
                )
            })?;
            match worker
                .security
                .complete(&parts.offered, &sealed)
                .map_err(security_problem)?
            {
                Step::Completed {
                    completion, item, ..
                } => worker.finish(db, &row, &completion, &item),
                _ => Err(Problem::new(ProblemKind::Internal, "not completed")),
            }
        })
        .await?;
    Ok(json(&service.outcome_of(row).await?))
}
