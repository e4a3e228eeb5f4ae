//! The emulated cards: the purse card, an ISO 7816-4 APDU processor with applications
//! selected by AID, and the memory card of seed 001 (`memcard`), a storage card driven by
//! PC/SC Part 3 pseudo-APDUs; each over a persistent image that survives power loss at any
//! write.
//!
//! **Architecture invariant:** every change of persistent state commits atomically before the
//! card answers; a command whose commit fails leaves the card exactly as it was.
//! **Architecture invariant:** a card never exports a private key: no command returns one,
//! and the image file is the card's own EEPROM, not an interface.

#![forbid(unsafe_code)]

pub mod credit;
pub mod eeprom;
pub mod image;
pub mod memcard;
pub mod online;
mod online_state;
pub mod purse;
pub mod services;
mod services_state;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transfer;
mod transfer_state;

use std::path::Path;

use rand_core::{CryptoRngCore, OsRng};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::crypto::AesKey;
use valuecard_core::messages::online::ONLINE_AID;
use valuecard_core::messages::purse::{ins, ChipSerial, CLA_ISO, CLA_PROPRIETARY, PURSE_AID};
use valuecard_core::messages::services::SERVICES_AID;
use valuecard_core::StatusWord;

use crate::eeprom::{Eeprom, FileEeprom, StorageError};
use crate::image::{ImageError, ImageStore, EEPROM_SIZE};
use crate::purse::{Application, Volatile};
use crate::state::{PersistentState, StateError};

/// Why a card could not be started or could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("card image decoded to an invalid state: {0}")]
    State(#[from] StateError),
    /// A memory card's image (seed 001) that does not hold a memory card's content.
    #[error("memory card image: {0}")]
    Memory(#[from] memcard::MemoryError),
    #[error("the card image is blank: manufacture the card first")]
    Blank,
    #[error("the card image already holds a card")]
    AlreadyManufactured,
    /// Power was lost during a write: the card is off and sends no response.
    #[error("card lost power during a write")]
    PowerLost,
}

/// An emulated card.
pub struct Card<E: Eeprom, R: CryptoRngCore = OsRng> {
    store: ImageStore<E>,
    state: PersistentState,
    volatile: Volatile,
    rng: R,
    powered: bool,
}

impl<E: Eeprom, R: CryptoRngCore> core::fmt::Debug for Card<E, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Card")
            .field("state", &self.state.card_state())
            .field("card_id", &self.state.card_id())
            .field("powered", &self.powered)
            .finish_non_exhaustive()
    }
}

/// A card whose image is a file.
pub type FileCard = Card<FileEeprom>;

impl FileCard {
    /// Manufactures a new card image file holding only its chip serial and its own
    /// transport key (Fig. 8).
    pub fn manufacture_file(
        path: &Path,
        chip_serial: ChipSerial,
        transport_key: AesKey,
    ) -> Result<Self, CardError> {
        if path.exists() {
            return Err(CardError::AlreadyManufactured);
        }
        let eeprom = FileEeprom::open(path, EEPROM_SIZE).map_err(ImageError::from)?;
        Card::manufacture(eeprom, chip_serial, transport_key, OsRng)
    }

    pub fn open_file(path: &Path) -> Result<Self, CardError> {
        if !path.exists() {
            return Err(CardError::Image(ImageError::Storage(StorageError::Io(
                format!("{}: no such card image", path.display()),
            ))));
        }
        let eeprom = FileEeprom::open(path, EEPROM_SIZE).map_err(ImageError::from)?;
        Card::open(eeprom, OsRng)
    }
}

impl<E: Eeprom, R: CryptoRngCore> Card<E, R> {
    /// Writes the factory state into blank memory: the chip's serial and its own transport
    /// key, diversified from that serial by the center (`Center::transport_key_for_chip`).
    pub fn manufacture(
        eeprom: E,
        chip_serial: ChipSerial,
        transport_key: AesKey,
        rng: R,
    ) -> Result<Self, CardError> {
        let (mut store, payload) = ImageStore::open(eeprom)?;
        if payload.is_some() {
            return Err(CardError::AlreadyManufactured);
        }
        let state = PersistentState::Manufactured {
            transport_key,
            chip_serial: Some(chip_serial),
        };
        store.commit(&state.encode()).map_err(power_or_image)?;
        Ok(Card {
            store,
            state,
            volatile: Volatile::default(),
            rng,
            powered: true,
        })
    }

