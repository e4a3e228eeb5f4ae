//! The secure modules of a move. Each is a trait with a software implementation, so a
//! PKCS#11 token can stand in for any of them; none has a method that returns a master key,
//! and each signs only what it builds and checks itself.
//!
//! - [`AdminSam`]: the move server's administrative SAM 21. It signs the formats and key
//!   switches of chips, over the chip's challenge. It holds no area key of any provider.
//! - [`ProviderSam`]: one of a provider's two SAMs, the normal SAM 11 (main keys) or the
//!   transfer SAM 12 (temporary keys), each with its own master key: it seals its area keys
//!   to a chip in a key package and opens a service channel with a chip. The transfer SAM
//!   also seals and opens the move's uploaded copies (which only it can read) and signs the
//!   purse record of a move's download.

use rand_core::CryptoRngCore;
use valuecard_core::cert::{Certificate, Role, TrustAnchor, VerifiedCertificate};
use valuecard_core::crypto::{
    aes_gcm_open, aes_gcm_seal, random_array, seal_to, AesKey, Signature, SigningKeyPair,
    GCM_NONCE_LEN,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::services::{
    area_key, AreaFormat, ChannelBinding, ChannelError, FormatArea, KeyChange, KeyPackage,
    KeyState, MigrationRecord, MoveId, ServiceChannel, ServiceCode, SwitchKeys,
    SERVICE_CRYPTOGRAM_LEN,
};
use valuecard_core::time::Date;

/// Why a SAM refused or could not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SamError {
    /// The chip's certificate does not chain to the center's root as a card's.
    #[error("the chip's certificate is not a card certificate of this scheme: {0}")]
    CardCertificate(String),
    /// The chip's certificate carries no X25519 key to seal a key to.
    #[error("the chip's certificate has no sealing key")]
    NoSealingKey,
    /// The chip did not prove the area key.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A kept copy did not open: altered, or another move's or service's.
    #[error("a kept copy does not open under this SAM")]
    Copy,
    /// The SAM is not of the kind the operation needs.
    #[error("this SAM does not do that: {0}")]
    Unsupported(&'static str),
    /// The token behind the SAM failed.
    #[error("the SAM is unavailable: {0}")]
    Unavailable(String),
}

/// The move server's administrative SAM.
pub trait AdminSam: Send + Sync {
    fn certificate(&self) -> &Certificate;

    /// SWITCH KEYS for `card_id` over its `challenge`.
    fn switch_keys(
        &self,
        card_id: &CardId,
        challenge: &Challenge,
        move_id: MoveId,
        changes: Vec<KeyChange>,
    ) -> Result<SwitchKeys, SamError>;

    /// FORMAT AREA for `card_id` over its `challenge`, with the provider's two packages.
    fn format_area(
        &self,
        card_id: &CardId,
        challenge: &Challenge,
        format: AreaFormat,
        initial_state: KeyState,
        main_package: KeyPackage,
        temporary_package: KeyPackage,
    ) -> Result<FormatArea, SamError>;
}

/// An administrative SAM whose signing key is in memory.
pub struct SoftwareAdminSam {
    key: SigningKeyPair,
    certificate: Certificate,
}

impl core::fmt::Debug for SoftwareAdminSam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftwareAdminSam")
            .field("subject", &self.certificate.subject())
            .finish_non_exhaustive()
    }
}

impl SoftwareAdminSam {
    /// Refuses a certificate that is not a move administrator's or not for `key`.
    pub fn new(key: SigningKeyPair, certificate: Certificate) -> Result<Self, SamError> {
        if certificate.body.role != Role::MoveAdministrator
            || certificate.body.signing_key != key.public_key()
        {
            return Err(SamError::Unsupported(
                "the certificate is not a move administrator's for this key",
            ));
        }
        Ok(SoftwareAdminSam { key, certificate })
    }
}

impl AdminSam for SoftwareAdminSam {
    fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    fn switch_keys(
        &self,
        card_id: &CardId,
        challenge: &Challenge,
        move_id: MoveId,
        changes: Vec<KeyChange>,
    ) -> Result<SwitchKeys, SamError> {
        build_switch_keys(
            &self.certificate,
            card_id,
            challenge,
            move_id,
            changes,
            |message| Ok(self.key.sign(message)),
        )
    }

