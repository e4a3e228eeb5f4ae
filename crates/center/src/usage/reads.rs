//! What storing a batch reads first, for all its items at once: the facts of its cards, the
//! loads its items spent from, how each card state it touches was consumed already, and
//! what is stored under sequences sent again.

use std::collections::HashMap;

use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;

use crate::loads::{StoredLoad, LOAD_COLUMNS};
use crate::sql::{query_set, Executor, Row, SetKeys};

/// What ingestion needs to know about a card beyond its records: whether a load of it is
/// pending (only then can a purchase settle one), and whether it was reported destroyed
/// (and restored).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CardFacts {
    pub loads_pending: bool,
    pub reported: bool,
    pub restored: bool,
    /// The card's counter at the export of a move of its services to a new chip (seed 002).
    pub moved_at: Option<u32>,
}

/// A card state: the card and its counter before an update.
pub(super) type State = (CardId, u32);

/// How a card state was consumed: usage records that spent it, committed loads that
/// started from it (by number), transfers the card sent or received from it and online
/// updates (seed 004) made from it (counted with the transfers: updates other than a
/// terminal's or a load).
#[derive(Debug, Clone, Default)]
pub(super) struct StateUse {
    pub records: u64,
    pub committed_loads: Vec<u32>,
    pub transfers: u64,
}

impl StateUse {
    /// Whether an update other than load `except` consumed this state.
    pub fn consumed_by_other(&self, except_load: Option<u32>) -> bool {
        self.records > 0
            || self.transfers > 0
            || self
                .committed_loads
                .iter()
                .any(|load| Some(*load) != except_load)
    }
}

pub(super) fn corrupt(what: &str) -> CenterError {
    CenterError::Storage(format!("stored usage data: {what}"))
}

pub(super) fn card_of(row: &Row, index: usize) -> Result<CardId, CenterError> {
    CardId::from_slice(&row.bytes(index)?).map_err(|_| corrupt("card ID"))
}

pub(super) fn counter_of(row: &Row, index: usize) -> Result<u32, CenterError> {
    u32::try_from(row.int(index)?).map_err(|_| corrupt("card counter"))
}

fn card_keys(cards: &[CardId]) -> SetKeys {
    SetKeys::new().bytes(
        "card_id",
        cards.iter().map(|card| card.0.to_vec()).collect(),
    )
}

pub(super) fn state_keys(states: &[State]) -> SetKeys {
    SetKeys::new()
        .bytes(
            "card_id",
            states.iter().map(|(card, _)| card.0.to_vec()).collect(),
        )
        .ints(
            "card_counter",
            states
                .iter()
                .map(|(_, counter)| i64::from(*counter))
                .collect(),
        )
}

pub(super) fn card_facts(
    tx: &mut dyn Executor,
    cards: &[CardId],
) -> Result<HashMap<CardId, CardFacts>, CenterError> {
    let rows = query_set(
        tx,
        "SELECT set_keys.card_id,
                CAST((SELECT COUNT(*) FROM loads WHERE loads.card_id = set_keys.card_id
                      AND loads.status = 'pending') AS BIGINT),
                CAST((SELECT COUNT(*) FROM restore_requests r WHERE r.card_id = set_keys.card_id) AS BIGINT),
                CAST((SELECT COUNT(*) FROM card_restorations c WHERE c.card_id = set_keys.card_id) AS BIGINT),
                CAST(COALESCE((SELECT MIN(m.source_counter) FROM card_moves m
                               WHERE m.source = set_keys.card_id), -1) AS BIGINT)
         FROM {keys}",
        &card_keys(cards),
    )?;
    let mut facts = HashMap::with_capacity(rows.len());
    for row in rows {
        facts.insert(
            card_of(&row, 0)?,
            CardFacts {
                loads_pending: row.int(1)? > 0,
                reported: row.int(2)? > 0,
                restored: row.int(3)? > 0,
                moved_at: u32::try_from(row.int(4)?).ok(),
            },
        );
    }
    Ok(facts)
}

/// The loads that the batch's items name as the writers of the states they spent from,
/// each by the card that names it and its number: a lookup routed to the card's shard.
pub(super) fn loads_named(
    tx: &mut dyn Executor,
    named: &[(CardId, u32)],
) -> Result<HashMap<u32, StoredLoad>, CenterError> {
    let keys = SetKeys::new()
        .bytes(
            "card_id",
            named.iter().map(|(card, _)| card.0.to_vec()).collect(),
        )
        .ints(
            "load_number",
            named.iter().map(|(_, number)| i64::from(*number)).collect(),
        );
    let rows = query_set(
        tx,
        &format!(
            "SELECT {LOAD_COLUMNS} FROM loads
             WHERE (card_id, load_number) IN
                 (SELECT set_keys.card_id, set_keys.load_number FROM {{keys}})"
        ),
        &keys,
    )?;
    let mut loads = HashMap::with_capacity(rows.len());
    for row in &rows {
        let load = StoredLoad::from_row(row)?;
        loads.insert(load.load_number, load);
    }
    Ok(loads)
}

