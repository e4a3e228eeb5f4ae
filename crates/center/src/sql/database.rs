//! The center's database: connecting to SQLite or PostgreSQL, the append-only migrations,
//! transactions (with their retries on PostgreSQL), and the reconnection after a dropped
//! connection. Statements run through the portable [`Executor`] of the parent module.

use super::pg::{self, PostgresConnection, POSTGRES_CONNECT_TIMEOUT};
use super::sqlite::{sqlite_dialect, SqliteExecutor};
use super::{describe, storage_error, Dialect, Executor, Row, Value};
use crate::CenterError;

/// Creates an empty file with mode 0600 unless it exists. SQLite would create it with the
/// process's umask (usually world-readable), and the center's records (card keys, balances,
/// who bought what where) are nobody else's business.
fn create_private(path: &std::path::Path) -> Result<(), CenterError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(CenterError::Setup(format!(
            "cannot create {}: {error}",
            path.display()
        ))),
    }
}

/// The center's database.
pub enum Database {
    Sqlite {
        connection: rusqlite::Connection,
        /// The file, for opening a second connection; `None` in memory.
        path: Option<std::path::PathBuf>,
        /// The one writer: every connection of this process to the same file holds it for
        /// the length of a transaction. SQLite admits one writer at a time anyway; queueing
        /// here instead of in SQLite's busy handler (which sleeps and polls) serves waiting
        /// writers in turn, without sleeping.
        writer: WriterGate,
    },
    Postgres(Box<PostgresConnection>),
}

impl core::fmt::Debug for Database {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Database::Sqlite { .. } => "Database(SQLite)",
            Database::Postgres(_) => "Database(PostgreSQL)",
        })
    }
}

/// Every statement the center runs stays prepared on its connection: rusqlite keeps 16 by
/// default, fewer than the statements of one upload, so they were parsed again each time.
const SQLITE_PREPARED_STATEMENTS: usize = 512;

fn keep_statements(connection: &rusqlite::Connection) {
    connection.set_prepared_statement_cache_capacity(SQLITE_PREPARED_STATEMENTS);
}

/// See [`Database::Sqlite`]'s `writer`.
pub type WriterGate = std::sync::Arc<std::sync::Mutex<()>>;

/// The writer gate, held by the caller until dropped: every write of the process's
/// connections to one SQLite file, a transaction or a statement on its own, queues here
/// rather than in SQLite's busy handler (which sleeps and polls, up to tens of
/// milliseconds a turn, while the lock may long be free).
fn lock_writer(writer: &WriterGate) -> std::sync::MutexGuard<'_, ()> {
    writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many times a PostgreSQL transaction runs before a serialization conflict is given up
/// as an error: under contention each retry usually wins, and a bound keeps a pathological
/// hot row from holding a request forever.
pub const CONFLICT_ATTEMPTS: u32 = 12;

/// The pause before the next attempt after `conflicts` conflicts: a span doubling from 1 ms
/// up to 128 ms, the pause drawn uniformly between half and one and a half spans, so that
/// processes that collided do not collide again in step.
fn conflict_pause(conflicts: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let span_micros = 1000u64 << conflicts.saturating_sub(1).min(7);
    // A randomly keyed hasher is the standard library's source of randomness; jitter
    // needs no more than that.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_micros(span_micros / 2 + random % span_micros)
}

/// The session-level advisory lock that serializes the migrations of one schema among
/// processes (`Database::migrate`), and its release.
const MIGRATION_LOCK: &str =
    "SELECT pg_advisory_lock(hashtext('valuecard/migrate/' || current_schema()))";
const MIGRATION_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtext('valuecard/migrate/' || current_schema()))";

/// Whether a statement only reads, so that running it a second time on a new connection
/// cannot apply anything twice.
fn is_read_only(sql: &str) -> bool {
    let head = sql.trim_start();
    head.get(..6)
        .is_some_and(|word| word.eq_ignore_ascii_case("select"))
        && !head.to_ascii_lowercase().contains("for update")
}

