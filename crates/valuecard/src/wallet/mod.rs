//! `valuecard wallet`: the holder's side of seed 004 on the holder's own computer. A local
//! web app on 127.0.0.1 (plain HTTP: it never leaves the machine) whose page (`ui/`) shows
//! the screens of Figs. 12-20 and 25-32; behind it, the card in a PC/SC reader (or a card
//! image with `--card`) on a thread of its own, and the store and settlement services over
//! HTTPS through the holder's client (`valuecard_settle_http::holder`), which checks every
//! signed document before anything is shown or the card is touched.

mod api;
mod card_worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use valuecard_center_http::CenterPin;
use valuecard_core::crypto::PublicKey;
use valuecard_settle_http::holder::Holder;

pub use card_worker::{CardWorker, ReaderOpener};

/// Where the online services are, as `valuecard online try` writes it
/// to `online.json` in its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineEndpoints {
    pub store_url: String,
    /// The store service's certificate (PEM), pinned.
    pub store_certificate: String,
    pub settlement_url: String,
    pub settlement_certificate: String,
    /// The application server's key (hex): SIG2, SIG3 and SIG5 are checked under it.
    pub application_key: String,
    /// The currency amounts are shown in.
    pub currency: String,
}

impl OnlineEndpoints {
    pub const FILE: &'static str = "online.json";

    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "{}: {error} (start `valuecard online try` first)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(Self::FILE);
        let text = serde_json::to_string_pretty(self).map_err(|error| error.to_string())?;
        std::fs::write(&path, text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// The holder's client of these services.
    pub fn holder(&self) -> Result<Holder, String> {
        let pin = |pem: &str, what: &str| {
            CenterPin::from_pem(pem.as_bytes())
                .map_err(|error| format!("{what}'s certificate: {error}"))
        };
        let key = hex::decode(&self.application_key)
            .ok()
            .and_then(|bytes| PublicKey::from_bytes(&bytes).ok())
            .ok_or("the application server's key is not a key")?;
        Ok(Holder::new(
            &self.store_url,
            &pin(&self.store_certificate, "the store")?,
            &self.settlement_url,
            &pin(&self.settlement_certificate, "the settlement service")?,
            key,
        ))
    }
}

#[derive(clap::Args, Debug)]
pub struct WalletArgs {
    /// The directory where `valuecard online try` wrote `online.json` (the services'
    /// addresses, certificates and the application server's key).
    #[arg(long)]
    online: PathBuf,
    /// A card image instead of a PC/SC reader.
    #[arg(long, value_name = "FILE")]
    card: Option<PathBuf>,
    /// The PC/SC reader (by name or index); default: the one holding a valuecard card.
    #[arg(long)]
    reader: Option<String>,
    /// The local port of the page (0: any free port).
    #[arg(long, default_value_t = 8470)]
    port: u16,
}

/// The wallet's shared state.
pub struct Wallet {
    pub(crate) holder: Holder,
    pub(crate) card: CardWorker,
    pub(crate) currency: String,
    pub(crate) session: std::sync::Mutex<api::Session>,
}

impl core::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wallet").finish_non_exhaustive()
    }
}

impl Wallet {
    pub fn new(holder: Holder, card: CardWorker, currency: String) -> Self {
        Wallet {
            holder,
            card,
            currency,
            session: std::sync::Mutex::new(api::Session::default()),
        }
    }

    /// The page and its API.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/",
                get(|| async { asset("text/html; charset=utf-8", include_str!("ui/index.html")) }),
            )
            .route(
                "/app.js",
                get(|| async {
                    asset("text/javascript; charset=utf-8", include_str!("ui/app.js"))
                }),
            )
            .route(
                "/style.css",
                get(|| async { asset("text/css; charset=utf-8", include_str!("ui/style.css")) }),
            )
            .route("/api/status", get(api::status))
            .route("/api/catalog", get(api::catalog))
            .route("/api/estimate", post(api::estimate))
            .route("/api/bill", post(api::bill))
            .route("/api/pay/prepare", post(api::prepare_payment))
            .route("/api/pay/confirm", post(api::confirm_payment))
            .route("/api/pay/cancel", post(api::cancel_payment))
            .route("/api/download/{order}", get(api::download))
            .route("/api/charge/authorize", post(api::authorize_charge))
            .route("/api/charge/confirm", post(api::confirm_charge))
            .route("/api/log", get(api::log))
            .with_state(Arc::new(self))
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page runs only its own script, styles and images.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The wallet serving on a runtime of its own thread until dropped.
#[derive(Debug)]
pub struct RunningWallet {
    pub address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningWallet {
    /// Serves `wallet` on 127.0.0.1:`port`.
    pub fn start(wallet: Wallet, port: u16) -> Result<Self, String> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|error| format!("cannot listen on 127.0.0.1:{port}: {error}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let router = wallet.router();
        let thread = std::thread::Builder::new()
            .name("valuecard-wallet".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, router)
                        .with_graceful_shutdown(async {
                            let _ = signal.await;
                        })
                        .await;
                });
            })
            .map_err(|e| e.to_string())?;
        Ok(RunningWallet {
            address,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }
}

impl Drop for RunningWallet {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the card: an image file, or a PC/SC reader.
pub fn reader_opener(card: Option<PathBuf>, reader: Option<String>) -> ReaderOpener {
    Box::new(move || match card {
        Some(path) => {
            let card = valuecard_card::FileCard::open_file(&path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            Ok(Box::new(valuecard_reader::InProcessReader::with_card(
                path.display().to_string(),
                card,
            )) as Box<dyn valuecard_reader::CardReader>)
        }
        None => crate::pcsc::open(reader.as_deref(), 0),
    })
}

/// `valuecard wallet`.
pub fn run(args: WalletArgs) -> Result<std::process::ExitCode, String> {
    let endpoints = OnlineEndpoints::load(&args.online)?;
    let holder = endpoints.holder()?;
    let card = CardWorker::start(reader_opener(args.card, args.reader))?;
    let running = RunningWallet::start(Wallet::new(holder, card, endpoints.currency), args.port)?;
    println!("The wallet is at {} (Ctrl-C stops it)", running.url());
    crate::wallet::wait_for_signal();
    drop(running);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_signal() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
