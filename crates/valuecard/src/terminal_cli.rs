//! `valuecard terminal ...`: payment terminals, dispensers and settlement terminals from the
//! command line: the commands, and where each goes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::{
    credit_cli, datadir, lifecycle, memcard_terminal_cli, operations, pcsc, release_cli,
    settlement_cli,
};

#[derive(Subcommand, Debug)]
pub(crate) enum TerminalCommands {
    /// List the PC/SC readers.
    Readers {
        #[arg(long)]
        json: bool,
    },
    /// Install another payment terminal (or, with --dispenser, a dispenser; with
    /// --settlement, a settlement terminal for card-to-card transfer; with --charge-machine
    /// or --payment-machine, a machine for memory cards) at the center.
    Install {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, conflicts_with_all = ["settlement", "charge_machine", "payment_machine"])]
        dispenser: bool,
        /// A settlement terminal: two readers, value moved card to card (seed 000).
        #[arg(long, conflicts_with_all = ["charge_machine", "payment_machine"])]
        settlement: bool,
        /// A charge machine for memory cards: takes money in, charges cards from its float
        /// (seed 001).
        #[arg(long, conflicts_with = "payment_machine")]
        charge_machine: bool,
        /// A payment machine for memory cards: checks and deducts their value (seed 001).
        #[arg(long)]
        payment_machine: bool,
        /// The center's records are in PostgreSQL at this URL (as given to `center init`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the card in the reader: balance, state and its transaction log.
    Info {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[command(flatten)]
        reader: lifecycle::ReaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Sell: debit the card offline (Figs. 5 and 6).
    Purchase {
        #[arg(long)]
        data: PathBuf,
        /// Amount in currency units with up to two decimals, e.g. 12.50.
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[command(flatten)]
        reader: lifecycle::ReaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Load value onto the card through the center (Fig. 7), at a dispenser.
    Load {
        #[arg(long)]
        data: PathBuf,
        /// Amount in currency units with up to two decimals, e.g. 20.00.
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "dispenser-1")]
        dispenser: String,
        #[command(flatten)]
        center: datadir::CenterArgs,
        #[command(flatten)]
        reader: lifecycle::ReaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Settle purchases and loads left in doubt for the card in the reader.
    Settle {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[arg(long, default_value = "dispenser-1")]
        dispenser: String,
        #[command(flatten)]
        center: datadir::CenterArgs,
        #[command(flatten)]
        reader: lifecycle::ReaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Card-to-card transfer at a settlement terminal: both cards brought to one
    /// transfer-key generation, then the amount moved from the source to the destination.
    Transfer(settlement_cli::TransferArgs),
    /// Settle a transfer a lost answer left pending, with the same two cards.
    SettleTransfer(settlement_cli::SettleTransferArgs),
    /// Release, with the center's signature, a transfer the source card holds pending whose
    /// destination will never come back (lost, destroyed, never issued).
    ReleaseTransfer(release_cli::ReleaseTransferArgs),
    /// The terminal's purchase records (a settlement terminal's: its transfers).
    History {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[arg(long)]
        json: bool,
    },
    /// Upload the terminal's purchases to the center (Fig. 9) and fetch the list entries
    /// it lacks (run it daily, or whenever the terminal is online). A settlement terminal
    /// uploads its transfer reports instead.
    Sync {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[command(flatten)]
        center: datadir::CenterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Memory cards (seed 001): take money in and charge it onto the card at a charge
    /// machine, within the float its SAM holds.
    Charge(memcard_terminal_cli::ChargeArgs),
    /// Memory cards (seed 001): check the card's value and deduct at a payment machine.
    Pay(memcard_terminal_cli::PayArgs),
    /// Memory cards (seed 001): fetch a charge or payment machine's lists, upload its
    /// writes, and take float (a charge machine, with --float).
    MachineSync(memcard_terminal_cli::MachineSyncArgs),
    /// Credit mode: register a password with the setting number from the center (Figs. 13
    /// and 15), or change it with the current password.
    CreditPassword {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        /// The 8-digit setting number the center gave the holder (first registration).
        #[arg(long, conflicts_with = "current_password")]
        setting_number: Option<String>,
        /// The current password (to change it).
        #[arg(long)]
        current_password: Option<String>,
        /// The new password: 4 to 12 digits.
        #[arg(long)]
        password: String,
        #[command(flatten)]
        reader: lifecycle::ReaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Credit mode: the holder's password, then a service charged to the card's account and
    /// signed by the card (Figs. 16 and 17).
    CreditService {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[arg(long)]
        password: String,
        /// The charge in currency units with up to two decimals, e.g. 3.20.
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        reader: lifecycle::ReaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Credit mode: send the terminal's signed service records to the center.
    CreditUpload {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[command(flatten)]
        center: datadir::CenterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Report the terminal's one-way time stamp to the center (daily). The SAM advances the
    /// stamp itself, one step per day on its own clock.
    AdvanceStamp {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "terminal-1")]
        terminal: String,
        #[command(flatten)]
        center: datadir::CenterArgs,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn terminal(command: TerminalCommands) -> Result<ExitCode, String> {
    match command {
        TerminalCommands::Readers { json } => pcsc::list_readers(json),
        TerminalCommands::Install {
            data,
            name,
            dispenser,
            settlement,
            charge_machine,
            payment_machine,
            database,
            json,
        } => {
            let kind = if dispenser {
                lifecycle::DeviceKind::Dispenser
            } else if settlement {
                lifecycle::DeviceKind::SettlementTerminal
            } else if charge_machine {
                lifecycle::DeviceKind::ChargeMachine
            } else if payment_machine {
                lifecycle::DeviceKind::PaymentMachine
            } else {
                lifecycle::DeviceKind::PaymentTerminal
            };
            lifecycle::terminal_install(&data, &name, kind, database.as_deref(), json)
        }
        TerminalCommands::Info {
            data,
            terminal,
            reader,
            json,
        } => lifecycle::terminal_info(&data, &terminal, &reader, json),
        TerminalCommands::Purchase {
            data,
            amount,
            terminal,
            reader,
            json,
        } => lifecycle::terminal_purchase(&data, &terminal, &amount, &reader, json),
        TerminalCommands::Load {
            data,
            amount,
            dispenser,
            reader,
            center,
            json,
        } => lifecycle::terminal_load(&data, &dispenser, &amount, &reader, &center, json),
        TerminalCommands::Settle {
            data,
            terminal,
            dispenser,
            reader,
            center,
            json,
        } => lifecycle::terminal_settle(&data, &terminal, &dispenser, &reader, &center, json),
        TerminalCommands::Charge(args) => memcard_terminal_cli::terminal_charge(&args),
        TerminalCommands::Pay(args) => memcard_terminal_cli::terminal_pay(&args),
        TerminalCommands::MachineSync(args) => memcard_terminal_cli::terminal_machine_sync(&args),
        TerminalCommands::Transfer(args) => settlement_cli::terminal_transfer(&args),
        TerminalCommands::SettleTransfer(args) => settlement_cli::terminal_settle_transfer(&args),
        TerminalCommands::ReleaseTransfer(args) => release_cli::terminal_release_transfer(&args),
        TerminalCommands::History {
            data,
            terminal,
            json,
        } if datadir::is_settlement_terminal(&data, &terminal) => {
            settlement_cli::settlement_history(&data, &terminal, json)
        }
        TerminalCommands::History {
            data,
            terminal,
            json,
        } => lifecycle::terminal_history(&data, &terminal, json),
        TerminalCommands::Sync {
            data,
            terminal,
            center,
            json,
        } if datadir::is_settlement_terminal(&data, &terminal) => {
            settlement_cli::settlement_sync(&data, &terminal, &center, json)
        }
        TerminalCommands::Sync {
            data,
            terminal,
            center,
            json,
        } => operations::terminal_sync(&data, &terminal, &center, json),
        TerminalCommands::CreditPassword {
            data,
            terminal,
            setting_number,
            current_password,
            password,
            reader,
            json,
        } => credit_cli::terminal_credit_password(
            &data,
            &terminal,
            &reader,
            setting_number.as_deref(),
            current_password.as_deref(),
            &password,
            json,
        ),
        TerminalCommands::CreditService {
            data,
            terminal,
            password,
            amount,
            reader,
            json,
        } => {
            credit_cli::terminal_credit_service(&data, &terminal, &reader, &password, &amount, json)
        }
        TerminalCommands::CreditUpload {
            data,
            terminal,
            center,
            json,
        } => credit_cli::terminal_credit_upload(&data, &terminal, &center, json),
        TerminalCommands::AdvanceStamp {
            data,
            terminal,
            center,
            json,
        } => operations::terminal_advance_stamp(&data, &terminal, &center, json),
    }
}
