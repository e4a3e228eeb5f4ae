//! The checks of one memory-card write record, before anything of it is stored: the
//! uploading machine's role fits the kind of write and it wrote the state itself, its
//! signature over the written state verifies, the previous state was signed by a machine
//! the center certified, sealed values open under the writers' value keys, the values
//! agree with the record's balances, and the counter went down.

use std::collections::HashMap;

use valuecard_core::cert::Role;
use valuecard_core::crypto::{sha256, PublicKey};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::CenterError;
use valuecard_core::messages::memcard::{
    writer_value_key, SignedState, ValueArea, WriteKind, WriteRecord, COUNTER_START,
};
use valuecard_core::money::Amount;

use super::is_machine;
use crate::sql::Executor;
use crate::Center;

/// Why one record was not accepted: its own fault (refused, the rest of the upload goes
/// on), or the center's (the whole upload fails and is sent again).
pub(crate) enum WriteError {
    Refused(String),
    Center(CenterError),
}

impl From<&str> for WriteError {
    fn from(reason: &str) -> Self {
        WriteError::Refused(reason.to_owned())
    }
}

impl From<String> for WriteError {
    fn from(reason: String) -> Self {
        WriteError::Refused(reason)
    }
}

/// The certified keys of the machines that wrote previous states, looked up once per
/// upload, with whether the machine is listed (retired); the reason of the refusal for a
/// device that may not have written one.
#[derive(Default)]
pub(crate) struct WriterKeys {
    keys: HashMap<DeviceId, Result<(PublicKey, bool), String>>,
}

/// A record every check passed, with what storing it needs.
pub(crate) struct CheckedWrite<'a> {
    pub record: &'a WriteRecord,
    /// The counter of the state the write started from: the previous state's, or a blank
    /// card's [`COUNTER_START`].
    pub previous_counter: u32,
    pub amount: Amount,
    pub encoded: Vec<u8>,
    pub digest: [u8; 32],
    /// The previous state was written by a machine listed since (`store.rs` alerts it when
    /// the center holds no record of that state).
    pub previous_writer_listed: bool,
}

/// The role that writes records of `kind`.
fn writer_role(kind: WriteKind) -> Role {
    match kind {
        WriteKind::Charge => Role::ChargeMachine,
        WriteKind::Payment => Role::PaymentMachine,
    }
}

fn kind_name(kind: WriteKind) -> &'static str {
    match kind {
        WriteKind::Charge => "charge",
        WriteKind::Payment => "payment",
    }
}

