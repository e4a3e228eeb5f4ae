//! The security server 31 of seed 004: it shares KC with each card (diversified from its
//! master key M), authenticates the card and derives KSES (ST11), reads BI (ST12-ST13),
//! builds and seals the SPC or a charge's value update with the usage record it signs
//! (ST14), confirms the card's PCN (ST18-ST19), and settles a lost PCN from the card's own
//! answer in a new session. Everything here is I/O-free: each step takes the state the
//! previous one left (kept by the caller between the client's requests, in a database) and
//! the card's sealed answer, and gives the next state and what to send the card.
//!
//! The steps, as explicit states ([`Step`]):
//!
//! ```text
//! Challenged ──authenticate──▶ Authenticated ──offer──▶ Offered ──complete──▶ Completed
//!                                                          │
//!                                  (a new session) ──resolve──▶ Completed | Voided
//! ```

pub mod keys;
#[cfg(test)]
mod tests;

use rand_core::CryptoRngCore;
use valuecard_core::cert::{CertError, Certificate, Role, TrustAnchor};
use valuecard_core::crypto::{random_array, seal_to};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::online::{
    ins, BalanceInfo, BalanceReadout, BalanceUpdate, Completion, CompletionQuery, CompletionStatus,
    ExternalAuthenticate, InitializeUpdate, InitializeUpdateResponse, KeyInstallation, OnlineItem,
    OnlineRecord, SecureSession, SessionError, SettlementId,
};
use valuecard_core::messages::purse::{Challenge, TransactionKind};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

pub use keys::{KeysUnavailable, SecurityKeys, SoftwareSecurityKeys};

/// Why a step was refused. Nothing the card said is trusted past the first refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    #[error("the card's certificate does not verify: {0}")]
    CardCertificate(CertError),
    #[error("the card's certificate carries no sealing key")]
    NoSealingKey,
    #[error("the card holds KC of version {0}, which this security server does not have")]
    UnknownKeyVersion(u32),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("a message from the card does not decode: {0}")]
    Malformed(String),
    #[error("the card answered for card {found}, the session is with card {expected}")]
    WrongCard { expected: CardId, found: CardId },
    #[error("the card answered for another settlement")]
    WrongSettlement,
    #[error("the card's spendable balance {spendable} is below {amount}")]
    InsufficientBalance { spendable: Amount, amount: Amount },
    #[error("a charge of {amount} would take the card past the largest balance")]
    OverLimit { amount: Amount },
    #[error("the card's completion does not match the update it was sent")]
    CompletionMismatch,
    #[error(transparent)]
    Keys(#[from] KeysUnavailable),
    #[error("the update is not a payment or a charge")]
    NotOnline,
}

/// A session as the caller keeps it between requests: enough to derive the same KSES again
/// (the card, KC's version and both challenges) and where each direction's counter stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub card_id: CardId,
    pub key_version: u32,
    pub host_challenge: Challenge,
    pub card_challenge: Challenge,
    pub to_card: u32,
    pub to_server: u32,
}

/// What the holder asked for: a payment to a store or a charge into the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    /// `OnlinePayment` or `OnlineCharge`.
    pub kind: TransactionKind,
    pub amount: Amount,
    /// The store paid, or the security server itself for a charge (the card's log entry).
    pub party: DeviceId,
    pub date: Date,
}

/// One settlement (or charge) at the security server, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// ST10: the server drew its challenge H; the card has not answered.
    Challenged {
        settlement_id: SettlementId,
        host_challenge: Challenge,
    },
    /// ST11-ST12: both sides proved KC; BRC was sealed for the card.
    Authenticated {
        settlement_id: SettlementId,
        session: SessionRecord,
    },
    /// ST13-ST14: BI read; the update was sealed for the card, bound to its counter.
    Offered(Offered),
    /// ST18-ST19: the card applied the update; `item` is what the center is told.
    Completed {
        settlement_id: SettlementId,
        completion: Completion,
        item: OnlineItem,
    },
    /// The update can never apply: a new session found it not applied.
    Voided { settlement_id: SettlementId },
}

