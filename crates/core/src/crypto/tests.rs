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
        kdf_cmac_counter_middle_fixed(&key, counter_len, b"", b"fixed input", &mut middle).unwrap();
        kdf_cmac_counter_before_fixed(&key, counter_len, b"fixed input", &mut before).unwrap();
        assert_eq!(middle, before, "counter of {counter_len} bytes");
    }
}