    fn format_area(
        &self,
        card_id: &CardId,
        challenge: &Challenge,
        format: AreaFormat,
        initial_state: KeyState,
        main_package: KeyPackage,
        temporary_package: KeyPackage,
    ) -> Result<FormatArea, SamError> {
        build_format_area(
            &self.certificate,
            card_id,
            challenge,
            format,
            initial_state,
            (main_package, temporary_package),
            |message| Ok(self.key.sign(message)),
        )
    }
}

/// The check every administrative SAM makes before it signs FORMAT AREA: it formats an area
/// only with packages that belong to it, the main key's from the area's provider and the
/// temporary key's from its mover, both for the area's service.
pub fn check_format_packages(
    format: &AreaFormat,
    main_package: &KeyPackage,
    temporary_package: &KeyPackage,
) -> Result<(), SamError> {
    if main_package.key_state != KeyState::Main
        || temporary_package.key_state != KeyState::Temporary
        || main_package.service != format.service
        || temporary_package.service != format.service
        || main_package.issuer_certificate.subject() != format.provider
        || temporary_package.issuer_certificate.subject() != format.mover
    {
        return Err(SamError::Unsupported(
            "the key packages are not this area's provider's",
        ));
    }
    Ok(())
}

/// The version of the area keys every provider SAM issues (no rotation yet).
pub const AREA_KEY_VERSION: u32 = 1;

// What each SAM builds and checks, whatever holds its keys: the software SAMs and the
// PKCS#11 ones (`valuecard_sam_pkcs11::move_sams`) differ only in `sign` and `area_key`.

/// SWITCH KEYS as an administrative SAM builds it, signed by `sign`.
pub fn build_switch_keys(
    admin: &Certificate,
    card_id: &CardId,
    challenge: &Challenge,
    move_id: MoveId,
    changes: Vec<KeyChange>,
    sign: impl FnOnce(&[u8]) -> Result<Signature, SamError>,
) -> Result<SwitchKeys, SamError> {
    Ok(SwitchKeys {
        signature: sign(&SwitchKeys::signed_message(
            card_id, challenge, &move_id, &changes,
        ))?,
        admin_certificate: admin.clone(),
        move_id,
        changes,
    })
}

/// FORMAT AREA as an administrative SAM builds it: the packages checked
/// ([`check_format_packages`]), the command signed by `sign`.
pub fn build_format_area(
    admin: &Certificate,
    card_id: &CardId,
    challenge: &Challenge,
    format: AreaFormat,
    initial_state: KeyState,
    (main_package, temporary_package): (KeyPackage, KeyPackage),
    sign: impl FnOnce(&[u8]) -> Result<Signature, SamError>,
) -> Result<FormatArea, SamError> {
    check_format_packages(&format, &main_package, &temporary_package)?;
    Ok(FormatArea {
        signature: sign(&FormatArea::signed_message(
            card_id,
            challenge,
            &format,
            initial_state,
            &main_package.signature,
            &temporary_package.signature,
        ))?,
        admin_certificate: admin.clone(),
        format,
        initial_state,
        main_package,
        temporary_package,
    })
}

/// Who issues a key package: a provider SAM's certificate, the root it checks chips under,
/// and the key state its master derives.
#[derive(Debug, Clone, Copy)]
pub struct PackageIssuer<'a> {
    pub certificate: &'a Certificate,
    pub anchor: &'a TrustAnchor,
    pub state: KeyState,
}

/// A key package as a provider SAM builds it: the chip's certificate checked under the
/// issuer's root on `today`, the area key (from `area_key`, wherever the master is) sealed
/// to the chip's X25519 key, the package signed by `sign`.
pub fn build_key_package(
    issuer: PackageIssuer<'_>,
    card_certificate: &Certificate,
    service: ServiceCode,
    today: Date,
    rng: &mut dyn CryptoRngCore,
    area_key: impl FnOnce(&CardId) -> Result<AesKey, SamError>,
    sign: impl FnOnce(&[u8]) -> Result<Signature, SamError>,
) -> Result<KeyPackage, SamError> {
    let card = verify_card_certificate(issuer.anchor, card_certificate, today)?;
    let recipient = card.sealing_key().ok_or(SamError::NoSealingKey)?;
    let card_id = CardId(card.subject().0);
    let key = area_key(&card_id)?;
    let sealed_key = seal_to(
        rng,
        recipient,
        &KeyPackage::seal_context(&card_id, service, issuer.state, AREA_KEY_VERSION),
        key.expose(),
    )
    .map_err(|error| SamError::Unavailable(error.to_string()))?;
    drop(key);
    Ok(KeyPackage {
        signature: sign(&KeyPackage::signed_message(
            &card_id,
            service,
            issuer.state,
            AREA_KEY_VERSION,
            &sealed_key,
        ))?,
        issuer_certificate: issuer.certificate.clone(),
        service,
        key_state: issuer.state,
        key_version: AREA_KEY_VERSION,
        sealed_key,
    })
}

