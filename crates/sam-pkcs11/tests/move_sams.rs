//! Seed 002's SAMs in SoftHSM2: a provider SAM whose master was carried into the token gives
//! the area keys of the software SAM and key packages a chip accepts; the transfer SAM's
//! copies open only in the token that sealed them; the administrative SAM's commands are
//! accepted by a chip and refused under a foreign certificate; the keys never come out of
//! the token; and a token that loses a key answers with an error, not a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod move_common;

use std::sync::Arc;

use common::softhsm;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use move_common::*;
use rand_core::OsRng;
use valuecard_card::testing;
use valuecard_core::apdu::Command;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, SigningKeyPair};
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::{Challenge, CLA_ISO};
use valuecard_core::messages::services::{
    area_key, ins, AreaContent, ChannelBinding, KeyChange, KeyState, MigrationRecord, MoveId,
    ServiceChannel, ServiceCode, ServiceKind, ServiceOperation, Ticket, CLA_SERVICES, SERVICES_AID,
};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_migrate::provider::Provider;
use valuecard_migrate::sam::{AdminSam, ProviderSam, SamError, SoftwareAdminSam};
use valuecard_sam_pkcs11::softhsm::THROWAWAY_USER_PIN;
use valuecard_sam_pkcs11::{
    context, MoveSamError, NewMaster, Pkcs11AdminSam, Pkcs11ProviderSam, Pkcs11SamError,
};

const TICKETS: ServiceCode = ServiceCode(0x0102);
const MOVE: MoveId = [0x4D; 16];
const OTHER_MOVE: MoveId = [0x4E; 16];
const STORAGE: [u8; 16] = [0x5C; 16];

fn software_admin() -> SoftwareAdminSam {
    let (key, certificate) = testing::move_administrator();
    SoftwareAdminSam::new(key, certificate).unwrap()
}

/// Provider 2's tickets over the given SAMs.
fn tickets_provider(normal: Arc<dyn ProviderSam>, transfer: Arc<dyn ProviderSam>) -> Provider {
    Provider::new(
        TICKETS,
        ServiceKind::Tickets,
        8,
        normal,
        transfer,
        testing::anchor(),
    )
    .unwrap()
}

fn ticket() -> Ticket {
    Ticket {
        ticket_id: 0x7E57_0001,
        product: 0x0A0B,
        valid_from: testing::today(),
        valid_until: testing::today().add_days(30),
        rides_left: Some(4),
    }
}

/// A logged-in session of the test's own on `token` (the SAMs' sessions keep the user
/// logged in for the process already).
fn own_session(token: &Token) -> Session {
    let pkcs11 = context::context(&token.module).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == token.label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let _ = session.login(
        UserType::User,
        Some(&AuthPin::from(THROWAWAY_USER_PIN.to_owned())),
    );
    session
}

fn binding(card: u8, service: ServiceCode, key_state: KeyState) -> ChannelBinding {
    ChannelBinding {
        card_id: testing::card_id(card),
        service,
        key_state,
        host_challenge: random_array(&mut OsRng),
        card_challenge: random_array(&mut OsRng),
    }
}

/// The card's cryptogram for `binding` under the area key the test masters give.
fn card_cryptogram(number: u8, binding: ChannelBinding) -> [u8; 8] {
    let key = area_key(
        &testing::area_master(number, binding.key_state),
        binding.key_state,
        &binding.card_id,
        binding.service,
    );
    ServiceChannel::for_card(&key, binding).1
}

