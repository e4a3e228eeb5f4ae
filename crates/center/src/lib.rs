//! The management center (seed 003): the root of trust (Fig. 4A), card issuance through
//! dispensers (Fig. 4B), load authorization (Figs. 4C and 7), the key hierarchy (Fig. 8),
//! and the records that reconcile value: cards, devices, loads and the remaining value per
//! card.
//!
//! **Architecture invariant:** the center never sees a card's or a terminal's private key:
//! cards and SAMs generate their own key pairs and the center certifies public keys.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod auth;
pub mod credit;
pub mod db;
pub mod devices;
pub mod keys;
pub mod lists;
pub mod loads;
pub mod memcard;
pub mod moves;
pub mod online;
pub mod reconcile;
mod remaining;
pub mod settlement;
pub mod sql;
pub mod stamps;
pub mod transfer_keys;
pub mod transfers;
pub mod usage;

pub(crate) use remaining::advance_remaining_value;
pub use remaining::RemainingValue;

use std::path::{Path, PathBuf};

use rand_core::CryptoRngCore;
use valuecard_core::cert::{Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{aes_cmac, derivation, diversify_key, seal_to, PublicKey};
use valuecard_core::ids::{CardId, DeviceId};
pub use valuecard_core::messages::center::CenterError as LinkError;
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdAssignment, CardIdRequest, CardPersonalization, CenterLink,
    LoadApproval, LoadOutcome, LoadRequest, LoadSettlement, SettlementChallengeRequest,
};
use valuecard_core::messages::purse::{
    Challenge, GenerateKeyPairCommand, PersonalizeCommand, SEALED_KEYS_PLAINTEXT_LEN,
};
use valuecard_core::messages::transfer::TRANSFER_KEY_SET_LEN;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};

use crate::db::next_in_sequence;
use crate::keys::CenterKeys;
use crate::sql::{Database, Executor};

pub use valuecard_core::messages::center::CenterError;

/// How long certificates the center issues stay valid.
pub const CERTIFICATE_VALIDITY_DAYS: u32 = 5 * 365;
/// The center's own device ID prefix byte; cards and devices get sequential IDs below it.
const CARD_ID_PREFIX: u8 = 0xC0;
const DEVICE_ID_PREFIX: u8 = 0xD0;

/// Totals for reconciliation, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadTotals {
    /// Committed first loads (the value a card is issued with).
    pub issued: u64,
    /// Committed later loads (recharges).
    pub loaded: u64,
    /// Authorized loads whose outcome at the card is not known yet.
    pub in_flight: u64,
    pub in_flight_count: u64,
    pub cancelled: u64,
}

/// A pending load, as the center sees it, for a dispenser to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLoad {
    pub card_id: CardId,
    pub load_number: u32,
    pub card_counter: u32,
    pub amount: Amount,
    /// The dispenser that holds the load: the value in flight is its liability.
    pub dispenser_id: DeviceId,
}

/// The management center over its key file and database.
pub struct Center {
    /// Shared by every handle on the same center (`Center::another_handle`).
    keys: std::sync::Arc<CenterKeys>,
    db: Database,
    /// Shared by every handle, so that a clock set on one is the clock of all.
    clock: SharedClock,
    /// Randomness for first stamps and delivery nonces, seeded from the caller's source
    /// (the operating system, or a fixed seed in reproducible simulations).
    rng: rand_chacha::ChaCha20Rng,
    /// Setting numbers drawn in this process and not yet handed to their holders
    /// (`credit.rs`); never stored, shared by every handle of this process.
    setting_letters: SettingLetters,
}

type SettingLetters = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<CardId, valuecard_core::messages::credit::SettingNumber>,
    >,
>;

/// The center's clock, one for all the handles of a process.
type SharedClock = std::sync::Arc<std::sync::Mutex<Box<dyn Clock>>>;

fn shared_clock(clock: Box<dyn Clock>) -> SharedClock {
    std::sync::Arc::new(std::sync::Mutex::new(clock))
}

impl core::fmt::Debug for Center {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Center")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The files of a center in its data directory.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("center.keys")
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("center.sqlite")
}

