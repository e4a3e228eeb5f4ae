//! The center's schema: append-only numbered migrations in the SQL subset that SQLite and
//! PostgreSQL share (see `sql.rs`).
//!
//! Every table that grows with use is keyed by card ID or device ID first, so that the
//! schema shards by card when it moves to a distributed SQL store.

/// One migration: a text both databases run, or one text for each where they cannot share
/// one (PostgreSQL's declarative partitions have no SQLite counterpart).
#[derive(Debug, Clone, Copy)]
pub enum Migration {
    /// The portable subset (see `sql.rs`): `$n` placeholders and `BYTEA` rewritten for SQLite.
    Portable(&'static str),
    /// PostgreSQL's text and SQLite's; each still split at `;` into statements, and SQLite's
    /// rewritten as a portable one is.
    PerDialect {
        postgres: &'static str,
        sqlite: &'static str,
    },
}

impl Migration {
    /// The text to run on `dialect`.
    pub fn text(&self, dialect: crate::sql::Dialect) -> &'static str {
        match (self, dialect) {
            (Migration::Portable(text), _) => text,
            (Migration::PerDialect { postgres, .. }, crate::sql::Dialect::Postgres) => postgres,
            (Migration::PerDialect { sqlite, .. }, crate::sql::Dialect::Sqlite) => sqlite,
        }
    }
}

use Migration::Portable;

