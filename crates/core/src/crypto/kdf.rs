//! Key derivation: the NIST SP 800-108 counter-mode KDF with AES-CMAC (laid out as SCP03),
//! key diversification, HKDF and HMAC over SHA-256.

use super::*;

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
