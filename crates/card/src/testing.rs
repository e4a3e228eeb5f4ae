//! Deterministic card states for fuzzing and golden-file tests: a personalized purse built
//! directly from fixed keys, without a center. Compiled only for tests and with the
//! `testing` feature; never part of a production card.

use valuecard_core::cert::{Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{AesKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::transfer::{TransferKey, TransferKeySet};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::state::{CardKeys, PersistentState, Purse};

/// The fixed root key of the test scheme.
pub fn root_key() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[0x52; 32])
}

pub fn anchor() -> TrustAnchor {
    TrustAnchor {
        center: DeviceId(*b"CENTER01"),
        public_key: root_key().public_key(),
    }
}

pub fn today() -> Date {
    Date(20_600)
}

/// A device's key from a fixed seed byte and its one-year certificate from the test root.
fn device(seed: u8, subject: [u8; 8], role: Role) -> (SigningKeyPair, Certificate) {
    let key = SigningKeyPair::from_seed(&[seed; 32]);
    let certificate = CertificateBody {
        issuer: anchor().center,
        subject: DeviceId(subject),
        role,
        effective: today(),
        expiry: today().add_days(365),
        signing_key: key.public_key(),
        sealing_key: None,
    }
    .sign(&root_key());
    (key, certificate)
}

/// A terminal key and its certificate from the test root.
pub fn terminal() -> (SigningKeyPair, Certificate) {
    device(0x54, *b"TERMINAL", Role::PaymentTerminal)
}

/// The test terminal's signed time stamp at `count`, on a chain from a fixed TS0.
pub fn terminal_stamp(count: u32) -> valuecard_core::messages::purse::TerminalStamp {
    use valuecard_core::messages::purse::TerminalStamp;
    let first = [0x53; 32];
    let current = TerminalStamp::at(&first, count).unwrap_or(first);
    let (key, _) = terminal();
    TerminalStamp {
        count,
        signature: key.sign(&TerminalStamp::signed_message(
            &DeviceId(*b"TERMINAL"),
            count,
            &current,
        )),
    }
}

/// A personalized, unblocked purse holding `balance`, with no transactions yet.
pub fn personalized(balance: Amount) -> PersistentState {
    PersistentState::Personalized(Box::new(purse(1, balance)))
}

fn purse(number: u8, balance: Amount) -> Purse {
    Purse {
        keys: card_keys(number),
        card_key: card_key(number),
        common_key: fixed_key(0x4F),
        anchor: anchor(),
        certificate: card_certificate(number),
        dispenser_id: DeviceId(*b"DISPENSR"),
        balance,
        counter: 0,
        known_date: today(),
        last_usage: None,
        last_writer_certificate: None,
        log: Default::default(),
        abnormal_events: Default::default(),
        blocked: false,
        credit: None,
        transfer: Default::default(),
        online: None,
        services: Default::default(),
    }
}

/// ENABLE CREDIT data for the card of [`personalized`], signed by the test root: the center's
/// side of Fig. 13, for tests that start from a personalized card.
pub fn enable_credit(
    setting_number: &valuecard_core::messages::credit::SettingNumber,
    expiry: Date,
    rng: &mut impl rand_core::CryptoRngCore,
) -> valuecard_core::messages::credit::EnableCredit {
    use valuecard_core::messages::credit::{
        sealed_setting_aad, setting_commitment, EnableCredit, SETTING_SALT_LEN,
    };
    let card_id = CardId(*b"CARD0001");
    let salt: [u8; SETTING_SALT_LEN] = valuecard_core::crypto::random_array(rng);
    let mut plain = salt.to_vec();
    plain.extend_from_slice(setting_number.as_bytes());
    let recipient = SealingKeyPair::from_secret([0x45; 32]).public_key();
    let sealed_setting =
        valuecard_core::crypto::seal_to(rng, &recipient, &sealed_setting_aad(&card_id), &plain)
            .unwrap_or_default();
    let commitment = setting_commitment(&card_id, &salt, setting_number);
    EnableCredit {
        expiry,
        signature: root_key().sign(&EnableCredit::signed_message(&card_id, expiry, &commitment)),
        sealed_setting,
    }
}

