//! A power cut at every write of FORMAT AREA, SWITCH KEYS, EXPORT AREA, IMPORT AREA and
//! UPDATE AREA: the card powers up with the whole old state or the whole new one, and the
//! command run again in a new session brings it to the new state exactly once.

use super::*;
use valuecard_core::messages::services::{
    ExportRequest, ExportedArea, ImportReceipt, ImportRequest, MigrationRecord, PurseValue,
    ServiceOperation, TicketBook, UpdateArea,
};

/// The torn write left empty, half-written or whole.
const TEARS: [(usize, usize); 3] = [(0, 1), (1, 2), (1, 1)];

/// A host challenge fixed, so that a scene set up twice is the same byte for byte.
const HOST_CHALLENGE: Challenge = [0x48; 16];

/// A chip and the command about to be sent to it.
struct Scene {
    chip: Chip,
    command: Command,
}

/// Runs the scene's command once without a cut to learn its writes and the state it
/// leaves, then once per write with power cut there. After power-up the card must hold the
/// old state or the new one, byte for byte; `retry` then runs the command again (told
/// whether the first run landed) and `done` checks the outcome against the clean run's
/// state.
fn tear_every_write(
    setup: impl Fn() -> Scene,
    retry: impl Fn(&mut Chip, bool),
    done: impl Fn(&Chip, &[u8]),
) {
    let Scene { mut chip, command } = setup();
    let old = chip.stored_bytes();
    let writes_before = chip.writes();
    assert_eq!(
        chip.send(command).sw,
        StatusWord::SUCCESS,
        "the clean run failed"
    );
    let writes = chip.writes() - writes_before;
    let new = chip.stored_bytes();
    assert_ne!(old, new);
    assert!(writes > 1);

    let (mut kept_old, mut got_new) = (0, 0);
    for cut in 1..=writes + 1 {
        for (numerator, denominator) in TEARS {
            let Scene { mut chip, command } = setup();
            assert_eq!(chip.stored_bytes(), old, "the scene is not deterministic");
            chip.card
                .eeprom_mut()
                .cut_power_at(cut, numerator, denominator);
            match chip.card.process(&command.encode()) {
                Err(CardError::PowerLost) => chip.power_up(),
                Ok(response) => assert_eq!(response.sw, StatusWord::SUCCESS),
                Err(other) => panic!("{other:?}"),
            }
            let now = chip.stored_bytes();
            let landed = if now == old {
                kept_old += 1;
                false
            } else {
                assert!(
                    now == new,
                    "cut {cut} ({numerator}/{denominator}): neither state"
                );
                got_new += 1;
                true
            };
            retry(&mut chip, landed);
            done(&chip, &new);
        }
    }
    assert!(
        kept_old > 0 && got_new > 0,
        "{kept_old} cuts kept the old state, {got_new} the new"
    );
}

fn same_as_clean_run(chip: &Chip, new: &[u8]) {
    assert_eq!(chip.stored_bytes(), new);
}

/// Card 1 with the purse's and TRANSIT's areas on main keys.
fn formatted() -> Chip {
    let mut chip = Chip::new(1, 5_000);
    for service in [PURSE, TRANSIT] {
        assert_eq!(chip.format(service, KeyState::Main).sw, StatusWord::SUCCESS);
    }
    chip
}

fn to_temporary() -> [(Service, KeyState); 2] {
    [(PURSE, KeyState::Temporary), (TRANSIT, KeyState::Temporary)]
}

/// Card 1 after S3: both areas on temporary keys.
fn switched() -> Chip {
    let mut chip = formatted();
    assert_eq!(chip.switch(MOVE, &to_temporary()).sw, StatusWord::SUCCESS);
    chip
}

/// Card 2 after S10: both areas formatted on temporary keys, 1.000 in the purse.
fn new_chip() -> Chip {
    let mut chip = Chip::new(2, 1_000);
    for service in [PURSE, TRANSIT] {
        assert_eq!(
            chip.format(service, KeyState::Temporary).sw,
            StatusWord::SUCCESS
        );
    }
    chip
}

/// `plaintext` for `instruction`, sealed in a new session of `service` in `state` opened
/// with the fixed host challenge.
fn sealed_scene(
    mut chip: Chip,
    service: Service,
    state: KeyState,
    instruction: u8,
    plaintext: impl Fn(&Chip, &ServiceChannel) -> Vec<u8>,
) -> Scene {
    let mut channel = chip.open_with(service, state, HOST_CHALLENGE).unwrap();
    let plaintext = plaintext(&chip, &channel);
    let sealed = channel.seal(instruction, &plaintext).unwrap();
    Scene {
        chip,
        command: services_command(instruction, sealed),
    }
}

#[test]
fn format_area_survives_a_power_cut_at_any_write() {
    let format = |chip: &mut Chip| {
        let challenge = chip.challenge();
        let request = testing::format_area(
            1,
            &challenge,
            TRANSIT.format(),
            KeyState::Main,
            TRANSIT.provider,
            &mut OsRng,
        );
        services_command(ins::FORMAT_AREA, request.encode())
    };
    tear_every_write(
        || {
            let mut chip = Chip::new(1, 5_000);
            assert_eq!(chip.format(PURSE, KeyState::Main).sw, StatusWord::SUCCESS);
            let command = format(&mut chip);
            Scene { chip, command }
        },
        |chip, _| {
            let command = format(chip);
            assert_eq!(chip.send(command).sw, StatusWord::SUCCESS);
            assert_eq!(chip.fci().areas.len(), 2);
        },
        same_as_clean_run,
    );
}

