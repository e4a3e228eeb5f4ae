//! Memory-card machines over HTTP (seed 001): write records, float and restore evidence
//! through `HttpCenterLink` as `MemcardLink`, the role each endpoint admits, and the
//! problem documents of every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::SeedableRng;
use valuecard_center::Center;
use valuecard_center_http::memcard_wire::{FloatRequestBody, WriteUploadBody};
use valuecard_center_http::paths;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, SigningKeyPair};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{CenterError, InstallationRequest, TerminalLink};
use valuecard_core::messages::memcard::{
    state_signing_input, MemcardLink, PlainValue, SignedState, ValueArea, WriteKind, WriteRecord,
    WriteUpload, COUNTER_START,
};
use valuecard_sam::{Sam, SoftwareSam};
use valuecard_sim::WorldRng;

/// A machine installed at the center with a software SAM (it signs the requests), and the
/// same signing key in the test's hands (to sign write records as the SAM's memory-card
/// methods will): the SAM draws its signing key first from the generator, so a copy of the
/// generator yields the same key.
struct Machine {
    image: Vec<u8>,
    id: DeviceId,
    key: SigningKeyPair,
}

fn machine(center: &mut Center, role: Role, rng: &mut WorldRng) -> Machine {
    let id = center.allocate_device_id().unwrap();
    let key = SigningKeyPair::generate(&mut rng.clone());
    let mut sam =
        SoftwareSam::manufacture(id, center.transport_key_for_device(&id), rng).with_clock(clock());
    assert_eq!(sam.signing_key(), key.public_key());
    let challenge = random_array(rng);
    let request = InstallationRequest {
        device_id: id,
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge,
    };
    let installation = center.install_device(&request, role).unwrap();
    sam.install(&installation, &challenge, role, today())
        .unwrap();
    Machine {
        image: sam.to_image(),
        id,
        key,
    }
}

fn state(machine: &Machine, card: CardId, counter: u32, value: u64) -> SignedState {
    let value_area = ValueArea::Plain(PlainValue {
        date: today(),
        amount: amount(value),
    });
    SignedState {
        card_id: card,
        counter,
        signature: machine
            .key
            .sign(&state_signing_input(&card, counter, &value_area.encode())),
        value_area,
        writer: machine.id,
    }
}

fn record(
    kind: WriteKind,
    sequence: u32,
    balances: (u64, u64),
    previous: Option<SignedState>,
    written: SignedState,
) -> WriteRecord {
    WriteRecord {
        kind,
        sequence,
        date: today(),
        balance_before: amount(balances.0),
        balance_after: amount(balances.1),
        previous,
        written,
    }
}

struct Scene {
    h: Harness,
    charger: Machine,
    payer: Machine,
    card: CardId,
}

fn scene(seed: u64) -> Scene {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(seed)).unwrap();
    let h = Harness::start(center, seed);
    let mut rng = WorldRng::seed_from_u64(seed + 1);
    let (charger, payer) = h.with_center(|center| {
        (
            machine(center, Role::ChargeMachine, &mut rng),
            machine(center, Role::PaymentMachine, &mut rng),
        )
    });
    Scene {
        h,
        charger,
        payer,
        card: CardId([0x3C, 0, 0, 0, 0, 0, 1, 1]),
    }
}

