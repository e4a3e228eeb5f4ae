//! The settlement management device 3 as an HTTPS service: its three servers behind one
//! service and one database (`settle_` tables), since they are one organisation's and
//! trust each other:
//!
//! - the **application server** (`updates.rs`): the holder's client talks only to it. It
//!   checks the store's SIG1 (ST9), hands the card's messages to the security server and
//!   back, signs the offer SIG2 (ST14) or a charge's SIG5, and the completion ACN SIG3
//!   (ST19), which it also delivers to the store for its receipt SIG4;
//! - the **security server** (`valuecard_settle::security`, keys in software or a PKCS#11
//!   token): mutual authentication with the card, KSES, BRC/BI, the SPC or value update,
//!   the PCN, and the recovery of an update whose PCN was lost (`recovery.rs`); it reports
//!   every completed update to the center (`reporter.rs`);
//! - the **information server** (`information.rs`): the registered stores' keys and the
//!   cards' logs.
//!
//! The credit authorizer of a charge is reached through [`CreditAuthorizer`].
//!
//! Every step of an update is stored before its answer goes out, and moves on by a
//! compare-and-set of the stored step, so that any instance takes an update on, a step
//! asked again answers the same bytes, and a killed service loses nothing. At most one
//! unresolved update per card is enforced by the database (a partial unique index), as is
//! one settlement per store order.

mod completion;
mod information;
mod offer;
mod recovery;
pub mod reporter;
pub mod steps;
mod updates;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use valuecard_center::db::Migration;
use valuecard_center::sql::{Database, Executor, Row};
use valuecard_core::cert::TrustAnchor;
use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::SettlementId;
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::Clock;
use valuecard_settle::application::ApplicationServer;
use valuecard_settle::security::{SecurityError, SecurityKeys, SecurityServer};

use crate::authorizer::CreditAuthorizer;
use crate::db::DatabasePool;
use crate::service::{Problem, ProblemKind};
use crate::wire::Embodiment;
use steps::StoredStep;

pub use information::StoreRegistration;

