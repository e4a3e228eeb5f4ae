//! Attacks on a move, each performed: another user's password, a replayed upload meant to
//! put the value on a second chip, a chip that is not the destination, a relay that alters
//! what it carries, and the old chip used at a terminal during and after the move.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Mutex;

use common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_core::apdu::Command;
use valuecard_core::messages::services::{KeyState, ServiceKind, SERVICES_AID};
use valuecard_core::StatusWord;
use valuecard_migrate::client::{self, ClientError, Mode, MoveServerLink, SessionId};
use valuecard_migrate::provider::{ProviderError, Turn};
use valuecard_migrate::sam::AdminSam;
use valuecard_migrate::server::{accounts, MoveError, Next, Started};
use valuecard_reader::CardReader;

fn server_error(result: Result<client::Outcome, ClientError>) -> MoveError {
    match result {
        Err(ClientError::Server(error)) => error,
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

#[test]
fn a_move_needs_the_owners_password_and_a_registered_chip() {
    let mut world = World::new();
    world.server.with_db(|_, db| {
        accounts::create_user(db, "taro", "another password", 0, &mut OsRng).unwrap();
    });
    // Another user's password for this user: refused before the chip is touched.
    let wrong = client::run(
        &world.server,
        &mut world.old,
        USER,
        "another password",
        Mode::Upload,
        &mut |_| {},
    );
    assert!(matches!(server_error(wrong), MoveError::WrongPassword));
    let unknown = client::run(
        &world.server,
        &mut world.old,
        "nobody",
        PASSWORD,
        Mode::Upload,
        &mut |_| {},
    );
    assert!(matches!(server_error(unknown), MoveError::WrongPassword));
    // Another user with their own password and this user's chip: refused.
    let theirs = client::run(
        &world.server,
        &mut world.old,
        "taro",
        "another password",
        Mode::Upload,
        &mut |_| {},
    );
    assert!(matches!(server_error(theirs), MoveError::NotYourChip));
    // A chip nobody registered.
    let mut stranger = Reader::with_card("stranger", card(3, 100));
    for p in &world.providers {
        p.provider()
            .issue_area(world.admin.as_ref(), &mut stranger, today(), &mut OsRng)
            .unwrap();
    }
    let unregistered = client::run(
        &world.server,
        &mut stranger,
        USER,
        PASSWORD,
        Mode::Upload,
        &mut |_| {},
    );
    assert!(matches!(server_error(unregistered), MoveError::UnknownChip));
    // Nothing moved.
    for service in SERVICES {
        assert_eq!(
            key_state(world.chip(Which::Old), service),
            Some(KeyState::Main)
        );
    }
    assert_eq!(world.copies_held(), 0);
    assert_one_home_for_everything(&world);
}

#[test]
fn a_replayed_upload_never_puts_the_value_on_a_second_chip() {
    let mut world = World::new();
    world.upload().unwrap();
    // The download to the new chip, every command and answer kept.
    let mut recording = RecordingReader {
        inner: &mut world.new,
        seen: Vec::new(),
    };
    client::run(
        &world.server,
        &mut recording,
        USER,
        PASSWORD,
        Mode::Download,
        &mut |_| {},
    )
    .unwrap();
    let captured = recording.seen;
    assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);

    // 1. The move server refuses to move the old chip a second time.
    assert!(matches!(
        server_error(world.upload()),
        MoveError::AlreadyMoved
    ));

    // 2. A provider asked directly for a second upload (a second move made up by a
    // dishonest server): the old chip exports for no other move.
    let tickets = world.provider(TICKETS).clone();
    let second_move = [0x77; 16];
    world
        .old
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(SERVICES_AID.to_vec())
                .with_le(256),
        )
        .unwrap();
    let old_id = testing::card_id(1);
    let old_certificate = testing::card_certificate(1);
    let mut exchange = tickets.with_db(|p, db| {
        p.upload(
            db,
            Turn {
                move_id: &second_move,
                card: &old_id,
                now: 0,
                today: today(),
            },
            Some(&old_certificate),
            None,
            &mut OsRng,
        )
    });
    let refused = loop {
        match exchange {
            Ok(valuecard_migrate::provider::Exchange::Apdu(apdu)) => {
                let answer = world.old.transmit_raw(&apdu).unwrap();
                exchange = tickets.with_db(|p, db| {
                    p.upload(
                        db,
                        Turn {
                            move_id: &second_move,
                            card: &old_id,
                            now: 0,
                            today: today(),
                        },
                        Some(&old_certificate),
                        Some(&answer),
                        &mut OsRng,
                    )
                });
            }
            Ok(valuecard_migrate::provider::Exchange::Done) => {
                panic!("a second upload went through")
            }
            Err(error) => break error,
        }
    };
    assert!(
        matches!(refused, ProviderError::Card(sw) if sw == StatusWord::CONDITIONS_NOT_SATISFIED),
        "{refused}"
    );
    assert_eq!(world.copies_held(), 0);

    // 3. The captured download replayed to a second new chip, even one formatted on
    // temporary keys for every service: nothing in it opens there.
    let mut second = Reader::with_card("second", card(3, 0));
    for p in &world.providers {
        let (main, temporary) = p
            .provider()
            .key_packages(&testing::card_certificate(3), today(), &mut OsRng)
            .unwrap();
        second
            .exchange(
                &Command::new(0x00, 0xA4, 0x04, 0x00)
                    .with_data(SERVICES_AID.to_vec())
                    .with_le(256),
            )
            .unwrap();
        let challenge: [u8; 16] = second
            .exchange(&Command::new(0x00, 0x84, 0, 0).with_le(16))
            .unwrap()
            .data
            .try_into()
            .unwrap();
        let format = world
            .admin
            .format_area(
                &testing::card_id(3),
                &challenge,
                p.provider().format(),
                KeyState::Temporary,
                main,
                temporary,
            )
            .unwrap();
        let answer = second
            .exchange(&Command::new(0x80, 0xE0, 0, 0).with_data(format.encode()))
            .unwrap();
        assert!(answer.sw.is_success(), "{}", answer.sw);
    }
    let mut imports_refused = 0;
    for (apdu, _) in &captured {
        let answer = second.transmit_raw(apdu).unwrap();
        if apdu[1] == 0xC2 {
            assert_ne!(&answer[answer.len() - 2..], &[0x90, 0x00]);
            imports_refused += 1;
        }
    }
    assert_eq!(imports_refused, 3);
    assert_eq!(balance(second.card().unwrap()), 0);
    for service in [TICKETS, POINTS] {
        let kind = if service == TICKETS {
            ServiceKind::Tickets
        } else {
            ServiceKind::Points
        };
        assert_eq!(
            content(second.card().unwrap(), service),
            valuecard_core::messages::services::AreaContent::empty(kind)
        );
    }
}

