//! The center's release of a transfer whose destination will never come back (docs/protocols.md
//! § 13.6): the "source card and the center" half of the recovery rule.
//!
//! A source card keeps the amount of a transfer reserved until the destination proves it did
//! or did not apply it. A destination that was lost, destroyed or never existed (TRANSFER OUT
//! is not authenticated, so a dishonest reader can name a made-up card) never proves
//! anything, and the value would stay reserved for ever. The center signs a
//! [`TransferRelease`] of exactly one pending transfer when it can tell that the value cannot
//! have reached a card that could still spend it:
//!
//! 1. the source is a card this center issued and is not listed (a listed source's value is
//!    settled by the restore procedure, never by a release a thief could ask for);
//! 2. no report of this transfer holds the destination's proof of receipt, none says that a
//!    terminal sent the value to the destination (TRANSFER IN) and lost the answer unless a
//!    proof of non-receipt followed, and every report of it agrees on its terms
//!    (destination, counter, amount);
//! 3. no other release of this transfer was given (the same one is given again: the
//!    signature is deterministic, so a retry after a lost answer gets the same bytes);
//! 4. and either
//!    - (a) the destination is not a card this center issued: the value message is bound to
//!      the destination's ID, its counter and its fresh challenge, so no card can ever open
//!      it; or
//!    - (b) the destination is listed (lost, stolen, cloned, tampered: any reason) since at
//!      least [`RELEASE_HOLD_DAYS`]: every terminal has synced the list by then, so the
//!      destination is refused everywhere and blocked at its next contact; and every honest
//!      terminal that ran the transfer into it before the listing has uploaded its report,
//!      whose proof of receipt would refuse the release by 2. The destination's remaining
//!      value, which the restore procedure pays out, counts only receipts the center has
//!      seen, so it does not hold this amount either.
//!
//! Otherwise the center refuses, and the terminal must present the destination card (its
//! TRANSFER STATUS proves the outcome either way).
//!
//! Why no value is created: after the release the amount is spendable on the source only; the
//! destination cannot open the value message (a) or can no longer spend and is not repaid
//! what it held (b). Why none is lost: the source gets back the whole reservation, and the
//! destination's owner gets its remaining value on record through the restore procedure. What
//! is left is what the restore procedure also accepts: a terminal that uploads a proof of
//! receipt after the hold (or a copy of the destination that received it). That report is
//! still stored, as the evidence it is, and raises a `transfer-contradiction` alert on the
//! destination: the amount at stake is known and bounded by this transfer.

use valuecard_core::cert::Role;
use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, ListReason};
use valuecard_core::messages::transfer::{PendingTransfer, TransferRelease, TransferReport};
use valuecard_core::money::Amount;

use crate::lists::RESTORE_HOLD_DAYS;
use crate::sql::{Executor, Value};
use crate::Center;

/// Migration: each release the center gave, once per transfer (its name: source and the
/// source's challenge; `contradicted_on` is set when a proof of receipt arrives after it),
/// and the transfers a settlement terminal reported sending to the destination (TRANSFER IN)
/// with no answer: the destination may hold the value, so none of them is released.
pub const RELEASE_MIGRATION: &str = r#"
    CREATE TABLE transfer_releases (
        source              BYTEA NOT NULL CHECK (length(source) = 8),
        challenge_source    BYTEA NOT NULL CHECK (length(challenge_source) = 16),
        destination         BYTEA NOT NULL CHECK (length(destination) = 8),
        destination_counter BIGINT NOT NULL,
        amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
        key_id              BIGINT NOT NULL,
        ground              TEXT NOT NULL CHECK (ground IN ('unknown-destination', 'listed-destination')),
        terminal_id         BYTEA,
        released_on         BIGINT NOT NULL,
        contradicted_on     BIGINT,
        PRIMARY KEY (source, challenge_source)
    );
    CREATE TABLE transfer_destination_doubts (
        source           BYTEA NOT NULL CHECK (length(source) = 8),
        challenge_source BYTEA NOT NULL CHECK (length(challenge_source) = 16),
        terminal_id      BYTEA NOT NULL CHECK (length(terminal_id) = 8),
        reported_on      BIGINT NOT NULL,
        PRIMARY KEY (source, challenge_source, terminal_id)
    )
"#;

/// How long a destination must have been listed before a transfer toward it is released:
/// the restore procedure's holding period, for the same reason (every terminal syncs the list
/// and uploads what it saw the card do before the listing).
pub const RELEASE_HOLD_DAYS: u32 = RESTORE_HOLD_DAYS;

/// Why the center judged a release safe (stored with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseGround {
    /// The destination is not a card this center issued.
    UnknownDestination,
    /// The destination is listed since at least [`RELEASE_HOLD_DAYS`].
    ListedDestination(ListReason),
}

impl ReleaseGround {
    fn as_str(self) -> &'static str {
        match self {
            ReleaseGround::UnknownDestination => "unknown-destination",
            ReleaseGround::ListedDestination(_) => "listed-destination",
        }
    }
}

fn refused(reason: impl Into<String>) -> CenterError {
    CenterError::Mismatch(reason.into())
}

