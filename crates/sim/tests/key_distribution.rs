//! Fig. 8, key distribution: every SAM holds its own transport key (diversified from its
//! device ID), and the keys delivered at installation and personalisation are sealed to the
//! device's freshly generated X25519 key with an ephemeral key of the center. A sniffer who
//! holds a transport key and the whole transcript opens nothing; one device's transport key
//! does not let anyone speak to another device as the center.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::{OsRng, SeedableRng};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::Role;
use valuecard_core::crypto::{
    aes_cmac, aes_gcm_open, diversify_key, random_array, seal_to, SealingKeyPair, GCM_NONCE_LEN,
    SEAL_OVERHEAD,
};
use valuecard_core::messages::center::{Installation, InstallationRequest};
use valuecard_core::messages::purse::{
    ins, GenerateKeyPairCommand, PersonalizeCommand, SelectResponse, PURSE_AID,
};
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::{installation_keys_aad, installation_mac_input, Sam, SamError, SoftwareSam};
use valuecard_sim::{read_purse, World, WorldRng};

/// A wire tap between the dispenser and the card.
struct Tap<'a, R: CardReader> {
    inner: &'a mut R,
    log: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<R: CardReader> CardReader for Tap<'_, R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let answer = self.inner.transmit_raw(apdu)?;
        self.log.push((apdu.to_vec(), answer.clone()));
        Ok(answer)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// The derivation constants of the former deliveries under Ktemp.
const CARD_DELIVERY: u8 = 0x13;
const DEVICE_DELIVERY: u8 = 0x14;

