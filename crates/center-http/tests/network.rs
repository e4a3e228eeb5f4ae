//! A network attacker between the devices and the center: the service speaks only TLS with
//! the certificate the devices pin, and even a man in the middle who holds that certificate's
//! key (a TLS-terminating proxy, a leaked key) cannot make a device act on an answer the
//! center did not give to that very request: altered list deltas, forged and replayed upload
//! receipts are all refused, and the refused upload stays pending at the terminal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use common::*;
use rand_core::SeedableRng;
use valuecard_center::Center;
use valuecard_center_http::{BackgroundServer, HttpCenterLink, ServiceIdentity, ServiceLimits};
use valuecard_core::messages::center::{CenterError, ListReason, TerminalLink};
use valuecard_sim::WorldRng;
use valuecard_terminal::payment::PaymentTerminal;
use valuecard_terminal::store::MemoryStore;
use valuecard_terminal::TerminalError;

/// What the man in the middle does with the next exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways unchanged.
    PassThrough,
    /// Forwards, then removes every entry from a list delta (keeping the signature).
    StripListEntries,
    /// Keeps the request from the center and answers a receipt of its own, unsigned.
    ForgeReceipt,
    /// Keeps the request from the center and answers the last genuine receipt, with the
    /// center's signature over it.
    ReplayLastReceipt,
}

#[derive(Debug, Clone, Default)]
struct Reply {
    status: u16,
    content_type: String,
    signature: Option<String>,
    body: Vec<u8>,
}

struct Mitm {
    url: String,
    mode: Arc<Mutex<Mode>>,
    /// Requests that reached the center through it.
    forwarded: Arc<Mutex<Vec<String>>>,
}

impl Mitm {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// One HTTP/1.1 request: method, path, headers, body.
type RawRequest = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request.
fn read_request(reader: &mut impl BufRead) -> Option<RawRequest> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

fn forward(
    upstream: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let wanted: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.starts_with("valuecard-") || name == "content-type")
        .cloned()
        .collect();
    let agent = agent_for(upstream);
    let url = format!("{upstream}{path}");
    let mut response = if method == "GET" {
        let mut request = agent.get(&url);
        for (name, value) in &wanted {
            request = request.header(name, value);
        }
        request.call().unwrap()
    } else {
        let mut request = agent.post(&url);
        for (name, value) in &wanted {
            request = request.header(name, value);
        }
        request.send(body).unwrap()
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    Reply {
        status: response.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        signature: header("valuecard-answer-signature"),
        body: response.body_mut().read_to_vec().unwrap(),
    }
}

/// A TLS-terminating man in the middle with the service's own identity, in front of
/// `upstream`.
fn start_mitm(identity: &ServiceIdentity, upstream: String) -> Mitm {
    let config = identity.server_config().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let mode = Arc::new(Mutex::new(Mode::PassThrough));
    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let (thread_mode, thread_forwarded) = (mode.clone(), forwarded.clone());
    std::thread::spawn(move || {
        let mut last_receipt: Option<Reply> = None;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut reader = BufReader::new(rustls::StreamOwned::new(connection, stream));
            let Some((method, path, headers, body)) = read_request(&mut reader) else {
                continue;
            };
            let mode = *thread_mode.lock().unwrap();
            let is_receipt = path == "/v1/usage";
            let reply = match mode {
                Mode::ForgeReceipt if is_receipt => Reply {
                    status: 200,
                    content_type: "application/json".into(),
                    signature: None,
                    body: br#"{"stored":2,"duplicates":0,"refused":[],"clones_detected":[]}"#
                        .to_vec(),
                },
                Mode::ReplayLastReceipt if is_receipt => last_receipt.clone().unwrap(),
                _ => {
                    thread_forwarded.lock().unwrap().push(path.clone());
                    let mut reply = forward(&upstream, &method, &path, &headers, &body);
                    if is_receipt && reply.status == 200 {
                        last_receipt = Some(reply.clone());
                    }
                    if mode == Mode::StripListEntries && path == "/v1/lists/delta" {
                        let mut delta: serde_json::Value =
                            serde_json::from_slice(&reply.body).unwrap();
                        delta["entries"] = serde_json::json!([]);
                        reply.body = serde_json::to_vec(&delta).unwrap();
                    }
                    reply
                }
            };
            let mut head = format!(
                "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
                reply.status,
                reply.content_type,
                reply.body.len()
            );
            if let Some(signature) = &reply.signature {
                head.push_str(&format!("valuecard-answer-signature: {signature}\r\n"));
            }
            head.push_str("\r\n");
            let stream = reader.get_mut();
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&reply.body);
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    });
    Mitm {
        url,
        mode,
        forwarded,
    }
}

fn refused_answer(error: &TerminalError) -> bool {
    matches!(error, TerminalError::Center(CenterError::Setup(message)) if message.contains("is refused"))
}

