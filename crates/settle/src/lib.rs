//! Online settlement (seed 004): a holder pays a web store, or charges the card online,
//! from the reader of their own computer, through a settlement system whose security server
//! alone shares a key (KC) with each card. The card's side is the common-key application
//! (`valuecard_card::online`, `docs/card-commands.md` § 6.15); the protocol is in
//! `docs/protocols.md` § 14.
//!
//! - [`security`]: the security server's protocol with the card, step by step, I/O-free:
//!   key installation, mutual authentication and KSES, BI, the SPC or value update with the
//!   record it signs, the PCN, and the recovery of a lost PCN in a new session.
//! - [`store`]: the store or mall: catalog, the bill signed SIG1, the receipt signed SIG4
//!   once the application server's completion SIG3 checks out.
//! - [`application`]: the application server's checks and signatures (SIG1 checked against
//!   the registered store keys; SIG2, SIG3, SIG5 signed; SIG4 checked) and the holder's
//!   client's checks of the same.
//!
//! **Architecture invariant:** nothing here opens a file or a socket; the services that run
//! these steps keep each step's state between the client's requests.

#![forbid(unsafe_code)]

pub mod application;
pub mod security;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
