//! The purse application (seed 003): personalization (Figs. 4B, 8), purchase (Figs. 5, 6),
//! load (Figs. 4C, 7), the read commands, and the dispatch of credit mode (Figs. 13-17,
//! handlers in `credit.rs`). Each handler is a pure function from the current state and one
//! command to an [`Effect`]: response data, a status word, and the new persistent state to
//! commit (if any). The runtime commits before it answers.

use rand_core::CryptoRngCore;
use valuecard_core::apdu::Command;
use valuecard_core::cert::{CertError, Certificate, Role};
use valuecard_core::crypto::PublicKey;
use valuecard_core::crypto::{
    aes_cmac_verify, random_array, AesKey, SealingKeyPair, SigningKeyPair,
};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::purse::{
    ins, Challenge, CreditCommand, DebitCommand, GenerateKeyPairCommand, GenerateKeyPairResponse,
    GetLastTransaction, InitializeLoad, InitializePurchase, LastTransaction, LoadAuthorization,
    LoadOffer, LogEntry, PersonalizeCommand, PurchaseCommit, PurchaseOffer, PurseStatus,
    SelectResponse, TransactionKind, UpdateConfirmation, UsageRecord, SEALED_KEYS_PLAINTEXT_LEN,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;

use crate::credit;

mod load;
mod personalize;
mod purchase;

use crate::state::{AbnormalCode, CardKeys, PersistentState, Purse};
pub use load::load_mac_input;
use load::{credit, initialize_load};
use personalize::{generate_key_pair, personalize};
use purchase::{debit, initialize_purchase};

/// What a command does: the response and, if the command changes the card, the complete
/// new persistent state. A refusal that must still be recorded (an abnormal event) carries
/// both an error status word and a state to commit.
#[derive(Debug)]
pub struct Effect {
    pub data: Vec<u8>,
    pub sw: StatusWord,
    pub commit: Option<PersistentState>,
    /// Set only by VERIFY SETTING NUMBER and VERIFY PASSWORD: `commit` then holds the try
    /// counter already decremented, and only once that state is durable does the runtime
    /// compare the presented secret ([`credit::compare`]), which gives the answer. A power
    /// cut between the two can cost the holder a try but never gives one away.
    pub compare_after_commit: Option<credit::PendingComparison>,
}

impl Effect {
    pub(crate) fn reply(data: Vec<u8>) -> Self {
        Effect {
            data,
            sw: StatusWord::SUCCESS,
            commit: None,
            compare_after_commit: None,
        }
    }

    pub(crate) fn commit(data: Vec<u8>, state: PersistentState) -> Self {
        Effect {
            data,
            sw: StatusWord::SUCCESS,
            commit: Some(state),
            compare_after_commit: None,
        }
    }

    fn refuse_and_record(sw: StatusWord, state: PersistentState) -> Self {
        Effect {
            data: Vec::new(),
            sw,
            commit: Some(state),
            compare_after_commit: None,
        }
    }

    /// Commit `decremented` first; compare `pending` only after it is durable.
    pub(crate) fn decrement_then_compare(
        decremented: PersistentState,
        pending: credit::PendingComparison,
    ) -> Self {
        Effect {
            data: Vec::new(),
            sw: StatusWord::SUCCESS,
            commit: Some(decremented),
            compare_after_commit: Some(pending),
        }
    }
}

/// A purchase between INITIALIZE PURCHASE and DEBIT (volatile: lost at power-off).
#[derive(Debug, Clone)]
pub struct PurchaseSession {
    terminal_certificate: Certificate,
    terminal_id: DeviceId,
    terminal_key: PublicKey,
    challenge_terminal: Challenge,
    challenge_card: Challenge,
    amount_max: Amount,
    date: Date,
    counter: u32,
}

/// A load between INITIALIZE LOAD and CREDIT (volatile).
#[derive(Debug, Clone)]
pub struct LoadSession {
    request: InitializeLoad,
    challenge_card: Challenge,
    counter: u32,
}

/// The sessions taken out of volatile memory for the one command that may use them.
#[derive(Debug, Default)]
pub struct Sessions {
    pub purchase: Option<PurchaseSession>,
    pub load: Option<LoadSession>,
    /// Between INITIALIZE PASSWORD and SET PASSWORD.
    pub password: Option<credit::PasswordSession>,
    /// Between INITIALIZE SERVICE and RECORD SERVICE.
    pub service: Option<credit::ServiceSession>,
}

/// Everything the card forgets at power-off or reset.
#[derive(Debug, Default)]
pub struct Volatile {
    /// The application SELECT chose, if any.
    pub selected: Option<Application>,
    /// The common-key application's session (seed 004), until SELECT, a reset or a refused
    /// online command.
    pub online: Option<crate::online::OnlineSession>,
    pub challenge: Option<Challenge>,
    pub purchase: Option<PurchaseSession>,
    pub load: Option<LoadSession>,
    pub password: Option<credit::PasswordSession>,
    pub service: Option<credit::ServiceSession>,
    /// A successful VERIFY SETTING NUMBER or VERIFY PASSWORD, until the next INITIALIZE
    /// PASSWORD or INITIALIZE SERVICE consumes it, the next VERIFY replaces it, or SELECT.
    pub credit_authorization: Option<credit::Authorization>,
    /// Between UPDATE PERMISSION and UPDATE TRANSFER KEY (seed 000).
    pub key_update: Option<crate::transfer::KeyUpdateSession>,
    /// Between INITIALIZE TRANSFER IN and TRANSFER IN (seed 000).
    pub transfer_in: Option<crate::transfer::TransferInSession>,
    /// The services application's challenge or session (seed 002), until SELECT, a reset
    /// or a refused services command.
    pub services: Option<crate::services::ServicesSession>,
}

/// The applications a SELECT can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Application {
    /// The purse (seed 003), with credit mode and card-to-card transfer.
    Purse,
    /// The common-key application of online settlement (seed 004).
    Online,
    /// The services application of the multi-service chip (seed 002).
    Services,
}

