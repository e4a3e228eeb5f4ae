//! The common-key application of seed 004 on the card: its own AID, the key KC a certified
//! security server installs, mutual authentication and the session key KSES (ST11), the
//! balance readout BRC → BI (ST12-ST13), the settlement processing request SPC applied once
//! with its log entry (ST16-ST17) and the completion notice PCN (ST18), the value update of
//! an online charge (Figs. 24-32), the preview of the second embodiment (ST109) and the
//! recovery of a lost PCN. It spends the purse's one balance: an online payment and a
//! terminal purchase lower the same value and extend the same chain of usage records.
//!
//! A session is volatile: SELECT, a reset, INITIALIZE UPDATE or any refused online command
//! ends it, and a message sealed under it can never open in another one. The security server
//! keeps at most one settlement of a card unresolved, so the card's last completion is the
//! one GET COMPLETION can be asked about.

use rand_core::CryptoRngCore;
use valuecard_core::apdu::Command;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{constant_time_eq, random_array, AesKey};
use valuecard_core::messages::online::{
    ins, BalanceInfo, BalanceReadout, BalanceUpdate, Completion, CompletionQuery, CompletionStatus,
    ExternalAuthenticate, InitializeUpdate, InitializeUpdateResponse, KeyInstallation, OnlineFci,
    OnlineRecord, SecureSession, SessionError, SessionKeys, SettlementPreview,
};
use valuecard_core::messages::purse::{Challenge, TransactionKind};
use valuecard_core::StatusWord;

use crate::purse::{apply_update, cert_status, wrong_data, Effect, Volatile};
use crate::state::{OnlineApp, PersistentState, Purse};

#[cfg(test)]
mod tests;

/// An online session in volatile memory.
pub enum OnlineSession {
    /// INITIALIZE UPDATE answered; the server has not proved KC yet.
    Initialized {
        keys: SessionKeys,
        host_challenge: Challenge,
        card_challenge: Challenge,
    },
    /// Both sides proved KC: secured commands are accepted.
    Open(SecureSession),
}

impl core::fmt::Debug for OnlineSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OnlineSession::Initialized { .. } => f.write_str("OnlineSession::Initialized"),
            OnlineSession::Open(open) => f.debug_tuple("OnlineSession::Open").field(open).finish(),
        }
    }
}

/// A message that does not open ends the session (`6982`); a counter run out refuses the
/// command (`6985`).
fn session_status(error: SessionError) -> StatusWord {
    match error {
        SessionError::Exhausted => StatusWord::CONDITIONS_NOT_SATISFIED,
        SessionError::Unreadable | SessionError::CardCryptogram => {
            StatusWord::SECURITY_STATUS_NOT_SATISFIED
        }
    }
}

/// Whether `instruction` belongs to the online application.
pub fn is_online_instruction(instruction: u8) -> bool {
    matches!(
        instruction,
        ins::INSTALL_KEY
            | ins::INITIALIZE_UPDATE
            | ins::EXTERNAL_AUTHENTICATE
            | ins::READ_BALANCE
            | ins::PREVIEW
            | ins::SETTLE
            | ins::CHARGE
            | ins::GET_COMPLETION
    )
}

/// SELECT of the online application: only a personalized card has it.
pub(crate) fn select_response(state: &PersistentState) -> Result<Effect, StatusWord> {
    let PersistentState::Personalized(purse) = state else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    Ok(Effect::reply(
        OnlineFci {
            card_id: purse.keys.card_id,
            key_version: purse.online.as_ref().map(|online| online.key_version),
        }
        .encode(),
    ))
}

/// One command to the selected online application. The session is taken out of volatile
/// memory and put back only by a command that succeeds.
pub(crate) fn handle(
    command: &Command,
    state: &PersistentState,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let session = volatile.online.take();
    let PersistentState::Personalized(purse) = state else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    if !is_online_instruction(command.ins) {
        return Err(StatusWord::INS_NOT_SUPPORTED);
    }
    let p1_allowed = if command.ins == ins::PREVIEW { 1 } else { 0 };
    if command.p1 > p1_allowed || command.p2 != 0 {
        return Err(StatusWord::INCORRECT_P1_P2);
    }
    match command.ins {
        ins::INSTALL_KEY => install_key(command, purse),
        ins::INITIALIZE_UPDATE => initialize_update(command, purse, volatile, rng),
        ins::EXTERNAL_AUTHENTICATE => external_authenticate(command, session, volatile),
        _ => {
            let Some(OnlineSession::Open(mut open)) = session else {
                return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
            };
            let online = purse
                .online
                .as_ref()
                .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
            let effect = match command.ins {
                ins::READ_BALANCE => read_balance(command, purse, online, &mut open)?,
                ins::PREVIEW => preview(command, purse, &open)?,
                ins::SETTLE | ins::CHARGE => apply(command, purse, online, &mut open)?,
                _ => get_completion(command, purse, online, &mut open)?,
            };
            volatile.online = Some(OnlineSession::Open(open));
            Ok(effect)
        }
    }
}

