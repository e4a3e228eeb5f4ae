//! A provider's normal SAM 11 or transfer SAM 12 in a token: the master key of its areas'
//! keys, a transfer SAM's storage key for the move's copies, and its Ed25519 signing key.

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{ObjectClass, ObjectHandle};
use rand_core::CryptoRngCore;
use valuecard_core::cert::{Certificate, Role, TrustAnchor};
use valuecard_core::crypto::{
    diversification_input, random_array, AesKey, PublicKey, Signature, GCM_NONCE_LEN,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::services::{
    area_identifier, derivation, ChannelBinding, KeyPackage, KeyState, MigrationRecord, MoveId,
    ServiceChannel, ServiceCode, SERVICE_CRYPTOGRAM_LEN,
};
use valuecard_core::time::Date;
use valuecard_migrate::sam::{
    build_key_package, check_channel_state, check_record_writer, copy_context, join_sealed_copy,
    split_sealed_copy, PackageIssuer, ProviderSam, SamError,
};

use super::{
    check_certificate, remove_provisioned, require_mechanisms, signing_pair, unavailable,
    LockedSession, MoveSamError,
};
use crate::token::{AesUse, Part, TokenSession};
use crate::{NewMaster, Pkcs11SamError, TokenAddress};

/// What every provider SAM asks of its token.
const PROVIDER_MECHANISMS: [(MechanismType, &str); 4] = [
    (
        MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        "CKM_EC_EDWARDS_KEY_PAIR_GEN",
    ),
    (MechanismType::EDDSA, "CKM_EDDSA"),
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_CMAC, "CKM_AES_CMAC"),
];

/// What a transfer SAM asks of its token besides.
const TRANSFER_MECHANISMS: [(MechanismType, &str); 1] = [(MechanismType::AES_GCM, "CKM_AES_GCM")];

/// A provider's normal or transfer SAM whose keys are in a PKCS#11 token.
pub struct Pkcs11ProviderSam {
    session: LockedSession,
    signing_key: ObjectHandle,
    public_key: PublicKey,
    master: ObjectHandle,
    /// A transfer SAM's key for its copies; a normal SAM has none.
    storage: Option<ObjectHandle>,
    certificate: Certificate,
    anchor: TrustAnchor,
    locator: String,
}

impl core::fmt::Debug for Pkcs11ProviderSam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11ProviderSam")
            .field("locator", &self.locator)
            .field("subject", &self.certificate.subject())
            .field("key_state", &self.key_state())
            .finish_non_exhaustive()
    }
}

impl Pkcs11ProviderSam {
    /// Sets up a normal SAM in the token: its Ed25519 key pair generated there and its
    /// master key. Gives the public key for the center to certify with role
    /// `ServiceProvider`. Refused if the token already has objects under the URI's label;
    /// on failure nothing is left behind.
    pub fn provision_normal(
        address: &TokenAddress,
        master: NewMaster,
    ) -> Result<PublicKey, MoveSamError> {
        Self::provision(address, master, None)
    }

    /// Sets up a transfer SAM in the token: its key pair, its master key and the storage
    /// key of its copies. Gives the public key for the center to certify with role
    /// `ServiceTransfer`.
    pub fn provision_transfer(
        address: &TokenAddress,
        master: NewMaster,
        storage: NewMaster,
    ) -> Result<PublicKey, MoveSamError> {
        Self::provision(address, master, Some(storage))
    }

    fn provision(
        address: &TokenAddress,
        master: NewMaster,
        storage: Option<NewMaster>,
    ) -> Result<PublicKey, MoveSamError> {
        let token = address.session()?;
        require_mechanisms(&token, &PROVIDER_MECHANISMS)?;
        if storage.is_some() {
            require_mechanisms(&token, &TRANSFER_MECHANISMS)?;
        }
        if token.any_object_exists()? {
            return Err(Pkcs11SamError::AlreadyExists(token.object.clone()).into());
        }
        let (private, public) = token.generate_signing_pair()?;
        let mut made = vec![private];
        let stored = PublicKey::from_bytes(&public)
            .map_err(|_| Pkcs11SamError::BadPublicKey)
            .and_then(|public| {
                made.push(add_key(&token, Part::AreaMaster, master, AesUse::Mac)?);
                if let Some(storage) = storage {
                    made.push(add_key(&token, Part::CopyStorage, storage, AesUse::Seal)?);
                }
                Ok(public)
            });
        if stored.is_err() {
            remove_provisioned(&token, &made);
        }
        Ok(stored?)
    }

    /// Opens the SAM the URI names with the certificate the center issued for its key: a
    /// normal SAM for a `ServiceProvider` certificate, a transfer SAM for a
    /// `ServiceTransfer` one. `anchor` is the center's root, under which the chips'
    /// certificates are checked before a key is sealed to them.
    pub fn open(
        address: &TokenAddress,
        certificate: Certificate,
        anchor: TrustAnchor,
    ) -> Result<Self, MoveSamError> {
        let token = address.session()?;
        let (signing_key, public_key) = signing_pair(&token)?;
        check_certificate(
            &certificate,
            &[Role::ServiceProvider, Role::ServiceTransfer],
            &public_key,
        )?;
        let master = token.require(ObjectClass::SECRET_KEY, Part::AreaMaster)?;
        let storage = token.find(ObjectClass::SECRET_KEY, Part::CopyStorage)?;
        match (certificate.body.role, storage.is_some()) {
            (Role::ServiceTransfer, false) => return Err(MoveSamError::KindMismatch("transfer")),
            (Role::ServiceProvider, true) => return Err(MoveSamError::KindMismatch("normal")),
            _ => {}
        }
        Ok(Pkcs11ProviderSam {
            session: LockedSession(std::sync::Mutex::new(token)),
            signing_key,
            public_key,
            master,
            storage,
            certificate,
            anchor,
            locator: address.uri.without_pin(),
        })
    }

