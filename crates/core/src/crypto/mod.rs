//! The one crypto suite of valuecard, as thin wrappers over RustCrypto and dalek crates.
//!
//! - Signatures: Ed25519, verified strictly (canonical encodings only, no small-order keys
//!   or commitments), so that one signed transaction can never pass as two.
//! - Public-key sealing: X25519 + HKDF-SHA256 + AES-128-GCM.
//! - Symmetric: AES-128-GCM, AES-CMAC, and the NIST SP 800-108 counter-mode KDF with
//!   AES-CMAC laid out as GlobalPlatform SCP03 does, for key diversification.
//!
//! Nothing here is home-made cryptography: this module only fixes parameters, lengths and
//! domain separation. Secret key types zeroize on drop and never print their bytes.

use aes::cipher::generic_array::GenericArray;
use aes::Aes128;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes128Gcm;
use cmac::{Cmac, Mac};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an Ed25519 public key, an X25519 public key, and a SHA-256 digest.
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
pub const AES_KEY_LEN: usize = 16;
pub const MAC_LEN: usize = 16;
pub const GCM_NONCE_LEN: usize = 12;
pub const GCM_TAG_LEN: usize = 16;
/// A sealed box: ephemeral X25519 public key, then AES-128-GCM ciphertext and tag.
pub const SEAL_OVERHEAD: usize = PUBLIC_KEY_LEN + GCM_TAG_LEN;

/// Every way a cryptographic check can fail. Deliberately coarse: callers learn *that* a
/// check failed, never which internal step, so no oracle leaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("signature is invalid")]
    BadSignature,
    #[error("public key is invalid or of small order")]
    BadPublicKey,
    #[error("authenticated decryption failed")]
    DecryptFailed,
    #[error("MAC is invalid")]
    BadMac,
    #[error("input has the wrong length")]
    BadLength,
    #[error("key agreement produced a non-contributory shared secret")]
    WeakSharedSecret,
}

mod kdf;
mod sealing;
mod signature;
mod symmetric;

pub use kdf::*;
pub use sealing::*;
pub use signature::*;
pub use symmetric::*;

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A fresh random value of `N` bytes (challenges R, X, Y of seed 003).
pub fn random_array<const N: usize>(rng: &mut (impl CryptoRngCore + ?Sized)) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

/// Constant-time equality for secrets and MACs.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests;
