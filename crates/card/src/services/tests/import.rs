//! The new chip in a move: areas formatted on temporary keys (S10), IMPORT AREA once per
//! move (S14), the purse's value credited only by the transfer SAM's record for exactly
//! this card's state and session, and normal use after SWITCH KEYS to main keys (S16).

use super::*;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::messages::purse::{TransactionKind, UsageRecord};
use valuecard_core::messages::services::{
    AreaReadout, ImportReceipt, ImportRequest, MigrationRecord, PurseValue, ServiceOperation,
    TicketBook, UpdateArea,
};

/// What the old chip (card 1) exported for the move.
fn old_tickets() -> AreaContent {
    AreaContent::Tickets(TicketBook {
        tickets: vec![carnet(7, 9), carnet(8, 2)],
    })
}

fn old_purse(minor: u64) -> AreaContent {
    AreaContent::Purse(PurseValue {
        card_id: testing::card_id(1),
        balance: amount(minor),
        counter: 4,
    })
}

/// Card 2 with 1.000 of its own, the purse's and TRANSIT's areas formatted on temporary
/// keys for the move's download.
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

fn import_request(move_id: MoveId, content: AreaContent, record: Option<UsageRecord>) -> Vec<u8> {
    ImportRequest {
        move_id,
        source: testing::card_id(1),
        content,
        record,
    }
    .encode()
}

/// IMPORT AREA of `plaintext` in `channel`: the receipt.
fn import(
    chip: &mut Chip,
    channel: &mut ServiceChannel,
    plaintext: &[u8],
) -> Result<ImportReceipt, StatusWord> {
    let answer = chip.secured(channel, ins::IMPORT_AREA, plaintext)?;
    Ok(ImportReceipt::decode(&answer).unwrap())
}

/// The move record the purse provider's transfer SAM signs for `chip`'s purse in `channel`.
fn record(chip: &Chip, channel: &ServiceChannel, minor: u64) -> MigrationRecord {
    let purse = chip.stored();
    let binding = channel.binding();
    MigrationRecord {
        card_id: chip.id(),
        writer: testing::service_transfer(PURSE.provider).1.subject(),
        challenge_host: binding.host_challenge,
        challenge_card: binding.card_challenge,
        counter: purse.counter + 1,
        amount: amount(minor),
        balance_after: purse.balance.checked_add(amount(minor)).unwrap(),
        writer_sequence: 12,
        date: testing::today(),
    }
}

fn signed(record: &MigrationRecord, signer: &SigningKeyPair) -> UsageRecord {
    record.usage_record(signer.sign(&record.signed_message()))
}

fn transfer_sam() -> SigningKeyPair {
    testing::service_transfer(PURSE.provider).0
}

#[test]
fn tickets_are_imported_once() {
    let mut chip = new_chip();
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    let request = import_request(MOVE, old_tickets(), None);
    let receipt = import(&mut chip, &mut channel, &request).unwrap();
    assert_eq!(
        receipt,
        ImportReceipt {
            move_id: MOVE,
            card_id: testing::card_id(2),
            service: TRANSIT.code,
            digest: old_tickets().digest(),
        }
    );
    let area = chip.area(TRANSIT);
    assert_eq!(area.content, Some(old_tickets()));
    assert_eq!(area.imported, Some((MOVE, old_tickets().digest())));
    // READ AREA names the move imported, should the receipt be lost.
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    let readout =
        AreaReadout::decode(&chip.secured(&mut channel, ins::READ_AREA, &[]).unwrap()).unwrap();
    assert_eq!(readout.content, old_tickets());
    assert_eq!(readout.imported, Some((MOVE, old_tickets().digest())));
    assert_eq!(
        chip.fci().area(TRANSIT.code).unwrap().imported_for,
        Some(MOVE)
    );

    // A repeat of the same import: the same receipt, nothing written.
    let imported = chip.stored_bytes();
    let writes = chip.writes();
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    assert_eq!(import(&mut chip, &mut channel, &request).unwrap(), receipt);
    assert_eq!(chip.writes(), writes);
    assert_eq!(chip.stored_bytes(), imported);

    // Another move's import, or another content under this move: refused.
    let other_content = AreaContent::Tickets(TicketBook {
        tickets: vec![carnet(7, 9)],
    });
    for request in [
        import_request(OTHER_MOVE, old_tickets(), None),
        import_request(MOVE, other_content, None),
    ] {
        let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
        assert_eq!(
            import(&mut chip, &mut channel, &request),
            Err(StatusWord::CONDITIONS_NOT_SATISFIED)
        );
        assert_eq!(chip.stored_bytes(), imported);
    }
}

