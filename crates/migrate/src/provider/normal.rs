//! The provider's normal use of its area through its normal SAM (a ticket gate, a loyalty
//! terminal) and the issuance of a chip's areas, driven over a card reader. Normal use
//! needs the area on main keys: a chip whose area was switched to temporary keys for a move
//! is refused, because its card cryptogram does not match the main key.

use rand_core::CryptoRngCore;
use valuecard_core::apdu::{Command, Response};
use valuecard_core::crypto::random_array;
use valuecard_core::messages::purse::{Challenge, SelectResponse, CLA_ISO, PURSE_AID};
use valuecard_core::messages::services::{
    ins, AreaContent, AreaReadout, ChannelBinding, KeyState, OpenService, OpenServiceResponse,
    ServiceAuthenticate, ServiceOperation, UpdateArea, CLA_SERVICES, SERVICES_AID,
};
use valuecard_core::time::Date;
use valuecard_core::StatusWord;
use valuecard_reader::{CardReader, ReaderError};

use super::Provider;
use crate::sam::{AdminSam, SamError};

/// Why normal use or issuance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UseError {
    #[error("the chip refused with status {0}")]
    Card(StatusWord),
    /// The area is on temporary keys (moving or moved): normal use is refused.
    #[error("the chip's area is on temporary keys: it is moving or has moved to a new chip")]
    Temporary,
    #[error("the chip's answer does not fit: {0}")]
    Answer(&'static str),
    #[error(transparent)]
    Reader(#[from] ReaderError),
    #[error(transparent)]
    Sam(#[from] SamError),
}

fn exchange(reader: &mut dyn CardReader, command: Command) -> Result<Vec<u8>, UseError> {
    let response: Response = reader.exchange(&command)?;
    if response.sw.is_success() {
        Ok(response.data)
    } else {
        Err(UseError::Card(response.sw))
    }
}

fn select_services(reader: &mut dyn CardReader) -> Result<(), UseError> {
    exchange(
        reader,
        Command::new(CLA_ISO, 0xA4, 0x04, 0x00)
            .with_data(SERVICES_AID.to_vec())
            .with_le(256),
    )
    .map(drop)
}

impl Provider {
    /// Normal use: opens the area with the normal SAM's main key and applies `operation`
    /// (or only reads the area).
    pub fn normal_use(
        &self,
        reader: &mut dyn CardReader,
        operation: Option<&ServiceOperation>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<AreaContent, UseError> {
        let card_id = self.card_id_of(reader)?;
        let host: Challenge = random_array(rng);
        let opened = OpenServiceResponse::decode(&exchange(
            reader,
            Command::new(CLA_SERVICES, ins::OPEN_SERVICE, 0, 0)
                .with_data(
                    OpenService {
                        service: self.service(),
                        host_challenge: host,
                    }
                    .encode(),
                )
                .with_le(256),
        )?)
        .map_err(|_| UseError::Answer("OPEN SERVICE answer"))?;
        if opened.key_state != KeyState::Main {
            return Err(UseError::Temporary);
        }
        let binding = ChannelBinding {
            card_id,
            service: self.service(),
            key_state: KeyState::Main,
            host_challenge: host,
            card_challenge: opened.card_challenge,
        };
        let (mut channel, host_cryptogram) = self
            .normal_sam()
            .open_channel(binding, &opened.card_cryptogram)?;
        exchange(
            reader,
            Command::new(CLA_SERVICES, ins::EXTERNAL_AUTHENTICATE, 0, 0)
                .with_data(ServiceAuthenticate { host_cryptogram }.encode()),
        )?;
        let (instruction, plaintext) = match operation {
            Some(operation) => (
                ins::UPDATE_AREA,
                UpdateArea {
                    operation: operation.clone(),
                }
                .encode(),
            ),
            None => (ins::READ_AREA, Vec::new()),
        };
        let sealed = channel
            .seal(instruction, &plaintext)
            .map_err(SamError::from)?;
        let answer = exchange(
            reader,
            Command::new(CLA_SERVICES, instruction, 0, 0)
                .with_data(sealed)
                .with_le(65_536),
        )?;
        let readout =
            AreaReadout::decode(&channel.open(instruction, &answer).map_err(SamError::from)?)
                .map_err(|_| UseError::Answer("the area's readout"))?;
        if readout.card_id != card_id || readout.service != self.service() {
            return Err(UseError::Answer("a readout of another chip or service"));
        }
        Ok(readout.content)
    }

    /// The chip's card ID, from the services application's FCI.
    fn card_id_of(
        &self,
        reader: &mut dyn CardReader,
    ) -> Result<valuecard_core::ids::CardId, UseError> {
        let fci = exchange(
            reader,
            Command::new(CLA_ISO, 0xA4, 0x04, 0x00)
                .with_data(SERVICES_AID.to_vec())
                .with_le(256),
        )?;
        valuecard_core::messages::services::ServicesFci::decode(&fci)
            .map(|fci| fci.card_id)
            .map_err(|_| UseError::Answer("the services application's FCI"))
    }

    /// Issuance: the administrative SAM formats this provider's area on the chip, on main
    /// keys, with the provider's key packages.
    pub fn issue_area(
        &self,
        admin: &dyn AdminSam,
        reader: &mut dyn CardReader,
        today: Date,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(), UseError> {
        let selected = reader.exchange(
            &Command::new(CLA_ISO, 0xA4, 0x04, 0x00)
                .with_data(PURSE_AID.to_vec())
                .with_le(256),
        )?;
        let selected = SelectResponse::decode(&selected.data)
            .map_err(|_| UseError::Answer("the purse's SELECT answer"))?;
        let (Some(card_id), Some(certificate)) = (selected.card_id, selected.certificate) else {
            return Err(UseError::Answer("the chip is not an issued card"));
        };
        let (main, temporary) = self
            .key_packages(&certificate, today, rng)
            .map_err(|error| match error {
                super::ProviderError::Sam(error) => UseError::Sam(error),
                _ => UseError::Answer("the key packages"),
            })?;
        select_services(reader)?;
        let challenge: Challenge = exchange(
            reader,
            Command::new(CLA_ISO, ins::GET_CHALLENGE, 0, 0).with_le(16),
        )?
        .try_into()
        .map_err(|_| UseError::Answer("GET CHALLENGE answer"))?;
        let format = admin.format_area(
            &card_id,
            &challenge,
            self.format(),
            KeyState::Main,
            main,
            temporary,
        )?;
        exchange(
            reader,
            Command::new(CLA_SERVICES, ins::FORMAT_AREA, 0, 0).with_data(format.encode()),
        )
        .map(drop)
    }
}
