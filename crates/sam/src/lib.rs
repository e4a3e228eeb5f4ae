//! Secure access modules (SAMs): the secret keys of a terminal, dispenser or server and the
//! operations that use them.
//!
//! **Architecture invariant:** a SAM never returns a private or symmetric key. Callers get
//! signatures, public keys and yes/no answers; the [`Sam`] trait has no method that could
//! leak a key, so a PKCS#11 SAM (an HSM) can implement it unchanged.
//!
//! **Architecture invariant:** a SAM signs only protocol messages it builds and checks
//! itself. There is no "sign these bytes": a purchase is signed by
//! [`Sam::sign_purchase`], which sets the terminal ID, the stamp and the sequence itself and
//! refuses an amount outside the card's offer; a request to the center by
//! [`Sam::sign_device_request`]; a password registration by [`Sam::sign_set_password`].
//!
//! **Architecture invariant:** the time-stamp chain of Figs. 10-12 advances on the SAM's own
//! clock, one step per elapsed day since installation, before anything is signed. A thief
//! who never asks the SAM to advance gains nothing: every signature carries the stamp of
//! the day the SAM's clock shows, and a clock set back never lowers the count.

#![forbid(unsafe_code)]

pub mod construction;
#[doc(hidden)]
pub mod delegate;
pub mod memcard;
mod software;
#[cfg(feature = "testing")]
pub mod testing;

pub use memcard::{MemcardCheckError, MemcardWriteOrder, ValueFormat, VerifiedMemcardState};
pub use software::SoftwareSam;

