//! The tearing-safe persistent image: two checksummed slots, written alternately.
//!
//! A commit writes the whole new image into the slot not in use (page by page), makes it
//! durable, and only then erases the header of the old slot. After a power cut at any write
//! exactly one of these holds:
//! - the new slot is incomplete, so its checksum fails and the old slot is used: the whole
//!   old state;
//! - the new slot is complete: the whole new state (if the old one was not yet erased, the
//!   higher generation wins).
//!
//! A slot that fails its check when no commit could explain it (no valid slot at all) makes
//! the image refused as corrupt, never half-used.
//!
//! Slot layout (big-endian): `"VCIM"`, format version (2), reserved (2), generation (8),
//! payload length (4), payload, SHA-256 over everything before it (32).

use valuecard_core::crypto::sha256;

use crate::eeprom::{Eeprom, StorageError};

pub const SLOT_SIZE: usize = 8 * 1024;
pub const EEPROM_SIZE: usize = 2 * SLOT_SIZE;
/// Bytes written per physical write (one EEPROM page).
pub const PAGE_SIZE: usize = 256;
const MAGIC: &[u8; 4] = b"VCIM";
const HEADER_LEN: usize = 20;
const DIGEST_LEN: usize = 32;
pub const PAYLOAD_MAX: usize = SLOT_SIZE - HEADER_LEN - DIGEST_LEN;
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 6;
/// The oldest format version this build still reads. Version 2 added the terminal stamp to
/// the stored usage record, version 3 the credit template (credit mode, Figs. 13-17), and
/// version 4 the chip serial of an unissued card (per-chip transport keys, Fig. 8), and
/// version 5 the purse's transfer state (seed 000: transfer and update keys, the
/// pending-transfer log, the receipts), and version 6 the service areas of the
/// multi-service chip (seed 002), each as an optional field, so older payloads decode
/// unchanged.
pub const FORMAT_VERSION_MIN: u16 = 1;

/// Why an image could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("card image is corrupt: no slot passes its integrity check")]
    Corrupt,
    #[error("card image has format version {0}, this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u16),
    #[error("card image holds no card (blank memory)")]
    Blank,
    #[error("card state of {0} bytes does not fit a slot of {PAYLOAD_MAX}")]
    TooLarge(usize),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

enum SlotRead {
    Valid { generation: u64, payload: Vec<u8> },
    Erased,
    Invalid,
    Unsupported(u16),
}

/// The two-slot store over an [`Eeprom`].
#[derive(Debug)]
pub struct ImageStore<E> {
    eeprom: E,
    active_slot: Option<usize>,
    generation: u64,
}

impl<E: Eeprom> ImageStore<E> {
    /// Opens the store and returns the current payload (`None` for blank memory).
    pub fn open(eeprom: E) -> Result<(Self, Option<Vec<u8>>), ImageError> {
        if eeprom.size() != EEPROM_SIZE {
            return Err(ImageError::Storage(StorageError::Io(format!(
                "memory is {} bytes, expected {EEPROM_SIZE}",
                eeprom.size()
            ))));
        }
        let slots = [read_slot(&eeprom, 0)?, read_slot(&eeprom, 1)?];
        let mut best: Option<(usize, u64, Vec<u8>)> = None;
        let mut erased = 0;
        for (index, slot) in slots.into_iter().enumerate() {
            match slot {
                SlotRead::Valid {
                    generation,
                    payload,
                } => {
                    if best.as_ref().is_none_or(|(_, g, _)| generation > *g) {
                        best = Some((index, generation, payload));
                    }
                }
                SlotRead::Unsupported(version) => {
                    return Err(ImageError::UnsupportedVersion(version))
                }
                SlotRead::Erased => erased += 1,
                SlotRead::Invalid => {}
            }
        }
        match best {
            Some((index, generation, payload)) => Ok((
                ImageStore {
                    eeprom,
                    active_slot: Some(index),
                    generation,
                },
                Some(payload),
            )),
            None if erased == 2 => Ok((
                ImageStore {
                    eeprom,
                    active_slot: None,
                    generation: 0,
                },
                None,
            )),
            None => Err(ImageError::Corrupt),
        }
    }

