//! Credit mode on the card (seed 003, Figs. 13-17).
//!
//! - ENABLE CREDIT stores what the center issued: the expiry, the commitment C to the
//!   setting number Ns (Ns arrives sealed to the card's X25519 key), the center's SA over
//!   both, and three tries.
//! - VERIFY SETTING NUMBER and VERIFY PASSWORD share the try counter. The counter is
//!   decremented and committed **before** the comparison runs, and restored by a second
//!   commit when the secret was right, so a power cut can cost the holder a try but never
//!   gives an attacker a free one. At zero the credit function is blocked for good.
//! - A successful verification leaves an [`Authorization`] in volatile memory; its proof
//!   values ([`SettingVerified`], [`PasswordVerified`]) are created by the comparison and
//!   nowhere else. INITIALIZE PASSWORD (Fig. 15, registration or change) consumes either;
//!   INITIALIZE SERVICE (Figs. 16, 17) consumes only a [`PasswordVerified`], and RECORD
//!   SERVICE needs the session that consumed it.
//! - RECORD SERVICE keeps the service record M in a bounded log and answers SU(M * IDU).

use rand_core::CryptoRngCore;
use valuecard_core::apdu::Command;
use valuecard_core::cert::Role;
use valuecard_core::crypto::{random_array, PublicKey};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::credit::{
    password_digest, sealed_setting_aad, setting_commitment, CreditSessionOffer,
    CreditSessionRequest, CreditStatus, EnableCredit, Password, RecordService, ServiceLogEntry,
    ServiceRecord, ServiceRecorded, SetPassword, SettingNumber, VerifyPassword,
    VerifySettingNumber, CREDIT_TRIES, SEALED_SETTING_PLAINTEXT_LEN, SETTING_SALT_LEN,
};
use valuecard_core::messages::purse::Challenge;
use valuecard_core::money::Amount;
use valuecard_core::StatusWord;
use zeroize::Zeroize;

use crate::purse::{cert_status, wrong_data, Effect, Volatile};
use crate::state::{Credit, PersistentState, Purse};

pub use proof::{PasswordVerified, SettingVerified};

/// The proofs of a successful verification. Their fields are private to this module, and the
/// two functions here that compare a presented secret with the stored reference are the only
/// code that creates them.
mod proof {
    use valuecard_core::crypto::constant_time_eq;
    use valuecard_core::ids::CardId;
    use valuecard_core::messages::credit::{
        password_digest, setting_commitment, Password, SettingNumber,
    };

    use crate::state::Credit;

    /// The holder presented the right setting number in this card session.
    #[derive(Debug)]
    pub struct SettingVerified(());

    /// The holder presented the right password in this card session.
    #[derive(Debug)]
    pub struct PasswordVerified(());

    pub(super) fn check_setting_number(
        card_id: &CardId,
        credit: &Credit,
        presented: &SettingNumber,
    ) -> Option<SettingVerified> {
        let candidate = setting_commitment(card_id, &credit.setting_salt, presented);
        constant_time_eq(&candidate, &credit.setting_commitment).then_some(SettingVerified(()))
    }

    pub(super) fn check_password(
        card_id: &CardId,
        credit: &Credit,
        presented: &Password,
    ) -> Option<PasswordVerified> {
        let stored = credit.password_digest.as_ref()?;
        constant_time_eq(&password_digest(card_id, presented), stored)
            .then_some(PasswordVerified(()))
    }
}

/// What a successful VERIFY leaves in volatile memory.
#[derive(Debug)]
pub enum Authorization {
    Setting(SettingVerified),
    Password(PasswordVerified),
}

/// Which secret a VERIFY presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    SettingNumber,
    Password,
}

/// A presented secret held while the decremented try counter is committed.
#[derive(Debug)]
pub enum PendingComparison {
    SettingNumber(SettingNumber),
    Password(Password),
}

