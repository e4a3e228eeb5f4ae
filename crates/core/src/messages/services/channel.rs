//! Mutual authentication with one area's key and the secured messages of that session.
//!
//! The host (a provider's normal SAM on main keys, its transfer SAM on temporary keys) draws
//! a host challenge H, the card a card challenge C. With K the area's key in its current key
//! state and `ctx = card ID || service code || key state || H || C`, both derive
//!
//! ```text
//! KS              = KDF(K,  0x43, ctx, 128 bits)
//! card cryptogram = KDF(KS, 0x44, ctx, 64 bits)
//! host cryptogram = KDF(KS, 0x45, ctx, 64 bits)
//! ```
//!
//! with the SCP03-style KDF of `crypto::kdf`. Each secured message is AES-128-GCM under KS
//! with the nonce `direction || 0^7 || n` (`n` counting that direction's messages) and the
//! associated data `"valuecard/services/v1" || card ID || service code || key state ||
//! direction || INS`. A relay between the two (the move server) sees challenges,
//! cryptograms and ciphertext: none of them opens without K, which only the provider's SAM
//! and the chip hold.

use crate::crypto::{
    aes_gcm_open, aes_gcm_seal, constant_time_eq, kdf_cmac_scp03, AesKey, SecretBytes, AES_KEY_LEN,
    GCM_NONCE_LEN,
};
use crate::ids::CardId;
use crate::messages::purse::Challenge;

use super::{derivation, KeyState, ServiceCode};

/// The associated-data label of every secured services message.
pub const SERVICES_CONTEXT: &[u8] = b"valuecard/services/v1";

/// Length of a cryptogram of mutual authentication.
pub const SERVICE_CRYPTOGRAM_LEN: usize = 8;

/// Which way a secured message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChannelDirection {
    ToCard = 0x01,
    ToHost = 0x02,
}

/// Diversifies an area's key from (card ID, service code) under a provider's master key:
/// `derivation::MAIN_KEY` under the normal SAM's master, `derivation::TEMPORARY_KEY` under
/// the transfer SAM's.
pub fn area_key(
    master: &AesKey,
    state: KeyState,
    card_id: &CardId,
    service: ServiceCode,
) -> AesKey {
    let constant = match state {
        KeyState::Main => derivation::MAIN_KEY,
        KeyState::Temporary => derivation::TEMPORARY_KEY,
    };
    let mut key = SecretBytes([0u8; AES_KEY_LEN]);
    derive_into(
        master,
        constant,
        &area_identifier(card_id, service),
        &mut key.0,
    );
    key
}

/// The identifier an area key is diversified from: card ID then service code.
pub fn area_identifier(card_id: &CardId, service: ServiceCode) -> Vec<u8> {
    let mut identifier = Vec::with_capacity(CardId::LEN + 2);
    identifier.extend_from_slice(card_id.as_bytes());
    identifier.extend_from_slice(&service.0.to_be_bytes());
    identifier
}

/// Why a channel refused a message or the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The card's cryptogram does not prove the area key the host holds for this state.
    #[error("the card's cryptogram does not match: it does not hold this area's key")]
    CardCryptogram,
    /// The host's cryptogram does not prove the area key.
    #[error("the host's cryptogram does not match")]
    HostCryptogram,
    /// A message did not open: altered, replayed, out of place or from another session.
    #[error("a message does not open under this session")]
    Unreadable,
    /// A counter ran out.
    #[error("the session's message counter is exhausted")]
    Exhausted,
}

/// The parties and challenges a session is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding {
    pub card_id: CardId,
    pub service: ServiceCode,
    pub key_state: KeyState,
    pub host_challenge: Challenge,
    pub card_challenge: Challenge,
}

impl ChannelBinding {
    fn context(&self) -> Vec<u8> {
        let mut context = Vec::with_capacity(CardId::LEN + 3 + 2 * self.host_challenge.len());
        context.extend_from_slice(self.card_id.as_bytes());
        context.extend_from_slice(&self.service.0.to_be_bytes());
        context.push(self.key_state as u8);
        context.extend_from_slice(&self.host_challenge);
        context.extend_from_slice(&self.card_challenge);
        context
    }
}

/// One service session on either side: the session key, what it is bound to and one
/// message counter per direction.
pub struct ServiceChannel {
    binding: ChannelBinding,
    key: AesKey,
    outbound: ChannelDirection,
    to_card: u32,
    to_host: u32,
}

impl core::fmt::Debug for ServiceChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServiceChannel")
            .field("card_id", &self.binding.card_id)
            .field("service", &self.binding.service)
            .field("key_state", &self.binding.key_state)
            .field("to_card", &self.to_card)
            .field("to_host", &self.to_host)
            .finish_non_exhaustive()
    }
}

impl ServiceChannel {
    fn derive(area_key: &AesKey, binding: ChannelBinding, outbound: ChannelDirection) -> Self {
        let mut key = SecretBytes([0u8; AES_KEY_LEN]);
        derive_into(
            area_key,
            derivation::SESSION_KEY,
            &binding.context(),
            &mut key.0,
        );
        ServiceChannel {
            binding,
            key,
            outbound,
            to_card: 0,
            to_host: 0,
        }
    }