/// Append-only: never edit a migration that has shipped; add a new one.
pub const MIGRATIONS: &[Migration] = &[
    // 1: devices, cards, loads, remaining values, identifier sequences.
    Portable(
        r#"
    CREATE TABLE devices (
        device_id    BYTEA PRIMARY KEY CHECK (length(device_id) = 8),
        role         BIGINT NOT NULL,
        signing_key  BYTEA NOT NULL CHECK (length(signing_key) = 32),
        sealing_key  BYTEA NOT NULL CHECK (length(sealing_key) = 32),
        certificate  BYTEA,
        status       TEXT NOT NULL CHECK (status IN ('allocated', 'installed', 'retired')),
        installed_on BIGINT
    );

    CREATE TABLE cards (
        card_id      BYTEA PRIMARY KEY CHECK (length(card_id) = 8),
        dispenser_id BYTEA NOT NULL,
        signing_key  BYTEA CHECK (signing_key IS NULL OR length(signing_key) = 32),
        sealing_key  BYTEA,
        certificate  BYTEA,
        status       TEXT NOT NULL CHECK (status IN ('assigned', 'issued', 'blocked')),
        assigned_on  BIGINT NOT NULL,
        issued_on    BIGINT
    );

    CREATE TABLE loads (
        card_id             BYTEA NOT NULL,
        load_number         BIGINT NOT NULL UNIQUE,
        card_counter        BIGINT NOT NULL,
        challenge_card      BYTEA NOT NULL CHECK (length(challenge_card) = 16),
        challenge_dispenser BYTEA NOT NULL CHECK (length(challenge_dispenser) = 16),
        dispenser_id        BYTEA NOT NULL,
        amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
        balance_after_minor BIGINT NOT NULL CHECK (balance_after_minor >= amount_minor),
        kind                TEXT NOT NULL CHECK (kind IN ('initial', 'recharge')),
        status              TEXT NOT NULL CHECK (status IN ('pending', 'committed', 'cancelled')),
        authorized_on       BIGINT NOT NULL,
        signature           BYTEA NOT NULL CHECK (length(signature) = 64),
        PRIMARY KEY (card_id, card_counter, challenge_card)
    );
    CREATE INDEX loads_pending ON loads (status, load_number);

    CREATE TABLE remaining_values (
        card_id       BYTEA PRIMARY KEY,
        balance_minor BIGINT NOT NULL CHECK (balance_minor >= 0),
        card_counter  BIGINT NOT NULL,
        updated_on    BIGINT NOT NULL
    );

    CREATE TABLE sequences (
        name TEXT PRIMARY KEY,
        next BIGINT NOT NULL
    );
    INSERT INTO sequences (name, next) VALUES ('card', 1), ('device', 1), ('load', 1);
    "#,
    ),
    // 2: usage-management records (Fig. 9) and the versioned lists.
    Portable(crate::usage::MIGRATION),
    // 3: the last request sequence accepted from each device over HTTP (replay protection,
    // see `auth.rs`).
    Portable(
        r#"
    CREATE TABLE device_sequences (
        device_id     BYTEA PRIMARY KEY CHECK (length(device_id) = 8),
        last_sequence BIGINT NOT NULL CHECK (last_sequence >= 0),
        updated_on    BIGINT NOT NULL
    );
    "#,
    ),
    // 4: the time-stamp registry of stolen-terminal detection (Figs. 10-12).
    Portable(crate::stamps::MIGRATION),
    // 5: restorations of destroyed cards, one per card.
    Portable(crate::lists::RESTORATION_MIGRATION),
    // 6: credit mode (Figs. 13-17): credit accounts and the cards' signed service records.
    Portable(crate::credit::MIGRATION),
    // 7: alerts, settlement challenges of pending loads, the card's signature with each
    // usage record, and the holding period of restorations.
    Portable(crate::alerts::MIGRATION),
    // 8: which center the database belongs to, so that a second `center init` on a
    // database that already holds a center is refused (see `claim_for_new_center`).
    Portable(
        r#"
    CREATE TABLE center_identity (
        singleton  BIGINT PRIMARY KEY CHECK (singleton = 1),
        center_id  BYTEA NOT NULL CHECK (length(center_id) = 8),
        root_key   BYTEA NOT NULL CHECK (length(root_key) = 32),
        created_on BIGINT NOT NULL
    );
    "#,
    ),
    // 9: transfer-key and update-key generations (seed 000) and what each card and load
    // was given.
    Portable(crate::transfer_keys::MIGRATION),
    // 10: card-to-card transfers as settlement terminals report them (seed 000).
    Portable(crate::transfers::MIGRATION),
    // 11: the center's releases of transfers whose destination will never come back.
    Portable(crate::transfers::RELEASE_MIGRATION),
    // 12: usage records keyed for distribution by card and partitioned by month on
    // PostgreSQL; the first record of each card state and each terminal sequence in tables
    // of their own, so that the database itself refuses a state counted twice.
    Migration::PerDialect {
        postgres: crate::usage::partitions::PARTITION_MIGRATION_POSTGRES,
        sqlite: crate::usage::partitions::PARTITION_MIGRATION_SQLITE,
    },
    // 13: load numbers from a PostgreSQL sequence instead of a row of `sequences` (see
    // `next_in_sequence`); SQLite, one writer at a time, keeps the row.
    Migration::PerDialect {
        postgres: r#"
    CREATE SEQUENCE load_numbers AS BIGINT MINVALUE 1 MAXVALUE 4294967295;
    SELECT setval('load_numbers', (SELECT next FROM sequences WHERE name = 'load'), false);
    DELETE FROM sequences WHERE name = 'load'
    "#,
        sqlite: "",
    },
    // 14: loads distributable by card: a load number is unique because one sequence gives
    // it out, so on PostgreSQL the database no longer holds a uniqueness across every
    // card's loads (a distributed store cannot hold one that leaves out the card). It holds
    // (card, number) unique instead, and looks a number up by an index of its own for the
    // rare settlement that names only the number. SQLite keeps its table as it is.
    Migration::PerDialect {
        postgres: r#"
    ALTER TABLE loads DROP CONSTRAINT loads_load_number_key;
    CREATE UNIQUE INDEX loads_by_card_and_number ON loads (card_id, load_number);
    CREATE INDEX loads_by_number ON loads (load_number)
    "#,
        sqlite: "CREATE UNIQUE INDEX loads_by_card_and_number ON loads (card_id, load_number)",
    },
    // 15: a dispenser's settlement names the card as well as the load number, so every
    // lookup of a load is by (card, number) and the number-only index goes.
    Migration::PerDialect {
        postgres: "DROP INDEX IF EXISTS loads_by_number",
        sqlite: "",
    },
    // 16: memory cards (seed 001): the machines' write records, each card state's first
    // record (the key that makes a state spent twice visible once), and charge machines'
    // float grants and limits.
    Portable(crate::memcard::MIGRATION),
    // 17: writes pending in memory-card machines' logs, reported as restore evidence
    // (counted only once a later record shows they landed).
    Portable(crate::memcard::PENDING_MIGRATION),
    // 18: online payments and charges (seed 004) as the settlement system's security
    // server reports them, keyed by card.
    Portable(crate::online::MIGRATION),
    // 19: purse moves from old chips to new ones (seed 002), as the purse provider's
    // transfer SAM reports them.
    Portable(crate::moves::MIGRATION),
];

