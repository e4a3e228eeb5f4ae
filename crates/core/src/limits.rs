//! Every bound in the system, as a named constant, so that each parser and store can say
//! exactly what it accepts.

/// Largest command data field (Nc) we accept: extended-length APDUs, bounded well below
/// the ISO 7816-4 maximum of 65 535 because no valuecard command needs more.
pub const APDU_COMMAND_DATA_MAX: usize = 4096;
/// Largest response data field (Ne) a card produces.
pub const APDU_RESPONSE_DATA_MAX: usize = 4096;
/// Largest TLV value we parse.
pub const TLV_VALUE_MAX: usize = 4096;
/// Deepest nesting of constructed TLVs we parse.
pub const TLV_DEPTH_MAX: usize = 4;
/// Largest certificate encoding.
pub const CERTIFICATE_LEN_MAX: usize = 512;
/// Longest certificate chain (leaf first, root excluded).
pub const CERTIFICATE_CHAIN_MAX: usize = 3;
/// Largest balance a purse may hold, in minor units (one million units of currency at 2 decimals).
pub const BALANCE_MAX_MINOR: u64 = 100_000_000;
/// Entries kept in the card's transaction log (a ring: the oldest is dropped).
pub const CARD_LOG_ENTRIES_MAX: usize = 16;
/// Service records kept in the card's service log (credit mode; a ring: the oldest is dropped).
pub const CARD_SERVICE_LOG_ENTRIES_MAX: usize = 16;
/// Entries kept in the card's abnormal-event record.
pub const CARD_ABNORMAL_EVENTS_MAX: usize = 8;
/// Length of every protocol challenge (R, X, Y in seed 003).
pub const CHALLENGE_LEN: usize = 16;
/// Size of a persisted card image, bounded so a corrupt length cannot make us allocate.
pub const CARD_IMAGE_LEN_MAX: usize = 64 * 1024;

const _: () = assert!(CERTIFICATE_LEN_MAX <= TLV_VALUE_MAX);
const _: () = assert!(TLV_VALUE_MAX <= APDU_COMMAND_DATA_MAX);
const _: () = assert!(
    BALANCE_MAX_MINOR < (1u64 << 53),
    "balances must stay exact in JSON numbers"
);

/// Receipts of transfers in a card keeps, so that it can prove to a source that it applied a
/// transfer (a ring: the oldest is dropped, and the card then answers no proof for it).
pub const CARD_RECEIVED_TRANSFERS_MAX: usize = 8;

/// Tickets one tickets area of a multi-service chip holds at most (the area's formatted
/// capacity may be lower, never higher).
pub const AREA_TICKETS_MAX: usize = 16;
/// Points one points area of a multi-service chip holds at most.
pub const POINTS_MAX: u64 = 1_000_000_000;

/// The most service areas a multi-service chip holds (seed 002).
pub const CHIP_AREAS_MAX: usize = 8;
