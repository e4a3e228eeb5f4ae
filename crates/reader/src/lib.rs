//! Card readers: how a terminal reaches a card.
//!
//! [`CardReader`] is the seam between the terminal's protocol logic and the transport. The
//! in-process readers here hold an emulated card ([`InProcessReader`] the purse [`Card`],
//! [`EmulatedReader`] any [`EmulatedCard`]: the purse card or the memory card); a PC/SC
//! reader implements the same trait, so a terminal drives a virtual card and a real one
//! alike.

#![forbid(unsafe_code)]

#[cfg(feature = "pcsc")]
pub mod pcsc_reader;
pub mod vpcd;

use rand_core::CryptoRngCore;
use valuecard_card::eeprom::Eeprom;
use valuecard_card::memcard::{self, MemoryCard};
use valuecard_card::{Card, CardError};
use valuecard_core::apdu::{ApduError, Command, Response};

/// Why an exchange with a card failed. After `CardRemoved` the terminal cannot know whether
/// the card executed the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    #[error("no card in the reader")]
    NoCard,
    #[error("the card was removed or lost power before it answered")]
    CardRemoved,
    #[error("malformed response from the card: {0}")]
    MalformedResponse(#[from] ApduError),
    #[error("reader transport: {0}")]
    Transport(String),
    /// No reader was named and none holds a valuecard purse card; `readers` says what each
    /// holds.
    #[error("no PC/SC reader holds a valuecard card; {readers}")]
    NoPurseReader { readers: String },
    /// No reader was named and several hold a valuecard purse card: which one is meant is
    /// the cashier's choice (`--reader`), never a guess.
    #[error("several PC/SC readers hold a valuecard card: choose one with --reader; {readers}")]
    SeveralPurseReaders { readers: String },
}

/// A reader with (possibly) a card in it.
pub trait CardReader {
    /// Sends one command APDU and returns the response APDU bytes.
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError>;

    /// Sends a command and parses the response.
    fn exchange(&mut self, command: &Command) -> Result<Response, ReaderError> {
        let bytes = self.transmit_raw(&command.encode())?;
        Ok(Response::parse(&bytes)?)
    }

    /// A short human-readable name.
    fn name(&self) -> String;
}

impl<T: CardReader + ?Sized> CardReader for &mut T {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        (**self).transmit_raw(apdu)
    }

    fn name(&self) -> String {
        (**self).name()
    }
}

/// A reader in the same process as the card: the card is inserted and removed as a value.
#[derive(Debug)]
pub struct InProcessReader<E: Eeprom, R: CryptoRngCore> {
    name: String,
    card: Option<Card<E, R>>,
}

impl<E: Eeprom, R: CryptoRngCore> InProcessReader<E, R> {
    pub fn new(name: impl Into<String>) -> Self {
        InProcessReader {
            name: name.into(),
            card: None,
        }
    }

    pub fn with_card(name: impl Into<String>, card: Card<E, R>) -> Self {
        InProcessReader {
            name: name.into(),
            card: Some(card),
        }
    }

    /// Inserts a card: it powers up, so its volatile state starts fresh.
    pub fn insert(&mut self, mut card: Card<E, R>) {
        card.reset();
        self.card = Some(card);
    }

    pub fn remove(&mut self) -> Option<Card<E, R>> {
        self.card.take()
    }

    pub fn card(&self) -> Option<&Card<E, R>> {
        self.card.as_ref()
    }

    pub fn card_mut(&mut self) -> Option<&mut Card<E, R>> {
        self.card.as_mut()
    }
}

impl<E: Eeprom, R: CryptoRngCore> CardReader for InProcessReader<E, R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let card = self.card.as_mut().ok_or(ReaderError::NoCard)?;
        match card.transmit(apdu) {
            Ok(response) => Ok(response),
            Err(CardError::PowerLost) => Err(ReaderError::CardRemoved),
            Err(other) => Err(ReaderError::Transport(other.to_string())),
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// An emulated card as a reader sees it: an ATR, one APDU in and one response out, and a
/// reset. Both card kinds implement it, the purse card ([`Card`]) and the memory card of
/// seed 001 ([`MemoryCard`]), so the vpcd bridge and [`EmulatedReader`] serve either.
pub trait EmulatedCard: core::fmt::Debug {
    /// The ATR the card answers a reset with.
    fn atr(&self) -> &'static [u8];
    /// Processes one command APDU. `Err(CardError::PowerLost)` means the card lost power
    /// during a write and sends nothing; it answers nothing more until opened again.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError>;
    /// A reset or a new power-up: the card's volatile state is lost.
    fn reset(&mut self);
}

impl<E: Eeprom, R: CryptoRngCore> EmulatedCard for Card<E, R> {
    fn atr(&self) -> &'static [u8] {
        &vpcd::ATR
    }

    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        Card::transmit(self, apdu)
    }

    fn reset(&mut self) {
        Card::reset(self);
    }
}

impl<E: Eeprom> EmulatedCard for MemoryCard<E> {
    fn atr(&self) -> &'static [u8] {
        &memcard::ATR
    }

    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        MemoryCard::transmit(self, apdu)
    }

    fn reset(&mut self) {
        MemoryCard::reset(self);
    }
}

/// A reader in the same process as any [`EmulatedCard`] (a memory card, for the charge and
/// payment machines of seed 001): inserted and removed as a value, like [`InProcessReader`].
#[derive(Debug)]
pub struct EmulatedReader<C: EmulatedCard> {
    name: String,
    card: Option<C>,
}

impl<C: EmulatedCard> EmulatedReader<C> {
    pub fn new(name: impl Into<String>) -> Self {
        EmulatedReader {
            name: name.into(),
            card: None,
        }
    }

    pub fn with_card(name: impl Into<String>, card: C) -> Self {
        EmulatedReader {
            name: name.into(),
            card: Some(card),
        }
    }

    /// Inserts a card: it powers up, so its volatile state starts fresh.
    pub fn insert(&mut self, mut card: C) {
        card.reset();
        self.card = Some(card);
    }

    pub fn remove(&mut self) -> Option<C> {
        self.card.take()
    }

    pub fn card(&self) -> Option<&C> {
        self.card.as_ref()
    }

    pub fn card_mut(&mut self) -> Option<&mut C> {
        self.card.as_mut()
    }

    /// The ATR of the card in the reader, as PC/SC's `SCardStatus` gives it.
    pub fn atr(&self) -> Option<&'static [u8]> {
        self.card.as_ref().map(EmulatedCard::atr)
    }
}

impl<C: EmulatedCard> CardReader for EmulatedReader<C> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let card = self.card.as_mut().ok_or(ReaderError::NoCard)?;
        match card.transmit(apdu) {
            Ok(response) => Ok(response),
            Err(CardError::PowerLost) => Err(ReaderError::CardRemoved),
            Err(other) => Err(ReaderError::Transport(other.to_string())),
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests;