use rand_core::OsRng;
use valuecard_core::cert::{CertError, Certificate, Role, TrustAnchor, VerifiedCertificate};
use valuecard_core::crypto::{sha256, PublicKey, Signature, PUBLIC_KEY_LEN};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::Installation;
use valuecard_core::messages::credit::Password;
use valuecard_core::messages::memcard::{CardContent, FloatGrant, PlainValue, WriteRecord};
use valuecard_core::messages::purse::{
    Challenge, PurchaseCommit, TerminalStamp, TransactionKind, UsageRecord,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

/// Why a SAM refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SamError {
    #[error("the SAM is not installed yet (no certificate from the center)")]
    NotInstalled,
    #[error("the installation's certificate was refused: {0}")]
    Certificate(#[from] CertError),
    #[error("the installation certifies a different key or device")]
    ForeignCertificate,
    #[error("the installation's MAC under this device's transport key does not verify")]
    BadInstallationMac,
    #[error("the installation's sealed keys could not be opened")]
    BadSealedKeys,
    #[error("SAM image is corrupt or of an unknown version: {0}")]
    Image(&'static str),
    #[error("the SAM refuses to sign this purchase: {0}")]
    PurchaseRefused(&'static str),
    #[error("the time-stamp chain is exhausted (the SAM is too old to sign)")]
    StampExhausted,
    #[error("the terminal sequence numbers are exhausted")]
    SequenceExhausted,
    /// The token (HSM) that holds the SAM's keys failed or refused an operation; the text
    /// names the PKCS#11 function and its return value, never a key.
    #[error("the SAM's token failed: {0}")]
    Token(String),
    #[error("the SAM refuses to sign this transfer record: {0}")]
    TransferRefused(&'static str),
    #[error("the memory card's content was refused: {0}")]
    MemcardState(#[from] MemcardCheckError),
    #[error("the SAM refuses to sign this memory-card write: {0}")]
    MemcardRefused(&'static str),
    #[error("the charge of {amount} exceeds the float of {float} the center granted")]
    InsufficientFloat { float: Amount, amount: Amount },
    #[error("the SAM refuses the float grant: {0}")]
    FloatGrantRefused(&'static str),
    #[error("this SAM does not serve memory cards")]
    MemcardUnsupported,
}

/// What a terminal asks its SAM to sign at DEBIT (Fig. 6): only the values the SAM cannot
/// know itself. The SAM adds its terminal ID, its current stamp and its own sequence
/// number, and checks that the debit stays within what the card offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOrder {
    pub card_id: CardId,
    pub challenge_terminal: Challenge,
    pub challenge_card: Challenge,
    /// The card's counter before this update, from the card's verified offer.
    pub counter: u32,
    /// The card's balance before this update, from the card's verified offer.
    pub balance_before: Amount,
    /// The bound the card agreed to in INITIALIZE PURCHASE.
    pub amount_max: Amount,
    pub amount: Amount,
    pub date: Date,
    /// The lowest sequence the terminal's store will accept; the SAM never signs two
    /// purchases under one sequence, so it may answer with a higher one.
    pub sequence_floor: u32,
}

/// A purchase as the SAM built and signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPurchase {
    pub commit: PurchaseCommit,
    pub signature: Signature,
}

/// What a settlement terminal asks its SAM to sign for one card's half of a card-to-card
/// transfer (seed 000): only what the SAM cannot know itself. The SAM adds its device ID as
/// the writer, its current stamp and its own sequence number, computes the new balance and
/// counter, and signs the usage record it built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecordOrder {
    pub card_id: CardId,
    /// `TransferOut` (the source) or `TransferIn` (the destination).
    pub kind: TransactionKind,
    pub challenge_terminal: Challenge,
    /// The card's own challenge of this transfer.
    pub challenge_card: Challenge,
    /// The card's counter and balance before this update, as the card showed them.
    pub counter: u32,
    pub balance_before: Amount,
    pub amount: Amount,
    pub date: Date,
    pub sequence_floor: u32,
}

/// What every SAM offers.
pub trait Sam: Send {
    fn device_id(&self) -> DeviceId;
    fn signing_key(&self) -> PublicKey;
    fn sealing_key(&self) -> [u8; PUBLIC_KEY_LEN];
    /// The center-issued certificate, once installed (Fig. 4A).
    fn certificate(&self) -> Result<&Certificate, SamError>;
    fn anchor(&self) -> Result<&TrustAnchor, SamError>;
    /// The device's signed time stamp (Figs. 10-12), after the chain was brought up to the
    /// SAM's clock: one step per day since installation, never backwards.
    fn stamp(&mut self) -> Result<TerminalStamp, SamError>;
    /// Fig. 6: builds and signs ST(R * X * V' * IDU) with this SAM's terminal ID, current
    /// stamp and next sequence, after checking the amount against the card's offer.
    fn sign_purchase(&mut self, order: &PurchaseOrder) -> Result<SignedPurchase, SamError>;
    /// Seed 000: builds and signs one card's transfer record. Only a SAM certified as a
    /// settlement terminal signs one.
    fn sign_transfer_record(
        &mut self,
        order: &TransferRecordOrder,
    ) -> Result<UsageRecord, SamError>;
    /// Fig. 15: signs ST(R * X * Nc) for a password registration at this terminal.
    fn sign_set_password(
        &mut self,
        card_id: &CardId,
        challenge_terminal: &Challenge,
        challenge_card: &Challenge,
        password: &Password,
    ) -> Result<Signature, SamError>;
    /// Signs a request to the center (see [`request_signing_input`]).
    fn sign_device_request(
        &mut self,
        method: &str,
        path: &str,
        sequence: u64,
        body: &[u8],
    ) -> Result<Signature, SamError>;
    /// Fig. 4A with Fig. 8: checks the certificate against the anchor (it must name this
    /// device and this key, with `role`), checks the center's MAC under this device's own
    /// transport key, opens KT, KO and TS0 (sealed to this SAM's X25519 key with an
    /// ephemeral key of the center) and stores them. After this the transport key is erased.
    fn install(
        &mut self,
        installation: &Installation,
        challenge: &Challenge,
        role: Role,
        today: Date,
    ) -> Result<VerifiedCertificate, SamError>;

    /// Seed 001: checks what a memory card shows (see [`memcard::check_content`]) against
    /// this SAM's anchor on `today`, opening a sealed value with the SAM's own keys. A
    /// [`VerifiedMemcardState`] is built nowhere else.
    fn check_memcard_content(
        &self,
        content: &CardContent,
        today: Date,
    ) -> Result<VerifiedMemcardState, SamError> {
        memcard::check_content(self.anchor()?, today, content, |content, writer| {
            self.open_memcard_value(content, writer)
        })
    }

    /// Claim 4: opens the sealed value area of `content`, written by `writer`, with the
    /// writer's value key derived from the common key KO inside the SAM. The key never
    /// leaves the SAM.
    fn open_memcard_value(
        &self,
        _content: &CardContent,
        _writer: DeviceId,
    ) -> Result<PlainValue, SamError> {
        Err(SamError::MemcardUnsupported)
    }

    /// Seed 001 (claims 1-4): builds and signs one memory-card write (see
    /// [`memcard::prepare_write`]): the new value area (sealed under this machine's value
    /// key for claim 4), the counter after the write, this SAM's next sequence; for a charge
    /// the float falls by the amount in the same step.
    fn sign_memcard_write(&mut self, _order: &MemcardWriteOrder) -> Result<WriteRecord, SamError> {
        Err(SamError::MemcardUnsupported)
    }

    /// Takes a float grant of the center (area 23A of the seed) after checking it (see
    /// [`memcard::check_float_grant`]); answers the new float. Nothing else raises the float.
    fn take_float_grant(&mut self, _grant: &FloatGrant) -> Result<Amount, SamError> {
        Err(SamError::MemcardUnsupported)
    }

    /// What this charge machine may still charge onto cards.
    fn float(&self) -> Amount {
        Amount::ZERO
    }

    /// The last memory-card write sequence this SAM signed.
    fn memcard_sequence(&self) -> u32 {
        0
    }
}

// A boxed SAM is a SAM, so that a device can hold whichever kind it was given
// (`Box<dyn Sam>`: software or PKCS#11, chosen at run time).
delegate_sam!(impl[S: Sam + ?Sized] for Box<S>, AsRef::<S>::as_ref, AsMut::<S>::as_mut);

/// The context label of a signed request to the center.
pub const REQUEST_CONTEXT: &[u8] = b"valuecard/http/v1";

/// The byte string a device signs for one request to the center:
/// `"valuecard/http/v1" || method || 0x00 || path || 0x00 || sequence (8 bytes, big-endian)
/// || SHA-256(body)`.
pub fn request_signing_input(method: &str, path: &str, sequence: u64, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(REQUEST_CONTEXT.len() + method.len() + path.len() + 42);
    input.extend_from_slice(REQUEST_CONTEXT);
    input.extend_from_slice(method.as_bytes());
    input.push(0);
    input.extend_from_slice(path.as_bytes());
    input.push(0);
    input.extend_from_slice(&sequence.to_be_bytes());
    input.extend_from_slice(&sha256(body));
    input
}

/// Associated data of a sealed KT || KO || TS0 delivery: it binds the keys to one device,
/// its challenge and the root key that comes with them.
pub fn installation_keys_aad(
    device_id: &DeviceId,
    anchor: &TrustAnchor,
    challenge: &Challenge,
) -> Vec<u8> {
    let mut aad = b"valuecard/device-keys/v2".to_vec();
    aad.extend_from_slice(device_id.as_bytes());
    aad.extend_from_slice(anchor.center.as_bytes());
    aad.extend_from_slice(&anchor.public_key.to_bytes());
    aad.extend_from_slice(challenge);
    aad
}

/// What the center MACs under the device's own transport key: the whole installation and
/// the device's fresh challenge, so the SAM knows the keys come from the center that
/// holds the manufacture key, for this installation and no earlier one.
pub fn installation_mac_input(
    device_id: &DeviceId,
    challenge: &Challenge,
    certificate: &Certificate,
    anchor: &TrustAnchor,
    sealed_keys: &[u8],
) -> Vec<u8> {
    let certificate = certificate.encode();
    let mut m = Vec::with_capacity(96 + certificate.len() + sealed_keys.len());
    m.extend_from_slice(b"valuecard/device-installation/v2");
    m.extend_from_slice(device_id.as_bytes());
    m.extend_from_slice(challenge);
    m.extend_from_slice(anchor.center.as_bytes());
    m.extend_from_slice(&anchor.public_key.to_bytes());
    m.extend_from_slice(&(certificate.len() as u32).to_be_bytes());
    m.extend_from_slice(&certificate);
    m.extend_from_slice(sealed_keys);
    m
}

/// A fresh challenge from the operating system's random source.
pub fn fresh_challenge() -> Challenge {
    valuecard_core::crypto::random_array(&mut OsRng)
}
