//! What a PC/SC client can put on vpcd's wire that the protocol did not plan for (1-byte
//! APDUs, oversized APDUs), and how the bridge comes back into pcscd after it left.

use super::*;

fn purse_card() -> MemoryEeprom {
    memory_with(testing::personalized(Amount::new(42).unwrap()))
}

/// Sends `payload` and waits for an answer frame for at most `within`; `None` if none came.
fn answer_within(vpcd: &mut FakeVpcd, payload: &[u8], within: Duration) -> Option<Vec<u8>> {
    vpcd.send(payload);
    vpcd.stream.set_read_timeout(Some(within)).unwrap();
    let mut header = [0u8; 2];
    let answer = match vpcd.stream.read_exact(&mut header) {
        Ok(()) => {
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
            vpcd.stream.read_exact(&mut body).unwrap();
            Some(body)
        }
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(error) => panic!("reading the answer: {error}"),
    };
    vpcd.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    answer
}

#[test]
fn a_one_byte_apdu_that_is_no_control_message_is_answered_at_once() {
    let bridge = Running::start(purse_card(), |_| {});
    let mut vpcd = bridge.accept();
    for byte in [0x80, 0x03, 0xFF, 0xA4] {
        // Before the fix the bridge took these for unknown control messages and never
        // answered: vpcd, and every client of the reader, waited for ever.
        let answer = answer_within(&mut vpcd, &[byte], Duration::from_secs(2));
        assert_eq!(answer, Some(vec![0x67, 0x00]), "APDU {byte:02X}");
    }
    assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
    let events = bridge.stop();
    assert!(events.contains(&BridgeEvent::OneByteApdu {
        byte: 0x80,
        sw: 0x6700,
        waited: false
    }));
}

#[test]
fn a_lone_00_01_or_02_is_an_apdu_answered_6700_after_the_ambiguity_window() {
    let bridge = Running::start(purse_card(), |_| {});
    let mut vpcd = bridge.accept();
    assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
    for byte in [ctrl::POWER_OFF, ctrl::POWER_ON, ctrl::RESET] {
        // As vpcd does for a client's APDU: send the byte and wait for the answer.
        let started = Instant::now();
        let answer = answer_within(&mut vpcd, &[byte], Duration::from_secs(5));
        assert_eq!(answer, Some(vec![0x67, 0x00]), "APDU {byte:02X}");
        assert!(
            started.elapsed() >= fast().ambiguity_window,
            "answered only once no frame followed"
        );
    }
    // The answers kept the connection in step: the next command gets its own answer.
    assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), ATR.to_vec());
    let events = bridge.stop();
    for byte in [0x00, 0x01, 0x02] {
        assert!(
            events.contains(&BridgeEvent::OneByteApdu {
                byte,
                sw: 0x6700,
                waited: true
            }),
            "{byte:02X} in {events:?}"
        );
    }
}

#[test]
fn control_messages_followed_by_vpcds_next_frame_stay_unanswered_controls() {
    let bridge = Running::start(purse_card(), |_| {});
    let mut vpcd = bridge.accept();
    // pcscd's power-up: power on, then at once the ATR request (vpcd's IFDHPowerICC).
    vpcd.send(&[ctrl::POWER_ON]);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), ATR.to_vec(), "the only answer is the ATR");
    assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
    // A reset then a command: the session ended with the reset.
    vpcd.send(&[ctrl::RESET]);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), ATR.to_vec());
    assert_eq!(sw(&vpcd.transmit(&READ_PURSE)), 0x6985);
    // Power off, then pcscd's status thread polls.
    vpcd.send(&[ctrl::POWER_OFF]);
    thread::sleep(fast().ambiguity_window / 3);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), ATR.to_vec());
    let events = bridge.stop();
    for expected in [
        BridgeEvent::PowerOn,
        BridgeEvent::Reset,
        BridgeEvent::PowerOff,
    ] {
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }
    assert!(!events
        .iter()
        .any(|event| matches!(event, BridgeEvent::OneByteApdu { .. })));
}