#[test]
fn machines_upload_ask_float_and_read_restore_evidence_over_http() {
    let s = scene(71);
    let mut charge_link = s.h.link(&s.charger.image);
    let mut pay_link = s.h.link(&s.payer.image);

    let grant = charge_link
        .request_float(s.charger.id, amount(5_000))
        .unwrap();
    assert_eq!((grant.grant_number, grant.amount), (1, amount(5_000)));
    let charged = state(&s.charger, s.card, COUNTER_START - 1, 3_000);
    let charge = record(WriteKind::Charge, 1, (0, 3_000), None, charged.clone());
    let paid = state(&s.payer, s.card, COUNTER_START - 2, 2_400);
    let payment = record(WriteKind::Payment, 1, (3_000, 2_400), Some(charged), paid);
    let mut forged = payment.clone();
    forged.sequence = 2;
    forged.written.signature.0[0] ^= 1;

    let receipt = charge_link
        .upload_writes(&WriteUpload {
            machine: s.charger.id,
            records: vec![charge.clone()],
        })
        .unwrap();
    assert_eq!(receipt.stored, 1, "{receipt:?}");
    let upload = WriteUpload {
        machine: s.payer.id,
        records: vec![payment.clone(), forged],
    };
    let receipt = pay_link.upload_writes(&upload).unwrap();
    assert_eq!((receipt.stored, receipt.duplicates), (1, 0), "{receipt:?}");
    assert_eq!(receipt.refused.len(), 1);
    assert_eq!(receipt.refused[0].0, 2);
    assert!(receipt.refused[0].1.contains("signature"), "{receipt:?}");
    // The answer was lost: sent again, duplicates.
    let again = pay_link.upload_writes(&upload).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1), "{again:?}");
    // An empty upload is answered.
    let empty = WriteUpload {
        machine: s.payer.id,
        records: Vec::new(),
    };
    assert_eq!(pay_link.upload_writes(&empty).unwrap().stored, 0);

    // Restore evidence, for either machine; none for a card no record names.
    let evidence = charge_link.latest_state(&s.card).unwrap().unwrap();
    assert_eq!(evidence.record, payment);
    assert_eq!(evidence.writer_certificate.subject(), s.payer.id);
    let unknown = CardId([0x3C, 0, 0, 0, 0, 0, 9, 9]);
    assert_eq!(pay_link.latest_state(&unknown).unwrap(), None);

    // Machines keep the blocking lists too.
    let delta = pay_link.list_delta(s.payer.id, 0).unwrap();
    assert_eq!(delta.version, 0);

    let totals = s.h.with_center(|center| center.memcard_totals().unwrap());
    assert_eq!(
        (
            totals.charged,
            totals.spent,
            totals.on_cards,
            totals.float_granted
        ),
        (3_000, 600, 2_400, 5_000)
    );
}

#[test]
fn each_endpoint_admits_its_roles_and_refuses_with_problem_documents() {
    let s = scene(73);
    let mut pay_link = s.h.link(&s.payer.image);
    let mut terminal_link = s.h.link(&s.h.terminal);
    let mut charge_link = s.h.link(&s.charger.image);

    // Float is for charge machines only: a payment machine gets 403.
    assert!(matches!(
        pay_link.request_float(s.payer.id, amount(100)),
        Err(CenterError::NotAuthorized(_))
    ));
    let body = serde_json::to_vec(&FloatRequestBody::new(s.payer.id, amount(100))).unwrap();
    let headers = signed_by(
        &s.payer.image,
        "POST",
        paths::MEMCARD_FLOAT,
        s.h.next_sequence(&s.payer.image),
        &body,
    );
    let problem = send(&s.h.url(), "POST", paths::MEMCARD_FLOAT, &headers, &body)
        .problem(403, "not-authorized");
    assert!(problem.detail.contains("charge machine"), "{problem:?}");

    // Uploads are for machines: a payment terminal gets 403 through the client and raw.
    let own = WriteUpload {
        machine: device_id(&s.h.terminal),
        records: Vec::new(),
    };
    assert!(matches!(
        terminal_link.upload_writes(&own),
        Err(CenterError::NotAuthorized(_))
    ));
    let body = serde_json::to_vec(&WriteUploadBody::new(&own)).unwrap();
    let headers = signed_by(
        &s.h.terminal,
        "POST",
        paths::MEMCARD_WRITES,
        s.h.next_sequence(&s.h.terminal),
        &body,
    );
    let problem = send(&s.h.url(), "POST", paths::MEMCARD_WRITES, &headers, &body)
        .problem(403, "not-authorized");
    assert!(problem.detail.contains("payment machine"), "{problem:?}");
    // A machine speaking for another device is refused.
    assert!(matches!(
        pay_link.upload_writes(&WriteUpload {
            machine: s.charger.id,
            records: Vec::new()
        }),
        Err(CenterError::NotAuthorized(_))
    ));
    // Restore evidence is for machines: a terminal gets 403.
    let path = paths::memcard_latest(&s.card);
    let headers = signed_by(
        &s.h.terminal,
        "GET",
        &path,
        s.h.next_sequence(&s.h.terminal),
        b"",
    );
    send(&s.h.url(), "GET", &path, &headers, b"").problem(403, "not-authorized");
    // A card ID that is not one: 400.
    let path = "/v1/memcard/cards/zz/latest";
    let headers = signed_by(
        &s.payer.image,
        "GET",
        path,
        s.h.next_sequence(&s.payer.image),
        b"",
    );
    send(&s.h.url(), "GET", path, &headers, b"").problem(400, "malformed-request");
    // A body that is not a write upload, and a record that does not decode: 400.
    for body in [
        br#"{"machine_id":"00","records":[],"extra":1}"#.to_vec(),
        format!(
            r#"{{"machine_id":"{}","records":["e100"]}}"#,
            s.payer.id.to_hex()
        )
        .into_bytes(),
    ] {
        let headers = signed_by(
            &s.payer.image,
            "POST",
            paths::MEMCARD_WRITES,
            s.h.next_sequence(&s.payer.image),
            &body,
        );
        send(&s.h.url(), "POST", paths::MEMCARD_WRITES, &headers, &body)
            .problem(400, "malformed-request");
    }
    // Float beyond the limit: 422 amount, with the reason.
    s.h.with_center(|center| center.set_float_limit(s.charger.id, 1_000).unwrap());
    assert_eq!(
        charge_link
            .request_float(s.charger.id, amount(2_000))
            .unwrap()
            .amount,
        amount(1_000)
    );
    assert!(matches!(
        charge_link.request_float(s.charger.id, amount(1)),
        Err(CenterError::Amount(reason)) if reason.contains("upload")
    ));
    // Nothing of the refusals was stored.
    let totals = s.h.with_center(|center| center.memcard_totals().unwrap());
    assert_eq!((totals.charges, totals.payments, totals.grants), (0, 0, 1));
}

