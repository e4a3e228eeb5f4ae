//! `valuecard bench http`: N payment terminals at once, each uploading its signed usage
//! records to the center's HTTPS service over loopback as a terminal does (requests of
//! [`USAGE_ITEMS_PER_REQUEST`] records, each signed by the terminal's SAM, each answer
//! checked against the center's signature), against the Ed25519 batch-verification floor of
//! the same records on one core, measured in the same run.
//!
//! The goal ("The center at scale"): at N = 64 the service ingests at least 0.6 of the floor
//! on either database, and at half that load (N = 32) 99 % of requests are answered within
//! 100 ms. Each run uploads fresh records (a record sent twice would only measure the
//! de-duplication), so the terminals' records are made, with real cards through the whole
//! purchase protocol, before any run starts and outside every timed part.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore, SeedableRng};
use valuecard_card::eeprom::MemoryEeprom;
use valuecard_card::image::EEPROM_SIZE;
use valuecard_card::Card;
use valuecard_center::sql::Database;
use valuecard_center::Center;
use valuecard_center_http::client::USAGE_ITEMS_PER_REQUEST;
use valuecard_center_http::{BackgroundServer, HttpCenterLink, ServiceIdentity, ServiceLimits};
use valuecard_core::cert::Role;
use valuecard_core::crypto::{verify_batch, PublicKey, Signature};
use valuecard_core::ids::DeviceId;
use valuecard_core::messages::center::{
    TerminalLink, UploadReceipt, UsageItem, UsageUpload, USAGE_BATCH_MAX,
};
use valuecard_core::messages::purse::TransactionKind;
use valuecard_core::money::Amount;
use valuecard_core::time::{Clock, SystemClock};
use valuecard_reader::InProcessReader;
use valuecard_sam::SoftwareSam;
use valuecard_sim::{install_sam, WorldRng};
use valuecard_terminal::dispenser::Dispenser;
use valuecard_terminal::payment::{usage_item, PaymentTerminal};
use valuecard_terminal::store::{MemoryStore, TerminalStore};
use zeroize::Zeroizing;

/// The goal: records/s at [`RATIO_AT`] terminals at least this share of the floor...
const TARGET_RATIO: f64 = 0.6;
const RATIO_AT: usize = 64;
/// ...and the 99th percentile of request latency at half that load below this.
const P99_BOUND: Duration = Duration::from_millis(100);
const P99_AT: usize = RATIO_AT / 2;
/// More terminals than this would measure the host's thread scheduler, not the service.
const MAX_TERMINALS: usize = 1024;
const MAX_RECORDS_PER_TERMINAL: usize = 100_000;
/// The floor is a rate per record: a sample this large measures it as well as all would.
const FLOOR_SAMPLE: usize = 8192;
/// Purchases one card makes before the next card is issued (a card serves one terminal).
const PURCHASES_PER_CARD: usize = 500;
/// Purchase amounts cycle through 1..=this minor units, so the center's total is not merely
/// the record count.
const AMOUNT_CYCLE: u64 = 5;

#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// How many terminals upload at once, one run per number (comma-separated); the goal
    /// is judged at 64 (ratio) and 32 (p99 latency).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,256")]
    terminals: Vec<usize>,
    /// Usage records each terminal uploads in each run.
    #[arg(long, default_value_t = 96)]
    records_per_terminal: usize,
    /// Run the center on PostgreSQL (a fresh schema, dropped afterwards) instead of SQLite.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when the ratio to the floor at 64 terminals (or at the most
    /// terminals run, without 64) is below this.
    #[arg(long, value_name = "F")]
    min_ratio: Option<f64>,
}

fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

type BenchTerminal = PaymentTerminal<SoftwareSam, MemoryStore, WorldRng>;

/// One terminal's records for every run it takes part in, in the order it made them.
struct Pool {
    terminal_id: DeviceId,
    items: Vec<UsageItem>,
}

/// The service, the center behind it, and what must be cleaned up after.
struct Setup {
    center: Arc<Mutex<Center>>,
    terminals: Vec<BenchTerminal>,
    /// PostgreSQL: the administrative connection and the schema to drop.
    cleanup: Option<(postgres::Client, String)>,
    store: &'static str,
}

fn clock() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

