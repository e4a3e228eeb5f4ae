//! The provider's two conversations with a chip, as explicit steps kept in
//! `provider_sessions` between APDUs. Each call takes the chip's answer to the APDU the
//! previous call gave (none to begin) and gives the next APDU or the end.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use valuecard_center::sql::{Database, Executor, Value};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::cert::Certificate;
use valuecard_core::crypto::{random_array, Signature};
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::services::{
    ins, AreaContent, AreaReadout, ChannelBinding, ExportRequest, ExportedArea, ImportReceipt,
    ImportRequest, KeyState, MigrationRecord, MoveId, OpenService, OpenServiceResponse,
    ServiceAuthenticate, ServiceChannel, CLA_SERVICES,
};
use valuecard_core::time::Date;

use super::{card_id, Provider, ProviderError};
use crate::sam::verify_card_certificate;

/// One call of a conversation: the move, the chip, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    pub move_id: &'a MoveId,
    pub card: &'a CardId,
    /// Seconds since the epoch, for the provider's books.
    pub now: i64,
    /// The date a purse record carries.
    pub today: Date,
}

/// What the provider asks of the chip next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Send this command APDU to the chip and bring back its answer.
    Apdu(Vec<u8>),
    /// The upload or download of this service is done.
    Done,
}

/// Where a conversation stands, kept as JSON between APDUs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum Step {
    /// OPEN SERVICE sent with this host challenge.
    Opening {
        host: String,
        /// The old chip's certificate (hex), for a purse upload's signature.
        certificate: Option<String>,
    },
    /// EXTERNAL AUTHENTICATE sent, or a secured command: the session and its counters.
    Secured {
        host: String,
        card: String,
        to_card: u32,
        to_host: u32,
        /// What the last secured command sent was.
        awaiting: Awaiting,
        #[serde(flatten)]
        carry: Carry,
    },
}

/// What a conversation carries from step to step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Carry {
    /// The old chip's certificate (hex), for a purse upload's signature.
    #[serde(default)]
    certificate: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Awaiting {
    Authentication,
    Export,
    ReadPurse,
    Import,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

fn command(ins: u8, data: Vec<u8>) -> Vec<u8> {
    Command::new(CLA_SERVICES, ins, 0, 0)
        .with_data(data)
        .with_le(65_536)
        .encode()
}

fn answer(bytes: &[u8]) -> Result<Vec<u8>, ProviderError> {
    let response =
        Response::parse(bytes).map_err(|_| ProviderError::Answer("not an APDU response"))?;
    if !response.sw.is_success() {
        return Err(ProviderError::Card(response.sw));
    }
    Ok(response.data)
}

fn challenge(text: &str) -> Result<Challenge, ProviderError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| Challenge::try_from(bytes).ok())
        .ok_or(ProviderError::OutOfOrder("a stored step is malformed"))
}