/// How each state was consumed before this batch (see `loads::state_consumed_by_other`):
/// its first usage record (`card_states`), transfers and committed loads, one row each, each kind read per card over the range of counters the batch
/// touches (one index range scan per card, not one probe per state and kind).
pub(super) fn state_uses(
    tx: &mut dyn Executor,
    states: &[State],
) -> Result<HashMap<State, StateUse>, CenterError> {
    let mut uses: HashMap<State, StateUse> = states
        .iter()
        .map(|state| (*state, StateUse::default()))
        .collect();
    let mut ranges: HashMap<CardId, (u32, u32)> = HashMap::new();
    for (card, counter) in states {
        let range = ranges.entry(*card).or_insert((*counter, *counter));
        range.0 = range.0.min(*counter);
        range.1 = range.1.max(*counter);
    }
    let keys = SetKeys::new()
        .bytes(
            "card_id",
            ranges.keys().map(|card| card.0.to_vec()).collect(),
        )
        .ints("low", ranges.values().map(|r| i64::from(r.0)).collect())
        .ints("high", ranges.values().map(|r| i64::from(r.1)).collect());
    let rows = query_set(
        tx,
        "SELECT CAST(0 AS BIGINT), u.card_id, u.card_counter, CAST(0 AS BIGINT)
         FROM {keys} JOIN card_states u ON u.card_id = set_keys.card_id
             AND u.card_counter BETWEEN set_keys.low AND set_keys.high
         UNION ALL
         SELECT CAST(1 AS BIGINT), t.destination, t.destination_counter, CAST(0 AS BIGINT)
         FROM {keys} JOIN transfers t ON t.destination = set_keys.card_id
             AND t.destination_counter BETWEEN set_keys.low AND set_keys.high
             AND t.proof_status = 'received'
         UNION ALL
         SELECT CAST(1 AS BIGINT), t.source, t.source_counter, CAST(0 AS BIGINT)
         FROM {keys} JOIN transfers t ON t.source = set_keys.card_id
             AND t.source_counter BETWEEN set_keys.low AND set_keys.high
         UNION ALL
         SELECT CAST(1 AS BIGINT), o.card_id, o.card_counter, CAST(0 AS BIGINT)
         FROM {keys} JOIN online_records o ON o.card_id = set_keys.card_id
             AND o.card_counter BETWEEN set_keys.low AND set_keys.high
         UNION ALL
         SELECT CAST(2 AS BIGINT), l.card_id, l.card_counter, l.load_number
         FROM {keys} JOIN loads l ON l.card_id = set_keys.card_id
             AND l.card_counter BETWEEN set_keys.low AND set_keys.high
             AND l.status = 'committed'",
        &keys,
    )?;
    for row in rows {
        let state = (card_of(&row, 1)?, counter_of(&row, 2)?);
        // A counter inside a card's range that no item of the batch spent from.
        let Some(entry) = uses.get_mut(&state) else {
            continue;
        };
        match row.int(0)? {
            0 => entry.records += 1,
            1 => entry.transfers += 1,
            _ => {
                let number = u32::try_from(row.int(3)?).map_err(|_| corrupt("load number"))?;
                if !entry.committed_loads.contains(&number) {
                    entry.committed_loads.push(number);
                }
            }
        }
    }
    Ok(uses)
}

/// What identifies a stored record's content: card, counter, amount, digest.
pub(super) type StoredContent = (Vec<u8>, i64, i64, Vec<u8>);

/// Whether the record stored under each sequence has the content of the item sent under
/// it again (a retry) or other content.
pub(super) fn stored_contents(
    tx: &mut dyn Executor,
    terminal_id: DeviceId,
    sequences: &[u32],
) -> Result<HashMap<u32, StoredContent>, CenterError> {
    let keys = SetKeys::new()
        .bytes("terminal_id", vec![terminal_id.0.to_vec(); sequences.len()])
        .ints(
            "terminal_sequence",
            sequences.iter().map(|s| i64::from(*s)).collect(),
        );
    let rows = query_set(
        tx,
        "SELECT u.terminal_sequence, u.card_id, u.card_counter, u.amount_minor, u.usage_digest
         FROM usage_sequences u JOIN {keys} ON u.terminal_id = set_keys.terminal_id
             AND u.terminal_sequence = set_keys.terminal_sequence",
        &keys,
    )?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let sequence = u32::try_from(row.int(0)?).map_err(|_| corrupt("sequence"))?;
        stored.insert(
            sequence,
            (row.bytes(1)?, row.int(2)?, row.int(3)?, row.bytes(4)?),
        );
    }
    Ok(stored)
}