impl Database {
    /// A new database file is created readable by its owner only; SQLite gives its -wal and
    /// -shm files the permissions of the database file, so they are owner-only too.
    fn sqlite_connection(path: &std::path::Path) -> Result<rusqlite::Connection, CenterError> {
        create_private(path)?;
        let connection = rusqlite::Connection::open(path).map_err(storage_error)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
            )
            .map_err(storage_error)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(storage_error)?;
        keep_statements(&connection);
        Ok(connection)
    }

    /// SQLite in WAL mode with full synchronous commits: an acknowledged write survives a
    /// power cut of the center.
    pub fn open_sqlite(path: &std::path::Path) -> Result<Self, CenterError> {
        let mut database = Database::Sqlite {
            connection: Self::sqlite_connection(path)?,
            path: Some(path.to_owned()),
            writer: WriterGate::default(),
        };
        database.migrate()?;
        Ok(database)
    }

    pub fn open_sqlite_in_memory() -> Result<Self, CenterError> {
        let mut database = Database::Sqlite {
            connection: {
                let connection = rusqlite::Connection::open_in_memory().map_err(storage_error)?;
                keep_statements(&connection);
                connection
            },
            path: None,
            writer: WriterGate::default(),
        };
        database.migrate()?;
        Ok(database)
    }

    /// PostgreSQL at a `postgres://` URL or key-value string (no TLS: a local socket or a
    /// trusted network). A lost connection is opened again on the next use.
    pub fn connect_postgres(url: &str) -> Result<Self, CenterError> {
        let mut config: postgres::Config = url.parse().map_err(|error| {
            CenterError::Setup(format!(
                "not a PostgreSQL connection string: {}",
                describe(&error)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POSTGRES_CONNECT_TIMEOUT);
        }
        let mut database = Database::Postgres(Box::new(PostgresConnection::connect(config)?));
        database.migrate()?;
        Ok(database)
    }

    /// A further connection to the same database: for lookups that must not wait for the
    /// connection the center works on (health checks), and for the further handles of a
    /// service's pool. On SQLite it shares this connection's writer gate. `None` for a
    /// database in memory, which no second connection can reach.
    pub fn open_another(&self) -> Result<Option<Database>, CenterError> {
        match self {
            Database::Sqlite { path: None, .. } => Ok(None),
            Database::Sqlite {
                path: Some(path),
                writer,
                ..
            } => Ok(Some(Database::Sqlite {
                connection: Self::sqlite_connection(path)?,
                path: Some(path.clone()),
                writer: std::sync::Arc::clone(writer),
            })),
            Database::Postgres(connection) => Ok(Some(Database::Postgres(Box::new(
                PostgresConnection::connect(connection.config.clone())?,
            )))),
        }
    }

    /// Names of tables made at run time (the month partitions of usage records) that this
    /// connection has seen exist, so that it need not ask the catalog before every batch;
    /// `None` on SQLite, which makes none. Only ever added to: such a table is never
    /// dropped while a center runs.
    pub fn known_tables(&mut self) -> Option<&mut std::collections::BTreeSet<String>> {
        match self {
            Database::Sqlite { .. } => None,
            Database::Postgres(connection) => Some(&mut connection.known_tables),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// Runs `work` in one transaction: all of it commits, or none of it. On PostgreSQL the
    /// transaction is SERIALIZABLE and `work` may run more than once (see `transaction_if`):
    /// it must change nothing outside the database before it returns.
    pub fn transaction<T>(
        &mut self,
        mut work: impl FnMut(&mut dyn Executor) -> Result<T, CenterError>,
    ) -> Result<T, CenterError> {
        self.transaction_if(|tx| work(tx).map(Some))?
            .ok_or_else(|| CenterError::Storage("a transaction rolled back by itself".into()))
    }

    /// Runs `work` in one transaction that commits when it answers `Some` and rolls back,
    /// changing nothing, when it answers `None` (or fails).
    ///
    /// SQLite: the transaction waits for the process's writer gate, then begins IMMEDIATE,
    /// taking the write lock before its first read, so a read-then-write cannot interleave
    /// with another connection's (another process's included).
    ///
    /// PostgreSQL: several center processes may share the database, so the transaction is
    /// SERIALIZABLE: whatever `work` read and wrote behaves as if no other transaction ran
    /// beside it. The server guarantees that by refusing one of two conflicting
    /// transactions (SQLSTATE 40001, or 40P01 for a deadlock); the refused one is rolled back
    /// and `work` runs again from the start, up to [`CONFLICT_ATTEMPTS`] times with a jittered
    /// pause. A connection found lost when the transaction begins (nothing sent yet but
    /// BEGIN) is opened again and the transaction begun once more.
    pub fn transaction_if<T>(
        &mut self,
        mut work: impl FnMut(&mut dyn Executor) -> Result<Option<T>, CenterError>,
    ) -> Result<Option<T>, CenterError> {
        match self {
            Database::Sqlite {
                connection, writer, ..
            } => {
                // Held until the transaction ended, committed or not.
                let _writer = lock_writer(writer);
                let transaction = connection
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(storage_error)?;
                let Some(out) = work(&mut SqliteExecutor(&transaction))? else {
                    transaction.rollback().map_err(storage_error)?;
                    return Ok(None);
                };
                transaction.commit().map_err(storage_error)?;
                Ok(Some(out))
            }
            Database::Postgres(connection) => {
                let mut begin_failures = 0;
                let mut conflicts = 0;
                loop {
                    let (client, statements, lost_flag) = connection.open_parts()?;
                    let started = client
                        .build_transaction()
                        .isolation_level(postgres::IsolationLevel::Serializable)
                        .start();
                    let mut transaction = match started {
                        Ok(transaction) => transaction,
                        // A failed BEGIN applied nothing: try once more, on a new
                        // connection if this one was found lost.
                        Err(error) if begin_failures == 0 => {
                            begin_failures += 1;
                            if pg::is_connection_lost(&error) {
                                *lost_flag = true;
                            }
                            continue;
                        }
                        Err(error) => return Err(storage_error(error)),
                    };
                    let mut executor = pg::PostgresExecutor {
                        client: &mut transaction,
                        statements,
                        conflict: false,
                        lost: false,
                    };
                    let out = work(&mut executor);
                    let lost = executor.lost;
                    // A conflict aborts the transaction on the server whatever `work` made
                    // of the error, so it is never committed, even when `work` went on.
                    let outcome: Result<(), Option<postgres::Error>> = if executor.conflict {
                        Err(None)
                    } else {
                        match out {
                            Ok(Some(out)) => match transaction.commit() {
                                Ok(()) => return Ok(Some(out)),
                                // Serializable transactions can be refused at COMMIT too.
                                Err(error) if pg::is_conflict(&error) => Err(Some(error)),
                                Err(error) => {
                                    if pg::is_connection_lost(&error) {
                                        *lost_flag = true;
                                    }
                                    return Err(storage_error(error));
                                }
                            },
                            Ok(None) => {
                                transaction.rollback().map_err(storage_error)?;
                                return Ok(None);
                            }
                            Err(error) => {
                                drop(transaction);
                                if lost {
                                    *lost_flag = true;
                                }
                                return Err(error);
                            }
                        }
                    };
                    conflicts += 1;
                    if conflicts >= CONFLICT_ATTEMPTS {
                        return Err(CenterError::Storage(match outcome {
                            Err(Some(error)) => format!(
                                "a transaction conflicted {conflicts} times: {}",
                                describe(&error)
                            ),
                            _ => format!("a transaction conflicted {conflicts} times"),
                        }));
                    }
                    // Dropping an open transaction rolls it back (the guard sends ROLLBACK).
                    tracing::debug!(conflicts, "a serializable transaction conflicted; again");
                    std::thread::sleep(conflict_pause(conflicts));
                }
            }
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), CenterError> {
        match self {
            Database::Sqlite { connection, .. } => connection
                .execute_batch(&sqlite_dialect(sql))
                .map_err(storage_error),
            Database::Postgres(connection) => connection
                .open()?
                .0
                .batch_execute(sql)
                .map_err(storage_error),
        }
    }

    /// Applies every migration not yet applied, each in its own transaction.
    ///
    /// On PostgreSQL the migrations run under an advisory lock of the schema: several
    /// center processes starting at once on a new database would otherwise each find a
    /// migration unapplied and race to create the same tables.
    pub fn migrate(&mut self) -> Result<usize, CenterError> {
        let count = self.migrate_schema("schema_migrations", crate::db::MIGRATIONS)?;
        // Records a migration moved into the DEFAULT partition get their months' own.
        if count > 0 {
            crate::usage::partitions::partition_default_rows(self)?;
        }
        Ok(count)
    }

    /// Applies the `migrations` of another schema sharing this SQL layer (the online
    /// settlement services' own), their applied versions kept in `table`, under the same
    /// lock on PostgreSQL.
    pub fn migrate_schema(
        &mut self,
        table: &'static str,
        migrations: &[crate::db::Migration],
    ) -> Result<usize, CenterError> {
        if !self.is_postgres() {
            return self.migrate_unlocked(table, migrations);
        }
        self.batch(MIGRATION_LOCK)?;
        let outcome = self.migrate_unlocked(table, migrations);
        // Should the connection have been lost meanwhile, the lock went with its session.
        let unlocked = self.batch(MIGRATION_UNLOCK);
        let count = outcome?;
        unlocked?;
        Ok(count)
    }

    fn migrate_unlocked(
        &mut self,
        table: &'static str,
        migrations: &[crate::db::Migration],
    ) -> Result<usize, CenterError> {
        self.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY)"
        ))?;
        let applied = self
            .query_one(
                &format!("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM {table}"),
                &[],
            )?
            .int(0)?;
        if applied as usize > migrations.len() {
            return Err(CenterError::Setup(format!(
                "database schema version {applied} is newer than this build ({})",
                migrations.len()
            )));
        }
        let mut count = 0;
        for (index, migration) in migrations.iter().enumerate().skip(applied as usize) {
            let dialect = match self {
                Database::Sqlite { .. } => sqlite_dialect(migration.text(Dialect::Sqlite)),
                Database::Postgres(_) => migration.text(Dialect::Postgres).to_owned(),
            };
            self.transaction(|tx| {
                for statement in dialect.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    tx.execute(statement, &[])?;
                }
                tx.execute(
                    &format!("INSERT INTO {table} (version) VALUES ($1)"),
                    &[Value::Int(index as i64 + 1)],
                )?;
                Ok(())
            })?;
            count += 1;
        }
        if let Database::Postgres(connection) = self {
            connection.forget_statements();
        }
        Ok(count)
    }
}

