//! The vpcd bridge: puts an emulated [`Card`] into a PC/SC reader.
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
//!   pcscd polls for card presence by asking for the ATR about every 400 ms, so the bridge
//!   always answers it, powered or not;
//! - a longer payload is a command APDU, answered with one frame holding the response APDU.
//!
//! Semantics of the emulated card:
//!
//! - power off, power on and reset all end the card's session: [`Card::reset`] drops its
//!   volatile state (selection, challenges, purchase and load sessions);
//! - when the card loses power during a write (`CardError::PowerLost`), it sends nothing.
//!   The bridge closes the connection, so pcscd sees the card vanish in the middle of the
//!   command (the terminal cannot know whether it executed), re-opens the card from its
//!   image through the caller's `open` function and connects again;
//! - a dropped connection (pcscd stopped or restarted) is a power off; the bridge
//!   reconnects with a growing back-off until told to stop;
//! - a frame longer than [`MAX_FRAME_LEN`] is refused by closing the connection;
//! - for tests of terminals, an [`InjectedDrop`] makes the bridge drop the connection on
//!   purpose at a chosen command APDU (before the card sees it, or after it committed and
//!   instead of its answer) and then stop serving: to pcscd the card was pulled out.
//!
//! Everything is blocking `std::net` I/O with a short read timeout, so a stop flag set from
//! another thread or a signal handler is seen within [`BridgeConfig::poll`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;
use valuecard_card::eeprom::Eeprom;
use valuecard_card::{Card, CardError};

/// vpcd's port for reader slot 0 (`VPCDPORT`; Debian's `/etc/reader.conf.d/vpcd` says
/// `CHANNELID 0x8C7B`).
pub const DEFAULT_PORT: u16 = 35963;

/// Where vpcd listens by default.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The longest frame accepted from vpcd: an extended-length command APDU of 4096 data
/// bytes with its header, Lc and Le, with room to spare. Longer frames end the connection.
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

/// The historical bytes of [`ATR`]: the card names itself, in ASCII.
pub const HISTORICAL_BYTES: &[u8; 9] = b"valuecard";

/// The valuecard ATR (ISO/IEC 7816-3 § 8.2), 13 bytes:
///
/// ```text
/// 3B                           TS   direct convention
/// 89                           T0   TD1 follows; 9 historical bytes
/// 01                           TD1  no more interface bytes; protocol T=1
/// 76 61 6C 75 65 63 61 72 64   historical bytes "valuecard" (first byte is not 00, 10
///                              or 8X: a proprietary category, ISO/IEC 7816-4 § 8.1.1)
/// F7                           TCK  XOR of T0 .. the last historical byte is F7, so the
///                              XOR of T0 .. TCK is 00 (required when T=1 is indicated)
/// ```
pub const ATR: [u8; 13] = t1_atr(HISTORICAL_BYTES);

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

// The documented TCK is the computed one.
const _: () = assert!(ATR[12] == 0xF7);

/// The status word sent when the card gives no response for a reason other than a power
/// cut (none today): "no precise diagnosis".
const SW_NO_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

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
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            poll: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A connection drop the bridge injects on purpose, to test what a terminal does when the
/// card leaves in the middle of a command (`valuecard card attach --danger-drop-after N`,
/// `--danger-drop-after-commit N`). Command APDUs are counted from 1 over the bridge's whole
/// life, across connections; control messages do not count. After the drop the bridge
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
    /// A 1-byte message that is none of the known control messages (ignored).
    UnknownControl(u8),
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
            BridgeEvent::UnknownControl(byte) => {
                write!(f, "ignored unknown control message {byte:02X}")
            }
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

/// A frame-level failure on one connection.
#[derive(Debug)]
enum FrameError {
    /// The stop flag was set while waiting.
    Stopped,
    /// vpcd closed the connection.
    Closed,
    /// vpcd announced a frame longer than [`MAX_FRAME_LEN`].
    TooLong(usize),
    Io(io::Error),
}

/// Reads exactly `buf.len()` bytes, checking `stop` whenever a read times out. `Ok(false)`
/// means the peer closed the connection before the first byte.
fn read_full(
    stream: &mut impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> Result<bool, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return Err(FrameError::Stopped);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => filled += n,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => return Err(FrameError::Io(error)),
        }
    }
    Ok(true)
}

