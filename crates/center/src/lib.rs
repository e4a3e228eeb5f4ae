//! The management center (seed 003): the root of trust (Fig. 4A), card issuance through
//! dispensers (Fig. 4B), load authorization (Figs. 4C and 7), the key hierarchy (Fig. 8),
//! and the records that reconcile value: cards, devices, loads and the remaining value per
//! card.
//!
//! **Architecture invariant:** the center never sees a card's or a terminal's private key:
//! cards and SAMs generate their own key pairs and the center certifies public keys.

#![forbid(unsafe_code)]

pub mod db;
pub mod keys;

use std::path::{Path, PathBuf};

use rand_core::CryptoRngCore;
use rusqlite::{params, Connection, OptionalExtension};
use valuecard_core::cert::{Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{
    aes_cmac, aes_gcm_seal, derivation, diversify_key, PublicKey, Signature, GCM_NONCE_LEN,
};
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
use valuecard_sam::{installation_keys_aad, transport_session_key};

use crate::db::{next_in_sequence, storage};
use crate::keys::CenterKeys;

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
    db: Connection,
    clock: Box<dyn Clock>,
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
    /// Creates a new center (Fig. 4A: the master key pair) in `dir`. Refuses to overwrite.
    pub fn init(
        dir: &Path,
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
        keys.save(&key_path(dir))?;
        let db = db::open(&db_path(dir))?;
        Ok(Center { keys, db, clock })
    }

    pub fn open(dir: &Path, clock: Box<dyn Clock>) -> Result<Self, CenterError> {
        let keys = CenterKeys::load(&key_path(dir))?;
        let db = db::open(&db_path(dir))?;
        Ok(Center { keys, db, clock })
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
        let transaction = self.db.transaction().map_err(storage)?;
        let number = next_in_sequence(&transaction, "device")?;
        transaction.commit().map_err(storage)?;
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
        let mut plain = [0u8; 32];
        plain[..16].copy_from_slice(terminal_key.expose());
        plain[16..].copy_from_slice(self.keys.common_key.expose());
        let session = transport_session_key(&self.keys.transport_key, &request.challenge);
        let sealed_keys = aes_gcm_seal(
            &session,
            &[0u8; GCM_NONCE_LEN],
            &installation_keys_aad(&request.device_id),
            &plain,
        );
        zeroize::Zeroize::zeroize(&mut plain);
        let changed = self
            .db
            .execute(
                "INSERT INTO devices (device_id, role, signing_key, sealing_key, certificate, status, installed_on)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'installed', ?6)
                 ON CONFLICT (device_id) DO NOTHING",
                params![
                    &request.device_id.0[..],
                    role as u8,
                    &request.signing_key.to_bytes()[..],
                    &request.sealing_key[..],
                    certificate.encode(),
                    self.today().0
                ],
            )
            .map_err(storage)?;
        if changed == 0 {
            return Err(CenterError::Mismatch(format!(
                "device {} is already installed",
                request.device_id
            )));
        }
        Ok(Installation {
            certificate,
            anchor: self.anchor(),
            sealed_keys,
        })
    }

    fn device_role(&self, device_id: DeviceId) -> Result<Role, CenterError> {
        let role: Option<u8> = self
            .db
            .query_row(
                "SELECT role FROM devices WHERE device_id = ?1 AND status = 'installed'",
                [&device_id.0[..]],
                |row| row.get(0),
            )
            .optional()
            .map_err(storage)?;
        role.and_then(Role::from_u8)
            .ok_or(CenterError::UnknownDevice(device_id))
    }

    fn require_dispenser(&self, device_id: DeviceId) -> Result<(), CenterError> {
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
        &self,
        card_id: &CardId,
    ) -> Result<(String, Option<Vec<u8>>, DeviceId), CenterError> {
        let row: Option<(String, Option<Vec<u8>>, Vec<u8>)> = self
            .db
            .query_row(
                "SELECT status, signing_key, dispenser_id FROM cards WHERE card_id = ?1",
                [&card_id.0[..]],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(storage)?;
        let (status, key, dispenser) = row.ok_or(CenterError::UnknownCard(*card_id))?;
        let dispenser =
            DeviceId::from_slice(&dispenser).map_err(|e| CenterError::Storage(e.to_string()))?;
        Ok((status, key, dispenser))
    }

    /// A card's certified public key, for verifying what the card signed.
    pub fn card_public_key(&self, card_id: &CardId) -> Result<PublicKey, CenterError> {
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
        let changed = self
            .db
            .execute(
                "UPDATE cards SET status = 'blocked' WHERE card_id = ?1",
                [&card_id.0[..]],
            )
            .map_err(storage)?;
        if changed == 0 {
            return Err(CenterError::UnknownCard(*card_id));
        }
        Ok(())
    }

    /// Totals of every load, by kind and outcome.
    pub fn load_totals(&self) -> Result<LoadTotals, CenterError> {
        let mut totals = LoadTotals::default();
        let mut statement = self
            .db
            .prepare("SELECT kind, status, COALESCE(SUM(amount_minor), 0), COUNT(*) FROM loads GROUP BY kind, status")
            .map_err(storage)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(storage)?;
        for row in rows {
            let (kind, status, sum, count) = row.map_err(storage)?;
            let sum = sum as u64;
            match (kind.as_str(), status.as_str()) {
                ("initial", "committed") => totals.issued += sum,
                ("recharge", "committed") => totals.loaded += sum,
                (_, "pending") => {
                    totals.in_flight += sum;
                    totals.in_flight_count += count as u64;
                }
                _ => totals.cancelled += sum,
            }
        }
        Ok(totals)
    }

    /// Loads authorized but not yet settled, oldest first.
    pub fn pending_loads(&self) -> Result<Vec<PendingLoad>, CenterError> {
        let mut statement = self
            .db
            .prepare("SELECT card_id, load_number, card_counter, amount_minor FROM loads WHERE status = 'pending' ORDER BY load_number")
            .map_err(storage)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(storage)?;
        let mut out = Vec::new();
        for row in rows {
            let (card, number, counter, amount) = row.map_err(storage)?;
            out.push(PendingLoad {
                card_id: CardId::from_slice(&card)
                    .map_err(|e| CenterError::Storage(e.to_string()))?,
                load_number: number as u32,
                card_counter: counter as u32,
                amount: Amount::new(amount as u64)
                    .map_err(|e| CenterError::Storage(e.to_string()))?,
            });
        }
        Ok(out)
    }

    /// The remaining-value record of a card: the balance after its last settled load.
    pub fn remaining_value(&self, card_id: &CardId) -> Result<Option<RemainingValue>, CenterError> {
        self.db
            .query_row(
                "SELECT balance_minor, card_counter, updated_on FROM remaining_values WHERE card_id = ?1",
                [&card_id.0[..]],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
            )
            .optional()
            .map_err(storage)?
            .map(|(balance, counter, updated)| {
                Ok(RemainingValue {
                    card_id: *card_id,
                    balance: Amount::new(balance as u64).map_err(|e| CenterError::Storage(e.to_string()))?,
                    card_counter: counter as u32,
                    updated_on: Date(updated as u32),
                })
            })
            .transpose()
    }

    /// Number of cards in each status.
    pub fn card_count(&self) -> Result<u64, CenterError> {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM cards WHERE status != 'assigned'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| count as u64)
            .map_err(storage)
    }
}