/// A center in `dir` (SQLite there, or PostgreSQL in a fresh schema), with `terminals`
/// payment terminals installed.
fn set_up(
    dir: &std::path::Path,
    database: Option<&str>,
    terminals: usize,
    rng: &mut WorldRng,
) -> Result<(Setup, Dispenser<SoftwareSam, WorldRng>), String> {
    let (db, cleanup) = match database {
        Some(url) => {
            let schema = format!("valuecard_bench_{:016x}", OsRng.next_u64());
            let mut admin = postgres::Client::connect(url, postgres::NoTls)
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            admin
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .map_err(error)?;
            let scoped = format!("{url} options='-c search_path={schema}'");
            (
                Some(Database::connect_postgres(&scoped).map_err(error)?),
                Some((admin, schema)),
            )
        }
        None => (None, None),
    };
    let store = if db.is_some() {
        "PostgreSQL"
    } else {
        "SQLite (WAL, synchronous=FULL)"
    };
    let mut center = Center::init(&dir.join("center"), db, clock(), rng).map_err(error)?;
    let dispenser_sam = install_sam(&mut center, Role::Dispenser, clock(), rng).map_err(error)?;
    let dispenser = Dispenser::new(
        dispenser_sam,
        clock(),
        WorldRng::from_rng(&mut *rng).map_err(error)?,
    )
    .map_err(error)?;
    let mut installed = Vec::with_capacity(terminals);
    for _ in 0..terminals {
        let sam = install_sam(&mut center, Role::PaymentTerminal, clock(), rng).map_err(error)?;
        let terminal_rng = WorldRng::from_rng(&mut *rng).map_err(error)?;
        installed.push(
            PaymentTerminal::new(sam, MemoryStore::default(), clock(), terminal_rng)
                .map_err(error)?,
        );
    }
    Ok((
        Setup {
            center: Arc::new(Mutex::new(center)),
            terminals: installed,
            cleanup,
            store,
        },
        dispenser,
    ))
}

fn lock(center: &Mutex<Center>) -> std::sync::MutexGuard<'_, Center> {
    center
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type BenchCard = InProcessReader<MemoryEeprom, WorldRng>;

/// Cards issued and loaded by the dispenser, enough for `purchases` purchases at one
/// terminal.
fn issue_cards(
    center: &Mutex<Center>,
    dispenser: &mut Dispenser<SoftwareSam, WorldRng>,
    purchases: usize,
    rng: &mut WorldRng,
) -> Result<Vec<BenchCard>, String> {
    let value = Amount::new(PURCHASES_PER_CARD as u64 * AMOUNT_CYCLE).map_err(error)?;
    let mut center = lock(center);
    (0..purchases.div_ceil(PURCHASES_PER_CARD))
        .map(|_| {
            let (serial, transport_key) = center.manufacture_chip();
            let card = Card::manufacture(
                MemoryEeprom::new(EEPROM_SIZE),
                serial,
                transport_key,
                WorldRng::from_rng(&mut *rng).map_err(error)?,
            )
            .map_err(error)?;
            let mut reader = InProcessReader::with_card("bench", card);
            dispenser
                .issue_card(&mut reader, &mut *center)
                .map_err(error)?;
            dispenser
                .load(&mut reader, &mut *center, value)
                .map_err(error)?;
            Ok(reader)
        })
        .collect()
}

/// `purchases` real purchases at `terminal` with `cards`, and the usage items the terminal
/// would upload for them.
fn purchase_all(
    terminal: &mut BenchTerminal,
    cards: &mut [BenchCard],
    purchases: usize,
) -> Result<Pool, String> {
    for index in 0..purchases {
        let amount = Amount::new(1 + index as u64 % AMOUNT_CYCLE).map_err(error)?;
        let card = cards
            .get_mut(index / PURCHASES_PER_CARD)
            .ok_or("fewer cards than purchases need")?;
        terminal.purchase(card, amount).map_err(error)?;
    }
    let pending = terminal.store().pending_uploads(purchases).map_err(error)?;
    let items: Vec<UsageItem> = pending.iter().filter_map(usage_item).collect();
    if items.len() != purchases {
        return Err(format!("generated {} of {purchases} records", items.len()));
    }
    Ok(Pool {
        terminal_id: terminal.device_id(),
        items,
    })
}

