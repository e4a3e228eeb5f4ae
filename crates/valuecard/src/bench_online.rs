//! `valuecard bench online`: full online purchases (seed 004) per second through HTTPS and
//! the services' databases: the order and its bill SIG1 at the mall, the payment prepared
//! (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, BRC/BI, the SPC with SIG2 checked by the
//! client), SETTLE on the card, the PCN completed with SIG3 and the receipt SIG4 fetched
//! from the store and checked, each holder's card emulated in this process.
//!
//! The floor, measured in the same run on one thread: the same purchase with the same
//! parts (card, security server, application server, store, client checks) called
//! directly, without HTTP or a database: the protocol's own cryptography and the card's
//! work. The goal: at the most throughput the ratio to the floor is at least
//! [`RATIO_GOAL`]; latency is reported at half that load.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_core::apdu::Command;
use valuecard_core::crypto::SigningKeyPair;
use valuecard_core::messages::online::{
    ins, InitializeUpdateResponse, OnlineFci, CLA_ONLINE, ONLINE_AID,
};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::{CardReader, InProcessReader};
use valuecard_settle::application::{ApplicationServer, ClientChecks};
use valuecard_settle::security::{SecurityServer, SoftwareSecurityKeys, Step, UpdateRequest};
use valuecard_settle::store::Store;
use valuecard_settle_http::embedded::{
    certify_software_security_server, demo_authorizer, demo_catalog, EmbeddedOptions, OnlineSystem,
    MALL,
};
use valuecard_settle_http::settlement::ServiceKeys;
use valuecard_settle_http::wire::Embodiment;
use valuecard_settle_http::DatabaseLocation;
use valuecard_sim::{Storage, World, WorldRng};

/// Purchases/s at full load against the floor.
pub const RATIO_GOAL: f64 = 0.5;

#[derive(clap::Args, Debug)]
pub struct OnlineArgs {
    /// Holders buying at once (each with its own card).
    #[arg(long, default_value_t = 8)]
    holders: usize,
    /// Seconds of each run (full load, then half load).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keep both services' state in PostgreSQL at this URL (a scratch database) instead of
    /// SQLite files in a temporary directory.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Exit with status 1 when the ratio to the floor is below this (default: the goal).
    #[arg(long)]
    min_ratio: Option<f64>,
    #[arg(long)]
    json: bool,
}

type Reader = InProcessReader<MemoryEeprom, WorldRng>;

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap_or(Amount::ZERO)
}

/// The world: a center with `count` cards issued with 500,000.00 each (the floor alone
/// spends thousands of purchases from one card in its second), and a certified security
/// server's keys.
fn set_up(
    count: usize,
) -> Result<
    (
        World,
        Vec<Reader>,
        SoftwareSecurityKeys,
        SoftwareSecurityKeys,
    ),
    String,
> {
    let today = SystemClock.today();
    let mut world = World::create_seeded(Storage::Memory, 1, today, WorldRng::seed_from_u64(4))
        .map_err(|e| e.to_string())?;
    let mut readers = Vec::with_capacity(count);
    for index in 0..count {
        let card = world
            .manufacture_card(MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE))
            .map_err(|e| e.to_string())?;
        let mut reader = InProcessReader::with_card(format!("holder {index}"), card);
        world
            .issue(&mut reader, amount(50_000_000))
            .map_err(|e| e.to_string())?;
        readers.push(reader);
    }
    // One security server for the services, another for the floor's direct calls.
    let mut certified = || -> Result<SoftwareSecurityKeys, String> {
        certify_software_security_server(&mut world.center, &mut rand_core::OsRng)
            .map_err(|e| e.to_string())
    };
    let service = certified()?;
    let floor = certified()?;
    Ok((world, readers, service, floor))
}

fn exchange(
    reader: &mut dyn CardReader,
    instruction: u8,
    data: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let response = reader
        .exchange(
            &Command::new(CLA_ONLINE, instruction, 0, 0)
                .with_data(data)
                .with_le(256),
        )
        .map_err(|e| e.to_string())?;
    if !response.sw.is_success() {
        return Err(format!(
            "the card answered {:02X}: {}",
            instruction, response.sw
        ));
    }
    Ok(response.data)
}

