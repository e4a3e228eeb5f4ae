//! Seed 002's secure modules in a PKCS#11 token: the move server's administrative SAM
//! ([`Pkcs11AdminSam`], `valuecard_migrate::sam::AdminSam`) and a provider's normal or
//! transfer SAM ([`Pkcs11ProviderSam`], `valuecard_migrate::sam::ProviderSam`). Each
//! builds every message it signs with the same code as the software SAMs
//! (`valuecard_core::messages::services`, `valuecard_migrate::sam`), so a chip cannot tell
//! which kind signed, and a token given the software SAM's keys answers byte for byte as
//! the software SAM does.
//!
//! | what | where |
//! |---|---|
//! | Ed25519 signing key (either SAM) | generated in the token under the bare label `{object}`; signs with CKM_EDDSA |
//! | a provider SAM's master key | an AES-128 secret key `{object}/area-master`, sensitive, never extractable, CMAC only; generated in the token, or imported once to carry a software SAM's master over (its chips keep their area keys) |
//! | a transfer SAM's storage key | an AES-128 secret key `{object}/copy-storage`, sensitive, never extractable, CKM_AES_GCM encrypt and decrypt only; generated, or imported so that copies sealed by a software SAM still open |
//! | certificate, anchor | the caller's: the center reissues a certificate without touching the token |
//!
//! **What leaves the token.** An area key is `area_key(master, state, card ID, service)`,
//! the SP 800-108 CMAC KDF of `valuecard_core::crypto::kdf_cmac_scp03` with L = 128 bits:
//! one block, so one AES-CMAC under the master over
//! `valuecard_core::crypto::diversification_input(constant, card ID || service code)`. The
//! token computes that CMAC (CKM_AES_CMAC) and its output is the area key, equal to the
//! software derivation byte for byte. It leaves the token, for one call, in a zeroizing
//! `AesKey`:
//! - in a key package, to be sealed to the chip's X25519 key with `seal_to` (X25519, HKDF,
//!   AES-GCM under a fresh ephemeral key), which a PKCS#11 2.40 token cannot do: it has no
//!   HKDF, and the area key, a CMAC output, cannot become a token object without passing
//!   through the host (SoftHSM2 2.6 has no SP 800-108 KDF to derive it into one);
//! - at a service channel, whose session key is derived from it and whose messages are
//!   AES-GCM in software (`ServiceChannel`, shared with the chip's side).
//!
//! A copy of a move is sealed and opened with CKM_AES_GCM inside the token, with the
//! associated data of `valuecard_migrate::sam::copy_context` and the layout of the software
//! SAM (nonce, then ciphertext and tag), so a copy exists in the clear outside the token
//! only when `open_copy` hands it to the download's channel to the new chip. The master
//! keys, the storage key and the signing keys never leave.
//!
//! **Invariant:** nothing here reads a key object's value, and a token's failure never
//! panics: the SAM answers `SamError::Unavailable` (the PKCS#11 function and return value,
//! never a key) and the provider refuses the step.

mod admin;
mod provider;
mod system;

use std::sync::{Mutex, MutexGuard};

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{ObjectClass, ObjectHandle};
use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::PublicKey;
use valuecard_migrate::sam::SamError;

pub use admin::Pkcs11AdminSam;
pub use provider::Pkcs11ProviderSam;
pub use system::TokenMoveSams;

use crate::token::{Part, TokenSession};
use crate::Pkcs11SamError;

/// Why a move SAM in a token could not be set up or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoveSamError {
    /// The token, its module or its PIN (see [`Pkcs11SamError`]).
    #[error(transparent)]
    Token(#[from] Pkcs11SamError),
    #[error("the certificate is for the role {0:?}, which is not this SAM's")]
    WrongRole(Role),
    #[error("the certificate certifies another key than the token's signing key")]
    ForeignCertificate,
    /// A transfer SAM's certificate over a token without a storage key, or a normal SAM's
    /// over one with a storage key.
    #[error("the token's keys are not those of a {0} SAM")]
    KindMismatch(&'static str),
}

/// A token failure as a move SAM answers it.
pub(crate) fn unavailable(error: Pkcs11SamError) -> SamError {
    SamError::Unavailable(error.to_string())
}

/// The one session of a SAM, behind a lock: a PKCS#11 session serves one thread at a time.
struct LockedSession(Mutex<TokenSession>);

impl LockedSession {
    fn lock(&self) -> MutexGuard<'_, TokenSession> {
        // A poisoned lock only means a thread panicked while using the session; the session
        // keeps no half-made state between calls.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Refuses a token that lacks a mechanism the SAM needs, before anything is made in it.
fn require_mechanisms(
    token: &TokenSession,
    wanted: &[(MechanismType, &'static str)],
) -> Result<(), Pkcs11SamError> {
    let offered = token.mechanisms()?;
    for (mechanism, name) in wanted {
        if !offered.contains(mechanism) {
            return Err(Pkcs11SamError::MissingMechanism(name));
        }
    }
    Ok(())
}

/// The token's signing key pair: the private key's handle and the public key.
fn signing_pair(token: &TokenSession) -> Result<(ObjectHandle, PublicKey), Pkcs11SamError> {
    let private = token.require(ObjectClass::PRIVATE_KEY, Part::Signing)?;
    let public = token.public_point(token.require(ObjectClass::PUBLIC_KEY, Part::Signing)?)?;
    let public = PublicKey::from_bytes(&public).map_err(|_| Pkcs11SamError::BadPublicKey)?;
    Ok((private, public))
}

/// The certificate must be of `role` and for the token's signing key.
fn check_certificate(
    certificate: &Certificate,
    roles: &[Role],
    public: &PublicKey,
) -> Result<(), MoveSamError> {
    if !roles.contains(&certificate.body.role) {
        return Err(MoveSamError::WrongRole(certificate.body.role));
    }
    if certificate.body.signing_key.to_bytes() != public.to_bytes() {
        return Err(MoveSamError::ForeignCertificate);
    }
    Ok(())
}

/// Undoes a provisioning that failed half-way: destroys what it made (best effort: the
/// error to report is the first one), so that the same label can be provisioned again.
fn remove_provisioned(token: &TokenSession, made: &[ObjectHandle]) {
    for handle in made {
        let _ = token.destroy(*handle);
    }
    if let Ok(Some(public)) = token.find(ObjectClass::PUBLIC_KEY, Part::Signing) {
        let _ = token.destroy(public);
    }
}