#[test]
fn pending_writes_are_reported_held_offered_and_settled_over_http() {
    let s = scene(74);
    let mut charge_link = s.h.link(&s.charger.image);
    let mut pay_link = s.h.link(&s.payer.image);
    let mut terminal_link = s.h.link(&s.h.terminal);
    charge_link
        .request_float(s.charger.id, amount(5_000))
        .unwrap();
    let charged = state(&s.charger, s.card, COUNTER_START - 1, 3_000);
    let charge = record(WriteKind::Charge, 1, (0, 3_000), None, charged.clone());
    charge_link
        .upload_writes(&WriteUpload {
            machine: s.charger.id,
            records: vec![charge],
        })
        .unwrap();
    // A payment torn on the card, reported pending: held, and offered as the card's state.
    let torn_state = state(&s.payer, s.card, COUNTER_START - 2, 2_000);
    let torn = record(
        WriteKind::Payment,
        1,
        (3_000, 2_000),
        Some(charged),
        torn_state.clone(),
    );
    let report = WriteUpload {
        machine: s.payer.id,
        records: vec![torn.clone()],
    };
    let receipt = pay_link.report_pending(&report).unwrap();
    assert_eq!((receipt.held, receipt.refused.len()), (1, 0), "{receipt:?}");
    assert_eq!(
        charge_link.latest_state(&s.card).unwrap().unwrap().record,
        torn
    );
    // Nothing of it is counted yet.
    let spent =
        s.h.with_center(|center| center.memcard_totals().unwrap().spent);
    assert_eq!(spent, 0);

    // The next payment starts from the torn write's state: the torn write is counted.
    let next_state = state(&s.payer, s.card, COUNTER_START - 3, 1_500);
    let next = record(
        WriteKind::Payment,
        2,
        (2_000, 1_500),
        Some(torn_state),
        next_state,
    );
    pay_link
        .upload_writes(&WriteUpload {
            machine: s.payer.id,
            records: vec![next],
        })
        .unwrap();
    let settled = pay_link.report_pending(&report).unwrap();
    assert_eq!(settled.landed, [1]);
    let totals = s.h.with_center(|center| center.memcard_totals().unwrap());
    assert_eq!(
        (totals.spent, totals.on_cards, totals.gaps),
        (1_500, 1_500, 0)
    );

    // Reports are for machines, each for itself.
    assert!(matches!(
        terminal_link.report_pending(&WriteUpload {
            machine: device_id(&s.h.terminal),
            records: Vec::new(),
        }),
        Err(CenterError::NotAuthorized(_))
    ));
    assert!(matches!(
        pay_link.report_pending(&WriteUpload {
            machine: s.charger.id,
            records: Vec::new(),
        }),
        Err(CenterError::NotAuthorized(_))
    ));
}