/// The settlement system's schema; append-only.
pub const MIGRATIONS: &[Migration] = &[
    // 1: stores, updates, card logs, the center's outbox, the service's secrets.
    Migration::Portable(
        r#"
    CREATE TABLE settle_stores (
        store_id    BYTEA PRIMARY KEY CHECK (length(store_id) = 8),
        public_key  BYTEA NOT NULL CHECK (length(public_key) = 32),
        name        TEXT NOT NULL,
        url         TEXT,
        certificate TEXT
    );
    CREATE TABLE settle_updates (
        settlement_id        BYTEA PRIMARY KEY CHECK (length(settlement_id) = 16),
        kind                 TEXT NOT NULL CHECK (kind IN ('payment', 'charge')),
        card_id              BYTEA NOT NULL CHECK (length(card_id) = 8),
        amount               BIGINT NOT NULL CHECK (amount > 0),
        embodiment           TEXT NOT NULL CHECK (embodiment IN ('signed', 'sealed')),
        store_id             BYTEA,
        order_number         BIGINT,
        bill                 BYTEA,
        bill_signature       BYTEA,
        authorization_code   TEXT,
        credit_card_last4    TEXT,
        step                 TEXT NOT NULL
            CHECK (step IN ('challenged', 'authenticated', 'offered', 'completed', 'voided')),
        state                TEXT NOT NULL,
        recovery             TEXT,
        completion           BYTEA,
        completion_signature BYTEA,
        receipt              BYTEA,
        receipt_signature    BYTEA,
        created_on           BIGINT NOT NULL,
        updated_on           BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX settle_one_open_update_per_card ON settle_updates (card_id)
        WHERE step IN ('challenged', 'authenticated', 'offered');
    CREATE UNIQUE INDEX settle_one_settlement_per_order ON settle_updates (store_id, order_number)
        WHERE step <> 'voided' AND store_id IS NOT NULL;
    CREATE TABLE settle_card_log (
        card_id       BYTEA NOT NULL,
        settlement_id BYTEA NOT NULL,
        kind          TEXT NOT NULL,
        amount        BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        counter       BIGINT NOT NULL,
        date          BIGINT NOT NULL,
        party         BYTEA NOT NULL,
        PRIMARY KEY (card_id, settlement_id)
    );
    CREATE TABLE settle_center_outbox (
        settlement_id BYTEA PRIMARY KEY,
        card_id       BYTEA NOT NULL,
        previous      BYTEA,
        record        BYTEA NOT NULL,
        reported_on   BIGINT
    );
    CREATE TABLE settle_secrets (
        name  TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    )
    "#,
    ),
    // 2: the security server's record numbers: a sequence on PostgreSQL (no row every
    // instance queues on), a counter row on SQLite (one writer anyway).
    Migration::PerDialect {
        postgres: "CREATE SEQUENCE settle_writer_sequence MINVALUE 1 MAXVALUE 4294967295",
        sqlite: r#"
    CREATE TABLE settle_writer_sequence (
        id   BIGINT PRIMARY KEY CHECK (id = 1),
        next BIGINT NOT NULL
    );
    INSERT INTO settle_writer_sequence (id, next) VALUES (1, 1)
    "#,
    },
];

/// The migrations' history table.
pub const MIGRATION_TABLE: &str = "settle_migrations";

/// The security server's keys as the service holds them: in memory or in a token.
pub type ServiceKeys = Arc<dyn SecurityKeys + Send + Sync>;

/// What the settlement service's handlers share.
pub struct SettlementService {
    security: SecurityServer<ServiceKeys>,
    application: ApplicationServer,
    /// The center's root key: a card's certificate must verify under it before KC is
    /// installed.
    anchor: TrustAnchor,
    authorizer: Arc<dyn CreditAuthorizer>,
    pool: DatabasePool,
    clock: Box<dyn Clock + Sync>,
    /// Keys the card-log tokens (shared by every instance through the database).
    log_key: zeroize::Zeroizing<[u8; 32]>,
    /// Wakes the reporter when an update completed.
    reporter: Option<reporter::ReporterHandle>,
    /// The connections to the registered stores.
    store_agents: Arc<information::StoreAgents>,
}

impl core::fmt::Debug for SettlementService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SettlementService")
            .field("security_server", &self.security.keys().device_id())
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl SettlementService {
    /// The service over `pool`; the card-log key is drawn once and shared by every
    /// instance of the database.
    pub fn new(
        keys: ServiceKeys,
        application: ApplicationServer,
        anchor: TrustAnchor,
        authorizer: Arc<dyn CreditAuthorizer>,
        pool: DatabasePool,
        clock: Box<dyn Clock + Sync>,
    ) -> Result<Self, crate::db::PoolError> {
        let log_key = pool.run_blocking(information::log_key)?;
        Ok(SettlementService {
            security: SecurityServer::new(keys),
            application,
            anchor,
            authorizer,
            pool,
            clock,
            log_key,
            reporter: None,
            store_agents: Arc::default(),
        })
    }

    /// Wakes `reporter` whenever an update completes.
    pub fn with_reporter(mut self, reporter: reporter::ReporterHandle) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// The application server's key, which clients check SIG2, SIG3 and SIG5 with.
    pub fn application_key(&self) -> PublicKey {
        self.application.public_key()
    }

    /// The security server's ID, which the center certified.
    pub fn security_server_id(&self) -> DeviceId {
        self.security.keys().device_id()
    }

    pub fn pool(&self) -> &DatabasePool {
        &self.pool
    }

    /// The router of the service.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/cards/key", post(updates::install_key))
            .route("/v1/payments", post(updates::start_payment))
            .route("/v1/charges", post(updates::start_charge))
            .route("/v1/updates/{id}", get(updates::status))
            .route("/v1/updates/{id}/authenticate", post(updates::authenticate))
            .route("/v1/updates/{id}/offer", post(offer::offer))
            .route("/v1/updates/{id}/complete", post(completion::complete))
            .route("/v1/updates/{id}/recover", post(recovery::begin))
            .route(
                "/v1/updates/{id}/recover/authenticate",
                post(recovery::authenticate),
            )
            .route("/v1/updates/{id}/recover/query", post(recovery::query))
            .route("/v1/updates/{id}/recover/resolve", post(recovery::resolve))
            .route("/v1/stores/{id}", get(information::store))
            .route("/v1/cards/{card}/log", get(information::card_log))
            .route("/health", get(information::health))
            .with_state(Arc::new(self))
    }
}

/// An update as stored.
#[derive(Debug, Clone)]
pub(crate) struct UpdateRow {
    pub settlement_id: SettlementId,
    pub kind: TransactionKind,
    pub card_id: CardId,
    pub amount: Amount,
    pub embodiment: Embodiment,
    pub store_id: Option<DeviceId>,
    pub bill: Option<Vec<u8>>,
    pub authorization: Option<String>,
    pub step: StoredStep,
    pub recovery: Option<String>,
    pub completion: Option<(Vec<u8>, Vec<u8>)>,
    pub receipt: Option<(Vec<u8>, Vec<u8>)>,
}

const UPDATE_COLUMNS: &str = "settlement_id, kind, card_id, amount, embodiment, store_id, bill,
    authorization_code, state, recovery, completion, completion_signature, receipt,
    receipt_signature";

