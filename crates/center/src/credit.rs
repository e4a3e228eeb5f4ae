//! Credit mode at the center (seed 003, Figs. 13-17): enabling a card's credit function at
//! issuance (the setting number Ns, sealed to the card, with SA over the card ID, the expiry
//! and a commitment to Ns), the service records terminals upload with the card's signature
//! SU(M * IDU), and the monthly statement per card ("the management center sums up the
//! charges for each card identification number and demands payment of each user every
//! month").
//!
//! The center never stores Ns: it keeps the commitment C and the sealed box (which only the
//! card can open), and hands Ns out once as a "setting letter" for the holder.

use std::collections::BTreeMap;

use valuecard_core::crypto::{random_array, seal_to, Signature};
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::credit::{
    sealed_setting_aad, setting_commitment, CreditLink, CreditRequest, EnableCredit, ServiceLink,
    ServiceReceipt, ServiceRecord, ServiceUpload, SettingNumber, SERVICE_BATCH_MAX,
    SETTING_SALT_LEN,
};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;

use crate::sql::{Executor, Value};
use crate::{Center, CERTIFICATE_VALIDITY_DAYS};

/// How long a credit function lasts when the operator names no expiry.
pub const CREDIT_VALIDITY_DAYS: u32 = 2 * 365;

/// Migration: credit accounts and service records (appended to `db::MIGRATIONS`).
pub const MIGRATION: &str = r#"
    CREATE TABLE credit_accounts (
        card_id            BYTEA PRIMARY KEY CHECK (length(card_id) = 8),
        expiry             BIGINT NOT NULL,
        setting_commitment BYTEA NOT NULL CHECK (length(setting_commitment) = 32),
        signature          BYTEA NOT NULL CHECK (length(signature) = 64),
        sealed_setting     BYTEA NOT NULL,
        dispenser_id       BYTEA NOT NULL CHECK (length(dispenser_id) = 8),
        enabled_on         BIGINT NOT NULL
    );

    CREATE TABLE service_records (
        terminal_id       BYTEA NOT NULL CHECK (length(terminal_id) = 8),
        terminal_sequence BIGINT NOT NULL,
        card_id           BYTEA NOT NULL CHECK (length(card_id) = 8),
        service_number    BIGINT NOT NULL,
        amount_minor      BIGINT NOT NULL CHECK (amount_minor > 0),
        service_date      BIGINT NOT NULL,
        card_signature    BYTEA NOT NULL CHECK (length(card_signature) = 64),
        received_on       BIGINT NOT NULL,
        PRIMARY KEY (terminal_id, terminal_sequence)
    );
    CREATE INDEX service_records_by_date ON service_records (service_date, card_id)
"#;

/// A card's credit account as the center holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAccount {
    pub card_id: CardId,
    pub expiry: Date,
    pub enabled_on: Date,
}

/// One charge on a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub date: Date,
    pub terminal_id: DeviceId,
    pub terminal_sequence: u32,
    pub service_number: u32,
    pub amount: Amount,
}

/// What one card is charged for one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardStatement {
    pub card_id: CardId,
    /// Oldest first.
    pub lines: Vec<StatementLine>,
    /// Sum of the lines, in minor units (may exceed a purse's maximum).
    pub total_minor: u64,
}

/// The monthly statement: every card with a charge dated in the month, by card ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `YYYY-MM`.
    pub month: String,
    pub cards: Vec<CardStatement>,
    pub total_minor: u64,
}

/// The first day of `YYYY-MM` and the first day of the month after it.
pub fn month_range(month: &str) -> Result<(Date, Date), CenterError> {
    let bad = || CenterError::Mismatch(format!("{month:?} is not a month: use YYYY-MM"));
    let (year, number) = month.split_once('-').ok_or_else(bad)?;
    if year.len() != 4 || number.len() != 2 {
        return Err(bad());
    }
    let year: i32 = year.parse().map_err(|_| bad())?;
    let number: u32 = number.parse().map_err(|_| bad())?;
    let start = Date::from_ymd(year, number, 1).ok_or_else(bad)?;
    let end = if number == 12 {
        Date::from_ymd(year + 1, 1, 1)
    } else {
        Date::from_ymd(year, number + 1, 1)
    }
    .ok_or_else(bad)?;
    Ok((start, end))
}

