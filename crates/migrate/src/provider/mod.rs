//! A service provider's application server 10 (seed 002) for one service: its normal SAM 11
//! and its transfer SAM 12, and the provider's side of a move. The move server relays; the
//! provider drives the chip through it, one APDU at a time, and keeps each step in its
//! database before it answers, so a provider restarted between two APDUs carries on.
//!
//! - Upload (S5-S7): OPEN SERVICE and EXTERNAL AUTHENTICATE with the area's temporary key,
//!   EXPORT AREA, and the content sealed by the transfer SAM into the copy (for the purse,
//!   with the old card's signature checked against its certificate).
//! - Download (S12-S14): the copy bound to the destination chip, the same authentication,
//!   (for the purse, READ AREA and the move's record signed for exactly that purse state),
//!   IMPORT AREA, and the card's receipt checked against the copy.
//! - Clear (S17): the copy's bytes deleted, its row kept as the record of the move.
//! - Discard (a rollback before any download): the same, for a copy never downloaded.
//! - Report ([`report`]): each purse move whose value reached the new chip, to the center.
//!
//! Every message to and from the chip in a session is sealed under the area key, which
//! only the chip and this provider's SAM hold.

mod conversation;
mod download;
pub mod normal;
pub mod report;
pub mod store;
mod upload;

use std::sync::Arc;

use rand_core::CryptoRngCore;
use valuecard_center::sql::{Database, Executor, Value};
use valuecard_core::cert::{Certificate, TrustAnchor};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::{
    AreaFormat, KeyPackage, KeyState, MoveId, ServiceCode, ServiceKind,
};
use valuecard_core::time::Date;
use valuecard_core::StatusWord;

use crate::sam::{ProviderSam, SamError};

pub use conversation::{Exchange, Turn};

