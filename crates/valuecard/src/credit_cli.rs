//! Credit mode from the command line (seed 003, Figs. 13-17): enabling it at issuance
//! (`card issue --credit`), registering or changing the password and recording a service at a
//! terminal, uploading the signed service records, and the center's monthly statements.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use valuecard_center::Center;
use valuecard_core::messages::credit::{Password, SettingNumber};
use valuecard_core::money::Amount;
use valuecard_core::time::Date;
use valuecard_reader::CardReader;
use valuecard_terminal::store::TerminalStore;

use crate::datadir;
use crate::lifecycle::{explain, open_reader, parse_amount, ReaderArgs};

fn print(json_output: bool, value: serde_json::Value, text: impl FnOnce()) {
    if json_output {
        println!("{value}");
    } else {
        text();
    }
}

pub fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text).ok_or_else(|| format!("{text:?} is not a date: use YYYY-MM-DD"))
}

fn parse_password(text: &str) -> Result<Password, String> {
    Password::parse(text).map_err(|_| "a password is 4 to 12 decimal digits".to_owned())
}

/// Fig. 13's issuance data through the dispenser; returns the expiry and the setting number
/// the center handed out for the holder.
pub fn enable_at_issuance(
    dispenser: &mut datadir::CliDispenser,
    reader: &mut impl CardReader,
    center: &mut Center,
    expiry: Option<Date>,
) -> Result<(Date, SettingNumber), String> {
    let enabled = dispenser
        .enable_credit(reader, center, expiry)
        .map_err(|e| explain(&e))?;
    let setting_number = center
        .take_setting_number(&enabled.card_id)
        .ok_or_else(|| {
            format!(
                "credit on card {} was enabled before; its setting number was handed out then",
                enabled.card_id
            )
        })?;
    Ok((enabled.expiry, setting_number))
}

/// `center statements`: per card, the service records dated in the month and their total.
pub fn center_statements(
    data: &Path,
    database: Option<&str>,
    month: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut center = datadir::open_center_on(data, database)?;
    let statement = center.statement(month).map_err(|e| e.to_string())?;
    let total = |minor: u64| {
        Amount::new(minor)
            .map(|amount| amount.to_string())
            .unwrap_or_else(|_| format!("{minor} (minor units)"))
    };
    print(
        json_output,
        json!({
            "month": statement.month,
            "total": statement.total_minor,
            "cards": statement.cards.iter().map(|card| json!({
                "card": card.card_id.to_string(),
                "total": card.total_minor,
                "records": card.lines.iter().map(|line| json!({
                    "date": line.date.to_string(),
                    "terminal": line.terminal_id.to_string(),
                    "sequence": line.terminal_sequence,
                    "service_number": line.service_number,
                    "amount": line.amount.minor(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        || {
            println!(
                "statements for {}: {} cards, {} charged",
                statement.month,
                statement.cards.len(),
                total(statement.total_minor)
            );
            for card in &statement.cards {
                println!("card {}: {}", card.card_id, total(card.total_minor));
                for line in &card.lines {
                    println!(
                        "  {} terminal {} #{:<6} service {:<4} {:>10}",
                        line.date,
                        line.terminal_id,
                        line.terminal_sequence,
                        line.service_number,
                        line.amount
                    );
                }
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// `terminal credit-password`: register a password with the setting number (Figs. 13 and
/// 15), or change it with the current one (Fig. 14).
pub fn terminal_credit_password(
    data: &Path,
    terminal: &str,
    reader_args: &ReaderArgs,
    setting_number: Option<&str>,
    current: Option<&str>,
    password: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let new = parse_password(password)?;
    let mut terminal = datadir::open_terminal(data, terminal)?;
    let mut boxed = open_reader(reader_args)?;
    let mut reader: &mut dyn CardReader = &mut *boxed;
    let session = terminal.open_credit(&mut reader).map_err(|e| explain(&e))?;
    let action = match (setting_number, current) {
        (Some(number), None) => {
            let number = SettingNumber::parse(number)
                .map_err(|_| "a setting number is 8 decimal digits".to_owned())?;
            terminal
                .register_password(&mut reader, &session, &number, &new)
                .map_err(|e| explain(&e))?;
            "registered"
        }
        (None, Some(current)) => {
            let current = parse_password(current)?;
            terminal
                .change_password(&mut reader, &session, &current, &new)
                .map_err(|e| explain(&e))?;
            "changed"
        }
        _ => return Err("give either --setting-number or --current-password".into()),
    };
    print(
        json_output,
        json!({"card": session.card_id().to_string(), "password": action, "credit_expiry": session.status().expiry.to_string()}),
        || println!("card {}: password {action}", session.card_id()),
    );
    Ok(ExitCode::SUCCESS)
}

/// `terminal credit-service`: the holder's password, then the record of a service charged
/// `amount`, signed by the card (Figs. 16 and 17).
pub fn terminal_credit_service(
    data: &Path,
    terminal: &str,
    reader_args: &ReaderArgs,
    password: &str,
    amount: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let password = parse_password(password)?;
    let amount = parse_amount(amount)?;
    let mut terminal = datadir::open_terminal(data, terminal)?;
    let mut boxed = open_reader(reader_args)?;
    let mut reader: &mut dyn CardReader = &mut *boxed;
    let served = terminal
        .credit_service(&mut reader, &password, amount)
        .map_err(|e| explain(&e))?;
    let record = served.record;
    print(
        json_output,
        json!({
            "card": record.card_id.to_string(),
            "terminal": record.terminal_id.to_string(),
            "sequence": record.terminal_sequence,
            "service_number": record.service_number,
            "amount": record.amount.minor(),
            "date": record.date.to_string(),
        }),
        || {
            println!(
                "charged {} to card {} on {} (record {}, the card's service {})",
                record.amount,
                record.card_id,
                record.date,
                record.terminal_sequence,
                record.service_number
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// `terminal credit-upload`: send the terminal's signed service records to the center.
pub fn terminal_credit_upload(
    data: &Path,
    terminal_name: &str,
    at: &datadir::CenterArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal_name)?;
    let receipt = match &at.center {
        Some(url) => {
            let mut link = datadir::open_terminal_link(data, terminal_name, url)?;
            terminal.upload_service_records(&mut link)
        }
        None => {
            let mut center = datadir::open_center_on(data, at.database.as_deref())?;
            terminal.upload_service_records(&mut center)
        }
    }
    .map_err(|e| explain(&e))?;
    let in_doubt = terminal
        .store()
        .services()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|s| s.status == valuecard_terminal::store::ServiceStatus::InDoubt)
        .count();
    print(
        json_output,
        json!({
            "stored": receipt.stored,
            "duplicates": receipt.duplicates,
            "refused": receipt.refused.iter().map(|(sequence, reason)| json!({"sequence": sequence, "reason": reason})).collect::<Vec<_>>(),
            "in_doubt": in_doubt,
        }),
        || {
            println!(
                "service records: {} stored, {} already stored, {} refused, {} in doubt",
                receipt.stored,
                receipt.duplicates,
                receipt.refused.len(),
                in_doubt
            );
            for (sequence, reason) in &receipt.refused {
                println!("  record {sequence} refused: {reason}");
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}