/// Fig. 15 between INITIALIZE PASSWORD and SET PASSWORD (volatile).
#[derive(Debug)]
pub struct PasswordSession {
    terminal_id: DeviceId,
    terminal_key: PublicKey,
    challenge_terminal: Challenge,
    challenge_card: Challenge,
    _authorization: Authorization,
}

/// Figs. 16 and 17 between INITIALIZE SERVICE and RECORD SERVICE (volatile). It exists only
/// with the proof that the password was verified in this card session.
#[derive(Debug)]
pub struct ServiceSession {
    terminal_id: DeviceId,
    _password: PasswordVerified,
}

fn enabled(purse: &Purse) -> Result<&Credit, StatusWord> {
    purse
        .credit
        .as_ref()
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)
}

fn with_credit(purse: &Purse, change: impl FnOnce(&mut Credit)) -> PersistentState {
    let mut next = purse.clone();
    if let Some(credit) = next.credit.as_mut() {
        change(credit);
    }
    PersistentState::Personalized(Box::new(next))
}

/// READ CREDIT: the center's enablement and the credit function's state.
pub fn read_credit(purse: &Purse) -> Result<Effect, StatusWord> {
    let credit = purse
        .credit
        .as_ref()
        .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
    Ok(Effect::reply(
        CreditStatus {
            expiry: credit.expiry,
            setting_commitment: credit.setting_commitment,
            signature: credit.enablement_signature,
            tries_left: credit.tries_left,
            password_registered: credit.password_digest.is_some(),
            services_recorded: credit.services_recorded,
        }
        .encode(),
    ))
}

/// READ SERVICE LOG: the signed service records the card keeps, newest first.
pub fn read_service_log(purse: &Purse) -> Result<Effect, StatusWord> {
    let credit = purse
        .credit
        .as_ref()
        .ok_or(StatusWord::REFERENCED_DATA_NOT_FOUND)?;
    let entries: Vec<ServiceLogEntry> = credit.service_log.iter().cloned().collect();
    Ok(Effect::reply(ServiceLogEntry::encode_list(&entries)))
}

