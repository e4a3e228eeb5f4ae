//! The SAM's state that is not a key: its device ID, certificate and trust anchor, the
//! time-stamp chain's position and current stamp TS_t, the sequences it reserved, and a
//! memory-card machine's float, last float grant and last write sequence (seed 001). It
//! lives in the token as one private data object (CKO_DATA, CKA_PRIVATE: readable only after
//! login with the user PIN), written whole on every change, so that the token is the SAM's
//! one store and a copied data directory holds nothing of it.
//!
//! Tokens may refuse to change a data object's CKA_VALUE (SoftHSM2 does:
//! CKR_ATTRIBUTE_READ_ONLY), so a change writes a new object with the next generation number
//! and then destroys the old one. A crash between the two leaves both; the SAM then takes
//! the higher generation and destroys the other, so it never falls back to an older state.
//!
//! TS_t is a secret of the SAM (with it a thief could sign every later stamp), but it cannot
//! be a sensitive key object: the stamp's signed message contains TS_t itself
//! (`TerminalStamp::signed_message`) and TS_{t+1} = SHA-256(label || TS_t) is computed by
//! the host. So TS_t is in this process's memory while the SAM is open, as in the software
//! SAM, and in the token under the PIN; earlier stamps are never stored anywhere.

use valuecard_core::cert::{Certificate, TrustAnchor};
use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::purse::STAMP_COUNT_MAX;
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::tlv::{be_u32, be_u64, TlvReader, TlvWriter};
use valuecard_sam::construction::StampChain;
use valuecard_sam::memcard::FLOAT_MAX;
use valuecard_sam::SamError;
use zeroize::Zeroize;

/// Version 1 had no memory-card state; it still loads (float and sequences zero).
const STATE_MAGIC_V1: &[u8] = b"valuecard-pkcs11-sam-v1";
const STATE_MAGIC: &[u8] = b"valuecard-pkcs11-sam-v2";

mod tag {
    pub const MAGIC: u32 = 0x8F;
    pub const DEVICE_ID: u32 = 0x80;
    pub const ANCHOR_ID: u32 = 0x86;
    pub const ANCHOR_KEY: u32 = 0x87;
    pub const STAMP_COUNT: u32 = 0x88;
    pub const STAMP: u32 = 0x89;
    pub const INSTALLED_ON: u32 = 0x8A;
    pub const SEQUENCE_RESERVED: u32 = 0x8B;
    pub const GENERATION: u32 = 0x8C;
    pub const MEMCARD_FLOAT: u32 = 0x8D;
    pub const MEMCARD_LAST_GRANT: u32 = 0x8E;
    pub const MEMCARD_LAST_SEQUENCE: u32 = 0x90;
    pub const CERTIFICATE: u32 = valuecard_core::cert::TAG_CERTIFICATE;
}

/// What the state object holds.
#[derive(Clone)]
pub(crate) struct SamState {
    pub device_id: DeviceId,
    pub installed: Option<(TrustAnchor, Certificate)>,
    pub chain: Option<StampChain>,
    /// The highest sequence any SAM object of this device may have signed under: a SAM
    /// reserves a block of sequences here before it signs under the first of them.
    pub sequence_reserved: u32,
    /// A memory-card machine's float, last grant and last write sequence.
    pub memcard: MemcardState,
    /// Counts the writes of this state; the highest one in the token is the current one.
    pub generation: u64,
}

/// What a SAM keeps for memory cards (seed 001), as the software SAM keeps it in its image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemcardState {
    /// What the charge machine may still charge (area 23A): raised only by a verified grant.
    pub float: Amount,
    /// The number of the last float grant taken: an older or replayed grant is refused.
    pub last_grant: u32,
    /// The last memory-card write sequence signed.
    pub last_sequence: u32,
}

impl Drop for SamState {
    fn drop(&mut self) {
        if let Some(chain) = &mut self.chain {
            chain.erase();
        }
    }
}