fn corrupt(what: &str) -> Problem {
    Problem::new(
        ProblemKind::Internal,
        format!("a stored update does not decode: {what}"),
    )
}

impl UpdateRow {
    fn from_row(row: &Row) -> Result<Self, Problem> {
        let pair = |a: Option<Vec<u8>>, b: Option<Vec<u8>>| match (a, b) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        Ok(UpdateRow {
            settlement_id: SettlementId::try_from(row.bytes(0)?.as_slice())
                .map_err(|_| corrupt("settlement_id"))?,
            kind: match row.text(1)?.as_str() {
                "payment" => TransactionKind::OnlinePayment,
                "charge" => TransactionKind::OnlineCharge,
                _ => return Err(corrupt("kind")),
            },
            card_id: CardId(
                <[u8; 8]>::try_from(row.bytes(2)?.as_slice()).map_err(|_| corrupt("card_id"))?,
            ),
            amount: Amount::new(u64::try_from(row.int(3)?).map_err(|_| corrupt("amount"))?)
                .map_err(|_| corrupt("amount"))?,
            embodiment: match row.text(4)?.as_str() {
                "signed" => Embodiment::Signed,
                "sealed" => Embodiment::Sealed,
                _ => return Err(corrupt("embodiment")),
            },
            store_id: row
                .optional_bytes(5)?
                .map(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).map(DeviceId))
                .transpose()
                .map_err(|_| corrupt("store_id"))?,
            bill: row.optional_bytes(6)?,
            authorization: row.optional_text(7)?,
            step: StoredStep::from_json(&row.text(8)?)?,
            recovery: row.optional_text(9)?,
            completion: pair(row.optional_bytes(10)?, row.optional_bytes(11)?),
            receipt: pair(row.optional_bytes(12)?, row.optional_bytes(13)?),
        })
    }
}

/// The update `settlement_id`, or 404.
pub(crate) fn load_update(
    db: &mut dyn Executor,
    settlement_id: &SettlementId,
) -> Result<UpdateRow, Problem> {
    let row = db
        .query_optional(
            &format!("SELECT {UPDATE_COLUMNS} FROM settle_updates WHERE settlement_id = $1"),
            &[settlement_id[..].into()],
        )?
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::NotFound,
                format!("no update {}", hex::encode(settlement_id)),
            )
        })?;
    UpdateRow::from_row(&row)
}

/// Moves an update from the step `from` to `to`: refused with 409 if another request moved
/// it first.
pub(crate) fn move_step(
    db: &mut dyn Executor,
    settlement_id: &SettlementId,
    from: &StoredStep,
    to: &StoredStep,
    today: valuecard_core::time::Date,
) -> Result<(), Problem> {
    let moved = db.execute(
        "UPDATE settle_updates SET step = $3, state = $4, updated_on = $5
         WHERE settlement_id = $1 AND state = $2",
        &[
            settlement_id[..].into(),
            from.to_json().as_str().into(),
            to.name().into(),
            to.to_json().as_str().into(),
            today.0.into(),
        ],
    )?;
    if moved == 1 {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemKind::Conflict,
            "the update moved on meanwhile; ask for its status",
        ))
    }
}

/// What a refusal of the security server means to the client.
pub(crate) fn security_problem(error: SecurityError) -> Problem {
    let kind = match &error {
        SecurityError::InsufficientBalance { .. } => ProblemKind::InsufficientBalance,
        SecurityError::OverLimit { .. } => ProblemKind::OverLimit,
        SecurityError::UnknownKeyVersion(_) => ProblemKind::Conflict,
        SecurityError::Malformed(_) | SecurityError::NoSealingKey => ProblemKind::BadRequest,
        SecurityError::NotOnline => ProblemKind::Internal,
        _ => ProblemKind::SignatureFailure,
    };
    Problem::new(kind, error.to_string())
}

/// A request carrying a message sealed for or by the card: the update named by the path
/// and the message's bytes.
pub(crate) fn sealed_request(id: &str, body: &[u8]) -> Result<(SettlementId, Vec<u8>), Problem> {
    let settlement_id = settlement_id(id)?;
    let request: crate::wire::SealedBody = crate::service::parse(body)?;
    Ok((
        settlement_id,
        crate::service::hex_field("sealed", &request.sealed)?,
    ))
}

/// A settlement ID from the path.
pub(crate) fn settlement_id(text: &str) -> Result<SettlementId, Problem> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| SettlementId::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| Problem::new(ProblemKind::NotFound, format!("no update {text:?}")))
}

/// The service's database handle type in closures.
pub(crate) type Db = Database;
