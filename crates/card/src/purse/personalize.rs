//! Fig. 4B with Fig. 8 on the card: GENERATE KEY PAIR and PERSONALIZE.

use super::*;
use valuecard_core::messages::transfer::{TransferKeySet, TRANSFER_KEY_SET_LEN};

/// Fig. 4B, adapted so that the private key is born in the card: the center's MAC under the
/// transport key authorizes the card ID, and the card returns only public keys. Asked again
/// in `KeysGenerated`, it returns the same keys, so a lost response can be recovered.
pub(super) fn generate_key_pair(
    command: &Command,
    state: &PersistentState,
    transport_key: &AesKey,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let challenge = take_challenge(volatile)?;
    let request = GenerateKeyPairCommand::decode(&command.data).map_err(wrong_data)?;
    aes_cmac_verify(
        transport_key,
        &GenerateKeyPairCommand::mac_input(&challenge, &request.card_id),
        &request.mac,
    )
    .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    match state {
        PersistentState::KeysGenerated { keys, .. } => {
            if keys.card_id != request.card_id {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            Ok(Effect::reply(public_keys(keys)))
        }
        _ => {
            let keys = CardKeys {
                card_id: request.card_id,
                signing: SigningKeyPair::generate(rng),
                sealing: SealingKeyPair::generate(rng),
            };
            let data = public_keys(&keys);
            Ok(Effect::commit(
                data,
                PersistentState::KeysGenerated {
                    transport_key: transport_key.clone(),
                    chip_serial: state.chip_serial(),
                    keys: Box::new(keys),
                },
            ))
        }
    }
}

pub(super) fn public_keys(keys: &CardKeys) -> Vec<u8> {
    GenerateKeyPairResponse {
        signing_key: keys.signing.public_key(),
        sealing_key: keys.sealing.public_key(),
    }
    .encode()
}

/// Fig. 4B (certificate, root key, IDC) with Fig. 8 (KU and KO under the transport key).
pub(super) fn personalize(
    command: &Command,
    transport_key: &AesKey,
    keys: &CardKeys,
    volatile: &mut Volatile,
) -> Result<Effect, StatusWord> {
    let challenge = take_challenge(volatile)?;
    let request = PersonalizeCommand::decode(&command.data).map_err(wrong_data)?;
    let mac_input = PersonalizeCommand::mac_input(&challenge, &request.encode_unmacced());
    aes_cmac_verify(transport_key, &mac_input, &request.mac)
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let verified = request
        .anchor
        .verify(
            core::slice::from_ref(&request.certificate),
            Role::Card,
            request.date,
        )
        .map_err(cert_status)?;
    if verified.subject().0 != keys.card_id.0
        || verified.signing_key() != &keys.signing.public_key()
        || verified.sealing_key() != Some(&keys.sealing.public_key())
    {
        return Err(StatusWord::WRONG_DATA);
    }
    // KU || KO come sealed to the key pair this card generated, with an ephemeral key of
    // the center: the transport key authenticates the delivery (the MAC above) but does not
    // open it, so a sniffer who knows Ktemp learns nothing of KU and KO.
    let mut plain = keys
        .sealing
        .open(
            &PersonalizeCommand::sealed_keys_aad(&keys.card_id),
            &request.sealed_keys,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    // KU || KO, then (since seed 000) the transfer keys: the newest transfer-key generation,
    // the upper limit of identifiers, and the update key.
    let transfer = match plain.len() {
        SEALED_KEYS_PLAINTEXT_LEN => Ok(None),
        len if len == SEALED_KEYS_PLAINTEXT_LEN + TRANSFER_KEY_SET_LEN => {
            TransferKeySet::from_bytes(&plain[SEALED_KEYS_PLAINTEXT_LEN..]).map(Some)
        }
        _ => Err(valuecard_core::messages::DecodeError::Field {
            field: "sealed keys",
            reason: "wrong length",
        }),
    };
    let split = (plain.len() >= SEALED_KEYS_PLAINTEXT_LEN).then(|| {
        (
            AesKey::from_slice(&plain[..16]),
            AesKey::from_slice(&plain[16..32]),
        )
    });
    zeroize::Zeroize::zeroize(&mut plain);
    let (Some(Ok(card_key)), Some(Ok(common_key)), Ok(transfer_keys)) = (
        split.as_ref().map(|s| s.0.clone()),
        split.map(|s| s.1),
        transfer,
    ) else {
        return Err(StatusWord::WRONG_DATA);
    };
    let mut transfer = crate::state::TransferState::default();
    if let Some(set) = transfer_keys {
        transfer.accept_delivery(set.transfer, set.limit, set.update);
    }
    let purse = Purse {
        keys: keys.clone(),
        card_key,
        common_key,
        anchor: request.anchor,
        certificate: request.certificate,
        dispenser_id: request.dispenser_id,
        balance: Amount::ZERO,
        counter: 0,
        known_date: request.date,
        last_usage: None,
        last_writer_certificate: None,
        log: Default::default(),
        abnormal_events: Default::default(),
        blocked: false,
        credit: None,
        transfer,
        online: None,
        services: Default::default(),
    };
    Ok(Effect::commit(
        Vec::new(),
        PersistentState::Personalized(Box::new(purse)),
    ))
}
