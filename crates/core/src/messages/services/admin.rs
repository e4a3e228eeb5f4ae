//! What the move server's administrative SAM signs: the format of one area (S10, and
//! issuance) and a switch of key states (S3, S16, a rollback). Each is bound to the chip and
//! to a fresh card challenge from GET CHALLENGE, so a signed command works once, on one chip.
//! The SAM's certificate (role `MoveAdministrator`) travels with each command.

use crate::cert::Certificate;
use crate::crypto::{Signature, SIGNATURE_LEN};
use crate::ids::{CardId, DeviceId};
use crate::limits::CHIP_AREAS_MAX;
use crate::messages::purse::Challenge;
use crate::messages::DecodeError;
use crate::tlv::{TlvReader, TlvWriter};

use super::keys::service_code;
use super::{tag, KeyPackage, KeyState, MoveId, ServiceCode, ServiceKind};

/// The format description of one area: what the movement database keeps per service of a
/// chip, from which the new chip's area is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaFormat {
    pub service: ServiceCode,
    pub kind: ServiceKind,
    /// The most items the area holds (tickets); 0 where the kind has no items.
    pub capacity: u16,
    /// The provider's normal SAM, the only issuer of the area's main key.
    pub provider: DeviceId,
    /// The provider's transfer SAM, the only issuer of the area's temporary key.
    pub mover: DeviceId,
}

impl AreaFormat {
    pub fn encode_into(&self, w: &mut TlvWriter) {
        w.nested(tag::FORMAT, |f| {
            f.put(tag::SERVICE, &self.service.0.to_be_bytes())
                .put_u8(tag::KIND, self.kind as u8)
                .put(tag::CAPACITY, &self.capacity.to_be_bytes())
                .put(tag::PROVIDER, self.provider.as_bytes())
                .put(tag::SOURCE, self.mover.as_bytes());
        });
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let service = service_code(&mut r)?;
        let [kind] = r.expect_array::<1>(tag::KIND)?;
        let format = AreaFormat {
            service,
            kind: ServiceKind::from_u8(kind)?,
            capacity: u16::from_be_bytes(r.expect_array::<2>(tag::CAPACITY)?),
            provider: DeviceId(r.expect_array(tag::PROVIDER)?),
            mover: DeviceId(r.expect_array(tag::SOURCE)?),
        };
        r.finish()?;
        Ok(format)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(48);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let format = Self::decode_value(r.expect(tag::FORMAT)?)?;
        r.finish()?;
        Ok(format)
    }
}

/// FORMAT AREA command data: the signed format and the area's two key packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatArea {
    pub admin_certificate: Certificate,
    pub format: AreaFormat,
    /// The key state the area starts in: temporary for a move's new chip (S10), main at
    /// issuance.
    pub initial_state: KeyState,
    pub main_package: KeyPackage,
    pub temporary_package: KeyPackage,
    /// The administrative SAM's signature over [`FormatArea::signed_message`].
    pub signature: Signature,
}

impl FormatArea {
    /// What the administrative SAM signs: the chip, its challenge, the format, the initial
    /// state and both packages' signatures (which bind the sealed keys).
    pub fn signed_message(
        card_id: &CardId,
        card_challenge: &Challenge,
        format: &AreaFormat,
        initial_state: KeyState,
        main_package: &Signature,
        temporary_package: &Signature,
    ) -> Vec<u8> {
        let mut m = b"valuecard/services/format/v1".to_vec();
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(card_challenge);
        m.extend_from_slice(&format.encode());
        m.push(initial_state as u8);
        m.extend_from_slice(&main_package.0);
        m.extend_from_slice(&temporary_package.0);
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(1200);
        w.put_raw(&self.admin_certificate.encode());
        self.format.encode_into(&mut w);
        w.put_u8(tag::KEY_STATE, self.initial_state as u8);
        self.main_package.encode_into(&mut w, tag::MAIN_PACKAGE);
        self.temporary_package
            .encode_into(&mut w, tag::TEMPORARY_PACKAGE);
        w.put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let admin_certificate = Certificate::decode_value(r.expect(tag::CERTIFICATE)?)?;
        let format = AreaFormat::decode_value(r.expect(tag::FORMAT)?)?;
        let [state] = r.expect_array::<1>(tag::KEY_STATE)?;
        let initial_state = KeyState::from_u8(state)?;
        let main_package = KeyPackage::decode_value(r.expect(tag::MAIN_PACKAGE)?)?;
        let temporary_package = KeyPackage::decode_value(r.expect(tag::TEMPORARY_PACKAGE)?)?;
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?);
        r.finish()?;
        if main_package.key_state != KeyState::Main
            || temporary_package.key_state != KeyState::Temporary
            || main_package.service != format.service
            || temporary_package.service != format.service
        {
            return Err(DecodeError::Field {
                field: "key package",
                reason: "not this area's main and temporary keys",
            });
        }
        Ok(FormatArea {
            admin_certificate,
            format,
            initial_state,
            main_package,
            temporary_package,
            signature,
        })
    }
}

/// One area's new key state in SWITCH KEYS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyChange {
    pub service: ServiceCode,
    pub key_state: KeyState,
}

/// SWITCH KEYS command data: key states switched for a move, signed by the administrative
/// SAM over the chip's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchKeys {
    pub admin_certificate: Certificate,
    pub move_id: MoveId,
    /// At least one, each service at most once.
    pub changes: Vec<KeyChange>,
    pub signature: Signature,
}

impl SwitchKeys {
    /// What the administrative SAM signs.
    pub fn signed_message(
        card_id: &CardId,
        card_challenge: &Challenge,
        move_id: &MoveId,
        changes: &[KeyChange],
    ) -> Vec<u8> {
        let mut m = b"valuecard/services/switch/v1".to_vec();
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(card_challenge);
        m.extend_from_slice(move_id);
        m.extend_from_slice(&(changes.len() as u32).to_be_bytes());
        for change in changes {
            m.extend_from_slice(&change.service.0.to_be_bytes());
            m.push(change.key_state as u8);
        }
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(400);
        w.put_raw(&self.admin_certificate.encode())
            .put(tag::MOVE_ID, &self.move_id);
        for change in &self.changes {
            w.nested(tag::CHANGE, |c| {
                c.put(tag::SERVICE, &change.service.0.to_be_bytes())
                    .put_u8(tag::KEY_STATE, change.key_state as u8);
            });
        }
        w.put(tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let admin_certificate = Certificate::decode_value(r.expect(tag::CERTIFICATE)?)?;
        let move_id = r.expect_array(tag::MOVE_ID)?;
        let mut changes: Vec<KeyChange> = Vec::new();
        while let Some(value) = r.optional(tag::CHANGE)? {
            let mut c = TlvReader::new(value);
            let service = service_code(&mut c)?;
            let [state] = c.expect_array::<1>(tag::KEY_STATE)?;
            c.finish()?;
            if changes.len() >= CHIP_AREAS_MAX {
                return Err(DecodeError::Field {
                    field: "key changes",
                    reason: "more than a chip has areas",
                });
            }
            if changes.iter().any(|change| change.service == service) {
                return Err(DecodeError::Field {
                    field: "key changes",
                    reason: "a service named twice",
                });
            }
            changes.push(KeyChange {
                service,
                key_state: KeyState::from_u8(state)?,
            });
        }
        if changes.is_empty() {
            return Err(DecodeError::Field {
                field: "key changes",
                reason: "none",
            });
        }
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?);
        r.finish()?;
        Ok(SwitchKeys {
            admin_certificate,
            move_id,
            changes,
            signature,
        })
    }
}
