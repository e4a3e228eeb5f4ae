//! `valuecard`: the whole system from the command line.

#![forbid(unsafe_code)]

mod bench;
mod card_tool;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "valuecard",
    version,
    about = "A stored-value smart-card electronic-money system"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the whole system embedded in a data directory: center, terminals, dispenser, cards,
    /// purchases, loads, the attacks a purse operator fears, and the reconciliation.
    Demo(demo::DemoArgs),
    /// Tools for card developers.
    #[command(subcommand)]
    Card(CardCommands),
    /// Benchmarks that print their ratio to the crypto floor measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommands),
}

#[derive(Subcommand, Debug)]
enum CardCommands {
    /// Send raw command APDUs (hex) to a card image and print each response.
    Apdu {
        /// The card image file (for example one the demo left in DATA/cards/).
        #[arg(long)]
        card: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Command APDUs in hex, sent in order within one power-up (spaces and colons allowed).
        #[arg(required = true)]
        apdus: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommands {
    /// Host CPU per offline purchase (terminal, card and APDU encoding together), against
    /// the signature operations a purchase needs.
    Purchase(bench::PurchaseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Commands::Demo(args) => demo::run(args),
        Commands::Card(CardCommands::Apdu { card, json, apdus }) => {
            card_tool::apdu(&card, json, &apdus)
        }
        Commands::Bench(BenchCommands::Purchase(args)) => bench::purchase(args),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("valuecard: {message}");
            ExitCode::from(2)
        }
    }
}