/// What the old scheme let a holder of Ktemp do: derive the delivery session key from the
/// transport key, the sniffed challenge and the recipient, and open the sealed keys.
fn open_with_transport_key(
    transport_key: &valuecard_core::crypto::AesKey,
    purpose: u8,
    challenge: &[u8],
    recipient: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> bool {
    let mut context = challenge.to_vec();
    context.extend_from_slice(recipient);
    let session = diversify_key(transport_key, purpose, &context);
    if sealed.len() < GCM_NONCE_LEN {
        return false;
    }
    let (nonce, ciphertext) = sealed.split_at(GCM_NONCE_LEN);
    aes_gcm_open(&session, &nonce.try_into().unwrap(), aad, ciphertext).is_ok()
}

#[test]
fn a_sniffer_with_the_transport_key_cannot_open_a_cards_ku_and_ko() {
    let mut world = world(71, 1);
    let (mut reader, _) = blank_card(&mut world, "sniffed");
    let mut tap = Tap {
        inner: &mut reader,
        log: Vec::new(),
    };
    let card_id = world
        .dispenser
        .issue_card(&mut tap, &mut world.center)
        .unwrap();
    let log = tap.log;
    // The PERSONALIZE command and the challenge the card gave just before it.
    let position = log
        .iter()
        .position(|(apdu, _)| Command::parse(apdu).unwrap().ins == ins::PERSONALIZE)
        .unwrap();
    let personalize =
        PersonalizeCommand::decode(&Command::parse(&log[position].0).unwrap().data).unwrap();
    let (challenge_apdu, challenge_answer) = &log[position - 1];
    assert_eq!(
        Command::parse(challenge_apdu).unwrap().ins,
        ins::GET_CHALLENGE
    );
    let challenge = Response::parse(challenge_answer).unwrap().data;

    // The attacker holds this chip's transport key (its serial is in the SELECT answer of
    // the transcript) and the whole transcript.
    let select = SelectResponse::decode(&Response::parse(&log[0].1).unwrap().data).unwrap();
    let serial = select.chip_serial.unwrap();
    let transport_key = world.center.transport_key_for_chip(&serial).unwrap();
    let aad = PersonalizeCommand::sealed_keys_aad(&card_id);
    assert!(
        !open_with_transport_key(
            &transport_key,
            CARD_DELIVERY,
            &challenge,
            card_id.as_bytes(),
            &aad,
            &personalize.sealed_keys,
        ),
        "KU and KO must not open with the transport key"
    );
    // Nor with an X25519 key of his own: the box is sealed to the card's key.
    let own = SealingKeyPair::generate(&mut OsRng);
    assert!(own.open(&aad, &personalize.sealed_keys).is_err());
    // KU || KO || the transfer key set (seed 000).
    assert_eq!(
        personalize.sealed_keys.len(),
        SEAL_OVERHEAD + 32 + valuecard_core::messages::transfer::TRANSFER_KEY_SET_LEN
    );

    // The card itself opened them: it loads and spends.
    world.load(&mut reader, amount(1_000)).unwrap();
    world.terminals[0]
        .purchase(&mut reader, amount(250))
        .unwrap();
    assert_eq!(read_purse(&mut reader).unwrap().balance, amount(750));
}

#[test]
fn one_chips_transport_key_does_not_open_another_chip_for_issuance() {
    let mut world = world(73, 1);
    // The attacker bought a blank card and read its Ktemp out of the chip.
    let (mine, _) = blank_card(&mut world, "attacker's");
    let serial_mine = mine.card().unwrap().state().chip_serial().unwrap();
    let key_mine = world.center.transport_key_for_chip(&serial_mine).unwrap();
    // Another blank card, still at the factory or in a dispenser.
    let (mut victim, _) = blank_card(&mut world, "victim");
    let select = SelectResponse::decode(&victim.exchange(&select_purse()).unwrap().data).unwrap();
    let serial_victim = select.chip_serial.unwrap();
    assert_ne!(serial_mine, serial_victim);
    assert_ne!(
        key_mine.expose(),
        world
            .center
            .transport_key_for_chip(&serial_victim)
            .unwrap()
            .expose()
    );
    // He authorizes GENERATE KEY PAIR for the victim chip with his own chip's key.
    let challenge = victim
        .exchange(&Command::new(0x00, ins::GET_CHALLENGE, 0, 0).with_le(16))
        .unwrap()
        .data;
    let challenge: [u8; 16] = challenge.try_into().unwrap();
    let card_id = valuecard_core::ids::CardId([0xC0, 0, 0, 0, 0, 0, 0, 0x77]);
    let forged = GenerateKeyPairCommand {
        card_id,
        mac: aes_cmac(
            &key_mine,
            &GenerateKeyPairCommand::mac_input(&challenge, &card_id),
        ),
    };
    let answer = victim
        .exchange(&Command::new(0x80, ins::GENERATE_KEY_PAIR, 0, 0).with_data(forged.encode()))
        .unwrap();
    assert_eq!(answer.sw, StatusWord::SECURITY_STATUS_NOT_SATISFIED);
    // The center refuses a serial that is not a chip's (a SAM's device ID, say).
    assert!(world
        .center
        .transport_key_for_chip(&[0xD0, 0, 0, 0, 0, 0, 0, 1])
        .is_err());
    // The victim is still blank and issues normally.
    world.issue(&mut victim, amount(500)).unwrap();
    assert_eq!(read_purse(&mut victim).unwrap().balance, amount(500));
}

fn select_purse() -> Command {
    Command::new(0x00, ins::SELECT, 0x04, 0x00)
        .with_data(PURSE_AID.to_vec())
        .with_le(256)
}

/// A SAM fresh from the factory for a new device ID, with its own transport key.
fn manufactured(world: &mut World, rng: &mut WorldRng) -> SoftwareSam {
    let device_id = world.center.allocate_device_id().unwrap();
    SoftwareSam::manufacture(
        device_id,
        world.center.transport_key_for_device(&device_id),
        rng,
    )
    .with_clock(world.clock())
}

fn request(sam: &SoftwareSam) -> InstallationRequest {
    InstallationRequest {
        device_id: sam.device_id(),
        signing_key: sam.signing_key(),
        sealing_key: sam.sealing_key(),
        challenge: random_array(&mut OsRng),
    }
}

#[test]
fn one_devices_transport_key_opens_nothing_and_forges_nothing_for_another() {
    let mut world = world(72, 1);
    let mut rng = WorldRng::seed_from_u64(72);
    let mut a = manufactured(&mut world, &mut rng);
    let mut b = manufactured(&mut world, &mut rng);
    let key_a = world.center.transport_key_for_device(&a.device_id());
    let key_b = world.center.transport_key_for_device(&b.device_id());
    assert_ne!(
        key_a.expose(),
        key_b.expose(),
        "transport keys are per device"
    );

    // The attacker read Ktemp out of SAM A and sniffs both installations.
    let request_a = request(&a);
    let installation_a = world
        .center
        .install_device(&request_a, Role::PaymentTerminal)
        .unwrap();
    let request_b = request(&b);
    let installation_b = world
        .center
        .install_device(&request_b, Role::PaymentTerminal)
        .unwrap();
    for (request, installation) in [(&request_a, &installation_a), (&request_b, &installation_b)] {
        let aad =
            installation_keys_aad(&request.device_id, &installation.anchor, &request.challenge);
        // Ktemp of A opens neither A's own delivery nor B's (ECDH), ...
        assert!(!open_with_transport_key(
            &key_a,
            DEVICE_DELIVERY,
            &request.challenge,
            request.device_id.as_bytes(),
            &aad,
            &installation.sealed_keys,
        ));
        // ... and neither does an X25519 key of the attacker's.
        let own = SealingKeyPair::generate(&mut OsRng);
        assert!(own.open(&aad, &installation.sealed_keys).is_err());
    }

    // With Ktemp of A he forges B's installation: his own KT, KO and TS0, sealed to B's
    // public key, MACed under A's transport key. B refuses it.
    let forged_keys = [0x5A; 64];
    let sealed = seal_to(
        &mut OsRng,
        &request_b.sealing_key,
        &installation_keys_aad(&b.device_id(), &installation_b.anchor, &request_b.challenge),
        &forged_keys,
    )
    .unwrap();
    let forged = Installation {
        mac: aes_cmac(
            &key_a,
            &installation_mac_input(
                &b.device_id(),
                &request_b.challenge,
                &installation_b.certificate,
                &installation_b.anchor,
                &sealed,
            ),
        ),
        sealed_keys: sealed,
        ..installation_b.clone()
    };
    let today = world.today();
    assert_eq!(
        b.install(&forged, &request_b.challenge, Role::PaymentTerminal, today)
            .unwrap_err(),
        SamError::BadInstallationMac
    );
    // The genuine MAC does not cover other sealed keys either.
    let swapped = Installation {
        sealed_keys: forged.sealed_keys.clone(),
        ..installation_b.clone()
    };
    assert_eq!(
        b.install(&swapped, &request_b.challenge, Role::PaymentTerminal, today)
            .unwrap_err(),
        SamError::BadInstallationMac
    );
    // A's genuine installation is not B's.
    assert!(b
        .install(
            &installation_a,
            &request_a.challenge,
            Role::PaymentTerminal,
            today
        )
        .is_err());
    // An installation answered to another challenge is refused.
    let stale: [u8; 16] = random_array(&mut OsRng);
    assert_eq!(
        b.install(&installation_b, &stale, Role::PaymentTerminal, today)
            .unwrap_err(),
        SamError::BadInstallationMac
    );
    assert!(!b.has_link_keys());

    // The genuine installations work.
    a.install(
        &installation_a,
        &request_a.challenge,
        Role::PaymentTerminal,
        today,
    )
    .unwrap();
    b.install(
        &installation_b,
        &request_b.challenge,
        Role::PaymentTerminal,
        today,
    )
    .unwrap();
    assert!(a.has_link_keys() && b.has_link_keys());
    // A SAM made with another device's transport key cannot be installed.
    let id = world.center.allocate_device_id().unwrap();
    let mut wrong = SoftwareSam::manufacture(id, key_a, &mut rng).with_clock(world.clock());
    let request_wrong = request(&wrong);
    let installation = world
        .center
        .install_device(&request_wrong, Role::PaymentTerminal)
        .unwrap();
    assert_eq!(
        wrong
            .install(
                &installation,
                &request_wrong.challenge,
                Role::PaymentTerminal,
                today
            )
            .unwrap_err(),
        SamError::BadInstallationMac
    );
}
