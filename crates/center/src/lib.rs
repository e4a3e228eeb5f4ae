//! The management center (seed 003): the root of trust (Fig. 4A), card issuance through
//! dispensers (Fig. 4B), load authorization (Figs. 4C and 7), the key hierarchy (Fig. 8),
//! and the records that reconcile value: cards, devices, loads and the remaining value per
//! card.
//!
//! **Architecture invariant:** the center never sees a card's or a terminal's private key:
//! cards and SAMs generate their own key pairs and the center certifies public keys.

#![forbid(unsafe_code)]

pub mod auth;
pub mod credit;
pub mod db;
pub mod keys;
pub mod lists;
pub mod sql;
pub mod stamps;
pub mod usage;

use std::path::{Path, PathBuf};

use rand_core::CryptoRngCore;
use valuecard_core::cert::{Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{aes_cmac, delivery, derivation, diversify_key, PublicKey, Signature};
use valuecard_core::ids::{CardId, DeviceId};
pub use valuecard_core::messages::center::CenterError as LinkError;
use valuecard_core::messages::center::{
    CardCertificationRequest, CardIdAssignment, CardIdRequest, CardPersonalization, CenterLink,
    Installation, InstallationRequest, LoadApproval, LoadRequest, LoadSettlement,
};
use valuecard_core::messages::purse::{
    Challenge, GenerateKeyPairCommand, InitializeLoad, LoadAuthorization, LoadOffer,
    PersonalizeCommand,
};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date};
use valuecard_sam::{installation_keys_aad, installation_session_key};

use crate::db::next_in_sequence;
use crate::keys::CenterKeys;
use crate::sql::{Database, Executor, Value};

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

/// The center's remaining-value record for one card (Fig. 9: restoring a destroyed card).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemainingValue {
    pub card_id: CardId,
    pub balance: Amount,
    pub card_counter: u32,
    pub updated_on: Date,
}

/// A pending load, as the center sees it, for a dispenser to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLoad {
    pub card_id: CardId,
    pub load_number: u32,
    pub card_counter: u32,
    pub amount: Amount,
}

/// The management center over its key file and database.
pub struct Center {
    keys: CenterKeys,
    db: Database,
    clock: Box<dyn Clock>,
    /// Randomness for first stamps and delivery nonces, seeded from the caller's source
    /// (the operating system, or a fixed seed in reproducible simulations).
    rng: rand_chacha::ChaCha20Rng,
    /// Setting numbers drawn in this process and not yet handed to their holders
    /// (`credit.rs`); never stored.
    setting_letters:
        std::collections::HashMap<CardId, valuecard_core::messages::credit::SettingNumber>,
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

impl Center {
    /// Creates a new center (Fig. 4A: the master key pair) in `dir`, on a SQLite database
    /// in `dir` or on `database` (PostgreSQL). Refuses to overwrite.
    pub fn init(
        dir: &Path,
        database: Option<Database>,
        clock: Box<dyn Clock>,
        rng: &mut impl CryptoRngCore,
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
        let keys = CenterKeys::generate(DeviceId(center_id), rng);
        let mut db = match database {
            Some(db) => db,
            None => Database::open_sqlite(&db_path(dir))?,
        };
        // Before the key file exists: a refused database leaves no half-made center behind.
        crate::db::claim_for_new_center(&mut db, &keys.identity(), clock.today())?;
        keys.save(&key_path(dir))?;
        Ok(Center {
            keys,
            db,
            clock,
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
        let mut db = match database {
            Some(db) => db,
            None => Database::open_sqlite(&db_path(dir))?,
        };
        crate::db::check_owner(&mut db, &keys.identity(), clock.today())?;
        Ok(Center {
            keys,
            db,
            clock,
            rng: seeded(&mut rand_core::OsRng),
            setting_letters: Default::default(),
        })
    }

    /// Which database the center runs on.
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn today(&self) -> Date {
        self.clock.today()
    }

    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    /// nA: the root every card and terminal trusts.
    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            center: self.keys.center_id,
            public_key: self.keys.root.public_key(),
        }
    }

