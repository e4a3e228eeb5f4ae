//! Storing a verified upload with a handful of set statements, whatever its size.
//!
//! The outcome is, item for item, the one of storing the items one at a time in upload
//! order: the first of an upload's items under one sequence is the one stored, a card state
//! spent twice flags the card, a purchase from a load's state commits that load. The batch
//! reads what it needs first (card facts, the loads its items spent from, how each card
//! state it touches was already consumed), plays the items through in order in memory, and
//! writes the result: the records in one statement, the remaining values in another, the
//! rare load settlements, lists and alerts after them in the order they arose.
//!
//! Clone detection reads the stored consumptions of each card state before the batch and
//! counts the batch's own on top, so a state spent twice within one upload is found as
//! surely as one spent in two.

use std::collections::{HashMap, HashSet};

use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, ListReason, UsageItem};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;

use crate::alerts::AlertKind;
use crate::loads::StoredLoad;
use crate::sql::{execute_set, insert_set, query_set, Dialect, Executor, SetKeys};

use super::reads::{
    card_facts, corrupt, loads_named, state_keys, state_uses, stored_contents, State, StateUse,
};

/// What storing a batch came to.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<(u32, String)>,
    /// Cards found cloned, in the order they were found.
    pub clones: Vec<CardId>,
}

/// A write that lists, blocks or alerts, kept until the batch's records are written and
/// then made in the order it arose (alert and list numbers follow that order).
enum Effect {
    ListAndBlock {
        card_id: CardId,
        alert: AlertKind,
        detail: String,
    },
    Alert {
        card_id: CardId,
        kind: AlertKind,
        detail: String,
    },
}

/// The columns of `items` (each with its usage digest, computed once) under the names the
/// statements below use.
fn item_keys(terminal_id: DeviceId, items: &[(&UsageItem, Vec<u8>)], with_body: bool) -> SetKeys {
    let ints =
        |f: &dyn Fn(&UsageItem) -> i64| -> Vec<i64> { items.iter().map(|(i, _)| f(i)).collect() };
    let bytes = |f: &dyn Fn(&UsageItem) -> Vec<u8>| -> Vec<Vec<u8>> {
        items.iter().map(|(i, _)| f(i)).collect()
    };
    let keys = SetKeys::new()
        .bytes("terminal_id", vec![terminal_id.0.to_vec(); items.len()])
        .ints(
            "terminal_sequence",
            ints(&|i| i64::from(i.terminal_sequence)),
        )
        .bytes("card_id", bytes(&|i| i.card_id.0.to_vec()))
        .ints("card_counter", ints(&|i| i64::from(i.card_counter)))
        .ints("amount_minor", ints(&|i| i.amount.minor() as i64))
        .bytes(
            "usage_digest",
            items.iter().map(|(_, digest)| digest.clone()).collect(),
        )
        .ints("purchase_date", ints(&|i| i64::from(i.date.0)));
    if !with_body {
        return keys;
    }
    keys.ints(
        "balance_after_minor",
        ints(&|i| i.balance_after.minor() as i64),
    )
    .bytes(
        "terminal_signature",
        bytes(&|i| i.terminal_signature.0.to_vec()),
    )
    .bytes(
        "previous_writer",
        bytes(&|i| i.previous_usage.writer.0.to_vec()),
    )
    .bytes("card_signature", bytes(&|i| i.card_signature.0.to_vec()))
}

/// Writes the records of `items` (at most one per sequence) that no record holds yet under
/// their sequence, and returns those sequences: each sequence claimed in `usage_sequences`,
/// each card state's first record in `card_states` (see `claim`), the bodies in
/// `usage_records`.
fn insert_records(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    items: &[&UsageItem],
    spent_before: &HashSet<State>,
) -> Result<HashSet<u32>, CenterError> {
    let items: Vec<(&UsageItem, Vec<u8>)> = items
        .iter()
        .map(|item| (*item, item.usage_management_digest().to_vec()))
        .collect();
    let sequences = claim(tx, terminal_id, &items, spent_before)?;
    let new: Vec<(&UsageItem, Vec<u8>)> = items
        .into_iter()
        .filter(|(item, _)| sequences.contains(&item.terminal_sequence))
        .collect();
    // The bodies have no uniqueness of their own (the two claims above hold it): they go
    // in by COPY on PostgreSQL, the cheapest way into a table, partitioned or not.
    insert_set(tx, "usage_records", &item_keys(terminal_id, &new, true))?;
    Ok(sequences)
}

