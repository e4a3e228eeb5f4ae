//! The security server's keys: the online master keys M (one per version, from which every
//! card's KC is diversified) and its Ed25519 signing key with the certificate the center
//! issued it (role `OnlineSettlement`). Behind a trait so that a token can hold them.

use std::collections::BTreeMap;

use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{diversify_key, AesKey, PublicKey, Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::derivation;

/// The keys could not be used (a token refused or went away): the step is refused before
/// anything is sealed for the card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the security server's keys are unavailable: {0}")]
pub struct KeysUnavailable(pub String);

/// What the security server's keys do; no method returns M or the signing key.
pub trait SecurityKeys {
    /// The certificate the center issued the security server.
    fn certificate(&self) -> &Certificate;

    fn device_id(&self) -> DeviceId {
        self.certificate().subject()
    }

    fn signing_key(&self) -> PublicKey;

    /// The version of M new cards are given KC under.
    fn current_version(&self) -> u32;

    /// KC of `card_id` under M of `version`, if that version is held.
    fn card_key(&self, card_id: &CardId, version: u32) -> Result<Option<AesKey>, KeysUnavailable>;

    /// Signs `message` with the security server's certified key.
    fn sign(&self, message: &[u8]) -> Result<Signature, KeysUnavailable>;
}

/// The keys in the process's memory (zeroized on drop).
pub struct SoftwareSecurityKeys {
    masters: BTreeMap<u32, AesKey>,
    signing: SigningKeyPair,
    certificate: Certificate,
}

impl core::fmt::Debug for SoftwareSecurityKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftwareSecurityKeys")
            .field("device_id", &self.certificate.subject())
            .field("versions", &self.masters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SoftwareSecurityKeys {
    /// Keys from M of version 1, the signing key and its certificate.
    pub fn new(master: AesKey, signing: SigningKeyPair, certificate: Certificate) -> Self {
        SoftwareSecurityKeys {
            masters: BTreeMap::from([(1, master)]),
            signing,
            certificate,
        }
    }

    /// Adds M of a newer version, which new installations then use; older versions stay,
    /// so cards not yet given the new KC keep working.
    pub fn rotate(&mut self, master: AesKey) -> u32 {
        let version = self.current_version() + 1;
        self.masters.insert(version, master);
        version
    }
}

impl SecurityKeys for SoftwareSecurityKeys {
    fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    fn signing_key(&self) -> PublicKey {
        self.signing.public_key()
    }

    fn current_version(&self) -> u32 {
        self.masters.keys().next_back().copied().unwrap_or(1)
    }

    fn card_key(&self, card_id: &CardId, version: u32) -> Result<Option<AesKey>, KeysUnavailable> {
        Ok(self
            .masters
            .get(&version)
            .map(|master| diversify_key(master, derivation::CARD_KEY, card_id.as_bytes())))
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, KeysUnavailable> {
        Ok(self.signing.sign(message))
    }
}

/// Keys shared (a service's security server and its reporter to the center sign with one
/// set of keys).
impl<K: SecurityKeys + ?Sized> SecurityKeys for std::sync::Arc<K> {
    fn certificate(&self) -> &Certificate {
        (**self).certificate()
    }

    fn device_id(&self) -> DeviceId {
        (**self).device_id()
    }

    fn signing_key(&self) -> PublicKey {
        (**self).signing_key()
    }

    fn current_version(&self) -> u32 {
        (**self).current_version()
    }

    fn card_key(&self, card_id: &CardId, version: u32) -> Result<Option<AesKey>, KeysUnavailable> {
        (**self).card_key(card_id, version)
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, KeysUnavailable> {
        (**self).sign(message)
    }
}