/// Reads one frame: the 2-byte big-endian length, then the payload.
/// Asks the kernel to acknowledge at once (Linux leaves quick-ACK mode on its own, so this is
/// set before every read). A failure only costs latency.
#[cfg(target_os = "linux")]
fn ack_at_once(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn ack_at_once(_stream: &TcpStream) {}

fn read_frame(stream: &mut impl Read, stop: &AtomicBool) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 2];
    if !read_full(stream, &mut header, stop)? {
        return Err(FrameError::Closed);
    }
    let len = usize::from(u16::from_be_bytes(header));
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut payload = vec![0u8; len];
    if len > 0 && !read_full(stream, &mut payload, stop)? {
        return Err(FrameError::Closed);
    }
    Ok(payload)
}

/// Encodes one frame, or `None` if the payload does not fit a 2-byte length.
pub fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let frame = encode_frame(payload).unwrap_or_else(|| {
        encode_frame(&SW_NO_DIAGNOSIS).unwrap_or_else(|| SW_NO_DIAGNOSIS.to_vec())
    });
    stream.write_all(&frame)?;
    stream.flush()
}

/// How one connection ended.
#[derive(Debug)]
enum End {
    Stopped,
    Closed,
    TooLong(usize),
    PowerLost,
    /// An [`InjectedDrop`].
    Dropped,
    Io(io::Error),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Stopped => f.write_str("stopped"),
            End::Closed => f.write_str("closed by vpcd"),
            End::TooLong(len) => write!(
                f,
                "refused a {len}-byte frame, longer than {MAX_FRAME_LEN} bytes"
            ),
            End::PowerLost => f.write_str("card lost power"),
            End::Dropped => f.write_str("dropped on purpose"),
            End::Io(error) => write!(f, "I/O error: {error}"),
        }
    }
}

type Observer = Box<dyn FnMut(&BridgeEvent) + Send>;

/// Serves one emulated card to vpcd. `open` opens the card from its image; it is called
/// once at the start and again after every power cut during a write.
pub struct VpcdBridge<E, R, F>
where
    E: Eeprom,
    R: CryptoRngCore,
    F: FnMut() -> Result<Card<E, R>, CardError>,
{
    addr: String,
    card: Card<E, R>,
    open: F,
    stream: Option<TcpStream>,
    config: BridgeConfig,
    observer: Option<Observer>,
    injected_drop: Option<InjectedDrop>,
    /// Command APDUs received so far, over all connections.
    apdus: u64,
    dropped: bool,
}

