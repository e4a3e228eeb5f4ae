//! Key packages: one area key sealed to one chip by the provider's SAM that holds its
//! master (the normal SAM for the main key, the transfer SAM for the temporary key) and
//! signed by it, so that the administrative SAM that carries the package to the chip in
//! FORMAT AREA, the move server and the network never hold the key.

use crate::cert::{Certificate, Role};
use crate::crypto::{Signature, SIGNATURE_LEN};
use crate::ids::CardId;
use crate::messages::field::u32_field;
use crate::messages::DecodeError;
use crate::tlv::{TlvReader, TlvWriter};

use super::{tag, KeyState, ServiceCode};

/// One area key for one chip, sealed to the chip's X25519 key (`crypto::seal_to`) and
/// signed by the provider's SAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackage {
    /// The sealing SAM's certificate: role `ServiceProvider` for a main key,
    /// `ServiceTransfer` for a temporary key.
    pub issuer_certificate: Certificate,
    pub service: ServiceCode,
    pub key_state: KeyState,
    pub key_version: u32,
    /// The key, sealed with the associated data [`KeyPackage::seal_context`].
    pub sealed_key: Vec<u8>,
    /// The issuer's signature over [`KeyPackage::signed_message`].
    pub signature: Signature,
}

impl KeyPackage {
    /// The role whose SAM issues keys of `state`.
    pub fn issuer_role(state: KeyState) -> Role {
        match state {
            KeyState::Main => Role::ServiceProvider,
            KeyState::Temporary => Role::ServiceTransfer,
        }
    }

    /// The associated data of the sealed key: bound to the chip, the service, the key's
    /// state and its version.
    pub fn seal_context(
        card_id: &CardId,
        service: ServiceCode,
        key_state: KeyState,
        key_version: u32,
    ) -> Vec<u8> {
        let mut aad = b"valuecard/services/key/v1".to_vec();
        aad.extend_from_slice(card_id.as_bytes());
        aad.extend_from_slice(&service.0.to_be_bytes());
        aad.push(key_state as u8);
        aad.extend_from_slice(&key_version.to_be_bytes());
        aad
    }

    /// What the issuing SAM signs.
    pub fn signed_message(
        card_id: &CardId,
        service: ServiceCode,
        key_state: KeyState,
        key_version: u32,
        sealed_key: &[u8],
    ) -> Vec<u8> {
        let mut m = b"valuecard/services/package/v1".to_vec();
        m.extend_from_slice(card_id.as_bytes());
        m.extend_from_slice(&service.0.to_be_bytes());
        m.push(key_state as u8);
        m.extend_from_slice(&key_version.to_be_bytes());
        m.extend_from_slice(sealed_key);
        m
    }

    pub fn encode_into(&self, w: &mut TlvWriter, outer_tag: u32) {
        w.nested(outer_tag, |p| {
            p.put_raw(&self.issuer_certificate.encode())
                .put(tag::SERVICE, &self.service.0.to_be_bytes())
                .put_u8(tag::KEY_STATE, self.key_state as u8)
                .put_u32(tag::KEY_VERSION, self.key_version)
                .put(tag::SEALED_KEY, &self.sealed_key)
                .put(tag::SIGNATURE, &self.signature.0);
        });
    }

    pub fn decode_value(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(value);
        let issuer_certificate = Certificate::decode_value(r.expect(tag::CERTIFICATE)?)?;
        let service = service_code(&mut r)?;
        let [state] = r.expect_array::<1>(tag::KEY_STATE)?;
        let key_state = KeyState::from_u8(state)?;
        let key_version = u32_field(&mut r, tag::KEY_VERSION)?;
        let sealed_key = r.expect(tag::SEALED_KEY)?.to_vec();
        let signature = Signature(r.expect_array::<SIGNATURE_LEN>(tag::SIGNATURE)?);
        r.finish()?;
        Ok(KeyPackage {
            issuer_certificate,
            service,
            key_state,
            key_version,
            sealed_key,
            signature,
        })
    }
}

/// A service code field (2 bytes).
pub(crate) fn service_code(r: &mut TlvReader<'_>) -> Result<ServiceCode, DecodeError> {
    Ok(ServiceCode(u16::from_be_bytes(
        r.expect_array::<2>(tag::SERVICE)?,
    )))
}
