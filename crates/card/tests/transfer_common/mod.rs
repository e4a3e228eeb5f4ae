//! What the transfer tests share: test cards on a fault-injecting memory that can be powered
//! up again after a cut, and a settlement terminal that drives the four command pairs of a
//! transfer and its recovery with real APDUs (docs/protocols.md, "Card-to-card transfer").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use valuecard_card::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::state::{PersistentState, Purse};
use valuecard_card::{testing, Card, CardError};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::{ins as purse_ins, TransactionKind, UsageRecord, PURSE_AID};
use valuecard_core::messages::transfer::{
    ins, CompletionRecord, InitializeTransferIn, RecordSignature, TransferComplete, TransferIn,
    TransferInOffer, TransferInfo, TransferKeySet, TransferOut, TransferOutOffer, TransferProof,
    TransferStatusQuery,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;

mod keys;
mod pair;

// Each test file uses a part of these.
#[allow(unused_imports)]
pub use keys::*;
#[allow(unused_imports)]
pub use pair::*;

pub type TestCard = Card<FaultInjectingEeprom<MemoryEeprom>, ChaCha20Rng>;

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

/// One test card: the card and the memory it lives in, so that it can be powered up again
/// from whatever a power cut left there.
pub struct Device {
    pub number: u8,
    pub card: TestCard,
    pub memory: MemoryEeprom,
    seed: u64,
    /// Where every exchange is recorded, when a test writes a transcript.
    pub transcript: Option<Transcript>,
}

/// Exchanges of several cards in the order they happened: (card number, command, response).
pub type Transcript = std::rc::Rc<std::cell::RefCell<Vec<(u8, Vec<u8>, Vec<u8>)>>>;

impl Device {
    /// Test card `number`, personalized with `balance` and the transfer keys `keys`.
    pub fn new(number: u8, balance: u64, keys: Option<&TransferKeySet>) -> Self {
        Self::with_state(
            number,
            testing::personalized_card(number, amount(balance), keys),
        )
    }

    pub fn with_state(number: u8, state: PersistentState) -> Self {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let seed = u64::from(number) * 1_000;
        let card = Card::with_state(
            FaultInjectingEeprom::new(memory.clone()),
            state,
            ChaCha20Rng::seed_from_u64(seed),
        )
        .unwrap();
        let mut device = Device {
            number,
            card,
            memory,
            seed,
            transcript: None,
        };
        device.select();
        device
    }

    /// Test card `number` powered up from `memory` that already holds it.
    pub fn open(number: u8, memory: MemoryEeprom) -> Self {
        let seed = u64::from(number) * 1_000;
        let card = Card::open(
            FaultInjectingEeprom::new(memory.clone()),
            ChaCha20Rng::seed_from_u64(seed),
        )
        .unwrap();
        let mut device = Device {
            number,
            card,
            memory,
            seed,
            transcript: None,
        };
        device.select();
        device
    }

    pub fn id(&self) -> CardId {
        testing::card_id(self.number)
    }

    pub fn purse(&self) -> &Purse {
        match self.card.state() {
            PersistentState::Personalized(purse) => purse,
            other => panic!("card {} is not personalized: {other:?}", self.number),
        }
    }

    pub fn balance(&self) -> u64 {
        self.purse().balance.minor()
    }

    pub fn counter(&self) -> u32 {
        self.purse().counter
    }

    /// The value reserved by a transfer sent and not yet settled.
    pub fn reserved(&self) -> u64 {
        self.purse()
            .transfer
            .sent
            .as_ref()
            .map_or(0, |sent| sent.pending.amount.minor())
    }

    pub fn select(&mut self) {
        let response = self.send_command(
            Command::new(0x00, purse_ins::SELECT, 0x04, 0x00)
                .with_data(PURSE_AID.to_vec())
                .with_le(256),
        );
        // A blocked card answers 6283 but is selected all the same.
        assert!(
            response.sw == StatusWord::SUCCESS || response.sw == StatusWord::FILE_DEACTIVATED,
            "{}",
            response.sw
        );
    }

    /// Sends a command; a power cut is an error the caller sees.
    pub fn try_send(&mut self, command: Command) -> Result<Response, CardError> {
        let apdu = command.encode();
        let bytes = self.card.transmit(&apdu)?;
        if let Some(transcript) = &self.transcript {
            transcript
                .borrow_mut()
                .push((self.number, apdu, bytes.clone()));
        }
        Ok(Response::parse(&bytes).unwrap())
    }

    pub fn send_command(&mut self, command: Command) -> Response {
        self.try_send(command).unwrap()
    }

    /// A proprietary transfer command with P1.
    pub fn transfer(&mut self, instruction: u8, p1: u8, data: Vec<u8>) -> Response {
        self.send_command(transfer_command(instruction, p1, data))
    }

    pub fn info(&mut self) -> TransferInfo {
        let response = self.transfer(ins::GET_TRANSFER_INFO, 0, Vec::new());
        assert_eq!(response.sw, StatusWord::SUCCESS);
        TransferInfo::decode(&response.data).unwrap()
    }

    /// Cuts power at write `write` from now on (1 = the next), tearing it `numerator /
    /// denominator`.
    pub fn arm_cut(&mut self, write: u64, numerator: usize, denominator: usize) {
        self.card
            .eeprom_mut()
            .cut_power_at(write, numerator, denominator);
    }

    pub fn writes(&mut self) -> u64 {
        self.card.eeprom_mut().writes()
    }

    /// Pulls the card and puts it back: volatile state is lost, memory is whatever it holds.
    pub fn power_cycle(&mut self) {
        self.seed += 1;
        self.card = Card::open(
            FaultInjectingEeprom::new(self.memory.clone()),
            ChaCha20Rng::seed_from_u64(self.seed),
        )
        .unwrap();
        self.select();
    }
}

pub fn transfer_command(instruction: u8, p1: u8, data: Vec<u8>) -> Command {
    Command::new(0x80, instruction, p1, 0)
        .with_data(data)
        .with_le(65_536)
}

/// A settlement terminal: its certificate and key, its own sequence, and its challenges.
pub struct Terminal {
    pub key: SigningKeyPair,
    pub certificate: Certificate,
    pub id: DeviceId,
    pub sequence: u32,
    pub date: Date,
    rng: ChaCha20Rng,
}

/// One transfer as far as the terminal took it.
#[derive(Clone, Debug)]
pub struct Flow {
    pub source: CardId,
    pub destination: CardId,
    pub amount: Amount,
    pub challenge_terminal: [u8; 16],
    pub offer_in: TransferInOffer,
    pub offer_out: Option<TransferOutOffer>,
    pub transfer_in: Option<TransferIn>,
    pub proof: Option<TransferProof>,
}

impl Flow {
    pub fn status_query(&self) -> TransferStatusQuery {
        TransferStatusQuery {
            source: self.source,
            challenge_source: self.offer_out.as_ref().unwrap().challenge_source,
            destination_counter: self.offer_in.counter,
        }
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new(testing::settlement_terminal())
    }
}

impl Terminal {
    pub fn new((key, certificate): (SigningKeyPair, Certificate)) -> Self {
        let id = certificate.subject();
        Terminal {
            key,
            certificate,
            id,
            sequence: 0,
            date: testing::today(),
            rng: ChaCha20Rng::seed_from_u64(77),
        }
    }

    pub fn challenge(&mut self) -> [u8; 16] {
        let mut challenge = [0u8; 16];
        self.rng.fill_bytes(&mut challenge);
        challenge
    }

    pub fn initialize_in_request(
        &mut self,
        source: CardId,
        amount: Amount,
    ) -> InitializeTransferIn {
        InitializeTransferIn {
            terminal_certificate: self.certificate.clone(),
            challenge_terminal: self.challenge(),
            source,
            amount,
            date: self.date,
        }
    }

    /// INITIALIZE TRANSFER IN on the destination.
    pub fn initialize_in(
        &mut self,
        destination: &mut Device,
        source: CardId,
        amount: Amount,
    ) -> Result<Flow, StatusWord> {
        let request = self.initialize_in_request(source, amount);
        let response = destination.transfer(ins::INITIALIZE_TRANSFER_IN, 0, request.encode());
        if response.sw != StatusWord::SUCCESS {
            return Err(response.sw);
        }
        Ok(Flow {
            source,
            destination: destination.id(),
            amount,
            challenge_terminal: request.challenge_terminal,
            offer_in: TransferInOffer::decode(&response.data).unwrap(),
            offer_out: None,
            transfer_in: None,
            proof: None,
        })
    }

    pub fn transfer_out_request(&self, flow: &Flow) -> TransferOut {
        TransferOut {
            challenge_terminal: flow.challenge_terminal,
            destination: flow.destination,
            destination_counter: flow.offer_in.counter,
            challenge_destination: flow.offer_in.challenge_destination,
            amount: flow.amount,
            date: self.date,
        }
    }

    /// TRANSFER OUT on the source.
    pub fn transfer_out(&mut self, source: &mut Device, flow: &mut Flow) -> Result<(), StatusWord> {
        let request = self.transfer_out_request(flow);
        let response = source.transfer(ins::TRANSFER_OUT, 0, request.encode());
        if response.sw != StatusWord::SUCCESS {
            return Err(response.sw);
        }
        flow.offer_out = Some(TransferOutOffer::decode(&response.data).unwrap());
        Ok(())
    }

    /// The terminal's signature over the destination's `TransferIn` record.
    pub fn sign_in_record(&mut self, flow: &Flow) -> RecordSignature {
        self.sequence += 1;
        let record = UsageRecord {
            kind: TransactionKind::TransferIn,
            counter: flow.offer_in.counter + 1,
            challenge_writer: flow.challenge_terminal,
            challenge_card: flow.offer_in.challenge_destination,
            amount: flow.amount,
            balance_after: flow.offer_in.balance.checked_add(flow.amount).unwrap(),
            writer: self.id,
            writer_sequence: self.sequence,
            date: self.date,
            signature: Signature([0; 64]),
            stamp: None,
        };
        RecordSignature {
            writer_sequence: self.sequence,
            signature: self.key.sign(&record.signed_message(&flow.destination)),
            stamp: None,
        }
    }

    pub fn transfer_in_request(&mut self, flow: &Flow) -> TransferIn {
        let offer = flow.offer_out.as_ref().unwrap();
        TransferIn {
            source_counter: offer.counter,
            challenge_source: offer.challenge_source,
            value: offer.value.clone(),
            record: self.sign_in_record(flow),
        }
    }

    /// TRANSFER IN on the destination.
    pub fn transfer_in(
        &mut self,
        destination: &mut Device,
        flow: &mut Flow,
    ) -> Result<(), StatusWord> {
        let request = self.transfer_in_request(flow);
        flow.transfer_in = Some(request.clone());
        let response = destination.transfer(ins::TRANSFER_IN, 0, request.encode());
        if response.sw != StatusWord::SUCCESS {
            return Err(response.sw);
        }
        flow.proof = Some(TransferProof::decode(&response.data).unwrap());
        Ok(())
    }

    /// The completion record for the source: the terminal signs the source's `TransferOut`
    /// record at the state the source shows now.
    pub fn completion(&mut self, source: &mut Device, flow: &Flow) -> CompletionRecord {
        let info = source.info();
        let challenge_terminal = self.challenge();
        self.sequence += 1;
        let record = UsageRecord {
            kind: TransactionKind::TransferOut,
            counter: info.counter + 1,
            challenge_writer: challenge_terminal,
            challenge_card: flow.offer_out.as_ref().unwrap().challenge_source,
            amount: flow.amount,
            balance_after: info.balance.checked_sub(flow.amount).unwrap(),
            writer: self.id,
            writer_sequence: self.sequence,
            date: self.date,
            signature: Signature([0; 64]),
            stamp: None,
        };
        CompletionRecord {
            terminal_certificate: self.certificate.clone(),
            challenge_terminal,
            date: self.date,
            signature: RecordSignature {
                writer_sequence: self.sequence,
                signature: self.key.sign(&record.signed_message(&flow.source)),
                stamp: None,
            },
        }
    }

    /// TRANSFER COMPLETE on the source with `proof` (a completion record for a receipt).
    pub fn complete_with(
        &mut self,
        source: &mut Device,
        flow: &Flow,
        proof: TransferProof,
    ) -> Result<(), StatusWord> {
        let record = match proof.status {
            valuecard_core::messages::transfer::ProofStatus::Received => {
                Some(self.completion(source, flow))
            }
            valuecard_core::messages::transfer::ProofStatus::NotReceived => None,
        };
        let response = source.transfer(
            ins::TRANSFER_COMPLETE,
            0,
            TransferComplete { proof, record }.encode(),
        );
        if response.sw != StatusWord::SUCCESS {
            return Err(response.sw);
        }
        Ok(())
    }

    pub fn complete(&mut self, source: &mut Device, flow: &Flow) -> Result<(), StatusWord> {
        let proof = flow.proof.clone().unwrap();
        self.complete_with(source, flow, proof)
    }

    /// TRANSFER STATUS on the destination for `query`.
    pub fn status(
        &mut self,
        destination: &mut Device,
        query: &TransferStatusQuery,
    ) -> Result<TransferProof, StatusWord> {
        let response = destination.transfer(ins::TRANSFER_STATUS, 0, query.encode());
        if response.sw != StatusWord::SUCCESS {
            return Err(response.sw);
        }
        Ok(TransferProof::decode(&response.data).unwrap())
    }

    /// The whole transfer: the four command pairs.
    pub fn run(
        &mut self,
        source: &mut Device,
        destination: &mut Device,
        amount: Amount,
    ) -> Result<Flow, StatusWord> {
        let mut flow = self.initialize_in(destination, source.id(), amount)?;
        self.transfer_out(source, &mut flow)?;
        self.transfer_in(destination, &mut flow)?;
        self.complete(source, &flow)?;
        Ok(flow)
    }

    /// The recovery rule: if the source holds a pending transfer, ask its destination and
    /// settle it with the answer. Returns whether anything was settled.
    pub fn recover(&mut self, source: &mut Device, destination: &mut Device) -> bool {
        let Some(pending) = source.info().pending else {
            return false;
        };
        assert_eq!(pending.destination, destination.id());
        let query = TransferStatusQuery {
            source: source.id(),
            challenge_source: pending.challenge_source,
            destination_counter: pending.destination_counter,
        };
        let proof = self.status(destination, &query).unwrap();
        let flow = Flow {
            source: source.id(),
            destination: destination.id(),
            amount: pending.amount,
            challenge_terminal: [0; 16],
            offer_in: TransferInOffer {
                counter: pending.destination_counter,
                balance: Amount::ZERO,
                challenge_destination: [0; 16],
                transfer_key_id: pending.key_id,
                last_usage: None,
                last_writer_certificate: None,
            },
            offer_out: Some(TransferOutOffer {
                counter: 0,
                balance: Amount::ZERO,
                challenge_source: pending.challenge_source,
                value: valuecard_core::messages::transfer::ValueMessage {
                    key_id: pending.key_id,
                    ciphertext: [0; 24],
                },
                last_usage: None,
                last_writer_certificate: None,
            }),
            transfer_in: None,
            proof: Some(proof),
        };
        self.complete(source, &flow).unwrap();
        true
    }
}
