//! The information server 32: the stores registered with the settlement system (their SIG1
//! and SIG4 keys, and where the application server reaches them), and the cards' logs. A
//! card's log is read only with the token the service gave a client whose card had just
//! proved KC, so that knowing a card's number is not enough to read where it was spent.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use valuecard_center::sql::Executor;
use valuecard_center_http::CenterPin;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::online::{Receipt, SettlementCompletion};
use valuecard_core::time::Date;
use valuecard_settle::application::check_receipt;
use zeroize::Zeroizing;

use super::{Db, SettlementService};
use crate::service::{hex_array, json, Answer, Problem, ProblemKind};
use crate::wire::{CardLogBody, CompletionBody, LogEntryBody, ReceiptBody, StoreInfoBody};

/// A store as the settlement system knows it.
#[derive(Debug, Clone)]
pub struct StoreRegistration {
    pub store_id: DeviceId,
    pub public_key: PublicKey,
    pub name: String,
    /// Where the application server delivers completions (`https://…`), if it does.
    pub url: Option<String>,
    /// The certificate the store's service presents there (PEM), pinned.
    pub certificate: Option<String>,
}

impl StoreRegistration {
    /// Registers (or updates) the store: an operator's act.
    pub fn register(&self, db: &mut Db) -> Result<(), CenterError> {
        db.execute(
            "INSERT INTO settle_stores (store_id, public_key, name, url, certificate)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (store_id) DO UPDATE SET public_key = excluded.public_key,
                 name = excluded.name, url = excluded.url, certificate = excluded.certificate",
            &[
                self.store_id.as_bytes()[..].into(),
                self.public_key.to_bytes()[..].into(),
                self.name.as_str().into(),
                self.url
                    .as_deref()
                    .map_or(valuecard_center::sql::Value::Null, Into::into),
                self.certificate
                    .as_deref()
                    .map_or(valuecard_center::sql::Value::Null, Into::into),
            ],
        )?;
        Ok(())
    }

    /// ST111-ST112: delivers the completion to the store and checks its receipt SIG4.
    pub fn request_receipt(
        &self,
        agents: &StoreAgents,
        completion: &SettlementCompletion,
        signature: &[u8],
    ) -> Result<(Receipt, Signature), String> {
        let (Some(url), Some(certificate)) = (&self.url, &self.certificate) else {
            return Err("the store registered no address".into());
        };
        let agent = agents.agent(certificate)?;
        let body = serde_json::to_vec(&CompletionBody {
            completion: hex::encode(completion.encode()),
            signature: hex::encode(signature),
        })
        .map_err(|e| e.to_string())?;
        let mut response = agent
            .post(&format!(
                "{}/v1/orders/{}/completion",
                url.trim_end_matches('/'),
                completion.order_number
            ))
            .header("content-type", crate::service::JSON)
            .send(&body[..])
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("the store answered {}", response.status()));
        }
        let answer: ReceiptBody = serde_json::from_slice(
            &response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_vec()
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let receipt = hex::decode(&answer.receipt)
            .ok()
            .and_then(|bytes| Receipt::decode(&bytes).ok())
            .ok_or("the store's receipt does not decode")?;
        let signature = hex_array::<64>("signature", &answer.signature)
            .map(Signature)
            .map_err(|problem| problem.detail)?;
        check_receipt(&self.public_key, completion, &receipt, &signature)
            .map_err(|e| e.to_string())?;
        Ok((receipt, signature))
    }
}

/// One HTTPS agent per store certificate, kept so that its connections are reused (a new
/// agent per completion would shake hands with the store each time).
#[derive(Debug, Default)]
pub struct StoreAgents {
    agents: std::sync::Mutex<std::collections::BTreeMap<String, ureq::Agent>>,
}

impl StoreAgents {
    fn agent(&self, certificate: &str) -> Result<ureq::Agent, String> {
        let mut agents = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(agent) = agents.get(certificate) {
            return Ok(agent.clone());
        }
        let pin = CenterPin::from_pem(certificate.as_bytes()).map_err(|e| e.to_string())?;
        let agent =
            valuecard_center_http::client::pinned_agent(std::time::Duration::from_secs(10), &pin);
        agents.insert(certificate.to_owned(), agent.clone());
        Ok(agent)
    }
}

