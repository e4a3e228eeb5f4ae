//! Device authentication for requests that reach the center over a network (the HTTP
//! service): each request is signed by the device's SAM with the key the center certified at
//! installation, and carries a sequence number that must rise strictly per device, so that a
//! captured request can never be played again. The center's answers are signed in turn with
//! its root key and bound to the request they answer, so that a device acts only on what the
//! center itself said, to it, for this request.
//!
//! The byte string a device signs is
//!
//! ```text
//! "valuecard/http/v1" || method || 0x00 || path || 0x00 || sequence (8 bytes, big-endian)
//!     || SHA-256(body)
//! ```
//!
//! and the one the center signs for its answer
//!
//! ```text
//! "valuecard/http/v1/answer" || device ID (8 bytes) || sequence (8 bytes, big-endian)
//!     || method || 0x00 || path || 0x00 || SHA-256(answer body)
//! ```
//!
//! Authentication has two steps, so that the expensive and attacker-driven one needs no
//! lock on the center: [`DeviceKey::verify`] checks the signature with the device's
//! certified key (looked up through a [`DeviceDirectory`], a connection of its own) and gives
//! a [`VerifiedRequest`]; only that proof enters [`Center::accept_request`], which checks and
//! advances the sequence in one statement, so two requests with one sequence never both
//! pass. A refused request changes nothing.
//!
//! # The sequence window
//!
//! A sequence is accepted when it is above the last one accepted from the device and at
//! most [`SEQUENCE_WINDOW_MICROS`] above the later of that last sequence and the center's
//! clock in microseconds since the Unix epoch (devices start their sequences at their own
//! clock, see `HttpCenterLink`). A request further ahead is refused and not recorded: a
//! device whose clock ran far ahead, or that sent a sequence near 2^63, cannot lock itself
//! out, since nothing it was refused raised the bar for its later requests.

use valuecard_core::cert::Role;
use valuecard_core::crypto::{sha256, PublicKey, Signature};
use valuecard_core::ids::DeviceId;

use crate::sql::{Database, Executor};
use crate::{Center, CenterError};

/// The SAM builds the signed byte string itself (`Sam::sign_device_request`); the center
/// checks the same bytes.
pub use valuecard_sam::{request_signing_input, REQUEST_CONTEXT};

/// The context label of a signed answer.
pub const ANSWER_CONTEXT: &[u8] = b"valuecard/http/v1/answer";

/// How far (in sequence steps, which devices count in microseconds) a request may run
/// ahead of the later of the device's last accepted sequence and the center's clock: one
/// hour of clock difference between a device and the center.
pub const SEQUENCE_WINDOW_MICROS: u64 = 3_600_000_000;

/// The byte string the center signs for its answer to one request: bound to the device and
/// the sequence of the request (which the center accepts once), so that an answer cannot be
/// replayed for another request or another device, nor altered.
pub fn answer_signing_input(
    device_id: &DeviceId,
    sequence: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut input = Vec::with_capacity(ANSWER_CONTEXT.len() + method.len() + path.len() + 50);
    input.extend_from_slice(ANSWER_CONTEXT);
    input.extend_from_slice(device_id.as_bytes());
    input.extend_from_slice(&sequence.to_be_bytes());
    input.extend_from_slice(method.as_bytes());
    input.push(0);
    input.extend_from_slice(path.as_bytes());
    input.push(0);
    input.extend_from_slice(&sha256(body));
    input
}

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

/// An installed device's certified key and role, as the center holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey {
    pub device_id: DeviceId,
    pub role: Role,
    pub signing_key: PublicKey,
}

/// Proof that a request's signature verified under an installed device's certified key;
/// only [`DeviceKey::verify`] makes one. Its sequence is not checked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedRequest {
    device: DeviceKey,
    sequence: u64,
}

impl VerifiedRequest {
    pub fn device_id(&self) -> DeviceId {
        self.device.device_id
    }

