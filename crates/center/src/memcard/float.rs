//! Float for charge machines (seed 001, area 23A): what a charge machine's SAM may charge
//! onto memory cards, granted by the center in numbered grants signed with its root key.
//!
//! A machine holds, as far as the center can tell, what it was granted and has not yet
//! shown charged in uploaded records. The center grants up to the machine's limit minus
//! that, so a machine that stops uploading soon gets nothing more, and what a stolen or
//! broken charge machine can put on cards is bounded by its limit.

use valuecard_core::cert::Role;
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::memcard::FloatGrant;
use valuecard_core::money::Amount;

use crate::sql::Executor;
use crate::Center;

/// The float limit of a charge machine without one of its own: 10 000.00 in minor units.
pub const FLOAT_LIMIT_DEFAULT_MINOR: u64 = 1_000_000;

const GRANTED: &str =
    "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_float_grants
     WHERE machine_id = $1";
const CHARGED: &str = "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM memcard_writes
     WHERE machine_id = $1 AND kind = 'charge'";

impl Center {
    /// Sets a charge machine's float limit (minor units), in place of
    /// [`FLOAT_LIMIT_DEFAULT_MINOR`].
    pub fn set_float_limit(
        &mut self,
        machine: DeviceId,
        limit_minor: u64,
    ) -> Result<(), CenterError> {
        if self.device_role(machine)? != Role::ChargeMachine {
            return Err(CenterError::NotAuthorized(machine));
        }
        let limit = i64::try_from(limit_minor).map_err(|_| {
            CenterError::Amount(format!("a float limit of {limit_minor} is out of range"))
        })?;
        self.db.execute(
            "INSERT INTO memcard_float_limits (machine_id, limit_minor) VALUES ($1, $2)
             ON CONFLICT (machine_id) DO UPDATE SET limit_minor = excluded.limit_minor",
            &[machine.0[..].into(), limit.into()],
        )?;
        Ok(())
    }

    /// A charge machine's float limit, in minor units.
    pub fn float_limit(&mut self, machine: DeviceId) -> Result<u64, CenterError> {
        float_limit(&mut self.db, &machine)
    }

    /// Grants float to a charge machine: at most `asked`, and at most its limit minus what
    /// it holds unaccounted (granted minus charged in uploaded records). The grant is
    /// numbered one above the machine's last, signed with the root key and recorded in the
    /// same transaction, so that two requests at once (on two center processes too) never
    /// grant past the limit nor share a number. Refused (`Amount`) when nothing is left.
    pub fn grant_float(
        &mut self,
        machine: DeviceId,
        asked: Amount,
    ) -> Result<FloatGrant, CenterError> {
        if asked == Amount::ZERO {
            return Err(CenterError::Amount(
                "a float request must ask for value".into(),
            ));
        }
        if self.device_role(machine)? != Role::ChargeMachine {
            return Err(CenterError::NotAuthorized(machine));
        }
        let date = self.today();
        let root = &self.keys.root;
        self.db.transaction(|tx| {
            super::store::avoid_table_locks(tx)?;
            let limit = float_limit(tx, &machine)?;
            let granted = super::sum(tx, GRANTED, &machine)?;
            let charged = super::sum(tx, CHARGED, &machine)?;
            let held = granted.saturating_sub(charged);
            let available = limit.saturating_sub(held);
            if available == 0 {
                return Err(CenterError::Amount(format!(
                    "charge machine {machine} holds {held} minor units of float unaccounted, its limit \
                     is {limit}: upload its charge records first"
                )));
            }
            let amount = Amount::new(asked.minor().min(available))
                .map_err(|error| CenterError::Amount(error.to_string()))?;
            let last = tx
                .query_one(
                    "SELECT CAST(COALESCE(MAX(grant_number), 0) AS BIGINT) FROM memcard_float_grants
                     WHERE machine_id = $1",
                    &[machine.0[..].into()],
                )?
                .int(0)?;
            let grant_number = u32::try_from(last + 1).map_err(|_| {
                CenterError::Amount(format!("charge machine {machine} has used every grant number"))
            })?;
            let mut grant = FloatGrant {
                machine,
                grant_number,
                amount,
                date,
                signature: valuecard_core::crypto::Signature([0; 64]),
            };
            grant.signature = root.sign(&grant.signed_message())?;
            tx.execute(
                "INSERT INTO memcard_float_grants (machine_id, grant_number, amount_minor, granted_on, signature)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    machine.0[..].into(),
                    grant_number.into(),
                    crate::sql::Value::from(amount),
                    date.0.into(),
                    grant.signature.0[..].into(),
                ],
            )?;
            Ok(grant)
        })
    }

    /// Every float grant of a machine, oldest first.
    pub fn float_grants(&mut self, machine: DeviceId) -> Result<Vec<FloatGrant>, CenterError> {
        let rows = self.db.query(
            "SELECT grant_number, amount_minor, granted_on, signature FROM memcard_float_grants
             WHERE machine_id = $1 ORDER BY grant_number",
            &[machine.0[..].into()],
        )?;
        let corrupt = |what: &str| CenterError::Storage(format!("stored float grant: {what}"));
        rows.iter()
            .map(|row| {
                Ok(FloatGrant {
                    machine,
                    grant_number: u32::try_from(row.int(0)?).map_err(|_| corrupt("number"))?,
                    amount: u64::try_from(row.int(1)?)
                        .ok()
                        .and_then(|minor| Amount::new(minor).ok())
                        .ok_or_else(|| corrupt("amount"))?,
                    date: valuecard_core::time::Date(
                        u32::try_from(row.int(2)?).map_err(|_| corrupt("date"))?,
                    ),
                    signature: valuecard_core::crypto::Signature::from_slice(&row.bytes(3)?)
                        .map_err(|_| corrupt("signature"))?,
                })
            })
            .collect()
    }
}

fn float_limit(tx: &mut dyn Executor, machine: &DeviceId) -> Result<u64, CenterError> {
    let row = tx.query_optional(
        "SELECT limit_minor FROM memcard_float_limits WHERE machine_id = $1",
        &[machine.0[..].into()],
    )?;
    match row {
        Some(row) => u64::try_from(row.int(0)?)
            .map_err(|_| CenterError::Storage("stored float limit".into())),
        None => Ok(FLOAT_LIMIT_DEFAULT_MINOR),
    }
}
