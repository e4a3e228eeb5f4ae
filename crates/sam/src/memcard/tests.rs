use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{Signature, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::memcard::{
    CardContent, ValueArea, WriteKind, WriteRecord, COUNTER_START,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use super::*;
use crate::testing::TestCenter;
use crate::{Sam, SoftwareSam};

const TODAY: Date = Date(20_600);
const CARD: CardId = CardId([0x4D, 0, 0, 0, 0, 0, 0, 1]);

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(1)
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap()
}

fn blank() -> CardContent {
    CardContent {
        card_id: CARD,
        counter: COUNTER_START,
        value_area: ValueArea::Blank,
        signature: Signature([0; 64]),
        certificate: None,
    }
}

/// The card after `record` was written whole by the machine of `sam`.
fn written(record: &WriteRecord, sam: &SoftwareSam) -> CardContent {
    CardContent {
        card_id: record.written.card_id,
        counter: record.written.counter,
        value_area: record.written.value_area.clone(),
        signature: record.written.signature,
        certificate: Some(sam.certificate().unwrap().clone()),
    }
}

struct Setup {
    center: TestCenter,
    charger: SoftwareSam,
    payer: SoftwareSam,
}

fn setup() -> Setup {
    let mut rng = rng();
    let mut center = TestCenter::new(&mut rng, DeviceId([0xCE; 8]), TODAY);
    let mut charger = center.install(Role::ChargeMachine, &mut rng);
    let payer = center.install(Role::PaymentMachine, &mut rng);
    let grant = center.grant(charger.device_id(), 1, amount(10_000));
    charger.take_float_grant(&grant).unwrap();
    Setup {
        center,
        charger,
        payer,
    }
}

fn order(kind: WriteKind, card: VerifiedMemcardState, minor: u64) -> MemcardWriteOrder {
    MemcardWriteOrder {
        kind,
        card,
        amount: amount(minor),
        date: TODAY,
        format: ValueFormat::Plain,
        sequence_floor: 0,
    }
}

fn charged(setup: &mut Setup, minor: u64, format: ValueFormat) -> (WriteRecord, CardContent) {
    let card = setup
        .charger
        .check_memcard_content(&blank(), TODAY)
        .unwrap();
    let mut order = order(WriteKind::Charge, card, minor);
    order.format = format;
    let record = setup.charger.sign_memcard_write(&order).unwrap();
    let content = written(&record, &setup.charger);
    (record, content)
}

fn refusal(result: Result<VerifiedMemcardState, SamError>) -> MemcardCheckError {
    match result {
        Err(SamError::MemcardState(error)) => error,
        other => panic!("expected a refused card state, got {other:?}"),
    }
}

#[test]
fn a_charge_onto_a_new_card_lowers_the_float_and_verifies_at_a_payment_machine() {
    let mut setup = setup();
    let (record, content) = charged(&mut setup, 2_500, ValueFormat::Plain);
    assert_eq!(setup.charger.float(), amount(7_500));
    assert_eq!(record.kind, WriteKind::Charge);
    assert_eq!(record.sequence, 1);
    assert_eq!(record.balance_before, Amount::ZERO);
    assert_eq!(record.balance_after, amount(2_500));
    assert_eq!(record.previous, None);
    assert_eq!(record.written.counter, COUNTER_START - 1);
    assert_eq!(WriteRecord::decode(&record.encode()).unwrap(), record);

    let verified = setup.payer.check_memcard_content(&content, TODAY).unwrap();
    assert_eq!(verified.balance(), amount(2_500));
    assert_eq!(verified.writer(), Some(setup.charger.device_id()));
    assert_eq!(verified.writer_role(), Some(Role::ChargeMachine));
    let payment = setup
        .payer
        .sign_memcard_write(&order(WriteKind::Payment, verified, 1_000))
        .unwrap();
    assert_eq!(payment.balance_after, amount(1_500));
    assert_eq!(payment.previous.as_ref(), Some(&record.written));
    assert_eq!(payment.written.counter, COUNTER_START - 2);
    let after = written(&payment, &setup.payer);
    let again = setup.charger.check_memcard_content(&after, TODAY).unwrap();
    assert_eq!(again.balance(), amount(1_500));
}

#[test]
fn a_sealed_value_opens_in_any_installed_sam_and_is_not_in_the_clear() {
    let mut setup = setup();
    let (record, content) = charged(&mut setup, 4_200, ValueFormat::Sealed);
    assert!(matches!(
        record.written.value_area,
        ValueArea::Sealed { .. }
    ));
    let area = record.written.value_area.encode();
    assert!(!area
        .windows(8)
        .any(|window| window == amount(4_200).to_be_bytes()));
    let verified = setup.payer.check_memcard_content(&content, TODAY).unwrap();
    assert_eq!(verified.balance(), amount(4_200));

    // Flip one ciphertext bit and sign it again with the charger's key (as an insider who
    // holds that key could): the signature holds, the seal does not.
    let ValueArea::Sealed {
        nonce,
        mut ciphertext,
    } = record.written.value_area.clone()
    else {
        unreachable!()
    };
    ciphertext[0] ^= 1;
    let mut altered = content.clone();
    altered.value_area = ValueArea::Sealed { nonce, ciphertext };
    altered.signature = setup
        .charger
        .extract_signing_key()
        .sign(&altered.signing_input());
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&altered, TODAY)),
        MemcardCheckError::SealBroken
    );
}

