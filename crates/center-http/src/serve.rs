//! Running the service: TLS on every connection, timeouts that keep a stalled client from
//! holding anything, and a graceful shutdown with a deadline.
//!
//! A connection must finish its TLS handshake within [`ServiceLimits::tls_handshake_timeout`]
//! and send each request's head within [`ServiceLimits::header_read_timeout`]; a request body
//! must arrive within [`ServiceLimits::body_read_timeout`] (else 408). On shutdown the service
//! stops accepting, lets the requests in flight finish (an acknowledged request is
//! committed), and closes whatever is still open at [`ServiceLimits::shutdown_deadline`].
//! A connection that ends still reads, for a bounded time, what its client sends
//! ([`LingeringClose`]), so a refusal reaches a client that was still sending its body.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use valuecard_center::Center;

use crate::metrics::Metrics;
use crate::server::{build, App};
use crate::tls::{CenterPin, ServiceIdentity};

/// The service's timeouts and its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_deadline: Duration,
    /// Center handles (database connections) requests work on at once (`pool.rs`); one on a
    /// database in memory, whatever this says.
    pub pool_size: usize,
    /// How long a request waits for a free handle before it is answered 503.
    pub pool_wait: Duration,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(15),
            pool_size: crate::pool::default_pool_size(),
            pool_wait: crate::pool::DEFAULT_POOL_WAIT,
        }
    }
}

fn setup_error(error: impl core::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

/// Serves `center` over TLS with `identity` on `listener` until `shutdown` completes; then
/// stops accepting, finishes the requests in flight until the deadline, and returns. Keep a
/// clone of `center` and drop it outside the runtime: a center on PostgreSQL blocks when
/// it closes its connection.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    center: Arc<Mutex<Center>>,
    identity: &ServiceIdentity,
    limits: ServiceLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let app = App::new(center, &limits).map_err(setup_error)?;
    let tls = identity.server_config().map_err(setup_error)?;
    serve_app(listener, app, tls, limits, shutdown).await
}

async fn serve_app<F>(
    listener: tokio::net::TcpListener,
    app: App,
    tls: Arc<rustls::ServerConfig>,
    limits: ServiceLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_router(listener, build(app), tls, limits, shutdown).await
}

/// Serves `router` over TLS on `listener` the way the center's service is served (handshake
/// and header timeouts, lingering close, graceful shutdown): the online settlement services
/// are served the same way.
pub async fn serve_router<F>(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    limits: ServiceLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted:
                    // pause instead of spinning, and go on.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out in several TLS records: with Nagle's algorithm the later ones would
        // wait for the client's delayed ACK (about 40 ms per request on Linux).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = acceptor.accept(LingeringClose::new(stream));
            let stream = match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                // Probes and plain-HTTP clients are common: not worth more than a debug line.
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the shutdown deadline are closed");
    }
    Ok(())
}

/// How long, and how much, a closed connection still reads of what its client sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// A connection's TCP stream that closes the way a careful HTTP server does (a lingering
/// close). When hyper refuses a request it cannot parse (a control character in a header,
/// headers too large) it answers 400 or 431 and closes at once, while the client may still
/// be sending its body; closing a socket with unread data resets the connection, and the
/// client then fails on its next write and never reads the answer. So when the connection
/// ends, the stream is not dropped but handed to a task that ends its sending side and
/// reads and throws away what still arrives, bounded by [`LINGER_TIME`] and
/// [`LINGER_BYTES`], before it closes.
#[derive(Debug)]
struct LingeringClose {
    /// `None` only once dropped.
    stream: Option<tokio::net::TcpStream>,
}

impl LingeringClose {
    fn new(stream: tokio::net::TcpStream) -> Self {
        LingeringClose {
            stream: Some(stream),
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut tokio::net::TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for LingeringClose {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for LingeringClose {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl Drop for LingeringClose {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) there is nothing left to answer.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // The answer is complete: the client reads it up to this end of stream.
            let _ = stream.shutdown().await;
            let mut buffer = [0u8; 8192];
            let mut left = LINGER_BYTES;
            let drain = async {
                while left > 0 {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => left = left.saturating_sub(read),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

/// TLS and HTTP on one worker thread per processor; the center's work runs on the blocking
/// pool beside them.
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("valuecard-center-http-worker")
        .enable_all()
        .build()
}

/// Serves `center` over TLS on `listener` on the calling thread until SIGINT or SIGTERM,
/// then finishes the requests in flight (until the shutdown deadline) and returns.
pub fn run_until_signal(
    listener: StdTcpListener,
    center: Center,
    identity: &ServiceIdentity,
    limits: ServiceLimits,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let center = Arc::new(Mutex::new(center));
    let runtime = runtime()?;
    let served = runtime.block_on({
        let center = Arc::clone(&center);
        async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tracing::info!(address = %listener.local_addr()?, "center listening");
            serve(listener, center, identity, limits, shutdown_signal()).await?;
            tracing::info!("requests in flight finished; stopped");
            Ok(())
        }
    });
    // The center is dropped here, outside the runtime: its PostgreSQL client closes its
    // connection by blocking, which a thread driving the runtime must not do.
    drop(runtime);
    drop(center);
    served
}

/// The service on a thread of its own (tests, and programs that embed the center).
/// Dropping it shuts it down gracefully and waits.
#[derive(Debug)]
pub struct BackgroundServer {
    address: SocketAddr,
    center: Arc<Mutex<Center>>,
    metrics: Arc<Metrics>,
    pin: CenterPin,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl BackgroundServer {
    /// Binds `address` (port 0 picks a free one) and starts serving with a new service
    /// certificate for `localhost`, `127.0.0.1` and `::1` (see [`BackgroundServer::pin`]).
    pub fn bind(address: impl ToSocketAddrs, center: Arc<Mutex<Center>>) -> io::Result<Self> {
        let identity = ServiceIdentity::generate(&[]).map_err(setup_error)?;
        Self::start(
            StdTcpListener::bind(address)?,
            center,
            &identity,
            ServiceLimits::default(),
        )
    }

    pub fn start(
        listener: StdTcpListener,
        center: Arc<Mutex<Center>>,
        identity: &ServiceIdentity,
        limits: ServiceLimits,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let app = App::new(Arc::clone(&center), &limits).map_err(setup_error)?;
        let tls = identity.server_config().map_err(setup_error)?;
        let metrics = Arc::clone(&app.metrics);
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let runtime = runtime()?;
        let thread = std::thread::Builder::new()
            .name("valuecard-center-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    serve_app(listener, app, tls, limits, async {
                        let _ = signal.await;
                    })
                    .await
                })
            })?;
        Ok(BackgroundServer {
            address,
            center,
            metrics,
            pin: identity.pin(),
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `https://ADDRESS`, for [`crate::HttpCenterLink::new`].
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// The certificate devices pin for this service.
    pub fn pin(&self) -> &CenterPin {
        &self.pin
    }

    /// The center the service runs on (lock it to inspect or change it in process).
    pub fn center(&self) -> &Arc<Mutex<Center>> {
        &self.center
    }

    /// `/v1/` requests being processed now.
    pub fn requests_in_flight(&self) -> i64 {
        self.metrics.in_flight()
    }

    /// Stops accepting; requests in flight go on to their answer.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Whether the service has stopped.
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Shuts down gracefully and waits until every request in flight is answered (or the
    /// shutdown deadline passed).
    pub fn shutdown(mut self) -> io::Result<()> {
        self.begin_shutdown();
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        let _ = self.join();
    }
}
