//! Card-to-card transfers as settlement terminals report them (seed 000 with Fig. 9).
//!
//! A transfer is named by its source card and the source's challenge at TRANSFER OUT, and
//! stored once under that name, whichever terminals report its halves: the one that ran it
//! may hold the destination's half only, and a later session at another terminal completes
//! the source. Each half consumes one card state (the destination's at TRANSFER IN, the
//! source's at TRANSFER COMPLETE), and takes part in clone detection exactly as a purchase
//! does: one state consumed by two updates lists the card.
//!
//! Nothing of a report is stored before every check passed (`check.rs`). The center derives
//! the transfer key itself, so a terminal can neither invent a transfer nor frame a card.
//! What it cannot prevent it detects: a destination that received value whose source never
//! shows the debit within [`TRANSFER_HOLD_DAYS`], and a proof under a generation older than
//! one the destination card had already been given, which only a key extracted from some
//! chip can make.

mod check;
mod release;
mod store;

pub use release::{ReleaseGround, RELEASE_HOLD_DAYS, RELEASE_MIGRATION};

use valuecard_core::ids::CardId;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{CenterError, ListReason, UploadReceipt, USAGE_BATCH_MAX};
use valuecard_core::messages::transfer::{
    PendingTransfer, TransferLink, TransferRelease, TransferReport, TransferUpload,
};

use crate::alerts::AlertKind;
use crate::sql::Executor;
use crate::Center;
use check::ReportError;
use store::{store_report, sweep_unsettled, Stored};

/// Migration: transfers by name, and each terminal's reports by its own sequence (a retry is
/// recognized as the same report; another report under a used sequence is refused). The
/// partial index keeps the hold-period sweep that runs with every upload to the transfers
/// still waiting for their source, not the whole table.
pub const MIGRATION: &str = r#"
    CREATE TABLE transfers (
        source                     BYTEA NOT NULL CHECK (length(source) = 8),
        challenge_source           BYTEA NOT NULL CHECK (length(challenge_source) = 16),
        destination                BYTEA NOT NULL CHECK (length(destination) = 8),
        destination_counter        BIGINT NOT NULL,
        amount_minor               BIGINT NOT NULL CHECK (amount_minor > 0),
        value_key_id               BIGINT,
        proof_status               TEXT CHECK (proof_status IS NULL OR proof_status IN ('received', 'not_received')),
        proof_key_id               BIGINT,
        destination_balance_minor  BIGINT,
        destination_writer         BYTEA,
        destination_sequence       BIGINT,
        source_counter             BIGINT,
        source_balance_minor       BIGINT,
        source_writer              BYTEA,
        source_sequence            BIGINT,
        reported_on                BIGINT NOT NULL,
        received_on                BIGINT,
        settled_on                 BIGINT,
        alerted_on                 BIGINT,
        PRIMARY KEY (source, challenge_source)
    );
    CREATE INDEX transfers_by_destination ON transfers (destination, destination_counter);
    CREATE INDEX transfers_by_source_state ON transfers (source, source_counter);
    CREATE INDEX transfers_unsettled ON transfers (received_on)
        WHERE proof_status = 'received' AND source_counter IS NULL AND alerted_on IS NULL;
    CREATE TABLE transfer_reports (
        terminal_id       BYTEA NOT NULL CHECK (length(terminal_id) = 8),
        terminal_sequence BIGINT NOT NULL,
        source            BYTEA NOT NULL,
        challenge_source  BYTEA NOT NULL,
        report_digest     BYTEA NOT NULL CHECK (length(report_digest) = 32),
        reported_on       BIGINT NOT NULL,
        PRIMARY KEY (terminal_id, terminal_sequence)
    )
"#;

/// How long a destination may hold value received before its source shows the debit. The
/// source's reservation settles at its next session at any settlement terminal; past this,
/// the center suspects a value message no genuine source card made.
pub const TRANSFER_HOLD_DAYS: u32 = 30;

