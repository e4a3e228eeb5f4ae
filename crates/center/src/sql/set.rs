//! Set statements: one statement over many keys (see `SetKeys`).

use super::{Dialect, Executor, Row, Value};
use crate::CenterError;

/// The keys of a set statement: named columns of equal length, one key per row. In the
/// statement, `{keys}` stands for a table `set_keys` of these columns.
///
/// On PostgreSQL the columns go as arrays and `UNNEST` makes the table: one statement, one
/// round trip, for the whole set. On SQLite (in process, where a statement costs no round
/// trip and binds no arrays) the table is one row of parameters and the statement runs once
/// per key, its results concatenated in key order.
#[derive(Debug, Default)]
pub struct SetKeys {
    names: Vec<&'static str>,
    columns: Vec<Value>,
}

impl SetKeys {
    pub fn new() -> Self {
        SetKeys::default()
    }

    pub fn ints(mut self, name: &'static str, values: Vec<i64>) -> Self {
        self.names.push(name);
        self.columns.push(Value::Ints(values));
        self
    }

    pub fn bytes(mut self, name: &'static str, values: Vec<Vec<u8>>) -> Self {
        self.names.push(name);
        self.columns.push(Value::ByteStrings(values));
        self
    }

    /// The same keys without the column `name` (for a table that lacks it).
    pub fn without(mut self, name: &str) -> Self {
        if let Some(index) = self.names.iter().position(|n| *n == name) {
            self.names.remove(index);
            self.columns.remove(index);
        }
        self
    }

    /// How many keys: the length of the shortest column (they are built equal).
    pub fn len(&self) -> usize {
        self.columns
            .iter()
            .map(|column| match column {
                Value::Ints(values) => values.len(),
                Value::ByteStrings(values) => values.len(),
                _ => 0,
            })
            .min()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table(&self, dialect: Dialect) -> String {
        let mut sources = Vec::with_capacity(self.names.len());
        for (index, column) in self.columns.iter().enumerate() {
            let number = index + 1;
            sources.push(match (dialect, column) {
                (Dialect::Postgres, Value::Ints(_)) => format!("${number}::BIGINT[]"),
                (Dialect::Postgres, _) => format!("${number}::BYTEA[]"),
                (Dialect::Sqlite, _) => format!("${number} AS {}", self.names[index]),
            });
        }
        match dialect {
            Dialect::Postgres => format!(
                "UNNEST({}) AS set_keys ({})",
                sources.join(", "),
                self.names.join(", ")
            ),
            Dialect::Sqlite => format!("(SELECT {}) AS set_keys", sources.join(", ")),
        }
    }

    /// The parameters of key `index` (SQLite).
    fn row(&self, index: usize) -> Vec<Value> {
        self.columns
            .iter()
            .map(|column| match column {
                Value::Ints(values) => values.get(index).map_or(Value::Null, |v| Value::Int(*v)),
                Value::ByteStrings(values) => values
                    .get(index)
                    .map_or(Value::Null, |v| Value::Bytes(v.clone())),
                _ => Value::Null,
            })
            .collect()
    }
}

/// Runs a query over a set of keys (see `SetKeys`); no statement at all for an empty set.
pub fn query_set(
    tx: &mut dyn Executor,
    sql: &str,
    keys: &SetKeys,
) -> Result<Vec<Row>, CenterError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = tx.dialect();
    let sql = sql.replace("{keys}", &keys.table(dialect));
    match dialect {
        Dialect::Postgres => tx.query(&sql, &keys.columns),
        Dialect::Sqlite => tx.query_each(&sql, &mut (0..keys.len()).map(|i| keys.row(i))),
    }
}

/// Runs a statement over a set of keys (see `SetKeys`) and returns the rows it changed.
pub fn execute_set(tx: &mut dyn Executor, sql: &str, keys: &SetKeys) -> Result<u64, CenterError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let dialect = tx.dialect();
    let sql = sql.replace("{keys}", &keys.table(dialect));
    match dialect {
        Dialect::Postgres => tx.execute(&sql, &keys.columns),
        Dialect::Sqlite => tx.execute_each(&sql, &mut (0..keys.len()).map(|i| keys.row(i))),
    }
}

