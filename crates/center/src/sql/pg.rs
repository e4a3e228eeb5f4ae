//! The PostgreSQL side of the SQL layer: parameters and rows, a connection that opens itself
//! again, and the statements it has prepared.
//!
//! Every statement is prepared once per connection and kept: preparing is a round trip of
//! its own, and with it every statement cost two. The center runs a fixed set of statement
//! texts, so the cache stays small; a bound keeps a misuse from growing it without end.

use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};
use postgres::GenericClient;

use super::{describe, storage_error, Dialect, Executor, Row, Value};
use crate::CenterError;

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
            Value::Bytes(value) => value.to_sql(ty, out),
            Value::Text(value) => value.to_sql(ty, out),
            Value::Ints(values) => values.to_sql(ty, out),
            Value::ByteStrings(values) => values.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn rows(rows: Vec<postgres::Row>) -> Result<Vec<Row>, CenterError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(row.len());
        for (index, column) in row.columns().iter().enumerate() {
            let value = match *column.type_() {
                Type::INT8 => row
                    .try_get::<_, Option<i64>>(index)
                    .map_err(storage_error)?
                    .map(Value::Int),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(index)
                    .map_err(storage_error)?
                    .map(|v| Value::Int(v.into())),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(index)
                    .map_err(storage_error)?
                    .map(|v| Value::Int(v.into())),
                Type::BYTEA => row
                    .try_get::<_, Option<Vec<u8>>>(index)
                    .map_err(storage_error)?
                    .map(Value::Bytes),
                Type::TEXT | Type::VARCHAR => row
                    .try_get::<_, Option<String>>(index)
                    .map_err(storage_error)?
                    .map(Value::Text),
                ref other => {
                    return Err(CenterError::Storage(format!(
                        "unexpected column type {other}"
                    )))
                }
            };
            values.push(value.unwrap_or(Value::Null));
        }
        out.push(Row(values));
    }
    Ok(out)
}

fn params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|value| value as &(dyn ToSql + Sync))
        .collect()
}

/// At most this many prepared statements are kept per connection; past it the cache starts
/// over (statement texts built from data would otherwise grow it for as long as it runs).
const STATEMENTS_MAX: usize = 512;

/// The statements prepared on one connection, by text.
#[derive(Default)]
pub(super) struct Statements(HashMap<String, postgres::Statement>);

impl Statements {
    /// The prepared statement for `sql`, prepared now if this connection has not yet.
    /// Prepared statements live as long as the connection, whatever becomes of the
    /// transaction they were prepared in.
    fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<postgres::Statement, CenterError> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).map_err(storage_error)?;
        if self.0.len() >= STATEMENTS_MAX {
            self.0.clear();
        }
        self.0.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Forgets every statement: after a migration (a changed table can change what a
    /// prepared statement returns) and with a new connection (which knows none of them).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// Statements on a PostgreSQL connection or inside one of its transactions, through the
/// connection's prepared statements.
pub(super) struct PostgresExecutor<'a, C: GenericClient> {
    pub(super) client: &'a mut C,
    pub(super) statements: &'a mut Statements,
    /// Set when a statement was refused for a serialization conflict or a deadlock: the
    /// transaction is aborted and runs again (`Database::transaction_if`).
    pub(super) conflict: bool,
    /// Set when a statement failed because the connection is going or gone (a terminated
    /// backend, a server shutting down, a dropped socket): the next use connects anew.
    pub(super) lost: bool,
}

/// Whether an error says the connection itself is lost, not just the statement: the socket
/// closed, or the server ended the session (administrator or crash shutdown, class 08).
/// The client may report such an error before it has noticed its socket closed.
pub(super) fn is_connection_lost(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    error.is_closed()
        || matches!(
            error.code(),
            Some(code) if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        )
}

/// Whether PostgreSQL refused a statement or a commit because of a concurrent transaction
/// (serialization failure, deadlock), so that running the whole transaction again may pass.
pub(super) fn is_conflict(error: &postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            || *code == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
    )
}

impl<C: GenericClient> PostgresExecutor<'_, C> {
    /// A failed statement empties the cache: should a table have changed under a prepared
    /// statement (the server then refuses it), the next attempt prepares afresh instead of
    /// failing the same way for as long as the connection lives.
    fn forget_on_error<T>(
        &mut self,
        outcome: Result<T, postgres::Error>,
    ) -> Result<T, CenterError> {
        outcome.map_err(|error| {
            self.conflict |= is_conflict(&error);
            self.lost |= is_connection_lost(&error);
            self.statements.clear();
            storage_error(error)
        })
    }
}