/// The settlement terminal of seed 000 (the one device that moves value between two cards):
/// its key and its certificate from the test root.
pub fn settlement_terminal() -> (SigningKeyPair, Certificate) {
    device(0x5E, *b"SETTLE01", Role::SettlementTerminal)
}

/// The security server of seed 004's online settlement: its key and its certificate from
/// the test root.
pub fn online_server() -> (SigningKeyPair, Certificate) {
    device(0x5C, *b"SECSERV1", Role::OnlineSettlement)
}

/// The KC of test card `number` at `key_version` (in production the security server
/// diversifies it from its master key).
pub fn online_card_key(number: u8, key_version: u32) -> AesKey {
    let mut bytes = [0x6B ^ number; 16];
    bytes[..4].copy_from_slice(&key_version.to_be_bytes());
    fixed_key_bytes(bytes)
}

/// INSTALL KEY data from [`online_server`] for test card `number`.
pub fn online_key_installation(
    number: u8,
    key_version: u32,
    rng: &mut impl rand_core::CryptoRngCore,
) -> valuecard_core::messages::online::KeyInstallation {
    use valuecard_core::messages::online::KeyInstallation;
    let keys = card_keys(number);
    let (server_key, server_certificate) = online_server();
    let sealed_key = valuecard_core::crypto::seal_to(
        rng,
        &keys.sealing.public_key(),
        &KeyInstallation::seal_context(&keys.card_id, key_version),
        online_card_key(number, key_version).expose(),
    )
    .unwrap_or_default();
    KeyInstallation {
        server_certificate,
        key_version,
        signature: server_key.sign(&KeyInstallation::signed_message(
            &keys.card_id,
            key_version,
            &sealed_key,
        )),
        sealed_key,
    }
}

/// ST11 with test card 1 holding KC of version 1 (from [`online_key_installation`]), the
/// online application selected: INITIALIZE UPDATE with `host_challenge`, the server's side
/// checked, EXTERNAL AUTHENTICATE. The server's session, or `None` if the card refused.
pub fn online_session<E: crate::eeprom::Eeprom, R: rand_core::CryptoRngCore>(
    card: &mut crate::Card<E, R>,
    host_challenge: valuecard_core::messages::purse::Challenge,
) -> Option<valuecard_core::messages::online::SecureSession> {
    use valuecard_core::apdu::Command;
    use valuecard_core::messages::online::{
        ins, ExternalAuthenticate, InitializeUpdate, InitializeUpdateResponse, SecureSession,
        CLA_ONLINE,
    };
    let mut exchange = |instruction: u8, data: Vec<u8>| {
        let command = Command::new(CLA_ONLINE, instruction, 0, 0)
            .with_data(data)
            .with_le(256);
        card.process(&command.encode())
            .ok()
            .filter(|response| response.sw.is_success())
            .map(|response| response.data)
    };
    let answer = InitializeUpdateResponse::decode(&exchange(
        ins::INITIALIZE_UPDATE,
        InitializeUpdate { host_challenge }.encode(),
    )?)
    .ok()?;
    let (session, host_cryptogram) = SecureSession::authenticate(
        &online_card_key(1, answer.key_version),
        &card_id(1),
        &host_challenge,
        &answer.card_challenge,
        &answer.card_cryptogram,
    )
    .ok()?;
    exchange(
        ins::EXTERNAL_AUTHENTICATE,
        ExternalAuthenticate { host_cryptogram }.encode(),
    )?;
    Some(session)
}

/// The card ID of test card `number` (`CARD0001` is the card of [`personalized`]).
pub fn card_id(number: u8) -> CardId {
    let mut id = *b"CARD0000";
    id[6] = b'0' + number / 10 % 10;
    id[7] = b'0' + number % 10;
    CardId(id)
}

/// KU of test card `number`: the key under which the center seals what it delivers to that
/// card with a load.
pub fn card_key(number: u8) -> AesKey {
    fixed_key(0x4B ^ number.wrapping_sub(1))
}

/// A transfer-key generation of the test scheme, its key bytes fixed by its identifier.
pub fn transfer_key(id: u32) -> TransferKey {
    let mut bytes = [0x70u8; 16];
    bytes[12..].copy_from_slice(&id.to_be_bytes());
    TransferKey {
        id,
        key: AesKey::from_slice(&bytes).unwrap_or_else(|_| unreachable_key()),
    }
}