#[test]
fn only_a_fresh_area_takes_an_import() {
    // Card 2's TRANSIT area on main keys holding a ticket of its own, then switched.
    let mut chip = Chip::new(2, 0);
    assert_eq!(chip.format(TRANSIT, KeyState::Main).sw, StatusWord::SUCCESS);
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let issue = UpdateArea {
        operation: ServiceOperation::IssueTicket(carnet(1, 1)),
    };
    chip.secured(&mut channel, ins::UPDATE_AREA, &issue.encode())
        .unwrap();
    assert_eq!(
        chip.switch(MOVE, &[(TRANSIT, KeyState::Temporary)]).sw,
        StatusWord::SUCCESS
    );
    let before = chip.stored_bytes();
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    assert_eq!(
        import(
            &mut chip,
            &mut channel,
            &import_request(MOVE, old_tickets(), None)
        ),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn an_import_of_the_wrong_kind_or_from_the_chip_itself_is_refused() {
    let mut chip = new_chip();
    let before = chip.stored_bytes();
    let points = AreaContent::empty(ServiceKind::Points).unwrap();
    let from_itself = ImportRequest {
        move_id: MOVE,
        source: testing::card_id(2),
        content: old_tickets(),
        record: None,
    }
    .encode();
    for request in [import_request(MOVE, points, None), from_itself] {
        let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
        assert_eq!(
            import(&mut chip, &mut channel, &request),
            Err(StatusWord::WRONG_DATA)
        );
        assert_eq!(chip.stored_bytes(), before);
    }
    // Tickets into the purse's area.
    let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    assert_eq!(
        import(
            &mut chip,
            &mut channel,
            &import_request(MOVE, old_tickets(), None)
        ),
        Err(StatusWord::WRONG_DATA)
    );
    assert_eq!(chip.stored_bytes(), before);
}

#[test]
fn the_purse_is_credited_by_the_transfer_sams_record() {
    let mut chip = new_chip();
    let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    let record = record(&chip, &channel, 10_000);
    let request = import_request(
        MOVE,
        old_purse(10_000),
        Some(signed(&record, &transfer_sam())),
    );
    let receipt = import(&mut chip, &mut channel, &request).unwrap();
    assert_eq!(
        receipt,
        ImportReceipt {
            move_id: MOVE,
            card_id: testing::card_id(2),
            service: PURSE.code,
            digest: old_purse(10_000).digest(),
        }
    );
    let stored = chip.stored();
    assert_eq!((stored.balance, stored.counter), (amount(11_000), 1));
    let last = stored.last_usage.clone().unwrap();
    assert_eq!(last.kind, TransactionKind::MigrationIn);
    assert_eq!(last, signed(&record, &transfer_sam()));
    assert_eq!(
        stored.last_writer_certificate,
        Some(testing::service_transfer(PURSE.provider).1)
    );
    assert_eq!(stored.log.len(), 1);
    let area = stored.services.area(PURSE.code).unwrap();
    assert_eq!(area.content, None);
    assert_eq!(area.imported, Some((MOVE, old_purse(10_000).digest())));

    // The repeat, in a new session with a record for it: the same receipt, no second credit.
    let imported = chip.stored_bytes();
    let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    let again = MigrationRecord {
        counter: 2,
        balance_after: amount(21_000),
        ..self::record(&chip, &channel, 10_000)
    };
    let request = import_request(
        MOVE,
        old_purse(10_000),
        Some(signed(&again, &transfer_sam())),
    );
    assert_eq!(import(&mut chip, &mut channel, &request).unwrap(), receipt);
    assert_eq!(chip.stored_bytes(), imported);
    // Another move's value: refused.
    let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    let other = MigrationRecord {
        counter: 2,
        balance_after: amount(12_000),
        ..self::record(&chip, &channel, 1_000)
    };
    let request = import_request(
        OTHER_MOVE,
        old_purse(1_000),
        Some(signed(&other, &transfer_sam())),
    );
    assert_eq!(
        import(&mut chip, &mut channel, &request),
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    );
    assert_eq!(chip.stored_bytes(), imported);
}

#[test]
fn a_wrong_move_record_changes_nothing() {
    type Bend = fn(&mut MigrationRecord);
    let cases: [(&str, Bend, StatusWord); 7] = [
        (
            "counter",
            |r| r.counter += 1,
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "balance after",
            |r| r.balance_after = r.balance_after.checked_add(amount(1)).unwrap(),
            StatusWord::CONDITIONS_NOT_SATISFIED,
        ),
        (
            "host challenge",
            |r| r.challenge_host[0] ^= 1,
            StatusWord::WRONG_DATA,
        ),
        (
            "card challenge",
            |r| r.challenge_card[15] ^= 1,
            StatusWord::WRONG_DATA,
        ),
        (
            "writer",
            |r| r.writer = testing::service_transfer(2).1.subject(),
            StatusWord::WRONG_DATA,
        ),
        (
            // More than the old chip gave up, the balance after consistent with it.
            "amount",
            |r| {
                r.amount = amount(10_001);
                r.balance_after = amount(11_001);
            },
            StatusWord::WRONG_DATA,
        ),
        (
            "card",
            |r| r.card_id = testing::card_id(3),
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        ),
    ];
    let mut chip = new_chip();
    let before = chip.stored_bytes();
    for (what, bend, sw) in cases {
        let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
        let mut record = record(&chip, &channel, 10_000);
        bend(&mut record);
        let request = import_request(
            MOVE,
            old_purse(10_000),
            Some(signed(&record, &transfer_sam())),
        );
        assert_eq!(import(&mut chip, &mut channel, &request), Err(sw), "{what}");
        assert_eq!(chip.stored_bytes(), before, "{what}");
    }
    // Signed by another transfer SAM (and by the purse provider's normal SAM), naming the
    // right writer.
    for signer in [
        testing::service_transfer(2).0,
        testing::service_provider(PURSE.provider).0,
    ] {
        let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
        let record = record(&chip, &channel, 10_000);
        let request = import_request(MOVE, old_purse(10_000), Some(signed(&record, &signer)));
        assert_eq!(
            import(&mut chip, &mut channel, &request),
            Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED)
        );
        assert_eq!(chip.stored_bytes(), before);
    }
    // A genuine record of one session used in another.
    let channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    let stale = signed(&record(&chip, &channel, 10_000), &transfer_sam());
    let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    assert_eq!(
        import(
            &mut chip,
            &mut channel,
            &import_request(MOVE, old_purse(10_000), Some(stale))
        ),
        Err(StatusWord::WRONG_DATA)
    );
    assert_eq!(chip.stored_bytes(), before);
    let stored = chip.stored();
    assert_eq!((stored.balance, stored.counter), (amount(1_000), 0));
    assert!(stored.last_usage.is_none());
    assert_eq!(stored.services.area(PURSE.code).unwrap().imported, None);
}

#[test]
fn after_the_switch_to_main_keys_the_new_chip_is_in_normal_use() {
    let mut chip = new_chip();
    // Before the switch, the new purse is still on temporary keys.
    assert_eq!(chip.purchase(100), StatusWord::FILE_DEACTIVATED);
    let mut channel = chip.open(PURSE, KeyState::Temporary).unwrap();
    let record = signed(&record(&chip, &channel, 10_000), &transfer_sam());
    import(
        &mut chip,
        &mut channel,
        &import_request(MOVE, old_purse(10_000), Some(record)),
    )
    .unwrap();
    let mut channel = chip.open(TRANSIT, KeyState::Temporary).unwrap();
    import(
        &mut chip,
        &mut channel,
        &import_request(MOVE, old_tickets(), None),
    )
    .unwrap();

    assert_eq!(
        chip.switch(MOVE, &[(PURSE, KeyState::Main), (TRANSIT, KeyState::Main)])
            .sw,
        StatusWord::SUCCESS
    );
    let fci = chip.fci();
    assert!(fci
        .areas
        .iter()
        .all(|area| area.key_state == KeyState::Main && area.imported_for == Some(MOVE)));

    // The purse pays, from the moved value.
    assert_eq!(chip.purchase(2_500), StatusWord::SUCCESS);
    let stored = chip.stored();
    assert_eq!((stored.balance, stored.counter), (amount(8_500), 2));
    assert_eq!(stored.last_usage.unwrap().kind, TransactionKind::Purchase);
    // The tickets ride, under the transit operator's normal SAM.
    assert!(chip.open(TRANSIT, KeyState::Temporary).is_err());
    let mut channel = chip.open(TRANSIT, KeyState::Main).unwrap();
    let ride = UpdateArea {
        operation: ServiceOperation::UseRide {
            ticket_id: 8,
            date: ride_day(),
        },
    };
    chip.secured(&mut channel, ins::UPDATE_AREA, &ride.encode())
        .unwrap();
    assert_eq!(
        chip.area(TRANSIT).content,
        Some(AreaContent::Tickets(TicketBook {
            tickets: vec![carnet(7, 9), carnet(8, 1)],
        }))
    );
}
