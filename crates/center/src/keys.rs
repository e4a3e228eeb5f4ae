//! The center's secret keys (seed 003, Figs. 4A and 8): the root signing key (pA, qA), the
//! manufacture key from which each card's and SAM's own transport key Ktemp is diversified
//! (from its manufacture identifier), the master key KA from which every card key KU and
//! terminal key KT is diversified, and the common key KO.
//!
//! The key file keeps its format: what version 1 stored as the one shared Ktemp is read as
//! the manufacture key, so devices made before per-device transport keys must be made again.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rand_core::CryptoRngCore;
use valuecard_core::crypto::{
    derivation, diversify_key, AesKey, PublicKey, Signature, SigningKeyPair,
};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::purse::ChipSerial;
use valuecard_core::tlv::{TlvReader, TlvWriter};
use zeroize::Zeroize;

use crate::CenterError;

const MAGIC: &[u8] = b"valuecard-center-keys-v1";
/// The first byte of every chip serial, so that no chip serial equals a device ID (0xD0…) and
/// no chip shares a transport key with a SAM.
pub const CHIP_SERIAL_PREFIX: u8 = 0xC5;

/// A fresh chip serial: the prefix and seven random bytes.
pub fn chip_serial(rng: &mut impl CryptoRngCore) -> ChipSerial {
    let mut serial: ChipSerial = valuecard_core::crypto::random_array(rng);
    serial[0] = CHIP_SERIAL_PREFIX;
    serial
}

/// A root key held outside the key file: in a PKCS#11 token (an HSM), which signs and
/// never gives the key out. The center holds one for all its handles, hence `Sync`.
pub trait RootSigner: Send + Sync + core::fmt::Debug {
    fn public_key(&self) -> PublicKey;
    /// Ed25519 over `message`, or why the holder refused.
    fn sign(&self, message: &[u8]) -> Result<Signature, String>;
    /// Where the key is (a PKCS#11 URI without PIN), as the key file records it.
    fn locator(&self) -> String;
}

/// Opens the root signer a key file names (its locator and the public key it recorded).
pub type RootOpener<'a> = &'a dyn Fn(&str, &PublicKey) -> Result<Arc<dyn RootSigner>, String>;

/// The center's root signing key (pA, qA; Fig. 4A), which certifies every device and card
/// and signs every load and answer: in the key file, or in a token.
#[derive(Clone)]
pub enum RootKey {
    Software(Arc<SigningKeyPair>),
    External(Arc<dyn RootSigner>),
}

impl core::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RootKey::Software(key) => write!(f, "RootKey::Software({:?})", key.public_key()),
            RootKey::External(signer) => write!(f, "RootKey::External({signer:?})"),
        }
    }
}

impl RootKey {
    pub fn public_key(&self) -> PublicKey {
        match self {
            RootKey::Software(key) => key.public_key(),
            RootKey::External(signer) => signer.public_key(),
        }
    }

    /// Signs `message`; a token's refusal is a storage-side failure of the center, never a
    /// signature made of nothing.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, CenterError> {
        match self {
            RootKey::Software(key) => Ok(key.sign(message)),
            RootKey::External(signer) => signer
                .sign(message)
                .map_err(|reason| CenterError::Storage(format!("the root key's token: {reason}"))),
        }
    }
}

pub struct CenterKeys {
    pub center_id: DeviceId,
    pub root: RootKey,
    /// Never leaves the center: the factory receives one diversified Ktemp per device.
    pub manufacture_key: AesKey,
    pub master_key: AesKey,
    pub common_key: AesKey,
}

impl core::fmt::Debug for CenterKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CenterKeys")
            .field("center_id", &self.center_id)
            .field("root", &self.root.public_key())
            .finish_non_exhaustive()
    }
}

impl CenterKeys {
    pub fn generate(center_id: DeviceId, rng: &mut impl CryptoRngCore) -> Self {
        CenterKeys {
            center_id,
            root: RootKey::Software(Arc::new(SigningKeyPair::generate(rng))),
            manufacture_key: AesKey::random(rng),
            master_key: AesKey::random(rng),
            common_key: AesKey::random(rng),
        }
    }

    /// The same keys with the root key in `signer` (a token) instead of the key file.
    pub fn with_root_signer(mut self, signer: Arc<dyn RootSigner>) -> Self {
        self.root = RootKey::External(signer);
        self
    }

    /// One device's own transport key Ktemp (Fig. 8): the SP 800-108 CMAC KDF of its
    /// manufacture identifier (a SAM's device ID, a card chip's serial) under the
    /// manufacture key.
    pub fn transport_key(&self, manufacture_id: &[u8; 8]) -> AesKey {
        diversify_key(
            &self.manufacture_key,
            derivation::TRANSPORT_KEY,
            manufacture_id,
        )
    }

    /// The center's identity as recorded in its database.
    pub fn identity(&self) -> crate::db::CenterIdentity {
        crate::db::CenterIdentity {
            center_id: self.center_id,
            root_key: self.root.public_key(),
        }
    }

