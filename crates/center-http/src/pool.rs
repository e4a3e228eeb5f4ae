//! The service's pool of center handles: each a [`Center`] on a database connection of its
//! own (`Center::another_handle`), so requests run side by side, as many at once as there
//! are handles; a request takes a handle for the length of its work and gives it back.
//!
//! No lock of the process stands between two requests: what they must agree on (a card
//! state counted once, clone detection, request sequences, load numbers, list versions) the
//! database guarantees, as it does between several `center serve` processes on one
//! PostgreSQL database (see `valuecard_center::sql`). On SQLite, which admits one writer at a
//! time, the handles share one writer gate and read in parallel.
//!
//! Device keys are looked up on connections of their own ([`DeviceDirectory`]), so that a
//! flood of forged requests neither waits for nor holds a handle, and honest requests
//! holding every handle do not keep forged ones from being refused.
//!
//! A database in memory has room for one connection only: its pool holds the one center,
//! and device keys are looked up through it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use valuecard_center::auth::{AuthError, DeviceDirectory, DeviceKey};
use valuecard_center::{Center, CenterError};
use valuecard_core::ids::DeviceId;

use crate::problem::{Problem, ProblemKind};
use crate::server::lock;

/// A center handle as the pool lends it: the caller of [`crate::serve`] keeps the first one
/// (to inspect or change the center in process) and may lock it while the service runs.
pub type SharedCenter = Arc<Mutex<Center>>;

/// How long a request waits for a free handle before it is answered 503.
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(10);

/// The pool size when none is given: enough connections that requests waiting on the
/// database do not leave the processors idle.
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(2)
        .saturating_mul(8)
        .clamp(4, 64)
}

/// What the pool is doing now, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Handles (database connections) the pool holds.
    pub size: usize,
    /// Handles free now.
    pub available: usize,
    /// Requests waiting for a handle.
    pub waiting: usize,
}

/// Connections for device-key lookups: a lookup is one indexed read, so a few serve many
/// requests.
pub const LOOKUP_CONNECTIONS: usize = 4;

/// The handles, lent one per request, and the lookup connections.
pub(crate) struct CenterPool {
    /// `None` only while dropped (see the `Drop` implementation).
    handles: Option<deadpool::unmanaged::Pool<SharedCenter>>,
    /// `None` on a database in memory (and while dropped).
    lookups: Option<deadpool::unmanaged::Pool<DeviceDirectory>>,
    wait: Duration,
}

impl core::fmt::Debug for CenterPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CenterPool")
            .field("use", &self.usage())
            .finish_non_exhaustive()
    }
}

/// A handle lent to one request; it goes back to the pool when dropped.
pub(crate) type LentCenter = deadpool::unmanaged::Object<SharedCenter>;

impl CenterPool {
    /// A pool of `size` handles (at least one): `primary` and `size - 1` further handles on
    /// its database, or `primary` alone on a database in memory.
    pub(crate) fn open(
        primary: SharedCenter,
        size: usize,
        wait: Duration,
    ) -> Result<Self, CenterError> {
        let mut handles = vec![Arc::clone(&primary)];
        let mut lookups = Vec::with_capacity(LOOKUP_CONNECTIONS);
        {
            let mut center = lock(&primary);
            while handles.len() < size.max(1) {
                match center.another_handle()? {
                    Some(handle) => handles.push(Arc::new(Mutex::new(handle))),
                    None => break,
                }
            }
            while lookups.len() < LOOKUP_CONNECTIONS {
                let directory = center.device_directory()?;
                if !directory.has_own_connection() {
                    break;
                }
                lookups.push(directory);
            }
        }
        Ok(CenterPool {
            handles: Some(deadpool::unmanaged::Pool::from(handles)),
            lookups: (!lookups.is_empty()).then(|| deadpool::unmanaged::Pool::from(lookups)),
            wait,
        })
    }

    /// The installed device's certified key: on a lookup connection, or through a handle on
    /// a database in memory.
    pub(crate) async fn device_key(&self, device: DeviceId) -> Result<DeviceKey, Problem> {
        let Some(lookups) = &self.lookups else {
            let handle = self.lend().await?;
            return blocking(move || Ok(lock(&handle).installed_device_key(device)?)).await;
        };
        let mut directory = match tokio::time::timeout(self.wait, lookups.get()).await {
            Ok(Ok(directory)) => directory,
            Ok(Err(_closed)) => return Err(stopping()),
            Err(_elapsed) => return Err(busy(self.wait)),
        };
        blocking(move || match directory.device_key(device) {
            Some(found) => Ok(found?),
            None => Err(Problem::from(AuthError::UnknownDevice(device))),
        })
        .await
    }

    fn handles(&self) -> Result<&deadpool::unmanaged::Pool<SharedCenter>, Problem> {
        self.handles.as_ref().ok_or_else(stopping)
    }

    /// A free handle, waiting for one up to the pool's wait; then 503, so that a client
    /// backs off instead of piling onto a saturated service.
    pub(crate) async fn lend(&self) -> Result<LentCenter, Problem> {
        let handles = self.handles()?;
        match tokio::time::timeout(self.wait, handles.get()).await {
            Ok(Ok(handle)) => Ok(handle),
            Ok(Err(_closed)) => Err(stopping()),
            Err(_elapsed) => Err(busy(self.wait)),
        }
    }

    pub(crate) fn usage(&self) -> PoolUse {
        match &self.handles {
            Some(handles) => {
                let status = handles.status();
                PoolUse {
                    size: status.size,
                    available: status.available,
                    waiting: status.waiting,
                }
            }
            None => PoolUse {
                size: 0,
                available: 0,
                waiting: 0,
            },
        }
    }
}

fn stopping() -> Problem {
    Problem::new(ProblemKind::Unavailable, "the service is stopping")
}

fn busy(wait: Duration) -> Problem {
    tracing::warn!(
        wait_ms = wait.as_millis() as u64,
        "no database connection became free in time"
    );
    Problem::new(
        ProblemKind::Unavailable,
        format!(
            "every database connection stayed busy for {} ms; try again",
            wait.as_millis()
        ),
    )
}

/// Runs database work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "lookup worker failed");
        Problem::new(ProblemKind::Internal, crate::problem::INTERNAL_DETAIL)
    })?
}

impl Drop for CenterPool {
    /// The connections are dropped off the runtime: a PostgreSQL client closes its
    /// connection by blocking, which a thread that drives the runtime must not do.
    fn drop(&mut self) {
        let handles = self.handles.take();
        let lookups = self.lookups.take();
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("valuecard-pool-close".into())
                .spawn(move || drop((handles, lookups)));
        }
    }
}
