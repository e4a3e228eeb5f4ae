//! A scratch PostgreSQL schema for one test, dropped with everything in it when the test
//! ends; `None` (after a `SKIPPED:` line on the process's stderr, which CI reads: the test
//! harness captures `eprintln!` of passing tests) when no server answers.
#![allow(dead_code, clippy::unwrap_used)]

use rand_core::RngCore;

/// The server the tests use: `VALUECARD_POSTGRES_URL`, by default the local one with trust
/// authentication.
pub fn postgres_url() -> String {
    std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// A scratch schema, dropped (with everything in it) when the test ends.
pub struct Scratch {
    admin: postgres::Client,
    pub schema: String,
    /// The server's connection string with the schema as its search path.
    pub url: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
    }
}

impl Scratch {
    /// A new connection of the center's SQL layer to the schema.
    pub fn database(&self) -> valuecard_center::sql::Database {
        valuecard_center::sql::Database::connect_postgres(&self.url).unwrap()
    }
}

/// A scratch schema named after `purpose`.
pub fn scratch(purpose: &str) -> Option<Scratch> {
    let url = postgres_url();
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL not reachable at {url:?}: {error}"
            );
            return None;
        }
    };
    let schema = format!(
        "valuecard_{purpose}_test_{:016x}",
        rand_core::OsRng.next_u64()
    );
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let url = format!("{url} options='-c search_path={schema}'");
    Some(Scratch { admin, schema, url })
}
