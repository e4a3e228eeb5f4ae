//! The services of the value move (seed 002) from a move directory:
//!
//! - `valuecard migrate init`: the center certifies the move server's administrative SAM
//!   and each provider's normal and transfer SAM; the directory gets their key file (or,
//!   with `--sam pkcs11:...`, the record of their objects in a token and their
//!   certificates, docs/hsm.md), an HTTPS identity per service and the secret with which
//!   the move server reaches the providers' transfer SAMs.
//! - `valuecard provider serve`: one provider's application server (its normal and
//!   transfer SAM), reporting the purse's moves to the center when it is the purse's.
//! - `valuecard migrate serve`: the move server, reaching the providers over HTTPS.
//! - `valuecard provider issue`: a provider's area formatted on a chip (with the
//!   administrative SAM) and put in normal use.
//!
//! Each service writes where it listens into `endpoints/`, so that the move server finds
//! the providers and the holder's client finds the move server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use valuecard_center_http::{CenterPin, ServiceIdentity};
use valuecard_core::messages::services::{ServiceCode, ServiceOperation};
use valuecard_core::time::{Clock, SystemClock};
use valuecard_migrate::server::{MoveServer, ProviderLink};
use valuecard_migrate::setup::{demo_services, MoveKeys, MoveSams};
use valuecard_migrate_http::center_report::{HttpCenterSink, Reporter};
use valuecard_migrate_http::{
    move_service, provider_service, AccessSecret, HttpProviderLink, MoveService, ProviderService,
};
use valuecard_sam_pkcs11::TokenMoveSams;
use valuecard_settle_http::{BackgroundService, DatabaseLocation, DatabasePool};

use crate::device_sam::{self, SamChoice};

/// The software SAMs' keys.
const KEYS_FILE: &str = "move-keys.json";
/// Where SAMs in a token are, and their certificates (no secret).
const TOKEN_SAMS_FILE: &str = "move-sams.json";
const ACCESS_FILE: &str = "access.secret";
/// Connections per service by default.
const POOL_SIZE: usize = 8;

/// Where a service listens, as it writes it for the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub url: String,
    pub certificate_pem: String,
}

impl Endpoint {
    pub fn pin(&self) -> Result<CenterPin, String> {
        CenterPin::from_pem(self.certificate_pem.as_bytes()).map_err(|e| e.to_string())
    }
}

fn endpoint_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("endpoints").join(format!("{name}.json"))
}

fn provider_name(service: ServiceCode) -> String {
    format!("provider-{service}")
}

