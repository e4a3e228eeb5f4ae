//! A SAM whose keys live in a PKCS#11 token: an HSM in production, SoftHSM2 in tests.
//!
//! [`Pkcs11Sam`] implements the same [`Sam`] trait as the software SAM and builds every
//! message it signs with the same code (`valuecard_sam::construction`), so a verifier cannot
//! tell which kind signed. What lives where:
//!
//! | what | where |
//! |---|---|
//! | Ed25519 signing key | generated in the token (CKM_EC_EDWARDS_KEY_PAIR_GEN), sensitive, never extractable; signs with CKM_EDDSA |
//! | X25519 sealing key | generated in the token (CKK_EC_MONTGOMERY, or SoftHSM2's Edwards-typed X25519), sensitive, never extractable; derives with CKM_ECDH1_DERIVE |
//! | Ktemp, KT, KO | AES secret keys in the token, sensitive, never extractable (Ktemp checks the installation's CMAC in the token, then is destroyed) |
//! | certificate, anchor, stamp count and TS_t, last sequence; a memory-card machine's float, last grant and last write sequence | one private data object in the token (`crate::state`) |
//!
//! **What passes through host memory**, and for how long: the X25519 shared secret of an
//! installation (the token has no HKDF; see `token.rs`, `x25519_shared_secret`) and what it
//! opens (KT, KO and TS0), for the duration of [`Sam::install`], zeroized after KT and KO
//! were stored in the token; the current stamp TS_t while the SAM is open (see
//! `crate::state`); Ktemp when it is first stored at manufacture (it comes from the
//! center's key file, where it is derived); a memory-card writer's value key (claim 4),
//! derived from KO in the token with one CKM_AES_CMAC, for one seal or open of a value area,
//! then zeroized (see `crate::memcard`). No private key, nor KT or KO, is ever in host
//! memory after installation.
//!
//! [`Pkcs11SecurityKeys`] keeps the online security server's master keys and signing key
//! in a token the same way (see `security_keys.rs`), and [`Pkcs11AdminSam`] and
//! [`Pkcs11ProviderSam`] the secure modules of seed 002's value move (see `move_sams/`).
//!
//! **Architecture invariant:** a PKCS#11 SAM never creates an extractable key and never
//! reads a key's value; the derived secrets it reads are the installation's X25519 secret
//! (made extractable on purpose, in a session object destroyed at once) and the output of a
//! CMAC under a key of the token (a memory-card value key under KO, a card's KC under M, an
//! area key under a provider's master), each held only while it is used; a transfer SAM's
//! copy is opened in the token and read only to be handed to the new chip's channel.

#![forbid(unsafe_code)]

mod address;
pub mod context;
mod error;
mod memcard;
mod move_sams;
mod security_keys;
mod signer;
pub mod softhsm;
mod state;
mod token;
pub mod uri;

use cryptoki::object::{ObjectClass, ObjectHandle};
use valuecard_core::cert::{Certificate, Role, TrustAnchor, VerifiedCertificate};
use valuecard_core::crypto::{
    open_sealed_with_shared, sealed_ephemeral_key, AesKey, PublicKey, Signature, PUBLIC_KEY_LEN,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::Installation;
use valuecard_core::messages::credit::{Password, SetPassword};
use valuecard_core::messages::memcard::{CardContent, FloatGrant, PlainValue, WriteRecord};
use valuecard_core::messages::purse::{Challenge, TerminalStamp, UsageRecord};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, Date, SystemClock};
use valuecard_sam::construction::{
    check_installation_certificate, check_purchase, check_transfer, installation_mac_message,
    next_sequence, purchase_commit, split_installation_keys, transfer_record, StampChain,
};
use valuecard_sam::{
    installation_keys_aad, request_signing_input, MemcardWriteOrder, PurchaseOrder, Sam, SamError,
    SignedPurchase, TransferRecordOrder,
};
use zeroize::{Zeroize, Zeroizing};

