use super::*;

fn pass(ticket_id: u32) -> Ticket {
    Ticket {
        ticket_id,
        product: 0x0102,
        valid_from: Date(20_000),
        valid_until: Date(20_030),
        rides_left: None,
    }
}

fn carnet(ticket_id: u32, rides: u16) -> Ticket {
    Ticket {
        ticket_id,
        product: 0x0A0B,
        valid_from: Date(20_000),
        valid_until: Date(20_365),
        rides_left: Some(rides),
    }
}

fn book(tickets: Vec<Ticket>) -> AreaContent {
    AreaContent::Tickets(TicketBook { tickets })
}

fn points(points: u64, expiry: u32) -> AreaContent {
    AreaContent::Points(PointsAccount {
        points,
        expiry: Date(expiry),
    })
}

fn purse() -> AreaContent {
    AreaContent::Purse(PurseValue {
        card_id: CardId([1, 2, 3, 4, 5, 6, 7, 8]),
        balance: Amount::new(1234).unwrap(),
        counter: 42,
    })
}

fn contents() -> Vec<AreaContent> {
    vec![
        purse(),
        AreaContent::Purse(PurseValue {
            card_id: CardId([0xFF; 8]),
            balance: Amount::MAX,
            counter: u32::MAX,
        }),
        AreaContent::empty(ServiceKind::Tickets).unwrap(),
        book(vec![pass(1)]),
        book(vec![pass(7), carnet(3, 10), carnet(9, 0)]),
        book(
            (0..AREA_TICKETS_MAX as u32)
                .map(|id| carnet(id, 5))
                .collect(),
        ),
        AreaContent::empty(ServiceKind::Points).unwrap(),
        points(1200, 20_500),
        points(POINTS_MAX, u32::MAX),
    ]
}

fn operations() -> Vec<ServiceOperation> {
    vec![
        ServiceOperation::IssueTicket(pass(5)),
        ServiceOperation::IssueTicket(carnet(u32::MAX, u16::MAX)),
        ServiceOperation::UseRide {
            ticket_id: 5,
            date: Date(20_010),
        },
        ServiceOperation::EarnPoints {
            points: 300,
            expiry: Date(21_000),
        },
        ServiceOperation::EarnPoints {
            points: POINTS_MAX,
            expiry: Date(0),
        },
        ServiceOperation::RedeemPoints {
            points: 100,
            date: Date(20_100),
        },
    ]
}

/// A content object with the given value, for encodings the encoder never makes.
fn content_with(build: impl FnOnce(&mut TlvWriter)) -> Vec<u8> {
    let mut w = TlvWriter::new();
    w.nested(tag::CONTENT, build);
    w.into_bytes()
}

fn operation_with(build: impl FnOnce(&mut TlvWriter)) -> Vec<u8> {
    let mut w = TlvWriter::new();
    w.nested(tag::OPERATION, build);
    w.into_bytes()
}

#[test]
fn contents_round_trip() {
    for content in contents() {
        let bytes = content.encode();
        assert_eq!(AreaContent::decode(&bytes).unwrap(), content);
        let mut r = TlvReader::new(&bytes);
        let value = r.expect(tag::CONTENT).unwrap();
        r.finish().unwrap();
        assert_eq!(AreaContent::decode_value(value).unwrap(), content);
    }
}

#[test]
fn operations_round_trip() {
    for operation in operations() {
        let bytes = operation.encode();
        assert_eq!(ServiceOperation::decode(&bytes).unwrap(), operation);
        let mut r = TlvReader::new(&bytes);
        let value = r.expect(tag::OPERATION).unwrap();
        r.finish().unwrap();
        assert_eq!(ServiceOperation::decode_value(value).unwrap(), operation);
    }
}

#[test]
fn embeds_inside_another_message() {
    let content = book(vec![carnet(3, 2)]);
    let operation = ServiceOperation::UseRide {
        ticket_id: 3,
        date: Date(20_001),
    };
    let mut w = TlvWriter::new();
    w.put_u32(tag::COUNTER, 9);
    content.encode_into(&mut w);
    operation.encode_into(&mut w);
    let bytes = w.into_bytes();
    let mut r = TlvReader::new(&bytes);
    assert_eq!(u32_field(&mut r, tag::COUNTER).unwrap(), 9);
    assert_eq!(
        AreaContent::decode_value(r.expect(tag::CONTENT).unwrap()).unwrap(),
        content
    );
    assert_eq!(
        ServiceOperation::decode_value(r.expect(tag::OPERATION).unwrap()).unwrap(),
        operation
    );
    r.finish().unwrap();
}

