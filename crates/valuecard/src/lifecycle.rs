//! The life cycle step by step against a data directory: center set-up, device installation,
//! card issuance, and the cashier's commands at a terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use valuecard_card::FileCard;
use valuecard_center::{Center, PendingLoad};
use valuecard_center_http::HttpCenterLink;
use valuecard_core::cert::Role;
use valuecard_core::ids::CardId;
use valuecard_core::messages::center::CenterLink;
use valuecard_core::messages::purse::{ins, LogEntry};
use valuecard_core::money::Amount;
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_terminal::card_commands::{proprietary, run};
use valuecard_terminal::store::TerminalStore;
use valuecard_terminal::TerminalError;

use crate::datadir;
use crate::device_sam::SamChoice;

/// Where the card is: an image file in this process, or a PC/SC reader.
#[derive(clap::Args, Debug, Clone)]
pub struct ReaderArgs {
    /// Use this card image in-process instead of a PC/SC reader.
    #[arg(long, conflicts_with = "reader")]
    pub card: Option<PathBuf>,
    /// PC/SC reader: a name (or part of one) or an index from `valuecard terminal readers`.
    #[arg(long)]
    pub reader: Option<String>,
    /// Seconds to wait for a card in the reader.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
}

pub fn open_reader(args: &ReaderArgs) -> Result<Box<dyn CardReader>, String> {
    if let Some(path) = &args.card {
        let card = FileCard::open_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(Box::new(InProcessReader::with_card(
            path.display().to_string(),
            card,
        )));
    }
    crate::pcsc::open(args.reader.as_deref(), args.wait)
}

pub fn parse_amount(text: &str) -> Result<Amount, String> {
    Amount::parse_decimal(text).map_err(|e| e.to_string())
}

fn print(json_output: bool, value: serde_json::Value, text: impl FnOnce()) {
    if json_output {
        println!("{value}");
    } else {
        text();
    }
}

/// A terminal error in words a cashier can act on.
pub fn explain(error: &TerminalError) -> String {
    match error {
        TerminalError::PurchaseInDoubt { sequence } => format!(
            "the card was removed (or lost power) before it answered: purchase {sequence} is recorded as in doubt \
             and is settled automatically the next time this card is presented (or with `valuecard terminal settle`)"
        ),
        TerminalError::LoadInDoubt { load_number } => format!(
            "the card was removed before it confirmed the load: load {load_number} is pending at the center \
             and is settled with `valuecard terminal settle` when the card is presented again"
        ),
        TerminalError::Reader(valuecard_reader::ReaderError::CardRemoved) => {
            "the card was removed before the transaction started; nothing was changed".to_owned()
        }
        other => other.to_string(),
    }
}

/// How a dispenser reaches the center: the center's own files, opened in this process, or
/// the center's HTTP service (`--center URL`).
enum CenterAccess {
    Local(Box<Center>),
    Http(Box<HttpCenterLink>),
}

impl CenterAccess {
    fn open(data: &Path, dispenser: &str, at: &datadir::CenterArgs) -> Result<Self, String> {
        Ok(match &at.center {
            Some(url) => {
                CenterAccess::Http(Box::new(datadir::open_center_link(data, dispenser, url)?))
            }
            None => CenterAccess::Local(Box::new(datadir::open_center_on(
                data,
                at.database.as_deref(),
            )?)),
        })
    }

    fn link(&mut self) -> &mut dyn CenterLink {
        match self {
            CenterAccess::Local(center) => center.as_mut(),
            CenterAccess::Http(link) => link.as_mut(),
        }
    }

    /// The card's loads the center holds in flight.
    fn pending_loads(&mut self, card_id: &CardId) -> Result<Vec<PendingLoad>, String> {
        match self {
            CenterAccess::Local(center) => Ok(center
                .pending_loads()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|pending| pending.card_id == *card_id)
                .collect()),
            CenterAccess::Http(link) => link.pending_loads(card_id).map_err(|e| e.to_string()),
        }
    }
}

