//! Messages between devices (dispensers, terminals) and the management center, and the
//! [`CenterLink`] trait through which a device reaches the center: in process now, over
//! HTTP later. Each request is what the seed's device sends; each answer is what the
//! center returns.

use crate::cert::{Certificate, TrustAnchor};
use crate::crypto::{PublicKey, Signature, MAC_LEN, PUBLIC_KEY_LEN};
use crate::ids::{CardId, DeviceId};
use crate::messages::purse::{Challenge, LoadOffer};
use crate::money::Amount;
use crate::time::Date;

/// Fig. 4B, first half: a dispenser asks the center for a new card identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardIdRequest {
    pub dispenser_id: DeviceId,
}

/// Fig. 4B, second half: the card generated its key pair; the dispenser asks the center to
/// certify it and to deliver the card keys (Fig. 8) sealed to the card's transport session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardCertificationRequest {
    pub dispenser_id: DeviceId,
    pub card_id: CardId,
    pub signing_key: PublicKey,
    pub sealing_key: [u8; PUBLIC_KEY_LEN],
    /// The challenge the card issued for its PERSONALIZE command.
    pub card_challenge: Challenge,
}

/// The center's answer: everything the PERSONALIZE command carries, MAC included. The
/// center, which knows the transport key, computes the MAC and seals KU and KO; the
/// dispenser only relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPersonalization {
    pub certificate: Certificate,
    pub anchor: TrustAnchor,
    pub date: Date,
    pub sealed_keys: Vec<u8>,
    pub mac: [u8; MAC_LEN],
}

/// The center's answer to a card-ID request: the ID and the MAC that authorizes GENERATE
/// KEY PAIR under the transport key for the card's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardIdAssignment {
    pub card_id: CardId,
    pub mac: [u8; MAC_LEN],
}

/// Fig. 7: the dispenser forwards the card's signed offer and asks the center to authorize
/// the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRequest {
    pub card_id: CardId,
    pub dispenser_id: DeviceId,
    pub challenge_dispenser: Challenge,
    pub amount: Amount,
    pub offer: LoadOffer,
}

/// The center's answer: its signature and the KU MAC, ready for the CREDIT command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadApproval {
    pub balance_after: Amount,
    pub load_number: u32,
    pub date: Date,
    pub signature: Signature,
    pub mac: [u8; MAC_LEN],
}

/// Fig. 4A with Fig. 8: a terminal asks to be installed. Its SAM generated the key pair;
/// the center certifies the public key and returns KT and KO sealed under the terminal's
/// transport key Ktemp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationRequest {
    pub device_id: DeviceId,
    pub signing_key: PublicKey,
    pub sealing_key: [u8; PUBLIC_KEY_LEN],
    pub challenge: Challenge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub certificate: Certificate,
    pub anchor: TrustAnchor,
    /// KT || KO, AES-128-GCM under a session key derived from Ktemp and the challenge.
    pub sealed_keys: Vec<u8>,
}

/// Why the center refused a request. Split by who is at fault, as every error here is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CenterError {
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    #[error("device {0} is not allowed to do this")]
    NotAuthorized(DeviceId),
    #[error("unknown card {0}")]
    UnknownCard(CardId),
    #[error("card {0} is blocked at the center")]
    CardBlocked(CardId),
    #[error("the card's signature does not verify")]
    BadCardSignature,
    #[error("request does not match the center's records: {0}")]
    Mismatch(String),
    #[error("amount refused: {0}")]
    Amount(String),
    #[error("center storage failed: {0}")]
    Storage(String),
    #[error("center unreachable: {0}")]
    Unreachable(String),
    #[error("center set-up: {0}")]
    Setup(String),
}

/// The dispenser's report of how a load ended: the card answered the CREDIT (committed),
/// or the card shows it never applied it (cancelled). Until it arrives the load is value
/// in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSettlement {
    pub card_id: CardId,
    pub dispenser_id: DeviceId,
    pub load_number: u32,
    pub committed: bool,
}

/// How a dispenser reaches the center.
pub trait CenterLink {
    fn assign_card_id(
        &mut self,
        request: &CardIdRequest,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError>;
    /// For a card that generated its key pair but lost power before personalization: a new
    /// MAC for GENERATE KEY PAIR, which then returns the keys the card already holds.
    fn resume_card_id(
        &mut self,
        request: &CardIdRequest,
        card_id: &CardId,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError>;
    fn certify_card(
        &mut self,
        request: &CardCertificationRequest,
    ) -> Result<CardPersonalization, CenterError>;
    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError>;
    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<(), CenterError>;
}

impl<T: CenterLink + ?Sized> CenterLink for &mut T {
    fn assign_card_id(
        &mut self,
        request: &CardIdRequest,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        (**self).assign_card_id(request, card_challenge)
    }
    fn resume_card_id(
        &mut self,
        request: &CardIdRequest,
        card_id: &CardId,
        card_challenge: &Challenge,
    ) -> Result<CardIdAssignment, CenterError> {
        (**self).resume_card_id(request, card_id, card_challenge)
    }
    fn certify_card(
        &mut self,
        request: &CardCertificationRequest,
    ) -> Result<CardPersonalization, CenterError> {
        (**self).certify_card(request)
    }
    fn authorize_load(&mut self, request: &LoadRequest) -> Result<LoadApproval, CenterError> {
        (**self).authorize_load(request)
    }
    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<(), CenterError> {
        (**self).settle_load(settlement)
    }
}
