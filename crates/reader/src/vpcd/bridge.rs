//! The bridge's connection loop and its answers to vpcd.
//!
//! Why the bridge settles before it connects, and watches for pcscd's power-up after: pcscd
//! announces a card only when its status thread (one per reader, polling vpcd about every
//! 450 ms) sees the slot go from empty to occupied; the thread remembers the last state *it*
//! saw. Other paths of pcscd mark the slot empty too: when a client resets or reconnects to
//! a card whose connection vanished (every terminal that exits after a pulled card does:
//! pcsc-lite's `SCardDisconnect` with `SCARD_RESET_CARD`), pcscd sets the slot to empty from
//! the client's thread. If the card's next connection is then already waiting in vpcd's
//! accept queue, the status thread's next poll finds it present, as it last saw it, and
//! announces nothing: the slot stays empty to every client for as long as that connection
//! lasts. So the bridge stays away for longer than one poll period before every connection
//! (one poll sees the slot empty and records it), and if pcscd does not power the card up
//! within [`BridgeConfig::announce_timeout`] of the first frame, it leaves and comes back.

use std::fmt;
use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use valuecard_card::CardError;

use super::frame::{read_frame, write_frame, Frame, FrameError};
use super::{
    ctrl, BridgeConfig, BridgeError, BridgeEvent, InjectedDrop, MAX_FRAME_LEN, SW_NO_DIAGNOSIS,
    SW_WRONG_LENGTH,
};
use crate::EmulatedCard;

/// How many connections in a row may end because pcscd did not announce the card before
/// the bridge stops leaving for that reason (a pcscd that powers cards up only on demand
/// never announces one by powering it up).
const MAX_UNANNOUNCED_IN_A_ROW: u32 = 2;

/// How one connection ended.
#[derive(Debug)]
enum End {
    Stopped,
    Closed,
    PowerLost,
    /// An [`InjectedDrop`].
    Dropped,
    /// pcscd did not power the card up in time: it did not see it arrive.
    Unannounced(Duration),
    Io(io::Error),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Stopped => f.write_str("stopped"),
            End::Closed => f.write_str("closed by vpcd"),
            End::PowerLost => f.write_str("card lost power"),
            End::Dropped => f.write_str("dropped on purpose"),
            End::Unannounced(after) => write!(
                f,
                "pcscd did not power the card up within {} ms, so it did not see it arrive; \
                 leaving and coming back",
                after.as_millis()
            ),
            End::Io(error) => write!(f, "I/O error: {error}"),
        }
    }
}

/// What the bridge does with one frame.
enum Answer {
    None,
    Frame(Vec<u8>),
    PowerLost,
    /// An [`InjectedDrop`]: close the connection without an answer.
    Drop,
}

type Observer = Box<dyn FnMut(&BridgeEvent) + Send>;

/// Serves one emulated card (a purse card or a memory card, any [`EmulatedCard`]) to vpcd,
/// with the card's own ATR. `open` opens the card from its image; it is called once at the
/// start and again after every power cut during a write.
pub struct VpcdBridge<C, F>
where
    C: EmulatedCard,
    F: FnMut() -> Result<C, CardError>,
{
    addr: String,
    /// `None` only between a power cut and the card's re-opening: the old card is closed
    /// first, so that a file image's lock is free for the new one.
    card: Option<C>,
    open: F,
    stream: Option<TcpStream>,
    config: BridgeConfig,
    observer: Option<Observer>,
    injected_drop: Option<InjectedDrop>,
    /// Command APDUs received so far, over all connections.
    apdus: u64,
    dropped: bool,
}

impl<C, F> fmt::Debug for VpcdBridge<C, F>
where
    C: EmulatedCard,
    F: FnMut() -> Result<C, CardError>,
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

