//! The online security server's keys (seed 004) in a PKCS#11 token: its master keys M, one
//! AES key object per version, and its Ed25519 signing key, as
//! [`valuecard_settle::security::SecurityKeys`].
//!
//! | what | where |
//! |---|---|
//! | M of version N | an AES-128 secret key labelled `{object}/master-vN`, sensitive, never extractable, CMAC only; generated in the token (CKM_AES_KEY_GEN), or imported once to carry a software M over |
//! | Ed25519 signing key | generated in the token under the bare label `{object}`, as a SAM's; signs with CKM_EDDSA |
//! | certificate | the caller's (a file): the center reissues it without touching the token |
//!
//! **What leaves the token:** a card's KC, one CKM_AES_CMAC under M over the input of
//! `valuecard_core::crypto::diversify_key`, so that it equals the software KC byte for byte.
//! KC must leave: the security server seals it to the card at INSTALL KEY and runs the
//! session's cryptograms and sealing in software. It is held in a zeroizing `AesKey` for one
//! step of the protocol. M itself never leaves the token.
//!
//! M is AES-128 and not AES-256 because KC is `diversify_key(M, ...)` with an AES-128 M (the
//! software keys' `AesKey`): a CMAC under an AES-256 M would give other KCs, and a card
//! installed by a software security server would no longer authenticate after its M moved
//! into a token.
//!
//! **Architecture invariant:** nothing here reads a master key's value, and a token's
//! failure never panics: `card_key` and `sign` answer [`KeysUnavailable`], so the security
//! server refuses the step before anything is sealed for the card, and the failure is kept
//! for [`Pkcs11SecurityKeys::take_failure`].

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use cryptoki::object::{ObjectClass, ObjectHandle};
use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::{diversification_input, AesKey, PublicKey, Signature, PUBLIC_KEY_LEN};
use valuecard_core::ids::CardId;
use valuecard_core::messages::online::derivation;
use valuecard_settle::security::{KeysUnavailable, SecurityKeys};

use crate::token::{Part, TokenSession};
use crate::{Pkcs11SamError, TokenAddress};

/// Where a new version of M comes from; also a move SAM's master key or a transfer SAM's
/// storage key (`crate::move_sams`).
#[derive(Debug)]
pub enum NewMaster {
    /// Generated in the token (CKM_AES_KEY_GEN): the value never exists anywhere else.
    Generate,
    /// A master key that exists outside the token: a software security server's M carried
    /// over so that its cards keep their KC, or a known key in tests. The token marks it
    /// neither CKA_ALWAYS_SENSITIVE nor CKA_NEVER_EXTRACTABLE; the key is zeroized when the
    /// import returns.
    Import(AesKey),
}

/// Why the security server's keys could not be set up or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityKeysError {
    /// The token, its module or its PIN (see [`Pkcs11SamError`]).
    #[error(transparent)]
    Token(#[from] Pkcs11SamError),
    #[error("the certificate is for the role {0:?}, not the online security server's")]
    WrongRole(Role),
    #[error("the certificate certifies another key than the token's signing key")]
    ForeignCertificate,
    #[error("the token holds no master key labelled {0:?} or later")]
    NoMasterKey(String),
    #[error("no master key version follows {0}")]
    VersionsExhausted(u32),
}

/// What the token session guards: every call on a PKCS#11 session is made under one lock,
/// since a session serves one thread at a time.
struct Held {
    token: TokenSession,
    /// Invariant: never empty once opened (`open` refuses a token without M, and versions
    /// are only ever added).
    masters: BTreeMap<u32, ObjectHandle>,
    /// The last failure of the token in `card_key` or `sign`, until taken.
    failure: Option<SecurityKeysError>,
}

/// The security server's master keys and signing key in a PKCS#11 token.
pub struct Pkcs11SecurityKeys {
    held: Mutex<Held>,
    signing_key: ObjectHandle,
    signing_public: PublicKey,
    certificate: Certificate,
    locator: String,
}

impl core::fmt::Debug for Pkcs11SecurityKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11SecurityKeys")
            .field("locator", &self.locator)
            .field("device_id", &self.certificate.subject())
            .finish_non_exhaustive()
    }
}

impl Pkcs11SecurityKeys {
    /// Sets up a new security server in the token: its Ed25519 key pair generated there and
    /// M of version 1. Gives the public key for the center to certify (role
    /// `OnlineSettlement`); [`Self::open`] then takes that certificate. Refused if the
    /// token already has objects under the URI's label. On failure nothing is left behind,
    /// so that the same label can be set up again.
    pub fn provision(
        address: &TokenAddress,
        first_master: NewMaster,
    ) -> Result<PublicKey, SecurityKeysError> {
        let token = address.session()?;
        if token.any_object_exists()? || !token.master_keys()?.is_empty() {
            return Err(Pkcs11SamError::AlreadyExists(token.object.clone()).into());
        }
        let (private, public) = token.generate_signing_pair()?;
        let stored = PublicKey::from_bytes(&public)
            .map_err(|_| SecurityKeysError::from(Pkcs11SamError::BadPublicKey))
            .and_then(|key| add_master(&token, 1, first_master).map(|_| key));
        if stored.is_err() {
            // Best effort: the error to report is the first one.
            let _ = token.destroy(private);
            if let Ok(Some(public)) = token.find(ObjectClass::PUBLIC_KEY, Part::Signing) {
                let _ = token.destroy(public);
            }
        }
        stored
    }