/// Totals of the transfers the center knows, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferTotals {
    /// Received by the destination and debited from the source.
    pub completed: u64,
    pub completed_count: u64,
    /// Received by the destination (completed ones included).
    pub received: u64,
    pub received_count: u64,
    /// Received, with the source's debit not reported yet: value the source still holds
    /// reserved.
    pub in_flight: u64,
    pub in_flight_count: u64,
    /// Proven never applied by the destination, or released by the center with no proof
    /// either way (`release.rs`): nothing moved.
    pub undone: u64,
    pub undone_count: u64,
    /// Reported with no proof yet and not released.
    pub in_doubt_count: u64,
}

/// How many transfer halves consumed the state `counter` of `card_id`.
pub(crate) fn transfers_at_state(
    tx: &mut dyn Executor,
    card_id: &CardId,
    counter: u32,
) -> Result<i64, CenterError> {
    tx.query_one(
        "SELECT CAST(
             (SELECT COUNT(*) FROM transfers WHERE destination = $1 AND destination_counter = $2
                 AND proof_status = 'received')
           + (SELECT COUNT(*) FROM transfers WHERE source = $1 AND source_counter = $2)
         AS BIGINT)",
        &[card_id.0[..].into(), counter.into()],
    )?
    .int(0)
}

fn refuse(report: &TransferReport, reason: impl Into<String>) -> (u32, String) {
    (report.sequence, reason.into())
}

impl Center {
    /// Verifies and stores a batch of transfer reports from one settlement terminal. Every
    /// signature, MAC and value message is checked before anything is stored; a report
    /// already stored with the same content is a duplicate, another report under a used
    /// sequence or contradicting a stored transfer is refused; a card whose state was
    /// consumed twice is listed as cloned.
    pub fn ingest_transfers(
        &mut self,
        upload: &TransferUpload,
    ) -> Result<UploadReceipt, CenterError> {
        if upload.reports.len() > USAGE_BATCH_MAX {
            return Err(CenterError::Mismatch(format!(
                "at most {USAGE_BATCH_MAX} reports per upload"
            )));
        }
        let (role, terminal_key) = self.installed_device(upload.terminal_id)?;
        if role != valuecard_core::cert::Role::SettlementTerminal {
            return Err(CenterError::NotAuthorized(upload.terminal_id));
        }
        let current = self.key_generations()?.transfer;
        let troubled = self.troubled_terminals()?;
        let mut receipt = UploadReceipt::default();
        let mut checked = Vec::with_capacity(upload.reports.len());
        'reports: for report in &upload.reports {
            // Figs. 10-12: a card last written by a listed terminal after its listing.
            for previous in [&report.destination_previous, &report.source_previous]
                .into_iter()
                .flatten()
            {
                if let Err(refusal) = troubled.check_record(previous) {
                    receipt.refused.push(refuse(report, refusal.to_string()));
                    continue 'reports;
                }
            }
            match self.check_transfer_report(upload.terminal_id, &terminal_key, report, current) {
                Ok(ok) => checked.push(ok),
                Err(ReportError::Refused(reason)) => receipt.refused.push(refuse(report, reason)),
                // The center could not read its own records: the terminal sends it all again.
                Err(ReportError::Center(error)) => return Err(error),
            }
        }
        let today = self.today().0;
        let terminal_id = upload.terminal_id;
        let doubts: Vec<&TransferReport> = upload
            .reports
            .iter()
            .filter(|r| r.proof.is_none() && r.destination_record.is_some())
            .collect();
        let outcome = self.db.transaction(|tx| {
            release::note_destination_doubts(tx, terminal_id, &doubts, today)?;
            let mut outcome = (0u32, 0u32, Vec::new(), Vec::<CardId>::new());
            for item in &checked {
                match store_report(tx, terminal_id, item, today)? {
                    Stored::New { clones } => {
                        outcome.0 += 1;
                        for card in clones {
                            if !outcome.3.contains(&card) {
                                outcome.3.push(card);
                            }
                        }
                    }
                    Stored::Duplicate => outcome.1 += 1,
                    Stored::Refused(reason) => outcome.2.push(refuse(item.report, reason)),
                }
            }
            for card in &outcome.3 {
                crate::loads::list_and_block(
                    tx,
                    card,
                    ListReason::Cloned,
                    AlertKind::Cloned,
                    "one card state was consumed twice, a transfer among the updates",
                    today,
                )?;
            }
            sweep_unsettled(tx, today)?;
            Ok(outcome)
        })?;
        receipt.stored = outcome.0;
        receipt.duplicates = outcome.1;
        receipt.refused.extend(outcome.2);
        receipt.clones_detected = outcome.3;
        Ok(receipt)
    }

    /// Raises an alert for every transfer received longer than [`TRANSFER_HOLD_DAYS`] ago
    /// whose source never showed the debit; returns how many were raised now.
    pub fn sweep_unsettled_transfers(&mut self) -> Result<u64, CenterError> {
        let today = self.today().0;
        self.db.transaction(|tx| sweep_unsettled(tx, today))
    }

    /// Totals of the transfers reported so far.
    pub fn transfer_totals(&mut self) -> Result<TransferTotals, CenterError> {
        let row = self
            .db
            .query_one(&format!("SELECT {TOTALS_COLUMNS}"), &[])?;
        totals_from(&row, 0)
    }
}