/// A card's certified key from its stored status and key (see `Center::card_public_key`).
pub(crate) fn certified_card_key(
    card_id: &CardId,
    status: &str,
    key: Option<Vec<u8>>,
) -> Result<PublicKey, CenterError> {
    if status == "assigned" {
        return Err(CenterError::Mismatch(format!(
            "card {card_id} is not issued yet"
        )));
    }
    let key = key.ok_or(CenterError::UnknownCard(*card_id))?;
    PublicKey::from_bytes(&key)
        .map_err(|_| CenterError::Storage(format!("stored key of card {card_id} is invalid")))
}

impl Center {
    /// Creates a new center (Fig. 4A: the master key pair) in `dir`, on a SQLite database
    /// in `dir` or on `database` (PostgreSQL). Refuses to overwrite.
    pub fn init(
        dir: &Path,
        database: Option<Database>,
        clock: Box<dyn Clock>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CenterError> {
        Self::init_with_root(dir, database, clock, rng, None)
    }

    /// As [`Center::init`], with the root key in `root` (a key generated in a token) when
    /// given: the key file then records where it is instead of the key.
    pub fn init_with_root(
        dir: &Path,
        database: Option<Database>,
        clock: Box<dyn Clock>,
        rng: &mut impl CryptoRngCore,
        root: Option<std::sync::Arc<dyn crate::keys::RootSigner>>,
    ) -> Result<Self, CenterError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            CenterError::Setup(format!("cannot create {}: {error}", dir.display()))
        })?;
        if key_path(dir).exists() {
            return Err(CenterError::Setup(format!(
                "{} already holds a center",
                dir.display()
            )));
        }
        let mut center_id = [0u8; 8];
        center_id[0] = 0xCE;
        rng.fill_bytes(&mut center_id[1..]);
        let mut keys = CenterKeys::generate(DeviceId(center_id), rng);
        if let Some(root) = root {
            keys = keys.with_root_signer(root);
        }
        let mut db = match database {
            Some(db) => db,
            None => Database::open_sqlite(&db_path(dir))?,
        };
        // Before the key file exists: a refused database leaves no half-made center behind.
        crate::db::claim_for_new_center(&mut db, &keys.identity(), clock.today())?;
        keys.save(&key_path(dir))?;
        Ok(Center {
            keys: std::sync::Arc::new(keys),
            db,
            clock: shared_clock(clock),
            rng: seeded(rng),
            setting_letters: Default::default(),
        })
    }

    /// Opens the center in `dir`, on its SQLite database there or on `database`.
    pub fn open(
        dir: &Path,
        database: Option<Database>,
        clock: Box<dyn Clock>,
    ) -> Result<Self, CenterError> {
        let keys = CenterKeys::load(&key_path(dir))?;
        Self::open_keys(dir, keys, database, clock)
    }

    /// As [`Center::open`], opening a root key kept in a token with `open_root`.
    pub fn open_with(
        dir: &Path,
        database: Option<Database>,
        clock: Box<dyn Clock>,
        open_root: crate::keys::RootOpener<'_>,
    ) -> Result<Self, CenterError> {
        let keys = CenterKeys::load_with(&key_path(dir), open_root)?;
        Self::open_keys(dir, keys, database, clock)
    }

    fn open_keys(
        dir: &Path,
        keys: CenterKeys,
        database: Option<Database>,
        clock: Box<dyn Clock>,
    ) -> Result<Self, CenterError> {
        let mut db = match database {
            Some(db) => db,
            None => Database::open_sqlite(&db_path(dir))?,
        };
        crate::db::check_owner(&mut db, &keys.identity(), clock.today())?;
        Ok(Center {
            keys: std::sync::Arc::new(keys),
            db,
            clock: shared_clock(clock),
            rng: seeded(&mut rand_core::OsRng),
            setting_letters: Default::default(),
        })
    }

    /// Writes the center's key file into `dir` (owner-readable only; refuses to overwrite),
    /// so that a further process can open the same center on the same database with
    /// [`Center::open`]: a center made in memory has no key file otherwise.
    pub fn save_keys(&self, dir: &Path) -> Result<(), CenterError> {
        self.keys.save(&key_path(dir))
    }

    /// Which database the center runs on.
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn today(&self) -> Date {
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .today()
    }

    /// Sets the clock of this center and of every other handle on it.
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = clock;
    }

    /// A further handle on the same center: the same keys, clock and undelivered setting
    /// numbers, a connection of its own to the same database, and randomness of its own.
    /// Several handles work at once (a service's pool); what they must agree on, the
    /// database guarantees (see `sql.rs`). `None` for a database in memory, which no second
    /// connection can reach.
    pub fn another_handle(&mut self) -> Result<Option<Center>, CenterError> {
        let Some(db) = self.db.open_another()? else {
            return Ok(None);
        };
        Ok(Some(Center {
            keys: std::sync::Arc::clone(&self.keys),
            db,
            clock: std::sync::Arc::clone(&self.clock),
            rng: seeded(&mut self.rng),
            setting_letters: std::sync::Arc::clone(&self.setting_letters),
        }))
    }

    /// nA: the root every card and terminal trusts.
    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            center: self.keys.center_id,
            public_key: self.keys.root.public_key(),
        }
    }

    fn certificate(
        &self,
        subject: DeviceId,
        role: Role,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Result<Certificate, CenterError> {
        let today = self.today();
        CertificateBody {
            issuer: self.keys.center_id,
            subject,
            role,
            effective: today,
            expiry: today.add_days(CERTIFICATE_VALIDITY_DAYS),
            signing_key,
            sealing_key: Some(sealing_key),
        }
        .sign_with(|message| self.keys.root.sign(message))
    }

    /// Issues a certificate with explicit dates. Used to demonstrate (and test) that
    /// expired certificates are refused; production paths use [`Center::install_device`].
    pub fn issue_certificate_with_validity(
        &self,
        subject: DeviceId,
        role: Role,
        signing_key: PublicKey,
        sealing_key: Option<[u8; 32]>,
        effective: Date,
        expiry: Date,
    ) -> Result<Certificate, CenterError> {
        CertificateBody {
            issuer: self.keys.center_id,
            subject,
            role,
            effective,
            expiry,
            signing_key,
            sealing_key,
        }
        .sign_with(|message| self.keys.root.sign(message))
    }

    /// Allocates an ID for a new terminal or dispenser (before its SAM is manufactured).
    pub fn allocate_device_id(&mut self) -> Result<DeviceId, CenterError> {
        let number = self.db.transaction(|tx| next_in_sequence(tx, "device"))?;
        Ok(sequential_id(DEVICE_ID_PREFIX, number))
    }

    /// An installed device's role and certified signing key, in one read.
    pub(crate) fn installed_device(
        &mut self,
        device_id: DeviceId,
    ) -> Result<(Role, valuecard_core::crypto::PublicKey), CenterError> {
        let row = self
            .db
            .query_optional(
                "SELECT role, signing_key FROM devices WHERE device_id = $1 AND status = 'installed'",
                &[device_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownDevice(device_id))?;
        let role = u8::try_from(row.int(0)?)
            .ok()
            .and_then(Role::from_u8)
            .ok_or(CenterError::UnknownDevice(device_id))?;
        let key = valuecard_core::crypto::PublicKey::from_bytes(&row.bytes(1)?).map_err(|_| {
            CenterError::Storage(format!("stored key of device {device_id} is invalid"))
        })?;
        Ok((role, key))
    }

    pub(crate) fn device_role(&mut self, device_id: DeviceId) -> Result<Role, CenterError> {
        let row = self.db.query_optional(
            "SELECT role FROM devices WHERE device_id = $1 AND status = 'installed'",
            &[device_id.0[..].into()],
        )?;
        let role = match row {
            Some(row) => u8::try_from(row.int(0)?).ok().and_then(Role::from_u8),
            None => None,
        };
        role.ok_or(CenterError::UnknownDevice(device_id))
    }

    fn require_dispenser(&mut self, device_id: DeviceId) -> Result<(), CenterError> {
        match self.device_role(device_id)? {
            Role::Dispenser => Ok(()),
            _ => Err(CenterError::NotAuthorized(device_id)),
        }
    }

    fn card_key(&self, card_id: &CardId) -> valuecard_core::crypto::AesKey {
        diversify_key(
            &self.keys.master_key,
            derivation::CARD_KEY,
            card_id.as_bytes(),
        )
    }

    fn card_record(
        &mut self,
        card_id: &CardId,
    ) -> Result<(String, Option<Vec<u8>>, DeviceId), CenterError> {
        let row = self
            .db
            .query_optional(
                "SELECT status, signing_key, dispenser_id FROM cards WHERE card_id = $1",
                &[card_id.0[..].into()],
            )?
            .ok_or(CenterError::UnknownCard(*card_id))?;
        let dispenser = DeviceId::from_slice(&row.bytes(2)?)
            .map_err(|e| CenterError::Storage(e.to_string()))?;
        Ok((row.text(0)?, row.optional_bytes(1)?, dispenser))
    }

    /// A card's certified public key, for verifying what the card signed.
    pub fn card_public_key(&mut self, card_id: &CardId) -> Result<PublicKey, CenterError> {
        let (status, key, _) = self.card_record(card_id)?;
        certified_card_key(card_id, &status, key)
    }

    /// Marks a card blocked at the center: no further loads are authorized.
    pub fn block_card(&mut self, card_id: &CardId) -> Result<(), CenterError> {
        let changed = self.db.execute(
            "UPDATE cards SET status = 'blocked' WHERE card_id = $1",
            &[card_id.0[..].into()],
        )?;
        if changed == 0 {
            return Err(CenterError::UnknownCard(*card_id));
        }
        Ok(())
    }

    /// Number of issued cards.
    pub fn card_count(&mut self) -> Result<u64, CenterError> {
        Ok(self
            .db
            .query_one(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM cards WHERE status != 'assigned'",
                &[],
            )?
            .int(0)? as u64)
    }
}

fn seeded(rng: &mut impl CryptoRngCore) -> rand_chacha::ChaCha20Rng {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed)
}

