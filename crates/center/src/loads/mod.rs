//! Loads (seed 003, Figs. 4C and 7): authorization bounded by what the center knows, and
//! settlement on the card's own evidence.
//!
//! The center issued every load, so it knows an upper bound of every card's balance:
//! balances only fall between loads. A load request carries the card's signed offer and the
//! card's last usage record, the writer's signed word for the balance the card claims; the
//! center adds value only to a balance that record vouches for and that stays under its own
//! bound. A card whose claim exceeds the bound is listed as tampered.
//!
//! A load's outcome is read from the card's signed last transaction (`settlement.rs`).
//! Usage uploads settle loads too: a purchase that spends the state a load wrote proves the
//! load committed, one that spends the state a load started from proves it never will (on
//! that copy of the card).

use valuecard_core::crypto::{aes_cmac, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, ListReason, LoadApproval, LoadRequest};
use valuecard_core::messages::purse::{
    Challenge, InitializeLoad, LoadAuthorization, LoadOffer, TransactionKind, UsageRecord,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::alerts::{raise, AlertKind};
use crate::db::next_in_sequence;
use crate::sql::{Executor, Row, Value};
use crate::{Center, LoadTotals, PendingLoad};

mod claim;
use claim::Claim;

/// A load as the center stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredLoad {
    pub card_id: CardId,
    pub load_number: u32,
    /// The card state the load starts from; it writes `card_counter + 1`.
    pub card_counter: u32,
    pub challenge_card: Challenge,
    pub challenge_dispenser: Challenge,
    pub dispenser_id: DeviceId,
    pub amount: Amount,
    pub balance_after: Amount,
    pub status: String,
    pub date: Date,
    pub signature: Signature,
    pub settlement_challenge: Option<Challenge>,
}

pub(crate) const LOAD_COLUMNS: &str =
    "card_id, load_number, card_counter, challenge_card, challenge_dispenser, dispenser_id,
     amount_minor, balance_after_minor, status, authorized_on, signature, settlement_challenge";

fn corrupt(what: &str) -> CenterError {
    CenterError::Storage(format!("stored load: {what}"))
}

fn amount_from(value: i64) -> Result<Amount, CenterError> {
    u64::try_from(value)
        .ok()
        .and_then(|minor| Amount::new(minor).ok())
        .ok_or_else(|| corrupt("amount"))
}

impl StoredLoad {
    pub(crate) fn from_row(row: &Row) -> Result<Self, CenterError> {
        let array16 = |bytes: Vec<u8>| -> Result<Challenge, CenterError> {
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("challenge"))
        };
        Ok(StoredLoad {
            card_id: CardId::from_slice(&row.bytes(0)?).map_err(|_| corrupt("card"))?,
            load_number: u32::try_from(row.int(1)?).map_err(|_| corrupt("number"))?,
            card_counter: u32::try_from(row.int(2)?).map_err(|_| corrupt("counter"))?,
            challenge_card: array16(row.bytes(3)?)?,
            challenge_dispenser: array16(row.bytes(4)?)?,
            dispenser_id: DeviceId::from_slice(&row.bytes(5)?).map_err(|_| corrupt("dispenser"))?,
            amount: amount_from(row.int(6)?)?,
            balance_after: amount_from(row.int(7)?)?,
            status: row.text(8)?,
            date: Date(u32::try_from(row.int(9)?).map_err(|_| corrupt("date"))?),
            signature: Signature::from_slice(&row.bytes(10)?).map_err(|_| corrupt("signature"))?,
            settlement_challenge: row.optional_bytes(11)?.map(array16).transpose()?,
        })
    }

    /// Whether `record` is the usage record this load writes on the card.
    pub fn is_record(&self, record: &UsageRecord) -> bool {
        record.kind == TransactionKind::Load
            && record.writer_sequence == self.load_number
            && record.writer == self.dispenser_id
            && record.counter == self.card_counter.wrapping_add(1)
            && record.challenge_writer == self.challenge_dispenser
            && record.challenge_card == self.challenge_card
            && record.amount == self.amount
            && record.balance_after == self.balance_after
            && record.date == self.date
            && record.signature == self.signature
    }
}