/// An update sealed for the card and not yet confirmed: what completing or resolving it
/// checks against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub settlement_id: SettlementId,
    pub session: SessionRecord,
    pub info: BalanceInfo,
    pub update: BalanceUpdate,
}

/// The security server's operations over its keys.
#[derive(Debug)]
pub struct SecurityServer<K> {
    keys: K,
}

impl<K: SecurityKeys> SecurityServer<K> {
    pub fn new(keys: K) -> Self {
        SecurityServer { keys }
    }

    pub fn keys(&self) -> &K {
        &self.keys
    }

    pub fn keys_mut(&mut self) -> &mut K {
        &mut self.keys
    }

    /// INSTALL KEY data for the card whose certificate the center issued: KC of the current
    /// version, sealed to the card's X25519 key and signed.
    pub fn install_key(
        &self,
        card_certificate: &Certificate,
        anchor: &TrustAnchor,
        today: Date,
        rng: &mut impl CryptoRngCore,
    ) -> Result<KeyInstallation, SecurityError> {
        let card = anchor
            .verify_unexpired(core::slice::from_ref(card_certificate), Role::Card, today)
            .map_err(SecurityError::CardCertificate)?;
        let sealing_key = card.sealing_key().ok_or(SecurityError::NoSealingKey)?;
        let card_id = CardId(card.subject().0);
        let version = self.keys.current_version();
        let card_key = self
            .keys
            .card_key(&card_id, version)?
            .ok_or(SecurityError::UnknownKeyVersion(version))?;
        let sealed_key = seal_to(
            rng,
            sealing_key,
            &KeyInstallation::seal_context(&card_id, version),
            card_key.expose(),
        )
        .map_err(|_| SecurityError::NoSealingKey)?;
        Ok(KeyInstallation {
            server_certificate: self.keys.certificate().clone(),
            key_version: version,
            signature: self.keys.sign(&KeyInstallation::signed_message(
                &card_id,
                version,
                &sealed_key,
            ))?,
            sealed_key,
        })
    }

    /// ST10-ST11, first half: H for INITIALIZE UPDATE.
    pub fn challenge(
        &self,
        settlement_id: SettlementId,
        rng: &mut impl CryptoRngCore,
    ) -> (Step, InitializeUpdate) {
        let host_challenge: Challenge = random_array(rng);
        (
            Step::Challenged {
                settlement_id,
                host_challenge,
            },
            InitializeUpdate { host_challenge },
        )
    }

    /// ST11, second half, and ST12: checks the card's cryptogram for the card ID its FCI
    /// named, and gives EXTERNAL AUTHENTICATE and the sealed BRC.
    pub fn authenticate(
        &self,
        settlement_id: SettlementId,
        host_challenge: &Challenge,
        card_id: CardId,
        answer: &InitializeUpdateResponse,
    ) -> Result<(Step, ExternalAuthenticate, Vec<u8>), SecurityError> {
        let card_key = self
            .keys
            .card_key(&card_id, answer.key_version)?
            .ok_or(SecurityError::UnknownKeyVersion(answer.key_version))?;
        let (mut session, host_cryptogram) = SecureSession::authenticate(
            &card_key,
            &card_id,
            host_challenge,
            &answer.card_challenge,
            &answer.card_cryptogram,
        )?;
        let brc = session.seal(
            ins::READ_BALANCE,
            &BalanceReadout { settlement_id }.encode(),
        )?;
        let record = record_of(&session, answer.key_version);
        Ok((
            Step::Authenticated {
                settlement_id,
                session: record,
            },
            ExternalAuthenticate { host_cryptogram },
            brc,
        ))
    }

