//! Normal use on main keys by the provider's normal SAM, and what the session refuses: the
//! other key, the other state's commands, altered, replayed and misdirected messages.

use super::*;
use valuecard_core::messages::services::{
    AreaReadout, ExportRequest, ImportRequest, PointsAccount, ServiceOperation, TicketBook,
    UpdateArea,
};

fn update(operation: ServiceOperation) -> Vec<u8> {
    UpdateArea { operation }.encode()
}

/// UPDATE AREA in `channel`: the new content the card answers.
fn apply(
    chip: &mut Chip,
    channel: &mut ServiceChannel,
    operation: ServiceOperation,
) -> Result<AreaContent, StatusWord> {
    let answer = chip.secured(channel, ins::UPDATE_AREA, &update(operation))?;
    let readout = AreaReadout::decode(&answer).unwrap();
    assert_eq!(
        (readout.card_id, readout.service),
        (chip.id(), channel.binding().service)
    );
    Ok(readout.content)
}

fn book(tickets: Vec<Ticket>) -> AreaContent {
    AreaContent::Tickets(TicketBook { tickets })
}

/// Card 1 with the purse, tickets and points areas on main keys.
fn chip() -> Chip {
    let mut chip = Chip::new(1, 10_000);
    for service in [PURSE, TRANSIT, SHOP] {
        assert_eq!(chip.format(service, KeyState::Main).sw, StatusWord::SUCCESS);
    }
    chip
}

#[test]
fn tickets_are_issued_used_and_read_on_main_keys() {
    let mut chip = chip();
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    assert_eq!(chip.read(&mut channel).unwrap(), book(vec![]));

    let issued = apply(
        &mut chip,
        &mut channel,
        ServiceOperation::IssueTicket(carnet(7, 10)),
    )
    .unwrap();
    assert_eq!(issued, book(vec![carnet(7, 10)]));
    assert_eq!(chip.area(TRANSIT).content, Some(issued));

    let ride = ServiceOperation::UseRide {
        ticket_id: 7,
        date: ride_day(),
    };
    let used = apply(&mut chip, &mut channel, ride).unwrap();
    assert_eq!(used, book(vec![carnet(7, 9)]));
    assert_eq!(chip.read(&mut channel).unwrap(), used);
    assert_eq!(chip.area(TRANSIT).content, Some(used.clone()));

    // A new session (after a power cut) reads the same.
    chip.power_up();
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    assert_eq!(chip.read(&mut channel).unwrap(), used);
    // The other areas are untouched.
    assert_eq!(
        chip.area(SHOP).content,
        AreaContent::empty(ServiceKind::Points)
    );
    assert_eq!(chip.stored().balance, amount(10_000));
}

#[test]
fn points_are_earned_and_redeemed_on_main_keys() {
    let mut chip = chip();
    let mut channel = chip.open(SHOP, KeyState::Main).unwrap();
    let expiry = testing::today().add_days(365);
    let earned = apply(
        &mut chip,
        &mut channel,
        ServiceOperation::EarnPoints {
            points: 1_200,
            expiry,
        },
    )
    .unwrap();
    let redeemed = apply(
        &mut chip,
        &mut channel,
        ServiceOperation::RedeemPoints {
            points: 200,
            date: ride_day(),
        },
    )
    .unwrap();
    assert_eq!(
        (earned, redeemed.clone()),
        (
            AreaContent::Points(PointsAccount {
                points: 1_200,
                expiry
            }),
            AreaContent::Points(PointsAccount {
                points: 1_000,
                expiry
            })
        )
    );
    assert_eq!(chip.area(SHOP).content, Some(redeemed));
}

