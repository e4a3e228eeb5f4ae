//! What a terminal checks of a card, and the card's evidence that settles what was left in
//! doubt: the SELECT answer and certificate, the previous usage record and its writer (a
//! troubled terminal included, Figs. 10-12), GET LAST TRANSACTION and READ LOG.

use valuecard_core::cert::Role;
use valuecard_core::messages::purse::{
    CardState, GetLastTransaction, LastTransaction, LogEntry, SelectResponse, TerminalStamp,
    TransactionKind, UsageRecord,
};

use super::*;

/// Decides an in-doubt purchase from the card's evidence; `None` if the evidence is gone.
pub(super) fn decide(
    record: &PurchaseRecord,
    last: &UsageRecord,
    log: &[LogEntry],
    terminal: DeviceId,
) -> Option<PurchaseStatus> {
    let ours_would_be = record.card_counter.wrapping_add(1);
    if last.counter == record.card_counter {
        // The card has not changed since it signed our offer: the debit never applied, and
        // it never can, since the card's session is gone.
        return Some(PurchaseStatus::Cancelled);
    }
    if last.counter == ours_would_be {
        let ours = last.kind == TransactionKind::Purchase
            && last.writer == terminal
            && last.writer_sequence == record.sequence
            && last.challenge_card == record.challenge_card;
        return Some(if ours {
            PurchaseStatus::Committed
        } else {
            PurchaseStatus::Cancelled
        });
    }
    if last.counter < record.card_counter {
        // The card is behind our record: a restored or cloned image. Leave it for the center.
        return None;
    }
    let entry = log.iter().find(|entry| entry.counter == ours_would_be)?;
    let ours = entry.kind == TransactionKind::Purchase
        && entry.party == terminal
        && entry.amount == record.amount;
    Some(if ours {
        PurchaseStatus::Committed
    } else {
        PurchaseStatus::Cancelled
    })
}

/// GET LAST TRANSACTION with a fresh challenge, the card's signature checked.
pub(crate) fn read_last_transaction(
    reader: &mut impl CardReader,
    card: &VerifiedCard,
    rng: &mut impl CryptoRngCore,
) -> Result<UsageRecord, TerminalError> {
    let challenge: Challenge = random_array(rng);
    Ok(read_last_transaction_over(reader, card, challenge)?.record)
}

/// GET LAST TRANSACTION over a given challenge (the center's, when the answer is evidence
/// for it), with the card's signature checked.
pub(crate) fn read_last_transaction_over(
    reader: &mut impl CardReader,
    card: &VerifiedCard,
    challenge: Challenge,
) -> Result<LastTransaction, TerminalError> {
    let request = GetLastTransaction { challenge };
    let data = run(
        reader,
        "GET LAST TRANSACTION",
        &proprietary(ins::GET_LAST_TRANSACTION, request.encode()),
    )?;
    let last = LastTransaction::decode(&data).map_err(|error| TerminalError::Malformed {
        message: "last transaction",
        error,
    })?;
    card.public_key()
        .verify(
            &LastTransaction::signed_message(&card.card_id, &challenge, &last.record),
            &last.signature,
        )
        .map_err(|_| TerminalError::BadCardSignature)?;
    Ok(last)
}

/// READ LOG (unsigned: used only where a signed answer is not available).
pub(crate) fn read_log(reader: &mut impl CardReader) -> Result<Vec<LogEntry>, TerminalError> {
    let data = run(reader, "READ LOG", &proprietary(ins::READ_LOG, Vec::new()))?;
    LogEntry::decode_list(&data).map_err(|error| TerminalError::Malformed {
        message: "log",
        error,
    })
}

/// Verifies a SELECT answer: an active purse with a certificate from the center for the
/// card ID it names.
pub fn verify_select(
    data: &[u8],
    anchor: &TrustAnchor,
    today: Date,
) -> Result<VerifiedCard, TerminalError> {
    let fci = SelectResponse::decode(data).map_err(|error| TerminalError::Malformed {
        message: "FCI",
        error,
    })?;
    if fci.state != CardState::Active {
        return Err(TerminalError::CardNotReady(fci.state));
    }
    verify_fci(fci, anchor, today)
}

/// SELECT for settlement: blocked cards (SELECT answers 6283 with the FCI) and listed cards
/// are accepted too, because what they committed must still be settled.
pub fn select_for_settlement(
    reader: &mut impl CardReader,
    anchor: &TrustAnchor,
    today: Date,
) -> Result<VerifiedCard, TerminalError> {
    let response = reader.exchange(&select())?;
    if response.sw != StatusWord::SUCCESS && response.sw != StatusWord::FILE_DEACTIVATED {
        return Err(TerminalError::Card {
            command: "SELECT",
            sw: response.sw,
        });
    }
    let fci = SelectResponse::decode(&response.data).map_err(|error| TerminalError::Malformed {
        message: "FCI",
        error,
    })?;
    if !matches!(fci.state, CardState::Active | CardState::Blocked) {
        return Err(TerminalError::CardNotReady(fci.state));
    }
    verify_fci(fci, anchor, today)
}

