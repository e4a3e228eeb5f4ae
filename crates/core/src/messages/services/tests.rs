use super::*;
use crate::cert::{Certificate, CertificateBody, Role};
use crate::crypto::{AesKey, SecretBytes, Signature, SigningKeyPair};
use crate::ids::{CardId, DeviceId};
use crate::messages::purse::TransactionKind;
use crate::messages::purse::UsageRecord;
use crate::money::Amount;
use crate::time::Date;
use rand_core::OsRng;

const CARD: CardId = CardId([0xCA, 0, 0, 0, 0, 0, 0, 7]);
const TRANSIT: ServiceCode = ServiceCode(0x0102);

fn certificate(role: Role, subject: u8) -> Certificate {
    let root = SigningKeyPair::generate(&mut OsRng);
    CertificateBody {
        issuer: DeviceId([0xCE, 0, 0, 0, 0, 0, 0, 1]),
        subject: DeviceId([subject, 0, 0, 0, 0, 0, 0, 1]),
        role,
        effective: Date::from_ymd(2026, 1, 1).unwrap(),
        expiry: Date::from_ymd(2030, 1, 1).unwrap(),
        signing_key: SigningKeyPair::generate(&mut OsRng).public_key(),
        sealing_key: None,
    }
    .sign(&root)
}

fn package(state: KeyState) -> KeyPackage {
    KeyPackage {
        issuer_certificate: certificate(KeyPackage::issuer_role(state), 0x50 + state as u8),
        service: TRANSIT,
        key_state: state,
        key_version: 3,
        sealed_key: vec![state as u8; 64],
        signature: Signature([state as u8; 64]),
    }
}

fn format() -> AreaFormat {
    AreaFormat {
        service: TRANSIT,
        kind: ServiceKind::Tickets,
        capacity: 8,
        provider: DeviceId([0x51, 0, 0, 0, 0, 0, 0, 1]),
        mover: DeviceId([0x52, 0, 0, 0, 0, 0, 0, 1]),
    }
}

fn tickets() -> AreaContent {
    AreaContent::Tickets(TicketBook {
        tickets: vec![Ticket {
            ticket_id: 9,
            product: 3,
            valid_from: Date::from_ymd(2026, 11, 1).unwrap(),
            valid_until: Date::from_ymd(2026, 12, 31).unwrap(),
            rides_left: Some(10),
        }],
    })
}

fn purse_value() -> AreaContent {
    AreaContent::Purse(PurseValue {
        card_id: CARD,
        balance: Amount::new(4_200).unwrap(),
        counter: 12,
    })
}

fn migration_record() -> UsageRecord {
    MigrationRecord {
        card_id: CardId([0xCA, 0, 0, 0, 0, 0, 0, 8]),
        writer: DeviceId([0x52, 0, 0, 0, 0, 0, 0, 2]),
        challenge_host: [1; 16],
        challenge_card: [2; 16],
        counter: 4,
        amount: Amount::new(4_200).unwrap(),
        balance_after: Amount::new(5_000).unwrap(),
        writer_sequence: 1,
        date: Date::from_ymd(2026, 11, 30).unwrap(),
    }
    .usage_record(Signature([7; 64]))
}

