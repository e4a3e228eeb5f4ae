//! The operator's commands at the center (lost cards, stolen terminals, restoring a destroyed
//! card) and a terminal's periodic exchange with the center (uploads, lists, stamps).

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use valuecard_card::FileCard;
use valuecard_center::reconcile::ReconciliationStatus;
use valuecard_core::ids::{CardId, DeviceId};
use valuecard_core::messages::center::{ListReason, TerminalLink};
use valuecard_reader::InProcessReader;

use crate::datadir::{self, CenterArgs};
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
    at: &CenterArgs,
    work: impl FnOnce(&mut dyn TerminalLink) -> Result<T, String>,
) -> Result<T, String> {
    match &at.center {
        Some(url) => {
            let mut link = datadir::open_terminal_link(data, terminal, url)?;
            work(&mut link)
        }
        None => {
            let mut center = datadir::open_center_on(data, at.database.as_deref())?;
            work(&mut center)
        }
    }
}

/// Upload the terminal's purchases, fetch the list entries it lacks.
pub fn terminal_sync(
    data: &Path,
    terminal_name: &str,
    at: &CenterArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal_name)?;
    let (receipt, version) = with_terminal_link(data, terminal_name, at, |link| {
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
    at: &CenterArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal_name)?;
    let count = with_terminal_link(data, terminal_name, at, |link| {
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

/// `center float-limit`: a charge machine's float limit (memory cards, seed 001).
pub fn center_float_limit(
    data: &Path,
    database: Option<&str>,
    device: &str,
    limit: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let device_id: DeviceId = device
        .parse()
        .map_err(|e: valuecard_core::ids::IdError| e.to_string())?;
    let limit = crate::lifecycle::parse_amount(limit)?;
    let mut center = datadir::open_center_on(data, database)?;
    center
        .set_float_limit(device_id, limit.minor())
        .map_err(|e| format!("{e} (a float limit is for charge machines)"))?;
    print(
        json_output,
        json!({"machine": device_id.to_string(), "float_limit": limit.minor()}),
        || println!("charge machine {device_id} may hold up to {limit} of float unaccounted"),
    );
    Ok(ExitCode::SUCCESS)
}

/// The restore procedure for a destroyed card: list the old card, issue a new card image
/// with the old card's remaining value through a dispenser.
/// Where a restored card's value goes, and the holding period before it does.
#[derive(Debug)]
pub struct RestoreTarget<'a> {
    pub out: &'a Path,
    pub dispenser_name: &'a str,
    pub hold_days: u32,
}

pub fn center_restore(
    data: &Path,
    database: Option<&str>,
    card: &str,
    target: RestoreTarget<'_>,
    json_output: bool,
) -> Result<ExitCode, String> {
    let RestoreTarget {
        out,
        dispenser_name,
        hold_days,
    } = target;
    let old = parse_card(card)?;
    if out.exists() {
        return Err(format!(
            "{} already exists; a card image is never overwritten",
            out.display()
        ));
    }
    let mut center = datadir::open_center_on(data, database)?;
    let mut dispenser = datadir::open_dispenser(data, dispenser_name)?;
    let value = match center
        .restore_card_holding(&old, hold_days)
        .map_err(|e| e.to_string())?
    {
        valuecard_center::lists::Restoration::Restored { amount } => amount,
        valuecard_center::lists::Restoration::Held { until } => {
            print(
                json_output,
                json!({"old_card": old.to_string(), "held_until": until.to_string()}),
                || {
                    println!(
                        "card {old} is listed and blocked; its remaining value is held until {until} \
                         while terminals sync and upload what it spent: run this again then"
                    )
                },
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
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

/// Minor units as currency, for totals (which may exceed the largest card balance an
/// `Amount` holds) and signed differences.
pub(crate) fn money(minor: i128) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!("{sign}{}.{:02}", minor / 100, minor % 100)
}

/// A signed total for JSON (whose integers a reader takes as i64 at most).
fn json_int(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// What the center cannot see from its own records, said with every status.
const NOT_KNOWN_HERE: &str = "purchases at terminals that have not synced: until they are \
     uploaded, spent misses them and the remaining value overstates what those cards hold \
     (unless a later load already showed a card's lower balance)";

/// `center status`: cards, devices, the loads in flight, and the reconciliation of value
/// (issued + loaded - restored - spent against the remaining value on record).
pub fn center_status(
    data: &Path,
    database: Option<&str>,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut center = datadir::open_center_on(data, database)?;
    let totals = center.reconciliation().map_err(|e| e.to_string())?;
    let pending = center.pending_loads().map_err(|e| e.to_string())?;
    let cards = center.card_count().map_err(|e| e.to_string())?;
    let devices = datadir::devices(data)?;
    // Transfers received whose source has not shown the debit within the hold period are
    // alerted when the center next looks, uploads or not.
    center
        .sweep_unsettled_transfers()
        .map_err(|e| e.to_string())?;
    let alerts = center.alerts().map_err(|e| e.to_string())?;
    let generations = center.key_generations().map_err(|e| e.to_string())?;
    let status = totals.status();
    let center_id = center.anchor().center;
    let verdict = match status {
        ReconciliationStatus::Reconciled => "reconciled".to_owned(),
        ReconciliationStatus::UploadsOutstanding if totals.difference() >= 0 => {
            "open: memory-card records show writes their machines have not uploaded yet (see \
             memory cards above)"
                .to_owned()
        }
        ReconciliationStatus::UploadsOutstanding => format!(
            "{} short: loads showed that cards spent more than the terminals uploaded so far \
             (run `terminal sync` at every terminal)",
            money(-totals.difference())
        ),
        ReconciliationStatus::LoadsInFlight => format!(
            "open while {} in loads and {} in transfers is in flight (settle those loads with \
             `terminal settle`; a transfer settles at its source card's next settlement session)",
            money(totals.in_flight.into()),
            money(totals.transfers.in_flight.into())
        ),
        ReconciliationStatus::Excess if totals.purse_status() != ReconciliationStatus::Excess => {
            "EXCESS in the memory cards' books (see memory cards above)".to_owned()
        }
        ReconciliationStatus::Excess => format!(
            "EXCESS of {}: cards on record hold more than was paid in and not spent (a copied \
             card spending one state twice, or a card claiming more than it held)",
            money(totals.difference())
        ),
    };
    print(
        json_output,
        json!({
            "center": center_id.to_string(),
            "cards": cards,
            "issued": totals.issued,
            "loaded": totals.loaded,
            "restored": totals.restored,
            "spent": totals.spent,
            "purchases": totals.purchases,
            "loads_in_flight": totals.in_flight_count,
            "loads_in_flight_minor": totals.in_flight,
            "remaining": totals.remaining,
            "cards_with_remaining": totals.cards_with_remaining,
            "expected_remaining": json_int(totals.expected_remaining()),
            "difference": json_int(totals.difference()),
            "reconciliation": status.as_str(),
            "reconciled": status == ReconciliationStatus::Reconciled,
            "transfers": crate::transfer_cli::status_json(&generations, &totals.transfers),
            "memory_cards": memcard_json(&totals.memcards),
            "online": json!({
                "charged": totals.online.charged,
                "charges": totals.online.charges,
                "spent": totals.online.spent,
                "payments": totals.online.payments,
            }),
            "moves": json!({
                "moved": totals.moves.moved,
                "moves": totals.moves.moves,
            }),
            "not_known_here": NOT_KNOWN_HERE,
            "pending_loads": pending.iter().map(|p| json!({"card": p.card_id.to_string(), "load_number": p.load_number, "amount": p.amount.minor(), "dispenser": p.dispenser_id.to_string()})).collect::<Vec<_>>(),
            "alerts": alerts.iter().map(|a| json!({"subject": hex::encode_upper(a.subject), "kind": a.kind, "detail": a.detail, "raised_on": valuecard_core::time::Date(a.raised_on).to_string()})).collect::<Vec<_>>(),
            "devices": devices.iter().map(|(name, role)| json!({"name": name, "role": role})).collect::<Vec<_>>(),
        }),
        || {
            println!(
                "center {center_id}: {cards} cards, {} devices",
                devices.len()
            );
            println!(
                "  issued {}  loaded {}  restored {}  spent {} ({} purchases uploaded)",
                money(totals.issued.into()),
                money(totals.loaded.into()),
                money(totals.restored.into()),
                money(totals.spent.into()),
                totals.purchases
            );
            println!(
                "  in flight {} ({} loads)",
                money(totals.in_flight.into()),
                totals.in_flight_count
            );
            for load in &pending {
                println!(
                    "    load {} of card {}: {} (held by dispenser {} until the card's evidence settles it)",
                    load.load_number, load.card_id, load.amount, load.dispenser_id
                );
            }
            println!(
                "  remaining value on record {} ({} cards)",
                money(totals.remaining.into()),
                totals.cards_with_remaining
            );
            crate::transfer_cli::print_status(&generations, &totals.transfers);
            print_memcards(&totals.memcards);
            println!(
                "  online: charged {} ({} charges), spent {} ({} payments)",
                money(totals.online.charged.into()),
                totals.online.charges,
                money(totals.online.spent.into()),
                totals.online.payments
            );
            println!(
                "  moved to new chips: {} ({} moves; the old cards are out of the remaining value)",
                money(totals.moves.moved.into()),
                totals.moves.moves
            );
            println!(
                "  issued + loaded + charged online - restored - spent - spent online = {}: {verdict}",
                money(totals.expected_remaining())
            );
            println!("  not known here: {NOT_KNOWN_HERE}");
            println!("  alerts: {}", alerts.len());
            for alert in &alerts {
                println!(
                    "    {} {} {}: {}",
                    valuecard_core::time::Date(alert.raised_on),
                    hex::encode_upper(alert.subject),
                    alert.kind,
                    alert.detail
                );
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// What the center cannot see of memory cards, said with every status.
const MEMCARD_NOT_KNOWN_HERE: &str = "writes the machines have not uploaded: a later record \
     of the same card shows them as a gap; a card not seen since shows its last uploaded value";

/// The memory cards' books (seed 001) in `center status --json`.
fn memcard_json(memcards: &valuecard_center::memcard::MemcardTotals) -> serde_json::Value {
    json!({
        "float_granted": memcards.float_granted,
        "grants": memcards.grants,
        "charged": memcards.charged,
        "charges": memcards.charges,
        "spent": memcards.spent,
        "payments": memcards.payments,
        "on_cards": memcards.on_cards,
        "cards": memcards.cards,
        "float_in_machines": memcards.float_in_machines,
        "charged_beyond_float": memcards.charged_beyond_float,
        "gaps": memcards.gaps,
        "charged_in_gaps": memcards.charged_in_gaps,
        "spent_in_gaps": memcards.spent_in_gaps,
        "states_spent_twice": memcards.states_spent_twice,
        "expected_on_cards": json_int(memcards.expected_on_cards()),
        "unexplained": json_int(memcards.unexplained()),
        "status": memcards.status().as_str(),
        "not_known_here": MEMCARD_NOT_KNOWN_HERE,
    })
}

/// The memory cards' books (seed 001) in `center status`.
fn print_memcards(memcards: &valuecard_center::memcard::MemcardTotals) {
    use valuecard_center::memcard::MemcardStatus;
    println!(
        "  memory cards: float granted {} ({} grants) = charged {} ({} charges) + float in machines {} - charged beyond float {}",
        money(memcards.float_granted.into()),
        memcards.grants,
        money(memcards.charged.into()),
        memcards.charges,
        money(memcards.float_in_machines.into()),
        money(memcards.charged_beyond_float.into()),
    );
    println!(
        "    spent {} ({} payments); on cards {} ({} cards); gaps {} (charged {}, spent {} not uploaded)",
        money(memcards.spent.into()),
        memcards.payments,
        money(memcards.on_cards.into()),
        memcards.cards,
        memcards.gaps,
        money(memcards.charged_in_gaps.into()),
        money(memcards.spent_in_gaps.into()),
    );
    let verdict = match memcards.status() {
        MemcardStatus::Reconciled => "reconciled".to_owned(),
        MemcardStatus::UploadsOutstanding => format!(
            "open: {} records show writes not uploaded yet (run each machine's upload)",
            memcards.gaps
        ),
        MemcardStatus::Excess => format!(
            "EXCESS: unexplained {}, {} card states spent twice, {} charged beyond float",
            money(memcards.unexplained()),
            memcards.states_spent_twice,
            money(memcards.charged_beyond_float.into()),
        ),
    };
    println!(
        "    charged - spent + charged in gaps - spent in gaps = {}: {verdict}",
        money(memcards.expected_on_cards())
    );
    println!("    not known here: {MEMCARD_NOT_KNOWN_HERE}");
}