#[test]
fn encoding_is_as_documented() {
    assert_eq!(
        points(1200, 20_500).encode(),
        [
            0xA7, 0x13, 0x82, 0x01, 0x03, 0x9B, 0x08, 0, 0, 0, 0, 0, 0, 0x04, 0xB0, 0x9C, 0x04, 0,
            0, 0x50, 0x14
        ]
    );
    assert_eq!(
        book(vec![carnet(3, 10)]).encode(),
        [
            0xA7, 0x1F, 0x82, 0x01, 0x02, 0xA0, 0x1A, 0x96, 0x04, 0, 0, 0, 3, 0x97, 0x02, 0x0A,
            0x0B, 0x98, 0x04, 0, 0, 0x4E, 0x20, 0x99, 0x04, 0, 0, 0x4F, 0x8D, 0x9A, 0x02, 0, 10
        ]
    );
    assert_eq!(
        ServiceOperation::UseRide {
            ticket_id: 3,
            date: Date(20_001),
        }
        .encode(),
        [0xA8, 0x0F, 0x9D, 0x01, 0x02, 0x96, 0x04, 0, 0, 0, 3, 0x94, 0x04, 0, 0, 0x4E, 0x21]
    );
}

#[test]
fn every_truncation_is_refused() {
    for content in contents() {
        let bytes = content.encode();
        for cut in 0..bytes.len() {
            assert!(
                AreaContent::decode(&bytes[..cut]).is_err(),
                "accepted {content:?} cut at {cut}"
            );
        }
    }
    for operation in operations() {
        let bytes = operation.encode();
        for cut in 0..bytes.len() {
            assert!(
                ServiceOperation::decode(&bytes[..cut]).is_err(),
                "accepted {operation:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for content in contents() {
        let mut bytes = content.encode();
        bytes.extend_from_slice(&[0x80, 0x00]);
        assert_eq!(
            AreaContent::decode(&bytes),
            Err(DecodeError::Tlv(TlvError::Trailing(2)))
        );
    }
    for operation in operations() {
        let mut bytes = operation.encode();
        bytes.push(0x00);
        assert_eq!(
            ServiceOperation::decode(&bytes),
            Err(DecodeError::Tlv(TlvError::Trailing(1)))
        );
    }
    // Inside the object as well: a field after the last one.
    let bytes = content_with(|c| {
        c.put_u8(tag::KIND, ServiceKind::Points as u8)
            .put_u64(ctag::POINTS, 5)
            .put_u32(ctag::EXPIRY, 20_000)
            .put_u32(tag::DATE, 20_000);
    });
    assert_eq!(
        AreaContent::decode(&bytes),
        Err(DecodeError::Tlv(TlvError::Trailing(6)))
    );
    let bytes = operation_with(|o| {
        o.put_u8(ctag::OPERATION_CODE, 0x02)
            .put_u32(ctag::TICKET_ID, 1)
            .put_u32(tag::DATE, 20_000)
            .put_u8(tag::KIND, 2);
    });
    assert_eq!(
        ServiceOperation::decode(&bytes),
        Err(DecodeError::Tlv(TlvError::Trailing(3)))
    );
}

#[test]
fn unknown_kinds_and_codes_are_refused() {
    for kind in [0x00, 0x04, 0xFF] {
        let bytes = content_with(|c| {
            c.put_u8(tag::KIND, kind)
                .put_u64(ctag::POINTS, 5)
                .put_u32(ctag::EXPIRY, 20_000);
        });
        assert_eq!(
            AreaContent::decode(&bytes),
            Err(DecodeError::Field {
                field: "service kind",
                reason: "unknown",
            })
        );
    }
    for code in [0x00, 0x05, 0xFF] {
        let bytes = operation_with(|o| {
            o.put_u8(ctag::OPERATION_CODE, code)
                .put_u64(ctag::POINTS, 5)
                .put_u32(tag::DATE, 20_000);
        });
        assert_eq!(
            ServiceOperation::decode(&bytes),
            Err(DecodeError::Field {
                field: "operation",
                reason: "unknown",
            })
        );
    }
    // A kind byte that does not match the fields that follow.
    let bytes = content_with(|c| {
        c.put_u8(tag::KIND, ServiceKind::Purse as u8)
            .put_u64(ctag::POINTS, 5)
            .put_u32(ctag::EXPIRY, 20_000);
    });
    assert!(matches!(
        AreaContent::decode(&bytes),
        Err(DecodeError::Tlv(TlvError::UnexpectedTag { .. }))
    ));
    // Not a content at all.
    assert!(AreaContent::decode(&ServiceOperation::IssueTicket(pass(1)).encode()).is_err());
    assert!(ServiceOperation::decode(&points(1, 1).encode()).is_err());
}

#[test]
fn duplicate_ticket_ids_are_refused() {
    let bytes = book(vec![pass(4), carnet(5, 1), carnet(4, 2)]).encode();
    assert_eq!(
        AreaContent::decode(&bytes),
        Err(DecodeError::Field {
            field: "ticket ID",
            reason: "duplicate",
        })
    );
}

#[test]
fn too_many_tickets_are_refused() {
    let full = book((0..AREA_TICKETS_MAX as u32).map(pass).collect());
    assert_eq!(AreaContent::decode(&full.encode()).unwrap(), full);
    let over = book((0..=AREA_TICKETS_MAX as u32).map(pass).collect());
    assert_eq!(
        AreaContent::decode(&over.encode()),
        Err(DecodeError::Field {
            field: "tickets",
            reason: "more than an area holds",
        })
    );
}

#[test]
fn tickets_ending_before_they_start_are_refused() {
    let backwards = Ticket {
        valid_from: Date(20_001),
        valid_until: Date(20_000),
        ..pass(1)
    };
    let refused_backwards = DecodeError::Field {
        field: "valid until",
        reason: "before valid from",
    };
    assert_eq!(
        AreaContent::decode(&book(vec![backwards.clone()]).encode()),
        Err(refused_backwards.clone())
    );
    assert_eq!(
        ServiceOperation::decode(&ServiceOperation::IssueTicket(backwards).encode()),
        Err(refused_backwards)
    );
    let one_day = Ticket {
        valid_from: Date(20_000),
        valid_until: Date(20_000),
        ..pass(1)
    };
    let content = book(vec![one_day]);
    assert_eq!(AreaContent::decode(&content.encode()).unwrap(), content);
}

#[test]
fn out_of_range_values_are_refused() {
    let too_many_points = DecodeError::Field {
        field: "points",
        reason: "above the maximum",
    };
    assert_eq!(
        AreaContent::decode(&points(POINTS_MAX + 1, 20_000).encode()),
        Err(too_many_points.clone())
    );
    for operation in [
        ServiceOperation::EarnPoints {
            points: POINTS_MAX + 1,
            expiry: Date(1),
        },
        ServiceOperation::RedeemPoints {
            points: u64::MAX,
            date: Date(1),
        },
    ] {
        assert_eq!(
            ServiceOperation::decode(&operation.encode()),
            Err(too_many_points.clone())
        );
    }
    let bytes = content_with(|c| {
        c.put_u8(tag::KIND, ServiceKind::Purse as u8)
            .put(tag::CARD_ID, &[1; 8])
            .put_u64(tag::BALANCE, Amount::MAX.minor() + 1)
            .put_u32(tag::COUNTER, 1);
    });
    assert!(matches!(
        AreaContent::decode(&bytes),
        Err(DecodeError::Amount(_))
    ));
    // Fixed-length fields of the wrong length.
    let bytes = content_with(|c| {
        c.put_u8(tag::KIND, ServiceKind::Tickets as u8)
            .nested(ctag::TICKET, |t| {
                t.put_u32(ctag::TICKET_ID, 1)
                    .put(ctag::PRODUCT, &[1, 2])
                    .put_u32(ctag::VALID_FROM, 1)
                    .put_u32(ctag::VALID_UNTIL, 2)
                    .put(ctag::RIDES_LEFT, &[0, 0, 3]);
            });
    });
    assert_eq!(
        AreaContent::decode(&bytes),
        Err(DecodeError::Tlv(TlvError::WrongValueLength {
            tag: ctag::RIDES_LEFT,
            expected: 2,
            got: 3,
        }))
    );
    let bytes = content_with(|c| {
        c.put(tag::KIND, &[2, 0]);
    });
    assert!(matches!(
        AreaContent::decode(&bytes),
        Err(DecodeError::Tlv(TlvError::WrongValueLength { .. }))
    ));
}

#[test]
fn kinds_and_empty_contents() {
    assert_eq!(purse().kind(), ServiceKind::Purse);
    assert_eq!(book(vec![]).kind(), ServiceKind::Tickets);
    assert_eq!(points(0, 0).kind(), ServiceKind::Points);
    assert_eq!(AreaContent::empty(ServiceKind::Purse), None);
    assert_eq!(AreaContent::empty(ServiceKind::Tickets), Some(book(vec![])));
    assert_eq!(AreaContent::empty(ServiceKind::Points), Some(points(0, 0)));
    let kinds: Vec<ServiceKind> = operations().iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        [
            ServiceKind::Tickets,
            ServiceKind::Tickets,
            ServiceKind::Tickets,
            ServiceKind::Points,
            ServiceKind::Points,
            ServiceKind::Points,
        ]
    );
}

#[test]
fn digest_binds_the_exact_content() {
    let content = points(1200, 20_500);
    let mut m = b"valuecard/services/content/v1".to_vec();
    m.extend_from_slice(&content.encode());
    assert_eq!(content.digest(), sha256(&m));
    let digests: Vec<[u8; 32]> = contents().iter().map(AreaContent::digest).collect();
    for (i, a) in digests.iter().enumerate() {
        for b in &digests[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_ne!(points(1200, 20_500).digest(), points(1201, 20_500).digest());
}

#[test]
fn descriptions() {
    assert_eq!(purse().describe(), "balance 1234 (minor units)");
    assert_eq!(book(vec![]).describe(), "0 tickets");
    assert_eq!(book(vec![pass(1)]).describe(), "1 ticket");
    assert_eq!(
        book(vec![pass(1), pass(2), carnet(3, 1)]).describe(),
        "3 tickets"
    );
    assert_eq!(
        points(1200, 20_500).describe(),
        "1200 points until day 20500"
    );
}

#[test]
fn operations_of_another_kind_are_refused() {
    let tickets = book(vec![pass(1)]);
    let account = points(100, 20_500);
    for operation in operations() {
        assert_eq!(
            purse().apply(&operation, 16),
            Err(OperationError::WrongKind)
        );
        let other = match operation.kind() {
            ServiceKind::Tickets => &account,
            _ => &tickets,
        };
        assert_eq!(other.apply(&operation, 16), Err(OperationError::WrongKind));
    }
}

#[test]
fn issuing_a_ticket() {
    let before = book(vec![pass(1)]);
    let after = before
        .apply(&ServiceOperation::IssueTicket(carnet(2, 10)), 4)
        .unwrap();
    assert_eq!(after, book(vec![pass(1), carnet(2, 10)]));
    assert_eq!(before, book(vec![pass(1)]), "apply changed its input");

    assert_eq!(
        after.apply(&ServiceOperation::IssueTicket(carnet(1, 3)), 4),
        Err(OperationError::DuplicateTicket)
    );
    // The formatted capacity bounds the book...
    assert_eq!(
        after.apply(&ServiceOperation::IssueTicket(pass(3)), 2),
        Err(OperationError::Full)
    );
    assert_eq!(
        book(vec![]).apply(&ServiceOperation::IssueTicket(pass(3)), 0),
        Err(OperationError::Full)
    );
    // ...and so does the largest book, whatever the capacity says.
    let largest = book((0..AREA_TICKETS_MAX as u32).map(pass).collect());
    assert_eq!(
        largest.apply(&ServiceOperation::IssueTicket(pass(100)), u16::MAX),
        Err(OperationError::Full)
    );
    let almost = book((1..AREA_TICKETS_MAX as u32).map(pass).collect());
    let full = almost
        .apply(&ServiceOperation::IssueTicket(pass(100)), u16::MAX)
        .unwrap();
    let AreaContent::Tickets(full) = full else {
        panic!("not a ticket book");
    };
    assert_eq!(full.tickets.len(), AREA_TICKETS_MAX);
    assert_eq!(full.get(100), Some(&pass(100)));
}

#[test]
fn using_a_ride() {
    let before = book(vec![pass(1), carnet(2, 2)]);
    let ride = |ticket_id, date| ServiceOperation::UseRide {
        ticket_id,
        date: Date(date),
    };

    // A carnet loses one ride per use, down to zero, and stays in the book.
    let once = before.apply(&ride(2, 20_000), 16).unwrap();
    assert_eq!(once, book(vec![pass(1), carnet(2, 1)]));
    let twice = once.apply(&ride(2, 20_365), 16).unwrap();
    assert_eq!(twice, book(vec![pass(1), carnet(2, 0)]));
    assert_eq!(
        twice.apply(&ride(2, 20_100), 16),
        Err(OperationError::NoRidesLeft)
    );

    // An unlimited pass is unchanged by a use on any day of its validity.
    for day in [20_000, 20_015, 20_030] {
        assert_eq!(before.apply(&ride(1, day), 16).unwrap(), before);
    }
    for day in [0, 19_999, 20_031, u32::MAX] {
        assert_eq!(
            before.apply(&ride(1, day), 16),
            Err(OperationError::NotValidOn)
        );
    }
    assert_eq!(
        before.apply(&ride(2, 20_366), 16),
        Err(OperationError::NotValidOn)
    );
    // Validity is checked before the rides: an expired empty carnet says so.
    assert_eq!(
        twice.apply(&ride(2, 20_366), 16),
        Err(OperationError::NotValidOn)
    );

    assert_eq!(
        before.apply(&ride(3, 20_000), 16),
        Err(OperationError::UnknownTicket)
    );
    assert_eq!(
        book(vec![]).apply(&ride(1, 20_000), 16),
        Err(OperationError::UnknownTicket)
    );
}

#[test]
fn earning_points() {
    let earn = |points, expiry| ServiceOperation::EarnPoints {
        points,
        expiry: Date(expiry),
    };
    let account = points(1200, 20_500);
    // The expiry becomes the later of the two.
    assert_eq!(
        account.apply(&earn(300, 21_000), 0).unwrap(),
        points(1500, 21_000)
    );
    assert_eq!(
        account.apply(&earn(300, 20_000), 0).unwrap(),
        points(1500, 20_500)
    );
    assert_eq!(
        AreaContent::empty(ServiceKind::Points)
            .unwrap()
            .apply(&earn(POINTS_MAX, 1), 0)
            .unwrap(),
        points(POINTS_MAX, 1)
    );
    assert_eq!(
        account.apply(&earn(POINTS_MAX - 1200, 0), 0).unwrap(),
        points(POINTS_MAX, 20_500)
    );
    assert_eq!(
        account.apply(&earn(POINTS_MAX - 1199, 0), 0),
        Err(OperationError::Overflow)
    );
    assert_eq!(
        account.apply(&earn(u64::MAX, 0), 0),
        Err(OperationError::Overflow)
    );
}

#[test]
fn redeeming_points() {
    let redeem = |points, date| ServiceOperation::RedeemPoints {
        points,
        date: Date(date),
    };
    let account = points(1200, 20_500);
    assert_eq!(
        account.apply(&redeem(200, 20_000), 0).unwrap(),
        points(1000, 20_500)
    );
    // The expiry day itself is still good.
    assert_eq!(
        account.apply(&redeem(1200, 20_500), 0).unwrap(),
        points(0, 20_500)
    );
    assert_eq!(
        account.apply(&redeem(1201, 20_000), 0),
        Err(OperationError::InsufficientPoints)
    );
    assert_eq!(
        account.apply(&redeem(1, 20_501), 0),
        Err(OperationError::PointsExpired)
    );
    assert_eq!(
        account.apply(&redeem(u64::MAX, 20_501), 0),
        Err(OperationError::PointsExpired)
    );
}
