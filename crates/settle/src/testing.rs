//! For tests of the security server against a real emulated card (feature `testing`): a
//! holder's card with the online application and the client's part, passing APDUs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::state::PersistentState;
use valuecard_card::{testing, Card};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::online::{
    ins, InitializeUpdateResponse, OnlineFci, OnlineItem, SettlementId, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;

use crate::security::{SecurityKeys, SecurityServer, SessionRecord, Step, UpdateRequest};

/// The store the test payments go to.
pub const STORE: DeviceId = DeviceId(*b"STORE001");

/// Test card 1 of the card crate's test scheme, in memory, and the client's randomness.
pub struct TestHolder {
    pub card: Card<MemoryEeprom, ChaCha20Rng>,
    pub rng: ChaCha20Rng,
}

impl core::fmt::Debug for TestHolder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TestHolder")
    }
}

impl TestHolder {
    /// Test card 1 with `balance` (minor units), given KC by `server`, the online
    /// application selected.
    pub fn new<K: SecurityKeys>(server: &SecurityServer<K>, balance: u64) -> Self {
        let card = Card::with_state(
            MemoryEeprom::new(EEPROM_SIZE),
            testing::personalized(Amount::new(balance).unwrap()),
            ChaCha20Rng::seed_from_u64(1),
        )
        .unwrap();
        let mut holder = TestHolder {
            card,
            rng: ChaCha20Rng::seed_from_u64(2),
        };
        holder.install(server);
        holder
    }

    /// INSTALL KEY with KC of the server's current version.
    pub fn install<K: SecurityKeys>(&mut self, server: &SecurityServer<K>) {
        let installation = server
            .install_key(
                &testing::card_certificate(1),
                &testing::anchor(),
                testing::today(),
                &mut self.rng,
            )
            .unwrap();
        self.select();
        self.ok(ins::INSTALL_KEY, installation.encode());
    }

    pub fn select(&mut self) -> OnlineFci {
        let response = self.send(
            Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(ONLINE_AID.to_vec())
                .with_le(256),
        );
        assert_eq!(response.sw, StatusWord::SUCCESS);
        OnlineFci::decode(&response.data).unwrap()
    }

    pub fn send(&mut self, command: Command) -> Response {
        self.card.process(&command.encode()).unwrap()
    }

    /// An online command with `data`, whatever the card answers.
    pub fn exchange(&mut self, instruction: u8, data: Vec<u8>) -> Response {
        self.send(
            Command::new(CLA_ONLINE, instruction, 0, 0)
                .with_data(data)
                .with_le(256),
        )
    }

    /// An online command the card must accept; its answer's data.
    pub fn ok(&mut self, instruction: u8, data: Vec<u8>) -> Vec<u8> {
        let response = self.exchange(instruction, data);
        assert_eq!(response.sw, StatusWord::SUCCESS, "{instruction:02X}");
        response.data
    }

    pub fn balance(&self) -> Amount {
        match self.card.state() {
            PersistentState::Personalized(purse) => purse.balance,
            other => panic!("{other:?}"),
        }
    }

    /// ST10-ST12: a session for `settlement_id`; gives the server's state and sealed BI.
    pub fn open<K: SecurityKeys>(
        &mut self,
        server: &SecurityServer<K>,
        settlement_id: SettlementId,
    ) -> (SessionRecord, Vec<u8>) {
        let fci = self.select();
        let (step, initialize) = server.challenge(settlement_id, &mut self.rng);
        let Step::Challenged { host_challenge, .. } = step else {
            panic!("{step:?}");
        };
        let answer =
            InitializeUpdateResponse::decode(&self.ok(ins::INITIALIZE_UPDATE, initialize.encode()))
                .unwrap();
        let (step, external, brc) = server
            .authenticate(settlement_id, &host_challenge, fci.card_id, &answer)
            .unwrap();
        self.ok(ins::EXTERNAL_AUTHENTICATE, external.encode());
        let bi = self.ok(ins::READ_BALANCE, brc);
        let Step::Authenticated { session, .. } = step else {
            panic!("{step:?}");
        };
        (session, bi)
    }

    /// A whole payment of `minor` to [`STORE`]: the session, the SPC, the card's PCN
    /// checked; gives what the center is told.
    pub fn pay<K: SecurityKeys>(
        &mut self,
        server: &SecurityServer<K>,
        settlement_id: SettlementId,
        minor: u64,
        sequence: u32,
    ) -> OnlineItem {
        let (session, bi) = self.open(server, settlement_id);
        let request = UpdateRequest {
            kind: TransactionKind::OnlinePayment,
            amount: Amount::new(minor).unwrap(),
            party: STORE,
            date: testing::today(),
        };
        let (offered, sealed) = server
            .offer(settlement_id, &session, &bi, &request, sequence)
            .unwrap();
        let pcn = self.ok(ins::SETTLE, sealed);
        match server.complete(&offered, &pcn).unwrap() {
            Step::Completed { item, .. } => item,
            other => panic!("{other:?}"),
        }
    }
}
