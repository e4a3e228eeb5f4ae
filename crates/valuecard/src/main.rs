//! `valuecard`: the whole system from the command line.

#![forbid(unsafe_code)]

// First, so that its `println!` and friends replace std's in every module below (see there).
#[macro_use]
mod output;

mod attach;
mod bench;
mod bench_db;
mod bench_http;
mod bench_ingest;
mod bench_memcard;
mod bench_migrate;
mod bench_online;
mod bench_pcsc;
mod bench_sam;
mod bench_transfer;
mod card_tool;
mod credit_cli;
mod datadir;
mod demo;
mod device_sam;
mod key_store;
mod lifecycle;
mod memcard_cli;
mod memcard_terminal_cli;
mod migrate_cli;
mod migrate_demo;
mod move_services_cli;
mod online_cli;
mod operations;
mod pcsc;
mod release_cli;
mod settlement_cli;
mod simulate_cli;
mod terminal_cli;
mod transfer_cli;
mod wallet;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use terminal_cli::{terminal, TerminalCommands};

#[derive(Parser, Debug)]
#[command(
    name = "valuecard",
    version,
    about = "A stored-value smart-card electronic-money system"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
    #[command(flatten)]
    sam: device_sam::SamArgs,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the whole system embedded in a data directory: center, terminals, dispenser, cards,
    /// purchases, loads, the attacks a purse operator fears, and the reconciliation.
    Demo(demo::DemoArgs),
    /// The management center: set-up and status.
    #[command(subcommand)]
    Center(CenterCommands),
    /// Cards: issue them, drive them by hand.
    #[command(subcommand)]
    Card(CardCommands),
    /// Memory cards (seed 001): manufacture them, put them in a PC/SC reader, show them.
    #[command(subcommand)]
    Memcard(memcard_cli::MemcardCommands),
    /// The cashier's commands at a payment terminal, dispenser or settlement terminal.
    #[command(subcommand)]
    Terminal(TerminalCommands),
    /// Benchmarks that print their ratio to the crypto floor measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommands),
    /// The online settlement system of seed 004 (web stores paid from the card, online
    /// charges), for a person to try.
    #[command(subcommand)]
    Online(online_cli::OnlineCommands),
    /// The holder's wallet (seed 004): a local web page on 127.0.0.1 that pays web stores
    /// and charges the card in the reader through the online settlement services.
    Wallet(wallet::WalletArgs),
    /// Move every service of a chip (the purse, passes, points) to a new chip through the
    /// value move server (seed 002): `--card`/`--from-reader` uploads from the old chip,
    /// `--to-card`/`--to-reader` downloads into the new one; and the move server itself.
    Migrate(migrate_cli::MigrateArgs),
    /// A service provider's application server of the value move (seed 002).
    #[command(subcommand)]
    Provider(migrate_cli::ProviderCommands),
    /// The whole system at scale over simulated days, with real cryptography and injected
    /// faults: what the center detected against what was injected, the conservation
    /// equation, and throughput against the crypto floor.
    Simulate(simulate_cli::SimulateArgs),
}

