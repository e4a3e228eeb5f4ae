//! The center's release of a transfer whose destination will never come back (docs/protocols.md
//! § 13, "Release by the center"): the source card reserved value toward a destination that
//! is lost, destroyed or never existed, so no proof of non-receipt can ever be had from it.
//! The center signs, under its root key, exactly the pending transfer it judged safe to
//! drop; the source card checks the signature with its trust anchor against its own
//! pending-transfer log and clears it with no balance change (TRANSFER COMPLETE, P1 = 01).

use super::*;
use crate::crypto::PublicKey;

/// The label of the signed byte string: a release signature is good for nothing else.
const RELEASE_LABEL: &[u8] = b"valuecard/transfer/release/v1";

/// TRANSFER COMPLETE command data with P1 = 01: the center's signature over
/// [`TransferRelease::signed_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRelease {
    pub signature: Signature,
}

impl TransferRelease {
    /// The byte string the center signs: the source card and every field of its pending
    /// transfer, so that one release drops one reservation of one card and no other.
    pub fn signed_message(source: &CardId, pending: &PendingTransfer) -> Vec<u8> {
        let mut m = Vec::with_capacity(RELEASE_LABEL.len() + 8 + 16 + 8 + 4 + 8 + 4);
        m.extend_from_slice(RELEASE_LABEL);
        m.extend_from_slice(source.as_bytes());
        m.extend_from_slice(&pending.challenge_source);
        m.extend_from_slice(pending.destination.as_bytes());
        m.extend_from_slice(&pending.destination_counter.to_be_bytes());
        m.extend_from_slice(&pending.amount.to_be_bytes());
        m.extend_from_slice(&pending.key_id.to_be_bytes());
        m
    }

    /// Checks the signature under the center's root key (the card's trust anchor) for the
    /// pending transfer of `source`.
    pub fn verify(
        &self,
        root_key: &PublicKey,
        source: &CardId,
        pending: &PendingTransfer,
    ) -> Result<(), CryptoError> {
        root_key.verify(&Self::signed_message(source, pending), &self.signature)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::with_capacity(4 + SIGNATURE_LEN);
        w.put(purse_tag::SIGNATURE, &self.signature.0);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = TlvReader::new(bytes);
        let release = TransferRelease {
            signature: signature_field(&mut r)?,
        };
        r.finish()?;
        Ok(release)
    }
}
