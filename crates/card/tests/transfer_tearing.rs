//! Tearing of the transfer commands: for TRANSFER OUT, TRANSFER IN, TRANSFER COMPLETE, UPDATE
//! TRANSFER KEY and CREDIT with transfer keys, power is cut at write 1, 2, 3, ... of the
//! command (the torn write left empty, half-written or whole). After power-up the card must
//! hold the whole old or the whole new state, byte for byte; the recovery rule then settles
//! whatever was left in doubt, value is neither created nor lost, and a second recovery
//! does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transfer_common;

use transfer_common::*;
use valuecard_card::state::PersistentState;
use valuecard_card::testing;
use valuecard_core::apdu::Command;
use valuecard_core::messages::transfer::{
    ins, GetTransferKey, ProofStatus, TransferComplete, UpdatePermission, UpdatePermissionResponse,
};
use valuecard_core::StatusWord;

const TEARS: [(usize, usize); 3] = [(0, 1), (1, 2), (1, 1)];

/// Two cards and a terminal, with the command about to be sent and the card it goes to.
struct Scene {
    a: Device,
    b: Device,
    terminal: Terminal,
    target: Target,
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    A,
    B,
}

impl Scene {
    fn target(&mut self) -> &mut Device {
        match self.target {
            Target::A => &mut self.a,
            Target::B => &mut self.b,
        }
    }
}

fn state_bytes(device: &Device) -> Vec<u8> {
    device.card.state().encode()
}

/// A's spendable value, the value in flight (reserved on A and not applied on B), and B's
/// balance: their sum is the value the two cards hold.
fn total_value(scene: &Scene) -> u64 {
    let pending = scene.a.purse().transfer.sent.as_ref();
    let in_flight = pending.map_or(0, |sent| {
        let applied = scene
            .b
            .purse()
            .transfer
            .receipt(&scene.a.id(), &sent.pending.challenge_source)
            .is_some();
        if applied {
            0
        } else {
            sent.pending.amount.minor()
        }
    });
    scene.a.purse().spendable().minor() + in_flight + scene.b.balance()
}

/// Runs the scene's command once without a cut to learn its writes, then once per write with
/// power cut there, and checks each outcome with `after_power_up`. Returns the cuts made.
fn tear_every_write(setup: impl Fn() -> Scene, after_power_up: impl Fn(&mut Scene)) -> u64 {
    let mut clean = setup();
    let before = state_bytes(clean.target());
    let value_before = total_value(&clean);
    let writes_before = clean.target().writes();
    let command = clean.command.clone();
    let response = clean.target().send_command(command);
    assert_eq!(response.sw, StatusWord::SUCCESS, "the clean run failed");
    let writes = clean.target().writes() - writes_before;
    let after = state_bytes(clean.target());
    // Unchanged by a transfer; a load adds value from the center.
    let value_after = total_value(&clean);
    assert!(writes > 0, "the command made no write: nothing to tear");
    assert_ne!(before, after);
    let mut cuts = 0;
    for cut in 1..=writes {
        for (numerator, denominator) in TEARS {
            let mut scene = setup();
            assert_eq!(state_bytes(scene.target()), before);
            scene.target().arm_cut(cut, numerator, denominator);
            let command = scene.command.clone();
            assert!(
                scene.target().try_send(command).is_err(),
                "cut at write {cut} was not reached"
            );
            scene.target().power_cycle();
            let state = state_bytes(scene.target());
            assert!(
                state == before || state == after,
                "cut at write {cut} ({numerator}/{denominator}): neither the old nor the new state"
            );
            assert_eq!(
                total_value(&scene),
                if state == before {
                    value_before
                } else {
                    value_after
                },
                "cut at write {cut} ({numerator}/{denominator}): value changed before recovery"
            );
            after_power_up(&mut scene);
            cuts += 1;
        }
    }
    cuts
}

/// The recovery rule, then value conservation, then a second recovery that changes nothing.
fn recover_and_check(scene: &mut Scene, total: u64) {
    let Scene { a, b, terminal, .. } = scene;
    terminal.recover(a, b);
    assert_eq!(a.reserved(), 0, "still pending after recovery");
    assert_eq!(a.balance() + b.balance(), total, "value created or lost");
    let (state_a, state_b) = (state_bytes(a), state_bytes(b));
    assert!(!terminal.recover(a, b), "a second recovery found work");
    assert_eq!((state_bytes(a), state_bytes(b)), (state_a, state_b));
}

/// A holds 10.00 and B 3.00; B was asked to receive 2.50 from A.
fn initialized() -> (Device, Device, Terminal, Flow) {
    let a = Device::new(1, 1_000, Some(&keys()));
    let mut b = Device::new(2, 300, Some(&keys()));
    let mut terminal = Terminal::default();
    let flow = terminal.initialize_in(&mut b, a.id(), amount(250)).unwrap();
    (a, b, terminal, flow)
}

#[test]
fn transfer_out_survives_a_cut_at_every_write() {
    let cuts = tear_every_write(
        || {
            let (a, b, terminal, flow) = initialized();
            let command = transfer_command(
                ins::TRANSFER_OUT,
                0,
                terminal.transfer_out_request(&flow).encode(),
            );
            Scene {
                a,
                b,
                terminal,
                target: Target::A,
                command,
            }
        },
        |scene| recover_and_check(scene, 1_300),
    );
    assert!(cuts >= 6, "{cuts}");
}

