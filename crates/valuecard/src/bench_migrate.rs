//! `valuecard bench migrate`: full value moves (seed 002) per second through the move server
//! and the three providers (purse, passes, points), each an HTTPS service on its own database:
//! the upload from the old chip (S1-S8) and the download into the new one (S9-S17), every APDU
//! relayed by the holder's device, the chips emulated in this process, each pair moved once.
//!
//! The floor, measured in the same run on one thread: the same move with the same parts (the
//! same providers and administrative SAM, the engine's steps, the chips) called directly in
//! process, over SQLite in memory and without HTTP: the protocol's own cryptography, the
//! password checks of S1 and S9, the card's work and the engine's bookkeeping.
//!
//! The goal, [`RATIO_GOAL`]: at the most throughput, all holders at once reach 0.5 of the
//! floor's moves per second. It is the goal of the online purchase (`bench online`), the
//! other conversation whose every step is stored before the next is given, measured the
//! same way. Each of a move's APDUs is a TLS request from the holder's device and a step
//! stored in the movement database, and a provider's steps are requests from the move
//! server to it and writes to its books (which is what lets a move survive a server or a
//! provider that dies between two steps), where the floor pays in-memory transactions.
//! About three quarters of a move's floor (measured) is the two Argon2id password checks of S1 and
//! S9, which the services do just the same, so their own costs weigh less against it than
//! in a purchase: a ratio under 0.5 says that relaying and storing the steps, not the
//! protocol, is what limits the moves.
//!
//! A run must also leave things right: every pair moved has both purses' value on the new
//! chip and none usable on the old, and the transfer SAMs hold no copy; otherwise it fails.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore, SeedableRng};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::state::PersistentState;
use valuecard_center::db::Migration;
use valuecard_center::sql::Database;
use valuecard_core::ids::CardId;
use valuecard_core::messages::services::{KeyState, ServiceCode, ServiceOperation, Ticket};
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, FixedClock, SystemClock};
use valuecard_migrate::client::{self, Mode, MoveServerLink};
use valuecard_migrate::provider::{store, Provider};
use valuecard_migrate::sam::SoftwareAdminSam;
use valuecard_migrate::server::{
    accounts, schema, LocalMoveServer, LocalProvider, MoveServer, Progress, ProviderLink,
};
use valuecard_migrate::setup::{demo_services, MoveKeys};
use valuecard_migrate_http::embedded::{MoveOptions, MoveSystem, ProviderSetup};
use valuecard_reader::InProcessReader;
use valuecard_settle_http::DatabaseLocation;
use valuecard_sim::{Storage, World, WorldRng};

/// Moves/s over HTTPS at full load against the floor (see the module's documentation).
pub const RATIO_GOAL: f64 = 0.5;

/// The most chip pairs issued for one run, and the most holders.
const PAIRS_MAX: usize = 20_000;
const HOLDERS_MAX: usize = 256;
/// The floor's timed moves: at least this many, and at least a second of them.
const FLOOR_MOVES_MIN: usize = 5;
/// The purse of each pair's new chip.
const NEW_BALANCE_MINOR: u64 = 700;
/// The purse of each pair's old chip, plus the pair's number (so that each moves its own).
const OLD_BALANCE_MINOR: u64 = 30_000;
const PASSWORD: &str = "a long benchmark passphrase";
const PURSE: ServiceCode = ServiceCode(0x0001);

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Holders moving at once (1 to 256), each pair of chips with its own account.
    #[arg(long, default_value_t = 4)]
    holders: usize,
    /// Seconds of the run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keep the move server's and each provider's state in PostgreSQL at this URL (each in
    /// a fresh schema, dropped afterwards) instead of SQLite files in a temporary directory.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Exit with status 1 when the ratio to the floor is below this (default: the goal).
    #[arg(long)]
    min_ratio: Option<f64>,
    #[arg(long)]
    json: bool,
}

type Reader = InProcessReader<MemoryEeprom, WorldRng>;

/// One holder's old chip (with the three services) and new chip, registered to its user.
struct Pair {
    user: String,
    old: Reader,
    new: Reader,
    old_id: CardId,
    new_id: CardId,
    /// What the new chip's purse holds once the move is done: both chips' value.
    expected_minor: u64,
}