impl<E, R, F> fmt::Debug for VpcdBridge<E, R, F>
where
    E: Eeprom,
    R: CryptoRngCore,
    F: FnMut() -> Result<Card<E, R>, CardError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VpcdBridge")
            .field("addr", &self.addr)
            .field("card", &self.card)
            .field("connected", &self.stream.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<E, R, F> VpcdBridge<E, R, F>
where
    E: Eeprom,
    R: CryptoRngCore,
    F: FnMut() -> Result<Card<E, R>, CardError>,
{
    /// Opens the card; connects only in [`run_until`](Self::run_until). `addr` is
    /// `HOST:PORT`, resolved at every connection attempt.
    pub fn new(addr: impl Into<String>, mut open: F) -> Result<Self, BridgeError> {
        let card = open()?;
        Ok(VpcdBridge {
            addr: addr.into(),
            card,
            open,
            stream: None,
            config: BridgeConfig::default(),
            observer: None,
            injected_drop: None,
            apdus: 0,
            dropped: false,
        })
    }

    /// Opens the card and connects to vpcd once, failing if vpcd is not reachable.
    pub fn connect(addr: impl Into<String>, open: F) -> Result<Self, BridgeError> {
        let mut bridge = Self::new(addr, open)?;
        let stream = bridge.try_connect().map_err(|error| BridgeError::Connect {
            addr: bridge.addr.clone(),
            error: error.to_string(),
        })?;
        bridge.stream = Some(stream);
        Ok(bridge)
    }

    pub fn with_config(mut self, config: BridgeConfig) -> Self {
        self.config = config;
        self
    }

    /// Drops the connection on purpose at a chosen command APDU, then stops (see
    /// [`InjectedDrop`]).
    pub fn with_injected_drop(mut self, drop: InjectedDrop) -> Self {
        self.injected_drop = Some(drop);
        self
    }

    /// Whether the bridge stopped because of its [`InjectedDrop`].
    pub fn dropped_on_purpose(&self) -> bool {
        self.dropped
    }

    /// Calls `observer` with every event (connections, power, APDUs).
    pub fn on_event(mut self, observer: impl FnMut(&BridgeEvent) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn card(&self) -> &Card<E, R> {
        &self.card
    }

    /// The card, for fault injection in tests.
    pub fn card_mut(&mut self) -> &mut Card<E, R> {
        &mut self.card
    }

    pub fn into_card(self) -> Card<E, R> {
        self.card
    }

    fn emit(&mut self, event: BridgeEvent) {
        if let Some(observer) = self.observer.as_mut() {
            observer(&event);
        }
    }

    fn try_connect(&self) -> io::Result<TcpStream> {
        let mut last_error = None;
        for addr in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.config.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream
                        .set_read_timeout(Some(self.config.poll.max(Duration::from_millis(1))))?;
                    stream.set_write_timeout(Some(self.config.connect_timeout))?;
                    return Ok(stream);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing")
        }))
    }

    /// Serves the card until `stop` is set (or its [`InjectedDrop`] happened): connects,
    /// answers vpcd, and after a dropped connection or a power cut connects again. Returns
    /// an error only if the card cannot be re-opened from its image.
    pub fn run_until(&mut self, stop: &AtomicBool) -> Result<(), BridgeError> {
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 0u32;
        while !stop.load(Ordering::SeqCst) {
            let stream = match self.stream.take() {
                Some(stream) => stream,
                None => match self.try_connect() {
                    Ok(stream) => stream,
                    Err(error) => {
                        attempt = attempt.saturating_add(1);
                        self.emit(BridgeEvent::ConnectFailed {
                            addr: self.addr.clone(),
                            attempt,
                            error: error.to_string(),
                            retry_in: backoff,
                        });
                        sleep_unless_stopped(backoff, stop, self.config.poll);
                        backoff = (backoff * 2).min(self.config.max_backoff);
                        continue;
                    }
                },
            };
            attempt = 0;
            if let Ok(addr) = stream.peer_addr() {
                self.emit(BridgeEvent::Connected { addr });
            }
            let (end, frames) = self.serve(stream, stop);
            // Whatever ended the connection, the card is no longer powered by this reader.
            self.card.reset();
            let stopped = matches!(end, End::Stopped | End::Dropped);
            self.dropped |= matches!(end, End::Dropped);
            let power_lost = matches!(end, End::PowerLost);
            self.emit(BridgeEvent::Disconnected {
                reason: end.to_string(),
            });
            if stopped {
                break;
            }
            if power_lost {
                self.card = (self.open)()?;
                self.emit(BridgeEvent::CardReopened);
            }
            // A connection that carried frames was a working one: reconnect promptly.
            // One that carried none (refused at once) backs off like a failed attempt.
            if frames > 0 {
                backoff = self.config.initial_backoff;
            } else {
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
            sleep_unless_stopped(self.config.initial_backoff, stop, self.config.poll);
        }
        Ok(())
    }

    /// Answers frames on one connection until it ends. Returns how it ended and how many
    /// frames it carried.
    fn serve(&mut self, mut stream: TcpStream, stop: &AtomicBool) -> (End, u64) {
        let mut frames = 0u64;
        let end = loop {
            // vpcd writes a frame's length and payload separately and without TCP_NODELAY:
            // with delayed ACKs every command would wait ~40 ms for the second write.
            ack_at_once(&stream);
            let payload = match read_frame(&mut stream, stop) {
                Ok(payload) => payload,
                Err(FrameError::Stopped) => break End::Stopped,
                Err(FrameError::Closed) => break End::Closed,
                Err(FrameError::TooLong(len)) => break End::TooLong(len),
                Err(FrameError::Io(error)) => break End::Io(error),
            };
            frames += 1;
            match self.answer(&payload) {
                Answer::None => {}
                Answer::Frame(bytes) => {
                    if let Err(error) = write_frame(&mut stream, &bytes) {
                        break End::Io(error);
                    }
                }
                Answer::PowerLost => break End::PowerLost,
                Answer::Drop => break End::Dropped,
            }
        };
        let _ = stream.shutdown(Shutdown::Both);
        (end, frames)
    }

    /// What the card does with one frame from vpcd.
    fn answer(&mut self, payload: &[u8]) -> Answer {
        match payload {
            // vpicc logs and ignores an empty frame; so does the bridge.
            [] => Answer::None,
            [control] => match *control {
                ctrl::GET_ATR => Answer::Frame(ATR.to_vec()),
                ctrl::POWER_OFF => {
                    self.card.reset();
                    self.emit(BridgeEvent::PowerOff);
                    Answer::None
                }
                ctrl::POWER_ON => {
                    self.card.reset();
                    self.emit(BridgeEvent::PowerOn);
                    Answer::None
                }
                ctrl::RESET => {
                    self.card.reset();
                    self.emit(BridgeEvent::Reset);
                    Answer::None
                }
                other => {
                    self.emit(BridgeEvent::UnknownControl(other));
                    Answer::None
                }
            },
            apdu => {
                self.apdus = self.apdus.saturating_add(1);
                if self.injected_drop == Some(InjectedDrop::BeforeApdu(self.apdus)) {
                    self.emit(BridgeEvent::DroppedOnPurpose {
                        apdu: self.apdus,
                        processed: false,
                    });
                    return Answer::Drop;
                }
                let response = match self.card.transmit(apdu) {
                    Ok(response) => response,
                    Err(CardError::PowerLost) => {
                        self.emit(BridgeEvent::PowerLost);
                        return Answer::PowerLost;
                    }
                    Err(_) => SW_NO_DIAGNOSIS.to_vec(),
                };
                let sw = match response.as_slice() {
                    [.., sw1, sw2] => u16::from_be_bytes([*sw1, *sw2]),
                    _ => 0,
                };
                self.emit(BridgeEvent::Apdu {
                    cla: apdu[0],
                    ins: apdu[1],
                    sw,
                });
                if self.injected_drop == Some(InjectedDrop::AfterApdu(self.apdus)) {
                    self.emit(BridgeEvent::DroppedOnPurpose {
                        apdu: self.apdus,
                        processed: true,
                    });
                    return Answer::Drop;
                }
                Answer::Frame(response)
            }
        }
    }
}

