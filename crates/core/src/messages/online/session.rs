//! Mutual authentication and the secured messages of one online session (ST11).
//!
//! The server draws a host challenge H, the card a card challenge C. Both derive
//!
//! ```text
//! KSES            = KDF(KC,   0x32, card ID || H || C, 128 bits)
//! card cryptogram = KDF(KSES, 0x33, card ID || H || C, 64 bits)
//! host cryptogram = KDF(KSES, 0x34, card ID || H || C, 64 bits)
//! ```
//!
//! with the SCP03-style KDF of `crypto::kdf`. The card proves KC with its cryptogram in
//! INITIALIZE UPDATE, the server with its own in EXTERNAL AUTHENTICATE. Afterwards each
//! secured message is AES-128-GCM under KSES with the nonce `direction || 0^7 || n`, `n`
//! counting that direction's messages from 0, and the associated data
//! `"valuecard/online/v1" || card ID || direction || INS`: a message from another session,
//! another card, the other direction, another command or out of order does not open.

use crate::crypto::{
    aes_gcm_open, aes_gcm_seal, kdf_cmac_scp03, AesKey, CryptoError, SecretBytes, GCM_NONCE_LEN,
};
use crate::ids::CardId;
use crate::messages::purse::Challenge;

use super::{derivation, CRYPTOGRAM_LEN};

/// The associated-data label of every secured online message.
pub const SECURED_CONTEXT: &[u8] = b"valuecard/online/v1";

/// Which way a secured message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// Security server to card (BRC, SPC, value update, completion query).
    ToCard = 0x01,
    /// Card to security server (BI, PCN, completion status).
    ToServer = 0x02,
}

/// The keys of one open session, held by the card (volatile) and by the security server.
pub struct SessionKeys {
    card_id: CardId,
    context: Vec<u8>,
    key: AesKey,
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("card_id", &self.card_id)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Derives KSES from the card's KC and both challenges.
    pub fn derive(
        card_key: &AesKey,
        card_id: &CardId,
        host_challenge: &Challenge,
        card_challenge: &Challenge,
    ) -> Self {
        let mut context = Vec::with_capacity(8 + 2 * host_challenge.len());
        context.extend_from_slice(card_id.as_bytes());
        context.extend_from_slice(host_challenge);
        context.extend_from_slice(card_challenge);
        let mut key = SecretBytes([0u8; crate::crypto::AES_KEY_LEN]);
        derive_into(card_key, derivation::SESSION_KEY, &context, &mut key.0);
        SessionKeys {
            card_id: *card_id,
            context,
            key,
        }
    }

    /// The card's proof of KC, sent in answer to INITIALIZE UPDATE.
    pub fn card_cryptogram(&self) -> [u8; CRYPTOGRAM_LEN] {
        let mut out = [0u8; CRYPTOGRAM_LEN];
        derive_into(
            &self.key,
            derivation::CARD_CRYPTOGRAM,
            &self.context,
            &mut out,
        );
        out
    }

    /// The server's proof of KC, sent in EXTERNAL AUTHENTICATE.
    pub fn host_cryptogram(&self) -> [u8; CRYPTOGRAM_LEN] {
        let mut out = [0u8; CRYPTOGRAM_LEN];
        derive_into(
            &self.key,
            derivation::HOST_CRYPTOGRAM,
            &self.context,
            &mut out,
        );
        out
    }

    /// Encrypts the `counter`-th message of `direction` for the command `instruction`.
    pub fn seal(
        &self,
        direction: Direction,
        counter: u32,
        instruction: u8,
        plaintext: &[u8],
    ) -> Vec<u8> {
        aes_gcm_seal(
            &self.key,
            &nonce(direction, counter),
            &self.associated_data(direction, instruction),
            plaintext,
        )
    }

    /// Opens the `counter`-th message of `direction` for the command `instruction`.
    pub fn open(
        &self,
        direction: Direction,
        counter: u32,
        instruction: u8,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        aes_gcm_open(
            &self.key,
            &nonce(direction, counter),
            &self.associated_data(direction, instruction),
            sealed,
        )
    }

    fn associated_data(&self, direction: Direction, instruction: u8) -> Vec<u8> {
        let mut aad = Vec::with_capacity(SECURED_CONTEXT.len() + 10);
        aad.extend_from_slice(SECURED_CONTEXT);
        aad.extend_from_slice(self.card_id.as_bytes());
        aad.push(direction as u8);
        aad.push(instruction);
        aad
    }
}