#[test]
fn transfer_in_survives_a_cut_at_every_write() {
    let cuts = tear_every_write(
        || {
            let (mut a, b, mut terminal, mut flow) = initialized();
            terminal.transfer_out(&mut a, &mut flow).unwrap();
            let command = transfer_command(
                ins::TRANSFER_IN,
                0,
                terminal.transfer_in_request(&flow).encode(),
            );
            Scene {
                a,
                b,
                terminal,
                target: Target::B,
                command,
            }
        },
        |scene| {
            let applied = scene.b.balance() == 550;
            recover_and_check(scene, 1_300);
            // Whichever state B kept decides the outcome, and A follows it.
            assert_eq!(scene.a.balance(), if applied { 750 } else { 1_000 });
        },
    );
    assert!(cuts >= 6, "{cuts}");
}

fn completion_scene(received: bool) -> Scene {
    let (mut a, mut b, mut terminal, mut flow) = initialized();
    terminal.transfer_out(&mut a, &mut flow).unwrap();
    let data = if received {
        terminal.transfer_in(&mut b, &mut flow).unwrap();
        TransferComplete {
            proof: flow.proof.clone().unwrap(),
            record: Some(terminal.completion(&mut a, &flow)),
        }
    } else {
        b.power_cycle();
        let proof = terminal.status(&mut b, &flow.status_query()).unwrap();
        assert_eq!(proof.status, ProofStatus::NotReceived);
        TransferComplete {
            proof,
            record: None,
        }
    };
    let command = transfer_command(ins::TRANSFER_COMPLETE, 0, data.encode());
    Scene {
        a,
        b,
        terminal,
        target: Target::A,
        command,
    }
}

#[test]
fn transfer_complete_survives_a_cut_at_every_write() {
    for received in [true, false] {
        let cuts = tear_every_write(
            || completion_scene(received),
            |scene| {
                recover_and_check(scene, 1_300);
                let expected = if received { (750, 550) } else { (1_000, 300) };
                assert_eq!((scene.a.balance(), scene.b.balance()), expected);
            },
        );
        assert!(cuts >= 6, "{cuts}");
    }
}

#[test]
fn update_transfer_key_survives_a_cut_at_every_write() {
    let cuts = tear_every_write(
        || {
            let mut a = Device::new(1, 1_000, Some(&keys()));
            let mut b = Device::new(2, 300, Some(&testing::key_set(3, 5, 1)));
            // B's value takes no part: only A's keys move.
            let response = a.transfer(
                ins::UPDATE_PERMISSION,
                0,
                UpdatePermission {
                    peer_certificate: None,
                }
                .encode(),
            );
            let random = UpdatePermissionResponse::decode(&response.data)
                .unwrap()
                .random;
            let export = b.transfer(
                ins::GET_TRANSFER_KEY,
                0,
                GetTransferKey {
                    random,
                    peer_certificate: None,
                }
                .encode(),
            );
            let command = transfer_command(ins::UPDATE_TRANSFER_KEY, 0, export.data);
            Scene {
                a,
                b,
                terminal: Terminal::default(),
                target: Target::A,
                command,
            }
        },
        |scene| {
            let Scene { a, b, .. } = scene;
            // Recovery: run the update again if the old key survived; a second time the
            // card refuses it as not newer, and nothing changes.
            if a.purse().transfer.selected == 1 {
                key_update(a, b, 0).unwrap();
            }
            assert_eq!(a.purse().transfer.selected, 3);
            let state = state_bytes(a);
            assert_eq!(
                key_update(a, b, 0),
                Err(StatusWord::CONDITIONS_NOT_SATISFIED)
            );
            assert_eq!(state_bytes(a), state);
            assert_eq!(a.balance(), 1_000);
        },
    );
    assert!(cuts >= 6, "{cuts}");
}

#[test]
fn credit_with_transfer_keys_survives_a_cut_at_every_write() {
    let newer = testing::key_set(2, 6, 2);
    let cuts = tear_every_write(
        || {
            let mut a = Device::new(1, 1_000, Some(&keys()));
            let b = Device::new(2, 300, Some(&keys()));
            let command = credit_command(&mut a, 500, Delivery::Sealed(&newer));
            Scene {
                a,
                b,
                terminal: Terminal::default(),
                target: Target::A,
                command,
            }
        },
        |scene| {
            let purse = scene.a.purse();
            // The load and its keys come together or not at all.
            let loaded = purse.balance.minor() == 1_500;
            assert_eq!(loaded, purse.transfer.selected == 2);
            assert_eq!(loaded, purse.transfer.update_key_id() == 2);
            if !loaded {
                // The load is retried as a new load; it brings the keys.
                assert_eq!(
                    load(&mut scene.a, 500, Delivery::Sealed(&newer)).sw,
                    StatusWord::SUCCESS
                );
            }
            assert_eq!(scene.a.balance(), 1_500);
            assert_eq!(scene.a.purse().transfer.selected, 2);
            assert!(matches!(
                scene.a.card.state(),
                PersistentState::Personalized(_)
            ));
        },
    );
    assert!(cuts >= 6, "{cuts}");
}
