//! The value move server 20 (seed 002): user accounts, the movement database, the
//! administrative SAM 21, and the relay between a chip and each provider's transfer SAM.
//!
//! The holder's device talks to this server only. Each call gives the chip's answer to the
//! last command and takes the next command, so the move is a conversation of APDUs whose
//! every step is stored before the next command is given ([`engine`]). Nothing of a move
//! lives in the process between two calls: a server restarted, or another instance on the
//! same database, carries on.

pub mod accounts;
pub mod engine;
pub mod link;
mod moves;
pub mod schema;
mod sessions;

pub use engine::{MoveServer, Next, Progress, Started};
pub use link::{LinkError, LocalProvider, ProviderLink};

use std::borrow::Cow;

use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::ServiceCode;
use valuecard_core::StatusWord;

/// Why a move's step was refused or could not be taken. Each is worded for the holder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoveError {
    #[error("wrong user ID or password")]
    WrongPassword,
    #[error("that user ID is taken")]
    UserExists,
    /// A request the server refuses as it stands (its reason, for the holder).
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    /// The chip's serial number is not registered with this server.
    #[error("this chip is not registered with the move server")]
    UnknownChip,
    /// The chip is registered to another user.
    #[error("this chip belongs to another user")]
    NotYourChip,
    /// The chip's services were moved already.
    #[error("this chip's services have already been moved to another chip")]
    AlreadyMoved,
    /// The user has no move waiting for a new chip.
    #[error("there is no move waiting for a new chip: upload from the old chip first")]
    NothingToDownload,
    /// The move's upload is not finished.
    #[error("the old chip's upload is not finished: present the old chip again")]
    UploadUnfinished,
    /// The chip is not the move's registered destination.
    #[error("this chip is not the destination registered for the move")]
    WrongDestination,
    /// The move has gone too far to be rolled back.
    #[error("the move cannot be rolled back any more: its download has begun")]
    TooLateToRollBack,
    /// No move of this chip can be rolled back.
    #[error("this chip has no move to roll back")]
    NothingToRollBack,
    /// A service on the chip has no provider known to this server.
    #[error("no provider is known for service {0}")]
    UnknownService(ServiceCode),
    /// A provider could not be reached or failed.
    #[error("the provider of service {service} is unavailable: {reason}")]
    ProviderDown {
        service: ServiceCode,
        reason: String,
    },
    /// A provider refused a step (its reason).
    #[error("the provider of service {service} refused: {reason}")]
    ProviderRefused {
        service: ServiceCode,
        reason: String,
    },
    /// The chip answered with an error status word.
    #[error("the chip refused with status {0}")]
    Card(StatusWord),
    /// The chip's answer is not what the step expects.
    #[error("the chip's answer does not fit: {0}")]
    Answer(Cow<'static, str>),
    /// An unknown or finished session.
    #[error("no such session: start again")]
    NoSession,
    /// No move has that identifier.
    #[error("no such move")]
    UnknownMove,
    /// The administrative SAM failed.
    #[error("the administrative SAM failed: {0}")]
    Sam(String),
    #[error(transparent)]
    Storage(#[from] CenterError),
    /// The move server could not be reached, or answered outside its protocol (a remote
    /// client's view; the server itself never gives it).
    #[error("the move server is unavailable: {0}")]
    ServerUnavailable(String),
}

/// The move server in this process, over its own database: the client's
/// [`crate::client::MoveServerLink`] without a network.
pub struct LocalMoveServer {
    server: MoveServer,
    db: std::sync::Mutex<valuecard_center::sql::Database>,
}

impl core::fmt::Debug for LocalMoveServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalMoveServer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl LocalMoveServer {
    pub fn new(server: MoveServer, db: valuecard_center::sql::Database) -> Self {
        LocalMoveServer {
            server,
            db: std::sync::Mutex::new(db),
        }
    }

    pub fn server(&self) -> &MoveServer {
        &self.server
    }

    /// Runs `work` on the movement database.
    pub fn with_db<T>(
        &self,
        work: impl FnOnce(&MoveServer, &mut valuecard_center::sql::Database) -> T,
    ) -> T {
        let mut db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&self.server, &mut db)
    }
}

impl crate::client::MoveServerLink for LocalMoveServer {
    fn start(
        &self,
        user_id: &str,
        password: &str,
        mode: engine::Mode,
    ) -> Result<Started, MoveError> {
        self.with_db(|server, db| server.start(db, user_id, password, mode, &mut rand_core::OsRng))
    }

    fn next(&self, session: &engine::SessionId, response: &[u8]) -> Result<Next, MoveError> {
        self.with_db(|server, db| server.next(db, session, response))
    }
}
