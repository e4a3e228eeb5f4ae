//! Alerts: what the center detected but could not prevent, kept for the operator.
//!
//! Offline value cannot stop a broken card from spending what it holds before the next list
//! sync, nor a dishonest device from lying once. What the center can do is see it at the
//! next upload and keep the evidence: a card that claimed a balance no writer signed, a load
//! the card's evidence contradicts, a card spending after it was reported destroyed. Each
//! alert names its subject (a card or a device) and says what was seen.

use valuecard_core::messages::center::CenterError;

use crate::sql::Executor;
use crate::Center;

/// Migration: the alert log, the settlement challenge of a pending load, the card's
/// signature kept with each usage record, and the holding period of card restorations
/// (appended to `db::MIGRATIONS`). The index on loads by card state serves the per-item
/// question "did a load consume this state?": without it the planner walks every load with
/// the same status.
pub const MIGRATION: &str = r#"
    CREATE TABLE alerts (
        alert_id  BIGINT PRIMARY KEY,
        subject   BYTEA NOT NULL CHECK (length(subject) = 8),
        kind      TEXT NOT NULL,
        detail    TEXT NOT NULL,
        raised_on BIGINT NOT NULL
    );
    CREATE INDEX alerts_by_subject ON alerts (subject, alert_id);
    INSERT INTO sequences (name, next) VALUES ('alert', 1);
    ALTER TABLE loads ADD COLUMN settlement_challenge BYTEA;
    CREATE INDEX loads_by_state ON loads (card_id, card_counter, status);
    ALTER TABLE usage_records ADD COLUMN card_signature BYTEA;
    CREATE TABLE restore_requests (
        card_id      BYTEA PRIMARY KEY CHECK (length(card_id) = 8),
        requested_on BIGINT NOT NULL,
        hold_until   BIGINT NOT NULL
    )
"#;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlertKind {
    /// A card claimed a balance above what the center ever loaded onto it, or one no writer
    /// signed: its image was edited.
    TamperedBalance,
    /// The same card state was consumed by two updates (Fig. 9).
    Cloned,
    /// A load the center had cancelled on the card's evidence turned up applied.
    CancelledLoadApplied,
    /// A card's evidence shows a state older than the one it offered before.
    RolledBack,
    /// A card reported destroyed (restore requested) spent at a terminal.
    SpentAfterReport,
    /// A restored card spent at a terminal after its value was put on a replacement: the
    /// amount is lost to the operator, bounded by what the terminals accept before they sync.
    SpentAfterRestore,
    /// A card received value whose source never showed the debit within the hold period
    /// (seed 000): a value message no genuine source made, under an extracted transfer key.
    TransferUnsettled,
    /// A transfer proof or value message under a transfer-key generation older than one the
    /// card had already been given: no genuine card makes it.
    StaleTransferKey,
    /// One transfer proven both received and not received.
    TransferContradiction,
    /// Two write records of memory-card machines start from the same card state (seed
    /// 001): a second card answers under the card's ID and counter, and the value spent
    /// from that state was spent twice.
    MemcardSpentTwice,
    /// A charge machine's uploaded charges exceed the float the center granted it: its SAM
    /// charged value it never held (seed 001, area 23A).
    MemcardFloatExceeded,
    /// A memory-card record starts from a state written by a listed (stolen) machine that
    /// the center has no record of: most likely written after the listing, by a payment
    /// machine that had not synced the list yet.
    MemcardListedWriter,
    /// An old chip's purse was moved to a second new chip (seed 002): the chip exported the
    /// same value twice, and the second credit is value created.
    MovedTwice,
    /// A chip whose services were moved to a new chip spent at a terminal from a state at
    /// or after its export: its chip answered on keys it no longer had in use.
    SpentAfterMove,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::TamperedBalance => "tampered-balance",
            AlertKind::Cloned => "cloned",
            AlertKind::CancelledLoadApplied => "cancelled-load-applied",
            AlertKind::RolledBack => "rolled-back",
            AlertKind::SpentAfterReport => "spent-after-report",
            AlertKind::SpentAfterRestore => "spent-after-restore",
            AlertKind::TransferUnsettled => "transfer-unsettled",
            AlertKind::StaleTransferKey => "stale-transfer-key",
            AlertKind::TransferContradiction => "transfer-contradiction",
            AlertKind::MemcardSpentTwice => "memcard-spent-twice",
            AlertKind::MemcardFloatExceeded => "memcard-float-exceeded",
            AlertKind::MemcardListedWriter => "memcard-listed-writer",
            AlertKind::MovedTwice => "moved-twice",
            AlertKind::SpentAfterMove => "spent-after-move",
        }
    }
}

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub alert_id: u64,
    pub subject: [u8; 8],
    pub kind: String,
    pub detail: String,
    pub raised_on: u32,
}

/// Records an alert inside the caller's transaction.
pub(crate) fn raise(
    tx: &mut dyn Executor,
    subject: &[u8; 8],
    kind: AlertKind,
    detail: &str,
    today: u32,
) -> Result<(), CenterError> {
    let alert_id = crate::db::next_in_sequence(tx, "alert")?;
    tx.execute(
        "INSERT INTO alerts (alert_id, subject, kind, detail, raised_on) VALUES ($1, $2, $3, $4, $5)",
        &[
            alert_id.into(),
            subject[..].into(),
            kind.as_str().into(),
            detail.into(),
            today.into(),
        ],
    )?;
    Ok(())
}

impl Center {
    /// Every alert raised so far, oldest first.
    pub fn alerts(&mut self) -> Result<Vec<Alert>, CenterError> {
        let rows = self.db.query(
            "SELECT alert_id, subject, kind, detail, raised_on FROM alerts ORDER BY alert_id",
            &[],
        )?;
        rows.iter().map(alert_from_row).collect()
    }

    /// The alerts about one card or device, oldest first.
    pub fn alerts_for(&mut self, subject: &[u8; 8]) -> Result<Vec<Alert>, CenterError> {
        let rows = self.db.query(
            "SELECT alert_id, subject, kind, detail, raised_on FROM alerts
             WHERE subject = $1 ORDER BY alert_id",
            &[subject[..].into()],
        )?;
        rows.iter().map(alert_from_row).collect()
    }
}

fn alert_from_row(row: &crate::sql::Row) -> Result<Alert, CenterError> {
    let corrupt = |what: &str| CenterError::Storage(format!("stored alert: {what}"));
    Ok(Alert {
        alert_id: u64::try_from(row.int(0)?).map_err(|_| corrupt("number"))?,
        subject: row
            .bytes(1)?
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("subject"))?,
        kind: row.text(2)?,
        detail: row.text(3)?,
        raised_on: u32::try_from(row.int(4)?).map_err(|_| corrupt("date"))?,
    })
}