/// Appends one row per key to `table`, the keys' names being its columns: on PostgreSQL by
/// binary COPY (the server writes the rows in bulk, with no statement to plan and no
/// arrays to unpack), on SQLite by one prepared INSERT per key. For tables with no
/// uniqueness to meet: COPY has no `ON CONFLICT`, and a conflict fails the whole batch.
pub fn insert_set(tx: &mut dyn Executor, table: &str, keys: &SetKeys) -> Result<u64, CenterError> {
    if keys.is_empty() {
        return Ok(0);
    }
    match tx.dialect() {
        Dialect::Postgres => tx.copy_in(table, &keys.names, &keys.columns),
        Dialect::Sqlite => {
            let columns = keys.names.join(", ");
            execute_set(
                tx,
                &format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {{keys}}"),
                keys,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys() -> SetKeys {
        SetKeys::new()
            .bytes("card_id", vec![vec![1; 8], vec![2; 8], vec![3; 8]])
            .ints("card_counter", vec![10, 20, 30])
    }

    #[test]
    fn the_key_table_is_unnest_on_postgres_and_one_row_on_sqlite() {
        assert_eq!(
            keys().table(Dialect::Postgres),
            "UNNEST($1::BYTEA[], $2::BIGINT[]) AS set_keys (card_id, card_counter)"
        );
        assert_eq!(
            keys().table(Dialect::Sqlite),
            "(SELECT $1 AS card_id, $2 AS card_counter) AS set_keys"
        );
        assert_eq!(keys().len(), 3);
        assert_eq!(
            keys().row(1),
            vec![Value::Bytes(vec![2; 8]), Value::Int(20)]
        );
    }

    #[test]
    fn a_set_appended_on_sqlite_holds_every_row_of_the_columns_kept() {
        let mut db = super::super::Database::open_sqlite_in_memory().unwrap();
        db.execute("CREATE TABLE t (card_id BYTEA NOT NULL)", &[])
            .unwrap();
        let appended = insert_set(&mut db, "t", &keys().without("card_counter")).unwrap();
        assert_eq!(appended, 3);
        let rows = db
            .query("SELECT card_id FROM t ORDER BY card_id", &[])
            .unwrap();
        let cards: Vec<Vec<u8>> = rows.iter().map(|row| row.bytes(0).unwrap()).collect();
        assert_eq!(cards, vec![vec![1; 8], vec![2; 8], vec![3; 8]]);
        assert_eq!(insert_set(&mut db, "t", &SetKeys::new()).unwrap(), 0);
    }

    #[test]
    fn a_set_statement_on_sqlite_answers_for_every_key_in_order() {
        let mut db = super::super::Database::open_sqlite_in_memory().unwrap();
        db.execute(
            "CREATE TABLE t (card_id BYTEA NOT NULL, card_counter BIGINT NOT NULL)",
            &[],
        )
        .unwrap();
        let inserted = execute_set(
            &mut db,
            "INSERT INTO t (card_id, card_counter) SELECT card_id, card_counter FROM {keys}",
            &keys(),
        )
        .unwrap();
        assert_eq!(inserted, 3);
        let rows = query_set(
            &mut db,
            "SELECT t.card_counter FROM t JOIN {keys} ON t.card_id = set_keys.card_id
             WHERE t.card_counter = set_keys.card_counter",
            &SetKeys::new()
                .bytes("card_id", vec![vec![3; 8], vec![9; 8], vec![1; 8]])
                .ints("card_counter", vec![30, 20, 10]),
        )
        .unwrap();
        let counters: Vec<i64> = rows.iter().map(|row| row.int(0).unwrap()).collect();
        assert_eq!(counters, vec![30, 10]);
        assert!(query_set(&mut db, "SELECT 1 FROM {keys}", &SetKeys::new())
            .unwrap()
            .is_empty());
    }
}
