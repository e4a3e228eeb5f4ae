//! Secure access modules (SAMs): the secret keys of a terminal, dispenser or server and the
//! operations that use them.
//!
//! **Architecture invariant:** a SAM never returns a private or symmetric key. Callers get
//! signatures, public keys and yes/no answers; the [`Sam`] trait has no method that could
//! leak a key, so a PKCS#11 SAM (an HSM) can implement it unchanged.

#![forbid(unsafe_code)]

use rand_core::{CryptoRngCore, OsRng};
use valuecard_core::cert::{CertError, Certificate, Role, TrustAnchor, VerifiedCertificate};
use valuecard_core::crypto::{
    delivery, derivation, AesKey, PublicKey, SealingKeyPair, SecretBytes, Signature,
    SigningKeyPair, PUBLIC_KEY_LEN,
};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::Installation;
use valuecard_core::messages::purse::{Challenge, TerminalStamp};
use valuecard_core::time::Date;
use valuecard_core::tlv::{TlvReader, TlvWriter};
use zeroize::Zeroize;

/// Why a SAM refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SamError {
    #[error("the SAM is not installed yet (no certificate from the center)")]
    NotInstalled,
    #[error("the installation's certificate was refused: {0}")]
    Certificate(#[from] CertError),
    #[error("the installation certifies a different key or device")]
    ForeignCertificate,
    #[error("the installation's sealed keys could not be opened with the transport key")]
    BadSealedKeys,
    #[error("SAM image is corrupt or of an unknown version: {0}")]
    Image(&'static str),
}

/// What every SAM offers.
pub trait Sam: Send {
    fn device_id(&self) -> DeviceId;
    fn signing_key(&self) -> PublicKey;
    fn sealing_key(&self) -> [u8; PUBLIC_KEY_LEN];
    /// The center-issued certificate, once installed (Fig. 4A).
    fn certificate(&self) -> Result<&Certificate, SamError>;
    fn anchor(&self) -> Result<&TrustAnchor, SamError>;
    /// Signs a protocol message. Only installed SAMs sign.
    fn sign(&mut self, message: &[u8]) -> Result<Signature, SamError>;
    /// The device's current signed time stamp (Figs. 10-12).
    fn stamp(&self) -> Result<TerminalStamp, SamError>;
    /// Moves the time stamp one step along its one-way chain and forgets the old one.
    fn advance_stamp(&mut self) -> Result<TerminalStamp, SamError>;
    /// Fig. 4A with Fig. 8: checks the certificate against the anchor (it must name this
    /// device and this key, with `role`), opens KT and KO with the transport key, and stores
    /// them. After this the transport key is erased.
    fn install(
        &mut self,
        installation: &Installation,
        challenge: &Challenge,
        role: Role,
        today: Date,
    ) -> Result<VerifiedCertificate, SamError>;
}

/// A SAM in software. Its persistent image holds the keys, so the file that stores it must
/// be protected like the keys themselves.
pub struct SoftwareSam {
    device_id: DeviceId,
    signing: SigningKeyPair,
    sealing: SealingKeyPair,
    transport_key: Option<AesKey>,
    terminal_key: Option<AesKey>,
    common_key: Option<AesKey>,
    certificate: Option<Certificate>,
    anchor: Option<TrustAnchor>,
    /// The current time stamp TS_t and its signed form; earlier stamps are gone.
    stamp: Option<(TerminalStamp, [u8; 32])>,
}

impl core::fmt::Debug for SoftwareSam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SoftwareSam")
            .field("device_id", &self.device_id)
            .field("installed", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

const IMAGE_MAGIC: &[u8] = b"valuecard-sam-v1";
mod image_tag {
    pub const MAGIC: u32 = 0x8F;
    pub const DEVICE_ID: u32 = 0x80;
    pub const SIGNING_SEED: u32 = 0x81;
    pub const SEALING_SECRET: u32 = 0x82;
    pub const TRANSPORT_KEY: u32 = 0x83;
    pub const TERMINAL_KEY: u32 = 0x84;
    pub const COMMON_KEY: u32 = 0x85;
    pub const ANCHOR_ID: u32 = 0x86;
    pub const ANCHOR_KEY: u32 = 0x87;
    pub const STAMP_COUNT: u32 = 0x88;
    pub const STAMP: u32 = 0x89;
    pub const CERTIFICATE: u32 = valuecard_core::cert::TAG_CERTIFICATE;
}

impl SoftwareSam {
    /// A SAM as it leaves the factory: its own fresh key pairs and the transport key Ktemp.
    pub fn manufacture(
        device_id: DeviceId,
        transport_key: AesKey,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        SoftwareSam {
            device_id,
            signing: SigningKeyPair::generate(rng),
            sealing: SealingKeyPair::generate(rng),
            transport_key: Some(transport_key),
            terminal_key: None,
            common_key: None,
            certificate: None,
            anchor: None,
            stamp: None,
        }
    }

    fn signed_stamp(&self, count: u32, current: &[u8; 32]) -> TerminalStamp {
        let signature = self.signing.sign(&TerminalStamp::signed_message(
            &self.device_id,
            count,
            current,
        ));
        TerminalStamp { count, signature }
    }

    /// The persistent image (keys included), for the SAM's own protected storage.
    pub fn to_image(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(image_tag::MAGIC, IMAGE_MAGIC)
            .put(image_tag::DEVICE_ID, self.device_id.as_bytes())
            .put(image_tag::SIGNING_SEED, self.signing.seed().expose())
            .put(image_tag::SEALING_SECRET, self.sealing.secret().expose());
        for (tag, key) in [
            (image_tag::TRANSPORT_KEY, &self.transport_key),
            (image_tag::TERMINAL_KEY, &self.terminal_key),
            (image_tag::COMMON_KEY, &self.common_key),
        ] {
            if let Some(key) = key {
                w.put(tag, key.expose());
            }
        }
        if let (Some(anchor), Some(certificate)) = (&self.anchor, &self.certificate) {
            w.put(image_tag::ANCHOR_ID, anchor.center.as_bytes())
                .put(image_tag::ANCHOR_KEY, &anchor.public_key.to_bytes())
                .put_raw(&certificate.encode());
        }
        if let Some((stamp, current)) = &self.stamp {
            w.put_u32(image_tag::STAMP_COUNT, stamp.count)
                .put(image_tag::STAMP, current);
        }
        w.into_bytes()
    }

    pub fn from_image(image: &[u8]) -> Result<Self, SamError> {
        let mut r = TlvReader::new(image);
        let bad = |_| SamError::Image("malformed");
        if r.expect(image_tag::MAGIC).map_err(bad)? != IMAGE_MAGIC {
            return Err(SamError::Image("unknown version"));
        }
        let device_id = DeviceId(r.expect_array(image_tag::DEVICE_ID).map_err(bad)?);
        let mut seed: [u8; 32] = r.expect_array(image_tag::SIGNING_SEED).map_err(bad)?;
        let signing = SigningKeyPair::from_seed(&seed);
        seed.zeroize();
        let mut secret: [u8; 32] = r.expect_array(image_tag::SEALING_SECRET).map_err(bad)?;
        let sealing = SealingKeyPair::from_secret(secret);
        secret.zeroize();
        let mut key = |tag| -> Result<Option<AesKey>, SamError> {
            r.optional(tag)
                .map_err(bad)?
                .map(AesKey::from_slice)
                .transpose()
                .map_err(|_| SamError::Image("key length"))
        };
        let transport_key = key(image_tag::TRANSPORT_KEY)?;
        let terminal_key = key(image_tag::TERMINAL_KEY)?;
        let common_key = key(image_tag::COMMON_KEY)?;
        let (anchor, certificate) = match r.optional(image_tag::ANCHOR_ID).map_err(bad)? {
            Some(center) => {
                let center =
                    DeviceId::from_slice(center).map_err(|_| SamError::Image("anchor id"))?;
                let public_key =
                    PublicKey::from_bytes(r.expect(image_tag::ANCHOR_KEY).map_err(bad)?)
                        .map_err(|_| SamError::Image("anchor key"))?;
                let certificate =
                    Certificate::decode_value(r.expect(image_tag::CERTIFICATE).map_err(bad)?)
                        .map_err(|_| SamError::Image("certificate"))?;
                (Some(TrustAnchor { center, public_key }), Some(certificate))
            }
            None => (None, None),
        };
        let stamp = match r.optional(image_tag::STAMP_COUNT).map_err(bad)? {
            Some(count) => {
                let count =
                    valuecard_core::tlv::be_u32(image_tag::STAMP_COUNT, count).map_err(bad)?;
                let current: [u8; 32] = r.expect_array(image_tag::STAMP).map_err(bad)?;
                Some((count, current))
            }
            None => None,
        };
        r.finish().map_err(bad)?;
        let mut sam = SoftwareSam {
            device_id,
            signing,
            sealing,
            transport_key,
            terminal_key,
            common_key,
            certificate,
            anchor,
            stamp: None,
        };
        sam.stamp = stamp.map(|(count, current)| (sam.signed_stamp(count, &current), current));
        Ok(sam)
    }

    /// Whether the key KT and the common key KO were delivered (Fig. 8).
    pub fn has_link_keys(&self) -> bool {
        self.terminal_key.is_some() && self.common_key.is_some()
    }
}

/// The session key of an installation delivery (Fig. 8): diversified from Ktemp for this
/// device and its fresh challenge.
pub fn installation_session_key(
    transport_key: &AesKey,
    challenge: &Challenge,
    device_id: &DeviceId,
) -> AesKey {
    delivery::session_key(
        transport_key,
        derivation::DEVICE_DELIVERY,
        challenge,
        device_id.as_bytes(),
    )
}

/// Associated data of a sealed KT || KO || TS0 delivery: it binds the keys to one device and
/// authenticates, under the transport key, the root key that comes with them.
pub fn installation_keys_aad(device_id: &DeviceId, anchor: &TrustAnchor) -> Vec<u8> {
    let mut aad = b"valuecard/device-keys/v1".to_vec();
    aad.extend_from_slice(device_id.as_bytes());
    aad.extend_from_slice(anchor.center.as_bytes());
    aad.extend_from_slice(&anchor.public_key.to_bytes());
    aad
}

impl Sam for SoftwareSam {
    fn device_id(&self) -> DeviceId {
        self.device_id
    }

    fn signing_key(&self) -> PublicKey {
        self.signing.public_key()
    }

    fn sealing_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.sealing.public_key()
    }

    fn certificate(&self) -> Result<&Certificate, SamError> {
        self.certificate.as_ref().ok_or(SamError::NotInstalled)
    }

    fn anchor(&self) -> Result<&TrustAnchor, SamError> {
        self.anchor.as_ref().ok_or(SamError::NotInstalled)
    }

    fn sign(&mut self, message: &[u8]) -> Result<Signature, SamError> {
        if self.certificate.is_none() {
            return Err(SamError::NotInstalled);
        }
        Ok(self.signing.sign(message))
    }

    fn stamp(&self) -> Result<TerminalStamp, SamError> {
        self.stamp
            .as_ref()
            .map(|(stamp, _)| *stamp)
            .ok_or(SamError::NotInstalled)
    }

    fn advance_stamp(&mut self) -> Result<TerminalStamp, SamError> {
        let (stamp, current) = self.stamp.as_ref().ok_or(SamError::NotInstalled)?;
        let count = stamp
            .count
            .checked_add(1)
            .ok_or(SamError::Image("stamp count exhausted"))?;
        let next = TerminalStamp::next(current);
        let signed = self.signed_stamp(count, &next);
        self.stamp = Some((signed, next));
        Ok(signed)
    }

    fn install(
        &mut self,
        installation: &Installation,
        challenge: &Challenge,
        role: Role,
        today: Date,
    ) -> Result<VerifiedCertificate, SamError> {
        let verified = installation.anchor.verify(
            core::slice::from_ref(&installation.certificate),
            role,
            today,
        )?;
        if verified.subject() != self.device_id
            || verified.signing_key() != &self.signing.public_key()
            || verified.sealing_key() != Some(&self.sealing.public_key())
        {
            return Err(SamError::ForeignCertificate);
        }
        let transport_key = self.transport_key.as_ref().ok_or(SamError::BadSealedKeys)?;
        let session = installation_session_key(transport_key, challenge, &self.device_id);
        let mut keys = delivery::open(
            &session,
            &installation_keys_aad(&self.device_id, &installation.anchor),
            &installation.sealed_keys,
        )
        .map_err(|_| SamError::BadSealedKeys)?;
        // KT || KO, then the first time stamp TS0 (Fig. 10).
        if keys.len() != 64 {
            keys.zeroize();
            return Err(SamError::BadSealedKeys);
        }
        let mut first_stamp = [0u8; 32];
        first_stamp.copy_from_slice(&keys[32..]);
        self.stamp = Some((self.signed_stamp(0, &first_stamp), first_stamp));
        self.terminal_key =
            Some(SecretBytes::from_slice(&keys[..16]).map_err(|_| SamError::BadSealedKeys)?);
        self.common_key =
            Some(SecretBytes::from_slice(&keys[16..32]).map_err(|_| SamError::BadSealedKeys)?);
        keys.zeroize();
        self.transport_key = None;
        self.certificate = Some(installation.certificate.clone());
        self.anchor = Some(installation.anchor);
        Ok(verified)
    }
}

/// A fresh challenge from the operating system's random source.
pub fn fresh_challenge() -> Challenge {
    valuecard_core::crypto::random_array(&mut OsRng)
}
