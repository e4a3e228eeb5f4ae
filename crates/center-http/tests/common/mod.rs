//! Shared set-up for the HTTP tests: a center served in process on 127.0.0.1:0, installed
//! SAMs (a dispenser, a second dispenser, a payment terminal), emulated cards, and a raw
//! HTTP client for requests a well-behaved device would never send.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::{Center, LoadTotals, PendingLoad};
use valuecard_center_http::problem::ProblemDocument;
use valuecard_center_http::{BackgroundServer, CenterPin, HttpCenterLink};
use valuecard_core::cert::Role;
use valuecard_core::ids::DeviceId;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date, FixedClock};
use valuecard_reader::InProcessReader;
use valuecard_sam::{Sam, SoftwareSam};
use valuecard_sim::{install_sam, WorldRng};
use valuecard_terminal::dispenser::Dispenser;

pub type Reader = InProcessReader<MemoryEeprom, WorldRng>;

pub fn today() -> Date {
    Date::from_ymd(2026, 6, 1).unwrap()
}

pub fn clock() -> Box<dyn Clock> {
    Box::new(FixedClock(today()))
}

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

/// A SAM from its image: every party that needs the device's keys gets its own copy.
pub fn sam(image: &[u8]) -> SoftwareSam {
    SoftwareSam::from_image(image).unwrap().with_clock(clock())
}

/// The center's records that a refused request must leave as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub totals: LoadTotals,
    pub cards: u64,
    pub pending: Vec<PendingLoad>,
}

pub struct Harness {
    pub server: BackgroundServer,
    pub rng: WorldRng,
    pub dispenser: Vec<u8>,
    pub other_dispenser: Vec<u8>,
    pub terminal: Vec<u8>,
}

impl Harness {
    /// Installs the devices on `center` and serves it on a free loopback port.
    pub fn start(mut center: Center, seed: u64) -> Self {
        let mut rng = WorldRng::seed_from_u64(seed);
        let dispenser = install_sam(&mut center, Role::Dispenser, clock(), &mut rng).unwrap();
        let other_dispenser = install_sam(&mut center, Role::Dispenser, clock(), &mut rng).unwrap();
        let terminal = install_sam(&mut center, Role::PaymentTerminal, clock(), &mut rng).unwrap();
        let server = BackgroundServer::bind("127.0.0.1:0", Arc::new(Mutex::new(center))).unwrap();
        register_pin(&server.url(), server.pin());
        Harness {
            server,
            rng,
            dispenser: dispenser.to_image(),
            other_dispenser: other_dispenser.to_image(),
            terminal: terminal.to_image(),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn link(&self, image: &[u8]) -> HttpCenterLink {
        HttpCenterLink::new(&self.server.url(), self.server.pin(), Box::new(sam(image))).unwrap()
    }

    pub fn dispenser(&mut self) -> Dispenser<SoftwareSam, WorldRng> {
        let rng = WorldRng::seed_from_u64(rand_core::RngCore::next_u64(&mut self.rng));
        Dispenser::new(sam(&self.dispenser), clock(), rng).unwrap()
    }

    /// A card fresh from the factory, in a reader.
    pub fn blank_card(&mut self, name: &str) -> Reader {
        let rng = WorldRng::seed_from_u64(rand_core::RngCore::next_u64(&mut self.rng));
        let (serial, transport_key) = self.with_center(|center| center.manufacture_chip());
        let card =
            Card::manufacture(MemoryEeprom::new(EEPROM_SIZE), serial, transport_key, rng).unwrap();
        InProcessReader::with_card(name, card)
    }

    /// A second service on the harness's center, with these limits.
    pub fn serve_again(&self, limits: valuecard_center_http::ServiceLimits) -> BackgroundServer {
        let identity = valuecard_center_http::ServiceIdentity::generate(&[]).unwrap();
        let server = BackgroundServer::start(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            self.server.center().clone(),
            &identity,
            limits,
        )
        .unwrap();
        register_pin(&server.url(), server.pin());
        server
    }

    pub fn with_center<T>(&self, work: impl FnOnce(&mut Center) -> T) -> T {
        let mut center = self.server.center().lock().unwrap();
        work(&mut center)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with_center(|center| Snapshot {
            totals: center.load_totals().unwrap(),
            cards: center.card_count().unwrap(),
            pending: center.pending_loads().unwrap(),
        })
    }

    pub fn last_sequence(&self, image: &[u8]) -> Option<u64> {
        let device = device_id(image);
        self.with_center(|center| center.last_request_sequence(&device).unwrap())
    }

    /// The next sequence the device may use (a link made later starts above it again).
    pub fn next_sequence(&self, image: &[u8]) -> u64 {
        self.last_sequence(image).map_or(1, |last| last + 1)
    }
}

pub fn device_id(image: &[u8]) -> DeviceId {
    sam(image).device_id()
}

/// An HTTP answer as received.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub allow: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The problem document, checked against RFC 9457: the content type, the members, and
    /// the status member equal to the status code.
    pub fn problem(&self, status: u16, slug: &str) -> ProblemDocument {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.content_type,
            "application/problem+json",
            "{}",
            self.text()
        );
        let raw = self.json();
        for member in ["type", "title", "status", "detail"] {
            assert!(raw.get(member).is_some(), "{member} missing in {raw}");
        }
        let document: ProblemDocument = serde_json::from_value(raw).unwrap();
        assert_eq!(document.status, status);
        assert_eq!(document.type_uri, format!("urn:valuecard:problem:{slug}"));
        assert!(!document.title.is_empty() && !document.detail.is_empty());
        document
    }
}

