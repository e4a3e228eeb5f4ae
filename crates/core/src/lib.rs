//! The I/O-free core of valuecard.
//!
//! Everything that the card, the SAMs, the terminals and the back end must agree on lives
//! here: identifiers, money, the BER-TLV and ISO 7816-4 APDU codecs, status words, the one
//! crypto suite, certificates, and the protocol messages with their single encoding.
//!
//! **Architecture invariant:** this crate does no I/O (no files, sockets, clocks or global
//! random sources). Randomness is passed in as a `CryptoRngCore`, time as a `Date`.

#![forbid(unsafe_code)]

pub mod apdu;
pub mod cert;
pub mod crypto;
pub mod ids;
pub mod limits;
pub mod messages;
pub mod money;
pub mod sw;
pub mod time;
pub mod tlv;

pub use apdu::{Command, Response};
pub use ids::{CardId, DeviceId};
pub use money::Amount;
pub use sw::StatusWord;
