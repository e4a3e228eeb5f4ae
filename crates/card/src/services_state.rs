//! The persistent state of the multi-service chip (seed 002): one area per service, each
//! with its format, its two keys, its key state, its content, and the marks of the move it
//! was exported for or imported from. One TLV encoding inside the purse state (absent on a
//! chip without areas).

use valuecard_core::cert::Certificate;
use valuecard_core::crypto::AesKey;
use valuecard_core::limits::CHIP_AREAS_MAX;
use valuecard_core::messages::services::{
    AreaContent, AreaFormat, AreaSummary, KeyState, MoveId, ServiceCode, ServiceKind,
};
use valuecard_core::tlv::{be_u32, TlvReader, TlvWriter};

use crate::state::StateError;

/// One service's area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceArea {
    pub format: AreaFormat,
    pub key_state: KeyState,
    pub key_version: u32,
    /// Opens the area in normal use (from the provider's normal SAM).
    pub main_key: AesKey,
    /// Opens the area during a move (from the provider's transfer SAM).
    pub temporary_key: AesKey,
    /// The transfer SAM's certificate: the writer of a purse area's move record, which the
    /// card hands on as its last writer's certificate.
    pub mover_certificate: Certificate,
    /// Tickets or points; `None` for the purse, whose value is the purse's balance.
    pub content: Option<AreaContent>,
    /// The move the area was exported for, until it is switched back to main keys.
    pub exported_for: Option<MoveId>,
    /// The move whose content was imported, with the content's digest (answered again on
    /// a repeated IMPORT AREA).
    pub imported: Option<(MoveId, [u8; 32])>,
}

impl ServiceArea {
    pub fn key(&self) -> &AesKey {
        match self.key_state {
            KeyState::Main => &self.main_key,
            KeyState::Temporary => &self.temporary_key,
        }
    }

    pub fn summary(&self) -> AreaSummary {
        AreaSummary {
            service: self.format.service,
            kind: self.format.kind,
            key_state: self.key_state,
            provider: self.format.provider,
            mover: self.format.mover,
            exported_for: self.exported_for,
            imported_for: self.imported.map(|(id, _)| id),
        }
    }
}

/// Every area of the chip, at most `CHIP_AREAS_MAX`, each service once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicesApp {
    pub areas: Vec<ServiceArea>,
}

mod field {
    pub const AREA: u32 = 0xA0;
    pub const KEY_STATE: u32 = 0x80;
    pub const KEY_VERSION: u32 = 0x81;
    pub const MAIN_KEY: u32 = 0x82;
    pub const TEMPORARY_KEY: u32 = 0x83;
    pub const EXPORTED_FOR: u32 = 0x84;
    pub const IMPORTED_FOR: u32 = 0x85;
    pub const IMPORTED_DIGEST: u32 = 0x86;
}

fn bad<E>(_: E) -> StateError {
    StateError("service areas")
}

impl ServicesApp {
    pub fn is_empty(&self) -> bool {
        self.areas.is_empty()
    }

    pub fn area(&self, service: ServiceCode) -> Option<&ServiceArea> {
        self.areas
            .iter()
            .find(|area| area.format.service == service)
    }

    pub fn area_mut(&mut self, service: ServiceCode) -> Option<&mut ServiceArea> {
        self.areas
            .iter_mut()
            .find(|area| area.format.service == service)
    }

    /// The purse's area, if the chip has one.
    pub fn purse_area(&self) -> Option<&ServiceArea> {
        self.areas
            .iter()
            .find(|area| area.format.kind == ServiceKind::Purse)
    }

    /// Whether the purse is on temporary keys: then it is moving or moved, and every
    /// command that would change its value is refused.
    pub fn purse_on_temporary_keys(&self) -> bool {
        self.purse_area()
            .is_some_and(|area| area.key_state == KeyState::Temporary)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400 * self.areas.len());
        for area in &self.areas {
            w.nested(field::AREA, |a| {
                area.format.encode_into(a);
                a.put_u8(field::KEY_STATE, area.key_state as u8)
                    .put_u32(field::KEY_VERSION, area.key_version)
                    .put(field::MAIN_KEY, area.main_key.expose())
                    .put(field::TEMPORARY_KEY, area.temporary_key.expose())
                    .put_raw(&area.mover_certificate.encode());
                if let Some(content) = &area.content {
                    content.encode_into(a);
                }
                if let Some(id) = &area.exported_for {
                    a.put(field::EXPORTED_FOR, id);
                }
                if let Some((id, digest)) = &area.imported {
                    a.put(field::IMPORTED_FOR, id)
                        .put(field::IMPORTED_DIGEST, digest);
                }
            });
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = TlvReader::new(bytes);
        let mut areas: Vec<ServiceArea> = Vec::new();
        while let Some(value) = r.optional(field::AREA).map_err(bad)? {
            let mut a = TlvReader::new(value);
            let format = AreaFormat::decode_value(
                a.expect(valuecard_core::messages::services::tag::FORMAT)
                    .map_err(bad)?,
            )
            .map_err(bad)?;
            let [state] = a.expect_array::<1>(field::KEY_STATE).map_err(bad)?;
            let key_state = KeyState::from_u8(state).map_err(bad)?;
            let key_version = be_u32(
                field::KEY_VERSION,
                a.expect(field::KEY_VERSION).map_err(bad)?,
            )
            .map_err(bad)?;
            let main_key =
                AesKey::from_slice(a.expect(field::MAIN_KEY).map_err(bad)?).map_err(bad)?;
            let temporary_key =
                AesKey::from_slice(a.expect(field::TEMPORARY_KEY).map_err(bad)?).map_err(bad)?;
            let mover_certificate = Certificate::decode_value(
                a.expect(valuecard_core::cert::TAG_CERTIFICATE)
                    .map_err(bad)?,
            )
            .map_err(bad)?;
            let content = a
                .optional(valuecard_core::messages::services::tag::CONTENT)
                .map_err(bad)?
                .map(AreaContent::decode_value)
                .transpose()
                .map_err(bad)?;
            let exported_for = a
                .optional(field::EXPORTED_FOR)
                .map_err(bad)?
                .map(MoveId::try_from)
                .transpose()
                .map_err(bad)?;
            let imported = match a.optional(field::IMPORTED_FOR).map_err(bad)? {
                None => None,
                Some(id) => Some((
                    MoveId::try_from(id).map_err(bad)?,
                    a.expect_array::<32>(field::IMPORTED_DIGEST).map_err(bad)?,
                )),
            };
            a.finish().map_err(bad)?;
            let content_fits = match (&content, format.kind) {
                (None, ServiceKind::Purse) => true,
                (Some(content), kind) => kind != ServiceKind::Purse && content.kind() == kind,
                (None, _) => false,
            };
            if !content_fits
                || areas.len() >= CHIP_AREAS_MAX
                || areas
                    .iter()
                    .any(|seen| seen.format.service == format.service)
            {
                return Err(StateError("service area"));
            }
            areas.push(ServiceArea {
                format,
                key_state,
                key_version,
                main_key,
                temporary_key,
                mover_certificate,
                content,
                exported_for,
                imported,
            });
        }
        r.finish().map_err(bad)?;
        Ok(ServicesApp { areas })
    }
}
