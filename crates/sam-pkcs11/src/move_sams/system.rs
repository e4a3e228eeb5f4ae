//! A whole move system with its SAMs in a PKCS#11 token: `valuecard migrate init --sam
//! pkcs11:...` generates the administrative SAM and each service's normal and transfer SAM
//! in the token, under labels derived from the URI's object, and has the center certify
//! them. [`TokenMoveSams`] records where each SAM is (its URI, never a PIN) and the
//! certificate the center issued for it; that record holds no secret. The services open
//! their SAMs from it ([`MoveSams`]), with the PIN from the environment or a `pin-source`.
//!
//! | SAM | object label (URI object `move`) |
//! |---|---|
//! | the move server's administrative SAM | `move-admin` |
//! | service 0102's normal SAM | `move-0102-normal` |
//! | service 0102's transfer SAM | `move-0102-transfer` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use valuecard_center::Center;
use valuecard_core::cert::TrustAnchor;
use valuecard_core::messages::services::ServiceCode;
use valuecard_migrate::provider::Provider;
use valuecard_migrate::sam::AdminSam;
use valuecard_migrate::setup::{
    certificate_from_hex, certificate_to_hex, certify_key, read_file, write_owner_only,
    AnchorRecord, Certify, MoveSams, ServiceOffer, SetupError,
};

use super::{Pkcs11AdminSam, Pkcs11ProviderSam};
use crate::{NewMaster, TokenAddress};

/// Where one SAM is and the certificate the center issued for its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenSam {
    /// The SAM's URI without PIN (a `pin-source` stays: it names a file).
    uri: String,
    certificate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenProvider {
    offer: ServiceOffer,
    normal: TokenSam,
    transfer: TokenSam,
}

/// A move system whose SAMs are in a PKCS#11 token: the record of `migrate init --sam
/// pkcs11:...`. It opens each SAM with the module given at [`TokenMoveSams::load`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenMoveSams {
    #[serde(flatten)]
    anchor: AnchorRecord,
    admin: TokenSam,
    providers: Vec<TokenProvider>,
    /// The PKCS#11 module the services load (not recorded: the process's option).
    #[serde(skip)]
    module: Option<PathBuf>,
}

/// The address of the SAM `suffix` under the base URI's object label.
fn sam_address(base: &TokenAddress, suffix: &str) -> TokenAddress {
    let mut address = base.clone();
    address.uri.object = format!("{}-{suffix}", base.uri.object);
    address
}

fn token_error(label: &TokenAddress) -> impl Fn(super::MoveSamError) -> SetupError + '_ {
    move |error| SetupError::Sam(format!("{}: {error}", label.uri.without_pin()))
}

