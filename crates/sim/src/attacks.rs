//! The attacks a purse operator fears, each run against real cards through the real
//! command set, each reporting whether the system refused it and whether value moved.
//!
//! An attack counts as refused only if it was rejected with the expected error **and** the
//! card's balance and counter are exactly what they were before.

use rand_core::OsRng;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::{CertificateBody, Role};
use valuecard_core::crypto::{random_array, SigningKeyPair};
use valuecard_core::messages::purse::{
    ins, CreditCommand, DebitCommand, InitializeLoad, InitializePurchase, PurchaseCommit,
    PurchaseOffer, PurseStatus,
};
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::Sam;
use valuecard_terminal::card_commands::{proprietary, select};
use valuecard_terminal::TerminalError;

use crate::{read_purse, World, WorldError};

/// One attack and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackOutcome {
    pub name: &'static str,
    pub refused: bool,
    pub detail: String,
}

fn send(reader: &mut impl CardReader, command: &Command) -> Result<Response, WorldError> {
    reader
        .exchange(command)
        .map_err(|error| WorldError::Terminal(error.into()))
}

fn balance_and_counter(status: &PurseStatus) -> (Amount, u32) {
    (status.balance, status.counter)
}

/// Runs `attack` and judges it: refused only if `attack` says it was rejected as expected
/// and the card's balance and counter did not change.
fn judge<C: CardReader>(
    name: &'static str,
    reader: &mut C,
    attack: impl FnOnce(&mut C) -> Result<(bool, String), WorldError>,
) -> Result<AttackOutcome, WorldError> {
    let before = balance_and_counter(&read_purse(reader)?);
    let (rejected, detail) = attack(reader)?;
    let after = balance_and_counter(&read_purse(reader)?);
    let unchanged = before == after;
    let detail = if unchanged {
        detail
    } else {
        format!(
            "{detail}; VALUE CHANGED: balance {} -> {}",
            before.0, after.0
        )
    };
    Ok(AttackOutcome {
        name,
        refused: rejected && unchanged,
        detail,
    })
}

/// A terminal certificate signed by a key that is not the center's.
pub fn rogue_terminal_certificate(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let anchor = world.center.anchor();
    let today = world.today();
    judge(
        "terminal certificate not signed by the center",
        reader,
        |reader| {
            let rogue_root = SigningKeyPair::generate(&mut OsRng);
            let rogue_terminal = SigningKeyPair::generate(&mut OsRng);
            let certificate = CertificateBody {
                issuer: anchor.center,
                subject: valuecard_core::ids::DeviceId(*b"ROGUE001"),
                role: Role::PaymentTerminal,
                effective: today,
                expiry: today.add_days(365),
                signing_key: rogue_terminal.public_key(),
                sealing_key: None,
            }
            .sign(&rogue_root);
            send(reader, &select())?;
            let request = InitializePurchase {
                terminal_certificate: certificate,
                challenge_terminal: random_array(&mut OsRng),
                amount_max: Amount::new(100).map_err(|e| WorldError::Other(e.to_string()))?,
                date: today,
            };
            let response = send(
                reader,
                &proprietary(ins::INITIALIZE_PURCHASE, request.encode()),
            )?;
            Ok((
                response.sw == StatusWord::SECURITY_STATUS_NOT_SATISFIED,
                format!("card answered INITIALIZE PURCHASE with {}", response.sw),
            ))
        },
    )
}

/// A card answer whose balance was altered on the way: the card's signature no longer
/// covers it, and the terminal must notice before it serves anything.
pub fn forged_card_signature(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let terminal = &mut world.terminals[0];
    judge("forged card signature", reader, |reader| {
        let mut tampering = TamperingReader { inner: reader };
        let outcome = terminal.purchase(
            &mut tampering,
            Amount::new(100).map_err(|e| WorldError::Other(e.to_string()))?,
        );
        Ok(match outcome {
            Err(TerminalError::BadCardSignature) => (
                true,
                "terminal refused: the card's signature does not verify".into(),
            ),
            other => (false, format!("terminal answered {other:?}")),
        })
    })
}

/// Raises the balance in the card's INITIALIZE PURCHASE answer by 1000.00.
struct TamperingReader<'a, R: CardReader> {
    inner: &'a mut R,
}

