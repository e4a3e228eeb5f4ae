//! `valuecard terminal release-transfer`: the "source card and the center" half of the
//! transfer recovery rule (docs/protocols.md § 13.6). A source card holds a transfer pending
//! whose destination will never come back (lost, destroyed, or a card ID that was never
//! issued); the settlement terminal asks the center for a release of exactly that pending
//! transfer and gives it to the card, which makes the reserved value spendable again. The
//! center refuses while the destination may still hold the value.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use valuecard_core::messages::transfer::TransferLink;
use valuecard_terminal::transfer::Released;

use crate::datadir::{self, CenterArgs};
use crate::lifecycle::{self, ReaderArgs};
use crate::settlement_cli::{explain, DEFAULT_SETTLEMENT, REFUSED_EXIT};

#[derive(clap::Args, Debug)]
pub struct ReleaseTransferArgs {
    #[arg(long)]
    data: PathBuf,
    /// The settlement terminal that asks.
    #[arg(long, default_value = DEFAULT_SETTLEMENT)]
    terminal: String,
    /// The source card (the one holding the transfer pending).
    #[command(flatten)]
    reader: ReaderArgs,
    #[command(flatten)]
    center: CenterArgs,
    #[arg(long)]
    json: bool,
}

pub fn terminal_release_transfer(args: &ReleaseTransferArgs) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_settlement(&args.data, &args.terminal)?;
    let mut boxed = lifecycle::open_reader(&args.reader)?;
    let mut reader: &mut dyn valuecard_reader::CardReader = &mut *boxed;
    let card = terminal
        .read_card(&mut reader)
        .map_err(|error| explain(&error))?
        .card_id();
    let outcome = match &args.center.center {
        Some(url) => {
            let mut link = datadir::open_device_link(
                &args.data,
                &args.terminal,
                valuecard_core::cert::Role::SettlementTerminal,
                url,
            )?;
            release(&mut terminal, &mut reader, &mut link)
        }
        None => {
            let mut center = datadir::open_center_on(&args.data, args.center.database.as_deref())?;
            release(&mut terminal, &mut reader, &mut center)
        }
    };
    match outcome {
        Ok(released) => {
            print_released(&card.to_string(), released, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            if args.json {
                println!("{}", json!({"card": card.to_string(), "error": message}));
            }
            eprintln!("valuecard: {message}");
            Ok(ExitCode::from(REFUSED_EXIT))
        }
    }
}

fn release(
    terminal: &mut datadir::CliSettlement,
    reader: &mut &mut dyn valuecard_reader::CardReader,
    link: &mut impl TransferLink,
) -> Result<Option<Released>, String> {
    terminal
        .release_with_center(reader, link)
        .map_err(|error| explain(&error))
}

fn print_released(card: &str, released: Option<Released>, json_output: bool) {
    if json_output {
        println!(
            "{}",
            json!({
                "card": card,
                "released": released.map(|r| json!({"sequence": r.sequence, "amount": r.amount.minor()})),
            })
        );
        return;
    }
    match released {
        Some(released) => println!(
            "card {card}: the center released transfer {} ({} spendable again)",
            released.sequence, released.amount
        ),
        None => println!("card {card} holds no transfer pending"),
    }
}