fn verify_fci(
    fci: SelectResponse,
    anchor: &TrustAnchor,
    today: Date,
) -> Result<VerifiedCard, TerminalError> {
    let (Some(card_id), Some(certificate)) = (fci.card_id, fci.certificate) else {
        return Err(TerminalError::Mismatch(
            "an active card must name its ID and certificate",
        ));
    };
    let verified = anchor
        .verify(core::slice::from_ref(&certificate), Role::Card, today)
        .map_err(TerminalError::CardCertificate)?;
    if verified.subject().0 != card_id.0 {
        return Err(TerminalError::Mismatch(
            "the card's certificate is for another card",
        ));
    }
    Ok(VerifiedCard {
        certificate: verified,
        card_id,
    })
}

/// What a card claims about its current state, as an offer (purchase, load, transfer)
/// shows it: the balance and counter, and the record of the writer that should have signed
/// them, with that writer's certificate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimedState<'a> {
    pub balance: Amount,
    pub counter: u32,
    pub last_usage: Option<&'a UsageRecord>,
    pub last_writer_certificate: Option<&'a valuecard_core::cert::Certificate>,
}

impl<'a> ClaimedState<'a> {
    pub(crate) fn of_purchase(offer: &'a PurchaseOffer) -> Self {
        ClaimedState {
            balance: offer.balance,
            counter: offer.counter,
            last_usage: offer.last_usage.as_ref(),
            last_writer_certificate: offer.last_writer_certificate.as_ref(),
        }
    }
}

/// Fig. 6 and Fig. 9: the balance the card reports must be the one its last writer signed,
/// and that writer must be certified (a terminal) or be the center itself (a load).
pub(crate) fn verify_previous_usage(
    card: &VerifiedCard,
    offer: ClaimedState<'_>,
    anchor: &TrustAnchor,
    today: Date,
    lists: &crate::store::LocalLists,
) -> Result<(), TerminalError> {
    let Some(record) = offer.last_usage else {
        // Only a card that was never loaded has no record, and it holds nothing to spend.
        return if offer.balance == Amount::ZERO && offer.counter == 0 {
            Ok(())
        } else {
            Err(TerminalError::BadUsageRecord(
                "a card with value must show who wrote it",
            ))
        };
    };
    if record.balance_after != offer.balance || record.counter != offer.counter {
        return Err(TerminalError::BadUsageRecord(
            "the record does not describe the current balance",
        ));
    }
    let message = record.signed_message(&card.card_id);
    let writer_key = match record.kind.writer_role() {
        None => anchor.public_key,
        Some(role) => {
            // A purchase is written by a payment terminal, a transfer by a settlement
            // terminal (seed 000), an online payment or charge by the settlement system's
            // security server (seed 004); each role signs only its own kinds.
            let certificate =
                offer
                    .last_writer_certificate
                    .ok_or(TerminalError::BadUsageRecord(
                        "a record written by a device needs that device's certificate",
                    ))?;
            // The writer's certificate may have expired since it wrote; what matters is that
            // the center certified it as a terminal, so validity is checked at the record's date.
            let verified = anchor
                .verify(
                    core::slice::from_ref(certificate),
                    role,
                    record.date.min(today),
                )
                .map_err(|_| {
                    TerminalError::BadUsageRecord("the writer's certificate does not verify")
                })?;
            if verified.subject() != record.writer {
                return Err(TerminalError::BadUsageRecord(
                    "the writer's certificate names another terminal",
                ));
            }
            check_troubled_writer(record, verified.signing_key(), lists)?;
            *verified.signing_key()
        }
    };
    writer_key
        .verify(&message, &record.signature)
        .map_err(|_| TerminalError::BadUsageRecord("the writer's signature does not verify"))
}

/// Figs. 10-12: if the card was last written by a terminal on the troubled list, walk that
/// terminal's stamp chain from TS0 to the count the card shows, check the terminal's
/// signature over that stamp, and accept the card only if it was written no later than the
/// count at the report.
fn check_troubled_writer(
    record: &UsageRecord,
    writer_key: &PublicKey,
    lists: &crate::store::LocalLists,
) -> Result<(), TerminalError> {
    let Some((first_stamp, listed_count)) = lists.terminals.get(&record.writer) else {
        return Ok(());
    };
    let stamp = record.stamp.ok_or(TerminalError::BadUsageRecord(
        "a purchase record must carry its terminal's stamp",
    ))?;
    let current = TerminalStamp::at(first_stamp, stamp.count).ok_or(
        TerminalError::BadUsageRecord("the stamp count is beyond any real terminal's"),
    )?;
    writer_key
        .verify(
            &TerminalStamp::signed_message(&record.writer, stamp.count, &current),
            &stamp.signature,
        )
        .map_err(|_| {
            TerminalError::BadUsageRecord("the troubled terminal's stamp signature does not verify")
        })?;
    if stamp.count > *listed_count {
        return Err(TerminalError::WrittenByStolenTerminal {
            terminal: record.writer,
            stamp_count: stamp.count,
            listed_count: *listed_count,
        });
    }
    Ok(())
}
