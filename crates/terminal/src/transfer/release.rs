//! The "source card and the center" half of the recovery rule (docs/protocols.md § 13.6):
//! when the destination of a pending transfer will never come back (lost, destroyed, or a
//! card ID a dishonest reader made up), the center releases the source's reservation. The
//! terminal reads the pending transfer from the card, asks the center, and hands the card
//! the center's signature (TRANSFER COMPLETE, P1 = 01); the card checks it against its own
//! pending-transfer log, so neither the terminal nor the network can aim it elsewhere.

use valuecard_core::messages::transfer::{complete_p1, TransferRelease};

use super::*;

/// A reservation the center released: the source's value is spendable again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// This terminal's report of the transfer.
    pub sequence: u32,
    pub amount: Amount,
}

impl<S: Sam, T: TerminalStore, R: CryptoRngCore> SettlementTerminal<S, T, R> {
    /// Asks the center to release the transfer the card in `from` holds pending, and gives
    /// the card the release. `None` when the card holds nothing pending. The center's
    /// refusal (the destination may still hold the value: present it) comes back as
    /// [`TerminalError::Center`], with nothing changed on the card.
    pub fn release_with_center(
        &mut self,
        from: &mut impl CardReader,
        link: &mut impl TransferLink,
    ) -> Result<Option<Released>, TerminalError> {
        let source = self.read_card(from)?;
        let info = self.transfer_info(from)?;
        if info.card_id != source.card_id() {
            return Err(TerminalError::Mismatch(
                "GET TRANSFER INFO names another card",
            ));
        }
        let Some(pending) = info.pending else {
            return Ok(None);
        };
        let report = self.report_for(source.card_id(), &pending)?;
        if report
            .proof
            .as_ref()
            .is_some_and(|proof| proof.status == ProofStatus::Received)
        {
            // This terminal itself saw the destination apply it: no release can be right.
            return Err(TerminalError::Mismatch(
                "the destination received this transfer: complete it with the destination's proof",
            ));
        }
        if report.destination_record.is_some() && report.proof.is_none() {
            // This terminal sent the value to the destination and lost the answer: the
            // destination may hold it, and only its proof of non-receipt says otherwise.
            return Err(TerminalError::Mismatch(
                "the destination may have applied this transfer: present the destination card",
            ));
        }
        let release = link.release_transfer(self.sam.device_id(), source.card_id(), &pending)?;
        // Checked here too, so that a wrong answer is the center's error and not the card's
        // 6982: the card would refuse it the same way.
        release
            .verify(&self.anchor()?.public_key, &source.card_id(), &pending)
            .map_err(|_| TerminalError::Mismatch("the center's release does not verify"))?;
        let mut report = report;
        // Kept before the card is told: the center already holds the release, and the
        // report says so whether or not the card's answer arrives.
        report.release = Some(release.clone());
        self.save_report(&mut report)?;
        self.send_release(from, &release)?;
        Ok(Some(Released {
            sequence: report.sequence,
            amount: pending.amount,
        }))
    }

    fn send_release(
        &mut self,
        from: &mut impl CardReader,
        release: &TransferRelease,
    ) -> Result<(), TerminalError> {
        let data = self.exchange(
            from,
            "TRANSFER COMPLETE",
            ins::TRANSFER_COMPLETE,
            complete_p1::RELEASE,
            release.encode(),
        )?;
        UpdateConfirmation::decode(&data).map_err(|error| TerminalError::Malformed {
            message: "TRANSFER COMPLETE answer",
            error,
        })?;
        Ok(())
    }
}
