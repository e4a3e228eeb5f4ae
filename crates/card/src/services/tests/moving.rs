//! The old chip in a move: SWITCH KEYS to temporary keys stops normal use and every change
//! of the purse's value (S3), EXPORT AREA uploads each area once per move (S7), and SWITCH
//! KEYS back to main keys rolls the move back.

use super::*;
use valuecard_core::messages::online::{
    ins as online_ins, InitializeUpdate, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::InitializeLoad;
use valuecard_core::messages::services::{
    ExportRequest, ExportedArea, PurseValue, ServiceOperation, TicketBook, UpdateArea,
};

/// Card 1 with 10.000 in its purse, the online application's key installed, the purse's and
/// TRANSIT's areas on main keys and one ticket issued.
fn chip() -> Chip {
    let mut chip = Chip::new(1, 10_000);
    assert_eq!(chip.select(&ONLINE_AID).sw, StatusWord::SUCCESS);
    let installation = testing::online_key_installation(1, 1, &mut OsRng);
    let response = chip.send(
        Command::new(CLA_ONLINE, online_ins::INSTALL_KEY, 0, 0)
            .with_data(installation.encode())
            .with_le(256),
    );
    assert_eq!(response.sw, StatusWord::SUCCESS);
    chip.fci();
    for service in [PURSE, TRANSIT] {
        assert_eq!(chip.format(service, KeyState::Main).sw, StatusWord::SUCCESS);
    }
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let issue = UpdateArea {
        operation: ServiceOperation::IssueTicket(carnet(7, 10)),
    };
    chip.secured(&mut channel, ins::UPDATE_AREA, &issue.encode())
        .unwrap();
    chip
}

fn to(state: KeyState) -> [(Service, KeyState); 2] {
    [(PURSE, state), (TRANSIT, state)]
}

/// INITIALIZE UPDATE of the online application: its status.
fn online_session_status(chip: &mut Chip) -> StatusWord {
    assert_eq!(chip.select(&ONLINE_AID).sw, StatusWord::SUCCESS);
    let response = chip.send(
        Command::new(CLA_ONLINE, online_ins::INITIALIZE_UPDATE, 0, 0)
            .with_data(
                InitializeUpdate {
                    host_challenge: fresh_challenge(),
                }
                .encode(),
            )
            .with_le(256),
    );
    chip.fci();
    response.sw
}

/// INITIALIZE LOAD after SELECT of the purse: its status.
fn load_status(chip: &mut Chip) -> StatusWord {
    chip.select(&PURSE_AID);
    let response = chip.send(
        Command::new(0x80, purse_ins::INITIALIZE_LOAD, 0, 0)
            .with_data(
                InitializeLoad {
                    challenge_dispenser: fresh_challenge(),
                    amount: amount(500),
                    dispenser_id: DeviceId(*b"DISPENSR"),
                }
                .encode(),
            )
            .with_le(65_536),
    );
    chip.fci();
    response.sw
}

/// EXPORT AREA for `move_id` in a new transfer-SAM session.
fn export(chip: &mut Chip, service: Service, move_id: MoveId) -> Result<ExportedArea, StatusWord> {
    let mut channel = chip.open(service, KeyState::Temporary).unwrap();
    let answer = chip.secured(
        &mut channel,
        ins::EXPORT_AREA,
        &ExportRequest { move_id }.encode(),
    )?;
    Ok(ExportedArea::decode(&answer).unwrap())
}

#[test]
fn on_temporary_keys_normal_use_and_the_purses_value_stop() {
    let mut chip = chip();
    // Before the move everything works.
    assert_eq!(online_session_status(&mut chip), StatusWord::SUCCESS);
    assert_eq!(load_status(&mut chip), StatusWord::SUCCESS);
    assert_eq!(chip.select(&PURSE_AID).sw, StatusWord::SUCCESS);
    chip.fci();

    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );
    let stored = chip.stored();
    for service in [PURSE, TRANSIT] {
        assert_eq!(
            stored.services.area(service.code).unwrap().key_state,
            KeyState::Temporary
        );
    }
    assert!(chip
        .fci()
        .areas
        .iter()
        .all(|area| area.key_state == KeyState::Temporary && area.exported_for.is_none()));

    // The normal SAMs no longer authenticate; the transfer SAMs do.
    for service in [PURSE, TRANSIT] {
        assert_eq!(
            chip.open(service, KeyState::Main).unwrap_err(),
            ChannelError::CardCryptogram
        );
        assert!(chip.open(service, KeyState::Temporary).is_ok());
    }
    // The purse answers SELECT as deactivated, and refuses purchase and load.
    let selected = chip.select(&PURSE_AID);
    assert_eq!(selected.sw, StatusWord::FILE_DEACTIVATED);
    assert_eq!(
        chip.purchase_selected(100, StatusWord::SUCCESS),
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    chip.fci();
    assert_eq!(chip.purchase(100), StatusWord::FILE_DEACTIVATED);
    assert_eq!(load_status(&mut chip), StatusWord::CONDITIONS_NOT_SATISFIED);
    // No online session opens.
    assert_eq!(
        online_session_status(&mut chip),
        StatusWord::CONDITIONS_NOT_SATISFIED
    );
    let stored = chip.stored();
    assert_eq!((stored.balance, stored.counter), (amount(10_000), 0));
}

#[test]
fn update_area_is_refused_on_temporary_keys() {
    let mut chip = chip();
    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );
    let before = chip.stored_bytes();
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    let ride = UpdateArea {
        operation: ServiceOperation::UseRide {
            ticket_id: 7,
            date: ride_day(),
        },
    };
    assert_eq!(
        chip.secured(&mut channel, ins::UPDATE_AREA, &ride.encode()),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(chip.stored_bytes(), before);
    // The transfer SAM may read what it moves.
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    assert_eq!(
        chip.read(&mut channel).unwrap(),
        AreaContent::Tickets(TicketBook {
            tickets: vec![carnet(7, 10)]
        })
    );
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn a_purse_with_an_unsettled_transfer_is_not_exported() {
    use crate::state::SentTransfer;
    use valuecard_core::messages::transfer::PendingTransfer;
    // Card 1 sent 7.00 to card 3 and has no proof back yet: the amount is reserved, and may
    // already be on card 3.
    let mut state = testing::personalized_card(1, amount(10_000), Some(&testing::key_set(1, 5, 1)));
    if let PersistentState::Personalized(purse) = &mut state {
        purse.transfer.sent = Some(SentTransfer {
            pending: PendingTransfer {
                destination: testing::card_id(3),
                destination_counter: 0,
                challenge_source: [0x37; 16],
                amount: amount(700),
                key_id: 1,
            },
            key: testing::transfer_key(1),
        });
    }
    let mut chip = Chip::with_state(1, state);
    assert_eq!(chip.format(PURSE, KeyState::Main).sw, StatusWord::SUCCESS);
    assert_eq!(
        chip.switch(MOVE, &[(PURSE, KeyState::Temporary)]).sw,
        StatusWord::SUCCESS
    );
    let before = chip.stored_bytes();
    assert_eq!(
        export(&mut chip, PURSE, MOVE),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(chip.stored_bytes(), before);
    assert_eq!(chip.area(PURSE).exported_for, None);
    // The move is rolled back; the purse is whole again.
    assert_eq!(
        chip.switch(MOVE, &[(PURSE, KeyState::Main)]).sw,
        StatusWord::SUCCESS
    );
    assert_eq!(chip.select(&PURSE_AID).sw, StatusWord::SUCCESS);
}

#[test]
fn a_blocked_purse_is_not_exported() {
    let mut chip = chip();
    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );
    let mut purse = chip.stored();
    purse.blocked = true;
    let mut chip = Chip::with_state(1, PersistentState::Personalized(Box::new(purse)));
    let before = chip.stored_bytes();
    assert_eq!(
        export(&mut chip, PURSE, MOVE),
        Err(StatusWord::FUNCTION_NOT_SUPPORTED)
    );
    assert_eq!(chip.stored_bytes(), before);
    // Its other services still move.
    assert!(export(&mut chip, TRANSIT, MOVE).is_ok());
}

#[test]
fn export_uploads_each_area_for_one_move() {
    let mut chip = chip();
    // Not on main keys.
    let mut channel = chip.open(PURSE, KeyState::Main).unwrap();
    assert_eq!(
        chip.secured(
            &mut channel,
            ins::EXPORT_AREA,
            &ExportRequest { move_id: MOVE }.encode()
        ),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );

    // The purse: its value, signed by the card.
    let exported = export(&mut chip, PURSE, MOVE).unwrap();
    let value = PurseValue {
        card_id: testing::card_id(1),
        balance: amount(10_000),
        counter: 0,
    };
    assert_eq!(
        (exported.move_id, exported.card_id, exported.service),
        (MOVE, testing::card_id(1), PURSE.code)
    );
    assert_eq!(exported.content, AreaContent::Purse(value.clone()));
    let signature = exported.card_signature.unwrap();
    testing::card_keys(1)
        .signing
        .public_key()
        .verify(
            &ExportedArea::purse_signed_message(
                &MOVE,
                &value.card_id,
                value.balance,
                value.counter,
            ),
            &signature,
        )
        .unwrap();
    // Over another move, another balance or counter, the signature does not verify.
    let public = testing::card_keys(1).signing.public_key();
    for message in [
        ExportedArea::purse_signed_message(&OTHER_MOVE, &value.card_id, value.balance, 0),
        ExportedArea::purse_signed_message(&MOVE, &value.card_id, amount(10_001), 0),
        ExportedArea::purse_signed_message(&MOVE, &value.card_id, value.balance, 1),
    ] {
        assert!(public.verify(&message, &signature).is_err());
    }
    assert_eq!(chip.area(PURSE).exported_for, Some(MOVE));

    // The tickets, unsigned.
    let tickets = export(&mut chip, TRANSIT, MOVE).unwrap();
    assert_eq!(
        tickets.content,
        AreaContent::Tickets(TicketBook {
            tickets: vec![carnet(7, 10)]
        })
    );
    assert_eq!(tickets.card_signature, None);
    assert_eq!(chip.area(TRANSIT).exported_for, Some(MOVE));
    assert!(chip
        .fci()
        .areas
        .iter()
        .all(|area| area.exported_for == Some(MOVE)));

    // Another move is refused; the same move again gets the same, without a write.
    let marked = chip.stored_bytes();
    for service in [PURSE, TRANSIT] {
        assert_eq!(
            export(&mut chip, service, OTHER_MOVE),
            Err(StatusWord::CONDITIONS_NOT_SATISFIED)
        );
        assert_eq!(chip.stored_bytes(), marked);
    }
    let writes = chip.writes();
    assert_eq!(export(&mut chip, PURSE, MOVE).unwrap(), exported);
    assert_eq!(export(&mut chip, TRANSIT, MOVE).unwrap(), tickets);
    assert_eq!(chip.writes(), writes);
    assert_eq!(chip.stored_bytes(), marked);
}

#[test]
fn switching_back_to_main_keys_rolls_the_move_back() {
    let mut chip = chip();
    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );
    export(&mut chip, PURSE, MOVE).unwrap();
    export(&mut chip, TRANSIT, MOVE).unwrap();

    // Switching to the state an area already has changes nothing.
    let marked = chip.stored_bytes();
    let writes = chip.writes();
    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );
    assert_eq!(chip.writes(), writes);
    assert_eq!(chip.stored_bytes(), marked);

    // The rollback: main keys, the marks gone.
    assert_eq!(
        chip.switch(MOVE, &to(KeyState::Main)).sw,
        StatusWord::SUCCESS
    );
    let stored = chip.stored();
    for service in [PURSE, TRANSIT] {
        let area = stored.services.area(service.code).unwrap();
        assert_eq!((area.key_state, area.exported_for), (KeyState::Main, None));
    }
    assert!(chip
        .fci()
        .areas
        .iter()
        .all(|area| area.key_state == KeyState::Main && area.exported_for.is_none()));

    // Normal use again: a ride, a purchase, a load, an online session.
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let ride = UpdateArea {
        operation: ServiceOperation::UseRide {
            ticket_id: 7,
            date: ride_day(),
        },
    };
    chip.secured(&mut channel, ins::UPDATE_AREA, &ride.encode())
        .unwrap();
    assert_eq!(chip.purchase(1_000), StatusWord::SUCCESS);
    assert_eq!(load_status(&mut chip), StatusWord::SUCCESS);
    assert_eq!(online_session_status(&mut chip), StatusWord::SUCCESS);
    let stored = chip.stored();
    assert_eq!((stored.balance, stored.counter), (amount(9_000), 1));

    // A later move exports afresh, with the value as it is now.
    assert_eq!(
        chip.switch(OTHER_MOVE, &to(KeyState::Temporary)).sw,
        StatusWord::SUCCESS
    );
    let exported = export(&mut chip, PURSE, OTHER_MOVE).unwrap();
    assert_eq!(
        exported.content,
        AreaContent::Purse(PurseValue {
            card_id: testing::card_id(1),
            balance: amount(9_000),
            counter: 1,
        })
    );
    assert_eq!(chip.area(PURSE).exported_for, Some(OTHER_MOVE));
    assert_eq!(
        export(&mut chip, TRANSIT, OTHER_MOVE).unwrap().content,
        AreaContent::Tickets(TicketBook {
            tickets: vec![carnet(7, 9)]
        })
    );
}