/// A message's name, its encoding, and its decoder re-encoding what it decoded.
type Sample = (&'static str, Vec<u8>, fn(&[u8]) -> Option<Vec<u8>>);

/// Every message of the application.
fn all_messages() -> Vec<Sample> {
    let fci = ServicesFci {
        card_id: CARD,
        areas: vec![
            AreaSummary {
                service: TRANSIT,
                kind: ServiceKind::Tickets,
                key_state: KeyState::Temporary,
                provider: format().provider,
                mover: format().mover,
                exported_for: Some([4; MOVE_ID_LEN]),
                imported_for: None,
            },
            AreaSummary {
                service: ServiceCode(1),
                kind: ServiceKind::Purse,
                key_state: KeyState::Main,
                provider: format().provider,
                mover: format().mover,
                exported_for: None,
                imported_for: Some([5; MOVE_ID_LEN]),
            },
        ],
    };
    let format_area = FormatArea {
        admin_certificate: certificate(Role::MoveAdministrator, 0x4D),
        format: format(),
        initial_state: KeyState::Temporary,
        main_package: package(KeyState::Main),
        temporary_package: package(KeyState::Temporary),
        signature: Signature([9; 64]),
    };
    let switch = SwitchKeys {
        admin_certificate: certificate(Role::MoveAdministrator, 0x4D),
        move_id: [6; MOVE_ID_LEN],
        changes: vec![
            KeyChange {
                service: TRANSIT,
                key_state: KeyState::Temporary,
            },
            KeyChange {
                service: ServiceCode(1),
                key_state: KeyState::Temporary,
            },
        ],
        signature: Signature([8; 64]),
    };
    vec![
        ("FCI", fci.encode(), |b| {
            ServicesFci::decode(b).ok().map(|m| m.encode())
        }),
        ("FORMAT AREA", format_area.encode(), |b| {
            FormatArea::decode(b).ok().map(|m| m.encode())
        }),
        ("SWITCH KEYS", switch.encode(), |b| {
            SwitchKeys::decode(b).ok().map(|m| m.encode())
        }),
        (
            "OPEN SERVICE",
            OpenService {
                service: TRANSIT,
                host_challenge: [3; 16],
            }
            .encode(),
            |b| OpenService::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "OPEN SERVICE response",
            OpenServiceResponse {
                card_challenge: [4; 16],
                key_state: KeyState::Main,
                key_version: 2,
                card_cryptogram: [5; SERVICE_CRYPTOGRAM_LEN],
            }
            .encode(),
            |b| OpenServiceResponse::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "EXTERNAL AUTHENTICATE",
            ServiceAuthenticate {
                host_cryptogram: [6; SERVICE_CRYPTOGRAM_LEN],
            }
            .encode(),
            |b| ServiceAuthenticate::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "EXPORT AREA request",
            ExportRequest {
                move_id: [7; MOVE_ID_LEN],
            }
            .encode(),
            |b| ExportRequest::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "EXPORT AREA tickets",
            ExportedArea {
                move_id: [7; MOVE_ID_LEN],
                card_id: CARD,
                service: TRANSIT,
                content: tickets(),
                card_signature: None,
            }
            .encode(),
            |b| ExportedArea::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "EXPORT AREA purse",
            ExportedArea {
                move_id: [7; MOVE_ID_LEN],
                card_id: CARD,
                service: ServiceCode(1),
                content: purse_value(),
                card_signature: Some(Signature([1; 64])),
            }
            .encode(),
            |b| ExportedArea::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "IMPORT AREA tickets",
            ImportRequest {
                move_id: [7; MOVE_ID_LEN],
                source: CARD,
                content: tickets(),
                record: None,
            }
            .encode(),
            |b| ImportRequest::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "IMPORT AREA purse",
            ImportRequest {
                move_id: [7; MOVE_ID_LEN],
                source: CARD,
                content: purse_value(),
                record: Some(migration_record()),
            }
            .encode(),
            |b| ImportRequest::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "IMPORT AREA receipt",
            ImportReceipt {
                move_id: [7; MOVE_ID_LEN],
                card_id: CARD,
                service: TRANSIT,
                digest: [8; 32],
            }
            .encode(),
            |b| ImportReceipt::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "UPDATE AREA",
            UpdateArea {
                operation: ServiceOperation::UseRide {
                    ticket_id: 9,
                    date: Date::from_ymd(2026, 11, 30).unwrap(),
                },
            }
            .encode(),
            |b| UpdateArea::decode(b).ok().map(|m| m.encode()),
        ),
        (
            "READ AREA response",
            AreaReadout {
                card_id: CARD,
                service: TRANSIT,
                content: tickets(),
                imported: None,
            }
            .encode(),
            |b| AreaReadout::decode(b).ok().map(|m| m.encode()),
        ),
    ]
}

#[test]
fn every_message_round_trips() {
    for (name, encoded, reencode) in all_messages() {
        assert_eq!(reencode(&encoded).as_deref(), Some(&encoded[..]), "{name}");
    }
}

#[test]
fn every_message_refuses_truncation_and_trailing_bytes() {
    for (name, encoded, reencode) in all_messages() {
        for cut in 0..encoded.len() {
            assert!(reencode(&encoded[..cut]).is_none(), "{name} cut at {cut}");
        }
        let mut longer = encoded.clone();
        longer.extend_from_slice(&[0x80, 0x00]);
        assert!(reencode(&longer).is_none(), "{name} with trailing bytes");
    }
}

#[test]
fn a_purse_export_must_be_signed_and_nothing_else_may_be() {
    let unsigned_purse = ExportedArea {
        move_id: [7; MOVE_ID_LEN],
        card_id: CARD,
        service: ServiceCode(1),
        content: purse_value(),
        card_signature: None,
    };
    assert!(ExportedArea::decode(&unsigned_purse.encode()).is_err());
    let signed_tickets = ExportedArea {
        content: tickets(),
        card_signature: Some(Signature([1; 64])),
        ..unsigned_purse
    };
    assert!(ExportedArea::decode(&signed_tickets.encode()).is_err());
}

#[test]
fn a_purse_import_carries_its_record_and_nothing_else_does() {
    let purse_without = ImportRequest {
        move_id: [7; MOVE_ID_LEN],
        source: CARD,
        content: purse_value(),
        record: None,
    };
    assert!(ImportRequest::decode(&purse_without.encode()).is_err());
    let tickets_with = ImportRequest {
        content: tickets(),
        record: Some(migration_record()),
        ..purse_without
    };
    assert!(ImportRequest::decode(&tickets_with.encode()).is_err());
}

#[test]
fn a_format_with_packages_of_another_area_or_state_is_refused() {
    let good = FormatArea {
        admin_certificate: certificate(Role::MoveAdministrator, 0x4D),
        format: format(),
        initial_state: KeyState::Temporary,
        main_package: package(KeyState::Main),
        temporary_package: package(KeyState::Temporary),
        signature: Signature([9; 64]),
    };
    assert!(FormatArea::decode(&good.encode()).is_ok());
    let swapped = FormatArea {
        main_package: package(KeyState::Temporary),
        temporary_package: package(KeyState::Main),
        ..good.clone()
    };
    assert!(FormatArea::decode(&swapped.encode()).is_err());
    let mut other_service = good;
    other_service.temporary_package.service = ServiceCode(0x0999);
    assert!(FormatArea::decode(&other_service.encode()).is_err());
}

#[test]
fn a_switch_names_each_service_once_and_at_least_one() {
    let mut switch = SwitchKeys {
        admin_certificate: certificate(Role::MoveAdministrator, 0x4D),
        move_id: [6; MOVE_ID_LEN],
        changes: vec![KeyChange {
            service: TRANSIT,
            key_state: KeyState::Main,
        }],
        signature: Signature([8; 64]),
    };
    assert!(SwitchKeys::decode(&switch.encode()).is_ok());
    switch.changes.push(switch.changes[0]);
    assert!(SwitchKeys::decode(&switch.encode()).is_err());
    switch.changes.clear();
    assert!(SwitchKeys::decode(&switch.encode()).is_err());
}

fn binding(state: KeyState) -> ChannelBinding {
    ChannelBinding {
        card_id: CARD,
        service: TRANSIT,
        key_state: state,
        host_challenge: [1; 16],
        card_challenge: [2; 16],
    }
}

#[test]
fn card_and_host_open_one_channel_only_with_the_same_area_key() {
    let master: AesKey = SecretBytes([0x42; 16]);
    let key = area_key(&master, KeyState::Temporary, &CARD, TRANSIT);
    let (pending, card_cryptogram) = ServiceChannel::for_card(&key, binding(KeyState::Temporary));
    let (mut host, host_cryptogram) =
        ServiceChannel::for_host(&key, binding(KeyState::Temporary), &card_cryptogram).unwrap();
    let mut card = pending.authenticate(&host_cryptogram).unwrap();

    let sealed = host.seal(ins::EXPORT_AREA, b"request").unwrap();
    assert_eq!(card.open(ins::EXPORT_AREA, &sealed).unwrap(), b"request");
    let answer = card.seal(ins::EXPORT_AREA, b"content").unwrap();
    assert_eq!(host.open(ins::EXPORT_AREA, &answer).unwrap(), b"content");
    // Replayed, or opened for another command: refused.
    assert_eq!(
        card.open(ins::EXPORT_AREA, &sealed),
        Err(ChannelError::Unreadable)
    );
    let next = host.seal(ins::IMPORT_AREA, b"x").unwrap();
    assert_eq!(
        card.open(ins::EXPORT_AREA, &next),
        Err(ChannelError::Unreadable)
    );

    // The main key of the same area, another card's key or another service's key do not
    // prove this area's temporary key.
    for other in [
        area_key(&master, KeyState::Main, &CARD, TRANSIT),
        area_key(
            &master,
            KeyState::Temporary,
            &CardId([0xCA, 0, 0, 0, 0, 0, 0, 8]),
            TRANSIT,
        ),
        area_key(&master, KeyState::Temporary, &CARD, ServiceCode(1)),
    ] {
        assert_eq!(
            ServiceChannel::for_host(&other, binding(KeyState::Temporary), &card_cryptogram).err(),
            Some(ChannelError::CardCryptogram)
        );
    }
    // A host cryptogram for the other key state does not open the card's channel.
    let (pending, _) = ServiceChannel::for_card(&key, binding(KeyState::Temporary));
    let (_, cryptogram) = ServiceChannel::for_card(&key, binding(KeyState::Main));
    assert_eq!(
        pending.authenticate(&cryptogram).err(),
        Some(ChannelError::HostCryptogram)
    );
}

#[test]
fn a_resumed_host_channel_continues_where_it_stopped() {
    let key = area_key(&SecretBytes([0x42; 16]), KeyState::Main, &CARD, TRANSIT);
    let (pending, card_cryptogram) = ServiceChannel::for_card(&key, binding(KeyState::Main));
    let (mut host, host_cryptogram) =
        ServiceChannel::for_host(&key, binding(KeyState::Main), &card_cryptogram).unwrap();
    let mut card = pending.authenticate(&host_cryptogram).unwrap();
    let first = host.seal(ins::READ_AREA, b"").unwrap();
    card.open(ins::READ_AREA, &first).unwrap();
    let mut resumed = ServiceChannel::resume_host(&key, binding(KeyState::Main), host.counters());
    let second = resumed.seal(ins::READ_AREA, b"again").unwrap();
    assert_eq!(card.open(ins::READ_AREA, &second).unwrap(), b"again");
}

#[test]
fn a_migration_record_is_signed_under_its_own_context() {
    let record = migration_record();
    let signed = record.signed_message(&CardId([0xCA, 0, 0, 0, 0, 0, 0, 8]));
    assert!(signed.starts_with(MIGRATION_RECORD_CONTEXT));
    assert_eq!(
        MigrationRecord::of_usage_record(&CardId([0xCA, 0, 0, 0, 0, 0, 0, 8]), &record)
            .signed_message(),
        signed
    );
    assert_eq!(
        TransactionKind::MigrationIn.writer_role(),
        Some(Role::ServiceTransfer)
    );
    // Round trip through the purse's record codec (stampless).
    assert_eq!(UsageRecord::decode(&record.encode()).unwrap(), record);
}

#[test]
fn a_readout_names_the_move_imported_into_the_area() {
    let readout = AreaReadout {
        card_id: CARD,
        service: TRANSIT,
        content: tickets(),
        imported: Some(([3; MOVE_ID_LEN], [4; 32])),
    };
    let encoded = readout.encode();
    assert_eq!(AreaReadout::decode(&encoded).unwrap(), readout);
    // The mark is optional at the end: a cut before it is the readout without it, and
    // any other cut is refused.
    let without = AreaReadout {
        imported: None,
        ..readout.clone()
    }
    .encode();
    for cut in 0..encoded.len() {
        match AreaReadout::decode(&encoded[..cut]) {
            Ok(decoded) => {
                assert_eq!(cut, without.len());
                assert_eq!(decoded.imported, None);
            }
            Err(_) => assert_ne!(cut, without.len()),
        }
    }
}