pub fn center_init(
    data: &Path,
    terminals: usize,
    database: Option<&str>,
    tls_names: &[String],
    key_store: Option<&str>,
    json_output: bool,
) -> Result<ExitCode, String> {
    SamChoice::refuse_token("center init", "its first devices")?;
    let (mut center, pin) = datadir::init_center_on(data, database, tls_names, key_store)?;
    let mut devices = Vec::new();
    let dispenser = datadir::install_device(
        data,
        &mut center,
        "dispenser-1",
        Role::Dispenser,
        &SamChoice::Software,
    )?;
    devices.push(("dispenser-1".to_owned(), "dispenser", dispenser));
    for index in 1..=terminals {
        let name = format!("terminal-{index}");
        let id = datadir::install_device(
            data,
            &mut center,
            &name,
            Role::PaymentTerminal,
            &SamChoice::Software,
        )?;
        devices.push((name, "payment-terminal", id));
    }
    // One settlement terminal (seed 000): card-to-card transfer between two readers.
    let settlement = datadir::install_device(
        data,
        &mut center,
        "settlement-1",
        Role::SettlementTerminal,
        &SamChoice::Software,
    )?;
    devices.push(("settlement-1".to_owned(), "settlement-terminal", settlement));
    let anchor = center.anchor();
    let root_key_store = match key_store {
        Some(uri) => valuecard_sam_pkcs11::Pkcs11Uri::parse(uri)
            .map(|uri| uri.without_pin())
            .map_err(|e| e.to_string())?,
        None => "key file".to_owned(),
    };
    print(
        json_output,
        json!({
            "center": anchor.center.to_string(),
            "root_public_key": hex::encode_upper(anchor.public_key.to_bytes()),
            "root_key_store": root_key_store,
            "service_certificate_sha256": pin.fingerprint(),
            "devices": devices.iter().map(|(name, role, id)| json!({"name": name, "role": role, "device_id": id.to_string()})).collect::<Vec<_>>(),
        }),
        || {
            println!("center {} created in {}", anchor.center, data.display());
            println!("  service certificate sha256:{}", pin.fingerprint());
            println!("  root key: {root_key_store}");
            for (name, role, id) in &devices {
                println!("  {role} {name}: {id}");
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// How `center serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Serves the center over HTTPS until SIGINT or SIGTERM; requests in flight are finished
/// (and committed) before it exits.
pub fn center_serve(
    data: &Path,
    listen: &str,
    database: Option<&str>,
    log_format: LogFormat,
    pool_size: Option<usize>,
) -> Result<ExitCode, String> {
    let center = datadir::open_center_on(data, database)?;
    let mut limits = valuecard_center_http::ServiceLimits::default();
    if let Some(size) = pool_size {
        limits.pool_size = size;
    }
    let identity = datadir::service_identity(data)?;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_target(false);
    let _ = match log_format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
    println!(
        "center {} serving https://{address} (certificate sha256:{})",
        center.anchor().center,
        identity.pin().fingerprint()
    );
    std::io::Write::flush(&mut std::io::stdout()).map_err(|e| e.to_string())?;
    valuecard_center_http::serve::run_until_signal(listener, center, &identity, limits)
        .map_err(|e| format!("center service: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// What `terminal install` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    PaymentTerminal,
    Dispenser,
    /// Seed 000: card-to-card transfer between two readers.
    SettlementTerminal,
    /// Seed 001: charges memory cards from its float.
    ChargeMachine,
    /// Seed 001: checks and deducts the value of memory cards.
    PaymentMachine,
}

impl DeviceKind {
    fn role(self) -> Role {
        match self {
            DeviceKind::PaymentTerminal => Role::PaymentTerminal,
            DeviceKind::Dispenser => Role::Dispenser,
            DeviceKind::SettlementTerminal => Role::SettlementTerminal,
            DeviceKind::ChargeMachine => Role::ChargeMachine,
            DeviceKind::PaymentMachine => Role::PaymentMachine,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            DeviceKind::PaymentTerminal => "payment-terminal",
            DeviceKind::Dispenser => "dispenser",
            DeviceKind::SettlementTerminal => "settlement-terminal",
            DeviceKind::ChargeMachine => "charge-machine",
            DeviceKind::PaymentMachine => "payment-machine",
        }
    }
}

pub fn terminal_install(
    data: &Path,
    name: &str,
    kind: DeviceKind,
    database: Option<&str>,
    json_output: bool,
) -> Result<ExitCode, String> {
    // The SAM is chosen before the center hands out a device ID: a bad URI costs none.
    let choice = SamChoice::from_process_args()?;
    let sam_kind = match &choice {
        SamChoice::Software => "software".to_owned(),
        SamChoice::Pkcs11(address) => address.uri.without_pin(),
    };
    let mut center = datadir::open_center_on(data, database)?;
    let id = datadir::install_device(data, &mut center, name, kind.role(), &choice)?;
    print(
        json_output,
        json!({"name": name, "device_id": id.to_string(), "role": kind.as_str(), "sam": sam_kind}),
        || {
            println!("installed {name}: {id} (SAM: {sam_kind})");
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// Manufactures a card image and issues it through a dispenser (Figs. 4B, 4C, 7, 8); with
/// `credit`, also enables its credit function (Fig. 13) until the given date or the center's
/// default, and prints the setting number once.
pub fn card_issue(
    data: &Path,
    out: &Path,
    value: Option<&str>,
    dispenser_name: &str,
    at: &datadir::CenterArgs,
    credit: Option<Option<&str>>,
    json_output: bool,
) -> Result<ExitCode, String> {
    let value = value.map(parse_amount).transpose()?.unwrap_or(Amount::ZERO);
    let credit = credit
        .map(|expiry| expiry.map(crate::credit_cli::parse_date).transpose())
        .transpose()?;
    if credit.is_some() && at.center.is_some() {
        return Err(
            "credit is enabled where the center's files are (without --center): the setting \
             number is handed out there"
                .into(),
        );
    }
    let mut center = CenterAccess::open(data, dispenser_name, at)?;
    let mut dispenser = datadir::open_dispenser(data, dispenser_name)?;
    if out.exists() {
        return Err(format!(
            "{} already exists; a card image is never overwritten",
            out.display()
        ));
    }
    let (serial, transport_key) = match &mut center {
        CenterAccess::Local(center) => center.manufacture_chip(),
        CenterAccess::Http(_) => datadir::manufacture_chip(data)?,
    };
    let card = FileCard::manufacture_file(out, serial, transport_key)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let mut reader = InProcessReader::with_card("dispenser", card);
    let card_id = dispenser
        .issue_card(&mut reader, &mut center.link())
        .map_err(|e| explain(&e))?;
    if value > Amount::ZERO {
        dispenser
            .load(&mut reader, &mut center.link(), value)
            .map_err(|e| explain(&e))?;
    }
    let credit =
        match (credit, &mut center) {
            (Some(expiry), CenterAccess::Local(center)) => Some(
                crate::credit_cli::enable_at_issuance(&mut dispenser, &mut reader, center, expiry)?,
            ),
            _ => None,
        };
    let mut report = json!({"card": card_id.to_string(), "image": out.display().to_string(), "balance": value.minor()});
    if let Some((expiry, setting_number)) = &credit {
        report["credit"] =
            json!({"expiry": expiry.to_string(), "setting_number": setting_number.expose()});
    }
    print(json_output, report, || {
        println!("card {card_id} issued with {value} into {}", out.display());
        if let Some((expiry, setting_number)) = &credit {
            println!("  credit until {expiry}; setting number {} (give it to the holder: it is not shown again)", setting_number.expose());
        }
    });
    Ok(ExitCode::SUCCESS)
}

pub fn terminal_info(
    data: &Path,
    terminal: &str,
    reader_args: &ReaderArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal)?;
    let mut boxed = open_reader(reader_args)?;
    let mut reader: &mut dyn CardReader = &mut *boxed;
    let card = terminal.select_card(&mut reader).map_err(|e| explain(&e))?;
    let status = terminal
        .read_purse(&mut reader, &card)
        .map_err(|e| explain(&e))?;
    let log = run(
        &mut reader,
        "READ LOG",
        &proprietary(ins::READ_LOG, Vec::new()),
    )
    .map_err(|e| explain(&e))?;
    let log =
        LogEntry::decode_list(&log).map_err(|e| format!("the card sent a malformed log: {e}"))?;
    print(
        json_output,
        json!({
            "card": status.card_id.to_string(),
            "balance": status.balance.minor(),
            "state": format!("{:?}", status.state),
            "counter": status.counter,
            "abnormal_events": status.abnormal_events,
            "log": log.iter().map(|e| json!({"kind": format!("{:?}", e.kind), "counter": e.counter, "amount": e.amount.minor(), "balance_after": e.balance_after.minor(), "party": e.party.to_string(), "date": e.date.to_string()})).collect::<Vec<_>>(),
        }),
        || {
            println!(
                "card {}: balance {} ({:?}, {} updates, {} abnormal events)",
                status.card_id,
                status.balance,
                status.state,
                status.counter,
                status.abnormal_events
            );
            for entry in &log {
                println!(
                    "  #{:<4} {} {:?} {:>10} -> {:>10}  {}",
                    entry.counter,
                    entry.date,
                    entry.kind,
                    entry.amount,
                    entry.balance_after,
                    entry.party
                );
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}

pub fn terminal_purchase(
    data: &Path,
    terminal: &str,
    amount: &str,
    reader_args: &ReaderArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let amount = parse_amount(amount)?;
    let mut terminal = datadir::open_terminal(data, terminal)?;
    let mut boxed = open_reader(reader_args)?;
    let mut reader: &mut dyn CardReader = &mut *boxed;
    let receipt = terminal
        .purchase(&mut reader, amount)
        .map_err(|e| explain(&e))?;
    print(
        json_output,
        json!({"terminal": terminal.device_id().to_string(), "sequence": receipt.sequence, "card": receipt.card_id.to_string(), "amount": receipt.amount.minor(), "balance_before": receipt.balance_before.minor(), "balance_after": receipt.balance_after.minor()}),
        || {
            println!(
                "sold {} to card {}: balance {} -> {} (receipt {})",
                receipt.amount,
                receipt.card_id,
                receipt.balance_before,
                receipt.balance_after,
                receipt.sequence
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

pub fn terminal_load(
    data: &Path,
    dispenser: &str,
    amount: &str,
    reader_args: &ReaderArgs,
    at: &datadir::CenterArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let amount = parse_amount(amount)?;
    let mut center = CenterAccess::open(data, dispenser, at)?;
    let mut dispenser = datadir::open_dispenser(data, dispenser)?;
    let mut boxed = open_reader(reader_args)?;
    let mut reader: &mut dyn CardReader = &mut *boxed;
    let receipt = dispenser
        .load(&mut reader, &mut center.link(), amount)
        .map_err(|e| explain(&e))?;
    print(
        json_output,
        json!({"card": receipt.card_id.to_string(), "load_number": receipt.load_number, "amount": receipt.amount.minor(), "balance_after": receipt.balance_after.minor()}),
        || {
            println!(
                "loaded {} onto card {}: balance now {} (load {})",
                receipt.amount, receipt.card_id, receipt.balance_after, receipt.load_number
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// Settles everything in doubt for the presented card: this terminal's purchases and the
/// center's pending loads.
pub fn terminal_settle(
    data: &Path,
    terminal: &str,
    dispenser: &str,
    reader_args: &ReaderArgs,
    at: &datadir::CenterArgs,
    json_output: bool,
) -> Result<ExitCode, String> {
    let mut terminal = datadir::open_terminal(data, terminal)?;
    let mut boxed = open_reader(reader_args)?;
    let mut reader: &mut dyn CardReader = &mut *boxed;
    let card = terminal
        .select_for_settlement(&mut reader)
        .map_err(|e| explain(&e))?;
    let purchases = terminal
        .settle_in_doubt(&mut reader, &card)
        .map_err(|e| explain(&e))?;
    let mut loads = Vec::new();
    if at.center.is_some() || datadir::center_dir(data).exists() {
        let mut center = CenterAccess::open(data, dispenser, at)?;
        let mut dispenser = datadir::open_dispenser(data, dispenser)?;
        for pending in center.pending_loads(&card.card_id())? {
            // A load is settled only by the dispenser that holds it.
            if pending.dispenser_id != dispenser.device_id() {
                continue;
            }
            let outcome = dispenser
                .settle_pending_load(&mut reader, &mut center.link(), pending.load_number)
                .map_err(|e| explain(&e))?;
            loads.push((pending.load_number, outcome));
        }
    }
    print(
        json_output,
        json!({
            "card": card.card_id().to_string(),
            "purchases": purchases.iter().map(|s| json!({"sequence": s.sequence, "status": s.status.as_str()})).collect::<Vec<_>>(),
            "loads": loads.iter().map(|(n, o)| json!({"load_number": n, "status": match o { Some(true) => "committed", Some(false) => "cancelled", None => "unknown" }})).collect::<Vec<_>>(),
        }),
        || {
            println!(
                "card {}: {} purchases and {} loads settled",
                card.card_id(),
                purchases.len(),
                loads.len()
            );
            for settlement in &purchases {
                println!(
                    "  purchase {}: {}",
                    settlement.sequence,
                    settlement.status.as_str()
                );
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}

pub fn terminal_history(
    data: &Path,
    terminal: &str,
    json_output: bool,
) -> Result<ExitCode, String> {
    let terminal = datadir::open_terminal(data, terminal)?;
    let records = terminal.store().records().map_err(|e| e.to_string())?;
    let totals = terminal.store().totals().map_err(|e| e.to_string())?;
    print(
        json_output,
        json!({
            "terminal": terminal.device_id().to_string(),
            "committed_minor": totals.committed_minor,
            "in_doubt": totals.in_doubt_count,
            "purchases": records.iter().map(|r| json!({"sequence": r.sequence, "card": r.card_id.to_string(), "amount": r.amount.minor(), "balance_after": r.balance_after.minor(), "date": r.date.to_string(), "status": r.status.as_str()})).collect::<Vec<_>>(),
        }),
        || {
            println!(
                "terminal {}: {} committed ({}), {} in doubt",
                terminal.device_id(),
                records.len(),
                Amount::new(totals.committed_minor).unwrap_or(Amount::ZERO),
                totals.in_doubt_count
            );
            for r in &records {
                println!(
                    "  {:>6} {} card {} {:>10} {}",
                    r.sequence,
                    r.date,
                    r.card_id,
                    r.amount,
                    r.status.as_str()
                );
            }
        },
    );
    Ok(ExitCode::SUCCESS)
}