#[test]
fn edited_copied_and_restored_images_are_refused() {
    let mut setup = setup();
    let (_, first) = charged(&mut setup, 3_000, ValueFormat::Plain);
    // An amount edited by hand.
    let mut edited = first.clone();
    edited.value_area = ValueArea::Plain(valuecard_core::messages::memcard::PlainValue {
        date: TODAY,
        amount: amount(30_000),
    });
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&edited, TODAY)),
        MemcardCheckError::BadSignature
    );
    // The image copied onto another card ID.
    let mut copied = first.clone();
    copied.card_id = CardId([0x4D, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&copied, TODAY)),
        MemcardCheckError::BadSignature
    );
    // The image written back after a later write: the writing of its value area lowered
    // the counter once more.
    let mut restored = first.clone();
    restored.counter -= 2;
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&restored, TODAY)),
        MemcardCheckError::StaleImage {
            signed_counter: first.counter,
            card_counter: first.counter - 2,
        }
    );
}

#[test]
fn certificates_not_of_this_center_or_not_of_a_machine_are_refused() {
    let mut setup = setup();
    let (_, content) = charged(&mut setup, 1_000, ValueFormat::Plain);
    // Another seed: another root key.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // A machine certified by another root, signing the same state.
    let mut other = TestCenter::new(&mut rng, DeviceId([0xCE; 8]), TODAY);
    let foreign_sam = other.install(Role::ChargeMachine, &mut rng);
    let mut foreign = content.clone();
    foreign.certificate = Some(foreign_sam.certificate().unwrap().clone());
    foreign.signature = foreign_sam
        .extract_signing_key()
        .sign(&foreign.signing_input());
    assert!(matches!(
        refusal(setup.payer.check_memcard_content(&foreign, TODAY)),
        MemcardCheckError::Certificate(_)
    ));

    // A key of this center certified as a purse terminal signs a memory-card state.
    let key = SigningKeyPair::generate(&mut rng);
    let mut terminal = content.clone();
    terminal.certificate = Some(setup.center.certify(
        DeviceId([7; 8]),
        Role::PaymentTerminal,
        &key,
        None,
    ));
    terminal.signature = key.sign(&terminal.signing_input());
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&terminal, TODAY)),
        MemcardCheckError::WriterRole(Role::PaymentTerminal)
    );

    // A value without a certificate, and a blank area on a used card.
    let mut bare = content.clone();
    bare.certificate = None;
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&bare, TODAY)),
        MemcardCheckError::NoCertificate
    );
    let mut wiped = blank();
    wiped.counter -= 3;
    assert_eq!(
        refusal(setup.payer.check_memcard_content(&wiped, TODAY)),
        MemcardCheckError::NotBlank {
            counter: COUNTER_START - 3
        }
    );
}

#[test]
fn roles_float_and_balance_bound_what_a_sam_signs() {
    let mut setup = setup();
    let new_card = setup
        .charger
        .check_memcard_content(&blank(), TODAY)
        .unwrap();
    // A payment machine does not charge, a charge machine does not take payments.
    assert!(matches!(
        setup
            .payer
            .sign_memcard_write(&order(WriteKind::Charge, new_card.clone(), 10)),
        Err(SamError::MemcardRefused(_))
    ));
    // Above the float: refused, and the float unchanged.
    assert_eq!(
        setup
            .charger
            .sign_memcard_write(&order(WriteKind::Charge, new_card.clone(), 10_001)),
        Err(SamError::InsufficientFloat {
            float: amount(10_000),
            amount: amount(10_001)
        })
    );
    assert_eq!(setup.charger.float(), amount(10_000));
    assert_eq!(setup.charger.memcard_sequence(), 0);
    // Zero amounts.
    assert!(matches!(
        setup
            .charger
            .sign_memcard_write(&order(WriteKind::Charge, new_card, 0)),
        Err(SamError::MemcardRefused(_))
    ));

    let (_, content) = charged(&mut setup, 500, ValueFormat::Plain);
    let card = setup.payer.check_memcard_content(&content, TODAY).unwrap();
    assert!(matches!(
        setup
            .charger
            .sign_memcard_write(&order(WriteKind::Payment, card.clone(), 100)),
        Err(SamError::MemcardRefused(_))
    ));
    assert!(matches!(
        setup
            .payer
            .sign_memcard_write(&order(WriteKind::Payment, card.clone(), 501)),
        Err(SamError::MemcardRefused(_))
    ));
    assert_eq!(setup.payer.memcard_sequence(), 0);
    // The machine's log asks for a higher sequence than the SAM's own: it gets it.
    let mut floor = order(WriteKind::Payment, card, 500);
    floor.sequence_floor = 40;
    assert_eq!(setup.payer.sign_memcard_write(&floor).unwrap().sequence, 40);
    assert_eq!(setup.payer.memcard_sequence(), 40);
}

