//! Messages between devices (dispensers, terminals) and the management center, and the
//! [`CenterLink`] trait through which a device reaches the center: in process now, over
//! HTTP later. Each request is what the seed's device sends; each answer is what the
//! center returns.

use crate::cert::{Certificate, TrustAnchor};
use crate::crypto::{PublicKey, Signature, MAC_LEN, PUBLIC_KEY_LEN};
use crate::ids::{CardId, DeviceId};
use crate::messages::purse::{Challenge, ChipSerial, LastTransaction, LoadOffer, TerminalStamp};
use crate::money::Amount;
use crate::time::Date;

/// Fig. 4B, first half: a dispenser asks the center for a new card identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardIdRequest {
    pub dispenser_id: DeviceId,
    /// The blank chip's manufacture serial (from its SELECT answer): the center MACs GENERATE
    /// KEY PAIR under this chip's own transport key.
    pub chip_serial: ChipSerial,
}

/// Fig. 4B, second half: the card generated its key pair; the dispenser asks the center to
/// certify it and to deliver the card keys (Fig. 8) sealed to the card's transport session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardCertificationRequest {
    pub dispenser_id: DeviceId,
    /// The chip's manufacture serial: PERSONALIZE is MACed under its own transport key.
    pub chip_serial: ChipSerial,
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
    /// The newest transfer keys sealed for this card and load (seed 000), passed to the card
    /// in CREDIT; `None` when the center has none to send.
    pub transfer_keys: Option<Vec<u8>>,
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
    /// KT || KO || TS0, sealed to the SAM's own X25519 key with an ephemeral key of the
    /// center (X25519 + HKDF-SHA256 + AES-128-GCM).
    pub sealed_keys: Vec<u8>,
    /// AES-CMAC under the device's own transport key over the whole installation and the
    /// device's challenge: the SAM knows the keys come from the center.
    pub mac: [u8; MAC_LEN],
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
    #[error("time stamp refused: {0}")]
    BadStamp(String),
    #[error("amount refused: {0}")]
    Amount(String),
    #[error("center storage failed: {0}")]
    Storage(String),
    #[error("center unreachable: {0}")]
    Unreachable(String),
    #[error("center set-up: {0}")]
    Setup(String),
}

/// The dispenser's report of how a load ended, with the card's own evidence: its signed
/// last transaction (GET LAST TRANSACTION). The center reads the outcome from the evidence,
/// never from the dispenser's word: a record that is this load proves it committed; a
/// record at the load's counter, signed over a challenge the center drew after it
/// authorized the load ([`SettlementChallengeRequest`]), proves the card dropped the load
/// session (GET LAST TRANSACTION ends it) and can never apply it; a different update at
/// the counter the load would have written proves the state went elsewhere. Until then the
/// load is value in flight, the liability of the dispenser that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSettlement {
    pub card_id: CardId,
    pub dispenser_id: DeviceId,
    pub load_number: u32,
    /// The challenge the card signed its last transaction over.
    pub challenge: Challenge,
    pub evidence: LastTransaction,
}

/// A dispenser asks the center for a fresh challenge to settle one of its pending loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementChallengeRequest {
    pub dispenser_id: DeviceId,
    /// The card the load is for: loads are keyed by (card, number), so that the lookup
    /// stays on the card's shard.
    pub card_id: CardId,
    pub load_number: u32,
}

/// What the center concluded from a settlement's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// The card holds this load.
    Committed,
    /// The card can never apply this load.
    Cancelled,
    /// The evidence does not decide (the card moved on past the load's counter): the load
    /// stays pending until a usage upload shows which update consumed its state.
    Undecided,
}

