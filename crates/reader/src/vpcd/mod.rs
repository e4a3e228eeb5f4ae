//! The vpcd bridge: puts an emulated card into a PC/SC reader: the purse card
//! ([`Card`](valuecard_card::Card), with [`ATR`]) or the memory card of seed 001
//! ([`MemoryCard`](valuecard_card::memcard::MemoryCard), with its PC/SC Part 3 storage-card
//! ATR), any [`EmulatedCard`](crate::EmulatedCard), with the same power-cut treatment.
//!
//! vsmartcard's virtual reader driver `vpcd` is loaded by pcscd and shows up as a reader
//! ("Virtual PCD 00 00", ...). For every reader slot N it listens on TCP port
//! [`DEFAULT_PORT`]` + N` and waits for a virtual card to connect; the card side, this
//! bridge, is the TCP *client*. Any PC/SC application (a terminal with a PC/SC reader,
//! `opensc-tool`, `pcsc_scan`) then reaches the card as it would reach a real one.
//!
//! The wire protocol (vsmartcard `vpcd.c`, `vpicc`'s `VirtualICC.run`): every message in
//! either direction is a frame of a 2-byte big-endian length and that many payload bytes.
//! From vpcd to the card:
//!
//! - a 1-byte payload is a control message: [`ctrl::POWER_OFF`], [`ctrl::POWER_ON`] and
//!   [`ctrl::RESET`] get no answer; [`ctrl::GET_ATR`] is answered with the ATR as a frame.
//!   pcscd polls for card presence by asking for the ATR about every 400 ms;
//! - any other payload is a command APDU, answered with one frame holding the response.
//!
//! The protocol has a hole: vpcd forwards a PC/SC client's command APDU as it is, so a
//! 1-byte APDU is the same frame as a control message. The bridge tells them apart as far
//! as vpcd's behaviour allows (see [`BridgeConfig::ambiguity_window`]):
//!
//! - a byte that is no control message (`80`, ...) can only be an APDU: the card answers it
//!   (6700, wrong length) at once;
//! - after a real power on or reset vpcd asks for the ATR in the same breath, and after a
//!   power off pcscd's status thread polls within about 450 ms; but after a 1-byte APDU
//!   `00`, `01` or `02` vpcd sends nothing until it has its answer. So the bridge waits for
//!   the next frame: if one comes, the byte was control; if none comes within the window,
//!   it was an APDU and is answered 6700. The price is that delay on such an APDU;
//! - `04` cannot be told from pcscd's ATR request by anything, and pcscd must always get
//!   the ATR. The purse's ATR is built so that, read as a response, it ends in the status
//!   word `67 00` (see [`ATR`]): a client that sends the APDU `04` gets "wrong length" too.
//!   The memory card's ATR has the fixed form PC/SC Part 3 gives storage cards, ending in
//!   four RFU zero bytes and TCK, so a client that sends it the APDU `04` gets the ATR,
//!   whose last two bytes (`00 73`) are no status word; `docs/memory-card.md` says so.
//!
//! Semantics of the emulated card:
//!
//! - power off, power on and reset all end the card's session: [`Card::reset`](valuecard_card::Card::reset) drops its
//!   volatile state (selection, challenges, purchase and load sessions; a memory card has
//!   none);
//! - when the card loses power during a write (`CardError::PowerLost`), it sends nothing.
//!   The bridge closes the connection, so pcscd sees the card vanish in the middle of the
//!   command (the terminal cannot know whether it executed), re-opens the card from its
//!   image through the caller's `open` function and connects again;
//! - a dropped connection (pcscd stopped or restarted) is a power off; the bridge
//!   reconnects with a growing back-off until told to stop;
//! - a frame longer than [`MAX_FRAME_LEN`] is read to its end, discarded and answered 6700;
//!   the connection stays up;
//! - before every connection the bridge stays away from vpcd for [`BridgeConfig::settle`],
//!   and it reconnects if pcscd never powers the card up ([`BridgeConfig::announce_timeout`]):
//!   `bridge.rs` says why a card that comes back too soon stays invisible in pcscd;
//! - for tests of terminals, an [`InjectedDrop`] makes the bridge drop the connection on
//!   purpose at a chosen command APDU (before the card sees it, or after it committed and
//!   instead of its answer) and then stop serving: to pcscd the card was pulled out.
//!
//! Everything is blocking `std::net` I/O with a short read timeout, so a stop flag set from
//! another thread or a signal handler is seen within [`BridgeConfig::poll`].

mod bridge;
mod frame;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use valuecard_card::CardError;

pub use bridge::VpcdBridge;
pub use frame::encode_frame;

/// vpcd's port for reader slot 0 (`VPCDPORT`; Debian's `/etc/reader.conf.d/vpcd` says
/// `CHANNELID 0x8C7B`).
pub const DEFAULT_PORT: u16 = 35963;

