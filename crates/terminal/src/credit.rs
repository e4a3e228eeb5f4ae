//! Credit mode at the payment terminal (seed 003, Figs. 13-17), as explicit states:
//!
//! ```text
//! open_credit ──> CreditSession ──verify_password──> PasswordVerified ──record_service──> ServiceRecorded
//!                      │
//!                      ├─register_password (setting number, Figs. 13 and 15)
//!                      └─change_password   (old password, Fig. 14 with Fig. 15)
//! ```
//!
//! A [`CreditSession`] exists only once the card's certificate and the center's credit
//! enablement SA(IDU, expiry, C) verified and the expiry is not before the terminal's date.
//! A [`PasswordVerified`] exists only once the card accepted the password and answered
//! SU(R * X * H(Nc)) for the password the holder typed. A service record is stored in doubt
//! before RECORD SERVICE is sent and kept with the card's SU(M * IDU) for the center.

use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::credit::{
    password_digest, CreditSessionOffer, CreditSessionRequest, CreditStatus, EnableCredit,
    Password, RecordService, ServiceLink, ServiceLogEntry, ServiceReceipt, ServiceRecord,
    ServiceRecorded as ServiceAnswer, ServiceUpload, SetPassword, SettingNumber, VerifyPassword,
    VerifySettingNumber, SERVICE_BATCH_MAX,
};
use valuecard_core::messages::purse::{ins, Challenge};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};
use valuecard_sam::Sam;

use rand_core::CryptoRngCore;

use crate::card_commands::{proprietary, run};
use crate::payment::{PaymentTerminal, VerifiedCard};
use crate::store::{ServiceEntry, ServiceStatus, TerminalStore};
use crate::TerminalError;

/// A card whose credit enablement verified under the root key and has not expired by the
/// terminal's calendar (Figs. 13 and 14: IDU and SA checked before anything is typed).
#[derive(Debug, Clone)]
pub struct CreditSession {
    card: VerifiedCard,
    status: CreditStatus,
}

impl CreditSession {
    pub fn card(&self) -> &VerifiedCard {
        &self.card
    }

    pub fn card_id(&self) -> CardId {
        self.card.card_id()
    }

    /// What the card reported, its SA verified.
    pub fn status(&self) -> &CreditStatus {
        &self.status
    }
}

/// Proof that the card signed SU(R * X * H(Nc)) over the password the holder typed. Only
/// [`PaymentTerminal::verify_password`] creates one.
#[derive(Debug)]
pub struct CardPasswordSignature(());

/// The state between INITIALIZE SERVICE and RECORD SERVICE: the holder's password is
/// verified by the card and the card is genuine; the service may be given.
#[derive(Debug)]
pub struct PasswordVerified {
    card: VerifiedCard,
    expiry: Date,
    services_before: u32,
    _proof: CardPasswordSignature,
}

impl PasswordVerified {
    pub fn card_id(&self) -> CardId {
        self.card.card_id()
    }
}

/// A service the card signed: the record the center will charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecorded {
    pub record: ServiceRecord,
}

/// How a credit verification was refused, as a typed error.
fn verification_error(
    sw: StatusWord,
    command: &'static str,
    wrong: fn(u8) -> TerminalError,
) -> TerminalError {
    match sw.tries_left() {
        Some(tries_left) => wrong(tries_left),
        None if sw == StatusWord::AUTHENTICATION_BLOCKED => TerminalError::CreditBlocked,
        None => TerminalError::Card { command, sw },
    }
}

fn wrong_setting_number(tries_left: u8) -> TerminalError {
    TerminalError::WrongSettingNumber { tries_left }
}

