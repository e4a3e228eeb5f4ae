//! The value move of seed 002: a holder replacing a chip moves every service on it (the
//! purse, tickets, points) to the new chip through one value move server, which relays
//! between the chips and the providers' transfer SAMs and never sees a value or a key.
//!
//! - [`sam`]: the administrative SAM of the move server and the providers' normal and
//!   transfer SAMs, each a trait with a software implementation.
//! - [`provider`]: a provider's application server for one service: key packages, the
//!   upload and download conversations with a chip, the copies and their records.
//! - [`server`]: the value move server: user accounts, the movement database, and the move
//!   itself as stored steps that any instance can carry on.
//! - [`setup`]: the SAMs of a move system certified by a center, and their key file.
//! - [`client`]: the holder's side: a card reader and the server's next command, nothing
//!   else.
//!
//! The state machine of a move is in `docs/protocols.md` § 15.

#![forbid(unsafe_code)]

pub mod client;
pub mod provider;
pub mod sam;
pub mod server;
pub mod setup;
#[cfg(feature = "testing")]
pub mod testing;

/// Seconds since the epoch, for the books (records of when, never used to decide).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}