/// Where vpcd listens by default.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The longest frame passed to the card: an extended-length command APDU of 4096 data
/// bytes with its header, Lc and Le, with room to spare. A longer frame (vpcd sends up to
/// 65535 bytes) is read, discarded and answered 6700.
pub const MAX_FRAME_LEN: usize = 4096 + 16;

/// vpcd's port for reader slot `slot`, if it is a port number.
pub fn slot_port(slot: u16) -> Option<u16> {
    DEFAULT_PORT.checked_add(slot)
}

/// Control messages: the 1-byte payloads vpcd sends (`VPCD_CTRL_*` in `vpcd.h`).
pub mod ctrl {
    /// Power the card down. No answer.
    pub const POWER_OFF: u8 = 0;
    /// Power the card up. No answer.
    pub const POWER_ON: u8 = 1;
    /// Warm reset. No answer.
    pub const RESET: u8 = 2;
    /// Send the ATR, as a frame.
    pub const GET_ATR: u8 = 4;
}

/// The historical bytes of [`ATR`]: the card names itself in ASCII, then two bytes that
/// make the ATR end in `67 00` (see [`ATR`]).
pub const HISTORICAL_BYTES: &[u8; 11] = b"valuecard\x92\x67";

/// The valuecard ATR (ISO/IEC 7816-3 § 8.2), 15 bytes:
///
/// ```text
/// 3B                           TS   direct convention
/// 8B                           T0   TD1 follows; 11 historical bytes
/// 01                           TD1  no more interface bytes; protocol T=1
/// 76 61 6C 75 65 63 61 72 64   historical bytes "valuecard" (first byte is not 00, 10
///                              or 8X: a proprietary category, ISO/IEC 7816-4 § 8.1.1)
/// 92 67                        two more historical bytes, chosen so that TCK is 00
/// 00                           TCK  the XOR of T0 .. TCK is 00 (required when T=1 is
///                              indicated)
/// ```
///
/// Why the last two bytes are `67 00`: vpcd sends a PC/SC client's 1-byte command APDU
/// `04` exactly as it sends pcscd's ATR request, so the bridge answers both with the ATR.
/// Read as a response APDU, the ATR's last two bytes are its status word: "wrong length",
/// the answer every other command shorter than 4 bytes gets.
pub const ATR: [u8; 15] = t1_atr(HISTORICAL_BYTES);

/// A T=1 ATR: TS = 3B, T0 announcing TD1 and the historical bytes, TD1 = 01 (T=1), the
/// historical bytes, and TCK (the XOR of T0 through TCK is 00). `N` is their number plus 4.
pub const fn t1_atr<const N: usize>(historical: &[u8]) -> [u8; N] {
    let mut atr = [0u8; N];
    atr[0] = 0x3B;
    atr[1] = 0x80 | historical.len() as u8;
    atr[2] = 0x01;
    let mut i = 0;
    while i < historical.len() {
        atr[3 + i] = historical[i];
        i += 1;
    }
    let mut tck = 0u8;
    let mut j = 1;
    while j < N - 1 {
        tck ^= atr[j];
        j += 1;
    }
    atr[N - 1] = tck;
    atr
}

// Read as a response APDU, the ATR ends in the status word 6700 (wrong length).
const _: () = assert!(ATR[13] == SW_WRONG_LENGTH[0] && ATR[14] == SW_WRONG_LENGTH[1]);

/// The status word sent when the card gives no response for a reason other than a power
/// cut (none today): "no precise diagnosis".
const SW_NO_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

/// "Wrong length": the answer to a frame too long to pass to the card.
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];

/// Timing of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeConfig {
    /// How long one blocking read waits before the stop flag is checked again.
    pub poll: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The first pause between connection attempts; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// After a 1-byte frame `00`, `01` or `02`, how long to wait for vpcd's next frame
    /// before taking the byte for a command APDU rather than a control message. It must
    /// exceed pcscd's presence-poll period (about 450 ms) with a margin: a control message
    /// taken for an APDU would put an unasked-for answer on the wire.
    pub ambiguity_window: Duration,
    /// How long the bridge stays away from vpcd before each connection (the first one
    /// too), so that pcscd's status thread sees the slot empty at least once.
    pub settle: Duration,
    /// If pcscd has neither powered the card up, reset it nor sent it a command this long
    /// after the first frame of a connection, it has not announced the card: the bridge
    /// leaves, settles and connects again (twice at most in a row). `None`: never.
    pub announce_timeout: Option<Duration>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            poll: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ambiguity_window: Duration::from_millis(1500),
            settle: Duration::from_millis(1200),
            announce_timeout: Some(Duration::from_secs(3)),
        }
    }
}