/// Load `load_number` of `card_id`. Loads are always looked up by (card, number), the key
/// the table distributes by, never by number alone.
pub(crate) fn load_by_number(
    tx: &mut dyn Executor,
    card_id: &CardId,
    load_number: u32,
) -> Result<Option<StoredLoad>, CenterError> {
    tx.query_optional(
        &format!("SELECT {LOAD_COLUMNS} FROM loads WHERE card_id = $1 AND load_number = $2"),
        &[card_id.0[..].into(), load_number.into()],
    )?
    .as_ref()
    .map(StoredLoad::from_row)
    .transpose()
}

/// Lists a card and blocks it at the center, with an alert saying why.
pub(crate) fn list_and_block(
    tx: &mut dyn Executor,
    card_id: &CardId,
    reason: ListReason,
    alert: AlertKind,
    detail: &str,
    today: u32,
) -> Result<(), CenterError> {
    crate::usage::list_card(tx, card_id, reason, today)?;
    tx.execute(
        "UPDATE cards SET status = 'blocked' WHERE card_id = $1",
        &[card_id.0[..].into()],
    )?;
    raise(tx, &card_id.0, alert, detail, today)
}

/// Whether an update other than load `except` already consumed the card state `counter`:
/// a stored purchase that spent it, another committed load that started from it, or a
/// transfer that the card received or sent from it (`transfers.rs`).
pub(crate) fn state_consumed_by_other(
    tx: &mut dyn Executor,
    card_id: &CardId,
    counter: u32,
    except_load: Option<u32>,
) -> Result<bool, CenterError> {
    let row = tx.query_one(
        "SELECT CAST(
             (SELECT COUNT(*) FROM card_states WHERE card_id = $1 AND card_counter = $2)
           + (SELECT COUNT(*) FROM loads WHERE card_id = $1 AND card_counter = $2
                 AND status = 'committed' AND load_number != $3)
           + (SELECT COUNT(*) FROM transfers WHERE destination = $1 AND destination_counter = $2
                 AND proof_status = 'received')
           + (SELECT COUNT(*) FROM transfers WHERE source = $1 AND source_counter = $2)
           + (SELECT COUNT(*) FROM online_records WHERE card_id = $1 AND card_counter = $2)
           + (SELECT COUNT(*) FROM card_moves WHERE destination = $1 AND destination_counter = $2)
         AS BIGINT)",
        &[
            card_id.0[..].into(),
            counter.into(),
            Value::Int(except_load.map_or(-1, i64::from)),
        ],
    )?;
    Ok(row.int(0)? > 0)
}

/// A load proven applied (by a settlement's evidence or by a usage upload): mark it
/// committed, move the remaining value forward, and see whether its starting state was
/// consumed twice. Other loads still pending at the same state can then never apply to
/// this card. Returns whether the card was found cloned.
pub(crate) fn commit_load(
    tx: &mut dyn Executor,
    load: &StoredLoad,
    today: u32,
) -> Result<bool, CenterError> {
    // The load as this transaction sees it: `load` was read before the transaction began,
    // and another center process on the same database may have settled it since.
    let current = load_by_number(tx, &load.card_id, load.load_number)?.ok_or_else(|| {
        CenterError::Storage(format!("load {} is no longer stored", load.load_number))
    })?;
    let load = &current;
    match load.status.as_str() {
        "committed" => return Ok(false),
        "cancelled" => {
            // The center cancelled it on a card's evidence, so another copy of the card
            // (or a card that lied with its own key) holds it.
            tx.execute(
                "UPDATE loads SET status = 'committed' WHERE card_id = $1 AND load_number = $2",
                &[load.card_id.0[..].into(), load.load_number.into()],
            )?;
            list_and_block(
                tx,
                &load.card_id,
                ListReason::Cloned,
                AlertKind::CancelledLoadApplied,
                &format!(
                    "load {} was cancelled on the card's evidence and turned up applied",
                    load.load_number
                ),
                today,
            )?;
            return Ok(true);
        }
        _ => {}
    }
    tx.execute(
        "UPDATE loads SET status = 'committed' WHERE card_id = $1 AND load_number = $2",
        &[load.card_id.0[..].into(), load.load_number.into()],
    )?;
    tx.execute(
        "UPDATE loads SET status = 'cancelled' WHERE card_id = $1 AND card_counter = $2 AND status = 'pending'",
        &[load.card_id.0[..].into(), load.card_counter.into()],
    )?;
    crate::advance_remaining_value(
        tx,
        &load.card_id,
        load.balance_after,
        load.card_counter.wrapping_add(1),
        today,
    )?;
    if state_consumed_by_other(tx, &load.card_id, load.card_counter, Some(load.load_number))? {
        list_and_block(
            tx,
            &load.card_id,
            ListReason::Cloned,
            AlertKind::Cloned,
            &format!(
                "load {} and another update both spent card state {}",
                load.load_number, load.card_counter
            ),
            today,
        )?;
        return Ok(true);
    }
    Ok(false)
}

