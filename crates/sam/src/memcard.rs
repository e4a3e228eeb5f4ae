//! The SAM side of the memory card (seed 001): checking what a card shows, and building the
//! write a charge or payment machine signs.
//!
//! Everything here is pure: it takes the SAM's state (role, float, sequence) as values and
//! answers what the SAM must do, so any [`crate::Sam`] implementation (the software SAM, a
//! PKCS#11 one) adds only its own signature and, for claim 4, its own sealing. It never
//! signs and never holds a key.
//!
//! A memory card cannot sign, so the value on it is only as good as the writing machine's
//! signature over (card ID, counter, value area) and that machine's certificate. A checked
//! state is a [`VerifiedMemcardState`], which only [`check_content`] builds; a write is
//! built from one, so a machine cannot sign a write over a state nobody checked.

use valuecard_core::cert::{CertError, Role, TrustAnchor};
use valuecard_core::crypto::Signature;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::memcard::{
    state_signing_input, CardContent, PlainValue, SignedState, ValueArea, WriteKind, WriteRecord,
    COUNTER_START,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::SamError;

/// The most float a charge machine's SAM holds at once: one card's worth of the largest
/// balance. A grant that would raise the float above it is refused whole.
pub const FLOAT_MAX: Amount = Amount::MAX;

/// How far above the card's counter [`check_content`] looks for the counter a broken
/// signature was made at, to tell a restored older image from any other bad signature.
const STALE_IMAGE_LOOKBACK: u32 = 4;

/// Why a memory card's content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemcardCheckError {
    #[error("the card holds value but no writer's certificate")]
    NoCertificate,
    #[error(
        "the writer's certificate has role {0:?}; only charge and payment machines write value"
    )]
    WriterRole(Role),
    #[error("the writer's certificate was refused: {0}")]
    Certificate(CertError),
    #[error("the signature does not verify over this card's ID, counter and value area")]
    BadSignature,
    /// The signature verifies at a higher counter than the card shows: an older image was
    /// written back (each value write lowers the counter), claim 1.
    #[error("an older image was written back: signed at counter {signed_counter}, the card shows {card_counter}")]
    StaleImage {
        signed_counter: u32,
        card_counter: u32,
    },
    #[error("the sealed value does not open for this card, counter and writer")]
    SealBroken,
    #[error("the value area is blank but the card is not a new card (counter {counter})")]
    NotBlank { counter: u32 },
}

/// A card state a SAM checked: a new card, or a value signed by a certified machine.
/// Only [`check_content`] (through [`crate::Sam::check_memcard_content`]) builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMemcardState {
    card_id: CardId,
    counter: u32,
    kind: VerifiedKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum VerifiedKind {
    Blank,
    Signed {
        state: SignedState,
        value: PlainValue,
        writer_role: Role,
    },
}

impl VerifiedMemcardState {
    pub fn card_id(&self) -> CardId {
        self.card_id
    }

    /// The counter the card shows now.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The card's value: zero for a new card.
    pub fn balance(&self) -> Amount {
        match &self.kind {
            VerifiedKind::Blank => Amount::ZERO,
            VerifiedKind::Signed { value, .. } => value.amount,
        }
    }

    /// The date of the last write, if any.
    pub fn date(&self) -> Option<Date> {
        match &self.kind {
            VerifiedKind::Blank => None,
            VerifiedKind::Signed { value, .. } => Some(value.date),
        }
    }

    /// The machine that wrote the value, if any.
    pub fn writer(&self) -> Option<DeviceId> {
        self.signed_state().map(|state| state.writer)
    }

    pub fn writer_role(&self) -> Option<Role> {
        match &self.kind {
            VerifiedKind::Blank => None,
            VerifiedKind::Signed { writer_role, .. } => Some(*writer_role),
        }
    }

    /// The signed state, as a record's `previous`; `None` for a new card.
    pub fn signed_state(&self) -> Option<&SignedState> {
        match &self.kind {
            VerifiedKind::Blank => None,
            VerifiedKind::Signed { state, .. } => Some(state),
        }
    }
}