/// A connection drop the bridge injects on purpose, to test what a terminal does when the
/// card leaves in the middle of a command (`valuecard card attach --danger-drop-after N`,
/// `--danger-drop-after-commit N`). Command APDUs are counted from 1 over the bridge's whole
/// life, across connections; control messages and 1-byte commands do not count. After the drop the bridge
/// stops serving: [`VpcdBridge::run_until`] returns, and a new bridge on the same image is
/// the card's next power-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedDrop {
    /// When the Nth command APDU arrives, drop the connection before the card sees it.
    BeforeApdu(u64),
    /// Let the card process the Nth command APDU, committing whatever it changes, then drop
    /// the connection instead of sending the response.
    AfterApdu(u64),
}

impl InjectedDrop {
    /// The number of the command APDU the drop happens at.
    pub fn apdu(self) -> u64 {
        match self {
            InjectedDrop::BeforeApdu(n) | InjectedDrop::AfterApdu(n) => n,
        }
    }
}

/// Something that happened at the bridge, for a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeEvent {
    Connected {
        addr: SocketAddr,
    },
    /// A connection attempt failed; the next one follows after `retry_in`.
    ConnectFailed {
        addr: String,
        attempt: u32,
        error: String,
        retry_in: Duration,
    },
    /// The connection ended; the card was powered off.
    Disconnected {
        reason: String,
    },
    PowerOn,
    PowerOff,
    Reset,
    /// A 1-byte frame taken for a command APDU and the status word the card answered with;
    /// `waited` says whether it could have been a control message (`00`, `01`, `02`) and
    /// was answered only after [`BridgeConfig::ambiguity_window`].
    OneByteApdu {
        byte: u8,
        sw: u16,
        waited: bool,
    },
    /// A frame longer than [`MAX_FRAME_LEN`], discarded and answered 6700.
    Oversized {
        len: usize,
    },
    /// A command APDU and the status word the card answered with.
    Apdu {
        cla: u8,
        ins: u8,
        sw: u16,
    },
    /// The card lost power during a write and sent no response.
    PowerLost,
    /// The card was opened again from its image after a power cut.
    CardReopened,
    /// The connection was dropped on purpose at command APDU `apdu` (an [`InjectedDrop`]);
    /// `processed` says whether the card processed that command first.
    DroppedOnPurpose {
        apdu: u64,
        processed: bool,
    },
}

impl fmt::Display for BridgeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeEvent::Connected { addr } => write!(f, "connected to vpcd at {addr}"),
            BridgeEvent::ConnectFailed {
                addr,
                attempt,
                error,
                retry_in,
            } => write!(
                f,
                "vpcd at {addr} not reachable ({error}), attempt {attempt}; retrying in {} ms",
                retry_in.as_millis()
            ),
            BridgeEvent::Disconnected { reason } => {
                write!(f, "disconnected from vpcd ({reason}); card powered off")
            }
            BridgeEvent::PowerOn => f.write_str("power on"),
            BridgeEvent::PowerOff => f.write_str("power off"),
            BridgeEvent::Reset => f.write_str("reset"),
            BridgeEvent::OneByteApdu { byte, sw, waited } => {
                write!(f, "1-byte command APDU {byte:02X} -> SW {sw:04X}")?;
                if *waited {
                    f.write_str(" (no frame followed it, so it was no control message)")?;
                }
                Ok(())
            }
            BridgeEvent::Oversized { len } => write!(
                f,
                "{len}-byte command, longer than {MAX_FRAME_LEN} bytes: discarded -> SW 6700"
            ),
            BridgeEvent::Apdu { cla, ins, sw } => {
                write!(f, "APDU CLA {cla:02X} INS {ins:02X} -> SW {sw:04X}")
            }
            BridgeEvent::PowerLost => f.write_str(
                "the card lost power during a write and did not answer; dropping the connection",
            ),
            BridgeEvent::CardReopened => f.write_str("card re-opened from its image"),
            BridgeEvent::DroppedOnPurpose {
                apdu,
                processed: false,
            } => write!(
                f,
                "dropping the connection on purpose at command APDU {apdu}, before the card saw it"
            ),
            BridgeEvent::DroppedOnPurpose {
                apdu,
                processed: true,
            } => write!(
                f,
                "dropping the connection on purpose after the card processed command APDU \
                 {apdu}, instead of its response"
            ),
        }
    }
}

/// Why the bridge stopped serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The card could not be opened (or re-opened after a power cut) from its image.
    #[error("card: {0}")]
    Card(#[from] CardError),
    /// vpcd could not be reached.
    #[error("vpcd at {addr}: {error}")]
    Connect { addr: String, error: String },
}

#[cfg(test)]
mod tests;
