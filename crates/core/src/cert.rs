//! Compact card-verifiable certificates (CVC), TLV-encoded after the shape of BSI TR-03110
//! card-verifiable certificates, signed with Ed25519 and chained to the center's root.
//!
//! ```text
//! 7F21 certificate
//!   7F4E body
//!     5F29 profile (01)
//!     42   issuer ID (8)          the DeviceId of the signing authority
//!     5F20 subject ID (8)         card ID or device ID
//!     5F4C role (1)               see `Role`
//!     5F25 effective date (4)     days since 1970-01-01
//!     5F24 expiry date (4)        days since 1970-01-01, last valid day
//!     7F49 public keys
//!       86 Ed25519 signature key (32)
//!       87 X25519 sealing key (32)   optional
//!   5F37 signature (64)           Ed25519 over "valuecard cvc v1" || body TLV
//! ```
//!
//! The signature covers the exact body bytes, and every field has one encoding, so a
//! certificate has exactly one valid byte string.

use crate::crypto::{CryptoError, PublicKey, Signature, SigningKeyPair, PUBLIC_KEY_LEN};
use crate::ids::DeviceId;
use crate::limits::{CERTIFICATE_CHAIN_MAX, CERTIFICATE_LEN_MAX};
use crate::time::Date;
use crate::tlv::{be_u32, TlvError, TlvReader, TlvWriter};

pub const TAG_CERTIFICATE: u32 = 0x7F21;
pub const TAG_BODY: u32 = 0x7F4E;
pub const TAG_PROFILE: u32 = 0x5F29;
pub const TAG_ISSUER: u32 = 0x42;
pub const TAG_SUBJECT: u32 = 0x5F20;
pub const TAG_ROLE: u32 = 0x5F4C;
pub const TAG_EFFECTIVE: u32 = 0x5F25;
pub const TAG_EXPIRY: u32 = 0x5F24;
pub const TAG_PUBLIC_KEYS: u32 = 0x7F49;
pub const TAG_SIGNING_KEY: u32 = 0x86;
pub const TAG_SEALING_KEY: u32 = 0x87;
pub const TAG_SIGNATURE: u32 = 0x5F37;

const PROFILE_V1: u8 = 0x01;
const SIGNATURE_CONTEXT: &[u8] = b"valuecard cvc v1";

/// What the holder of a certificate may do. A card refuses a terminal certificate with
/// any role but `PaymentTerminal`, and so on: roles are checked, not merely carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// The management center's root (self-signed).
    CenterRoot = 0x01,
    /// A payment terminal (seed 003, IC card terminal 2).
    PaymentTerminal = 0x02,
    /// A card dispenser (seed 003, IC card dispenser 5).
    Dispenser = 0x03,
    /// A card (purse chip).
    Card = 0x04,
    /// The center's online signing service (load authorizations, Fig. 7).
    CenterLoad = 0x05,
    /// A settlement terminal with two readers (seed 000).
    SettlementTerminal = 0x06,
    /// A charge machine for memory cards (seed 001, charge machine 2A).
    ChargeMachine = 0x07,
    /// A payment machine for memory cards (seed 001, payment machine 2B).
    PaymentMachine = 0x08,
    /// The online settlement system's security server (seed 004): installs the cards' common
    /// keys and signs the records of online payments and charges.
    OnlineSettlement = 0x09,
    /// A service provider's normal SAM (seed 002): issues the main keys of its service's
    /// areas and serves them in normal use.
    ServiceProvider = 0x0A,
    /// A service provider's transfer SAM (seed 002): issues the temporary keys of its
    /// service's areas, holds a move's uploaded copies, and signs the purse records of a
    /// move's download.
    ServiceTransfer = 0x0B,
    /// The value move server's administrative SAM (seed 002): formats a chip's areas and
    /// switches their key states between main and temporary.
    MoveAdministrator = 0x0C,
}