/// Every terminal's records: the cards are issued one after another (the center is one),
/// then the terminals buy on every core, each with its own cards.
fn generate(
    setup: &mut Setup,
    dispenser: &mut Dispenser<SoftwareSam, WorldRng>,
    needs: &[usize],
    rng: &mut WorldRng,
) -> Result<Vec<Pool>, String> {
    let mut cards = Vec::with_capacity(needs.len());
    for &need in needs {
        cards.push(issue_cards(&setup.center, dispenser, need, rng)?);
    }
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut jobs: Vec<Vec<(&mut BenchTerminal, &mut Vec<BenchCard>, usize)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut loads = vec![0usize; workers];
    // Longest first onto the least loaded worker: the workers finish together.
    let mut work: Vec<_> = setup
        .terminals
        .iter_mut()
        .zip(cards.iter_mut())
        .zip(needs.iter().copied())
        .enumerate()
        .map(|(index, ((terminal, cards), need))| (index, terminal, cards, need))
        .collect();
    work.sort_by_key(|(_, _, _, need)| std::cmp::Reverse(*need));
    let mut order = Vec::with_capacity(work.len());
    for (index, terminal, cards, need) in work {
        let worker = (0..workers).min_by_key(|&w| loads[w]).unwrap_or(0);
        loads[worker] += need;
        order.push((index, worker, jobs[worker].len()));
        jobs[worker].push((terminal, cards, need));
    }
    let mut made: Vec<Vec<Pool>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                scope.spawn(move || {
                    job.into_iter()
                        .map(|(terminal, cards, need)| purchase_all(terminal, cards, need))
                        .collect::<Result<Vec<Pool>, String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|_| "a purchase worker panicked".to_owned())?
            })
            .collect::<Result<_, String>>()
    })?;
    // Back into terminal order.
    order.sort_by_key(|(index, _, _)| *index);
    let mut pools = Vec::with_capacity(order.len());
    for (_, worker, slot) in order {
        let pool = made
            .get_mut(worker)
            .and_then(|pools| pools.get_mut(slot))
            .ok_or("a terminal's records went missing")?;
        pools.push(std::mem::replace(
            pool,
            Pool {
                terminal_id: DeviceId([0; 8]),
                items: Vec::new(),
            },
        ));
    }
    Ok(pools)
}

/// The signed strings of one record, with their keys and signatures.
type SignedSet = [(PublicKey, Vec<u8>, Signature); 3];

/// Seconds per record of Ed25519 batch verification of the three signatures of (a sample
/// of) the records, on one core, as `bench ingest` measures its floor.
fn floor_seconds_per_record(pools: &[Pool], center: &mut Center) -> Result<(f64, usize), String> {
    let mut keys = std::collections::HashMap::new();
    let mut key = |center: &mut Center, device: DeviceId| -> Result<PublicKey, String> {
        if let Some(key) = keys.get(&device) {
            return Ok(*key);
        }
        let found = center.device_key(device).map_err(error)?;
        keys.insert(device, found);
        Ok(found)
    };
    let mut card_keys = std::collections::HashMap::new();
    let mut messages: Vec<SignedSet> = Vec::new();
    let per_pool = FLOOR_SAMPLE.div_ceil(pools.len().max(1));
    for pool in pools {
        let seller = key(center, pool.terminal_id)?;
        for item in pool.items.iter().take(per_pool) {
            let card_key = match card_keys.get(&item.card_id) {
                Some(key) => *key,
                None => {
                    let found = center.card_public_key(&item.card_id).map_err(error)?;
                    card_keys.insert(item.card_id, found);
                    found
                }
            };
            let writer = match item.previous_usage.kind {
                TransactionKind::Load => center.anchor().public_key,
                TransactionKind::Purchase => key(center, item.previous_usage.writer)?,
                TransactionKind::TransferOut | TransactionKind::TransferIn => {
                    return Err("the upload workload holds no transfers".into())
                }
            };
            messages.push([
                (
                    card_key,
                    item.card_signed_message(pool.terminal_id),
                    item.card_signature,
                ),
                (
                    seller,
                    item.commit(pool.terminal_id).signed_message(),
                    item.terminal_signature,
                ),
                (
                    writer,
                    item.previous_usage.signed_message(&item.card_id),
                    item.previous_usage.signature,
                ),
            ]);
        }
    }
    let start = Instant::now();
    for chunk in messages.chunks(USAGE_BATCH_MAX) {
        let batch: Vec<(PublicKey, &[u8], Signature)> = chunk
            .iter()
            .flat_map(|set| {
                set.iter()
                    .map(|(key, message, signature)| (*key, message.as_slice(), *signature))
            })
            .collect();
        verify_batch(&batch, 1).map_err(error)?;
    }
    let sampled = messages.len().max(1);
    Ok((start.elapsed().as_secs_f64() / sampled as f64, sampled))
}