enum Answer {
    None,
    Frame(Vec<u8>),
    PowerLost,
    /// An [`InjectedDrop`]: close the connection without an answer.
    Drop,
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool, step: Duration) {
    let deadline = Instant::now() + total;
    let step = step.max(Duration::from_millis(1));
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(step.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::thread;

    use rand_core::OsRng;
    use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
    use valuecard_card::image::EEPROM_SIZE;
    use valuecard_card::state::PersistentState;
    use valuecard_card::testing;
    use valuecard_core::crypto::{aes_cmac, AesKey};
    use valuecard_core::ids::CardId;
    use valuecard_core::messages::purse::{ins, GenerateKeyPairCommand, PurseStatus};
    use valuecard_core::money::Amount;

    use super::*;

    const SELECT: [u8; 14] = [
        0x00, 0xA4, 0x04, 0x00, 0x08, 0xF0, 0x56, 0x43, 0x50, 0x55, 0x52, 0x53, 0x45, 0x00,
    ];
    const READ_PURSE: [u8; 5] = [0x80, 0x30, 0x00, 0x00, 0x00];

    fn fast() -> BridgeConfig {
        BridgeConfig {
            poll: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        }
    }

    /// The vpcd side of one connection, driven by a test.
    struct FakeVpcd {
        stream: TcpStream,
    }

    impl FakeVpcd {
        fn accept(listener: &TcpListener) -> Self {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            FakeVpcd { stream }
        }

        fn send(&mut self, payload: &[u8]) {
            self.stream
                .write_all(&encode_frame(payload).unwrap())
                .unwrap();
        }

        fn recv(&mut self) -> Vec<u8> {
            let mut header = [0u8; 2];
            self.stream.read_exact(&mut header).unwrap();
            let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
            self.stream.read_exact(&mut payload).unwrap();
            payload
        }

        fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
            self.send(apdu);
            self.recv()
        }

        /// True once the bridge has closed its end.
        fn closed_by_card(&mut self) -> bool {
            let mut byte = [0u8; 1];
            matches!(self.stream.read(&mut byte), Ok(0))
        }
    }

    fn sw(response: &[u8]) -> u16 {
        u16::from_be_bytes([response[response.len() - 2], response[response.len() - 1]])
    }

    fn memory_with(state: PersistentState) -> MemoryEeprom {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        Card::with_state(memory.clone(), state, OsRng).unwrap();
        memory
    }

    type Events = Arc<Mutex<Vec<BridgeEvent>>>;

    /// A bridge over some memory, running in a thread against a listener on a free local
    /// port that plays vpcd.
    struct Running {
        listener: TcpListener,
        stop: Arc<AtomicBool>,
        events: Events,
        /// Receives the count of card openings, one message per opening.
        opened: mpsc::Receiver<u32>,
        handle: thread::JoinHandle<Result<(), BridgeError>>,
    }

    impl Running {
        fn start(
            memory: MemoryEeprom,
            arm: impl FnOnce(&mut Card<FaultInjectingEeprom<MemoryEeprom>>) + Send + 'static,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let stop = Arc::new(AtomicBool::new(false));
            let events: Events = Arc::default();
            let (opened_tx, opened) = mpsc::channel();
            let thread_stop = Arc::clone(&stop);
            let thread_events = Arc::clone(&events);
            let handle = thread::spawn(move || {
                let mut opens = 0u32;
                let open = move || {
                    opens += 1;
                    let _ = opened_tx.send(opens);
                    Card::open(FaultInjectingEeprom::new(memory.clone()), OsRng)
                };
                let mut bridge = VpcdBridge::new(addr, open)?
                    .with_config(fast())
                    .on_event(move |event| thread_events.lock().unwrap().push(event.clone()));
                arm(bridge.card_mut());
                bridge.run_until(&thread_stop)
            });
            Running {
                listener,
                stop,
                events,
                opened,
                handle,
            }
        }

        fn accept(&self) -> FakeVpcd {
            FakeVpcd::accept(&self.listener)
        }

        /// Stops the bridge and returns its events.
        fn stop(self) -> Vec<BridgeEvent> {
            self.stop.store(true, Ordering::SeqCst);
            self.handle.join().unwrap().unwrap();
            let events = self.events.lock().unwrap().clone();
            events
        }
    }

    #[test]
    fn atr_is_t1_with_the_card_name_and_a_correct_check_byte() {
        assert_eq!(
            ATR,
            [0x3B, 0x89, 0x01, b'v', b'a', b'l', b'u', b'e', b'c', b'a', b'r', b'd', 0xF7]
        );
        assert_eq!(ATR[1] & 0x0F, 9, "K = number of historical bytes");
        assert_eq!(ATR[2] & 0x0F, 1, "TD1 offers T=1");
        assert_eq!(&ATR[3..12], HISTORICAL_BYTES);
        assert_eq!(ATR[1..].iter().fold(0u8, |acc, byte| acc ^ byte), 0);
    }

    #[test]
    fn frames_are_big_endian_length_prefixed() {
        assert_eq!(encode_frame(&[0x04]).unwrap(), vec![0x00, 0x01, 0x04]);
        let long = vec![0xAA; 0x0123];
        let frame = encode_frame(&long).unwrap();
        assert_eq!(&frame[..2], &[0x01, 0x23]);
        assert_eq!(&frame[2..], long.as_slice());
        assert!(encode_frame(&vec![0; 0x1_0000]).is_none());
        assert_eq!(encode_frame(&[]).unwrap(), vec![0x00, 0x00]);
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        // A reader that hands out one byte per call.
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 >= self.0.len() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[self.1];
                self.1 += 1;
                Ok(1)
            }
        }
        let stop = AtomicBool::new(false);
        let mut input = encode_frame(&SELECT).unwrap();
        input.extend(encode_frame(&[ctrl::GET_ATR]).unwrap());
        input.extend([0x00, 0x05, 0x80]); // truncated frame
        let mut reader = Trickle(input, 0);
        assert_eq!(read_frame(&mut reader, &stop).unwrap(), SELECT.to_vec());
        assert_eq!(read_frame(&mut reader, &stop).unwrap(), vec![ctrl::GET_ATR]);
        assert!(matches!(
            read_frame(&mut reader, &stop),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut reader, &stop),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_frames_are_refused_before_their_payload_is_read() {
        let stop = AtomicBool::new(false);
        let len = u16::try_from(MAX_FRAME_LEN + 1).unwrap();
        let mut input: &[u8] = &len.to_be_bytes();
        assert!(matches!(
            read_frame(&mut input, &stop),
            Err(FrameError::TooLong(n)) if n == MAX_FRAME_LEN + 1
        ));
        let max = u16::try_from(MAX_FRAME_LEN).unwrap();
        let mut frame = max.to_be_bytes().to_vec();
        frame.extend(vec![0u8; MAX_FRAME_LEN]);
        let mut input: &[u8] = &frame;
        assert_eq!(read_frame(&mut input, &stop).unwrap().len(), MAX_FRAME_LEN);
    }

    #[test]
    fn answers_atr_polls_and_apdus_and_resets_on_power_control() {
        let memory = memory_with(testing::personalized(Amount::new(1234).unwrap()));
        let bridge = Running::start(memory, |_| {});
        let mut vpcd = bridge.accept();

        // pcscd's presence polling: the ATR, again and again, before and after power on.
        for _ in 0..3 {
            vpcd.send(&[ctrl::GET_ATR]);
            assert_eq!(vpcd.recv(), ATR.to_vec());
        }
        vpcd.send(&[ctrl::POWER_ON]);
        vpcd.send(&[ctrl::GET_ATR]);
        assert_eq!(vpcd.recv(), ATR.to_vec(), "power on itself is not answered");

        let response = vpcd.transmit(&SELECT);
        assert_eq!(sw(&response), 0x9000);
        let response = vpcd.transmit(&READ_PURSE);
        assert_eq!(sw(&response), 0x9000);
        let status = PurseStatus::decode(&response[..response.len() - 2]).unwrap();
        assert_eq!(status.balance, Amount::new(1234).unwrap());

        // A reset ends the selection: the purse must be selected again.
        vpcd.send(&[ctrl::RESET]);
        assert_eq!(sw(&vpcd.transmit(&READ_PURSE)), 0x6985);
        assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
        vpcd.send(&[ctrl::POWER_OFF]);
        assert_eq!(sw(&vpcd.transmit(&READ_PURSE)), 0x6985);

        // Unknown control messages and empty frames are ignored, not answered.
        vpcd.send(&[0x09]);
        vpcd.send(&[]);
        vpcd.send(&[ctrl::GET_ATR]);
        assert_eq!(vpcd.recv(), ATR.to_vec());

        let events = bridge.stop();
        assert!(matches!(events[0], BridgeEvent::Connected { .. }));
        for expected in [
            BridgeEvent::PowerOn,
            BridgeEvent::Reset,
            BridgeEvent::PowerOff,
            BridgeEvent::UnknownControl(0x09),
            BridgeEvent::Apdu {
                cla: 0x80,
                ins: 0x30,
                sw: 0x9000,
            },
        ] {
            assert!(events.contains(&expected), "{expected:?} in {events:?}");
        }
        assert!(matches!(
            events.last(),
            Some(BridgeEvent::Disconnected { reason }) if reason == "stopped"
        ));
    }

    #[test]
    fn oversized_frame_disconnects_and_the_bridge_reconnects_with_the_session_lost() {
        let memory = memory_with(testing::personalized(Amount::new(5).unwrap()));
        let bridge = Running::start(memory, |_| {});
        let mut vpcd = bridge.accept();
        assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
        let len = u16::try_from(MAX_FRAME_LEN + 1).unwrap();
        vpcd.stream.write_all(&len.to_be_bytes()).unwrap();
        assert!(vpcd.closed_by_card());

        // vpcd (or a restarted pcscd) accepts the card again: it starts unselected.
        let mut vpcd = bridge.accept();
        assert_eq!(sw(&vpcd.transmit(&READ_PURSE)), 0x6985);
        assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
        let events = bridge.stop();
        assert!(events.iter().any(|event| matches!(
            event,
            BridgeEvent::Disconnected { reason } if reason.contains("longer than 4112 bytes")
        )));
    }

    #[test]
    fn dropped_connection_is_a_power_off_and_the_bridge_reconnects() {
        let memory = memory_with(testing::personalized(Amount::new(5).unwrap()));
        let bridge = Running::start(memory, |_| {});
        let mut vpcd = bridge.accept();
        assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
        drop(vpcd);
        let mut vpcd = bridge.accept();
        vpcd.send(&[ctrl::GET_ATR]);
        assert_eq!(vpcd.recv(), ATR.to_vec());
        assert_eq!(sw(&vpcd.transmit(&READ_PURSE)), 0x6985);
        let events = bridge.stop();
        let connections = events
            .iter()
            .filter(|event| matches!(event, BridgeEvent::Connected { .. }))
            .count();
        assert_eq!(connections, 2, "{events:?}");
    }

    #[test]
    fn waits_for_vpcd_with_backoff_until_it_listens() {
        // Reserve a port, then close it so that the first attempts are refused.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let memory = memory_with(testing::personalized(Amount::new(5).unwrap()));
        let stop = Arc::new(AtomicBool::new(false));
        let events: Events = Arc::default();
        let thread_stop = Arc::clone(&stop);
        let thread_events = Arc::clone(&events);
        let handle = thread::spawn(move || {
            let open = move || Card::open(memory.clone(), OsRng);
            VpcdBridge::new(format!("127.0.0.1:{port}"), open)?
                .with_config(fast())
                .on_event(move |event| thread_events.lock().unwrap().push(event.clone()))
                .run_until(&thread_stop)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !events
            .lock()
            .unwrap()
            .iter()
            .any(|event| matches!(event, BridgeEvent::ConnectFailed { attempt: 3, .. }))
        {
            assert!(Instant::now() < deadline, "no retries seen");
            thread::sleep(Duration::from_millis(5));
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let mut vpcd = FakeVpcd::accept(&listener);
        vpcd.send(&[ctrl::GET_ATR]);
        assert_eq!(vpcd.recv(), ATR.to_vec());
        stop.store(true, Ordering::SeqCst);
        handle.join().unwrap().unwrap();
        let events = events.lock().unwrap();
        let delays: Vec<Duration> = events
            .iter()
            .filter_map(|event| match event {
                BridgeEvent::ConnectFailed { retry_in, .. } => Some(*retry_in),
                _ => None,
            })
            .collect();
        assert!(
            delays.windows(2).all(|pair| pair[0] <= pair[1]),
            "{delays:?}"
        );
        assert!(delays.iter().all(|delay| *delay <= fast().max_backoff));
    }

    #[test]
    fn connect_fails_cleanly_when_vpcd_is_not_listening() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let memory = memory_with(testing::personalized(Amount::new(5).unwrap()));
        let result = VpcdBridge::connect(format!("127.0.0.1:{port}"), move || {
            Card::open(memory.clone(), OsRng)
        });
        assert!(matches!(result, Err(BridgeError::Connect { .. })));
    }

    #[test]
    fn stop_ends_the_bridge_while_it_waits_in_a_read() {
        let memory = memory_with(testing::personalized(Amount::new(5).unwrap()));
        let bridge = Running::start(memory, |_| {});
        let mut vpcd = bridge.accept();
        // Half a frame: the bridge is waiting for the rest when it is told to stop.
        vpcd.stream.write_all(&[0x00]).unwrap();
        thread::sleep(Duration::from_millis(50));
        let events = bridge.stop();
        assert!(vpcd.closed_by_card());
        assert!(matches!(
            events.last(),
            Some(BridgeEvent::Disconnected { reason }) if reason == "stopped"
        ));
    }

    /// GET CHALLENGE then GENERATE KEY PAIR with the MAC under the transport key: the one
    /// command of a manufactured card that writes.
    /// Returns whether the card answered.
    fn generate_key_pair(vpcd: &mut FakeVpcd, transport_key: &AesKey) -> bool {
        assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
        let challenge = vpcd.transmit(&[0x00, ins::GET_CHALLENGE, 0x00, 0x00, 0x10]);
        assert_eq!(sw(&challenge), 0x9000);
        let challenge: [u8; 16] = challenge[..16].try_into().unwrap();
        let card_id = CardId(*b"CARD0042");
        let command = GenerateKeyPairCommand {
            card_id,
            mac: aes_cmac(
                transport_key,
                &GenerateKeyPairCommand::mac_input(&challenge, &card_id),
            ),
        };
        let data = command.encode();
        let mut apdu = vec![0x80, ins::GENERATE_KEY_PAIR, 0x00, 0x00];
        apdu.push(u8::try_from(data.len()).unwrap());
        apdu.extend(data);
        apdu.push(0x00);
        vpcd.send(&apdu);
        !vpcd.closed_by_card()
    }

    /// What a drop test works with: the card's memory and transport key, the fake vpcd, the
    /// bridge's stop flag, its outcome, and its events.
    type DropTest = (
        MemoryEeprom,
        AesKey,
        TcpListener,
        Arc<AtomicBool>,
        mpsc::Receiver<Result<bool, BridgeError>>,
        Events,
    );

    /// A manufactured card behind a bridge that drops at `drop`; the bridge runs in a thread
    /// that reports, when it ends, whether it ended because of the drop.
    fn drop_test(drop: InjectedDrop) -> DropTest {
        let transport_key = AesKey::from_slice(&[0x44; 16]).unwrap();
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        Card::manufacture(memory.clone(), [0xC5; 8], transport_key.clone(), OsRng).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let events: Events = Arc::default();
        let (done_tx, done) = mpsc::channel();
        let thread_memory = memory.clone();
        let thread_stop = Arc::clone(&stop);
        let thread_events = Arc::clone(&events);
        thread::spawn(move || {
            let result = VpcdBridge::new(addr, move || Card::open(thread_memory.clone(), OsRng))
                .map(|bridge| {
                    bridge
                        .with_config(fast())
                        .with_injected_drop(drop)
                        .on_event(move |event| thread_events.lock().unwrap().push(event.clone()))
                })
                .and_then(|mut bridge| {
                    bridge.run_until(&thread_stop)?;
                    Ok(bridge.dropped_on_purpose())
                });
            let _ = done_tx.send(result);
        });
        (memory, transport_key, listener, stop, done, events)
    }

    /// The bridge ended by itself (no stop flag) and does not connect again.
    fn assert_bridge_ended_by_the_drop(
        listener: &TcpListener,
        done: &mpsc::Receiver<Result<bool, BridgeError>>,
    ) {
        let dropped = done
            .recv_timeout(Duration::from_secs(10))
            .expect("the bridge stops after its injected drop")
            .unwrap();
        assert!(dropped, "the bridge reports the drop");
        listener.set_nonblocking(true).unwrap();
        thread::sleep(fast().initial_backoff * 5);
        assert!(
            matches!(listener.accept(), Err(error) if error.kind() == io::ErrorKind::WouldBlock),
            "no new connection after the drop"
        );
    }

    #[test]
    fn injected_drop_before_an_apdu_leaves_it_unprocessed_and_ends_the_bridge() {
        // SELECT is command APDU 1, GET CHALLENGE 2, GENERATE KEY PAIR 3.
        let (memory, transport_key, listener, stop, done, events) =
            drop_test(InjectedDrop::BeforeApdu(3));
        let mut vpcd = FakeVpcd::accept(&listener);
        // Control messages are not counted.
        vpcd.send(&[ctrl::POWER_ON]);
        vpcd.send(&[ctrl::GET_ATR]);
        assert_eq!(vpcd.recv(), ATR.to_vec());
        assert!(
            !generate_key_pair(&mut vpcd, &transport_key),
            "dropped instead of answering"
        );
        assert_bridge_ended_by_the_drop(&listener, &done);
        stop.store(true, Ordering::SeqCst);
        let card = Card::open(memory.clone(), OsRng).unwrap();
        assert!(
            matches!(card.state(), PersistentState::Manufactured { .. }),
            "the dropped command never reached the card"
        );
        let events = events.lock().unwrap();
        assert!(events.contains(&BridgeEvent::DroppedOnPurpose {
            apdu: 3,
            processed: false
        }));
        assert!(!events
            .iter()
            .any(|event| matches!(event, BridgeEvent::Apdu { ins: 0x46, .. })));
        assert!(matches!(
            events.last(),
            Some(BridgeEvent::Disconnected { reason }) if reason == "dropped on purpose"
        ));
    }

    #[test]
    fn injected_drop_after_an_apdu_commits_it_withholds_the_answer_and_ends_the_bridge() {
        let (memory, transport_key, listener, stop, done, events) =
            drop_test(InjectedDrop::AfterApdu(3));
        let mut vpcd = FakeVpcd::accept(&listener);
        assert!(
            !generate_key_pair(&mut vpcd, &transport_key),
            "dropped instead of answering"
        );
        assert_bridge_ended_by_the_drop(&listener, &done);
        stop.store(true, Ordering::SeqCst);
        let card = Card::open(memory.clone(), OsRng).unwrap();
        assert!(
            matches!(card.state(), PersistentState::KeysGenerated { .. }),
            "the card committed the command before the drop"
        );
        let events = events.lock().unwrap();
        let dropped = events
            .iter()
            .position(|event| {
                *event
                    == BridgeEvent::DroppedOnPurpose {
                        apdu: 3,
                        processed: true,
                    }
            })
            .expect("drop event");
        assert!(matches!(
            events[dropped - 1],
            BridgeEvent::Apdu {
                ins: 0x46,
                sw: 0x9000,
                ..
            }
        ));
    }

    #[test]
    fn power_cut_during_a_write_drops_the_connection_and_reopens_the_card_from_its_image() {
        let transport_key = AesKey::from_slice(&[0x33; 16]).unwrap();
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        Card::manufacture(memory.clone(), [0xC5; 8], transport_key.clone(), OsRng).unwrap();
        let before = memory.snapshot();
        let bridge = Running::start(memory.clone(), |card| {
            card.eeprom_mut().cut_power_at(1, 1, 2);
        });
        let opened = |bridge: &Running| bridge.opened.recv_timeout(Duration::from_secs(5));
        assert_eq!(opened(&bridge).unwrap(), 1);

        let mut vpcd = bridge.accept();
        assert!(
            !generate_key_pair(&mut vpcd, &transport_key),
            "a card that lost power sends nothing and leaves the reader"
        );
        assert_eq!(opened(&bridge).unwrap(), 2);

        // The re-opened card is the old card: still manufactured, keys not generated.
        let mut vpcd = bridge.accept();
        vpcd.send(&[ctrl::GET_ATR]);
        assert_eq!(vpcd.recv(), ATR.to_vec());
        let select = vpcd.transmit(&SELECT);
        assert_eq!(sw(&select), 0x9000);
        assert_ne!(
            memory.snapshot(),
            before,
            "the torn write reached the memory"
        );
        let events = bridge.stop();
        let card = Card::open(memory.clone(), OsRng).unwrap();
        assert!(matches!(card.state(), PersistentState::Manufactured { .. }));
        let lost = events
            .iter()
            .position(|event| *event == BridgeEvent::PowerLost)
            .expect("power lost event");
        assert_eq!(events[lost + 2], BridgeEvent::CardReopened, "{events:?}");
        assert!(matches!(
            &events[lost + 1],
            BridgeEvent::Disconnected { reason } if reason == "card lost power"
        ));
    }
}