fn sequential_id(prefix: u8, number: i64) -> DeviceId {
    let mut id = (number as u64).to_be_bytes();
    id[0] = prefix;
    DeviceId(id)
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
        let transaction = self.db.transaction().map_err(storage)?;
        let number = next_in_sequence(&transaction, "card")?;
        let card_id = CardId(sequential_id(CARD_ID_PREFIX, number).0);
        transaction
            .execute(
                "INSERT INTO cards (card_id, dispenser_id, status, assigned_on) VALUES (?1, ?2, 'assigned', ?3)",
                params![&card_id.0[..], &request.dispenser_id.0[..], today],
            )
            .map_err(storage)?;
        transaction.commit().map_err(storage)?;
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
        let session = transport_session_key(&self.keys.transport_key, &request.card_challenge);
        let sealed_keys = aes_gcm_seal(
            &session,
            &[0u8; GCM_NONCE_LEN],
            &PersonalizeCommand::sealed_keys_aad(&request.card_id),
            &plain,
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
        self.db
            .execute(
                "UPDATE cards SET signing_key = ?2, sealing_key = ?3, certificate = ?4, status = 'issued', issued_on = ?5
                 WHERE card_id = ?1 AND status IN ('assigned', 'issued')",
                params![
                    &request.card_id.0[..],
                    &request.signing_key.to_bytes()[..],
                    &request.sealing_key[..],
                    certificate.encode(),
                    date.0
                ],
            )
            .map_err(storage)?;
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
        let transaction = self.db.transaction().map_err(storage)?;
        // A new offer at the same counter proves the card dropped any earlier session at
        // that counter: those earlier approvals can never be applied.
        transaction
            .execute(
                "UPDATE loads SET status = 'cancelled' WHERE card_id = ?1 AND card_counter = ?2 AND status = 'pending'",
                params![&request.card_id.0[..], offer.counter],
            )
            .map_err(storage)?;
        let load_number = next_in_sequence(&transaction, "load")? as u32;
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
        let message = authorization.signed_message();
        let signature = self.keys.root.sign(&message);
        let kind = if offer.counter == 0 {
            "initial"
        } else {
            "recharge"
        };
        transaction
            .execute(
                "INSERT INTO loads (card_id, load_number, card_counter, challenge_card, challenge_dispenser, dispenser_id,
                                    amount_minor, balance_after_minor, kind, status, authorized_on, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11)",
                params![
                    &request.card_id.0[..],
                    load_number,
                    offer.counter,
                    &offer.challenge_card[..],
                    &request.challenge_dispenser[..],
                    &request.dispenser_id.0[..],
                    request.amount.minor() as i64,
                    balance_after.minor() as i64,
                    kind,
                    date.0,
                    &signature.0[..]
                ],
            )
            .map_err(storage)?;
        transaction.commit().map_err(storage)?;
        let mac = aes_cmac(&self.card_key(&request.card_id), &message);
        Ok(LoadApproval {
            balance_after,
            load_number,
            date,
            signature,
            mac,
        })
    }

    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<(), CenterError> {
        self.require_dispenser(settlement.dispenser_id)?;
        let transaction = self.db.transaction().map_err(storage)?;
        let row: Option<(Vec<u8>, String, i64, i64)> = transaction
            .query_row(
                "SELECT card_id, status, card_counter, balance_after_minor FROM loads WHERE load_number = ?1",
                [settlement.load_number],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(storage)?;
        let (card, status, counter, balance_after) = row.ok_or_else(|| {
            CenterError::Mismatch(format!("no load number {}", settlement.load_number))
        })?;
        if card != settlement.card_id.0 {
            return Err(CenterError::Mismatch(format!(
                "load {} is not for card {}",
                settlement.load_number, settlement.card_id
            )));
        }
        let outcome = if settlement.committed {
            "committed"
        } else {
            "cancelled"
        };
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
        transaction
            .execute(
                "UPDATE loads SET status = ?2 WHERE load_number = ?1",
                params![settlement.load_number, outcome],
            )
            .map_err(storage)?;
        if settlement.committed {
            transaction
                .execute(
                    "INSERT INTO remaining_values (card_id, balance_minor, card_counter, updated_on) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (card_id) DO UPDATE SET balance_minor = excluded.balance_minor,
                         card_counter = excluded.card_counter, updated_on = excluded.updated_on
                     WHERE excluded.card_counter > remaining_values.card_counter",
                    params![&card[..], balance_after, counter + 1, self.clock.today().0],
                )
                .map_err(storage)?;
        }
        transaction.commit().map_err(storage)?;
        Ok(())
    }
}