fn sequential_id(prefix: u8, number: i64) -> DeviceId {
    let mut id = (number as u64).to_be_bytes();
    id[0] = prefix;
    DeviceId(id)
}

impl valuecard_core::messages::center::TerminalLink for Center {
    fn upload_usage(
        &mut self,
        upload: &valuecard_core::messages::center::UsageUpload,
    ) -> Result<valuecard_core::messages::center::UploadReceipt, CenterError> {
        self.ingest_usage(upload)
    }

    fn list_delta(
        &mut self,
        terminal_id: DeviceId,
        since: u64,
    ) -> Result<valuecard_core::messages::center::ListDelta, CenterError> {
        self.device_role(terminal_id)?;
        self.list_delta_since(since)
    }

    fn report_stamp(
        &mut self,
        terminal_id: DeviceId,
        stamp: &valuecard_core::messages::purse::TerminalStamp,
    ) -> Result<u32, CenterError> {
        self.record_stamp(terminal_id, stamp)
    }
}

impl CenterLink for Center {
    /// Fig. 4B, first half.
    fn assign_card_id(
        &mut self,
        request: &CardIdRequest,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        self.require_dispenser(request.dispenser_id)?;
        let today = self.today().0;
        let card_id = self.db.transaction(|tx| {
            let number = next_in_sequence(tx, "card")?;
            let card_id = CardId(sequential_id(CARD_ID_PREFIX, number).0);
            tx.execute(
                "INSERT INTO cards (card_id, dispenser_id, status, assigned_on) VALUES ($1, $2, 'assigned', $3)",
                &[card_id.0[..].into(), request.dispenser_id.0[..].into(), today.into()],
            )?;
            Ok(card_id)
        })?;
        let mac = aes_cmac(
            &self.chip_transport_key(&request.chip_serial)?,
            &GenerateKeyPairCommand::mac_input(card_challenge, &card_id),
        );
        Ok(CardIdAssignment { card_id, mac })
    }

