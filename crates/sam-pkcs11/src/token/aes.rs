//! The token's AES keys: KT, KO and Ktemp stored as sensitive secret keys, an installation's
//! CMAC checked under Ktemp, and a key derived with one CMAC under KO; the online security
//! server's master keys generated in the token and found again by their versioned labels;
//! a transfer SAM's storage key sealing and opening its copies with CKM_AES_GCM.

use std::collections::BTreeMap;

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use rand_core::OsRng;
use valuecard_core::crypto::{random_array, AesKey, AES_KEY_LEN, GCM_NONCE_LEN, GCM_TAG_LEN};
use zeroize::{Zeroize, Zeroizing};

use super::{is_rv, Part, TokenSession, Usage, MASTER_SUFFIX};
use crate::Pkcs11SamError;

/// The associated data of the AES-GCM check of [`TokenSession::aes_gcm_decrypt`].
const GCM_PROBE_CONTEXT: &[u8] = b"valuecard/pkcs11/gcm-probe/v1";

/// What an AES key object of the token may do; it can do nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AesUse {
    /// Compute and check AES-CMACs: KT, KO, Ktemp and every master key.
    Mac,
    /// Encrypt and decrypt with CKM_AES_GCM: a transfer SAM's storage key.
    Seal,
}

impl AesUse {
    fn usage(self) -> Usage {
        match self {
            AesUse::Mac => Usage::MAC,
            AesUse::Seal => Usage::CIPHER,
        }
    }
}

impl TokenSession {
    /// Stores an AES-128 key in the token as a sensitive, non-extractable secret key that
    /// can compute and check CMACs. The caller zeroizes `value`.
    pub fn store_aes_key(&self, part: Part, value: &[u8]) -> Result<ObjectHandle, Pkcs11SamError> {
        self.store_aes_key_for(part, value, AesUse::Mac)
    }

