//! The memory card of seed 001 (claims 1-4, Figs. 1-3): a storage card with no crypto
//! engine. It holds its card ID in ROM, a backward counter that it lowers by one itself on
//! every write that touches the value area (no command sets or raises it), and three
//! writable areas: value (date + amount), signature, and the writing machine's certificate.
//! The layout is `valuecard_core::messages::memcard::map`; the machines' SAMs sign what it
//! holds, the card itself checks nothing but its own rules.
//!
//! It answers PC/SC Part 3 storage-card pseudo-APDUs (`command.rs`) and names itself with a
//! PC/SC Part 3 storage-card ATR ([`ATR`]). Its memory lives in the same two-slot image store
//! as the purse card's state: every UPDATE BINARY commits the whole new memory (the counter
//! lowered and the value area written in one commit) before the card answers, so a power cut
//! at any write leaves the old or the new content, never a mix, and the counter never goes
//! back.
//!
//! What the card must never do: accept a write to its ID or counter, move the counter up, or
//! answer before its write is durable.

mod command;
mod memory;

use std::path::Path;

use valuecard_core::apdu::{Command, Response};
use valuecard_core::ids::CardId;
use valuecard_core::StatusWord;

use crate::eeprom::{Eeprom, FileEeprom, StorageError};
use crate::image::{ImageError, ImageStore, EEPROM_SIZE};
use crate::CardError;

pub use command::{handle, ins, parse, sw, Effect, MemcardCommand, CLA_PSEUDO};
pub use memory::{Memory, MemoryError, Protected, PAYLOAD_VERSION};

/// The memory card's ATR (ISO/IEC 7816-3 § 8.2), in the form PC/SC Part 3 § 3.1.3.2.3 gives
/// storage cards, 20 bytes:
///
/// ```text
/// 3B              TS   direct convention
/// 8F              T0   TD1 follows; 15 historical bytes
/// 80              TD1  TD2 follows; protocol T=0
/// 01              TD2  no more interface bytes; protocol T=1
/// 80              category indicator: compact-TLV historical bytes follow
/// 4F 0C           application identifier presence indicator, 12 bytes
/// A0 00 00 03 06  RID of the PC/SC workgroup
/// 00              SS: standard, "no information given" (the card is emulated; it speaks
///                 no physical storage-card protocol such as I2C or 2WBP)
/// 56 4D           NN NN: card name "VM" (valuecard memory card), chosen by this project:
///                 no registered PC/SC card name exists for this card, so tools that look
///                 the name up show it as unknown
/// 00 00 00 00     RFU
/// 73              TCK: the XOR of T0 .. TCK is 00
/// ```
pub const ATR: [u8; 20] = storage_card_atr(STANDARD, CARD_NAME);

/// SS of [`ATR`]: no information given.
pub const STANDARD: u8 = 0x00;
/// NN NN of [`ATR`]: "VM", not a registered name (see [`ATR`]).
pub const CARD_NAME: [u8; 2] = *b"VM";

/// A PC/SC Part 3 storage-card ATR for standard byte `standard` and card name `name`.
pub const fn storage_card_atr(standard: u8, name: [u8; 2]) -> [u8; 20] {
    let mut atr = [
        0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, standard, name[0],
        name[1], 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let mut tck = 0u8;
    let mut i = 1;
    while i < 19 {
        tck ^= atr[i];
        i += 1;
    }
    atr[19] = tck;
    atr
}

/// Whether `atr` is a valuecard memory card's: what a terminal checks before it treats the
/// card in a PC/SC reader as one.
pub fn is_memory_card_atr(atr: &[u8]) -> bool {
    atr == ATR
}

/// An emulated memory card over non-volatile memory `E`.
pub struct MemoryCard<E: Eeprom> {
    store: ImageStore<E>,
    memory: Memory,
    powered: bool,
}

impl<E: Eeprom> core::fmt::Debug for MemoryCard<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryCard")
            .field("card_id", &self.memory.card_id())
            .field("counter", &self.memory.counter())
            .field("powered", &self.powered)
            .finish_non_exhaustive()
    }
}

/// A memory card whose image is a file.
pub type FileMemoryCard = MemoryCard<FileEeprom>;

