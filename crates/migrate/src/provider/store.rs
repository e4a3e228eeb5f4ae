//! The transfer SAM's memory area and the provider's own books, on the center's SQL layer
//! (SQLite by default, PostgreSQL by URL; tables prefixed `provider_`).
//!
//! A copy is the upload of one service of one old chip for one move, sealed by the transfer
//! SAM. Its row lives on after S17 as the record of that move: the sealed bytes are gone,
//! the state says `cleared` (or `discarded` by a rollback). The database refuses a second
//! live copy of the same chip's service, and binds a copy to the first destination chip
//! that downloads it.

use valuecard_center::db::Migration;

/// The provider's schema; append-only.
pub const MIGRATIONS: &[Migration] = &[
    // 1: copies, the steps of the sessions in progress, the purse moves for the center,
    // and the transfer SAM's record sequence.
    Migration::Portable(
        r#"
    CREATE TABLE provider_copies (
        move_id       BYTEA NOT NULL CHECK (length(move_id) = 16),
        service       BIGINT NOT NULL,
        source        BYTEA NOT NULL CHECK (length(source) = 8),
        destination   BYTEA CHECK (length(destination) = 8),
        digest        BYTEA NOT NULL CHECK (length(digest) = 32),
        sealed_copy   BYTEA,
        purse_record  BYTEA,
        state         TEXT NOT NULL
            CHECK (state IN ('uploaded', 'downloaded', 'cleared', 'discarded')),
        uploaded_on   BIGINT NOT NULL,
        downloaded_on BIGINT,
        ended_on      BIGINT,
        PRIMARY KEY (move_id, service),
        CHECK ((sealed_copy IS NULL) = (state IN ('cleared', 'discarded')))
    );
    CREATE UNIQUE INDEX provider_one_live_copy_per_chip ON provider_copies (source, service)
        WHERE state <> 'discarded';
    CREATE TABLE provider_sessions (
        move_id   BYTEA NOT NULL,
        service   BIGINT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('upload', 'download')),
        card_id   BYTEA NOT NULL,
        step      TEXT NOT NULL,
        PRIMARY KEY (move_id, service, direction)
    );
    CREATE TABLE provider_purse_moves (
        move_id          BYTEA PRIMARY KEY,
        source           BYTEA NOT NULL,
        destination      BYTEA NOT NULL,
        amount           BIGINT NOT NULL,
        source_counter   BIGINT NOT NULL,
        export_signature BYTEA NOT NULL,
        record           BYTEA NOT NULL,
        reported         BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE provider_sequence (
        writer BYTEA PRIMARY KEY,
        last   BIGINT NOT NULL
    );
    "#,
    ),
];

/// The migration history table of the provider's schema.
pub const MIGRATION_TABLE: &str = "provider_schema_migrations";
