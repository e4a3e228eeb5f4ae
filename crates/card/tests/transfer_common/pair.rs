//! The two cards most transfer tests start from, and what must not move when a command is
//! refused.

use super::*;

pub fn keys() -> TransferKeySet {
    testing::key_set(1, 5, 1)
}

/// The two cards of most tests: A (card 1) sends, B (card 2) receives.
pub fn pair(balance_a: u64, balance_b: u64) -> (Device, Device) {
    (
        Device::new(1, balance_a, Some(&keys())),
        Device::new(2, balance_b, Some(&keys())),
    )
}

/// What must not move when a command is refused: balance, counter, reservation, receipts.
#[derive(Debug, PartialEq, Eq)]
pub struct Value {
    pub balance: u64,
    pub counter: u32,
    pub reserved: u64,
    pub receipts: usize,
}

pub fn value(device: &Device) -> Value {
    Value {
        balance: device.balance(),
        counter: device.counter(),
        reserved: device.reserved(),
        receipts: device.purse().transfer.received.len(),
    }
}

/// A and B after TRANSFER OUT: the value message exists, B has not applied it.
pub fn sent(terminal: &mut Terminal, a: &mut Device, b: &mut Device, minor: u64) -> Flow {
    let mut flow = terminal.initialize_in(b, a.id(), amount(minor)).unwrap();
    terminal.transfer_out(a, &mut flow).unwrap();
    flow
}