pub use address::{resolve_pin, TokenAddress, PIN_ENV};
pub use error::Pkcs11SamError;
pub use move_sams::{MoveSamError, Pkcs11AdminSam, Pkcs11ProviderSam, TokenMoveSams};
pub use security_keys::{NewMaster, Pkcs11SecurityKeys, SecurityKeysError};
pub use signer::Pkcs11Signer;
use state::SamState;
use token::{Part, TokenSession};
pub use uri::{Pkcs11Uri, UriError};

/// How many sequences a SAM reserves in the token at once: one token write per this many
/// purchases (SoftHSM2 syncs every object it writes to disk).
pub const SEQUENCE_BLOCK: u32 = 64;

/// Sequences reserved in the token, `next..=end`.
#[derive(Debug, Clone, Copy)]
struct SequenceBlock {
    next: u32,
    end: u32,
}

/// Decodes a state object's value and encodes it again: the fuzz target's round trip over
/// the one parser of what a token gives back.
#[doc(hidden)]
pub fn state_round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
    SamState::decode(bytes).ok().map(|state| state.encode())
}

/// A SAM whose keys are in a PKCS#11 token.
pub struct Pkcs11Sam {
    token: TokenSession,
    signing_key: ObjectHandle,
    sealing_key: ObjectHandle,
    signing_public: PublicKey,
    sealing_public: [u8; PUBLIC_KEY_LEN],
    state_object: ObjectHandle,
    state: SamState,
    /// The signed stamp of `state.chain`'s current position, so that a purchase need not
    /// sign the stamp again.
    signed_stamp: Option<TerminalStamp>,
    /// The sequences this object reserved in the token and has not used yet.
    sequences: Option<SequenceBlock>,
    clock: Box<dyn Clock>,
}

