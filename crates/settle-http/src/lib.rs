//! The online settlement services of seed 004 over HTTPS, each with its own database
//! (SQLite by default, PostgreSQL by URL), and the holder's client of both:
//!
//! - [`store_service`]: the store or mall (catalog, estimate, bill SIG1, receipt SIG4,
//!   content delivery);
//! - [`settlement`]: the settlement management device (application, security and
//!   information servers), the credit authorizer behind [`authorizer::CreditAuthorizer`],
//!   and the report of completed updates to the center;
//! - [`holder`]: the holder's side, driving the card in a reader and both services, step by
//!   step, so that a screen can stand between the offer and the card (ST15).
//!
//! The protocol's steps are in `valuecard_settle` (I/O-free); this crate stores each step
//! and carries the messages.

#![forbid(unsafe_code)]

pub mod authorizer;
pub mod db;
pub mod embedded;
pub mod holder;
pub mod service;
pub mod settlement;
pub mod store_service;
pub mod wire;

pub use db::{DatabaseLocation, DatabasePool};
pub use service::{BackgroundService, Problem, ProblemKind};
pub use settlement::SettlementService;
pub use store_service::StoreService;
