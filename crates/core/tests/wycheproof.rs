//! Project Wycheproof test vectors run against valuecard's crypto wrappers.
//!
//! The vectors are read at test time from `shared/testvectors/wycheproof/` beside the
//! workspace (or from the folder named by `VALUECARD_TESTVECTORS`), never copied into the
//! project. Every case is judged through `valuecard_core::crypto`, not the crates under it:
//!
//! - `valid` cases must be accepted and give exactly the expected output;
//! - `invalid` cases must be refused;
//! - `acceptable` cases may go either way; how each was treated is counted and printed, and
//!   where one is accepted its output must still be the expected one;
//! - test groups whose parameters the wrappers do not offer (AES-192/256, other GCM nonce
//!   lengths, truncated HMAC tags, ...) are counted as not applicable, with the reason, and
//!   never as passes.
//!
//! When the folder is missing the tests print `SKIPPED: ...` and pass, unless
//! `VALUECARD_REQUIRE_TESTVECTORS=1` is set, in which case they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use valuecard_core::crypto::{
    aes_cmac, aes_cmac_verify, aes_gcm_open, aes_gcm_seal, constant_time_eq, hkdf_sha256,
    hmac_sha256, AesKey, PublicKey, SealingKeyPair, Signature, GCM_NONCE_LEN,
};

// ---------------------------------------------------------------------------------------
// Locating and loading the vectors
// ---------------------------------------------------------------------------------------

/// The Wycheproof folder: `VALUECARD_TESTVECTORS` when set (the Wycheproof folder itself,
/// or a folder holding a `wycheproof/` subfolder), else `shared/testvectors/wycheproof`
/// beside the workspace.
fn vectors_dir() -> PathBuf {
    match std::env::var_os("VALUECARD_TESTVECTORS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let nested = dir.join("wycheproof");
            if nested.is_dir() {
                nested
            } else {
                dir
            }
        }
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testvectors/wycheproof")
        }
    }
}

fn vectors_required() -> bool {
    std::env::var("VALUECARD_REQUIRE_TESTVECTORS").is_ok_and(|value| value.trim() == "1")
}

