//! The memory card's content: the bytes READ BINARY shows, laid out as
//! `valuecard_core::messages::memcard::map` says, and how they lie in the image store.

use valuecard_core::ids::CardId;
use valuecard_core::messages::memcard::{map, COUNTER_START};

/// The whole memory of a memory card: card ID (ROM), backward counter, value area,
/// signature area, certificate area.
///
/// Only the card's own rules change it: [`Memory::written`] is the one way to apply an
/// UPDATE BINARY, and it lowers the counter when the value area is touched. A value of this
/// type always has a counter no higher than [`COUNTER_START`].
#[derive(Clone, PartialEq, Eq)]
pub struct Memory {
    bytes: [u8; map::MEMORY_LEN],
}

impl core::fmt::Debug for Memory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Memory")
            .field("card_id", &self.card_id())
            .field("counter", &self.counter())
            .finish_non_exhaustive()
    }
}

/// Why stored bytes are not a memory card's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    #[error("the image holds no memory card (it may be a purse card image)")]
    NotAMemoryCard,
    #[error("memory card image format version {0} is not one this build reads")]
    UnsupportedVersion(u8),
    #[error("the memory is {0} bytes, a memory card has {len}", len = map::MEMORY_LEN)]
    WrongLength(usize),
    /// No command can raise the counter, so a counter above its start was never written by
    /// a card.
    #[error("the counter {0:#010x} is above its start {COUNTER_START:#010x}")]
    CounterAboveStart(u32),
}

/// The image payload: `"VCMC"`, a format version byte, then the memory.
const PAYLOAD_MAGIC: &[u8; 4] = b"VCMC";
pub const PAYLOAD_VERSION: u8 = 1;
const PAYLOAD_HEADER_LEN: usize = PAYLOAD_MAGIC.len() + 1;

const ID_START: usize = map::CARD_ID as usize;
const COUNTER_AT: usize = map::COUNTER as usize;
const VALUE_START: usize = map::VALUE_AREA as usize;
const VALUE_END: usize = VALUE_START + map::VALUE_AREA_LEN;

// The layout the card's rules rely on: ID, then counter, then the writable areas up to the
// end, the value area first.
const _: () = assert!(ID_START == 0 && ID_START + map::CARD_ID_LEN <= COUNTER_AT);
const _: () = assert!(COUNTER_AT + map::COUNTER_LEN <= VALUE_START);
const _: () = assert!(VALUE_END <= map::SIGNATURE_AREA as usize);
const _: () = assert!(map::MEMORY_LEN <= u16::MAX as usize);

/// Which protected part of the memory a write range touches first, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// The card ID, in ROM.
    CardId,
    /// The backward counter: only the card lowers it.
    Counter,
}

impl Memory {
    /// A new card: `card_id` in ROM, the counter at [`COUNTER_START`], every area blank.
    pub fn new(card_id: CardId) -> Self {
        let mut bytes = [0u8; map::MEMORY_LEN];
        bytes[ID_START..ID_START + map::CARD_ID_LEN].copy_from_slice(card_id.as_bytes());
        bytes[COUNTER_AT..COUNTER_AT + map::COUNTER_LEN]
            .copy_from_slice(&COUNTER_START.to_be_bytes());
        Memory { bytes }
    }

    /// Any content a card could hold, as a memory dump gives it: for tests that put one
    /// card's writable areas onto another card, or an older image back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MemoryError> {
        let bytes: [u8; map::MEMORY_LEN] = bytes
            .try_into()
            .map_err(|_| MemoryError::WrongLength(bytes.len()))?;
        let memory = Memory { bytes };
        if memory.counter() > COUNTER_START {
            return Err(MemoryError::CounterAboveStart(memory.counter()));
        }
        Ok(memory)
    }

    /// The same writable content (value, signature and certificate areas) on another chip:
    /// `card_id` and `counter` are that chip's own. For tests of a copied image.
    pub fn with_writable_areas_of(card_id: CardId, counter: u32, source: &Memory) -> Self {
        let mut memory = Memory::new(card_id);
        memory.bytes[VALUE_START..].copy_from_slice(&source.bytes[VALUE_START..]);
        memory.set_counter(counter.min(COUNTER_START));
        memory
    }

    pub fn card_id(&self) -> CardId {
        let mut id = [0u8; map::CARD_ID_LEN];
        id.copy_from_slice(&self.bytes[ID_START..ID_START + map::CARD_ID_LEN]);
        CardId(id)
    }

    pub fn counter(&self) -> u32 {
        let at = &self.bytes[COUNTER_AT..COUNTER_AT + map::COUNTER_LEN];
        u32::from_be_bytes([at[0], at[1], at[2], at[3]])
    }

    fn set_counter(&mut self, counter: u32) {
        self.bytes[COUNTER_AT..COUNTER_AT + map::COUNTER_LEN]
            .copy_from_slice(&counter.to_be_bytes());
    }

    /// The whole memory, as a chunked READ BINARY from address 0 gives it.
    pub fn as_bytes(&self) -> &[u8; map::MEMORY_LEN] {
        &self.bytes
    }

    /// Whether `address .. address + len` (non-empty, inside the memory) touches the ID or
    /// the counter, and which first.
    pub fn protected_in(address: usize, len: usize) -> Option<Protected> {
        let end = address.saturating_add(len);
        if address < ID_START + map::CARD_ID_LEN && end > ID_START {
            Some(Protected::CardId)
        } else if address < COUNTER_AT + map::COUNTER_LEN && end > COUNTER_AT {
            Some(Protected::Counter)
        } else {
            None
        }
    }

    /// Whether `address .. address + len` touches any byte of the value area.
    pub fn touches_value_area(address: usize, len: usize) -> bool {
        address < VALUE_END && address.saturating_add(len) > VALUE_START
    }

    /// The memory after writing `data` at `address`, lowering the counter by one when the
    /// write touches the value area. The caller has checked the range (inside the memory,
    /// outside the ID and counter) and, for a value write, that the counter is above zero;
    /// `None` if it did not.
    pub fn written(&self, address: usize, data: &[u8]) -> Option<Memory> {
        let end = address.checked_add(data.len())?;
        if data.is_empty()
            || end > map::MEMORY_LEN
            || Self::protected_in(address, data.len()).is_some()
        {
            return None;
        }
        let mut next = self.clone();
        if Self::touches_value_area(address, data.len()) {
            next.set_counter(self.counter().checked_sub(1)?);
        }
        next.bytes[address..end].copy_from_slice(data);
        Some(next)
    }

    /// The image payload for this memory.
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(PAYLOAD_HEADER_LEN + map::MEMORY_LEN);
        payload.extend_from_slice(PAYLOAD_MAGIC);
        payload.push(PAYLOAD_VERSION);
        payload.extend_from_slice(&self.bytes);
        payload
    }

    /// Parses an image payload written by [`encode_payload`](Self::encode_payload).
    pub fn decode_payload(payload: &[u8]) -> Result<Self, MemoryError> {
        let Some((header, memory)) = payload.split_at_checked(PAYLOAD_HEADER_LEN) else {
            return Err(MemoryError::NotAMemoryCard);
        };
        if &header[..PAYLOAD_MAGIC.len()] != PAYLOAD_MAGIC {
            return Err(MemoryError::NotAMemoryCard);
        }
        let version = header[PAYLOAD_MAGIC.len()];
        if version != PAYLOAD_VERSION {
            return Err(MemoryError::UnsupportedVersion(version));
        }
        Memory::from_bytes(memory)
    }
}