    pub fn role(&self) -> Role {
        self.device.role
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl DeviceKey {
    /// Verifies the request's signature with this key.
    pub fn verify(&self, request: &SignedRequest<'_>) -> Result<VerifiedRequest, AuthError> {
        if request.device_id != self.device_id {
            return Err(AuthError::BadSignature(request.device_id));
        }
        let signed =
            request_signing_input(request.method, request.path, request.sequence, request.body);
        self.signing_key
            .verify(&signed, request.signature)
            .map_err(|_| AuthError::BadSignature(self.device_id))?;
        Ok(VerifiedRequest {
            device: *self,
            sequence: request.sequence,
        })
    }
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
    #[error(
        "sequence {sequence} of device {device_id} is more than the window above the last one \
         accepted and the center's clock (at most {ceiling}): check the device's clock"
    )]
    AheadOfWindow {
        device_id: DeviceId,
        sequence: u64,
        ceiling: u64,
    },
    #[error("sequence {0} is out of range")]
    SequenceOutOfRange(u64),
    #[error(transparent)]
    Center(#[from] CenterError),
}

/// The installed device's key and role, if the device is installed.
fn lookup_device(
    db: &mut dyn Executor,
    device: DeviceId,
) -> Result<Option<DeviceKey>, CenterError> {
    let Some(row) = db.query_optional(
        "SELECT role, signing_key FROM devices WHERE device_id = $1 AND status = 'installed'",
        &[device.0[..].into()],
    )?
    else {
        return Ok(None);
    };
    let role = u8::try_from(row.int(0)?)
        .ok()
        .and_then(Role::from_u8)
        .ok_or_else(|| CenterError::Storage(format!("stored role of device {device}")))?;
    let key_bytes = <[u8; 32]>::try_from(row.bytes(1)?.as_slice())
        .map_err(|_| CenterError::Storage(format!("stored key of device {device}")))?;
    let signing_key = PublicKey::from_bytes(&key_bytes)
        .map_err(|_| CenterError::Storage(format!("stored key of device {device}")))?;
    Ok(Some(DeviceKey {
        device_id: device,
        role,
        signing_key,
    }))
}

/// Device keys and the health of the database, on a connection of its own: requests are
/// verified and health is answered without waiting for the connection the center works on.
#[derive(Debug)]
pub struct DeviceDirectory {
    /// `None` when the database is in memory (tests and simulations): then lookups go
    /// through the center.
    reader: Option<Database>,
}

impl DeviceDirectory {
    /// Whether the directory reaches the database by itself.
    pub fn has_own_connection(&self) -> bool {
        self.reader.is_some()
    }

    /// The installed device's key; `None` when the directory has no connection of its own.
    pub fn device_key(&mut self, device: DeviceId) -> Option<Result<DeviceKey, AuthError>> {
        let reader = self.reader.as_mut()?;
        Some(match lookup_device(reader, device) {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(AuthError::UnknownDevice(device)),
            Err(error) => Err(AuthError::Center(error)),
        })
    }

    /// Whether the database answers (`SELECT 1`); `None` when the directory has no
    /// connection of its own.
    pub fn check_database(&mut self) -> Option<Result<(), CenterError>> {
        self.reader.as_mut().map(select_one)
    }
}

fn select_one(db: &mut Database) -> Result<(), CenterError> {
    match db.query_one("SELECT 1", &[])?.int(0)? {
        1 => Ok(()),
        other => Err(CenterError::Storage(format!("SELECT 1 returned {other}"))),
    }
}

impl Center {
    /// A directory of device keys on its own connection to the center's database.
    pub fn device_directory(&self) -> Result<DeviceDirectory, CenterError> {
        Ok(DeviceDirectory {
            reader: self.db.open_another()?,
        })
    }

    /// The installed device's key, through the center's own connection.
    pub fn installed_device_key(&mut self, device: DeviceId) -> Result<DeviceKey, AuthError> {
        lookup_device(&mut self.db, device)?.ok_or(AuthError::UnknownDevice(device))
    }