impl Role {
    pub fn from_u8(value: u8) -> Option<Role> {
        Some(match value {
            0x01 => Role::CenterRoot,
            0x02 => Role::PaymentTerminal,
            0x03 => Role::Dispenser,
            0x04 => Role::Card,
            0x05 => Role::CenterLoad,
            0x06 => Role::SettlementTerminal,
            0x07 => Role::ChargeMachine,
            0x08 => Role::PaymentMachine,
            0x09 => Role::OnlineSettlement,
            0x0A => Role::ServiceProvider,
            0x0B => Role::ServiceTransfer,
            0x0C => Role::MoveAdministrator,
            _ => return None,
        })
    }

    fn may_issue(self) -> bool {
        self == Role::CenterRoot
    }
}

/// Why a certificate or chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("certificate encoding: {0}")]
    Encoding(#[from] TlvError),
    #[error("certificate is longer than {CERTIFICATE_LEN_MAX} bytes")]
    TooLong,
    #[error("unsupported certificate profile {0}")]
    Profile(u8),
    #[error("unknown role {0:#04x}")]
    UnknownRole(u8),
    #[error("certificate key: {0}")]
    Key(CryptoError),
    #[error("certificate signature does not verify under {issuer}")]
    BadSignature { issuer: DeviceId },
    #[error("certificate of {subject} was issued by {found}, expected {expected}")]
    WrongIssuer {
        subject: DeviceId,
        expected: DeviceId,
        found: DeviceId,
    },
    #[error("certificate of {subject} is not valid on {today} (valid {effective} to {expiry})")]
    Expired {
        subject: DeviceId,
        today: Date,
        effective: Date,
        expiry: Date,
    },
    #[error("certificate of {subject} has role {found:?}, expected {expected:?}")]
    WrongRole {
        subject: DeviceId,
        expected: Role,
        found: Role,
    },
    #[error("certificate chain is empty or longer than {CERTIFICATE_CHAIN_MAX}")]
    ChainLength,
    #[error("certificate of {0} may not issue certificates")]
    NotAnIssuer(DeviceId),
}

/// The signed part of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateBody {
    pub issuer: DeviceId,
    pub subject: DeviceId,
    pub role: Role,
    pub effective: Date,
    pub expiry: Date,
    pub signing_key: PublicKey,
    pub sealing_key: Option<[u8; PUBLIC_KEY_LEN]>,
}

