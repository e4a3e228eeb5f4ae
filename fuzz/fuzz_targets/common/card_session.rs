//! What every card-APDU target does after its opening: sends each APDU of the input (each
//! preceded by a one-byte length) to a RAM-backed card, checks that every answer ends with a
//! status word and that error answers carry no data, and reads the balance after each.

use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::state::PersistentState;
use valuecard_card::Card;
use valuecard_core::apdu::Response;

/// The card's balance in minor units (0 before personalization).
pub fn balance<R: rand_core::CryptoRngCore>(card: &Card<MemoryEeprom, R>) -> u64 {
    match card.state() {
        PersistentState::Personalized(purse) => purse.balance.minor(),
        _ => 0,
    }
}

/// Sends every APDU of `input` and gives `check` the balance after each.
pub fn send_each<R: rand_core::CryptoRngCore>(
    card: &mut Card<MemoryEeprom, R>,
    mut input: &[u8],
    mut check: impl FnMut(u64),
) {
    while let Some((&len, tail)) = input.split_first() {
        let len = (len as usize).min(tail.len());
        let (apdu, next) = tail.split_at(len);
        input = next;
        let bytes = card.transmit(apdu).expect("RAM memory never loses power");
        let response = Response::parse(&bytes).expect("every answer ends with a status word");
        if !response.sw.is_success() {
            assert!(response.data.is_empty() || response.sw.0 == 0x6283, "error answers carry no data");
        }
        check(balance(card));
    }
}