impl<C, F> VpcdBridge<C, F>
where
    C: EmulatedCard,
    F: FnMut() -> Result<C, CardError>,
{
    /// Opens the card; connects only in [`run_until`](Self::run_until). `addr` is
    /// `HOST:PORT`, resolved at every connection attempt.
    pub fn new(addr: impl Into<String>, mut open: F) -> Result<Self, BridgeError> {
        let card = open()?;
        Ok(VpcdBridge {
            addr: addr.into(),
            card: Some(card),
            open,
            stream: None,
            config: BridgeConfig::default(),
            observer: None,
            injected_drop: None,
            apdus: 0,
            dropped: false,
        })
    }

    /// Opens the card and connects to vpcd once, failing if vpcd is not reachable. The
    /// first connection skips [`BridgeConfig::settle`].
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

    /// The card; `None` only after [`run_until`](Self::run_until) failed to re-open it.
    pub fn card(&self) -> Option<&C> {
        self.card.as_ref()
    }

    /// The card, for fault injection in tests.
    pub fn card_mut(&mut self) -> Option<&mut C> {
        self.card.as_mut()
    }

    pub fn into_card(self) -> Option<C> {
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
        let mut unannounced = 0u32;
        // A card attached right after another bridge on this slot ended (a killed `card
        // attach`, say) must not be in vpcd's queue before pcscd has seen the slot empty.
        if self.stream.is_none() {
            sleep_unless_stopped(self.config.settle, stop, self.config.poll);
        }
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
            let watchdog = self
                .config
                .announce_timeout
                .filter(|_| unannounced < MAX_UNANNOUNCED_IN_A_ROW);
            let (end, frames) = self.serve(stream, stop, watchdog);
            // Whatever ended the connection, the card is no longer powered by this reader.
            if let Some(card) = self.card.as_mut() {
                card.reset();
            }
            let stopped = matches!(end, End::Stopped | End::Dropped);
            self.dropped |= matches!(end, End::Dropped);
            let power_lost = matches!(end, End::PowerLost);
            if matches!(end, End::Unannounced(_)) {
                unannounced += 1;
            } else if frames > 0 {
                unannounced = 0;
            }
            self.emit(BridgeEvent::Disconnected {
                reason: end.to_string(),
            });
            if stopped {
                break;
            }
            if power_lost {
                // Close the image before opening it again: it is locked while open.
                self.card = None;
                self.card = Some((self.open)()?);
                self.emit(BridgeEvent::CardReopened);
            }
            // A connection that carried frames was a working one: reconnect promptly.
            // One that carried none (refused at once) backs off like a failed attempt.
            if frames > 0 {
                backoff = self.config.initial_backoff;
            } else {
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
            sleep_unless_stopped(self.config.settle.max(backoff), stop, self.config.poll);
        }
        Ok(())
    }

    /// Answers frames on one connection until it ends. Returns how it ended and how many
    /// frames it carried.
    fn serve(
        &mut self,
        mut stream: TcpStream,
        stop: &AtomicBool,
        watchdog: Option<Duration>,
    ) -> (End, u64) {
        let mut frames = 0u64;
        // A frame read while deciding what a 1-byte frame before it was.
        let mut pending: Option<Frame> = None;
        let mut first_frame_at: Option<Instant> = None;
        let mut announced = false;
        let end = loop {
            if let (Some(limit), Some(first), false) = (watchdog, first_frame_at, announced) {
                if first.elapsed() >= limit {
                    break End::Unannounced(limit);
                }
            }
            let frame = match pending.take() {
                Some(frame) => frame,
                None => {
                    // vpcd writes a frame's length and payload separately and without
                    // TCP_NODELAY: with delayed ACKs every command would wait ~40 ms.
                    ack_at_once(&stream);
                    let deadline = match (watchdog, first_frame_at, announced) {
                        (Some(limit), Some(first), false) => Some(first + limit),
                        _ => None,
                    };
                    match read_frame(&mut stream, stop, deadline) {
                        Ok(frame) => frame,
                        Err(FrameError::Silent) => continue,
                        Err(error) => break end_of(error),
                    }
                }
            };
            frames += 1;
            first_frame_at.get_or_insert_with(Instant::now);
            let answer = match frame {
                Frame::Oversized(len) => {
                    announced = true;
                    self.emit(BridgeEvent::Oversized { len });
                    Answer::Frame(SW_WRONG_LENGTH.to_vec())
                }
                Frame::Payload(payload) => match payload.as_slice() {
                    // vpicc logs and ignores an empty frame; so does the bridge.
                    [] => Answer::None,
                    [ctrl::GET_ATR] => Answer::Frame(self.atr()),
                    [byte @ (ctrl::POWER_OFF | ctrl::POWER_ON | ctrl::RESET)] => {
                        let byte = *byte;
                        // Control or a 1-byte APDU? vpcd sends its next frame at once after
                        // a control message, and nothing while it waits for an answer.
                        let deadline = Instant::now() + self.config.ambiguity_window;
                        ack_at_once(&stream);
                        match read_frame(&mut stream, stop, Some(deadline)) {
                            Ok(next) => {
                                announced |= byte != ctrl::POWER_OFF;
                                self.control(byte);
                                pending = Some(next);
                                Answer::None
                            }
                            Err(FrameError::Silent) => {
                                announced = true;
                                self.one_byte_apdu(byte, true)
                            }
                            Err(error) => {
                                self.control(byte);
                                break end_of(error);
                            }
                        }
                    }
                    [byte] => {
                        announced = true;
                        self.one_byte_apdu(*byte, false)
                    }
                    apdu => {
                        announced = true;
                        self.apdu(apdu)
                    }
                },
            };
            match answer {
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

    /// The card's ATR. Between a power cut and the card's re-opening there is no card, and
    /// no frame is read then either; should one be, the purse's ATR stands in.
    fn atr(&self) -> Vec<u8> {
        self.card
            .as_ref()
            .map_or(&super::ATR[..], EmulatedCard::atr)
            .to_vec()
    }

    /// A control message: power off, power on and reset all end the card's session.
    fn control(&mut self, byte: u8) {
        if let Some(card) = self.card.as_mut() {
            card.reset();
        }
        let event = match byte {
            ctrl::POWER_OFF => BridgeEvent::PowerOff,
            ctrl::POWER_ON => BridgeEvent::PowerOn,
            _ => BridgeEvent::Reset,
        };
        self.emit(event);
    }

    /// The card's answer to one command; a power cut ends the connection as a card pulled
    /// would, and any other failure (or no card) answers 6F00.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Answer> {
        match self.card.as_mut().map(|card| card.transmit(apdu)) {
            Some(Ok(response)) => Ok(response),
            Some(Err(CardError::PowerLost)) => {
                self.emit(BridgeEvent::PowerLost);
                Err(Answer::PowerLost)
            }
            Some(Err(_)) | None => Ok(SW_NO_DIAGNOSIS.to_vec()),
        }
    }

    /// A 1-byte command APDU: the card answers it as any command shorter than 4 bytes.
    fn one_byte_apdu(&mut self, byte: u8, waited: bool) -> Answer {
        let response = match self.transmit(&[byte]) {
            Ok(response) => response,
            Err(answer) => return answer,
        };
        self.emit(BridgeEvent::OneByteApdu {
            byte,
            sw: status_word(&response),
            waited,
        });
        Answer::Frame(response)
    }

    /// A command APDU of 2 bytes or more.
    fn apdu(&mut self, apdu: &[u8]) -> Answer {
        self.apdus = self.apdus.saturating_add(1);
        if self.injected_drop == Some(InjectedDrop::BeforeApdu(self.apdus)) {
            self.emit(BridgeEvent::DroppedOnPurpose {
                apdu: self.apdus,
                processed: false,
            });
            return Answer::Drop;
        }
        let response = match self.transmit(apdu) {
            Ok(response) => response,
            Err(answer) => return answer,
        };
        let (cla, ins) = match apdu {
            [cla, ins, ..] => (*cla, *ins),
            [cla] => (*cla, 0),
            [] => (0, 0),
        };
        self.emit(BridgeEvent::Apdu {
            cla,
            ins,
            sw: status_word(&response),
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

fn status_word(response: &[u8]) -> u16 {
    match response {
        [.., sw1, sw2] => u16::from_be_bytes([*sw1, *sw2]),
        _ => 0,
    }
}

fn end_of(error: FrameError) -> End {
    match error {
        FrameError::Stopped => End::Stopped,
        FrameError::Closed => End::Closed,
        // Only reads with a deadline are silent, and their callers handle it; should one
        // reach here, the connection is treated as gone.
        FrameError::Silent => End::Closed,
        FrameError::Io(error) => End::Io(error),
    }
}

/// Asks the kernel to acknowledge at once (Linux leaves quick-ACK mode on its own, so this is
/// set before every read). A failure only costs latency.
#[cfg(target_os = "linux")]
fn ack_at_once(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn ack_at_once(_stream: &TcpStream) {}

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

// The bridge never hands the card more than this; the frame reader enforces it.
const _: () = assert!(MAX_FRAME_LEN < u16::MAX as usize);
