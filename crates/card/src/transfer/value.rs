//! Value transfer on the card (claims 1, 3, 5, 8 with the settlement terminal of claims
//! 10-16): INITIALIZE TRANSFER IN and TRANSFER IN on the destination, TRANSFER OUT and
//! TRANSFER COMPLETE on the source, TRANSFER STATUS on the destination for recovery.
//!
//! The recovery rule (docs/protocols.md § 13): the source reserves the amount in its
//! pending-transfer log at TRANSFER OUT and changes no balance; the destination adds the
//! value and keeps a receipt at TRANSFER IN; the source debits only against the
//! destination's proof of receipt, and drops the reservation only against its proof of
//! non-receipt. Either proof can be had again from the destination at any later session.
//! When the destination will never come back, the center's signed release takes the place
//! of the proof of non-receipt (TRANSFER COMPLETE, P1 = 01).

use valuecard_core::crypto::random_array;
use valuecard_core::messages::purse::{TransactionKind, UpdateConfirmation, UsageRecord};
use valuecard_core::messages::transfer::{
    InitializeTransferIn, PendingTransfer, ProofStatus, ProofSubject, TransferBinding,
    TransferComplete, TransferIn, TransferInOffer, TransferOut, TransferOutOffer, TransferProof,
    TransferRelease, TransferStatusQuery, ValueMessage,
};

use super::*;
use crate::purse::apply_update;
use crate::transfer_state::{ReceivedTransfer, SentTransfer};

/// Destination, first step: check the settlement terminal's certificate and that the amount
/// fits under the ceiling, draw a challenge, and show the state the terminal will sign.
pub(super) fn initialize_transfer_in(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = InitializeTransferIn::decode(&command.data).map_err(wrong_data)?;
    if request.amount == Amount::ZERO || request.source == purse.keys.card_id {
        return Err(StatusWord::WRONG_DATA);
    }
    let key_id = purse
        .transfer
        .selected_key()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?
        .id;
    if purse.balance.checked_add(request.amount).is_err() {
        return Err(StatusWord::NOT_ENOUGH_MEMORY);
    }
    let terminal = purse
        .anchor
        .verify_unexpired(
            core::slice::from_ref(&request.terminal_certificate),
            Role::SettlementTerminal,
            purse.known_date,
        )
        .map_err(cert_status)?;
    let challenge_destination: Challenge = random_array(rng);
    volatile.transfer_in = Some(TransferInSession {
        terminal_id: terminal.subject(),
        terminal_key: *terminal.signing_key(),
        terminal_certificate: request.terminal_certificate,
        challenge_terminal: request.challenge_terminal,
        source: request.source,
        amount: request.amount,
        date: request.date,
        challenge_destination,
        counter: purse.counter,
        key_id,
    });
    Ok(Effect::reply(
        TransferInOffer {
            counter: purse.counter,
            balance: purse.balance,
            challenge_destination,
            transfer_key_id: key_id,
            last_usage: purse.last_usage.clone(),
            last_writer_certificate: purse.last_writer_certificate.clone(),
        }
        .encode(),
    ))
}

