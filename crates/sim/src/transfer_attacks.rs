//! The attacks on card-to-card transfer (seed 000), each run against real cards through the
//! real command set by an attacker who drives the APDUs himself, with a certified settlement
//! terminal's SAM at his disposal (the worst case: he owns one terminal). Each counts as
//! refused only if the card answered the expected status word **and** no balance, counter
//! or transfer key changed on any card involved.

use valuecard_core::apdu::Response;
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::limits::BALANCE_MAX_MINOR;
use valuecard_core::messages::purse::{Challenge, TransactionKind};
use valuecard_core::messages::transfer::{
    ins, GetTransferKey, InitializeTransferIn, KeyUpdateMode, PublicKeyExport, RecordSignature,
    TransferIn, TransferInOffer, TransferInfo, TransferOut, TransferOutOffer, UpdatePermission,
    UpdatePermissionResponse,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;
use valuecard_sam::{Sam, TransferRecordOrder};
use valuecard_terminal::card_commands::{select, transfer as command};

use crate::attacks::AttackOutcome;
use crate::{World, WorldError};

fn other(error: impl ToString) -> WorldError {
    WorldError::Other(error.to_string())
}

fn send(
    reader: &mut impl CardReader,
    cmd: valuecard_core::apdu::Command,
) -> Result<Response, WorldError> {
    reader
        .exchange(&cmd)
        .map_err(|error| WorldError::Terminal(error.into()))
}

fn selected(reader: &mut impl CardReader) -> Result<(), WorldError> {
    let response = send(reader, select())?;
    if response.sw != StatusWord::SUCCESS {
        return Err(other(format!("SELECT answered {}", response.sw)));
    }
    Ok(())
}

/// Everything a card shows of its value and transfer keys.
fn state(reader: &mut impl CardReader) -> Result<TransferInfo, WorldError> {
    selected(reader)?;
    let response = send(reader, command(ins::GET_TRANSFER_INFO, 0, Vec::new()))?;
    if response.sw != StatusWord::SUCCESS {
        return Err(other(format!("GET TRANSFER INFO answered {}", response.sw)));
    }
    TransferInfo::decode(&response.data).map_err(other)
}

fn fingerprint(info: &TransferInfo) -> (Amount, u32, u32, Vec<u32>, bool) {
    (
        info.balance,
        info.counter,
        info.transfer_key_id,
        info.held_key_ids.clone(),
        info.pending.is_some(),
    )
}

/// Judges an attack on `victim` (the card that must refuse): refused only if the attack
/// saw the expected status word and the victim's value and keys did not change.
fn judge<C: CardReader>(
    name: &'static str,
    victim: &mut C,
    expected: StatusWord,
    attack: impl FnOnce(&mut C) -> Result<StatusWord, WorldError>,
) -> Result<AttackOutcome, WorldError> {
    let before = fingerprint(&state(victim)?);
    let answered = attack(victim)?;
    let after = fingerprint(&state(victim)?);
    let unchanged = before == after;
    let mut detail = format!("card answered {answered} (expected {expected})");
    if !unchanged {
        detail.push_str(&format!(
            "; CARD CHANGED: balance {} -> {}, key {} -> {}",
            before.0, after.0, before.2, after.2
        ));
    }
    Ok(AttackOutcome {
        name,
        refused: answered == expected && unchanged,
        detail,
    })
}

/// The attacker's own run of the protocol's first steps, with a certified SAM.
struct Steps {
    challenge_terminal: Challenge,
    date: Date,
    offer_in: TransferInOffer,
}

fn initialize_in(
    world: &mut World,
    to: &mut impl CardReader,
    source: CardId,
    amount: Amount,
) -> Result<Result<Steps, StatusWord>, WorldError> {
    let certificate = world.settlement()?.sam().certificate()?.clone();
    let challenge_terminal: Challenge = random_array(&mut world.rng);
    let date = world.today();
    selected(to)?;
    let response = send(
        to,
        command(
            ins::INITIALIZE_TRANSFER_IN,
            0,
            InitializeTransferIn {
                terminal_certificate: certificate,
                challenge_terminal,
                source,
                amount,
                date,
            }
            .encode(),
        ),
    )?;
    if response.sw != StatusWord::SUCCESS {
        return Ok(Err(response.sw));
    }
    Ok(Ok(Steps {
        challenge_terminal,
        date,
        offer_in: TransferInOffer::decode(&response.data).map_err(other)?,
    }))
}

fn transfer_out(
    from: &mut impl CardReader,
    steps: &Steps,
    destination: CardId,
    amount: Amount,
) -> Result<TransferOutOffer, WorldError> {
    selected(from)?;
    let response = send(
        from,
        command(
            ins::TRANSFER_OUT,
            0,
            TransferOut {
                challenge_terminal: steps.challenge_terminal,
                destination,
                destination_counter: steps.offer_in.counter,
                challenge_destination: steps.offer_in.challenge_destination,
                amount,
                date: steps.date,
            }
            .encode(),
        ),
    )?;
    if response.sw != StatusWord::SUCCESS {
        return Err(other(format!("TRANSFER OUT answered {}", response.sw)));
    }
    TransferOutOffer::decode(&response.data).map_err(other)
}

/// The settlement SAM's genuine signature over the destination's record.
fn signed_in_record(
    world: &mut World,
    destination: CardId,
    steps: &Steps,
    amount: Amount,
) -> Result<RecordSignature, WorldError> {
    let order = TransferRecordOrder {
        card_id: destination,
        kind: TransactionKind::TransferIn,
        challenge_terminal: steps.challenge_terminal,
        challenge_card: steps.offer_in.challenge_destination,
        counter: steps.offer_in.counter,
        balance_before: steps.offer_in.balance,
        amount,
        date: steps.date,
        sequence_floor: 0,
    };
    let record = world.settlement()?.sam_mut().sign_transfer_record(&order)?;
    Ok(RecordSignature {
        writer_sequence: record.writer_sequence,
        signature: record.signature,
        stamp: record.stamp,
    })
}

fn card_id(reader: &mut impl CardReader) -> Result<CardId, WorldError> {
    Ok(state(reader)?.card_id)
}

/// A value message delivered once is replayed to the same card, in a new session.
pub fn replayed_value_message(
    world: &mut World,
    a: &mut impl CardReader,
    b: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let amount = Amount::new(300).map_err(other)?;
    let (id_a, id_b) = (card_id(a)?, card_id(b)?);
    let steps = initialize_in(world, b, id_a, amount)?.map_err(other)?;
    let offer = transfer_out(a, &steps, id_b, amount)?;
    let record = signed_in_record(world, id_b, &steps, amount)?;
    let transfer_in = TransferIn {
        source_counter: offer.counter,
        challenge_source: offer.challenge_source,
        value: offer.value.clone(),
        record,
    };
    let first = send(b, command(ins::TRANSFER_IN, 0, transfer_in.encode()))?;
    if first.sw != StatusWord::SUCCESS {
        return Err(other(format!(
            "the genuine TRANSFER IN answered {}",
            first.sw
        )));
    }
    // Settle the genuine transfer, so that only the replay is judged.
    world.settle_transfer(a, b)?;
    judge(
        "replayed value message",
        b,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        |b| {
            // A fresh session on the destination, then the old message.
            let fresh = initialize_in(world, b, id_a, amount)?.map_err(other)?;
            let _ = fresh;
            Ok(send(b, command(ins::TRANSFER_IN, 0, transfer_in.encode()))?.sw)
        },
    )
}

/// A value message made for one destination is sent to a third card.
pub fn value_message_to_third_card(
    world: &mut World,
    a: &mut impl CardReader,
    b: &mut impl CardReader,
    c: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let amount = Amount::new(200).map_err(other)?;
    let (id_a, id_b, id_c) = (card_id(a)?, card_id(b)?, card_id(c)?);
    let steps = initialize_in(world, b, id_a, amount)?.map_err(other)?;
    let offer = transfer_out(a, &steps, id_b, amount)?;
    let outcome = judge(
        "value message sent to a third card",
        c,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        |c| {
            let steps_c = initialize_in(world, c, id_a, amount)?.map_err(other)?;
            let record = signed_in_record(world, id_c, &steps_c, amount)?;
            let transfer_in = TransferIn {
                source_counter: offer.counter,
                challenge_source: offer.challenge_source,
                value: offer.value.clone(),
                record,
            };
            Ok(send(c, command(ins::TRANSFER_IN, 0, transfer_in.encode()))?.sw)
        },
    )?;
    // The source's reservation is released against B's proof that it never received it.
    world.settle_transfer(a, b)?;
    Ok(outcome)
}

/// The value message is altered on the way: its amount (ciphertext) or its key identifier.
pub fn altered_value_message(
    world: &mut World,
    a: &mut impl CardReader,
    b: &mut impl CardReader,
    alter_identifier: bool,
) -> Result<AttackOutcome, WorldError> {
    let amount = Amount::new(150).map_err(other)?;
    let (id_a, id_b) = (card_id(a)?, card_id(b)?);
    let (name, expected) = if alter_identifier {
        (
            "value message with its key identifier altered",
            StatusWord::REFERENCE_DATA_NOT_USABLE,
        )
    } else {
        (
            "value message with its amount altered",
            StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        )
    };
    let outcome = judge(name, b, expected, |b| {
        let steps = initialize_in(world, b, id_a, amount)?.map_err(other)?;
        let offer = transfer_out(a, &steps, id_b, amount)?;
        let record = signed_in_record(world, id_b, &steps, amount)?;
        let mut value = offer.value.clone();
        if alter_identifier {
            value.key_id += 1;
        } else {
            value.ciphertext[7] ^= 0x01;
        }
        let transfer_in = TransferIn {
            source_counter: offer.counter,
            challenge_source: offer.challenge_source,
            value,
            record,
        };
        // The destination's session ends with this command, whatever it answers.
        Ok(send(b, command(ins::TRANSFER_IN, 0, transfer_in.encode()))?.sw)
    })?;
    world.settle_transfer(a, b)?;
    Ok(outcome)
}

/// A transfer that would take the destination over the purse ceiling.
pub fn transfer_over_ceiling(
    world: &mut World,
    a: &mut impl CardReader,
    b: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let id_a = card_id(a)?;
    let held = state(b)?.balance.minor();
    let amount = Amount::new(BALANCE_MAX_MINOR - held + 1).map_err(other)?;
    judge(
        "transfer over the destination's ceiling",
        b,
        StatusWord::NOT_ENOUGH_MEMORY,
        |b| match initialize_in(world, b, id_a, amount)? {
            Ok(_) => Ok(StatusWord::SUCCESS),
            Err(sw) => Ok(sw),
        },
    )
}

/// A key update driven by the attacker from `peer` (the card that exports) to `victim`,
/// with one step spoiled by `spoil`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    /// Nothing spoiled: the export is simply not newer, or beyond the limit.
    Nothing,
    /// The export answers another random number than the victim drew.
    WrongRandom,
    /// The public-key export's signature is altered.
    ForgedSignature,
}

