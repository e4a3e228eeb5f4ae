//! Device authentication for requests that reach the center over a network (the HTTP
//! service): each request is signed by the device's SAM with the key the center certified at
//! installation, and carries a sequence number that must rise strictly per device, so that a
//! captured request can never be played again.
//!
//! The signed byte string is
//!
//! ```text
//! "valuecard/http/v1" || method || 0x00 || path || 0x00 || sequence (8 bytes, big-endian)
//!     || SHA-256(body)
//! ```
//!
//! A request is accepted only when the device is installed, the signature verifies under its
//! certified key, and the sequence is above the last one accepted from it; the check and the
//! advance are one statement, so two requests with one sequence never both pass. A refused
//! request changes nothing.

use valuecard_core::cert::Role;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::DeviceId;

use crate::sql::Executor;
use crate::{Center, CenterError};

/// The SAM builds the signed byte string itself (`Sam::sign_device_request`); the center
/// checks the same bytes.
pub use valuecard_sam::{request_signing_input, REQUEST_CONTEXT};

/// A request as it arrived: who claims to send it, its sequence, what it asks, and the
/// signature over all of that.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub device_id: DeviceId,
    pub sequence: u64,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    pub signature: &'a Signature,
}

/// A device whose request passed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedDevice {
    pub device_id: DeviceId,
    pub role: Role,
    pub sequence: u64,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    #[error("the request signature does not verify under the certified key of device {0}")]
    BadSignature(DeviceId),
    #[error("sequence {sequence} of device {device_id} is not above the last one accepted")]
    Replayed { device_id: DeviceId, sequence: u64 },
    #[error("sequence {0} is out of range")]
    SequenceOutOfRange(u64),
    #[error(transparent)]
    Center(#[from] CenterError),
}

impl Center {
    /// Verifies a device's signed request and advances its sequence. Nothing changes unless
    /// every check passes.
    pub fn authenticate_request(
        &mut self,
        request: &SignedRequest<'_>,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let device = request.device_id;
        let sequence = i64::try_from(request.sequence)
            .map_err(|_| AuthError::SequenceOutOfRange(request.sequence))?;
        let row = self
            .db
            .query_optional(
                "SELECT role, signing_key FROM devices WHERE device_id = $1 AND status = 'installed'",
                &[device.0[..].into()],
            )?
            .ok_or(AuthError::UnknownDevice(device))?;
        let role = u8::try_from(row.int(0)?)
            .ok()
            .and_then(Role::from_u8)
            .ok_or_else(|| CenterError::Storage(format!("stored role of device {device}")))?;
        let key = PublicKey::from_bytes(&row.bytes(1)?)
            .map_err(|_| CenterError::Storage(format!("stored key of device {device}")))?;
        let signed =
            request_signing_input(request.method, request.path, request.sequence, request.body);
        key.verify(&signed, request.signature)
            .map_err(|_| AuthError::BadSignature(device))?;
        let today = self.today().0;
        let advanced = self.db.execute(
            "INSERT INTO device_sequences (device_id, last_sequence, updated_on) VALUES ($1, $2, $3)
             ON CONFLICT (device_id) DO UPDATE SET last_sequence = excluded.last_sequence,
                 updated_on = excluded.updated_on
             WHERE excluded.last_sequence > device_sequences.last_sequence",
            &[device.0[..].into(), sequence.into(), today.into()],
        )?;
        if advanced == 0 {
            return Err(AuthError::Replayed {
                device_id: device,
                sequence: request.sequence,
            });
        }
        Ok(AuthenticatedDevice {
            device_id: device,
            role,
            sequence: request.sequence,
        })
    }

    /// The last request sequence accepted from a device, if it ever sent one.
    pub fn last_request_sequence(
        &mut self,
        device_id: &DeviceId,
    ) -> Result<Option<u64>, CenterError> {
        let row = self.db.query_optional(
            "SELECT last_sequence FROM device_sequences WHERE device_id = $1",
            &[device_id.0[..].into()],
        )?;
        row.map(|row| Ok(row.int(0)? as u64)).transpose()
    }