#[test]
fn a_client_apdu_04_gets_the_atr_which_reads_as_status_word_6700() {
    let bridge = Running::start(purse_card(), |_| {});
    let mut vpcd = bridge.accept();
    let answer = vpcd.transmit(&[ctrl::GET_ATR]);
    assert_eq!(answer, ATR.to_vec());
    assert_eq!(sw(&answer), 0x6700);
    bridge.stop();
}

#[test]
fn an_oversized_apdu_is_answered_6700_and_the_connection_stays() {
    let bridge = Running::start(purse_card(), |_| {});
    let mut vpcd = bridge.accept();
    assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x9000);
    for len in [MAX_FRAME_LEN + 1, 5000, usize::from(u16::MAX)] {
        let mut apdu = vec![0x80, 0x30, 0x00, 0x00];
        apdu.resize(len, 0xAB);
        // Before the fix the bridge closed the connection here.
        assert_eq!(vpcd.transmit(&apdu), vec![0x67, 0x00], "{len} bytes");
    }
    // Same connection, same session: the purse is still selected.
    assert_eq!(sw(&vpcd.transmit(&READ_PURSE)), 0x9000);
    let events = bridge.stop();
    assert!(events.contains(&BridgeEvent::Oversized { len: 5000 }));
    let connections = events
        .iter()
        .filter(|event| matches!(event, BridgeEvent::Connected { .. }))
        .count();
    assert_eq!(connections, 1, "{events:?}");
}

/// A bridge with the given timing over a purse card, against a listener of the test's.
fn start_with_config(config: BridgeConfig) -> (TcpListener, Arc<AtomicBool>, Events) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let memory = purse_card();
    let stop = Arc::new(AtomicBool::new(false));
    let events: Events = Arc::default();
    let thread_stop = Arc::clone(&stop);
    let thread_events = Arc::clone(&events);
    thread::spawn(move || {
        VpcdBridge::new(addr, move || Card::open(memory.clone(), OsRng))
            .unwrap()
            .with_config(config)
            .on_event(move |event| thread_events.lock().unwrap().push(event.clone()))
            .run_until(&thread_stop)
            .unwrap();
    });
    (listener, stop, events)
}

#[test]
fn the_bridge_stays_away_for_the_settle_time_before_it_connects() {
    let config = BridgeConfig {
        settle: Duration::from_millis(600),
        ..fast()
    };
    let started = Instant::now();
    let (listener, stop, _events) = start_with_config(config);
    let _vpcd = FakeVpcd::accept(&listener);
    let waited = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert!(
        waited >= config.settle,
        "connected after {waited:?}, before pcscd could see the slot empty"
    );
}

#[test]
fn a_connection_pcscd_never_powers_up_is_left_and_made_again() {
    let config = BridgeConfig {
        announce_timeout: Some(Duration::from_millis(400)),
        ..fast()
    };
    let (listener, stop, events) = start_with_config(config);
    // pcscd's status thread polls, but the card is never powered up: pcscd did not see it
    // arrive (its slot stays empty to every client).
    let mut unannounced = FakeVpcd::accept(&listener);
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        assert!(Instant::now() < deadline, "the bridge never left");
        unannounced.send(&[ctrl::GET_ATR]);
        let mut header = [0u8; 2];
        if unannounced.stream.read_exact(&mut header).is_err() {
            break Instant::now();
        }
        let mut atr = vec![0u8; usize::from(u16::from_be_bytes(header))];
        if unannounced.stream.read_exact(&mut atr).is_err() {
            break Instant::now();
        }
        thread::sleep(Duration::from_millis(50));
    };
    // It comes back; this time pcscd powers it up, and it stays.
    let mut announced = FakeVpcd::accept(&listener);
    assert!(left.elapsed() < Duration::from_secs(5));
    announced.send(&[ctrl::GET_ATR]);
    assert_eq!(announced.recv(), ATR.to_vec());
    announced.send(&[ctrl::POWER_ON]);
    announced.send(&[ctrl::GET_ATR]);
    assert_eq!(announced.recv(), ATR.to_vec());
    thread::sleep(Duration::from_millis(800));
    assert_eq!(sw(&announced.transmit(&SELECT)), 0x9000);
    stop.store(true, Ordering::SeqCst);
    let events = events.lock().unwrap().clone();
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            BridgeEvent::Disconnected { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        reasons[0].contains("did not power the card up"),
        "{reasons:?}"
    );
}
