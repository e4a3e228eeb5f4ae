//! The holder's device sessions: who, in which mode, with which chip and move, and the
//! one command the session waits for an answer to, stored between calls.

use serde::{Deserialize, Serialize};
use valuecard_center::sql::{Database, Executor, Value};
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::MoveId;

use super::engine::{Mode, SessionId};
use super::moves::move_id;
use super::MoveError;
use crate::now;
use crate::provider::card_id;

/// What the session waits for, stored as JSON between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pending", rename_all = "snake_case")]
pub(super) enum Pending {
    SelectPurse,
    SelectServices,
    Challenge { act: Act },
    Admin { act: Act },
    Provider { service: u16 },
    Finished,
}

/// A command of the administrative SAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "act", content = "service", rename_all = "snake_case")]
pub(super) enum Act {
    /// S3: every area of the old chip to temporary keys.
    Lock,
    /// S10: one area of the new chip, on temporary keys.
    Format(u16),
    /// S16: every area of the new chip to main keys.
    Activate,
    /// A rollback: every area of the old chip back to main keys.
    Restore,
}

pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) user: String,
    pub(super) mode: Mode,
    pub(super) card: Option<(CardId, Certificate)>,
    pub(super) move_id: Option<MoveId>,
    pub(super) pending: Pending,
}

pub(super) fn pending_text(pending: Pending) -> Result<Value, MoveError> {
    serde_json::to_string(&pending)
        .map(Value::Text)
        .map_err(|_| MoveError::Invalid("a session step that cannot be stored".into()))
}

pub(super) fn store_session(db: &mut Database, session: &Session) -> Result<(), MoveError> {
    let (card, certificate) = match &session.card {
        Some((card, certificate)) => (
            Value::Bytes(card.as_bytes().to_vec()),
            Value::Bytes(certificate.encode()),
        ),
        None => (Value::Null, Value::Null),
    };
    db.execute(
        "UPDATE migrate_sessions SET card_id = $2, certificate = $3, move_id = $4, \
         pending = $5, updated_on = $6 WHERE session_id = $1",
        &[
            session.id.to_vec().into(),
            card,
            certificate,
            session
                .move_id
                .map_or(Value::Null, |id| Value::Bytes(id.to_vec())),
            pending_text(session.pending)?,
            now().into(),
        ],
    )?;
    Ok(())
}

pub(super) fn load_session(db: &mut Database, id: &SessionId) -> Result<Session, MoveError> {
    let row = db
        .query_optional(
            "SELECT user_id, mode, card_id, certificate, move_id, pending FROM migrate_sessions \
             WHERE session_id = $1",
            &[id.to_vec().into()],
        )?
        .ok_or(MoveError::NoSession)?;
    let card = match (row.optional_bytes(2)?, row.optional_bytes(3)?) {
        (Some(card), Some(certificate)) => Some((
            card_id(&card)?,
            Certificate::decode(&certificate)
                .map_err(|_| MoveError::Invalid("a stored certificate is malformed".into()))?,
        )),
        _ => None,
    };
    Ok(Session {
        id: *id,
        user: row.text(0)?,
        mode: Mode::parse(&row.text(1)?)?,
        card,
        move_id: row
            .optional_bytes(4)?
            .map(|bytes| move_id(&bytes))
            .transpose()?,
        pending: serde_json::from_str(&row.text(5)?)
            .map_err(|_| MoveError::Invalid("a stored session step is malformed".into()))?,
    })
}