#[test]
fn a_token_with_the_software_master_derives_the_same_area_keys() {
    let Some(module) = softhsm("move_same_area_keys") else {
        return;
    };
    let token = Token::fresh(&module);
    let normal = token.normal("normal", 2, imported_master(2, KeyState::Main));
    let transfer = token.transfer(
        "transfer",
        2,
        imported_master(2, KeyState::Temporary),
        imported(STORAGE),
    );
    let software: [(&dyn ProviderSam, &dyn ProviderSam); 2] = [
        (&normal, &software_normal(2)),
        (&transfer, &software_transfer(2, STORAGE)),
    ];
    for (from_token, from_software) in software {
        let state = from_token.key_state();
        assert_eq!(state, from_software.key_state());
        for card in 1..=4 {
            for service in [ServiceCode(0x0001), TICKETS, ServiceCode(0xFFFF)] {
                let binding = binding(card, service, state);
                let cryptogram = card_cryptogram(2, binding);
                let (mut token_channel, token_host) =
                    from_token.open_channel(binding, &cryptogram).unwrap();
                let (mut software_channel, software_host) =
                    from_software.open_channel(binding, &cryptogram).unwrap();
                // Equal cryptograms and equal messages: equal session keys, so equal area keys.
                assert_eq!(token_host, software_host, "card {card} service {service}");
                assert_eq!(
                    token_channel.seal(ins::READ_AREA, b"area").unwrap(),
                    software_channel.seal(ins::READ_AREA, b"area").unwrap()
                );
                let mut resumed = from_token.resume_channel(binding, (1, 0)).unwrap();
                assert_eq!(
                    resumed.seal(ins::READ_AREA, b"next").unwrap(),
                    software_channel.seal(ins::READ_AREA, b"next").unwrap()
                );
                // A cryptogram of another area key is refused, as by the software SAM.
                let mut wrong = cryptogram;
                wrong[0] ^= 1;
                assert!(matches!(
                    from_token.open_channel(binding, &wrong),
                    Err(SamError::Channel(_))
                ));
            }
        }
        // A binding of the other key state is not this SAM's.
        let other = match state {
            KeyState::Main => KeyState::Temporary,
            KeyState::Temporary => KeyState::Main,
        };
        let binding = binding(1, TICKETS, other);
        assert!(matches!(
            from_token.open_channel(binding, &card_cryptogram(2, binding)),
            Err(SamError::Channel(_))
        ));
    }
}

#[test]
fn a_chip_accepts_the_token_s_key_packages_and_opens_a_channel_with_it() {
    let Some(module) = softhsm("move_key_packages") else {
        return;
    };
    let token = Token::fresh(&module);
    let normal = Arc::new(token.normal("normal", 2, imported_master(2, KeyState::Main)));
    let transfer = Arc::new(token.transfer(
        "transfer",
        2,
        imported_master(2, KeyState::Temporary),
        NewMaster::Generate,
    ));
    let provider = tickets_provider(normal.clone(), transfer.clone());
    let mut chip = reader(3, 1_000);
    provider
        .issue_area(&software_admin(), &mut chip, testing::today(), &mut OsRng)
        .unwrap();
    let area = area(&chip, TICKETS).unwrap();
    assert_eq!(area.key_state, KeyState::Main);
    let card_id = testing::card_id(3);
    for (state, key) in [
        (KeyState::Main, &area.main_key),
        (KeyState::Temporary, &area.temporary_key),
    ] {
        let expected = area_key(&testing::area_master(2, state), state, &card_id, TICKETS);
        assert_eq!(key.expose(), expected.expose(), "{state:?}");
    }
    assert_eq!(area.mover_certificate.subject(), transfer_subject(2));

    // Normal use through the token's normal SAM: a channel the chip accepts.
    let content = provider
        .normal_use(
            &mut chip,
            Some(&ServiceOperation::IssueTicket(ticket())),
            &mut OsRng,
        )
        .unwrap();
    let AreaContent::Tickets(book) = content else {
        panic!("not a ticket book: {content:?}");
    };
    assert_eq!(book.tickets, [ticket()]);
    assert_eq!(
        provider.normal_use(&mut chip, None, &mut OsRng).unwrap(),
        AreaContent::Tickets(book)
    );

    // A chip certified under another root gets no package.
    let foreign = testing::card_certificate(4)
        .body
        .sign(&SigningKeyPair::from_seed(&[0x99; 32]));
    assert!(matches!(
        normal.key_package(&foreign, TICKETS, testing::today(), &mut OsRng),
        Err(SamError::CardCertificate(_))
    ));
    // Nor does an expired one.
    assert!(matches!(
        transfer.key_package(
            &testing::card_certificate(4),
            TICKETS,
            testing::today().add_days(10 * 365),
            &mut OsRng
        ),
        Err(SamError::CardCertificate(_))
    ));
}

