//! The upload (S5-S7): the old chip's area exported under its temporary key and sealed by
//! the transfer SAM into the move's copy (the purse's with the old card's signature checked).

use rand_core::CryptoRngCore;
use valuecard_center::sql::Database;
use valuecard_core::cert::Certificate;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{ins, AreaContent, ExportRequest, ExportedArea, MoveId};
use valuecard_core::time::Date;

use super::conversation::{answer, Awaiting, Direction, Exchange, Resumed, Turn};
use super::{Provider, ProviderError};
use crate::sam::verify_card_certificate;

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

    fn upload_step(
        &self,
        db: &mut Database,
        move_id: &MoveId,
        source: &CardId,
        response: &[u8],
        now: i64,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Exchange, ProviderError> {
        let (mut channel, awaiting, carry) =
            match self.resume(db, move_id, source, Direction::Upload, response)? {
                Resumed::Sent(exchange) => return Ok(exchange),
                Resumed::Secured {
                    channel,
                    awaiting,
                    carry,
                } => (channel, awaiting, carry),
            };
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
}
