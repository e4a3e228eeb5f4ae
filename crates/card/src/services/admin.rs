//! The administrative SAM's commands: FORMAT AREA and SWITCH KEYS, each signed by a
//! certified move administrator over this chip's ID and the challenge it just drew.

use valuecard_core::apdu::Command;
use valuecard_core::cert::{Certificate, Role};
use valuecard_core::crypto::{AesKey, Signature};
use valuecard_core::limits::CHIP_AREAS_MAX;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::services::{
    AreaContent, FormatArea, KeyPackage, KeyState, ServiceKind, SwitchKeys,
};
use valuecard_core::StatusWord;

use super::storable;
use crate::purse::{cert_status, wrong_data, Effect};
use crate::state::{Purse, ServiceArea};

/// Checks the administrative SAM's certificate under the card's anchor and its signature.
fn verify_admin(
    purse: &Purse,
    certificate: &Certificate,
    message: &[u8],
    signature: &Signature,
) -> Result<(), StatusWord> {
    let admin = purse
        .anchor
        .verify_unexpired(
            core::slice::from_ref(certificate),
            Role::MoveAdministrator,
            purse.known_date,
        )
        .map_err(cert_status)?;
    admin
        .signing_key()
        .verify(message, signature)
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)
}

/// Checks one key package (the issuer's role and identity, its signature) and opens its key.
fn open_package(
    purse: &Purse,
    package: &KeyPackage,
    expected_issuer: valuecard_core::ids::DeviceId,
) -> Result<AesKey, StatusWord> {
    let issuer = purse
        .anchor
        .verify_unexpired(
            core::slice::from_ref(&package.issuer_certificate),
            KeyPackage::issuer_role(package.key_state),
            purse.known_date,
        )
        .map_err(cert_status)?;
    if issuer.subject() != expected_issuer {
        return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    }
    let card_id = purse.keys.card_id;
    issuer
        .signing_key()
        .verify(
            &KeyPackage::signed_message(
                &card_id,
                package.service,
                package.key_state,
                package.key_version,
                &package.sealed_key,
            ),
            &package.signature,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let key = purse
        .keys
        .sealing
        .open(
            &KeyPackage::seal_context(
                &card_id,
                package.service,
                package.key_state,
                package.key_version,
            ),
            &package.sealed_key,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    AesKey::from_slice(&key).map_err(wrong_data)
}

/// FORMAT AREA: a new area from a signed format and its two key packages. Formatting an
/// area that exists with the same format and keys again succeeds without a change (a
/// repeated S10); anything else over an existing area is refused.
pub(super) fn format_area(
    command: &Command,
    purse: &Purse,
    challenge: &Challenge,
) -> Result<Effect, StatusWord> {
    if purse.blocked {
        return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
    }
    let request = FormatArea::decode(&command.data).map_err(wrong_data)?;
    let card_id = purse.keys.card_id;
    verify_admin(
        purse,
        &request.admin_certificate,
        &FormatArea::signed_message(
            &card_id,
            challenge,
            &request.format,
            request.initial_state,
            &request.main_package.signature,
            &request.temporary_package.signature,
        ),
        &request.signature,
    )?;
    if request.main_package.key_version != request.temporary_package.key_version {
        return Err(StatusWord::WRONG_DATA);
    }
    let main_key = open_package(purse, &request.main_package, request.format.provider)?;
    let temporary_key = open_package(purse, &request.temporary_package, request.format.mover)?;
    let area = ServiceArea {
        format: request.format,
        key_state: request.initial_state,
        key_version: request.main_package.key_version,
        main_key,
        temporary_key,
        mover_certificate: request.temporary_package.issuer_certificate.clone(),
        content: AreaContent::empty(request.format.kind),
        exported_for: None,
        imported: None,
    };
    if let Some(existing) = purse.services.area(request.format.service) {
        let same = existing.format == area.format
            && existing.key_version == area.key_version
            && existing.main_key == area.main_key
            && existing.temporary_key == area.temporary_key;
        return if same {
            Ok(Effect::reply(Vec::new()))
        } else {
            Err(StatusWord::CONDITIONS_NOT_SATISFIED)
        };
    }
    if purse.services.areas.len() >= CHIP_AREAS_MAX {
        return Err(StatusWord::NOT_ENOUGH_MEMORY);
    }
    if area.format.kind == ServiceKind::Purse && purse.services.purse_area().is_some() {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let mut next = purse.clone();
    next.services.areas.push(area);
    Ok(Effect::commit(Vec::new(), storable(next)?))
}

/// SWITCH KEYS: the named areas' key states. Going back to main keys clears the area's
/// export mark (a rollback: the move's copy was discarded first).
pub(super) fn switch_keys(
    command: &Command,
    purse: &Purse,
    challenge: &Challenge,
) -> Result<Effect, StatusWord> {
    let request = SwitchKeys::decode(&command.data).map_err(wrong_data)?;
    verify_admin(
        purse,
        &request.admin_certificate,
        &SwitchKeys::signed_message(
            &purse.keys.card_id,
            challenge,
            &request.move_id,
            &request.changes,
        ),
        &request.signature,
    )?;
    let mut next = purse.clone();
    for change in &request.changes {
        let area = next
            .services
            .area_mut(change.service)
            .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
        area.key_state = change.key_state;
        if change.key_state == KeyState::Main {
            area.exported_for = None;
        }
    }
    if next.services == purse.services {
        return Ok(Effect::reply(Vec::new()));
    }
    Ok(Effect::commit(Vec::new(), storable(next)?))
}