impl LoadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadOutcome::Committed => "committed",
            LoadOutcome::Cancelled => "cancelled",
            LoadOutcome::Undecided => "undecided",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "committed" => LoadOutcome::Committed,
            "cancelled" => LoadOutcome::Cancelled,
            "undecided" => LoadOutcome::Undecided,
            _ => return None,
        })
    }
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
    /// A fresh challenge for settling a pending load this dispenser holds.
    fn settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError>;
    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<LoadOutcome, CenterError>;
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
    fn settlement_challenge(
        &mut self,
        request: &SettlementChallengeRequest,
    ) -> Result<Challenge, CenterError> {
        (**self).settlement_challenge(request)
    }
    fn settle_load(&mut self, settlement: &LoadSettlement) -> Result<LoadOutcome, CenterError> {
        (**self).settle_load(settlement)
    }
}

/// One committed purchase as a terminal reports it to the center (Fig. 9): the purchase
/// itself with the terminal's signature ST over it, and the card's previous usage record
/// from which the usage-management information h is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageItem {
    pub terminal_sequence: u32,
    pub card_id: CardId,
    /// The card's counter before the purchase: the card state this purchase consumed.
    pub card_counter: u32,
    pub amount: Amount,
    pub balance_before: Amount,
    pub balance_after: Amount,
    pub challenge_terminal: Challenge,
    pub challenge_card: Challenge,
    pub date: Date,
    /// The terminal's stamp at the time of the purchase (Figs. 10-12).
    pub stamp: crate::messages::purse::TerminalStamp,
    /// ST over the [`crate::messages::purse::PurchaseCommit`] this item describes.
    pub terminal_signature: Signature,
    pub previous_usage: crate::messages::purse::UsageRecord,
    /// The upper bound the terminal asked the card for (INITIALIZE PURCHASE).
    pub amount_max: Amount,
    /// The card's own SU over the state it spent from
    /// ([`crate::messages::purse::PurchaseOffer::signed_message`]): without it a terminal
    /// could invent a sale for any card, or frame a genuine card as a clone.
    pub card_signature: Signature,
}

impl UsageItem {
    /// The purchase commit the terminal signed.
    pub fn commit(&self, terminal_id: DeviceId) -> crate::messages::purse::PurchaseCommit {
        crate::messages::purse::PurchaseCommit {
            card_id: self.card_id,
            terminal_id,
            challenge_terminal: self.challenge_terminal,
            challenge_card: self.challenge_card,
            counter: self.card_counter,
            amount: self.amount,
            balance_after: self.balance_after,
            terminal_sequence: self.terminal_sequence,
            date: self.date,
            stamp: self.stamp,
        }
    }

    /// What the card signed for the state this purchase spent from (SU of Fig. 6).
    pub fn card_signed_message(&self, terminal_id: DeviceId) -> Vec<u8> {
        crate::messages::purse::PurchaseOffer::signed_message(
            &self.card_id,
            &terminal_id,
            &self.challenge_terminal,
            &self.challenge_card,
            self.balance_before,
            self.card_counter,
            self.amount_max,
        )
    }

    /// h of Fig. 9: a digest of (IDU, R^a, X, IDT^a, V^a) from the previous usage record.
    pub fn usage_management_digest(&self) -> [u8; 32] {
        let previous = &self.previous_usage;
        let mut input = Vec::with_capacity(96);
        input.extend_from_slice(b"valuecard/usage-management/v1");
        input.extend_from_slice(self.card_id.as_bytes());
        input.extend_from_slice(&previous.challenge_writer);
        input.extend_from_slice(&previous.challenge_card);
        input.extend_from_slice(previous.writer.as_bytes());
        input.extend_from_slice(&previous.balance_after.to_be_bytes());
        input.extend_from_slice(&previous.counter.to_be_bytes());
        crate::crypto::sha256(&input)
    }
}

/// A batch of usage items from one terminal (offline for days is normal: batches resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageUpload {
    pub terminal_id: DeviceId,
    pub items: Vec<UsageItem>,
}

/// What the center did with a batch. Every item is accounted for: stored, already stored
/// (a retry), or refused with a reason; cards found cloned are listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadReceipt {
    pub stored: u32,
    pub duplicates: u32,
    pub refused: Vec<(u32, String)>,
    pub clones_detected: Vec<CardId>,
}

