//! Deterministic card states for fuzzing and golden-file tests: a personalized purse built
//! directly from fixed keys, without a center. Compiled only for tests and with the
//! `testing` feature; never part of a production card.

use valuecard_core::cert::{Certificate, CertificateBody, Role, TrustAnchor};
use valuecard_core::crypto::{AesKey, SealingKeyPair, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
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

/// A terminal key and its certificate from the test root.
pub fn terminal() -> (SigningKeyPair, Certificate) {
    let key = SigningKeyPair::from_seed(&[0x54; 32]);
    let certificate = CertificateBody {
        issuer: anchor().center,
        subject: DeviceId(*b"TERMINAL"),
        role: Role::PaymentTerminal,
        effective: today(),
        expiry: today().add_days(365),
        signing_key: key.public_key(),
        sealing_key: None,
    }
    .sign(&root_key());
    (key, certificate)
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
    let signing = SigningKeyPair::from_seed(&[0x43; 32]);
    let sealing = SealingKeyPair::from_secret([0x45; 32]);
    let card_id = CardId(*b"CARD0001");
    let certificate = CertificateBody {
        issuer: anchor().center,
        subject: DeviceId(card_id.0),
        role: Role::Card,
        effective: today(),
        expiry: today().add_days(5 * 365),
        signing_key: signing.public_key(),
        sealing_key: Some(sealing.public_key()),
    }
    .sign(&root_key());
    PersistentState::Personalized(Box::new(Purse {
        keys: CardKeys {
            card_id,
            signing,
            sealing,
        },
        card_key: AesKey::from_slice(&[0x4B; 16]).unwrap_or_else(|_| unreachable_key()),
        common_key: AesKey::from_slice(&[0x4F; 16]).unwrap_or_else(|_| unreachable_key()),
        anchor: anchor(),
        certificate,
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
    }))
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

fn unreachable_key() -> AesKey {
    // Invariant: a 16-byte slice always makes an AES-128 key.
    AesKey::random(&mut rand_core::OsRng)
}
