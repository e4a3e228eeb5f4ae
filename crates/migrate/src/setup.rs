//! The move system's secure modules certified by a center, with their keys in memory: the
//! administrative SAM of the move server and, for each service, its provider's normal and
//! transfer SAM. The center certifies each public key with its role and hands none of them
//! a scheme key. [`MoveKeys`] also writes itself to a key file (owner-only) and reads it
//! back, so that `valuecard migrate init` sets a system up once and the services start from
//! it. [`MoveSams`] is what the services open, whichever kind of SAM a system has: the
//! software SAMs of a key file, or SAMs in a PKCS#11 token
//! (`valuecard_sam_pkcs11::move_sams::TokenMoveSams`), whose record holds no secret.

use std::path::Path;
use std::sync::Arc;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use valuecard_center::Center;
use valuecard_core::cert::{Certificate, TrustAnchor};
use valuecard_core::crypto::{AesKey, PublicKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::services::{ServiceCode, ServiceKind};
use zeroize::Zeroizing;

use crate::provider::Provider;
use crate::sam::{AdminSam, ProviderSam, SoftwareAdminSam, SoftwareProviderSam};

/// A move system's SAMs, wherever their keys are: what `migrate serve`, `provider serve`
/// and `provider issue` open.
pub trait MoveSams {
    /// The center's root the SAMs chain to.
    fn anchor(&self) -> Result<TrustAnchor, SetupError>;
    /// The services, in the order they were set up.
    fn offers(&self) -> Vec<ServiceOffer>;
    /// The move server's administrative SAM.
    fn admin_sam(&self) -> Result<Arc<dyn AdminSam>, SetupError>;
    /// The provider of `service`, with its normal and transfer SAM.
    fn provider(&self, service: ServiceCode) -> Result<Provider, SetupError>;
}

/// One service a provider offers on the chip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOffer {
    pub service: u16,
    pub kind: String,
    /// The provider's name, as the holder reads it.
    pub name: String,
    /// The most items its area holds (tickets).
    pub capacity: u16,
}

impl ServiceOffer {
    pub fn code(&self) -> ServiceCode {
        ServiceCode(self.service)
    }

    /// The provider of this service with its two SAMs, whatever holds their keys.
    pub fn provider(
        &self,
        normal: Arc<dyn ProviderSam>,
        transfer: Arc<dyn ProviderSam>,
        anchor: TrustAnchor,
    ) -> Result<Provider, SetupError> {
        Provider::new(
            self.code(),
            self.kind()?,
            self.capacity,
            normal,
            transfer,
            anchor,
        )
        .map_err(|error| SetupError::Sam(error.to_string()))
    }

    pub fn kind(&self) -> Result<ServiceKind, SetupError> {
        match self.kind.as_str() {
            "purse" => Ok(ServiceKind::Purse),
            "tickets" => Ok(ServiceKind::Tickets),
            "points" => Ok(ServiceKind::Points),
            other => Err(SetupError::File(format!("unknown service kind {other:?}"))),
        }
    }
}

/// The three services of the demonstration: the valuecard purse (its provider is the
/// center's operator), a transit operator's passes and a retailer's points.
pub fn demo_services() -> Vec<ServiceOffer> {
    vec![
        ServiceOffer {
            service: 0x0001,
            kind: "purse".into(),
            name: "valuecard purse".into(),
            capacity: 0,
        },
        ServiceOffer {
            service: 0x0102,
            kind: "tickets".into(),
            name: "Metro Line passes".into(),
            capacity: 8,
        },
        ServiceOffer {
            service: 0x0203,
            kind: "points".into(),
            name: "Corner Market points".into(),
            capacity: 0,
        },
    ]
}

/// Why a system could not be set up or its key file read.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the center: {0}")]
    Center(#[from] CenterError),
    #[error("the key file: {0}")]
    File(String),
    #[error("a SAM: {0}")]
    Sam(String),
}

/// One SAM's keys as the key file holds them (hex).
#[derive(Clone, Serialize, Deserialize)]
struct SamKeys {
    signing_seed: String,
    certificate: String,
    /// The area master (provider SAMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    master: Option<String>,
    /// The copies' storage key (transfer SAMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage: Option<String>,
}

impl Drop for SamKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.signing_seed.zeroize();
        if let Some(master) = &mut self.master {
            master.zeroize();
        }
        if let Some(storage) = &mut self.storage {
            storage.zeroize();
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct ProviderEntry {
    offer: ServiceOffer,
    normal: SamKeys,
    transfer: SamKeys,
}

/// The center's root as a move system's files record it (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    center_id: String,
    root_key: String,
}

impl AnchorRecord {
    pub fn new(anchor: &TrustAnchor) -> Self {
        AnchorRecord {
            center_id: hex::encode(anchor.center.as_bytes()),
            root_key: hex::encode(anchor.public_key.to_bytes()),
        }
    }

