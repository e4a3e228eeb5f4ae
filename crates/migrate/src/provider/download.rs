//! The download (S12-S14): the copy bound to its destination chip, imported under the new
//! area's temporary key (the purse's with the move's record signed for exactly the new
//! purse's state), and the chip's receipt checked before the copy is marked downloaded.

use rand_core::CryptoRngCore;
use valuecard_center::sql::{Database, Executor};
use valuecard_core::crypto::Signature;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{
    ins, AreaContent, AreaReadout, ChannelBinding, ExportedArea, ImportReceipt, ImportRequest,
    MigrationRecord, MoveId, ServiceChannel,
};
use valuecard_core::time::Date;

use super::conversation::{answer, Awaiting, Carry, Direction, Exchange, Resumed, Turn};
use super::{card_id, Provider, ProviderError};

impl Provider {
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
        let (mut channel, awaiting) =
            match self.resume(db, move_id, destination, Direction::Download, response)? {
                Resumed::Sent(exchange) => return Ok(exchange),
                Resumed::Secured {
                    channel, awaiting, ..
                } => (channel, awaiting),
            };
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
