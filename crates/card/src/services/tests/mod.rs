//! The services application driven with real APDUs, the administrative SAM's and the
//! providers' SAMs' sides played in the tests with the test devices of `testing` and
//! `ServiceChannel::for_host`: formatting areas (`format.rs`); every forged or replayed
//! administrative command (`admin_refusals.rs`); normal use on main keys and the channel's
//! refusals (`usage.rs`); a move's upload on the old chip (`moving.rs`) and its download on
//! the new one (`import.rs`); and a power cut at every write (`power.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_refusals;
mod format;
mod import;
mod moving;
mod power;
mod usage;

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::crypto::{random_array, AesKey};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::{
    ins as purse_ins, Challenge, DebitCommand, InitializePurchase, PurchaseCommit, PurchaseOffer,
    CLA_ISO, PURSE_AID,
};
use valuecard_core::messages::services::{
    area_key, ins, AreaContent, AreaFormat, ChannelBinding, ChannelError, FormatArea, KeyChange,
    KeyState, MoveId, OpenService, OpenServiceResponse, ServiceAuthenticate, ServiceChannel,
    ServiceCode, ServiceKind, ServicesFci, Ticket, CLA_SERVICES, SERVICES_AID,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;

use crate::eeprom::{FaultInjectingEeprom, MemoryEeprom};
use crate::image::EEPROM_SIZE;
use crate::state::{PersistentState, Purse, ServiceArea};
use crate::{testing, Card, CardError};

type TestCard = Card<FaultInjectingEeprom<MemoryEeprom>, ChaCha20Rng>;

/// One provider's service as the test chips carry it.
#[derive(Debug, Clone, Copy)]
struct Service {
    code: ServiceCode,
    kind: ServiceKind,
    /// The test provider whose SAMs issue the area's keys.
    provider: u8,
}

/// The purse, its provider the center's SAMs (test provider 1).
const PURSE: Service = Service {
    code: ServiceCode(0x0001),
    kind: ServiceKind::Purse,
    provider: 1,
};
/// A transit operator's tickets (test provider 2).
const TRANSIT: Service = Service {
    code: ServiceCode(0x0102),
    kind: ServiceKind::Tickets,
    provider: 2,
};
/// A retailer's loyalty points (test provider 3).
const SHOP: Service = Service {
    code: ServiceCode(0x0203),
    kind: ServiceKind::Points,
    provider: 3,
};

const MOVE: MoveId = [0x4D; 16];
const OTHER_MOVE: MoveId = [0x4E; 16];

impl Service {
    fn format(self) -> AreaFormat {
        testing::area_format(self.code, self.kind, self.provider)
    }

    /// The area key of test card `card` in `state`, as the provider's SAM derives it.
    fn key(self, card: u8, state: KeyState) -> AesKey {
        area_key(
            &testing::area_master(self.provider, state),
            state,
            &testing::card_id(card),
            self.code,
        )
    }
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn services_command(instruction: u8, data: Vec<u8>) -> Command {
    Command::new(CLA_SERVICES, instruction, 0, 0)
        .with_data(data)
        .with_le(65_536)
}

fn carnet(ticket_id: u32, rides: u16) -> Ticket {
    Ticket {
        ticket_id,
        product: 0x0A0B,
        valid_from: testing::today(),
        valid_until: testing::today().add_days(90),
        rides_left: Some(rides),
    }
}

/// A host challenge nobody else drew.
fn fresh_challenge() -> Challenge {
    random_array(&mut OsRng)
}

/// Test card `number` and the memory it lives in, so that it can be powered up again from
/// whatever a power cut left there.
struct Chip {
    number: u8,
    card: TestCard,
    memory: MemoryEeprom,
    power_ups: u64,
}

impl Chip {
    /// Test card `number`, personalized with `balance`, the services application selected.
    fn new(number: u8, balance: u64) -> Self {
        Self::with_state(
            number,
            testing::personalized_card(number, amount(balance), None),
        )
    }

    /// Test card `number` holding `state`, the services application selected.
    fn with_state(number: u8, state: PersistentState) -> Self {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let card = Card::with_state(
            FaultInjectingEeprom::new(memory.clone()),
            state,
            ChaCha20Rng::seed_from_u64(u64::from(number)),
        )
        .unwrap();
        let mut chip = Chip {
            number,
            card,
            memory,
            power_ups: 0,
        };
        chip.fci();
        chip
    }

    /// Powers the card up again from its memory (volatile state lost), the services
    /// application selected.
    fn power_up(&mut self) {
        self.power_ups += 1;
        self.card = Card::open(
            FaultInjectingEeprom::new(self.memory.clone()),
            ChaCha20Rng::seed_from_u64(u64::from(self.number) * 1_000 + self.power_ups),
        )
        .unwrap();
        self.fci();
    }

    fn id(&self) -> CardId {
        testing::card_id(self.number)
    }

    fn send(&mut self, command: Command) -> Response {
        self.card.process(&command.encode()).unwrap()
    }

    fn select(&mut self, aid: &[u8]) -> Response {
        self.send(
            Command::new(CLA_ISO, purse_ins::SELECT, 0x04, 0x00)
                .with_data(aid.to_vec())
                .with_le(256),
        )
    }

    /// SELECT of the services application: its FCI.
    fn fci(&mut self) -> ServicesFci {
        let response = self.select(&SERVICES_AID);
        assert_eq!(response.sw, StatusWord::SUCCESS);
        ServicesFci::decode(&response.data).unwrap()
    }

    fn writes(&mut self) -> u64 {
        self.card.eeprom_mut().writes()
    }

    /// The purse as the card's memory holds it (checked to be the state the card runs on).
    fn stored(&self) -> Purse {
        let stored = Card::open(self.memory.clone(), OsRng).unwrap();
        assert_eq!(
            stored.state().encode(),
            self.card.state().encode(),
            "the card runs on a state it did not persist"
        );
        match stored.state() {
            PersistentState::Personalized(purse) => (**purse).clone(),
            other => panic!("not personalized: {other:?}"),
        }
    }

    fn stored_bytes(&self) -> Vec<u8> {
        let stored = Card::open(self.memory.clone(), OsRng).unwrap();
        stored.state().encode()
    }

    fn area(&self, service: Service) -> ServiceArea {
        self.stored()
            .services
            .area(service.code)
            .cloned()
            .unwrap_or_else(|| panic!("no area {}", service.code))
    }

    /// GET CHALLENGE.
    fn challenge(&mut self) -> Challenge {
        let response = self.send(Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(16));
        assert_eq!(response.sw, StatusWord::SUCCESS);
        response.data.try_into().unwrap()
    }

    fn send_format(&mut self, request: &FormatArea) -> Response {
        self.send(services_command(ins::FORMAT_AREA, request.encode()))
    }

    /// GET CHALLENGE, then FORMAT AREA of `service` with its provider's packages.
    fn format(&mut self, service: Service, initial_state: KeyState) -> Response {
        self.format_as(service.format(), service.provider, initial_state)
    }

    fn format_as(&mut self, format: AreaFormat, provider: u8, state: KeyState) -> Response {
        let challenge = self.challenge();
        let request =
            testing::format_area(self.number, &challenge, format, state, provider, &mut OsRng);
        self.send_format(&request)
    }

    /// GET CHALLENGE, then SWITCH KEYS.
    fn switch(&mut self, move_id: MoveId, changes: &[(Service, KeyState)]) -> Response {
        let challenge = self.challenge();
        let changes = changes
            .iter()
            .map(|(service, key_state)| KeyChange {
                service: service.code,
                key_state: *key_state,
            })
            .collect();
        let request = testing::switch_keys(self.number, &challenge, move_id, changes);
        self.send(services_command(ins::SWITCH_KEYS, request.encode()))
    }

    /// OPEN SERVICE with `host_challenge`: the card's answer.
    fn open_service(&mut self, service: Service, host_challenge: Challenge) -> OpenServiceResponse {
        let response = self.send(services_command(
            ins::OPEN_SERVICE,
            OpenService {
                service: service.code,
                host_challenge,
            }
            .encode(),
        ));
        assert_eq!(response.sw, StatusWord::SUCCESS);
        OpenServiceResponse::decode(&response.data).unwrap()
    }

    /// Mutual authentication by the provider's SAM that holds the `state` key: the host's
    /// channel, or why the host refused the card.
    fn open(&mut self, service: Service, state: KeyState) -> Result<ServiceChannel, ChannelError> {
        self.open_with(service, state, fresh_challenge())
    }

    fn open_with(
        &mut self,
        service: Service,
        state: KeyState,
        host_challenge: Challenge,
    ) -> Result<ServiceChannel, ChannelError> {
        let answer = self.open_service(service, host_challenge);
        let binding = ChannelBinding {
            card_id: self.id(),
            service: service.code,
            key_state: state,
            host_challenge,
            card_challenge: answer.card_challenge,
        };
        let (channel, host_cryptogram) = ServiceChannel::for_host(
            &service.key(self.number, state),
            binding,
            &answer.card_cryptogram,
        )?;
        let response = self.send(services_command(
            ins::EXTERNAL_AUTHENTICATE,
            ServiceAuthenticate { host_cryptogram }.encode(),
        ));
        assert_eq!(response.sw, StatusWord::SUCCESS);
        Ok(channel)
    }

    /// One secured command: `plaintext` sealed for `instruction`, the card's answer opened.
    fn secured(
        &mut self,
        channel: &mut ServiceChannel,
        instruction: u8,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StatusWord> {
        let sealed = channel.seal(instruction, plaintext).unwrap();
        let response = self.send(services_command(instruction, sealed));
        if response.sw != StatusWord::SUCCESS {
            return Err(response.sw);
        }
        Ok(channel.open(instruction, &response.data).unwrap())
    }

    /// READ AREA in `channel`: the area's content.
    fn read(&mut self, channel: &mut ServiceChannel) -> Result<AreaContent, StatusWord> {
        let answer = self.secured(channel, ins::READ_AREA, &[])?;
        let readout = valuecard_core::messages::services::AreaReadout::decode(&answer).unwrap();
        assert_eq!(readout.card_id, self.id());
        assert_eq!(readout.service, channel.binding().service);
        Ok(readout.content)
    }

    /// A purchase of `minor` at the test terminal (Fig. 6), the purse selected for it and
    /// the services application again after it: the DEBIT's status, or the first refusal.
    fn purchase(&mut self, minor: u64) -> StatusWord {
        let selected = self.select(&PURSE_AID).sw;
        let sw = self.purchase_selected(minor, selected);
        self.fci();
        sw
    }

    fn purchase_selected(&mut self, minor: u64, selected: StatusWord) -> StatusWord {
        if selected != StatusWord::SUCCESS {
            return selected;
        }
        let (terminal_key, certificate) = testing::terminal();
        let challenge_terminal = [0x11; 16];
        let offer = self.send(
            Command::new(0x80, purse_ins::INITIALIZE_PURCHASE, 0, 0)
                .with_data(
                    InitializePurchase {
                        terminal_certificate: certificate,
                        challenge_terminal,
                        amount_max: amount(minor),
                        date: testing::today(),
                    }
                    .encode(),
                )
                .with_le(65_536),
        );
        if offer.sw != StatusWord::SUCCESS {
            return offer.sw;
        }
        let offer = PurchaseOffer::decode(&offer.data).unwrap();
        let stamp = testing::terminal_stamp(3);
        let commit = PurchaseCommit {
            card_id: self.id(),
            terminal_id: DeviceId(*b"TERMINAL"),
            challenge_terminal,
            challenge_card: offer.challenge_card,
            counter: offer.counter,
            amount: amount(minor),
            balance_after: offer.balance.checked_sub(amount(minor)).unwrap(),
            terminal_sequence: 7,
            date: testing::today(),
            stamp,
        };
        let debit = DebitCommand {
            amount: commit.amount,
            balance_after: commit.balance_after,
            terminal_sequence: 7,
            stamp,
            signature: terminal_key.sign(&commit.signed_message()),
        };
        self.send(
            Command::new(0x80, purse_ins::DEBIT, 0, 0)
                .with_data(debit.encode())
                .with_le(256),
        )
        .sw
    }
}

/// A date within every test ticket's validity.
fn ride_day() -> Date {
    testing::today().add_days(1)
}
