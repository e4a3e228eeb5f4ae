//! `valuecard online try`: the online settlement system of seed 004 for a person to use. A
//! center with one card (an image file) issued with 50.00, the mall and the settlement
//! service as HTTPS services with their own databases in the data directory, and the
//! holder's wallet on 127.0.0.1 with the card in its (emulated) reader; completed updates
//! go to the center, whose reconciliation is printed when it stops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use valuecard_card::FileCard;
use valuecard_core::crypto::SealingKeyPair;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::InProcessReader;
use valuecard_settle_http::embedded::{
    certify_software_security_server, demo_authorizer, EmbeddedOptions, OnlineSystem,
};
use valuecard_settle_http::settlement::reporter::{report_pending, InProcessCenter};
use valuecard_settle_http::settlement::ServiceKeys;
use valuecard_settle_http::DatabaseLocation;
use valuecard_sim::{card_path, read_purse, Storage, World};

use crate::wallet::{reader_opener, CardWorker, OnlineEndpoints, RunningWallet, Wallet};

#[derive(clap::Subcommand, Debug)]
pub enum OnlineCommands {
    /// Start a center with one card, the mall and the settlement services, and the
    /// holder's wallet, for a person to try in a browser; Ctrl-C stops it and prints the
    /// center's reconciliation.
    Try(TryArgs),
}

#[derive(clap::Args, Debug)]
pub struct TryArgs {
    /// The data directory (the center, the card image, the services' databases). A
    /// directory left by an earlier run is replaced; any other non-empty one is refused.
    #[arg(long, default_value = "valuecard-online")]
    data: PathBuf,
    /// The wallet page's local port (0: any free port).
    #[arg(long, default_value_t = 8470)]
    port: u16,
    /// Keep the settlement service's state in PostgreSQL at this URL.
    #[arg(long, value_name = "URL")]
    settlement_database: Option<String>,
    /// Keep the store's state in PostgreSQL at this URL.
    #[arg(long, value_name = "URL")]
    store_database: Option<String>,
    /// Keep the security server's master key and signing key in this PKCS#11 token (a URI
    /// such as `pkcs11:token=valuecard;object=online-security?pin-value=1234`, see
    /// docs/hsm.md) instead of the process's memory: both are generated in the token.
    #[arg(long, value_name = "pkcs11:URI")]
    security_token: Option<String>,
    /// Print one JSON line with the addresses once everything listens.
    #[arg(long)]
    json: bool,
}

const MARKER: &str = ".valuecard-online";

pub fn online(command: OnlineCommands) -> Result<ExitCode, String> {
    match command {
        OnlineCommands::Try(args) => try_it(args),
    }
}

fn location(url: Option<&str>, file: PathBuf) -> DatabaseLocation {
    match url {
        Some(url) => DatabaseLocation::parse(url),
        None => DatabaseLocation::Sqlite(file),
    }
}

/// The security server's keys, certified by the center: generated in a PKCS#11 token, or in
/// memory.
fn security_keys(world: &mut World, token: Option<&str>) -> Result<ServiceKeys, String> {
    let mut rng = rand_core::OsRng;
    // The security server seals nothing to itself; the center's registry wants an X25519 key.
    let sealing = SealingKeyPair::generate(&mut rng).public_key();
    match token {
        Some(uri) => {
            use valuecard_sam_pkcs11::{NewMaster, Pkcs11SecurityKeys, TokenAddress};
            let address = TokenAddress::parse(uri, None).map_err(|e| format!("{uri}: {e}"))?;
            let public = Pkcs11SecurityKeys::provision(&address, NewMaster::Generate)
                .map_err(|e| format!("the security server's token: {e}"))?;
            let (_, certificate) = world
                .center
                .certify_online_settlement(public, sealing)
                .map_err(|e| e.to_string())?;
            let keys = Pkcs11SecurityKeys::open(&address, certificate)
                .map_err(|e| format!("the security server's token: {e}"))?;
            Ok(Arc::new(keys))
        }
        None => Ok(Arc::new(
            certify_software_security_server(&mut world.center, &mut rng)
                .map_err(|e| e.to_string())?,
        )),
    }
}