/// The world's center, the move system's SAMs it certified, and the providers.
struct Parts {
    world: World,
    admin: Arc<SoftwareAdminSam>,
    providers: Vec<Arc<Provider>>,
    issued: usize,
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).unwrap_or(Amount::ZERO)
}

fn set_up() -> Result<Parts, String> {
    let today = SystemClock.today();
    let mut world = World::create_seeded(Storage::Memory, 0, today, WorldRng::seed_from_u64(2))
        .map_err(|e| e.to_string())?;
    let keys = MoveKeys::certify(&mut world.center, &demo_services(), &mut OsRng)
        .map_err(|e| e.to_string())?;
    let admin = Arc::new(keys.admin().map_err(|e| e.to_string())?);
    let mut providers = Vec::new();
    for offer in keys.offers() {
        providers.push(Arc::new(
            keys.provider(offer.code()).map_err(|e| e.to_string())?,
        ));
    }
    Ok(Parts {
        world,
        admin,
        providers,
        issued: 0,
    })
}

/// A new pair: both chips issued by the center, the old one issued every service, a ticket
/// and points (the services in the order of `demo_services`: purse, passes, points).
fn issue_pair(parts: &mut Parts) -> Result<Pair, String> {
    let number = parts.issued;
    parts.issued += 1;
    let today = parts.world.today();
    let mut chip = |name: String, minor: u64| -> Result<(CardId, Reader), String> {
        let card = parts
            .world
            .manufacture_card(MemoryEeprom::new(valuecard_card::image::EEPROM_SIZE))
            .map_err(|e| e.to_string())?;
        let mut reader = InProcessReader::with_card(name, card);
        let id = parts
            .world
            .issue(&mut reader, amount(minor))
            .map_err(|e| e.to_string())?;
        Ok((id, reader))
    };
    let old_minor = OLD_BALANCE_MINOR + number as u64;
    let (old_id, mut old) = chip(format!("old {number}"), old_minor)?;
    let (new_id, new) = chip(format!("new {number}"), NEW_BALANCE_MINOR)?;
    for provider in &parts.providers {
        provider
            .issue_area(parts.admin.as_ref(), &mut old, today, &mut OsRng)
            .map_err(|e| format!("issuing service {}: {e}", provider.service()))?;
    }
    let operations = [
        ServiceOperation::IssueTicket(Ticket {
            ticket_id: 0x2026_0000 + number as u32,
            product: 0x0031,
            valid_from: today,
            valid_until: today.add_days(30),
            rides_left: Some(10),
        }),
        ServiceOperation::EarnPoints {
            points: 1_200,
            expiry: today.add_days(365),
        },
    ];
    for (provider, operation) in parts.providers.iter().skip(1).zip(&operations) {
        provider
            .normal_use(&mut old, Some(operation), &mut OsRng)
            .map_err(|e| format!("service {}: {e}", provider.service()))?;
    }
    Ok(Pair {
        user: format!("holder-{number}"),
        old,
        new,
        old_id,
        new_id,
        expected_minor: old_minor + NEW_BALANCE_MINOR,
    })
}

/// One full move of `pair` (upload, then download); the APDUs the device relayed.
fn move_pair(server: &dyn MoveServerLink, pair: &mut Pair) -> Result<usize, String> {
    // Each run's first command comes with the session, not as a step.
    let mut apdus = 2;
    let mut count = |_: &Progress| apdus += 1;
    let Pair { user, old, new, .. } = pair;
    client::run(server, old, user, PASSWORD, Mode::Upload, &mut count)
        .map_err(|e| format!("the upload from card {}: {e}", pair.old_id))?;
    let done = client::run(server, new, user, PASSWORD, Mode::Download, &mut count)
        .map_err(|e| format!("the download into card {}: {e}", pair.new_id))?;
    if done.state != "done" {
        let state = done.state;
        return Err(format!("the move to card {} ended {state}", pair.new_id));
    }
    Ok(apdus)
}

