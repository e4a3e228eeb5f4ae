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

/// NIST SP 800-108 KDF in counter mode with AES-CMAC as the PRF, with the fixed input laid
/// out as GlobalPlatform SCP03 (Amendment D § 6.2.2) does:
/// `label (11 zero bytes || derivation constant) || 0x00 || L (16 bits) || i (8 bits) || context`.
///
/// This is [`kdf_cmac_counter_middle_fixed`] with an 8-bit counter, the 15 bytes up to and
/// including L before the counter and the context after it. Fails with
/// [`CryptoError::BadLength`] when `output` is longer than the 8-bit counter can number
/// (255 blocks, 4080 bytes).
pub fn kdf_cmac_scp03(
    key: &AesKey,
    derivation_constant: u8,
    context: &[u8],
    output: &mut [u8],
) -> Result<(), CryptoError> {
    let output_bits = output
        .len()
        .checked_mul(8)
        .and_then(|bits| u16::try_from(bits).ok())
        .ok_or(CryptoError::BadLength)?;
    let before_counter = scp03_before_counter(derivation_constant, output_bits);
    kdf_cmac_counter_middle_fixed(key, 1, &before_counter, context, output)
}

/// The SCP03 fixed input up to the counter: `11 zero bytes || derivation constant || 0x00
/// || L (16 bits)`.
fn scp03_before_counter(derivation_constant: u8, output_bits: u16) -> [u8; 15] {
    let mut before_counter = [0u8; 15];
    before_counter[11] = derivation_constant;
    // before_counter[12] stays 0x00, the separation indicator.
    before_counter[13..15].copy_from_slice(&output_bits.to_be_bytes());
    before_counter
}

/// The one AES-CMAC input of [`diversify_key`]: the SCP03 fixed input with L = 128 and the
/// counter 1, then the identifier. A holder whose master key is in a token (PKCS#11
/// CKM_AES_CMAC under the key object) derives the same key by MACing this input.
pub fn diversification_input(derivation_constant: u8, identifier: &[u8]) -> Vec<u8> {
    let before_counter = scp03_before_counter(derivation_constant, (AES_KEY_LEN * 8) as u16);
    let mut input = Vec::with_capacity(before_counter.len() + 1 + identifier.len());
    input.extend_from_slice(&before_counter);
    input.push(1);
    input.extend_from_slice(identifier);
    input
}

/// NIST SP 800-108 counter-mode KDF with AES-CMAC and the counter in the middle of the fixed
/// input (`data_before_counter || i || data_after_counter`), with a big-endian counter of
/// `counter_len` bytes (1 to 4) starting at 1. This is the layout of the NIST CAVP `KDFCTR`
/// vectors with `CTRLOCATION=MIDDLE_FIXED`.
///
/// Fails with [`CryptoError::BadLength`] if `counter_len` is not 1 to 4, or if `output` needs
/// more blocks than a counter of `counter_len` bytes can number (it never wraps).
pub fn kdf_cmac_counter_middle_fixed(
    key: &AesKey,
    counter_len: usize,
    data_before_counter: &[u8],
    data_after_counter: &[u8],
    output: &mut [u8],
) -> Result<(), CryptoError> {
    if !(1..=4).contains(&counter_len) {
        return Err(CryptoError::BadLength);
    }
    let max_blocks = (1u64 << (8 * counter_len)) - 1;
    if output.len().div_ceil(MAC_LEN) as u64 > max_blocks {
        return Err(CryptoError::BadLength);
    }
    let mut input =
        Vec::with_capacity(data_before_counter.len() + counter_len + data_after_counter.len());
    for (index, chunk) in output.chunks_mut(MAC_LEN).enumerate() {
        // At most 2^32 - 1 blocks were let through above, so the counter fits in a u32.
        let counter = (index as u32 + 1).to_be_bytes();
        input.clear();
        input.extend_from_slice(data_before_counter);
        input.extend_from_slice(&counter[4 - counter_len..]);
        input.extend_from_slice(data_after_counter);
        let block = aes_cmac(key, &input);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    input.zeroize();
    Ok(())
}

/// NIST SP 800-108 counter-mode KDF with AES-CMAC and the counter before the fixed input
/// (`i || fixed_input`), with a counter of `counter_len` bytes (1 to 4). This is the layout
/// of the NIST CAVP `KDFCTR` vectors with `CTRLOCATION=BEFORE_FIXED`.
pub fn kdf_cmac_counter_before_fixed(
    key: &AesKey,
    counter_len: usize,
    fixed_input: &[u8],
    output: &mut [u8],
) -> Result<(), CryptoError> {
    // The counter-before layout is the middle layout with nothing before the counter; this
    // also refuses outputs longer than the counter can number.
    kdf_cmac_counter_middle_fixed(key, counter_len, &[], fixed_input, output)
}

/// Derivation constants for valuecard's key hierarchy (seed 003, Fig. 8).
pub mod derivation {
    /// KU: the card's own key, diversified from the card ID under the master key KA.
    pub const CARD_KEY: u8 = 0x11;
    /// KT: a terminal's own key, diversified from the terminal ID under KA.
    pub const TERMINAL_KEY: u8 = 0x12;
    // 0x13 and 0x14 derived the session keys of deliveries enciphered under Ktemp, which
    // any holder of the transport key could open; deliveries are now sealed to the
    // receiver's X25519 key (`seal_to`). The constants stay retired.
    /// Ktemp: one device's (card's or SAM's) own transport key, diversified from its
    /// manufacture identifier under the center's manufacture key, so that the key read out
    /// of one unissued device opens nothing of another.
    pub const TRANSPORT_KEY: u8 = 0x15;
    /// Generation n of the transfer key all cards share (seed 000), diversified from
    /// `b"transfer" || n` (n big-endian) under KA: the center re-derives any generation it
    /// handed out, so it stores no transfer key and can check every value message and proof.
    pub const TRANSFER_KEY: u8 = 0x16;
    /// Generation m of the update key under which cards pass a newer transfer key to each
    /// other (seed 000, claims 2, 6, 9), diversified from `b"update" || m` under KA.
    pub const UPDATE_KEY: u8 = 0x17;
    /// A memory-card writer's value key (seed 001, claim 4), diversified from the writing
    /// machine's device ID under the common key KO.
    pub const MEMCARD_VALUE_KEY: u8 = 0x18;
}

/// Diversifies a 16-byte key from an identifier (card ID, terminal ID) under a master key.
pub fn diversify_key(master: &AesKey, derivation_constant: u8, identifier: &[u8]) -> AesKey {
    let mut out = [0u8; AES_KEY_LEN];
    // One 16-byte block: L = 128 and i = 1 always fit, so the derivation cannot fail.
    if kdf_cmac_scp03(master, derivation_constant, identifier, &mut out).is_err() {
        unreachable_kdf();
    }
    let key = SecretBytes(out);
    out.zeroize();
    key
}

/// HKDF-SHA256 (RFC 5869). Fails only when more than 255 * 32 bytes are requested.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    output: &mut [u8],
) -> Result<(), CryptoError> {
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, output)
        .map_err(|_| CryptoError::BadLength)
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    // Invariant: HMAC's InvalidLength error is never returned for any key length.
    unreachable!("HMAC accepts keys of every length")
}