/// A card state consumed by an update proven on some copy of the card: every load still
/// pending at that state can never apply to that copy.
pub(crate) fn cancel_pending_at(
    tx: &mut dyn Executor,
    card_id: &CardId,
    counter: u32,
) -> Result<(), CenterError> {
    tx.execute(
        "UPDATE loads SET status = 'cancelled' WHERE card_id = $1 AND card_counter = $2 AND status = 'pending'",
        &[card_id.0[..].into(), counter.into()],
    )?;
    Ok(())
}

/// Who wrote a usage record the center believes.
pub(crate) enum Writer {
    /// A load the center stored with exactly the record's fields.
    Load(StoredLoad),
    /// A payment terminal the center installed, whose signature verifies.
    Terminal,
}

impl Center {
    /// Whether a usage record carries its writer's valid signature: the center's for a load
    /// (checked against the stored load, which is returned), an installed payment terminal's
    /// for a purchase, an installed settlement terminal's for a transfer, the security server's for
    /// an online payment or charge. `None` when neither holds; only the center's own storage failures are
    /// errors, so that a device retries instead of being told the record is forged.
    pub(crate) fn genuine_writer(
        &mut self,
        card_id: &CardId,
        record: &UsageRecord,
    ) -> Result<Option<Writer>, CenterError> {
        match record.kind {
            TransactionKind::Load => {
                Ok(
                    load_by_number(&mut self.db, card_id, record.writer_sequence)?
                        .filter(|load| load.card_id == *card_id && load.is_record(record))
                        .map(Writer::Load),
                )
            }
            TransactionKind::Purchase
            | TransactionKind::TransferOut
            | TransactionKind::TransferIn
            | TransactionKind::OnlinePayment
            | TransactionKind::OnlineCharge
            | TransactionKind::MigrationIn => {
                match self.terminal_key_any_status(record.writer, record.kind) {
                    Ok(key) => Ok(key
                        .verify(&record.signed_message(card_id), &record.signature)
                        .is_ok()
                        .then_some(Writer::Terminal)),
                    Err(error @ CenterError::Storage(_)) => Err(error),
                    Err(_) => Ok(None),
                }
            }
        }
    }
}

impl Center {
    /// Fig. 7 at the center: verify SU(Y * X * V) with the card's certified key and the
    /// card's last usage record for V, bound V by the center's own records, then sign
    /// SA(Y * X * V * IDU) and MAC it under KU. A retried request gets the same answer.
    pub(crate) fn authorize_load_checked(
        &mut self,
        request: &LoadRequest,
    ) -> Result<LoadApproval, CenterError> {
        self.require_dispenser(request.dispenser_id)?;
        let (status, _, _) = self.card_record(&request.card_id)?;
        match status.as_str() {
            "issued" => {}
            "blocked" => return Err(CenterError::CardBlocked(request.card_id)),
            other => {
                return Err(CenterError::Mismatch(format!(
                    "card {} is {other}",
                    request.card_id
                )))
            }
        }
        let card_key = self.card_public_key(&request.card_id)?;
        let init = InitializeLoad {
            challenge_dispenser: request.challenge_dispenser,
            amount: request.amount,
            dispenser_id: request.dispenser_id,
        };
        let offer = &request.offer;
        let signed = LoadOffer::signed_message(
            &request.card_id,
            &init,
            &offer.challenge_card,
            offer.balance,
            offer.counter,
        );
        card_key
            .verify(&signed, &offer.signature)
            .map_err(|_| CenterError::BadCardSignature)?;
        if request.amount == Amount::ZERO {
            return Err(CenterError::Amount("a load must be positive".into()));
        }
        let today = self.today().0;
        // A purchase or another committed load already spent this card state: the card
        // offering it now is a copy.
        let card_id = request.card_id;
        let counter = offer.counter;
        let cloned = self.db.transaction(|tx| {
            let spent_by_purchase = tx
                .query_one(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM card_states WHERE card_id = $1 AND card_counter = $2",
                    &[card_id.0[..].into(), counter.into()],
                )?
                .int(0)?;
            let spent_by_load = tx
                .query_one(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM loads WHERE card_id = $1 AND card_counter = $2
                     AND status = 'committed' AND challenge_card != $3",
                    &[card_id.0[..].into(), counter.into(), offer.challenge_card[..].into()],
                )?
                .int(0)?;
            let spent_by_transfer = crate::transfers::transfers_at_state(tx, &card_id, counter)?;
            if spent_by_purchase + spent_by_load + spent_by_transfer > 0 {
                list_and_block(
                    tx,
                    &card_id,
                    ListReason::Cloned,
                    AlertKind::Cloned,
                    &format!("a load was offered from card state {counter}, already spent"),
                    today,
                )?;
                return Ok(true);
            }
            Ok(false)
        })?;
        if cloned {
            return Err(CenterError::CardBlocked(request.card_id));
        }
        match self.check_claimed_balance(request)? {
            Ok(()) => {}
            Err(Claim::Refuse(reason)) => return Err(CenterError::Mismatch(reason)),
            Err(Claim::Tampered(reason)) => {
                let card_id = request.card_id;
                self.db.transaction(|tx| {
                    list_and_block(
                        tx,
                        &card_id,
                        ListReason::Tampered,
                        AlertKind::TamperedBalance,
                        &reason,
                        today,
                    )
                })?;
                return Err(CenterError::CardBlocked(request.card_id));
            }
        }
        let balance_after = offer
            .balance
            .checked_add(request.amount)
            .map_err(|error| CenterError::Amount(error.to_string()))?;
        if let Some(existing) = self.existing_approval(request, balance_after)? {
            return Ok(existing);
        }
        self.insert_load(request, balance_after)
    }