impl<R: CardReader> CardReader for TamperingReader<'_, R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        let response = self.inner.transmit_raw(apdu)?;
        let is_initialize = apdu.get(1) == Some(&ins::INITIALIZE_PURCHASE);
        let Ok(parsed) = Response::parse(&response) else {
            return Ok(response);
        };
        match PurchaseOffer::decode(&parsed.data) {
            Ok(mut offer) if is_initialize && parsed.sw.is_success() => {
                offer.balance = offer
                    .balance
                    .checked_add(Amount::new(100_000).unwrap_or(Amount::ZERO))
                    .unwrap_or(offer.balance);
                Ok(Response {
                    data: offer.encode(),
                    sw: parsed.sw,
                }
                .encode())
            }
            _ => Ok(response),
        }
    }

    fn name(&self) -> String {
        format!("tampering {}", self.inner.name())
    }
}

/// Records the last DEBIT command sent through it.
struct RecordingReader<'a, R: CardReader> {
    inner: &'a mut R,
    debit: Option<Vec<u8>>,
}

impl<R: CardReader> CardReader for RecordingReader<'_, R> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ReaderError> {
        if apdu.get(1) == Some(&ins::DEBIT) {
            self.debit = Some(apdu.to_vec());
        }
        self.inner.transmit_raw(apdu)
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

/// A DEBIT captured from a completed purchase, sent again: with no session, and inside a
/// fresh session (new R and X).
pub fn replayed_purchase_commit(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let one = Amount::new(100).map_err(|e| WorldError::Other(e.to_string()))?;
    let captured = {
        let mut recording = RecordingReader {
            inner: reader,
            debit: None,
        };
        world.terminals[0].purchase(&mut recording, one)?;
        recording
            .debit
            .ok_or_else(|| WorldError::Other("no DEBIT was sent".into()))?
    };
    let terminal_certificate = world.terminals[0].sam().certificate()?.clone();
    let today = world.today();
    judge("replayed purchase commit", reader, |reader| {
        send(reader, &select())?;
        let without_session = Response::parse(
            &reader
                .transmit_raw(&captured)
                .map_err(|e| WorldError::Terminal(e.into()))?,
        )
        .map_err(|e| WorldError::Other(e.to_string()))?;
        let request = InitializePurchase {
            terminal_certificate,
            challenge_terminal: random_array(&mut OsRng),
            amount_max: one,
            date: today,
        };
        let init = send(
            reader,
            &proprietary(ins::INITIALIZE_PURCHASE, request.encode()),
        )?;
        let in_session = Response::parse(
            &reader
                .transmit_raw(&captured)
                .map_err(|e| WorldError::Terminal(e.into()))?,
        )
        .map_err(|e| WorldError::Other(e.to_string()))?;
        Ok((
            without_session.sw == StatusWord::CONDITIONS_NOT_SATISFIED
                && init.sw.is_success()
                && in_session.sw == StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            format!(
                "replay without a session: {}; replay in a fresh session: {}",
                without_session.sw, in_session.sw
            ),
        ))
    })
}

/// A certified terminal (its SAM's key) signs a new balance above the old one. The card
/// refuses, records the abnormal event, and blocks itself (Fig. 5).
pub fn balance_raised_by_terminal(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let today = world.today();
    let outcome = judge("balance raised by a terminal", reader, |reader| {
        let terminal = &mut world.terminals[1];
        let select_response = send(reader, &select())?;
        let card = valuecard_terminal::payment::verify_select(
            &select_response.data,
            &world.center.anchor(),
            today,
        )?;
        let challenge_terminal = random_array(&mut OsRng);
        let one = Amount::new(100).map_err(|e| WorldError::Other(e.to_string()))?;
        let request = InitializePurchase {
            terminal_certificate: terminal.sam().certificate()?.clone(),
            challenge_terminal,
            amount_max: one,
            date: today,
        };
        let response = send(
            reader,
            &proprietary(ins::INITIALIZE_PURCHASE, request.encode()),
        )?;
        let offer =
            PurchaseOffer::decode(&response.data).map_err(|e| WorldError::Other(e.to_string()))?;
        let raised = offer
            .balance
            .checked_add(Amount::new(100_000).map_err(|e| WorldError::Other(e.to_string()))?)
            .map_err(|e| WorldError::Other(e.to_string()))?;
        // A certified terminal's SAM refuses to sign this, so the attacker has copied the
        // software SAM's key out of its image file and signs the commit himself.
        let stolen_key = terminal.sam().extract_signing_key();
        let stamp = terminal.sam_mut().stamp()?;
        let commit = PurchaseCommit {
            card_id: card.card_id(),
            terminal_id: terminal.device_id(),
            challenge_terminal,
            challenge_card: offer.challenge_card,
            counter: offer.counter,
            amount: one,
            balance_after: raised,
            terminal_sequence: 1_000_000,
            date: today,
            stamp,
        };
        let signature = stolen_key.sign(&commit.signed_message());
        let debit = DebitCommand {
            amount: one,
            balance_after: raised,
            terminal_sequence: 1_000_000,
            stamp,
            signature,
        };
        let answer = send(reader, &proprietary(ins::DEBIT, debit.encode()))?;
        let reselect = send(reader, &select())?;
        Ok((
            answer.sw == StatusWord::FUNCTION_NOT_SUPPORTED
                && reselect.sw == StatusWord::FILE_DEACTIVATED,
            format!(
                "card answered DEBIT with {} and now SELECT with {} (blocked)",
                answer.sw, reselect.sw
            ),
        ))
    })?;
    Ok(outcome)
}