#[test]
fn an_exhausted_counter_is_refused() {
    let state = MachineState {
        role: Role::ChargeMachine,
        float: amount(100),
        last_sequence: 0,
    };
    // A blank area on a card whose counter is not at its start is refused before that;
    // build the state the check would give for a new card at counter 1 directly.
    let card = VerifiedMemcardState {
        card_id: CARD,
        counter: 1,
        kind: VerifiedKind::Blank,
    };
    assert_eq!(
        prepare_write(&order(WriteKind::Charge, card, 10), state),
        Err(SamError::MemcardRefused("the card's counter is exhausted"))
    );
}

#[test]
fn float_grants_are_checked_once_each_in_order_and_bounded() {
    let mut setup = setup();
    let machine = setup.charger.device_id();
    // Taken already (number 1), and an older one.
    assert!(matches!(
        setup
            .charger
            .take_float_grant(&setup.center.grant(machine, 1, amount(5))),
        Err(SamError::FloatGrantRefused(_))
    ));
    // For another machine.
    assert!(matches!(
        setup
            .charger
            .take_float_grant(&setup.center.grant(DeviceId([9; 8]), 2, amount(5))),
        Err(SamError::FloatGrantRefused(_))
    ));
    // Forged: signed by another key.
    let mut forged = setup.center.grant(machine, 2, amount(5));
    forged.amount = amount(5_000);
    assert!(matches!(
        setup.charger.take_float_grant(&forged),
        Err(SamError::FloatGrantRefused(_))
    ));
    // Above the bound.
    assert!(matches!(
        setup
            .charger
            .take_float_grant(&setup.center.grant(machine, 2, FLOAT_MAX)),
        Err(SamError::FloatGrantRefused(_))
    ));
    // A payment machine holds no float.
    let payer = setup.payer.device_id();
    assert!(matches!(
        setup
            .payer
            .take_float_grant(&setup.center.grant(payer, 1, amount(5))),
        Err(SamError::FloatGrantRefused(_))
    ));
    assert_eq!(setup.charger.float(), amount(10_000));
    // A newer grant adds up, skipping numbers is allowed.
    assert_eq!(
        setup
            .charger
            .take_float_grant(&setup.center.grant(machine, 5, amount(5)))
            .unwrap(),
        amount(10_005)
    );
}

#[test]
fn the_image_keeps_float_grant_and_sequence_and_a_version_2_image_loads() {
    let mut setup = setup();
    let _ = charged(&mut setup, 100, ValueFormat::Plain);
    let image = setup.charger.to_image();
    let loaded = SoftwareSam::from_image(&image).unwrap();
    assert_eq!(loaded.float(), amount(9_900));
    assert_eq!(loaded.memcard_sequence(), 1);
    let mut loaded = loaded.with_clock(Box::new(valuecard_core::time::FixedClock(TODAY)));
    // The last grant number came along: grant 1 is refused again.
    let machine = loaded.device_id();
    assert!(matches!(
        loaded.take_float_grant(&setup.center.grant(machine, 1, amount(5))),
        Err(SamError::FloatGrantRefused(_))
    ));

    // A version-2 image is this one's prefix with the old magic, without the memory-card
    // fields (they come last).
    let mut version_2 = image.clone();
    let magic = b"valuecard-sam-v3";
    let at = version_2
        .windows(magic.len())
        .position(|w| w == magic)
        .unwrap();
    version_2[at..at + magic.len()].copy_from_slice(b"valuecard-sam-v2");
    // Three trailing TLVs: tag, length, value (8, 4 and 4 bytes).
    version_2.truncate(version_2.len() - (2 + 8) - (2 + 4) - (2 + 4));
    let old = SoftwareSam::from_image(&version_2).unwrap();
    assert_eq!(old.float(), Amount::ZERO);
    assert_eq!(old.memcard_sequence(), 0);
    assert_eq!(old.device_id(), setup.charger.device_id());
}
