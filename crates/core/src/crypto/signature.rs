//! Ed25519: signatures, keys, strict and batch verification.

use super::*;

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl Signature {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes
            .try_into()
            .map(Signature)
            .map_err(|_| CryptoError::BadLength)
    }
}

impl core::fmt::Debug for Signature {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

/// An Ed25519 public key, decompressed once when parsed so that each verification does not
/// pay for it again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a key, refusing non-canonical encodings and small-order (weak) points.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let raw: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::BadLength)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| CryptoError::BadPublicKey)?;
        // Decompression accepts a few non-canonical y encodings; a key must have one form.
        if key.to_bytes() != raw || key.is_weak() {
            return Err(CryptoError::BadPublicKey);
        }
        Ok(PublicKey(key))
    }

    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Strict verification (RFC 8032 § 5.1.7 with canonical S and R, and no small-order R).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.to_bytes()))
    }
}

/// Verifies many signatures at once (ed25519-dalek batch verification, with fresh random
/// coefficients), splitting the work over `threads` threads. One bad signature fails the
/// whole call; callers then find it with [`PublicKey::verify`] one by one.
///
/// Batch verification is the cofactored equation, a little more permissive than
/// [`PublicKey::verify`]'s strict check for adversarial small-order components. Use it only
/// where keys are certified and the signed content, not the signature bytes, identifies the
/// record (as the center's usage ingestion does).
pub fn verify_batch(
    items: &[(PublicKey, &[u8], Signature)],
    threads: usize,
) -> Result<(), CryptoError> {
    fn one_chunk(chunk: &[(PublicKey, &[u8], Signature)]) -> Result<(), CryptoError> {
        let messages: Vec<&[u8]> = chunk.iter().map(|(_, message, _)| *message).collect();
        let signatures: Vec<ed25519_dalek::Signature> = chunk
            .iter()
            .map(|(_, _, signature)| ed25519_dalek::Signature::from_bytes(&signature.0))
            .collect();
        let keys: Vec<VerifyingKey> = chunk.iter().map(|(key, _, _)| key.0).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys)
            .map_err(|_| CryptoError::BadSignature)
    }
    if items.is_empty() {
        return Ok(());
    }
    let threads = threads.clamp(1, 64);
    let chunk_len = items.len().div_ceil(threads);
    if threads == 1 || items.len() < 64 {
        return one_chunk(items);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk_len)
            .map(|chunk| scope.spawn(move || one_chunk(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(Err(CryptoError::BadSignature)))
            .collect::<Result<Vec<()>, CryptoError>>()
            .map(|_| ())
    })
}

/// An Ed25519 private key. Zeroized on drop; its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKeyPair(SigningKey);

impl SigningKeyPair {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        SigningKeyPair(SigningKey::generate(rng))
    }

    /// From the 32-byte RFC 8032 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKeyPair(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for the holder's own persistent storage only.
    pub fn seed(&self) -> SecretBytes<32> {
        SecretBytes(self.0.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl core::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SigningKeyPair(public: {:?})", self.public_key())
    }
}