pub fn read_endpoint(dir: &Path, name: &str) -> Result<Endpoint, String> {
    let path = endpoint_path(dir, name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (is the {name} service running? it writes this file when it starts)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_endpoint(
    dir: &Path,
    name: &str,
    service: &BackgroundService,
    identity: &ServiceIdentity,
) -> Result<(), String> {
    let path = endpoint_path(dir, name);
    let endpoint = Endpoint {
        url: service.url(),
        certificate_pem: identity.certificate_pem(),
    };
    let text = serde_json::to_string_pretty(&endpoint).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Binds `port` on 127.0.0.1; port 0 takes the port the service had last time (so that a
/// service restarted keeps its address for the others) if it is free, else any free port.
fn bind(dir: &Path, name: &str, port: u16) -> Result<TcpListener, String> {
    if port == 0 {
        let previous = read_endpoint(dir, name).ok().and_then(|endpoint| {
            endpoint
                .url
                .rsplit(':')
                .next()
                .and_then(|port| port.parse::<u16>().ok())
        });
        if let Some(listener) =
            previous.and_then(|port| TcpListener::bind(("127.0.0.1", port)).ok())
        {
            return Ok(listener);
        }
    }
    TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("port {port}: {e}"))
}

/// The move system's SAMs, of the kind `migrate init` gave them.
fn load_sams(dir: &Path) -> Result<Box<dyn MoveSams>, String> {
    if !matches!(SamChoice::from_process_args()?, SamChoice::Software) {
        return Err(format!(
            "the move system's SAMs are those `migrate init` recorded in {}; give a token's PIN \
             with VALUECARD_PKCS11_PIN, not --sam",
            dir.display()
        ));
    }
    let tokens = dir.join(TOKEN_SAMS_FILE);
    if tokens.exists() {
        return TokenMoveSams::load(&tokens, device_sam::pkcs11_module_option().as_deref())
            .map(|sams| Box::new(sams) as Box<dyn MoveSams>)
            .map_err(|e| e.to_string());
    }
    MoveKeys::load(&dir.join(KEYS_FILE))
        .map(|keys| Box::new(keys) as Box<dyn MoveSams>)
        .map_err(|e| format!("{e} (a move directory is made by `valuecard migrate init`)"))
}

fn load_access(dir: &Path) -> Result<AccessSecret, String> {
    let path = dir.join(ACCESS_FILE);
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    AccessSecret::from_hex(text.trim())
        .map_err(|_| format!("{}: not an access secret", path.display()))
}

fn identity(dir: &Path, name: &str) -> Result<ServiceIdentity, String> {
    ServiceIdentity::load(&dir.join("tls").join(name)).map_err(|e| e.to_string())
}

fn location(dir: &Path, url: Option<&str>, file: &str) -> DatabaseLocation {
    match url {
        Some(url) => DatabaseLocation::parse(url),
        None => DatabaseLocation::Sqlite(dir.join(file)),
    }
}

/// `valuecard migrate init`.
pub fn init(
    center_data: &Path,
    database: Option<&str>,
    dir: &Path,
    json: bool,
) -> Result<ExitCode, String> {
    if dir.join(KEYS_FILE).exists() || dir.join(TOKEN_SAMS_FILE).exists() {
        return Err(format!("{} already holds a move system", dir.display()));
    }
    let choice = SamChoice::from_process_args()?;
    let mut center = crate::datadir::open_center_on(center_data, database)?;
    std::fs::create_dir_all(dir.join("endpoints"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let (keys, tokens): (Box<dyn MoveSams>, Vec<String>) = match &choice {
        SamChoice::Software => {
            let keys = MoveKeys::certify(&mut center, &demo_services(), &mut rand_core::OsRng)
                .map_err(|e| e.to_string())?;
            keys.save(&dir.join(KEYS_FILE)).map_err(|e| e.to_string())?;
            (Box::new(keys), Vec::new())
        }
        SamChoice::Pkcs11(base) => {
            let sams =
                TokenMoveSams::certify(&mut center, &demo_services(), base, &mut rand_core::OsRng)
                    .map_err(|e| e.to_string())?;
            sams.save(&dir.join(TOKEN_SAMS_FILE))
                .map_err(|e| e.to_string())?;
            let locators = sams.locators();
            (Box::new(sams), locators)
        }
    };
    let access = AccessSecret::generate(&mut rand_core::OsRng);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let path = dir.join(ACCESS_FILE);
        let mut file = options
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, access.to_hex().as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut names = vec!["server".to_owned()];
    names.extend(
        keys.offers()
            .iter()
            .map(|offer| provider_name(offer.code())),
    );
    for name in &names {
        let tls = dir.join("tls").join(name);
        std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
        ServiceIdentity::generate(&[])
            .and_then(|identity| identity.save(&tls))
            .map_err(|e| e.to_string())?;
    }
    let admin = keys.admin_sam().map_err(|e| e.to_string())?;
    let subject = admin.certificate().subject();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "data": dir.display().to_string(),
                "administrative_sam": subject.to_string(),
                "sams": if tokens.is_empty() { "software" } else { "pkcs11" },
                "token_objects": tokens,
                "services": keys.offers().iter().map(|offer| serde_json::json!({
                    "service": offer.code().to_string(),
                    "kind": offer.kind,
                    "name": offer.name,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("Move system set up in {}", dir.display());
        println!("  administrative SAM {subject} certified by the center");
        for uri in &tokens {
            println!("  SAM in the token: {uri}");
        }
        for offer in keys.offers() {
            println!(
                "  {} ({}, service {}): normal and transfer SAM certified",
                offer.name,
                offer.kind,
                offer.code()
            );
        }
        println!("Start each provider with `valuecard provider serve --data {} --service CODE`, then `valuecard migrate serve --data {}`.", dir.display(), dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the purse provider reports its moves.
pub struct CenterTarget {
    pub url: String,
    pub certificate: PathBuf,
}

/// `valuecard provider serve`.
pub fn serve_provider(
    dir: &Path,
    service: ServiceCode,
    port: u16,
    database: Option<&str>,
    center: Option<CenterTarget>,
) -> Result<ExitCode, String> {
    let keys = load_sams(dir)?;
    let provider = Arc::new(keys.provider(service).map_err(|e| e.to_string())?);
    let access = load_access(dir)?;
    let name = provider_name(service);
    let location = location(dir, database, &format!("{name}.sqlite"));
    let pool = DatabasePool::new(
        provider_service::open_database(&location).map_err(|e| e.to_string())?,
        POOL_SIZE,
    )
    .map_err(|e| e.to_string())?;
    let identity = identity(dir, &name)?;
    let routes = ProviderService::new(
        provider.clone(),
        pool.clone(),
        Box::new(SystemClock),
        access.digest(),
    );
    let listener = bind(dir, &name, port)?;
    let running = BackgroundService::start(listener, routes.router(), &identity, &name)
        .map_err(|e| e.to_string())?
        .keeping(pool.clone());
    write_endpoint(dir, &name, &running, &identity)?;
    let reporter = match center {
        Some(target) => {
            let pin = CenterPin::load(&target.certificate).map_err(|e| e.to_string())?;
            let sink = HttpCenterSink::connect(
                &target.url,
                &pin,
                provider.transfer_sam().clone(),
                keys.anchor().map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            Some(
                Reporter::spawn(pool, Box::new(sink), Duration::from_secs(2))
                    .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };
    println!(
        "Provider of service {service} ({}) at {} (Ctrl-C stops it){}",
        provider.kind().name(),
        running.url(),
        if reporter.is_some() {
            "; purse moves are reported to the center"
        } else {
            ""
        }
    );
    crate::wallet::wait_for_signal();
    drop(reporter);
    running.shutdown().map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `valuecard migrate serve`.
pub fn serve_server(dir: &Path, port: u16, database: Option<&str>) -> Result<ExitCode, String> {
    let keys = load_sams(dir)?;
    let access = load_access(dir)?;
    let admin = keys.admin_sam().map_err(|e| e.to_string())?;
    let mut links: Vec<Arc<dyn ProviderLink>> = Vec::new();
    for offer in keys.offers() {
        let endpoint = read_endpoint(dir, &provider_name(offer.code()))?;
        let link = HttpProviderLink::connect(&endpoint.url, &endpoint.pin()?, &access)
            .map_err(|e| format!("the provider of service {}: {e}", offer.code()))?;
        links.push(Arc::new(link));
    }
    let location = location(dir, database, "move-server.sqlite");
    let pool = DatabasePool::new(
        move_service::open_database(&location).map_err(|e| e.to_string())?,
        POOL_SIZE,
    )
    .map_err(|e| e.to_string())?;
    let identity = identity(dir, "server")?;
    let routes = MoveService::new(MoveServer::new(admin, links), pool.clone())
        .admitting_issuers(access.digest());
    let listener = bind(dir, "server", port)?;
    let running = BackgroundService::start(listener, routes.router(), &identity, "move-server")
        .map_err(|e| e.to_string())?
        .keeping(pool);
    write_endpoint(dir, "server", &running, &identity)?;
    println!("Move server at {} (Ctrl-C stops it)", running.url());
    crate::wallet::wait_for_signal();
    running.shutdown().map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `valuecard provider issue`: the provider's area on the chip in `reader`, formatted by
/// the administrative SAM, then put in use (a ticket issued, points earned).
pub fn issue(
    dir: &Path,
    service: ServiceCode,
    reader: &mut dyn valuecard_reader::CardReader,
    json: bool,
) -> Result<ExitCode, String> {
    let keys = load_sams(dir)?;
    let provider = keys.provider(service).map_err(|e| e.to_string())?;
    let admin = keys.admin_sam().map_err(|e| e.to_string())?;
    let today = SystemClock.today();
    let mut rng = rand_core::OsRng;
    provider
        .issue_area(&*admin, reader, today, &mut rng)
        .map_err(|e| format!("issuing service {service}: {e}"))?;
    let operation = match provider.kind() {
        valuecard_core::messages::services::ServiceKind::Tickets => Some(
            ServiceOperation::IssueTicket(valuecard_core::messages::services::Ticket {
                ticket_id: u32::from_be_bytes(valuecard_core::crypto::random_array(&mut rng)),
                product: 0x0031,
                valid_from: today,
                valid_until: today.add_days(30),
                rides_left: Some(10),
            }),
        ),
        valuecard_core::messages::services::ServiceKind::Points => {
            Some(ServiceOperation::EarnPoints {
                points: 1_000,
                expiry: today.add_days(365),
            })
        }
        valuecard_core::messages::services::ServiceKind::Purse => None,
    };
    let content = provider
        .normal_use(reader, operation.as_ref(), &mut rng)
        .map_err(|e| format!("service {service}: {e}"))?;
    // S2's reference table: the move server learns what this chip was issued.
    let card_id = crate::migrate_cli::chip_id(reader)?;
    let registered = match read_endpoint(dir, "server") {
        Ok(endpoint) => {
            valuecard_migrate_http::move_client::register_chip_service(
                &endpoint.url,
                &endpoint.pin()?,
                &load_access(dir)?,
                &card_id,
                service,
            )
            .map_err(|e| format!("registering the service with the move server: {e}"))?;
            true
        }
        Err(_) => false,
    };
    if !registered && !json {
        println!("(the move server is not running: the chip's services are not registered for S2; it will read them off the chip)");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"service": service.to_string(), "kind": provider.kind().name(), "content": content.describe(), "card": card_id.to_string(), "registered_with_move_server": registered})
        );
    } else {
        println!(
            "Service {service} ({}) issued: {}",
            provider.kind().name(),
            content.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}
