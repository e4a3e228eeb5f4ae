//! `valuecard migrate` and `valuecard provider`: the value move of seed 002 from the
//! command line. The holder's client talks to the move server only: with the old chip it
//! uploads every service (S1-S8), with the new chip it downloads them (S9-S17), or both in
//! one run with two readers; run again after any failure, the same command resumes or rolls
//! back. The services themselves are in `move_services_cli`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use valuecard_core::apdu::Command;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{ServiceCode, ServicesFci, SERVICES_AID};
use valuecard_migrate::client::{self, service_label, Mode, Outcome};
use valuecard_migrate::server::{MoveError, Progress};
use valuecard_migrate_http::HttpMoveServer;
use valuecard_reader::CardReader;

use crate::move_services_cli::{self as services, CenterTarget};

/// Where the holder's password comes from when it is not typed at a prompt.
pub const PASSWORD_VARIABLE: &str = "VALUECARD_MOVE_PASSWORD";

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    command: Option<MigrateCommands>,
    #[command(flatten)]
    run: RunArgs,
}

/// How the client reaches the move server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// A move directory (`migrate init`): the server's address and certificate are read
    /// from it.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The move server's address, `https://HOST:PORT` (instead of --data).
    #[arg(long, value_name = "URL", requires = "server_cert")]
    server: Option<String>,
    /// The move server's certificate (PEM) to trust.
    #[arg(long, value_name = "FILE")]
    server_cert: Option<PathBuf>,
    /// The holder's user ID at the move server. The password is read from
    /// VALUECARD_MOVE_PASSWORD, or else from the first line of standard input.
    #[arg(long)]
    user: String,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    server: Option<ServerArgs>,
    /// The old chip in this PC/SC reader: upload its services.
    #[arg(long, value_name = "READER")]
    from_reader: Option<String>,
    /// The old chip as a card image in this process: upload its services.
    #[arg(long = "card", visible_alias = "from-card", value_name = "FILE")]
    from_card: Option<PathBuf>,
    /// The new chip in this PC/SC reader: download the services into it.
    #[arg(long, value_name = "READER")]
    to_reader: Option<String>,
    /// The new chip as a card image in this process: download the services into it.
    #[arg(long, value_name = "FILE")]
    to_card: Option<PathBuf>,
    /// Give the old chip its services back instead (only before any download began).
    #[arg(long)]
    rollback: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum MigrateCommands {
    /// Set up a move system in a directory: the center (in --center) certifies the move
    /// server's administrative SAM and the providers' normal and transfer SAMs of three
    /// services (the valuecard purse, transit passes, shop points). Software SAMs by
    /// default; with `--sam pkcs11:token=...;object=NAME` every SAM is generated in the
    /// token as NAME-admin, NAME-CODE-normal and NAME-CODE-transfer (docs/hsm.md).
    Init {
        /// The center's data directory.
        #[arg(long)]
        center: PathBuf,
        /// The center's records are in PostgreSQL at this URL.
        #[arg(long, value_name = "URL")]
        center_database: Option<String>,
        /// The move directory to create.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run the move server (HTTPS on 127.0.0.1) until Ctrl-C; the providers must be running.
    Serve {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 8480)]
        port: u16,
        /// Keep the movement database in PostgreSQL at this URL (several instances may
        /// share it) instead of SQLite in the move directory.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Create a user account at the move server.
    User {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Register a chip (by its serial number, read from the chip) to a user.
    Register {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, value_name = "READER", conflicts_with = "card")]
        reader: Option<String>,
        #[arg(long, value_name = "FILE")]
        card: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ProviderCommands {
    /// Run one provider's application server (its normal and transfer SAM) until Ctrl-C.
    Serve {
        #[arg(long)]
        data: PathBuf,
        /// The service code (4 hex digits), e.g. 0001 for the purse.
        #[arg(long, value_parser = parse_service)]
        service: ServiceCode,
        /// The port on 127.0.0.1 (0: any free port; the address is written to the move
        /// directory).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Keep the provider's books in PostgreSQL at this URL.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The purse's provider reports each move to the center's service at this address.
        #[arg(long, value_name = "URL", requires = "center_cert")]
        center: Option<String>,
        /// The center service's certificate (PEM) to trust.
        #[arg(long, value_name = "FILE")]
        center_cert: Option<PathBuf>,
    },
    /// Format the provider's area on a chip and put it in use.
    Issue {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_parser = parse_service)]
        service: ServiceCode,
        #[arg(long, value_name = "READER", conflicts_with = "card")]
        reader: Option<String>,
        #[arg(long, value_name = "FILE")]
        card: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_service(text: &str) -> Result<ServiceCode, String> {
    u16::from_str_radix(text.trim_start_matches("0x"), 16)
        .map(ServiceCode)
        .map_err(|_| format!("{text:?} is not a service code (4 hex digits)"))
}

/// A chip in a PC/SC reader or a card image in this process.
fn open_chip(reader: Option<&str>, card: Option<&Path>) -> Result<Box<dyn CardReader>, String> {
    match (card, reader) {
        (Some(path), _) => {
            let card = valuecard_card::FileCard::open_file(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            Ok(Box::new(valuecard_reader::InProcessReader::with_card(
                path.display().to_string(),
                card,
            )))
        }
        (None, reader) => crate::pcsc::open(reader, 0),
    }
}

/// The chip's serial number: its card ID, from the services application's FCI.
pub(crate) fn chip_id(reader: &mut dyn CardReader) -> Result<CardId, String> {
    let response = reader
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(SERVICES_AID.to_vec())
                .with_le(256),
        )
        .map_err(|e| format!("the chip could not be reached: {e}"))?;
    if !response.sw.is_success() {
        return Err(format!(
            "the chip has no services application (it answered {})",
            response.sw
        ));
    }
    ServicesFci::decode(&response.data)
        .map(|fci| fci.card_id)
        .map_err(|e| format!("the chip's services application answered oddly: {e}"))
}

fn password() -> Result<zeroize::Zeroizing<String>, String> {
    if let Ok(value) = std::env::var(PASSWORD_VARIABLE) {
        return Ok(zeroize::Zeroizing::new(value));
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        return Err(format!(
            "no password: set {PASSWORD_VARIABLE} or give it on standard input"
        ));
    }
    Ok(trimmed)
}

fn server(args: &ServerArgs) -> Result<HttpMoveServer, String> {
    match (&args.server, &args.server_cert, &args.data) {
        (Some(url), Some(cert), _) => {
            let pin = valuecard_center_http::CenterPin::load(cert).map_err(|e| e.to_string())?;
            Ok(HttpMoveServer::new(url, &pin))
        }
        (None, _, Some(dir)) => {
            let endpoint = services::read_endpoint(dir, "server")?;
            Ok(HttpMoveServer::new(&endpoint.url, &endpoint.pin()?))
        }
        _ => Err(
            "say where the move server is: --data DIR, or --server URL --server-cert FILE".into(),
        ),
    }
}

/// A refusal worded for the holder, with what to do next.
fn explain(error: &MoveError) -> String {
    let hint = match error {
        MoveError::WrongPassword => " (check the user ID and the password)",
        MoveError::UnknownChip => " (register it first: `valuecard migrate register`)",
        MoveError::ProviderDown { .. } => {
            " (nothing was lost: run the same command again once the provider is back)"
        }
        _ => "",
    };
    format!("{error}{hint}")
}

pub fn migrate(args: MigrateArgs) -> Result<ExitCode, String> {
    match args.command {
        Some(MigrateCommands::Init {
            center,
            center_database,
            data,
            json,
        }) => services::init(&center, center_database.as_deref(), &data, json),
        Some(MigrateCommands::Serve {
            data,
            port,
            database,
        }) => services::serve_server(&data, port, database.as_deref()),
        Some(MigrateCommands::User { server: args, json }) => {
            let password = password()?;
            server(&args)?
                .create_user(&args.user, &password)
                .map_err(|e| explain(&e))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "user": args.user, "created": true })
                );
            } else {
                println!("User {} created", args.user);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(MigrateCommands::Register {
            server: args,
            reader,
            card,
            json,
        }) => {
            let mut chip = open_chip(reader.as_deref(), card.as_deref())?;
            let card_id = chip_id(chip.as_mut())?;
            let password = password()?;
            server(&args)?
                .register_chip(&args.user, &password, &card_id)
                .map_err(|e| explain(&e))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "user": args.user, "chip": card_id.to_string() })
                );
            } else {
                println!("Chip {card_id} registered to {}", args.user);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => run(args.run),
    }
}