/// Source, first step: reserve the amount in the pending-transfer log (committed before the
/// value message leaves the card) and answer the value message for this one destination.
pub(super) fn transfer_out(
    command: &Command,
    purse: &Purse,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = TransferOut::decode(&command.data).map_err(wrong_data)?;
    if purse.transfer.sent.is_some() {
        // One transfer at a time: the previous one must be settled first.
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    if request.amount == Amount::ZERO || request.destination == purse.keys.card_id {
        return Err(StatusWord::WRONG_DATA);
    }
    let key = purse
        .transfer
        .selected_key()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?
        .clone();
    if request.amount > purse.spendable() {
        return Err(StatusWord::INSUFFICIENT_FUNDS);
    }
    let challenge_source: Challenge = random_array(rng);
    let binding = TransferBinding {
        key_id: key.id,
        source: purse.keys.card_id,
        source_counter: purse.counter,
        challenge_source,
        destination: request.destination,
        destination_counter: request.destination_counter,
        challenge_destination: request.challenge_destination,
        challenge_terminal: request.challenge_terminal,
        date: request.date,
    };
    let value = ValueMessage::seal(&key, &binding, request.amount);
    let mut next = purse.clone();
    next.transfer.sent = Some(SentTransfer {
        pending: PendingTransfer {
            destination: request.destination,
            destination_counter: request.destination_counter,
            challenge_source,
            amount: request.amount,
            key_id: key.id,
        },
        key,
    });
    let offer = TransferOutOffer {
        counter: purse.counter,
        balance: purse.balance,
        challenge_source,
        value,
        last_usage: purse.last_usage.clone(),
        last_writer_certificate: purse.last_writer_certificate.clone(),
    };
    Ok(Effect::commit(offer.encode(), with_purse(next)))
}

/// Destination, second step: open the value message under the selected transfer key with
/// everything this session saw as its binding, check the terminal's signature over the
/// destination's record, then add the value, keep a receipt, and prove it.
pub(super) fn transfer_in(
    command: &Command,
    purse: &Purse,
    session: TransferInSession,
) -> Result<Effect, StatusWord> {
    let request = TransferIn::decode(&command.data).map_err(wrong_data)?;
    let key = purse
        .transfer
        .selected_key()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    if request.value.key_id != key.id || session.key_id != key.id {
        // A value message under a retired (or unknown) key generation.
        return Err(StatusWord::REFERENCE_DATA_NOT_USABLE);
    }
    if session.counter != purse.counter {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let own = purse.keys.card_id;
    let binding = TransferBinding {
        key_id: key.id,
        source: session.source,
        source_counter: request.source_counter,
        challenge_source: request.challenge_source,
        destination: own,
        destination_counter: session.counter,
        challenge_destination: session.challenge_destination,
        challenge_terminal: session.challenge_terminal,
        date: session.date,
    };
    let amount = request
        .value
        .open(key, &binding)
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    if amount != session.amount {
        return Err(StatusWord::WRONG_DATA);
    }
    if purse
        .transfer
        .receipt(&session.source, &request.challenge_source)
        .is_some()
    {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let balance_after = purse
        .balance
        .checked_add(amount)
        .map_err(|_| StatusWord::NOT_ENOUGH_MEMORY)?;
    let counter_after = purse
        .counter
        .checked_add(1)
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let record = UsageRecord {
        kind: TransactionKind::TransferIn,
        counter: counter_after,
        challenge_writer: session.challenge_terminal,
        challenge_card: session.challenge_destination,
        amount,
        balance_after,
        writer: session.terminal_id,
        writer_sequence: request.record.writer_sequence,
        date: session.date,
        signature: request.record.signature,
        stamp: request.record.stamp,
    };
    session
        .terminal_key
        .verify(&record.signed_message(&own), &record.signature)
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let mut next = purse.clone();
    next.transfer.record_receipt(ReceivedTransfer {
        source: session.source,
        challenge_source: request.challenge_source,
        amount,
        counter: counter_after,
    });
    apply_update(&mut next, record, Some(session.terminal_certificate))?;
    let proof = TransferProof::make(
        ProofStatus::Received,
        key,
        counter_after,
        &ProofSubject {
            source: session.source,
            challenge_source: request.challenge_source,
            destination: own,
            amount,
        },
    );
    Ok(Effect::commit(proof.encode(), with_purse(next)))
}

/// Destination, recovery: say whether this card applied the transfer. The session in which
/// it could have applied it ended with this command, so "not received" stays true for
/// ever, provided the card's receipts cover every transfer it could have applied it in.
pub(super) fn transfer_status(command: &Command, purse: &Purse) -> Result<Effect, StatusWord> {
    let query = TransferStatusQuery::decode(&command.data).map_err(wrong_data)?;
    let key = purse
        .transfer
        .selected_key()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let own = purse.keys.card_id;
    let proof = match purse
        .transfer
        .receipt(&query.source, &query.challenge_source)
    {
        Some(receipt) => TransferProof::make(
            ProofStatus::Received,
            key,
            receipt.counter,
            &ProofSubject {
                source: query.source,
                challenge_source: query.challenge_source,
                destination: own,
                amount: receipt.amount,
            },
        ),
        // It would have been applied at counter `destination_counter + 1`; every receipt
        // from there on is still kept, and the counter has not gone back.
        None if query.destination_counter >= purse.transfer.received_floor
            && query.destination_counter <= purse.counter =>
        {
            TransferProof::make(
                ProofStatus::NotReceived,
                key,
                query.destination_counter,
                &ProofSubject {
                    source: query.source,
                    challenge_source: query.challenge_source,
                    destination: own,
                    amount: Amount::ZERO,
                },
            )
        }
        None => return Err(StatusWord::REFERENCED_DATA_NOT_FOUND),
    };
    Ok(Effect::reply(proof.encode()))
}

/// Source, last step: settle the pending transfer against the destination's proof: debit
/// with the settlement terminal's signed record (received), or release the reservation
/// (not received).
pub(super) fn transfer_complete(command: &Command, purse: &Purse) -> Result<Effect, StatusWord> {
    let request = TransferComplete::decode(&command.data).map_err(wrong_data)?;
    let sent = purse
        .transfer
        .sent
        .as_ref()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    // The proof is under the generation the value went under, or under the card's
    // selected one if the two cards moved on together since.
    let key = if request.proof.key_id == sent.key.id {
        &sent.key
    } else {
        purse
            .transfer
            .selected_key()
            .filter(|k| k.id == request.proof.key_id)
            .ok_or(StatusWord::REFERENCE_DATA_NOT_USABLE)?
    };
    let own = purse.keys.card_id;
    let pending = &sent.pending;
    let subject = |amount| ProofSubject {
        source: own,
        challenge_source: pending.challenge_source,
        destination: pending.destination,
        amount,
    };
    let mut next = purse.clone();
    next.transfer.sent = None;
    match (request.proof.status, request.record) {
        (ProofStatus::NotReceived, None) => {
            request
                .proof
                .verify(key, &subject(Amount::ZERO))
                .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
            if request.proof.destination_counter != pending.destination_counter {
                return Err(StatusWord::WRONG_DATA);
            }
        }
        (ProofStatus::Received, Some(completion)) => {
            request
                .proof
                .verify(key, &subject(pending.amount))
                .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
            if Some(request.proof.destination_counter) != pending.destination_counter.checked_add(1)
            {
                return Err(StatusWord::WRONG_DATA);
            }
            let terminal = purse
                .anchor
                .verify_unexpired(
                    core::slice::from_ref(&completion.terminal_certificate),
                    Role::SettlementTerminal,
                    purse.known_date,
                )
                .map_err(cert_status)?;
            let balance_after = purse
                .balance
                .checked_sub(pending.amount)
                .map_err(|_| StatusWord::INSUFFICIENT_FUNDS)?;
            let record = UsageRecord {
                kind: TransactionKind::TransferOut,
                counter: purse
                    .counter
                    .checked_add(1)
                    .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
                challenge_writer: completion.challenge_terminal,
                challenge_card: pending.challenge_source,
                amount: pending.amount,
                balance_after,
                writer: terminal.subject(),
                writer_sequence: completion.signature.writer_sequence,
                date: completion.date,
                signature: completion.signature.signature,
                stamp: completion.signature.stamp,
            };
            terminal
                .signing_key()
                .verify(&record.signed_message(&own), &record.signature)
                .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
            apply_update(&mut next, record, Some(completion.terminal_certificate))?;
        }
        _ => return Err(StatusWord::WRONG_DATA),
    }
    let data = UpdateConfirmation {
        counter: next.counter,
        balance: next.balance,
    }
    .encode();
    Ok(Effect::commit(data, with_purse(next)))
}

/// Source, release: the center signed, under the root key this card trusts, that the value
/// of exactly this pending transfer cannot have reached a card that could still spend it.
/// The reservation is dropped with no balance change, as against a proof of non-receipt.
pub(super) fn transfer_release(command: &Command, purse: &Purse) -> Result<Effect, StatusWord> {
    let release = TransferRelease::decode(&command.data).map_err(wrong_data)?;
    let sent = purse
        .transfer
        .sent
        .as_ref()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    // Checked against the card's own log, never against anything the terminal says: a
    // release of another transfer (or another card's) does not verify.
    release
        .verify(&purse.anchor.public_key, &purse.keys.card_id, &sent.pending)
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let mut next = purse.clone();
    next.transfer.sent = None;
    let data = UpdateConfirmation {
        counter: next.counter,
        balance: next.balance,
    }
    .encode();
    Ok(Effect::commit(data, with_purse(next)))
}
