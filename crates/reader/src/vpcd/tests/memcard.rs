//! The bridge serving a memory card (seed 001): its own ATR, its pseudo-APDUs, and a power
//! cut during an UPDATE BINARY treated as the purse's is.

use valuecard_card::memcard::{self, MemoryCard};
use valuecard_core::messages::memcard::{map, COUNTER_START};

use super::*;

const MEMCARD_ID: CardId = CardId([0xC1, 0, 0, 0, 0, 0, 0, 0x07]);

/// A memory card bridge over `memory` in a thread; `cut_at` arms a power cut at that write
/// of the first opening.
fn start_memcard(memory: MemoryEeprom, cut_at: Option<u64>) -> Running {
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
            let mut eeprom = FaultInjectingEeprom::new(memory.clone());
            if let (1, Some(cut)) = (opens, cut_at) {
                eeprom.cut_power_at(cut, 1, 2);
            }
            MemoryCard::open(eeprom)
        };
        let mut bridge = VpcdBridge::new(addr, open)?
            .with_config(fast())
            .on_event(move |event| thread_events.lock().unwrap().push(event.clone()));
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

fn update_value(byte: u8) -> Vec<u8> {
    let mut apdu = vec![0xFF, 0xD6, 0x00, map::VALUE_AREA as u8, 13];
    apdu.extend_from_slice(&[byte; 13]);
    apdu
}

#[test]
fn a_memory_card_is_served_with_its_storage_card_atr_and_answers_its_commands() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    MemoryCard::manufacture(memory.clone(), MEMCARD_ID).unwrap();
    let bridge = start_memcard(memory.clone(), None);
    let mut vpcd = bridge.accept();
    vpcd.send(&[ctrl::POWER_ON]);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), memcard::ATR.to_vec());
    assert_ne!(memcard::ATR.to_vec(), ATR.to_vec());

    let uid = vpcd.transmit(&[0xFF, 0xCA, 0x00, 0x00, 0x00]);
    assert_eq!(sw(&uid), 0x9000);
    assert_eq!(&uid[..8], MEMCARD_ID.as_bytes());
    assert_eq!(sw(&vpcd.transmit(&update_value(0x01))), 0x9000);
    let counter = vpcd.transmit(&[0xFF, 0xB0, 0x00, map::COUNTER as u8, 0x04]);
    assert_eq!(counter[..4], (COUNTER_START - 1).to_be_bytes());
    // The purse's SELECT is not a storage-card command.
    assert_eq!(sw(&vpcd.transmit(&SELECT)), 0x6E00);
    // A reset keeps the memory: the card has no volatile state to lose.
    vpcd.send(&[ctrl::RESET]);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), memcard::ATR.to_vec());
    let counter = vpcd.transmit(&[0xFF, 0xB0, 0x00, map::COUNTER as u8, 0x04]);
    assert_eq!(counter[..4], (COUNTER_START - 1).to_be_bytes());
    bridge.stop();
    assert_eq!(
        MemoryCard::open(memory).unwrap().counter(),
        COUNTER_START - 1
    );
}

#[test]
fn a_power_cut_during_an_update_binary_drops_the_connection_and_reopens_the_card() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    MemoryCard::manufacture(memory.clone(), MEMCARD_ID).unwrap();
    // The first write of the commit: the new slot is torn, the old content stays.
    let bridge = start_memcard(memory.clone(), Some(1));
    let opened = |bridge: &Running| bridge.opened.recv_timeout(Duration::from_secs(5));
    assert_eq!(opened(&bridge).unwrap(), 1);
    let mut vpcd = bridge.accept();
    vpcd.send(&update_value(0x01));
    assert!(
        vpcd.closed_by_card(),
        "a card that lost power sends nothing"
    );
    assert_eq!(opened(&bridge).unwrap(), 2);

    let mut vpcd = bridge.accept();
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), memcard::ATR.to_vec());
    let read = vpcd.transmit(&[0xFF, 0xB0, 0x00, 0x00, 0x00]);
    assert_eq!(sw(&read), 0x9000);
    assert_eq!(read[8..12], COUNTER_START.to_be_bytes(), "the old content");
    assert_eq!(
        read[map::VALUE_AREA as usize],
        0x00,
        "the value area as it was"
    );
    // The reopened card takes the write whole.
    assert_eq!(sw(&vpcd.transmit(&update_value(0x01))), 0x9000);
    let events = bridge.stop();
    assert!(events.contains(&BridgeEvent::PowerLost), "{events:?}");
    assert!(events.contains(&BridgeEvent::CardReopened), "{events:?}");
    assert_eq!(
        MemoryCard::open(memory).unwrap().counter(),
        COUNTER_START - 1
    );
}

#[test]
fn one_byte_commands_to_a_memory_card_get_6700_except_04_which_gets_its_atr() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    MemoryCard::manufacture(memory.clone(), MEMCARD_ID).unwrap();
    let bridge = start_memcard(memory, None);
    let mut vpcd = bridge.accept();
    vpcd.send(&[ctrl::POWER_ON]);
    vpcd.send(&[ctrl::GET_ATR]);
    assert_eq!(vpcd.recv(), memcard::ATR.to_vec());
    // A byte that is no control message: the card's own answer, wrong length.
    assert_eq!(vpcd.transmit(&[0x80]), vec![0x67, 0x00]);
    // `04` is vpcd's ATR request and a client's APDU alike: the ATR, whose last two bytes
    // are no status word (docs/memory-card.md § 3).
    let answer = vpcd.transmit(&[ctrl::GET_ATR]);
    assert_eq!(answer, memcard::ATR.to_vec());
    assert_eq!(sw(&answer), 0x0073);
    bridge.stop();
}
