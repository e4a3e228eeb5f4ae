//! The SQLite side of the SQL layer: the dialect, parameters and rows, and statements on a
//! connection or in one of its transactions.

use super::{storage_error, Dialect, Executor, Row, Value};
use crate::CenterError;

/// `$1` placeholders to SQLite's numbered `?1`.
pub(super) fn sqlite_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|next| next.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out.replace("BYTEA", "BLOB")
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Value::Bytes(value) => ToSqlOutput::Borrowed(ValueRef::Blob(value)),
            Value::Text(value) => ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes())),
            // SQLite binds no arrays: set statements run once per key there (`SetKeys`).
            Value::Ints(_) | Value::ByteStrings(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "SQLite binds no arrays".into(),
                ))
            }
        })
    }
}

/// Statements on a SQLite connection or inside one of its transactions (rusqlite runs both
/// through a shared reference).
pub(super) struct SqliteExecutor<'a>(pub(super) &'a rusqlite::Connection);

fn sqlite_rows(
    statement: &mut rusqlite::CachedStatement<'_>,
    params: &[Value],
) -> Result<Vec<Row>, CenterError> {
    use rusqlite::types::ValueRef;
    let columns = statement.column_count();
    let mut rows = statement
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(storage_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(storage_error)? {
        let mut values = Vec::with_capacity(columns);
        for index in 0..columns {
            values.push(match row.get_ref(index).map_err(storage_error)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(value) => Value::Int(value),
                ValueRef::Blob(value) => Value::Bytes(value.to_vec()),
                ValueRef::Text(value) => Value::Text(String::from_utf8_lossy(value).into_owned()),
                ValueRef::Real(_) => {
                    return Err(CenterError::Storage("unexpected REAL column".into()))
                }
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}

impl SqliteExecutor<'_> {
    fn prepare(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>, CenterError> {
        self.0
            .prepare_cached(&sqlite_dialect(sql))
            .map_err(storage_error)
    }
}

impl Executor for SqliteExecutor<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, CenterError> {
        self.prepare(sql)?
            .execute(rusqlite::params_from_iter(params.iter()))
            .map(|changed| changed as u64)
            .map_err(storage_error)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, CenterError> {
        sqlite_rows(&mut self.prepare(sql)?, params)
    }

    fn query_each(
        &mut self,
        sql: &str,
        rows: &mut dyn Iterator<Item = Vec<Value>>,
    ) -> Result<Vec<Row>, CenterError> {
        let mut statement = self.prepare(sql)?;
        let mut out = Vec::new();
        for params in rows {
            out.extend(sqlite_rows(&mut statement, &params)?);
        }
        Ok(out)
    }

    fn execute_each(
        &mut self,
        sql: &str,
        rows: &mut dyn Iterator<Item = Vec<Value>>,
    ) -> Result<u64, CenterError> {
        let mut statement = self.prepare(sql)?;
        let mut changed = 0;
        for params in rows {
            changed += statement
                .execute(rusqlite::params_from_iter(params.iter()))
                .map_err(storage_error)? as u64;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_dialect;

    #[test]
    fn placeholders_and_types_become_sqlite() {
        assert_eq!(
            sqlite_dialect("SELECT $1, $12 FROM t WHERE b = $2::x"),
            "SELECT ?1, ?12 FROM t WHERE b = ?2::x"
        );
        assert_eq!(
            sqlite_dialect("CREATE TABLE t (k BYTEA)"),
            "CREATE TABLE t (k BLOB)"
        );
        assert_eq!(sqlite_dialect("SELECT '$'"), "SELECT '$'");
    }
}