    pub fn anchor(&self) -> Result<TrustAnchor, SetupError> {
        let center = DeviceId(*secret::<8>("center_id", &self.center_id)?);
        let public_key = PublicKey::from_bytes(&*secret::<32>("root_key", &self.root_key)?)
            .map_err(|_| SetupError::File("root_key is not a public key".into()))?;
        Ok(TrustAnchor { center, public_key })
    }
}

/// A certificate as a move system's files record it (hex of its encoding).
pub fn certificate_to_hex(certificate: &Certificate) -> String {
    hex::encode(certificate.encode())
}

/// The certificate [`certificate_to_hex`] wrote.
pub fn certificate_from_hex(text: &str) -> Result<Certificate, SetupError> {
    let bytes = hex::decode(text).map_err(|_| SetupError::File("certificate is not hex".into()))?;
    Certificate::decode(&bytes).map_err(|error| SetupError::File(error.to_string()))
}

/// Has the center certify a move SAM's signing key with the role `certify` gives.
pub fn certify_key(
    center: &mut Center,
    public_key: PublicKey,
    certify: Certify,
    rng: &mut impl CryptoRngCore,
) -> Result<Certificate, CenterError> {
    // The registry wants an X25519 key; nothing is sealed to these SAMs with it.
    let sealing = SealingKeyPair::generate(rng).public_key();
    certify(center, public_key, sealing).map(|(_, certificate)| certificate)
}

/// Writes a move system's file, readable by its owner only, never over an existing one.
pub fn write_owner_only(path: &Path, text: &str) -> Result<(), SetupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| SetupError::File(format!("{}: {e}", path.display())))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| SetupError::File(format!("{}: {e}", path.display())))
}

/// Reads a move system's file.
pub fn read_file(path: &Path) -> Result<Zeroizing<String>, SetupError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| SetupError::File(format!("{}: {e}", path.display())))
}

/// The key file: every SAM of one move system, and the center's root they chain to.
#[derive(Clone, Serialize, Deserialize)]
pub struct MoveKeys {
    #[serde(flatten)]
    anchor: AnchorRecord,
    admin: SamKeys,
    providers: Vec<ProviderEntry>,
}

