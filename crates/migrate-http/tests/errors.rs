//! The move server's refusals over HTTPS: each reaches the holder's device as the server's
//! own error, in its words, with its own status and problem type, and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::http::Raw;
use common::*;
use serde_json::json;
use valuecard_card::testing;
use valuecard_migrate::client::{self, ClientError, Mode, MoveServerLink};
use valuecard_migrate::server::MoveError;

fn server_error(result: Result<impl core::fmt::Debug, ClientError>) -> MoveError {
    match result {
        Err(ClientError::Server(error)) => error,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wrong_password_or_unknown_user_is_refused_alike() {
    let mut rig = rig_in_memory();
    for (user, password) in [(USER, "not the password"), ("nobody", PASSWORD), ("", "")] {
        let error = rig.client.start(user, password, Mode::Upload).unwrap_err();
        assert!(matches!(error, MoveError::WrongPassword), "{error:?}");
        assert_eq!(error.to_string(), "wrong user ID or password");
        let error = server_error(client::run(
            &rig.client,
            &mut rig.old,
            user,
            password,
            Mode::Upload,
            &mut |_| {},
        ));
        assert!(matches!(error, MoveError::WrongPassword), "{error:?}");
    }
    let error = rig
        .client
        .register_chip(USER, "not the password", &testing::card_id(3))
        .unwrap_err();
    assert!(matches!(error, MoveError::WrongPassword), "{error:?}");

    let raw = Raw::new(&rig.system.borrow().url(), &rig.system.borrow().pin());
    let answer = raw.post_json(
        "/v1/sessions",
        &json!({"user_id": USER, "password": "not the password", "mode": "upload"}),
    );
    assert_eq!(
        answer.problem(401, "wrong-password"),
        "wrong user ID or password"
    );
    // Nothing was started: the chip is untouched.
    assert_eq!(rig.copies_held(), 0);
    assert_one_home_for_everything(&rig);
}

#[test]
fn an_unknown_chip_and_another_users_chip_are_refused() {
    let mut rig = rig_in_memory();
    let mut stranger = Reader::with_card("stranger", card(3, 1_000));
    let error = server_error(run(&rig.client, &mut stranger, Mode::Upload));
    assert!(matches!(error, MoveError::UnknownChip), "{error:?}");
    assert_eq!(
        error.to_string(),
        "this chip is not registered with the move server"
    );

    // Another user's chip: refused to both the registration and a move.
    rig.client.create_user("taro", "another password").unwrap();
    rig.client
        .register_chip("taro", "another password", &testing::card_id(3))
        .unwrap();
    let error = rig
        .client
        .register_chip(USER, PASSWORD, &testing::card_id(3))
        .unwrap_err();
    assert!(matches!(error, MoveError::NotYourChip), "{error:?}");
    let error = server_error(run(&rig.client, &mut stranger, Mode::Upload));
    assert!(matches!(error, MoveError::NotYourChip), "{error:?}");
    assert_eq!(error.to_string(), "this chip belongs to another user");
    let error = server_error(client::run(
        &rig.client,
        &mut rig.old,
        "taro",
        "another password",
        Mode::Upload,
        &mut |_| {},
    ));
    assert!(matches!(error, MoveError::NotYourChip), "{error:?}");

    // A user ID taken, a malformed one, a short password.
    let error = rig.client.create_user(USER, "yet another one").unwrap_err();
    assert!(matches!(error, MoveError::UserExists), "{error:?}");
    let error = rig
        .client
        .create_user("no spaces please", "a password")
        .unwrap_err();
    assert!(matches!(error, MoveError::Invalid(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "a user ID is 1 to 64 letters, digits and . - _ @"
    );
    let error = rig.client.create_user("jiro", "short").unwrap_err();
    assert_eq!(error.to_string(), "a password is 8 to 256 bytes");

    // Nothing of any of this moved anything.
    assert_eq!(rig.copies_held(), 0);
    assert_one_home_for_everything(&rig);
    assert_eq!(balance(stranger.card().unwrap()), 1_000);
    assert_eq!(key_state(stranger.card().unwrap(), PURSE), None);
}

#[test]
fn an_unknown_session_or_move_is_not_found() {
    let rig = rig_in_memory();
    let error = rig.client.next(&[9; 16], &[0x90, 0x00]).unwrap_err();
    assert!(matches!(error, MoveError::NoSession), "{error:?}");
    assert_eq!(error.to_string(), "no such session: start again");
    let error = rig.client.status(&[9; 16]).unwrap_err();
    assert!(matches!(error, MoveError::UnknownMove), "{error:?}");

    let raw = Raw::new(&rig.system.borrow().url(), &rig.system.borrow().pin());
    raw.post_json(
        &format!("/v1/sessions/{}/next", hex::encode([9; 16])),
        &json!({"response": "9000"}),
    )
    .problem(404, "no-session");
    raw.get(&format!("/v1/moves/{}", hex::encode([9; 16])), None)
        .problem(404, "unknown-move");
    let started = rig.client.start(USER, PASSWORD, Mode::Upload).unwrap();
    // A chip's answer that is not an APDU answer.
    let answer = raw.post_json(
        &format!("/v1/sessions/{}/next", hex::encode(started.session)),
        &json!({"response": "90"}),
    );
    assert_eq!(
        answer.problem(422, "card-answer"),
        "the chip's answer does not fit: not an APDU answer"
    );
    // A chip's refusal, with its status word.
    let answer = raw.post_json(
        &format!("/v1/sessions/{}/next", hex::encode(started.session)),
        &json!({"response": "6a82"}),
    );
    answer.problem(422, "card-status");
    assert_eq!(answer.body["status_word"], "6A82");
    let error = rig
        .client
        .next(&started.session, &[0x6A, 0x82])
        .unwrap_err();
    assert!(
        matches!(error, MoveError::Card(sw) if sw.0 == 0x6A82),
        "{error:?}"
    );
}