#[test]
fn a_chip_that_is_not_the_registered_destination_is_refused() {
    let mut world = World::new();
    let uploaded = world.upload().unwrap();
    // The download began on the new chip (its first area formatted): it is the destination.
    assert!(world.run_cut(Which::New, Mode::Download, 4, true).is_err());
    let mut other = Reader::with_card("other", card(3, 0));
    world.server.with_db(|_, db| {
        accounts::register_chip(db, USER, &testing::card_id(3)).unwrap();
    });
    let refused = client::run(
        &world.server,
        &mut other,
        USER,
        PASSWORD,
        Mode::Download,
        &mut |_| {},
    );
    assert!(matches!(server_error(refused), MoveError::WrongDestination));
    // The old chip is not a destination either.
    assert!(matches!(
        server_error(world.run(Which::Old, Mode::Download)),
        MoveError::WrongDestination
    ));
    // The purse provider's download began on the new chip (its copy bound there): asked
    // directly for the other chip, the provider refuses too, whatever a server says.
    assert!(world.run_cut(Which::New, Mode::Download, 10, true).is_err());
    let purse = world.provider(PURSE).clone();
    let other_id = testing::card_id(3);
    let direct = purse.with_db(|p, db| {
        p.download(
            db,
            Turn {
                move_id: &uploaded.move_id,
                card: &other_id,
                now: 0,
                today: today(),
            },
            None,
            &mut OsRng,
        )
    });
    assert!(
        matches!(direct, Err(ProviderError::WrongDestination)),
        "{direct:?}"
    );
    assert_eq!(balance(other.card().unwrap()), 0);
    world.run_until_done(Which::New, Mode::Download, 2);
    assert_one_home_for_everything(&world);
}

/// The move server's link as a relay that flips one byte of the `target`-th command it
/// hands to the device, or of the answer it carries back.
struct AlteringRelay<'a> {
    inner: &'a valuecard_migrate::server::LocalMoveServer,
    calls: Mutex<usize>,
    target: usize,
    answer: bool,
}