    /// Accepts a verified request: the device must still be installed with the key that
    /// verified it, and the sequence must lie in the window (see the module documentation);
    /// then the device's last sequence advances. `now_micros` is the center's clock in
    /// microseconds since the Unix epoch. Nothing changes unless every check passes.
    ///
    /// Every check is part of the one statement that advances the sequence, so an accepted
    /// request costs one round trip to the database; the reads of
    /// [`Center::refusal_reason`] run only to say why a request was refused.
    pub fn accept_request(
        &mut self,
        request: &VerifiedRequest,
        now_micros: u64,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let device = request.device_id();
        let sequence = i64::try_from(request.sequence)
            .map_err(|_| AuthError::SequenceOutOfRange(request.sequence))?;
        let now = i64::try_from(now_micros)
            .map_err(|_| AuthError::SequenceOutOfRange(request.sequence))?;
        // The statement below bounds an update by the later of the last sequence and the
        // clock, but a first request (an insert) only by what is checked here: a sequence
        // beyond the clock's window needs a last sequence that carries it.
        let clock_ceiling = now_micros.saturating_add(SEQUENCE_WINDOW_MICROS);
        if request.sequence > clock_ceiling {
            let last = self.last_request_sequence(&device)?;
            let ceiling = last
                .unwrap_or(0)
                .max(now_micros)
                .saturating_add(SEQUENCE_WINDOW_MICROS);
            if last.is_none() || request.sequence > ceiling {
                return Err(self.refusal_reason(request, now_micros)?);
            }
        }
        let window = i64::try_from(SEQUENCE_WINDOW_MICROS).unwrap_or(i64::MAX);
        let today = self.today().0;
        // The directory may have read the key just before the device was retired, and
        // another process on the same database may have advanced the sequence since: both
        // are conditions of the statement, not reads before it. The key is compared as
        // stored bytes: no second decompression while the center is held. The window is
        // written as a subtraction so that no sum can overflow. It is the request's first
        // statement, so after a database restart it meets the dropped connection: sent again
        // on a new one, it is at worst refused as a replay if the first sending landed.
        let advanced = self.db.execute_resendable(
            "INSERT INTO device_sequences (device_id, last_sequence, updated_on)
             SELECT device_id, CAST($2 AS BIGINT), CAST($3 AS BIGINT) FROM devices
              WHERE device_id = $1 AND status = 'installed' AND signing_key = $4
                AND role = CAST($5 AS BIGINT)
             ON CONFLICT (device_id) DO UPDATE SET last_sequence = excluded.last_sequence,
                 updated_on = excluded.updated_on
             WHERE excluded.last_sequence > device_sequences.last_sequence
               AND excluded.last_sequence - CAST($6 AS BIGINT) <= CASE
                   WHEN device_sequences.last_sequence > CAST($7 AS BIGINT)
                   THEN device_sequences.last_sequence ELSE CAST($7 AS BIGINT) END",
            &[
                device.0[..].into(),
                sequence.into(),
                today.into(),
                request.device.signing_key.to_bytes()[..].into(),
                i64::from(request.role() as u8).into(),
                window.into(),
                now.into(),
            ],
        )?;
        if advanced == 0 {
            return Err(self.refusal_reason(request, now_micros)?);
        }
        Ok(AuthenticatedDevice {
            device_id: device,
            role: request.role(),
            sequence: request.sequence,
        })
    }

    /// Why [`Center::accept_request`] advanced nothing, read after the fact. Should the
    /// state have changed in between so that nothing explains it, the request counts as
    /// replayed: refused either way, and sending it again is what the device may do.
    fn refusal_reason(
        &mut self,
        request: &VerifiedRequest,
        now_micros: u64,
    ) -> Result<AuthError, AuthError> {
        let device = request.device_id();
        let still_installed = self
            .db
            .query_optional(
                "SELECT role FROM devices WHERE device_id = $1 AND status = 'installed' AND signing_key = $2",
                &[
                    device.0[..].into(),
                    request.device.signing_key.to_bytes()[..].into(),
                ],
            )?
            .map(|row| row.int(0))
            .transpose()?;
        if still_installed != Some(i64::from(request.role() as u8)) {
            return Ok(AuthError::UnknownDevice(device));
        }
        let last = self.last_request_sequence(&device)?;
        let ceiling = last
            .unwrap_or(0)
            .max(now_micros)
            .saturating_add(SEQUENCE_WINDOW_MICROS);
        if last.is_none_or(|last| request.sequence > last) && request.sequence > ceiling {
            return Ok(AuthError::AheadOfWindow {
                device_id: device,
                sequence: request.sequence,
                ceiling,
            });
        }
        Ok(AuthError::Replayed {
            device_id: device,
            sequence: request.sequence,
        })
    }

    /// Verifies a device's signed request and advances its sequence, in one call on the
    /// center (in-process use; the HTTP service verifies before it takes the center).
    pub fn authenticate_request(
        &mut self,
        request: &SignedRequest<'_>,
        now_micros: u64,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let verified = self
            .installed_device_key(request.device_id)?
            .verify(request)?;
        self.accept_request(&verified, now_micros)
    }

    /// The center's signature over its answer to an accepted request, with the root key the
    /// device trusts (see [`answer_signing_input`]).
    pub fn sign_answer(
        &self,
        device: &AuthenticatedDevice,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Signature, CenterError> {
        self.keys.root.sign(&answer_signing_input(
            &device.device_id,
            device.sequence,
            method,
            path,
            body,
        ))
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
        row.map(|row| {
            u64::try_from(row.int(0)?)
                .map_err(|_| CenterError::Storage(format!("last sequence of device {device_id}")))
        })
        .transpose()
    }

    /// Whether the database answers (`SELECT 1`), for health checks.
    pub fn check_database(&mut self) -> Result<(), CenterError> {
        select_one(&mut self.db)
    }
}

#[cfg(test)]
mod tests;