#[test]
fn the_purse_area_reads_the_purses_value_and_takes_no_operation() {
    let mut chip = chip();
    let mut channel = chip.open(PURSE, KeyState::Main).unwrap();
    let AreaContent::Purse(value) = chip.read(&mut channel).unwrap() else {
        panic!("not the purse's value");
    };
    assert_eq!(
        (value.card_id, value.balance, value.counter),
        (chip.id(), amount(10_000), 0)
    );
    let before = chip.stored_bytes();
    let refused = apply(
        &mut chip,
        &mut channel,
        ServiceOperation::IssueTicket(carnet(1, 1)),
    );
    assert_eq!(refused, Err(StatusWord::CONDITIONS_NOT_SATISFIED));
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn a_refused_operation_changes_nothing_and_ends_the_session() {
    let mut chip = chip();
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    apply(
        &mut chip,
        &mut channel,
        ServiceOperation::IssueTicket(carnet(7, 1)),
    )
    .unwrap();
    let cases = [
        (
            ServiceOperation::IssueTicket(carnet(7, 5)),
            StatusWord::WRONG_DATA,
        ),
        (
            ServiceOperation::UseRide {
                ticket_id: 8,
                date: ride_day(),
            },
            StatusWord::REFERENCED_DATA_NOT_FOUND,
        ),
        (
            ServiceOperation::UseRide {
                ticket_id: 7,
                date: testing::today().add_days(365),
            },
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            ServiceOperation::EarnPoints {
                points: 1,
                expiry: ride_day(),
            },
            StatusWord::WRONG_DATA,
        ),
    ];
    let before = chip.stored_bytes();
    for (operation, sw) in cases {
        let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
        assert_eq!(apply(&mut chip, &mut channel, operation), Err(sw));
        assert_eq!(chip.stored_bytes(), before);
        // The session is over.
        let sealed = channel.seal(ins::READ_AREA, &[]).unwrap();
        let response = chip.send(services_command(ins::READ_AREA, sealed));
        assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    }
    // The last ride is used once, then no more.
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let ride = ServiceOperation::UseRide {
        ticket_id: 7,
        date: ride_day(),
    };
    assert_eq!(
        apply(&mut chip, &mut channel, ride.clone()).unwrap(),
        book(vec![carnet(7, 0)])
    );
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    assert_eq!(
        apply(&mut chip, &mut channel, ride),
        Err(StatusWord::INSUFFICIENT_FUNDS)
    );
    assert_eq!(chip.area(TRANSIT).content, Some(book(vec![carnet(7, 0)])));
}

#[test]
fn the_temporary_key_does_not_open_an_area_on_main_keys() {
    let mut chip = chip();
    let before = chip.stored_bytes();
    // The transfer SAM finds the card's cryptogram wrong...
    assert_eq!(
        chip.open(TRANSIT, KeyState::Temporary).unwrap_err(),
        ChannelError::CardCryptogram
    );
    // ...and a host that answers anyway is refused, and gets no session.
    chip.open_service(TRANSIT, fresh_challenge());
    let response = chip.send(services_command(
        ins::EXTERNAL_AUTHENTICATE,
        ServiceAuthenticate {
            host_cryptogram: [0x5A; 8],
        }
        .encode(),
    ));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    let response = chip.send(services_command(ins::READ_AREA, vec![0; 16]));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // Nor does another area's main key open this one.
    let answer = chip.open_service(TRANSIT, [0x33; 16]);
    let binding = ChannelBinding {
        card_id: chip.id(),
        service: TRANSIT.code,
        key_state: KeyState::Main,
        host_challenge: [0x33; 16],
        card_challenge: answer.card_challenge,
    };
    assert_eq!(
        ServiceChannel::for_host(
            &SHOP.key(1, KeyState::Main),
            binding,
            &answer.card_cryptogram
        )
        .unwrap_err(),
        ChannelError::CardCryptogram
    );
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn secured_commands_need_an_authenticated_session() {
    let mut chip = chip();
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    // EXTERNAL AUTHENTICATE again, or OPEN SERVICE pending: no secured command.
    let sealed = channel.seal(ins::READ_AREA, &[]).unwrap();
    chip.open_service(TRANSIT, fresh_challenge());
    let response = chip.send(services_command(ins::READ_AREA, sealed));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    let response = chip.send(services_command(
        ins::EXTERNAL_AUTHENTICATE,
        ServiceAuthenticate {
            host_cryptogram: [0; 8],
        }
        .encode(),
    ));
    assert_eq!(response.sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    // An area the chip does not have.
    let response = chip.send(services_command(
        ins::OPEN_SERVICE,
        OpenService {
            service: ServiceCode(0x7777),
            host_challenge: fresh_challenge(),
        }
        .encode(),
    ));
    assert_eq!(response.sw, StatusWord::REFERENCED_DATA_NOT_FOUND);
}

#[test]
fn export_and_import_are_refused_on_main_keys() {
    let mut chip = chip();
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    apply(
        &mut chip,
        &mut channel,
        ServiceOperation::IssueTicket(carnet(7, 10)),
    )
    .unwrap();
    let before = chip.stored_bytes();
    let export = ExportRequest { move_id: MOVE }.encode();
    let import = ImportRequest {
        move_id: MOVE,
        source: testing::card_id(9),
        content: book(vec![carnet(1, 1)]),
        record: None,
    }
    .encode();
    for (instruction, plaintext) in [(ins::EXPORT_AREA, export), (ins::IMPORT_AREA, import)] {
        for service in [TRANSIT, PURSE] {
            let mut channel = chip.open(service, KeyState::Main).unwrap();
            assert_eq!(
                chip.secured(&mut channel, instruction, &plaintext),
                Err(StatusWord::CONDITIONS_NOT_SATISFIED)
            );
            assert_eq!(chip.stored_bytes(), before);
        }
    }
    let fci = chip.fci();
    assert!(fci
        .areas
        .iter()
        .all(|area| area.exported_for.is_none() && area.imported_for.is_none()));
}

#[test]
fn an_altered_message_is_refused_and_ends_the_session() {
    let mut chip = chip();
    let before = chip.stored_bytes();
    let plaintext = update(ServiceOperation::IssueTicket(carnet(7, 10)));
    // Every byte of the sealed message matters.
    let length = {
        let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
        channel.seal(ins::UPDATE_AREA, &plaintext).unwrap().len()
    };
    for position in [0, length / 2, length - 1] {
        let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
        let sealed = channel.seal(ins::UPDATE_AREA, &plaintext).unwrap();
        let mut altered = sealed.clone();
        altered[position] ^= 0x01;
        let response = chip.send(services_command(ins::UPDATE_AREA, altered));
        assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        assert!(response.data.is_empty());
        // The genuine message after it finds no session.
        let response = chip.send(services_command(ins::UPDATE_AREA, sealed));
        assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        assert_eq!(chip.stored_bytes(), before);
    }
    // Nor does a message sealed for one instruction open as another.
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let sealed = channel.seal(ins::READ_AREA, &plaintext).unwrap();
    let response = chip.send(services_command(ins::UPDATE_AREA, sealed));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn a_replayed_message_is_refused() {
    let mut chip = chip();
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let sealed = channel
        .seal(
            ins::UPDATE_AREA,
            &update(ServiceOperation::IssueTicket(carnet(7, 10))),
        )
        .unwrap();
    let response = chip.send(services_command(ins::UPDATE_AREA, sealed.clone()));
    assert_eq!(response.sw, StatusWord::SUCCESS);
    let after = chip.stored_bytes();
    // Replayed in the same session, and in the next one.
    let response = chip.send(services_command(ins::UPDATE_AREA, sealed.clone()));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    chip.open(TRANSIT, KeyState::Main).unwrap();
    let response = chip.send(services_command(ins::UPDATE_AREA, sealed));
    assert_eq!(response.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(chip.stored_bytes(), after);
    assert_eq!(chip.area(TRANSIT).content, Some(book(vec![carnet(7, 10)])));
}