/// Checks what a memory card shows: a new card (counter at its start, blank area, nothing
/// else written), or a value whose writer's certificate chains to `anchor` with a machine
/// role and whose signature verifies over (card ID, counter, value area). `open` opens a
/// sealed value (claim 4) with the writer's value key, which only a SAM holds.
///
/// Whether the writer is on the center's list is the terminal's check: it holds the lists.
pub fn check_content(
    anchor: &TrustAnchor,
    today: Date,
    content: &CardContent,
    open: impl FnOnce(&CardContent, DeviceId) -> Result<PlainValue, SamError>,
) -> Result<VerifiedMemcardState, SamError> {
    let refused = |error: MemcardCheckError| SamError::MemcardState(error);
    if content.value_area == ValueArea::Blank {
        if content.counter != COUNTER_START
            || content.signature.0 != [0; 64]
            || content.certificate.is_some()
        {
            return Err(refused(MemcardCheckError::NotBlank {
                counter: content.counter,
            }));
        }
        return Ok(VerifiedMemcardState {
            card_id: content.card_id,
            counter: content.counter,
            kind: VerifiedKind::Blank,
        });
    }
    let certificate = content
        .certificate
        .as_ref()
        .ok_or(refused(MemcardCheckError::NoCertificate))?;
    let role = certificate.body.role;
    if !matches!(role, Role::ChargeMachine | Role::PaymentMachine) {
        return Err(refused(MemcardCheckError::WriterRole(role)));
    }
    let verified = anchor
        .verify(core::slice::from_ref(certificate), role, today)
        .map_err(|error| refused(MemcardCheckError::Certificate(error)))?;
    let key = verified.signing_key();
    if key
        .verify(&content.signing_input(), &content.signature)
        .is_err()
    {
        let area = content.value_area.encode();
        // Only to name the refusal: a signature that holds at a higher counter is an older
        // image written back.
        for ahead in 1..=STALE_IMAGE_LOOKBACK {
            let Some(counter) = content.counter.checked_add(ahead) else {
                break;
            };
            let input = state_signing_input(&content.card_id, counter, &area);
            if key.verify(&input, &content.signature).is_ok() {
                return Err(refused(MemcardCheckError::StaleImage {
                    signed_counter: counter,
                    card_counter: content.counter,
                }));
            }
        }
        return Err(refused(MemcardCheckError::BadSignature));
    }
    let writer = verified.subject();
    let value = match &content.value_area {
        ValueArea::Plain(value) => *value,
        ValueArea::Sealed { .. } => open(content, writer)?,
        ValueArea::Blank => return Err(refused(MemcardCheckError::BadSignature)),
    };
    Ok(VerifiedMemcardState {
        card_id: content.card_id,
        counter: content.counter,
        kind: VerifiedKind::Signed {
            state: SignedState {
                card_id: content.card_id,
                counter: content.counter,
                value_area: content.value_area.clone(),
                writer,
                signature: content.signature,
            },
            value,
            writer_role: role,
        },
    })
}

/// How the new value is written: in the clear (claims 1-3) or sealed (claim 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Plain,
    Sealed,
}

/// What a machine asks its SAM to sign for one value write: only what the SAM cannot know
/// itself. The SAM computes the new balance and counter, lowers its float for a charge,
/// takes its next sequence, and signs the state it built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcardWriteOrder {
    pub kind: WriteKind,
    /// The card as the SAM checked it.
    pub card: VerifiedMemcardState,
    pub amount: Amount,
    pub date: Date,
    pub format: ValueFormat,
    /// The lowest sequence the machine's log will accept (as for purchases).
    pub sequence_floor: u32,
}

/// The SAM-held state a memory-card write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineState {
    pub role: Role,
    pub float: Amount,
    pub last_sequence: u32,
}

/// A write the SAM agreed to, before its value area is made (plain here, sealed by the SAM)
/// and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedWrite {
    pub kind: WriteKind,
    pub sequence: u32,
    pub date: Date,
    pub card_id: CardId,
    /// The counter the card shows after the value write: the counter read, minus one.
    pub counter_after: u32,
    pub balance_before: Amount,
    pub new_value: PlainValue,
    pub format: ValueFormat,
    pub previous: Option<SignedState>,
    /// The SAM's state once this write is signed.
    pub state_after: MachineState,
}

