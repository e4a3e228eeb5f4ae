//! Loads that deliver transfer keys, and the key update between two cards.

use super::*;

/// How the transfer keys ride on a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    None,
    /// Sealed under the card's KU for this load, as the center does.
    Sealed(&'a TransferKeySet),
    /// Sealed under another key: what someone without KU could send.
    Forged(&'a TransferKeySet),
    /// Sealed under KU for the same authorization but another challenge of the card: a
    /// delivery moved from another load.
    AnotherLoad(&'a TransferKeySet),
}

/// INITIALIZE LOAD and the CREDIT command the center would authorize for it (signed by the
/// test root, MACed under the card's KU), with the transfer keys as `delivery` says.
pub fn credit_command(device: &mut Device, minor: u64, delivery: Delivery<'_>) -> Command {
    use valuecard_core::crypto::aes_cmac;
    use valuecard_core::messages::purse::{
        CreditCommand, InitializeLoad, LoadAuthorization, LoadOffer,
    };
    let request = InitializeLoad {
        challenge_dispenser: [0x33; 16],
        amount: amount(minor),
        dispenser_id: DeviceId(*b"DISPENSR"),
    };
    let response = device.send_command(
        Command::new(0x80, purse_ins::INITIALIZE_LOAD, 0, 0)
            .with_data(request.encode())
            .with_le(65_536),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let offer = LoadOffer::decode(&response.data).unwrap();
    let authorization = LoadAuthorization {
        card_id: device.id(),
        dispenser_id: request.dispenser_id,
        challenge_dispenser: request.challenge_dispenser,
        challenge_card: offer.challenge_card,
        counter: offer.counter,
        amount: request.amount,
        balance_after: offer.balance.checked_add(request.amount).unwrap(),
        load_number: offer.counter + 1,
        date: testing::today(),
    };
    let message = authorization.signed_message();
    let card_key = testing::card_key(device.number);
    let transfer_keys = match delivery {
        Delivery::None => None,
        Delivery::Sealed(set) => {
            Some(set.seal_for_load(&card_key, &offer.challenge_card, &message))
        }
        Delivery::AnotherLoad(set) => {
            let mut challenge = offer.challenge_card;
            challenge[0] ^= 0x01;
            Some(set.seal_for_load(&card_key, &challenge, &message))
        }
        Delivery::Forged(set) => Some(set.seal_for_load(
            &testing::card_key(device.number.wrapping_add(40)),
            &offer.challenge_card,
            &message,
        )),
    };
    let credit = CreditCommand {
        amount: authorization.amount,
        balance_after: authorization.balance_after,
        load_number: authorization.load_number,
        date: authorization.date,
        signature: testing::root_key().sign(&message),
        mac: aes_cmac(&card_key, &message),
        transfer_keys,
    };
    Command::new(0x80, purse_ins::CREDIT, 0, 0)
        .with_data(credit.encode())
        .with_le(256)
}

/// A load of `minor` with the transfer keys as `delivery` says; the CREDIT answer.
pub fn load(device: &mut Device, minor: u64, delivery: Delivery<'_>) -> Response {
    let command = credit_command(device, minor, delivery);
    device.send_command(command)
}

/// The key update of claims 2-9 between `older` (which takes the key) and `newer` (which
/// gives it), in form `p1`: UPDATE PERMISSION, GET TRANSFER KEY, UPDATE TRANSFER KEY. Each
/// step's refusal is returned as it came.
pub fn key_update(older: &mut Device, newer: &mut Device, p1: u8) -> Result<(), StatusWord> {
    key_update_with(older, newer, p1, |_, data| data)
}

/// [`key_update`] with the GET TRANSFER KEY answer passed through `alter` (given the random
/// the older card drew) before it reaches the older card.
pub fn key_update_with(
    older: &mut Device,
    newer: &mut Device,
    p1: u8,
    alter: impl FnOnce(&[u8; 16], Vec<u8>) -> Vec<u8>,
) -> Result<(), StatusWord> {
    use valuecard_core::messages::transfer::{
        GetTransferKey, UpdatePermission, UpdatePermissionResponse,
    };
    let public = p1 == 1;
    let permission = UpdatePermission {
        peer_certificate: public.then(|| testing::card_certificate(newer.number)),
    };
    let response = older.transfer(ins::UPDATE_PERMISSION, p1, permission.encode());
    if response.sw != StatusWord::SUCCESS {
        return Err(response.sw);
    }
    let random = UpdatePermissionResponse::decode(&response.data)
        .unwrap()
        .random;
    let request = GetTransferKey {
        random,
        peer_certificate: public.then(|| testing::card_certificate(older.number)),
    };
    let response = newer.transfer(ins::GET_TRANSFER_KEY, p1, request.encode());
    if response.sw != StatusWord::SUCCESS {
        return Err(response.sw);
    }
    let export = alter(&random, response.data);
    let response = older.transfer(ins::UPDATE_TRANSFER_KEY, p1, export);
    if response.sw != StatusWord::SUCCESS {
        return Err(response.sw);
    }
    Ok(())
}
