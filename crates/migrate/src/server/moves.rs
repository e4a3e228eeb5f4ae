//! The movement database's reads and writes: moves, their services, and the move's log.
//! Every change of state is a compare-and-set from the state the step expects, so a step
//! recorded twice (a resumed session) changes nothing the second time.

use valuecard_center::sql::{Database, Executor};
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::{AreaFormat, MoveId, ServiceCode, ServiceKind};

use super::MoveError;
use crate::now;
use crate::provider::card_id;

/// One service of a move, as the movement database keeps it.
#[derive(Debug, Clone)]
pub(super) struct MoveService {
    pub(super) service: ServiceCode,
    pub(super) kind: ServiceKind,
    pub(super) state: String,
}

/// The download session's move: the user's move waiting for a new chip, with this chip
/// bound as its destination (once, by the database).
pub(super) fn attach_destination(
    db: &mut Database,
    user: &str,
    card: &CardId,
) -> Result<MoveId, MoveError> {
    let open = db.query_optional(
        "SELECT move_id, state, source, destination FROM migrate_moves WHERE user_id = $1 \
         AND state NOT IN ('done', 'rolled_back')",
        &[user.into()],
    )?;
    let Some(row) = open else {
        // A finished move whose destination this is: nothing left to do.
        let done = db.query_optional(
            "SELECT move_id FROM migrate_moves WHERE user_id = $1 AND state = 'done' \
             AND destination = $2",
            &[user.into(), card.as_bytes().to_vec().into()],
        )?;
        return match done {
            Some(row) => move_id(&row.bytes(0)?),
            None => Err(MoveError::NothingToDownload),
        };
    };
    let id = move_id(&row.bytes(0)?)?;
    if matches!(row.text(1)?.as_str(), "registered" | "locked") {
        return Err(MoveError::UploadUnfinished);
    }
    if card_id(&row.bytes(2)?)? == *card {
        return Err(MoveError::WrongDestination);
    }
    db.execute(
        "UPDATE migrate_moves SET destination = $2 WHERE move_id = $1 AND destination IS NULL",
        &[id.to_vec().into(), card.as_bytes().to_vec().into()],
    )?;
    let bound = db
        .query_one(
            "SELECT destination FROM migrate_moves WHERE move_id = $1",
            &[id.to_vec().into()],
        )?
        .optional_bytes(0)?;
    match bound {
        Some(bound) if card_id(&bound)? == *card => Ok(id),
        _ => Err(MoveError::WrongDestination),
    }
}

pub(super) fn move_id(bytes: &[u8]) -> Result<MoveId, MoveError> {
    MoveId::try_from(bytes).map_err(|_| MoveError::Invalid("a stored move ID is malformed".into()))
}

pub(super) fn live_move_of_source(
    db: &mut Database,
    card: &CardId,
) -> Result<Option<(MoveId, String)>, MoveError> {
    db.query_optional(
        "SELECT move_id, state FROM migrate_moves WHERE source = $1 AND state <> 'rolled_back'",
        &[card.as_bytes().to_vec().into()],
    )?
    .map(|row| Ok((move_id(&row.bytes(0)?)?, row.text(1)?)))
    .transpose()
}

pub(super) fn move_state(db: &mut Database, move_id: &MoveId) -> Result<String, MoveError> {
    Ok(db
        .query_one(
            "SELECT state FROM migrate_moves WHERE move_id = $1",
            &[move_id.to_vec().into()],
        )?
        .text(0)?)
}

/// The move's state, or `None` when there is no such move.
pub(super) fn find_move_state(
    db: &mut Database,
    move_id: &MoveId,
) -> Result<Option<String>, MoveError> {
    Ok(db
        .query_optional(
            "SELECT state FROM migrate_moves WHERE move_id = $1",
            &[move_id.to_vec().into()],
        )?
        .map(|row| row.text(0))
        .transpose()?)
}

