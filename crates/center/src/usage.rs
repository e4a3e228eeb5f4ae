//! Usage-management records and clone detection (seed 003, Fig. 9), and the remaining-value
//! record per card.
//!
//! Every committed balance update consumes one card state: the card's counter before it. A
//! purchase consumes the state its previous usage record describes; a load consumes the state
//! at the counter the card signed. Two different updates that consume the same state of one
//! card can only come from two copies of that card: the card is flagged cloned and listed.

use valuecard_core::crypto::{verify_batch, PublicKey, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{
    CenterError, ListReason, UploadReceipt, UsageItem, UsageUpload, USAGE_BATCH_MAX,
};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;

use crate::sql::{Executor, Value};
use crate::Center;

/// Migration: usage records and the lists (appended to `db::MIGRATIONS`).
pub const MIGRATION: &str = r#"
    CREATE TABLE usage_records (
        terminal_id         BYTEA NOT NULL,
        terminal_sequence   BIGINT NOT NULL,
        card_id             BYTEA NOT NULL,
        card_counter        BIGINT NOT NULL,
        amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
        balance_after_minor BIGINT NOT NULL CHECK (balance_after_minor >= 0),
        usage_digest        BYTEA NOT NULL CHECK (length(usage_digest) = 32),
        purchase_date       BIGINT NOT NULL,
        terminal_signature  BYTEA NOT NULL CHECK (length(terminal_signature) = 64),
        previous_writer     BYTEA NOT NULL,
        PRIMARY KEY (terminal_id, terminal_sequence)
    );
    CREATE INDEX usage_records_by_state ON usage_records (card_id, card_counter);

    CREATE TABLE list_entries (
        version      BIGINT PRIMARY KEY,
        kind         TEXT NOT NULL CHECK (kind IN ('card', 'terminal')),
        subject      BYTEA NOT NULL CHECK (length(subject) = 8),
        reason       TEXT NOT NULL,
        first_stamp  BYTEA,
        stamp_count  BIGINT,
        added_on     BIGINT NOT NULL,
        UNIQUE (kind, subject)
    );
    INSERT INTO sequences (name, next) VALUES ('list', 1)
"#;

/// Keys looked up once per batch.
#[derive(Default)]
struct KeyCache {
    /// By writer and record kind: the role a writer needs depends on the kind.
    writers: std::collections::HashMap<(DeviceId, TransactionKind), PublicKey>,
    cards: std::collections::HashMap<CardId, PublicKey>,
}

/// Why one usage item was not accepted: the item's own fault (refused, for good), or the
/// center's (the whole upload fails, to be retried).
enum ItemError {
    Refused(String),
    Center(CenterError),
}

impl From<&str> for ItemError {
    fn from(reason: &str) -> Self {
        ItemError::Refused(reason.to_owned())
    }
}

/// A lookup about an item that failed: storage failures are the center's, anything else
/// (an unknown card or writer) is the item's.
fn lookup_failed(error: CenterError, what: &str) -> ItemError {
    match error {
        CenterError::Storage(_) => ItemError::Center(error),
        other => ItemError::Refused(format!("{what}{other}")),
    }
}

/// Why one usage item was refused (the rest of the batch goes on).
fn refuse(item: &UsageItem, reason: impl Into<String>) -> (u32, String) {
    (item.terminal_sequence, reason.into())
}

impl Center {
    /// Verifies and stores a batch of usage items from one terminal, idempotently: an item
    /// already stored with the same content counts as a duplicate, one stored with other
    /// content is refused. Signatures are checked before anything is stored.
    pub fn ingest_usage(&mut self, upload: &UsageUpload) -> Result<UploadReceipt, CenterError> {
        if upload.items.len() > USAGE_BATCH_MAX {
            return Err(CenterError::Mismatch(format!(
                "at most {USAGE_BATCH_MAX} items per upload"
            )));
        }
        if self.device_role(upload.terminal_id)? != valuecard_core::cert::Role::PaymentTerminal {
            return Err(CenterError::NotAuthorized(upload.terminal_id));
        }
        let terminal_key = self.device_key(upload.terminal_id)?;
        let troubled = self.troubled_terminals()?;
        let mut receipt = UploadReceipt::default();
        let mut keys = KeyCache::default();
        // Cheap checks first, then every signature of the batch at once.
        let mut candidates = Vec::with_capacity(upload.items.len());
        for item in &upload.items {
            // Figs. 10-12: a card last written by a listed terminal after its listing.
            if let Err(refusal) = troubled.check_record(&item.previous_usage) {
                receipt.refused.push(refuse(item, refusal.to_string()));
                continue;
            }
            match self.check_item(upload.terminal_id, &terminal_key, item, &mut keys) {
                Ok(signed) => candidates.push((item, signed)),
                Err(ItemError::Refused(reason)) => receipt.refused.push(refuse(item, reason)),
                // The center could not read its own records: the upload fails as a whole
                // and the terminal sends it again. Answered as a refusal, the terminal
                // would mark the item done and the purchase would never be counted.
                Err(ItemError::Center(error)) => return Err(error),
            }
        }
        let batch: Vec<(PublicKey, &[u8], Signature)> = candidates
            .iter()
            .flat_map(|(_, signed)| {
                signed
                    .iter()
                    .map(|(key, message, signature)| (*key, message.as_slice(), *signature))
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let verified: Vec<&UsageItem> = if verify_batch(&batch, threads).is_ok() {
            candidates.iter().map(|(item, _)| *item).collect()
        } else {
            // Some signature is bad: find which, one by one, strictly.
            let mut good = Vec::with_capacity(candidates.len());
            for (item, signed) in &candidates {
                if signed
                    .iter()
                    .all(|(key, message, signature)| key.verify(message, signature).is_ok())
                {
                    good.push(*item);
                } else {
                    receipt
                        .refused
                        .push(refuse(item, "a signature does not verify"));
                }
            }
            good
        };
        let today = self.today().0;
        let terminal_id = upload.terminal_id;
        let outcome = self.db.transaction(|tx| {
            let mut stored = 0;
            let mut duplicates = 0;
            let mut refused = Vec::new();
            let mut clones = Vec::new();
            let mut latest = std::collections::HashMap::new();
            let mut facts = std::collections::HashMap::new();
            for item in verified {
                let card = card_facts(tx, &mut facts, &item.card_id)?;
                match store_item(tx, terminal_id, item, card, &mut latest, today)? {
                    Stored::New { clone } => {
                        stored += 1;
                        if clone && !clones.contains(&item.card_id) {
                            clones.push(item.card_id);
                        }
                    }
                    Stored::Duplicate => duplicates += 1,
                    Stored::Conflict => refused.push(refuse(
                        item,
                        "an item with this sequence was stored with other content",
                    )),
                }
            }
            update_remaining_values(tx, &latest, today)?;
            for card_id in &clones {
                crate::loads::list_and_block(
                    tx,
                    card_id,
                    ListReason::Cloned,
                    crate::alerts::AlertKind::Cloned,
                    "one card state was spent twice in the usage records",
                    today,
                )?;
            }
            Ok((stored, duplicates, refused, clones))
        })?;
        receipt.stored = outcome.0;
        receipt.duplicates = outcome.1;
        receipt.refused.extend(outcome.2);
        receipt.clones_detected = outcome.3;
        Ok(receipt)
    }

    /// The consistency checks of one item, and the three signatures it must carry: the
    /// card's SU over the state it spent from (so no terminal can invent a sale or frame a
    /// card), the uploading terminal's ST over the purchase, and the previous writer's
    /// signature over that state (a certified payment terminal, or the center for a load).
    fn check_item(
        &mut self,
        terminal_id: DeviceId,
        terminal_key: &PublicKey,
        item: &UsageItem,
        keys: &mut KeyCache,
    ) -> Result<[(PublicKey, Vec<u8>, Signature); 3], ItemError> {
        let expected_after = item
            .balance_before
            .checked_sub(item.amount)
            .map_err(|_| "the amount exceeds the balance")?;
        if expected_after != item.balance_after
            || item.amount == valuecard_core::money::Amount::ZERO
        {
            return Err("balances do not add up".into());
        }
        if item.amount > item.amount_max {
            return Err("the amount exceeds what the card agreed to".into());
        }
        let previous = &item.previous_usage;
        if previous.counter != item.card_counter || previous.balance_after != item.balance_before {
            return Err("the previous usage record does not describe the state spent from".into());
        }
        let writer_key = match previous.kind {
            TransactionKind::Load => self.anchor().public_key,
            TransactionKind::Purchase
            | TransactionKind::TransferOut
            | TransactionKind::TransferIn => {
                match keys.writers.get(&(previous.writer, previous.kind)) {
                    Some(key) => *key,
                    None => {
                        let key = self
                            .terminal_key_any_status(previous.writer, previous.kind)
                            .map_err(|error| lookup_failed(error, "the previous writer: "))?;
                        keys.writers.insert((previous.writer, previous.kind), key);
                        key
                    }
                }
            }
        };
        let card_key = match keys.cards.get(&item.card_id) {
            Some(key) => *key,
            None => {
                let key = self
                    .card_public_key(&item.card_id)
                    .map_err(|error| lookup_failed(error, ""))?;
                keys.cards.insert(item.card_id, key);
                key
            }
        };
        Ok([
            (
                card_key,
                item.card_signed_message(terminal_id),
                item.card_signature,
            ),
            (
                *terminal_key,
                item.commit(terminal_id).signed_message(),
                item.terminal_signature,
            ),
            (
                writer_key,
                previous.signed_message(&item.card_id),
                previous.signature,
            ),
        ])
    }

    /// The key of the writer of a record of `kind` that was ever installed (a retired
    /// terminal's earlier records stay verifiable): a payment terminal for a purchase, a
    /// settlement terminal for a transfer. Any other device, a dispenser included, is
    /// refused, so that no device's signature passes for a record its role never writes.
    pub(crate) fn terminal_key_any_status(
        &mut self,
        device_id: DeviceId,
        kind: TransactionKind,
    ) -> Result<PublicKey, CenterError> {
        let wanted = match kind {
            TransactionKind::Purchase => valuecard_core::cert::Role::PaymentTerminal,
            TransactionKind::TransferOut | TransactionKind::TransferIn => {
                valuecard_core::cert::Role::SettlementTerminal
            }
            // The center writes loads itself; no device's key vouches for one.
            TransactionKind::Load => return Err(CenterError::NotAuthorized(device_id)),
        };
        let row = self
            .db
            .query_optional(
                "SELECT signing_key, role FROM devices WHERE device_id = $1 AND status != 'allocated'",
                &[device_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownDevice(device_id))?;
        let role = u8::try_from(row.int(1)?)
            .ok()
            .and_then(valuecard_core::cert::Role::from_u8);
        if role != Some(wanted) {
            return Err(CenterError::NotAuthorized(device_id));
        }
        PublicKey::from_bytes(&row.bytes(0)?).map_err(|_| {
            CenterError::Storage(format!("stored key of device {device_id} is invalid"))
        })
    }

    /// The certified signing key of an installed device.
    pub fn device_key(
        &mut self,
        device_id: DeviceId,
    ) -> Result<valuecard_core::crypto::PublicKey, CenterError> {
        let row = self
            .db
            .query_optional(
                "SELECT signing_key FROM devices WHERE device_id = $1 AND status = 'installed'",
                &[device_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownDevice(device_id))?;
        valuecard_core::crypto::PublicKey::from_bytes(&row.bytes(0)?).map_err(|_| {
            CenterError::Storage(format!("stored key of device {device_id} is invalid"))
        })
    }

    /// Clones found so far.
    pub fn cloned_cards(&mut self) -> Result<Vec<CardId>, CenterError> {
        let rows = self.db.query(
            "SELECT subject FROM list_entries WHERE kind = 'card' AND reason = 'cloned' ORDER BY version",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                CardId::from_slice(&row.bytes(0)?).map_err(|e| CenterError::Storage(e.to_string()))
            })
            .collect()
    }

    /// Committed purchases the center has received, in minor units and count.
    pub fn reported_spending(&mut self) -> Result<(u64, u64), CenterError> {
        let row = self.db.query_one(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT), CAST(COUNT(*) AS BIGINT) FROM usage_records",
            &[],
        )?;
        Ok((row.int(0)? as u64, row.int(1)? as u64))
    }
}

enum Stored {
    New { clone: bool },
    Duplicate,
    Conflict,
}

/// What ingestion needs to know about a card beyond its records, looked up once per batch:
/// whether a load of it is pending (only then can a purchase settle one), and whether it
/// was reported destroyed (and restored).
#[derive(Debug, Clone, Copy)]
struct CardFacts {
    loads_pending: bool,
    reported: bool,
    restored: bool,
}

fn card_facts(
    tx: &mut dyn Executor,
    facts: &mut std::collections::HashMap<CardId, CardFacts>,
    card_id: &CardId,
) -> Result<CardFacts, CenterError> {
    if let Some(known) = facts.get(card_id) {
        return Ok(*known);
    }
    let row = tx.query_one(
        "SELECT CAST((SELECT COUNT(*) FROM loads WHERE card_id = $1 AND status = 'pending') AS BIGINT),
                CAST((SELECT COUNT(*) FROM restore_requests WHERE card_id = $1) AS BIGINT),
                CAST((SELECT COUNT(*) FROM card_restorations WHERE card_id = $1) AS BIGINT)",
        &[card_id.0[..].into()],
    )?;
    let known = CardFacts {
        loads_pending: row.int(0)? > 0,
        reported: row.int(1)? > 0,
        restored: row.int(2)? > 0,
    };
    facts.insert(*card_id, known);
    Ok(known)
}

fn store_item(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    item: &UsageItem,
    card: CardFacts,
    latest: &mut std::collections::HashMap<CardId, (u32, Amount)>,
    today: u32,
) -> Result<Stored, CenterError> {
    let digest = item.usage_management_digest();
    // Seen twice: the same card state already spent by another purchase, or by a committed
    // load. Asked before the insert, so the record does not find itself.
    let spent = crate::loads::state_consumed_by_other(tx, &item.card_id, item.card_counter, None)?;
    let inserted = tx.execute(
        "INSERT INTO usage_records (terminal_id, terminal_sequence, card_id, card_counter, amount_minor,
             balance_after_minor, usage_digest, purchase_date, terminal_signature, previous_writer, card_signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (terminal_id, terminal_sequence) DO NOTHING",
        &[
            terminal_id.0[..].into(),
            item.terminal_sequence.into(),
            item.card_id.0[..].into(),
            item.card_counter.into(),
            Value::Int(item.amount.minor() as i64),
            Value::Int(item.balance_after.minor() as i64),
            digest[..].into(),
            item.date.0.into(),
            item.terminal_signature.0[..].into(),
            item.previous_usage.writer.0[..].into(),
            item.card_signature.0[..].into(),
        ],
    )?;
    if inserted == 0 {
        // This terminal already sent this sequence: a retry, or different content under it.
        let existing = tx.query_one(
            "SELECT card_id, card_counter, amount_minor, usage_digest FROM usage_records
             WHERE terminal_id = $1 AND terminal_sequence = $2",
            &[terminal_id.0[..].into(), item.terminal_sequence.into()],
        )?;
        let same = existing.bytes(0)? == item.card_id.0
            && existing.int(1)? == i64::from(item.card_counter)
            && existing.int(2)? == item.amount.minor() as i64
            && existing.bytes(3)? == digest;
        return Ok(if same {
            Stored::Duplicate
        } else {
            Stored::Conflict
        });
    }
    let mut clone = spent;
    // This purchase spent state `card_counter` on some copy of the card: a load still pending
    // there can never apply to that copy (if another copy holds it, that shows when it
    // surfaces, as a state consumed twice).
    if card.loads_pending {
        crate::loads::cancel_pending_at(tx, &item.card_id, item.card_counter)?;
    }
    // The state it spent from was written by a load: that load reached the card.
    if item.previous_usage.kind == TransactionKind::Load {
        if let Some(load) = crate::loads::load_by_number(tx, item.previous_usage.writer_sequence)? {
            if load.card_id == item.card_id && load.is_record(&item.previous_usage) {
                clone |= crate::loads::commit_load(tx, &load, today)?;
            }
        }
    }
    if card.reported {
        flag_reported_card(tx, item, card.restored, today)?;
    }
    let counter_after = item.card_counter.saturating_add(1);
    let newest = latest
        .entry(item.card_id)
        .or_insert((counter_after, item.balance_after));
    if counter_after > newest.0 {
        *newest = (counter_after, item.balance_after);
    }
    Ok(Stored::New { clone })
}

/// A purchase by a card reported destroyed: before its value went to a replacement it is
/// netted (the remaining value moves down with it); after, the amount is a loss to report.
fn flag_reported_card(
    tx: &mut dyn Executor,
    item: &UsageItem,
    restored: bool,
    today: u32,
) -> Result<(), CenterError> {
    let (kind, detail) = if restored {
        (
            crate::alerts::AlertKind::SpentAfterRestore,
            format!(
                "spent {} at counter {} after its value went to a replacement card",
                item.amount, item.card_counter
            ),
        )
    } else {
        (
            crate::alerts::AlertKind::SpentAfterReport,
            format!(
                "spent {} at counter {} after it was reported destroyed (netted before restore)",
                item.amount, item.card_counter
            ),
        )
    };
    crate::alerts::raise(tx, &item.card_id.0, kind, &detail, today)
}

/// The remaining-value records of a batch, one statement per card: each moves forward only.
fn update_remaining_values(
    tx: &mut dyn Executor,
    latest: &std::collections::HashMap<CardId, (u32, Amount)>,
    today: u32,
) -> Result<(), CenterError> {
    for (card_id, (counter, balance)) in latest {
        tx.execute(
            "INSERT INTO remaining_values (card_id, balance_minor, card_counter, updated_on) VALUES ($1, $2, $3, $4)
             ON CONFLICT (card_id) DO UPDATE SET balance_minor = excluded.balance_minor,
                 card_counter = excluded.card_counter, updated_on = excluded.updated_on
             WHERE excluded.card_counter > remaining_values.card_counter",
            &[card_id.0[..].into(), Value::Int(balance.minor() as i64), (*counter).into(), today.into()],
        )?;
    }
    Ok(())
}

/// Adds a card to the list (once; a later reason does not replace the first).
pub(crate) fn list_card(
    tx: &mut dyn Executor,
    card_id: &CardId,
    reason: ListReason,
    today: u32,
) -> Result<bool, CenterError> {
    let listed = tx.query_optional(
        "SELECT version FROM list_entries WHERE kind = 'card' AND subject = $1",
        &[card_id.0[..].into()],
    )?;
    if listed.is_some() {
        return Ok(false);
    }
    let version = crate::db::next_in_sequence(tx, "list")?;
    tx.execute(
        "INSERT INTO list_entries (version, kind, subject, reason, added_on) VALUES ($1, 'card', $2, $3, $4)",
        &[version.into(), card_id.0[..].into(), reason.as_str().into(), today.into()],
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::SeedableRng;
    use valuecard_core::cert::Role;
    use valuecard_core::crypto::{random_array, SealingKeyPair, SigningKeyPair};
    use valuecard_core::messages::center::InstallationRequest;
    use valuecard_core::time::{Date, FixedClock};

    fn install(center: &mut Center, role: Role, rng: &mut rand_chacha::ChaCha20Rng) -> DeviceId {
        let device_id = center.allocate_device_id().unwrap();
        let request = InstallationRequest {
            device_id,
            signing_key: SigningKeyPair::generate(rng).public_key(),
            sealing_key: SealingKeyPair::generate(rng).public_key(),
            challenge: random_array(rng),
        };
        center.install_device(&request, role).unwrap();
        device_id
    }

    #[test]
    fn a_writer_key_is_given_only_for_the_records_its_role_writes() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let today = Date::from_ymd(2026, 6, 1).unwrap();
        let mut center = Center::ephemeral(Box::new(FixedClock(today)), &mut rng).unwrap();
        let payment = install(&mut center, Role::PaymentTerminal, &mut rng);
        let settlement = install(&mut center, Role::SettlementTerminal, &mut rng);
        let dispenser = install(&mut center, Role::Dispenser, &mut rng);
        let cases = [
            (payment, TransactionKind::Purchase, true),
            (payment, TransactionKind::TransferIn, false),
            (payment, TransactionKind::TransferOut, false),
            (settlement, TransactionKind::TransferIn, true),
            (settlement, TransactionKind::TransferOut, true),
            (settlement, TransactionKind::Purchase, false),
            (dispenser, TransactionKind::Purchase, false),
            (dispenser, TransactionKind::Load, false),
        ];
        for (device, kind, allowed) in cases {
            let key = center.terminal_key_any_status(device, kind);
            assert_eq!(key.is_ok(), allowed, "{device} {kind:?}: {key:?}");
            if !allowed {
                assert!(matches!(key, Err(CenterError::NotAuthorized(d)) if d == device));
            }
        }
    }
}
