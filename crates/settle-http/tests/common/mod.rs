//! A center with one issued card, and the online settlement system started for it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod restart;
pub mod steps;

use std::sync::Arc;

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_center::sql::Executor;
use valuecard_core::messages::online::SettlementId;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::InProcessReader;
use valuecard_settle_http::authorizer::TestAuthorizer;
use valuecard_settle_http::embedded::{
    certify_software_security_server, EmbeddedOptions, OnlineSystem,
};
use valuecard_settle_http::settlement::reporter::{report_pending, InProcessCenter};
use valuecard_settle_http::settlement::ServiceKeys;
use valuecard_settle_http::DatabasePool;
use valuecard_sim::{Storage, World, WorldRng};

pub type Reader = InProcessReader<MemoryEeprom, WorldRng>;

pub fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

pub fn today() -> Date {
    Date::from_ymd(2026, 11, 30).unwrap()
}

pub struct Rig {
    pub world: World,
    pub reader: Reader,
    pub keys: ServiceKeys,
    pub authorizer: Arc<TestAuthorizer>,
    /// Further cards issued by the same center (`Rig::issue_another`).
    pub others: Vec<Reader>,
}

/// A center, a card issued with `balance`, and a security server it certified.
pub fn rig(balance: u64, seed: u64) -> Rig {
    let mut rng = WorldRng::seed_from_u64(seed);
    let mut world = World::create_seeded(
        Storage::Memory,
        1,
        today(),
        WorldRng::seed_from_u64(seed + 1),
    )
    .unwrap();
    let card = world
        .manufacture_card(MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE))
        .unwrap();
    let mut reader = InProcessReader::with_card("holder", card);
    world.issue(&mut reader, amount(balance)).unwrap();
    let keys: ServiceKeys =
        Arc::new(certify_software_security_server(&mut world.center, &mut rng).unwrap());
    Rig {
        world,
        reader,
        keys,
        authorizer: Arc::new(
            TestAuthorizer::new()
                .declining("4000000000000002", "the card issuer declined the charge")
                .with_limit("5555555555554444", amount(3_000)),
        ),
        others: Vec::new(),
    }
}

impl Rig {
    pub fn start(&self, options: &EmbeddedOptions) -> OnlineSystem {
        OnlineSystem::start(
            Arc::clone(&self.keys),
            self.world.center.anchor(),
            self.authorizer.clone(),
            None,
            options,
        )
        .unwrap()
    }

    /// Reports the settlement system's completed updates to the center; the center's books
    /// must then reconcile with the card's balance.
    pub fn report_and_reconcile(&mut self, system: &OnlineSystem) -> (u64, u64) {
        self.report_and_reconcile_pool(&system.settlement_pool)
    }

    /// `report_and_reconcile` with the settlement database's pool: the center's books must
    /// hold the sum of every card's balance.
    pub fn report_and_reconcile_pool(&mut self, pool: &DatabasePool) -> (u64, u64) {
        let summary = report_pending(
            pool,
            &mut InProcessCenter(&mut self.world.center),
            today().0,
        )
        .unwrap();
        assert!(summary.refused.is_empty(), "{summary:?}");
        assert!(summary.clones_detected.is_empty(), "{summary:?}");
        let mut balances = valuecard_sim::read_purse(&mut self.reader)
            .unwrap()
            .balance
            .minor();
        for reader in &mut self.others {
            balances += valuecard_sim::read_purse(reader).unwrap().balance.minor();
        }
        let books = self.world.center.reconciliation().unwrap();
        assert_eq!(
            books.status(),
            valuecard_center::reconcile::ReconciliationStatus::Reconciled,
            "{books:?}"
        );
        assert_eq!(books.remaining, balances);
        (books.online.spent, books.online.charged)
    }

    /// How many online payments and charges the center holds.
    pub fn online_counts(&mut self) -> (u64, u64) {
        let totals = self.world.center.online_totals().unwrap();
        (totals.payments, totals.charges)
    }

    /// Issues another card with `balance`, in a reader of its own (`others`); gives its
    /// index there.
    pub fn issue_another(&mut self, balance: u64) -> usize {
        let card = self
            .world
            .manufacture_card(MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE))
            .unwrap();
        let mut reader = InProcessReader::with_card("another holder", card);
        self.world.issue(&mut reader, amount(balance)).unwrap();
        self.others.push(reader);
        self.others.len() - 1
    }

    pub fn balance(&mut self) -> Amount {
        valuecard_sim::read_purse(&mut self.reader).unwrap().balance
    }
}

pub fn visa() -> valuecard_settle_http::wire::CreditCardBody {
    valuecard_settle_http::wire::CreditCardBody {
        number: "4111 1111 1111 1111".into(),
        expiry: "12/29".into(),
        holder_name: "A Holder".into(),
    }
}

/// The stored step of update `id` in the settlement service's database.
pub fn step_of(pool: &DatabasePool, id: &SettlementId) -> String {
    pool.run_blocking(|db| {
        db.query_one(
            "SELECT step FROM settle_updates WHERE settlement_id = $1",
            &[id[..].into()],
        )?
        .text(0)
    })
    .unwrap()
}

/// Every update the settlement service holds, as (kind, step).
pub fn update_steps(pool: &DatabasePool) -> Vec<(String, String)> {
    pool.run_blocking(|db| {
        db.query("SELECT kind, step FROM settle_updates", &[])?
            .iter()
            .map(|row| Ok((row.text(0)?, row.text(1)?)))
            .collect()
    })
    .unwrap()
}
