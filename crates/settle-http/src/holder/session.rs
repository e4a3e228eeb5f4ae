//! The steps every update shares, card and settlement service together.

use serde::Serialize;
use valuecard_core::apdu::Command;
use valuecard_core::messages::online::{
    ins, InitializeUpdateResponse, OnlineFci, SettlementId, ONLINE_AID,
};
use valuecard_core::StatusWord;
use valuecard_reader::CardReader;

use super::card::{card_answer, exchange, online, read_card};
use super::{hex_of, open_update, resolution, settlement_id_of, Holder, HolderError, Resolution};
use crate::wire::{
    AuthenticatedBody, CardAnswerBody, KeyInstallationBody, KeyRequestBody, OfferBody, OutcomeBody,
    SealedBody, StartedBody,
};

impl Holder {
    /// Selects the online application, installing KC first if the card has none.
    pub(super) fn select_online(
        &self,
        reader: &mut dyn CardReader,
    ) -> Result<OnlineFci, HolderError> {
        let select = |reader: &mut dyn CardReader| -> Result<OnlineFci, HolderError> {
            let data = exchange(
                reader,
                "SELECT",
                &Command::new(0x00, 0xA4, 0x04, 0x00)
                    .with_data(ONLINE_AID.to_vec())
                    .with_le(256),
            )?;
            card_answer("SELECT", OnlineFci::decode(&data))
        };
        let fci = select(reader)?;
        if fci.key_version.is_some() {
            return Ok(fci);
        }
        let card = read_card(reader)?;
        let certificate = card.certificate.ok_or(HolderError::CardRefused {
            command: "SELECT",
            status: StatusWord(0x6985),
        })?;
        let installation: KeyInstallationBody = self.settlement.post(
            "/v1/cards/key",
            &KeyRequestBody {
                card_certificate: hex::encode(certificate.encode()),
            },
        )?;
        let data = hex_of(
            "the settlement service",
            "installation",
            &installation.installation,
        )?;
        select(reader)?;
        online(reader, "INSTALL KEY", ins::INSTALL_KEY, 0, data)?;
        select(reader)
    }

    /// ST10-ST13: INITIALIZE UPDATE, EXTERNAL AUTHENTICATE and BRC through the card; gives
    /// the card's sealed BI and the log token.
    pub(super) fn authenticate(
        &self,
        reader: &mut dyn CardReader,
        base: &str,
        started: &StartedBody,
    ) -> Result<(Vec<u8>, String), HolderError> {
        let service = "the settlement service";
        let initialize = hex_of(service, "initialize_update", &started.initialize_update)?;
        let answer = online(
            reader,
            "INITIALIZE UPDATE",
            ins::INITIALIZE_UPDATE,
            0,
            initialize,
        )?;
        card_answer(
            "INITIALIZE UPDATE",
            InitializeUpdateResponse::decode(&answer),
        )?;
        let authenticated: AuthenticatedBody = self.settlement.post(
            &format!("{base}/authenticate"),
            &CardAnswerBody {
                card_answer: hex::encode(answer),
            },
        )?;
        let external = hex_of(
            service,
            "external_authenticate",
            &authenticated.external_authenticate,
        )?;
        online(
            reader,
            "EXTERNAL AUTHENTICATE",
            ins::EXTERNAL_AUTHENTICATE,
            0,
            external,
        )?;
        let brc = hex_of(service, "balance_request", &authenticated.balance_request)?;
        let sealed_info = online(reader, "READ BALANCE", ins::READ_BALANCE, 0, brc)?;
        Ok((sealed_info, authenticated.log_token))
    }

    /// ST8-ST14 for a payment or a charge: starts the update (an earlier update of the card
    /// left unresolved is resolved with the card first), authenticates with the card, and
    /// gives the offer with the sealed update and the log token.
    pub(super) fn start_and_offer<B: Serialize>(
        &self,
        reader: &mut dyn CardReader,
        path: &str,
        request: &B,
    ) -> Result<(SettlementId, OfferBody, Vec<u8>, String), HolderError> {
        let started: StartedBody = match self.settlement.post(path, request) {
            Err(HolderError::Service(problem)) if open_update(&problem).is_some() => {
                let open = open_update(&problem).unwrap_or_default();
                self.resolve(reader, &settlement_id_of(&open)?)?;
                self.select_online(reader)?;
                self.settlement.post(path, request)?
            }
            other => other?,
        };
        let settlement_id = settlement_id_of(&started.settlement_id)?;
        let base = format!("/v1/updates/{}", started.settlement_id);
        let (sealed_info, log_token) = self.authenticate(reader, &base, &started)?;
        let offer: OfferBody = self.settlement.post(
            &format!("{base}/offer"),
            &SealedBody {
                sealed: hex::encode(sealed_info),
            },
        )?;
        let update = hex_of("the settlement service", "update", &offer.update)?;
        Ok((settlement_id, offer, update, log_token))
    }

    /// ST16-ST18: the sealed update to the card (SETTLE or CHARGE), its PCN to the
    /// settlement service, whose outcome comes back.
    pub(super) fn apply(
        &self,
        reader: &mut dyn CardReader,
        command: &'static str,
        instruction: u8,
        update: &[u8],
        settlement_id: &SettlementId,
    ) -> Result<OutcomeBody, HolderError> {
        let pcn = online(reader, command, instruction, 0, update.to_vec())?;
        self.settlement.post(
            &format!("/v1/updates/{}/complete", hex::encode(settlement_id)),
            &SealedBody {
                sealed: hex::encode(pcn),
            },
        )
    }

    /// Resolves the update `settlement_id` with the card (a new session: GET COMPLETION):
    /// completed if the card applied it, voided otherwise; also how a holder cancels an
    /// offer at ST15.
    pub fn resolve(
        &self,
        reader: &mut dyn CardReader,
        settlement_id: &SettlementId,
    ) -> Result<(Resolution, OutcomeBody), HolderError> {
        let base = format!("/v1/updates/{}/recover", hex::encode(settlement_id));
        let begun = self.settlement.post_raw(&base, &serde_json::json!({}))?;
        if let Ok(outcome) = serde_json::from_slice::<OutcomeBody>(&begun) {
            return Ok((resolution(&outcome)?, outcome));
        }
        let started: StartedBody = self.settlement.decode(&begun)?;
        self.select_online(reader)?;
        let (sealed_info, _) = self.authenticate(reader, &base, &started)?;
        let query: SealedBody = self.settlement.post(
            &format!("{base}/query"),
            &SealedBody {
                sealed: hex::encode(sealed_info),
            },
        )?;
        let status = online(
            reader,
            "GET COMPLETION",
            ins::GET_COMPLETION,
            0,
            hex_of("the settlement service", "sealed", &query.sealed)?,
        )?;
        let outcome: OutcomeBody = self.settlement.post(
            &format!("{base}/resolve"),
            &SealedBody {
                sealed: hex::encode(status),
            },
        )?;
        Ok((resolution(&outcome)?, outcome))
    }
}