/// The center a database belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CenterIdentity {
    pub center_id: valuecard_core::ids::DeviceId,
    pub root_key: valuecard_core::crypto::PublicKey,
}

fn stored_identity(
    tx: &mut dyn crate::sql::Executor,
) -> Result<Option<valuecard_core::ids::DeviceId>, crate::CenterError> {
    let Some(row) = tx.query_optional(
        "SELECT center_id FROM center_identity WHERE singleton = 1",
        &[],
    )?
    else {
        return Ok(None);
    };
    let id = <[u8; 8]>::try_from(row.bytes(0)?.as_slice())
        .map_err(|_| crate::CenterError::Storage("stored center ID".into()))?;
    Ok(Some(valuecard_core::ids::DeviceId(id)))
}

/// Records that a new center owns `db`. Refused, changing nothing, when the database
/// already belongs to a center: recorded as such, or (a database from before identities
/// were recorded) holding any device or card. A second center merged into one database
/// would have its devices accepted by the first center's service.
pub fn claim_for_new_center(
    db: &mut crate::sql::Database,
    identity: &CenterIdentity,
    today: valuecard_core::time::Date,
) -> Result<(), crate::CenterError> {
    db.transaction(|tx| {
        if let Some(owner) = stored_identity(tx)? {
            return Err(crate::CenterError::Setup(format!(
                "this database already holds center {owner}: refusing to create a second center in it \
                 (use an empty database, or open center {owner} from its own data directory)"
            )));
        }
        let used = tx
            .query_one(
                "SELECT CAST((SELECT COUNT(*) FROM devices) + (SELECT COUNT(*) FROM cards) AS BIGINT)",
                &[],
            )?
            .int(0)?;
        if used > 0 {
            return Err(crate::CenterError::Setup(
                "this database already holds a center's devices and cards: refusing to create a \
                 second center in it (use an empty database)"
                    .into(),
            ));
        }
        tx.execute(
            "INSERT INTO center_identity (singleton, center_id, root_key, created_on) VALUES (1, $1, $2, $3)",
            &[
                identity.center_id.0[..].into(),
                identity.root_key.to_bytes()[..].into(),
                i64::from(today.0).into(),
            ],
        )?;
        Ok(())
    })
}

/// Checks that `db` belongs to the center opening it. A database from before identities
/// were recorded is claimed by the first center that opens it.
pub fn check_owner(
    db: &mut crate::sql::Database,
    identity: &CenterIdentity,
    today: valuecard_core::time::Date,
) -> Result<(), crate::CenterError> {
    db.transaction(|tx| match stored_identity(tx)? {
        Some(owner) if owner == identity.center_id => Ok(()),
        Some(owner) => Err(crate::CenterError::Setup(format!(
            "this database belongs to center {owner}, not to center {}",
            identity.center_id
        ))),
        None => {
            tx.execute(
                "INSERT INTO center_identity (singleton, center_id, root_key, created_on) VALUES (1, $1, $2, $3)",
                &[
                    identity.center_id.0[..].into(),
                    identity.root_key.to_bytes()[..].into(),
                    i64::from(today.0).into(),
                ],
            )?;
            Ok(())
        }
    })
}

/// Takes the next value of a named sequence inside the caller's transaction.
///
/// Load numbers on PostgreSQL come from a SEQUENCE: every load takes one, and a row of
/// `sequences` would be one hot row that every load's transaction writes and holds to its
/// end (and, on a distributed database, a coordinator row). A sequence hands out each number
/// once without a row lock; a transaction that rolls back or runs again leaves a gap, and
/// load numbers need only be unique. The other names are taken rarely (issue, installation,
/// listing, alerts).
pub fn next_in_sequence(
    tx: &mut dyn crate::sql::Executor,
    name: &str,
) -> Result<i64, crate::CenterError> {
    if name == "load" && tx.dialect() == crate::sql::Dialect::Postgres {
        return tx.query_one("SELECT nextval('load_numbers')", &[])?.int(0);
    }
    tx.query_one(
        "UPDATE sequences SET next = next + 1 WHERE name = $1 RETURNING next - 1",
        &[name.into()],
    )?
    .int(0)
}
