//! The move server's access to a provider's transfer routes: a 32-byte random secret the
//! move server shows as `Authorization: Bearer <hex>`. The provider keeps only the
//! secret's SHA-256 ([`AccessDigest`]) and compares digests in constant time, so its
//! configuration, logs or database never hold what would let anyone else in.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the access secret.
pub const ACCESS_SECRET_LEN: usize = 32;

/// The move server's access secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AccessSecret([u8; ACCESS_SECRET_LEN]);

impl core::fmt::Debug for AccessSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AccessSecret(hidden)")
    }
}

/// Why an access secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an access secret is {} hex digits", ACCESS_SECRET_LEN * 2)]
pub struct SecretFormatError;

impl AccessSecret {
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut bytes = [0u8; ACCESS_SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        AccessSecret(bytes)
    }

    /// The secret from its hex text (a configuration file, an environment variable).
    pub fn from_hex(text: &str) -> Result<Self, SecretFormatError> {
        let mut bytes = [0u8; ACCESS_SECRET_LEN];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| SecretFormatError)?;
        Ok(AccessSecret(bytes))
    }

    /// The hex text, for a configuration file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// What the provider keeps.
    pub fn digest(&self) -> AccessDigest {
        AccessDigest(Sha256::digest(self.0).into())
    }

    /// The `Authorization` header's value.
    pub(crate) fn bearer(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}", hex::encode(self.0)))
    }
}

/// The SHA-256 of the move server's access secret: what a provider is configured with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AccessDigest(pub [u8; 32]);

impl core::fmt::Debug for AccessDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AccessDigest({})", hex::encode(self.0))
    }
}

impl AccessDigest {
    /// Whether an `Authorization` header's value shows the secret. Whatever is shown is
    /// hashed and the digests compared in constant time; the header's form (the scheme,
    /// hex) is public and checked plainly.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(token) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return false;
        };
        let Ok(shown) = hex::decode(token.trim_ascii()).map(Zeroizing::new) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(&shown[..]).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand_core::OsRng;

    use super::*;

    #[test]
    fn only_the_secret_itself_is_admitted() {
        let secret = AccessSecret::generate(&mut OsRng);
        let digest = secret.digest();
        assert!(digest.admits(Some(secret.bearer().as_bytes())));
        let again = AccessSecret::from_hex(&secret.to_hex()).unwrap();
        assert_eq!(again.digest(), digest);

        let other = AccessSecret::generate(&mut OsRng);
        assert!(!digest.admits(Some(other.bearer().as_bytes())));
        assert!(!digest.admits(None));
        assert!(!digest.admits(Some(b"Bearer")));
        assert!(!digest.admits(Some(b"Bearer zz")));
        let hex = secret.to_hex();
        assert!(!digest.admits(Some(format!("Basic {}", hex.as_str()).as_bytes())));
        // The digest itself is not the secret.
        let shown = format!("Bearer {}", hex::encode(digest.0));
        assert!(!digest.admits(Some(shown.as_bytes())));
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let secret = AccessSecret::generate(&mut OsRng);
        assert!(!format!("{secret:?}").contains(&secret.to_hex()[..8]));
        assert!(AccessSecret::from_hex("00").is_err());
    }
}