/// Decides whether a SAM in `state` may sign `order`, and builds the write. Refuses: a
/// write of the wrong kind for the SAM's role (only a charge machine charges, only a
/// payment machine pays), a zero amount, a charge above the float or above the largest
/// balance, a payment above the card's balance, a card whose counter is exhausted.
pub fn prepare_write(
    order: &MemcardWriteOrder,
    state: MachineState,
) -> Result<PreparedWrite, SamError> {
    let refused = SamError::MemcardRefused;
    match (order.kind, state.role) {
        (WriteKind::Charge, Role::ChargeMachine) | (WriteKind::Payment, Role::PaymentMachine) => {}
        (WriteKind::Charge, _) => return Err(refused("only a charge machine charges")),
        (WriteKind::Payment, _) => return Err(refused("only a payment machine takes payments")),
    }
    if order.amount == Amount::ZERO {
        return Err(refused("the amount must be positive"));
    }
    let balance_before = order.card.balance();
    let mut float = state.float;
    let balance_after = match order.kind {
        WriteKind::Charge => {
            float = float
                .checked_sub(order.amount)
                .map_err(|_| SamError::InsufficientFloat {
                    float: state.float,
                    amount: order.amount,
                })?;
            balance_before
                .checked_add(order.amount)
                .map_err(|_| refused("the card's balance would exceed its limit"))?
        }
        WriteKind::Payment => balance_before
            .checked_sub(order.amount)
            .map_err(|_| refused("the payment exceeds the card's balance"))?,
    };
    if order.kind == WriteKind::Payment && order.card.signed_state().is_none() {
        return Err(refused("a new card holds nothing to pay with"));
    }
    let counter_after = order
        .card
        .counter()
        .checked_sub(1)
        .filter(|&counter| counter > 0)
        .ok_or(refused("the card's counter is exhausted"))?;
    let sequence = state
        .last_sequence
        .checked_add(1)
        .ok_or(SamError::SequenceExhausted)?
        .max(order.sequence_floor);
    Ok(PreparedWrite {
        kind: order.kind,
        sequence,
        date: order.date,
        card_id: order.card.card_id(),
        counter_after,
        balance_before,
        new_value: PlainValue {
            date: order.date,
            amount: balance_after,
        },
        format: order.format,
        previous: order.card.signed_state().cloned(),
        state_after: MachineState {
            role: state.role,
            float,
            last_sequence: sequence,
        },
    })
}

impl PreparedWrite {
    /// The value area of a clear write.
    pub fn plain_area(&self) -> ValueArea {
        ValueArea::Plain(self.new_value)
    }

    /// What the SAM signs for `area` (the plain area, or the one it sealed).
    pub fn signing_input(&self, area: &ValueArea) -> Vec<u8> {
        state_signing_input(&self.card_id, self.counter_after, &area.encode())
    }

    /// The record of this write, once the SAM made its value area and signed it.
    pub fn finish(self, writer: DeviceId, area: ValueArea, signature: Signature) -> WriteRecord {
        WriteRecord {
            kind: self.kind,
            sequence: self.sequence,
            date: self.date,
            balance_before: self.balance_before,
            balance_after: self.new_value.amount,
            previous: self.previous,
            written: SignedState {
                card_id: self.card_id,
                counter: self.counter_after,
                value_area: area,
                writer,
                signature,
            },
        }
    }
}

/// The float after taking `grant`, or why the SAM refuses it: not signed by the anchor's
/// root key, for another machine, not newer than the last grant taken, or raising the float
/// above [`FLOAT_MAX`]. Returns the new float and the grant number to remember.
pub fn check_float_grant(
    anchor: &TrustAnchor,
    machine: DeviceId,
    role: Role,
    float: Amount,
    last_grant: u32,
    grant: &valuecard_core::messages::memcard::FloatGrant,
) -> Result<Amount, SamError> {
    let refused = SamError::FloatGrantRefused;
    if role != Role::ChargeMachine {
        return Err(refused("only a charge machine holds float"));
    }
    anchor
        .public_key
        .verify(&grant.signed_message(), &grant.signature)
        .map_err(|_| refused("the grant is not signed by the center"))?;
    if grant.machine != machine {
        return Err(refused("the grant is for another machine"));
    }
    if grant.grant_number <= last_grant {
        return Err(refused(
            "the grant was taken already or is older than one taken",
        ));
    }
    float
        .checked_add(grant.amount)
        .ok()
        .filter(|total| *total <= FLOAT_MAX)
        .ok_or(refused("the float would exceed its limit"))
}

#[cfg(test)]
mod tests;