    /// The transport key Ktemp, for the factory that manufactures cards and SAMs (Fig. 8).
    /// The factory is part of the issuer's trusted set-up; nothing else receives it.
    pub fn transport_key_for_manufacture(&self) -> valuecard_core::crypto::AesKey {
        self.keys.transport_key.clone()
    }

    fn certificate(
        &self,
        subject: DeviceId,
        role: Role,
        signing_key: PublicKey,
        sealing_key: [u8; 32],
    ) -> Certificate {
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
        .sign(&self.keys.root)
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
    ) -> Certificate {
        CertificateBody {
            issuer: self.keys.center_id,
            subject,
            role,
            effective,
            expiry,
            signing_key,
            sealing_key,
        }
        .sign(&self.keys.root)
    }

    /// Allocates an ID for a new terminal or dispenser (before its SAM is manufactured).
    pub fn allocate_device_id(&mut self) -> Result<DeviceId, CenterError> {
        let number = self.db.transaction(|tx| next_in_sequence(tx, "device"))?;
        Ok(sequential_id(DEVICE_ID_PREFIX, number))
    }

    /// Fig. 4A with Fig. 8: certify a device's public key for `role`, and deliver KT
    /// (diversified from its ID under KA) and KO sealed under the transport key.
    pub fn install_device(
        &mut self,
        request: &InstallationRequest,
        role: Role,
    ) -> Result<Installation, CenterError> {
        if !matches!(
            role,
            Role::PaymentTerminal | Role::Dispenser | Role::SettlementTerminal
        ) {
            return Err(CenterError::NotAuthorized(request.device_id));
        }
        let certificate = self.certificate(
            request.device_id,
            role,
            request.signing_key,
            request.sealing_key,
        );
        let terminal_key = diversify_key(
            &self.keys.master_key,
            derivation::TERMINAL_KEY,
            request.device_id.as_bytes(),
        );
        // KT || KO || TS0: the first time stamp of Fig. 10 travels with the keys.
        let first_stamp: [u8; 32] = valuecard_core::crypto::random_array(&mut self.rng);
        let mut plain = [0u8; 64];
        plain[..16].copy_from_slice(terminal_key.expose());
        plain[16..32].copy_from_slice(self.keys.common_key.expose());
        plain[32..].copy_from_slice(&first_stamp);
        let session = installation_session_key(
            &self.keys.transport_key,
            &request.challenge,
            &request.device_id,
        );
        let sealed_keys = delivery::seal(
            &session,
            &installation_keys_aad(&request.device_id, &self.anchor()),
            &plain,
            &mut self.rng,
        );
        zeroize::Zeroize::zeroize(&mut plain);
        let changed = self.db.execute(
            "INSERT INTO devices (device_id, role, signing_key, sealing_key, certificate, status, installed_on)
             VALUES ($1, $2, $3, $4, $5, 'installed', $6)
             ON CONFLICT (device_id) DO NOTHING",
            &[
                request.device_id.0[..].into(),
                (role as u8).into(),
                request.signing_key.to_bytes()[..].into(),
                request.sealing_key[..].into(),
                certificate.encode().into(),
                self.today().0.into(),
            ],
        )?;
        if changed == 0 {
            return Err(CenterError::Mismatch(format!(
                "device {} is already installed",
                request.device_id
            )));
        }
        self.register_first_stamp(request.device_id, &first_stamp)?;
        Ok(Installation {
            certificate,
            anchor: self.anchor(),
            sealed_keys,
        })
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
        if status == "assigned" {
            return Err(CenterError::Mismatch(format!(
                "card {card_id} is not issued yet"
            )));
        }
        let key = key.ok_or(CenterError::UnknownCard(*card_id))?;
        PublicKey::from_bytes(&key)
            .map_err(|_| CenterError::Storage(format!("stored key of card {card_id} is invalid")))
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

    /// Totals of every load, by kind and outcome.
    pub fn load_totals(&mut self) -> Result<LoadTotals, CenterError> {
        let mut totals = LoadTotals::default();
        let rows = self.db.query(
            "SELECT kind, status, CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT), CAST(COUNT(*) AS BIGINT)
             FROM loads GROUP BY kind, status",
            &[],
        )?;
        for row in rows {
            let sum = row.int(2)? as u64;
            let count = row.int(3)? as u64;
            match (row.text(0)?.as_str(), row.text(1)?.as_str()) {
                ("initial", "committed") => totals.issued += sum,
                ("recharge", "committed") => totals.loaded += sum,
                (_, "pending") => {
                    totals.in_flight += sum;
                    totals.in_flight_count += count;
                }
                _ => totals.cancelled += sum,
            }
        }
        Ok(totals)
    }

    /// Loads authorized but not yet settled, oldest first.
    pub fn pending_loads(&mut self) -> Result<Vec<PendingLoad>, CenterError> {
        let rows = self.db.query(
            "SELECT card_id, load_number, card_counter, amount_minor FROM loads WHERE status = 'pending' ORDER BY load_number",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                Ok(PendingLoad {
                    card_id: CardId::from_slice(&row.bytes(0)?)
                        .map_err(|e| CenterError::Storage(e.to_string()))?,
                    load_number: row.int(1)? as u32,
                    card_counter: row.int(2)? as u32,
                    amount: Amount::new(row.int(3)? as u64)
                        .map_err(|e| CenterError::Storage(e.to_string()))?,
                })
            })
            .collect()
    }