fn stored_enablement(row: &crate::sql::Row) -> Result<EnableCredit, CenterError> {
    Ok(EnableCredit {
        expiry: Date(row.int(0)? as u32),
        signature: Signature::from_slice(&row.bytes(1)?)
            .map_err(|_| CenterError::Storage("stored credit signature".into()))?,
        sealed_setting: row.bytes(2)?,
    })
}

fn storage(error: impl core::fmt::Display) -> CenterError {
    CenterError::Storage(error.to_string())
}

impl Center {
    /// Fig. 13's issuance data for a card: a fresh setting number Ns and salt sealed to the
    /// card's certified X25519 key, and SA = Sign_root(IDU, expiry, C). Stored (without Ns)
    /// before it is returned; a repeated request gets the same answer, so a dispenser that
    /// lost the card's answer can send it again. Ns waits in [`Center::take_setting_number`].
    pub fn issue_credit(&mut self, request: &CreditRequest) -> Result<EnableCredit, CenterError> {
        self.require_dispenser(request.dispenser_id)?;
        let card_id = request.card_id;
        let (status, _, _) = self.card_record(&card_id)?;
        match status.as_str() {
            "issued" => {}
            "blocked" => return Err(CenterError::CardBlocked(card_id)),
            other => return Err(CenterError::Mismatch(format!("card {card_id} is {other}"))),
        }
        let existing = self.db.query_optional(
            "SELECT expiry, signature, sealed_setting FROM credit_accounts WHERE card_id = $1",
            &[card_id.0[..].into()],
        )?;
        if let Some(row) = existing {
            let stored = stored_enablement(&row)?;
            if request.expiry.is_some_and(|expiry| expiry != stored.expiry) {
                return Err(CenterError::Mismatch(format!(
                    "credit on card {card_id} is already enabled until {}",
                    stored.expiry
                )));
            }
            return Ok(stored);
        }
        let today = self.today();
        let expiry = request
            .expiry
            .unwrap_or(today.add_days(CREDIT_VALIDITY_DAYS));
        if expiry < today || expiry > today.add_days(CERTIFICATE_VALIDITY_DAYS) {
            return Err(CenterError::Mismatch(format!(
                "a credit expiry must lie between {today} and {}",
                today.add_days(CERTIFICATE_VALIDITY_DAYS)
            )));
        }
        let sealing_key: [u8; 32] = self
            .db
            .query_one(
                "SELECT sealing_key FROM cards WHERE card_id = $1",
                &[card_id.0[..].into()],
            )?
            .bytes(0)?
            .try_into()
            .map_err(|_| CenterError::Storage(format!("card {card_id} has no sealing key")))?;
        let setting_number = SettingNumber::random(&mut self.rng);
        let salt: [u8; SETTING_SALT_LEN] = random_array(&mut self.rng);
        let mut plain = salt.to_vec();
        plain.extend_from_slice(setting_number.as_bytes());
        let sealed = seal_to(
            &mut self.rng,
            &sealing_key,
            &sealed_setting_aad(&card_id),
            &plain,
        );
        zeroize::Zeroize::zeroize(&mut plain);
        let sealed_setting = sealed.map_err(|error| {
            CenterError::Mismatch(format!("cannot seal to card {card_id}: {error}"))
        })?;
        let commitment = setting_commitment(&card_id, &salt, &setting_number);
        let signature =
            self.keys
                .root
                .sign(&EnableCredit::signed_message(&card_id, expiry, &commitment))?;
        let changed = self.db.execute(
            "INSERT INTO credit_accounts (card_id, expiry, setting_commitment, signature, sealed_setting, dispenser_id, enabled_on)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (card_id) DO NOTHING",
            &[
                card_id.0[..].into(),
                expiry.0.into(),
                commitment[..].into(),
                signature.0[..].into(),
                sealed_setting.clone().into(),
                request.dispenser_id.0[..].into(),
                today.0.into(),
            ],
        )?;
        if changed == 0 {
            // Another request enabled the card in between: its answer stands.
            return self.issue_credit(request);
        }
        self.setting_letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(card_id, setting_number);
        Ok(EnableCredit {
            expiry,
            signature,
            sealed_setting,
        })
    }

