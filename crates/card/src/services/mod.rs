//! The services application of the multi-service chip (seed 002), selected by its own AID:
//! one area per provider's service, each behind its own main and temporary key.
//!
//! - The move server's administrative SAM formats areas (FORMAT AREA, S10 and issuance) and
//!   switches their key states (SWITCH KEYS, S3, S16, a rollback), each command signed over
//!   a fresh card challenge. It never holds an area key: the keys arrive sealed to this chip
//!   by the provider's SAMs.
//! - A provider's SAM opens one area with the key of the area's current state (OPEN SERVICE,
//!   EXTERNAL AUTHENTICATE): on main keys its normal SAM reads and updates it (normal use);
//!   on temporary keys only its transfer SAM can, to export the area for a move (S7) or
//!   import a move's content (S14). Everything it reads or writes travels sealed under that
//!   session, which the relay between them cannot open.
//! - The purse's area holds no value of its own: its value is the purse's balance, and
//!   while that area is on temporary keys every command that would change the balance
//!   (purchase, load, transfer, online settlement) is refused.

mod admin;
mod session;
#[cfg(test)]
mod tests;

use rand_core::CryptoRngCore;
use valuecard_core::apdu::Command;
use valuecard_core::crypto::random_array;
use valuecard_core::limits::TLV_VALUE_MAX;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::services::{
    ins, ChannelError, PendingCardChannel, ServiceChannel, ServicesFci, CLA_SERVICES,
};
use valuecard_core::StatusWord;

use crate::image::PAYLOAD_MAX;
use crate::purse::{Effect, Volatile};
use crate::state::{PersistentState, Purse};

/// The services application's volatile state.
pub enum ServicesSession {
    /// GET CHALLENGE answered: the next FORMAT AREA or SWITCH KEYS must be signed over it.
    AdminChallenge(Challenge),
    /// OPEN SERVICE answered; the host has not proved the area key yet.
    Pending(PendingCardChannel),
    /// Both sides proved the area key: secured commands on that area are accepted.
    Open(ServiceChannel),
}

impl core::fmt::Debug for ServicesSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServicesSession::AdminChallenge(_) => f.write_str("ServicesSession::AdminChallenge"),
            ServicesSession::Pending(pending) => f
                .debug_tuple("ServicesSession::Pending")
                .field(pending)
                .finish(),
            ServicesSession::Open(open) => {
                f.debug_tuple("ServicesSession::Open").field(open).finish()
            }
        }
    }
}

/// A message that does not open ends the session (`6982`); a counter run out refuses the
/// command (`6985`).
fn channel_status(error: ChannelError) -> StatusWord {
    match error {
        ChannelError::Exhausted => StatusWord::CONDITIONS_NOT_SATISFIED,
        ChannelError::Unreadable | ChannelError::CardCryptogram | ChannelError::HostCryptogram => {
            StatusWord::SECURITY_STATUS_NOT_SATISFIED
        }
    }
}

/// The state after a services command, if the card can keep it. The service areas are one
/// field of the image, so together they must stay within one TLV value
/// (`TLV_VALUE_MAX`), and the whole image within a slot (`PAYLOAD_MAX`): a change beyond
/// either is refused as `6A84` and changes nothing. A chip therefore cannot hold
/// `CHIP_AREAS_MAX` areas all filled to `AREA_TICKETS_MAX` tickets at once; an image the
/// card could not decode again is never written.
fn storable(next: Purse) -> Result<PersistentState, StatusWord> {
    if next.services.encode().len() > TLV_VALUE_MAX {
        return Err(StatusWord::NOT_ENOUGH_MEMORY);
    }
    let state = PersistentState::Personalized(Box::new(next));
    if state.encode().len() > PAYLOAD_MAX {
        return Err(StatusWord::NOT_ENOUGH_MEMORY);
    }
    Ok(state)
}

/// SELECT of the services application: only a personalized card has it; the FCI is the
/// chip's serial number (its card ID) and its areas.
pub(crate) fn select_response(state: &PersistentState) -> Result<Effect, StatusWord> {
    let PersistentState::Personalized(purse) = state else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    Ok(Effect::reply(fci(purse).encode()))
}

fn fci(purse: &Purse) -> ServicesFci {
    ServicesFci {
        card_id: purse.keys.card_id,
        areas: purse
            .services
            .areas
            .iter()
            .map(|area| area.summary())
            .collect(),
    }
}

/// One command to the selected services application. The session is taken out of volatile
/// memory and put back only by a command that succeeds.
pub(crate) fn handle(
    command: &Command,
    state: &PersistentState,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let session = volatile.services.take();
    let PersistentState::Personalized(purse) = state else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    if command.cla == valuecard_core::messages::purse::CLA_ISO {
        if command.ins != ins::GET_CHALLENGE {
            return Err(StatusWord::INS_NOT_SUPPORTED);
        }
        if command.p1 != 0 || command.p2 != 0 {
            return Err(StatusWord::INCORRECT_P1_P2);
        }
        if !command.data.is_empty() {
            return Err(StatusWord::WRONG_LENGTH);
        }
        let challenge: Challenge = random_array(rng);
        volatile.services = Some(ServicesSession::AdminChallenge(challenge));
        return Ok(Effect::reply(challenge.to_vec()));
    }
    if command.cla != CLA_SERVICES {
        return Err(StatusWord::CLA_NOT_SUPPORTED);
    }
    if command.p1 != 0 || command.p2 != 0 {
        return Err(StatusWord::INCORRECT_P1_P2);
    }
    match command.ins {
        ins::FORMAT_AREA | ins::SWITCH_KEYS => {
            let Some(ServicesSession::AdminChallenge(challenge)) = session else {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            };
            if command.ins == ins::FORMAT_AREA {
                admin::format_area(command, purse, &challenge)
            } else {
                admin::switch_keys(command, purse, &challenge)
            }
        }
        ins::OPEN_SERVICE => session::open_service(command, purse, volatile, rng),
        ins::EXTERNAL_AUTHENTICATE => {
            let Some(ServicesSession::Pending(pending)) = session else {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            };
            session::external_authenticate(command, pending, purse, volatile)
        }
        ins::READ_AREA | ins::UPDATE_AREA | ins::EXPORT_AREA | ins::IMPORT_AREA => {
            let Some(ServicesSession::Open(mut channel)) = session else {
                return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
            };
            let effect = session::secured(command, purse, &mut channel)?;
            volatile.services = Some(ServicesSession::Open(channel));
            Ok(effect)
        }
        _ => Err(StatusWord::INS_NOT_SUPPORTED),
    }
}