/// The certificate each test server presents, by its base URL: the raw client below trusts
/// exactly that one, like a device.
fn pins() -> &'static Mutex<std::collections::HashMap<String, CenterPin>> {
    static PINS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, CenterPin>>> =
        std::sync::OnceLock::new();
    PINS.get_or_init(Default::default)
}

pub fn register_pin(base: &str, pin: &CenterPin) {
    pins().lock().unwrap().insert(base.to_owned(), pin.clone());
}

/// A raw client for the server at `base`, trusting only its certificate.
pub fn agent_for(base: &str) -> ureq::Agent {
    let pin = pins().lock().unwrap().get(base).cloned();
    let mut tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ));
    if let Some(pin) = pin {
        let pem = pem::parse(pin_pem(&pin)).unwrap();
        let der = pem.contents().to_vec();
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
            ureq::tls::Certificate::from_der(&der).to_owned(),
        ])));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build()
        .into()
}

/// The pinned certificate as PEM (through a file, as a device keeps it).
pub fn pin_pem(pin: &CenterPin) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("center.pem");
    pin.save(&path).unwrap();
    std::fs::read_to_string(path).unwrap()
}

/// Any request, with exactly the headers given.
pub fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    let url = format!("{base}{path}");
    let agent = agent_for(base);
    let response = match method {
        "GET" => {
            let mut request = agent.get(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.call()
        }
        "DELETE" => {
            let mut request = agent.delete(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.call()
        }
        "PUT" => {
            let mut request = agent.put(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send(body)
        }
        _ => {
            let mut request = agent.post(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send(body)
        }
    };
    into_answer(response.unwrap())
}

/// A POST whose body is streamed without a declared length (chunked).
pub fn send_chunked(base: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
    let url = format!("{base}{path}");
    let mut request = agent_for(base).post(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut reader = body;
    into_answer(
        request
            .send(ureq::SendBody::from_reader(&mut reader))
            .unwrap(),
    )
}

fn into_answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let allow = header("allow");
    Answer {
        status: response.status().as_u16(),
        content_type,
        allow,
        body: response.body_mut().read_to_vec().unwrap(),
    }
}

/// The authentication headers of a request signed by `signer` in the name of `device`.
pub fn signed_headers(
    signer: &mut SoftwareSam,
    device: DeviceId,
    method: &str,
    path: &str,
    sequence: u64,
    body: &[u8],
) -> Vec<(String, String)> {
    let signature = signer
        .sign_device_request(method, path, sequence, body)
        .unwrap();
    vec![
        ("content-type".into(), "application/json".into()),
        ("valuecard-device".into(), device.to_hex()),
        ("valuecard-sequence".into(), sequence.to_string()),
        ("valuecard-signature".into(), hex::encode(signature.0)),
    ]
}

/// A request signed properly by the device whose SAM image this is.
pub fn signed_by(
    image: &[u8],
    method: &str,
    path: &str,
    sequence: u64,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut signer = sam(image);
    let device = signer.device_id();
    signed_headers(&mut signer, device, method, path, sequence, body)
}

/// One value of a metric line (`name{labels} value`) in a Prometheus exposition.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// A reader that passes every command to the card but loses the card's answer to CREDIT
/// while `lose_credit_answer` is set: the load is in doubt at the dispenser.
pub struct LosingReader<'a> {
    pub inner: &'a mut Reader,
    pub lose_credit_answer: bool,
}

impl valuecard_reader::CardReader for LosingReader<'_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, valuecard_reader::ReaderError> {
        let answer = self.inner.transmit_raw(apdu)?;
        if self.lose_credit_answer
            && apdu.get(1) == Some(&valuecard_core::messages::purse::ins::CREDIT)
        {
            return Err(valuecard_reader::ReaderError::CardRemoved);
        }
        Ok(answer)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// Issues a card through HTTP with a real dispenser, loads 50.00 and recharges 12.50.
pub fn issue_and_load(harness: &mut Harness) -> (Reader, valuecard_core::ids::CardId) {
    let mut dispenser = harness.dispenser();
    let mut link = harness.link(&harness.dispenser);
    let mut reader = harness.blank_card("card");
    let card_id = dispenser.issue_card(&mut reader, &mut link).unwrap();
    let receipt = dispenser
        .load(&mut reader, &mut link, amount(5_000))
        .unwrap();
    assert_eq!(receipt.card_id, card_id);
    assert_eq!(receipt.balance_after, amount(5_000));
    let receipt = dispenser
        .load(&mut reader, &mut link, amount(1_250))
        .unwrap();
    assert_eq!(receipt.balance_after, amount(6_250));
    (reader, card_id)
}

/// Checks an exposition against the text format: every sample belongs to a family whose
/// TYPE came first, every value is a number, histogram buckets rise to `+Inf` = `_count`.
pub fn check_exposition(text: &str) {
    use std::collections::BTreeMap;
    assert!(text.ends_with('\n'));
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut buckets: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap().to_owned();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind.as_str()),
                "{line}"
            );
            assert!(types.insert(name, kind).is_none(), "TYPE twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no TYPE before {line}");
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        if name.ends_with("_bucket") {
            let labels = &series[name.len()..];
            let (rest, le) = labels.rsplit_once(",le=\"").unwrap();
            buckets
                .entry(format!("{family}{rest}"))
                .or_default()
                .push((le.trim_end_matches("\"}").to_owned(), value));
        }
        if name.ends_with("_count") && types.get(family).is_some_and(|k| k == "histogram") {
            let labels = &series[name.len()..];
            counts.insert(format!("{family}{}", labels.trim_end_matches('}')), value);
        }
    }
    for (series, points) in &buckets {
        let mut previous = 0.0;
        let mut bound = f64::NEG_INFINITY;
        for (le, value) in points {
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            assert!(le > bound, "{series}: bounds must rise");
            assert!(*value >= previous, "{series}: buckets must be cumulative");
            bound = le;
            previous = *value;
        }
        assert_eq!(bound, f64::INFINITY, "{series}: the last bucket is +Inf");
        assert_eq!(
            counts.get(series),
            Some(&previous),
            "{series}: +Inf = _count"
        );
    }
}

/// What each of the world's terminals would upload now, and its SAM image (for a link of
/// its own to a service), in terminal order.
pub fn world_uploads(
    world: &valuecard_sim::World,
) -> (
    Vec<valuecard_core::messages::center::UsageUpload>,
    Vec<Vec<u8>>,
) {
    let uploads = world
        .terminals
        .iter()
        .map(|terminal| valuecard_core::messages::center::UsageUpload {
            terminal_id: terminal.device_id(),
            items: terminal
                .store()
                .pending_uploads(100)
                .unwrap()
                .iter()
                .filter_map(valuecard_terminal::payment::usage_item)
                .collect(),
        })
        .collect();
    let images = world
        .terminals
        .iter()
        .map(|terminal| terminal.sam().to_image())
        .collect();
    (uploads, images)
}
