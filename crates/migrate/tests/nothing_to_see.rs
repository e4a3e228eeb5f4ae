//! Nothing to see for the server: after a move of a chip with known balances, a ticket and
//! points, neither the movement database, nor the server's log, nor any command or answer
//! that passed through the holder's device (the relay's messages) holds one of those values
//! or any key in the clear. Only the providers' own books may know them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use valuecard_card::testing;
use valuecard_center::sql::{Database, Executor, Value};
use valuecard_core::messages::services::{area_key, AreaContent, KeyState};
use valuecard_migrate::client::{self, Mode};

/// The log lines the server wrote, kept in memory.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every byte of every row of every table of the movement database.
fn dump(db: &mut Database) -> Vec<u8> {
    let mut out = Vec::new();
    let tables = db
        .query("SELECT name FROM sqlite_master WHERE type = 'table'", &[])
        .unwrap();
    for table in tables {
        let name = table.text(0).unwrap();
        for row in db.query(&format!("SELECT * FROM {name}"), &[]).unwrap() {
            for value in &row.0 {
                match value {
                    Value::Bytes(bytes) => out.extend_from_slice(bytes),
                    Value::Text(text) => out.extend_from_slice(text.as_bytes()),
                    Value::Int(int) => out.extend_from_slice(&int.to_be_bytes()),
                    _ => {}
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The secrets and values a server must never see, each as the bytes it would appear as.
fn secrets() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (
            "old balance (8 bytes)".into(),
            OLD_BALANCE.to_be_bytes().to_vec(),
        ),
        (
            "old balance (4 bytes)".into(),
            (OLD_BALANCE as u32).to_be_bytes().to_vec(),
        ),
        (
            "old balance (text)".into(),
            OLD_BALANCE.to_string().into_bytes(),
        ),
        (
            "moved balance (8 bytes)".into(),
            (OLD_BALANCE + NEW_BALANCE).to_be_bytes().to_vec(),
        ),
        (
            "moved balance (text)".into(),
            (OLD_BALANCE + NEW_BALANCE).to_string().into_bytes(),
        ),
        (
            "points (8 bytes)".into(),
            POINTS_HELD.to_be_bytes().to_vec(),
        ),
        ("points (text)".into(), POINTS_HELD.to_string().into_bytes()),
        ("ticket ID".into(), TICKET_ID.to_be_bytes().to_vec()),
        (
            "ticket ID (text)".into(),
            TICKET_ID.to_string().into_bytes(),
        ),
        ("tickets (encoded)".into(), original_tickets().encode()),
        ("points (encoded)".into(), original_points().encode()),
    ];
    if let AreaContent::Tickets(book) = original_tickets() {
        out.push((
            "ticket product".into(),
            book.tickets[0].product.to_be_bytes().to_vec(),
        ));
    }
    for number in 1..=3u8 {
        for state in [KeyState::Main, KeyState::Temporary] {
            let master = testing::area_master(number, state);
            out.push((
                format!("master {number} {state:?}"),
                master.expose().to_vec(),
            ));
            for card in 1..=2u8 {
                for service in SERVICES {
                    let key = area_key(&master, state, &testing::card_id(card), service);
                    out.push((
                        format!("area key card {card} service {service} {state:?}"),
                        key.expose().to_vec(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_move_server_and_the_relay_never_see_a_value_or_a_key() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut world = World::new();
    let mut relayed = Vec::new();
    for (mode, which) in [(Mode::Upload, Which::Old), (Mode::Download, Which::New)] {
        let inner = match which {
            Which::Old => &mut world.old,
            Which::New => &mut world.new,
        };
        let mut recording = RecordingReader {
            inner,
            seen: Vec::new(),
        };
        let outcome = client::run(
            &world.server,
            &mut recording,
            USER,
            PASSWORD,
            mode,
            &mut |_| {},
        )
        .unwrap();
        assert!(outcome.state == "uploaded" || outcome.state == "done");
        for (command, answer) in recording.seen {
            relayed.extend_from_slice(&command);
            relayed.extend_from_slice(&answer);
        }
    }
    assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);
    assert_eq!(
        content(world.chip(Which::New), TICKETS),
        Some(original_tickets())
    );

    let database = world.server.with_db(|_, db| dump(db));
    let log = log.0.lock().unwrap().clone();
    assert!(!database.is_empty() && !relayed.is_empty());
    assert!(
        contains(&log, b"move"),
        "the server's log was captured (it logs each step)"
    );
    for (name, bytes) in secrets() {
        assert!(
            !contains(&database, &bytes),
            "{name} is in the movement database"
        );
        assert!(!contains(&log, &bytes), "{name} is in the server's log");
        assert!(
            !contains(&relayed, &bytes),
            "{name} passed through the relay in the clear"
        );
    }

    // The check can fail: the providers' own books do hold what they must (the purse
    // move's amount), so the same search finds it there.
    let purse_books = world.provider(PURSE).with_db(|_, db| dump(db));
    assert!(contains(&purse_books, &(OLD_BALANCE as i64).to_be_bytes()));
}
