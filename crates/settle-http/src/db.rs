//! The services' databases, on the center's SQL layer (`valuecard_center::sql`): SQLite by
//! default, PostgreSQL by URL, the same portable statements on both. Each service keeps its
//! own tables (prefixed `store_` or `settle_`) and its own migration history, so that both
//! may share one PostgreSQL database or live apart. A pool lends one connection per
//! request, on the blocking pool (the SQL layer blocks).

use std::path::Path;

use valuecard_center::db::Migration;
use valuecard_center::sql::Database;
use valuecard_core::messages::center::CenterError;

/// Where a service keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite file (created owner-only).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
    /// SQLite in memory: one connection, gone with the process (tests and benchmarks).
    Memory,
}

impl DatabaseLocation {
    /// `postgres://…`, `postgresql://…` or a `host=… dbname=…` connection string is
    /// PostgreSQL; anything else is a SQLite path.
    pub fn parse(text: &str) -> Self {
        let key_value = text
            .split_whitespace()
            .any(|word| word.starts_with("host=") || word.starts_with("dbname="));
        if text.starts_with("postgres://") || text.starts_with("postgresql://") || key_value {
            DatabaseLocation::Postgres(text.to_owned())
        } else {
            DatabaseLocation::Sqlite(Path::new(text).to_path_buf())
        }
    }

    /// Opens the database and applies the service's `migrations`, recorded in `table`.
    pub fn open(
        &self,
        table: &'static str,
        migrations: &[Migration],
    ) -> Result<Database, CenterError> {
        let mut database = match self {
            DatabaseLocation::Sqlite(path) => Database::open_sqlite(path)?,
            DatabaseLocation::Postgres(url) => Database::connect_postgres(url)?,
            DatabaseLocation::Memory => Database::open_sqlite_in_memory()?,
        };
        database.migrate_schema(table, migrations)?;
        Ok(database)
    }
}

/// How long a request waits for a connection before it is answered 503.
pub const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The connections a service's requests work on.
#[derive(Clone)]
pub struct DatabasePool {
    pool: deadpool::unmanaged::Pool<Database>,
    postgres: bool,
}

impl core::fmt::Debug for DatabasePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DatabasePool")
            .field("postgres", &self.postgres)
            .field("connections", &self.pool.status().size)
            .finish()
    }
}

/// Why a pooled call failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no database connection came free in time")]
    Busy,
    /// The work on the connection panicked.
    #[error("the request's database work stopped unexpectedly")]
    Stopped,
    #[error(transparent)]
    Database(#[from] CenterError),
}

impl DatabasePool {
    /// `size` connections like `first` (one for SQLite in memory, which cannot be shared).
    pub fn new(first: Database, size: usize) -> Result<Self, CenterError> {
        let postgres = first.is_postgres();
        let mut connections = Vec::with_capacity(size.max(1));
        for _ in 1..size.max(1) {
            match first.open_another()? {
                Some(another) => connections.push(another),
                None => break,
            }
        }
        connections.push(first);
        Ok(DatabasePool {
            pool: deadpool::unmanaged::Pool::from(connections),
            postgres,
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Runs `work` on a connection, off the async runtime.
    pub async fn run<T, E>(
        &self,
        work: impl FnOnce(&mut Database) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PoolError> + Send + 'static,
    {
        let mut connection = tokio::time::timeout(POOL_WAIT, self.pool.get())
            .await
            .map_err(|_| E::from(PoolError::Busy))?
            .map_err(|_| E::from(PoolError::Busy))?;
        tokio::task::spawn_blocking(move || work(&mut connection))
            .await
            .unwrap_or_else(|_| Err(E::from(PoolError::Stopped)))
    }

    /// Runs `work` on a connection from a thread outside the runtime (the background
    /// reporter, command-line tools).
    pub fn run_blocking<T>(
        &self,
        work: impl FnOnce(&mut Database) -> Result<T, CenterError>,
    ) -> Result<T, PoolError> {
        let mut connection = self.pool.try_get().map_err(|_| PoolError::Busy)?;
        Ok(work(&mut connection)?)
    }
}
