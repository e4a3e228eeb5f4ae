//! The transfer application of the purse (seed 000): card information, the transfer-key
//! update in its three forms (`keys.rs`: claims 2, 4, 6, 7, 9), and value transfer between
//! two cards with its pending-transfer log (`value.rs`). Handlers are pure functions from
//! (state, command) to an [`Effect`], like the purse's; the runtime commits before it
//! answers.

use rand_core::CryptoRngCore;
use valuecard_core::apdu::Command;
use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::PublicKey;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::transfer::{
    complete_p1, ins, KeyUpdateMode, KeyUpdateRandom, TransferInfo,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;

use crate::purse::{cert_status, wrong_data, Effect, Volatile};
use crate::state::{PersistentState, Purse};
use crate::transfer_state::KeyRefusal;

mod keys;
mod value;

/// A key update between UPDATE PERMISSION and UPDATE TRANSFER KEY (volatile).
#[derive(Debug, Clone)]
pub struct KeyUpdateSession {
    mode: KeyUpdateMode,
    random: KeyUpdateRandom,
    /// The peer card's ID and signing key (public-key form: from its certificate).
    peer: Option<(CardId, PublicKey)>,
}

/// A transfer in between INITIALIZE TRANSFER IN and TRANSFER IN (volatile).
#[derive(Debug, Clone)]
pub struct TransferInSession {
    terminal_certificate: Certificate,
    terminal_id: DeviceId,
    terminal_key: PublicKey,
    challenge_terminal: Challenge,
    source: CardId,
    amount: Amount,
    date: Date,
    challenge_destination: Challenge,
    counter: u32,
    key_id: u32,
}

/// The transfer sessions, taken out of volatile memory for the one command that may use
/// them: each lives exactly until the card's next command.
#[derive(Debug, Default)]
pub struct TransferSessions {
    pub key_update: Option<KeyUpdateSession>,
    pub transfer_in: Option<TransferInSession>,
}

pub fn is_transfer_instruction(instruction: u8) -> bool {
    matches!(
        instruction,
        ins::GET_TRANSFER_INFO
            | ins::UPDATE_PERMISSION
            | ins::GET_TRANSFER_KEY
            | ins::UPDATE_TRANSFER_KEY
            | ins::INITIALIZE_TRANSFER_IN
            | ins::TRANSFER_OUT
            | ins::TRANSFER_IN
            | ins::TRANSFER_COMPLETE
            | ins::TRANSFER_STATUS
    )
}

/// Runs one transfer command (after SELECT and CLA checks).
pub fn handle(
    command: &Command,
    state: &PersistentState,
    volatile: &mut Volatile,
    sessions: TransferSessions,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let PersistentState::Personalized(purse) = state else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    if command.p2 != 0 {
        return Err(StatusWord::INCORRECT_P1_P2);
    }
    let mode = match command.ins {
        ins::UPDATE_PERMISSION | ins::GET_TRANSFER_KEY | ins::UPDATE_TRANSFER_KEY => {
            Some(KeyUpdateMode::from_p1(command.p1).ok_or(StatusWord::INCORRECT_P1_P2)?)
        }
        // TRANSFER COMPLETE settles against the destination's proof (00) or the center's
        // release (01).
        ins::TRANSFER_COMPLETE
            if matches!(command.p1, complete_p1::PROOF | complete_p1::RELEASE) =>
        {
            None
        }
        _ if command.p1 != 0 => return Err(StatusWord::INCORRECT_P1_P2),
        _ => None,
    };
    if command.ins == ins::GET_TRANSFER_INFO {
        if !command.data.is_empty() {
            return Err(StatusWord::WRONG_LENGTH);
        }
        return Ok(Effect::reply(transfer_info(purse).encode()));
    }
    // Everything else changes keys or value: a blocked card does neither. TRANSFER STATUS
    // changes nothing and only tells the truth about receipts the card already holds, so a
    // blocked destination still lets its source settle a pending transfer.
    if purse.blocked && command.ins != ins::TRANSFER_STATUS {
        return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
    }
    let TransferSessions {
        key_update,
        transfer_in,
    } = sessions;
    match (command.ins, mode) {
        (ins::UPDATE_PERMISSION, Some(mode)) => {
            keys::update_permission(command, mode, purse, volatile, rng)
        }
        (ins::GET_TRANSFER_KEY, Some(mode)) => keys::get_transfer_key(command, mode, purse, rng),
        (ins::UPDATE_TRANSFER_KEY, Some(mode)) => keys::update_transfer_key(
            command,
            mode,
            purse,
            key_update.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
        ),
        (ins::INITIALIZE_TRANSFER_IN, _) => {
            value::initialize_transfer_in(command, purse, volatile, rng)
        }
        (ins::TRANSFER_OUT, _) => value::transfer_out(command, purse, rng),
        (ins::TRANSFER_IN, _) => value::transfer_in(
            command,
            purse,
            transfer_in.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
        ),
        (ins::TRANSFER_STATUS, _) => value::transfer_status(command, purse),
        (ins::TRANSFER_COMPLETE, _) if command.p1 == complete_p1::RELEASE => {
            value::transfer_release(command, purse)
        }
        (ins::TRANSFER_COMPLETE, _) => value::transfer_complete(command, purse),
        _ => Err(StatusWord::INS_NOT_SUPPORTED),
    }
}

/// The card information of the SELECT answer.
pub fn summary(purse: &Purse) -> valuecard_core::messages::transfer::TransferSummary {
    valuecard_core::messages::transfer::TransferSummary {
        transfer_key_id: purse.transfer.selected,
        update_key_id: purse.transfer.update_key_id(),
        key_limit: purse.transfer.limit,
        pending: purse.transfer.sent.is_some(),
    }
}

fn transfer_info(purse: &Purse) -> TransferInfo {
    TransferInfo {
        card_id: purse.keys.card_id,
        balance: purse.balance,
        counter: purse.counter,
        transfer_key_id: purse.transfer.selected,
        key_limit: purse.transfer.limit,
        held_key_ids: purse.transfer.held_ids(),
        update_key_id: purse.transfer.update_key_id(),
        certificate: purse.certificate.clone(),
        pending: purse
            .transfer
            .sent
            .as_ref()
            .map(|sent| sent.pending.clone()),
    }
}

/// Status words of a refused key: not newer than the current one, or above the limit.
fn key_refusal(refusal: KeyRefusal) -> StatusWord {
    match refusal {
        KeyRefusal::NotNewer => StatusWord::CONDITIONS_NOT_SATISFIED,
        KeyRefusal::AboveLimit => StatusWord::REFERENCE_DATA_NOT_USABLE,
    }
}

/// A peer card's certificate, checked under the card's root at the card's known date.
fn verify_peer_card(
    purse: &Purse,
    certificate: &Certificate,
) -> Result<(CardId, PublicKey, [u8; 32]), StatusWord> {
    let verified = purse
        .anchor
        .verify_unexpired(
            core::slice::from_ref(certificate),
            Role::Card,
            purse.known_date,
        )
        .map_err(cert_status)?;
    let peer = CardId(verified.subject().0);
    if peer == purse.keys.card_id {
        return Err(StatusWord::WRONG_DATA);
    }
    let sealing = *verified.sealing_key().ok_or(StatusWord::WRONG_DATA)?;
    Ok((peer, *verified.signing_key(), sealing))
}

fn with_purse(purse: Purse) -> PersistentState {
    PersistentState::Personalized(Box::new(purse))
}