    /// The public key of the token's signing key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    pub fn subject(&self) -> DeviceId {
        self.certificate.subject()
    }

    /// The URI without PIN, as a configuration records it.
    pub fn locator(&self) -> &str {
        &self.locator
    }

    /// The area key of `service` on `card_id` in this SAM's key state: one CKM_AES_CMAC
    /// under the master in the token, the one block of `area_key`'s SP 800-108 derivation.
    /// It is in host memory until the caller drops it (zeroized), at the end of one call.
    fn area_key(&self, card_id: &CardId, service: ServiceCode) -> Result<AesKey, SamError> {
        // The constants of `valuecard_core::messages::services::area_key`.
        let constant = match self.key_state() {
            KeyState::Main => derivation::MAIN_KEY,
            KeyState::Temporary => derivation::TEMPORARY_KEY,
        };
        let input = diversification_input(constant, &area_identifier(card_id, service));
        self.session
            .lock()
            .cmac_derived_key(self.master, &input)
            .map_err(unavailable)
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SamError> {
        self.session
            .lock()
            .sign_eddsa(self.signing_key, message)
            .map(Signature)
            .map_err(unavailable)
    }

    /// The copies' key: a transfer SAM's only.
    fn storage(&self, what: &'static str) -> Result<ObjectHandle, SamError> {
        self.storage.ok_or(SamError::Unsupported(what))
    }
}

/// Creates the AES key `part` in the token for `usage`, refusing a label already taken.
fn add_key(
    token: &TokenSession,
    part: Part,
    key: NewMaster,
    usage: AesUse,
) -> Result<ObjectHandle, Pkcs11SamError> {
    if token.find(ObjectClass::SECRET_KEY, part)?.is_some() {
        return Err(Pkcs11SamError::AlreadyExists(
            String::from_utf8_lossy(&part.label(&token.object)).into_owned(),
        ));
    }
    match key {
        NewMaster::Generate => token.generate_aes_key_for(part, usage),
        // `key` is dropped, and so zeroized, at the end of this arm.
        NewMaster::Import(key) => token.store_aes_key_for(part, key.expose(), usage),
    }
}

impl ProviderSam for Pkcs11ProviderSam {
    fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    fn key_state(&self) -> KeyState {
        if self.storage.is_some() {
            KeyState::Temporary
        } else {
            KeyState::Main
        }
    }

    fn key_package(
        &self,
        card_certificate: &Certificate,
        service: ServiceCode,
        today: Date,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<KeyPackage, SamError> {
        let issuer = PackageIssuer {
            certificate: &self.certificate,
            anchor: &self.anchor,
            state: self.key_state(),
        };
        build_key_package(
            issuer,
            card_certificate,
            service,
            today,
            rng,
            |card_id| self.area_key(card_id, service),
            |message| self.sign(message),
        )
    }

    fn open_channel(
        &self,
        binding: ChannelBinding,
        card_cryptogram: &[u8; SERVICE_CRYPTOGRAM_LEN],
    ) -> Result<(ServiceChannel, [u8; SERVICE_CRYPTOGRAM_LEN]), SamError> {
        check_channel_state(&binding, self.key_state())?;
        let key = self.area_key(&binding.card_id, binding.service)?;
        Ok(ServiceChannel::for_host(&key, binding, card_cryptogram)?)
    }

    fn resume_channel(
        &self,
        binding: ChannelBinding,
        counters: (u32, u32),
    ) -> Result<ServiceChannel, SamError> {
        check_channel_state(&binding, self.key_state())?;
        let key = self.area_key(&binding.card_id, binding.service)?;
        Ok(ServiceChannel::resume_host(&key, binding, counters))
    }

    fn seal_copy(
        &self,
        move_id: &MoveId,
        service: ServiceCode,
        source: &CardId,
        exported: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<u8>, SamError> {
        let storage = self.storage("only a transfer SAM keeps copies")?;
        let nonce: [u8; GCM_NONCE_LEN] = random_array(rng);
        let ciphertext = self
            .session
            .lock()
            .aes_gcm_encrypt(
                storage,
                &nonce,
                &copy_context(move_id, service, source),
                exported,
            )
            .map_err(unavailable)?;
        Ok(join_sealed_copy(&nonce, &ciphertext))
    }

    fn open_copy(
        &self,
        move_id: &MoveId,
        service: ServiceCode,
        source: &CardId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SamError> {
        let storage = self.storage("only a transfer SAM keeps copies")?;
        let (nonce, ciphertext) = split_sealed_copy(sealed)?;
        let mut opened = self
            .session
            .lock()
            .aes_gcm_decrypt(
                storage,
                nonce,
                &copy_context(move_id, service, source),
                ciphertext,
            )
            .map_err(unavailable)?
            .ok_or(SamError::Copy)?;
        Ok(std::mem::take(&mut *opened))
    }

    fn sign_migration_record(&self, record: &MigrationRecord) -> Result<Signature, SamError> {
        self.storage("only a transfer SAM writes a move's records")?;
        check_record_writer(record, &self.certificate)?;
        self.sign(&record.signed_message())
    }

    fn sign_center_request(
        &self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, SamError> {
        self.storage("only a transfer SAM reports to the center")?;
        self.sign(&valuecard_sam::request_signing_input(
            method, path, sequence, body,
        ))
    }
}