/// Why the provider refused a step or could not take it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The chip answered with an error status word.
    #[error("the chip refused with status {0}")]
    Card(StatusWord),
    /// The chip's answer does not fit the step (malformed, another move's, another chip's).
    #[error("the chip's answer does not fit: {0}")]
    Answer(&'static str),
    /// A step came that this provider's state does not expect.
    #[error("out of order: {0}")]
    OutOfOrder(&'static str),
    /// There is no copy of this move to download, or it was cleared or discarded.
    #[error("this provider holds no copy of that move")]
    NoCopy,
    /// The copy is bound to another destination chip.
    #[error("that move's copy belongs to another destination chip")]
    WrongDestination,
    /// This chip's service is already the copy of another move.
    #[error("this chip's service was already uploaded for another move")]
    AlreadyUploaded,
    /// A copy was downloaded already: the move can no longer be rolled back.
    #[error("a copy of that move was downloaded: it can only go forward")]
    Downloaded,
    #[error(transparent)]
    Sam(#[from] SamError),
    #[error(transparent)]
    Storage(#[from] CenterError),
}

/// A provider's application server for one service.
pub struct Provider {
    service: ServiceCode,
    kind: ServiceKind,
    capacity: u16,
    normal: Arc<dyn ProviderSam>,
    transfer: Arc<dyn ProviderSam>,
    anchor: TrustAnchor,
}

impl core::fmt::Debug for Provider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provider")
            .field("service", &self.service)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Refuses SAMs of the wrong kinds (a normal SAM holds main keys, a transfer SAM
    /// temporary ones).
    pub fn new(
        service: ServiceCode,
        kind: ServiceKind,
        capacity: u16,
        normal: Arc<dyn ProviderSam>,
        transfer: Arc<dyn ProviderSam>,
        anchor: TrustAnchor,
    ) -> Result<Self, ProviderError> {
        if normal.key_state() != KeyState::Main || transfer.key_state() != KeyState::Temporary {
            return Err(ProviderError::Sam(SamError::Unsupported(
                "a provider needs a normal SAM and a transfer SAM",
            )));
        }
        Ok(Provider {
            service,
            kind,
            capacity,
            normal,
            transfer,
            anchor,
        })
    }

    pub fn service(&self) -> ServiceCode {
        self.service
    }

    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// The format of this service's area, as the move server keeps it.
    pub fn format(&self) -> AreaFormat {
        AreaFormat {
            service: self.service,
            kind: self.kind,
            capacity: self.capacity,
            provider: self.normal.certificate().subject(),
            mover: self.transfer.certificate().subject(),
        }
    }

    pub fn normal_sam(&self) -> &Arc<dyn ProviderSam> {
        &self.normal
    }

    pub fn transfer_sam(&self) -> &Arc<dyn ProviderSam> {
        &self.transfer
    }

    pub(crate) fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// Both key packages of this service's area for a chip (S10 and issuance), each sealed
    /// to the chip by the SAM that holds its master.
    pub fn key_packages(
        &self,
        card_certificate: &Certificate,
        today: Date,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(KeyPackage, KeyPackage), ProviderError> {
        Ok((
            self.normal
                .key_package(card_certificate, self.service, today, rng)?,
            self.transfer
                .key_package(card_certificate, self.service, today, rng)?,
        ))
    }

    /// S17: the copy of `move_id` deleted once downloaded; its row stays as the record.
    /// Clearing twice changes nothing.
    pub fn clear(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        now: i64,
    ) -> Result<(), ProviderError> {
        self.end_copy(db, move_id, now, End::Clear)
    }

    /// A rollback: the copy of `move_id` deleted before any download, so that the old chip
    /// may go back to main keys. Refused once the copy was downloaded or a download began.
    /// Discarding a move that has no copy here (its upload never reached this provider)
    /// changes nothing.
    pub fn discard(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        now: i64,
    ) -> Result<(), ProviderError> {
        self.end_copy(db, move_id, now, End::Discard)
    }

    fn end_copy(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        now: i64,
        end: End,
    ) -> Result<(), ProviderError> {
        let key = [move_id.to_vec().into(), i64::from(self.service.0).into()];
        db.transaction(|tx| {
            let state = tx
                .query_optional(
                    "SELECT state FROM provider_copies WHERE move_id = $1 AND service = $2",
                    &key,
                )?
                .map(|row| row.text(0))
                .transpose()?;
            let downloading = tx
                .query_optional(
                    "SELECT 1 FROM provider_sessions WHERE move_id = $1 AND service = $2 \
                     AND direction = 'download'",
                    &key,
                )?
                .is_some();
            let (from, to) = match end {
                End::Clear => ("downloaded", "cleared"),
                End::Discard => ("uploaded", "discarded"),
            };
            let refusal = match (end, state.as_deref()) {
                (_, Some(state)) if state == to => return Ok(Ok(())),
                (End::Discard, None) => None,
                (End::Discard, Some("uploaded")) if downloading => Some(ProviderError::Downloaded),
                (_, Some(state)) if state == from => None,
                (End::Clear, Some("uploaded")) => Some(ProviderError::OutOfOrder(
                    "a copy is cleared only once it was downloaded",
                )),
                (End::Discard, Some("downloaded" | "cleared")) => Some(ProviderError::Downloaded),
                _ => Some(ProviderError::NoCopy),
            };
            if let Some(refusal) = refusal {
                return Ok(Err(refusal));
            }
            tx.execute(
                "UPDATE provider_copies SET sealed_copy = NULL, state = $3, ended_on = $4 \
                 WHERE move_id = $1 AND service = $2 AND state = $5",
                &[
                    key[0].clone(),
                    key[1].clone(),
                    to.into(),
                    now.into(),
                    from.into(),
                ],
            )?;
            tx.execute(
                "DELETE FROM provider_sessions WHERE move_id = $1 AND service = $2",
                &key,
            )?;
            Ok(Ok(()))
        })?
    }

    /// The state of this service's copy of `move_id`, if there is one (for the move
    /// server's status and for tests).
    pub fn copy_state(
        &self,
        db: &mut Database,
        move_id: &MoveId,
    ) -> Result<Option<CopyRecord>, ProviderError> {
        let row = db.query_optional(
            "SELECT state, source, destination, \
             CASE WHEN sealed_copy IS NULL THEN 0 ELSE 1 END FROM provider_copies \
             WHERE move_id = $1 AND service = $2",
            &[move_id.to_vec().into(), i64::from(self.service.0).into()],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(CopyRecord {
            state: row.text(0)?,
            source: card_id(&row.bytes(1)?)?,
            destination: row
                .optional_bytes(2)?
                .map(|bytes| card_id(&bytes))
                .transpose()?,
            holds_copy: row.int(3)? != 0,
        }))
    }

    /// How many copies this provider still holds (not cleared or discarded).
    pub fn copies_held(&self, db: &mut Database) -> Result<i64, ProviderError> {
        Ok(db
            .query_one(
                "SELECT COUNT(*) FROM provider_copies WHERE sealed_copy IS NOT NULL",
                &[],
            )?
            .int(0)?)
    }

    /// The transfer SAM's next record sequence number, in the caller's transaction.
    fn next_sequence(&self, tx: &mut dyn Executor) -> Result<u32, CenterError> {
        let writer: DeviceId = self.transfer.certificate().subject();
        let key: Value = writer.as_bytes().to_vec().into();
        let current = tx
            .query_optional(
                "SELECT last FROM provider_sequence WHERE writer = $1",
                std::slice::from_ref(&key),
            )?
            .map(|row| row.int(0))
            .transpose()?;
        let next = current.unwrap_or(0) + 1;
        if current.is_some() {
            tx.execute(
                "UPDATE provider_sequence SET last = $2 WHERE writer = $1",
                &[key, next.into()],
            )?;
        } else {
            tx.execute(
                "INSERT INTO provider_sequence (writer, last) VALUES ($1, $2)",
                &[key, next.into()],
            )?;
        }
        u32::try_from(next).map_err(|_| CenterError::Storage("record sequence exhausted".into()))
    }
}

/// How a copy ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// S17, after its download.
    Clear,
    /// A rollback, before any download.
    Discard,
}

/// One copy's record, as the provider keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    /// `uploaded`, `downloaded`, `cleared` or `discarded`.
    pub state: String,
    pub source: CardId,
    pub destination: Option<CardId>,
    /// Whether the sealed content is still held.
    pub holds_copy: bool,
}

pub(crate) fn card_id(bytes: &[u8]) -> Result<CardId, CenterError> {
    CardId::from_slice(bytes)
        .map_err(|_| CenterError::Storage("a stored card ID is malformed".into()))
}
