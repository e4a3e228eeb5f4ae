//! Settlement of a load on the card's own evidence (seed 003, Fig. 7, after CREDIT).
//!
//! A load's outcome is read from the card's signed last transaction, never taken on the
//! dispenser's word, and only the dispenser that holds the load may settle it: until then
//! the load is value in flight, that dispenser's liability. Evidence that the card is still
//! at the load's starting state counts only over a challenge the center drew after it signed
//! the load: GET LAST TRANSACTION ends the card's load session, so the load can never be
//! applied after that answer.

use valuecard_core::crypto::random_array;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CenterError, ListReason, LoadOutcome, LoadSettlement, SettlementChallengeRequest,
};
use valuecard_core::messages::purse::{Challenge, LastTransaction, TransactionKind};

use crate::alerts::{raise, AlertKind};
use crate::loads::{commit_load, list_and_block, load_by_number, StoredLoad};
use crate::sql::Executor;
use crate::Center;

impl Center {
    /// The pending load `load_number` of `card_id`, which must be held by `dispenser_id`.
    fn held_load(
        &mut self,
        dispenser_id: DeviceId,
        card_id: &CardId,
        load_number: u32,
    ) -> Result<StoredLoad, CenterError> {
        self.require_dispenser(dispenser_id)?;
        let load = load_by_number(&mut self.db, card_id, load_number)?.ok_or_else(|| {
            CenterError::Mismatch(format!("no load number {load_number} for card {card_id}"))
        })?;
        if load.dispenser_id != dispenser_id {
            return Err(CenterError::NotAuthorized(dispenser_id));
        }
        Ok(load)
    }

    /// A fresh challenge for settling a pending load: the card's answer over it shows its
    /// state after this moment, which is after the load was authorized.
    pub(crate) fn issue_settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError> {
        // Settled loads get one too: evidence that one turned up applied after all is
        // what reveals a copy of the card.
        let load = self.held_load(request.dispenser_id, &request.card_id, request.load_number)?;
        let challenge: Challenge = random_array(&mut self.rng);
        self.db.execute(
            "UPDATE loads SET settlement_challenge = $3 WHERE card_id = $1 AND load_number = $2",
            &[
                load.card_id.0[..].into(),
                load.load_number.into(),
                challenge[..].into(),
            ],
        )?;
        Ok(challenge)
    }

    /// Settles a load on the card's signed last transaction (see [`LoadSettlement`]).
    pub(crate) fn settle_load_on_evidence(
        &mut self,
        settlement: &LoadSettlement,
    ) -> Result<LoadOutcome, CenterError> {
        let load = self.held_load(
            settlement.dispenser_id,
            &settlement.card_id,
            settlement.load_number,
        )?;
        if load.card_id != settlement.card_id {
            return Err(CenterError::Mismatch(format!(
                "load {} is not for card {}",
                settlement.load_number, settlement.card_id
            )));
        }
        let card_key = self.card_public_key(&load.card_id)?;
        let evidence = &settlement.evidence;
        card_key
            .verify(
                &LastTransaction::signed_message(
                    &load.card_id,
                    &settlement.challenge,
                    &evidence.record,
                ),
                &evidence.signature,
            )
            .map_err(|_| CenterError::BadCardSignature)?;
        let outcome = self.read_evidence(&load, settlement)?;
        let today = self.today().0;
        match outcome {
            LoadOutcome::Committed => {
                if self.db.transaction(|tx| commit_load(tx, &load, today))? {
                    return Err(CenterError::CardBlocked(load.card_id));
                }
            }
            LoadOutcome::Cancelled => {
                let cloned = self.db.transaction(|tx| {
                    // Read again inside the transaction: another center process on the
                    // same database may have committed the load since it was read.
                    let status = load_by_number(tx, &load.card_id, load.load_number)?
                        .map(|current| current.status)
                        .unwrap_or_default();
                    if status == "committed" {
                        // Applied on some copy, and this copy shows the state without it.
                        list_and_block(
                            tx,
                            &load.card_id,
                            ListReason::Cloned,
                            AlertKind::Cloned,
                            &format!(
                                "load {} is applied, and the card shows its state without it",
                                load.load_number
                            ),
                            today,
                        )?;
                        return Ok(true);
                    }
                    tx.execute(
                        "UPDATE loads SET status = 'cancelled' WHERE card_id = $1 AND load_number = $2 AND status = 'pending'",
                        &[load.card_id.0[..].into(), load.load_number.into()],
                    )?;
                    // The update that took the state instead may be another load of the
                    // center's, still pending: the evidence proves it reached the card.
                    let record = &settlement.evidence.record;
                    if record.kind == TransactionKind::Load
                        && record.counter == load.card_counter.wrapping_add(1)
                    {
                        if let Some(other) = load_by_number(tx, &load.card_id, record.writer_sequence)? {
                            if other.card_id == load.card_id && other.is_record(record) {
                                return commit_load(tx, &other, today);
                            }
                        }
                    }
                    Ok(false)
                })?;
                if cloned {
                    return Err(CenterError::CardBlocked(load.card_id));
                }
            }
            LoadOutcome::Undecided => {}
        }
        Ok(outcome)
    }

    /// What the card's last transaction says about `load`. A record that is neither this
    /// load nor the card's state before it must carry its own writer's signature, so a
    /// card that lies with its own key cannot invent the update that replaced the load.
    fn read_evidence(
        &mut self,
        load: &StoredLoad,
        settlement: &LoadSettlement,
    ) -> Result<LoadOutcome, CenterError> {
        let record = &settlement.evidence.record;
        let start = load.card_counter;
        if load.is_record(record) {
            return Ok(LoadOutcome::Committed);
        }
        if record.counter > start.wrapping_add(1) {
            return Ok(LoadOutcome::Undecided);
        }
        if record.counter < start {
            let today = self.today().0;
            let detail = format!(
                "the card shows counter {} after it offered counter {start} for load {}",
                record.counter, load.load_number
            );
            self.db.transaction(|tx| {
                raise(tx, &load.card_id.0, AlertKind::RolledBack, &detail, today)
            })?;
            return Err(CenterError::Mismatch(detail));
        }
        let fresh = load.settlement_challenge == Some(settlement.challenge);
        if record.counter == start && !fresh {
            return Err(CenterError::Mismatch(
                "evidence that a card is still at the load's state must answer the center's settlement challenge"
                    .into(),
            ));
        }
        if self.genuine_writer(&load.card_id, record)?.is_none() {
            return Err(CenterError::Mismatch(
                "the card's last transaction was not written by a party the center knows".into(),
            ));
        }
        Ok(LoadOutcome::Cancelled)
    }
}
