//! The token's AES keys: KT, KO and Ktemp stored as sensitive secret keys, an installation's
//! CMAC checked under Ktemp, and a key derived with one CMAC under KO.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use valuecard_core::crypto::AesKey;
use zeroize::Zeroize;

use super::{is_rv, Part, TokenSession, Usage};
use crate::Pkcs11SamError;

impl TokenSession {
    /// Stores an AES-128 key in the token as a sensitive, non-extractable secret key that
    /// can compute and check CMACs. The caller zeroizes `value`.
    pub fn store_aes_key(&self, part: Part, value: &[u8]) -> Result<ObjectHandle, Pkcs11SamError> {
        let mut template = self.private_key_template(part, KeyType::AES, Usage::MAC);
        template.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Value(value.to_vec()),
        ]);
        let handle = self.session.create_object(&template);
        // The template held a copy of the key: erase it before anything else.
        for attribute in &mut template {
            if let Attribute::Value(bytes) = attribute {
                bytes.zeroize();
            }
        }
        handle.map_err(|e| Pkcs11SamError::token("C_CreateObject (AES key)", &e))
    }

    /// Checks an AES-CMAC in the token (CKM_AES_CMAC, full 16-byte tag). `Ok(false)` when
    /// it does not verify.
    pub fn verify_cmac(
        &self,
        key: ObjectHandle,
        message: &[u8],
        tag: &[u8],
    ) -> Result<bool, Pkcs11SamError> {
        match self.session.verify(&Mechanism::AesCMac, key, message, tag) {
            Ok(()) => Ok(true),
            Err(e)
                if is_rv(&e, RvError::SignatureInvalid)
                    || is_rv(&e, RvError::SignatureLenRange) =>
            {
                Ok(false)
            }
            Err(e) => Err(Pkcs11SamError::token("C_Verify (AES-CMAC)", &e)),
        }
    }

    /// A key derived from the token's AES key `key` with one AES-CMAC (CKM_AES_CMAC, full
    /// 16-byte tag) over `input`: the SP 800-108 derivation of `diversify_key` when `input`
    /// is its one block's input. KO never leaves the token; the derived key does, into a
    /// zeroizing buffer the caller drops as soon as it sealed or opened one value.
    ///
    /// Why not a derivation into a token object: SoftHSM2 2.6 has no SP 800-108 KDF
    /// (CKM_SP800_108_COUNTER_KDF is PKCS#11 3.0), and CKM_AES_ECB_ENCRYPT_DATA or
    /// CKM_AES_CBC_ENCRYPT_DATA cannot give a CMAC without its subkey passing through the
    /// host, which would be a longer-lived secret than the one key derived here.
    pub fn cmac_derived_key(
        &self,
        key: ObjectHandle,
        input: &[u8],
    ) -> Result<AesKey, Pkcs11SamError> {
        let mut tag = self
            .session
            .sign(&Mechanism::AesCMac, key, input)
            .map_err(|e| Pkcs11SamError::token("C_Sign (AES-CMAC)", &e))?;
        let derived = AesKey::from_slice(&tag);
        let length = tag.len();
        tag.zeroize();
        derived.map_err(|_| Pkcs11SamError::BadMacLength(length))
    }
}