    /// Writes `state` into blank memory as the card's first image (tests and fuzzing start
    /// cards in any life-cycle state this way).
    pub fn with_state(eeprom: E, state: PersistentState, rng: R) -> Result<Self, CardError> {
        let (mut store, payload) = ImageStore::open(eeprom)?;
        if payload.is_some() {
            return Err(CardError::AlreadyManufactured);
        }
        store.commit(&state.encode()).map_err(power_or_image)?;
        Ok(Card {
            store,
            state,
            volatile: Volatile::default(),
            rng,
            powered: true,
        })
    }

    /// Powers up a card from its memory.
    pub fn open(eeprom: E, rng: R) -> Result<Self, CardError> {
        let (store, payload) = ImageStore::open(eeprom)?;
        let payload = payload.ok_or(CardError::Blank)?;
        let state = PersistentState::decode(&payload)?;
        Ok(Card {
            store,
            state,
            volatile: Volatile::default(),
            rng,
            powered: true,
        })
    }

    /// A warm reset (or a new power-up on the same memory): volatile state is lost.
    pub fn reset(&mut self) {
        self.volatile = Volatile::default();
    }

    pub fn state(&self) -> &PersistentState {
        &self.state
    }

    pub fn store(&self) -> &ImageStore<E> {
        &self.store
    }