impl CertificateBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(160);
        w.nested(TAG_BODY, |body| {
            body.put_u8(TAG_PROFILE, PROFILE_V1)
                .put(TAG_ISSUER, self.issuer.as_bytes())
                .put(TAG_SUBJECT, self.subject.as_bytes())
                .put_u8(TAG_ROLE, self.role as u8)
                .put_u32(TAG_EFFECTIVE, self.effective.0)
                .put_u32(TAG_EXPIRY, self.expiry.0)
                .nested(TAG_PUBLIC_KEYS, |keys| {
                    keys.put(TAG_SIGNING_KEY, &self.signing_key.to_bytes());
                    if let Some(sealing) = &self.sealing_key {
                        keys.put(TAG_SEALING_KEY, sealing);
                    }
                });
        });
        w.into_bytes()
    }

    fn decode_value(value: &[u8]) -> Result<Self, CertError> {
        let mut r = TlvReader::new(value);
        let [profile] = r.expect_array::<1>(TAG_PROFILE)?;
        if profile != PROFILE_V1 {
            return Err(CertError::Profile(profile));
        }
        let issuer = DeviceId(r.expect_array(TAG_ISSUER)?);
        let subject = DeviceId(r.expect_array(TAG_SUBJECT)?);
        let [role] = r.expect_array::<1>(TAG_ROLE)?;
        let role = Role::from_u8(role).ok_or(CertError::UnknownRole(role))?;
        let effective = Date(be_u32(TAG_EFFECTIVE, r.expect(TAG_EFFECTIVE)?)?);
        let expiry = Date(be_u32(TAG_EXPIRY, r.expect(TAG_EXPIRY)?)?);
        let mut keys = TlvReader::new(r.expect(TAG_PUBLIC_KEYS)?);
        r.finish()?;
        let signing_key =
            PublicKey::from_bytes(keys.expect(TAG_SIGNING_KEY)?).map_err(CertError::Key)?;
        let sealing_key = match keys.optional(TAG_SEALING_KEY)? {
            Some(bytes) => Some(bytes.try_into().map_err(|_| TlvError::WrongValueLength {
                tag: TAG_SEALING_KEY,
                expected: 32,
                got: bytes.len(),
            })?),
            None => None,
        };
        keys.finish()?;
        Ok(CertificateBody {
            issuer,
            subject,
            role,
            effective,
            expiry,
            signing_key,
            sealing_key,
        })
    }

    /// Signs this body with the issuer's key.
    pub fn sign(self, issuer_key: &SigningKeyPair) -> Certificate {
        let signed: Result<Certificate, core::convert::Infallible> =
            self.sign_with(|message| Ok(issuer_key.sign(message)));
        match signed {
            Ok(certificate) => certificate,
            Err(never) => match never {},
        }
    }

    /// Signs this body with an issuer key held elsewhere (a token), which may refuse.
    pub fn sign_with<E>(
        self,
        sign: impl FnOnce(&[u8]) -> Result<Signature, E>,
    ) -> Result<Certificate, E> {
        let body_bytes = self.encode();
        let signature = sign(&signed_message(&body_bytes))?;
        Ok(Certificate {
            body: self,
            body_bytes,
            signature,
        })
    }
}

fn signed_message(body_bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + body_bytes.len());
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.extend_from_slice(body_bytes);
    message
}

/// A certificate as received: parsed, but not yet verified. Only [`TrustAnchor::verify`]
/// turns it into a [`VerifiedCertificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub body: CertificateBody,
    body_bytes: Vec<u8>,
    pub signature: Signature,
}

impl Certificate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(self.body_bytes.len() + 72);
        w.nested(TAG_CERTIFICATE, |cert| {
            cert.put_raw(&self.body_bytes)
                .put(TAG_SIGNATURE, &self.signature.0);
        });
        w.into_bytes()
    }

    /// Parses exactly one certificate; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() > CERTIFICATE_LEN_MAX {
            return Err(CertError::TooLong);
        }
        let mut outer = TlvReader::new(bytes);
        let value = outer.expect(TAG_CERTIFICATE)?;
        outer.finish()?;
        Self::decode_value(value)
    }

    /// Parses the value of a 7F21 object already split off by the caller.
    pub fn decode_value(value: &[u8]) -> Result<Self, CertError> {
        if value.len() > CERTIFICATE_LEN_MAX {
            return Err(CertError::TooLong);
        }
        let mut r = TlvReader::new(value);
        let body_value = r.expect(TAG_BODY)?;
        let body_bytes = value[..r.position()].to_vec();
        let signature = Signature(r.expect_array(TAG_SIGNATURE)?);
        r.finish()?;
        let body = CertificateBody::decode_value(body_value)?;
        Ok(Certificate {
            body,
            body_bytes,
            signature,
        })
    }

    pub fn subject(&self) -> DeviceId {
        self.body.subject
    }
}

/// A certificate whose signature chain, validity dates and role were checked. Holding one is
/// the proof that the checks passed; it cannot be built any other way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCertificate {
    body: CertificateBody,
}

impl VerifiedCertificate {
    pub fn subject(&self) -> DeviceId {
        self.body.subject
    }

    pub fn role(&self) -> Role {
        self.body.role
    }

    pub fn signing_key(&self) -> &PublicKey {
        &self.body.signing_key
    }

    pub fn sealing_key(&self) -> Option<&[u8; PUBLIC_KEY_LEN]> {
        self.body.sealing_key.as_ref()
    }