#[test]
fn copies_sealed_by_the_token_open_only_in_it_and_only_as_sealed() {
    let Some(module) = softhsm("move_copies") else {
        return;
    };
    let token = Token::fresh(&module);
    let transfer = token.transfer(
        "transfer",
        1,
        imported_master(1, KeyState::Temporary),
        imported(STORAGE),
    );
    let other_token = token.transfer(
        "other",
        1,
        imported_master(1, KeyState::Temporary),
        NewMaster::Generate,
    );
    let same_key = software_transfer(1, STORAGE);
    let other_key = software_transfer(1, [0x5D; 16]);
    let source = testing::card_id(1);
    let exported = b"the exported purse area, 87654321 minor units".to_vec();

    let sealed = transfer
        .seal_copy(&MOVE, TICKETS, &source, &exported, &mut OsRng)
        .unwrap();
    assert!(
        !sealed
            .windows(8)
            .any(|w| exported.windows(8).any(|e| e == w)),
        "the copy must not show its content"
    );
    assert_eq!(
        transfer
            .open_copy(&MOVE, TICKETS, &source, &sealed)
            .unwrap(),
        exported
    );
    // Two seals of one copy differ (fresh nonces).
    assert_ne!(
        sealed,
        transfer
            .seal_copy(&MOVE, TICKETS, &source, &exported, &mut OsRng)
            .unwrap()
    );
    // The software SAM's layout: a software SAM holding the same storage key (one carried
    // into the token) reads the token's copies and the token reads its.
    assert_eq!(
        same_key
            .open_copy(&MOVE, TICKETS, &source, &sealed)
            .unwrap(),
        exported
    );
    let by_software = same_key
        .seal_copy(&MOVE, TICKETS, &source, &exported, &mut OsRng)
        .unwrap();
    assert_eq!(
        transfer
            .open_copy(&MOVE, TICKETS, &source, &by_software)
            .unwrap(),
        exported
    );
    // Nobody else opens it.
    assert_eq!(
        other_key.open_copy(&MOVE, TICKETS, &source, &sealed),
        Err(SamError::Copy)
    );
    assert_eq!(
        other_token.open_copy(&MOVE, TICKETS, &source, &sealed),
        Err(SamError::Copy)
    );
    // Another move's, service's or chip's copy is refused.
    for (move_id, service, chip) in [
        (OTHER_MOVE, TICKETS, source),
        (MOVE, ServiceCode(0x0001), source),
        (MOVE, TICKETS, testing::card_id(2)),
    ] {
        assert_eq!(
            transfer.open_copy(&move_id, service, &chip, &sealed),
            Err(SamError::Copy),
            "{move_id:?} {service} {chip:?}"
        );
    }
    // Every altered byte and every cut is refused.
    for index in 0..sealed.len() {
        let mut altered = sealed.clone();
        altered[index] ^= 0x01;
        assert_eq!(
            transfer.open_copy(&MOVE, TICKETS, &source, &altered),
            Err(SamError::Copy),
            "byte {index}"
        );
    }
    for length in [0, 1, 11, 12, 13, 27, sealed.len() - 1] {
        assert_eq!(
            transfer.open_copy(&MOVE, TICKETS, &source, &sealed[..length]),
            Err(SamError::Copy),
            "length {length}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(
        transfer.open_copy(&MOVE, TICKETS, &source, &longer),
        Err(SamError::Copy)
    );
}

#[test]
fn the_transfer_sam_signs_records_and_the_normal_sam_neither_seals_nor_signs() {
    let Some(module) = softhsm("move_records") else {
        return;
    };
    let token = Token::fresh(&module);
    let transfer = token.transfer("transfer", 1, NewMaster::Generate, NewMaster::Generate);
    let normal = token.normal("normal", 1, NewMaster::Generate);
    let record = MigrationRecord {
        card_id: testing::card_id(2),
        writer: transfer_subject(1),
        challenge_host: [0x11; 16],
        challenge_card: [0x22; 16],
        counter: 7,
        amount: Amount::new(87_654_321).unwrap(),
        balance_after: Amount::new(87_655_021).unwrap(),
        writer_sequence: 1,
        date: testing::today(),
    };
    let signature = transfer.sign_migration_record(&record).unwrap();
    transfer
        .certificate()
        .body
        .signing_key
        .verify(&record.signed_message(), &signature)
        .unwrap();
    assert_eq!(
        transfer.public_key(),
        transfer.certificate().body.signing_key
    );
    let mut other_writer = record.clone();
    other_writer.writer = normal_subject(1);
    assert!(matches!(
        transfer.sign_migration_record(&other_writer),
        Err(SamError::Unsupported(_))
    ));

    assert_eq!(normal.key_state(), KeyState::Main);
    assert!(matches!(
        normal.seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng),
        Err(SamError::Unsupported(_))
    ));
    let sealed = transfer
        .seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng)
        .unwrap();
    assert!(matches!(
        normal.open_copy(&MOVE, TICKETS, &testing::card_id(1), &sealed),
        Err(SamError::Unsupported(_))
    ));
    let mut by_normal = record.clone();
    by_normal.writer = normal_subject(1);
    assert!(matches!(
        normal.sign_migration_record(&by_normal),
        Err(SamError::Unsupported(_))
    ));
}

