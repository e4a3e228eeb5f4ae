//! The center's secret keys (seed 003, Figs. 4A and 8): the root signing key (pA, qA), the
//! manufacture key from which each card's and SAM's own transport key Ktemp is diversified
//! (from its manufacture identifier), the master key KA from which every card key KU and
//! terminal key KT is diversified, and the common key KO.
//!
//! The key file keeps its format: what version 1 stored as the one shared Ktemp is read as
//! the manufacture key, so devices made before per-device transport keys must be made again.

use std::io::Write;
use std::path::Path;

use rand_core::CryptoRngCore;
use valuecard_core::crypto::{derivation, diversify_key, AesKey, SigningKeyPair};
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

pub struct CenterKeys {
    pub center_id: DeviceId,
    pub root: SigningKeyPair,
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
            root: SigningKeyPair::generate(rng),
            manufacture_key: AesKey::random(rng),
            master_key: AesKey::random(rng),
            common_key: AesKey::random(rng),
        }
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

    fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(0x80, MAGIC)
            .put(0x81, self.center_id.as_bytes())
            .put(0x82, self.root.seed().expose())
            .put(0x83, self.manufacture_key.expose())
            .put(0x84, self.master_key.expose())
            .put(0x85, self.common_key.expose());
        w.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = TlvReader::new(bytes);
        if r.expect(0x80).ok()? != MAGIC {
            return None;
        }
        let center_id = DeviceId(r.expect_array(0x81).ok()?);
        let mut seed: [u8; 32] = r.expect_array(0x82).ok()?;
        let root = SigningKeyPair::from_seed(&seed);
        seed.zeroize();
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

    pub fn load(path: &Path) -> Result<Self, CenterError> {
        let mut bytes = std::fs::read(path).map_err(|error| {
            CenterError::Setup(format!("cannot read {}: {error}", path.display()))
        })?;
        let keys = CenterKeys::decode(&bytes);
        bytes.zeroize();
        keys.ok_or_else(|| {
            CenterError::Setup(format!(
                "{} is not a valuecard center key file",
                path.display()
            ))
        })
    }
}