    /// [`Self::store_aes_key`] for the use `usage`.
    pub fn store_aes_key_for(
        &self,
        part: Part,
        value: &[u8],
        usage: AesUse,
    ) -> Result<ObjectHandle, Pkcs11SamError> {
        let mut template = self.private_key_template(part, KeyType::AES, usage.usage());
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

    /// Generates an AES-128 key in the token (CKM_AES_KEY_GEN) with the template of
    /// [`Self::store_aes_key`]: its value never exists outside the token, so the token also
    /// marks it CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE.
    pub fn generate_aes_key(&self, part: Part) -> Result<ObjectHandle, Pkcs11SamError> {
        self.generate_aes_key_for(part, AesUse::Mac)
    }

    /// [`Self::generate_aes_key`] for the use `usage`.
    pub fn generate_aes_key_for(
        &self,
        part: Part,
        usage: AesUse,
    ) -> Result<ObjectHandle, Pkcs11SamError> {
        let mut template = self.private_key_template(part, KeyType::AES, usage.usage());
        template.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::ValueLen((AES_KEY_LEN as u64).into()),
        ]);
        self.session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| Pkcs11SamError::token("C_GenerateKey (AES)", &e))
    }

    /// Every master key under the URI's object, by version. PKCS#11 finds objects by whole
    /// labels only, so the AES keys are listed and their labels read; two keys of one
    /// version (two processes rotating at once) are refused, as [`Self::find`] refuses them.
    pub fn master_keys(&self) -> Result<BTreeMap<u32, ObjectHandle>, Pkcs11SamError> {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ];
        if let Some(id) = &self.id {
            template.push(Attribute::Id(id.clone()));
        }
        let handles = self
            .session
            .find_objects(&template)
            .map_err(|e| Pkcs11SamError::token("C_FindObjects", &e))?;
        let prefix = format!("{}{MASTER_SUFFIX}", self.object);
        let mut masters = BTreeMap::new();
        for handle in handles {
            let attributes = self
                .session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(|e| Pkcs11SamError::token("C_GetAttributeValue (CKA_LABEL)", &e))?;
            let Some(version) = attributes.iter().find_map(|a| match a {
                Attribute::Label(label) => master_version(label, &prefix),
                _ => None,
            }) else {
                continue;
            };
            if masters.insert(version, handle).is_some() {
                return Err(Pkcs11SamError::AmbiguousObjects(
                    String::from_utf8_lossy(&Part::Master(version).label(&self.object))
                        .into_owned(),
                ));
            }
        }
        Ok(masters)
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

    /// AES-128-GCM encryption in the token (CKM_AES_GCM, 16-byte tag) under `key` with
    /// `nonce` and the associated data `aad`: the ciphertext followed by the tag, as
    /// `valuecard_core::crypto::aes_gcm_seal` gives it.
    pub fn aes_gcm_encrypt(
        &self,
        key: ObjectHandle,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Pkcs11SamError> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, ((GCM_TAG_LEN * 8) as u64).into())
            .map_err(|e| Pkcs11SamError::token("CK_GCM_PARAMS", &e))?;
        self.session
            .encrypt(&Mechanism::AesGcm(params), key, plaintext)
            .map_err(|e| Pkcs11SamError::token("C_Encrypt (AES-GCM)", &e))
    }

    /// AES-128-GCM decryption in the token of what [`Self::aes_gcm_encrypt`] gave.
    /// `Ok(None)` when the tag does not verify (altered, or sealed under other associated
    /// data or another key): the token then gives no plaintext at all.
    pub fn aes_gcm_decrypt(
        &self,
        key: ObjectHandle,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Pkcs11SamError> {
        if sealed.len() < GCM_TAG_LEN {
            return Ok(None);
        }
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, ((GCM_TAG_LEN * 8) as u64).into())
            .map_err(|e| Pkcs11SamError::token("CK_GCM_PARAMS", &e))?;
        match self
            .session
            .decrypt(&Mechanism::AesGcm(params), key, sealed)
        {
            Ok(plaintext) => Ok(Some(Zeroizing::new(plaintext))),
            Err(e)
                if is_rv(&e, RvError::EncryptedDataInvalid)
                    || is_rv(&e, RvError::EncryptedDataLenRange) =>
            {
                Ok(None)
            }
            // SoftHSM2 (2.6) answers a tag that does not verify with CKR_GENERAL_ERROR, which
            // is also what a broken token answers: a seal and open of nothing under the same
            // key tells them apart, so that a broken token is not taken for an altered copy.
            Err(e) if is_rv(&e, RvError::GeneralError) => {
                if self.aes_gcm_works(key)? {
                    Ok(None)
                } else {
                    Err(Pkcs11SamError::token("C_Decrypt (AES-GCM)", &e))
                }
            }
            Err(e) => Err(Pkcs11SamError::token("C_Decrypt (AES-GCM)", &e)),
        }
    }

    /// Whether `key` still seals and opens: an empty message under a fresh random nonce
    /// (never a fixed one: a GCM nonce is used once per key) and the associated data
    /// [`GCM_PROBE_CONTEXT`], which no copy carries.
    fn aes_gcm_works(&self, key: ObjectHandle) -> Result<bool, Pkcs11SamError> {
        let nonce: [u8; GCM_NONCE_LEN] = random_array(&mut OsRng);
        let sealed = self.aes_gcm_encrypt(key, &nonce, GCM_PROBE_CONTEXT, &[])?;
        let mut iv = nonce;
        let params = GcmParams::new(
            &mut iv,
            GCM_PROBE_CONTEXT,
            ((GCM_TAG_LEN * 8) as u64).into(),
        )
        .map_err(|e| Pkcs11SamError::token("CK_GCM_PARAMS", &e))?;
        Ok(self
            .session
            .decrypt(&Mechanism::AesGcm(params), key, &sealed)
            .is_ok_and(|opened| opened.is_empty()))
    }
}

/// The version in a master key's label `prefix || N`, N in decimal without leading zeros
/// (so that one version has one label), or `None` for any other label.
fn master_version(label: &[u8], prefix: &str) -> Option<u32> {
    let digits = label.strip_prefix(prefix.as_bytes())?;
    let digits = core::str::from_utf8(digits).ok()?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