/// SELECT of the services application and GET CHALLENGE: the chip's next challenge.
fn challenge(chip: &mut Reader) -> Challenge {
    use valuecard_reader::CardReader;
    let selected = chip
        .exchange(
            &Command::new(CLA_ISO, 0xA4, 0x04, 0x00)
                .with_data(SERVICES_AID.to_vec())
                .with_le(256),
        )
        .unwrap();
    assert_eq!(selected.sw, StatusWord::SUCCESS);
    let answer = chip
        .exchange(&Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(16))
        .unwrap();
    assert_eq!(answer.sw, StatusWord::SUCCESS);
    answer.data.try_into().unwrap()
}

/// SWITCH KEYS of `service` on test card `card` to `state`, signed by `admin` over the
/// chip's fresh challenge: the chip's status word.
fn switch(
    admin: &dyn AdminSam,
    chip: &mut Reader,
    card: u8,
    service: ServiceCode,
    state: KeyState,
) -> StatusWord {
    use valuecard_reader::CardReader;
    let challenge = challenge(chip);
    let command = admin
        .switch_keys(
            &testing::card_id(card),
            &challenge,
            MOVE,
            vec![KeyChange {
                service,
                key_state: state,
            }],
        )
        .unwrap();
    chip.exchange(&Command::new(CLA_SERVICES, ins::SWITCH_KEYS, 0, 0).with_data(command.encode()))
        .unwrap()
        .sw
}