impl core::fmt::Debug for MoveKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveKeys")
            .field("center_id", &self.anchor.center_id)
            .field(
                "services",
                &self
                    .providers
                    .iter()
                    .map(|p| p.offer.service)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn sam_keys(
    signing: &SigningKeyPair,
    certificate: &Certificate,
    master: Option<&AesKey>,
    storage: Option<&AesKey>,
) -> SamKeys {
    SamKeys {
        signing_seed: hex::encode(signing.seed().expose()),
        certificate: certificate_to_hex(certificate),
        master: master.map(|key| hex::encode(key.expose())),
        storage: storage.map(|key| hex::encode(key.expose())),
    }
}

fn secret<const N: usize>(field: &str, text: &str) -> Result<Zeroizing<[u8; N]>, SetupError> {
    let bytes = Zeroizing::new(
        hex::decode(text).map_err(|_| SetupError::File(format!("{field} is not hex")))?,
    );
    let mut out = Zeroizing::new([0u8; N]);
    if bytes.len() != N {
        return Err(SetupError::File(format!("{field} is not {N} bytes")));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

impl SamKeys {
    fn signing(&self) -> Result<SigningKeyPair, SetupError> {
        let seed = secret::<32>("signing_seed", &self.signing_seed)?;
        Ok(SigningKeyPair::from_seed(&seed))
    }

    fn certificate(&self) -> Result<Certificate, SetupError> {
        certificate_from_hex(&self.certificate)
    }

    fn key(field: &str, text: Option<&String>) -> Result<AesKey, SetupError> {
        let text = text.ok_or_else(|| SetupError::File(format!("{field} is missing")))?;
        AesKey::from_slice(secret::<16>(field, text)?.as_slice())
            .map_err(|error| SetupError::File(error.to_string()))
    }
}

/// One of the center's certifications of a move device: `Center::certify_move_administrator`,
/// `certify_service_provider` or `certify_service_transfer`.
pub type Certify =
    fn(&mut Center, PublicKey, [u8; 32]) -> Result<(DeviceId, Certificate), CenterError>;

/// Generates a signing key, has the center certify it with `certify`.
fn certified(
    center: &mut Center,
    rng: &mut impl CryptoRngCore,
    certify: Certify,
) -> Result<(SigningKeyPair, Certificate), CenterError> {
    let signing = SigningKeyPair::generate(rng);
    let certificate = certify_key(center, signing.public_key(), certify, rng)?;
    Ok((signing, certificate))
}

impl MoveKeys {
    /// New keys for the administrative SAM and each offer's two SAMs, each certified by
    /// `center` with its role.
    pub fn certify(
        center: &mut Center,
        offers: &[ServiceOffer],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, SetupError> {
        let anchor = center.anchor();
        let (admin_key, admin_certificate) =
            certified(center, rng, Center::certify_move_administrator)?;
        let mut providers = Vec::with_capacity(offers.len());
        for offer in offers {
            offer.kind()?;
            let (normal_key, normal_certificate) =
                certified(center, rng, Center::certify_service_provider)?;
            let (transfer_key, transfer_certificate) =
                certified(center, rng, Center::certify_service_transfer)?;
            providers.push(ProviderEntry {
                offer: offer.clone(),
                normal: sam_keys(
                    &normal_key,
                    &normal_certificate,
                    Some(&AesKey::random(rng)),
                    None,
                ),
                transfer: sam_keys(
                    &transfer_key,
                    &transfer_certificate,
                    Some(&AesKey::random(rng)),
                    Some(&AesKey::random(rng)),
                ),
            });
        }
        Ok(MoveKeys {
            anchor: AnchorRecord::new(&anchor),
            admin: sam_keys(&admin_key, &admin_certificate, None, None),
            providers,
        })
    }

    /// The center's root the SAMs chain to.
    pub fn anchor(&self) -> Result<TrustAnchor, SetupError> {
        self.anchor.anchor()
    }

    /// The services, in the order they were set up.
    pub fn offers(&self) -> Vec<ServiceOffer> {
        self.providers.iter().map(|p| p.offer.clone()).collect()
    }

    /// The administrative SAM.
    pub fn admin(&self) -> Result<SoftwareAdminSam, SetupError> {
        SoftwareAdminSam::new(self.admin.signing()?, self.admin.certificate()?)
            .map_err(|error| SetupError::Sam(error.to_string()))
    }

    /// The provider of `service`, with its two SAMs.
    pub fn provider(&self, service: ServiceCode) -> Result<Provider, SetupError> {
        let entry = self
            .providers
            .iter()
            .find(|p| p.offer.service == service.0)
            .ok_or_else(|| SetupError::File(format!("no provider of service {service}")))?;
        let anchor = self.anchor()?;
        let sam_error = |error: crate::sam::SamError| SetupError::Sam(error.to_string());
        let normal = SoftwareProviderSam::normal(
            SamKeys::key("master", entry.normal.master.as_ref())?,
            entry.normal.signing()?,
            entry.normal.certificate()?,
            anchor,
        )
        .map_err(sam_error)?;
        let transfer = SoftwareProviderSam::transfer(
            SamKeys::key("master", entry.transfer.master.as_ref())?,
            SamKeys::key("storage", entry.transfer.storage.as_ref())?,
            entry.transfer.signing()?,
            entry.transfer.certificate()?,
            anchor,
        )
        .map_err(sam_error)?;
        entry
            .offer
            .provider(Arc::new(normal), Arc::new(transfer), anchor)
    }

    /// Writes the key file, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), SetupError> {
        let text = Zeroizing::new(
            serde_json::to_string_pretty(self).map_err(|e| SetupError::File(e.to_string()))?,
        );
        write_owner_only(path, &text)
    }

    pub fn load(path: &Path) -> Result<Self, SetupError> {
        serde_json::from_str(&read_file(path)?)
            .map_err(|e| SetupError::File(format!("{}: {e}", path.display())))
    }
}

impl MoveSams for MoveKeys {
    fn anchor(&self) -> Result<TrustAnchor, SetupError> {
        MoveKeys::anchor(self)
    }

    fn offers(&self) -> Vec<ServiceOffer> {
        MoveKeys::offers(self)
    }

    fn admin_sam(&self) -> Result<Arc<dyn AdminSam>, SetupError> {
        Ok(Arc::new(self.admin()?))
    }

    fn provider(&self, service: ServiceCode) -> Result<Provider, SetupError> {
        MoveKeys::provider(self, service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use valuecard_core::time::{Date, FixedClock};

    #[test]
    fn keys_certified_by_a_center_survive_their_file_and_build_every_sam() {
        let mut rng = rand_core::OsRng;
        let mut center = Center::ephemeral(Box::new(FixedClock(Date(20_000))), &mut rng).unwrap();
        let keys = MoveKeys::certify(&mut center, &demo_services(), &mut rng).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("move-keys.json");
        keys.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key file is readable by others");
        }
        // A second save never overwrites keys.
        assert!(keys.save(&path).is_err());
        let loaded = MoveKeys::load(&path).unwrap();
        assert_eq!(loaded.anchor().unwrap(), center.anchor());
        assert_eq!(loaded.offers(), demo_services());
        let admin = loaded.admin().unwrap();
        assert_eq!(
            admin.certificate().subject(),
            keys.admin().unwrap().certificate().subject()
        );
        for offer in demo_services() {
            let provider = loaded.provider(offer.code()).unwrap();
            assert_eq!(provider.kind(), offer.kind().unwrap());
            let format = provider.format();
            assert_ne!(format.provider, format.mover);
        }
        assert!(loaded.provider(ServiceCode(0x7777)).is_err());
        // The debug form names the services, never a key.
        let shown = format!("{loaded:?}");
        assert!(!shown.contains(&loaded.admin.signing_seed), "{shown}");
        // Through the trait the services use, the same SAMs.
        let sams: &dyn MoveSams = &loaded;
        assert_eq!(
            sams.admin_sam().unwrap().certificate().subject(),
            admin.certificate().subject()
        );
        assert_eq!(sams.anchor().unwrap(), center.anchor());
    }
}