/// The purse on the new chip, on main keys, holding both chips' value; the old chip's purse
/// no longer usable.
fn check_arrived(pair: &Pair) -> Result<(), String> {
    let purse_of = |reader: &Reader| match reader.card().map(|card| card.state()) {
        Some(PersistentState::Personalized(purse)) => Some((
            purse.balance,
            purse.services.area(PURSE).map(|area| area.key_state),
        )),
        _ => None,
    };
    if let Some((_, Some(KeyState::Main))) = purse_of(&pair.old) {
        return Err(format!(
            "card {}'s purse is still usable after its move",
            pair.old_id
        ));
    }
    let Some((balance, key_state)) = purse_of(&pair.new) else {
        return Err(format!("card {} is not personalized", pair.new_id));
    };
    if key_state != Some(KeyState::Main) || balance.minor() != pair.expected_minor {
        return Err(format!(
            "card {} holds {} (purse keys {key_state:?}), not the {} moved to it from card {}",
            pair.new_id,
            balance,
            amount(pair.expected_minor),
            pair.old_id
        ));
    }
    Ok(())
}

fn open_in_memory(table: &'static str, migrations: &[Migration]) -> Result<Database, String> {
    let mut db = Database::open_sqlite_in_memory().map_err(|e| e.to_string())?;
    db.migrate_schema(table, migrations)
        .map_err(|e| e.to_string())?;
    Ok(db)
}

/// Seconds per move on one thread with every part called directly, and the moves timed.
/// Each pair is issued and its user created outside the timing.
fn floor_seconds(parts: &mut Parts) -> Result<(f64, usize), String> {
    let today = parts.world.today();
    let mut providers = Vec::new();
    for provider in &parts.providers {
        providers.push(Arc::new(LocalProvider::new(
            Arc::clone(provider),
            open_in_memory(store::MIGRATION_TABLE, store::MIGRATIONS)?,
            Box::new(FixedClock(today)),
        )));
    }
    let links: Vec<Arc<dyn ProviderLink>> = providers
        .iter()
        .map(|p| Arc::clone(p) as Arc<dyn ProviderLink>)
        .collect();
    let server = LocalMoveServer::new(
        MoveServer::new(parts.admin.clone(), links),
        open_in_memory(schema::MIGRATION_TABLE, schema::MIGRATIONS)?,
    );
    let mut timed = Duration::ZERO;
    let mut count = 0usize;
    // The first move warms up; the rest are timed.
    while timed < Duration::from_secs(1) || count < FLOOR_MOVES_MIN + 1 {
        let mut pair = issue_pair(parts)?;
        server
            .with_db(|_, db| {
                accounts::create_user(db, &pair.user, PASSWORD, 0, &mut OsRng)?;
                accounts::register_chip(db, &pair.user, &pair.old_id)?;
                accounts::register_chip(db, &pair.user, &pair.new_id)
            })
            .map_err(|e| e.to_string())?;
        let begun = Instant::now();
        move_pair(&server, &mut pair)?;
        if count > 0 {
            timed += begun.elapsed();
        }
        count += 1;
        check_arrived(&pair)?;
    }
    let copies: i64 = providers
        .iter()
        .map(|p| p.with_db(|provider, db| provider.copies_held(db)))
        .sum::<Result<i64, _>>()
        .map_err(|e| e.to_string())?;
    if copies != 0 {
        return Err(format!(
            "the floor's providers still hold {copies} copies after every move finished"
        ));
    }
    let timed_moves = count - 1;
    Ok((timed.as_secs_f64() / timed_moves as f64, timed_moves))
}

/// Fresh PostgreSQL schemas, one a service, dropped with this value.
struct ScratchSchemas {
    admin: postgres::Client,
    names: Vec<String>,
}

impl Drop for ScratchSchemas {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self
                .admin
                .batch_execute(&format!("DROP SCHEMA {name} CASCADE"));
        }
    }
}

