//! The movement database's schema (tables prefixed `migrate_`); append-only.
//!
//! The database, not the process, keeps a move single: one live move per old chip (a chip
//! moved once never starts a second move), one open move per user, and a destination bound
//! once.

use valuecard_center::db::Migration;

/// The migration history table of the move server's schema.
pub const MIGRATION_TABLE: &str = "migrate_schema_migrations";

pub const MIGRATIONS: &[Migration] = &[
    // 1: users, chips, moves and their services, the sessions of the holder's devices, and
    // the move's log.
    Migration::Portable(
        r#"
    CREATE TABLE migrate_users (
        user_id       TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_on    BIGINT NOT NULL
    );
    CREATE TABLE migrate_chips (
        card_id BYTEA PRIMARY KEY CHECK (length(card_id) = 8),
        user_id TEXT NOT NULL
    );
    CREATE TABLE migrate_moves (
        move_id            BYTEA PRIMARY KEY CHECK (length(move_id) = 16),
        user_id            TEXT NOT NULL,
        source             BYTEA NOT NULL CHECK (length(source) = 8),
        source_certificate BYTEA NOT NULL,
        destination        BYTEA CHECK (length(destination) = 8),
        state              TEXT NOT NULL CHECK (state IN ('registered', 'locked', 'uploaded',
            'formatted', 'downloaded', 'activated', 'done', 'rolled_back')),
        created_on         BIGINT NOT NULL,
        updated_on         BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX migrate_one_move_per_source ON migrate_moves (source)
        WHERE state <> 'rolled_back';
    CREATE UNIQUE INDEX migrate_one_open_move_per_user ON migrate_moves (user_id)
        WHERE state NOT IN ('done', 'rolled_back');
    CREATE TABLE migrate_move_services (
        move_id  BYTEA NOT NULL,
        service  BIGINT NOT NULL,
        kind     BIGINT NOT NULL,
        capacity BIGINT NOT NULL,
        provider BYTEA NOT NULL,
        mover    BYTEA NOT NULL,
        state    TEXT NOT NULL CHECK (state IN ('listed', 'uploaded', 'formatted',
            'downloaded', 'cleared', 'discarded')),
        PRIMARY KEY (move_id, service)
    );
    CREATE TABLE migrate_sessions (
        session_id  BYTEA PRIMARY KEY CHECK (length(session_id) = 16),
        user_id     TEXT NOT NULL,
        mode        TEXT NOT NULL CHECK (mode IN ('upload', 'download', 'rollback')),
        card_id     BYTEA,
        certificate BYTEA,
        move_id     BYTEA,
        pending     TEXT NOT NULL,
        updated_on  BIGINT NOT NULL
    );
    CREATE TABLE migrate_events (
        move_id BYTEA NOT NULL,
        at      BIGINT NOT NULL,
        event   TEXT NOT NULL
    );
    "#,
    ),
    // 2: S2 by serial number: the services each chip was issued, as the issuers registered
    // them, to check what a chip shows against.
    Migration::Portable(
        r#"
    CREATE TABLE migrate_chip_services (
        card_id       BYTEA NOT NULL CHECK (length(card_id) = 8),
        service       BIGINT NOT NULL,
        registered_on BIGINT NOT NULL,
        PRIMARY KEY (card_id, service)
    );
    "#,
    ),
];
