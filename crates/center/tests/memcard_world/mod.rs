//! Shared set-up for the memory-card tests: a center, charge and payment machines whose
//! signing keys the test holds (the machines' SAMs sign with them), and memory cards kept
//! as the states machines read from them. Records are built by hand from the core types, the
//! way a machine builds them: read the card, write the value area (the card lowers its
//! counter), sign (card ID, counter, value area).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::{CryptoRngCore, SeedableRng};
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::InstallationRequest;
use valuecard_core::messages::memcard::{
    state_signing_input, PlainValue, SignedState, ValueArea, WriteKind, WriteRecord, WriteUpload,
    COUNTER_START,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Date, FixedClock};

pub type Rng = rand_chacha::ChaCha20Rng;

pub fn today() -> Date {
    Date::from_ymd(2026, 6, 1).unwrap()
}

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

pub fn center(seed: u64) -> (Center, Rng) {
    let mut rng = Rng::seed_from_u64(seed);
    let center = Center::ephemeral(Box::new(FixedClock(today())), &mut rng).unwrap();
    (center, rng)
}

/// A device installed at the center whose signing key the test holds.
pub struct Machine {
    pub id: DeviceId,
    pub key: SigningKeyPair,
    pub role: Role,
    sequence: u32,
    /// Seal values under its value key (claim 4) instead of writing them in the clear.
    pub sealing: bool,
}

impl Machine {
    pub fn install(center: &mut Center, role: Role, rng: &mut impl CryptoRngCore) -> Self {
        let id = center.allocate_device_id().unwrap();
        let key = SigningKeyPair::generate(rng);
        let request = InstallationRequest {
            device_id: id,
            signing_key: key.public_key(),
            sealing_key: SealingKeyPair::generate(rng).public_key(),
            challenge: random_array(rng),
        };
        center.install_device(&request, role).unwrap();
        Machine {
            id,
            key,
            role,
            sequence: 0,
            sealing: false,
        }
    }

    pub fn next_sequence(&mut self) -> u32 {
        self.sequence += 1;
        self.sequence
    }

    /// A state of `card` at `counter` holding `value`, written and signed by this machine.
    pub fn state(
        &self,
        center: &Center,
        card: CardId,
        counter: u32,
        value: Amount,
        rng: &mut impl CryptoRngCore,
    ) -> SignedState {
        let plain = PlainValue {
            date: today(),
            amount: value,
        };
        let value_area = if self.sealing {
            ValueArea::seal(
                &center.memcard_value_key(&self.id),
                random_array(rng),
                &card,
                counter,
                &self.id,
                &plain,
            )
        } else {
            ValueArea::Plain(plain)
        };
        sign(&self.key, self.id, card, counter, value_area)
    }

    /// Charges or pays on `card`: reads its state, writes the new value (the card lowers
    /// its counter), signs; the card now shows the written state. Returns the record.
    pub fn write(
        &mut self,
        center: &Center,
        card: &mut MemoryCard,
        balance_after: Amount,
        rng: &mut impl CryptoRngCore,
    ) -> WriteRecord {
        let kind = match self.role {
            Role::ChargeMachine => WriteKind::Charge,
            _ => WriteKind::Payment,
        };
        let counter = card.counter - 1;
        let written = self.state(center, card.id, counter, balance_after, rng);
        let record = WriteRecord {
            kind,
            sequence: self.next_sequence(),
            date: today(),
            balance_before: card.balance,
            balance_after,
            previous: card.state.clone(),
            written: written.clone(),
        };
        card.counter = counter;
        card.balance = balance_after;
        card.state = Some(written);
        record
    }

    pub fn upload(&self, records: Vec<WriteRecord>) -> WriteUpload {
        WriteUpload {
            machine: self.id,
            records,
        }
    }
}

/// Signs a state with `key` in the name of `writer`.
pub fn sign(
    key: &SigningKeyPair,
    writer: DeviceId,
    card: CardId,
    counter: u32,
    value_area: ValueArea,
) -> SignedState {
    let signature = key.sign(&state_signing_input(&card, counter, &value_area.encode()));
    SignedState {
        card_id: card,
        counter,
        value_area,
        writer,
        signature,
    }
}

/// A memory card as the machines see it: ID, counter, and the signed state on it.
#[derive(Debug, Clone)]
pub struct MemoryCard {
    pub id: CardId,
    pub counter: u32,
    pub balance: Amount,
    pub state: Option<SignedState>,
}

impl MemoryCard {
    pub fn blank(number: u8) -> Self {
        MemoryCard {
            id: CardId([0x3C, 0, 0, 0, 0, 0, 0, number]),
            counter: COUNTER_START,
            balance: Amount::ZERO,
            state: None,
        }
    }
}