    /// Opens the security server the URI names, with the certificate the center issued for
    /// its signing key, and learns which versions of M the token holds (the highest is the
    /// current one).
    pub fn open(
        address: &TokenAddress,
        certificate: Certificate,
    ) -> Result<Self, SecurityKeysError> {
        let token = address.session()?;
        let signing_key = token.require(ObjectClass::PRIVATE_KEY, Part::Signing)?;
        let public = token.public_point(token.require(ObjectClass::PUBLIC_KEY, Part::Signing)?)?;
        check_certificate(&certificate, &public)?;
        let masters = token.master_keys()?;
        if masters.is_empty() {
            return Err(SecurityKeysError::NoMasterKey(
                String::from_utf8_lossy(&Part::Master(1).label(&token.object)).into_owned(),
            ));
        }
        Ok(Pkcs11SecurityKeys {
            signing_key,
            signing_public: certificate.body.signing_key,
            certificate,
            locator: address.uri.without_pin(),
            held: Mutex::new(Held {
                token,
                masters,
                failure: None,
            }),
        })
    }

    /// Rotation: adds M of the version after the highest the token holds now (another
    /// process may have added one since this one opened), which new installations then use.
    /// Older versions stay, so cards not yet given the new KC keep working.
    pub fn rotate(&mut self, next: NewMaster) -> Result<u32, SecurityKeysError> {
        let held = self
            .held
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let masters = held.token.master_keys()?;
        let highest = masters.keys().next_back().copied().unwrap_or(0);
        let version = highest
            .checked_add(1)
            .ok_or(SecurityKeysError::VersionsExhausted(highest))?;
        held.masters.extend(masters);
        let handle = add_master(&held.token, version, next)?;
        held.masters.insert(version, handle);
        Ok(version)
    }

    /// The versions of M this object knows, lowest first.
    pub fn versions(&self) -> Vec<u32> {
        self.held().masters.keys().copied().collect()
    }

    /// The URI without PIN, as a configuration records it.
    pub fn locator(&self) -> &str {
        &self.locator
    }

    /// The token's last failure in `card_key` or `sign` with its typed cause (those methods
    /// answer it as [`KeysUnavailable`], a message only), and forgets it: for the operator's
    /// log.
    pub fn take_failure(&self) -> Option<SecurityKeysError> {
        self.held().failure.take()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A poisoned lock only means a thread panicked while holding it; the session keeps
        // no half-made state between calls and the map is only ever added to.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The certificate must be the online security server's, for the token's signing key.
fn check_certificate(
    certificate: &Certificate,
    public: &[u8; PUBLIC_KEY_LEN],
) -> Result<(), SecurityKeysError> {
    if certificate.body.role != Role::OnlineSettlement {
        return Err(SecurityKeysError::WrongRole(certificate.body.role));
    }
    if certificate.body.signing_key.to_bytes() != *public {
        return Err(SecurityKeysError::ForeignCertificate);
    }
    Ok(())
}

/// Creates M of `version` in the token, refusing a label already taken.
fn add_master(
    token: &TokenSession,
    version: u32,
    master: NewMaster,
) -> Result<ObjectHandle, SecurityKeysError> {
    let part = Part::Master(version);
    if token.find(ObjectClass::SECRET_KEY, part)?.is_some() {
        return Err(Pkcs11SamError::AlreadyExists(
            String::from_utf8_lossy(&part.label(&token.object)).into_owned(),
        )
        .into());
    }
    let handle = match master {
        NewMaster::Generate => token.generate_aes_key(part)?,
        // `key` is dropped, and so zeroized, at the end of this arm.
        NewMaster::Import(key) => token.store_aes_key(part, key.expose())?,
    };
    Ok(handle)
}

impl Held {
    /// The handle of M of `version`: known, or looked up in the token when another process
    /// added it after this one opened (its cards then present a version this one never saw).
    fn master(&mut self, version: u32) -> Result<Option<ObjectHandle>, Pkcs11SamError> {
        if let Some(handle) = self.masters.get(&version) {
            return Ok(Some(*handle));
        }
        let found = self
            .token
            .find(ObjectClass::SECRET_KEY, Part::Master(version))?;
        if let Some(handle) = found {
            self.masters.insert(version, handle);
        }
        Ok(found)
    }

    fn card_key(
        &mut self,
        card_id: &CardId,
        version: u32,
    ) -> Result<Option<AesKey>, Pkcs11SamError> {
        let Some(master) = self.master(version)? else {
            return Ok(None);
        };
        // The one CMAC block of `diversify_key(M, CARD_KEY, card ID)`.
        let input = diversification_input(derivation::CARD_KEY, card_id.as_bytes());
        self.token.cmac_derived_key(master, &input).map(Some)
    }
}

impl SecurityKeys for Pkcs11SecurityKeys {
    fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    fn signing_key(&self) -> PublicKey {
        self.signing_public
    }

    fn current_version(&self) -> u32 {
        // `Held::masters` is never empty; 1 is what the software keys answer too.
        self.held().masters.keys().next_back().copied().unwrap_or(1)
    }

    fn card_key(&self, card_id: &CardId, version: u32) -> Result<Option<AesKey>, KeysUnavailable> {
        let mut held = self.held();
        held.card_key(card_id, version).map_err(|error| {
            let unavailable = KeysUnavailable(error.to_string());
            held.failure = Some(error.into());
            unavailable
        })
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, KeysUnavailable> {
        let mut held = self.held();
        held.token
            .sign_eddsa(self.signing_key, message)
            .map(Signature)
            .map_err(|error| {
                let unavailable = KeysUnavailable(error.to_string());
                held.failure = Some(error.into());
                unavailable
            })
    }
}