pub fn key_update_attack<V: CardReader>(
    name: &'static str,
    mode: KeyUpdateMode,
    victim: &mut V,
    peer: &mut impl CardReader,
    spoil: Spoil,
    expected: StatusWord,
) -> Result<AttackOutcome, WorldError> {
    let peer_info = state(peer)?;
    judge(name, victim, expected, |victim| {
        let victim_info = state(victim)?;
        let permission = UpdatePermission {
            peer_certificate: (mode == KeyUpdateMode::PublicKey)
                .then(|| peer_info.certificate.clone()),
        };
        let response = send(
            victim,
            command(ins::UPDATE_PERMISSION, mode as u8, permission.encode()),
        )?;
        if response.sw != StatusWord::SUCCESS {
            return Ok(response.sw);
        }
        let mut random = UpdatePermissionResponse::decode(&response.data)
            .map_err(other)?
            .random;
        if spoil == Spoil::WrongRandom {
            random[0] ^= 0xFF;
        }
        selected(peer)?;
        let export = send(
            peer,
            command(
                ins::GET_TRANSFER_KEY,
                mode as u8,
                GetTransferKey {
                    random,
                    peer_certificate: (mode == KeyUpdateMode::PublicKey)
                        .then(|| victim_info.certificate.clone()),
                }
                .encode(),
            ),
        )?;
        if export.sw != StatusWord::SUCCESS {
            return Err(other(format!("GET TRANSFER KEY answered {}", export.sw)));
        }
        let mut data = export.data;
        if spoil == Spoil::ForgedSignature {
            let mut export = PublicKeyExport::decode(&data).map_err(other)?;
            export.signature.0[0] ^= 0x01;
            data = export.encode();
        }
        // The victim's session is still open: the peer's commands went to another reader.
        Ok(send(victim, command(ins::UPDATE_TRANSFER_KEY, mode as u8, data))?.sw)
    })
}

