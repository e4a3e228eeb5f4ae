//! The whole valuecard system in one process: a center, a dispenser, payment terminals and
//! cards, wired through in-process readers. The demo, the conservation tests and the
//! benchmarks all build on this, so they exercise exactly the production flows.

#![forbid(unsafe_code)]

pub mod attacks;
pub mod insider_attacks;
pub mod memcard_scenarios;
pub mod scenarios;
pub mod simulate;
pub mod transfer_attacks;
pub mod transfer_scenarios;
mod transfers;

pub use transfers::Settlement;

use std::path::{Path, PathBuf};

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use valuecard_card::eeprom::Eeprom;
use valuecard_card::Card;
use valuecard_center::Center;
use valuecard_core::cert::Role;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, InstallationRequest};
use valuecard_core::messages::purse::PurseStatus;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_reader::CardReader;
use valuecard_sam::{Sam, SamError, SoftwareSam};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::PaymentTerminal;
use valuecard_terminal::store::{MemoryStore, SqliteStore, TerminalStore};
use valuecard_terminal::TerminalError;

/// A terminal as the world holds it.
pub type Terminal = PaymentTerminal<SoftwareSam, Box<dyn TerminalStore>, ChaCha20Rng>;

/// The random source of every simulated party: a CSPRNG seeded from the operating system,
/// or from a fixed seed when a run must be reproducible (documentation transcripts).
pub type WorldRng = ChaCha20Rng;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    #[error("center: {0}")]
    Center(#[from] CenterError),
    #[error("SAM: {0}")]
    Sam(#[from] SamError),
    #[error("terminal: {0}")]
    Terminal(#[from] TerminalError),
    #[error("card: {0}")]
    Card(#[from] valuecard_card::CardError),
    #[error("{0}")]
    Other(String),
}

/// Where the world keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Everything in a data directory (the demo): center SQLite, terminal SQLite.
    Directory(PathBuf),
    /// Everything in memory (benchmarks, property tests).
    Memory,
    /// The center on this database (PostgreSQL tests); terminals in memory.
    Database(std::sync::Arc<std::sync::Mutex<Option<valuecard_center::sql::Database>>>),
}

impl Storage {
    /// The center on `database`, terminals in memory.
    pub fn on(database: valuecard_center::sql::Database) -> Self {
        Storage::Database(std::sync::Arc::new(std::sync::Mutex::new(Some(database))))
    }
}

/// The simulated calendar: one date that every party of a world reads (the center, the
/// dispenser, the terminals and their SAMs), moved only by [`World::pass_days`].
#[derive(Debug, Clone)]
pub struct SimClock(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl SimClock {
    pub fn new(today: Date) -> Self {
        SimClock(std::sync::Arc::new(std::sync::atomic::AtomicU32::new(
            today.0,
        )))
    }

    /// Moves the calendar forward by `days` for every party reading it.
    pub fn pass_days(&self, days: u32) {
        let _ = self.0.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |day| Some(day.saturating_add(days)),
        );
    }
}

impl Clock for SimClock {
    fn today(&self) -> Date {
        Date(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// The system: one center, one dispenser, some payment terminals.
pub struct World {
    pub center: Center,
    pub dispenser: Dispenser<SoftwareSam, WorldRng>,
    pub terminals: Vec<Terminal>,
    /// The settlement terminal (seed 000), installed at its first use.
    settlement: Option<Settlement>,
    clock: SimClock,
    rng: WorldRng,
}

impl core::fmt::Debug for World {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("World")
            .field("terminals", &self.terminals.len())
            .finish_non_exhaustive()
    }
}

/// Manufactures a SAM with its own transport key and installs it (Figs. 4A and 8). The SAM
/// keeps its time-stamp chain on `clock`.
pub fn install_sam(
    center: &mut Center,
    role: Role,
    clock: Box<dyn Clock>,
    rng: &mut WorldRng,
) -> Result<SoftwareSam, WorldError> {
    let device_id = center.allocate_device_id()?;
    let mut sam =
        SoftwareSam::manufacture(device_id, center.transport_key_for_device(&device_id), rng)
            .with_clock(clock);
    let challenge = random_array(rng);
    let request = InstallationRequest {
        device_id,
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge,
    };
    let installation = center.install_device(&request, role)?;
    sam.install(&installation, &challenge, role, center.today())?;
    Ok(sam)
}

impl World {
    /// Sets up a center with `terminals` payment terminals and one dispenser.
    pub fn create(storage: Storage, terminals: usize, today: Date) -> Result<Self, WorldError> {
        Self::create_seeded(
            storage,
            terminals,
            today,
            ChaCha20Rng::from_rng(OsRng).map_err(|e| WorldError::Other(e.to_string()))?,
        )
    }

    /// Like [`World::create`], with every party's randomness drawn from `rng`: the same seed
    /// gives the same keys, IDs, challenges and signatures.
    pub fn create_seeded(
        storage: Storage,
        terminals: usize,
        today: Date,
        mut rng: WorldRng,
    ) -> Result<Self, WorldError> {
        let shared = SimClock::new(today);
        let clock = || -> Box<dyn Clock> { Box::new(shared.clone()) };
        let mut center = match &storage {
            Storage::Directory(dir) => Center::init(&dir.join("center"), None, clock(), &mut rng)?,
            Storage::Memory => Center::ephemeral(clock(), &mut rng)?,
            Storage::Database(slot) => {
                let database = slot
                    .lock()
                    .map_err(|_| WorldError::Other("database slot poisoned".into()))?
                    .take()
                    .ok_or_else(|| {
                        WorldError::Other("this database was already given to a world".into())
                    })?;
                Center::ephemeral_on(database, clock(), &mut rng)?
            }
        };
        let dispenser_sam = install_sam(&mut center, Role::Dispenser, clock(), &mut rng)?;
        let dispenser = Dispenser::new(dispenser_sam, clock(), fork(&mut rng))?;
        let mut installed = Vec::with_capacity(terminals);
        for index in 0..terminals {
            let sam = install_sam(&mut center, Role::PaymentTerminal, clock(), &mut rng)?;
            let store: Box<dyn TerminalStore> = match &storage {
                Storage::Directory(dir) => {
                    let terminal_dir = dir.join(format!("terminal-{}", index + 1));
                    std::fs::create_dir_all(&terminal_dir).map_err(|error| {
                        WorldError::Other(format!("{}: {error}", terminal_dir.display()))
                    })?;
                    Box::new(SqliteStore::open(&terminal_dir.join("purchases.sqlite"))?)
                }
                Storage::Memory | Storage::Database(_) => Box::new(MemoryStore::default()),
            };
            installed.push(PaymentTerminal::new(sam, store, clock(), fork(&mut rng))?);
        }
        Ok(World {
            center,
            dispenser,
            terminals: installed,
            settlement: None,
            clock: shared,
            rng,
        })
    }

    pub fn today(&self) -> Date {
        self.clock.today()
    }

    /// Moves the calendar of every party forward: the center, the dispenser, the terminals
    /// and their SAMs, whose stamp chains then advance on their own.
    pub fn pass_days(&mut self, days: u32) {
        self.clock.pass_days(days);
    }

    /// The world's calendar, for a party added later.
    pub fn clock(&self) -> Box<dyn Clock> {
        Box::new(self.clock.clone())
    }

    /// A card fresh from the factory on the given memory (Fig. 8: it holds its chip serial and
    /// its own Ktemp only).
    pub fn manufacture_card<E: Eeprom>(
        &mut self,
        eeprom: E,
    ) -> Result<Card<E, WorldRng>, WorldError> {
        let rng = fork(&mut self.rng);
        let (serial, transport_key) = self.center.manufacture_chip();
        Ok(Card::manufacture(eeprom, serial, transport_key, rng)?)
    }

    /// A random source for a new party, drawn from the world's.
    pub fn fork_rng(&mut self) -> WorldRng {
        fork(&mut self.rng)
    }

    /// Issues the card in `reader` and loads its initial value (Figs. 4B, 4C, 7).
    pub fn issue(
        &mut self,
        reader: &mut impl CardReader,
        initial: Amount,
    ) -> Result<CardId, WorldError> {
        let card_id = self.dispenser.issue_card(reader, &mut self.center)?;
        if initial > Amount::ZERO {
            self.dispenser.load(reader, &mut self.center, initial)?;
        }
        Ok(card_id)
    }

    pub fn load(&mut self, reader: &mut impl CardReader, amount: Amount) -> Result<(), WorldError> {
        self.dispenser.load(reader, &mut self.center, amount)?;
        Ok(())
    }

    /// Enables the credit function of the card in `reader` (Fig. 13's issuance data) until
    /// `expiry` (the center's default when `None`), and returns the setting number the
    /// holder receives from the center.
    pub fn enable_credit(
        &mut self,
        reader: &mut impl CardReader,
        expiry: Option<Date>,
    ) -> Result<valuecard_core::messages::credit::SettingNumber, WorldError> {
        let enabled = self
            .dispenser
            .enable_credit(reader, &mut self.center, expiry)?;
        self.center
            .take_setting_number(&enabled.card_id)
            .ok_or_else(|| WorldError::Other("the center handed out no setting number".into()))
    }

    /// Every terminal sends its signed service records to the center.
    pub fn upload_service_records(
        &mut self,
    ) -> Result<valuecard_core::messages::credit::ServiceReceipt, WorldError> {
        let mut total = valuecard_core::messages::credit::ServiceReceipt::default();
        for terminal in &mut self.terminals {
            let receipt = terminal.upload_service_records(&mut self.center)?;
            total.stored += receipt.stored;
            total.duplicates += receipt.duplicates;
            total.refused.extend(receipt.refused);
        }
        Ok(total)
    }

    /// Total committed purchases over every terminal, and what is still in doubt.
    pub fn spent(&self) -> Result<(u64, u64), WorldError> {
        let mut committed = 0;
        let mut in_doubt = 0;
        for terminal in &self.terminals {
            let totals = terminal.store().totals()?;
            committed += totals.committed_minor;
            in_doubt += totals.in_doubt_count;
        }
        Ok((committed, in_doubt))
    }

    /// Settles what the center and terminals hold in doubt for the card in `reader`: the
    /// terminals settle their purchases from the card's evidence and upload them (an upload
    /// shows which update consumed a load's state), then the dispenser settles the loads it
    /// holds from the card's signed last transaction.
    pub fn settle_card(
        &mut self,
        reader: &mut impl CardReader,
        card_id: CardId,
    ) -> Result<(), WorldError> {
        for terminal in &mut self.terminals {
            let card = terminal.select_for_settlement(reader)?;
            terminal.settle_in_doubt(reader, &card)?;
            terminal.upload_usage(&mut self.center)?;
        }
        for pending in self.center.pending_loads()? {
            // Only the dispenser that holds a load may settle it.
            if pending.card_id == card_id && pending.dispenser_id == self.dispenser.device_id() {
                self.dispenser.settle_pending_load(
                    reader,
                    &mut self.center,
                    pending.load_number,
                )?;
            }
        }
        Ok(())
    }

    /// The reconciliation over `balances` (each card's balance as the card reports it).
    pub fn reconcile(&mut self, balances: &[Amount]) -> Result<Reconciliation, WorldError> {
        let totals = self.center.load_totals()?;
        let (spent, purchases_in_doubt) = self.spent()?;
        let balances_total: u64 = balances.iter().map(|amount| amount.minor()).sum();
        // A transfer the destination received while the source still holds it reserved is
        // counted in both balances until it settles.
        let transfers_in_flight = self
            .transfer_reports()?
            .iter()
            .filter(|stored| {
                !stored.settled
                    && matches!(
                        stored.report.outcome(),
                        valuecard_core::messages::transfer::TransferOutcome::Received
                            | valuecard_core::messages::transfer::TransferOutcome::InDoubt
                    )
            })
            .count() as u64;
        let settled =
            totals.in_flight_count == 0 && purchases_in_doubt == 0 && transfers_in_flight == 0;
        // Seed 004: what the settlement system reported paying and charging online.
        let online = self.center.online_totals()?;
        Ok(Reconciliation {
            issued: totals.issued,
            loaded: totals.loaded,
            spent,
            spent_online: online.spent,
            charged_online: online.charged,
            balances_total,
            loads_in_flight: totals.in_flight_count,
            purchases_in_doubt,
            transfers_in_flight,
            conserved: settled
                && totals.issued + totals.loaded + online.charged
                    == spent + online.spent + balances_total,
        })
    }
}

fn fork(rng: &mut WorldRng) -> WorldRng {
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(rng, &mut seed);
    WorldRng::from_seed(seed)
}

/// issued + loaded + charged online - spent - spent online = sum of card balances, once
/// nothing is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    pub issued: u64,
    pub loaded: u64,
    /// At terminals.
    pub spent: u64,
    /// Paid to web stores through the settlement system (seed 004).
    pub spent_online: u64,
    /// Charged into cards online against credit authorizations (seed 004).
    pub charged_online: u64,
    pub balances_total: u64,
    pub loads_in_flight: u64,
    pub purchases_in_doubt: u64,
    /// Card-to-card transfers not yet settled on both cards (seed 000).
    pub transfers_in_flight: u64,
    pub conserved: bool,
}

/// Reads a card's purse through a reader, as the holder would (SELECT, READ PURSE).
pub fn read_purse(reader: &mut impl CardReader) -> Result<PurseStatus, WorldError> {
    use valuecard_core::messages::purse::ins;
    use valuecard_terminal::card_commands::{proprietary, select};
    let response = reader.exchange(&select()).map_err(TerminalError::from)?;
    if !matches!(response.sw.0, 0x9000 | 0x6283) {
        return Err(WorldError::Other(format!(
            "SELECT answered {}",
            response.sw
        )));
    }
    let response = reader
        .exchange(&proprietary(ins::READ_PURSE, Vec::new()))
        .map_err(TerminalError::from)?;
    if !response.sw.is_success() {
        return Err(WorldError::Other(format!(
            "READ PURSE answered {}",
            response.sw
        )));
    }
    PurseStatus::decode(&response.data).map_err(|error| WorldError::Other(error.to_string()))
}

/// Asks the card in `reader` for its signed last transaction over `challenge` (SELECT, GET
/// LAST TRANSACTION), as a dispenser gathering settlement evidence does. The signature is
/// not checked here: the center checks it.
pub fn last_transaction(
    reader: &mut impl CardReader,
    challenge: valuecard_core::messages::purse::Challenge,
) -> Result<valuecard_core::messages::purse::LastTransaction, WorldError> {
    use valuecard_core::messages::purse::{ins, GetLastTransaction, LastTransaction};
    use valuecard_terminal::card_commands::{proprietary, select};
    reader.exchange(&select()).map_err(TerminalError::from)?;
    let response = reader
        .exchange(&proprietary(
            ins::GET_LAST_TRANSACTION,
            GetLastTransaction { challenge }.encode(),
        ))
        .map_err(TerminalError::from)?;
    if !response.sw.is_success() {
        return Err(WorldError::Other(format!(
            "GET LAST TRANSACTION answered {}",
            response.sw
        )));
    }
    LastTransaction::decode(&response.data).map_err(|error| WorldError::Other(error.to_string()))
}

/// A reader that loses the card's answer to one instruction, as a card pulled at that moment
/// or a broken link would: with `delivered`, the card received and processed the command
/// first (it may have committed); without, the command never reached it.
#[derive(Debug)]
pub struct LosingAnswer<'a, R: CardReader> {
    pub inner: &'a mut R,
    pub ins: u8,
    pub delivered: bool,
}

impl<R: CardReader> CardReader for LosingAnswer<'_, R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, valuecard_reader::ReaderError> {
        if apdu.get(1) != Some(&self.ins) {
            return self.inner.transmit_raw(apdu);
        }
        if self.delivered {
            self.inner.transmit_raw(apdu)?;
        }
        Err(valuecard_reader::ReaderError::CardRemoved)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// The directory layout of a demo data directory.
pub fn card_path(dir: &Path, index: usize) -> PathBuf {
    dir.join("cards").join(format!("card-{index}.img"))
}

/// A terminal device ID, for display.
pub fn terminal_ids(world: &World) -> Vec<DeviceId> {
    world
        .terminals
        .iter()
        .map(|terminal| terminal.device_id())
        .collect()
}
