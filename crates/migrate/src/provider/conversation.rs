//! What the provider's two conversations with a chip share: the steps kept in
//! `provider_sessions` between APDUs, the mutual authentication with the area's temporary
//! key, and the secured commands of the session. Each call takes the chip's answer to the
//! APDU the previous call gave (none to begin) and gives the next APDU or the end.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use valuecard_center::sql::{Database, Executor, Value};
use valuecard_core::apdu::{Command, Response};
use valuecard_core::crypto::random_array;
use valuecard_core::ids::CardId;
use valuecard_core::messages::purse::Challenge;
use valuecard_core::messages::services::{
    ins, ChannelBinding, KeyState, MoveId, OpenService, OpenServiceResponse, ServiceAuthenticate,
    ServiceChannel, CLA_SERVICES,
};
use valuecard_core::time::Date;

use super::{card_id, Provider, ProviderError};

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
pub(super) enum Step {
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
pub(super) struct Carry {
    /// The old chip's certificate (hex), for a purse upload's signature.
    #[serde(default)]
    pub(super) certificate: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Awaiting {
    Authentication,
    Export,
    ReadPurse,
    Import,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
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

pub(super) fn command(ins: u8, data: Vec<u8>) -> Vec<u8> {
    Command::new(CLA_SERVICES, ins, 0, 0)
        .with_data(data)
        .with_le(65_536)
        .encode()
}

pub(super) fn answer(bytes: &[u8]) -> Result<Vec<u8>, ProviderError> {
    let response =
        Response::parse(bytes).map_err(|_| ProviderError::Answer("not an APDU response"))?;
    if !response.sw.is_success() {
        return Err(ProviderError::Card(response.sw));
    }
    Ok(response.data)
}

pub(super) fn challenge(text: &str) -> Result<Challenge, ProviderError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| Challenge::try_from(bytes).ok())
        .ok_or(ProviderError::OutOfOrder("a stored step is malformed"))
}

/// Where [`Provider::resume`] leaves a conversation.
pub(super) enum Resumed {
    /// Authentication went one step further: send this.
    Sent(Exchange),
    /// The session is open: the channel, and what the last secured command awaits.
    Secured {
        channel: ServiceChannel,
        awaiting: Awaiting,
        carry: Carry,
    },
}

impl Provider {
    pub(super) fn begin(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        card: &CardId,
        direction: Direction,
        certificate: Option<String>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Exchange, ProviderError> {
        let host: Challenge = random_array(rng);
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

    pub(super) fn store_step(
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

    pub(super) fn load_step(
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

    pub(super) fn forget(
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

    pub(super) fn channel(
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
    pub(super) fn send_secured(
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

    /// Takes a conversation up again at the chip's `response`: the first two answers (OPEN
    /// SERVICE's, EXTERNAL AUTHENTICATE's) are handled here and give the next APDU; past
    /// them, the session's channel and what the last secured command awaits.
    pub(super) fn resume(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        card: &CardId,
        direction: Direction,
        response: &[u8],
    ) -> Result<Resumed, ProviderError> {
        let step = self.load_step(db, move_id, card, direction)?;
        if let Some((next, apdu)) = self.authenticate(&step, card, response)? {
            self.store_step(db, move_id, card, direction, &next)?;
            return Ok(Resumed::Sent(Exchange::Apdu(apdu)));
        }
        let Step::Secured {
            host,
            card: card_challenge,
            to_card,
            to_host,
            awaiting,
            carry,
        } = step
        else {
            return Err(ProviderError::OutOfOrder(
                "a conversation past its authentication",
            ));
        };
        Ok(Resumed::Secured {
            channel: self.channel(card, &host, &card_challenge, (to_card, to_host))?,
            awaiting,
            carry,
        })
    }
}