    fn resume_card_id(
        &mut self,
        request: &CardIdRequest,
        card_id: &CardId,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        self.require_dispenser(request.dispenser_id)?;
        let (status, _, dispenser) = self.card_record(card_id)?;
        // "issued" too: the center certified the card, but the card may have lost power
        // before its PERSONALIZE committed.
        if !matches!(status.as_str(), "assigned" | "issued") {
            return Err(CenterError::Mismatch(format!("card {card_id} is {status}")));
        }
        if dispenser != request.dispenser_id {
            return Err(CenterError::NotAuthorized(request.dispenser_id));
        }
        let mac = aes_cmac(
            &self.chip_transport_key(&request.chip_serial)?,
            &GenerateKeyPairCommand::mac_input(card_challenge, card_id),
        );
        Ok(CardIdAssignment {
            card_id: *card_id,
            mac,
        })
    }

    /// Fig. 4B, second half, with Fig. 8's delivery of KU and KO.
    fn certify_card(
        &mut self,
        request: &CardCertificationRequest,
    ) -> Result<CardPersonalization, CenterError> {
        self.require_dispenser(request.dispenser_id)?;
        let (status, stored_key, dispenser) = self.card_record(&request.card_id)?;
        match (status.as_str(), stored_key) {
            ("assigned", _) => {}
            // A repeated request after a power loss at the card: the same key is certified
            // again; a different key would be a second card under one ID.
            ("issued", Some(key)) if key == request.signing_key.to_bytes() => {}
            _ => {
                return Err(CenterError::Mismatch(format!(
                    "card {} is already {status}",
                    request.card_id
                )))
            }
        }
        if dispenser != request.dispenser_id {
            return Err(CenterError::NotAuthorized(request.dispenser_id));
        }
        let certificate = self.certificate(
            DeviceId(request.card_id.0),
            Role::Card,
            request.signing_key,
            request.sealing_key,
        )?;
        let card_key = self.card_key(&request.card_id);
        // KU || KO || the transfer keys (seed 000): the card can take part in transfers
        // from its first day, before any load.
        let key_set = self.transfer_key_set()?;
        let mut plain = [0u8; SEALED_KEYS_PLAINTEXT_LEN + TRANSFER_KEY_SET_LEN];
        plain[..16].copy_from_slice(card_key.expose());
        plain[16..32].copy_from_slice(self.keys.common_key.expose());
        let mut set_bytes = key_set.to_bytes();
        plain[32..].copy_from_slice(&set_bytes);
        zeroize::Zeroize::zeroize(&mut set_bytes);
        // Sealed to the card's freshly generated X25519 key with an ephemeral key of the
        // center: a sniffer of the personalisation who holds the transport key still cannot
        // open KU and KO.
        let sealed = seal_to(
            &mut self.rng,
            &request.sealing_key,
            &PersonalizeCommand::sealed_keys_aad(&request.card_id),
            &plain,
        );
        zeroize::Zeroize::zeroize(&mut plain);
        let sealed_keys = sealed.map_err(|_| {
            CenterError::Mismatch("the card's sealing key is not a usable X25519 key".into())
        })?;
        let date = self.today();
        let mut command = PersonalizeCommand {
            certificate: certificate.clone(),
            anchor: self.anchor(),
            dispenser_id: request.dispenser_id,
            date,
            sealed_keys,
            mac: [0; 16],
        };
        command.mac = aes_cmac(
            &self.chip_transport_key(&request.chip_serial)?,
            &PersonalizeCommand::mac_input(&request.card_challenge, &command.encode_unmacced()),
        );
        self.db.execute(
            "UPDATE cards SET signing_key = $2, sealing_key = $3, certificate = $4, status = 'issued', issued_on = $5,
                 transfer_key_id = $6
             WHERE card_id = $1 AND status IN ('assigned', 'issued')",
            &[
                request.card_id.0[..].into(),
                request.signing_key.to_bytes()[..].into(),
                request.sealing_key[..].into(),
                certificate.encode().into(),
                date.0.into(),
                key_set.transfer.id.into(),
            ],
        )?;
        Ok(CardPersonalization {
            certificate,
            anchor: command.anchor,
            date,
            sealed_keys: command.sealed_keys,
            mac: command.mac,
        })
    }

    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError> {
        self.authorize_load_checked(request)
    }

    fn settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError> {
        self.issue_settlement_challenge(request)
    }

    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<LoadOutcome, CenterError> {
        self.settle_load_on_evidence(settlement)
    }
}

impl Center {
    /// A center whose keys and database live only in memory (or on `database`): for tests,
    /// simulations and benchmarks. The keys do not survive the process.
    pub fn ephemeral(
        clock: Box<dyn Clock>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CenterError> {
        Self::ephemeral_on(Database::open_sqlite_in_memory()?, clock, rng)
    }

    pub fn ephemeral_on(
        db: Database,
        clock: Box<dyn Clock>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CenterError> {
        let mut center_id = [0u8; 8];
        center_id[0] = 0xCE;
        rng.fill_bytes(&mut center_id[1..]);
        let keys = CenterKeys::generate(DeviceId(center_id), rng);
        Ok(Center {
            keys: std::sync::Arc::new(keys),
            db,
            clock: shared_clock(clock),
            rng: seeded(rng),
            setting_letters: Default::default(),
        })
    }
}
