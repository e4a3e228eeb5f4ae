//! The benchmarks' scratch PostgreSQL schema: a run on `--database URL` gets a schema of its
//! own on that server, dropped when the run ends (on an error too), so a benchmark never
//! touches an operator's center.

use rand_core::{OsRng, RngCore};
use valuecard_center::sql::Database;

/// A fresh schema and the administrative connection that drops it.
pub(crate) struct ScratchSchema {
    admin: postgres::Client,
    name: String,
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

/// A connection to a fresh schema of the server at `url`, and the schema (dropped with it:
/// drop the center's connection first).
pub(crate) fn scratch_postgres(url: &str) -> Result<(Database, ScratchSchema), String> {
    let name = format!("valuecard_bench_{:016x}", OsRng.next_u64());
    let mut admin =
        postgres::Client::connect(url, postgres::NoTls).map_err(|e| format!("PostgreSQL: {e}"))?;
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .map_err(|e| e.to_string())?;
    let scratch = ScratchSchema { admin, name };
    let database =
        Database::connect_postgres(&scoped_to(url, &scratch.name)).map_err(|e| e.to_string())?;
    Ok((database, scratch))
}

/// `url` with `schema` as its search path, in either form PostgreSQL takes: a
/// `postgres://` URL gets the option as a query parameter, a key-value string as a pair.
pub(crate) fn scoped_to(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

/// The store's name in a benchmark's report.
pub(crate) fn store_name(postgres: bool) -> &'static str {
    if postgres {
        "PostgreSQL"
    } else {
        "SQLite (WAL, synchronous=FULL)"
    }
}

#[cfg(test)]
mod tests {
    use super::scoped_to;

    #[test]
    fn both_connection_string_forms_get_the_schema() {
        for (url, scoped) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/postgres?options=-c%20search_path%3Ds",
            ),
            (
                "postgresql://h/db?sslmode=disable",
                "postgresql://h/db?sslmode=disable&options=-c%20search_path%3Ds",
            ),
            ("host=h user=u", "host=h user=u options='-c search_path=s'"),
        ] {
            assert_eq!(scoped_to(url, "s"), scoped);
            let config: postgres::Config = scoped.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.get_options(), Some("-c search_path=s"));
        }
    }
}