/// The transfer totals as one select list, so that the reconciliation reads them in its own
/// single statement (one snapshot).
pub(crate) const TOTALS_COLUMNS: &str = "
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NOT NULL),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NOT NULL),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers WHERE proof_status = 'received'),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE proof_status = 'received'),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NULL),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers
         WHERE proof_status = 'received' AND source_counter IS NULL),
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM transfers WHERE proof_status = 'not_received')
        + (SELECT CAST(COALESCE(SUM(r.amount_minor), 0) AS BIGINT) FROM transfer_releases r
               WHERE NOT EXISTS (SELECT 1 FROM transfers t WHERE t.source = r.source
                   AND t.challenge_source = r.challenge_source AND t.proof_status IS NOT NULL)),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE proof_status = 'not_received')
        + (SELECT CAST(COUNT(*) AS BIGINT) FROM transfer_releases r
               WHERE NOT EXISTS (SELECT 1 FROM transfers t WHERE t.source = r.source
                   AND t.challenge_source = r.challenge_source AND t.proof_status IS NOT NULL)),
    (SELECT CAST(COUNT(*) AS BIGINT) FROM transfers t WHERE t.proof_status IS NULL
         AND NOT EXISTS (SELECT 1 FROM transfer_releases r WHERE r.source = t.source
             AND r.challenge_source = t.challenge_source))";

/// Reads the nine totals starting at column `at`.
pub(crate) fn totals_from(row: &crate::sql::Row, at: usize) -> Result<TransferTotals, CenterError> {
    let total = |index: usize| -> Result<u64, CenterError> {
        u64::try_from(row.int(at + index)?)
            .map_err(|_| CenterError::Storage("a transfer total is negative".into()))
    };
    Ok(TransferTotals {
        completed: total(0)?,
        completed_count: total(1)?,
        received: total(2)?,
        received_count: total(3)?,
        in_flight: total(4)?,
        in_flight_count: total(5)?,
        undone: total(6)?,
        undone_count: total(7)?,
        in_doubt_count: total(8)?,
    })
}

impl TransferLink for Center {
    fn upload_transfers(&mut self, upload: &TransferUpload) -> Result<UploadReceipt, CenterError> {
        self.ingest_transfers(upload)
    }

    fn release_transfer(
        &mut self,
        terminal_id: DeviceId,
        source: CardId,
        pending: &PendingTransfer,
    ) -> Result<TransferRelease, CenterError> {
        self.authorize_transfer_release_for(terminal_id, source, pending)
    }
}