/// Which commands each life-cycle state allows: the one place that decides it.
pub fn check_allowed(ins: u8, state: &PersistentState) -> Result<(), StatusWord> {
    use PersistentState as S;
    let allowed = match (ins, state) {
        (ins::GET_CHALLENGE, S::Manufactured { .. } | S::KeysGenerated { .. }) => true,
        (ins::GENERATE_KEY_PAIR, S::Manufactured { .. } | S::KeysGenerated { .. }) => true,
        (ins::PERSONALIZE, S::KeysGenerated { .. }) => true,
        (
            ins::READ_PURSE
            | ins::READ_LOG
            | ins::GET_LAST_TRANSACTION
            | ins::READ_CREDIT
            | ins::READ_SERVICE_LOG,
            S::Personalized(_),
        ) => true,
        (
            ins::INITIALIZE_PURCHASE
            | ins::DEBIT
            | ins::INITIALIZE_LOAD
            | ins::CREDIT
            | ins::ENABLE_CREDIT
            | ins::VERIFY_SETTING_NUMBER
            | ins::VERIFY_PASSWORD
            | ins::INITIALIZE_PASSWORD
            | ins::SET_PASSWORD
            | ins::INITIALIZE_SERVICE
            | ins::RECORD_SERVICE,
            S::Personalized(purse),
        ) => {
            if purse.blocked {
                return Err(StatusWord::FUNCTION_NOT_SUPPORTED);
            }
            // A purse on temporary keys is moving to a new chip or has moved (seed 002):
            // its value stays as the move's backup and changes no more here.
            if purse.services.purse_on_temporary_keys()
                && matches!(
                    ins,
                    ins::INITIALIZE_PURCHASE | ins::DEBIT | ins::INITIALIZE_LOAD | ins::CREDIT
                )
            {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            true
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(StatusWord::CONDITIONS_NOT_SATISFIED)
    }
}

pub fn select_response(state: &PersistentState) -> Effect {
    let response = SelectResponse {
        state: state.card_state(),
        card_id: state.card_id(),
        chip_serial: state.chip_serial(),
        certificate: match state {
            PersistentState::Personalized(purse) => Some(purse.certificate.clone()),
            _ => None,
        },
        transfer: match state {
            PersistentState::Personalized(purse) if !purse.transfer.is_empty() => {
                Some(crate::transfer::summary(purse))
            }
            _ => None,
        },
    };
    // A blocked purse, or one on temporary keys (moving or moved, seed 002), answers SELECT
    // with the warning "selected file deactivated".
    let blocked = matches!(state, PersistentState::Personalized(purse)
        if purse.blocked || purse.services.purse_on_temporary_keys());
    Effect {
        data: response.encode(),
        sw: if blocked {
            StatusWord::FILE_DEACTIVATED
        } else {
            StatusWord::SUCCESS
        },
        commit: None,
        compare_after_commit: None,
    }
}

/// Runs one purse command (after SELECT, CLA and life-cycle checks).
pub fn handle(
    command: &Command,
    state: &PersistentState,
    volatile: &mut Volatile,
    sessions: Sessions,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    if command.p1 != 0 || command.p2 != 0 {
        return Err(StatusWord::INCORRECT_P1_P2);
    }
    check_allowed(command.ins, state)?;
    if matches!(
        command.ins,
        ins::READ_PURSE | ins::READ_LOG | ins::READ_CREDIT | ins::READ_SERVICE_LOG
    ) && !command.data.is_empty()
    {
        return Err(StatusWord::WRONG_LENGTH);
    }
    let Sessions {
        purchase,
        load,
        password,
        service,
    } = sessions;
    match (command.ins, state) {
        (ins::GET_CHALLENGE, _) => get_challenge(command, volatile, rng),
        (ins::GENERATE_KEY_PAIR, PersistentState::Manufactured { transport_key, .. })
        | (ins::GENERATE_KEY_PAIR, PersistentState::KeysGenerated { transport_key, .. }) => {
            generate_key_pair(command, state, transport_key, volatile, rng)
        }
        (
            ins::PERSONALIZE,
            PersistentState::KeysGenerated {
                transport_key,
                keys,
                ..
            },
        ) => personalize(command, transport_key, keys, volatile),
        (ins::READ_PURSE, PersistentState::Personalized(purse)) => {
            Ok(Effect::reply(read_purse(purse)))
        }
        (ins::READ_LOG, PersistentState::Personalized(purse)) => {
            let entries: Vec<LogEntry> = purse.log.iter().cloned().collect();
            Ok(Effect::reply(LogEntry::encode_list(&entries)))
        }
        (ins::GET_LAST_TRANSACTION, PersistentState::Personalized(purse)) => {
            get_last_transaction(command, purse)
        }
        (ins::INITIALIZE_PURCHASE, PersistentState::Personalized(purse)) => {
            initialize_purchase(command, purse, volatile, rng)
        }
        (ins::DEBIT, PersistentState::Personalized(purse)) => debit(
            command,
            purse,
            purchase.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
        ),
        (ins::INITIALIZE_LOAD, PersistentState::Personalized(purse)) => {
            initialize_load(command, purse, volatile, rng)
        }
        (ins::CREDIT, PersistentState::Personalized(purse)) => credit(
            command,
            purse,
            load.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
        ),
        (ins::READ_CREDIT, PersistentState::Personalized(purse)) => credit::read_credit(purse),
        (ins::READ_SERVICE_LOG, PersistentState::Personalized(purse)) => {
            credit::read_service_log(purse)
        }
        (ins::ENABLE_CREDIT, PersistentState::Personalized(purse)) => {
            credit::enable_credit(command, purse)
        }
        (ins::VERIFY_SETTING_NUMBER, PersistentState::Personalized(purse)) => {
            credit::verify(command, purse, volatile, credit::Secret::SettingNumber)
        }
        (ins::VERIFY_PASSWORD, PersistentState::Personalized(purse)) => {
            credit::verify(command, purse, volatile, credit::Secret::Password)
        }
        (ins::INITIALIZE_PASSWORD, PersistentState::Personalized(purse)) => {
            credit::initialize_password(command, purse, volatile, rng)
        }
        (ins::SET_PASSWORD, PersistentState::Personalized(purse)) => credit::set_password(
            command,
            purse,
            password.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
        ),
        (ins::INITIALIZE_SERVICE, PersistentState::Personalized(purse)) => {
            credit::initialize_service(command, purse, volatile, rng)
        }
        (ins::RECORD_SERVICE, PersistentState::Personalized(purse)) => credit::record_service(
            command,
            purse,
            service.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?,
        ),
        _ => {
            let _ = (purchase, load, password, service);
            Err(StatusWord::INS_NOT_SUPPORTED)
        }
    }
}

pub(crate) fn wrong_data<E>(_: E) -> StatusWord {
    StatusWord::WRONG_DATA
}

fn get_challenge(
    command: &Command,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    if !command.data.is_empty() || !matches!(command.le, Some(16) | Some(256) | Some(65_536)) {
        return Err(StatusWord::WRONG_LENGTH);
    }
    let challenge: Challenge = random_array(rng);
    volatile.challenge = Some(challenge);
    Ok(Effect::reply(challenge.to_vec()))
}

fn take_challenge(volatile: &mut Volatile) -> Result<Challenge, StatusWord> {
    volatile
        .challenge
        .take()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)
}

pub(crate) fn cert_status(error: CertError) -> StatusWord {
    match error {
        CertError::Expired { .. } => StatusWord::REFERENCE_DATA_NOT_USABLE,
        CertError::Encoding(_)
        | CertError::TooLong
        | CertError::Profile(_)
        | CertError::UnknownRole(_) => StatusWord::WRONG_DATA,
        _ => StatusWord::SECURITY_STATUS_NOT_SATISFIED,
    }
}

fn read_purse(purse: &Purse) -> Vec<u8> {
    PurseStatus {
        state: if purse.blocked {
            valuecard_core::messages::purse::CardState::Blocked
        } else {
            valuecard_core::messages::purse::CardState::Active
        },
        card_id: purse.keys.card_id,
        balance: purse.balance,
        counter: purse.counter,
        abnormal_events: purse.abnormal_events.len() as u8,
        last_usage: purse.last_usage.clone(),
    }
    .encode()
}

fn get_last_transaction(command: &Command, purse: &Purse) -> Result<Effect, StatusWord> {
    let request = GetLastTransaction::decode(&command.data).map_err(wrong_data)?;
    let record = purse
        .last_usage
        .clone()
        .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
    let signature = purse.keys.signing.sign(&LastTransaction::signed_message(
        &purse.keys.card_id,
        &request.challenge,
        &record,
    ));
    Ok(Effect::reply(
        LastTransaction { record, signature }.encode(),
    ))
}

fn with_abnormal(purse: &Purse, code: AbnormalCode, block: bool) -> PersistentState {
    let mut next = purse.clone();
    next.record_abnormal(code);
    next.blocked |= block;
    PersistentState::Personalized(Box::new(next))
}

/// Commits one balance update on `next`: the next counter, the new balance, the usage record
/// (its counter filled in here), the writer's certificate, and the log entry the record
/// implies; the answer is the confirmation of Fig. 5.
fn commit_update(
    mut next: Purse,
    record: UsageRecord,
    writer_certificate: Option<Certificate>,
) -> Result<Effect, StatusWord> {
    apply_update(&mut next, record, writer_certificate)?;
    let data = UpdateConfirmation {
        counter: next.counter,
        balance: next.balance,
    }
    .encode();
    Ok(Effect::commit(
        data,
        PersistentState::Personalized(Box::new(next)),
    ))
}

/// One balance update on `next` (purchase, load, transfer): the next counter, the new
/// balance, the usage record (its counter filled in here), the writer's certificate, and
/// the log entry the record implies.
pub(crate) fn apply_update(
    next: &mut Purse,
    mut record: UsageRecord,
    writer_certificate: Option<Certificate>,
) -> Result<(), StatusWord> {
    next.counter = next
        .counter
        .checked_add(1)
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    record.counter = next.counter;
    next.balance = record.balance_after;
    next.push_log(LogEntry {
        kind: record.kind,
        counter: record.counter,
        amount: record.amount,
        balance_after: record.balance_after,
        party: record.writer,
        date: record.date,
    });
    next.last_usage = Some(record);
    next.last_writer_certificate = writer_certificate;
    Ok(())
}

/// The card ID as a certificate subject.
pub fn card_subject(card_id: &CardId) -> DeviceId {
    DeviceId(card_id.0)
}