/// Where the move server (first) and each provider keep their state: SQLite files in `dir`,
/// or a fresh schema each at the PostgreSQL `url`.
fn locations(
    url: Option<&str>,
    dir: &std::path::Path,
    providers: usize,
) -> Result<(Vec<DatabaseLocation>, Option<ScratchSchemas>), String> {
    let Some(url) = url else {
        let locations = (0..=providers)
            .map(|index| DatabaseLocation::Sqlite(dir.join(format!("service-{index}.sqlite"))))
            .collect();
        return Ok((locations, None));
    };
    let admin =
        postgres::Client::connect(url, postgres::NoTls).map_err(|e| format!("PostgreSQL: {e}"))?;
    let mut scratch = ScratchSchemas {
        admin,
        names: Vec::new(),
    };
    let mut locations = Vec::new();
    for _ in 0..=providers {
        let name = format!("valuecard_bench_{:016x}", OsRng.next_u64());
        scratch
            .admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        locations.push(DatabaseLocation::Postgres(crate::bench_db::scoped_to(
            url, &name,
        )));
        scratch.names.push(name);
    }
    Ok((locations, Some(scratch)))
}

/// Creates each pair's user and registers its two chips over HTTPS, `threads` at once.
fn register(system: &MoveSystem, pairs: &[Pair], threads: usize) -> Result<(), String> {
    let share = pairs.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .chunks(share)
            .map(|chunk| {
                let server = system.client();
                scope.spawn(move || -> Result<(), String> {
                    for pair in chunk {
                        server
                            .create_user(&pair.user, PASSWORD)
                            .map_err(|e| e.to_string())?;
                        for card in [pair.old_id, pair.new_id] {
                            server
                                .register_chip(&pair.user, PASSWORD, &card)
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err("a registration thread panicked".into()))
        })
    })
}

/// What the run measured, and the pairs it moved.
struct Run {
    moved: Vec<Pair>,
    seconds: f64,
    latencies: Vec<Duration>,
    apdus: usize,
    /// The pairs ran out before the time was up.
    ran_out: bool,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.moved.len() as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    fn percentile_ms(&self, share: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * share).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    }
}

/// One holder's pairs moved, the time each move took, and the APDUs relayed.
type Moved = (Vec<Pair>, Vec<Duration>, usize);