#[test]
fn a_chip_accepts_the_token_admin_s_format_and_switch_and_refuses_a_foreign_one() {
    let Some(module) = softhsm("move_admin") else {
        return;
    };
    let token = Token::fresh(&module);
    let admin = token.admin("admin");
    assert_eq!(admin.certificate().body.signing_key, admin.public_key());
    let provider = tickets_provider(
        Arc::new(software_normal(2)),
        Arc::new(software_transfer(2, STORAGE)),
    );
    let mut chip = reader(1, 500);
    provider
        .issue_area(&admin, &mut chip, testing::today(), &mut OsRng)
        .unwrap();
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Main);
    assert_eq!(
        switch(&admin, &mut chip, 1, TICKETS, KeyState::Temporary),
        StatusWord::SUCCESS
    );
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Temporary);
    assert_eq!(
        switch(&admin, &mut chip, 1, TICKETS, KeyState::Main),
        StatusWord::SUCCESS
    );
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Main);

    // The token refuses to sign FORMAT AREA with packages that are not the area's.
    let (main, temporary) = provider
        .key_packages(&testing::card_certificate(2), testing::today(), &mut OsRng)
        .unwrap();
    let card_id = testing::card_id(2);
    let challenge: Challenge = [0x33; 16];
    assert!(matches!(
        admin.format_area(
            &card_id,
            &challenge,
            provider.format(),
            KeyState::Main,
            temporary.clone(),
            main.clone(),
        ),
        Err(SamError::Unsupported(_))
    ));
    let mut other_service = provider.format();
    other_service.service = ServiceCode(0x0203);
    assert!(matches!(
        admin.format_area(
            &card_id,
            &challenge,
            other_service,
            KeyState::Main,
            main.clone(),
            temporary.clone(),
        ),
        Err(SamError::Unsupported(_))
    ));

    // The token's key under another scheme's root: the SAM opens (its certificate is the
    // center's business), but no chip of this scheme obeys it.
    let address = token.address("admin");
    let foreign = Pkcs11AdminSam::open(
        &address,
        certificate_under(
            &SigningKeyPair::from_seed(&[0x99; 32]),
            admin.public_key(),
            admin_subject(),
            Role::MoveAdministrator,
        ),
    )
    .unwrap();
    assert_ne!(
        switch(&foreign, &mut chip, 1, TICKETS, KeyState::Temporary),
        StatusWord::SUCCESS
    );
    assert_eq!(area(&chip, TICKETS).unwrap().key_state, KeyState::Main);
    let mut fresh = reader(2, 0);
    assert!(provider
        .issue_area(&foreign, &mut fresh, testing::today(), &mut OsRng)
        .is_err());
    assert!(area(&fresh, TICKETS).is_none());

    // Certificates the token's SAM refuses to open with: another key's, another role's.
    assert_eq!(
        Pkcs11AdminSam::open(&address, testing::move_administrator().1).unwrap_err(),
        MoveSamError::ForeignCertificate
    );
    assert_eq!(
        Pkcs11AdminSam::open(
            &address,
            certificate(admin.public_key(), admin_subject(), Role::ServiceProvider)
        )
        .unwrap_err(),
        MoveSamError::WrongRole(Role::ServiceProvider)
    );
    // A second administrative SAM under the same label is refused.
    assert!(matches!(
        Pkcs11AdminSam::provision(&address),
        Err(MoveSamError::Token(Pkcs11SamError::AlreadyExists(_)))
    ));
}

#[test]
fn the_master_and_storage_keys_never_leave_the_token() {
    let Some(module) = softhsm("move_keys_sensitive") else {
        return;
    };
    let token = Token::fresh(&module);
    let _normal = token.normal("normal", 1, NewMaster::Generate);
    let _transfer = token.transfer(
        "transfer",
        1,
        imported_master(1, KeyState::Temporary),
        NewMaster::Generate,
    );
    let session = own_session(&token);
    let mut labels = Vec::new();
    for key in session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap()
    {
        let info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "CKA_VALUE must not be readable: {info:?}"
        );
        let attributes = session
            .get_attributes(
                key,
                &[
                    AttributeType::Label,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Token,
                    AttributeType::Value,
                    AttributeType::Sign,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Wrap,
                    AttributeType::Unwrap,
                    AttributeType::Derive,
                ],
            )
            .unwrap();
        assert!(
            !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
            "no key value may come back"
        );
        let label = attributes
            .iter()
            .find_map(|a| match a {
                Attribute::Label(label) => Some(String::from_utf8(label.clone()).unwrap()),
                _ => None,
            })
            .unwrap();
        // A master computes CMACs only; a storage key seals and opens only.
        let storage = label.ends_with("/copy-storage");
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Token(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Sign(!storage),
            Attribute::Encrypt(storage),
            Attribute::Decrypt(storage),
        ] {
            assert!(
                attributes.contains(&expected),
                "{label}: {expected:?} in {attributes:?}"
            );
        }
        // Only the imported master ever existed outside the token.
        assert_eq!(
            attributes.contains(&Attribute::NeverExtractable(true)),
            label != "transfer/area-master",
            "{label}"
        );
        labels.push(label);
    }
    labels.sort();
    assert_eq!(
        labels,
        [
            "normal/area-master",
            "transfer/area-master",
            "transfer/copy-storage"
        ]
    );
    // The signing keys are as closed.
    for key in session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
    {
        let attributes = session
            .get_attributes(key, &[AttributeType::Sensitive, AttributeType::Extractable])
            .unwrap();
        assert!(attributes.contains(&Attribute::Sensitive(true)));
        assert!(attributes.contains(&Attribute::Extractable(false)));
    }
}

