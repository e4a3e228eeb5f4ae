//! Why a PKCS#11 SAM could not be made or opened, and how that reaches a device as a
//! [`SamError`].

use std::path::PathBuf;

use valuecard_sam::SamError;

use crate::token;
use crate::uri::UriError;

/// Why a PKCS#11 SAM could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11SamError {
    #[error("bad PKCS#11 URI: {0}")]
    Uri(#[from] UriError),
    #[error(
        "no PKCS#11 module: pass --pkcs11-module PATH or set VALUECARD_PKCS11_MODULE \
         (SoftHSM2's module was not found either; Debian package softhsm2)"
    )]
    NoModule,
    #[error("the PKCS#11 module {0} does not exist")]
    ModuleMissing(PathBuf),
    #[error("the PKCS#11 module {module} could not be loaded: {reason}")]
    ModuleLoad { module: PathBuf, reason: String },
    #[error("this process already uses the PKCS#11 module {loaded}; it cannot load {asked} too")]
    OtherModule { loaded: PathBuf, asked: PathBuf },
    #[error("no token matches {0} (list them with `pkcs11-tool --list-token-slots`)")]
    NoToken(String),
    #[error("several tokens match {0}: add token=, serial= or slot-id= to the URI")]
    SeveralTokens(String),
    #[error(
        "no PIN for the token: give ?pin-source=FILE (or ?pin-value=PIN) in the URI, \
         or set VALUECARD_PKCS11_PIN"
    )]
    NoPin,
    #[error("the PIN file {0} could not be read")]
    PinSource(String),
    #[error("the token refused the PIN (CKR_PIN_INCORRECT): wrong user PIN")]
    WrongPin,
    #[error(
        "the token's user PIN is locked (too many wrong PINs): the security officer must reset it"
    )]
    PinLocked,
    #[error("the token already holds objects labelled {0:?}: choose another object= name")]
    AlreadyExists(String),
    #[error("the token holds no object {0:?} (was this SAM made with `--sam` on this token?)")]
    MissingObject(String),
    #[error("the token holds several objects {0:?}: add id= to the URI")]
    AmbiguousObjects(String),
    #[error("the token does not offer {0}, which a valuecard SAM needs (see docs/hsm.md)")]
    MissingMechanism(&'static str),
    #[error("the token gave a public key that is not a 32-byte curve point")]
    BadPublicKey,
    #[error("the token gave an EdDSA signature of {0} bytes")]
    BadSignatureLength(usize),
    #[error("the token gave an AES-CMAC of {0} bytes, not 16")]
    BadMacLength(usize),
    #[error("the token's X25519 derivation gave no 32-byte secret")]
    BadSharedSecret,
    #[error("the SAM in the token belongs to device {found}, not {expected}")]
    OtherDevice { found: String, expected: String },
    #[error("the token failed: {0}")]
    Token(String),
    #[error(transparent)]
    Sam(#[from] SamError),
}

impl Pkcs11SamError {
    pub(crate) fn token(function: &str, error: &cryptoki::error::Error) -> Self {
        Pkcs11SamError::Token(token::describe(function, error))
    }
}

impl From<Pkcs11SamError> for SamError {
    fn from(error: Pkcs11SamError) -> Self {
        match error {
            Pkcs11SamError::Sam(error) => error,
            other => SamError::Token(other.to_string()),
        }
    }
}
