//! The transfer-key update messages (claims 2-9, 11, 13, 15, 16).

use super::*;

/// UPDATE PERMISSION command data: empty in the symmetric and selection forms; the peer's
/// certificate in the public-key form (claims 4, 7: the second public key certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePermission {
    pub peer_certificate: Option<Certificate>,
}

impl UpdatePermission {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        if let Some(certificate) = &self.peer_certificate {
            put_certificate(&mut w, certificate);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let peer_certificate = optional_certificate(&mut r)?;
        r.finish()?;
        Ok(UpdatePermission { peer_certificate })
    }
}

/// UPDATE PERMISSION response: the first random number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePermissionResponse {
    pub random: KeyUpdateRandom,
}

impl UpdatePermissionResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::RANDOM, &self.random);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let random = r.expect_array(tag::RANDOM)?;
        r.finish()?;
        Ok(UpdatePermissionResponse { random })
    }
}

/// GET TRANSFER KEY command data: the second random number (the receiving card's first),
/// and in the public-key form the receiving card's certificate (the third certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTransferKey {
    pub random: KeyUpdateRandom,
    pub peer_certificate: Option<Certificate>,
}

impl GetTransferKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.put(tag::RANDOM, &self.random);
        if let Some(certificate) = &self.peer_certificate {
            put_certificate(&mut w, certificate);
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let random = r.expect_array(tag::RANDOM)?;
        let peer_certificate = optional_certificate(&mut r)?;
        r.finish()?;
        Ok(GetTransferKey {
            random,
            peer_certificate,
        })
    }
}

/// The transfer key exported under the update key (claims 2, 6, 9): AES-128-GCM under a key
/// derived from the update key, over (random number, identifier, key). It is both the GET
/// TRANSFER KEY response and the UPDATE TRANSFER KEY command data of the symmetric and
/// selection forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymmetricKeyExport {
    /// The update-key generation it is encrypted under.
    pub update_key_id: u32,
    pub nonce: [u8; GCM_NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Plaintext of a symmetric export: random number, transfer-key identifier, transfer key.
pub const KEY_EXPORT_PLAINTEXT_LEN: usize = KEY_UPDATE_RANDOM_LEN + 4 + AES_KEY_LEN;

impl SymmetricKeyExport {
    fn aad(mode: KeyUpdateMode, update_key_id: u32) -> Vec<u8> {
        let mut m = b"valuecard/transfer/key-export/v1".to_vec();
        m.push(mode as u8);
        m.extend_from_slice(&update_key_id.to_be_bytes());
        m
    }

    /// Encrypts (random, key) under `update_key`; `nonce` must be fresh random.
    pub fn seal(
        mode: KeyUpdateMode,
        update_key: &TransferKey,
        nonce: [u8; GCM_NONCE_LEN],
        random: &KeyUpdateRandom,
        key: &TransferKey,
    ) -> Self {
        let export_key = diversify_key(
            &update_key.key,
            derivation::KEY_EXPORT,
            &update_key.id.to_be_bytes(),
        );
        let mut plain = [0u8; KEY_EXPORT_PLAINTEXT_LEN];
        plain[..16].copy_from_slice(random);
        plain[16..20].copy_from_slice(&key.id.to_be_bytes());
        plain[20..].copy_from_slice(key.key.expose());
        let ciphertext = aes_gcm_seal(&export_key, &nonce, &Self::aad(mode, update_key.id), &plain);
        plain.zeroize();
        SymmetricKeyExport {
            update_key_id: update_key.id,
            nonce,
            ciphertext,
        }
    }

    /// Decrypts with `update_key`: the random number and the transfer key.
    pub fn open(
        &self,
        mode: KeyUpdateMode,
        update_key: &TransferKey,
    ) -> Result<(KeyUpdateRandom, TransferKey), CryptoError> {
        if self.update_key_id != update_key.id {
            return Err(CryptoError::DecryptFailed);
        }
        let export_key = diversify_key(
            &update_key.key,
            derivation::KEY_EXPORT,
            &update_key.id.to_be_bytes(),
        );
        let mut plain = aes_gcm_open(
            &export_key,
            &self.nonce,
            &Self::aad(mode, update_key.id),
            &self.ciphertext,
        )?;
        if plain.len() != KEY_EXPORT_PLAINTEXT_LEN {
            plain.zeroize();
            return Err(CryptoError::BadLength);
        }
        let mut random = [0u8; KEY_UPDATE_RANDOM_LEN];
        random.copy_from_slice(&plain[..16]);
        let key = TransferKey {
            id: u32_at(&plain, 16),
            key: key_at(&plain, 20),
        };
        plain.zeroize();
        Ok((random, key))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(96);
        w.put_u32(tag::UPDATE_KEY_ID, self.update_key_id)
            .put(tag::NONCE, &self.nonce)
            .put(tag::CIPHERTEXT, &self.ciphertext);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let update_key_id = u32_field(&mut r, tag::UPDATE_KEY_ID)?;
        let nonce = r.expect_array(tag::NONCE)?;
        let ciphertext = r.expect(tag::CIPHERTEXT)?.to_vec();
        if ciphertext.len() != KEY_EXPORT_PLAINTEXT_LEN + GCM_TAG_LEN {
            return Err(field("ciphertext", "wrong length"));
        }
        r.finish()?;
        Ok(SymmetricKeyExport {
            update_key_id,
            nonce,
            ciphertext,
        })
    }
}

/// The transfer key exported in the public-key form (claims 4, 7): (identifier, key) sealed
/// to the receiving card's certified X25519 key, and the sending card's signature over that
/// ciphertext and the receiving card's random number. Both the GET TRANSFER KEY response and
/// the UPDATE TRANSFER KEY command data of the public-key form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyExport {
    pub sealed: Vec<u8>,
    pub signature: Signature,
}