impl<C: GenericClient> Executor for PostgresExecutor<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, CenterError> {
        let statement = self.statements.get(self.client, sql)?;
        let changed = self.client.execute(&statement, &params(values));
        self.forget_on_error(changed)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, CenterError> {
        let statement = self.statements.get(self.client, sql)?;
        let found = self.client.query(&statement, &params(values));
        rows(self.forget_on_error(found)?)
    }

    fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        values: &[Value],
    ) -> Result<u64, CenterError> {
        let mut types = Vec::with_capacity(values.len());
        let mut length = usize::MAX;
        for column in values {
            let (kind, count) = match column {
                Value::Ints(values) => (Type::INT8, values.len()),
                Value::ByteStrings(values) => (Type::BYTEA, values.len()),
                _ => return Err(CenterError::Storage("COPY takes columns only".into())),
            };
            types.push(kind);
            length = length.min(count);
        }
        let sql = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        );
        if values.is_empty() {
            length = 0;
        }
        let statement = self.statements.get(self.client, &sql)?;
        let client = &mut *self.client;
        let copied = (|| {
            let sink = client.copy_in(&statement)?;
            let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
            let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(values.len());
            for index in 0..length {
                row.clear();
                for column in values {
                    match column {
                        Value::Ints(values) => row.push(&values[index]),
                        Value::ByteStrings(values) => row.push(&values[index]),
                        _ => {}
                    }
                }
                writer.write(&row)?;
            }
            writer.finish()
        })();
        self.forget_on_error(copied)
    }
}

/// How long a connection attempt to PostgreSQL may take unless the URL says otherwise: the
/// service tries again while the database is away, and must not hang on each attempt.
pub const POSTGRES_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A PostgreSQL connection that opens itself again after it was lost (a database restart,
/// a terminated backend, a network cut), from the configuration it was first opened with.
pub struct PostgresConnection {
    client: postgres::Client,
    pub(super) config: postgres::Config,
    statements: Statements,
    /// A statement found the connection lost before the client noticed its socket closed.
    lost: bool,
    /// Tables this connection has seen exist (see `Database::known_tables`).
    pub(super) known_tables: std::collections::BTreeSet<String>,
}

impl core::fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PostgresConnection")
            .field("closed", &self.client.is_closed())
            .field("prepared", &self.statements.0.len())
            .finish_non_exhaustive()
    }
}

impl PostgresConnection {
    pub(super) fn connect(config: postgres::Config) -> Result<Self, CenterError> {
        let client = config.connect(postgres::NoTls).map_err(|error| {
            CenterError::Setup(format!(
                "cannot connect to PostgreSQL: {}",
                describe(&error)
            ))
        })?;
        Ok(PostgresConnection {
            client,
            config,
            statements: Statements::default(),
            lost: false,
            known_tables: std::collections::BTreeSet::new(),
        })
    }

    /// A client that is open, with its prepared statements: a connection found closed is
    /// replaced first (and its statements forgotten). While the database is away this fails
    /// (after at most the connect timeout), and the next call tries again.
    pub(super) fn open_parts(
        &mut self,
    ) -> Result<(&mut postgres::Client, &mut Statements, &mut bool), CenterError> {
        if self.client.is_closed() || self.lost {
            tracing::warn!("the PostgreSQL connection was lost; connecting again");
            self.client = self.config.connect(postgres::NoTls).map_err(|error| {
                CenterError::Storage(format!(
                    "cannot reconnect to PostgreSQL: {}",
                    describe(&error)
                ))
            })?;
            self.statements.clear();
            self.lost = false;
            tracing::info!("connected to PostgreSQL again");
        }
        Ok((&mut self.client, &mut self.statements, &mut self.lost))
    }

    /// [`PostgresConnection::open_parts`] without the flag that marks the connection lost.
    pub(super) fn open(&mut self) -> Result<(&mut postgres::Client, &mut Statements), CenterError> {
        let (client, statements, _) = self.open_parts()?;
        Ok((client, statements))
    }

    /// Runs one statement outside a transaction.
    pub(super) fn executor(
        &mut self,
    ) -> Result<PostgresExecutor<'_, postgres::Client>, CenterError> {
        let (client, statements) = self.open()?;
        Ok(PostgresExecutor {
            client,
            statements,
            conflict: false,
            lost: false,
        })
    }

    /// Connects anew at the next use: a statement found this connection lost.
    pub(super) fn mark_lost(&mut self) {
        self.lost = true;
    }

    pub(super) fn forget_statements(&mut self) {
        self.statements.clear();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed() || self.lost
    }
}
