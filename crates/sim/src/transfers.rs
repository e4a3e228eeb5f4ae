//! Card-to-card transfer in the simulated world (seed 000): one settlement terminal, two
//! in-process readers, and its reports uploaded to the center.

use valuecard_core::messages::center::UploadReceipt;
use valuecard_terminal::store::{StoredTransfer, TerminalStore};
use valuecard_terminal::transfer::{
    RecoveryOutcome, Released, SettlementTerminal, TransferReceipt,
};

use super::*;

/// The settlement terminal as the world holds it.
pub type Settlement = SettlementTerminal<SoftwareSam, Box<dyn TerminalStore>, WorldRng>;

impl World {
    /// The settlement terminal, installed by the center at its first use.
    pub fn settlement(&mut self) -> Result<&mut Settlement, WorldError> {
        if self.settlement.is_none() {
            let clock = self.clock();
            let sam = install_sam(
                &mut self.center,
                Role::SettlementTerminal,
                clock,
                &mut self.rng,
            )?;
            let store: Box<dyn TerminalStore> = Box::new(MemoryStore::default());
            let rng = fork(&mut self.rng);
            self.settlement = Some(SettlementTerminal::new(sam, store, self.clock(), rng)?);
        }
        self.settlement
            .as_mut()
            .ok_or_else(|| WorldError::Other("no settlement terminal".into()))
    }

    /// Moves `amount` from the card in `from` to the card in `to`.
    pub fn transfer(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
        amount: Amount,
    ) -> Result<TransferReceipt, WorldError> {
        Ok(self.settlement()?.transfer(from, to, amount)?)
    }

    /// Settles the transfer the card in `from` holds pending with its destination in `to`.
    pub fn settle_transfer(
        &mut self,
        from: &mut impl CardReader,
        to: &mut impl CardReader,
    ) -> Result<Option<RecoveryOutcome>, WorldError> {
        Ok(self.settlement()?.settle(from, to)?)
    }

    /// Asks the center to release the transfer the card in `from` holds pending toward a
    /// destination that will never come back, and gives the card the release.
    pub fn release_transfer(
        &mut self,
        from: &mut impl CardReader,
    ) -> Result<Option<Released>, WorldError> {
        self.settlement()?;
        let settlement = self
            .settlement
            .as_mut()
            .ok_or_else(|| WorldError::Other("no settlement terminal".into()))?;
        Ok(settlement.release_with_center(from, &mut self.center)?)
    }

    /// The settlement terminal's reports, oldest first (none before its first use).
    pub fn transfer_reports(&self) -> Result<Vec<StoredTransfer>, WorldError> {
        match &self.settlement {
            Some(settlement) => Ok(settlement.store().transfers()?),
            None => Ok(Vec::new()),
        }
    }

    /// The settlement terminal uploads its reports to the center.
    pub fn upload_transfers(&mut self) -> Result<UploadReceipt, WorldError> {
        let Some(settlement) = self.settlement.as_mut() else {
            return Ok(UploadReceipt::default());
        };
        Ok(settlement.upload_transfers(&mut self.center)?)
    }
}