/// UPDATE PERMISSION in the public-key form with a certificate the center never signed.
pub fn forged_peer_certificate(victim: &mut impl CardReader) -> Result<AttackOutcome, WorldError> {
    use rand_core::OsRng;
    use valuecard_core::cert::{CertificateBody, Role};
    use valuecard_core::crypto::SigningKeyPair;
    let genuine = state(victim)?.certificate;
    let rogue_root = SigningKeyPair::generate(&mut OsRng);
    let rogue_card = SigningKeyPair::generate(&mut OsRng);
    let body = CertificateBody {
        issuer: genuine.body.issuer,
        subject: valuecard_core::ids::DeviceId([0x7E; 8]),
        role: Role::Card,
        effective: genuine.body.effective,
        expiry: genuine.body.expiry,
        signing_key: rogue_card.public_key(),
        sealing_key: genuine.body.sealing_key,
    };
    let forged = body.sign(&rogue_root);
    judge(
        "public-key update with a forged certificate",
        victim,
        StatusWord::SECURITY_STATUS_NOT_SATISFIED,
        |victim| {
            let permission = UpdatePermission {
                peer_certificate: Some(forged),
            };
            Ok(send(
                victim,
                command(
                    ins::UPDATE_PERMISSION,
                    KeyUpdateMode::PublicKey as u8,
                    permission.encode(),
                ),
            )?
            .sw)
        },
    )
}

/// A value message under a retired key generation: the attacker skips the key update and
/// sends a message under the source's old key to a destination that holds the newer one.
pub fn transfer_under_retired_key(
    world: &mut World,
    old: &mut impl CardReader,
    new: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let amount = Amount::new(100).map_err(other)?;
    let (id_old, id_new) = (card_id(old)?, card_id(new)?);
    let outcome = judge(
        "transfer under a retired key generation",
        new,
        StatusWord::REFERENCE_DATA_NOT_USABLE,
        |new| {
            let steps = initialize_in(world, new, id_old, amount)?.map_err(other)?;
            let offer = transfer_out(old, &steps, id_new, amount)?;
            let record = signed_in_record(world, id_new, &steps, amount)?;
            let transfer_in = TransferIn {
                source_counter: offer.counter,
                challenge_source: offer.challenge_source,
                value: offer.value,
                record,
            };
            Ok(send(new, command(ins::TRANSFER_IN, 0, transfer_in.encode()))?.sw)
        },
    )?;
    // The source's reservation is released (the terminal brings it to the newer key first).
    world.settle_transfer(old, new)?;
    Ok(outcome)
}