    /// The card's memory, for fault injection in tests and simulations.
    pub fn eeprom_mut(&mut self) -> &mut E {
        self.store.eeprom_mut()
    }

    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Processes one command APDU and returns the response APDU bytes, or `PowerLost` if
    /// the card lost power during a write (then it answers nothing until re-opened).
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
        let mut effect = match self.dispatch(&command) {
            Ok(effect) => effect,
            Err(sw) => return Ok(Response::error(sw)),
        };
        if let Some(pending) = effect.compare_after_commit.take() {
            // VERIFY: the decremented try counter is made durable before the presented
            // secret is compared, so no answer (and no timing or write pattern) can reveal a
            // wrong guess before it has cost a try.
            if let Some(response) = self.commit_state(effect.commit.take())? {
                return Ok(response);
            }
            effect = match credit::compare(pending, &self.state, &mut self.volatile) {
                Ok(effect) => effect,
                Err(sw) => return Ok(Response::error(sw)),
            };
        }
        if let Some(response) = self.commit_state(effect.commit)? {
            return Ok(response);
        }
        Ok(Response {
            data: effect.data,
            sw: effect.sw,
        })
    }

    /// Commits `next` (if any) before the card answers. `Ok(Some(response))` is the answer to
    /// give instead when the write failed; a power cut is `Err(PowerLost)`.
    fn commit_state(
        &mut self,
        next: Option<PersistentState>,
    ) -> Result<Option<Response>, CardError> {
        let Some(next) = next else {
            return Ok(None);
        };
        match self.store.commit(&next.encode()) {
            Ok(()) => {
                self.state = next;
                Ok(None)
            }
            Err(ImageError::Storage(StorageError::PowerLost)) => {
                self.powered = false;
                self.volatile = Volatile::default();
                Err(CardError::PowerLost)
            }
            Err(_) => {
                // Nothing the failed command granted survives it.
                self.volatile.credit_authorization = None;
                self.volatile.online = None;
                self.volatile.services = None;
                Ok(Some(Response::error(StatusWord::MEMORY_FAILURE)))
            }
        }
    }

    fn dispatch(&mut self, command: &Command) -> Result<purse::Effect, StatusWord> {
        if (command.cla, command.ins) == (CLA_ISO, ins::SELECT) {
            return self.select(command);
        }
        if self.volatile.selected == Some(Application::Online) {
            if command.cla != CLA_PROPRIETARY {
                return Err(if command.cla == CLA_ISO {
                    StatusWord::INS_NOT_SUPPORTED
                } else {
                    StatusWord::CLA_NOT_SUPPORTED
                });
            }
            if purse_moving(&self.state)
                && command.ins == valuecard_core::messages::online::ins::INITIALIZE_UPDATE
            {
                // No online session opens on a purse that is moving or moved (seed 002).
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            return online::handle(command, &self.state, &mut self.volatile, &mut self.rng);
        }
        if self.volatile.selected == Some(Application::Services) {
            return services::handle(command, &self.state, &mut self.volatile, &mut self.rng);
        }
        // A purchase or load session lives exactly until the next command, whatever that
        // command is and however it ends.
        let sessions = purse::Sessions {
            purchase: self.volatile.purchase.take(),
            load: self.volatile.load.take(),
            password: self.volatile.password.take(),
            service: self.volatile.service.take(),
        };
        let transfer_sessions = transfer::TransferSessions {
            key_update: self.volatile.key_update.take(),
            transfer_in: self.volatile.transfer_in.take(),
        };
        match (command.cla, command.ins) {
            (CLA_ISO, ins::GET_CHALLENGE) | (CLA_PROPRIETARY, _) => {
                if command.ins == ins::GET_CHALLENGE && command.cla != CLA_ISO {
                    return Err(StatusWord::INS_NOT_SUPPORTED);
                }
                if command.cla == CLA_PROPRIETARY && transfer::is_transfer_instruction(command.ins)
                {
                    if self.volatile.selected != Some(Application::Purse)
                        || purse_moving(&self.state)
                    {
                        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                    }
                    return transfer::handle(
                        command,
                        &self.state,
                        &mut self.volatile,
                        transfer_sessions,
                        &mut self.rng,
                    );
                }
                if !is_purse_instruction(command.ins) {
                    return Err(StatusWord::INS_NOT_SUPPORTED);
                }
                if self.volatile.selected != Some(Application::Purse) {
                    return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
                }
                purse::handle(
                    command,
                    &self.state,
                    &mut self.volatile,
                    sessions,
                    &mut self.rng,
                )
            }
            (CLA_ISO, _) => Err(StatusWord::INS_NOT_SUPPORTED),
            _ => Err(StatusWord::CLA_NOT_SUPPORTED),
        }
    }

    /// SELECT by DF name (ISO 7816-4 § 11.1.1): P1 = 04, P2 = 00 (first or only occurrence,
    /// return FCI). Any SELECT ends every session; selecting anything unknown leaves no
    /// application selected.
    fn select(&mut self, command: &Command) -> Result<purse::Effect, StatusWord> {
        if command.p1 != 0x04 || command.p2 != 0x00 {
            return Err(StatusWord::INCORRECT_P1_P2);
        }
        self.volatile = Volatile::default();
        if command.data == PURSE_AID {
            self.volatile.selected = Some(Application::Purse);
            Ok(purse::select_response(&self.state))
        } else if command.data == ONLINE_AID {
            let response = online::select_response(&self.state)?;
            self.volatile.selected = Some(Application::Online);
            Ok(response)
        } else if command.data == SERVICES_AID {
            let response = services::select_response(&self.state)?;
            self.volatile.selected = Some(Application::Services);
            Ok(response)
        } else {
            Err(StatusWord::FILE_NOT_FOUND)
        }
    }
}

/// Whether the purse's service area is on temporary keys (seed 002): the purse is moving
/// to a new chip or has moved, and nothing may change its value here.
fn purse_moving(state: &PersistentState) -> bool {
    matches!(state, PersistentState::Personalized(purse) if purse.services.purse_on_temporary_keys())
}

fn is_purse_instruction(instruction: u8) -> bool {
    matches!(
        instruction,
        ins::GET_CHALLENGE
            | ins::GENERATE_KEY_PAIR
            | ins::PERSONALIZE
            | ins::READ_PURSE
            | ins::READ_LOG
            | ins::INITIALIZE_PURCHASE
            | ins::DEBIT
            | ins::INITIALIZE_LOAD
            | ins::CREDIT
            | ins::GET_LAST_TRANSACTION
            | ins::READ_CREDIT
            | ins::READ_SERVICE_LOG
            | ins::ENABLE_CREDIT
            | ins::VERIFY_SETTING_NUMBER
            | ins::VERIFY_PASSWORD
            | ins::INITIALIZE_PASSWORD
            | ins::SET_PASSWORD
            | ins::INITIALIZE_SERVICE
            | ins::RECORD_SERVICE
    )
}

pub(crate) fn power_or_image(error: ImageError) -> CardError {
    match error {
        ImageError::Storage(StorageError::PowerLost) => CardError::PowerLost,
        other => CardError::Image(other),
    }
}