impl Executor for Database {
    fn dialect(&self) -> Dialect {
        match self {
            Database::Sqlite { .. } => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A statement on its own. On PostgreSQL a connection found lost is opened again first;
    /// a write that fails because the connection dropped under it is not sent again (it may
    /// have been applied), the next call finds the connection closed and reconnects.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CenterError> {
        match self {
            Database::Sqlite {
                connection, writer, ..
            } => {
                let _writer = lock_writer(writer);
                SqliteExecutor(connection).execute(sql, params)
            }
            Database::Postgres(connection) => connection.executor()?.execute(sql, params),
        }
    }

    /// A query on its own; a read-only one is asked once more on a new connection when the
    /// connection was lost under it.
    fn query_each(
        &mut self,
        sql: &str,
        rows: &mut dyn Iterator<Item = Vec<Value>>,
    ) -> Result<Vec<Row>, CenterError> {
        match self {
            Database::Sqlite {
                connection, writer, ..
            } => {
                let _writer = (!is_read_only(sql)).then(|| lock_writer(writer));
                SqliteExecutor(connection).query_each(sql, rows)
            }
            Database::Postgres(connection) => connection.executor()?.query_each(sql, rows),
        }
    }

    fn execute_each(
        &mut self,
        sql: &str,
        rows: &mut dyn Iterator<Item = Vec<Value>>,
    ) -> Result<u64, CenterError> {
        match self {
            Database::Sqlite {
                connection, writer, ..
            } => {
                let _writer = lock_writer(writer);
                SqliteExecutor(connection).execute_each(sql, rows)
            }
            Database::Postgres(connection) => connection.executor()?.execute_each(sql, rows),
        }
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CenterError> {
        match self {
            Database::Sqlite {
                connection, writer, ..
            } => {
                // A statement that writes (`UPDATE ... RETURNING`) queues for the writer.
                let _writer = (!is_read_only(sql)).then(|| lock_writer(writer));
                SqliteExecutor(connection).query(sql, params)
            }
            Database::Postgres(connection) => {
                let mut executor = connection.executor()?;
                let outcome = executor.query(sql, params);
                if executor.lost {
                    connection.mark_lost();
                }
                match outcome {
                    Err(_) if connection.is_closed() && is_read_only(sql) => {
                        connection.executor()?.query(sql, params)
                    }
                    other => other,
                }
            }
        }
    }
}

impl Database {
    /// A write that is sent once more on a new connection when the connection was lost
    /// under it, for statements whose second sending changes nothing the first did not:
    /// a conditional upsert that, once applied, matches no row. The caller then reads a
    /// refusal where the first sending may have been accepted, which it must be able to
    /// take (the device authentication does: the device sends again with a new sequence).
    pub fn execute_resendable(&mut self, sql: &str, params: &[Value]) -> Result<u64, CenterError> {
        match self {
            Database::Sqlite { .. } => self.execute(sql, params),
            Database::Postgres(connection) => {
                let mut executor = connection.executor()?;
                let outcome = executor.execute(sql, params);
                if executor.lost {
                    connection.mark_lost();
                }
                match outcome {
                    Err(_) if connection.is_closed() => connection.executor()?.execute(sql, params),
                    other => other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_selects_count_as_read_only() {
        assert!(is_read_only("  SELECT 1"));
        assert!(is_read_only("select role FROM devices"));
        assert!(!is_read_only("SELECT x FROM t FOR UPDATE"));
        assert!(!is_read_only(
            "UPDATE sequences SET next = next + 1 RETURNING next"
        ));
        assert!(!is_read_only("INSERT INTO t VALUES (1)"));
    }
}
