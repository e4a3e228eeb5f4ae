//! A sequence of arbitrary APDUs against the common-key application (seed 004) of a
//! RAM-backed personalized card holding KC. The card must never panic, must answer every
//! APDU with a status word, and must never change its balance: without KC no byte sequence
//! makes a settlement or a charge the card accepts.
//!
//! Input: the first byte chooses how the sequence opens: bit 0 opens a genuine session
//! (INITIALIZE UPDATE and EXTERNAL AUTHENTICATE with the card's KC), so the secured
//! commands' checks run inside it; bit 1 selects the purse instead of the online
//! application at the start. The rest is APDUs, each preceded by a one-byte length.
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
use valuecard_core::messages::online::{ins, CLA_ONLINE, ONLINE_AID};
use valuecard_core::messages::purse::{ins as purse_ins, PURSE_AID};
use valuecard_core::money::Amount;

const INITIAL_MINOR: u64 = 10_000;

fn exchange<R: rand_core::CryptoRngCore>(card: &mut Card<MemoryEeprom, R>, command: Command) -> Response {
    Response::parse(&card.transmit(&command.encode()).unwrap()).unwrap()
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let state = testing::personalized(Amount::new(INITIAL_MINOR).unwrap());
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut card = Card::with_state(MemoryEeprom::new(EEPROM_SIZE), state, rng).unwrap();
    let select = |aid: &[u8]| {
        Command::new(0x00, purse_ins::SELECT, 0x04, 0x00).with_data(aid.to_vec()).with_le(256)
    };
    assert!(exchange(&mut card, select(&ONLINE_AID)).sw.is_success());
    let mut key_rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let installation = testing::online_key_installation(1, 1, &mut key_rng);
    let install = Command::new(CLA_ONLINE, ins::INSTALL_KEY, 0, 0).with_data(installation.encode());
    assert!(exchange(&mut card, install).sw.is_success(), "genuine INSTALL KEY refused");
    if mode & 1 == 1 {
        assert!(
            testing::online_session(&mut card, [mode; 16]).is_some(),
            "genuine mutual authentication refused"
        );
    }
    if mode & 2 == 2 {
        assert!(exchange(&mut card, select(&PURSE_AID)).sw.is_success());
    }
    send_each(&mut card, rest, |balance| {
        assert_eq!(balance, INITIAL_MINOR, "value changed without KC");
    });
});
