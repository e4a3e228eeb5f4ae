//! The operator's commands at the center (lost cards, stolen terminals, restoring a destroyed
//! card) and a terminal's periodic exchange with the center (uploads, lists, stamps).

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use valuecard_card::FileCard;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{ListReason, TerminalLink};
use valuecard_reader::InProcessReader;

use crate::datadir;
use crate::lifecycle::explain;

fn print(json_output: bool, value: serde_json::Value, text: impl FnOnce()) {
    if json_output {
        println!("{value}");
    } else {
        text();
    }
}

/// A terminal's link to the center: the HTTP service at `url`, or the center's database in
/// the data directory.
fn with_terminal_link<T>(
    data: &Path,
    terminal: &str,
    database: Option<&str>,
    url: Option<&str>,
    work: impl FnOnce(&mut dyn TerminalLink) -> Result<T, String>,
) -> Result<T, String> {
    match url {
        Some(url) => {
            let mut link = datadir::open_terminal_link(data, terminal, url)?;
            work(&mut link)
        }
        None => {
            let mut center = datadir::open_center_on(data, database)?;
            work(&mut center)
        }
    }
}

/// Upload the terminal's purchases, fetch the list entries it lacks.
pub fn terminal_sync(
    data: &Path,
    terminal_name: &str,
    database: Option<&str>,
    url: Option<&str>,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal_name)?;
    let (receipt, version) = with_terminal_link(data, terminal_name, database, url, |link| {
        let receipt = terminal
            .upload_usage(&mut &mut *link)
            .map_err(|e| explain(&e))?;
        let version = terminal
            .update_lists(&mut &mut *link)
            .map_err(|e| explain(&e))?;
        Ok((receipt, version))
    })?;
    print(
        json_output,
        json!({
            "terminal": terminal.device_id().to_string(),
            "stored": receipt.stored,
            "duplicates": receipt.duplicates,
            "refused": receipt.refused.iter().map(|(sequence, reason)| json!({"sequence": sequence, "reason": reason})).collect::<Vec<_>>(),
            "clones_detected": receipt.clones_detected.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "list_version": version,
        }),
        || {
            println!(
                "terminal {}: {} records stored, {} already there, {} refused; lists at version {version}",
                terminal.device_id(),
                receipt.stored,
                receipt.duplicates,
                receipt.refused.len()
            );
            for card in &receipt.clones_detected {
                println!("  card {card} found cloned: listed everywhere");
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// Report the terminal's time stamp (daily) to the center; the SAM has advanced it on its own
/// clock.
pub fn terminal_advance_stamp(
    data: &Path,
    terminal_name: &str,
    database: Option<&str>,
    url: Option<&str>,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal_name)?;
    let count = with_terminal_link(data, terminal_name, database, url, |link| {
        terminal
            .advance_stamp(&mut &mut *link)
            .map_err(|e| explain(&e))
    })?;
    datadir::save_terminal_sam(data, terminal_name, &terminal)?;
    print(
        json_output,
        json!({"terminal": terminal.device_id().to_string(), "stamp_count": count}),
        || {
            println!(
                "terminal {}: time stamp {count} (days since installation) reported",
                terminal.device_id()
            );
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_card(text: &str) -> Result<CardId, String> {
    text.parse()
        .map_err(|e: valuecard_core::ids::IdError| e.to_string())
}

pub fn center_report_card(
    data: &Path,
    database: Option<&str>,
    card: &str,
    reason: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let card_id = parse_card(card)?;
    let reason = match reason {
        "lost" => ListReason::Lost,
        "stolen" => ListReason::Stolen,
        other => return Err(format!("{other:?} is not a reason: use lost or stolen")),
    };
    let mut center = datadir::open_center_on(data, database)?;
    let added = center
        .report_card(&card_id, reason)
        .map_err(|e| e.to_string())?;
    let version = center.list_version().map_err(|e| e.to_string())?;
    print(
        json_output,
        json!({"card": card_id.to_string(), "reason": reason.as_str(), "newly_listed": added, "list_version": version}),
        || {
            println!(
            "card {card_id} {} as {}; terminals refuse it after their next sync (list version {version})",
            if added { "listed" } else { "was already listed" },
            reason.as_str()
        );
        },
    );
    Ok(ExitCode::SUCCESS)
}

pub fn center_report_terminal(
    data: &Path,
    database: Option<&str>,
    device: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let device_id: DeviceId = device
        .parse()
        .map_err(|e: valuecard_core::ids::IdError| e.to_string())?;
    let mut center = datadir::open_center_on(data, database)?;
    let count = center
        .report_stolen_terminal(device_id)
        .map_err(|e| e.to_string())?;
    print(
        json_output,
        json!({"terminal": device_id.to_string(), "stamp_count_at_report": count}),
        || {
            println!(
            "terminal {device_id} listed as stolen at stamp count {count}: cards it writes later are refused everywhere"
        );
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// The restore procedure for a destroyed card: list the old card, issue a new card image
/// with the old card's remaining value through a dispenser.
pub fn center_restore(
    data: &Path,
    database: Option<&str>,
    card: &str,
    out: &Path,
    dispenser_name: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let old = parse_card(card)?;
    if out.exists() {
        return Err(format!(
            "{} already exists; a card image is never overwritten",
            out.display()
        ));
    }
    let mut center = datadir::open_center_on(data, database)?;
    let mut dispenser = datadir::open_dispenser(data, dispenser_name)?;
    let value = center.restore_card(&old).map_err(|e| e.to_string())?;
    let (serial, transport_key) = center.manufacture_chip();
    let card = FileCard::manufacture_file(out, serial, transport_key)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let mut reader = InProcessReader::with_card("dispenser", card);
    let new = dispenser
        .issue_card(&mut reader, &mut center)
        .map_err(|e| explain(&e))?;
    if value > valuecard_core::money::Amount::ZERO {
        dispenser
            .load(&mut reader, &mut center, value)
            .map_err(|e| explain(&e))?;
    }
    print(
        json_output,
        json!({"old_card": old.to_string(), "new_card": new.to_string(), "value": value.minor(), "image": out.display().to_string()}),
        || {
            println!("card {old} listed and replaced by card {new} holding its remaining value {value} ({})", out.display())
        },
    );
    Ok(ExitCode::SUCCESS)
}