#[test]
fn a_man_in_the_middle_cannot_alter_forge_or_replay_what_devices_act_on() {
    let identity = ServiceIdentity::generate(&[]).unwrap();
    // The harness installs the devices; a second service on the same center runs with an
    // identity the man in the middle also holds.
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(62)).unwrap();
    let mut h = Harness::start(center, 62);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = BackgroundServer::start(
        listener,
        h.server.center().clone(),
        &identity,
        ServiceLimits::default(),
    )
    .unwrap();
    register_pin(&server.url(), server.pin());
    let mitm = start_mitm(&identity, server.url());
    let (mut reader, card_id) = issue_and_load(&mut h);
    let mut terminal = PaymentTerminal::new(
        sam(&h.terminal),
        MemoryStore::default(),
        clock(),
        WorldRng::seed_from_u64(63),
    )
    .unwrap();
    let mut through_mitm =
        HttpCenterLink::new(&mitm.url, server.pin(), Box::new(sam(&h.terminal))).unwrap();
    let mut direct =
        HttpCenterLink::new(&server.url(), server.pin(), Box::new(sam(&h.terminal))).unwrap();

    // Unchanged, the exchange works through the middle (the proxy itself is transparent).
    terminal.purchase(&mut reader, amount(100)).unwrap();
    let receipt = terminal.upload_usage(&mut through_mitm).unwrap();
    assert_eq!(receipt.stored, 1);

    // A forged receipt for records the center never got: refused, and the records stay
    // pending at the terminal.
    terminal.purchase(&mut reader, amount(200)).unwrap();
    terminal.purchase(&mut reader, amount(300)).unwrap();
    mitm.set(Mode::ForgeReceipt);
    let error = terminal.upload_usage(&mut through_mitm).unwrap_err();
    assert!(refused_answer(&error), "{error:?}");
    // The center's own receipt for another request, replayed: refused as well.
    mitm.set(Mode::ReplayLastReceipt);
    let error = terminal.upload_usage(&mut through_mitm).unwrap_err();
    assert!(refused_answer(&error), "{error:?}");
    assert!(
        error.to_string().contains("signature does not verify"),
        "{error}"
    );
    // What was refused was never marked uploaded: the honest upload stores both.
    let receipt = terminal.upload_usage(&mut direct).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (2, 0), "{receipt:?}");

    // The card is reported lost; the middle strips the entry from the list delta: refused,
    // and the terminal's lists do not move.
    h.with_center(|center| center.report_card(&card_id, ListReason::Lost).unwrap());
    mitm.set(Mode::StripListEntries);
    let before = TerminalLink::list_delta(&mut direct, device_id(&h.terminal), 0)
        .unwrap()
        .entries
        .len();
    assert!(before >= 1);
    let error = terminal.update_lists(&mut through_mitm).unwrap_err();
    assert!(refused_answer(&error), "{error:?}");
    assert!(terminal.purchase(&mut reader, amount(1)).is_ok());
    // The genuine delta lists the card, and the terminal then refuses it.
    terminal.update_lists(&mut direct).unwrap();
    assert!(matches!(
        terminal.purchase(&mut reader, amount(1)),
        Err(TerminalError::CardListed { .. })
    ));
    assert!(mitm
        .forwarded
        .lock()
        .unwrap()
        .contains(&"/v1/lists/delta".to_owned()));
}

#[test]
fn a_device_pinned_to_another_certificate_refuses_the_service() {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(64)).unwrap();
    let h = Harness::start(center, 64);
    let before = h.last_sequence(&h.dispenser);
    // A man in the middle with a certificate of its own (the devices do not pin it) ...
    let impostor = ServiceIdentity::generate(&[]).unwrap();
    let mitm = start_mitm(&impostor, h.url());
    let mut link =
        HttpCenterLink::new(&mitm.url, h.server.pin(), Box::new(sam(&h.dispenser))).unwrap();
    let request = valuecard_core::messages::center::CardIdRequest {
        dispenser_id: device_id(&h.dispenser),
        chip_serial: [0xC5, 0, 0, 0, 0, 0, 0, 1],
    };
    use valuecard_core::messages::center::CenterLink;
    let error = link.assign_card_id(&request, &[1; 16]).unwrap_err();
    assert!(
        matches!(&error, CenterError::Unreachable(message) if message.to_ascii_lowercase().contains("certificate")),
        "{error:?}"
    );
    // ... and the genuine service seen by a device that pins another certificate.
    let mut link =
        HttpCenterLink::new(&h.url(), &impostor.pin(), Box::new(sam(&h.dispenser))).unwrap();
    let error = link.assign_card_id(&request, &[1; 16]).unwrap_err();
    assert!(
        matches!(&error, CenterError::Unreachable(message) if message.to_ascii_lowercase().contains("certificate")),
        "{error:?}"
    );
    assert!(mitm.forwarded.lock().unwrap().is_empty());
    assert_eq!(h.last_sequence(&h.dispenser), before);
}

#[test]
fn plain_http_is_neither_sent_nor_answered() {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(65)).unwrap();
    let h = Harness::start(center, 65);
    let plain = h.url().replacen("https://", "http://", 1);
    assert!(matches!(
        HttpCenterLink::new(&plain, h.server.pin(), Box::new(sam(&h.dispenser))),
        Err(CenterError::Setup(message)) if message.contains("https:// only")
    ));
    let mut stream = std::net::TcpStream::connect(h.server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The service still answers TLS afterwards.
    assert_eq!(send(&h.url(), "GET", "/health", &[], b"").status, 200);
}