#[derive(Subcommand, Debug)]
enum CenterCommands {
    /// Create a center (root key pair, transport and master keys, database) in a data
    /// directory, with one dispenser and payment terminals installed (Figs. 4A and 8).
    Init {
        #[arg(long)]
        data: PathBuf,
        /// How many payment terminals to install (named terminal-1, terminal-2, ...).
        #[arg(long, default_value_t = 1)]
        terminals: usize,
        /// Keep the center's records in PostgreSQL at this URL instead of SQLite in DATA.
        /// The database must exist and hold no other center.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// A host name or IP address devices use to reach `center serve` (repeat for
        /// several); the service certificate lists them. Default: localhost, 127.0.0.1, ::1.
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
        /// Generate the center's root key (which also signs loads) in this PKCS#11 token
        /// instead of the key file: a URI such as `pkcs11:token=valuecard;object=center-root`
        /// (see docs/hsm.md). The key file then records where it is.
        #[arg(long, value_name = "pkcs11:URI")]
        key_store: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cards, devices, loads in flight, and the reconciliation of what was issued, loaded and
    /// spent against the remaining value on record.
    Status {
        #[arg(long)]
        data: PathBuf,
        /// The center's records are in PostgreSQL at this URL (as given to `center init`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a card every terminal must refuse: reported lost or stolen by its holder.
    ReportCard {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The card ID (16 hex digits).
        #[arg(long)]
        card: String,
        /// lost or stolen.
        #[arg(long, default_value = "lost")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// List a terminal as stolen (Figs. 10-12): cards it writes after its last reported
    /// time stamp are refused everywhere; cards it wrote before stay good.
    ReportTerminal {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The terminal's device ID (16 hex digits).
        #[arg(long)]
        device: String,
        #[arg(long)]
        json: bool,
    },
    /// Set a charge machine's float limit: the most it may hold granted and not yet shown
    /// charged in uploaded records (memory cards, seed 001).
    FloatLimit {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The charge machine's device ID (16 hex digits).
        #[arg(long)]
        device: String,
        /// The limit in currency units with up to two decimals, e.g. 5000.00.
        #[arg(long)]
        limit: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a destroyed card: list the old card, issue a new card image holding its
    /// remaining value (see docs/operations.md).
    Restore {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The destroyed card's ID.
        #[arg(long)]
        card: String,
        /// Where to write the replacement card image.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "dispenser-1")]
        dispenser: String,
        /// Days the old card's value is held, while terminals sync the list and upload what
        /// it spent, before it goes to the replacement (fixed at the first call; 0 only when
        /// every terminal is known to have synced).
        #[arg(long, default_value_t = valuecard_center::lists::RESTORE_HOLD_DAYS)]
        hold_days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Move the transfer key of card-to-card transfer to its next generation (cards receive
    /// it with their next load; the limit they accept from a peer moves with it).
    RotateTransferKey {
        #[arg(long)]
        data: PathBuf,
        /// The center's records are in PostgreSQL at this URL (as given to `center init`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        #[arg(long)]
        json: bool,
        /// Which key rotates: set by the command's name, not an option, so that both rotate
        /// commands share one dispatch.
        #[arg(skip = valuecard_center::transfer_keys::KeyKind::Transfer)]
        kind: valuecard_center::transfer_keys::KeyKind,
    },
    /// Move the update key, under which cards pass a newer transfer key to each other, to its
    /// next generation.
    RotateUpdateKey {
        #[arg(long)]
        data: PathBuf,
        /// The center's records are in PostgreSQL at this URL (as given to `center init`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        #[arg(long)]
        json: bool,
        /// Set by the command's name, as for `rotate-transfer-key`.
        #[arg(skip = valuecard_center::transfer_keys::KeyKind::Update)]
        kind: valuecard_center::transfer_keys::KeyKind,
    },
    /// Monthly statements of credit mode (Figs. 13-17): per card, the service records dated in
    /// the month and their total.
    Statements {
        #[arg(long)]
        data: PathBuf,
        /// The month, as YYYY-MM.
        #[arg(long)]
        month: String,
        /// The center's records are in PostgreSQL at this URL (as given to `center init`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Serve the center over HTTPS to dispensers and terminals (until SIGINT or SIGTERM),
    /// with the service certificate made by `center init`.
    Serve {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The center's records are in PostgreSQL at this URL (as given to `center init`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// How the service logs on standard error: readable lines, or one JSON object per
        /// line for a log collector.
        #[arg(long, value_enum, default_value = "text")]
        log_format: lifecycle::LogFormat,
        /// Database connections requests work on at once [default: 8 per processor, 4 to
        /// 64]. Several processes may serve one PostgreSQL database; count theirs together
        /// against the server's max_connections.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        pool_size: Option<u16>,
    },
}

#[derive(Subcommand, Debug)]
enum CardCommands {
    /// Manufacture a card image and issue it through a dispenser (Figs. 4B, 4C, 7, 8).
    Issue {
        #[arg(long)]
        data: PathBuf,
        /// Where to write the new card image (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Initial value in currency units, e.g. 50.00.
        #[arg(long)]
        value: Option<String>,
        #[arg(long, default_value = "dispenser-1")]
        dispenser: String,
        #[command(flatten)]
        center: datadir::CenterArgs,
        /// Also enable the card's credit function (Fig. 13) and print its setting number.
        #[arg(long)]
        credit: bool,
        /// The last day of credit use, YYYY-MM-DD (default: the center's, two years).
        #[arg(long, value_name = "DATE", requires = "credit")]
        credit_expiry: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send raw command APDUs (hex) to a card image (a purse card or a memory card) and print
    /// each response.
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
    /// Put a card image into a PC/SC reader: serve it to pcscd through vsmartcard's vpcd
    /// driver until interrupted. While attached, the image belongs to this process: do not
    /// also use it with --card.
    Attach {
        /// The card image file.
        #[arg(long)]
        card: PathBuf,
        /// Where vpcd listens for reader slot 0, as HOST:PORT.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// The vpcd reader slot: slot N is the port of slot 0 plus N.
        #[arg(long, default_value_t = 0)]
        slot: u16,
        /// Also log every command APDU and its status word.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        danger: attach::DangerArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommands {
    /// Host CPU per offline purchase (terminal, card and APDU encoding together), against
    /// the signature operations a purchase needs.
    Purchase(bench::PurchaseArgs),
    /// Center ingestion of signed usage records against Ed25519 batch verification.
    Ingest(bench_ingest::IngestArgs),
    /// APDU round trips through pcscd and vpcd: a valuecard card in `card attach`, vsmartcard's
    /// vicc, and a card that answers at once (needs the `pcsc` feature).
    Pcsc(bench_pcsc::PcscArgs),
    /// Host CPU per card-to-card transfer (settlement terminal and both cards), against the
    /// signature and AES operations a transfer needs.
    Transfer(bench_transfer::TransferArgs),
    /// Concurrent signed terminals uploading usage records to the center's HTTPS service
    /// over loopback: records/s and request latency against Ed25519 batch verification.
    Http(bench_http::HttpArgs),
    /// Host CPU per memory-card payment (seed 001) at a payment machine, card and SAM in
    /// this process, against the signature operations a payment needs.
    Memcard(bench_memcard::MemcardArgs),
    /// Ed25519 signatures per second by a SAM in a PKCS#11 token (a throw-away SoftHSM2
    /// token) against the software SAM, in the same run.
    Sam(bench_sam::BenchSamArgs),
    /// Full online purchases (seed 004) per second through the mall's and the settlement
    /// service's HTTPS and databases, against the same purchase with every part called
    /// directly; latency at half load.
    Online(bench_online::OnlineArgs),
    /// Full value moves (seed 002) per second, every service of an old chip moved to a new
    /// chip through the move server and the providers' HTTPS and databases, against the same
    /// move with every part called directly; latency and APDUs a move.
    Migrate(bench_migrate::MigrateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    device_sam::set_process_args(cli.sam);
    let outcome = match cli.command {
        Commands::Demo(args) => demo::run(args),
        Commands::Card(CardCommands::Apdu { card, json, apdus }) => {
            card_tool::apdu(&card, json, &apdus)
        }
        Commands::Card(CardCommands::Attach {
            card,
            vpcd,
            slot,
            verbose,
            danger,
        }) => attach::run(&card, &vpcd, slot, verbose, &danger),
        Commands::Card(CardCommands::Issue {
            data,
            out,
            value,
            dispenser,
            center,
            credit,
            credit_expiry,
            json,
        }) => lifecycle::card_issue(
            &data,
            &out,
            value.as_deref(),
            &dispenser,
            &center,
            credit.then_some(credit_expiry.as_deref()),
            json,
        ),
        Commands::Center(CenterCommands::Init {
            data,
            terminals,
            database,
            tls_names,
            key_store,
            json,
        }) => lifecycle::center_init(
            &data,
            terminals,
            database.as_deref(),
            &tls_names,
            key_store.as_deref(),
            json,
        ),
        Commands::Center(CenterCommands::ReportCard {
            data,
            database,
            card,
            reason,
            json,
        }) => operations::center_report_card(&data, database.as_deref(), &card, &reason, json),
        Commands::Center(CenterCommands::ReportTerminal {
            data,
            database,
            device,
            json,
        }) => operations::center_report_terminal(&data, database.as_deref(), &device, json),
        Commands::Center(CenterCommands::FloatLimit {
            data,
            database,
            device,
            limit,
            json,
        }) => operations::center_float_limit(&data, database.as_deref(), &device, &limit, json),
        Commands::Center(CenterCommands::Restore {
            data,
            database,
            card,
            out,
            dispenser,
            hold_days,
            json,
        }) => operations::center_restore(
            &data,
            database.as_deref(),
            &card,
            operations::RestoreTarget {
                out: &out,
                dispenser_name: &dispenser,
                hold_days,
            },
            json,
        ),
        Commands::Center(CenterCommands::Status {
            data,
            database,
            json,
        }) => operations::center_status(&data, database.as_deref(), json),
        Commands::Center(
            CenterCommands::RotateTransferKey {
                data,
                database,
                json,
                kind,
            }
            | CenterCommands::RotateUpdateKey {
                data,
                database,
                json,
                kind,
            },
        ) => transfer_cli::center_rotate(&data, database.as_deref(), kind, json),
        Commands::Center(CenterCommands::Statements {
            data,
            month,
            database,
            json,
        }) => credit_cli::center_statements(&data, database.as_deref(), &month, json),
        Commands::Center(CenterCommands::Serve {
            data,
            listen,
            database,
            log_format,
            pool_size,
        }) => lifecycle::center_serve(
            &data,
            &listen,
            database.as_deref(),
            log_format,
            pool_size.map(usize::from),
        ),
        Commands::Terminal(command) => terminal(command),
        Commands::Memcard(command) => memcard_cli::memcard(command),
        Commands::Bench(BenchCommands::Purchase(args)) => bench::purchase(args),
        Commands::Bench(BenchCommands::Ingest(args)) => bench_ingest::ingest(args),
        Commands::Bench(BenchCommands::Pcsc(args)) => bench_pcsc::run(args),
        Commands::Bench(BenchCommands::Transfer(args)) => bench_transfer::transfer(args),
        Commands::Bench(BenchCommands::Http(args)) => bench_http::http(args),
        Commands::Bench(BenchCommands::Memcard(args)) => bench_memcard::memcard(args),
        Commands::Bench(BenchCommands::Sam(args)) => bench_sam::sam(args),
        Commands::Bench(BenchCommands::Online(args)) => bench_online::online(args),
        Commands::Bench(BenchCommands::Migrate(args)) => bench_migrate::migrate(args),
        Commands::Simulate(args) => simulate_cli::run(args),
        Commands::Wallet(args) => wallet::run(args),
        Commands::Online(command) => online_cli::online(command),
        Commands::Migrate(args) => migrate_cli::migrate(args),
        Commands::Provider(command) => migrate_cli::provider(command),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("valuecard: {message}");
            ExitCode::from(2)
        }
    }
}
