//! A lone signing key in a token: the center's root key when it is kept in an HSM.

use cryptoki::object::{ObjectClass, ObjectHandle};
use valuecard_core::crypto::{PublicKey, Signature, PUBLIC_KEY_LEN};

use crate::token::{Part, TokenSession};
use crate::{Pkcs11SamError, TokenAddress};

/// An Ed25519 key generated in a token and used only to sign there: the center's root key
/// when `center init --key-store pkcs11:...` puts it in a token. One session, behind a lock,
/// for all the center's handles of a process.
pub struct Pkcs11Signer {
    token: std::sync::Mutex<TokenSession>,
    key: ObjectHandle,
    public_key: PublicKey,
    locator: String,
}

impl core::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("locator", &self.locator)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Generates the key pair in the token (sensitive, never extractable, sign only).
    /// Refused if the token already has objects under the URI's label.
    pub fn generate(address: &TokenAddress) -> Result<Self, Pkcs11SamError> {
        let token = address.session()?;
        if token.any_object_exists()? {
            return Err(Pkcs11SamError::AlreadyExists(token.object.clone()));
        }
        let (key, public_key) = token.generate_signing_pair()?;
        Self::new(address, token, key, &public_key)
    }

    /// Opens the key pair the URI names.
    pub fn open(address: &TokenAddress) -> Result<Self, Pkcs11SamError> {
        let token = address.session()?;
        let key = token.require(ObjectClass::PRIVATE_KEY, Part::Signing)?;
        let public_key =
            token.public_point(token.require(ObjectClass::PUBLIC_KEY, Part::Signing)?)?;
        Self::new(address, token, key, &public_key)
    }

    fn new(
        address: &TokenAddress,
        token: TokenSession,
        key: ObjectHandle,
        public_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<Self, Pkcs11SamError> {
        Ok(Pkcs11Signer {
            token: std::sync::Mutex::new(token),
            key,
            public_key: PublicKey::from_bytes(public_key)
                .map_err(|_| Pkcs11SamError::BadPublicKey)?,
            locator: address.uri.without_pin(),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The URI without PIN, as a key file records it.
    pub fn locator(&self) -> &str {
        &self.locator
    }

    /// Ed25519 (CKM_EDDSA) over `message` in the token.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, Pkcs11SamError> {
        // A poisoned lock only means a thread panicked while signing; the session itself
        // holds no half-made state between calls.
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Signature(token.sign_eddsa(self.key, message)?))
    }
}
