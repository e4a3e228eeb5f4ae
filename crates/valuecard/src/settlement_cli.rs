//! The settlement terminal on the command line (seed 000): card-to-card transfer between two
//! cards, each in a reader of its own (two PC/SC readers, or two card images in this
//! process), the settlement of a transfer a lost answer left pending, and the terminal's
//! history and periodic exchange with the center.
//!
//! The terminal never holds a transfer key and never decides a transfer's outcome by itself:
//! when an answer is lost, it says so, exits with [`IN_DOUBT_EXIT`], and the same two cards
//! settle it the next time they are presented together.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};
use valuecard_card::FileCard;
use valuecard_core::messages::center::{TerminalLink, UploadReceipt};
use valuecard_core::messages::transfer::{TransferLink, TransferOutcome};
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_terminal::store::{StoredTransfer, TerminalStore};
use valuecard_terminal::transfer::{KeyUpdate, RecoveryOutcome, TransferReceipt};
use valuecard_terminal::TerminalError;

use crate::datadir::{self, CenterArgs};
use crate::lifecycle;

/// Exit status when a transfer is in doubt: a card may have committed its step, and only
/// presenting both cards again tells. Refusals exit with 2, like every other command.
pub const IN_DOUBT_EXIT: u8 = 3;
/// Exit status of a refusal (nothing changed, or what changed is settled already).
pub(crate) const REFUSED_EXIT: u8 = 2;
/// The settlement terminal `center init` installs.
pub(crate) const DEFAULT_SETTLEMENT: &str = "settlement-1";

/// The two cards of a transfer: two card images in this process, or two PC/SC readers.
#[derive(clap::Args, Debug, Clone)]
pub struct TwoCards {
    /// The source card's image, used in this process (with --to-card).
    #[arg(
        long,
        value_name = "FILE",
        requires = "to_card",
        conflicts_with_all = ["from_reader", "to_reader"]
    )]
    pub from_card: Option<PathBuf>,
    /// The destination card's image, used in this process (with --from-card).
    #[arg(long, value_name = "FILE", requires = "from_card")]
    pub to_card: Option<PathBuf>,
    /// The PC/SC reader holding the source card: a name (or part of one) or an index from
    /// `valuecard terminal readers` (with --to-reader).
    #[arg(long, value_name = "READER", requires = "to_reader")]
    pub from_reader: Option<String>,
    /// The PC/SC reader holding the destination card (with --from-reader).
    #[arg(
        long,
        value_name = "READER",
        requires = "from_reader",
        conflicts_with_all = ["from_card", "to_card"]
    )]
    pub to_reader: Option<String>,
    /// Seconds to wait for a card in each reader.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
}

/// `terminal transfer`.
#[derive(clap::Args, Debug)]
pub struct TransferArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Amount in currency units with up to two decimals, e.g. 12.50.
    #[arg(long)]
    pub amount: String,
    #[arg(long, default_value = DEFAULT_SETTLEMENT)]
    pub terminal: String,
    #[command(flatten)]
    pub cards: TwoCards,
    #[arg(long)]
    pub json: bool,
}

/// `terminal settle-transfer`.
#[derive(clap::Args, Debug)]
pub struct SettleTransferArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = DEFAULT_SETTLEMENT)]
    pub terminal: String,
    #[command(flatten)]
    pub cards: TwoCards,
    #[arg(long)]
    pub json: bool,
}

/// Why a settlement command stopped.
enum Failure {
    /// The terminal (or a card through it) refused, or an answer was lost.
    Terminal(TerminalError),
    /// Everything before the terminal: arguments, files, readers.
    Setup(String),
}

impl From<TerminalError> for Failure {
    fn from(error: TerminalError) -> Self {
        Failure::Terminal(error)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Setup(message)
    }
}

/// A terminal error in words the operator of a settlement terminal can act on.
pub(crate) fn explain(error: &TerminalError) -> String {
    match error {
        TerminalError::TransferInDoubt { sequence } => format!(
            "transfer {sequence} is in doubt: present both cards again \
             (`valuecard terminal settle-transfer` with the same two cards; the next transfer \
             between the same two cards settles it first)"
        ),
        TerminalError::InsufficientBalance { balance, amount } => format!(
            "the source card can pass on {balance}, the transfer needs {amount}; nothing was changed"
        ),
        TerminalError::SameCard => {
            "both readers hold the same card: put the destination card in the other reader"
                .to_owned()
        }
        TerminalError::Reader(reader) => format!(
            "a card stopped answering ({reader}): present both cards again; `valuecard terminal \
             settle-transfer` settles whatever either card committed"
        ),
        other => lifecycle::explain(other),
    }
}