/// An update-key generation of the test scheme (distinct from every transfer key).
pub fn update_key(id: u32) -> TransferKey {
    let mut bytes = [0x75u8; 16];
    bytes[12..].copy_from_slice(&id.to_be_bytes());
    TransferKey {
        id,
        key: AesKey::from_slice(&bytes).unwrap_or_else(|_| unreachable_key()),
    }
}

/// What the center would deliver: transfer key `transfer_id`, the upper limit `limit`, and
/// update key `update_id`.
pub fn key_set(transfer_id: u32, limit: u32, update_id: u32) -> TransferKeySet {
    TransferKeySet {
        transfer: transfer_key(transfer_id),
        limit,
        update: update_key(update_id),
    }
}

/// The signing and sealing key pairs of test card `number`.
pub fn card_keys(number: u8) -> CardKeys {
    if number == 1 {
        // The card of [`personalized`], whose golden images are fixed.
        return CardKeys {
            card_id: card_id(1),
            signing: SigningKeyPair::from_seed(&[0x43; 32]),
            sealing: SealingKeyPair::from_secret([0x45; 32]),
        };
    }
    CardKeys {
        card_id: card_id(number),
        signing: SigningKeyPair::from_seed(&[0x43 ^ number; 32]),
        sealing: SealingKeyPair::from_secret([0x45 ^ number; 32]),
    }
}

/// The certificate of test card `number`, from the test root.
pub fn card_certificate(number: u8) -> Certificate {
    let keys = card_keys(number);
    CertificateBody {
        issuer: anchor().center,
        subject: DeviceId(keys.card_id.0),
        role: Role::Card,
        effective: today(),
        expiry: today().add_days(5 * 365),
        signing_key: keys.signing.public_key(),
        sealing_key: Some(keys.sealing.public_key()),
    }
    .sign(&root_key())
}

/// Test card `number` personalized with `balance` and, if given, the transfer keys the
/// center delivered at personalization.
pub fn personalized_card(
    number: u8,
    balance: Amount,
    transfer_keys: Option<&TransferKeySet>,
) -> PersistentState {
    let mut purse = purse(number, balance);
    if let Some(set) = transfer_keys {
        purse
            .transfer
            .accept_delivery(set.transfer.clone(), set.limit, set.update.clone());
    }
    PersistentState::Personalized(Box::new(purse))
}

fn fixed_key_bytes(bytes: [u8; 16]) -> AesKey {
    AesKey::from_slice(&bytes).unwrap_or_else(|_| unreachable_key())
}

fn fixed_key(byte: u8) -> AesKey {
    AesKey::from_slice(&[byte; 16]).unwrap_or_else(|_| unreachable_key())
}

fn unreachable_key() -> AesKey {
    // Invariant: a 16-byte slice always makes an AES-128 key.
    AesKey::random(&mut rand_core::OsRng)
}

/// The value move server's administrative SAM of seed 002: its key and certificate from the
/// test root.
pub fn move_administrator() -> (SigningKeyPair, Certificate) {
    device(0x4D, *b"MOVEADM1", Role::MoveAdministrator)
}

/// Provider `number`'s normal SAM (seed 002), the issuer of its areas' main keys.
pub fn service_provider(number: u8) -> (SigningKeyPair, Certificate) {
    let mut subject = *b"PROVNRM0";
    subject[7] = b'0' + number;
    device(0x60 + number, subject, Role::ServiceProvider)
}

/// Provider `number`'s transfer SAM (seed 002), the issuer of its areas' temporary keys.
pub fn service_transfer(number: u8) -> (SigningKeyPair, Certificate) {
    let mut subject = *b"PROVTRN0";
    subject[7] = b'0' + number;
    device(0x70 + number, subject, Role::ServiceTransfer)
}

/// Provider `number`'s master key for the areas' keys of `state` (each in its own SAM).
pub fn area_master(number: u8, state: valuecard_core::messages::services::KeyState) -> AesKey {
    fixed_key_bytes([0x30 + number * 2 + state as u8; 16])
}

/// The format of provider `number`'s area for `service`.
pub fn area_format(
    service: valuecard_core::messages::services::ServiceCode,
    kind: valuecard_core::messages::services::ServiceKind,
    number: u8,
) -> valuecard_core::messages::services::AreaFormat {
    valuecard_core::messages::services::AreaFormat {
        service,
        kind,
        capacity: 8,
        provider: service_provider(number).1.subject(),
        mover: service_transfer(number).1.subject(),
    }
}