    fn cryptogram(&self, constant: u8) -> [u8; SERVICE_CRYPTOGRAM_LEN] {
        let mut out = [0u8; SERVICE_CRYPTOGRAM_LEN];
        derive_into(&self.key, constant, &self.binding.context(), &mut out);
        out
    }

    /// The card's side after OPEN SERVICE: the channel (not yet usable until the host's
    /// cryptogram checks out) and the card's cryptogram.
    pub fn for_card(
        area_key: &AesKey,
        binding: ChannelBinding,
    ) -> (PendingCardChannel, [u8; SERVICE_CRYPTOGRAM_LEN]) {
        let channel = Self::derive(area_key, binding, ChannelDirection::ToHost);
        let cryptogram = channel.cryptogram(derivation::CARD_CRYPTOGRAM);
        (PendingCardChannel(channel), cryptogram)
    }

    /// The host's side: checks the card's cryptogram and gives the open channel with the
    /// host's cryptogram for EXTERNAL AUTHENTICATE.
    pub fn for_host(
        area_key: &AesKey,
        binding: ChannelBinding,
        card_cryptogram: &[u8; SERVICE_CRYPTOGRAM_LEN],
    ) -> Result<(Self, [u8; SERVICE_CRYPTOGRAM_LEN]), ChannelError> {
        let channel = Self::derive(area_key, binding, ChannelDirection::ToCard);
        if !constant_time_eq(
            &channel.cryptogram(derivation::CARD_CRYPTOGRAM),
            card_cryptogram,
        ) {
            return Err(ChannelError::CardCryptogram);
        }
        let host = channel.cryptogram(derivation::HOST_CRYPTOGRAM);
        Ok((channel, host))
    }

    /// The host's side of a session kept between requests: the same key derived again, the
    /// counters where they were.
    pub fn resume_host(
        area_key: &AesKey,
        binding: ChannelBinding,
        (to_card, to_host): (u32, u32),
    ) -> Self {
        let mut channel = Self::derive(area_key, binding, ChannelDirection::ToCard);
        channel.to_card = to_card;
        channel.to_host = to_host;
        channel
    }

    pub fn binding(&self) -> &ChannelBinding {
        &self.binding
    }

    /// The message counters (to the card, to the host).
    pub fn counters(&self) -> (u32, u32) {
        (self.to_card, self.to_host)
    }

    fn aad(&self, direction: ChannelDirection, instruction: u8) -> Vec<u8> {
        let mut aad = Vec::with_capacity(SERVICES_CONTEXT.len() + 13);
        aad.extend_from_slice(SERVICES_CONTEXT);
        aad.extend_from_slice(self.binding.card_id.as_bytes());
        aad.extend_from_slice(&self.binding.service.0.to_be_bytes());
        aad.push(self.binding.key_state as u8);
        aad.push(direction as u8);
        aad.push(instruction);
        aad
    }

    fn counter_mut(&mut self, direction: ChannelDirection) -> &mut u32 {
        match direction {
            ChannelDirection::ToCard => &mut self.to_card,
            ChannelDirection::ToHost => &mut self.to_host,
        }
    }

    /// Seals this side's next message for `instruction`.
    pub fn seal(&mut self, instruction: u8, plaintext: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let direction = self.outbound;
        let counter = *self.counter_mut(direction);
        let sealed = aes_gcm_seal(
            &self.key,
            &nonce(direction, counter),
            &self.aad(direction, instruction),
            plaintext,
        );
        *self.counter_mut(direction) = counter.checked_add(1).ok_or(ChannelError::Exhausted)?;
        Ok(sealed)
    }

    /// Opens the other side's next message for `instruction`.
    pub fn open(&mut self, instruction: u8, sealed: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let direction = match self.outbound {
            ChannelDirection::ToCard => ChannelDirection::ToHost,
            ChannelDirection::ToHost => ChannelDirection::ToCard,
        };
        let counter = *self.counter_mut(direction);
        let plaintext = aes_gcm_open(
            &self.key,
            &nonce(direction, counter),
            &self.aad(direction, instruction),
            sealed,
        )
        .map_err(|_| ChannelError::Unreadable)?;
        *self.counter_mut(direction) = counter.checked_add(1).ok_or(ChannelError::Exhausted)?;
        Ok(plaintext)
    }
}

/// The card's channel between OPEN SERVICE and EXTERNAL AUTHENTICATE: it seals and opens
/// nothing until the host proved the area key.
pub struct PendingCardChannel(ServiceChannel);

impl core::fmt::Debug for PendingCardChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("PendingCardChannel").field(&self.0).finish()
    }
}

impl PendingCardChannel {
    pub fn binding(&self) -> &ChannelBinding {
        &self.0.binding
    }

    /// EXTERNAL AUTHENTICATE on the card: the host's cryptogram opens the channel.
    pub fn authenticate(
        self,
        host_cryptogram: &[u8; SERVICE_CRYPTOGRAM_LEN],
    ) -> Result<ServiceChannel, ChannelError> {
        if constant_time_eq(
            &self.0.cryptogram(derivation::HOST_CRYPTOGRAM),
            host_cryptogram,
        ) {
            Ok(self.0)
        } else {
            Err(ChannelError::HostCryptogram)
        }
    }
}

fn nonce(direction: ChannelDirection, counter: u32) -> [u8; GCM_NONCE_LEN] {
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
