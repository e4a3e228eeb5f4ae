//! The service's pool of center handles: requests run side by side on handles of their own,
//! a request that finds every handle busy for too long is answered 503 (and changes
//! nothing), `/health` never waits for a handle, and several requests at once on one SQLite
//! service store each record once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Barrier;
use std::time::Duration;

use common::*;
use rand_core::SeedableRng;
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_center_http::{BackgroundServer, ServiceLimits};
use valuecard_core::messages::center::TerminalLink;
use valuecard_sim::{Storage, World, WorldRng};

/// A center on an SQLite file in `dir` (a database in memory has room for one handle only).
fn file_center(dir: &std::path::Path, seed: u64) -> Center {
    Center::init(dir, None, clock(), &mut WorldRng::seed_from_u64(seed)).unwrap()
}

/// A signed list request of the harness's terminal, with `sequence`.
fn list_request(h: &Harness, url: &str, sequence: u64) -> Answer {
    let body = format!(
        r#"{{"terminal_id":"{}","since":0}}"#,
        device_id(&h.terminal).to_hex()
    );
    let headers = signed_by(
        &h.terminal,
        "POST",
        "/v1/lists/delta",
        sequence,
        body.as_bytes(),
    );
    send(url, "POST", "/v1/lists/delta", &headers, body.as_bytes())
}

#[test]
fn health_answers_while_every_handle_is_busy_and_a_request_left_waiting_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(file_center(dir.path(), 81), 81);
    let server = h.serve_again(ServiceLimits {
        pool_size: 1,
        pool_wait: Duration::from_millis(400),
        ..ServiceLimits::default()
    });
    let url = server.url();
    let exposition = send(&url, "GET", "/metrics", &[], b"").text();
    assert_eq!(metric(&exposition, "valuecard_pool_connections"), Some(1.0));
    let first = h.next_sequence(&h.terminal);

    // Another process holds SQLite's write lock for a while: the one handle, taken by the
    // first request, waits for it.
    let (locked, is_locked) = std::sync::mpsc::channel();
    let path = dir.path().join("center.sqlite");
    let blocker = std::thread::spawn(move || {
        let mut other = Database::open_sqlite(&path).unwrap();
        other
            .transaction(|tx| {
                tx.execute("UPDATE sequences SET next = next WHERE name = 'card'", &[])?;
                let _ = locked.send(());
                std::thread::sleep(Duration::from_millis(2_000));
                Ok(())
            })
            .unwrap();
    });
    is_locked.recv().unwrap();
    let waiting = {
        let (h_terminal, url) = (h.terminal.clone(), url.clone());
        std::thread::spawn(move || {
            let body = format!(
                r#"{{"terminal_id":"{}","since":0}}"#,
                device_id(&h_terminal).to_hex()
            );
            let headers = signed_by(
                &h_terminal,
                "POST",
                "/v1/lists/delta",
                first,
                body.as_bytes(),
            );
            send(&url, "POST", "/v1/lists/delta", &headers, body.as_bytes())
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // A second request finds no free handle within the pool's wait.
    let document = list_request(&h, &url, first + 1).problem(503, "unavailable");
    assert!(document.detail.contains("busy"), "{}", document.detail);
    // Health does not queue for a handle: it answers while the lock is still held.
    let health = send(&url, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        !blocker.is_finished(),
        "health answered only after the handle became free"
    );
    let exposition = send(&url, "GET", "/metrics", &[], b"").text();
    assert_eq!(
        metric(&exposition, "valuecard_pool_connections_idle"),
        Some(0.0)
    );

    // The first request goes on once the lock is released; the refused one left no trace.
    blocker.join().unwrap();
    let answer = waiting.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(h.last_sequence(&h.terminal), Some(first));
    assert_eq!(list_request(&h, &url, first + 1).status, 200);
}

#[test]
fn terminals_uploading_at_once_through_one_pooled_sqlite_service_store_each_record_once() {
    const TERMINALS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::create_seeded(
        Storage::Directory(dir.path().to_path_buf()),
        TERMINALS,
        today(),
        WorldRng::seed_from_u64(82),
    )
    .unwrap();
    // Purchases with every card at every terminal: each card's records reach the service
    // from several terminals at once.
    let mut cards: Vec<_> = (0..3)
        .map(|index| {
            let memory =
                valuecard_card::eeprom::MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE);
            let card = world.manufacture_card(memory).unwrap();
            let mut reader =
                valuecard_reader::InProcessReader::with_card(format!("card{index}"), card);
            world.issue(&mut reader, amount(50_000)).unwrap();
            reader
        })
        .collect();
    let mut spent = 0;
    for round in 0..3u64 {
        for terminal in 0..TERMINALS {
            for card in &mut cards {
                let cents = 100 + round * 7 + terminal as u64;
                world.terminals[terminal]
                    .purchase(card, amount(cents))
                    .unwrap();
                spent += cents;
            }
        }
    }
    let (uploads, images) = world_uploads(&world);
    let records: usize = uploads.iter().map(|upload| upload.items.len()).sum();
    assert_eq!(records, 3 * 3 * TERMINALS);
    // A client's full request of such records (every usage item has the same length) stays
    // under the service's body limit.
    let full = valuecard_core::messages::center::UsageUpload {
        terminal_id: uploads[0].terminal_id,
        items: vec![
            uploads[0].items[0].clone();
            valuecard_center_http::client::USAGE_ITEMS_PER_REQUEST
        ],
    };
    let body = serde_json::to_vec(&valuecard_center_http::terminal_wire::UsageUploadBody::new(
        &full,
    ))
    .unwrap();
    assert!(
        body.len() < valuecard_center_http::MAX_BODY_BYTES,
        "{} bytes for a full request",
        body.len()
    );
    drop(world);

    // The world's center, served with a pool of handles on its SQLite file.
    let center = Center::open(&dir.path().join("center"), None, clock()).unwrap();
    let server = BackgroundServer::bind(
        "127.0.0.1:0",
        std::sync::Arc::new(std::sync::Mutex::new(center)),
    )
    .unwrap();
    register_pin(&server.url(), server.pin());

    // Every terminal sends its whole batch twice (an answer lost, the batch sent again),
    // all at once.
    let barrier = Barrier::new(TERMINALS);
    let receipts: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = uploads
            .iter()
            .zip(&images)
            .map(|(upload, image)| {
                let (server, barrier) = (&server, &barrier);
                scope.spawn(move || {
                    let mut link = valuecard_center_http::HttpCenterLink::new(
                        &server.url(),
                        server.pin(),
                        Box::new(sam(image)),
                    )
                    .unwrap();
                    barrier.wait();
                    let first = link.upload_usage(upload).unwrap();
                    let again = link.upload_usage(upload).unwrap();
                    (upload.items.len(), first, again)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut stored = 0;
    for (sent, first, again) in &receipts {
        assert!(first.refused.is_empty() && again.refused.is_empty());
        assert_eq!(first.stored as usize, *sent, "{first:?}");
        assert_eq!(again.duplicates as usize, *sent, "{again:?}");
        assert!(first.clones_detected.is_empty() && again.clones_detected.is_empty());
        stored += first.stored as usize;
    }
    assert_eq!(stored, records);
    let mut center = server.center().lock().unwrap();
    assert_eq!(center.reported_spending().unwrap(), (spent, records as u64));
    assert!(center.cloned_cards().unwrap().is_empty());
}