/// Claims the sequences and card states of `items`: the sequences already stored are read
/// first, and of the rest each goes into `usage_sequences`, and each card state no record
/// had spent before (`spent_before`, read by `state_uses` in this transaction) into
/// `card_states` with the batch's earliest item spending it. Plain appends (COPY on
/// PostgreSQL, one INSERT per row on SQLite) with no `ON CONFLICT`: on SQLite no other
/// writer runs beside the batch; on PostgreSQL, should another transaction claim one of
/// these keys meanwhile, the unique key refuses the row, and since this SERIALIZABLE
/// transaction read that key first, PostgreSQL reports a serialization failure and the
/// batch runs again, then reading the other's claim. On a database without SERIALIZABLE
/// the refusal fails the upload, which the terminal sends again. Either way the database
/// holds one row per key: a sequence stored once, a card state's first record once.
fn claim(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    items: &[(&UsageItem, Vec<u8>)],
    spent_before: &HashSet<State>,
) -> Result<HashSet<u32>, CenterError> {
    let keys = SetKeys::new()
        .bytes("terminal_id", vec![terminal_id.0.to_vec(); items.len()])
        .ints(
            "terminal_sequence",
            items
                .iter()
                .map(|(item, _)| i64::from(item.terminal_sequence))
                .collect(),
        );
    let stored: HashSet<u32> = query_set(
        tx,
        "SELECT u.terminal_sequence FROM usage_sequences u JOIN {keys}
             ON u.terminal_id = set_keys.terminal_id
             AND u.terminal_sequence = set_keys.terminal_sequence",
        &keys,
    )?
    .iter()
    .map(|row| u32::try_from(row.int(0)?).map_err(|_| corrupt("sequence")))
    .collect::<Result<_, _>>()?;
    let new: Vec<(&UsageItem, Vec<u8>)> = items
        .iter()
        .filter(|(item, _)| !stored.contains(&item.terminal_sequence))
        .cloned()
        .collect();
    let mut firsts = HashSet::new();
    let first_items: Vec<(&UsageItem, Vec<u8>)> = new
        .iter()
        .filter(|(item, _)| {
            let state = (item.card_id, item.card_counter);
            !spent_before.contains(&state) && firsts.insert(state)
        })
        .cloned()
        .collect();
    insert_set(
        tx,
        "usage_sequences",
        &item_keys(terminal_id, &new, false).without("purchase_date"),
    )?;
    insert_set(
        tx,
        "card_states",
        &item_keys(terminal_id, &first_items, false).without("amount_minor"),
    )?;
    Ok(new.iter().map(|(item, _)| item.terminal_sequence).collect())
}

fn dedup<T: Eq + std::hash::Hash + Copy>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    values
        .into_iter()
        .filter(|value| seen.insert(*value))
        .collect()
}