/// Provider `number`'s key package of `state` for `service` on test card `card`.
pub fn key_package(
    card: u8,
    service: valuecard_core::messages::services::ServiceCode,
    state: valuecard_core::messages::services::KeyState,
    number: u8,
    rng: &mut impl rand_core::CryptoRngCore,
) -> valuecard_core::messages::services::KeyPackage {
    use valuecard_core::messages::services::{area_key, KeyPackage, KeyState};
    let (signer, certificate) = match state {
        KeyState::Main => service_provider(number),
        KeyState::Temporary => service_transfer(number),
    };
    let card_id = card_id(card);
    let key = area_key(&area_master(number, state), state, &card_id, service);
    let key_version = 1;
    let sealed_key = valuecard_core::crypto::seal_to(
        rng,
        &card_keys(card).sealing.public_key(),
        &KeyPackage::seal_context(&card_id, service, state, key_version),
        key.expose(),
    )
    .unwrap_or_default();
    KeyPackage {
        signature: signer.sign(&KeyPackage::signed_message(
            &card_id,
            service,
            state,
            key_version,
            &sealed_key,
        )),
        issuer_certificate: certificate,
        service,
        key_state: state,
        key_version,
        sealed_key,
    }
}

/// FORMAT AREA data for test card `card` over its `challenge`, signed by the test
/// administrative SAM, with provider `number`'s key packages.
pub fn format_area(
    card: u8,
    challenge: &valuecard_core::messages::purse::Challenge,
    format: valuecard_core::messages::services::AreaFormat,
    initial_state: valuecard_core::messages::services::KeyState,
    number: u8,
    rng: &mut impl rand_core::CryptoRngCore,
) -> valuecard_core::messages::services::FormatArea {
    use valuecard_core::messages::services::{FormatArea, KeyState};
    let main_package = key_package(card, format.service, KeyState::Main, number, rng);
    let temporary_package = key_package(card, format.service, KeyState::Temporary, number, rng);
    let (admin, admin_certificate) = move_administrator();
    FormatArea {
        signature: admin.sign(&FormatArea::signed_message(
            &card_id(card),
            challenge,
            &format,
            initial_state,
            &main_package.signature,
            &temporary_package.signature,
        )),
        admin_certificate,
        format,
        initial_state,
        main_package,
        temporary_package,
    }
}

/// SWITCH KEYS data for test card `card` over its `challenge`, signed by the test
/// administrative SAM.
pub fn switch_keys(
    card: u8,
    challenge: &valuecard_core::messages::purse::Challenge,
    move_id: valuecard_core::messages::services::MoveId,
    changes: Vec<valuecard_core::messages::services::KeyChange>,
) -> valuecard_core::messages::services::SwitchKeys {
    use valuecard_core::messages::services::SwitchKeys;
    let (admin, admin_certificate) = move_administrator();
    SwitchKeys {
        signature: admin.sign(&SwitchKeys::signed_message(
            &card_id(card),
            challenge,
            &move_id,
            &changes,
        )),
        admin_certificate,
        move_id,
        changes,
    }
}

/// The key state of `service`'s area on a card in `state`, if the card has that area.
pub fn area_key_state(
    state: &PersistentState,
    service: valuecard_core::messages::services::ServiceCode,
) -> Option<valuecard_core::messages::services::KeyState> {
    let PersistentState::Personalized(purse) = state else {
        return None;
    };
    purse.services.area(service).map(|area| area.key_state)
}

/// What `service`'s area holds on a card in `state`, if the card has that area.
pub fn area_content(
    state: &PersistentState,
    service: valuecard_core::messages::services::ServiceCode,
) -> Option<valuecard_core::messages::services::AreaContent> {
    let PersistentState::Personalized(purse) = state else {
        return None;
    };
    purse
        .services
        .area(service)
        .and_then(|area| area.content.clone())
}

/// The purse balance of a card in `state`, in minor units (0 before personalization).
pub fn purse_balance(state: &PersistentState) -> u64 {
    match state {
        PersistentState::Personalized(purse) => purse.balance.minor(),
        _ => 0,
    }
}