pub(super) fn services(db: &mut Database, move_id: &MoveId) -> Result<Vec<MoveService>, MoveError> {
    db.query(
        "SELECT service, kind, state FROM migrate_move_services WHERE move_id = $1 \
         ORDER BY service",
        &[move_id.to_vec().into()],
    )?
    .into_iter()
    .map(|row| {
        let kind = u8::try_from(row.int(1)?).unwrap_or(0);
        Ok(MoveService {
            service: ServiceCode(
                u16::try_from(row.int(0)?)
                    .map_err(|_| MoveError::Invalid("a stored service".into()))?,
            ),
            kind: ServiceKind::from_u8(kind)
                .map_err(|_| MoveError::Invalid("a stored kind".into()))?,
            state: row.text(2)?,
        })
    })
    .collect()
}

/// Moves the move's state from `from` to `to` (a repeat finds it at `to` and does nothing).
pub(super) fn set_move_state(
    db: &mut Database,
    move_id: &MoveId,
    from: &str,
    to: &str,
) -> Result<(), MoveError> {
    let (from, to) = (from.to_owned(), to.to_owned());
    db.transaction(|tx| {
        let changed = tx.execute(
            "UPDATE migrate_moves SET state = $3, updated_on = $4 WHERE move_id = $1 AND state = $2",
            &[
                move_id.to_vec().into(),
                from.as_str().into(),
                to.as_str().into(),
                now().into(),
            ],
        )?;
        if changed == 1 {
            log(tx, move_id, &to)?;
        }
        Ok(())
    })?;
    Ok(())
}

pub(super) fn set_service_state(
    db: &mut Database,
    move_id: &MoveId,
    service: ServiceCode,
    from: &str,
    to: &str,
) -> Result<(), MoveError> {
    let (from, to) = (from.to_owned(), to.to_owned());
    db.transaction(|tx| {
        let changed = tx.execute(
            "UPDATE migrate_move_services SET state = $4 WHERE move_id = $1 AND service = $2 \
             AND state = $3",
            &[
                move_id.to_vec().into(),
                i64::from(service.0).into(),
                from.as_str().into(),
                to.as_str().into(),
            ],
        )?;
        if changed == 1 {
            log(tx, move_id, &format!("service {service} {to}"))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The move's log: steps only, never a value.
pub(super) fn log(tx: &mut dyn Executor, move_id: &MoveId, event: &str) -> Result<(), CenterError> {
    tracing::info!(move_id = %hex::encode(move_id), event, "move");
    tx.execute(
        "INSERT INTO migrate_events (move_id, at, event) VALUES ($1, $2, $3)",
        &[move_id.to_vec().into(), now().into(), event.into()],
    )?;
    Ok(())
}

/// Records a new move of `card` with its services, unless the user has another move open.
pub(super) fn insert_move(
    db: &mut Database,
    move_id: &MoveId,
    user: &str,
    card: &CardId,
    certificate: &Certificate,
    formats: &[AreaFormat],
) -> Result<bool, MoveError> {
    let created = now();
    Ok(db.transaction(|tx| {
        let open = tx.query_optional(
            "SELECT 1 FROM migrate_moves WHERE user_id = $1 \
             AND state NOT IN ('done', 'rolled_back')",
            &[user.into()],
        )?;
        if open.is_some() {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO migrate_moves (move_id, user_id, source, source_certificate, \
             state, created_on, updated_on) VALUES ($1, $2, $3, $4, 'registered', $5, $5)",
            &[
                move_id.to_vec().into(),
                user.into(),
                card.as_bytes().to_vec().into(),
                certificate.encode().into(),
                created.into(),
            ],
        )?;
        for format in formats {
            tx.execute(
                "INSERT INTO migrate_move_services (move_id, service, kind, capacity, \
                 provider, mover, state) VALUES ($1, $2, $3, $4, $5, $6, 'listed')",
                &[
                    move_id.to_vec().into(),
                    i64::from(format.service.0).into(),
                    (format.kind as u8).into(),
                    i64::from(format.capacity).into(),
                    format.provider.as_bytes().to_vec().into(),
                    format.mover.as_bytes().to_vec().into(),
                ],
            )?;
        }
        log(tx, move_id, "registered")?;
        Ok(true)
    })?)
}