/// `holders` threads take pairs and move them for `seconds` (each at least one).
fn run(system: &MoveSystem, pairs: Vec<Pair>, holders: usize, seconds: u64) -> Result<Run, String> {
    let deadline = Duration::from_secs(seconds);
    let queue = Mutex::new(pairs.into_iter());
    let take = || queue.lock().ok().and_then(|mut queue| queue.next());
    let started = Instant::now();
    let outcomes: Vec<Result<Moved, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..holders)
            .map(|_| {
                let server = system.client();
                let take = &take;
                scope.spawn(move || -> Result<Moved, String> {
                    let (mut moved, mut latencies, mut apdus) = (Vec::new(), Vec::new(), 0);
                    while started.elapsed() < deadline || moved.is_empty() {
                        let Some(mut pair) = take() else { break };
                        let begun = Instant::now();
                        apdus += move_pair(&server, &mut pair)?;
                        latencies.push(begun.elapsed());
                        moved.push(pair);
                    }
                    Ok((moved, latencies, apdus))
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
    let mut measured = Run {
        moved: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        latencies: Vec::new(),
        apdus: 0,
        ran_out: take().is_none(),
    };
    for outcome in outcomes {
        let (moved, latencies, apdus) = outcome?;
        measured.moved.extend(moved);
        measured.latencies.extend(latencies);
        measured.apdus += apdus;
    }
    Ok(measured)
}

/// The move server on the first of `locations`, each provider on one of the others.
fn start(
    parts: &Parts,
    mut locations: Vec<DatabaseLocation>,
    holders: usize,
) -> Result<MoveSystem, String> {
    let server_database = locations.remove(0);
    let providers = parts.providers.iter().zip(locations);
    MoveSystem::start(
        parts.admin.clone(),
        providers
            .map(|(provider, database)| ProviderSetup {
                provider: Arc::clone(provider),
                database,
            })
            .collect(),
        &MoveOptions {
            server_database,
            today: Some(parts.world.today()),
            pool_size: holders,
            server_port: 0,
        },
    )
    .map_err(|e| e.to_string())
}

pub fn migrate(args: MigrateArgs) -> Result<ExitCode, String> {
    let holders = args.holders;
    if !(1..=HOLDERS_MAX).contains(&holders) {
        return Err(format!("--holders is 1 to {HOLDERS_MAX}"));
    }
    let mut parts = set_up()?;
    let (floor_each, floor_sample) = floor_seconds(&mut parts)?;
    let floor_per_second = 1.0 / floor_each.max(f64::MIN_POSITIVE);

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (locations, _scratch) =
        locations(args.database.as_deref(), dir.path(), parts.providers.len())?;
    let system = start(&parts, locations, holders)?;
    let mut issue = |count: usize| -> Result<Vec<Pair>, String> {
        let pairs = (0..count)
            .map(|_| issue_pair(&mut parts))
            .collect::<Result<Vec<_>, _>>()?;
        register(&system, &pairs, holders)?;
        Ok(pairs)
    };
    // One move a holder first: it warms the connections and tells how many pairs the run
    // needs. The service cannot move with less work than the floor, so at most the floor's
    // rate on each core; two and a half times the first moves' rate (which pay for the
    // connections), within that.
    let warm_up = run(&system, issue(holders)?, holders, 0)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let seconds = args.seconds as f64;
    let most = floor_per_second * seconds * holders.min(cores) as f64 * 1.25;
    let likely = warm_up.per_second() * seconds * 2.5;
    let count = (likely.min(most).ceil() as usize + holders).min(PAIRS_MAX);
    let measured = run(&system, issue(count)?, holders, args.seconds)?;
    let copies = system.copies_held().map_err(|e| e.to_string());
    system.shutdown();

    // Correctness before speed: a run that lost value or left a copy reports no numbers.
    let copies = copies?;
    if copies != 0 {
        return Err(format!(
            "the providers still hold {copies} copies after every move finished"
        ));
    }
    warm_up
        .moved
        .iter()
        .chain(&measured.moved)
        .try_for_each(check_arrived)?;
    report(&args, holders, &measured, floor_per_second, floor_sample)
}

fn report(
    args: &MigrateArgs,
    holders: usize,
    measured: &Run,
    floor_per_second: f64,
    floor_sample: usize,
) -> Result<ExitCode, String> {
    let moves = measured.moved.len();
    let per_second = measured.per_second();
    let ratio = per_second / floor_per_second;
    let required = args.min_ratio.unwrap_or(RATIO_GOAL);
    let apdus_per_move = measured.apdus as f64 / moves.max(1) as f64;
    let (p50, p99) = (measured.percentile_ms(0.50), measured.percentile_ms(0.99));
    let database = if args.database.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "migrate",
                "database": database,
                "holders": holders,
                "moves": moves,
                "seconds": measured.seconds,
                "moves_per_second": per_second,
                "floor_moves_per_second": floor_per_second,
                "floor_threads": 1,
                "floor_sample_moves": floor_sample,
                "ratio": ratio,
                "goal": RATIO_GOAL,
                "min_ratio": required,
                "verdict": if ratio < RATIO_GOAL { "BELOW TARGET" } else { "ok" },
                "p50_ms": p50,
                "p99_ms": p99,
                "apdus_per_move": apdus_per_move,
                "pairs_ran_out": measured.ran_out,
                "copies_held": 0,
            })
        );
    } else {
        println!(
            "bench migrate: full value moves (3 services) through the move server and providers over HTTPS and {database}, {holders} holders"
        );
        println!(
            "  floor:     {floor_per_second:8.2} moves/s (the same move, every part called directly, SQLite in memory, one thread; {floor_sample} timed)"
        );
        println!(
            "  HTTPS:     {per_second:8.2} moves/s ({moves} in {:.1} s{}), p50 {p50:.1} ms, p99 {p99:.1} ms a move",
            measured.seconds,
            if measured.ran_out {
                ", every issued pair moved"
            } else {
                ""
            }
        );
        println!("  APDUs a move: {apdus_per_move:.1} (upload and download)");
        println!("  checked: each new chip holds both purses' value, no old purse is usable, no copy is left");
        println!("  ratio to floor {ratio:.3} (goal {RATIO_GOAL}, required {required})");
        if ratio < RATIO_GOAL {
            println!("  BELOW TARGET: this run missed the goal ratio");
        }
    }
    if ratio < required {
        eprintln!("valuecard: ratio to floor {ratio:.3} is below {required}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