    /// The remaining-value record of a card: the balance after its last settled load.
    pub fn remaining_value(
        &mut self,
        card_id: &CardId,
    ) -> Result<Option<RemainingValue>, CenterError> {
        let row = self.db.query_optional(
            "SELECT balance_minor, card_counter, updated_on FROM remaining_values WHERE card_id = $1",
            &[card_id.0[..].into()],
        )?;
        row.map(|row| {
            Ok(RemainingValue {
                card_id: *card_id,
                balance: Amount::new(row.int(0)? as u64)
                    .map_err(|e| CenterError::Storage(e.to_string()))?,
                card_counter: row.int(1)? as u32,
                updated_on: Date(row.int(2)? as u32),
            })
        })
        .transpose()
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

    fn report_stamp(&mut self, terminal_id: DeviceId, count: u32) -> Result<u32, CenterError> {
        self.record_stamp_count(terminal_id, count)
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
            &self.keys.transport_key,
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
            &self.keys.transport_key,
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
        );
        let card_key = self.card_key(&request.card_id);
        let mut plain = [0u8; 32];
        plain[..16].copy_from_slice(card_key.expose());
        plain[16..].copy_from_slice(self.keys.common_key.expose());
        let session = delivery::session_key(
            &self.keys.transport_key,
            derivation::CARD_DELIVERY,
            &request.card_challenge,
            request.card_id.as_bytes(),
        );
        let sealed_keys = delivery::seal(
            &session,
            &PersonalizeCommand::sealed_keys_aad(&request.card_id),
            &plain,
            &mut self.rng,
        );
        zeroize::Zeroize::zeroize(&mut plain);
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
            &self.keys.transport_key,
            &PersonalizeCommand::mac_input(&request.card_challenge, &command.encode_unmacced()),
        );
        self.db.execute(
            "UPDATE cards SET signing_key = $2, sealing_key = $3, certificate = $4, status = 'issued', issued_on = $5
             WHERE card_id = $1 AND status IN ('assigned', 'issued')",
            &[
                request.card_id.0[..].into(),
                request.signing_key.to_bytes()[..].into(),
                request.sealing_key[..].into(),
                certificate.encode().into(),
                date.0.into(),
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

    /// Fig. 7: verify SU(Y * X * V) with the card's certified key, then sign
    /// SA(Y * X * V * IDU) and MAC it under KU. A retried request gets the same answer.
    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError> {
        self.require_dispenser(request.dispenser_id)?;
        let (status, _, _) = self.card_record(&request.card_id)?;
        match status.as_str() {
            "issued" => {}
            "blocked" => return Err(CenterError::CardBlocked(request.card_id)),
            other => {
                return Err(CenterError::Mismatch(format!(
                    "card {} is {other}",
                    request.card_id
                )))
            }
        }
        let card_key = self.card_public_key(&request.card_id)?;
        let init = InitializeLoad {
            challenge_dispenser: request.challenge_dispenser,
            amount: request.amount,
            dispenser_id: request.dispenser_id,
        };
        let offer = &request.offer;
        let signed = LoadOffer::signed_message(
            &request.card_id,
            &init,
            &offer.challenge_card,
            offer.balance,
            offer.counter,
        );
        card_key
            .verify(&signed, &offer.signature)
            .map_err(|_| CenterError::BadCardSignature)?;
        if request.amount == Amount::ZERO {
            return Err(CenterError::Amount("a load must be positive".into()));
        }
        // A purchase already spent this card state: the card offering it now is a copy.
        let today = self.today().0;
        let cloned = self.db.transaction(|tx| {
            if Center::state_consumed(tx, &request.card_id, offer.counter)? {
                crate::usage::list_card(
                    tx,
                    &request.card_id,
                    valuecard_core::messages::center::ListReason::Cloned,
                    today,
                )?;
                tx.execute(
                    "UPDATE cards SET status = 'blocked' WHERE card_id = $1",
                    &[request.card_id.0[..].into()],
                )?;
                return Ok(true);
            }
            Ok(false)
        })?;
        if cloned {
            return Err(CenterError::CardBlocked(request.card_id));
        }
        let balance_after = offer
            .balance
            .checked_add(request.amount)
            .map_err(|error| CenterError::Amount(error.to_string()))?;
        if let Some(record) = self.remaining_value(&request.card_id)? {
            if offer.counter < record.card_counter {
                return Err(CenterError::Mismatch(format!(
                    "card {} reports counter {} below the center's record {}",
                    request.card_id, offer.counter, record.card_counter
                )));
            }
        }
        if let Some(existing) = self.existing_approval(request, balance_after)? {
            return Ok(existing);
        }
        let date = self.today();
        let root = &self.keys.root;
        let (authorization, signature) = self.db.transaction(|tx| {
            // A new offer at the same counter proves the card dropped any earlier session at
            // that counter: those earlier approvals can never be applied.
            tx.execute(
                "UPDATE loads SET status = 'cancelled' WHERE card_id = $1 AND card_counter = $2 AND status = 'pending'",
                &[request.card_id.0[..].into(), offer.counter.into()],
            )?;
            let load_number = u32::try_from(next_in_sequence(tx, "load")?)
                .map_err(|_| CenterError::Storage("load numbers exhausted".into()))?;
            let authorization = LoadAuthorization {
                card_id: request.card_id,
                dispenser_id: request.dispenser_id,
                challenge_dispenser: request.challenge_dispenser,
                challenge_card: offer.challenge_card,
                counter: offer.counter,
                amount: request.amount,
                balance_after,
                load_number,
                date,
            };
            let signature = root.sign(&authorization.signed_message());
            let kind = if offer.counter == 0 { "initial" } else { "recharge" };
            tx.execute(
                "INSERT INTO loads (card_id, load_number, card_counter, challenge_card, challenge_dispenser, dispenser_id,
                                    amount_minor, balance_after_minor, kind, status, authorized_on, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11)",
                &[
                    request.card_id.0[..].into(),
                    load_number.into(),
                    offer.counter.into(),
                    offer.challenge_card[..].into(),
                    request.challenge_dispenser[..].into(),
                    request.dispenser_id.0[..].into(),
                    Value::Int(request.amount.minor() as i64),
                    Value::Int(balance_after.minor() as i64),
                    kind.into(),
                    date.0.into(),
                    signature.0[..].into(),
                ],
            )?;
            Ok((authorization, signature))
        })?;
        let mac = aes_cmac(
            &self.card_key(&request.card_id),
            &authorization.signed_message(),
        );
        Ok(LoadApproval {
            balance_after,
            load_number: authorization.load_number,
            date,
            signature,
            mac,
        })
    }

    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<(), CenterError> {
        self.require_dispenser(settlement.dispenser_id)?;
        let today = self.clock.today().0;
        self.db.transaction(|tx| {
            let row = tx
                .query_optional(
                    "SELECT card_id, status, card_counter, balance_after_minor FROM loads WHERE load_number = $1",
                    &[settlement.load_number.into()],
                )?
                .ok_or_else(|| CenterError::Mismatch(format!("no load number {}", settlement.load_number)))?;
            let (card, status, counter, balance_after) = (row.bytes(0)?, row.text(1)?, row.int(2)?, row.int(3)?);
            if card != settlement.card_id.0 {
                return Err(CenterError::Mismatch(format!(
                    "load {} is not for card {}",
                    settlement.load_number, settlement.card_id
                )));
            }
            let outcome = if settlement.committed { "committed" } else { "cancelled" };
            match status.as_str() {
                "pending" => {}
                same if same == outcome => return Ok(()),
                other => {
                    return Err(CenterError::Mismatch(format!(
                        "load {} is already {other}, cannot become {outcome}",
                        settlement.load_number
                    )))
                }
            }
            tx.execute("UPDATE loads SET status = $2 WHERE load_number = $1", &[settlement.load_number.into(), outcome.into()])?;
            if settlement.committed {
                tx.execute(
                    "INSERT INTO remaining_values (card_id, balance_minor, card_counter, updated_on) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (card_id) DO UPDATE SET balance_minor = excluded.balance_minor,
                         card_counter = excluded.card_counter, updated_on = excluded.updated_on
                     WHERE excluded.card_counter > remaining_values.card_counter",
                    &[card.into(), balance_after.into(), (counter + 1).into(), today.into()],
                )?;
            }
            Ok(())
        })
    }
}

impl Center {
    fn existing_approval(
        &mut self,
        request: &LoadRequest,
        balance_after: Amount,
    ) -> Result<Option<LoadApproval>, CenterError> {
        let row = self.db.query_optional(
            "SELECT load_number, amount_minor, balance_after_minor, authorized_on, signature, status FROM loads
             WHERE card_id = $1 AND card_counter = $2 AND challenge_card = $3",
            &[request.card_id.0[..].into(), request.offer.counter.into(), request.offer.challenge_card[..].into()],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (load_number, amount, stored_balance, date) =
            (row.int(0)?, row.int(1)?, row.int(2)?, row.int(3)?);
        if amount as u64 != request.amount.minor() || stored_balance as u64 != balance_after.minor()
        {
            return Err(CenterError::Mismatch(
                "this card offer was already authorized with a different amount".into(),
            ));
        }
        if row.text(5)? == "cancelled" {
            return Err(CenterError::Mismatch(
                "this card offer was cancelled".into(),
            ));
        }
        let signature = Signature::from_slice(&row.bytes(4)?)
            .map_err(|_| CenterError::Storage("stored signature".into()))?;
        let authorization = LoadAuthorization {
            card_id: request.card_id,
            dispenser_id: request.dispenser_id,
            challenge_dispenser: request.challenge_dispenser,
            challenge_card: request.offer.challenge_card,
            counter: request.offer.counter,
            amount: request.amount,
            balance_after,
            load_number: load_number as u32,
            date: Date(date as u32),
        };
        let mac = aes_cmac(
            &self.card_key(&request.card_id),
            &authorization.signed_message(),
        );
        Ok(Some(LoadApproval {
            balance_after,
            load_number: load_number as u32,
            date: Date(date as u32),
            signature,
            mac,
        }))
    }

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
            keys,
            db,
            clock,
            rng: seeded(rng),
            setting_letters: Default::default(),
        })
    }
}