pub fn provider(command: ProviderCommands) -> Result<ExitCode, String> {
    match command {
        ProviderCommands::Serve {
            data,
            service,
            port,
            database,
            center,
            center_cert,
        } => services::serve_provider(
            &data,
            service,
            port,
            database.as_deref(),
            center
                .zip(center_cert)
                .map(|(url, certificate)| CenterTarget { url, certificate }),
        ),
        ProviderCommands::Issue {
            data,
            service,
            reader,
            card,
            json,
        } => {
            let mut chip = open_chip(reader.as_deref(), card.as_deref())?;
            services::issue(&data, service, chip.as_mut(), json)
        }
    }
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    let server_args = args.server.clone().ok_or(
        "say where the move server is (--data DIR, or --server URL --server-cert FILE) and who you are (--user)",
    )?;
    let old = args.from_reader.is_some() || args.from_card.is_some();
    let new = args.to_reader.is_some() || args.to_card.is_some();
    if !old && !new {
        return Err("give the old chip (--from-reader or --card) or the new chip (--to-reader or --to-card), or both".into());
    }
    if args.rollback && (!old || new) {
        return Err(
            "--rollback gives the old chip its services back: give the old chip only".into(),
        );
    }
    let server = server(&server_args)?;
    let password = password()?;
    let mut outcomes = Vec::new();
    if old {
        let mut chip = open_chip(args.from_reader.as_deref(), args.from_card.as_deref())?;
        let mode = if args.rollback {
            Mode::Rollback
        } else {
            Mode::Upload
        };
        match session(
            &server,
            chip.as_mut(),
            &server_args.user,
            &password,
            mode,
            args.json,
        ) {
            Ok(outcome) => outcomes.push(outcome),
            // Both chips given and the old one's move finished by an earlier run of this
            // command that did not live to say so: the download session tells its outcome.
            Err(client::ClientError::Server(MoveError::AlreadyMoved))
                if new && mode == Mode::Upload =>
            {
                if !args.json {
                    println!("  the old chip's services were moved already");
                }
            }
            Err(error) => return Err(describe(error)),
        }
    }
    if new {
        let mut chip = open_chip(args.to_reader.as_deref(), args.to_card.as_deref())?;
        outcomes.push(
            session(
                &server,
                chip.as_mut(),
                &server_args.user,
                &password,
                Mode::Download,
                args.json,
            )
            .map_err(describe)?,
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "sessions": outcomes.iter().map(|(mode, outcome)| serde_json::json!({
                    "mode": mode.name(),
                    "move_id": hex::encode(outcome.move_id),
                    "state": outcome.state,
                    "services": outcome.services.iter().map(|(service, kind, state)| serde_json::json!({
                        "service": service.to_string(),
                        "kind": kind.name(),
                        "state": state,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn session(
    server: &HttpMoveServer,
    chip: &mut dyn CardReader,
    user: &str,
    password: &str,
    mode: Mode,
    json: bool,
) -> Result<(Mode, Outcome), client::ClientError> {
    if !json {
        println!("{} with the chip in {}", title(mode), chip.name());
    }
    let mut last: Option<String> = None;
    let mut show = |progress: &Progress| {
        let line = match progress.service {
            Some((service, kind)) => {
                format!("  {}: {}", service_label(service, kind), progress.step)
            }
            None => format!("  {}", progress.step),
        };
        if !json && last.as_deref() != Some(line.as_str()) {
            println!("{line}");
            last = Some(line);
        }
    };
    let outcome = client::run(server, chip, user, password, mode, &mut show)?;
    if !json {
        println!("  move {}: {}", hex::encode(outcome.move_id), outcome.state);
        for (service, kind, state) in &outcome.services {
            println!("    {}: {state}", service_label(*service, *kind));
        }
    }
    Ok((mode, outcome))
}

/// A session's failure worded for the holder.
fn describe(error: client::ClientError) -> String {
    match error {
        client::ClientError::Server(error) => explain(&error),
        other => {
            format!("{other} (run the same command again with the chip in place: the move resumes)")
        }
    }
}

fn title(mode: Mode) -> &'static str {
    match mode {
        Mode::Upload => "Upload from the old chip",
        Mode::Download => "Download into the new chip",
        Mode::Rollback => "Rollback to the old chip",
    }
}