/// Plaintext of a public-key export: identifier and key.
pub const PUBLIC_KEY_EXPORT_PLAINTEXT_LEN: usize = 4 + AES_KEY_LEN;

impl PublicKeyExport {
    /// Associated data of the sealed box: it is for one receiving card, from one sender.
    pub fn sealed_aad(sender: &CardId, receiver: &CardId) -> Vec<u8> {
        let mut m = b"valuecard/transfer/key-seal/v1".to_vec();
        m.extend_from_slice(sender.as_bytes());
        m.extend_from_slice(receiver.as_bytes());
        m
    }

    /// What the sending card signs (claim 4: the first digital signature data).
    pub fn signed_message(
        sender: &CardId,
        receiver: &CardId,
        random: &KeyUpdateRandom,
        sealed: &[u8],
    ) -> Vec<u8> {
        let mut m = b"valuecard/transfer/key-export/v1".to_vec();
        m.extend_from_slice(sender.as_bytes());
        m.extend_from_slice(receiver.as_bytes());
        m.extend_from_slice(random);
        m.extend_from_slice(sealed);
        m
    }

    pub fn plaintext(key: &TransferKey) -> [u8; PUBLIC_KEY_EXPORT_PLAINTEXT_LEN] {
        let mut plain = [0u8; PUBLIC_KEY_EXPORT_PLAINTEXT_LEN];
        plain[..4].copy_from_slice(&key.id.to_be_bytes());
        plain[4..].copy_from_slice(key.key.expose());
        plain
    }

    pub fn key_from_plaintext(plain: &[u8]) -> Result<TransferKey, DecodeError> {
        if plain.len() != PUBLIC_KEY_EXPORT_PLAINTEXT_LEN {
            return Err(field("sealed key", "wrong length"));
        }
        Ok(TransferKey {
            id: u32_at(plain, 0),
            key: key_at(plain, 4),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(160);
        w.put(tag::SEALED, &self.sealed)
            .put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let sealed = r.expect(tag::SEALED)?.to_vec();
        if sealed.len() != PUBLIC_KEY_EXPORT_PLAINTEXT_LEN + crate::crypto::SEAL_OVERHEAD {
            return Err(field("sealed key", "wrong length"));
        }
        let signature = signature_field(&mut r)?;
        r.finish()?;
        Ok(PublicKeyExport { sealed, signature })
    }
}