/// One purchase with every part called directly: the floor's unit of work.
fn direct_purchase(
    parts: &mut DirectParts,
    reader: &mut dyn CardReader,
    number: u64,
) -> Result<(), String> {
    let today = parts.today;
    let (bill, sig1) = parts
        .store
        .bill(&[("track-1".into(), 1)], number, today)
        .map_err(|e| e.to_string())?;
    let encoded = bill.encode();
    let bill = parts
        .application
        .check_bill(&encoded, &sig1, today)
        .map_err(|e| e.to_string())?;
    let fci = reader
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(ONLINE_AID.to_vec())
                .with_le(256),
        )
        .map_err(|e| e.to_string())?;
    let fci = OnlineFci::decode(&fci.data).map_err(|e| e.to_string())?;
    let settlement_id = valuecard_core::crypto::random_array(&mut rand_core::OsRng);
    let (step, initialize) = parts
        .security
        .challenge(settlement_id, &mut rand_core::OsRng);
    let Step::Challenged { host_challenge, .. } = step else {
        return Err("no challenge".into());
    };
    let answer = InitializeUpdateResponse::decode(&exchange(
        reader,
        ins::INITIALIZE_UPDATE,
        initialize.encode(),
    )?)
    .map_err(|e| e.to_string())?;
    let (step, external, brc) = parts
        .security
        .authenticate(settlement_id, &host_challenge, fci.card_id, &answer)
        .map_err(|e| e.to_string())?;
    exchange(reader, ins::EXTERNAL_AUTHENTICATE, external.encode())?;
    let bi = exchange(reader, ins::READ_BALANCE, brc)?;
    let Step::Authenticated { session, .. } = step else {
        return Err("not authenticated".into());
    };
    parts.sequence += 1;
    let (offered, sealed) = parts
        .security
        .offer(
            settlement_id,
            &session,
            &bi,
            &UpdateRequest {
                kind: TransactionKind::OnlinePayment,
                amount: bill.total,
                party: bill.member_store.unwrap_or(bill.store),
                date: today,
            },
            parts.sequence,
        )
        .map_err(|e| e.to_string())?;
    let sig2 = parts
        .application
        .sign_offer(&settlement_id, &bill, &offered.info, &sealed);
    parts
        .checks
        .offer(
            &settlement_id,
            &bill,
            &offered.info.encode(),
            &sealed,
            &sig2,
        )
        .map_err(|e| e.to_string())?;
    let pcn = exchange(reader, ins::SETTLE, sealed)?;
    let Step::Completed { completion, .. } = parts
        .security
        .complete(&offered, &pcn)
        .map_err(|e| e.to_string())?
    else {
        return Err("not completed".into());
    };
    let (acn, sig3) =
        parts
            .application
            .complete(settlement_id, &bill, fci.card_id, &completion, today);
    parts
        .checks
        .completion(&settlement_id, &bill, &acn, &sig3)
        .map_err(|e| e.to_string())?;
    let (receipt, sig4) = parts
        .store
        .receipt(&bill, &acn, &sig3, today)
        .map_err(|e| e.to_string())?;
    parts
        .application
        .check_receipt(&acn, &receipt, &sig4)
        .map_err(|e| e.to_string())?;
    parts
        .checks
        .receipt(&parts.store.public_key(), &acn, &receipt, &sig4)
        .map_err(|e| e.to_string())
}

struct DirectParts {
    store: Store,
    application: ApplicationServer,
    security: SecurityServer<SoftwareSecurityKeys>,
    checks: ClientChecks,
    today: valuecard_core::time::Date,
    sequence: u32,
}

/// Seconds per purchase on one thread with every part called directly.
fn floor_seconds(
    world: &World,
    keys: SoftwareSecurityKeys,
    reader: &mut Reader,
) -> Result<(f64, usize), String> {
    let mut rng = rand_core::OsRng;
    let application = ApplicationServer::new(SigningKeyPair::generate(&mut rng));
    let store = Store::new(
        MALL,
        SigningKeyPair::generate(&mut rng),
        demo_catalog(),
        application.public_key(),
    );
    let mut application = application;
    application.register_store(MALL, store.public_key());
    let checks = ClientChecks {
        application_key: application.public_key(),
    };
    let security = SecurityServer::new(keys);
    // KC for the floor's card.
    let certificate = match reader.card().map(|card| card.state()) {
        Some(valuecard_card::state::PersistentState::Personalized(purse)) => {
            purse.certificate.clone()
        }
        _ => return Err("the floor's card is not issued".into()),
    };
    let installation = security
        .install_key(
            &certificate,
            &world.center.anchor(),
            world.today(),
            &mut rng,
        )
        .map_err(|e| e.to_string())?;
    reader
        .exchange(
            &Command::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(ONLINE_AID.to_vec())
                .with_le(256),
        )
        .map_err(|e| e.to_string())?;
    exchange(reader, ins::INSTALL_KEY, installation.encode())?;
    let mut parts = DirectParts {
        store,
        application,
        security,
        checks,
        today: world.today(),
        sequence: 0,
    };
    // Warm up, then time at least a second's worth.
    for number in 0..20 {
        direct_purchase(&mut parts, reader, number)?;
    }
    let started = Instant::now();
    let mut count = 0usize;
    while started.elapsed() < Duration::from_secs(1) || count < 50 {
        direct_purchase(&mut parts, reader, 1000 + count as u64)?;
        count += 1;
    }
    Ok((started.elapsed().as_secs_f64() / count as f64, count))
}