fn nonce(direction: Direction, counter: u32) -> [u8; GCM_NONCE_LEN] {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    nonce[0] = direction as u8;
    nonce[GCM_NONCE_LEN - 4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

/// The outputs here are at most 16 bytes, which the KDF's 8-bit counter always numbers.
fn derive_into(key: &AesKey, constant: u8, context: &[u8], out: &mut [u8]) {
    if kdf_cmac_scp03(key, constant, context, out).is_err() {
        out.fill(0);
    }
}

/// The ciphertext overhead of a secured message (the GCM tag).
pub const SECURED_OVERHEAD: usize = crate::crypto::GCM_TAG_LEN;

/// Why a session refused a message or the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The card's cryptogram did not prove the KC the server derived for it.
    #[error("the card's cryptogram does not match: it does not hold this card's key")]
    CardCryptogram,
    /// A message did not open: altered, replayed, out of place or from another session.
    #[error("a message does not open under this session")]
    Unreadable,
    /// A counter ran out (more than 2^32 messages in one session).
    #[error("the session's message counter is exhausted")]
    Exhausted,
}

/// One open session, on either side: the keys, both challenges (which the records of the
/// session carry) and one message counter per direction. The card keeps one in RAM after
/// EXTERNAL AUTHENTICATE ([`SecureSession::for_card`]); the security server makes one when
/// the card's cryptogram checks out ([`SecureSession::authenticate`]) and takes it up again
/// between requests ([`SecureSession::resume`]).
pub struct SecureSession {
    keys: SessionKeys,
    host_challenge: Challenge,
    card_challenge: Challenge,
    /// The direction this side seals in; it opens the other.
    outbound: Direction,
    to_card: u32,
    to_server: u32,
}

impl core::fmt::Debug for SecureSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureSession")
            .field("card_id", &self.keys.card_id)
            .field("outbound", &self.outbound)
            .field("to_card", &self.to_card)
            .field("to_server", &self.to_server)
            .finish_non_exhaustive()
    }
}

impl SecureSession {
    /// ST11 on the server: checks the card's cryptogram from INITIALIZE UPDATE and gives the
    /// session with the server's own cryptogram for EXTERNAL AUTHENTICATE.
    pub fn authenticate(
        card_key: &AesKey,
        card_id: &CardId,
        host_challenge: &Challenge,
        card_challenge: &Challenge,
        card_cryptogram: &[u8; CRYPTOGRAM_LEN],
    ) -> Result<(Self, [u8; CRYPTOGRAM_LEN]), SessionError> {
        let keys = SessionKeys::derive(card_key, card_id, host_challenge, card_challenge);
        if !crate::crypto::constant_time_eq(&keys.card_cryptogram(), card_cryptogram) {
            return Err(SessionError::CardCryptogram);
        }
        let host_cryptogram = keys.host_cryptogram();
        let session = SecureSession {
            keys,
            host_challenge: *host_challenge,
            card_challenge: *card_challenge,
            outbound: Direction::ToCard,
            to_card: 0,
            to_server: 0,
        };
        Ok((session, host_cryptogram))
    }

    /// The card's side, once the server's cryptogram checked out.
    pub fn for_card(
        keys: SessionKeys,
        host_challenge: Challenge,
        card_challenge: Challenge,
    ) -> Self {
        SecureSession {
            keys,
            host_challenge,
            card_challenge,
            outbound: Direction::ToServer,
            to_card: 0,
            to_server: 0,
        }
    }

    /// The server's side of a session kept between requests: the same keys derived again
    /// from KC and the challenges, the counters where they were.
    pub fn resume(
        card_key: &AesKey,
        card_id: &CardId,
        host_challenge: &Challenge,
        card_challenge: &Challenge,
        (to_card, to_server): (u32, u32),
    ) -> Self {
        SecureSession {
            keys: SessionKeys::derive(card_key, card_id, host_challenge, card_challenge),
            host_challenge: *host_challenge,
            card_challenge: *card_challenge,
            outbound: Direction::ToCard,
            to_card,
            to_server,
        }
    }

    pub fn card_id(&self) -> CardId {
        self.keys.card_id
    }

    pub fn host_challenge(&self) -> &Challenge {
        &self.host_challenge
    }

    pub fn card_challenge(&self) -> &Challenge {
        &self.card_challenge
    }

    /// The message counters (to the card, to the server).
    pub fn counters(&self) -> (u32, u32) {
        (self.to_card, self.to_server)
    }

    fn inbound(&self) -> Direction {
        match self.outbound {
            Direction::ToCard => Direction::ToServer,
            Direction::ToServer => Direction::ToCard,
        }
    }

    fn counter(&mut self, direction: Direction) -> &mut u32 {
        match direction {
            Direction::ToCard => &mut self.to_card,
            Direction::ToServer => &mut self.to_server,
        }
    }

    /// Seals this side's next message for `instruction`.
    pub fn seal(&mut self, instruction: u8, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
        let outbound = self.outbound;
        let counter = *self.counter(outbound);
        let sealed = self.keys.seal(outbound, counter, instruction, plaintext);
        *self.counter(outbound) = counter.checked_add(1).ok_or(SessionError::Exhausted)?;
        Ok(sealed)
    }

    /// Opens the other side's next message for `instruction`.
    pub fn open(&mut self, instruction: u8, sealed: &[u8]) -> Result<Vec<u8>, SessionError> {
        let plaintext = self.peek(instruction, sealed)?;
        let inbound = self.inbound();
        let counter = self.counter(inbound);
        *counter = counter.checked_add(1).ok_or(SessionError::Exhausted)?;
        Ok(plaintext)
    }

    /// Opens the other side's next message without consuming it (the card's PREVIEW).
    pub fn peek(&self, instruction: u8, sealed: &[u8]) -> Result<Vec<u8>, SessionError> {
        let inbound = self.inbound();
        let counter = match inbound {
            Direction::ToCard => self.to_card,
            Direction::ToServer => self.to_server,
        };
        self.keys
            .open(inbound, counter, instruction, sealed)
            .map_err(|_| SessionError::Unreadable)
    }
}
