//! How an update's step is kept in the database between the client's requests: each
//! [`Step`] of the security server as JSON, its binary parts as hex of their one encoding.
//! With the step stored, any instance (or a restarted one) takes the update on from where
//! it stands; each move to the next step is a compare-and-set on the stored step.

use serde::{Deserialize, Serialize};
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::{
    BalanceInfo, BalanceUpdate, Completion, OnlineItem, SettlementId,
};
use valuecard_core::messages::purse::{Challenge, UsageRecord};
use valuecard_settle::security::{Offered, SessionRecord};

use crate::service::{Problem, ProblemKind};

/// A session's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionJson {
    card_id: String,
    key_version: u32,
    host_challenge: String,
    card_challenge: String,
    to_card: u32,
    to_server: u32,
}

impl SessionJson {
    pub fn new(session: &SessionRecord) -> Self {
        SessionJson {
            card_id: hex::encode(session.card_id.as_bytes()),
            key_version: session.key_version,
            host_challenge: hex::encode(session.host_challenge),
            card_challenge: hex::encode(session.card_challenge),
            to_card: session.to_card,
            to_server: session.to_server,
        }
    }

    pub fn decode(&self) -> Result<SessionRecord, Problem> {
        Ok(SessionRecord {
            card_id: CardId(array(&self.card_id)?),
            key_version: self.key_version,
            host_challenge: array::<{ core::mem::size_of::<Challenge>() }>(&self.host_challenge)?,
            card_challenge: array::<{ core::mem::size_of::<Challenge>() }>(&self.card_challenge)?,
            to_card: self.to_card,
            to_server: self.to_server,
        })
    }
}

/// The stored state of an update at each step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StoredStep {
    /// INITIALIZE UPDATE went out with this challenge.
    Challenged { host_challenge: String },
    /// The card and the server proved KC to each other; BRC went out.
    Authenticated { session: SessionJson },
    /// The update was sealed for the card; until the PCN or a new session says how it ended
    /// it is unresolved, and the same bytes are answered again.
    Offered {
        session: SessionJson,
        info: String,
        update: String,
        sealed_update: String,
        /// SIG2 or SIG5, if the embodiment signs the offer.
        signature: Option<String>,
    },
    /// The card applied the update.
    Completed {
        completion: String,
        previous: Option<String>,
        record: String,
    },
    /// The update can never apply.
    Voided,
}

impl StoredStep {
    /// The name kept in the `step` column (its partial unique index counts the unresolved).
    pub fn name(&self) -> &'static str {
        match self {
            StoredStep::Challenged { .. } => "challenged",
            StoredStep::Authenticated { .. } => "authenticated",
            StoredStep::Offered { .. } => "offered",
            StoredStep::Completed { .. } => "completed",
            StoredStep::Voided => "voided",
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, Problem> {
        serde_json::from_str(text).map_err(|error| corrupt(&error.to_string()))
    }

    pub fn offered(
        offered: &Offered,
        sealed_update: &[u8],
        signature: Option<&valuecard_core::crypto::Signature>,
    ) -> Self {
        StoredStep::Offered {
            session: SessionJson::new(&offered.session),
            info: hex::encode(offered.info.encode()),
            update: hex::encode(offered.update.encode()),
            sealed_update: hex::encode(sealed_update),
            signature: signature.map(|signature| hex::encode(signature.0)),
        }
    }

    pub fn completed(completion: &Completion, item: &OnlineItem) -> Self {
        StoredStep::Completed {
            completion: hex::encode(completion.encode()),
            previous: item
                .previous
                .as_ref()
                .map(|record| hex::encode(record.encode())),
            record: hex::encode(item.record.encode()),
        }
    }
}

/// An offered update as the security server checks its completion against.
#[derive(Debug)]
pub struct OfferedParts {
    pub offered: Offered,
    pub sealed_update: Vec<u8>,
    pub signature: Option<String>,
}

/// Reads the parts of an `Offered` step.
pub fn offered_parts(
    settlement_id: SettlementId,
    step: &StoredStep,
) -> Result<Option<OfferedParts>, Problem> {
    let StoredStep::Offered {
        session,
        info,
        update,
        sealed_update,
        signature,
    } = step
    else {
        return Ok(None);
    };
    Ok(Some(OfferedParts {
        offered: Offered {
            settlement_id,
            session: session.decode()?,
            info: BalanceInfo::decode(&bytes(info)?).map_err(|e| corrupt(&e.to_string()))?,
            update: BalanceUpdate::decode(&bytes(update)?).map_err(|e| corrupt(&e.to_string()))?,
        },
        sealed_update: bytes(sealed_update)?,
        signature: signature.clone(),
    }))
}

/// The completion and the center's item of a completed step.
pub fn completed_parts(
    card_id: CardId,
    settlement_id: SettlementId,
    step: &StoredStep,
) -> Result<Option<(Completion, OnlineItem)>, Problem> {
    let StoredStep::Completed {
        completion,
        previous,
        record,
    } = step
    else {
        return Ok(None);
    };
    let record_of = |text: &str| {
        UsageRecord::decode(&bytes(text)?).map_err(|error| corrupt(&error.to_string()))
    };
    Ok(Some((
        Completion::decode(&bytes(completion)?).map_err(|e| corrupt(&e.to_string()))?,
        OnlineItem {
            card_id,
            settlement_id,
            previous: previous.as_deref().map(record_of).transpose()?,
            record: record_of(record)?,
        },
    )))
}

fn corrupt(what: &str) -> Problem {
    Problem::new(
        ProblemKind::Internal,
        format!("a stored settlement step does not decode: {what}"),
    )
}

fn bytes(text: &str) -> Result<Vec<u8>, Problem> {
    hex::decode(text).map_err(|error| corrupt(&error.to_string()))
}

fn array<const N: usize>(text: &str) -> Result<[u8; N], Problem> {
    <[u8; N]>::try_from(bytes(text)?.as_slice()).map_err(|_| corrupt("a field has another length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips_through_its_json() {
        let session = SessionJson {
            card_id: "0011223344556677".into(),
            key_version: 3,
            host_challenge: "11".repeat(16),
            card_challenge: "22".repeat(16),
            to_card: 2,
            to_server: 1,
        };
        assert_eq!(
            SessionJson::new(&session.decode().unwrap()),
            session,
            "a session round-trips"
        );
        for step in [
            StoredStep::Challenged {
                host_challenge: "33".repeat(16),
            },
            StoredStep::Authenticated {
                session: session.clone(),
            },
            StoredStep::Voided,
        ] {
            assert_eq!(StoredStep::from_json(&step.to_json()).unwrap(), step);
        }
        assert_eq!(
            StoredStep::from_json("{\"step\":\"offered\"}")
                .unwrap_err()
                .kind,
            ProblemKind::Internal
        );
    }
}
