//! Fig. 7 on the card: INITIALIZE LOAD and CREDIT.

use super::*;
use valuecard_core::messages::transfer::TransferKeySet;

/// Fig. 7, card side of the first exchange: draw X and sign (Y, X, V); hand over the last
/// usage record, the writer's signed word for V.
pub(super) fn initialize_load(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let request = InitializeLoad::decode(&command.data).map_err(wrong_data)?;
    if request.amount == Amount::ZERO {
        return Err(StatusWord::WRONG_DATA);
    }
    if purse.balance.checked_add(request.amount).is_err() {
        return Err(StatusWord::NOT_ENOUGH_MEMORY);
    }
    let challenge_card: Challenge = random_array(rng);
    let signature = purse.keys.signing.sign(&LoadOffer::signed_message(
        &purse.keys.card_id,
        &request,
        &challenge_card,
        purse.balance,
        purse.counter,
    ));
    let offer = LoadOffer {
        challenge_card,
        balance: purse.balance,
        counter: purse.counter,
        signature,
        last_usage: purse.last_usage.clone(),
        last_writer_certificate: purse.last_writer_certificate.clone(),
    };
    volatile.load = Some(LoadSession {
        request,
        challenge_card,
        counter: purse.counter,
    });
    Ok(Effect::reply(offer.encode()))
}

/// The byte string the center MACs under KU for a load (Fig. 8, last paragraph).
pub fn load_mac_input(authorization: &LoadAuthorization) -> Vec<u8> {
    authorization.signed_message()
}

/// Fig. 7, card side of the second exchange: verify SA(Y * X * V * IDU) under the root key and
/// the MAC under KU, then add the value.
pub(super) fn credit(
    command: &Command,
    purse: &Purse,
    session: LoadSession,
) -> Result<Effect, StatusWord> {
    let request = CreditCommand::decode(&command.data).map_err(wrong_data)?;
    let authorization = LoadAuthorization {
        card_id: purse.keys.card_id,
        dispenser_id: session.request.dispenser_id,
        challenge_dispenser: session.request.challenge_dispenser,
        challenge_card: session.challenge_card,
        counter: session.counter,
        amount: request.amount,
        balance_after: request.balance_after,
        load_number: request.load_number,
        date: request.date,
    };
    let message = authorization.signed_message();
    let authentic = purse
        .anchor
        .public_key
        .verify(&message, &request.signature)
        .is_ok()
        && aes_cmac_verify(
            &purse.card_key,
            &load_mac_input(&authorization),
            &request.mac,
        )
        .is_ok();
    if !authentic {
        return Ok(Effect::refuse_and_record(
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            with_abnormal(purse, AbnormalCode::ForgedLoadAuthorization, false),
        ));
    }
    if request.amount != session.request.amount {
        return Err(StatusWord::WRONG_DATA);
    }
    let expected = purse
        .balance
        .checked_add(request.amount)
        .map_err(|_| StatusWord::NOT_ENOUGH_MEMORY)?;
    if expected != request.balance_after {
        return Err(StatusWord::WRONG_DATA);
    }
    let mut next = purse.clone();
    if let Some(sealed) = &request.transfer_keys {
        // Seed 000: the center's newest transfer keys ride on the load, sealed under KU and
        // bound to this authorization.
        let Ok(set) = TransferKeySet::open_from_load(
            &purse.card_key,
            &session.challenge_card,
            &message,
            sealed,
        ) else {
            return Ok(Effect::refuse_and_record(
                StatusWord::SECURITY_STATUS_NOT_SATISFIED,
                with_abnormal(purse, AbnormalCode::ForgedLoadAuthorization, false),
            ));
        };
        next.transfer
            .accept_delivery(set.transfer, set.limit, set.update);
    }
    next.known_date = next.known_date.max(request.date);
    let record = UsageRecord {
        kind: TransactionKind::Load,
        counter: 0,
        challenge_writer: session.request.challenge_dispenser,
        challenge_card: session.challenge_card,
        amount: request.amount,
        balance_after: request.balance_after,
        writer: session.request.dispenser_id,
        writer_sequence: request.load_number,
        date: request.date,
        signature: request.signature,
        stamp: None,
    };
    commit_update(next, record, None)
}