    /// Atomically replaces the payload (see the module documentation).
    pub fn commit(&mut self, payload: &[u8]) -> Result<(), ImageError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(ImageError::TooLarge(payload.len()));
        }
        let target = match self.active_slot {
            Some(0) => 1,
            _ => 0,
        };
        let generation = self.generation + 1;
        let mut slot = Vec::with_capacity(HEADER_LEN + payload.len() + DIGEST_LEN);
        slot.extend_from_slice(MAGIC);
        slot.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        slot.extend_from_slice(&[0, 0]);
        slot.extend_from_slice(&generation.to_be_bytes());
        slot.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        slot.extend_from_slice(payload);
        let digest = sha256(&slot);
        slot.extend_from_slice(&digest);
        let base = target * SLOT_SIZE;
        for (index, page) in slot.chunks(PAGE_SIZE).enumerate() {
            self.eeprom.write(base + index * PAGE_SIZE, page)?;
        }
        self.eeprom.flush()?;
        // The new slot is durable: from here on the commit has happened, whatever follows.
        let old = self.active_slot.replace(target);
        self.generation = generation;
        if let Some(old) = old {
            // Erasing the old header keeps a later bit flip in the new slot from silently
            // resurrecting the old state. If the erase fails, the new slot still wins by its
            // higher generation; only a power cut is reported, because the card is then off.
            let erased = self
                .eeprom
                .write(old * SLOT_SIZE, &[0u8; HEADER_LEN])
                .and_then(|()| self.eeprom.flush());
            if let Err(StorageError::PowerLost) = erased {
                return Err(ImageError::Storage(StorageError::PowerLost));
            }
        }
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The slot in use exactly as it lies in memory (header, payload, digest), `None` for
    /// blank memory. Written at offset 0 of blank memory it opens as the same image: a
    /// simulation of many cards keeps this (about a kilobyte) instead of the whole memory.
    pub fn active_slot_bytes(&self) -> Result<Option<Vec<u8>>, ImageError> {
        let Some(slot) = self.active_slot else {
            return Ok(None);
        };
        let base = slot * SLOT_SIZE;
        let mut header = [0u8; HEADER_LEN];
        self.eeprom.read(base, &mut header)?;
        let len = u32::from_be_bytes([header[16], header[17], header[18], header[19]]) as usize;
        if len > PAYLOAD_MAX {
            return Err(ImageError::Corrupt);
        }
        let mut bytes = vec![0u8; HEADER_LEN + len + DIGEST_LEN];
        self.eeprom.read(base, &mut bytes)?;
        Ok(Some(bytes))
    }

    pub fn eeprom(&self) -> &E {
        &self.eeprom
    }

    /// The memory itself, for fault injection in tests and simulations.
    pub fn eeprom_mut(&mut self) -> &mut E {
        &mut self.eeprom
    }
}