impl FileMemoryCard {
    /// Manufactures a new memory card image file with `card_id` in ROM (never overwrites a
    /// file).
    pub fn manufacture_file(path: &Path, card_id: CardId) -> Result<Self, CardError> {
        if path.exists() {
            return Err(CardError::AlreadyManufactured);
        }
        let eeprom = FileEeprom::open(path, EEPROM_SIZE).map_err(ImageError::from)?;
        MemoryCard::manufacture(eeprom, card_id)
    }

    pub fn open_file(path: &Path) -> Result<Self, CardError> {
        if !path.exists() {
            return Err(CardError::Image(ImageError::Storage(StorageError::Io(
                format!("{}: no such card image", path.display()),
            ))));
        }
        let eeprom = FileEeprom::open(path, EEPROM_SIZE).map_err(ImageError::from)?;
        MemoryCard::open(eeprom)
    }
}

impl<E: Eeprom> MemoryCard<E> {
    /// Writes a new card into blank memory: `card_id` in ROM, the counter at its start,
    /// every area blank.
    pub fn manufacture(eeprom: E, card_id: CardId) -> Result<Self, CardError> {
        Self::with_memory(eeprom, Memory::new(card_id))
    }

    /// Writes `memory` into blank memory as the card's first image: tests start cards with
    /// any content this way (two chips with different IDs and the same writable areas, an
    /// older image written back).
    pub fn with_memory(eeprom: E, memory: Memory) -> Result<Self, CardError> {
        let (mut store, payload) = ImageStore::open(eeprom)?;
        if payload.is_some() {
            return Err(CardError::AlreadyManufactured);
        }
        store
            .commit(&memory.encode_payload())
            .map_err(crate::power_or_image)?;
        Ok(MemoryCard {
            store,
            memory,
            powered: true,
        })
    }

    /// Powers up a card from its memory.
    pub fn open(eeprom: E) -> Result<Self, CardError> {
        let (store, payload) = ImageStore::open(eeprom)?;
        let payload = payload.ok_or(CardError::Blank)?;
        let memory = Memory::decode_payload(&payload)?;
        Ok(MemoryCard {
            store,
            memory,
            powered: true,
        })
    }

    /// The card's content as READ BINARY shows it.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    pub fn card_id(&self) -> CardId {
        self.memory.card_id()
    }

    pub fn counter(&self) -> u32 {
        self.memory.counter()
    }

    /// A reset or new power-up: a memory card keeps no volatile state, so nothing is lost.
    pub fn reset(&mut self) {}

    pub fn is_powered(&self) -> bool {
        self.powered
    }

    pub fn store(&self) -> &ImageStore<E> {
        &self.store
    }

    /// The card's non-volatile memory, for fault injection in tests.
    pub fn eeprom_mut(&mut self) -> &mut E {
        self.store.eeprom_mut()
    }

    /// Processes one command APDU and returns the response bytes, or `PowerLost` if the card
    /// lost power during its write (it answers nothing until opened again).
    pub fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        self.process(apdu).map(|response| response.encode())
    }

    pub fn process(&mut self, apdu: &[u8]) -> Result<Response, CardError> {
        if !self.powered {
            return Err(CardError::PowerLost);
        }
        let command = match Command::parse(apdu) {
            Ok(command) => command,
            Err(error) => return Ok(Response::error(error.status_word())),
        };
        let effect = match parse(&command).and_then(|command| handle(&self.memory, command)) {
            Ok(effect) => effect,
            Err(sw) => return Ok(Response::error(sw)),
        };
        if let Some(next) = effect.commit {
            match self.store.commit(&next.encode_payload()) {
                Ok(()) => self.memory = next,
                Err(ImageError::Storage(StorageError::PowerLost)) => {
                    self.powered = false;
                    return Err(CardError::PowerLost);
                }
                // The write did not happen: the card holds its old content.
                Err(_) => return Ok(Response::error(StatusWord::MEMORY_FAILURE)),
            }
        }
        Ok(Response {
            data: effect.data,
            sw: effect.sw,
        })
    }
}

#[cfg(test)]
mod tests;