impl core::fmt::Debug for Pkcs11Sam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11Sam")
            .field("object", &self.token.object)
            .field("device_id", &self.state.device_id)
            .field("installed", &self.state.installed.is_some())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Sam {
    /// A new SAM in the token, as it leaves the factory: its Ed25519 and X25519 key pairs
    /// generated in the token, its own transport key Ktemp stored there, its state object
    /// made. Refused if the token already has objects under the URI's label.
    pub fn manufacture(
        address: &TokenAddress,
        device_id: DeviceId,
        transport_key: AesKey,
    ) -> Result<Self, Pkcs11SamError> {
        let token = address.session()?;
        if token.any_object_exists()? {
            return Err(Pkcs11SamError::AlreadyExists(token.object.clone()));
        }
        let x25519 = token.x25519_kind()?;
        let (signing_key, signing_public) = token.generate_signing_pair()?;
        let (sealing_key, sealing_public) = token.generate_sealing_pair(x25519)?;
        token.store_aes_key(Part::Transport, transport_key.expose())?;
        drop(transport_key);
        let state = SamState::new(device_id);
        let mut encoded = state.encode();
        let state_object = token.create_state(&encoded);
        encoded.zeroize();
        Ok(Pkcs11Sam {
            token,
            signing_key,
            sealing_key,
            signing_public: PublicKey::from_bytes(&signing_public)
                .map_err(|_| Pkcs11SamError::BadPublicKey)?,
            sealing_public,
            state_object: state_object?,
            state,
            signed_stamp: None,
            sequences: None,
            clock: Box::new(SystemClock),
        })
    }

    /// Opens the SAM the URI names. It reads the operating system's clock; see
    /// [`Pkcs11Sam::set_clock`].
    pub fn open(address: &TokenAddress) -> Result<Self, Pkcs11SamError> {
        let token = address.session()?;
        let signing_key = token.require(ObjectClass::PRIVATE_KEY, Part::Signing)?;
        let sealing_key = token.require(ObjectClass::PRIVATE_KEY, Part::Sealing)?;
        let signing_public =
            token.public_point(token.require(ObjectClass::PUBLIC_KEY, Part::Signing)?)?;
        let sealing_public =
            token.public_point(token.require(ObjectClass::PUBLIC_KEY, Part::Sealing)?)?;
        let (state_object, state) = load_state(&token)?;
        // The keys under the label must be the ones the center certified: objects swapped
        // or re-created under the same label are refused, not used.
        if let Some((_, certificate)) = &state.installed {
            if certificate.body.signing_key.to_bytes() != signing_public
                || certificate.body.sealing_key != Some(sealing_public)
            {
                return Err(SamError::ForeignCertificate.into());
            }
        }
        let mut sam = Pkcs11Sam {
            token,
            signing_key,
            sealing_key,
            signing_public: PublicKey::from_bytes(&signing_public)
                .map_err(|_| Pkcs11SamError::BadPublicKey)?,
            sealing_public,
            state_object,
            state,
            signed_stamp: None,
            sequences: None,
            clock: Box::new(SystemClock),
        };
        sam.signed_stamp = sam.sign_current_stamp()?;
        Ok(sam)
    }

    /// Opens the SAM and checks that it is the one of `device_id`.
    pub fn open_for(address: &TokenAddress, device_id: DeviceId) -> Result<Self, Pkcs11SamError> {
        let sam = Self::open(address)?;
        if sam.state.device_id != device_id {
            return Err(Pkcs11SamError::OtherDevice {
                found: sam.state.device_id.to_string(),
                expected: device_id.to_string(),
            });
        }
        Ok(sam)
    }

    /// The SAM's own calendar (tests give it a fixed one).
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether KT and KO were delivered and are in the token.
    pub fn has_link_keys(&self) -> Result<bool, Pkcs11SamError> {
        Ok(self
            .token
            .find(ObjectClass::SECRET_KEY, Part::TerminalKey)?
            .is_some()
            && self
                .token
                .find(ObjectClass::SECRET_KEY, Part::CommonKey)?
                .is_some())
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SamError> {
        Ok(Signature(self.token.sign_eddsa(self.signing_key, message)?))
    }

    fn sign_current_stamp(&self) -> Result<Option<TerminalStamp>, Pkcs11SamError> {
        let Some(chain) = &self.state.chain else {
            return Ok(None);
        };
        let signature = self.sign(&chain.signed_message(&self.state.device_id))?;
        Ok(Some(TerminalStamp {
            count: chain.count,
            signature,
        }))
    }

    /// Reads the state again from the token before writing it: another SAM object of this
    /// process or another process may have advanced the chain or reserved sequences since
    /// (a device opens its SAM twice when it also talks to the center).
    fn refresh(&mut self) -> Result<(), SamError> {
        let (state_object, state) = load_state(&self.token)?;
        self.state_object = state_object;
        let moved = match (&state.chain, &self.state.chain) {
            (Some(new), Some(old)) => new.count != old.count,
            (new, old) => new.is_some() != old.is_some(),
        };
        self.state = state;
        if moved {
            self.signed_stamp = self.sign_current_stamp()?;
        }
        Ok(())
    }

    /// Writes the state as a new object of the next generation, then destroys the old one
    /// (see `crate::state`).
    fn store_state(&mut self) -> Result<(), SamError> {
        self.state.generation = self
            .state
            .generation
            .checked_add(1)
            .ok_or(SamError::Image("state generations exhausted"))?;
        let mut encoded = self.state.encode();
        let created = self.token.create_state(&encoded);
        encoded.zeroize();
        let old = core::mem::replace(&mut self.state_object, created?);
        self.token.destroy(old)?;
        Ok(())
    }

    /// Brings the chain up to the clock, storing it before its stamp is used. The token is
    /// read and written only on the day the chain moves.
    fn advance_to_clock(&mut self) -> Result<TerminalStamp, SamError> {
        let today = self.clock.today();
        let mut probe = *self.state.chain.as_ref().ok_or(SamError::NotInstalled)?;
        let moves = probe.advance_to(today)?;
        probe.erase();
        if moves {
            self.refresh()?;
            let chain = self.state.chain.as_mut().ok_or(SamError::NotInstalled)?;
            if chain.advance_to(today)? {
                self.store_state()?;
                self.signed_stamp = self.sign_current_stamp()?;
            }
        }
        self.signed_stamp.ok_or(SamError::NotInstalled)
    }

    /// The sequence of the next record: the next of this object's reserved block, else the
    /// first of a new block reserved in the token first. A crash loses the rest of a block
    /// (the sequences are skipped), never signs two records under one sequence.
    fn take_sequence(&mut self, sequence_floor: u32) -> Result<u32, SamError> {
        if let Some(block) = &self.sequences {
            let sequence = block.next.max(sequence_floor);
            if sequence <= block.end {
                return Ok(sequence);
            }
        }
        self.refresh()?;
        let start = next_sequence(self.state.sequence_reserved, sequence_floor)?;
        let end = start.saturating_add(SEQUENCE_BLOCK - 1);
        self.state.sequence_reserved = end;
        self.store_state()?;
        self.sequences = Some(SequenceBlock { next: start, end });
        Ok(start)
    }

    /// Marks `sequence` used.
    fn used_sequence(&mut self, sequence: u32) {
        if let Some(block) = &mut self.sequences {
            block.next = sequence.saturating_add(1);
            if sequence == u32::MAX {
                self.sequences = None;
            }
        }
    }

    fn installed(&self) -> Result<&(TrustAnchor, Certificate), SamError> {
        self.state.installed.as_ref().ok_or(SamError::NotInstalled)
    }

    /// Opens KT || KO || TS0 with the shared secret derived in the token.
    fn open_installation_keys(
        &self,
        installation: &Installation,
        challenge: &Challenge,
    ) -> Result<Zeroizing<Vec<u8>>, SamError> {
        let ephemeral =
            sealed_ephemeral_key(&installation.sealed_keys).map_err(|_| SamError::BadSealedKeys)?;
        let shared = self
            .token
            .x25519_shared_secret(self.sealing_key, &ephemeral)?;
        let opened = open_sealed_with_shared(
            &shared,
            &self.sealing_public,
            &installation_keys_aad(&self.state.device_id, &installation.anchor, challenge),
            &installation.sealed_keys,
        )
        .map_err(|_| SamError::BadSealedKeys)?;
        drop(shared);
        Ok(Zeroizing::new(opened))
    }
}

/// The current state: the highest generation among the state objects, the others (left by
/// a crash between writing a new one and destroying the old) destroyed.
fn load_state(token: &TokenSession) -> Result<(ObjectHandle, SamState), Pkcs11SamError> {
    let mut current: Option<(ObjectHandle, SamState)> = None;
    let mut stale = Vec::new();
    for handle in token.find_states()? {
        let state = SamState::decode(&token.read_state(handle)?)?;
        match &current {
            Some((_, best)) if best.generation >= state.generation => stale.push(handle),
            _ => {
                if let Some((previous, _)) = current.replace((handle, state)) {
                    stale.push(previous);
                }
            }
        }
    }
    let current = current.ok_or_else(|| {
        Pkcs11SamError::MissingObject(
            String::from_utf8_lossy(&Part::State.label(&token.object)).into_owned(),
        )
    })?;
    for handle in stale {
        token.destroy(handle)?;
    }
    Ok(current)
}

impl Sam for Pkcs11Sam {
    fn device_id(&self) -> DeviceId {
        self.state.device_id
    }

    fn signing_key(&self) -> PublicKey {
        self.signing_public
    }

    fn sealing_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.sealing_public
    }

    fn certificate(&self) -> Result<&Certificate, SamError> {
        Ok(&self.installed()?.1)
    }

    fn anchor(&self) -> Result<&TrustAnchor, SamError> {
        Ok(&self.installed()?.0)
    }

    fn stamp(&mut self) -> Result<TerminalStamp, SamError> {
        self.advance_to_clock()
    }

    fn sign_purchase(&mut self, order: &PurchaseOrder) -> Result<SignedPurchase, SamError> {
        self.installed()?;
        let balance_after = check_purchase(order)?;
        let stamp = self.advance_to_clock()?;
        // The sequence was reserved in the token before the signature exists.
        let sequence = self.take_sequence(order.sequence_floor)?;
        let commit = purchase_commit(order, self.state.device_id, balance_after, sequence, stamp);
        let signature = self.sign(&commit.signed_message())?;
        self.used_sequence(sequence);
        Ok(SignedPurchase { commit, signature })
    }

    fn sign_transfer_record(
        &mut self,
        order: &TransferRecordOrder,
    ) -> Result<UsageRecord, SamError> {
        let (balance_after, counter) = check_transfer(order, self.certificate()?.body.role)?;
        let stamp = self.advance_to_clock()?;
        let sequence = self.take_sequence(order.sequence_floor)?;
        let mut record = transfer_record(
            order,
            self.state.device_id,
            balance_after,
            counter,
            sequence,
            stamp,
        );
        record.signature = self.sign(&record.signed_message(&order.card_id))?;
        self.used_sequence(sequence);
        Ok(record)
    }

    fn sign_set_password(
        &mut self,
        card_id: &CardId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        password: &Password,
    ) -> Result<Signature, SamError> {
        self.installed()?;
        self.sign(&SetPassword::signed_message(
            card_id,
            &self.state.device_id,
            challenge_terminal,
            challenge_card,
            password,
        ))
    }

    fn sign_device_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, SamError> {
        self.installed()?;
        self.sign(&request_signing_input(method, path, sequence, body))
    }

    fn install(
        &mut self,
        installation: &Installation,
        challenge: &Challenge,
        role: Role,
        today: Date,
    ) -> Result<VerifiedCertificate, SamError> {
        let verified = check_installation_certificate(
            installation,
            role,
            today,
            self.state.device_id,
            &self.signing_public,
            &self.sealing_public,
        )?;
        // Ktemp is gone once a SAM is installed: a second installation is refused as the
        // software SAM refuses it.
        let transport_key = self
            .token
            .find(ObjectClass::SECRET_KEY, Part::Transport)?
            .ok_or(SamError::BadInstallationMac)?;
        let mac_message = installation_mac_message(installation, &self.state.device_id, challenge);
        if !self
            .token
            .verify_cmac(transport_key, &mac_message, &installation.mac)?
        {
            return Err(SamError::BadInstallationMac);
        }
        let opened = self.open_installation_keys(installation, challenge)?;
        // KT || KO, then the first time stamp TS0 (Fig. 10).
        let keys = split_installation_keys(&opened)?;
        let mut current = [0u8; 32];
        current.copy_from_slice(keys.first_stamp);
        let terminal_handle = self
            .token
            .store_aes_key(Part::TerminalKey, keys.terminal_key)?;
        if let Err(error) = self.token.store_aes_key(Part::CommonKey, keys.common_key) {
            // Leave no half-installed SAM behind: a retry finds Ktemp and no KT.
            let _ = self.token.destroy(terminal_handle);
            current.zeroize();
            return Err(error.into());
        }
        drop(opened);
        self.state.chain = Some(StampChain {
            installed_on: self.clock.today(),
            count: 0,
            current,
        });
        current.zeroize();
        self.state.installed = Some((installation.anchor, installation.certificate.clone()));
        self.store_state()?;
        self.signed_stamp = self.sign_current_stamp()?;
        // After this the transport key is erased (Fig. 8): one installation per SAM.
        self.token.destroy(transport_key)?;
        Ok(verified)
    }

    fn open_memcard_value(
        &self,
        content: &CardContent,
        writer: DeviceId,
    ) -> Result<PlainValue, SamError> {
        self.open_sealed_value(content, writer)
    }

    fn sign_memcard_write(&mut self, order: &MemcardWriteOrder) -> Result<WriteRecord, SamError> {
        self.sign_write(order)
    }

    fn take_float_grant(&mut self, grant: &FloatGrant) -> Result<Amount, SamError> {
        self.take_grant(grant)
    }

    fn float(&self) -> Amount {
        self.state.memcard.float
    }

    fn memcard_sequence(&self) -> u32 {
        self.state.memcard.last_sequence
    }
}