/// ENABLE CREDIT (Fig. 13's issuance data): open salt || Ns with the card's sealing key,
/// recompute C, and verify the center's SA over (IDU, expiry, C) with the root key. A card is
/// enabled once; the same command again changes nothing, so replaying it cannot reset a
/// blocked credit function.
pub fn enable_credit(command: &Command, purse: &Purse) -> Result<Effect, StatusWord> {
    let request = EnableCredit::decode(&command.data).map_err(wrong_data)?;
    if let Some(existing) = &purse.credit {
        return if existing.expiry == request.expiry
            && existing.enablement_signature == request.signature
        {
            Ok(Effect::reply(Vec::new()))
        } else {
            Err(StatusWord::CONDITIONS_NOT_SATISFIED)
        };
    }
    let card_id = purse.keys.card_id;
    let mut plain = purse
        .keys
        .sealing
        .open(&sealed_setting_aad(&card_id), &request.sealed_setting)
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let opened = (plain.len() == SEALED_SETTING_PLAINTEXT_LEN)
        .then(|| {
            let salt: Option<[u8; SETTING_SALT_LEN]> = plain[..SETTING_SALT_LEN].try_into().ok();
            let number = SettingNumber::from_bytes(&plain[SETTING_SALT_LEN..]).ok();
            salt.zip(number)
        })
        .flatten();
    plain.zeroize();
    let (setting_salt, setting_number) = opened.ok_or(StatusWord::WRONG_DATA)?;
    let commitment = setting_commitment(&card_id, &setting_salt, &setting_number);
    purse
        .anchor
        .public_key
        .verify(
            &EnableCredit::signed_message(&card_id, request.expiry, &commitment),
            &request.signature,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let mut next = purse.clone();
    next.credit = Some(Credit {
        expiry: request.expiry,
        setting_salt,
        setting_commitment: commitment,
        enablement_signature: request.signature,
        tries_left: CREDIT_TRIES,
        password_digest: None,
        services_recorded: 0,
        service_log: Default::default(),
    });
    Ok(Effect::commit(
        Vec::new(),
        PersistentState::Personalized(Box::new(next)),
    ))
}

/// VERIFY SETTING NUMBER and VERIFY PASSWORD, first half: any presentation ends an earlier
/// verification; a well-formed one spends a try, committed before anything is compared.
pub fn verify(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    secret: Secret,
) -> Result<Effect, StatusWord> {
    volatile.credit_authorization = None;
    let credit = enabled(purse)?;
    if credit.blocked() {
        return Err(StatusWord::AUTHENTICATION_BLOCKED);
    }
    let pending = match secret {
        Secret::SettingNumber => PendingComparison::SettingNumber(
            VerifySettingNumber::decode(&command.data)
                .map_err(wrong_data)?
                .setting_number,
        ),
        Secret::Password => {
            let presented = VerifyPassword::decode(&command.data)
                .map_err(wrong_data)?
                .password;
            if credit.password_digest.is_none() {
                return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
            }
            PendingComparison::Password(presented)
        }
    };
    let tries_left = credit.tries_left - 1;
    Ok(Effect::decrement_then_compare(
        with_credit(purse, |credit| credit.tries_left = tries_left),
        pending,
    ))
}

/// VERIFY, second half, on the state whose decremented counter is already durable: a right
/// secret restores the tries (a second commit) and leaves the proof in volatile memory; a
/// wrong one answers `63Cx` with the tries left, or `6983` when none are.
pub fn compare(
    pending: PendingComparison,
    state: &PersistentState,
    volatile: &mut Volatile,
) -> Result<Effect, StatusWord> {
    let PersistentState::Personalized(purse) = state else {
        return Err(StatusWord::UNKNOWN);
    };
    let credit = purse.credit.as_ref().ok_or(StatusWord::UNKNOWN)?;
    let card_id = purse.keys.card_id;
    let granted = match &pending {
        PendingComparison::SettingNumber(presented) => {
            proof::check_setting_number(&card_id, credit, presented).map(Authorization::Setting)
        }
        PendingComparison::Password(presented) => {
            proof::check_password(&card_id, credit, presented).map(Authorization::Password)
        }
    };
    match granted {
        Some(authorization) => {
            volatile.credit_authorization = Some(authorization);
            Ok(Effect::commit(
                Vec::new(),
                with_credit(purse, |credit| credit.tries_left = CREDIT_TRIES),
            ))
        }
        None if credit.tries_left == 0 => Err(StatusWord::AUTHENTICATION_BLOCKED),
        None => Err(StatusWord::verification_failed(credit.tries_left)),
    }
}

/// The terminal's certificate on the card's known date (as in INITIALIZE PURCHASE, without
/// recording forgeries: credit commands write nothing before the holder is verified).
fn verify_terminal(
    purse: &Purse,
    request: &CreditSessionRequest,
) -> Result<(DeviceId, PublicKey), StatusWord> {
    let terminal = purse
        .anchor
        .verify_unexpired(
            core::slice::from_ref(&request.terminal_certificate),
            Role::PaymentTerminal,
            purse.known_date,
        )
        .map_err(cert_status)?;
    Ok((terminal.subject(), *terminal.signing_key()))
}

/// INITIALIZE PASSWORD (Fig. 15, first exchange): after a verified setting number (a new
/// password) or password (a change), the terminal's certificate and R; the card answers X
/// and SU(R * X).
pub fn initialize_password(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let authorization = volatile.credit_authorization.take();
    let credit = enabled(purse)?;
    if credit.blocked() {
        return Err(StatusWord::AUTHENTICATION_BLOCKED);
    }
    let authorization = authorization.ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let request = CreditSessionRequest::decode(&command.data).map_err(wrong_data)?;
    let (terminal_id, terminal_key) = verify_terminal(purse, &request)?;
    let challenge_card: Challenge = random_array(rng);
    let signature = purse
        .keys
        .signing
        .sign(&CreditSessionOffer::password_message(
            &purse.keys.card_id,
            &terminal_id,
            &request.challenge_terminal,
            &challenge_card,
        ));
    volatile.password = Some(PasswordSession {
        terminal_id,
        terminal_key,
        challenge_terminal: request.challenge_terminal,
        challenge_card,
        _authorization: authorization,
    });
    Ok(Effect::reply(
        CreditSessionOffer {
            challenge_card,
            signature,
        }
        .encode(),
    ))
}

/// SET PASSWORD (Fig. 15, second exchange): verify ST(R * X * Nc) with the certified key of
/// the terminal from INITIALIZE PASSWORD, then keep H(Nc) (never Nc).
pub fn set_password(
    command: &Command,
    purse: &Purse,
    session: PasswordSession,
) -> Result<Effect, StatusWord> {
    enabled(purse)?;
    let request = SetPassword::decode(&command.data).map_err(wrong_data)?;
    let card_id = purse.keys.card_id;
    session
        .terminal_key
        .verify(
            &SetPassword::signed_message(
                &card_id,
                &session.terminal_id,
                &session.challenge_terminal,
                &session.challenge_card,
                &request.password,
            ),
            &request.signature,
        )
        .map_err(|_| StatusWord::SECURITY_STATUS_NOT_SATISFIED)?;
    let digest = password_digest(&card_id, &request.password);
    Ok(Effect::commit(
        Vec::new(),
        with_credit(purse, |credit| {
            credit.password_digest = Some(digest);
            credit.tries_left = CREDIT_TRIES;
        }),
    ))
}

/// INITIALIZE SERVICE (Figs. 16 and 17): only after VERIFY PASSWORD in this card session, the
/// terminal's certificate and R; the card answers X and SU(R * X * H(Nc)).
pub fn initialize_service(
    command: &Command,
    purse: &Purse,
    volatile: &mut Volatile,
    rng: &mut impl CryptoRngCore,
) -> Result<Effect, StatusWord> {
    let authorization = volatile.credit_authorization.take();
    let credit = enabled(purse)?;
    if credit.blocked() {
        return Err(StatusWord::AUTHENTICATION_BLOCKED);
    }
    let Some(Authorization::Password(password_verified)) = authorization else {
        return Err(StatusWord::CONDITIONS_NOT_SATISFIED);
    };
    let digest = credit
        .password_digest
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let request = CreditSessionRequest::decode(&command.data).map_err(wrong_data)?;
    let (terminal_id, _) = verify_terminal(purse, &request)?;
    let challenge_card: Challenge = random_array(rng);
    let signature = purse
        .keys
        .signing
        .sign(&CreditSessionOffer::service_message(
            &purse.keys.card_id,
            &terminal_id,
            &request.challenge_terminal,
            &challenge_card,
            &digest,
        ));
    volatile.service = Some(ServiceSession {
        terminal_id,
        _password: password_verified,
    });
    Ok(Effect::reply(
        CreditSessionOffer {
            challenge_card,
            signature,
        }
        .encode(),
    ))
}

/// RECORD SERVICE (Fig. 17): after the service, M = (V, D, IDT, sequence) from the terminal
/// of the service session. The card refuses a date after its credit expiry, keeps M in its
/// service log and answers SU(M * IDU).
pub fn record_service(
    command: &Command,
    purse: &Purse,
    session: ServiceSession,
) -> Result<Effect, StatusWord> {
    let credit = enabled(purse)?;
    let request = RecordService::decode(&command.data).map_err(wrong_data)?;
    if request.amount == Amount::ZERO {
        return Err(StatusWord::WRONG_DATA);
    }
    if request.date > credit.expiry {
        return Err(StatusWord::REFERENCE_DATA_NOT_USABLE);
    }
    let service_number = credit
        .services_recorded
        .checked_add(1)
        .ok_or(StatusWord::CONDITIONS_NOT_SATISFIED)?;
    let mut record = ServiceRecord {
        card_id: purse.keys.card_id,
        terminal_id: session.terminal_id,
        terminal_sequence: request.terminal_sequence,
        service_number,
        amount: request.amount,
        date: request.date,
        card_signature: valuecard_core::crypto::Signature([0; 64]),
    };
    record.card_signature = purse.keys.signing.sign(&record.signed_message());
    let entry = ServiceLogEntry {
        service_number,
        terminal_id: record.terminal_id,
        terminal_sequence: record.terminal_sequence,
        amount: record.amount,
        date: record.date,
        signature: record.card_signature,
    };
    Ok(Effect::commit(
        ServiceRecorded {
            service_number,
            signature: record.card_signature,
        }
        .encode(),
        with_credit(purse, |credit| {
            credit.services_recorded = service_number;
            credit.push_service(entry);
        }),
    ))
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;
    use valuecard_core::apdu::Response;
    use valuecard_core::messages::credit::{SetPassword, VerifySettingNumber};
    use valuecard_core::messages::purse::{ins, PURSE_AID};

    use super::*;
    use crate::eeprom::{FaultInjectingEeprom, MemoryEeprom};
    use crate::image::EEPROM_SIZE;
    use crate::{testing, Card};

    type TestCard = Card<FaultInjectingEeprom<MemoryEeprom>, rand_chacha::ChaCha20Rng>;

    const NS: &str = "31415926";

    fn send(card: &mut TestCard, ins: u8, data: Vec<u8>) -> Response {
        let command = Command::new(0x80, ins, 0, 0).with_data(data).with_le(256);
        card.process(&command.encode()).unwrap()
    }

    fn select(card: &mut TestCard) {
        let command = Command::new(0x00, valuecard_core::messages::purse::ins::SELECT, 4, 0)
            .with_data(PURSE_AID.to_vec())
            .with_le(256);
        assert!(card.process(&command.encode()).unwrap().sw.is_success());
    }

    fn enabled_card() -> (TestCard, MemoryEeprom) {
        let memory = MemoryEeprom::new(EEPROM_SIZE);
        let mut card = Card::with_state(
            FaultInjectingEeprom::new(memory.clone()),
            testing::personalized(Amount::new(1_000).unwrap()),
            rand_chacha::ChaCha20Rng::seed_from_u64(7),
        )
        .unwrap();
        select(&mut card);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let enable = testing::enable_credit(
            &SettingNumber::parse(NS).unwrap(),
            testing::today().add_days(30),
            &mut rng,
        );
        let answer = send(&mut card, ins::ENABLE_CREDIT, enable.encode());
        assert!(answer.sw.is_success(), "{}", answer.sw);
        (card, memory)
    }

    fn credit_of(card: &TestCard) -> Credit {
        match card.state() {
            PersistentState::Personalized(purse) => purse.credit.clone().unwrap(),
            _ => panic!("not personalized"),
        }
    }

    fn verify_setting(card: &mut TestCard, number: &str) -> StatusWord {
        let data = VerifySettingNumber {
            setting_number: SettingNumber::parse(number).unwrap(),
        }
        .encode();
        send(card, ins::VERIFY_SETTING_NUMBER, data).sw
    }

    fn verify_password(card: &mut TestCard, password: &str) -> StatusWord {
        let data = VerifyPassword {
            password: Password::parse(password).unwrap(),
        }
        .encode();
        send(card, ins::VERIFY_PASSWORD, data).sw
    }

    fn session_request() -> CreditSessionRequest {
        CreditSessionRequest {
            terminal_certificate: testing::terminal().1,
            challenge_terminal: [0x33; 16],
        }
    }

    /// Fig. 15 with the test terminal; `forge` signs with another key.
    fn register(card: &mut TestCard, password: &str, forge: bool) -> StatusWord {
        let answer = send(card, ins::INITIALIZE_PASSWORD, session_request().encode());
        if !answer.sw.is_success() {
            return answer.sw;
        }
        let offer = CreditSessionOffer::decode(&answer.data).unwrap();
        let password = Password::parse(password).unwrap();
        let message = SetPassword::signed_message(
            &valuecard_core::ids::CardId(*b"CARD0001"),
            &DeviceId(*b"TERMINAL"),
            &[0x33; 16],
            &offer.challenge_card,
            &password,
        );
        let key = if forge {
            valuecard_core::crypto::SigningKeyPair::from_seed(&[0x66; 32])
        } else {
            testing::terminal().0
        };
        let data = SetPassword {
            password,
            signature: key.sign(&message),
        }
        .encode();
        send(card, ins::SET_PASSWORD, data).sw
    }

    #[test]
    fn three_wrong_setting_numbers_block_for_good_across_power_up() {
        let (mut card, memory) = enabled_card();
        assert_eq!(verify_setting(&mut card, "00000000"), StatusWord(0x63C2));
        assert_eq!(verify_setting(&mut card, "00000001"), StatusWord(0x63C1));
        assert_eq!(
            verify_setting(&mut card, "00000002"),
            StatusWord::AUTHENTICATION_BLOCKED
        );
        let mut card: TestCard = Card::open(
            FaultInjectingEeprom::new(memory),
            rand_chacha::ChaCha20Rng::seed_from_u64(9),
        )
        .unwrap();
        select(&mut card);
        assert_eq!(
            verify_setting(&mut card, NS),
            StatusWord::AUTHENTICATION_BLOCKED
        );
        assert_eq!(credit_of(&card).tries_left, 0);
        // Replaying the enablement cannot reset the counter.
        let enable = testing::enable_credit(
            &SettingNumber::parse(NS).unwrap(),
            testing::today().add_days(30),
            &mut rand_chacha::ChaCha20Rng::seed_from_u64(8),
        );
        assert!(send(&mut card, ins::ENABLE_CREDIT, enable.encode())
            .sw
            .is_success());
        assert_eq!(credit_of(&card).tries_left, 0);
        let other = testing::enable_credit(
            &SettingNumber::parse("11111111").unwrap(),
            testing::today().add_days(30),
            &mut rand_chacha::ChaCha20Rng::seed_from_u64(10),
        );
        assert_eq!(
            send(&mut card, ins::ENABLE_CREDIT, other.encode()).sw,
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
    }

    #[test]
    fn a_right_setting_number_restores_the_tries_and_allows_registration() {
        let (mut card, _) = enabled_card();
        assert_eq!(verify_setting(&mut card, "12345678"), StatusWord(0x63C2));
        assert!(verify_setting(&mut card, NS).is_success());
        assert_eq!(credit_of(&card).tries_left, CREDIT_TRIES);
        assert!(register(&mut card, "2468", false).is_success());
        assert!(credit_of(&card).password_digest.is_some());
        // The verification was consumed: a second registration needs a new one.
        assert_eq!(
            register(&mut card, "1357", false),
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
        assert!(verify_password(&mut card, "2468").is_success());
        assert_eq!(verify_password(&mut card, "1357"), StatusWord(0x63C2));
    }

    #[test]
    fn a_forged_terminal_signature_registers_nothing() {
        let (mut card, _) = enabled_card();
        assert!(verify_setting(&mut card, NS).is_success());
        assert_eq!(
            register(&mut card, "2468", true),
            StatusWord::SECURITY_STATUS_NOT_SATISFIED
        );
        assert!(credit_of(&card).password_digest.is_none());
    }

    #[test]
    fn a_service_needs_a_verified_password_and_a_date_within_the_expiry() {
        let (mut card, _) = enabled_card();
        let record = |date| {
            RecordService {
                amount: Amount::new(120).unwrap(),
                date,
                terminal_sequence: 5,
            }
            .encode()
        };
        // No session at all.
        assert_eq!(
            send(&mut card, ins::RECORD_SERVICE, record(testing::today())).sw,
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
        // A verified setting number is not a verified password.
        assert!(verify_setting(&mut card, NS).is_success());
        assert_eq!(
            send(
                &mut card,
                ins::INITIALIZE_SERVICE,
                session_request().encode()
            )
            .sw,
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
        assert!(verify_setting(&mut card, NS).is_success());
        assert!(register(&mut card, "2468", false).is_success());
        assert!(verify_password(&mut card, "2468").is_success());
        let answer = send(
            &mut card,
            ins::INITIALIZE_SERVICE,
            session_request().encode(),
        );
        assert!(answer.sw.is_success());
        let expired = testing::today().add_days(31);
        assert_eq!(
            send(&mut card, ins::RECORD_SERVICE, record(expired)).sw,
            StatusWord::REFERENCE_DATA_NOT_USABLE
        );
        assert!(verify_password(&mut card, "2468").is_success());
        assert!(send(
            &mut card,
            ins::INITIALIZE_SERVICE,
            session_request().encode()
        )
        .sw
        .is_success());
        let answer = send(&mut card, ins::RECORD_SERVICE, record(testing::today()));
        assert!(answer.sw.is_success(), "{}", answer.sw);
        let recorded = ServiceRecorded::decode(&answer.data).unwrap();
        let credit = credit_of(&card);
        assert_eq!((recorded.service_number, credit.services_recorded), (1, 1));
        let signed = credit.service_log[0].record(valuecard_core::ids::CardId(*b"CARD0001"));
        let card_key = match card.state() {
            PersistentState::Personalized(purse) => purse.keys.signing.public_key(),
            _ => unreachable!(),
        };
        card_key
            .verify(&signed.signed_message(), &recorded.signature)
            .unwrap();
        // The session is gone: the same record cannot be signed twice.
        assert_eq!(
            send(&mut card, ins::RECORD_SERVICE, record(testing::today())).sw,
            StatusWord::CONDITIONS_NOT_SATISFIED
        );
    }

    #[test]
    fn the_try_is_spent_before_the_comparison_even_for_the_right_secret() {
        // A wrong presentation writes exactly one commit; a right one writes the same first
        // commit (the decrement) and then the restore.
        let (mut card, _) = enabled_card();
        let before = card.eeprom_mut().writes();
        assert_eq!(verify_setting(&mut card, "00000000"), StatusWord(0x63C2));
        let one_commit = card.eeprom_mut().writes() - before;
        let before = card.eeprom_mut().writes();
        assert!(verify_setting(&mut card, NS).is_success());
        assert_eq!(card.eeprom_mut().writes() - before, 2 * one_commit);
        // Cut power as the second commit of a right presentation starts: no answer, and the
        // try stays spent.
        let (mut card, memory) = enabled_card();
        card.eeprom_mut().cut_power_at(one_commit + 1, 0, 1);
        let data = VerifySettingNumber {
            setting_number: SettingNumber::parse(NS).unwrap(),
        }
        .encode();
        let command = Command::new(0x80, ins::VERIFY_SETTING_NUMBER, 0, 0).with_data(data);
        assert_eq!(
            card.process(&command.encode()).unwrap_err(),
            crate::CardError::PowerLost
        );
        let card: TestCard = Card::open(
            FaultInjectingEeprom::new(memory),
            rand_chacha::ChaCha20Rng::seed_from_u64(9),
        )
        .unwrap();
        assert_eq!(credit_of(&card).tries_left, CREDIT_TRIES - 1);
    }
}