/// A SAM opens channels only in the key state its master derives.
pub fn check_channel_state(binding: &ChannelBinding, state: KeyState) -> Result<(), SamError> {
    if binding.key_state != state {
        return Err(SamError::Channel(ChannelError::CardCryptogram));
    }
    Ok(())
}

/// A transfer SAM signs only the records it wrote itself.
pub fn check_record_writer(
    record: &MigrationRecord,
    certificate: &Certificate,
) -> Result<(), SamError> {
    if record.writer != certificate.subject() {
        return Err(SamError::Unsupported("a record written by another SAM"));
    }
    Ok(())
}

/// A kept copy's layout: the GCM nonce, then the ciphertext (with its tag).
pub fn join_sealed_copy(nonce: &[u8; GCM_NONCE_LEN], ciphertext: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(GCM_NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(nonce);
    sealed.extend_from_slice(ciphertext);
    sealed
}

/// The nonce and the ciphertext of a copy [`join_sealed_copy`] laid out.
pub fn split_sealed_copy(sealed: &[u8]) -> Result<(&[u8; GCM_NONCE_LEN], &[u8]), SamError> {
    sealed
        .split_first_chunk::<GCM_NONCE_LEN>()
        .ok_or(SamError::Copy)
}

/// One of a provider's SAMs: the normal SAM (its master derives main keys) or the transfer
/// SAM (temporary keys).
pub trait ProviderSam: Send + Sync {
    fn certificate(&self) -> &Certificate;

    /// Which keys this SAM holds.
    fn key_state(&self) -> KeyState;

    /// The area key of `service` on `card` sealed to the chip, after checking the chip's
    /// certificate under the center's root on `today`.
    fn key_package(
        &self,
        card_certificate: &Certificate,
        service: ServiceCode,
        today: Date,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<KeyPackage, SamError>;

    /// The host's side of a service channel: checks the card's cryptogram, gives the
    /// channel and the host's cryptogram.
    fn open_channel(
        &self,
        binding: ChannelBinding,
        card_cryptogram: &[u8; SERVICE_CRYPTOGRAM_LEN],
    ) -> Result<(ServiceChannel, [u8; SERVICE_CRYPTOGRAM_LEN]), SamError>;

    /// A channel kept between requests, taken up again at its counters.
    fn resume_channel(
        &self,
        binding: ChannelBinding,
        counters: (u32, u32),
    ) -> Result<ServiceChannel, SamError>;

    /// Transfer SAM: seals an uploaded area so that only this SAM opens it again, bound to
    /// the move, the service and the old chip.
    fn seal_copy(
        &self,
        move_id: &MoveId,
        service: ServiceCode,
        source: &CardId,
        exported: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<u8>, SamError>;

    /// Transfer SAM: opens a copy it sealed.
    fn open_copy(
        &self,
        move_id: &MoveId,
        service: ServiceCode,
        source: &CardId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SamError>;

    /// Transfer SAM of the purse's provider: signs the record that credits a moved value to
    /// the new chip's purse.
    fn sign_migration_record(&self, record: &MigrationRecord) -> Result<Signature, SamError>;

    /// Transfer SAM: signs one request to the center (over
    /// `valuecard_sam::request_signing_input`, which no record or package shares), so that
    /// the center takes the purse's moves from this certified device and no other.
    fn sign_center_request(
        &self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, SamError>;
}

/// A provider SAM whose keys are in memory.
pub struct SoftwareProviderSam {
    master: AesKey,
    /// A transfer SAM's key for its copies; a normal SAM has none.
    storage: Option<AesKey>,
    signing: SigningKeyPair,
    certificate: Certificate,
    anchor: TrustAnchor,
}

impl core::fmt::Debug for SoftwareProviderSam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftwareProviderSam")
            .field("subject", &self.certificate.subject())
            .field("key_state", &self.key_state())
            .finish_non_exhaustive()
    }
}

impl SoftwareProviderSam {
    /// A normal SAM: its certificate has role `ServiceProvider`, its master derives main keys.
    pub fn normal(
        master: AesKey,
        signing: SigningKeyPair,
        certificate: Certificate,
        anchor: TrustAnchor,
    ) -> Result<Self, SamError> {
        Self::with(
            master,
            None,
            signing,
            certificate,
            anchor,
            Role::ServiceProvider,
        )
    }

    /// A transfer SAM: its certificate has role `ServiceTransfer`, its master derives
    /// temporary keys, and `storage` seals its copies.
    pub fn transfer(
        master: AesKey,
        storage: AesKey,
        signing: SigningKeyPair,
        certificate: Certificate,
        anchor: TrustAnchor,
    ) -> Result<Self, SamError> {
        Self::with(
            master,
            Some(storage),
            signing,
            certificate,
            anchor,
            Role::ServiceTransfer,
        )
    }

    fn with(
        master: AesKey,
        storage: Option<AesKey>,
        signing: SigningKeyPair,
        certificate: Certificate,
        anchor: TrustAnchor,
        role: Role,
    ) -> Result<Self, SamError> {
        if certificate.body.role != role {
            return Err(SamError::Unsupported(
                "the certificate is not of this SAM's role",
            ));
        }
        if certificate.body.signing_key != signing.public_key() {
            return Err(SamError::Unsupported("the certificate is not for this key"));
        }
        Ok(SoftwareProviderSam {
            master,
            storage,
            signing,
            certificate,
            anchor,
        })
    }

    pub fn subject(&self) -> DeviceId {
        self.certificate.subject()
    }

    /// The copies' key: a transfer SAM's only.
    fn storage(&self, what: &'static str) -> Result<&AesKey, SamError> {
        self.storage.as_ref().ok_or(SamError::Unsupported(what))
    }
}

/// The associated data of a kept copy (AES-GCM under the transfer SAM's storage key, with
/// a 12-byte nonce before the ciphertext), the same for every implementation of the
/// transfer SAM so that a copy sealed by one opens in another holding the same key.
pub fn copy_context(move_id: &MoveId, service: ServiceCode, source: &CardId) -> Vec<u8> {
    let mut aad = b"valuecard/services/copy/v1".to_vec();
    aad.extend_from_slice(move_id);
    aad.extend_from_slice(&service.0.to_be_bytes());
    aad.extend_from_slice(source.as_bytes());
    aad
}

/// Checks a chip's certificate as a card's under `anchor` on `date`.
pub fn verify_card_certificate(
    anchor: &TrustAnchor,
    certificate: &Certificate,
    date: Date,
) -> Result<VerifiedCertificate, SamError> {
    anchor
        .verify_unexpired(core::slice::from_ref(certificate), Role::Card, date)
        .map_err(|error| SamError::CardCertificate(error.to_string()))
}

impl ProviderSam for SoftwareProviderSam {
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
            |card_id| Ok(area_key(&self.master, issuer.state, card_id, service)),
            |message| Ok(self.signing.sign(message)),
        )
    }

    fn open_channel(
        &self,
        binding: ChannelBinding,
        card_cryptogram: &[u8; SERVICE_CRYPTOGRAM_LEN],
    ) -> Result<(ServiceChannel, [u8; SERVICE_CRYPTOGRAM_LEN]), SamError> {
        check_channel_state(&binding, self.key_state())?;
        let key = area_key(
            &self.master,
            self.key_state(),
            &binding.card_id,
            binding.service,
        );
        Ok(ServiceChannel::for_host(&key, binding, card_cryptogram)?)
    }

    fn resume_channel(
        &self,
        binding: ChannelBinding,
        counters: (u32, u32),
    ) -> Result<ServiceChannel, SamError> {
        check_channel_state(&binding, self.key_state())?;
        let key = area_key(
            &self.master,
            self.key_state(),
            &binding.card_id,
            binding.service,
        );
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
        let ciphertext = aes_gcm_seal(
            storage,
            &nonce,
            &copy_context(move_id, service, source),
            exported,
        );
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
        aes_gcm_open(
            storage,
            nonce,
            &copy_context(move_id, service, source),
            ciphertext,
        )
        .map_err(|_| SamError::Copy)
    }

    fn sign_migration_record(&self, record: &MigrationRecord) -> Result<Signature, SamError> {
        self.storage("only a transfer SAM writes a move's records")?;
        check_record_writer(record, &self.certificate)?;
        Ok(self.signing.sign(&record.signed_message()))
    }

    fn sign_center_request(
        &self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, SamError> {
        self.storage("only a transfer SAM reports to the center")?;
        Ok(self.signing.sign(&valuecard_sam::request_signing_input(
            method, path, sequence, body,
        )))
    }
}
