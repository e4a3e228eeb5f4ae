//! The transfer-key update on the card (claims 2, 4, 6, 7, 9, 17, 18): UPDATE PERMISSION on
//! the card with the older key, GET TRANSFER KEY on the card with the newer one, UPDATE
//! TRANSFER KEY back on the older card.

use valuecard_core::crypto::{random_array, seal_to, GCM_NONCE_LEN};
use valuecard_core::messages::transfer::{
    GetTransferKey, PublicKeyExport, SymmetricKeyExport, UpdatePermission, UpdatePermissionResponse,
};
use zeroize::Zeroize;

use super::*;

/// Claims 2, 4, 6, 7, 9: draw the first random number. In the public-key form the command
/// carries the peer's certificate, whose key will check the peer's signature.
pub(super) fn update_permission(
    command: &Command,
    mode: KeyUpdateMode,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = UpdatePermission::decode(&command.data).map_err(wrong_data)?;
    let peer = match (mode, &request.peer_certificate) {
        (KeyUpdateMode::PublicKey, Some(certificate)) => {
            let (peer, signing, _) = verify_peer_card(purse, certificate)?;
            Some((peer, signing))
        }
        (KeyUpdateMode::PublicKey, None) => return Err(StatusWord::WRONG_DATA),
        (_, Some(_)) => return Err(StatusWord::WRONG_DATA),
        (_, None) => {
            if purse.transfer.update_key.is_none() {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            None
        }
    };
    let random: KeyUpdateRandom = random_array(rng);
    volatile.key_update = Some(KeyUpdateSession { mode, random, peer });
    Ok(Effect::reply(UpdatePermissionResponse { random }.encode()))
}

/// Claims 2, 4, 6, 7, 9: export the selected transfer key for the card that drew `random`:
/// under the update key (symmetric, selection), or sealed to the peer's certified key and
/// signed with this card's own (public key).
pub(super) fn get_transfer_key(
    command: &Command,
    mode: KeyUpdateMode,
    purse: &Purse,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = GetTransferKey::decode(&command.data).map_err(wrong_data)?;
    let key = purse
        .transfer
        .selected_key()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    match (mode, &request.peer_certificate) {
        (KeyUpdateMode::PublicKey, Some(certificate)) => {
            let (peer, _, sealing) = verify_peer_card(purse, certificate)?;
            let own = purse.keys.card_id;
            let mut plain = PublicKeyExport::plaintext(key);
            let sealed = seal_to(
                rng,
                &sealing,
                &PublicKeyExport::sealed_aad(&own, &peer),
                &plain,
            )
            .map_err(|_| StatusWord::WRONG_DATA);
            plain.zeroize();
            let sealed = sealed?;
            let signature = purse.keys.signing.sign(&PublicKeyExport::signed_message(
                &own,
                &peer,
                &request.random,
                &sealed,
            ));
            Ok(Effect::reply(
                PublicKeyExport { sealed, signature }.encode(),
            ))
        }
        (KeyUpdateMode::PublicKey, None) | (_, Some(_)) => Err(StatusWord::WRONG_DATA),
        (_, None) => {
            let update_key = purse
                .transfer
                .update_key
                .as_ref()
                .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
            let nonce: [u8; GCM_NONCE_LEN] = random_array(rng);
            let export = SymmetricKeyExport::seal(mode, update_key, nonce, &request.random, key);
            Ok(Effect::reply(export.encode()))
        }
    }
}

/// Claims 2, 4, 6, 7, 9, 17, 18: take the peer's key if the random number is the one this
/// card drew (or, in the public-key form, the peer's signature over it verifies) and the
/// identifier is newer than the current one and not above the upper limit (selection: one
/// the card holds). Anything else changes nothing.
pub(super) fn update_transfer_key(
    command: &Command,
    mode: KeyUpdateMode,
    purse: &Purse,
    session: KeyUpdateSession,
) -> Result<Effect, StatusWord> {
    if session.mode != mode {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    }
    let own = purse.keys.card_id;
    let mut next = purse.clone();
    match mode {
        KeyUpdateMode::PublicKey => {
            let export = PublicKeyExport::decode(&command.data).map_err(wrong_data)?;
            let (peer, peer_key) = session.peer.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
            // Claim 4: check the signature first, then decrypt.
            peer_key
                .verify(
                    &PublicKeyExport::signed_message(&peer, &own, &session.random, &export.sealed),
                    &export.signature,
                )
                .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
            let mut plain = purse
                .keys
                .sealing
                .open(&PublicKeyExport::sealed_aad(&peer, &own), &export.sealed)
                .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
            let key = PublicKeyExport::key_from_plaintext(&plain);
            plain.zeroize();
            let key = key.map_err(wrong_data)?;
            next.transfer.adopt(key).map_err(key_refusal)?;
        }
        KeyUpdateMode::Symmetric | KeyUpdateMode::Selection => {
            let export = SymmetricKeyExport::decode(&command.data).map_err(wrong_data)?;
            let update_key = purse
                .transfer
                .update_key
                .as_ref()
                .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
            if export.update_key_id != update_key.id {
                // Claim 14: cards whose update keys differ take the public-key path.
                return Err(StatusWord::REFERENCE_DATA_NOT_USABLE);
            }
            let (random, key) = export
                .open(mode, update_key)
                .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
            if !valuecard_core::crypto::constant_time_eq(&random, &session.random) {
                return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
            }
            if mode == KeyUpdateMode::Selection {
                let held = purse
                    .transfer
                    .key(key.id)
                    .ok_or(key_refusal(crate::transfer_state::KeyRefusal::AboveLimit))?;
                if !valuecard_core::crypto::constant_time_eq(held.key.expose(), key.key.expose()) {
                    return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
                }
                next.transfer.select(key.id).map_err(key_refusal)?;
            } else {
                next.transfer.adopt(key).map_err(key_refusal)?;
            }
        }
    }
    Ok(Effect::commit(Vec::new(), with_purse(next)))
}
