//! The center's root key in a PKCS#11 token: `center init --key-store pkcs11:...` generates
//! it there (sensitive, never extractable, sign only) and the key file records the URI
//! (without PIN) and the public key instead of the key. Every command that opens the center
//! opens the token; the PIN comes from the URI or `VALUECARD_PKCS11_PIN`, the module from
//! `--pkcs11-module`, `VALUECARD_PKCS11_MODULE` or SoftHSM2's. The root key certifies every
//! device and card and signs every load and every answer of the center's service: it is the
//! center's load-signing key too.

use std::sync::Arc;

use valuecard_center::keys::RootSigner;
use valuecard_core::crypto::{PublicKey, Signature};
use valuecard_sam_pkcs11::{Pkcs11Signer, TokenAddress};

use crate::device_sam;

/// The token's key as the center's root signer.
#[derive(Debug)]
struct TokenRoot(Pkcs11Signer);

impl RootSigner for TokenRoot {
    fn public_key(&self) -> PublicKey {
        self.0.public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, String> {
        self.0.sign(message).map_err(|e| e.to_string())
    }

    fn locator(&self) -> String {
        self.0.locator().to_owned()
    }
}

fn address(uri: &str) -> Result<TokenAddress, String> {
    if !uri.starts_with("pkcs11:") {
        return Err(format!(
            "--key-store takes a PKCS#11 URI (pkcs11:token=...;object=...), not {uri:?}"
        ));
    }
    TokenAddress::parse(uri, device_sam::pkcs11_module_option().as_deref())
        .map_err(|e| format!("--key-store: {e}"))
}

/// A new root key generated in the token `uri` names.
pub fn generate_root(uri: &str) -> Result<Arc<dyn RootSigner>, String> {
    let signer = Pkcs11Signer::generate(&address(uri)?).map_err(|e| e.to_string())?;
    Ok(Arc::new(TokenRoot(signer)))
}

/// The root key a center's key file names (the center checks it is the recorded one).
pub fn open_root(locator: &str, _recorded: &PublicKey) -> Result<Arc<dyn RootSigner>, String> {
    let signer = Pkcs11Signer::open(&address(locator)?)
        .map_err(|e| format!("the center's root key in {locator}: {e}"))?;
    Ok(Arc::new(TokenRoot(signer)))
}
