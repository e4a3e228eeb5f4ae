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

use crate::sql::{Dialect, Executor};
use crate::Center;

pub mod partitions;
mod reads;
mod store;

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

/// A card as stored: status, certified key, dispenser.
type CardRecord = (String, Option<Vec<u8>>, Vec<u8>);

/// Keys looked up once per batch.
#[derive(Default)]
struct KeyCache {
    /// By writer and record kind: the role a writer needs depends on the kind.
    writers: std::collections::HashMap<(DeviceId, TransactionKind), PublicKey>,
    /// Each card's stored record (status, key, dispenser), read for the whole upload in
    /// one statement; a card the center does not know has none.
    cards: std::collections::HashMap<CardId, CardRecord>,
    /// Card keys already decoded (decoding a point costs about as much as a hash).
    card_keys: std::collections::HashMap<CardId, PublicKey>,
}

impl KeyCache {
    /// The card records of every card in `items`.
    fn read_cards(
        &mut self,
        db: &mut crate::sql::Database,
        items: &[UsageItem],
    ) -> Result<(), CenterError> {
        let mut seen = std::collections::HashSet::new();
        let cards: Vec<Vec<u8>> = items
            .iter()
            .filter(|item| seen.insert(item.card_id))
            .map(|item| item.card_id.0.to_vec())
            .collect();
        let rows = crate::sql::query_set(
            db,
            "SELECT cards.card_id, cards.status, cards.signing_key, cards.dispenser_id
             FROM cards WHERE cards.card_id IN (SELECT set_keys.card_id FROM {keys})",
            &crate::sql::SetKeys::new().bytes("card_id", cards),
        )?;
        for row in rows {
            let card_id = CardId::from_slice(&row.bytes(0)?)
                .map_err(|e| CenterError::Storage(e.to_string()))?;
            self.cards.insert(
                card_id,
                (row.text(1)?, row.optional_bytes(2)?, row.bytes(3)?),
            );
        }
        Ok(())
    }

