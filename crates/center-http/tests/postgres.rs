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
fn fresh_database() -> Option<(Database, postgres::Client, String, String)> {
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
    Some((database, admin, application, schema))
}

#[test]
fn issuance_and_loads_over_http_on_postgres() {
    let Some((database, mut admin, application, _)) = fresh_database() else {
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

    // The center's backends are terminated (a database restart looks the same to them):
    // the service connects again, and the next requests succeed.
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .unwrap();
    assert_eq!(
        terminated.len(),
        valuecard_center_http::pool::default_pool_size()
            + valuecard_center_http::pool::LOOKUP_CONNECTIONS
            + 1,
        "every connection of the service (its pool, its lookups, its health check) was found"
    );
    let health = send(&url, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    let headers = signed_by(&h.dispenser, "POST", settle, sequence + 1, &body);
    let answer = send(&url, "POST", settle, &headers, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(h.last_sequence(&h.dispenser), Some(sequence + 1));
    let (mut reader, _) = issue_and_load(&mut h);
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(6_250));
}

/// A TCP forwarder in front of PostgreSQL that can be cut (every connection through it
/// closed, new ones refused) and restored: the database "goes away" for this test's
/// connections only, without touching the server that others use.
struct CuttableLink {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CuttableLink {
    fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accept_up, accept_open) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut open = accept_open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableLink { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_service_reports_the_database_away_and_recovers_when_it_returns() {
    let base = base_url();
    let config: postgres::Config = base.parse().unwrap();
    let target = match (config.get_hosts().first(), config.get_ports().first()) {
        (Some(postgres::config::Host::Tcp(host)), port) => {
            use std::net::ToSocketAddrs;
            (host.as_str(), port.copied().unwrap_or(5432))
                .to_socket_addrs()
                .unwrap()
                .next()
                .unwrap()
        }
        _ => {
            skip_note!("SKIPPED: the PostgreSQL URL names no TCP host to put a link in front of");
            return;
        }
    };
    let Some((_, _admin, _, schema)) = fresh_database() else {
        return;
    };
    let link = CuttableLink::start(target);
    let mut through = format!(
        "host=127.0.0.1 port={} user={} dbname={} options='-c search_path={schema}'",
        link.port,
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
    );
    if let Some(password) = config.get_password() {
        through.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    let database = Database::connect_postgres(&through).unwrap();
    let center = Center::ephemeral_on(database, clock(), &mut WorldRng::seed_from_u64(22)).unwrap();
    let mut h = Harness::start(center, 22);
    let url = h.url();
    let (mut card, card_id) = issue_and_load(&mut h);
    let settle = "/v1/loads/settle";
    // The card's own evidence for its last load (a settlement that changes nothing).
    let challenge = [0x22; 16];
    let evidence = valuecard_sim::last_transaction(&mut card, challenge).unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "dispenser_id": device_id(&h.dispenser).to_hex(),
        "card_id": card_id.to_hex(),
        "load_number": evidence.record.writer_sequence,
        "challenge": hex::encode(challenge),
        "evidence": hex::encode(evidence.encode()),
    }))
    .unwrap();

    // Away: health says 503 (every time, not only once), a device gets a generic 500, and
    // neither carries the database's words.
    let sequence = h.next_sequence(&h.dispenser);
    link.cut();
    for _ in 0..2 {
        let document = send(&url, "GET", "/health", &[], b"").problem(503, "unavailable");
        assert_eq!(document.database.as_deref(), Some("postgresql"));
    }
    let headers = signed_by(&h.dispenser, "POST", settle, sequence, &body);
    let answer = send(&url, "POST", settle, &headers, &body);
    let document = answer.problem(500, "internal");
    assert_eq!(document.detail, INTERNAL_DETAIL);
    let text = answer.text().to_ascii_lowercase();
    for word in ["postgres", "connection", "terminat", "sql"] {
        assert!(!text.contains(word), "{word} leaked: {text}");
    }
    // Two health checks and one request failed on the database, and the metrics say so.
    let exposition = send(&url, "GET", "/metrics", &[], b"").text();
    assert_eq!(
        metric(&exposition, "valuecard_database_errors_total"),
        Some(3.0),
        "{exposition}"
    );

    // Back: healthy again, and requests succeed on new connections.
    link.restore();
    let health = send(&url, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    let sequence = h.next_sequence(&h.dispenser);
    let headers = signed_by(&h.dispenser, "POST", settle, sequence, &body);
    let answer = send(&url, "POST", settle, &headers, &body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(h.last_sequence(&h.dispenser), Some(sequence));
    let (mut reader, _) = issue_and_load(&mut h);
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(6_250));
}

/// Three services (each with its pool of handles) on one database, as three `center serve`
/// processes behind a load balancer: terminals upload at once to different services, each
/// batch again to another service in the next round, and a cloned card's two records reach
/// two services at once. Every record is stored once and the clone flagged once.
#[test]
fn three_services_on_one_database_store_every_record_once_and_flag_the_clone_once() {
    use valuecard_core::messages::center::TerminalLink;
    use valuecard_sim::{Storage, World};
    const SERVICES: usize = 3;

    let Some((database, mut admin, _application, schema)) = fresh_database() else {
        return;
    };
    let mut world = World::create_seeded(
        Storage::on(database),
        SERVICES,
        today(),
        WorldRng::seed_from_u64(91),
    )
    .unwrap();
    let issue = |world: &mut World, name: &str| {
        let memory = valuecard_card::eeprom::MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE);
        let card = world.manufacture_card(memory.clone()).unwrap();
        let mut reader = valuecard_reader::InProcessReader::with_card(name, card);
        let card_id = world.issue(&mut reader, amount(20_000)).unwrap();
        (reader, memory, card_id)
    };
    let mut plain: Vec<_> = (0..3)
        .map(|index| issue(&mut world, &format!("plain{index}")).0)
        .collect();
    let (mut cloned, memory, cloned_id) = issue(&mut world, "cloned");
    let copy_memory = valuecard_card::eeprom::MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE);
    copy_memory.restore(&memory.snapshot());
    let mut copy = valuecard_reader::InProcessReader::with_card(
        "copy",
        valuecard_card::Card::open(copy_memory, world.fork_rng()).unwrap(),
    );
    let mut spent = 0;
    for terminal in 0..SERVICES {
        for (index, card) in plain.iter_mut().enumerate() {
            let cents = 200 + 10 * terminal as u64 + index as u64;
            world.terminals[terminal]
                .purchase(card, amount(cents))
                .unwrap();
            spent += cents;
        }
    }
    // The card and its copy spend the same state at two terminals.
    world.terminals[0]
        .purchase(&mut cloned, amount(400))
        .unwrap();
    world.terminals[1].purchase(&mut copy, amount(450)).unwrap();
    spent += 850;
    let (uploads, images) = world_uploads(&world);
    let records: usize = uploads.iter().map(|upload| upload.items.len()).sum();
    let keys = tempfile::tempdir().unwrap();
    world.center.save_keys(keys.path()).unwrap();

    let url = format!("{} options='-c search_path={schema}'", base_url());
    let servers: Vec<valuecard_center_http::BackgroundServer> = (0..SERVICES)
        .map(|_| {
            let center = Center::open(
                keys.path(),
                Some(Database::connect_postgres(&url).unwrap()),
                clock(),
            )
            .unwrap();
            let server = valuecard_center_http::BackgroundServer::bind(
                "127.0.0.1:0",
                std::sync::Arc::new(std::sync::Mutex::new(center)),
            )
            .unwrap();
            register_pin(&server.url(), server.pin());
            server
        })
        .collect();

    const ROUNDS: usize = 3;
    let barrier = std::sync::Barrier::new(SERVICES);
    let receipts: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SERVICES)
            .map(|terminal| {
                let (uploads, images, servers, barrier) = (&uploads, &images, &servers, &barrier);
                scope.spawn(move || {
                    let mut receipts = Vec::new();
                    for round in 0..ROUNDS {
                        let server = &servers[(terminal + round) % SERVICES];
                        let mut link = valuecard_center_http::HttpCenterLink::new(
                            &server.url(),
                            server.pin(),
                            Box::new(sam(&images[terminal])),
                        )
                        .unwrap();
                        barrier.wait();
                        receipts.push(link.upload_usage(&uploads[terminal]).unwrap());
                    }
                    receipts
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut stored = 0;
    let mut clones = Vec::new();
    for receipt in receipts.iter().flatten() {
        assert!(receipt.refused.is_empty(), "{receipt:?}");
        stored += receipt.stored as usize;
        clones.extend(receipt.clones_detected.iter().copied());
    }
    assert_eq!(stored, records);
    assert_eq!(clones, vec![cloned_id]);
    for server in &servers {
        let mut center = server.center().lock().unwrap();
        assert_eq!(center.cloned_cards().unwrap(), vec![cloned_id]);
        let clone_alerts = center
            .alerts()
            .unwrap()
            .into_iter()
            .filter(|alert| alert.kind == "cloned")
            .count();
        assert_eq!(clone_alerts, 1);
        assert_eq!(center.reported_spending().unwrap(), (spent, records as u64));
    }
    drop(servers);
    drop(world);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