/// Stores the verified items of one upload inside the caller's transaction.
pub(super) fn store_batch(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    items: &[&UsageItem],
    today: u32,
) -> Result<Outcome, CenterError> {
    let mut outcome = Outcome::default();
    if items.is_empty() {
        return Ok(outcome);
    }
    if tx.dialect() == Dialect::Postgres {
        // Under SERIALIZABLE a sequential scan locks the whole table against every other
        // writer (a relation-level predicate lock): concurrent batches of different
        // terminals and cards would then refuse each other, as a planner picks such scans
        // on small tables. Index lookups lock only what they read.
        tx.execute("SET LOCAL enable_seqscan = off", &[])?;
    }
    // The first item under each sequence is the one that can be stored; any later one is
    // compared with what was stored, as a retry would be.
    let mut seen = HashSet::with_capacity(items.len());
    let firsts: Vec<bool> = items
        .iter()
        .map(|item| seen.insert(item.terminal_sequence))
        .collect();
    let candidates: Vec<&UsageItem> = items
        .iter()
        .zip(&firsts)
        .filter(|(_, first)| **first)
        .map(|(item, _)| *item)
        .collect();

    // Everything the items are checked against, as it was before the batch.
    let cards = dedup(candidates.iter().map(|item| item.card_id));
    let facts = card_facts(tx, &cards)?;
    let loads_named_by_items = dedup(
        candidates
            .iter()
            .filter(|item| item.previous_usage.kind == TransactionKind::Load)
            .map(|item| (item.card_id, item.previous_usage.writer_sequence)),
    );
    let mut loads = loads_named(tx, &loads_named_by_items)?;
    let states = dedup(
        candidates
            .iter()
            .map(|item| (item.card_id, item.card_counter))
            .chain(loads.values().map(|load| (load.card_id, load.card_counter))),
    );
    let mut uses = state_uses(tx, &states)?;

    let spent_before: HashSet<State> = uses
        .iter()
        .filter(|(_, state_use)| state_use.records > 0)
        .map(|(state, _)| *state)
        .collect();
    let inserted = &insert_records(tx, terminal_id, &candidates, &spent_before)?;
    let repeated: Vec<u32> = items
        .iter()
        .zip(&firsts)
        .filter(|(item, first)| !**first || !inserted.contains(&item.terminal_sequence))
        .map(|(item, _)| item.terminal_sequence)
        .collect();
    let stored = if repeated.is_empty() {
        HashMap::new()
    } else {
        stored_contents(tx, terminal_id, &dedup(repeated))?
    };

    // The items in upload order, against the state as each would find it.
    let mut effects = Vec::new();
    let mut cancelled_states: Vec<State> = Vec::new();
    let mut committed_loads: Vec<u32> = Vec::new();
    let mut latest: HashMap<CardId, (u32, Amount)> = HashMap::new();
    for (item, first) in items.iter().zip(&firsts) {
        if !*first || !inserted.contains(&item.terminal_sequence) {
            let same = stored.get(&item.terminal_sequence).is_some_and(
                |(card, counter, amount, digest)| {
                    *card == item.card_id.0
                        && *counter == i64::from(item.card_counter)
                        && *amount == item.amount.minor() as i64
                        && *digest == item.usage_management_digest()
                },
            );
            if same {
                outcome.duplicates += 1;
            } else {
                outcome.refused.push((
                    item.terminal_sequence,
                    "an item with this sequence was stored with other content".to_owned(),
                ));
            }
            continue;
        }
        outcome.stored += 1;
        let state = (item.card_id, item.card_counter);
        let card = facts.get(&item.card_id).copied().unwrap_or_default();
        let spent_state = uses.entry(state).or_default();
        let mut clone = spent_state.consumed_by_other(None);
        spent_state.records += 1;
        // This purchase spent the state on some copy of the card: a load still pending
        // there can never apply to that copy.
        if card.loads_pending {
            cancelled_states.push(state);
            cancel_pending(&mut loads, state);
        }
        // The state it spent from was written by a load: that load reached the card.
        if item.previous_usage.kind == TransactionKind::Load {
            let number = item.previous_usage.writer_sequence;
            if let Some(load) = loads.get(&number).cloned() {
                if load.card_id == item.card_id && load.is_record(&item.previous_usage) {
                    clone |= commit_load(
                        &load,
                        &mut loads,
                        &mut uses,
                        &mut cancelled_states,
                        &mut committed_loads,
                        &mut effects,
                    );
                }
            }
        }
        if card.reported {
            effects.push(reported_alert(item, card.restored));
        }
        if let Some(moved_at) = card.moved_at.filter(|at| item.card_counter >= *at) {
            effects.push(Effect::Alert {
                card_id: item.card_id,
                kind: AlertKind::SpentAfterMove,
                detail: format!(
                    "spent {} at counter {} after its purse moved to a new chip at counter {moved_at}",
                    item.amount, item.card_counter
                ),
            });
        }
        let counter_after = item.card_counter.saturating_add(1);
        let newest = latest
            .entry(item.card_id)
            .or_insert((counter_after, item.balance_after));
        if counter_after > newest.0 {
            *newest = (counter_after, item.balance_after);
        }
        if clone && !outcome.clones.contains(&item.card_id) {
            outcome.clones.push(item.card_id);
        }
    }

    // The loads first cancelled, then committed: a load both pending at a state spent and
    // proven applied ends committed, as it would item by item.
    let cancelled_states = dedup(cancelled_states);
    execute_set(
        tx,
        "UPDATE loads SET status = 'cancelled' WHERE status = 'pending'
             AND (card_id, card_counter) IN (SELECT set_keys.card_id, set_keys.card_counter FROM {keys})",
        &state_keys(&cancelled_states),
    )?;
    // Each by its card and number, as the loads were read.
    let committed: Vec<(CardId, u32)> = committed_loads
        .iter()
        .filter_map(|number| loads.get(number).map(|load| (load.card_id, *number)))
        .collect();
    execute_set(
        tx,
        "UPDATE loads SET status = 'committed'
             WHERE (card_id, load_number) IN
                 (SELECT set_keys.card_id, set_keys.load_number FROM {keys})",
        &SetKeys::new()
            .bytes(
                "card_id",
                committed.iter().map(|(card, _)| card.0.to_vec()).collect(),
            )
            .ints(
                "load_number",
                committed.iter().map(|(_, n)| i64::from(*n)).collect(),
            ),
    )?;
    update_remaining_values(tx, &latest, today)?;
    for effect in effects {
        match effect {
            Effect::ListAndBlock {
                card_id,
                alert,
                detail,
            } => crate::loads::list_and_block(
                tx,
                &card_id,
                ListReason::Cloned,
                alert,
                &detail,
                today,
            )?,
            Effect::Alert {
                card_id,
                kind,
                detail,
            } => crate::alerts::raise(tx, &card_id.0, kind, &detail, today)?,
        }
    }
    for card_id in &outcome.clones {
        crate::loads::list_and_block(
            tx,
            card_id,
            ListReason::Cloned,
            AlertKind::Cloned,
            "one card state was spent twice in the usage records",
            today,
        )?;
    }
    Ok(outcome)
}