/// One run: `uploads[t]` is what terminal t sends, in the requests it sends it in.
struct RunResult {
    terminals: usize,
    records: usize,
    wall: Duration,
    /// Every request's time, sorted.
    latencies: Vec<Duration>,
    receipt: UploadReceipt,
}

impl RunResult {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Duration {
        let rank = (p / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// Held for writing while the terminals get ready; they start when it is released, or
/// give up if it says so (a terminal thread that could not start).
type StartGate = std::sync::RwLock<bool>;

/// What one terminal does in a run: upload its requests one after another, each timed from
/// sending to the checked answer (the first one includes connecting, as a terminal's sync
/// does).
fn terminal_uploads(
    link: Result<HttpCenterLink, String>,
    requests: &[UsageUpload],
    gate: &StartGate,
) -> Result<(Vec<Duration>, UploadReceipt), String> {
    let go = *gate
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !go {
        return Err("the run was called off".into());
    }
    let mut link = link?;
    let mut times = Vec::with_capacity(requests.len());
    let mut total = UploadReceipt::default();
    for request in requests {
        let sent = Instant::now();
        let receipt = link.upload_usage(request).map_err(error)?;
        times.push(sent.elapsed());
        total.absorb(receipt);
    }
    Ok((times, total))
}

/// A link for a terminal, signing with a copy of its SAM (as a terminal program loads its
/// SAM a second time for its link to the center).
fn link_for(terminal: &BenchTerminal, server: &BackgroundServer) -> Result<HttpCenterLink, String> {
    let image = Zeroizing::new(terminal.sam().to_image());
    let sam = SoftwareSam::from_image(&image).map_err(error)?;
    HttpCenterLink::new(&server.url(), server.pin(), Box::new(sam)).map_err(error)
}

/// Every terminal on a thread of its own, all released at once; the run lasts until the
/// last one has its last answer.
fn run(
    server: &BackgroundServer,
    terminals: &[BenchTerminal],
    uploads: &[Vec<UsageUpload>],
) -> Result<RunResult, String> {
    let gate = StartGate::new(false);
    let (wall, outcomes) = std::thread::scope(|scope| {
        let mut held = gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut handles = Vec::with_capacity(uploads.len());
        let mut refused = None;
        for (terminal, requests) in terminals.iter().zip(uploads) {
            let link = link_for(terminal, server);
            let gate = &gate;
            match std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || terminal_uploads(link, requests, gate))
            {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    refused = Some(format!("cannot start a terminal thread: {e}"));
                    break;
                }
            }
        }
        *held = refused.is_none();
        let began = Instant::now();
        drop(held);
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|_| "a terminal thread panicked".to_owned())?
            })
            .collect();
        let wall = began.elapsed();
        match refused {
            Some(why) => Err(why),
            None => Ok((wall, outcomes)),
        }
    })?;
    let mut latencies = Vec::new();
    let mut receipt = UploadReceipt::default();
    for outcome in outcomes {
        let (times, part) = outcome?;
        latencies.extend(times);
        receipt.absorb(part);
    }
    latencies.sort();
    Ok(RunResult {
        terminals: uploads.len(),
        records: uploads
            .iter()
            .flatten()
            .map(|upload| upload.items.len())
            .sum(),
        wall,
        latencies,
        receipt,
    })
}

/// Each run's requests, per terminal: terminal t takes the next `records` of its records in
/// every run that has more than t terminals.
fn plan_runs(
    pools: &[Pool],
    counts: &[usize],
    records: usize,
) -> Result<Vec<Vec<Vec<UsageUpload>>>, String> {
    let mut next = vec![0usize; pools.len()];
    counts
        .iter()
        .map(|&count| {
            pools
                .iter()
                .zip(next.iter_mut())
                .take(count)
                .map(|(pool, next)| {
                    let mine = pool
                        .items
                        .get(*next..*next + records)
                        .ok_or("a terminal has too few records for its runs")?;
                    *next += records;
                    Ok(mine
                        .chunks(USAGE_ITEMS_PER_REQUEST)
                        .map(|chunk| UsageUpload {
                            terminal_id: pool.terminal_id,
                            items: chunk.to_vec(),
                        })
                        .collect())
                })
                .collect()
        })
        .collect()
}