impl Center {
    /// Every check of one record uploaded by `machine` (installed with `role`, certified
    /// key `machine_key`).
    pub(crate) fn check_write<'a>(
        &mut self,
        machine: DeviceId,
        role: Role,
        machine_key: &PublicKey,
        record: &'a WriteRecord,
        writers: &mut WriterKeys,
    ) -> Result<CheckedWrite<'a>, WriteError> {
        if writer_role(record.kind) != role {
            return Err(format!(
                "a {} record from a machine that is not a {} machine",
                kind_name(record.kind),
                kind_name(record.kind)
            )
            .into());
        }
        let written = &record.written;
        if written.writer != machine {
            return Err("the written state was signed by another machine".into());
        }
        let amount = record
            .amount()
            .filter(|amount| *amount > Amount::ZERO)
            .ok_or("the balances must move value in the direction of the kind of write")?;
        if written.counter >= COUNTER_START || written.value_area == ValueArea::Blank {
            return Err(
                "the written state's counter or value is not one a card shows after a write".into(),
            );
        }
        let previous_counter = check_chain(record)?;
        machine_key
            .verify(&written.signing_input(), &written.signature)
            .map_err(|_| "the machine's signature over the written state does not verify")?;
        let mut previous_writer_listed = false;
        if let Some(previous) = &record.previous {
            let (key, listed) = self.previous_writer_key(previous.writer, writers)?;
            key.verify(&previous.signing_input(), &previous.signature)
                .map_err(|_| "the signature over the previous state does not verify")?;
            previous_writer_listed = listed;
        }
        let written_amount = self.open_value(written)?;
        if written_amount != record.balance_after {
            return Err(format!(
                "the written state holds {written_amount}, the record says {}",
                record.balance_after
            )
            .into());
        }
        if let Some(previous) = &record.previous {
            let previous_amount = self.open_value(previous)?;
            if previous_amount != record.balance_before {
                return Err(format!(
                    "the previous state holds {previous_amount}, the record says {}",
                    record.balance_before
                )
                .into());
            }
        }
        let encoded = record.encode();
        let digest = sha256(&encoded);
        Ok(CheckedWrite {
            record,
            previous_counter,
            amount,
            encoded,
            digest,
            previous_writer_listed,
        })
    }

    /// The amount a signed state holds, opening a sealed value (claim 4) under the value
    /// key the center derives for its writer.
    fn open_value(&self, state: &SignedState) -> Result<Amount, WriteError> {
        let key = writer_value_key(&self.keys.common_key, &state.writer);
        match state
            .value_area
            .open(Some(&key), &state.card_id, state.counter, &state.writer)
        {
            Ok(Some(value)) => Ok(value.amount),
            Ok(None) => Err("a state without a value".into()),
            Err(error) => Err(format!("a state's value does not open: {error}").into()),
        }
    }

    /// The certified key of the machine that wrote a previous state: any machine the
    /// center ever installed (a listed machine's earlier writes stay verifiable), never a
    /// device of another role.
    fn previous_writer_key(
        &mut self,
        writer: DeviceId,
        writers: &mut WriterKeys,
    ) -> Result<(PublicKey, bool), WriteError> {
        if let Some(known) = writers.keys.get(&writer) {
            return known.clone().map_err(WriteError::Refused);
        }
        let row = self
            .db
            .query_optional(
                "SELECT signing_key, role, status FROM devices WHERE device_id = $1 AND status != 'allocated'",
                &[writer.0[..].into()],
            )
            .map_err(WriteError::Center)?;
        let found = match row {
            None => Err(format!(
                "the previous state was written by {writer}, a machine the center never installed"
            )),
            Some(row) => {
                let role = u8::try_from(row.int(1).map_err(WriteError::Center)?)
                    .ok()
                    .and_then(Role::from_u8);
                if role.is_some_and(is_machine) {
                    let bytes = row.bytes(0).map_err(WriteError::Center)?;
                    let key = PublicKey::from_bytes(&bytes).map_err(|_| {
                        WriteError::Center(CenterError::Storage(format!(
                            "stored key of device {writer} is invalid"
                        )))
                    })?;
                    let listed = row.text(2).map_err(WriteError::Center)? == "retired";
                    Ok((key, listed))
                } else {
                    Err(format!(
                        "the previous state was written by {writer}, which is not a memory-card machine"
                    ))
                }
            }
        };
        writers.keys.insert(writer, found.clone());
        found.map_err(WriteError::Refused)
    }
}

/// The previous state is an earlier state of the same card with a value, or absent for a
/// first charge of a blank card; returns the counter the write started from.
fn check_chain(record: &WriteRecord) -> Result<u32, WriteError> {
    match &record.previous {
        Some(previous) => {
            if previous.card_id != record.written.card_id {
                return Err("the previous state is another card's".into());
            }
            if previous.counter <= record.written.counter || previous.counter > COUNTER_START {
                return Err("the counter did not go down from the previous state".into());
            }
            if previous.value_area == ValueArea::Blank {
                return Err("the previous state holds no value".into());
            }
            Ok(previous.counter)
        }
        None if record.kind == WriteKind::Charge && record.balance_before == Amount::ZERO => {
            Ok(COUNTER_START)
        }
        None => Err("only a first charge of a blank card comes without a previous state".into()),
    }
}
