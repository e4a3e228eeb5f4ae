//! Where a SAM's token is (its URI and module) and where its PIN comes from.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::token::TokenSession;
use crate::uri::Pkcs11Uri;
use crate::Pkcs11SamError;

/// The environment variable holding the user PIN when the URI gives none.
pub const PIN_ENV: &str = "VALUECARD_PKCS11_PIN";

/// The user PIN for `uri`: its `pin-value`, else the file its `pin-source` names (a path
/// or a `file:` URI; the first line), else [`PIN_ENV`].
pub fn resolve_pin(uri: &Pkcs11Uri) -> Result<Zeroizing<String>, Pkcs11SamError> {
    if let Some(pin) = uri.pin_value() {
        return Ok(Zeroizing::new(pin.to_owned()));
    }
    if let Some(source) = &uri.pin_source {
        let path = source.strip_prefix("file://").unwrap_or(source);
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|_| Pkcs11SamError::PinSource(path.into()))?,
        );
        let first = text.lines().next().unwrap_or("");
        return Ok(Zeroizing::new(first.to_owned()));
    }
    match std::env::var(PIN_ENV) {
        Ok(pin) if !pin.is_empty() => Ok(Zeroizing::new(pin)),
        _ => Err(Pkcs11SamError::NoPin),
    }
}

/// Where to find the token: the URI, and the module if an option names one (else
/// `VALUECARD_PKCS11_MODULE`, the URI's `module-path`, or SoftHSM2's).
#[derive(Debug, Clone)]
pub struct TokenAddress {
    pub uri: Pkcs11Uri,
    pub module: Option<PathBuf>,
}

impl TokenAddress {
    pub fn parse(uri: &str, module: Option<&Path>) -> Result<Self, Pkcs11SamError> {
        Ok(TokenAddress {
            uri: Pkcs11Uri::parse(uri)?,
            module: module.map(Path::to_owned),
        })
    }

    pub(crate) fn session(&self) -> Result<TokenSession, Pkcs11SamError> {
        let pin = resolve_pin(&self.uri)?;
        TokenSession::open(&self.uri, &pin, self.module.as_deref())
    }
}