/// Every load of the batch still pending at `state` can no longer apply.
fn cancel_pending(loads: &mut HashMap<u32, StoredLoad>, state: State) {
    for load in loads.values_mut() {
        if (load.card_id, load.card_counter) == state && load.status == "pending" {
            load.status = "cancelled".to_owned();
        }
    }
}

/// A load proven applied by a purchase from the state it wrote (see `loads::commit_load`,
/// whose outcome this plays through): committed, its siblings at the same state cancelled,
/// and the card found cloned when something else consumed that state too. Returns whether
/// the card was found cloned. The remaining value it would move forward is moved further
/// by the purchase itself.
fn commit_load(
    load: &StoredLoad,
    loads: &mut HashMap<u32, StoredLoad>,
    uses: &mut HashMap<State, StateUse>,
    cancelled_states: &mut Vec<State>,
    committed_loads: &mut Vec<u32>,
    effects: &mut Vec<Effect>,
) -> bool {
    let state = (load.card_id, load.card_counter);
    let was = load.status.clone();
    if was == "committed" {
        return false;
    }
    if let Some(stored) = loads.get_mut(&load.load_number) {
        stored.status = "committed".to_owned();
    }
    committed_loads.push(load.load_number);
    let state_use = uses.entry(state).or_default();
    if !state_use.committed_loads.contains(&load.load_number) {
        state_use.committed_loads.push(load.load_number);
    }
    if was == "cancelled" {
        // The center cancelled it on a card's evidence, so another copy of the card (or a
        // card that lied with its own key) holds it.
        effects.push(Effect::ListAndBlock {
            card_id: load.card_id,
            alert: AlertKind::CancelledLoadApplied,
            detail: format!(
                "load {} was cancelled on the card's evidence and turned up applied",
                load.load_number
            ),
        });
        return true;
    }
    let consumed = state_use.consumed_by_other(Some(load.load_number));
    cancelled_states.push(state);
    cancel_pending(loads, state);
    if consumed {
        effects.push(Effect::ListAndBlock {
            card_id: load.card_id,
            alert: AlertKind::Cloned,
            detail: format!(
                "load {} and another update both spent card state {}",
                load.load_number, load.card_counter
            ),
        });
        return true;
    }
    false
}

/// A purchase by a card reported destroyed: before its value went to a replacement it is
/// netted (the remaining value moves down with it); after, the amount is a loss to report.
fn reported_alert(item: &UsageItem, restored: bool) -> Effect {
    let (kind, detail) = if restored {
        (
            AlertKind::SpentAfterRestore,
            format!(
                "spent {} at counter {} after its value went to a replacement card",
                item.amount, item.card_counter
            ),
        )
    } else {
        (
            AlertKind::SpentAfterReport,
            format!(
                "spent {} at counter {} after it was reported destroyed (netted before restore)",
                item.amount, item.card_counter
            ),
        )
    };
    Effect::Alert {
        card_id: item.card_id,
        kind,
        detail,
    }
}

/// The remaining-value records of a batch, in one statement: each moves forward only.
fn update_remaining_values(
    tx: &mut dyn Executor,
    latest: &HashMap<CardId, (u32, Amount)>,
    today: u32,
) -> Result<(), CenterError> {
    let keys = SetKeys::new()
        .bytes(
            "card_id",
            latest.keys().map(|card| card.0.to_vec()).collect(),
        )
        .ints(
            "balance_minor",
            latest.values().map(|(_, b)| b.minor() as i64).collect(),
        )
        .ints(
            "card_counter",
            latest.values().map(|(c, _)| i64::from(*c)).collect(),
        )
        .ints("updated_on", vec![i64::from(today); latest.len()]);
    execute_set(
        tx,
        "INSERT INTO remaining_values (card_id, balance_minor, card_counter, updated_on)
         SELECT card_id, balance_minor, card_counter, updated_on FROM {keys} WHERE true
         ON CONFLICT (card_id) DO UPDATE SET balance_minor = excluded.balance_minor,
             card_counter = excluded.card_counter, updated_on = excluded.updated_on
         WHERE excluded.card_counter > remaining_values.card_counter",
        &keys,
    )?;
    Ok(())
}