fn wrong_password(tries_left: u8) -> TerminalError {
    TerminalError::WrongPassword { tries_left }
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> PaymentTerminal<S, T, R> {
    /// Figs. 13 and 14, the card's insertion: SELECT (certificate and lists checked), settle
    /// any service of this card left in doubt here, READ CREDIT, verify the center's SA with
    /// the root key, and refuse an expired or blocked credit function.
    pub fn open_credit(
        &mut self,
        reader: &mut impl CardReader,
    ) -> Result<CreditSession, TerminalError> {
        let card = self.select_card(reader)?;
        if !self
            .store
            .services_in_doubt_for_card(&card.card_id())?
            .is_empty()
        {
            self.settle_services(reader, &card)?;
        }
        let status = self.read_credit(reader, &card)?;
        let today = self.clock.today();
        if status.expiry < today {
            return Err(TerminalError::CreditExpired {
                expiry: status.expiry,
                today,
            });
        }
        if status.tries_left == 0 {
            return Err(TerminalError::CreditBlocked);
        }
        Ok(CreditSession { card, status })
    }

    /// READ CREDIT with the center's SA(IDU, expiry, C) verified under the root key.
    pub fn read_credit(
        &mut self,
        reader: &mut impl CardReader,
        card: &VerifiedCard,
    ) -> Result<CreditStatus, TerminalError> {
        let data = match run(
            reader,
            "READ CREDIT",
            &proprietary(ins::READ_CREDIT, Vec::new()),
        ) {
            Err(TerminalError::Card {
                sw: StatusWord::REFERENCED_DATA_NOT_FOUND,
                ..
            }) => return Err(TerminalError::CreditNotEnabled),
            other => other?,
        };
        let status = CreditStatus::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "credit status",
            error,
        })?;
        self.anchor()?
            .public_key
            .verify(
                &EnableCredit::signed_message(
                    &card.card_id(),
                    status.expiry,
                    &status.setting_commitment,
                ),
                &status.signature,
            )
            .map_err(|_| TerminalError::BadCreditEnablement)?;
        Ok(status)
    }

    /// Figs. 13 and 15: the setting number the holder typed, then the new password with the
    /// terminal's signature ST(R * X * Nc). Three wrong setting numbers block the card's
    /// credit function for good.
    pub fn register_password(
        &mut self,
        reader: &mut impl CardReader,
        session: &CreditSession,
        setting_number: &SettingNumber,
        password: &Password,
    ) -> Result<(), TerminalError> {
        let command = VerifySettingNumber {
            setting_number: setting_number.clone(),
        };
        let response =
            reader.exchange(&proprietary(ins::VERIFY_SETTING_NUMBER, command.encode()))?;
        if !response.sw.is_success() {
            return Err(verification_error(
                response.sw,
                "VERIFY SETTING NUMBER",
                wrong_setting_number,
            ));
        }
        self.set_password(reader, &session.card, password)
    }

    /// Fig. 14's re-registration with Fig. 15's exchange: the current password, then the new
    /// one.
    pub fn change_password(
        &mut self,
        reader: &mut impl CardReader,
        session: &CreditSession,
        current: &Password,
        new: &Password,
    ) -> Result<(), TerminalError> {
        self.present_password(reader, session, current)?;
        self.set_password(reader, &session.card, new)
    }

    fn present_password(
        &mut self,
        reader: &mut impl CardReader,
        session: &CreditSession,
        password: &Password,
    ) -> Result<(), TerminalError> {
        if !session.status.password_registered {
            return Err(TerminalError::NoPasswordRegistered);
        }
        let command = VerifyPassword {
            password: password.clone(),
        };
        let response = reader.exchange(&proprietary(ins::VERIFY_PASSWORD, command.encode()))?;
        if !response.sw.is_success() {
            return Err(verification_error(
                response.sw,
                "VERIFY PASSWORD",
                wrong_password,
            ));
        }
        Ok(())
    }

    /// Fig. 15: R and the terminal's certificate; the card's X and SU(R * X), verified; then
    /// Nc with ST(R * X * Nc).
    fn set_password(
        &mut self,
        reader: &mut impl CardReader,
        card: &VerifiedCard,
        password: &Password,
    ) -> Result<(), TerminalError> {
        let (challenge_terminal, offer) =
            self.credit_offer(reader, ins::INITIALIZE_PASSWORD, "INITIALIZE PASSWORD")?;
        card.public_key()
            .verify(
                &CreditSessionOffer::password_message(
                    &card.card_id(),
                    &self.sam.device_id(),
                    &challenge_terminal,
                    &offer.challenge_card,
                ),
                &offer.signature,
            )
            .map_err(|_| TerminalError::BadCardSignature)?;
        let signature = self.sam.sign_set_password(
            &card.card_id(),
            &challenge_terminal,
            &offer.challenge_card,
            password,
        )?;
        let command = SetPassword {
            password: password.clone(),
            signature,
        };
        run(
            reader,
            "SET PASSWORD",
            &proprietary(ins::SET_PASSWORD, command.encode()),
        )?;
        Ok(())
    }

    fn credit_offer(
        &mut self,
        reader: &mut impl CardReader,
        instruction: u8,
        name: &'static str,
    ) -> Result<(Challenge, CreditSessionOffer), TerminalError> {
        let challenge_terminal: Challenge = random_array(&mut self.rng);
        let request = CreditSessionRequest {
            terminal_certificate: self.sam.certificate()?.clone(),
            challenge_terminal,
        };
        let data = run(reader, name, &proprietary(instruction, request.encode()))?;
        let offer =
            CreditSessionOffer::decode(&data).map_err(|error| TerminalError::Malformed {
                message: "credit session offer",
                error,
            })?;
        Ok((challenge_terminal, offer))
    }

    /// Figs. 16 and 17: the password the holder typed; the card compares it, then answers R
    /// with X and SU(R * X * H(Nc)), which the terminal checks with the card's certified key
    /// and the digest of what was typed. A wrong password is
    /// [`TerminalError::WrongPassword`] with the tries left.
    pub fn verify_password(
        &mut self,
        reader: &mut impl CardReader,
        session: &CreditSession,
        password: &Password,
    ) -> Result<PasswordVerified, TerminalError> {
        self.present_password(reader, session, password)?;
        let (challenge_terminal, offer) =
            self.credit_offer(reader, ins::INITIALIZE_SERVICE, "INITIALIZE SERVICE")?;
        let card = &session.card;
        card.public_key()
            .verify(
                &CreditSessionOffer::service_message(
                    &card.card_id(),
                    &self.sam.device_id(),
                    &challenge_terminal,
                    &offer.challenge_card,
                    &password_digest(&card.card_id(), password),
                ),
                &offer.signature,
            )
            .map_err(|_| TerminalError::BadCardSignature)?;
        Ok(PasswordVerified {
            card: session.card.clone(),
            expiry: session.status.expiry,
            services_before: session.status.services_recorded,
            _proof: CardPasswordSignature(()),
        })
    }

    /// Fig. 17, after the service: M = (V, D, IDT, sequence) to the card, stored in doubt
    /// first; the card's SU(M * IDU) verified and kept for the center.
    pub fn record_service(
        &mut self,
        reader: &mut impl CardReader,
        verified: PasswordVerified,
        amount: Amount,
    ) -> Result<ServiceRecorded, TerminalError> {
        if amount == Amount::ZERO {
            return Err(TerminalError::Amount(
                "a service charge must be positive".into(),
            ));
        }
        let today = self.clock.today();
        if verified.expiry < today {
            return Err(TerminalError::CreditExpired {
                expiry: verified.expiry,
                today,
            });
        }
        let service_number =
            verified
                .services_before
                .checked_add(1)
                .ok_or(TerminalError::Mismatch(
                    "the card's service numbers are exhausted",
                ))?;
        let sequence = self.store.next_sequence()?;
        let card_id = verified.card.card_id();
        self.store.record_service(&ServiceEntry {
            sequence,
            card_id,
            amount,
            date: today,
            service_number,
            status: ServiceStatus::InDoubt,
            card_signature: None,
            uploaded: false,
        })?;
        let command = RecordService {
            amount,
            date: today,
            terminal_sequence: sequence,
        };
        let in_doubt = TerminalError::ServiceInDoubt { sequence };
        let response = match reader.exchange(&proprietary(ins::RECORD_SERVICE, command.encode())) {
            Ok(response) => response,
            Err(
                ReaderError::CardRemoved
                | ReaderError::MalformedResponse(_)
                | ReaderError::Transport(_),
            ) => return Err(in_doubt),
            Err(other) => return Err(other.into()),
        };
        if !response.sw.is_success() {
            // The card refused: by its rule it recorded nothing.
            self.store.settle_service(sequence, None)?;
            return Err(TerminalError::Card {
                command: "RECORD SERVICE",
                sw: response.sw,
            });
        }
        let Ok(answer) = ServiceAnswer::decode(&response.data) else {
            return Err(in_doubt);
        };
        let record = ServiceRecord {
            card_id,
            terminal_id: self.sam.device_id(),
            terminal_sequence: sequence,
            service_number: answer.service_number,
            amount,
            date: today,
            card_signature: answer.signature,
        };
        // A number or signature that does not fit leaves the record in doubt; the card's
        // service log settles it.
        if answer.service_number != service_number {
            return Err(in_doubt);
        }
        verified
            .card
            .public_key()
            .verify(&record.signed_message(), &record.card_signature)
            .map_err(|_| TerminalError::BadCardSignature)?;
        self.store
            .settle_service(sequence, Some(answer.signature))?;
        Ok(ServiceRecorded { record })
    }

    /// The whole credit use at the terminal: insertion, password, and the record of a service
    /// charged `amount`.
    pub fn credit_service(
        &mut self,
        reader: &mut impl CardReader,
        password: &Password,
        amount: Amount,
    ) -> Result<ServiceRecorded, TerminalError> {
        let session = self.open_credit(reader)?;
        let verified = self.verify_password(reader, &session, password)?;
        self.record_service(reader, verified, amount)
    }

    /// Settles the services this terminal holds in doubt for `card` from the card's service
    /// count and signed service log: a record the card signed becomes `Signed`, one it never
    /// made becomes `Cancelled`; a card behind the record, or whose log no longer holds it,
    /// decides nothing.
    pub fn settle_services(
        &mut self,
        reader: &mut impl CardReader,
        card: &VerifiedCard,
    ) -> Result<Vec<(u32, ServiceStatus)>, TerminalError> {
        let pending = self.store.services_in_doubt_for_card(&card.card_id())?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let status = self.read_credit(reader, card)?;
        let data = run(
            reader,
            "READ SERVICE LOG",
            &proprietary(ins::READ_SERVICE_LOG, Vec::new()),
        )?;
        let log =
            ServiceLogEntry::decode_list(&data).map_err(|error| TerminalError::Malformed {
                message: "service log",
                error,
            })?;
        let terminal_id = self.sam.device_id();
        let mut settled = Vec::new();
        for service in pending {
            let number = service.service_number;
            let outcome = if status.services_recorded < number.wrapping_sub(1) {
                None
            } else if status.services_recorded == number.wrapping_sub(1) {
                // The card's session ended at SELECT: this record can never be signed now.
                Some(None)
            } else {
                log.iter()
                    .find(|entry| entry.service_number == number)
                    .map(|entry| {
                        let record = entry.record(card.card_id());
                        let ours = entry.terminal_id == terminal_id
                            && entry.terminal_sequence == service.sequence
                            && entry.amount == service.amount
                            && entry.date == service.date
                            && card
                                .public_key()
                                .verify(&record.signed_message(), &entry.signature)
                                .is_ok();
                        ours.then_some(entry.signature)
                    })
            };
            if let Some(signature) = outcome {
                self.store.settle_service(service.sequence, signature)?;
                let status = if signature.is_some() {
                    ServiceStatus::Signed
                } else {
                    ServiceStatus::Cancelled
                };
                settled.push((service.sequence, status));
            }
        }
        Ok(settled)
    }

    /// Sends every signed service record the center has not acknowledged, in batches; a
    /// failure leaves the rest for next time, and a retried batch is not counted twice.
    pub fn upload_service_records(
        &mut self,
        link: &mut impl ServiceLink,
    ) -> Result<ServiceReceipt, TerminalError> {
        let terminal_id = self.sam.device_id();
        let mut total = ServiceReceipt::default();
        loop {
            let services = self.store.pending_service_uploads(SERVICE_BATCH_MAX)?;
            if services.is_empty() {
                return Ok(total);
            }
            let upload = ServiceUpload {
                terminal_id,
                records: services
                    .iter()
                    .filter_map(|service| service.record(terminal_id))
                    .collect(),
            };
            let receipt = link.upload_service_records(&upload)?;
            let answered: Vec<u32> = services.iter().map(|service| service.sequence).collect();
            self.store.mark_services_uploaded(&answered)?;
            total.stored += receipt.stored;
            total.duplicates += receipt.duplicates;
            total.refused.extend(receipt.refused);
        }
    }
}