/// Writes straight to the process's stderr, past the test harness's output capture, so
/// that skips and counts show in every `cargo test` log.
fn announce(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Loads one suite, or returns `None` (after a visible SKIPPED line) when the vector folder
/// is absent and not required.
fn load<T: DeserializeOwned>(file: &str) -> Option<T> {
    let dir = vectors_dir();
    if !dir.is_dir() {
        let message = format!("Wycheproof vectors not found at {}", dir.display());
        if vectors_required() {
            panic!("{message} (VALUECARD_REQUIRE_TESTVECTORS=1 forbids skipping)");
        }
        announce(&format!("SKIPPED: {message}\n"));
        return None;
    }
    let path = dir.join(file);
    // The folder is there, so a missing or unreadable file is an error, never a skip.
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let suite =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    Some(suite)
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_else(|e| panic!("bad hex {text:?}: {e}"))
}

// ---------------------------------------------------------------------------------------
// JSON layout (only the fields used here; serde ignores the rest)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Suite<G> {
    algorithm: String,
    number_of_tests: usize,
    test_groups: Vec<G>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Valid,
    Invalid,
    Acceptable,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case<T> {
    tc_id: u64,
    comment: String,
    result: Expected,
    #[serde(flatten)]
    data: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group<P, T> {
    #[serde(flatten)]
    params: P,
    tests: Vec<Case<T>>,
}

// ---------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------

struct Tally {
    name: &'static str,
    total: usize,
    checked: usize,
    valid_accepted: usize,
    invalid_refused: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    not_applicable: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Tally {
            name,
            total: 0,
            checked: 0,
            valid_accepted: 0,
            invalid_refused: 0,
            acceptable_accepted: 0,
            acceptable_refused: 0,
            not_applicable: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// A whole group the wrappers cannot express.
    fn skip_group(&mut self, cases: usize, reason: String) {
        self.total += cases;
        *self.not_applicable.entry(reason).or_default() += cases;
    }

    /// One case run through a wrapper. `outcome` is `Ok(())` when the wrapper accepted the
    /// input with exactly the expected output, `Err(Refused)` when it refused the input, and
    /// `Err(WrongOutput(..))` when it accepted but produced something else (never allowed).
    fn record<T>(&mut self, case: &Case<T>, outcome: Result<(), Outcome>) {
        self.total += 1;
        self.checked += 1;
        let id = format!(
            "tcId {} ({:?}, {:?})",
            case.tc_id, case.result, case.comment
        );
        match (case.result, outcome) {
            (_, Err(Outcome::WrongOutput(what))) => self
                .failures
                .push(format!("{id}: accepted with the wrong output: {what}")),
            (Expected::Valid, Ok(())) => self.valid_accepted += 1,
            (Expected::Valid, Err(Outcome::Refused)) => {
                self.failures.push(format!("{id}: valid case refused"))
            }
            (Expected::Invalid, Err(Outcome::Refused)) => self.invalid_refused += 1,
            (Expected::Invalid, Ok(())) => {
                self.failures.push(format!("{id}: invalid case accepted"))
            }
            (Expected::Acceptable, Ok(())) => self.acceptable_accepted += 1,
            (Expected::Acceptable, Err(Outcome::Refused)) => self.acceptable_refused += 1,
        }
    }

    fn finish(self, declared_total: usize) {
        let not_applicable: usize = self.not_applicable.values().sum();
        let acceptable = self.acceptable_accepted + self.acceptable_refused;
        let mut summary = format!(
            "wycheproof {}: {} valid accepted, {} invalid refused, {} acceptable",
            self.name, self.valid_accepted, self.invalid_refused, acceptable
        );
        if acceptable > 0 {
            summary.push_str(&format!(
                " ({} accepted, {} refused)",
                self.acceptable_accepted, self.acceptable_refused
            ));
        }
        summary.push_str(&format!(", {not_applicable} not applicable\n"));
        for (reason, count) in &self.not_applicable {
            summary.push_str(&format!(
                "wycheproof {}: not applicable: {count} ({reason})\n",
                self.name
            ));
        }
        announce(&summary);

        assert!(
            self.failures.is_empty(),
            "wycheproof {}: {} failing case(s):\n{}",
            self.name,
            self.failures.len(),
            self.failures.join("\n")
        );
        assert_eq!(
            self.total, declared_total,
            "wycheproof {}: numberOfTests disagrees with the cases read",
            self.name
        );
        assert!(
            self.checked > 0,
            "wycheproof {}: no case was checked",
            self.name
        );
        assert_eq!(
            self.checked,
            self.total - not_applicable,
            "wycheproof {}: every applicable case must be checked",
            self.name
        );
        assert_eq!(
            self.valid_accepted + self.invalid_refused + acceptable,
            self.checked
        );
    }
}

enum Outcome {
    Refused,
    WrongOutput(String),
}

/// Compares an accepted output with the expected one.
fn expect_output(got: &[u8], expected: &[u8]) -> Result<(), Outcome> {
    if got == expected {
        Ok(())
    } else {
        Err(Outcome::WrongOutput(format!(
            "got {}, expected {}",
            hex::encode(got),
            hex::encode(expected)
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Ed25519: PublicKey::from_bytes + PublicKey::verify
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct EddsaParams {
    #[serde(rename = "publicKey")]
    public_key: EddsaKey,
}

#[derive(Deserialize)]
struct EddsaKey {
    curve: String,
    pk: String,
}

#[derive(Deserialize)]
struct EddsaCase {
    msg: String,
    sig: String,
}

#[test]
fn wycheproof_ed25519() {
    let Some(suite) = load::<Suite<Group<EddsaParams, EddsaCase>>>("ed25519_test.json") else {
        return;
    };
    assert_eq!(suite.algorithm, "EDDSA");
    let mut tally = Tally::new("ed25519");
    for group in &suite.test_groups {
        if group.params.public_key.curve != "edwards25519" {
            tally.skip_group(
                group.tests.len(),
                format!("curve {}", group.params.public_key.curve),
            );
            continue;
        }
        let key_bytes = unhex(&group.params.public_key.pk);
        for case in &group.tests {
            let message = unhex(&case.data.msg);
            let signature = unhex(&case.data.sig);
            // A key that does not parse, a signature of the wrong length and a signature
            // that does not verify are all refusals by our API.
            let accepted = PublicKey::from_bytes(&key_bytes)
                .and_then(|key| key.verify(&message, &Signature::from_slice(&signature)?))
                .is_ok();
            tally.record(
                case,
                if accepted {
                    Ok(())
                } else {
                    Err(Outcome::Refused)
                },
            );
        }
    }
    tally.finish(suite.number_of_tests);
}

// ---------------------------------------------------------------------------------------
// X25519: SealingKeyPair::from_secret + SealingKeyPair::diffie_hellman
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct XdhParams {
    curve: String,
}

#[derive(Deserialize)]
struct XdhCase {
    public: String,
    private: String,
    shared: String,
}

#[test]
fn wycheproof_x25519() {
    let Some(suite) = load::<Suite<Group<XdhParams, XdhCase>>>("x25519_test.json") else {
        return;
    };
    assert_eq!(suite.algorithm, "XDH");
    let mut tally = Tally::new("x25519");
    for group in &suite.test_groups {
        if group.params.curve != "curve25519" {
            tally.skip_group(group.tests.len(), format!("curve {}", group.params.curve));
            continue;
        }
        for case in &group.tests {
            let public = unhex(&case.data.public);
            let private = unhex(&case.data.private);
            let expected = unhex(&case.data.shared);
            // Both inputs are fixed-size arrays in our API; another length cannot be passed.
            let outcome = match (
                <[u8; 32]>::try_from(public.as_slice()),
                <[u8; 32]>::try_from(private.as_slice()),
            ) {
                (Ok(public), Ok(private)) => {
                    match SealingKeyPair::from_secret(private).diffie_hellman(&public) {
                        Ok(shared) => expect_output(shared.expose(), &expected),
                        Err(_) => Err(Outcome::Refused),
                    }
                }
                _ => Err(Outcome::Refused),
            };
            tally.record(case, outcome);
        }
    }
    tally.finish(suite.number_of_tests);
}

// ---------------------------------------------------------------------------------------
// AES-GCM: aes_gcm_seal + aes_gcm_open (AES-128, 96-bit nonce, 128-bit tag)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AeadParams {
    key_size: usize,
    iv_size: usize,
    tag_size: usize,
}

#[derive(Deserialize)]
struct AeadCase {
    key: String,
    iv: String,
    aad: String,
    msg: String,
    ct: String,
    tag: String,
}

#[test]
fn wycheproof_aes_gcm() {
    let Some(suite) = load::<Suite<Group<AeadParams, AeadCase>>>("aes_gcm_test.json") else {
        return;
    };
    assert_eq!(suite.algorithm, "AES-GCM");
    let mut tally = Tally::new("aes-gcm");
    for group in &suite.test_groups {
        let AeadParams {
            key_size,
            iv_size,
            tag_size,
        } = group.params;
        let unsupported = if key_size != 128 {
            Some(format!("AES-{key_size} keys: only AES-128-GCM is offered"))
        } else if iv_size != 96 {
            Some("nonce lengths other than 96 bits: the nonce is a [u8; 12]".to_string())
        } else if tag_size != 128 {
            Some("tags shorter than 128 bits".to_string())
        } else {
            None
        };
        if let Some(reason) = unsupported {
            tally.skip_group(group.tests.len(), reason);
            continue;
        }
        for case in &group.tests {
            let key = AesKey::from_slice(&unhex(&case.data.key)).unwrap();
            let nonce: [u8; GCM_NONCE_LEN] = unhex(&case.data.iv).try_into().unwrap();
            let aad = unhex(&case.data.aad);
            let msg = unhex(&case.data.msg);
            let mut sealed = unhex(&case.data.ct);
            sealed.extend_from_slice(&unhex(&case.data.tag));

            let outcome = match aes_gcm_open(&key, &nonce, &aad, &sealed) {
                Ok(opened) => expect_output(&opened, &msg),
                Err(_) => Err(Outcome::Refused),
            };
            // Valid cases must also be produced, byte for byte, by encryption.
            let outcome = match (case.result, outcome) {
                (Expected::Valid, Ok(())) => {
                    expect_output(&aes_gcm_seal(&key, &nonce, &aad, &msg), &sealed)
                }
                (_, other) => other,
            };
            tally.record(case, outcome);
        }
    }
    tally.finish(suite.number_of_tests);
}

// ---------------------------------------------------------------------------------------
// AES-CMAC: aes_cmac + aes_cmac_verify (AES-128)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MacParams {
    key_size: usize,
    tag_size: usize,
}

#[derive(Deserialize)]
struct MacCase {
    key: String,
    msg: String,
    tag: String,
}

#[test]
fn wycheproof_aes_cmac() {
    let Some(suite) = load::<Suite<Group<MacParams, MacCase>>>("aes_cmac_test.json") else {
        return;
    };
    assert_eq!(suite.algorithm, "AES-CMAC");
    let mut tally = Tally::new("aes-cmac");
    for group in &suite.test_groups {
        let MacParams { key_size, tag_size } = group.params;
        if key_size == 192 || key_size == 256 {
            tally.skip_group(
                group.tests.len(),
                "AES-192/256 keys: only AES-128-CMAC is offered".into(),
            );
            continue;
        }
        if key_size != 128 {
            // Keys of no AES size (all `invalid`); an `AesKey` holds exactly 16 bytes.
            tally.skip_group(
                group.tests.len(),
                "key sizes that are no AES key size: AesKey takes 16 bytes only".into(),
            );
            continue;
        }
        if tag_size != 128 {
            tally.skip_group(group.tests.len(), "tag sizes other than 128 bits".into());
            continue;
        }
        for case in &group.tests {
            let key = AesKey::from_slice(&unhex(&case.data.key)).unwrap();
            let msg = unhex(&case.data.msg);
            let tag = unhex(&case.data.tag);
            let outcome = match aes_cmac_verify(&key, &msg, &tag) {
                Ok(()) => expect_output(&aes_cmac(&key, &msg), &tag),
                Err(_) => Err(Outcome::Refused),
            };
            tally.record(case, outcome);
        }
    }
    tally.finish(suite.number_of_tests);
}

// ---------------------------------------------------------------------------------------
// HKDF-SHA256: hkdf_sha256
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct HkdfParams {}

#[derive(Deserialize)]
struct HkdfCase {
    ikm: String,
    salt: String,
    info: String,
    size: usize,
    okm: String,
}

#[test]
fn wycheproof_hkdf_sha256() {
    let Some(suite) = load::<Suite<Group<HkdfParams, HkdfCase>>>("hkdf_sha256_test.json") else {
        return;
    };
    assert_eq!(suite.algorithm, "HKDF-SHA-256");
    let mut tally = Tally::new("hkdf-sha256");
    for group in &suite.test_groups {
        for case in &group.tests {
            let mut okm = vec![0u8; case.data.size];
            let outcome = match hkdf_sha256(
                &unhex(&case.data.salt),
                &unhex(&case.data.ikm),
                &unhex(&case.data.info),
                &mut okm,
            ) {
                Ok(()) => expect_output(&okm, &unhex(&case.data.okm)),
                Err(_) => Err(Outcome::Refused),
            };
            tally.record(case, outcome);
        }
    }
    tally.finish(suite.number_of_tests);
}

// ---------------------------------------------------------------------------------------
// HMAC-SHA256: hmac_sha256 (full 256-bit tags), compared with constant_time_eq
// ---------------------------------------------------------------------------------------

#[test]
fn wycheproof_hmac_sha256() {
    let Some(suite) = load::<Suite<Group<MacParams, MacCase>>>("hmac_sha256_test.json") else {
        return;
    };
    assert_eq!(suite.algorithm, "HMACSHA256");
    let mut tally = Tally::new("hmac-sha256");
    for group in &suite.test_groups {
        if group.params.tag_size != 256 {
            tally.skip_group(
                group.tests.len(),
                format!(
                    "truncated {}-bit tags: hmac_sha256 gives only the full 256-bit tag",
                    group.params.tag_size
                ),
            );
            continue;
        }
        for case in &group.tests {
            let tag = unhex(&case.data.tag);
            let computed = hmac_sha256(&unhex(&case.data.key), &unhex(&case.data.msg));
            let outcome = if constant_time_eq(&computed, &tag) {
                Ok(())
            } else {
                Err(Outcome::Refused)
            };
            tally.record(case, outcome);
        }
    }
    tally.finish(suite.number_of_tests);
}
