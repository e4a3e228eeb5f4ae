//! How the move server reaches a provider: [`ProviderLink`], with [`LocalProvider`] for a
//! provider in the same process (its own database and random source). The HTTP link to a
//! provider's own service implements the same trait.

use std::sync::{Arc, Mutex};

use rand_core::{CryptoRngCore, OsRng};
use valuecard_center::sql::Database;
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{AreaFormat, KeyPackage, MoveId};
use valuecard_core::time::Clock;

use crate::provider::{Exchange, Provider, ProviderError, Turn};

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The provider answered and refused (its reason).
    #[error("{0}")]
    Refused(String),
    /// The provider could not be reached, or failed on its side.
    #[error("{0}")]
    Down(String),
}

/// A provider as the move server sees it.
pub trait ProviderLink: Send + Sync {
    /// The format of the provider's area (what S10 formats on a new chip).
    fn format(&self) -> AreaFormat;

    /// Both key packages of the provider's area for a chip.
    fn key_packages(
        &self,
        card_certificate: &Certificate,
    ) -> Result<(KeyPackage, KeyPackage), LinkError>;

    /// One step of the upload from `source` (no answer to begin).
    fn upload(
        &self,
        move_id: &MoveId,
        source: &CardId,
        source_certificate: &Certificate,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError>;

    /// One step of the download into `destination` (no answer to begin).
    fn download(
        &self,
        move_id: &MoveId,
        destination: &CardId,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError>;

    /// S17.
    fn clear(&self, move_id: &MoveId) -> Result<(), LinkError>;

    /// A rollback before any download.
    fn discard(&self, move_id: &MoveId) -> Result<(), LinkError>;
}

/// A provider's failure as the link reports it: its own refusals are `Refused`, its storage
/// and SAM failures `Down`.
pub fn link_error(error: ProviderError) -> LinkError {
    match error {
        ProviderError::Storage(_) | ProviderError::Sam(crate::sam::SamError::Unavailable(_)) => {
            LinkError::Down(error.to_string())
        }
        other => LinkError::Refused(other.to_string()),
    }
}

/// A provider in this process, over its own database.
pub struct LocalProvider {
    provider: Arc<Provider>,
    db: Mutex<Database>,
    clock: Box<dyn Clock + Sync>,
    rng: Mutex<Box<dyn CryptoRngCore + Send>>,
}

impl core::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl LocalProvider {
    pub fn new(provider: Arc<Provider>, db: Database, clock: Box<dyn Clock + Sync>) -> Self {
        LocalProvider {
            provider,
            db: Mutex::new(db),
            clock,
            rng: Mutex::new(Box::new(OsRng)),
        }
    }

    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// Runs `work` on the provider's database (tests read its books this way).
    pub fn with_db<T>(&self, work: impl FnOnce(&Provider, &mut Database) -> T) -> T {
        let mut db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&self.provider, &mut db)
    }

    fn turn<'a>(&self, move_id: &'a MoveId, card: &'a CardId) -> Turn<'a> {
        Turn {
            move_id,
            card,
            now: crate::now(),
            today: self.clock.today(),
        }
    }
}

impl ProviderLink for LocalProvider {
    fn format(&self) -> AreaFormat {
        self.provider.format()
    }

    fn key_packages(
        &self,
        card_certificate: &Certificate,
    ) -> Result<(KeyPackage, KeyPackage), LinkError> {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.provider
            .key_packages(card_certificate, self.clock.today(), &mut **rng)
            .map_err(link_error)
    }

    fn upload(
        &self,
        move_id: &MoveId,
        source: &CardId,
        source_certificate: &Certificate,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError> {
        let turn = self.turn(move_id, source);
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.with_db(|provider, db| {
            provider.upload(db, turn, Some(source_certificate), response, &mut **rng)
        })
        .map_err(link_error)
    }

    fn download(
        &self,
        move_id: &MoveId,
        destination: &CardId,
        response: Option<&[u8]>,
    ) -> Result<Exchange, LinkError> {
        let turn = self.turn(move_id, destination);
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.with_db(|provider, db| provider.download(db, turn, response, &mut **rng))
            .map_err(link_error)
    }

    fn clear(&self, move_id: &MoveId) -> Result<(), LinkError> {
        let now = crate::now();
        self.with_db(|provider, db| provider.clear(db, move_id, now))
            .map_err(link_error)
    }

    fn discard(&self, move_id: &MoveId) -> Result<(), LinkError> {
        let now = crate::now();
        self.with_db(|provider, db| provider.discard(db, move_id, now))
            .map_err(link_error)
    }
}
