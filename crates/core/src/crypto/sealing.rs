//! Public-key sealing: X25519 + HKDF-SHA256 + AES-128-GCM.

use super::*;

/// An X25519 key pair for receiving sealed boxes.
#[derive(Clone)]
pub struct SealingKeyPair(x25519_dalek::StaticSecret);

impl SealingKeyPair {
    pub fn generate(rng: &mut (impl CryptoRngCore + ?Sized)) -> Self {
        SealingKeyPair(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        SealingKeyPair(x25519_dalek::StaticSecret::from(secret))
    }

    pub fn secret(&self) -> SecretBytes<32> {
        SecretBytes(self.0.to_bytes())
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        x25519_dalek::PublicKey::from(&self.0).to_bytes()
    }

    /// Raw X25519 (RFC 7748 § 5) with the all-zero output refused.
    pub fn diffie_hellman(
        &self,
        peer: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<SecretBytes<32>, CryptoError> {
        let shared = self.0.diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(CryptoError::WeakSharedSecret);
        }
        Ok(SecretBytes(shared.to_bytes()))
    }

    /// Opens a box made by [`seal_to`] for this key pair.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ephemeral = sealed_ephemeral_key(sealed)?;
        let shared = self
            .diffie_hellman(&ephemeral)
            .map_err(|_| CryptoError::DecryptFailed)?;
        open_sealed_with_shared(&shared, &self.public_key(), aad, sealed)
    }
}

/// The sender's ephemeral X25519 key at the front of a box made by [`seal_to`]; with the
/// recipient's private key it gives the shared secret.
pub fn sealed_ephemeral_key(sealed: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::DecryptFailed);
    }
    sealed[..PUBLIC_KEY_LEN]
        .try_into()
        .map_err(|_| CryptoError::BadLength)
}

/// Opens a box made by [`seal_to`] with the X25519 shared secret computed elsewhere: by a
/// token that holds the recipient's private key and derives the secret itself (the
/// PKCS#11 SAM). `recipient` is the recipient's public key. The all-zero secret is refused
/// here too, as [`SealingKeyPair::diffie_hellman`] refuses it.
pub fn open_sealed_with_shared(
    shared: &SecretBytes<32>,
    recipient: &[u8; PUBLIC_KEY_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral = sealed_ephemeral_key(sealed)?;
    if constant_time_eq(shared.expose(), &[0u8; 32]) {
        return Err(CryptoError::DecryptFailed);
    }
    let key = seal_key(shared, &ephemeral, recipient)?;
    aes_gcm_open(&key, &[0u8; GCM_NONCE_LEN], aad, &sealed[PUBLIC_KEY_LEN..])
}

impl core::fmt::Debug for SealingKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SealingKeyPair(public: {})",
            hex::encode(self.public_key())
        )
    }
}

const SEAL_INFO: &[u8] = b"valuecard seal v1 X25519-HKDF-SHA256-AES128GCM";

fn seal_key(
    shared: &SecretBytes<32>,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> Result<AesKey, CryptoError> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut key = [0u8; AES_KEY_LEN];
    hkdf_sha256(&salt, shared.expose(), SEAL_INFO, &mut key)?;
    let out = SecretBytes(key);
    key.zeroize();
    Ok(out)
}

/// Seals `plaintext` to `recipient` (an X25519 public key): a fresh ephemeral key per box,
/// so the all-zero GCM nonce is never reused under one key.
pub fn seal_to(
    rng: &mut (impl CryptoRngCore + ?Sized),
    recipient: &[u8; PUBLIC_KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral = SealingKeyPair::generate(rng);
    let shared = ephemeral.diffie_hellman(recipient)?;
    let ephemeral_public = ephemeral.public_key();
    let key = seal_key(&shared, &ephemeral_public, recipient)?;
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(&aes_gcm_seal(&key, &[0u8; GCM_NONCE_LEN], aad, plaintext));
    Ok(out)
}