/// Prints a failure (with `--json`, also as one object on standard output) and gives the
/// exit status: [`IN_DOUBT_EXIT`] when a transfer is in doubt, 2 otherwise.
fn report_failure(failure: &Failure, json_output: bool) -> ExitCode {
    let (message, in_doubt) = match failure {
        Failure::Terminal(error) => (
            explain(error),
            match error {
                TerminalError::TransferInDoubt { sequence } => Some(*sequence),
                _ => None,
            },
        ),
        Failure::Setup(message) => (message.clone(), None),
    };
    if json_output {
        println!("{}", json!({"error": message, "in_doubt": in_doubt}));
    }
    eprintln!("valuecard: {message}");
    ExitCode::from(if in_doubt.is_some() {
        IN_DOUBT_EXIT
    } else {
        REFUSED_EXIT
    })
}

/// The source's reader and the destination's.
type Readers = (Box<dyn CardReader>, Box<dyn CardReader>);

/// The two readers, source first.
fn open_readers(cards: &TwoCards) -> Result<Readers, String> {
    match (
        &cards.from_card,
        &cards.to_card,
        &cards.from_reader,
        &cards.to_reader,
    ) {
        (Some(from), Some(to), None, None) => {
            // The image lock would refuse the second open too; this names the mistake.
            if same_file(from, to) {
                return Err(format!(
                    "--from-card and --to-card name the same card image {}",
                    from.display()
                ));
            }
            Ok((open_image(from)?, open_image(to)?))
        }
        (None, None, Some(from), Some(to)) => {
            let from_reader = crate::pcsc::open(Some(from), cards.wait)?;
            let to_reader = crate::pcsc::open(Some(to), cards.wait)?;
            if from_reader.name() == to_reader.name() {
                return Err(format!(
                    "--from-reader {from:?} and --to-reader {to:?} both name the reader {:?}: \
                     each card needs a reader of its own",
                    from_reader.name()
                ));
            }
            Ok((from_reader, to_reader))
        }
        _ => Err(
            "name the two cards: --from-card FILE --to-card FILE (card images), or \
                  --from-reader READER --to-reader READER (PC/SC)"
                .to_owned(),
        ),
    }
}

fn open_image(path: &Path) -> Result<Box<dyn CardReader>, String> {
    let card = FileCard::open_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Box::new(InProcessReader::with_card(
        path.display().to_string(),
        card,
    )))
}

/// Whether two paths name one existing file (a missing file is reported by its open).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn key_update_json(update: &Option<KeyUpdate>) -> Value {
    update.map_or(Value::Null, |update| {
        json!({
            "card": update.card.to_string(),
            "path": update.path.as_str(),
            "from_key": update.from_key_id,
            "to_key": update.to_key_id,
        })
    })
}

fn outcome_json(outcome: &Option<RecoveryOutcome>) -> Value {
    outcome.map_or(Value::Null, |outcome| {
        let (status, sequence, amount) = outcome_parts(outcome);
        json!({"sequence": sequence, "status": status, "amount": amount.minor()})
    })
}

fn outcome_parts(outcome: RecoveryOutcome) -> (&'static str, u32, valuecard_core::money::Amount) {
    match outcome {
        RecoveryOutcome::Completed { sequence, amount } => ("completed", sequence, amount),
        RecoveryOutcome::Undone { sequence, amount } => ("undone", sequence, amount),
    }
}

fn outcome_text(outcome: RecoveryOutcome) -> String {
    match outcome {
        RecoveryOutcome::Completed { sequence, amount } => {
            format!("transfer {sequence} of {amount} completed: the source debited what the destination had received")
        }
        RecoveryOutcome::Undone { sequence, amount } => {
            format!("transfer {sequence} of {amount} undone: the destination never received it, the source's reservation is released")
        }
    }
}

