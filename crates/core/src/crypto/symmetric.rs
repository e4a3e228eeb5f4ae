//! Secret bytes, AES-128-GCM and AES-CMAC.

use super::*;

/// A fixed-size secret that zeroizes on drop and never prints.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> SecretBytes<N> {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes
            .try_into()
            .map(SecretBytes)
            .map_err(|_| CryptoError::BadLength)
    }

    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; N];
        rng.fill_bytes(&mut bytes);
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> core::fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SecretBytes<{N}>(..)")
    }
}

/// An AES-128 key.
pub type AesKey = SecretBytes<AES_KEY_LEN>;

/// AES-128-GCM encryption with a 96-bit nonce. The caller guarantees nonce uniqueness per
/// key (every valuecard use derives a fresh key or a counter nonce).
pub fn aes_gcm_seal(
    key: &AesKey,
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = Aes128Gcm::new(GenericArray::from_slice(key.expose()));
    // Encryption fails only for plaintexts over 64 GiB, far beyond every bound in limits.rs.
    cipher
        .encrypt(
            GenericArray::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default()
}

pub fn aes_gcm_open(
    key: &AesKey,
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes128Gcm::new(GenericArray::from_slice(key.expose()));
    cipher
        .decrypt(
            GenericArray::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::DecryptFailed)
}

/// AES-128-CMAC (NIST SP 800-38B, RFC 4493).
pub fn aes_cmac(key: &AesKey, message: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <Cmac<Aes128> as Mac>::new(GenericArray::from_slice(key.expose()));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Checks a (possibly truncated, at least 8 bytes) AES-CMAC in constant time.
pub fn aes_cmac_verify(key: &AesKey, message: &[u8], tag: &[u8]) -> Result<(), CryptoError> {
    if !(8..=MAC_LEN).contains(&tag.len()) {
        return Err(CryptoError::BadMac);
    }
    let full = aes_cmac(key, message);
    if bool::from(full[..tag.len()].ct_eq(tag)) {
        Ok(())
    } else {
        Err(CryptoError::BadMac)
    }
}