/// INSTALL KEY: KC from a security server the center certified, sealed to this card and
/// signed; only a newer version replaces the key the card holds.
fn install_key(command: &Command, purse: &Purse) -> Result<Effect, StatusWord> {
    if purse.blocked {
        return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
    }
    let request = KeyInstallation::decode(&command.data).map_err(wrong_data)?;
    let server = purse
        .anchor
        .verify_unexpired(
            core::slice::from_ref(&request.server_certificate),
            Role::OnlineSettlement,
            purse.known_date,
        )
        .map_err(cert_status)?;
    let card_id = purse.keys.card_id;
    server
        .signing_key()
        .verify(
            &KeyInstallation::signed_message(&card_id, request.key_version, &request.sealed_key),
            &request.signature,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    if purse
        .online
        .as_ref()
        .is_some_and(|online| request.key_version <= online.key_version)
    {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let key_bytes = purse
        .keys
        .sealing
        .open(
            &KeyInstallation::seal_context(&card_id, request.key_version),
            &request.sealed_key,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let card_key = AesKey::from_slice(&key_bytes).map_err(wrong_data)?;
    drop(key_bytes);
    let mut next = purse.clone();
    next.online = Some(OnlineApp {
        card_key,
        key_version: request.key_version,
        server_certificate: request.server_certificate,
        last: purse.online.as_ref().and_then(|online| online.last.clone()),
    });
    Ok(Effect::commit(
        Vec::new(),
        PersistentState::Personalized(Box::new(next)),
    ))
}

/// ST11, the card's half of the first exchange: draw C, derive KSES, prove KC.
fn initialize_update(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let online = purse
        .online
        .as_ref()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let request = InitializeUpdate::decode(&command.data).map_err(wrong_data)?;
    let card_challenge: Challenge = random_array(rng);
    let keys = SessionKeys::derive(
        &online.card_key,
        &purse.keys.card_id,
        &request.host_challenge,
        &card_challenge,
    );
    let response = InitializeUpdateResponse {
        card_challenge,
        card_cryptogram: keys.card_cryptogram(),
        key_version: online.key_version,
    };
    volatile.online = Some(OnlineSession::Initialized {
        keys,
        host_challenge: request.host_challenge,
        card_challenge,
    });
    Ok(Effect::reply(response.encode()))
}

/// ST11, second exchange: the server proves KC; the session opens.
fn external_authenticate(
    command: &Command,
    session: Option<OnlineSession>,
    volatile: &mut Volatile,
) -> Result<Effect, StatusWord> {
    let Some(OnlineSession::Initialized {
        keys,
        host_challenge,
        card_challenge,
    }) = session
    else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    let request = ExternalAuthenticate::decode(&command.data).map_err(wrong_data)?;
    if !constant_time_eq(&keys.host_cryptogram(), &request.host_cryptogram) {
        return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    }
    volatile.online = Some(OnlineSession::Open(SecureSession::for_card(
        keys,
        host_challenge,
        card_challenge,
    )));
    Ok(Effect::reply(Vec::new()))
}

/// ST13: BRC in, BI out.
fn read_balance(
    command: &Command,
    purse: &Purse,
    online: &OnlineApp,
    open: &mut SecureSession,
) -> Result<Effect, StatusWord> {
    let request = BalanceReadout::decode(
        &open
            .open(ins::READ_BALANCE, &command.data)
            .map_err(session_status)?,
    )
    .map_err(wrong_data)?;
    let info = BalanceInfo {
        card_id: purse.keys.card_id,
        settlement_id: request.settlement_id,
        balance: purse.balance,
        spendable: purse.spendable(),
        counter: purse.counter,
        date: purse.known_date,
        last_settlement: online.last.as_ref().map(|last| last.settlement_id),
        last_usage: purse.last_usage.clone(),
    };
    Ok(Effect::reply(
        open.seal(ins::READ_BALANCE, &info.encode())
            .map_err(session_status)?,
    ))
}

/// ST109: opens the next SPC (P1 = 0) or value update (P1 = 1) for the holder to read,
/// without consuming it: the same sealed message then goes to SETTLE or CHARGE.
fn preview(command: &Command, purse: &Purse, open: &SecureSession) -> Result<Effect, StatusWord> {
    let (instruction, kind) = if command.p1 == 0 {
        (ins::SETTLE, TransactionKind::OnlinePayment)
    } else {
        (ins::CHARGE, TransactionKind::OnlineCharge)
    };
    let update = BalanceUpdate::decode(
        &open
            .peek(instruction, &command.data)
            .map_err(session_status)?,
    )
    .map_err(wrong_data)?;
    if update.kind != kind {
        return Err(StatusWord::WRONG_DATA);
    }
    Ok(Effect::reply(
        SettlementPreview {
            settlement_id: update.settlement_id,
            kind: update.kind,
            amount: update.amount,
            balance_before: purse.balance,
            balance_after: update.balance_after,
            party: update.party,
            date: update.date,
        }
        .encode(),
    ))
}

/// ST17 (SETTLE) or the value update of a charge (CHARGE): checked against the card's own
/// counter and balance, then the new balance, the usage record, the log entry and the
/// completion commit in one write before the PCN is answered.
fn apply(
    command: &Command,
    purse: &Purse,
    online: &OnlineApp,
    open: &mut SecureSession,
) -> Result<Effect, StatusWord> {
    let update = BalanceUpdate::decode(
        &open
            .open(command.ins, &command.data)
            .map_err(session_status)?,
    )
    .map_err(wrong_data)?;
    let expected_kind = if command.ins == ins::SETTLE {
        TransactionKind::OnlinePayment
    } else {
        TransactionKind::OnlineCharge
    };
    if update.kind != expected_kind || update.writer != online.server_certificate.subject() {
        return Err(StatusWord::WRONG_DATA);
    }
    if purse.blocked {
        return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
    }
    // Bound to the counter BI reported: an update prepared for another state of the card,
    // or already applied, does not apply.
    if update.counter != purse.counter {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let balance_after = if update.kind == TransactionKind::OnlinePayment {
        if update.amount > purse.spendable() {
            return Err(StatusWord::INSUFFICIENT_FUNDS);
        }
        purse.balance.checked_sub(update.amount)
    } else {
        purse.balance.checked_add(update.amount)
    }
    .map_err(|_| StatusWord::NOT_ENOUGH_MEMORY)?;
    if balance_after != update.balance_after {
        return Err(StatusWord::WRONG_DATA);
    }
    let counter = purse
        .counter
        .checked_add(1)
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let record = OnlineRecord {
        kind: update.kind,
        card_id: purse.keys.card_id,
        writer: update.writer,
        challenge_host: *open.host_challenge(),
        challenge_card: *open.card_challenge(),
        counter,
        amount: update.amount,
        balance_after,
        writer_sequence: update.writer_sequence,
        date: update.date,
    }
    .usage_record(update.signature);
    let mut next = purse.clone();
    apply_update(&mut next, record, Some(online.server_certificate.clone()))?;
    // The log names the store paid; the record names the server that wrote it.
    if let Some(entry) = next.log.front_mut() {
        entry.party = update.party;
    }
    let completion = Completion {
        settlement_id: update.settlement_id,
        kind: update.kind,
        amount: update.amount,
        counter,
        balance_after,
    };
    if let Some(next_online) = next.online.as_mut() {
        next_online.last = Some(completion.clone());
    }
    let answer = open
        .seal(command.ins, &completion.encode())
        .map_err(session_status)?;
    Ok(Effect::commit(
        answer,
        PersistentState::Personalized(Box::new(next)),
    ))
}

/// Recovers a lost PCN: the completion if the card applied that settlement last, and its
/// counter and balance now.
fn get_completion(
    command: &Command,
    purse: &Purse,
    online: &OnlineApp,
    open: &mut SecureSession,
) -> Result<Effect, StatusWord> {
    let query = CompletionQuery::decode(
        &open
            .open(ins::GET_COMPLETION, &command.data)
            .map_err(session_status)?,
    )
    .map_err(wrong_data)?;
    let status = CompletionStatus {
        settlement_id: query.settlement_id,
        applied: online
            .last
            .clone()
            .filter(|last| last.settlement_id == query.settlement_id),
        counter: purse.counter,
        balance: purse.balance,
    };
    Ok(Effect::reply(
        open.seal(ins::GET_COMPLETION, &status.encode())
            .map_err(session_status)?,
    ))
}