impl UploadReceipt {
    /// Adds the answer to one more batch of the same upload (each clone listed once).
    pub fn absorb(&mut self, batch: UploadReceipt) {
        self.stored += batch.stored;
        self.duplicates += batch.duplicates;
        self.refused.extend(batch.refused);
        for card in batch.clones_detected {
            if !self.clones_detected.contains(&card) {
                self.clones_detected.push(card);
            }
        }
    }
}

/// Why a card or terminal is on a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListReason {
    /// The same card state was spent twice (Fig. 9).
    Cloned,
    /// Reported lost by its holder.
    Lost,
    /// Reported stolen, or replaced by a restored card.
    Stolen,
    /// A terminal reported stolen or otherwise troubled (Figs. 10-12).
    TroubledTerminal,
    /// The card claimed a balance no writer signed, or above what the center ever loaded
    /// onto it: its chip was opened and its image edited.
    Tampered,
    /// Its services were moved to a new chip (seed 002): the old chip is kept as a backup on
    /// temporary keys and must never pay again.
    Migrated,
}

impl ListReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ListReason::Cloned => "cloned",
            ListReason::Lost => "lost",
            ListReason::Stolen => "stolen",
            ListReason::TroubledTerminal => "troubled-terminal",
            ListReason::Tampered => "tampered",
            ListReason::Migrated => "migrated",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "cloned" => ListReason::Cloned,
            "lost" => ListReason::Lost,
            "stolen" => ListReason::Stolen,
            "troubled-terminal" => ListReason::TroubledTerminal,
            "tampered" => ListReason::Tampered,
            "migrated" => ListReason::Migrated,
            _ => return None,
        })
    }
}

/// One entry of the center's lists, in version order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    /// A card that every terminal must refuse.
    Card {
        version: u64,
        card_id: CardId,
        reason: ListReason,
    },
    /// A troubled terminal (Fig. 10): its first time stamp TS0 and its update count t at
    /// the report; cards it wrote with a later count are refused.
    Terminal {
        version: u64,
        device_id: DeviceId,
        first_stamp: [u8; 32],
        stamp_count: u32,
    },
}

impl ListEntry {
    pub fn version(&self) -> u64 {
        match self {
            ListEntry::Card { version, .. } | ListEntry::Terminal { version, .. } => *version,
        }
    }
}

/// The entries added after a version, and the version they bring a terminal to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListDelta {
    pub version: u64,
    pub entries: Vec<ListEntry>,
}

/// Largest number of items in one usage upload.
pub const USAGE_BATCH_MAX: usize = 4096;
/// Largest number of entries in one list delta.
pub const LIST_DELTA_MAX: usize = 10_000;

/// How a payment terminal reaches the center: usage uploads and list updates.
pub trait TerminalLink {
    fn upload_usage(&mut self, upload: &UsageUpload) -> Result<UploadReceipt, CenterError>;
    fn list_delta(&mut self, terminal_id: DeviceId, since: u64) -> Result<ListDelta, CenterError>;
    /// The terminal reports its signed time stamp (Fig. 10: it calls the center at each
    /// update). The center checks it against the chain from TS0 and the terminal's key.
    /// Returns the count the center now holds.
    fn report_stamp(
        &mut self,
        terminal_id: DeviceId,
        stamp: &TerminalStamp,
    ) -> Result<u32, CenterError>;
}

impl<T: TerminalLink + ?Sized> TerminalLink for &mut T {
    fn upload_usage(&mut self, upload: &UsageUpload) -> Result<UploadReceipt, CenterError> {
        (**self).upload_usage(upload)
    }
    fn list_delta(&mut self, terminal_id: DeviceId, since: u64) -> Result<ListDelta, CenterError> {
        (**self).list_delta(terminal_id, since)
    }
    fn report_stamp(
        &mut self,
        terminal_id: DeviceId,
        stamp: &TerminalStamp,
    ) -> Result<u32, CenterError> {
        (**self).report_stamp(terminal_id, stamp)
    }
}
