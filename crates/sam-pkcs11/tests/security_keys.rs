//! The online security server's keys in SoftHSM2: the same KC as the software keys from the
//! same master key, master keys the token never gives out, signatures under the certified
//! key, a whole online payment against an emulated card, rotation, and a token that fails
//! under the keys without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{fresh_address, secret_keys, softhsm};
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use valuecard_card::testing;
use valuecard_core::cert::{Certificate, CertificateBody, Role};
use valuecard_core::crypto::{AesKey, PublicKey, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::money::Amount;
use valuecard_sam_pkcs11::softhsm::THROWAWAY_USER_PIN;
use valuecard_sam_pkcs11::{
    context, NewMaster, Pkcs11SamError, Pkcs11SecurityKeys, SecurityKeysError, TokenAddress,
};
use valuecard_settle::security::{SecurityKeys, SecurityServer, SoftwareSecurityKeys};

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn master(byte: u8) -> AesKey {
    AesKey::from_slice(&[byte; 16]).unwrap()
}

/// The test root's certificate for the security server whose signing key is `key`.
fn certificate_for(key: PublicKey, role: Role) -> Certificate {
    CertificateBody {
        issuer: testing::anchor().center,
        subject: DeviceId(*b"SECSERV1"),
        role,
        effective: testing::today(),
        expiry: testing::today().add_days(365),
        signing_key: key,
        sealing_key: None,
    }
    .sign(&testing::root_key())
}

/// A fresh token set up with `first` as M of version 1, and its keys opened.
fn token_keys(module: &Path, first: NewMaster) -> (TokenAddress, Pkcs11SecurityKeys) {
    let address = fresh_address(module, "online");
    let public = Pkcs11SecurityKeys::provision(&address, first).unwrap();
    let keys = Pkcs11SecurityKeys::open(&address, certificate_for(public, Role::OnlineSettlement))
        .unwrap();
    (address, keys)
}

/// A logged-in session of the test's own on the token `address` names (the keys' session
/// keeps the user logged in for the process already).
fn own_session(module: &Path, address: &TokenAddress) -> Session {
    let pkcs11 = context::context(module).unwrap();
    let label = address.uri.token.clone().unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(
        UserType::User,
        Some(&AuthPin::from(THROWAWAY_USER_PIN.to_owned())),
    );
    session
}

fn card_ids() -> Vec<CardId> {
    let mut ids: Vec<CardId> = (1..=4).map(testing::card_id).collect();
    ids.extend([CardId([0; 8]), CardId([0xFF; 8]), CardId(*b"CARD0042")]);
    ids
}

#[test]
fn the_token_gives_the_same_card_keys_as_the_software_keys() {
    let Some(module) = softhsm("same_card_keys") else {
        return;
    };
    let (_, mut token) = token_keys(&module, NewMaster::Import(master(0x4D)));
    let (signing, certificate) = testing::online_server();
    let mut software = SoftwareSecurityKeys::new(master(0x4D), signing, certificate);
    assert_eq!(token.rotate(NewMaster::Import(master(0x4E))).unwrap(), 2);
    assert_eq!(software.rotate(master(0x4E)), 2);
    assert_eq!(token.versions(), [1, 2]);
    assert_eq!(token.current_version(), software.current_version());
    for card_id in card_ids() {
        for version in [1, 2] {
            let from_token = token.card_key(&card_id, version).unwrap().unwrap();
            let from_software = software.card_key(&card_id, version).unwrap().unwrap();
            assert_eq!(
                from_token.expose(),
                from_software.expose(),
                "{card_id:?} v{version}"
            );
        }
        assert_ne!(
            token.card_key(&card_id, 1).unwrap().unwrap().expose(),
            token.card_key(&card_id, 2).unwrap().unwrap().expose()
        );
        // A version neither holds.
        assert!(token.card_key(&card_id, 3).unwrap().is_none());
        assert!(software.card_key(&card_id, 3).unwrap().is_none());
    }
    assert_eq!(token.take_failure(), None);
}

#[test]
fn master_keys_are_sensitive_and_never_extractable() {
    let Some(module) = softhsm("master_keys_sensitive") else {
        return;
    };
    let (address, mut keys) = token_keys(&module, NewMaster::Generate);
    keys.rotate(NewMaster::Import(master(0x4E))).unwrap();
    // A generated M gives one KC per card, and others for other cards.
    let card = testing::card_id(1);
    assert_eq!(
        keys.card_key(&card, 1).unwrap().unwrap().expose(),
        keys.card_key(&card, 1).unwrap().unwrap().expose()
    );
    assert_ne!(
        keys.card_key(&card, 1).unwrap().unwrap().expose(),
        keys.card_key(&testing::card_id(2), 1)
            .unwrap()
            .unwrap()
            .expose()
    );
    let session = own_session(&module, &address);
    let secret = secret_keys(
        &session,
        &[
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Token,
            AttributeType::Decrypt,
            AttributeType::Unwrap,
            AttributeType::Wrap,
        ],
    );
    for (label, attributes) in &secret {
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Token(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Wrap(false),
        ] {
            assert!(
                attributes.contains(&expected),
                "{expected:?}: {attributes:?}"
            );
        }
        // Only the generated M has never existed outside the token.
        let generated = label == "online/master-v1";
        assert_eq!(
            attributes.contains(&Attribute::NeverExtractable(true)),
            generated,
            "{label}"
        );
    }
    let labels: Vec<&str> = secret.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(labels, ["online/master-v1", "online/master-v2"]);
}

#[test]
fn signatures_verify_under_the_certified_key() {
    let Some(module) = softhsm("signatures_verify") else {
        return;
    };
    let (_, keys) = token_keys(&module, NewMaster::Generate);
    assert_eq!(keys.signing_key(), keys.certificate().body.signing_key);
    assert_eq!(keys.device_id(), DeviceId(*b"SECSERV1"));
    for message in [&b""[..], b"one", &[0xA5; 1000]] {
        let signature = keys.sign(message).unwrap();
        keys.signing_key().verify(message, &signature).unwrap();
        assert!(keys.signing_key().verify(b"another", &signature).is_err());
    }
    assert_eq!(keys.take_failure(), None);
}

#[test]
fn provision_and_open_refuse_what_is_not_theirs() {
    let Some(module) = softhsm("provision_and_open_refuse") else {
        return;
    };
    let (address, keys) = token_keys(&module, NewMaster::Generate);
    // A second setup under the same label.
    assert!(matches!(
        Pkcs11SecurityKeys::provision(&address, NewMaster::Generate),
        Err(SecurityKeysError::Token(Pkcs11SamError::AlreadyExists(_)))
    ));
    // A certificate for another role, or for another key.
    let public = keys.signing_key();
    assert_eq!(
        Pkcs11SecurityKeys::open(&address, certificate_for(public, Role::PaymentTerminal))
            .map(|_| ()),
        Err(SecurityKeysError::WrongRole(Role::PaymentTerminal))
    );
    let other = SigningKeyPair::from_seed(&[0x77; 32]).public_key();
    assert_eq!(
        Pkcs11SecurityKeys::open(&address, certificate_for(other, Role::OnlineSettlement))
            .map(|_| ()),
        Err(SecurityKeysError::ForeignCertificate)
    );
    // Opened again, it finds the same key and version.
    let again = Pkcs11SecurityKeys::open(&address, keys.certificate().clone()).unwrap();
    assert_eq!(again.versions(), [1]);
    let card = testing::card_id(3);
    assert_eq!(
        again.card_key(&card, 1).unwrap().unwrap().expose(),
        keys.card_key(&card, 1).unwrap().unwrap().expose()
    );
}

#[test]
fn a_failing_token_refuses_without_a_panic() {
    let Some(module) = softhsm("failing_token") else {
        return;
    };
    let (address, keys) = token_keys(&module, NewMaster::Generate);
    let card = testing::card_id(1);
    assert!(keys.card_key(&card, 1).unwrap().is_some());
    // The objects vanish under the open keys (another process, an operator).
    let session = own_session(&module, &address);
    for label in ["online", "online/master-v1"] {
        for handle in session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap()
        {
            session.destroy_object(handle).unwrap();
        }
    }
    assert!(
        keys.sign(b"an update").is_err(),
        "a token failure is an error"
    );
    assert!(matches!(
        keys.take_failure(),
        Some(SecurityKeysError::Token(Pkcs11SamError::Token(_)))
    ));
    assert_eq!(keys.take_failure(), None, "a failure is taken once");
    assert!(keys.card_key(&card, 1).is_err());
    assert!(keys.take_failure().is_some());
}

use valuecard_settle::testing::TestHolder as Holder;

/// A service shares one security server between its request threads.
#[test]
fn the_token_keys_can_be_shared_between_threads() {
    fn shared<K: SecurityKeys + Send + Sync + 'static>() {}
    shared::<Pkcs11SecurityKeys>();
}

#[test]
fn an_online_payment_settles_with_the_token_keys() {
    let Some(module) = softhsm("online_payment") else {
        return;
    };
    let (_, keys) = token_keys(&module, NewMaster::Generate);
    let server = SecurityServer::new(keys);
    let mut holder = Holder::new(&server, 5_000);
    assert_eq!(holder.select().key_version, Some(1));
    let item = holder.pay(&server, [1; 16], 1_250, 1);
    assert_eq!(server.keys().take_failure(), None);
    assert_eq!(holder.balance(), amount(3_750));
    assert_eq!(item.card_id, testing::card_id(1));
    assert_eq!(item.record.counter, 1);
    assert_eq!(item.record.writer, server.keys().device_id());
    // The record the card keeps was signed in the token, as the center checks it.
    server
        .keys()
        .signing_key()
        .verify(
            &item.record.signed_message(&item.card_id),
            &item.record.signature,
        )
        .unwrap();
}

#[test]
fn a_newer_master_key_reaches_new_installations_while_older_cards_keep_working() {
    let Some(module) = softhsm("rotation") else {
        return;
    };
    let (address, keys) = token_keys(&module, NewMaster::Generate);
    let certificate = keys.certificate().clone();
    let mut server = SecurityServer::new(keys);
    let mut older = Holder::new(&server, 2_000);
    assert_eq!(server.keys_mut().rotate(NewMaster::Generate).unwrap(), 2);
    assert_eq!(server.keys().current_version(), 2);
    // The card given KC under version 1 still settles.
    assert_eq!(older.select().key_version, Some(1));
    older.pay(&server, [2; 16], 100, 1);
    // Given KC under version 2, it settles under that.
    older.install(&server);
    assert_eq!(older.select().key_version, Some(2));
    older.pay(&server, [3; 16], 100, 2);
    assert_eq!(older.balance(), amount(1_800));

    // Another server opened on the token learns both versions; one opened before a later
    // rotation finds the newer version when a card presents it.
    let stale = SecurityServer::new(Pkcs11SecurityKeys::open(&address, certificate).unwrap());
    assert_eq!(stale.keys().versions(), [1, 2]);
    assert_eq!(server.keys_mut().rotate(NewMaster::Generate).unwrap(), 3);
    older.install(&server);
    assert_eq!(older.select().key_version, Some(3));
    assert_eq!(stale.keys().current_version(), 2);
    older.pay(&stale, [4; 16], 100, 3);
    assert_eq!(stale.keys().versions(), [1, 2, 3]);
    assert_eq!(older.balance(), amount(1_700));
}