/// What one run measured.
struct Run {
    purchases: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.purchases as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    fn percentile(&self, share: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * share).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// Every holder buys in a loop for `seconds` (at least once), each at most `rate`
/// purchases/s (`None`: as fast as it can).
fn run(
    system: &OnlineSystem,
    readers: &mut [Reader],
    seconds: u64,
    rate: Option<f64>,
) -> Result<Run, String> {
    let deadline = Duration::from_secs(seconds);
    let started = Instant::now();
    let outcomes: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = readers
            .iter_mut()
            .map(|reader| {
                let holder = system.holder();
                scope.spawn(move || -> Result<Vec<Duration>, String> {
                    let mut latencies = Vec::new();
                    let mut next = Instant::now();
                    while started.elapsed() < deadline || latencies.is_empty() {
                        if let Some(rate) = rate {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                            next += Duration::from_secs_f64(1.0 / rate);
                        }
                        let begun = Instant::now();
                        let order = holder
                            .order(&[("track-1".into(), 1)])
                            .map_err(|e| e.to_string())?;
                        let prepared = holder
                            .prepare_payment(reader, &order, Embodiment::Signed)
                            .map_err(|e| e.to_string())?;
                        holder
                            .confirm_payment(reader, &order, &prepared)
                            .map_err(|e| e.to_string())?;
                        latencies.push(begun.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("a holder's thread panicked".into()))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for outcome in outcomes {
        latencies.extend(outcome?);
    }
    Ok(Run {
        purchases: latencies.len(),
        seconds,
        latencies,
    })
}

pub fn online(args: OnlineArgs) -> Result<ExitCode, String> {
    let holders = args.holders.max(1);
    let (world, mut readers, keys, floor_keys) = set_up(holders + 1)?;
    let mut floor_reader = readers.pop().ok_or("no card for the floor")?;
    let (floor_each, floor_sample) = floor_seconds(&world, floor_keys, &mut floor_reader)?;
    let floor_per_second = 1.0 / floor_each.max(f64::MIN_POSITIVE);

    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (store_database, settlement_database) = match &args.database {
        Some(url) => (DatabaseLocation::parse(url), DatabaseLocation::parse(url)),
        None => (
            DatabaseLocation::Sqlite(scratch.path().join("store.sqlite")),
            DatabaseLocation::Sqlite(scratch.path().join("settlement.sqlite")),
        ),
    };
    let keys: ServiceKeys = Arc::new(keys);
    let system = OnlineSystem::start(
        keys,
        world.center.anchor(),
        Arc::new(demo_authorizer()),
        None,
        &EmbeddedOptions {
            store_database,
            settlement_database,
            today: Some(world.today()),
            pool_size: 8,
            store_port: 0,
            settlement_port: 0,
        },
    )
    .map_err(|e| e.to_string())?;
    // One purchase per card first: installs KC and warms the connections.
    run(&system, &mut readers, 0, None)?;
    let full = run(&system, &mut readers, args.seconds, None)?;
    let half_rate = full.per_second() / 2.0 / holders as f64;
    let half = run(&system, &mut readers, args.seconds, Some(half_rate))?;
    system.shutdown();

    let ratio = full.per_second() / floor_per_second;
    let goal = args.min_ratio.unwrap_or(RATIO_GOAL);
    let database = if args.database.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "online",
                "database": database,
                "holders": holders,
                "purchases": full.purchases,
                "purchases_per_second": full.per_second(),
                "floor_purchases_per_second": floor_per_second,
                "floor_threads": 1,
                "floor_sample_purchases": floor_sample,
                "ratio_to_floor": ratio,
                "goal": RATIO_GOAL,
                "goal_met": ratio >= RATIO_GOAL,
                "half_load_purchases_per_second": half.per_second(),
                "half_load_p50_ms": half.percentile(0.50).as_secs_f64() * 1e3,
                "half_load_p99_ms": half.percentile(0.99).as_secs_f64() * 1e3,
                "full_load_p50_ms": full.percentile(0.50).as_secs_f64() * 1e3,
                "full_load_p99_ms": full.percentile(0.99).as_secs_f64() * 1e3,
            })
        );
    } else {
        println!(
            "bench online: full online purchases through HTTPS and {database}, {holders} holders"
        );
        println!(
            "  floor:      {floor_per_second:8.1} purchases/s (the same purchase, every part called directly, one thread; {floor_sample} timed)"
        );
        println!(
            "  full load:  {:8.1} purchases/s ({} in {:.1} s), p50 {:.1} ms, p99 {:.1} ms",
            full.per_second(),
            full.purchases,
            full.seconds,
            full.percentile(0.50).as_secs_f64() * 1e3,
            full.percentile(0.99).as_secs_f64() * 1e3
        );
        println!(
            "  half load:  {:8.1} purchases/s, p50 {:.1} ms, p99 {:.1} ms",
            half.per_second(),
            half.percentile(0.50).as_secs_f64() * 1e3,
            half.percentile(0.99).as_secs_f64() * 1e3
        );
        println!(
            "  ratio to floor {ratio:.3} (goal {RATIO_GOAL}): {}",
            if ratio >= RATIO_GOAL {
                "met"
            } else {
                "NOT MET"
            }
        );
    }
    if ratio < goal {
        eprintln!("valuecard: ratio to floor {ratio:.3} is below {goal}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
