//! A sequence of arbitrary APDUs against a RAM-backed personalized purse. The card must never
//! panic, must answer every APDU with a status word, and must never hold more value than it
//! started with: no byte sequence can forge a load.
//!
//! The purse holds transfer keys (seed 000), so every transfer instruction is reachable.
//!
//! Input: the first byte chooses what opens the sequence: bit 0 a genuine INITIALIZE
//! PURCHASE from a certified terminal (so DEBIT parsing and checks run inside a live
//! session), bit 1 a genuine TRANSFER OUT (so TRANSFER COMPLETE meets a pending transfer),
//! bit 2 a genuine INITIALIZE TRANSFER IN from a settlement terminal (so TRANSFER IN runs
//! inside a live session; it comes last, the session lives one command); the rest is APDUs,
//! each preceded by a one-byte length.
#![no_main]

#[path = "common/card_session.rs"]
mod card_session;

use card_session::send_each;
use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::{testing, Card};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::{ins, InitializePurchase, PURSE_AID};
use valuecard_core::messages::transfer::{ins as transfer_ins, InitializeTransferIn, TransferOut};
use valuecard_core::money::Amount;

const INITIAL_MINOR: u64 = 10_000;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let state = testing::personalized_card(
        1,
        Amount::new(INITIAL_MINOR).unwrap(),
        Some(&testing::key_set(1, 5, 1)),
    );
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut card = Card::with_state(MemoryEeprom::new(EEPROM_SIZE), state, rng).unwrap();
    let select = Command::new(0x00, ins::SELECT, 0x04, 0x00).with_data(PURSE_AID.to_vec()).with_le(256);
    card.transmit(&select.encode()).unwrap();
    if mode & 1 == 1 {
        let (_, certificate) = testing::terminal();
        let request = InitializePurchase {
            terminal_certificate: certificate,
            challenge_terminal: [mode; 16],
            amount_max: Amount::new(500).unwrap(),
            date: testing::today(),
        };
        let command = Command::new(0x80, ins::INITIALIZE_PURCHASE, 0, 0).with_data(request.encode()).with_le(65_536);
        let response = Response::parse(&card.transmit(&command.encode()).unwrap()).unwrap();
        assert!(response.sw.is_success(), "genuine INITIALIZE PURCHASE refused: {}", response.sw);
    }
    if mode & 2 == 2 {
        let request = TransferOut {
            challenge_terminal: [mode; 16],
            destination: testing::card_id(2),
            destination_counter: 0,
            challenge_destination: [0x44; 16],
            amount: Amount::new(700).unwrap(),
            date: testing::today(),
        };
        let command = Command::new(0x80, transfer_ins::TRANSFER_OUT, 0, 0).with_data(request.encode()).with_le(65_536);
        let response = Response::parse(&card.transmit(&command.encode()).unwrap()).unwrap();
        assert!(response.sw.is_success(), "genuine TRANSFER OUT refused: {}", response.sw);
    }
    if mode & 4 == 4 {
        let (_, certificate) = testing::settlement_terminal();
        let request = InitializeTransferIn {
            terminal_certificate: certificate,
            challenge_terminal: [mode; 16],
            source: CardId(*b"CARD0002"),
            amount: Amount::new(300).unwrap(),
            date: testing::today(),
        };
        let command = Command::new(0x80, transfer_ins::INITIALIZE_TRANSFER_IN, 0, 0).with_data(request.encode()).with_le(65_536);
        let response = Response::parse(&card.transmit(&command.encode()).unwrap()).unwrap();
        assert!(response.sw.is_success(), "genuine INITIALIZE TRANSFER IN refused: {}", response.sw);
    }
    send_each(&mut card, rest, |balance| {
        assert!(balance <= INITIAL_MINOR, "value was created");
    });
});