fn try_it(args: TryArgs) -> Result<ExitCode, String> {
    crate::demo::prepare_data_dir(&args.data, MARKER, "online try")?;
    let dir = &args.data;
    let today = SystemClock.today();
    let mut world =
        World::create(Storage::Directory(dir.clone()), 1, today).map_err(|e| e.to_string())?;
    let card_file = card_path(dir, 1);
    {
        let (serial, transport_key) = world.center.manufacture_chip();
        let card = FileCard::manufacture_file(&card_file, serial, transport_key)
            .map_err(|e| e.to_string())?;
        let mut reader = InProcessReader::with_card("holder", card);
        world
            .issue(&mut reader, Amount::new(5_000).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let keys = security_keys(&mut world, args.security_token.as_deref())?;
    let options = EmbeddedOptions {
        store_database: location(args.store_database.as_deref(), dir.join("store.sqlite")),
        settlement_database: location(
            args.settlement_database.as_deref(),
            dir.join("settlement.sqlite"),
        ),
        today: None,
        pool_size: 4,
        store_port: 0,
        settlement_port: 0,
    };
    let system = OnlineSystem::start(
        keys,
        world.center.anchor(),
        Arc::new(demo_authorizer()),
        None,
        &options,
    )
    .map_err(|e| e.to_string())?;
    let endpoints = OnlineEndpoints {
        store_url: system.store.url(),
        store_certificate: system.store.pin().to_pem(),
        settlement_url: system.settlement.url(),
        settlement_certificate: system.settlement.pin().to_pem(),
        application_key: hex::encode(system.application_key.to_bytes()),
        currency: "EUR".into(),
    };
    endpoints.save(dir)?;
    let card = CardWorker::start(reader_opener(Some(card_file.clone()), None))?;
    let wallet = RunningWallet::start(
        Wallet::new(endpoints.holder()?, card, endpoints.currency.clone()),
        args.port,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "wallet_url": wallet.url(),
                "store_url": endpoints.store_url,
                "settlement_url": endpoints.settlement_url,
                "card": card_file.display().to_string(),
                "data_dir": dir.display().to_string(),
            })
        );
    } else {
        println!("Open {} in a browser.", wallet.url());
        println!("  card image {} holds 50.00 EUR", card_file.display());
        println!(
            "  the mall {} and the settlement service {}",
            endpoints.store_url, endpoints.settlement_url
        );
        println!("  test credit cards: 4111 1111 1111 1111 (approved up to 1000.00), 4000 0000 0000 0002 (declined)");
        println!("Ctrl-C stops everything and prints the center's reconciliation.");
    }
    // The completed updates go to the center from here, where the center lives.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let mut last = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            if let Err(error) = report_pending(
                &system.settlement_pool,
                &mut InProcessCenter(&mut world.center),
                today.0,
            ) {
                eprintln!("the online records could not be reported yet: {error}");
            }
        }
    }
    drop(wallet);
    report_pending(
        &system.settlement_pool,
        &mut InProcessCenter(&mut world.center),
        today.0,
    )
    .map_err(|e| e.to_string())?;
    system.shutdown();
    let balance = {
        let card = FileCard::open_file(&card_file).map_err(|e| e.to_string())?;
        let mut reader = InProcessReader::with_card("holder", card);
        read_purse(&mut reader).map_err(|e| e.to_string())?.balance
    };
    let books = world.reconcile(&[balance]).map_err(|e| e.to_string())?;
    let summary = serde_json::json!({
        "issued": books.issued,
        "loaded": books.loaded,
        "spent": books.spent,
        "spent_online": books.spent_online,
        "charged_online": books.charged_online,
        "balances_total": books.balances_total,
        "conserved": books.conserved,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "Reconciliation: issued {} + charged online {} - spent online {} = card balance {}: {}",
            books.issued,
            books.charged_online,
            books.spent_online,
            books.balances_total,
            if books.conserved {
                "conserved"
            } else {
                "NOT conserved"
            }
        );
    }
    Ok(if books.conserved {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What the demo's online part did.
pub struct OnlineShow {
    pub lines: Vec<String>,
    pub purchases: Vec<serde_json::Value>,
    pub charges: Vec<serde_json::Value>,
}

/// The demo's seed-004 part: the embedded mall and settlement service; the card in
/// `reader` buys an album from a member store (ST1-ST20, content downloaded for the
/// receipt) and is charged 20.00 against a credit card (Figs. 24-32); a declined charge
/// changes nothing; the security server's records go to the center, whose one
/// reconciliation then covers them with the terminals' purchases and the transfers.
pub fn demo(
    world: &mut World,
    reader: &mut dyn valuecard_reader::CardReader,
) -> Result<OnlineShow, String> {
    let today = world.today();
    let keys: ServiceKeys = Arc::new(
        certify_software_security_server(&mut world.center, &mut rand_core::OsRng)
            .map_err(|e| e.to_string())?,
    );
    let server_id = keys.device_id();
    let system = OnlineSystem::start(
        keys,
        world.center.anchor(),
        Arc::new(demo_authorizer()),
        None,
        &EmbeddedOptions::in_memory(today),
    )
    .map_err(|e| e.to_string())?;
    let holder = system.holder();
    let mut lines = vec![format!(
        "Security server {server_id} certified by the center (role 09); the mall at {} and the settlement service at {} (HTTPS)",
        system.store.url(),
        system.settlement.url()
    )];
    let order = holder
        .order(&[("album-1".to_owned(), 1)])
        .map_err(|e| e.to_string())?;
    let prepared = holder
        .prepare_payment(
            reader,
            &order,
            valuecard_settle_http::wire::Embodiment::Signed,
        )
        .map_err(|e| e.to_string())?;
    lines.push(format!(
        "Order {} at {}: bill {} signed by the mall (SIG1); the card's balance {} shown with it under SIG2 before the card is touched (ST15)",
        order.bill.order_number, order.view.member_store, order.bill.total, prepared.balance
    ));
    let paid = holder
        .confirm_payment(reader, &order, &prepared)
        .map_err(|e| e.to_string())?;
    let content = holder.download(&paid).map_err(|e| e.to_string())?;
    lines.push(format!(
        "Card {} paid {} (SPC applied once, PCN to the security server, completion SIG3, receipt SIG4); {} bytes of content downloaded; balance {}",
        prepared.card_id,
        paid.amount,
        content.len(),
        paid.balance_after
    ));
    let purchases = vec![serde_json::json!({
        "card": prepared.card_id.to_string(),
        "store": order.view.member_store,
        "order_number": order.bill.order_number,
        "amount": paid.amount.minor(),
        "balance_after": paid.balance_after.minor(),
        "content_bytes": content.len(),
        "embodiment": "signed",
    })];
    let visa = valuecard_settle_http::wire::CreditCardBody {
        number: "4111 1111 1111 1111".into(),
        expiry: "12/29".into(),
        holder_name: "Demo Holder".into(),
    };
    let declined = holder.prepare_charge(
        reader,
        Amount::new(2_000).map_err(|e| e.to_string())?,
        valuecard_settle_http::wire::CreditCardBody {
            number: "4000 0000 0000 0002".into(),
            ..visa.clone()
        },
    );
    lines.push(format!(
        "A charge on a declined credit card: {}",
        match &declined {
            Err(error) => format!("refused ({error}), the card untouched"),
            Ok(_) => "NOT REFUSED".into(),
        }
    ));
    if declined.is_ok() {
        return Err("the declined credit card was approved".into());
    }
    let charge = holder
        .prepare_charge(reader, Amount::new(2_000).map_err(|e| e.to_string())?, visa)
        .map_err(|e| e.to_string())?;
    let charged = holder
        .confirm_charge(reader, &charge)
        .map_err(|e| e.to_string())?;
    let balance_after = match charged {
        valuecard_settle_http::holder::Resolution::Completed { balance_after } => balance_after,
        valuecard_settle_http::holder::Resolution::Voided => {
            return Err("the charge was voided".into())
        }
    };
    lines.push(format!(
        "Card {} charged {} online (authorization {}, value update under KC signed SIG5 and checked by the client): balance {}",
        charge.card_id, charge.amount, charge.authorization, balance_after
    ));
    let charges = vec![serde_json::json!({
        "card": charge.card_id.to_string(),
        "amount": charge.amount.minor(),
        "authorization": charge.authorization,
        "balance_after": balance_after.minor(),
    })];
    let summary = report_pending(
        &system.settlement_pool,
        &mut InProcessCenter(&mut world.center),
        today.0,
    )
    .map_err(|e| e.to_string())?;
    lines.push(format!(
        "The security server reported {} online records to the center ({} refused)",
        summary.reported,
        summary.refused.len()
    ));
    system.shutdown();
    Ok(OnlineShow {
        lines,
        purchases,
        charges,
    })
}