    /// ST13-ST14: opens BI and seals the update the holder asked for, with the usage record
    /// the card will keep, signed. `writer_sequence` numbers the security server's records.
    /// The caller keeps the result as [`Step::Offered`] until the PCN or a new session says
    /// how it ended.
    pub fn offer(
        &self,
        settlement_id: SettlementId,
        session: &SessionRecord,
        sealed_info: &[u8],
        request: &UpdateRequest,
        writer_sequence: u32,
    ) -> Result<(Offered, Vec<u8>), SecurityError> {
        let mut live = self.resume(session)?;
        let info = read_info(&mut live, sealed_info, &session.card_id)?;
        if info.settlement_id != settlement_id {
            return Err(SecurityError::WrongSettlement);
        }
        let (balance_after, instruction) = match request.kind {
            TransactionKind::OnlinePayment => {
                if request.amount > info.spendable {
                    return Err(SecurityError::InsufficientBalance {
                        spendable: info.spendable,
                        amount: request.amount,
                    });
                }
                (info.balance.checked_sub(request.amount), ins::SETTLE)
            }
            TransactionKind::OnlineCharge => {
                (info.balance.checked_add(request.amount), ins::CHARGE)
            }
            _ => return Err(SecurityError::NotOnline),
        };
        let balance_after = balance_after.map_err(|_| SecurityError::OverLimit {
            amount: request.amount,
        })?;
        let counter = info
            .counter
            .checked_add(1)
            .ok_or(SecurityError::CompletionMismatch)?;
        let writer = self.keys.device_id();
        let record = OnlineRecord {
            kind: request.kind,
            card_id: info.card_id,
            writer,
            challenge_host: session.host_challenge,
            challenge_card: session.card_challenge,
            counter,
            amount: request.amount,
            balance_after,
            writer_sequence,
            date: request.date,
        };
        let update = BalanceUpdate {
            settlement_id,
            kind: request.kind,
            amount: request.amount,
            counter: info.counter,
            balance_after,
            date: request.date,
            party: request.party,
            writer,
            writer_sequence,
            signature: self.keys.sign(&record.signed_message())?,
        };
        let sealed = live.seal(instruction, &update.encode())?;
        Ok((
            Offered {
                settlement_id,
                session: record_of(&live, session.key_version),
                info,
                update,
            },
            sealed,
        ))
    }

    /// ST18-ST19: opens the card's PCN and checks it is the completion of exactly the
    /// update offered; gives what the center is to be told.
    pub fn complete(
        &self,
        offered: &Offered,
        sealed_completion: &[u8],
    ) -> Result<Step, SecurityError> {
        let instruction = instruction_for(offered.update.kind)?;
        let mut live = self.resume(&offered.session)?;
        let completion = opened(
            &mut live,
            instruction,
            sealed_completion,
            Completion::decode,
        )?;
        self.completed(offered, completion)
    }

    /// The sealed GET COMPLETION for an offered update, in a new session with the same card
    /// (`fresh`, from [`SecurityServer::authenticate`], whose BRC the card answered with
    /// `sealed_info`): the card's answer says whether it applied the update.
    pub fn completion_query(
        &self,
        offered: &Offered,
        fresh: &SessionRecord,
        sealed_info: &[u8],
    ) -> Result<(SessionRecord, Vec<u8>), SecurityError> {
        same_card(&offered.session.card_id, &fresh.card_id)?;
        let mut live = self.resume(fresh)?;
        read_info(&mut live, sealed_info, &offered.session.card_id)?;
        let query = live.seal(
            ins::GET_COMPLETION,
            &CompletionQuery {
                settlement_id: offered.settlement_id,
            }
            .encode(),
        )?;
        Ok((record_of(&live, fresh.key_version), query))
    }

