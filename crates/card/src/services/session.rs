//! One provider SAM's session on one area: mutual authentication with the key of the
//! area's current state, then the secured commands. UPDATE AREA (normal use) needs main
//! keys; a move's EXPORT AREA and IMPORT AREA need temporary keys; READ AREA answers in
//! either state, to whichever SAM holds the key of the area's current state.

use rand_core::CryptoRngCore;
use valuecard_core::apdu::Command;
use valuecard_core::crypto::random_array;
use valuecard_core::messages::purse::{Challenge, TransactionKind};
use valuecard_core::messages::services::{
    ins, AreaContent, AreaReadout, ChannelBinding, ExportRequest, ExportedArea, ImportReceipt,
    ImportRequest, KeyState, MigrationRecord, OpenService, OpenServiceResponse, PendingCardChannel,
    PurseValue, ServiceAuthenticate, ServiceChannel, ServiceKind, UpdateArea,
};
use valuecard_core::StatusWord;

use super::{channel_status, storable, ServicesSession};
use crate::purse::{apply_update, wrong_data, Effect, Volatile};
use crate::state::{Purse, ServiceArea};

/// OPEN SERVICE: draw C, derive the session from the area's key in its current state, and
/// prove it.
pub(super) fn open_service(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = OpenService::decode(&command.data).map_err(wrong_data)?;
    let area = purse
        .services
        .area(request.service)
        .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
    let card_challenge: Challenge = random_array(rng);
    let binding = ChannelBinding {
        card_id: purse.keys.card_id,
        service: request.service,
        key_state: area.key_state,
        host_challenge: request.host_challenge,
        card_challenge,
    };
    let (pending, card_cryptogram) = ServiceChannel::for_card(area.key(), binding);
    volatile.services = Some(ServicesSession::Pending(pending));
    Ok(Effect::reply(
        OpenServiceResponse {
            card_challenge,
            key_state: area.key_state,
            key_version: area.key_version,
            card_cryptogram,
        }
        .encode(),
    ))
}