impl Center {
    fn existing_approval(
        &self,
        request: &LoadRequest,
        balance_after: Amount,
    ) -> Result<Option<LoadApproval>, CenterError> {
        let row: Option<(i64, i64, i64, i64, Vec<u8>, String)> = self
            .db
            .query_row(
                "SELECT load_number, amount_minor, balance_after_minor, authorized_on, signature, status FROM loads
                 WHERE card_id = ?1 AND card_counter = ?2 AND challenge_card = ?3",
                params![&request.card_id.0[..], request.offer.counter, &request.offer.challenge_card[..]],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)),
            )
            .optional()
            .map_err(storage)?;
        let Some((load_number, amount, stored_balance, date, signature, status)) = row else {
            return Ok(None);
        };
        if amount as u64 != request.amount.minor() || stored_balance as u64 != balance_after.minor()
        {
            return Err(CenterError::Mismatch(
                "this card offer was already authorized with a different amount".into(),
            ));
        }
        if status == "cancelled" {
            return Err(CenterError::Mismatch(
                "this card offer was cancelled".into(),
            ));
        }
        let signature = Signature::from_slice(&signature)
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
}

impl Center {
    /// A center whose keys and database live only in memory: for tests, simulations and
    /// benchmarks. Nothing survives the process.
    pub fn ephemeral(
        clock: Box<dyn Clock>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CenterError> {
        let mut center_id = [0u8; 8];
        center_id[0] = 0xCE;
        rng.fill_bytes(&mut center_id[1..]);
        let keys = CenterKeys::generate(DeviceId(center_id), rng);
        let mut db = Connection::open_in_memory().map_err(storage)?;
        db::migrate(&mut db)?;
        Ok(Center { keys, db, clock })
    }
}
