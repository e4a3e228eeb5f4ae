//! The center over HTTP on PostgreSQL: the same issuance and loads, replay refusal by the
//! same statement, and what a client sees when the database stops answering. Needs a
//! PostgreSQL server (`VALUECARD_POSTGRES_URL`, default the local one with trust
//! authentication); without one the test says SKIPPED and passes, and CI refuses that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Says that a test was skipped, on the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and CI must see every skip.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use common::*;
use rand_core::{RngCore, SeedableRng};
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_center_http::problem::INTERNAL_DETAIL;
use valuecard_sim::{read_purse, WorldRng};

fn base_url() -> String {
    std::env::var("VALUECARD_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// A fresh schema for this test, a connection to it under a name the admin connection can
/// find, and the admin connection.
fn fresh_database() -> Option<(Database, postgres::Client, String)> {
    let url = base_url();
    let mut admin = match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(client) => client,
        Err(error) => {
            skip_note!("SKIPPED: PostgreSQL not reachable at {url:?}: {error}");
            return None;
        }
    };
    let tag = format!("{:016x}", rand_core::OsRng.next_u64());
    let schema = format!("valuecard_http_test_{tag}");
    let application = format!("valuecard_http_{tag}");
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let database = Database::connect_postgres(&format!(
        "{url} application_name={application} options='-c search_path={schema}'"
    ))
    .unwrap();
    Some((database, admin, application))
}

#[test]
fn issuance_and_loads_over_http_on_postgres() {
    let Some((database, mut admin, application)) = fresh_database() else {
        return;
    };
    let center = Center::ephemeral_on(database, clock(), &mut WorldRng::seed_from_u64(21)).unwrap();
    let mut h = Harness::start(center, 21);
    let url = h.url();
    let health = send(&url, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "ok", "database": "postgresql"})
    );

    let (mut reader, card_id) = issue_and_load(&mut h);
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(6_250));
    let before = h.snapshot();
    assert_eq!(before.cards, 1);
    assert_eq!((before.totals.issued, before.totals.loaded), (5_000, 1_250));

    // The sequence check and advance is one statement on PostgreSQL too.
    let settle = "/v1/loads/settle";
    // A settlement of the committed recharge, on the card's own evidence, changes nothing.
    let challenge = [0x11; 16];
    let evidence = valuecard_sim::last_transaction(&mut reader, challenge).unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "dispenser_id": device_id(&h.dispenser).to_hex(),
        "card_id": card_id.to_hex(),
        "load_number": evidence.record.writer_sequence,
        "challenge": hex::encode(challenge),
        "evidence": hex::encode(evidence.encode()),
    }))
    .unwrap();
    let sequence = h.next_sequence(&h.dispenser);
    let headers = signed_by(&h.dispenser, "POST", settle, sequence, &body);
    assert_eq!(send(&url, "POST", settle, &headers, &body).status, 200);
    send(&url, "POST", settle, &headers, &body).problem(401, "replayed-request");
    let mut signer = sam(&h.other_dispenser);
    let forged = signed_headers(
        &mut signer,
        device_id(&h.dispenser),
        "POST",
        settle,
        sequence + 1,
        &body,
    );
    send(&url, "POST", settle, &forged, &body).problem(401, "bad-signature");
    assert_eq!(h.last_sequence(&h.dispenser), Some(sequence));
    assert_eq!(h.snapshot(), before);

    // The database goes away: health says 503, a device gets a generic 500, and neither
    // carries the database's words.
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .unwrap();
    assert_eq!(terminated.len(), 1, "the center's connection was found");
    let health = send(&url, "GET", "/health", &[], b"");
    let document = health.problem(503, "unavailable");
    assert_eq!(document.database.as_deref(), Some("postgresql"));
    let headers = signed_by(&h.dispenser, "POST", settle, sequence + 1, &body);
    let answer = send(&url, "POST", settle, &headers, &body);
    let document = answer.problem(500, "internal");
    assert_eq!(document.detail, INTERNAL_DETAIL);
    let text = answer.text().to_ascii_lowercase();
    for word in ["postgres", "connection", "terminat", "sql"] {
        assert!(!text.contains(word), "{word} leaked: {text}");
    }
}