/// `valuecard terminal transfer`: moves value from the source card to the destination card.
pub fn terminal_transfer(args: &TransferArgs) -> Result<ExitCode, String> {
    match transfer(args) {
        Ok((terminal_id, receipt)) => {
            print_receipt(&terminal_id, &receipt, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => Ok(report_failure(&failure, args.json)),
    }
}

fn transfer(args: &TransferArgs) -> Result<(String, TransferReceipt), Failure> {
    let amount = lifecycle::parse_amount(&args.amount)?;
    let mut terminal = datadir::open_settlement(&args.data, &args.terminal)?;
    let (mut from_box, mut to_box) = open_readers(&args.cards)?;
    let mut from: &mut dyn CardReader = &mut *from_box;
    let mut to: &mut dyn CardReader = &mut *to_box;
    let receipt = terminal.transfer(&mut from, &mut to, amount)?;
    Ok((terminal.device_id().to_string(), receipt))
}

fn print_receipt(terminal_id: &str, receipt: &TransferReceipt, json_output: bool) {
    if json_output {
        println!(
            "{}",
            json!({
                "terminal": terminal_id,
                "sequence": receipt.sequence,
                "source": receipt.source.to_string(),
                "destination": receipt.destination.to_string(),
                "amount": receipt.amount.minor(),
                "source_balance_after": receipt.source_balance_after.minor(),
                "destination_balance_after": receipt.destination_balance_after.minor(),
                "key_update": key_update_json(&receipt.key_update),
                "settled_first": outcome_json(&receipt.settled_first),
                "command_pairs": receipt.command_pairs,
            })
        );
        return;
    }
    println!(
        "transferred {} from card {} to card {} (transfer {})",
        receipt.amount, receipt.source, receipt.destination, receipt.sequence
    );
    println!(
        "  source      {}: balance now {}",
        receipt.source, receipt.source_balance_after
    );
    println!(
        "  destination {}: balance now {}",
        receipt.destination, receipt.destination_balance_after
    );
    if let Some(update) = receipt.key_update {
        println!(
            "  key update first: card {} took transfer key {} (had {}), {} path",
            update.card,
            update.to_key_id,
            update.from_key_id,
            update.path.as_str()
        );
    }
    if let Some(outcome) = receipt.settled_first {
        println!("  settled first: {}", outcome_text(outcome));
    }
    println!(
        "  command/response pairs after the two SELECTs: {}",
        receipt.command_pairs
    );
}

/// `valuecard terminal settle-transfer`: settles the transfer the source card holds pending
/// with its destination, from the destination's proof.
pub fn terminal_settle_transfer(args: &SettleTransferArgs) -> Result<ExitCode, String> {
    match settle(args) {
        Ok(settled) => {
            print_settled(&settled, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => Ok(report_failure(&failure, args.json)),
    }
}

struct Settled {
    terminal: String,
    source: String,
    destination: String,
    outcome: Option<RecoveryOutcome>,
}

fn settle(args: &SettleTransferArgs) -> Result<Settled, Failure> {
    let mut terminal = datadir::open_settlement(&args.data, &args.terminal)?;
    let (mut from_box, mut to_box) = open_readers(&args.cards)?;
    let mut from: &mut dyn CardReader = &mut *from_box;
    let mut to: &mut dyn CardReader = &mut *to_box;
    // The two IDs for the report, and the one refusal `settle` leaves to its caller; the
    // SELECTs are repeated inside, which only restarts each card's session.
    let source = terminal.read_card(&mut from)?.card_id();
    let destination = terminal.read_card(&mut to)?.card_id();
    if source == destination {
        return Err(TerminalError::SameCard.into());
    }
    let outcome = terminal.settle(&mut from, &mut to)?;
    Ok(Settled {
        terminal: terminal.device_id().to_string(),
        source: source.to_string(),
        destination: destination.to_string(),
        outcome,
    })
}

fn print_settled(settled: &Settled, json_output: bool) {
    if json_output {
        println!(
            "{}",
            json!({
                "terminal": settled.terminal,
                "source": settled.source,
                "destination": settled.destination,
                "settled": outcome_json(&settled.outcome),
            })
        );
        return;
    }
    match settled.outcome {
        Some(outcome) => println!(
            "card {} to card {}: {}",
            settled.source,
            settled.destination,
            outcome_text(outcome)
        ),
        None => println!(
            "card {} holds no transfer to card {} to settle",
            settled.source, settled.destination
        ),
    }
}

/// Where a transfer report stands, in the words of `TransferOutcome`.
fn report_status(stored: &StoredTransfer) -> &'static str {
    match stored.report.outcome() {
        TransferOutcome::Completed => "completed",
        // The destination has the value; the source has still to debit it.
        TransferOutcome::Received => "received",
        TransferOutcome::Undone => "undone",
        TransferOutcome::InDoubt => "in_doubt",
    }
}

/// `terminal history` for a settlement terminal: its transfer reports.
pub fn settlement_history(data: &Path, name: &str, json_output: bool) -> Result<ExitCode, String> {
    let terminal = datadir::open_settlement(data, name)?;
    let transfers = terminal.store().transfers().map_err(|e| e.to_string())?;
    let in_doubt = transfers
        .iter()
        .filter(|stored| {
            matches!(
                stored.report.outcome(),
                TransferOutcome::InDoubt | TransferOutcome::Received
            )
        })
        .count();
    if json_output {
        println!(
            "{}",
            json!({
                "terminal": terminal.device_id().to_string(),
                "role": "settlement-terminal",
                "in_doubt": in_doubt,
                "transfers": transfers.iter().map(|stored| json!({
                    "sequence": stored.report.sequence,
                    "source": stored.report.source.to_string(),
                    "destination": stored.report.destination.to_string(),
                    "amount": stored.report.amount.minor(),
                    "status": report_status(stored),
                    "uploaded": stored.uploaded,
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "settlement terminal {}: {} transfers, {in_doubt} not settled",
        terminal.device_id(),
        transfers.len()
    );
    for stored in &transfers {
        println!(
            "  {:>6} card {} -> card {} {:>10} {}{}",
            stored.report.sequence,
            stored.report.source,
            stored.report.destination,
            stored.report.amount,
            report_status(stored),
            if stored.uploaded {
                ""
            } else {
                " (not uploaded)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `terminal sync` for a settlement terminal: upload the transfer reports the center has not
/// acknowledged in their current form (seed 000; the center verifies and stores each transfer
/// once, and lists a card whose state was moved twice), then fetch the list entries it lacks.
pub fn settlement_sync(
    data: &Path,
    name: &str,
    at: &CenterArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_settlement(data, name)?;
    let (receipt, version) = match &at.center {
        Some(url) => {
            let mut link = datadir::open_device_link(
                data,
                name,
                valuecard_core::cert::Role::SettlementTerminal,
                url,
            )?;
            exchange_with_center(&mut terminal, &mut link)?
        }
        None => {
            let mut center = datadir::open_center_on(data, at.database.as_deref())?;
            exchange_with_center(&mut terminal, &mut center)?
        }
    };
    // A report the center refused stays marked as not uploaded, for the operator to see.
    let waiting = terminal
        .store()
        .transfers()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|stored| !stored.uploaded)
        .count();
    if json_output {
        println!(
            "{}",
            json!({
                "terminal": terminal.device_id().to_string(),
                "stored": receipt.stored,
                "duplicates": receipt.duplicates,
                "refused": receipt.refused.iter().map(|(sequence, reason)| json!({"sequence": sequence, "reason": reason})).collect::<Vec<_>>(),
                "clones_detected": receipt.clones_detected.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "list_version": version,
                "transfers_not_uploaded": waiting,
            })
        );
    } else {
        println!(
            "settlement terminal {}: {} transfer reports stored, {} already there, {} refused; lists at version {version}",
            terminal.device_id(),
            receipt.stored,
            receipt.duplicates,
            receipt.refused.len()
        );
        for (sequence, reason) in &receipt.refused {
            println!("  transfer {sequence} refused: {reason}");
        }
        for card in &receipt.clones_detected {
            println!("  card {card} found cloned: listed everywhere");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Uploads the transfer reports, then fetches the lists: a card the upload shows cloned is
/// on the lists the terminal takes home.
fn exchange_with_center(
    terminal: &mut datadir::CliSettlement,
    link: &mut (impl TerminalLink + TransferLink),
) -> Result<(UploadReceipt, u64), String> {
    let receipt = terminal
        .upload_transfers(&mut *link)
        .map_err(|e| explain(&e))?;
    let version = terminal.update_lists(&mut *link).map_err(|e| explain(&e))?;
    Ok((receipt, version))
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use valuecard_core::money::Amount;
    use valuecard_terminal::transfer::KeyUpdatePath;

    use super::*;

    // A key update is only reached from the command line after the center rotates keys; its
    // report is checked here.
    #[test]
    fn a_key_update_reports_card_path_and_generations() {
        let update = KeyUpdate {
            card: "C000000000000002".parse().unwrap(),
            from_key_id: 1,
            to_key_id: 3,
            path: KeyUpdatePath::PublicKey,
        };
        assert_eq!(
            key_update_json(&Some(update)),
            json!({"card": "C000000000000002", "path": "public-key", "from_key": 1, "to_key": 3})
        );
        assert_eq!(key_update_json(&None), Value::Null);
    }

    #[test]
    fn a_settled_transfer_reports_how_it_ended() {
        let amount = Amount::new(250).unwrap();
        let completed = RecoveryOutcome::Completed {
            sequence: 7,
            amount,
        };
        let undone = RecoveryOutcome::Undone {
            sequence: 8,
            amount,
        };
        assert_eq!(
            outcome_json(&Some(completed)),
            json!({"sequence": 7, "status": "completed", "amount": 250})
        );
        assert_eq!(outcome_json(&Some(undone))["status"], "undone");
        assert!(outcome_text(undone).contains("reservation is released"));
    }

    #[test]
    fn a_transfer_in_doubt_exits_with_its_own_status() {
        let doubt = Failure::Terminal(TerminalError::TransferInDoubt { sequence: 4 });
        assert_eq!(report_failure(&doubt, false), ExitCode::from(IN_DOUBT_EXIT));
        assert!(explain(&TerminalError::TransferInDoubt { sequence: 4 })
            .starts_with("transfer 4 is in doubt: present both cards again"));
        let refused = Failure::Terminal(TerminalError::SameCard);
        assert_eq!(
            report_failure(&refused, false),
            ExitCode::from(REFUSED_EXIT)
        );
    }
}
