//! The center's commands for card-to-card transfer (seed 000): rotating the transfer key and
//! the update key, and the transfer lines of `center status`.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use valuecard_center::transfer_keys::{KeyGenerations, KeyKind};
use valuecard_center::transfers::TransferTotals;

use crate::datadir;

/// `center rotate-transfer-key` and `center rotate-update-key`: move one key to its next
/// generation and print it. Cards take the new transfer key at their next load (or from a
/// peer card); the upper limit the center hands out moves with it.
pub fn center_rotate(
    data: &Path,
    database: Option<&str>,
    kind: KeyKind,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut center = datadir::open_center_on(data, database)?;
    let generation = match kind {
        KeyKind::Transfer => center.rotate_transfer_key(),
        KeyKind::Update => center.rotate_update_key(),
    }
    .map_err(|e| e.to_string())?;
    let generations = center.key_generations().map_err(|e| e.to_string())?;
    if json_output {
        println!(
            "{}",
            json!({
                "key": kind.as_str(),
                "generation": generation,
                "transfer_key": generations.transfer,
                "transfer_key_limit": generations.limit(),
                "update_key": generations.update,
            })
        );
    } else {
        println!(
            "{} key rotated to generation {generation} (cards receive it with their next load)",
            kind.as_str()
        );
        if kind == KeyKind::Transfer {
            println!(
                "  cards now accept transfer keys up to generation {} from a peer",
                generations.limit()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON members `center status` adds for transfers.
pub fn status_json(generations: &KeyGenerations, transfers: &TransferTotals) -> serde_json::Value {
    json!({
        "transfer_key": generations.transfer,
        "transfer_key_limit": generations.limit(),
        "update_key": generations.update,
        "completed": transfers.completed,
        "completed_count": transfers.completed_count,
        "received": transfers.received,
        "received_count": transfers.received_count,
        "in_flight": transfers.in_flight,
        "in_flight_count": transfers.in_flight_count,
        "undone": transfers.undone,
        "undone_count": transfers.undone_count,
        "in_doubt_count": transfers.in_doubt_count,
    })
}

/// The lines `center status` prints for transfers.
pub fn print_status(generations: &KeyGenerations, transfers: &TransferTotals) {
    println!(
        "  transfer key generation {} (cards accept up to {}), update key generation {}",
        generations.transfer,
        generations.limit(),
        generations.update
    );
    println!(
        "  transfers: {} completed ({}), {} received with the source's debit not reported ({}), {} undone ({}), {} without a proof yet",
        crate::operations::money(transfers.completed.into()),
        transfers.completed_count,
        crate::operations::money(transfers.in_flight.into()),
        transfers.in_flight_count,
        crate::operations::money(transfers.undone.into()),
        transfers.undone_count,
        transfers.in_doubt_count
    );
}
