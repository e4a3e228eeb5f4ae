//! The center's database: SQLite in WAL mode, with append-only numbered migrations.
//!
//! Every table that grows with use is keyed by card ID or device ID first, so that the
//! schema shards by card when it moves to a distributed SQL store.

use rusqlite::Connection;

use crate::CenterError;

/// Append-only: never edit a migration that has shipped; add a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: devices, cards, loads, remaining values, identifier sequences.
    r#"
    CREATE TABLE devices (
        device_id    BLOB PRIMARY KEY CHECK (length(device_id) = 8),
        role         INTEGER NOT NULL,
        signing_key  BLOB NOT NULL CHECK (length(signing_key) = 32),
        sealing_key  BLOB NOT NULL CHECK (length(sealing_key) = 32),
        certificate  BLOB,
        status       TEXT NOT NULL CHECK (status IN ('allocated', 'installed', 'retired')),
        installed_on INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE cards (
        card_id      BLOB PRIMARY KEY CHECK (length(card_id) = 8),
        dispenser_id BLOB NOT NULL,
        signing_key  BLOB CHECK (signing_key IS NULL OR length(signing_key) = 32),
        sealing_key  BLOB,
        certificate  BLOB,
        status       TEXT NOT NULL CHECK (status IN ('assigned', 'issued', 'blocked')),
        assigned_on  INTEGER NOT NULL,
        issued_on    INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE loads (
        card_id             BLOB NOT NULL,
        load_number         INTEGER NOT NULL UNIQUE,
        card_counter        INTEGER NOT NULL,
        challenge_card      BLOB NOT NULL CHECK (length(challenge_card) = 16),
        challenge_dispenser BLOB NOT NULL CHECK (length(challenge_dispenser) = 16),
        dispenser_id        BLOB NOT NULL,
        amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
        balance_after_minor INTEGER NOT NULL CHECK (balance_after_minor >= amount_minor),
        kind                TEXT NOT NULL CHECK (kind IN ('initial', 'recharge')),
        status              TEXT NOT NULL CHECK (status IN ('pending', 'committed', 'cancelled')),
        authorized_on       INTEGER NOT NULL,
        signature           BLOB NOT NULL CHECK (length(signature) = 64),
        PRIMARY KEY (card_id, card_counter, challenge_card)
    ) WITHOUT ROWID;

    CREATE TABLE remaining_values (
        card_id       BLOB PRIMARY KEY,
        balance_minor INTEGER NOT NULL CHECK (balance_minor >= 0),
        card_counter  INTEGER NOT NULL,
        updated_on    INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE sequences (
        name TEXT PRIMARY KEY,
        next INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO sequences (name, next) VALUES ('card', 1), ('device', 1), ('load', 1);
    "#,
];

/// Opens (creating if needed) and migrates the database.
pub fn open(path: &std::path::Path) -> Result<Connection, CenterError> {
    let mut connection = Connection::open(path).map_err(storage)?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(storage)?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(storage)?;
    migrate(&mut connection)?;
    Ok(connection)
}

pub fn migrate(connection: &mut Connection) -> Result<usize, CenterError> {
    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        .map_err(storage)?;
    let applied: i64 = connection
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(storage)?;
    if applied as usize > MIGRATIONS.len() {
        return Err(CenterError::Setup(format!(
            "database schema version {applied} is newer than this build ({})",
            MIGRATIONS.len()
        )));
    }
    let mut count = 0;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let transaction = connection.transaction().map_err(storage)?;
        transaction.execute_batch(sql).map_err(storage)?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version) VALUES (?1)",
                [index as i64 + 1],
            )
            .map_err(storage)?;
        transaction.commit().map_err(storage)?;
        count += 1;
    }
    Ok(count)
}

pub fn storage(error: rusqlite::Error) -> CenterError {
    CenterError::Storage(error.to_string())
}

/// Takes the next value of a named sequence inside the caller's transaction.
pub fn next_in_sequence(
    transaction: &rusqlite::Transaction<'_>,
    name: &str,
) -> Result<i64, CenterError> {
    let next: i64 = transaction
        .query_row(
            "UPDATE sequences SET next = next + 1 WHERE name = ?1 RETURNING next - 1",
            [name],
            |row| row.get(0),
        )
        .map_err(storage)?;
    Ok(next)
}
