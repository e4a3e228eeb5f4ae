//! The move server's administrative SAM 21 in a token: its Ed25519 key signs FORMAT AREA
//! and SWITCH KEYS over a chip's challenge. It holds no area key of any provider.

use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::services::{
    AreaFormat, FormatArea, KeyChange, KeyPackage, KeyState, MoveId, SwitchKeys,
};
use valuecard_migrate::sam::{build_format_area, build_switch_keys, AdminSam, SamError};

use super::{
    check_certificate, remove_provisioned, require_mechanisms, signing_pair, unavailable,
    LockedSession, MoveSamError,
};
use crate::{Pkcs11SamError, TokenAddress};

/// What the administrative SAM asks of its token.
const ADMIN_MECHANISMS: [(MechanismType, &str); 2] = [
    (
        MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        "CKM_EC_EDWARDS_KEY_PAIR_GEN",
    ),
    (MechanismType::EDDSA, "CKM_EDDSA"),
];

/// The administrative SAM whose signing key is in a PKCS#11 token.
pub struct Pkcs11AdminSam {
    session: LockedSession,
    signing_key: ObjectHandle,
    public_key: PublicKey,
    certificate: Certificate,
    locator: String,
}

impl core::fmt::Debug for Pkcs11AdminSam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11AdminSam")
            .field("locator", &self.locator)
            .field("subject", &self.certificate.subject())
            .finish_non_exhaustive()
    }
}

impl Pkcs11AdminSam {
    /// Generates the SAM's Ed25519 key pair in the token (sensitive, never extractable,
    /// sign only) and gives its public key, for the center to certify with role
    /// `MoveAdministrator`; [`Self::open`] then takes that certificate. Refused if the
    /// token already has objects under the URI's label.
    pub fn provision(address: &TokenAddress) -> Result<PublicKey, MoveSamError> {
        let token = address.session()?;
        require_mechanisms(&token, &ADMIN_MECHANISMS)?;
        if token.any_object_exists()? {
            return Err(Pkcs11SamError::AlreadyExists(token.object.clone()).into());
        }
        let (private, public) = token.generate_signing_pair()?;
        PublicKey::from_bytes(&public).map_err(|_| {
            remove_provisioned(&token, &[private]);
            MoveSamError::from(Pkcs11SamError::BadPublicKey)
        })
    }

    /// Opens the SAM the URI names with the certificate the center issued for its key.
    /// Refuses a certificate that is not a move administrator's or not for the token's key.
    pub fn open(address: &TokenAddress, certificate: Certificate) -> Result<Self, MoveSamError> {
        let token = address.session()?;
        let (signing_key, public_key) = signing_pair(&token)?;
        check_certificate(&certificate, &[Role::MoveAdministrator], &public_key)?;
        Ok(Pkcs11AdminSam {
            session: LockedSession(std::sync::Mutex::new(token)),
            signing_key,
            public_key,
            certificate,
            locator: address.uri.without_pin(),
        })
    }

    /// The public key of the token's signing key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The URI without PIN, as a configuration records it.
    pub fn locator(&self) -> &str {
        &self.locator
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SamError> {
        self.session
            .lock()
            .sign_eddsa(self.signing_key, message)
            .map(Signature)
            .map_err(unavailable)
    }
}

impl AdminSam for Pkcs11AdminSam {
    fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    fn switch_keys(
        &self,
        card_id: &CardId,
        challenge: &Challenge,
        move_id: MoveId,
        changes: Vec<KeyChange>,
    ) -> Result<SwitchKeys, SamError> {
        build_switch_keys(
            &self.certificate,
            card_id,
            challenge,
            move_id,
            changes,
            |message| self.sign(message),
        )
    }

    fn format_area(
        &self,
        card_id: &CardId,
        challenge: &Challenge,
        format: AreaFormat,
        initial_state: KeyState,
        main_package: KeyPackage,
        temporary_package: KeyPackage,
    ) -> Result<FormatArea, SamError> {
        build_format_area(
            &self.certificate,
            card_id,
            challenge,
            format,
            initial_state,
            (main_package, temporary_package),
            |message| self.sign(message),
        )
    }
}