    /// The setting number drawn for `card_id` in this process, once: the letter the holder
    /// receives. The center keeps no copy.
    pub fn take_setting_number(&mut self, card_id: &CardId) -> Option<SettingNumber> {
        self.setting_letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(card_id)
    }

    /// The card's credit account, if its credit function was enabled.
    pub fn credit_account(
        &mut self,
        card_id: &CardId,
    ) -> Result<Option<CreditAccount>, CenterError> {
        let row = self.db.query_optional(
            "SELECT expiry, enabled_on FROM credit_accounts WHERE card_id = $1",
            &[card_id.0[..].into()],
        )?;
        row.map(|row| {
            Ok(CreditAccount {
                card_id: *card_id,
                expiry: Date(row.int(0)? as u32),
                enabled_on: Date(row.int(1)? as u32),
            })
        })
        .transpose()
    }

    /// Why one uploaded service record cannot be stored, if it cannot.
    fn check_service_record(
        &mut self,
        terminal_id: DeviceId,
        record: &ServiceRecord,
    ) -> Result<(), String> {
        if record.terminal_id != terminal_id {
            return Err("the record names another terminal".into());
        }
        if record.amount == Amount::ZERO {
            return Err("a service charge must be positive".into());
        }
        let account = self
            .credit_account(&record.card_id)
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("card {} has no credit account", record.card_id))?;
        if record.date > account.expiry {
            return Err(format!(
                "the record is dated after the card's credit expiry {}",
                account.expiry
            ));
        }
        let card_key = self
            .card_public_key(&record.card_id)
            .map_err(|error| error.to_string())?;
        card_key
            .verify(&record.signed_message(), &record.card_signature)
            .map_err(|_| "the card's signature over the service record does not verify".into())
    }

    /// Verifies and stores a batch of service records from one payment terminal (Fig. 17:
    /// "the management center further verifies the digital signature SU(M * IDU) and records
    /// the service information M for each card"). Idempotent by (terminal, sequence): the
    /// same record again is a duplicate; another record under a stored sequence is refused.
    pub fn ingest_service_records(
        &mut self,
        upload: &ServiceUpload,
    ) -> Result<ServiceReceipt, CenterError> {
        if upload.records.len() > SERVICE_BATCH_MAX {
            return Err(CenterError::Mismatch(format!(
                "at most {SERVICE_BATCH_MAX} service records per upload"
            )));
        }
        if self.device_role(upload.terminal_id)? != valuecard_core::cert::Role::PaymentTerminal {
            return Err(CenterError::NotAuthorized(upload.terminal_id));
        }
        let mut receipt = ServiceReceipt::default();
        let mut verified = Vec::with_capacity(upload.records.len());
        for record in &upload.records {
            match self.check_service_record(upload.terminal_id, record) {
                Ok(()) => verified.push(record),
                Err(reason) => receipt.refused.push((record.terminal_sequence, reason)),
            }
        }
        let today = self.today().0;
        // The transaction may run again after a conflict (PostgreSQL): each run counts
        // from the refusals found before it, never on top of a run that rolled back.
        let checked = receipt;
        let receipt = self.db.transaction(|tx| {
            let mut receipt = checked.clone();
            for &record in &verified {
                let key = [
                    record.terminal_id.0[..].into(),
                    record.terminal_sequence.into(),
                ];
                let existing = tx.query_optional(
                    "SELECT card_id, service_number, amount_minor, service_date, card_signature FROM service_records
                     WHERE terminal_id = $1 AND terminal_sequence = $2",
                    &key,
                )?;
                if let Some(row) = existing {
                    let same = row.bytes(0)? == record.card_id.0
                        && row.int(1)? == i64::from(record.service_number)
                        && row.int(2)? as u64 == record.amount.minor()
                        && row.int(3)? == i64::from(record.date.0)
                        && row.bytes(4)? == record.card_signature.0;
                    if same {
                        receipt.duplicates += 1;
                    } else {
                        receipt.refused.push((
                            record.terminal_sequence,
                            "a record with this sequence was stored with other content".into(),
                        ));
                    }
                    continue;
                }
                tx.execute(
                    "INSERT INTO service_records (terminal_id, terminal_sequence, card_id, service_number, amount_minor,
                                                  service_date, card_signature, received_on)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        record.terminal_id.0[..].into(),
                        record.terminal_sequence.into(),
                        record.card_id.0[..].into(),
                        record.service_number.into(),
                        Value::from(record.amount),
                        record.date.0.into(),
                        record.card_signature.0[..].into(),
                        today.into(),
                    ],
                )?;
                receipt.stored += 1;
            }
            Ok(receipt)
        })?;
        Ok(receipt)
    }

    /// The statement for `month` (`YYYY-MM`): per card, every stored service record dated in
    /// that month and their total.
    pub fn statement(&mut self, month: &str) -> Result<Statement, CenterError> {
        let (start, end) = month_range(month)?;
        let rows = self.db.query(
            "SELECT card_id, service_date, terminal_id, terminal_sequence, service_number, amount_minor
             FROM service_records WHERE service_date >= $1 AND service_date < $2
             ORDER BY card_id, service_date, terminal_id, terminal_sequence",
            &[start.0.into(), end.0.into()],
        )?;
        let mut cards: BTreeMap<CardId, CardStatement> = BTreeMap::new();
        let mut total_minor = 0u64;
        for row in rows {
            let card_id = CardId::from_slice(&row.bytes(0)?).map_err(storage)?;
            let line = StatementLine {
                date: Date(row.int(1)? as u32),
                terminal_id: DeviceId::from_slice(&row.bytes(2)?).map_err(storage)?,
                terminal_sequence: row.int(3)? as u32,
                service_number: row.int(4)? as u32,
                amount: Amount::new(row.int(5)? as u64).map_err(storage)?,
            };
            total_minor += line.amount.minor();
            let card = cards.entry(card_id).or_insert_with(|| CardStatement {
                card_id,
                lines: Vec::new(),
                total_minor: 0,
            });
            card.total_minor += line.amount.minor();
            card.lines.push(line);
        }
        Ok(Statement {
            month: month.to_owned(),
            cards: cards.into_values().collect(),
            total_minor,
        })
    }
}

impl CreditLink for Center {
    fn enable_credit(&mut self, request: &CreditRequest) -> Result<EnableCredit, CenterError> {
        self.issue_credit(request)
    }
}

impl ServiceLink for Center {
    fn upload_service_records(
        &mut self,
        upload: &ServiceUpload,
    ) -> Result<ServiceReceipt, CenterError> {
        self.ingest_service_records(upload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        let (start, end) = month_range("2026-12").unwrap();
        assert_eq!(start, Date::from_ymd(2026, 12, 1).unwrap());
        assert_eq!(end, Date::from_ymd(2027, 1, 1).unwrap());
        let (start, end) = month_range("2028-02").unwrap();
        assert_eq!(end.0 - start.0, 29);
        for bad in [
            "2026-13",
            "2026-1",
            "26-01",
            "2026/01",
            "2026-00",
            "",
            "2026-01-01",
        ] {
            assert!(month_range(bad).is_err(), "{bad:?}");
        }
    }
}