/// EXTERNAL AUTHENTICATE: the host proves the same key; the session opens.
pub(super) fn external_authenticate(
    command: &Command,
    pending: PendingCardChannel,
    purse: &Purse,
    volatile: &mut Volatile,
) -> Result<Effect, StatusWord> {
    let request = ServiceAuthenticate::decode(&command.data).map_err(wrong_data)?;
    // The area's state cannot have changed since OPEN SERVICE (any command in between ends
    // the session), but the check costs nothing.
    let binding = *pending.binding();
    if purse
        .services
        .area(binding.service)
        .is_none_or(|area| area.key_state != binding.key_state)
    {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let channel = pending
        .authenticate(&request.host_cryptogram)
        .map_err(channel_status)?;
    volatile.services = Some(ServicesSession::Open(channel));
    Ok(Effect::reply(Vec::new()))
}

/// The secured commands of an open session.
pub(super) fn secured(
    command: &Command,
    purse: &Purse,
    channel: &mut ServiceChannel,
) -> Result<Effect, StatusWord> {
    let binding = *channel.binding();
    let area = purse
        .services
        .area(binding.service)
        .filter(|area| area.key_state == binding.key_state)
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let plaintext = channel
        .open(command.ins, &command.data)
        .map_err(channel_status)?;
    let needed_state = match command.ins {
        ins::READ_AREA => binding.key_state,
        ins::UPDATE_AREA => KeyState::Main,
        _ => KeyState::Temporary,
    };
    if binding.key_state != needed_state {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let (answer, next) = match command.ins {
        ins::READ_AREA => {
            if !plaintext.is_empty() {
                return Err(StatusWord::WRONG_DATA);
            }
            (readout(purse, area).encode(), None)
        }
        ins::UPDATE_AREA => update_area(&plaintext, purse, area)?,
        ins::EXPORT_AREA => export_area(&plaintext, purse, area)?,
        _ => import_area(&plaintext, purse, area, &binding)?,
    };
    let next = next.map(storable).transpose()?;
    let sealed = channel.seal(command.ins, &answer).map_err(channel_status)?;
    Ok(match next {
        Some(next) => Effect::commit(sealed, next),
        None => Effect::reply(sealed),
    })
}

/// The area's content as the card shows it: for the purse, its balance and counter.
fn content_of(purse: &Purse, area: &ServiceArea) -> AreaContent {
    match &area.content {
        Some(content) => content.clone(),
        None => AreaContent::Purse(PurseValue {
            card_id: purse.keys.card_id,
            balance: purse.balance,
            counter: purse.counter,
        }),
    }
}

fn readout(purse: &Purse, area: &ServiceArea) -> AreaReadout {
    AreaReadout {
        card_id: purse.keys.card_id,
        service: area.format.service,
        content: content_of(purse, area),
        imported: area.imported,
    }
}

/// UPDATE AREA: one operation of normal use, applied by the content's own rules.
fn update_area(
    plaintext: &[u8],
    purse: &Purse,
    area: &ServiceArea,
) -> Result<(Vec<u8>, Option<Purse>), StatusWord> {
    let request = UpdateArea::decode(plaintext).map_err(wrong_data)?;
    let Some(content) = &area.content else {
        // The purse's normal use is the purse application.
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    let updated = content
        .apply(&request.operation, area.format.capacity)
        .map_err(operation_status)?;
    let answer = AreaReadout {
        card_id: purse.keys.card_id,
        service: area.format.service,
        content: updated.clone(),
        imported: area.imported,
    }
    .encode();
    let next = with_area(purse.clone(), area, |next| next.content = Some(updated));
    Ok((answer, Some(next)))
}

/// `purse` with one change to `area` (which is one of its areas).
fn with_area(mut purse: Purse, area: &ServiceArea, change: impl FnOnce(&mut ServiceArea)) -> Purse {
    if let Some(next) = purse.services.area_mut(area.format.service) {
        change(next);
    }
    purse
}

fn operation_status(error: valuecard_core::messages::services::OperationError) -> StatusWord {
    use valuecard_core::messages::services::OperationError as E;
    match error {
        E::Full => StatusWord::NOT_ENOUGH_MEMORY,
        E::UnknownTicket => StatusWord::REFERENCED_DATA_NOT_FOUND,
        E::InsufficientPoints | E::NoRidesLeft => StatusWord::INSUFFICIENT_FUNDS,
        E::NotValidOn | E::PointsExpired => StatusWord::CONDITIONS_NOT_SATISFIED,
        _ => StatusWord::WRONG_DATA,
    }
}

/// EXPORT AREA (S7): the content for the transfer SAM, the purse's signed by the card. The
/// area is marked as exported for this move; while the mark stands it exports for no other
/// move, so an old chip left on temporary keys cannot be uploaded a second time.
fn export_area(
    plaintext: &[u8],
    purse: &Purse,
    area: &ServiceArea,
) -> Result<(Vec<u8>, Option<Purse>), StatusWord> {
    let request = ExportRequest::decode(plaintext).map_err(wrong_data)?;
    if area
        .exported_for
        .is_some_and(|exported| exported != request.move_id)
    {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    if area.format.kind == ServiceKind::Purse {
        // The purse's value leaves this chip: never from a blocked purse (no command moves
        // its value), and never while a transfer it sent is unsettled, whose amount may
        // already be on the destination card and would then exist twice. The move is rolled
        // back (main keys), the transfer settled, and the move made again.
        if purse.blocked {
            return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
        }
        if purse.transfer.sent.is_some() {
            return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
        }
    }
    let card_id = purse.keys.card_id;
    let content = content_of(purse, area);
    let card_signature = match &content {
        AreaContent::Purse(value) => {
            Some(purse.keys.signing.sign(&ExportedArea::purse_signed_message(
                &request.move_id,
                &card_id,
                value.balance,
                value.counter,
            )))
        }
        _ => None,
    };
    let answer = ExportedArea {
        move_id: request.move_id,
        card_id,
        service: area.format.service,
        content,
        card_signature,
    }
    .encode();
    let next = area.exported_for.is_none().then(|| {
        with_area(purse.clone(), area, |next| {
            next.exported_for = Some(request.move_id)
        })
    });
    Ok((answer, next))
}

/// IMPORT AREA (S14): a move's content into a fresh area, once. A repeat of the same import
/// answers the same receipt and changes nothing; another import over it is refused.
fn import_area(
    plaintext: &[u8],
    purse: &Purse,
    area: &ServiceArea,
    binding: &valuecard_core::messages::services::ChannelBinding,
) -> Result<(Vec<u8>, Option<Purse>), StatusWord> {
    let request = ImportRequest::decode(plaintext).map_err(wrong_data)?;
    if request.content.kind() != area.format.kind {
        return Err(StatusWord::WRONG_DATA);
    }
    let digest = request.content.digest();
    let receipt = ImportReceipt {
        move_id: request.move_id,
        card_id: purse.keys.card_id,
        service: area.format.service,
        digest,
    };
    if let Some((move_id, imported_digest)) = area.imported {
        return if move_id == request.move_id && imported_digest == digest {
            Ok((receipt.encode(), None))
        } else {
            Err(StatusWord::CONDITIONS_NOT_SATISFIED)
        };
    }
    if request.source == purse.keys.card_id {
        return Err(StatusWord::WRONG_DATA);
    }
    let mut next = purse.clone();
    match (&request.content, &area.content) {
        (AreaContent::Purse(value), None) => {
            let record = request.record.clone().ok_or(StatusWord::WRONG_DATA)?;
            credit_moved_value(&mut next, area, binding, value, record)?;
        }
        (content, Some(existing)) => {
            // Only a fresh area takes a move's content: nothing on it is overwritten.
            if Some(existing) != AreaContent::empty(area.format.kind).as_ref() {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            next = with_area(next, area, |next| next.content = Some(content.clone()));
        }
        _ => return Err(StatusWord::WRONG_DATA),
    }
    let next = with_area(next, area, |next| {
        next.imported = Some((request.move_id, digest))
    });
    Ok((receipt.encode(), Some(next)))
}

/// The purse's import: the old chip's value credited to this purse with the record the
/// purse provider's transfer SAM signed for exactly this card state and session.
fn credit_moved_value(
    next: &mut Purse,
    area: &ServiceArea,
    binding: &valuecard_core::messages::services::ChannelBinding,
    value: &PurseValue,
    record: valuecard_core::messages::purse::UsageRecord,
) -> Result<(), StatusWord> {
    if next.blocked {
        return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
    }
    if area.format.kind != ServiceKind::Purse
        || record.kind != TransactionKind::MigrationIn
        || record.writer != area.mover_certificate.subject()
        || record.challenge_writer != binding.host_challenge
        || record.challenge_card != binding.card_challenge
        || record.amount != value.balance
    {
        return Err(StatusWord::WRONG_DATA);
    }
    let counter = next
        .counter
        .checked_add(1)
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let balance_after = next
        .balance
        .checked_add(value.balance)
        .map_err(|_| StatusWord::NOT_ENOUGH_MEMORY)?;
    if record.counter != counter || record.balance_after != balance_after {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    // The transfer SAM's certificate was verified under the center's root when the area
    // was formatted.
    area.mover_certificate
        .body
        .signing_key
        .verify(
            &MigrationRecord::of_usage_record(&next.keys.card_id, &record).signed_message(),
            &record.signature,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    apply_update(next, record, Some(area.mover_certificate.clone()))
}