#[test]
fn opening_checks_the_certificate_against_the_token_s_keys() {
    let Some(module) = softhsm("move_open_checks") else {
        return;
    };
    let token = Token::fresh(&module);
    let normal_address = token.address("normal");
    let normal_public =
        Pkcs11ProviderSam::provision_normal(&normal_address, NewMaster::Generate).unwrap();
    let transfer_address = token.address("transfer");
    let transfer_public = Pkcs11ProviderSam::provision_transfer(
        &transfer_address,
        NewMaster::Generate,
        NewMaster::Generate,
    )
    .unwrap();
    let open = |address, key, role| {
        Pkcs11ProviderSam::open(
            address,
            certificate(key, normal_subject(1), role),
            testing::anchor(),
        )
    };
    assert_eq!(
        open(&normal_address, normal_public, Role::ServiceProvider)
            .unwrap()
            .key_state(),
        KeyState::Main
    );
    assert_eq!(
        open(&transfer_address, transfer_public, Role::ServiceTransfer)
            .unwrap()
            .key_state(),
        KeyState::Temporary
    );
    // A transfer SAM's certificate over a token without a storage key, and the reverse.
    assert_eq!(
        open(&normal_address, normal_public, Role::ServiceTransfer).unwrap_err(),
        MoveSamError::KindMismatch("transfer")
    );
    assert_eq!(
        open(&transfer_address, transfer_public, Role::ServiceProvider).unwrap_err(),
        MoveSamError::KindMismatch("normal")
    );
    assert_eq!(
        open(&normal_address, transfer_public, Role::ServiceProvider).unwrap_err(),
        MoveSamError::ForeignCertificate
    );
    assert_eq!(
        open(&normal_address, normal_public, Role::MoveAdministrator).unwrap_err(),
        MoveSamError::WrongRole(Role::MoveAdministrator)
    );
    assert!(matches!(
        Pkcs11ProviderSam::provision_normal(&normal_address, NewMaster::Generate),
        Err(MoveSamError::Token(Pkcs11SamError::AlreadyExists(_)))
    ));
    assert!(matches!(
        open(
            &token.address("nobody"),
            normal_public,
            Role::ServiceProvider
        ),
        Err(MoveSamError::Token(Pkcs11SamError::MissingObject(_)))
    ));
}

#[test]
fn a_token_that_lost_its_keys_answers_an_error_not_a_panic() {
    let Some(module) = softhsm("move_token_failure") else {
        return;
    };
    let token = Token::fresh(&module);
    let transfer = token.transfer("transfer", 1, NewMaster::Generate, NewMaster::Generate);
    let admin = token.admin("admin");
    let sealed = transfer
        .seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng)
        .unwrap();
    let session = own_session(&token);
    for object in session.find_objects(&[Attribute::Token(true)]).unwrap() {
        session.destroy_object(object).unwrap();
    }
    let unavailable = |result: Result<(), SamError>| {
        assert!(
            matches!(result, Err(SamError::Unavailable(_))),
            "{result:?}"
        );
    };
    unavailable(
        transfer
            .key_package(
                &testing::card_certificate(1),
                TICKETS,
                testing::today(),
                &mut OsRng,
            )
            .map(drop),
    );
    let binding = binding(1, TICKETS, KeyState::Temporary);
    unavailable(
        transfer
            .open_channel(binding, &card_cryptogram(1, binding))
            .map(drop),
    );
    unavailable(
        transfer
            .seal_copy(&MOVE, TICKETS, &testing::card_id(1), b"area", &mut OsRng)
            .map(drop),
    );
    unavailable(
        transfer
            .open_copy(&MOVE, TICKETS, &testing::card_id(1), &sealed)
            .map(drop),
    );
    unavailable(
        admin
            .switch_keys(&CardId([1; 8]), &[0; 16], MOVE, Vec::new())
            .map(drop),
    );
    // What the SAM holds outside the token is intact.
    assert_eq!(transfer.certificate().subject(), transfer_subject(1));
}