/// The goal's verdict: each part is `None` when its number of terminals was not run.
struct Verdict {
    ratio_at_goal: Option<f64>,
    p99_at_goal: Option<Duration>,
}

impl Verdict {
    fn new(runs: &[RunResult], floor_per_second: f64) -> Self {
        let at = |n: usize| runs.iter().find(|run| run.terminals == n);
        Verdict {
            ratio_at_goal: at(RATIO_AT).map(|run| run.records_per_second() / floor_per_second),
            p99_at_goal: at(P99_AT).map(|run| run.percentile(99.0)),
        }
    }

    /// A part that was measured and missed.
    fn below(&self) -> bool {
        self.ratio_at_goal.is_some_and(|ratio| ratio < TARGET_RATIO)
            || self.p99_at_goal.is_some_and(|p99| p99 >= P99_BOUND)
    }

    /// Met only when both parts were measured; `None` when either was not and none missed.
    fn met(&self) -> Option<bool> {
        if self.below() {
            Some(false)
        } else if self.ratio_at_goal.is_some() && self.p99_at_goal.is_some() {
            Some(true)
        } else {
            None
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub fn http(args: HttpArgs) -> Result<ExitCode, String> {
    let mut counts = args.terminals.clone();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() || counts.first() == Some(&0) {
        return Err("--terminals takes numbers of terminals of at least 1".into());
    }
    let most = counts.last().copied().unwrap_or(1);
    if most > MAX_TERMINALS {
        return Err(format!("--terminals: at most {MAX_TERMINALS} terminals"));
    }
    let records = args.records_per_terminal;
    if !(1..=MAX_RECORDS_PER_TERMINAL).contains(&records) {
        return Err(format!(
            "--records-per-terminal must be between 1 and {MAX_RECORDS_PER_TERMINAL}"
        ));
    }
    if args.min_ratio.is_some_and(|ratio| !ratio.is_finite()) {
        return Err("--min-ratio must be a number".into());
    }
    // Terminal t uploads in every run with more than t terminals.
    let needs: Vec<usize> = (0..most)
        .map(|t| records * counts.iter().filter(|&&n| n > t).count())
        .collect();

    let dir = tempfile::tempdir().map_err(error)?;
    let mut rng = WorldRng::seed_from_u64(OsRng.next_u64());
    let (mut setup, mut dispenser) = set_up(dir.path(), args.database.as_deref(), most, &mut rng)?;
    let made = Instant::now();
    let pools = generate(&mut setup, &mut dispenser, &needs, &mut rng)?;
    let generation = made.elapsed();
    let (floor_each, floor_sample) = floor_seconds_per_record(&pools, &mut lock(&setup.center))?;
    let floor_per_second = 1.0 / floor_each.max(f64::MIN_POSITIVE);
    let plans = plan_runs(&pools, &counts, records)?;
    let uploaded_minor: u64 = plans
        .iter()
        .flatten()
        .flatten()
        .flat_map(|upload| &upload.items)
        .map(|item| item.amount.minor())
        .sum();

    let server = BackgroundServer::start(
        TcpListener::bind("127.0.0.1:0").map_err(error)?,
        Arc::clone(&setup.center),
        &ServiceIdentity::generate(&[]).map_err(error)?,
        ServiceLimits::default(),
    )
    .map_err(error)?;
    // One untimed request first: the service's first answer pays for warming its caches
    // and code, which no terminal after the first would see. An empty upload stores nothing.
    let first = setup.terminals.first().ok_or("no terminal installed")?;
    link_for(first, &server)?
        .upload_usage(&UsageUpload {
            terminal_id: first.device_id(),
            items: Vec::new(),
        })
        .map_err(error)?;
    let mut runs = Vec::with_capacity(plans.len());
    for plan in &plans {
        runs.push(run(&server, &setup.terminals, plan)?);
    }
    server.shutdown().map_err(error)?;
    // What the center holds now, asked of the center itself rather than of the answers.
    let (center_minor, center_records) = lock(&setup.center).reported_spending().map_err(error)?;
    let mut receipt = UploadReceipt::default();
    for run in &runs {
        receipt.absorb(run.receipt.clone());
    }
    let total: usize = runs.iter().map(|run| run.records).sum();
    drop(setup.terminals);
    drop(setup.center);
    if let Some((mut admin, schema)) = setup.cleanup {
        let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
    }
    // A run whose records were not all stored, once, measured something else.
    if receipt.stored as usize != total
        || receipt.duplicates != 0
        || !receipt.refused.is_empty()
        || center_records != total as u64
        || center_minor != uploaded_minor
    {
        return Err(format!(
            "uploaded {total} records ({uploaded_minor} minor units): the center stored {}, \
             {} duplicates, {} refused (first: {:?}); it holds {center_records} records of \
             {center_minor} minor units",
            receipt.stored,
            receipt.duplicates,
            receipt.refused.len(),
            receipt.refused.first()
        ));
    }

    let verdict = Verdict::new(&runs, floor_per_second);
    // --min-ratio is judged where the goal is, or at the most terminals run.
    let judged = runs
        .iter()
        .find(|run| run.terminals == RATIO_AT)
        .or(runs.last())
        .map(|run| (run.terminals, run.records_per_second() / floor_per_second));
    let min_ratio_met = args
        .min_ratio
        .map(|min| judged.is_some_and(|(_, ratio)| ratio >= min));
    if args.json {
        let runs_json: Vec<_> = runs
            .iter()
            .map(|run| {
                serde_json::json!({
                    "terminals": run.terminals,
                    "records": run.records,
                    "requests": run.latencies.len(),
                    "seconds": run.wall.as_secs_f64(),
                    "records_per_second": run.records_per_second(),
                    "p50_ms": millis(run.percentile(50.0)),
                    "p99_ms": millis(run.percentile(99.0)),
                    "max_ms": millis(run.latencies.last().copied().unwrap_or_default()),
                    "ratio_to_floor": run.records_per_second() / floor_per_second,
                    "stored": run.receipt.stored,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "http",
                "store": setup.store,
                "transport": "HTTPS over loopback, one connection per terminal",
                "records_per_terminal": records,
                "records_per_request": USAGE_ITEMS_PER_REQUEST,
                "generation_seconds": generation.as_secs_f64(),
                "floor_records_per_second": floor_per_second,
                "floor_threads": 1,
                "floor_sample_records": floor_sample,
                "signatures_per_record": 3,
                "runs": runs_json,
                "records": total,
                "stored": receipt.stored,
                "duplicates": receipt.duplicates,
                "refused": receipt.refused.len(),
                "uploaded_amount_minor": uploaded_minor,
                "center_records": center_records,
                "center_amount_minor": center_minor,
                "target": {
                    "ratio": TARGET_RATIO,
                    "ratio_at_terminals": RATIO_AT,
                    "p99_ms": millis(P99_BOUND),
                    "p99_at_terminals": P99_AT,
                },
                "ratio_at_target": verdict.ratio_at_goal,
                "p99_ms_at_target": verdict.p99_at_goal.map(millis),
                "target_met": verdict.met(),
                "below_target": verdict.below(),
                "min_ratio": args.min_ratio,
                "min_ratio_met": min_ratio_met,
            })
        );
    } else {
        println!(
            "signed terminals uploading usage records to the center's HTTPS service on {}, \
             {records} records per terminal in requests of {USAGE_ITEMS_PER_REQUEST}:",
            setup.store
        );
        println!(
            "  floor: {floor_per_second:10.0} records/s (Ed25519 batch verification of 3 \
             signatures per record, one core, {floor_sample} records)"
        );
        println!("  terminals   records/s   p50 ms   p99 ms   ratio to floor");
        for run in &runs {
            println!(
                "  {:9}  {:10.0}  {:7.1}  {:7.1}  {:15.3}",
                run.terminals,
                run.records_per_second(),
                millis(run.percentile(50.0)),
                millis(run.percentile(99.0)),
                run.records_per_second() / floor_per_second
            );
        }
        println!("  every record stored once: {total} uploaded, the center holds {center_records}");
        println!(
            "  target: ratio >= {TARGET_RATIO} at {RATIO_AT} terminals, p99 < {} ms at \
             {P99_AT}",
            millis(P99_BOUND)
        );
        if verdict.below() {
            println!("  BELOW TARGET: this run missed the target");
        } else if verdict.met().is_none() {
            println!("  target not judged: it needs runs at {P99_AT} and {RATIO_AT} terminals");
        }
    }
    match min_ratio_met {
        Some(false) => {
            if let Some((terminals, ratio)) = judged {
                eprintln!(
                    "valuecard: ratio to floor {ratio:.3} at {terminals} terminals is below \
                     --min-ratio {}",
                    args.min_ratio.unwrap_or_default()
                );
            }
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
