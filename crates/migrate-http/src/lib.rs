//! The value move of seed 002 over HTTPS: each provider's application server with its
//! transfer SAM as a service of its own, the value move server as a service over its
//! movement database, and the clients of both.
//!
//! - [`provider_service`]: a provider's service (its area format, key packages, and the
//!   upload, download, clear and discard of a move's copies), reachable for its transfer
//!   routes only by the move server, which shows its access secret ([`access`]).
//! - [`provider_link`]: the move server's side of it, `valuecard_migrate::server::ProviderLink`
//!   over HTTPS.
//! - [`move_service`]: the value move server (users, chips, device sessions, a move's
//!   status); nothing of a move lives in the process between two requests, so instances
//!   share one database.
//! - [`move_client`]: the holder's device's side of it, `valuecard_migrate::client::MoveServerLink`
//!   over HTTPS.
//! - [`embedded`]: the move server and its providers started in one process.
//!
//! The move itself is `valuecard_migrate` (I/O-free but for its database); this crate
//! carries its calls. Every refusal is an RFC 9457 problem document ([`problem`]) whose
//! `type` names the error, so each client rebuilds the error its caller matches on.

#![forbid(unsafe_code)]

pub mod access;
pub mod center_report;
pub mod embedded;
pub mod move_client;
pub mod move_service;
pub mod problem;
pub mod provider_link;
pub mod provider_service;
mod serving;
mod transport;
pub mod wire;

pub use access::{AccessDigest, AccessSecret};
pub use embedded::{MoveOptions, MoveSystem, ProviderSetup};
pub use move_client::HttpMoveServer;
pub use move_service::MoveService;
pub use problem::{Problem, ProblemKind};
pub use provider_link::HttpProviderLink;
pub use provider_service::ProviderService;

/// The largest request body either service reads (an extended APDU's answer, in hex, fits
/// with room to spare); a larger one is refused 413 before it is parsed.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The largest answer body either client reads.
pub(crate) const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// Seconds since the epoch, for the providers' books (records of when, never used to
/// decide).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