#[cold]
fn unreachable_kdf() -> ! {
    // Invariant: the SCP03 KDF only fails for outputs longer than 255 blocks.
    unreachable!("a single-block SCP03 derivation always fits its counter and length")
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// An X25519 key pair for receiving sealed boxes.
#[derive(Clone)]
pub struct SealingKeyPair(x25519_dalek::StaticSecret);

impl SealingKeyPair {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
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
    rng: &mut impl CryptoRngCore,
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

/// A fresh random value of `N` bytes (challenges R, X, Y of seed 003).
pub fn random_array<const N: usize>(rng: &mut impl CryptoRngCore) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

/// Constant-time equality for secrets and MACs.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn sign_verify_and_tamper() {
        let pair = SigningKeyPair::generate(&mut OsRng);
        let signature = pair.sign(b"message");
        pair.public_key().verify(b"message", &signature).unwrap();
        assert_eq!(
            pair.public_key().verify(b"messagf", &signature),
            Err(CryptoError::BadSignature)
        );
        let again = SigningKeyPair::from_seed(pair.seed().expose());
        assert_eq!(again.public_key(), pair.public_key());
        assert!(!format!("{:?}", pair.seed()).contains(&hex::encode(pair.seed().expose())));
    }

    #[test]
    fn batch_verification_accepts_good_and_refuses_one_bad() {
        let keys: Vec<_> = (0..200)
            .map(|_| SigningKeyPair::generate(&mut OsRng))
            .collect();
        let messages: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut items: Vec<_> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| (k.public_key(), m.as_slice(), k.sign(m)))
            .collect();
        verify_batch(&items, 2).unwrap();
        verify_batch(&items[..10], 2).unwrap();
        items[150].2 .0[0] ^= 1;
        assert_eq!(verify_batch(&items, 2), Err(CryptoError::BadSignature));
        assert_eq!(verify_batch(&items, 1), Err(CryptoError::BadSignature));
    }

    #[test]
    fn seal_open_and_tamper() {
        let recipient = SealingKeyPair::generate(&mut OsRng);
        let mut sealed = seal_to(&mut OsRng, &recipient.public_key(), b"aad", b"secret").unwrap();
        assert_eq!(recipient.open(b"aad", &sealed).unwrap(), b"secret");
        assert_eq!(
            recipient.open(b"aae", &sealed),
            Err(CryptoError::DecryptFailed)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            recipient.open(b"aad", &sealed),
            Err(CryptoError::DecryptFailed)
        );
        assert_eq!(
            recipient.open(b"aad", &sealed[..10]),
            Err(CryptoError::DecryptFailed)
        );
        assert_eq!(
            seal_to(&mut OsRng, &[0u8; 32], b"", b"x"),
            Err(CryptoError::WeakSharedSecret)
        );
    }

    #[test]
    fn diversified_keys_differ_per_identifier() {
        let master = AesKey::random(&mut OsRng);
        let a = diversify_key(&master, derivation::CARD_KEY, b"card-one");
        let b = diversify_key(&master, derivation::CARD_KEY, b"card-two");
        let c = diversify_key(&master, derivation::TERMINAL_KEY, b"card-one");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, diversify_key(&master, derivation::CARD_KEY, b"card-one"));
    }

    #[test]
    fn one_cmac_over_the_diversification_input_is_the_diversified_key() {
        let master = AesKey::from_slice(&[0x42; 16]).unwrap();
        for (constant, identifier) in [
            (derivation::CARD_KEY, &b"card-one"[..]),
            (derivation::MEMCARD_VALUE_KEY, &[1, 2, 3, 4, 5, 6, 7, 8][..]),
            (derivation::TERMINAL_KEY, &[][..]),
        ] {
            assert_eq!(
                &aes_cmac(&master, &diversification_input(constant, identifier)),
                diversify_key(&master, constant, identifier).expose()
            );
        }
        assert_ne!(
            diversification_input(derivation::CARD_KEY, b"x"),
            diversification_input(derivation::TERMINAL_KEY, b"x")
        );
    }

    #[test]
    fn truncated_cmac_checks() {
        let key = AesKey::random(&mut OsRng);
        let tag = aes_cmac(&key, b"data");
        aes_cmac_verify(&key, b"data", &tag[..8]).unwrap();
        assert_eq!(
            aes_cmac_verify(&key, b"data", &tag[..7]),
            Err(CryptoError::BadMac)
        );
        assert_eq!(
            aes_cmac_verify(&key, b"datb", &tag),
            Err(CryptoError::BadMac)
        );
    }

    /// `kdf_cmac_scp03` output as computed before it was re-expressed through
    /// `kdf_cmac_counter_middle_fixed`, so that change is proven not to move a byte.
    #[test]
    fn scp03_kdf_output_is_pinned() {
        let key =
            AesKey::from_slice(&hex::decode("404142434445464748494a4b4c4d4e4f").unwrap()).unwrap();
        let context = hex::decode("0001020304050607f0f1f2f3f4f5f6f7").unwrap();
        let pinned = [
            "433373b107c9992ee8d87a07c54d4b54",
            "434f5114a7bbab48e36bc0ea8da53b7c31ac13d346fc2e2e2468ae34725efd05",
            "450d03bb70f208cd342106e65c6711f412ba50db83f99fde82c845c86ee99f6c523c83e1c4327284",
        ];
        for expected in pinned {
            let mut out = vec![0u8; expected.len() / 2];
            kdf_cmac_scp03(&key, 0x04, &context, &mut out).unwrap();
            assert_eq!(hex::encode(&out), expected, "{} bytes", out.len());
        }
        let mut diversified = [0u8; AES_KEY_LEN];
        kdf_cmac_scp03(&key, derivation::CARD_KEY, b"card-one", &mut diversified).unwrap();
        assert_eq!(
            diversify_key(&key, derivation::CARD_KEY, b"card-one").expose(),
            &diversified
        );
    }

    #[test]
    fn middle_fixed_kdf_checks_counter_length_and_range() {
        let key = AesKey::from_slice(&[7u8; AES_KEY_LEN]).unwrap();
        let mut out = [0u8; 16];
        for bad in [0, 5] {
            assert_eq!(
                kdf_cmac_counter_middle_fixed(&key, bad, b"a", b"b", &mut out),
                Err(CryptoError::BadLength)
            );
        }
        // An 8-bit counter numbers 255 blocks and must not wrap to a 256th.
        let mut most = vec![0u8; 255 * MAC_LEN];
        kdf_cmac_counter_middle_fixed(&key, 1, b"a", b"b", &mut most).unwrap();
        let mut too_long = vec![0u8; 255 * MAC_LEN + 1];
        assert_eq!(
            kdf_cmac_counter_middle_fixed(&key, 1, b"a", b"b", &mut too_long),
            Err(CryptoError::BadLength)
        );
        let mut longer = vec![0u8; 256 * MAC_LEN];
        kdf_cmac_counter_middle_fixed(&key, 2, b"a", b"b", &mut longer).unwrap();
        assert_eq!(
            kdf_cmac_scp03(&key, 0x04, b"", &mut too_long),
            Err(CryptoError::BadLength)
        );
        kdf_cmac_scp03(&key, 0x04, b"", &mut most).unwrap();
    }

    #[test]
    fn middle_fixed_kdf_with_nothing_before_is_counter_before_fixed() {
        let key = AesKey::from_slice(&[9u8; AES_KEY_LEN]).unwrap();
        for counter_len in 1..=4 {
            let mut middle = [0u8; 40];
            let mut before = [0u8; 40];
            kdf_cmac_counter_middle_fixed(&key, counter_len, b"", b"fixed input", &mut middle)
                .unwrap();
            kdf_cmac_counter_before_fixed(&key, counter_len, b"fixed input", &mut before).unwrap();
            assert_eq!(middle, before, "counter of {counter_len} bytes");
        }
    }
}