    /// A card's certified key, with the answers of `Center::card_public_key`.
    fn card_key(&mut self, card_id: &CardId) -> Result<PublicKey, CenterError> {
        if let Some(key) = self.card_keys.get(card_id) {
            return Ok(*key);
        }
        let (status, key, dispenser) = self
            .cards
            .get(card_id)
            .ok_or(CenterError::UnknownCard(*card_id))?;
        DeviceId::from_slice(dispenser).map_err(|e| CenterError::Storage(e.to_string()))?;
        let key = crate::certified_card_key(card_id, status, key.clone())?;
        self.card_keys.insert(*card_id, key);
        Ok(key)
    }
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

/// Who must have signed an item besides the uploading terminal: the card, and the writer
/// of the state it spent from.
#[derive(Debug, Clone, Copy)]
struct SignerKeys {
    card: PublicKey,
    writer: PublicKey,
}

/// The three signatures an item must carry, with their keys and messages: the card's SU
/// over the state it spent from (so no terminal can invent a sale or frame a card), the
/// uploading terminal's ST over the purchase, and the previous writer's signature over that
/// state (a certified payment terminal, or the center for a load).
type SignedSet = [(PublicKey, Vec<u8>, Signature); 3];

fn signed_set(
    terminal_id: DeviceId,
    terminal_key: &PublicKey,
    item: &UsageItem,
    keys: &SignerKeys,
) -> SignedSet {
    [
        (
            keys.card,
            item.card_signed_message(terminal_id),
            item.card_signature,
        ),
        (
            *terminal_key,
            item.commit(terminal_id).signed_message(),
            item.terminal_signature,
        ),
        (
            keys.writer,
            item.previous_usage.signed_message(&item.card_id),
            item.previous_usage.signature,
        ),
    ]
}

/// The fewest signatures a batch splits over the cores to verify.
const PARALLEL_VERIFY_MIN_SIGNATURES: usize = 2048;

/// Why one usage item was refused (the rest of the batch goes on).
fn refuse(item: &UsageItem, reason: impl Into<String>) -> (u32, String) {
    (item.terminal_sequence, reason.into())
}

impl Center {
    /// Verifies and stores a batch of usage items from one terminal, idempotently: an item
    /// already stored with the same content counts as a duplicate, one stored with other
    /// content is refused. Nothing commits before every signature it stores has verified.
    pub fn ingest_usage(&mut self, upload: &UsageUpload) -> Result<UploadReceipt, CenterError> {
        if upload.items.len() > USAGE_BATCH_MAX {
            return Err(CenterError::Mismatch(format!(
                "at most {USAGE_BATCH_MAX} items per upload"
            )));
        }
        let (role, terminal_key) = self.installed_device(upload.terminal_id)?;
        if role != valuecard_core::cert::Role::PaymentTerminal {
            return Err(CenterError::NotAuthorized(upload.terminal_id));
        }
        let troubled = self.troubled_terminals()?;
        let mut receipt = UploadReceipt::default();
        let mut keys = KeyCache::default();
        keys.read_cards(&mut self.db, &upload.items)?;
        // Each month the batch writes into has its partition before the batch begins
        // (PostgreSQL; see `partitions`).
        let months = partitions::months_wanted(self.today(), upload.items.iter().map(|i| i.date));
        partitions::ensure_partitions(&mut self.db, &months)?;
        // Cheap checks first, then every signature of the batch at once.
        let mut candidates = Vec::with_capacity(upload.items.len());
        for item in &upload.items {
            // Figs. 10-12: a card last written by a listed terminal after its listing.
            if let Err(refusal) = troubled.check_record(&item.previous_usage) {
                receipt.refused.push(refuse(item, refusal.to_string()));
                continue;
            }
            match self.check_item(item, &mut keys) {
                Ok(signers) => candidates.push((item, signers)),
                Err(ItemError::Refused(reason)) => receipt.refused.push(refuse(item, reason)),
                // The center could not read its own records: the upload fails as a whole
                // and the terminal sends it again. Answered as a refusal, the terminal
                // would mark the item done and the purchase would never be counted.
                Err(ItemError::Center(error)) => return Err(error),
            }
        }
        // A terminal's request (a few hundred signatures) verifies on one thread: split, each
        // half verifies less efficiently (Pippenger's method gains with the batch), and under
        // load the other cores serve other requests anyway. A large batch uses every core.
        let threads = if candidates.len() * 3 < PARALLEL_VERIFY_MIN_SIGNATURES {
            1
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        };
        let today = self.today().0;
        let terminal_id = upload.terminal_id;
        let all: Vec<&UsageItem> = candidates.iter().map(|(item, _)| *item).collect();
        // The batch is stored while its signatures are checked, in a transaction that
        // commits only once every one of them verified: the database's part (round trips,
        // index updates, the commit's flush) runs beside building the signed messages and
        // verifying them instead of after. Should any signature fail, the transaction
        // rolls back: nothing of it was ever visible, and the items are stored again
        // without the forged ones.
        let db = &mut self.db;
        let candidates = &candidates;
        let terminal_key = &terminal_key;
        let (stored, sets) = std::thread::scope(|scope| {
            let verification = scope.spawn(move || {
                let sets: Vec<SignedSet> = candidates
                    .iter()
                    .map(|(item, signers)| signed_set(terminal_id, terminal_key, item, signers))
                    .collect();
                let batch: Vec<(PublicKey, &[u8], Signature)> = sets
                    .iter()
                    .flat_map(|set| {
                        set.iter()
                            .map(|(key, message, signature)| (*key, message.as_slice(), *signature))
                    })
                    .collect();
                let verified = verify_batch(&batch, threads).is_ok();
                (verified, sets)
            });
            let mut sets = None;
            let mut verification = Some(verification);
            // The verdict, once the verification finished: the transaction may run again
            // after a conflict on PostgreSQL, and then uses it as it is.
            let mut verdict = None;
            // SQLite admits one writer at a time: the verdict comes before the write lock is
            // taken, so that other requests write while this one verifies.
            if !db.is_postgres() {
                if let Some(Ok((verified, built))) = verification.take().map(|t| t.join()) {
                    sets = Some(built);
                    verdict = Some(verified);
                }
            }
            let stored = db.transaction_if(|tx| {
                let mut verified = || {
                    if let Some(verdict) = verdict {
                        return Ok(verdict);
                    }
                    match verification.take().map(|thread| thread.join()) {
                        Some(Ok((verified, built))) => {
                            sets = Some(built);
                            verdict = Some(verified);
                            Ok(verified)
                        }
                        _ => Err(CenterError::Storage(
                            "the signature verification stopped".into(),
                        )),
                    }
                };
                // SQLite has the verdict already (see above). PostgreSQL works in its own
                // process, and what the batch waits for there is mostly round trips and the
                // server's writing: it stores while the signatures verify.
                if tx.dialect() == Dialect::Sqlite && !verified()? {
                    return Ok(None);
                }
                let outcome = store::store_batch(tx, terminal_id, &all, today)?;
                if tx.dialect() == Dialect::Postgres && !verified()? {
                    return Ok(None);
                }
                Ok(Some(outcome))
            });
            (stored, sets)
        });
        let outcome = match stored? {
            Some(outcome) => outcome,
            None => {
                // Some signature is bad: find which, one by one, strictly.
                let sets = sets.ok_or_else(|| {
                    CenterError::Storage("the signature verification stopped".into())
                })?;
                let mut good = Vec::with_capacity(candidates.len());
                for ((item, _), set) in candidates.iter().zip(&sets) {
                    if set
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
                self.db
                    .transaction(|tx| store::store_batch(tx, terminal_id, &good, today))?
            }
        };
        receipt.stored = outcome.stored;
        receipt.duplicates = outcome.duplicates;
        receipt.refused.extend(outcome.refused);
        receipt.clones_detected = outcome.clones;
        Ok(receipt)
    }
    /// The consistency checks of one item, and the keys of the signatures it must carry
    /// (see `signed_set`).
    fn check_item(
        &mut self,
        item: &UsageItem,
        keys: &mut KeyCache,
    ) -> Result<SignerKeys, ItemError> {
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
            | TransactionKind::TransferIn
            | TransactionKind::OnlinePayment
            | TransactionKind::OnlineCharge
            | TransactionKind::MigrationIn => {
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
        let card = keys
            .card_key(&item.card_id)
            .map_err(|error| lookup_failed(error, ""))?;
        Ok(SignerKeys {
            card,
            writer: writer_key,
        })
    }

    /// The key of `writer`, a device reporting records it wrote as `kind` (the online
    /// security server, the purse's transfer SAM): a device unknown or of another role is
    /// not authorized to report; only a storage failure stays what it is.
    pub(crate) fn reporting_writer_key(
        &mut self,
        writer: DeviceId,
        kind: TransactionKind,
    ) -> Result<PublicKey, CenterError> {
        match self.terminal_key_any_status(writer, kind) {
            Err(CenterError::Storage(message)) => Err(CenterError::Storage(message)),
            Err(_) => Err(CenterError::NotAuthorized(writer)),
            key => key,
        }
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
        // The center writes loads itself; no device's key vouches for one.
        let wanted = kind
            .writer_role()
            .ok_or(CenterError::NotAuthorized(device_id))?;
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