/// The registered store `store_id`, if any.
pub(super) fn registration(
    db: &mut Db,
    store_id: &DeviceId,
) -> Result<Option<StoreRegistration>, Problem> {
    let Some(row) = db.query_optional(
        "SELECT public_key, name, url, certificate FROM settle_stores WHERE store_id = $1",
        &[store_id.as_bytes()[..].into()],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(StoreRegistration {
        store_id: *store_id,
        public_key: PublicKey::from_bytes(&row.bytes(0)?)
            .map_err(|error| Problem::new(ProblemKind::Internal, error.to_string()))?,
        name: row.text(1)?,
        url: row.optional_text(2)?,
        certificate: row.optional_text(3)?,
    }))
}

/// The key of the registered store `store_id` (ST9), or `None`.
pub(super) fn store_key(db: &mut Db, store_id: &DeviceId) -> Result<Option<PublicKey>, Problem> {
    Ok(registration(db, store_id)?.map(|store| store.public_key))
}

/// The key of the card-log tokens: drawn by the first instance, read by every other.
pub(super) fn log_key(db: &mut Db) -> Result<Zeroizing<[u8; 32]>, CenterError> {
    let mut fresh = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(&mut fresh[..]);
    db.execute(
        "INSERT INTO settle_secrets (name, value) VALUES ('card-log', $1) ON CONFLICT DO NOTHING",
        &[fresh[..].into()],
    )?;
    let stored = db
        .query_one(
            "SELECT value FROM settle_secrets WHERE name = 'card-log'",
            &[],
        )?
        .bytes(0)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if stored.len() != key.len() {
        return Err(CenterError::Storage("the card-log key is corrupt".into()));
    }
    key.copy_from_slice(&stored);
    Ok(key)
}

impl SettlementService {
    /// The token that reads `card_id`'s log.
    pub(super) fn log_token(&self, card_id: &CardId) -> String {
        hex::encode(self.log_mac(card_id).finalize().into_bytes())
    }

    fn log_mac(&self, card_id: &CardId) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.log_key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"valuecard/settle/card-log/v1");
        mac.update(card_id.as_bytes());
        mac
    }

    /// Registers a store (see [`StoreRegistration::register`]).
    pub fn register_store(&self, store: &StoreRegistration) -> Result<(), crate::db::PoolError> {
        self.pool.run_blocking(|db| store.register(db))
    }
}

/// `GET /v1/stores/{id}`.
pub(super) async fn store(
    State(service): State<Arc<SettlementService>>,
    Path(id): Path<String>,
) -> Answer {
    let store_id = DeviceId(
        hex_array("store_id", &id)
            .map_err(|_| Problem::new(ProblemKind::NotFound, format!("no store {id:?}")))?,
    );
    let found = service
        .pool
        .run(move |db: &mut Db| registration(db, &store_id))
        .await?
        .ok_or_else(|| Problem::new(ProblemKind::NotFound, format!("no store {id}")))?;
    Ok(json(&StoreInfoBody {
        store_id: hex::encode(found.store_id.as_bytes()),
        name: found.name,
        public_key: hex::encode(found.public_key.to_bytes()),
    }))
}

/// `GET /v1/cards/{card}/log` with `Authorization: Bearer <token>`.
pub(super) async fn card_log(
    State(service): State<Arc<SettlementService>>,
    Path(card): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let card_id = CardId(
        hex_array("card_id", &card)
            .map_err(|_| Problem::new(ProblemKind::NotFound, format!("no card {card:?}")))?,
    );
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| hex::decode(token.trim()).ok())
        .unwrap_or_default();
    if service.log_mac(&card_id).verify_slice(&token).is_err() {
        return Err(Problem::new(
            ProblemKind::SignatureFailure,
            "a card's log is read with the token given after the card authenticated",
        ));
    }
    let rows = service
        .pool
        .run(move |db: &mut Db| -> Result<_, Problem> {
            Ok(db.query(
                "SELECT settlement_id, kind, amount, balance_after, counter, date, party
                 FROM settle_card_log WHERE card_id = $1 ORDER BY counter",
                &[card_id.as_bytes()[..].into()],
            )?)
        })
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        entries.push(LogEntryBody {
            settlement_id: hex::encode(row.bytes(0)?),
            kind: row.text(1)?,
            amount: u64::try_from(row.int(2)?).unwrap_or(0),
            balance_after: u64::try_from(row.int(3)?).unwrap_or(0),
            counter: u32::try_from(row.int(4)?).unwrap_or(0),
            date: Date(u32::try_from(row.int(5)?).unwrap_or(0)).to_string(),
            party: super::updates::party_name(&row.bytes(6)?),
        });
    }
    Ok(json(&CardLogBody {
        card_id: hex::encode(card_id.as_bytes()),
        entries,
    }))
}

/// `GET /health`.
pub(super) async fn health(State(service): State<Arc<SettlementService>>) -> Answer {
    crate::service::health(&service.pool).await
}