impl Provider {
    /// S5-S7 for this service of the old chip `turn.card`: call with no answer to begin
    /// (the chip's services application selected), then with each answer. The purse's
    /// upload needs the old chip's certificate.
    pub fn upload(
        &self,
        db: &mut Database,
        turn: Turn<'_>,
        source_certificate: Option<&Certificate>,
        response: Option<&[u8]>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Exchange, ProviderError> {
        let (move_id, source) = (turn.move_id, turn.card);
        let Some(response) = response else {
            let certificate = source_certificate.map(|c| hex::encode(c.encode()));
            return self.begin(db, move_id, source, Direction::Upload, certificate, rng);
        };
        let result = self.upload_step(db, move_id, source, response, turn.now, rng);
        if result.is_err() {
            self.forget(db, move_id, Direction::Upload)?;
        }
        result
    }

    /// S12-S14 for this service into the new chip `turn.card`: call with no answer to
    /// begin, then with each answer. The copy is bound to the first destination that begins.
    pub fn download(
        &self,
        db: &mut Database,
        turn: Turn<'_>,
        response: Option<&[u8]>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Exchange, ProviderError> {
        let (move_id, destination) = (turn.move_id, turn.card);
        let Some(response) = response else {
            self.bind_destination(db, move_id, destination)?;
            return self.begin(db, move_id, destination, Direction::Download, None, rng);
        };
        let result = self.download_step(db, move_id, destination, response, turn.today, turn.now);
        if result.is_err() {
            self.forget(db, move_id, Direction::Download)?;
        }
        result
    }

    fn begin(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        card: &CardId,
        direction: Direction,
        certificate: Option<String>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Exchange, ProviderError> {
        let host: Challenge = random_array(&mut crate::sam::RngRef(rng));
        let step = Step::Opening {
            host: hex::encode(host),
            certificate,
        };
        self.store_step(db, move_id, card, direction, &step)?;
        Ok(Exchange::Apdu(command(
            ins::OPEN_SERVICE,
            OpenService {
                service: self.service,
                host_challenge: host,
            }
            .encode(),
        )))
    }

    fn store_step(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        card: &CardId,
        direction: Direction,
        step: &Step,
    ) -> Result<(), ProviderError> {
        let json = serde_json::to_string(step)
            .map_err(|_| ProviderError::OutOfOrder("a step that cannot be stored"))?;
        let params = [
            move_id.to_vec().into(),
            i64::from(self.service.0).into(),
            direction.name().into(),
            card.as_bytes().to_vec().into(),
            Value::Text(json),
        ];
        db.transaction(|tx| {
            tx.execute(
                "DELETE FROM provider_sessions WHERE move_id = $1 AND service = $2 \
                 AND direction = $3",
                &params[..3],
            )?;
            tx.execute(
                "INSERT INTO provider_sessions (move_id, service, direction, card_id, step) \
                 VALUES ($1, $2, $3, $4, $5)",
                &params,
            )
        })?;
        Ok(())
    }

    fn load_step(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        card: &CardId,
        direction: Direction,
    ) -> Result<Step, ProviderError> {
        let row = db
            .query_optional(
                "SELECT card_id, step FROM provider_sessions WHERE move_id = $1 \
                 AND service = $2 AND direction = $3",
                &[
                    move_id.to_vec().into(),
                    i64::from(self.service.0).into(),
                    direction.name().into(),
                ],
            )?
            .ok_or(ProviderError::OutOfOrder("no conversation in progress"))?;
        if card_id(&row.bytes(0)?)? != *card {
            return Err(ProviderError::OutOfOrder(
                "the conversation is with another chip",
            ));
        }
        serde_json::from_str(&row.text(1)?)
            .map_err(|_| ProviderError::OutOfOrder("a stored step is malformed"))
    }

    fn forget(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        direction: Direction,
    ) -> Result<(), ProviderError> {
        db.execute(
            "DELETE FROM provider_sessions WHERE move_id = $1 AND service = $2 AND direction = $3",
            &[
                move_id.to_vec().into(),
                i64::from(self.service.0).into(),
                direction.name().into(),
            ],
        )?;
        Ok(())
    }

    /// The first two answers of either conversation: OPEN SERVICE's (the chip proves the
    /// temporary key; the transfer SAM answers with its cryptogram), then EXTERNAL
    /// AUTHENTICATE's. Gives the session and what to send next, or `None` when the step is
    /// past authentication.
    fn authenticate(
        &self,
        step: &Step,
        card: &CardId,
        response: &[u8],
    ) -> Result<Option<(Step, Vec<u8>)>, ProviderError> {
        let Step::Opening { host, certificate } = step else {
            return Ok(None);
        };
        let data = answer(response)?;
        let opened = OpenServiceResponse::decode(&data)
            .map_err(|_| ProviderError::Answer("OPEN SERVICE answer"))?;
        if opened.key_state != KeyState::Temporary {
            return Err(ProviderError::Answer("the area is not on temporary keys"));
        }
        let binding = ChannelBinding {
            card_id: *card,
            service: self.service,
            key_state: KeyState::Temporary,
            host_challenge: challenge(host)?,
            card_challenge: opened.card_challenge,
        };
        let (channel, host_cryptogram) = self
            .transfer
            .open_channel(binding, &opened.card_cryptogram)?;
        let (to_card, to_host) = channel.counters();
        Ok(Some((
            Step::Secured {
                host: host.clone(),
                card: hex::encode(opened.card_challenge),
                to_card,
                to_host,
                awaiting: Awaiting::Authentication,
                carry: Carry {
                    certificate: certificate.clone(),
                },
            },
            command(
                ins::EXTERNAL_AUTHENTICATE,
                ServiceAuthenticate { host_cryptogram }.encode(),
            ),
        )))
    }

    fn channel(
        &self,
        card: &CardId,
        host: &str,
        card_challenge: &str,
        counters: (u32, u32),
    ) -> Result<ServiceChannel, ProviderError> {
        Ok(self.transfer.resume_channel(
            ChannelBinding {
                card_id: *card,
                service: self.service,
                key_state: KeyState::Temporary,
                host_challenge: challenge(host)?,
                card_challenge: challenge(card_challenge)?,
            },
            counters,
        )?)
    }

    /// Seals `plaintext` for `instruction`, stores the step that awaits its answer, and
    /// gives the APDU.
    #[allow(clippy::too_many_arguments)]
    fn send_secured(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        card: &CardId,
        direction: Direction,
        mut channel: ServiceChannel,
        awaiting: Awaiting,
        instruction: u8,
        plaintext: &[u8],
        carry: Carry,
    ) -> Result<Exchange, ProviderError> {
        let sealed = channel
            .seal(instruction, plaintext)
            .map_err(crate::sam::SamError::from)?;
        let binding = *channel.binding();
        let (to_card, to_host) = channel.counters();
        self.store_step(
            db,
            move_id,
            card,
            direction,
            &Step::Secured {
                host: hex::encode(binding.host_challenge),
                card: hex::encode(binding.card_challenge),
                to_card,
                to_host,
                awaiting,
                carry,
            },
        )?;
        Ok(Exchange::Apdu(command(instruction, sealed)))
    }

    fn upload_step(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        source: &CardId,
        response: &[u8],
        now: i64,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Exchange, ProviderError> {
        let step = self.load_step(db, move_id, source, Direction::Upload)?;
        if let Some((next, apdu)) = self.authenticate(&step, source, response)? {
            self.store_step(db, move_id, source, Direction::Upload, &next)?;
            return Ok(Exchange::Apdu(apdu));
        }
        let Step::Secured {
            host,
            card,
            to_card,
            to_host,
            awaiting,
            carry,
        } = step
        else {
            return Err(ProviderError::OutOfOrder("upload"));
        };
        let mut channel = self.channel(source, &host, &card, (to_card, to_host))?;
        match awaiting {
            Awaiting::Authentication => {
                answer(response)?;
                self.send_secured(
                    db,
                    move_id,
                    source,
                    Direction::Upload,
                    channel,
                    Awaiting::Export,
                    ins::EXPORT_AREA,
                    &ExportRequest { move_id: *move_id }.encode(),
                    carry,
                )
            }
            Awaiting::Export => {
                let sealed = answer(response)?;
                let plain = channel
                    .open(ins::EXPORT_AREA, &sealed)
                    .map_err(crate::sam::SamError::from)?;
                let exported = ExportedArea::decode(&plain)
                    .map_err(|_| ProviderError::Answer("EXPORT AREA answer"))?;
                if exported.move_id != *move_id
                    || exported.card_id != *source
                    || exported.service != self.service
                    || exported.content.kind() != self.kind
                {
                    return Err(ProviderError::Answer(
                        "an export of another move, chip or service",
                    ));
                }
                if let AreaContent::Purse(value) = &exported.content {
                    self.check_purse_export(
                        source,
                        carry.certificate.as_deref(),
                        &exported,
                        value,
                    )?;
                }
                self.keep_copy(db, move_id, source, &plain, &exported.content, now, rng)?;
                self.forget(db, move_id, Direction::Upload)?;
                Ok(Exchange::Done)
            }
            _ => Err(ProviderError::OutOfOrder("upload")),
        }
    }

    /// The old card signed its purse's export with its own key: checked against its
    /// certificate under the center's root, before the copy is kept.
    fn check_purse_export(
        &self,
        source: &CardId,
        certificate: Option<&str>,
        exported: &ExportedArea,
        value: &valuecard_core::messages::services::PurseValue,
    ) -> Result<(), ProviderError> {
        let certificate = certificate
            .and_then(|text| hex::decode(text).ok())
            .and_then(|bytes| Certificate::decode(&bytes).ok())
            .ok_or(ProviderError::OutOfOrder(
                "a purse upload needs the card's certificate",
            ))?;
        // Checked without its expiry: a card whose certificate ran out still moves its
        // value to its replacement.
        let card = verify_card_certificate(self.anchor(), &certificate, Date(0))?;
        let signature = exported
            .card_signature
            .ok_or(ProviderError::Answer("an unsigned purse export"))?;
        if card.subject().0 != source.0 || value.card_id != *source {
            return Err(ProviderError::Answer("a purse export of another card"));
        }
        card.signing_key()
            .verify(
                &ExportedArea::purse_signed_message(
                    &exported.move_id,
                    source,
                    value.balance,
                    value.counter,
                ),
                &signature,
            )
            .map_err(|_| ProviderError::Answer("the card's export signature does not verify"))
    }

    /// Seals the exported area into the copy; the same content again for the same move is
    /// kept once, another chip's service copied for a second live move is refused.
    #[allow(clippy::too_many_arguments)]
    fn keep_copy(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        source: &CardId,
        exported: &[u8],
        content: &AreaContent,
        now: i64,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(), ProviderError> {
        let sealed = self
            .transfer
            .seal_copy(move_id, self.service, source, exported, rng)?;
        let digest = content.digest();
        let service = i64::from(self.service.0);
        db.transaction(|tx| {
            let existing = tx.query_optional(
                "SELECT digest, state FROM provider_copies WHERE move_id = $1 AND service = $2",
                &[move_id.to_vec().into(), service.into()],
            )?;
            if let Some(row) = existing {
                return Ok(if row.bytes(0)? == digest && row.text(1)? == "uploaded" {
                    Ok(())
                } else {
                    Err(ProviderError::AlreadyUploaded)
                });
            }
            let live = tx.query_optional(
                "SELECT move_id FROM provider_copies WHERE source = $1 AND service = $2 \
                 AND state <> 'discarded'",
                &[source.as_bytes().to_vec().into(), service.into()],
            )?;
            if live.is_some() {
                return Ok(Err(ProviderError::AlreadyUploaded));
            }
            tx.execute(
                "INSERT INTO provider_copies (move_id, service, source, digest, sealed_copy, \
                 state, uploaded_on) VALUES ($1, $2, $3, $4, $5, 'uploaded', $6)",
                &[
                    move_id.to_vec().into(),
                    service.into(),
                    source.as_bytes().to_vec().into(),
                    digest.to_vec().into(),
                    sealed.clone().into(),
                    now.into(),
                ],
            )?;
            Ok(Ok(()))
        })?
    }

    /// The copy goes to one destination only: the first that begins a download binds it.
    fn bind_destination(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        destination: &CardId,
    ) -> Result<(), ProviderError> {
        let service = i64::from(self.service.0);
        db.transaction(|tx| {
            let row = tx.query_optional(
                "SELECT source, destination, state FROM provider_copies \
                 WHERE move_id = $1 AND service = $2",
                &[move_id.to_vec().into(), service.into()],
            )?;
            let Some(row) = row else {
                return Ok(Err(ProviderError::NoCopy));
            };
            if row.text(2)? != "uploaded" && row.text(2)? != "downloaded" {
                return Ok(Err(ProviderError::NoCopy));
            }
            if card_id(&row.bytes(0)?)? == *destination {
                return Ok(Err(ProviderError::WrongDestination));
            }
            match row.optional_bytes(1)? {
                Some(bound) if card_id(&bound)? != *destination => {
                    Ok(Err(ProviderError::WrongDestination))
                }
                Some(_) => Ok(Ok(())),
                None => {
                    tx.execute(
                        "UPDATE provider_copies SET destination = $3 WHERE move_id = $1 \
                         AND service = $2 AND destination IS NULL",
                        &[
                            move_id.to_vec().into(),
                            service.into(),
                            destination.as_bytes().to_vec().into(),
                        ],
                    )?;
                    Ok(Ok(()))
                }
            }
        })?
    }

    /// The copy's source and its content, opened by the transfer SAM.
    fn open_copy(
        &self,
        db: &mut Database,
        move_id: &MoveId,
    ) -> Result<(CardId, ExportedArea, [u8; 32]), ProviderError> {
        let row = db
            .query_optional(
                "SELECT source, sealed_copy, digest FROM provider_copies \
                 WHERE move_id = $1 AND service = $2",
                &[move_id.to_vec().into(), i64::from(self.service.0).into()],
            )?
            .ok_or(ProviderError::NoCopy)?;
        let source = card_id(&row.bytes(0)?)?;
        let sealed = row.optional_bytes(1)?.ok_or(ProviderError::NoCopy)?;
        let digest: [u8; 32] = row
            .bytes(2)?
            .try_into()
            .map_err(|_| ProviderError::OutOfOrder("a stored digest is malformed"))?;
        let plain = self
            .transfer
            .open_copy(move_id, self.service, &source, &sealed)?;
        let exported = ExportedArea::decode(&plain)
            .map_err(|_| ProviderError::OutOfOrder("a kept copy is malformed"))?;
        Ok((source, exported, digest))
    }

    fn download_step(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        destination: &CardId,
        response: &[u8],
        today: Date,
        now: i64,
    ) -> Result<Exchange, ProviderError> {
        let step = self.load_step(db, move_id, destination, Direction::Download)?;
        if let Some((next, apdu)) = self.authenticate(&step, destination, response)? {
            self.store_step(db, move_id, destination, Direction::Download, &next)?;
            return Ok(Exchange::Apdu(apdu));
        }
        let Step::Secured {
            host,
            card,
            to_card,
            to_host,
            awaiting,
            ..
        } = step
        else {
            return Err(ProviderError::OutOfOrder("download"));
        };
        let mut channel = self.channel(destination, &host, &card, (to_card, to_host))?;
        let (source, exported, digest) = self.open_copy(db, move_id)?;
        match awaiting {
            Awaiting::Authentication => {
                answer(response)?;
                if matches!(exported.content, AreaContent::Purse(_)) {
                    return self.send_secured(
                        db,
                        move_id,
                        destination,
                        Direction::Download,
                        channel,
                        Awaiting::ReadPurse,
                        ins::READ_AREA,
                        &[],
                        Carry::default(),
                    );
                }
                let import = ImportRequest {
                    move_id: *move_id,
                    source,
                    content: exported.content,
                    record: None,
                };
                self.send_import(db, destination, channel, &import)
            }
            Awaiting::ReadPurse => {
                let sealed = answer(response)?;
                let readout = AreaReadout::decode(
                    &channel
                        .open(ins::READ_AREA, &sealed)
                        .map_err(crate::sam::SamError::from)?,
                )
                .map_err(|_| ProviderError::Answer("READ AREA answer"))?;
                let (AreaContent::Purse(moved), AreaContent::Purse(here)) =
                    (&exported.content, &readout.content)
                else {
                    return Err(ProviderError::Answer("not a purse"));
                };
                if readout.card_id != *destination || here.card_id != *destination {
                    return Err(ProviderError::Answer("a readout of another chip"));
                }
                if let Some((imported, imported_digest)) = readout.imported {
                    // The chip took this move's import already (its receipt was lost): the
                    // chip's own sealed word for it stands in for the receipt.
                    if imported != *move_id || imported_digest != digest {
                        return Err(ProviderError::Answer("the purse took another move's value"));
                    }
                    self.mark_downloaded(db, move_id, destination, &exported, now)?;
                    return Ok(Exchange::Done);
                }
                let binding = *channel.binding();
                let signed =
                    self.sign_purse_record(db, move_id, destination, &binding, moved, here, today)?;
                let import = ImportRequest {
                    move_id: *move_id,
                    source,
                    content: exported.content.clone(),
                    record: Some(signed),
                };
                self.send_import(db, destination, channel, &import)
            }
            Awaiting::Import => {
                let sealed = answer(response)?;
                let receipt = ImportReceipt::decode(
                    &channel
                        .open(ins::IMPORT_AREA, &sealed)
                        .map_err(crate::sam::SamError::from)?,
                )
                .map_err(|_| ProviderError::Answer("IMPORT AREA answer"))?;
                if receipt.move_id != *move_id
                    || receipt.card_id != *destination
                    || receipt.service != self.service
                    || receipt.digest != digest
                {
                    return Err(ProviderError::Answer("a receipt for another import"));
                }
                self.mark_downloaded(db, move_id, destination, &exported, now)?;
                Ok(Exchange::Done)
            }
            Awaiting::Export => Err(ProviderError::OutOfOrder("download")),
        }
    }

    /// S14: IMPORT AREA with the copy's content (and, for the purse, its record).
    fn send_import(
        &self,
        db: &mut Database,
        destination: &CardId,
        channel: ServiceChannel,
        import: &ImportRequest,
    ) -> Result<Exchange, ProviderError> {
        self.send_secured(
            db,
            &import.move_id,
            destination,
            Direction::Download,
            channel,
            Awaiting::Import,
            ins::IMPORT_AREA,
            &import.encode(),
            Carry::default(),
        )
    }

    /// The record that credits the moved value to the new chip's purse, for exactly the
    /// state the chip just showed in this session. The copy keeps the latest record signed:
    /// the chip applies at most one, and once it has, it says so and no other is signed.
    #[allow(clippy::too_many_arguments)]
    fn sign_purse_record(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        destination: &CardId,
        binding: &ChannelBinding,
        moved: &valuecard_core::messages::services::PurseValue,
        here: &valuecard_core::messages::services::PurseValue,
        today: Date,
    ) -> Result<valuecard_core::messages::purse::UsageRecord, ProviderError> {
        let counter = here
            .counter
            .checked_add(1)
            .ok_or(ProviderError::Answer("the purse's counter is exhausted"))?;
        let balance_after = here
            .balance
            .checked_add(moved.balance)
            .map_err(|_| ProviderError::Answer("the new purse cannot hold the moved value"))?;
        let writer = self.transfer.certificate().subject();
        let service = i64::from(self.service.0);
        let signed =
            db.transaction(|tx| {
                let record = MigrationRecord {
                    card_id: *destination,
                    writer,
                    challenge_host: binding.host_challenge,
                    challenge_card: binding.card_challenge,
                    counter,
                    amount: moved.balance,
                    balance_after,
                    writer_sequence: self.next_sequence(tx)?,
                    date: today,
                };
                let signature: Signature = match self.transfer.sign_migration_record(&record) {
                    Ok(signature) => signature,
                    Err(error) => return Ok(Err(error)),
                };
                let usage = record.usage_record(signature);
                tx.execute(
                "UPDATE provider_copies SET purse_record = $3 WHERE move_id = $1 AND service = $2",
                &[move_id.to_vec().into(), service.into(), usage.encode().into()],
            )?;
                Ok(Ok(usage))
            })??;
        Ok(signed)
    }

    fn mark_downloaded(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        destination: &CardId,
        exported: &ExportedArea,
        now: i64,
    ) -> Result<(), ProviderError> {
        let service = i64::from(self.service.0);
        db.transaction(|tx| {
            tx.execute(
                "UPDATE provider_copies SET state = 'downloaded', downloaded_on = $3 \
                 WHERE move_id = $1 AND service = $2 AND state = 'uploaded'",
                &[move_id.to_vec().into(), service.into(), now.into()],
            )?;
            tx.execute(
                "DELETE FROM provider_sessions WHERE move_id = $1 AND service = $2 \
                 AND direction = 'download'",
                &[move_id.to_vec().into(), service.into()],
            )?;
            if let (AreaContent::Purse(value), Some(signature)) =
                (&exported.content, &exported.card_signature)
            {
                let present = tx.query_optional(
                    "SELECT 1 FROM provider_purse_moves WHERE move_id = $1",
                    &[move_id.to_vec().into()],
                )?;
                let record = tx
                    .query_one(
                        "SELECT purse_record FROM provider_copies WHERE move_id = $1 \
                         AND service = $2",
                        &[move_id.to_vec().into(), service.into()],
                    )?
                    .optional_bytes(0)?
                    .unwrap_or_default();
                if present.is_none() {
                    tx.execute(
                        "INSERT INTO provider_purse_moves (move_id, source, destination, amount, \
                         source_counter, export_signature, record) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            move_id.to_vec().into(),
                            exported.card_id.as_bytes().to_vec().into(),
                            destination.as_bytes().to_vec().into(),
                            value.balance.into(),
                            value.counter.into(),
                            signature.0.to_vec().into(),
                            record.clone().into(),
                        ],
                    )?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }
}