    /// The key file: the root key's seed, or where the root key is (tag 0x86) and its
    /// public key (0x87) when a token holds it.
    fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(0x80, MAGIC).put(0x81, self.center_id.as_bytes());
        match &self.root {
            RootKey::Software(key) => {
                w.put(0x82, key.seed().expose());
            }
            RootKey::External(signer) => {
                w.put(0x86, signer.locator().as_bytes())
                    .put(0x87, &signer.public_key().to_bytes());
            }
        }
        w.put(0x83, self.manufacture_key.expose())
            .put(0x84, self.master_key.expose())
            .put(0x85, self.common_key.expose());
        w.into_bytes()
    }

    fn decode(bytes: &[u8], open_root: RootOpener<'_>) -> Result<Option<Self>, CenterError> {
        let mut r = TlvReader::new(bytes);
        if r.expect(0x80).ok() != Some(MAGIC) {
            return Ok(None);
        }
        let Some(center_id) = r.expect_array(0x81).ok().map(DeviceId) else {
            return Ok(None);
        };
        let root = match r.optional(0x82).ok().flatten() {
            Some(seed) => {
                let Ok(mut seed) = <[u8; 32]>::try_from(seed) else {
                    return Ok(None);
                };
                let root = SigningKeyPair::from_seed(&seed);
                seed.zeroize();
                RootKey::Software(Arc::new(root))
            }
            None => {
                let locator = r
                    .expect(0x86)
                    .ok()
                    .and_then(|l| core::str::from_utf8(l).ok());
                let public_key = r
                    .expect(0x87)
                    .ok()
                    .and_then(|k| PublicKey::from_bytes(k).ok());
                let (Some(locator), Some(public_key)) = (locator, public_key) else {
                    return Ok(None);
                };
                let signer = open_root(locator, &public_key).map_err(CenterError::Setup)?;
                if signer.public_key() != public_key {
                    return Err(CenterError::Setup(format!(
                        "the key at {locator} is not this center's root key"
                    )));
                }
                RootKey::External(signer)
            }
        };
        Ok(Self::decode_rest(r, center_id, root))
    }

    fn decode_rest(mut r: TlvReader<'_>, center_id: DeviceId, root: RootKey) -> Option<Self> {
        let manufacture_key = AesKey::from_slice(r.expect(0x83).ok()?).ok()?;
        let master_key = AesKey::from_slice(r.expect(0x84).ok()?).ok()?;
        let common_key = AesKey::from_slice(r.expect(0x85).ok()?).ok()?;
        r.finish().ok()?;
        Some(CenterKeys {
            center_id,
            root,
            manufacture_key,
            master_key,
            common_key,
        })
    }

    /// Writes the key file readable by its owner only. Refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<(), CenterError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|error| {
            CenterError::Setup(format!("cannot create {}: {error}", path.display()))
        })?;
        let mut bytes = self.encode();
        let outcome = file.write_all(&bytes).and_then(|()| file.sync_all());
        bytes.zeroize();
        outcome.map_err(|error| {
            CenterError::Setup(format!("cannot write {}: {error}", path.display()))
        })
    }

    /// Loads a key file whose root key is in the file; one naming a token is refused (see
    /// [`CenterKeys::load_with`]).
    pub fn load(path: &Path) -> Result<Self, CenterError> {
        Self::load_with(path, &|locator, _| {
            Err(format!(
                "this center's root key is in a token ({locator}): open it with the valuecard program"
            ))
        })
    }

    /// Loads a key file, opening a token's root key with `open_root`.
    pub fn load_with(path: &Path, open_root: RootOpener<'_>) -> Result<Self, CenterError> {
        let mut bytes = std::fs::read(path).map_err(|error| {
            CenterError::Setup(format!("cannot read {}: {error}", path.display()))
        })?;
        let keys = CenterKeys::decode(&bytes, open_root);
        bytes.zeroize();
        keys?.ok_or_else(|| {
            CenterError::Setup(format!(
                "{} is not a valuecard center key file",
                path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::OsRng;

    /// A root key "elsewhere": a software key behind the trait, as a token's would be.
    #[derive(Debug)]
    struct Elsewhere(SigningKeyPair);

    impl RootSigner for Elsewhere {
        fn public_key(&self) -> PublicKey {
            self.0.public_key()
        }
        fn sign(&self, message: &[u8]) -> Result<Signature, String> {
            Ok(self.0.sign(message))
        }
        fn locator(&self) -> String {
            "pkcs11:token=t;object=root".into()
        }
    }

    #[test]
    fn a_key_file_names_a_root_kept_elsewhere_and_holds_no_root_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("center.keys");
        let seed = [7u8; 32];
        let signer: Arc<dyn RootSigner> = Arc::new(Elsewhere(SigningKeyPair::from_seed(&seed)));
        let keys = CenterKeys::generate(DeviceId([0xCE; 8]), &mut OsRng).with_root_signer(signer);
        keys.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == seed),
            "the root seed is not in the file"
        );
        assert!(bytes.windows(6).any(|w| w == b"pkcs11"));

        // Without an opener the file is refused with a clear reason.
        let refused = CenterKeys::load(&path).unwrap_err();
        assert!(refused.to_string().contains("in a token"), "{refused}");
        // With one, the root signs, and a key that is not the recorded one is refused.
        let opened = CenterKeys::load_with(&path, &|locator, _| {
            assert_eq!(locator, "pkcs11:token=t;object=root");
            Ok(Arc::new(Elsewhere(SigningKeyPair::from_seed(&seed))) as Arc<dyn RootSigner>)
        })
        .unwrap();
        let signature = opened.root.sign(b"m").unwrap();
        keys.root.public_key().verify(b"m", &signature).unwrap();
        let other = CenterKeys::load_with(&path, &|_, _| {
            Ok(Arc::new(Elsewhere(SigningKeyPair::from_seed(&[8; 32]))) as Arc<dyn RootSigner>)
        })
        .unwrap_err();
        assert!(
            other.to_string().contains("not this center's root key"),
            "{other}"
        );
    }
}