    /// Settles an offered update from the card's answer to GET COMPLETION in a new session:
    /// applied (its completion) or, since its SPC was sealed under a session that ended,
    /// never to be applied.
    pub fn resolve(
        &self,
        offered: &Offered,
        fresh: &SessionRecord,
        sealed_status: &[u8],
    ) -> Result<Step, SecurityError> {
        same_card(&offered.session.card_id, &fresh.card_id)?;
        if fresh.host_challenge == offered.session.host_challenge {
            // The same session that sealed the update: its answer proves nothing final.
            return Err(SecurityError::CompletionMismatch);
        }
        let mut live = self.resume(fresh)?;
        let status = opened(
            &mut live,
            ins::GET_COMPLETION,
            sealed_status,
            CompletionStatus::decode,
        )?;
        if status.settlement_id != offered.settlement_id {
            return Err(SecurityError::WrongSettlement);
        }
        match status.applied {
            Some(completion) => self.completed(offered, completion),
            None => Ok(Step::Voided {
                settlement_id: offered.settlement_id,
            }),
        }
    }

    fn completed(&self, offered: &Offered, completion: Completion) -> Result<Step, SecurityError> {
        let Offered {
            settlement_id,
            session,
            info,
            update,
        } = offered;
        let settlement_id = *settlement_id;
        let expected = Completion {
            settlement_id,
            kind: update.kind,
            amount: update.amount,
            counter: update.counter.wrapping_add(1),
            balance_after: update.balance_after,
        };
        if completion != expected {
            return Err(SecurityError::CompletionMismatch);
        }
        let record = OnlineRecord {
            kind: update.kind,
            card_id: session.card_id,
            writer: update.writer,
            challenge_host: session.host_challenge,
            challenge_card: session.card_challenge,
            counter: completion.counter,
            amount: update.amount,
            balance_after: update.balance_after,
            writer_sequence: update.writer_sequence,
            date: update.date,
        }
        .usage_record(update.signature);
        Ok(Step::Completed {
            settlement_id,
            completion,
            item: OnlineItem {
                card_id: session.card_id,
                settlement_id,
                previous: info.last_usage.clone(),
                record,
            },
        })
    }

    fn resume(&self, session: &SessionRecord) -> Result<SecureSession, SecurityError> {
        let card_key = self
            .keys
            .card_key(&session.card_id, session.key_version)?
            .ok_or(SecurityError::UnknownKeyVersion(session.key_version))?;
        Ok(SecureSession::resume(
            &card_key,
            &session.card_id,
            &session.host_challenge,
            &session.card_challenge,
            (session.to_card, session.to_server),
        ))
    }
}

/// Opens the card's next answer to `instruction` and decodes it.
fn opened<T>(
    live: &mut SecureSession,
    instruction: u8,
    sealed: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, valuecard_core::messages::DecodeError>,
) -> Result<T, SecurityError> {
    decode(&live.open(instruction, sealed)?)
        .map_err(|error| SecurityError::Malformed(error.to_string()))
}

/// BI, the card's answer to the session's BRC, from the card the session is with.
fn read_info(
    live: &mut SecureSession,
    sealed_info: &[u8],
    card_id: &CardId,
) -> Result<BalanceInfo, SecurityError> {
    let info = opened(live, ins::READ_BALANCE, sealed_info, BalanceInfo::decode)?;
    same_card(card_id, &info.card_id)?;
    Ok(info)
}

fn same_card(expected: &CardId, found: &CardId) -> Result<(), SecurityError> {
    if expected == found {
        Ok(())
    } else {
        Err(SecurityError::WrongCard {
            expected: *expected,
            found: *found,
        })
    }
}

fn instruction_for(kind: TransactionKind) -> Result<u8, SecurityError> {
    match kind {
        TransactionKind::OnlinePayment => Ok(ins::SETTLE),
        TransactionKind::OnlineCharge => Ok(ins::CHARGE),
        _ => Err(SecurityError::NotOnline),
    }
}

fn record_of(session: &SecureSession, key_version: u32) -> SessionRecord {
    let (to_card, to_server) = session.counters();
    SessionRecord {
        card_id: session.card_id(),
        key_version,
        host_challenge: *session.host_challenge(),
        card_challenge: *session.card_challenge(),
        to_card,
        to_server,
    }
}
