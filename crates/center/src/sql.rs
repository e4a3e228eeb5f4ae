//! One SQL layer over SQLite (embedded, the default) and PostgreSQL (production): the same
//! migrations and the same statements, written once in the portable subset of SQL both
//! understand. Statements use `$1, $2, ...` placeholders; for SQLite they become `?1, ?2`.
//! Migrations use `BYTEA` for binary columns; for SQLite that becomes `BLOB`.

use crate::CenterError;

mod database;
mod pg;
mod set;
mod sqlite;
pub use self::database::{Database, WriterGate, CONFLICT_ATTEMPTS};
pub use self::pg::{PostgresConnection, POSTGRES_CONNECT_TIMEOUT};
pub use self::set::{execute_set, insert_set, query_set, SetKeys};

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    /// A column of integers for a set statement (`SetKeys`), PostgreSQL only.
    Ints(Vec<i64>),
    /// A column of byte strings for a set statement (`SetKeys`), PostgreSQL only.
    ByteStrings(Vec<Vec<u8>>),
}

/// Which database a statement runs on, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(i64::from(value))
    }
}

/// An amount in minor units, as every amount column stores it (amounts are bounded far
/// below `i64::MAX`, `valuecard_core::limits`).
impl From<valuecard_core::money::Amount> for Value {
    fn from(value: valuecard_core::money::Amount) -> Self {
        Value::Int(i64::try_from(value.minor()).unwrap_or(i64::MAX))
    }
}

impl From<u8> for Value {
    fn from(value: u8) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Self {
        Value::Bytes(value.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Bytes(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

fn corrupt(what: &str, index: usize) -> CenterError {
    CenterError::Storage(format!("column {index} is not {what}"))
}

impl Row {
    pub fn int(&self, index: usize) -> Result<i64, CenterError> {
        match self.0.get(index) {
            Some(Value::Int(value)) => Ok(*value),
            _ => Err(corrupt("an integer", index)),
        }
    }

    pub fn bytes(&self, index: usize) -> Result<Vec<u8>, CenterError> {
        match self.0.get(index) {
            Some(Value::Bytes(value)) => Ok(value.clone()),
            _ => Err(corrupt("bytes", index)),
        }
    }

    pub fn optional_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, CenterError> {
        match self.0.get(index) {
            Some(Value::Bytes(value)) => Ok(Some(value.clone())),
            Some(Value::Null) => Ok(None),
            _ => Err(corrupt("bytes or null", index)),
        }
    }

    pub fn optional_int(&self, index: usize) -> Result<Option<i64>, CenterError> {
        match self.0.get(index) {
            Some(Value::Int(value)) => Ok(Some(*value)),
            Some(Value::Null) => Ok(None),
            _ => Err(corrupt("integer or null", index)),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, CenterError> {
        match self.0.get(index) {
            Some(Value::Text(value)) => Ok(value.clone()),
            _ => Err(corrupt("text", index)),
        }
    }

    pub fn optional_text(&self, index: usize) -> Result<Option<String>, CenterError> {
        match self.0.get(index) {
            Some(Value::Text(value)) => Ok(Some(value.clone())),
            Some(Value::Null) => Ok(None),
            _ => Err(corrupt("text or null", index)),
        }
    }
}

/// Runs statements: a connection in autocommit mode, or an open transaction.
pub trait Executor {
    fn dialect(&self) -> Dialect;
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CenterError>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CenterError>;

    fn query_optional(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, CenterError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, CenterError> {
        self.query_optional(sql, params)?.ok_or_else(|| {
            CenterError::Storage("a statement that returns one row returned none".into())
        })
    }

    /// Runs a query once for each row of parameters, the results in that order. SQLite
    /// prepares it once for all of them.
    fn query_each(
        &mut self,
        sql: &str,
        rows: &mut dyn Iterator<Item = Vec<Value>>,
    ) -> Result<Vec<Row>, CenterError> {
        let mut out = Vec::new();
        for params in rows {
            out.extend(self.query(sql, &params)?);
        }
        Ok(out)
    }

    /// Appends rows to `table` with PostgreSQL's binary COPY: `columns` names them, `values`
    /// holds one column of values each (`Value::Ints` or `Value::ByteStrings`, of equal
    /// length). Only PostgreSQL copies; callers go through `sql::insert_set`, which inserts
    /// on SQLite.
    fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        values: &[Value],
    ) -> Result<u64, CenterError> {
        let _ = (columns, values);
        Err(CenterError::Storage(format!(
            "no COPY into {table} on this database"
        )))
    }

    /// Runs a statement once for each row of parameters; the rows changed, summed.
    fn execute_each(
        &mut self,
        sql: &str,
        rows: &mut dyn Iterator<Item = Vec<Value>>,
    ) -> Result<u64, CenterError> {
        let mut changed = 0;
        for params in rows {
            changed += self.execute(sql, &params)?;
        }
        Ok(changed)
    }
}

fn storage_error(error: impl std::error::Error) -> CenterError {
    CenterError::Storage(describe(&error))
}

/// An error with its causes: the postgres crate's own message is only "db error", the server's
/// words (what failed and why) are in its source.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