impl MoveServerLink for AlteringRelay<'_> {
    fn start(&self, user_id: &str, password: &str, mode: Mode) -> Result<Started, MoveError> {
        self.inner.start(user_id, password, mode)
    }

    fn next(&self, session: &SessionId, response: &[u8]) -> Result<Next, MoveError> {
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        let mut response = response.to_vec();
        if self.answer && *calls == self.target && response.len() > 4 {
            response[1] ^= 0x01;
        }
        let next = self.inner.next(session, &response)?;
        match next {
            Next::Apdu { mut apdu, progress } if !self.answer && *calls == self.target => {
                // The last byte of the data (before Le): inside the sealed message.
                let at = apdu.len() - 4;
                apdu[at] ^= 0x01;
                Ok(Next::Apdu { apdu, progress })
            }
            other => Ok(other),
        }
    }
}

#[test]
fn a_relay_that_alters_a_sealed_message_is_refused_and_changes_nothing() {
    // Counting the device's calls: in the upload, 3 carries the answer to GET CHALLENGE and
    // gives SWITCH KEYS, 6 gives EXPORT AREA and 7 carries its sealed answer; in the
    // download, 3 gives the first FORMAT AREA, 10 READ AREA, 11 carries its answer and
    // gives IMPORT AREA, 12 carries the import's sealed receipt.
    let cases = [
        (Mode::Upload, 3, false),
        (Mode::Upload, 6, false),
        (Mode::Upload, 7, true),
        (Mode::Download, 3, false),
        (Mode::Download, 10, false),
        (Mode::Download, 11, false),
        (Mode::Download, 11, true),
        (Mode::Download, 12, true),
    ];
    for (mode, target, answer) in cases {
        {
            let mut world = World::new();
            if mode == Mode::Download {
                world.upload().unwrap();
            }
            let copies_before = world.copies_held();
            let relay = AlteringRelay {
                inner: &world.server,
                calls: Mutex::new(0),
                target,
                answer,
            };
            let reader = if mode == Mode::Upload {
                &mut world.old
            } else {
                &mut world.new
            };
            let altered = client::run(&relay, reader, USER, PASSWORD, mode, &mut |_| {});
            let error = server_error(altered);
            assert!(
                matches!(
                    error,
                    MoveError::ProviderRefused { .. } | MoveError::Card(_) | MoveError::Answer(_)
                ),
                "{mode:?} at {target}, answer {answer}: {error}"
            );
            assert_eq!(world.copies_held(), copies_before);
            // Carried faithfully, the same move finishes.
            world.run_until_done(Which::Old, Mode::Upload, 2);
            world.run_until_done(Which::New, Mode::Download, 2);
            assert_one_home_for_everything(&world);
            assert_eq!(balance(world.chip(Which::New)), OLD_BALANCE + NEW_BALANCE);
        }
    }
}

#[test]
fn the_old_chip_is_refused_at_a_terminal_during_and_after_the_move() {
    let mut world = World::new();
    assert_eq!(initialize_purchase(&mut world.old).sw, StatusWord::SUCCESS);
    // During: right after S3 (the lock) and after the whole upload.
    assert!(world.run_cut(Which::Old, Mode::Upload, 4, false).is_err());
    assert_eq!(
        key_state(world.chip(Which::Old), PURSE),
        Some(KeyState::Temporary)
    );
    assert_eq!(
        initialize_purchase(&mut world.old).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    world.upload().unwrap();
    assert_eq!(
        initialize_purchase(&mut world.old).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    // The new chip during its download: its purse is on temporary keys as well.
    assert!(world.run_cut(Which::New, Mode::Download, 18, true).is_err());
    assert_eq!(
        initialize_purchase(&mut world.new).sw,
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    world.download().unwrap();
    // After: the old chip refused, its value intact as a backup; the new one accepted.
    let refused = initialize_purchase(&mut world.old);
    assert_eq!(refused.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    assert_eq!(balance(world.chip(Which::Old)), OLD_BALANCE);
    assert_eq!(initialize_purchase(&mut world.new).sw, StatusWord::SUCCESS);
    // The purse's SELECT says the old purse is deactivated.
    let selected = world
        .old
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(valuecard_core::messages::purse::PURSE_AID.to_vec())
                .with_le(256),
        )
        .unwrap();
    assert_eq!(selected.sw, StatusWord::FILE_DEACTIVATED);
}