impl Center {
    /// Signs the release of `source`'s pending transfer if the rule of this module allows it,
    /// and records it; refuses with the reason otherwise.
    pub fn authorize_transfer_release(
        &mut self,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferRelease, CenterError> {
        self.release_for(None, source, pending)
    }

    /// [`Center::authorize_transfer_release`] at a settlement terminal's request.
    pub fn authorize_transfer_release_for(
        &mut self,
        terminal_id: DeviceId,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferRelease, CenterError> {
        if self.device_role(terminal_id)? != Role::SettlementTerminal {
            return Err(CenterError::NotAuthorized(terminal_id));
        }
        self.release_for(Some(terminal_id), source, pending)
    }

    fn release_for(
        &mut self,
        terminal_id: Option<DeviceId>,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferRelease, CenterError> {
        if pending.amount == Amount::ZERO || pending.destination == source {
            return Err(refused("not a transfer a card can hold pending"));
        }
        let today = self.today().0;
        let signed = TransferRelease::signed_message(&source, pending);
        // Every reading the decision rests on is made in the transaction that records it,
        // after taking the source card's row lock, which storing a report of the same source
        // takes too (`store::store_report`): on PostgreSQL, under read committed, a report
        // stored meanwhile is then either seen here or sees the release (and alerts).
        self.db.transaction(|tx| {
            lock_source(tx, &source)?;
            let ground = release_ground(tx, &source, pending, today)?;
            tx.execute(
                "INSERT INTO transfer_releases (source, challenge_source, destination, destination_counter,
                     amount_minor, key_id, ground, terminal_id, released_on)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (source, challenge_source) DO NOTHING",
                &[
                    source.0[..].into(),
                    pending.challenge_source[..].into(),
                    pending.destination.0[..].into(),
                    pending.destination_counter.into(),
                    Value::from(pending.amount),
                    pending.key_id.into(),
                    ground.as_str().into(),
                    terminal_id.map_or(Value::Null, |id| id.0[..].into()),
                    today.into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(TransferRelease {
            signature: self.keys.root.sign(&signed)?,
        })
    }
}

/// Takes the row lock of `source` in `cards` (a no-op update) for the rest of the
/// transaction: releases and stored reports of one source card then run one after the other.
pub(super) fn lock_source(tx: &mut dyn Executor, source: &CardId) -> Result<(), CenterError> {
    tx.execute(
        "UPDATE cards SET status = status WHERE card_id = $1",
        &[source.0[..].into()],
    )?;
    Ok(())
}

/// Whether a report's release is one the center gave, for the transfer the report names:
/// the release recorded under the report's name, with the report's terms, and the signature
/// over them.
pub(super) fn release_given(
    tx: &mut dyn Executor,
    report: &TransferReport,
    release: &TransferRelease,
    root_key: &PublicKey,
) -> Result<bool, CenterError> {
    let row = tx.query_optional(
        "SELECT key_id FROM transfer_releases WHERE source = $1 AND challenge_source = $2",
        &[
            report.source.0[..].into(),
            report.challenge_source[..].into(),
        ],
    )?;
    let Some(row) = row else {
        return Ok(false);
    };
    let key_id = u32::try_from(row.int(0)?)
        .map_err(|_| CenterError::Storage("transfer release: key id out of range".into()))?;
    if report
        .value
        .as_ref()
        .is_some_and(|v| v.value.key_id != key_id)
    {
        return Ok(false);
    }
    let pending = PendingTransfer {
        destination: report.destination,
        destination_counter: report.destination_counter,
        challenge_source: report.challenge_source,
        amount: report.amount,
        key_id,
    };
    Ok(
        previous_release(tx, &report.source, &pending)? == Some(true)
            && release.verify(root_key, &report.source, &pending).is_ok(),
    )
}

/// The release already given for this transfer: `Some(true)` with the same terms,
/// `Some(false)` with other terms.
fn previous_release(
    tx: &mut dyn Executor,
    source: &CardId,
    pending: &PendingTransfer,
) -> Result<Option<bool>, CenterError> {
    let row = tx.query_optional(
        "SELECT destination, destination_counter, amount_minor, key_id FROM transfer_releases
         WHERE source = $1 AND challenge_source = $2",
        &[source.0[..].into(), pending.challenge_source[..].into()],
    )?;
    row.map(|row| {
        Ok(row.bytes(0)? == pending.destination.0
            && row.int(1)? == i64::from(pending.destination_counter)
            && row.int(2)? == pending.amount.minor() as i64
            && row.int(3)? == i64::from(pending.key_id))
    })
    .transpose()
}

/// The rule of the module, in its order; `Ok` names the ground of a release.
fn release_ground(
    tx: &mut dyn Executor,
    source: &CardId,
    pending: &PendingTransfer,
    today: u32,
) -> Result<ReleaseGround, CenterError> {
    // 1. An issued source that is not listed.
    match card_status(tx, source)? {
        Some(status) if status != "assigned" => {}
        _ => return Err(CenterError::UnknownCard(*source)),
    }
    if listing(tx, source)?.is_some() {
        return Err(refused(format!(
            "card {source} is listed: its value is settled by the restore procedure"
        )));
    }
    // 2. Nothing the center holds says the destination received it.
    if let Some(row) = tx.query_optional(
        "SELECT destination, destination_counter, amount_minor, proof_status FROM transfers
         WHERE source = $1 AND challenge_source = $2",
        &[source.0[..].into(), pending.challenge_source[..].into()],
    )? {
        if row.bytes(0)? != pending.destination.0
            || row.int(1)? != i64::from(pending.destination_counter)
            || row.int(2)? != pending.amount.minor() as i64
        {
            return Err(refused(
                "this transfer was reported with other terms than the card's pending transfer",
            ));
        }
        if matches!(row.0.get(3), Some(Value::Text(status)) if status == "received") {
            return Err(refused(
                "the destination proved it received this transfer: complete it with the destination's proof",
            ));
        }
    }
    // A terminal sent the value to the destination and lost the answer: the destination may
    // have applied it. Only its proof of non-receipt clears that doubt.
    let doubted = tx.query_one(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM transfer_destination_doubts d
         WHERE d.source = $1 AND d.challenge_source = $2
             AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.source = d.source
                 AND t.challenge_source = d.challenge_source AND t.proof_status = 'not_received')",
        &[source.0[..].into(), pending.challenge_source[..].into()],
    )?;
    if doubted.int(0)? > 0 {
        return Err(refused(
            "a settlement terminal sent this transfer to the destination and lost the answer: present the destination card",
        ));
    }
    // 3. One release per transfer; the same one again.
    if previous_release(tx, source, pending)? == Some(false) {
        return Err(refused(
            "this transfer was released with other terms than the card's pending transfer",
        ));
    }
    // 4. A destination that never existed, or that is listed since the hold period.
    let issued =
        matches!(card_status(tx, &pending.destination)?, Some(status) if status != "assigned");
    if !issued {
        return Ok(ReleaseGround::UnknownDestination);
    }
    if let Some((reason, listed_on)) = listing(tx, &pending.destination)? {
        let from = listed_on.saturating_add(RELEASE_HOLD_DAYS);
        if today < from {
            return Err(refused(format!(
                "destination {} is listed as {} since day {listed_on}: a release is possible from day {from}, once every terminal has synced and uploaded",
                pending.destination,
                reason.as_str()
            )));
        }
        return Ok(ReleaseGround::ListedDestination(reason));
    }
    Err(refused(format!(
        "destination {} is an issued card that is not listed: present the destination card",
        pending.destination
    )))
}

fn card_status(tx: &mut dyn Executor, card: &CardId) -> Result<Option<String>, CenterError> {
    tx.query_optional(
        "SELECT status FROM cards WHERE card_id = $1",
        &[card.0[..].into()],
    )?
    .map(|row| row.text(0))
    .transpose()
}

/// Why and since when a card is listed.
fn listing(tx: &mut dyn Executor, card: &CardId) -> Result<Option<(ListReason, u32)>, CenterError> {
    tx.query_optional(
        "SELECT reason, added_on FROM list_entries WHERE kind = 'card' AND subject = $1",
        &[card.0[..].into()],
    )?
    .map(|row| {
        let reason = row.text(0)?;
        let reason = ListReason::parse(&reason)
            .ok_or_else(|| CenterError::Storage(format!("list reason {reason:?}")))?;
        let added_on = u32::try_from(row.int(1)?)
            .map_err(|_| CenterError::Storage("list entry: day out of range".into()))?;
        Ok((reason, added_on))
    })
    .transpose()
}

/// A proof of receipt stored for a transfer the center had released: the release was given
/// on a judgement the evidence now contradicts. Raised once per release, on the destination.
pub(super) fn contradict_release(
    tx: &mut dyn Executor,
    source: &CardId,
    challenge_source: &[u8; 16],
    destination: &CardId,
    today: u32,
) -> Result<(), CenterError> {
    let updated = tx.execute(
        "UPDATE transfer_releases SET contradicted_on = $3
         WHERE source = $1 AND challenge_source = $2 AND contradicted_on IS NULL",
        &[
            source.0[..].into(),
            challenge_source[..].into(),
            today.into(),
        ],
    )?;
    if updated > 0 {
        crate::alerts::raise(
            tx,
            &destination.0,
            crate::alerts::AlertKind::TransferContradiction,
            &format!(
                "transfer from {source} proven received after the center released the source's reservation"
            ),
            today,
        )?;
    }
    Ok(())
}

/// Records the transfers of an upload that a terminal sent to the destination without an
/// answer (the destination's record signed, no proof): such a report is refused as
/// unfinished, but what it says still bars a release.
pub(super) fn note_destination_doubts(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    reports: &[&TransferReport],
    today: u32,
) -> Result<(), CenterError> {
    for report in reports {
        tx.execute(
            "INSERT INTO transfer_destination_doubts (source, challenge_source, terminal_id, reported_on)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, challenge_source, terminal_id) DO NOTHING",
            &[
                report.source.0[..].into(),
                report.challenge_source[..].into(),
                terminal_id.0[..].into(),
                today.into(),
            ],
        )?;
    }
    Ok(())
}