#[test]
fn switch_keys_survives_a_power_cut_at_any_write() {
    tear_every_write(
        || {
            let mut chip = formatted();
            let challenge = chip.challenge();
            let changes = to_temporary()
                .iter()
                .map(|(service, key_state)| KeyChange {
                    service: service.code,
                    key_state: *key_state,
                })
                .collect();
            let request = testing::switch_keys(1, &challenge, MOVE, changes);
            Scene {
                chip,
                command: services_command(ins::SWITCH_KEYS, request.encode()),
            }
        },
        |chip, _| {
            assert_eq!(chip.switch(MOVE, &to_temporary()).sw, StatusWord::SUCCESS);
            assert_eq!(chip.purchase(1), StatusWord::FILE_DEACTIVATED);
        },
        same_as_clean_run,
    );
}

#[test]
fn export_area_survives_a_power_cut_at_any_write() {
    let request = ExportRequest { move_id: MOVE }.encode();
    tear_every_write(
        || {
            sealed_scene(
                switched(),
                PURSE,
                KeyState::Temporary,
                ins::EXPORT_AREA,
                |_, _| request.clone(),
            )
        },
        |chip, _| {
            let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
            let answer = chip
                .secured(&mut channel, ins::EXPORT_AREA, &request)
                .unwrap();
            let exported = ExportedArea::decode(&answer).unwrap();
            let value = PurseValue {
                card_id: testing::card_id(1),
                balance: amount(5_000),
                counter: 0,
            };
            assert_eq!(exported.content, AreaContent::Purse(value.clone()));
            testing::card_keys(1)
                .signing
                .public_key()
                .verify(
                    &ExportedArea::purse_signed_message(&MOVE, &value.card_id, value.balance, 0),
                    &exported.card_signature.unwrap(),
                )
                .unwrap();
        },
        |chip, new| {
            same_as_clean_run(chip, new);
            assert_eq!(chip.area(PURSE).exported_for, Some(MOVE));
        },
    );
}

fn moved_tickets() -> AreaContent {
    AreaContent::Tickets(TicketBook {
        tickets: vec![carnet(7, 9), carnet(8, 2)],
    })
}

#[test]
fn a_tickets_import_survives_a_power_cut_at_any_write() {
    let request = ImportRequest {
        move_id: MOVE,
        source: testing::card_id(1),
        content: moved_tickets(),
        record: None,
    }
    .encode();
    tear_every_write(
        || {
            sealed_scene(
                new_chip(),
                TRANSIT,
                KeyState::Temporary,
                ins::IMPORT_AREA,
                |_, _| request.clone(),
            )
        },
        |chip, _| {
            let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
            let answer = chip
                .secured(&mut channel, ins::IMPORT_AREA, &request)
                .unwrap();
            let receipt = ImportReceipt::decode(&answer).unwrap();
            assert_eq!(receipt.digest, moved_tickets().digest());
        },
        |chip, new| {
            same_as_clean_run(chip, new);
            assert_eq!(chip.area(TRANSIT).content, Some(moved_tickets()));
        },
    );
}

/// IMPORT AREA of the old purse's 10.000 for the session of `channel` on `chip`.
fn purse_import(chip: &Chip, channel: &ServiceChannel) -> Vec<u8> {
    let purse = chip.stored();
    let binding = channel.binding();
    let (signer, certificate) = testing::service_transfer(PURSE.provider);
    let record = MigrationRecord {
        card_id: chip.id(),
        writer: certificate.subject(),
        challenge_host: binding.host_challenge,
        challenge_card: binding.card_challenge,
        counter: purse.counter + 1,
        amount: amount(10_000),
        balance_after: purse.balance.checked_add(amount(10_000)).unwrap(),
        writer_sequence: 12,
        date: testing::today(),
    };
    ImportRequest {
        move_id: MOVE,
        source: testing::card_id(1),
        content: AreaContent::Purse(PurseValue {
            card_id: testing::card_id(1),
            balance: amount(10_000),
            counter: 4,
        }),
        record: Some(record.usage_record(signer.sign(&record.signed_message()))),
    }
    .encode()
}

#[test]
fn a_purse_import_survives_a_power_cut_at_any_write_and_credits_once() {
    tear_every_write(
        || {
            sealed_scene(
                new_chip(),
                PURSE,
                KeyState::Temporary,
                ins::IMPORT_AREA,
                purse_import,
            )
        },
        |chip, _| {
            // The transfer SAM does not know whether the first try landed: it tries again
            // with a record for the new session.
            let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
            let request = purse_import(chip, &channel);
            chip.secured(&mut channel, ins::IMPORT_AREA, &request)
                .unwrap();
        },
        |chip, _| {
            let purse = chip.stored();
            assert_eq!((purse.balance, purse.counter), (amount(11_000), 1));
            assert_eq!(purse.log.len(), 1);
            assert!(purse.services.area(PURSE.code).unwrap().imported.is_some());
        },
    );
}

#[test]
fn update_area_survives_a_power_cut_at_any_write() {
    let issue = UpdateArea {
        operation: ServiceOperation::IssueTicket(carnet(7, 10)),
    }
    .encode();
    tear_every_write(
        || {
            let mut chip = Chip::new(1, 0);
            assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
            sealed_scene(chip, TRANSIT, KeyState::Main, ins::UPDATE_AREA, |_, _| {
                issue.clone()
            })
        },
        |chip, landed| {
            // Issued once: if the first try landed, the second is a duplicate.
            let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
            let outcome = chip.secured(&mut channel, ins::UPDATE_AREA, &issue);
            if landed {
                assert_eq!(outcome, Err(StatusWord::WRONG_DATA));
            } else {
                outcome.unwrap();
            }
        },
        |chip, new| {
            same_as_clean_run(chip, new);
            assert_eq!(
                chip.area(TRANSIT).content,
                Some(AreaContent::Tickets(TicketBook {
                    tickets: vec![carnet(7, 10)]
                }))
            );
        },
    );
}