    /// Whether the database answers (`SELECT 1`), for health checks.
    pub fn check_database(&mut self) -> Result<(), CenterError> {
        let row = self.db.query_one("SELECT 1", &[])?;
        match row.int(0)? {
            1 => Ok(()),
            other => Err(CenterError::Storage(format!("SELECT 1 returned {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use rand_core::OsRng;
    use valuecard_core::crypto::{random_array, SigningKeyPair};
    use valuecard_core::messages::center::InstallationRequest;
    use valuecard_core::time::{Date, FixedClock};

    fn installed(center: &mut Center, role: Role) -> (DeviceId, SigningKeyPair) {
        let device_id = center.allocate_device_id().unwrap();
        let signing = SigningKeyPair::generate(&mut OsRng);
        let request = InstallationRequest {
            device_id,
            signing_key: signing.public_key(),
            sealing_key: [7; 32],
            challenge: random_array(&mut OsRng),
        };
        center.install_device(&request, role).unwrap();
        (device_id, signing)
    }

    fn signed<'a>(
        device_id: DeviceId,
        sequence: u64,
        body: &'a [u8],
        signature: &'a Signature,
    ) -> SignedRequest<'a> {
        SignedRequest {
            device_id,
            sequence,
            method: "POST",
            path: "/v1/loads/settle",
            body,
            signature,
        }
    }

    #[test]
    fn signed_requests_pass_once_in_sequence_order() {
        let clock = Box::new(FixedClock(Date::from_ymd(2026, 6, 1).unwrap()));
        let mut center = Center::ephemeral(clock, &mut OsRng).unwrap();
        let (device, key) = installed(&mut center, Role::Dispenser);
        let body = b"{}";
        let sign = |sequence| {
            key.sign(&request_signing_input(
                "POST",
                "/v1/loads/settle",
                sequence,
                body,
            ))
        };

        let first = sign(10);
        let accepted = center
            .authenticate_request(&signed(device, 10, body, &first))
            .unwrap();
        assert_eq!(accepted.role, Role::Dispenser);
        assert_eq!(center.last_request_sequence(&device).unwrap(), Some(10));
        // The same request again, and an older one, are replays.
        assert_eq!(
            center.authenticate_request(&signed(device, 10, body, &first)),
            Err(AuthError::Replayed {
                device_id: device,
                sequence: 10
            })
        );
        let older = sign(9);
        assert!(matches!(
            center.authenticate_request(&signed(device, 9, body, &older)),
            Err(AuthError::Replayed { .. })
        ));
        // A signature over another body, or by another key, does not verify and moves nothing.
        let other_body = sign(11);
        assert_eq!(
            center.authenticate_request(&signed(device, 11, b"{\"x\":1}", &other_body)),
            Err(AuthError::BadSignature(device))
        );
        let stranger = SigningKeyPair::generate(&mut OsRng).sign(&request_signing_input(
            "POST",
            "/v1/loads/settle",
            12,
            body,
        ));
        assert_eq!(
            center.authenticate_request(&signed(device, 12, body, &stranger)),
            Err(AuthError::BadSignature(device))
        );
        assert_eq!(center.last_request_sequence(&device).unwrap(), Some(10));
        let next = sign(11);
        center
            .authenticate_request(&signed(device, 11, body, &next))
            .unwrap();
        assert_eq!(center.last_request_sequence(&device).unwrap(), Some(11));
        // An unknown device is refused before anything else.
        let unknown = DeviceId([0xD0, 0, 0, 0, 0, 0, 0, 0x77]);
        assert_eq!(
            center.authenticate_request(&signed(unknown, 50, body, &next)),
            Err(AuthError::UnknownDevice(unknown))
        );
        center.check_database().unwrap();
    }
}