impl TokenMoveSams {
    /// Generates every SAM of `offers` in the token `base` names (its keys never leave
    /// it) and has `center` certify each with its role. Refused, before the center
    /// certifies anything, if a label is taken; a token failure half-way leaves the SAMs
    /// made so far in the token (a new object label sets the system up again).
    pub fn certify(
        center: &mut Center,
        offers: &[ServiceOffer],
        base: &TokenAddress,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, SetupError> {
        let anchor = AnchorRecord::new(&center.anchor());
        let mut certify = |address: &TokenAddress, public, role: Certify| {
            certify_key(center, public, role, rng)
                .map(|certificate| TokenSam {
                    uri: address.uri.without_pin(),
                    certificate: certificate_to_hex(&certificate),
                })
                .map_err(SetupError::from)
        };
        let admin_address = sam_address(base, "admin");
        let admin_key =
            Pkcs11AdminSam::provision(&admin_address).map_err(token_error(&admin_address))?;
        let mut made = Vec::with_capacity(offers.len());
        for offer in offers {
            offer.kind()?;
            let normal = sam_address(base, &format!("{:04x}-normal", offer.service));
            let transfer = sam_address(base, &format!("{:04x}-transfer", offer.service));
            let normal_key = Pkcs11ProviderSam::provision_normal(&normal, NewMaster::Generate)
                .map_err(token_error(&normal))?;
            let transfer_key = Pkcs11ProviderSam::provision_transfer(
                &transfer,
                NewMaster::Generate,
                NewMaster::Generate,
            )
            .map_err(token_error(&transfer))?;
            made.push((offer, normal, normal_key, transfer, transfer_key));
        }
        let admin = certify(
            &admin_address,
            admin_key,
            Center::certify_move_administrator,
        )?;
        let mut providers = Vec::with_capacity(made.len());
        for (offer, normal, normal_key, transfer, transfer_key) in made {
            providers.push(TokenProvider {
                offer: offer.clone(),
                normal: certify(&normal, normal_key, Center::certify_service_provider)?,
                transfer: certify(&transfer, transfer_key, Center::certify_service_transfer)?,
            });
        }
        Ok(TokenMoveSams {
            anchor,
            admin,
            providers,
            module: base.module.clone(),
        })
    }

    /// Writes the record (owner-only, never over an existing file).
    pub fn save(&self, path: &Path) -> Result<(), SetupError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| SetupError::File(e.to_string()))?;
        write_owner_only(path, &text)
    }

    /// Reads the record; its SAMs are opened with `module` (else the environment's, the
    /// URI's or SoftHSM2's, as every token SAM).
    pub fn load(path: &Path, module: Option<&Path>) -> Result<Self, SetupError> {
        let mut sams: TokenMoveSams = serde_json::from_str(&read_file(path)?)
            .map_err(|e| SetupError::File(format!("{}: {e}", path.display())))?;
        sams.module = module.map(Path::to_owned);
        Ok(sams)
    }

    /// The URIs (without PIN) of every SAM, the administrative SAM first.
    pub fn locators(&self) -> Vec<String> {
        let mut out = vec![self.admin.uri.clone()];
        for provider in &self.providers {
            out.push(provider.normal.uri.clone());
            out.push(provider.transfer.uri.clone());
        }
        out
    }

    fn address(&self, sam: &TokenSam) -> Result<TokenAddress, SetupError> {
        TokenAddress::parse(&sam.uri, self.module.as_deref())
            .map_err(|e| SetupError::File(format!("{}: {e}", sam.uri)))
    }

    fn open_provider_sam(
        &self,
        sam: &TokenSam,
        anchor: TrustAnchor,
    ) -> Result<Pkcs11ProviderSam, SetupError> {
        let address = self.address(sam)?;
        Pkcs11ProviderSam::open(&address, certificate_from_hex(&sam.certificate)?, anchor)
            .map_err(token_error(&address))
    }
}

impl MoveSams for TokenMoveSams {
    fn anchor(&self) -> Result<TrustAnchor, SetupError> {
        self.anchor.anchor()
    }

    fn offers(&self) -> Vec<ServiceOffer> {
        self.providers.iter().map(|p| p.offer.clone()).collect()
    }

    fn admin_sam(&self) -> Result<Arc<dyn AdminSam>, SetupError> {
        let address = self.address(&self.admin)?;
        let sam = Pkcs11AdminSam::open(&address, certificate_from_hex(&self.admin.certificate)?)
            .map_err(token_error(&address))?;
        Ok(Arc::new(sam))
    }

    fn provider(&self, service: ServiceCode) -> Result<Provider, SetupError> {
        let entry = self
            .providers
            .iter()
            .find(|p| p.offer.service == service.0)
            .ok_or_else(|| SetupError::File(format!("no provider of service {service}")))?;
        let anchor = self.anchor()?;
        let normal = self.open_provider_sam(&entry.normal, anchor)?;
        let transfer = self.open_provider_sam(&entry.transfer, anchor)?;
        entry
            .offer
            .provider(Arc::new(normal), Arc::new(transfer), anchor)
    }
}
