//! What the card refuses: updates a valid session asks beyond its bounds, everything
//! without mutual authentication, and key installations not from a certified security server.

use super::*;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::messages::online::{
    ExternalAuthenticate, InitializeUpdate, InitializeUpdateResponse, KeyInstallation, OnlineFci,
};

#[test]
fn the_card_bounds_what_a_valid_session_can_ask() {
    let mut card = card_with_key(1_000);
    let cases: Vec<(&str, UpdateChange, StatusWord)> = vec![
        (
            "more than the balance",
            Box::new(|u| BalanceUpdate {
                amount: amount(1_001),
                balance_after: Amount::ZERO,
                ..u
            }),
            StatusWord::INSUFFICIENT_FUNDS,
        ),
        (
            "a balance after that does not add up",
            Box::new(|u| BalanceUpdate {
                balance_after: amount(999),
                ..u
            }),
            StatusWord::WRONG_DATA,
        ),
        (
            "another counter",
            Box::new(|u| BalanceUpdate {
                counter: u.counter + 1,
                ..u
            }),
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "another writer than the server that installed KC",
            Box::new(|u| BalanceUpdate {
                writer: DeviceId(*b"SECSERV2"),
                ..u
            }),
            StatusWord::WRONG_DATA,
        ),
    ];
    for (what, change, expected) in cases {
        let mut session = authenticate(&mut card);
        let info = read_balance(&mut card, &mut session, [4; 16]);
        let update = change(update_for(
            &session,
            &info,
            TransactionKind::OnlinePayment,
            100,
        ));
        let sealed = session.seal(ins::SETTLE, &update.encode()).unwrap();
        assert_eq!(
            send(&mut card, online(ins::SETTLE, sealed)).sw,
            expected,
            "{what}"
        );
        assert_eq!(purse(&card).balance, amount(1_000), "{what}");
        assert_eq!(purse(&card).counter, 0, "{what}");
    }
    // A charge past the largest balance a card holds.
    let (mut session, _, mut update) =
        prepared(&mut card, [5; 16], TransactionKind::OnlineCharge, 1);
    update.amount = Amount::MAX;
    update.balance_after = Amount::MAX;
    assert_eq!(
        submit(&mut card, &mut session, ins::CHARGE, &update).sw,
        StatusWord::NOT_ENOUGH_MEMORY
    );
    assert_eq!(purse(&card).balance, amount(1_000));
}

#[test]
fn without_mutual_authentication_nothing_secured_is_accepted() {
    let mut card = card_with_key(1_000);
    // Secured commands before any session.
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, vec![0; 40])).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // A server that does not know KC fails at EXTERNAL AUTHENTICATE.
    let host_challenge = random_array(&mut OsRng);
    let response = send(
        &mut card,
        online(
            ins::INITIALIZE_UPDATE,
            InitializeUpdate { host_challenge }.encode(),
        ),
    );
    let answer = InitializeUpdateResponse::decode(&response.data).unwrap();
    let wrong_key = testing::online_card_key(2, 1);
    assert!(SecureSession::authenticate(
        &wrong_key,
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
        &answer.card_cryptogram,
    )
    .is_err());
    let forged = valuecard_core::messages::online::SessionKeys::derive(
        &wrong_key,
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
    );
    assert_eq!(
        send(
            &mut card,
            online(
                ins::EXTERNAL_AUTHENTICATE,
                ExternalAuthenticate {
                    host_cryptogram: forged.host_cryptogram()
                }
                .encode()
            )
        )
        .sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    // The refused attempt ended the half-open session: the right cryptogram is too late.
    let (_, right) = SecureSession::authenticate(
        &testing::online_card_key(1, 1),
        &testing::card_id(1),
        &host_challenge,
        &answer.card_challenge,
        &answer.card_cryptogram,
    )
    .unwrap();
    assert_eq!(
        send(
            &mut card,
            online(
                ins::EXTERNAL_AUTHENTICATE,
                ExternalAuthenticate {
                    host_cryptogram: right
                }
                .encode()
            )
        )
        .sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // An altered message ends an open session.
    let mut session = authenticate(&mut card);
    let mut brc = sealed_readout(&mut session, [1; 16]);
    brc[0] ^= 1;
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, brc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
    let brc = sealed_readout(&mut session, [1; 16]);
    assert_eq!(
        send(&mut card, online(ins::READ_BALANCE, brc)).sw,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED
    );
}

#[test]
fn only_a_certified_security_server_installs_a_newer_key_for_this_card() {
    let memory = MemoryEeprom::new(EEPROM_SIZE);
    let mut card = Card::with_state(
        FaultInjectingEeprom::new(memory.clone()),
        testing::personalized(amount(1_000)),
        ChaCha20Rng::seed_from_u64(7),
    )
    .unwrap();
    let fci = OnlineFci::decode(&select(&mut card, &ONLINE_AID).data).unwrap();
    assert_eq!(fci.key_version, None);
    // No session without a key.
    assert_eq!(
        send(
            &mut card,
            online(
                ins::INITIALIZE_UPDATE,
                InitializeUpdate {
                    host_challenge: [0; 16]
                }
                .encode()
            )
        )
        .sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let good = testing::online_key_installation(1, 1, &mut OsRng);
    // A terminal's certificate, a forged signature, another card's sealed key.
    let (terminal_key, terminal_certificate) = testing::terminal();
    let by_terminal = KeyInstallation {
        server_certificate: terminal_certificate,
        signature: terminal_key.sign(&KeyInstallation::signed_message(
            &testing::card_id(1),
            1,
            &good.sealed_key,
        )),
        ..good.clone()
    };
    let forged = KeyInstallation {
        signature: SigningKeyPair::generate(&mut OsRng).sign(&KeyInstallation::signed_message(
            &testing::card_id(1),
            1,
            &good.sealed_key,
        )),
        ..good.clone()
    };
    let for_card_2 = testing::online_key_installation(2, 1, &mut OsRng);
    let (server_key, _) = testing::online_server();
    let other_card_key = KeyInstallation {
        signature: server_key.sign(&KeyInstallation::signed_message(
            &testing::card_id(1),
            1,
            &for_card_2.sealed_key,
        )),
        sealed_key: for_card_2.sealed_key.clone(),
        ..good.clone()
    };
    for (what, installation) in [
        ("a terminal", by_terminal),
        ("a forged signature", forged),
        ("another card's key", other_card_key),
        ("an installation signed for another card", for_card_2),
    ] {
        let response = send(&mut card, online(ins::INSTALL_KEY, installation.encode()));
        assert_eq!(
            response.sw,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            "{what}"
        );
        assert!(purse(&card).online.is_none(), "{what}");
    }
    assert_eq!(
        send(&mut card, online(ins::INSTALL_KEY, good.encode())).sw,
        StatusWord::SUCCESS
    );
    // The same version again, or an older one, is refused; a newer one replaces it.
    let again = testing::online_key_installation(1, 1, &mut OsRng);
    assert_eq!(
        send(&mut card, online(ins::INSTALL_KEY, again.encode())).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let newer = testing::online_key_installation(1, 2, &mut OsRng);
    assert_eq!(
        send(&mut card, online(ins::INSTALL_KEY, newer.encode())).sw,
        StatusWord::SUCCESS
    );
    let online_app = purse(&card).online.as_ref().unwrap();
    assert_eq!(online_app.key_version, 2);
    assert_eq!(online_app.card_key, testing::online_card_key(1, 2));
}
