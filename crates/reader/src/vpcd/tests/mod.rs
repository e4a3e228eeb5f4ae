//! Unit tests of the bridge against a fake vpcd on a local port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::state::PersistentState;
use valuecard_card::testing;
use valuecard_card::Card;
use valuecard_core::crypto::{aes_cmac, AesKey};
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::{ins, GenerateKeyPairCommand, PurseStatus};
use valuecard_core::money::Amount;

use super::frame::{read_frame, Frame, FrameError};
use super::*;

mod memcard;
mod robustness;

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
        ambiguity_window: Duration::from_millis(300),
        settle: Duration::from_millis(10),
        announce_timeout: None,
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
            arm(bridge.card_mut().unwrap());
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
        [
            0x3B, 0x8B, 0x01, b'v', b'a', b'l', b'u', b'e', b'c', b'a', b'r', b'd', 0x92, 0x67,
            0x00
        ]
    );
    assert_eq!(ATR[1] & 0x0F, 11, "K = number of historical bytes");
    assert_eq!(ATR[2] & 0x0F, 1, "TD1 offers T=1");
    assert_eq!(&ATR[3..14], HISTORICAL_BYTES);
    assert_eq!(&ATR[3..12], b"valuecard");
    assert_eq!(ATR[1..].iter().fold(0u8, |acc, byte| acc ^ byte), 0);
    // Read as a response APDU (what a client sending the 1-byte APDU 04 gets): 6700.
    assert_eq!(sw(&ATR), 0x6700);
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
    assert_eq!(
        read_frame(&mut reader, &stop, None).unwrap(),
        Frame::Payload(SELECT.to_vec())
    );
    assert_eq!(
        read_frame(&mut reader, &stop, None).unwrap(),
        Frame::Payload(vec![ctrl::GET_ATR])
    );
    assert!(matches!(
        read_frame(&mut reader, &stop, None),
        Err(FrameError::Closed)
    ));
    assert!(matches!(
        read_frame(&mut reader, &stop, None),
        Err(FrameError::Closed)
    ));
}

#[test]
fn oversized_frames_are_drained_and_the_next_frame_is_read_in_step() {
    let stop = AtomicBool::new(false);
    // The longest frame vpcd can send, then a normal one.
    let mut input = encode_frame(&vec![0x80; usize::from(u16::MAX)]).unwrap();
    input.extend(encode_frame(&SELECT).unwrap());
    let mut reader: &[u8] = &input;
    assert_eq!(
        read_frame(&mut reader, &stop, None).unwrap(),
        Frame::Oversized(usize::from(u16::MAX))
    );
    assert_eq!(
        read_frame(&mut reader, &stop, None).unwrap(),
        Frame::Payload(SELECT.to_vec())
    );
    // A truncated oversized frame is a closed connection, not a hang.
    let len = u16::try_from(MAX_FRAME_LEN + 1).unwrap();
    let mut input: &[u8] = &len.to_be_bytes();
    assert!(matches!(
        read_frame(&mut input, &stop, None),
        Err(FrameError::Closed)
    ));
    let max = u16::try_from(MAX_FRAME_LEN).unwrap();
    let mut frame = max.to_be_bytes().to_vec();
    frame.extend(vec![0u8; MAX_FRAME_LEN]);
    let mut input: &[u8] = &frame;
    assert_eq!(
        read_frame(&mut input, &stop, None).unwrap(),
        Frame::Payload(vec![0u8; MAX_FRAME_LEN])
    );
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

    // Empty frames are ignored, not answered; a 1-byte frame that is no control message
    // can only be a command APDU, and it is answered.
    assert_eq!(vpcd.transmit(&[0x09]), vec![0x67, 0x00]);
    vpcd.send(&[]);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), ATR.to_vec());

    let events = bridge.stop();
    assert!(matches!(events[0], BridgeEvent::Connected { .. }));
    for expected in [
        BridgeEvent::PowerOn,
        BridgeEvent::Reset,
        BridgeEvent::PowerOff,
        BridgeEvent::OneByteApdu {
            byte: 0x09,
            sw: 0x6700,
            waited: false,
        },
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