/// A purchase for more than the card holds.
pub fn purchase_above_balance(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    judge("purchase above the balance", reader, |reader| {
        let balance = read_purse(reader)?.balance;
        let too_much = balance
            .checked_add(Amount::new(1).map_err(|e| WorldError::Other(e.to_string()))?)
            .map_err(|e| WorldError::Other(e.to_string()))?;
        Ok(match world.terminals[0].purchase(reader, too_much) {
            Err(TerminalError::InsufficientBalance { balance, amount }) => (
                true,
                format!("refused: the card holds {balance}, the purchase needs {amount}"),
            ),
            other => (false, format!("terminal answered {other:?}")),
        })
    })
}

/// A terminal certificate that the center signed, but that expired before the date the card
/// last learned from the center.
pub fn expired_terminal_certificate(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let today = world.today();
    let key = SigningKeyPair::generate(&mut OsRng);
    let expired = world.center.issue_certificate_with_validity(
        valuecard_core::ids::DeviceId(*b"EXPIRED1"),
        Role::PaymentTerminal,
        key.public_key(),
        None,
        valuecard_core::time::Date(today.0.saturating_sub(800)),
        valuecard_core::time::Date(today.0.saturating_sub(30)),
    )?;
    judge("expired certificate", reader, |reader| {
        send(reader, &select())?;
        let request = InitializePurchase {
            terminal_certificate: expired,
            challenge_terminal: random_array(&mut OsRng),
            amount_max: Amount::new(100).map_err(|e| WorldError::Other(e.to_string()))?,
            date: today,
        };
        let response = send(
            reader,
            &proprietary(ins::INITIALIZE_PURCHASE, request.encode()),
        )?;
        Ok((
            response.sw == StatusWord::REFERENCE_DATA_NOT_USABLE,
            format!("card answered INITIALIZE PURCHASE with {}", response.sw),
        ))
    })
}

/// A CREDIT signed by a key that is not the center's: value from nowhere.
pub fn forged_load_authorization(
    world: &mut World,
    reader: &mut impl CardReader,
) -> Result<AttackOutcome, WorldError> {
    let dispenser_id = world.dispenser.device_id();
    let today = world.today();
    judge("forged load authorization", reader, |reader| {
        send(reader, &select())?;
        let amount = Amount::new(500_000).map_err(|e| WorldError::Other(e.to_string()))?;
        let request = InitializeLoad {
            challenge_dispenser: random_array(&mut OsRng),
            amount,
            dispenser_id,
        };
        let response = send(reader, &proprietary(ins::INITIALIZE_LOAD, request.encode()))?;
        let offer = valuecard_core::messages::purse::LoadOffer::decode(&response.data)
            .map_err(|e| WorldError::Other(e.to_string()))?;
        let balance_after = offer
            .balance
            .checked_add(amount)
            .map_err(|e| WorldError::Other(e.to_string()))?;
        let rogue = SigningKeyPair::generate(&mut OsRng);
        let credit = CreditCommand {
            amount,
            balance_after,
            load_number: 1,
            date: today,
            signature: rogue.sign(b"not the center"),
            mac: [0; 16],
            transfer_keys: None,
        };
        let answer = send(reader, &proprietary(ins::CREDIT, credit.encode()))?;
        Ok((
            answer.sw == StatusWord::SECURITY_STATUS_NOT_SATISFIED,
            format!("card answered CREDIT with {}", answer.sw),
        ))
    })
}