    pub fn expiry(&self) -> Date {
        self.body.expiry
    }

    pub fn body(&self) -> &CertificateBody {
        &self.body
    }
}

/// The center's root key as every card and terminal holds it (nA in seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustAnchor {
    pub center: DeviceId,
    pub public_key: PublicKey,
}

impl TrustAnchor {
    /// Verifies a chain (leaf first, each next certificate issued the previous one, the last
    /// issued by this anchor) and the leaf's role and validity on `today`.
    pub fn verify(
        &self,
        chain: &[Certificate],
        expected_role: Role,
        today: Date,
    ) -> Result<VerifiedCertificate, CertError> {
        self.verify_with(chain, expected_role, today, true)
    }

    /// As [`TrustAnchor::verify`], for a verifier without a clock: a card knows only the
    /// latest date an authenticated party told it, which lags behind today. It refuses
    /// certificates that expired before that date but cannot judge a start date, so a
    /// terminal installed after the card last heard from the center is still accepted.
    pub fn verify_unexpired(
        &self,
        chain: &[Certificate],
        expected_role: Role,
        known_date: Date,
    ) -> Result<VerifiedCertificate, CertError> {
        self.verify_with(chain, expected_role, known_date, false)
    }

    fn verify_with(
        &self,
        chain: &[Certificate],
        expected_role: Role,
        today: Date,
        check_effective: bool,
    ) -> Result<VerifiedCertificate, CertError> {
        if chain.is_empty() || chain.len() > CERTIFICATE_CHAIN_MAX {
            return Err(CertError::ChainLength);
        }
        let mut issuer_id = self.center;
        let mut issuer_key = self.public_key;
        // Walk from the top of the chain down to the leaf.
        for (depth, certificate) in chain.iter().enumerate().rev() {
            let body = &certificate.body;
            if body.issuer != issuer_id {
                return Err(CertError::WrongIssuer {
                    subject: body.subject,
                    expected: issuer_id,
                    found: body.issuer,
                });
            }
            issuer_key
                .verify(
                    &signed_message(&certificate.body_bytes),
                    &certificate.signature,
                )
                .map_err(|_| CertError::BadSignature { issuer: issuer_id })?;
            if (check_effective && today < body.effective) || today > body.expiry {
                return Err(CertError::Expired {
                    subject: body.subject,
                    today,
                    effective: body.effective,
                    expiry: body.expiry,
                });
            }
            if depth > 0 && !body.role.may_issue() {
                return Err(CertError::NotAnIssuer(body.subject));
            }
            issuer_id = body.subject;
            issuer_key = body.signing_key;
        }
        let leaf = &chain[0].body;
        if leaf.role != expected_role {
            return Err(CertError::WrongRole {
                subject: leaf.subject,
                expected: expected_role,
                found: leaf.role,
            });
        }
        Ok(VerifiedCertificate { body: leaf.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn root() -> (SigningKeyPair, TrustAnchor) {
        let key = SigningKeyPair::generate(&mut OsRng);
        let anchor = TrustAnchor {
            center: DeviceId([0xCE; 8]),
            public_key: key.public_key(),
        };
        (key, anchor)
    }

    fn body(issuer: DeviceId, role: Role, key: &SigningKeyPair) -> CertificateBody {
        CertificateBody {
            issuer,
            subject: DeviceId([7; 8]),
            role,
            effective: Date(20_000),
            expiry: Date(21_000),
            signing_key: key.public_key(),
            sealing_key: Some([9; 32]),
        }
    }

    #[test]
    fn round_trip_and_verify() {
        let (root_key, anchor) = root();
        let leaf_key = SigningKeyPair::generate(&mut OsRng);
        let certificate = body(anchor.center, Role::PaymentTerminal, &leaf_key).sign(&root_key);
        let decoded = Certificate::decode(&certificate.encode()).unwrap();
        assert_eq!(decoded, certificate);
        let verified = anchor
            .verify(&[decoded], Role::PaymentTerminal, Date(20_500))
            .unwrap();
        assert_eq!(verified.signing_key(), &leaf_key.public_key());
    }

    #[test]
    fn refusals() {
        let (root_key, anchor) = root();
        let leaf_key = SigningKeyPair::generate(&mut OsRng);
        let good = body(anchor.center, Role::PaymentTerminal, &leaf_key).sign(&root_key);
        let today = Date(20_500);
        assert!(matches!(
            anchor.verify(std::slice::from_ref(&good), Role::Card, today),
            Err(CertError::WrongRole { .. })
        ));
        assert!(matches!(
            anchor.verify(
                std::slice::from_ref(&good),
                Role::PaymentTerminal,
                Date(21_001)
            ),
            Err(CertError::Expired { .. })
        ));
        assert!(matches!(
            anchor.verify(
                std::slice::from_ref(&good),
                Role::PaymentTerminal,
                Date(19_999)
            ),
            Err(CertError::Expired { .. })
        ));
        let forged = body(anchor.center, Role::PaymentTerminal, &leaf_key).sign(&leaf_key);
        assert!(matches!(
            anchor.verify(&[forged], Role::PaymentTerminal, today),
            Err(CertError::BadSignature { .. })
        ));
        let other_issuer = body(DeviceId([1; 8]), Role::PaymentTerminal, &leaf_key).sign(&root_key);
        assert!(matches!(
            anchor.verify(&[other_issuer], Role::PaymentTerminal, today),
            Err(CertError::WrongIssuer { .. })
        ));
        assert_eq!(
            anchor.verify(&[], Role::Card, today),
            Err(CertError::ChainLength)
        );
        let mut bytes = good.encode();
        bytes.push(0);
        assert!(Certificate::decode(&bytes).is_err());
        let mut flipped = good.encode();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let flipped = Certificate::decode(&flipped).unwrap();
        assert!(matches!(
            anchor.verify(&[flipped], Role::PaymentTerminal, today),
            Err(CertError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_verifier_without_a_clock_ignores_start_dates_but_not_expiry() {
        let (root_key, anchor) = root();
        let leaf_key = SigningKeyPair::generate(&mut OsRng);
        let certificate = body(anchor.center, Role::PaymentTerminal, &leaf_key).sign(&root_key);
        let slice = std::slice::from_ref(&certificate);
        assert!(anchor
            .verify_unexpired(slice, Role::PaymentTerminal, Date(19_000))
            .is_ok());
        assert!(matches!(
            anchor.verify(slice, Role::PaymentTerminal, Date(19_000)),
            Err(CertError::Expired { .. })
        ));
        assert!(matches!(
            anchor.verify_unexpired(slice, Role::PaymentTerminal, Date(21_001)),
            Err(CertError::Expired { .. })
        ));
    }

    #[test]
    fn every_truncation_is_refused() {
        let (root_key, anchor) = root();
        let bytes = body(anchor.center, Role::Card, &root_key)
            .sign(&root_key)
            .encode();
        for cut in 0..bytes.len() {
            assert!(
                Certificate::decode(&bytes[..cut]).is_err(),
                "accepted truncation at {cut}"
            );
        }
    }

    #[test]
    fn intermediate_must_be_an_issuer() {
        let (root_key, anchor) = root();
        let middle_key = SigningKeyPair::generate(&mut OsRng);
        let mut middle = body(anchor.center, Role::PaymentTerminal, &middle_key);
        middle.subject = DeviceId([5; 8]);
        let middle = middle.sign(&root_key);
        let leaf_key = SigningKeyPair::generate(&mut OsRng);
        let leaf = body(DeviceId([5; 8]), Role::Card, &leaf_key).sign(&middle_key);
        assert_eq!(
            anchor.verify(&[leaf, middle], Role::Card, Date(20_500)),
            Err(CertError::NotAnIssuer(DeviceId([5; 8])))
        );
    }
}