impl SamState {
    pub fn new(device_id: DeviceId) -> Self {
        SamState {
            device_id,
            installed: None,
            chain: None,
            sequence_reserved: 0,
            memcard: MemcardState::default(),
            generation: 0,
        }
    }

    /// The object's value. The caller zeroizes it after writing it (it holds TS_t).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::MAGIC, STATE_MAGIC)
            .put(tag::DEVICE_ID, self.device_id.as_bytes());
        if let Some((anchor, certificate)) = &self.installed {
            w.put(tag::ANCHOR_ID, anchor.center.as_bytes())
                .put(tag::ANCHOR_KEY, &anchor.public_key.to_bytes())
                .put_raw(&certificate.encode());
        }
        if let Some(chain) = &self.chain {
            w.put_u32(tag::STAMP_COUNT, chain.count)
                .put(tag::STAMP, &chain.current)
                .put_u32(tag::INSTALLED_ON, chain.installed_on.0);
        }
        w.put_u32(tag::SEQUENCE_RESERVED, self.sequence_reserved)
            .put_u64(tag::MEMCARD_FLOAT, self.memcard.float.minor())
            .put_u32(tag::MEMCARD_LAST_GRANT, self.memcard.last_grant)
            .put_u32(tag::MEMCARD_LAST_SEQUENCE, self.memcard.last_sequence)
            .put(tag::GENERATION, &self.generation.to_be_bytes());
        w.into_bytes()
    }

    /// Reads the object's value back; anything malformed is refused, never half-used.
    pub fn decode(bytes: &[u8]) -> Result<Self, SamError> {
        let mut r = TlvReader::new(bytes);
        let bad = |_| SamError::Image("malformed SAM state in the token");
        let magic = r.expect(tag::MAGIC).map_err(bad)?;
        let version_1 = magic == STATE_MAGIC_V1;
        if magic != STATE_MAGIC && !version_1 {
            return Err(SamError::Image("unknown SAM state version in the token"));
        }
        let device_id = DeviceId(r.expect_array(tag::DEVICE_ID).map_err(bad)?);
        let installed = match r.optional(tag::ANCHOR_ID).map_err(bad)? {
            Some(center) => {
                let center =
                    DeviceId::from_slice(center).map_err(|_| SamError::Image("anchor id"))?;
                let public_key = PublicKey::from_bytes(r.expect(tag::ANCHOR_KEY).map_err(bad)?)
                    .map_err(|_| SamError::Image("anchor key"))?;
                let certificate =
                    Certificate::decode_value(r.expect(tag::CERTIFICATE).map_err(bad)?)
                        .map_err(|_| SamError::Image("certificate"))?;
                Some((TrustAnchor { center, public_key }, certificate))
            }
            None => None,
        };
        let chain = match r.optional(tag::STAMP_COUNT).map_err(bad)? {
            Some(count) => {
                let count = be_u32(tag::STAMP_COUNT, count).map_err(bad)?;
                if count > STAMP_COUNT_MAX {
                    return Err(SamError::Image("stamp count"));
                }
                let mut current: [u8; 32] = r.expect_array(tag::STAMP).map_err(bad)?;
                let installed_on = r.expect(tag::INSTALLED_ON).map_err(bad)?;
                let installed_on = Date(be_u32(tag::INSTALLED_ON, installed_on).map_err(bad)?);
                let chain = StampChain {
                    installed_on,
                    count,
                    current,
                };
                current.zeroize();
                Some(chain)
            }
            None => None,
        };
        let sequence_reserved = r.expect(tag::SEQUENCE_RESERVED).map_err(bad)?;
        let sequence_reserved = be_u32(tag::SEQUENCE_RESERVED, sequence_reserved).map_err(bad)?;
        let memcard = if version_1 {
            MemcardState::default()
        } else {
            let float = r.expect(tag::MEMCARD_FLOAT).map_err(bad)?;
            let float = be_u64(tag::MEMCARD_FLOAT, float).map_err(bad)?;
            let last_grant = r.expect(tag::MEMCARD_LAST_GRANT).map_err(bad)?;
            let last_sequence = r.expect(tag::MEMCARD_LAST_SEQUENCE).map_err(bad)?;
            MemcardState {
                float: Amount::new(float)
                    .ok()
                    .filter(|float| *float <= FLOAT_MAX)
                    .ok_or(SamError::Image("float in the token's SAM state"))?,
                last_grant: be_u32(tag::MEMCARD_LAST_GRANT, last_grant).map_err(bad)?,
                last_sequence: be_u32(tag::MEMCARD_LAST_SEQUENCE, last_sequence).map_err(bad)?,
            }
        };
        let generation = u64::from_be_bytes(r.expect_array(tag::GENERATION).map_err(bad)?);
        r.finish().map_err(bad)?;
        Ok(SamState {
            device_id,
            installed,
            chain,
            sequence_reserved,
            memcard,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fresh_state_round_trips_and_truncation_is_refused() {
        let mut state = SamState::new(DeviceId([7; 8]));
        state.sequence_reserved = 41;
        state.generation = 5;
        state.memcard = MemcardState {
            float: Amount::new(7_500).unwrap(),
            last_grant: 3,
            last_sequence: 12,
        };
        state.chain = Some(StampChain {
            installed_on: Date(20_000),
            count: 3,
            current: [9; 32],
        });
        let bytes = state.encode();
        let back = SamState::decode(&bytes).unwrap();
        assert_eq!(back.device_id, DeviceId([7; 8]));
        assert_eq!((back.sequence_reserved, back.generation), (41, 5));
        assert_eq!(back.memcard, state.memcard);
        let chain = back.chain.as_ref().unwrap();
        assert_eq!((chain.count, chain.current), (3, [9; 32]));
        assert_eq!(back.encode(), bytes);
        for cut in 0..bytes.len() {
            assert!(SamState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SamState::decode(&trailing).is_err());
    }

    #[test]
    fn a_version_1_state_loads_without_memory_card_state() {
        let mut state = SamState::new(DeviceId([7; 8]));
        state.sequence_reserved = 64;
        state.generation = 2;
        let mut w = TlvWriter::new();
        w.put(tag::MAGIC, STATE_MAGIC_V1)
            .put(tag::DEVICE_ID, state.device_id.as_bytes())
            .put_u32(tag::SEQUENCE_RESERVED, 64)
            .put(tag::GENERATION, &2u64.to_be_bytes());
        let back = SamState::decode(&w.into_bytes()).unwrap();
        assert_eq!((back.sequence_reserved, back.generation), (64, 2));
        assert_eq!(back.memcard, MemcardState::default());
        // Written again, it is a version 2 state that keeps what version 1 held.
        let again = SamState::decode(&back.encode()).unwrap();
        assert_eq!((again.sequence_reserved, again.generation), (64, 2));
        assert!(back
            .encode()
            .windows(STATE_MAGIC.len())
            .any(|w| w == STATE_MAGIC));
    }

    #[test]
    fn a_float_above_the_limit_is_refused() {
        let state = SamState::new(DeviceId([7; 8]));
        let bytes = state.encode();
        let float = Amount::new(0).unwrap().minor().to_be_bytes();
        // The encoded float is eight zero bytes after its tag and length.
        let at = bytes
            .windows(10)
            .position(|w| w[0] == tag::MEMCARD_FLOAT as u8 && w[1] == 8 && w[2..] == float)
            .unwrap();
        let mut over = bytes.clone();
        over[at + 2..at + 10].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(SamState::decode(&over).is_err());
    }

    #[test]
    fn the_version_1_seed_of_the_fuzz_target_still_loads() {
        let bytes = include_bytes!("../../../fuzz/seeds/pkcs11_sam_state/installed_chain");
        let state = SamState::decode(bytes).unwrap();
        let chain = state.chain.as_ref().unwrap();
        assert_eq!(chain.count, 3);
        assert_eq!(state.memcard, MemcardState::default());
    }
}