fn read_slot<E: Eeprom>(eeprom: &E, index: usize) -> Result<SlotRead, StorageError> {
    let base = index * SLOT_SIZE;
    let mut header = [0u8; HEADER_LEN];
    eeprom.read(base, &mut header)?;
    if header.iter().all(|&b| b == 0) {
        return Ok(SlotRead::Erased);
    }
    if &header[..4] != MAGIC {
        return Ok(SlotRead::Invalid);
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&header[8..16]);
    let generation = u64::from_be_bytes(generation);
    let len = u32::from_be_bytes([header[16], header[17], header[18], header[19]]) as usize;
    if len > PAYLOAD_MAX {
        return Ok(SlotRead::Invalid);
    }
    let mut rest = vec![0u8; len + DIGEST_LEN];
    eeprom.read(base + HEADER_LEN, &mut rest)?;
    let mut signed = Vec::with_capacity(HEADER_LEN + len);
    signed.extend_from_slice(&header);
    signed.extend_from_slice(&rest[..len]);
    if sha256(&signed)[..] != rest[len..] {
        return Ok(SlotRead::Invalid);
    }
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        // The checksum holds, so this is a real image of another version, not damage.
        return Ok(SlotRead::Unsupported(version));
    }
    rest.truncate(len);
    Ok(SlotRead::Valid {
        generation,
        payload: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eeprom::{FaultInjectingEeprom, MemoryEeprom};

    #[test]
    fn the_active_slot_alone_opens_as_the_same_image() {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let (mut store, _) = ImageStore::open(memory.clone()).unwrap();
        assert_eq!(store.active_slot_bytes().unwrap(), None);
        store.commit(&[0x33u8; 700]).unwrap();
        store.commit(b"latest").unwrap();
        let bytes = store.active_slot_bytes().unwrap().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 6 + DIGEST_LEN);
        let mut fresh = MemoryEeprom::new(EEPROM_SIZE);
        fresh.write(0, &bytes).unwrap();
        let (reopened, payload) = ImageStore::open(fresh).unwrap();
        assert_eq!(payload.as_deref(), Some(&b"latest"[..]));
        assert_eq!(reopened.generation(), 2);
    }

    #[test]
    fn blank_then_commit_then_reopen() {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let (mut store, payload) = ImageStore::open(memory.clone()).unwrap();
        assert_eq!(payload, None);
        store.commit(b"first").unwrap();
        store.commit(b"second").unwrap();
        let (store, payload) = ImageStore::open(memory).unwrap();
        assert_eq!(payload.as_deref(), Some(&b"second"[..]));
        assert_eq!(store.generation(), 2);
    }

    #[test]
    fn a_cut_at_every_write_leaves_old_or_new() {
        let old = vec![0x11u8; 1000];
        let new = vec![0x22u8; 1500];
        for cut in 1..=12 {
            for (numerator, denominator) in [(0, 1), (1, 2), (1, 1)] {
                let memory = MemoryEeprom::new(EEPROM_SIZE);
                let (mut store, _) =
                    ImageStore::open(FaultInjectingEeprom::new(memory.clone())).unwrap();
                store.commit(&old).unwrap();
                let (mut store, _) =
                    ImageStore::open(FaultInjectingEeprom::new(memory.clone())).unwrap();
                let mut eeprom = FaultInjectingEeprom::new(memory.clone());
                eeprom.cut_power_at(cut, numerator, denominator);
                store.eeprom = eeprom;
                let outcome = store.commit(&new);
                let (_, payload) = ImageStore::open(memory.clone()).unwrap();
                let payload = payload.unwrap();
                match outcome {
                    Ok(()) => assert_eq!(payload, new),
                    Err(_) => assert!(payload == old || payload == new, "cut {cut}: mixed state"),
                }
            }
        }
    }

    #[test]
    fn corruption_is_refused_not_half_used() {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let (mut store, _) = ImageStore::open(memory.clone()).unwrap();
        store.commit(b"one").unwrap();
        store.commit(b"two").unwrap();
        let mut bytes = memory.snapshot();
        // Flip a payload bit in the active slot (slot 1 after two commits).
        bytes[SLOT_SIZE + HEADER_LEN] ^= 0x01;
        memory.restore(&bytes);
        assert!(matches!(ImageStore::open(memory), Err(ImageError::Corrupt)));
    }

    #[test]
    fn unknown_version_is_named() {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let mut slot = Vec::new();
        slot.extend_from_slice(MAGIC);
        slot.extend_from_slice(&9u16.to_be_bytes());
        slot.extend_from_slice(&[0, 0]);
        slot.extend_from_slice(&1u64.to_be_bytes());
        slot.extend_from_slice(&0u32.to_be_bytes());
        let digest = sha256(&slot);
        slot.extend_from_slice(&digest);
        let mut bytes = memory.snapshot();
        bytes[..slot.len()].copy_from_slice(&slot);
        memory.restore(&bytes);
        assert!(matches!(
            ImageStore::open(memory),
            Err(ImageError::UnsupportedVersion(9))
        ));
    }
}
