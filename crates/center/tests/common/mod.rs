//! Shared set-up for the transfer tests: a world (center, dispenser, one payment terminal)
//! with two issued and loaded cards, settlement terminals whose signing keys the test holds,
//! and transfer reports built by hand from the core types, the way a settlement terminal
//! builds them from the cards' answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod hand;
pub mod online;
#[path = "../scratch/mod.rs"]
pub mod scratch;

use rand_core::{CryptoRngCore, SeedableRng};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::InstallationRequest;
use valuecard_core::messages::purse::{Challenge, TransactionKind, UsageRecord};
use valuecard_core::messages::transfer::{
    ProofStatus, ProofSubject, TransferBinding, TransferKey, TransferProof, TransferReport,
    ValueEvidence, ValueMessage,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::InProcessReader;
use valuecard_sim::{read_purse, Storage, World, WorldRng};

pub type Reader = InProcessReader<MemoryEeprom, WorldRng>;

pub fn today() -> Date {
    Date::from_ymd(2026, 6, 1).unwrap()
}

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

/// A device installed at the center whose signing key the test holds (a settlement
/// terminal's SAM signs transfer records with it).
pub struct Device {
    pub id: DeviceId,
    pub key: SigningKeyPair,
    sequence: u32,
}

impl Device {
    pub fn install(center: &mut Center, role: Role, rng: &mut WorldRng) -> Self {
        Self::install_with(center, role, rng)
    }

    pub fn install_with(center: &mut Center, role: Role, rng: &mut impl CryptoRngCore) -> Self {
        let id = center.allocate_device_id().unwrap();
        let key = SigningKeyPair::generate(rng);
        let request = InstallationRequest {
            device_id: id,
            signing_key: key.public_key(),
            sealing_key: SealingKeyPair::generate(rng).public_key(),
            challenge: random_array(rng),
        };
        center.install_device(&request, role).unwrap();
        Device {
            id,
            key,
            sequence: 0,
        }
    }

    pub fn next_sequence(&mut self) -> u32 {
        self.sequence += 1;
        self.sequence
    }

    /// A record of `kind` for `card`, written and signed by this device.
    pub fn record(&mut self, card: &CardId, fields: RecordFields) -> UsageRecord {
        let mut record = UsageRecord {
            kind: fields.kind,
            counter: fields.counter,
            challenge_writer: fields.challenge_writer,
            challenge_card: fields.challenge_card,
            amount: fields.amount,
            balance_after: fields.balance_after,
            writer: self.id,
            writer_sequence: self.next_sequence(),
            date: today(),
            signature: valuecard_core::crypto::Signature([0; 64]),
            stamp: None,
        };
        record.signature = self.key.sign(&record.signed_message(card));
        record
    }
}

pub struct RecordFields {
    pub kind: TransactionKind,
    pub counter: u32,
    pub challenge_writer: Challenge,
    pub challenge_card: Challenge,
    pub amount: Amount,
    pub balance_after: Amount,
}

/// A card's state as a settlement terminal reads it: counter, balance, last record.
#[derive(Debug, Clone)]
pub struct CardState {
    pub id: CardId,
    pub counter: u32,
    pub balance: Amount,
    pub last: Option<UsageRecord>,
}

impl CardState {
    pub fn read(reader: &mut Reader) -> Self {
        let status = read_purse(reader).unwrap();
        CardState {
            id: status.card_id,
            counter: status.counter,
            balance: status.balance,
            last: status.last_usage,
        }
    }
}

pub struct Scene {
    pub world: World,
    pub rng: WorldRng,
    pub a: Reader,
    pub b: Reader,
}

impl Scene {
    /// Cards A (1000 minor units) and B (500), issued and loaded by the world's dispenser.
    pub fn new(seed: u64) -> Self {
        Self::on(Storage::Memory, seed)
    }

    /// The same, with the center on `storage`.
    pub fn on(storage: Storage, seed: u64) -> Self {
        let rng = WorldRng::seed_from_u64(seed);
        let mut world =
            World::create_seeded(storage, 1, today(), WorldRng::seed_from_u64(seed)).unwrap();
        let mut a = blank(&mut world, "a");
        let mut b = blank(&mut world, "b");
        world.issue(&mut a, amount(1000)).unwrap();
        world.issue(&mut b, amount(500)).unwrap();
        Scene { world, rng, a, b }
    }

    /// A device of `role` whose key the test holds.
    pub fn install(&mut self, role: Role) -> Device {
        Device::install(&mut self.world.center, role, &mut self.rng)
    }

    /// A copy of card A's memory in a reader of its own: a clone that spends A's states.
    pub fn copy_of_a(&mut self) -> Reader {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        memory.restore(&self.a.card().unwrap().store().eeprom().snapshot());
        let rng = self.world.fork_rng();
        InProcessReader::with_card("copy", valuecard_card::Card::open(memory, rng).unwrap())
    }

    pub fn center(&mut self) -> &mut Center {
        &mut self.world.center
    }

    pub fn key(&mut self) -> TransferKey {
        self.world.center.transfer_key_set().unwrap().transfer
    }

    /// A whole transfer from `source` to `destination`, reported by `terminal`: value
    /// message, proof of receipt, and both records with the records before them.
    pub fn completed(
        &mut self,
        terminal: &mut Device,
        source: &CardState,
        destination: &CardState,
        value: Amount,
        key: &TransferKey,
    ) -> TransferReport {
        let mut report = self.received(terminal, source, destination, value, key);
        let challenge_terminal: Challenge = random_array(&mut self.rng);
        report.source_record = Some(terminal.record(
            &source.id,
            RecordFields {
                kind: TransactionKind::TransferOut,
                counter: source.counter + 1,
                challenge_writer: challenge_terminal,
                challenge_card: report.challenge_source,
                amount: value,
                balance_after: source.balance.checked_sub(value).unwrap(),
            },
        ));
        report.source_previous = source.last.clone();
        report
    }

    /// The destination's half only: the source still holds the amount reserved.
    pub fn received(
        &mut self,
        terminal: &mut Device,
        source: &CardState,
        destination: &CardState,
        value: Amount,
        key: &TransferKey,
    ) -> TransferReport {
        received_report(terminal, &mut self.rng, source, destination, value, key)
    }
}

/// The destination's half of a transfer as the terminal that ran TRANSFER OUT and
/// TRANSFER IN holds it: value message, proof of receipt, the record it signed for the
/// destination and the record the destination showed before.
pub fn received_report(
    terminal: &mut Device,
    rng: &mut impl CryptoRngCore,
    source: &CardState,
    destination: &CardState,
    value: Amount,
    key: &TransferKey,
) -> TransferReport {
    let challenge_source: Challenge = random_array(rng);
    let challenge_destination: Challenge = random_array(rng);
    let challenge_terminal: Challenge = random_array(rng);
    let binding = TransferBinding {
        key_id: key.id,
        source: source.id,
        source_counter: source.counter,
        challenge_source,
        destination: destination.id,
        destination_counter: destination.counter,
        challenge_destination,
        challenge_terminal,
        date: today(),
    };
    let message = ValueMessage::seal(key, &binding, value);
    let proof = TransferProof::make(
        ProofStatus::Received,
        key,
        destination.counter + 1,
        &ProofSubject {
            source: source.id,
            challenge_source,
            destination: destination.id,
            amount: value,
        },
    );
    let destination_record = terminal.record(
        &destination.id,
        RecordFields {
            kind: TransactionKind::TransferIn,
            counter: destination.counter + 1,
            challenge_writer: challenge_terminal,
            challenge_card: challenge_destination,
            amount: value,
            balance_after: destination.balance.checked_add(value).unwrap(),
        },
    );
    TransferReport {
        sequence: terminal.next_sequence(),
        source: source.id,
        destination: destination.id,
        challenge_source,
        amount: value,
        destination_counter: destination.counter,
        value: Some(ValueEvidence {
            binding,
            value: message,
        }),
        proof: Some(proof),
        destination_record: Some(destination_record),
        destination_previous: destination.last.clone(),
        source_record: None,
        source_previous: None,
        release: None,
    }
}

/// A card fresh from the factory, in a reader.
pub fn blank(world: &mut World, name: &str) -> Reader {
    let card = world
        .manufacture_card(MemoryEeprom::new(EEPROM_SIZE))
        .unwrap();
    InProcessReader::with_card(name, card)
}

/// The state after a report's half: what the next report sees on the card.
pub fn after_destination(state: &CardState, report: &TransferReport) -> CardState {
    let record = report.destination_record.clone().unwrap();
    CardState {
        id: state.id,
        counter: record.counter,
        balance: record.balance_after,
        last: Some(record),
    }
}

pub fn after_source(state: &CardState, report: &TransferReport) -> CardState {
    let record = report.source_record.clone().unwrap();
    CardState {
        id: state.id,
        counter: record.counter,
        balance: record.balance_after,
        last: Some(record),
    }
}