    fn insert_load(
        &mut self,
        request: &LoadRequest,
        balance_after: Amount,
    ) -> Result<LoadApproval, CenterError> {
        let date = self.today();
        let offer = &request.offer;
        let root = &self.keys.root;
        // Loads pending at the same state stay pending: the card may have dropped their
        // sessions, or a copy of it may hold one. Only the card's evidence settles them.
        let (authorization, signature, generations) = self.db.transaction(|tx| {
            let load_number = u32::try_from(next_in_sequence(tx, "load")?)
                .map_err(|_| CenterError::Storage("load numbers exhausted".into()))?;
            // Stored with the load: a retried request must seal the very same key set, since
            // the nonce (the card's challenge) and the key are the same.
            let generations = crate::transfer_keys::current_generations(tx)?;
            let authorization = LoadAuthorization {
                card_id: request.card_id,
                dispenser_id: request.dispenser_id,
                challenge_dispenser: request.challenge_dispenser,
                challenge_card: offer.challenge_card,
                counter: offer.counter,
                amount: request.amount,
                balance_after,
                load_number,
                date,
            };
            let signature = root.sign(&authorization.signed_message())?;
            let kind = if offer.counter == 0 { "initial" } else { "recharge" };
            tx.execute(
                "INSERT INTO loads (card_id, load_number, card_counter, challenge_card, challenge_dispenser, dispenser_id,
                                    amount_minor, balance_after_minor, kind, status, authorized_on, signature,
                                    transfer_key_id, transfer_key_limit, update_key_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13, $14)",
                &[
                    request.card_id.0[..].into(),
                    load_number.into(),
                    offer.counter.into(),
                    offer.challenge_card[..].into(),
                    request.challenge_dispenser[..].into(),
                    request.dispenser_id.0[..].into(),
                    Value::from(request.amount),
                    Value::from(balance_after),
                    kind.into(),
                    date.0.into(),
                    signature.0[..].into(),
                    generations.transfer.into(),
                    generations.limit().into(),
                    generations.update.into(),
                ],
            )?;
            Ok((authorization, signature, generations))
        })?;
        let card_key = self.card_key(&request.card_id);
        let mac = aes_cmac(&card_key, &authorization.signed_message());
        let key_set = self.key_set_for(
            generations.transfer,
            generations.limit(),
            generations.update,
        );
        Ok(LoadApproval {
            balance_after,
            load_number: authorization.load_number,
            date,
            signature,
            mac,
            transfer_keys: Some(key_set.seal_for_load(
                &card_key,
                &offer.challenge_card,
                &authorization.signed_message(),
            )),
        })
    }

    fn existing_approval(
        &mut self,
        request: &LoadRequest,
        balance_after: Amount,
    ) -> Result<Option<LoadApproval>, CenterError> {
        let row = self.db.query_optional(
            &format!(
                "SELECT {LOAD_COLUMNS} FROM loads
                 WHERE card_id = $1 AND card_counter = $2 AND challenge_card = $3"
            ),
            &[
                request.card_id.0[..].into(),
                request.offer.counter.into(),
                request.offer.challenge_card[..].into(),
            ],
        )?;
        let Some(load) = row.as_ref().map(StoredLoad::from_row).transpose()? else {
            return Ok(None);
        };
        if load.amount != request.amount
            || load.balance_after != balance_after
            || load.dispenser_id != request.dispenser_id
            || load.challenge_dispenser != request.challenge_dispenser
        {
            return Err(CenterError::Mismatch(
                "this card offer was already authorized with other terms".into(),
            ));
        }
        if load.status == "cancelled" {
            return Err(CenterError::Mismatch(
                "this card offer was cancelled".into(),
            ));
        }
        let authorization = LoadAuthorization {
            card_id: request.card_id,
            dispenser_id: request.dispenser_id,
            challenge_dispenser: request.challenge_dispenser,
            challenge_card: request.offer.challenge_card,
            counter: request.offer.counter,
            amount: request.amount,
            balance_after,
            load_number: load.load_number,
            date: load.date,
        };
        let card_key = self.card_key(&request.card_id);
        let mac = aes_cmac(&card_key, &authorization.signed_message());
        // The generations stored with the load, never the current ones: the same plaintext
        // under the same key and nonce gives the same ciphertext. A load authorized before
        // the center delivered transfer keys gets none, for the same reason.
        let transfer_keys = self
            .delivered_generations(&load.card_id, load.load_number)?
            .map(|(transfer, limit, update)| {
                self.key_set_for(transfer, limit, update).seal_for_load(
                    &card_key,
                    &request.offer.challenge_card,
                    &authorization.signed_message(),
                )
            });
        Ok(Some(LoadApproval {
            balance_after,
            load_number: load.load_number,
            date: load.date,
            signature: load.signature,
            mac,
            transfer_keys,
        }))
    }

    /// The key generations a load delivered: (transfer key, limit, update key).
    fn delivered_generations(
        &mut self,
        card_id: &CardId,
        load_number: u32,
    ) -> Result<Option<(u32, u32, u32)>, CenterError> {
        let row = self.db.query_one(
            "SELECT transfer_key_id, transfer_key_limit, update_key_id FROM loads WHERE card_id = $1 AND load_number = $2",
            &[card_id.0[..].into(), load_number.into()],
        )?;
        let id = |index: usize| -> Result<Option<u32>, CenterError> {
            row.optional_int(index)?
                .map(|value| u32::try_from(value).map_err(|_| corrupt("key generation")))
                .transpose()
        };
        Ok(match (id(0)?, id(1)?, id(2)?) {
            (Some(transfer), Some(limit), Some(update)) => Some((transfer, limit, update)),
            _ => None,
        })
    }

    /// Totals of every load, by kind and outcome.
    pub fn load_totals(&mut self) -> Result<LoadTotals, CenterError> {
        let mut totals = LoadTotals::default();
        let rows = self.db.query(
            "SELECT kind, status, CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT), CAST(COUNT(*) AS BIGINT)
             FROM loads GROUP BY kind, status",
            &[],
        )?;
        for row in rows {
            let sum = row.int(2)? as u64;
            let count = row.int(3)? as u64;
            match (row.text(0)?.as_str(), row.text(1)?.as_str()) {
                ("initial", "committed") => totals.issued += sum,
                ("recharge", "committed") => totals.loaded += sum,
                (_, "pending") => {
                    totals.in_flight += sum;
                    totals.in_flight_count += count;
                }
                _ => totals.cancelled += sum,
            }
        }
        Ok(totals)
    }

    /// Loads authorized but not yet settled, oldest first, each with the dispenser whose
    /// liability it is until the card's evidence settles it.
    pub fn pending_loads(&mut self) -> Result<Vec<PendingLoad>, CenterError> {
        let rows = self.db.query(
            &format!(
                "SELECT {LOAD_COLUMNS} FROM loads WHERE status = 'pending' ORDER BY load_number"
            ),
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let load = StoredLoad::from_row(row)?;
                Ok(PendingLoad {
                    card_id: load.card_id,
                    load_number: load.load_number,
                    card_counter: load.card_counter,
                    amount: load.amount,
                    dispenser_id: load.dispenser_id,
                })
            })
            .collect()
    }
}
