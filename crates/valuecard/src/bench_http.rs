//! `valuecard bench http`: N payment terminals at once, each uploading its signed usage
//! records to the center's HTTPS service over loopback as a terminal does (requests of
//! [`USAGE_ITEMS_PER_REQUEST`] records, each signed by the terminal's SAM, each answer
//! checked against the center's signature), against the Ed25519 batch-verification floor of
//! the same records on one core, measured in the same run.
//!
//! The goal ("The center at scale"): at N = 64 the service ingests at least 0.6 of the floor
//! on either database, and at half that load 99 % of requests are answered within 100 ms.
//! Half the load is an open-loop run after the others: N = 32 terminals each send their
//! requests on a schedule that offers, all together, half the records per second the
//! 64-terminal run achieved; each request is timed from the moment the schedule said to
//! send it, so a terminal that falls behind counts its lateness (no coordinated omission). Each run uploads fresh records (a record sent twice would only measure the
//! de-duplication), so the terminals' records are made, with real cards through the whole
//! purchase protocol, before any run starts and outside every timed part.

mod workload;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore, SeedableRng};
use valuecard_center_http::client::USAGE_ITEMS_PER_REQUEST;
use valuecard_center_http::{BackgroundServer, HttpCenterLink, ServiceIdentity, ServiceLimits};
use valuecard_core::messages::center::{TerminalLink, UploadReceipt, UsageUpload};
use valuecard_sam::SoftwareSam;
use valuecard_sim::WorldRng;
use zeroize::Zeroizing;

use workload::{floor_seconds_per_record, generate, lock, plan_runs, set_up, BenchTerminal};

/// The goal: records/s at [`RATIO_AT`] terminals at least this share of the floor...
const TARGET_RATIO: f64 = 0.6;
const RATIO_AT: usize = 64;
/// ...and the 99th percentile of request latency at half that load below this.
const P99_BOUND: Duration = Duration::from_millis(100);
const P99_AT: usize = RATIO_AT / 2;
/// More terminals than this would measure the host's thread scheduler, not the service
/// (and each holds two descriptors here: its connection and the service's end of it).
const MAX_TERMINALS: usize = 1024;
const MAX_RECORDS_PER_TERMINAL: usize = 100_000;

#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// How many terminals upload at once, one run per number (comma-separated); the goal
    /// is judged at 64 (ratio), and with 64 a last run of 32 terminals paced to half the
    /// 64-terminal rate judges the p99 latency.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,256")]
    terminals: Vec<usize>,
    /// Usage records each terminal uploads in each run (its sync session: one connection,
    /// requests of up to 160 records).
    #[arg(long, default_value_t = 480)]
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

/// What one run measured.
struct RunResult {
    terminals: usize,
    /// The offered records per second of an open-loop run; `None` for a closed loop (each
    /// terminal sends its next request when the last is answered).
    paced: Option<f64>,
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
    schedule: Option<Schedule>,
) -> Result<(Vec<Duration>, UploadReceipt), String> {
    let go = *gate
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !go {
        return Err("the run was called off".into());
    }
    let began = Instant::now();
    let mut link = link?;
    let mut times = Vec::with_capacity(requests.len());
    let mut total = UploadReceipt::default();
    for (index, request) in requests.iter().enumerate() {
        let sent = match &schedule {
            Some(schedule) => {
                let due = began + schedule.due(index);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                due
            }
            None => Instant::now(),
        };
        let receipt = link.upload_usage(request).map_err(error)?;
        times.push(sent.elapsed());
        total.absorb(receipt);
    }
    Ok((times, total))
}

/// When one terminal of an open-loop run sends its requests: its first after `offset`
/// (the terminals' starts spread over one interval), then one every `interval`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    offset: Duration,
    interval: Duration,
}

impl Schedule {
    /// Terminal `index` of `terminals`, each request carrying `records`, all of them
    /// together offering `records_per_second`.
    fn new(index: usize, terminals: usize, records: usize, records_per_second: f64) -> Self {
        let interval = records as f64 * terminals as f64 / records_per_second.max(1.0);
        Schedule {
            offset: Duration::from_secs_f64(interval * index as f64 / terminals.max(1) as f64),
            interval: Duration::from_secs_f64(interval),
        }
    }

    fn due(&self, request: usize) -> Duration {
        self.offset
            + self
                .interval
                .saturating_mul(u32::try_from(request).unwrap_or(u32::MAX))
    }
}

/// A link for a terminal, signing with a copy of its SAM (as a terminal program loads its
/// SAM a second time for its link to the center).
fn link_for(terminal: &BenchTerminal, server: &BackgroundServer) -> Result<HttpCenterLink, String> {
    let image = Zeroizing::new(terminal.sam().to_image());
    let sam = SoftwareSam::from_image(&image).map_err(error)?;
    HttpCenterLink::new(&server.url(), server.pin(), Box::new(sam)).map_err(error)
}

/// Every terminal on a thread of its own, all released at once; the run lasts until the
/// last one has its last answer. With `paced`, the terminals send on a schedule that offers
/// that many records per second in all (open loop); else each sends its next request when
/// its last is answered.
fn run(
    server: &BackgroundServer,
    terminals: &[BenchTerminal],
    uploads: &[Vec<UsageUpload>],
    paced: Option<f64>,
) -> Result<RunResult, String> {
    let gate = StartGate::new(false);
    let (wall, outcomes) = std::thread::scope(|scope| {
        let mut held = gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut handles = Vec::with_capacity(uploads.len());
        let mut refused = None;
        for (index, (terminal, requests)) in terminals.iter().zip(uploads).enumerate() {
            let link = link_for(terminal, server);
            let gate = &gate;
            let schedule = paced.map(|rate| {
                let records = requests.first().map_or(1, |request| request.items.len());
                Schedule::new(index, uploads.len(), records, rate)
            });
            match std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || {
                    terminal_uploads(link, requests, gate, schedule)
                }) {
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
        paced,
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

/// The goal's verdict: each part is `None` when its number of terminals was not run.
struct Verdict {
    ratio_at_goal: Option<f64>,
    p99_at_goal: Option<Duration>,
}

impl Verdict {
    fn new(runs: &[RunResult], floor_per_second: f64) -> Self {
        let closed = |n: usize| {
            runs.iter()
                .find(|run| run.terminals == n && run.paced.is_none())
        };
        Verdict {
            ratio_at_goal: closed(RATIO_AT).map(|run| run.records_per_second() / floor_per_second),
            p99_at_goal: runs
                .iter()
                .find(|run| run.paced.is_some())
                .map(|run| run.percentile(99.0)),
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

/// Everything one invocation measured.
struct Measured {
    store: &'static str,
    records_per_terminal: usize,
    generation: Duration,
    floor_per_second: f64,
    floor_sample: usize,
    runs: Vec<RunResult>,
    /// Records uploaded over all runs, and their amounts.
    total: usize,
    uploaded_minor: u64,
    /// The service's answers over all runs.
    receipt: UploadReceipt,
    /// What the center holds after the runs.
    center_records: u64,
    center_minor: u64,
}

/// The numbers of terminals to run, ascending, checked.
fn terminal_counts(args: &HttpArgs) -> Result<Vec<usize>, String> {
    let mut counts = args.terminals.clone();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() || counts.first() == Some(&0) {
        return Err("--terminals takes numbers of terminals of at least 1".into());
    }
    if counts.last().is_some_and(|&most| most > MAX_TERMINALS) {
        return Err(format!("--terminals: at most {MAX_TERMINALS} terminals"));
    }
    if !(1..=MAX_RECORDS_PER_TERMINAL).contains(&args.records_per_terminal) {
        return Err(format!(
            "--records-per-terminal must be between 1 and {MAX_RECORDS_PER_TERMINAL}"
        ));
    }
    if args.min_ratio.is_some_and(|ratio| !ratio.is_finite()) {
        return Err("--min-ratio must be a number".into());
    }
    Ok(counts)
}

fn measure(args: &HttpArgs, counts: &[usize]) -> Result<Measured, String> {
    let records = args.records_per_terminal;
    let most = counts.last().copied().unwrap_or(1);
    // Terminal t uploads in every run with more than t terminals.
    // The closed-loop runs, then (with a run at the goal's terminals) the open-loop run at
    // half its load.
    let mut planned = counts.to_vec();
    if counts.contains(&RATIO_AT) {
        planned.push(P99_AT);
    }
    let needs: Vec<usize> = (0..most)
        .map(|t| records * planned.iter().filter(|&&n| n > t).count())
        .collect();
    let dir = tempfile::tempdir().map_err(error)?;
    let mut rng = WorldRng::seed_from_u64(OsRng.next_u64());
    let (mut setup, mut dispenser) = set_up(dir.path(), args.database.as_deref(), most, &mut rng)?;
    let made = Instant::now();
    let pools = generate(&mut setup, &mut dispenser, &needs, &mut rng)?;
    let generation = made.elapsed();
    let (floor_each, floor_sample) = floor_seconds_per_record(&pools, &mut lock(&setup.center))?;
    let plans = plan_runs(&pools, &planned, records)?;
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
    let mut runs: Vec<RunResult> = Vec::with_capacity(plans.len());
    for (index, plan) in plans.iter().enumerate() {
        let paced = if index < counts.len() {
            None
        } else {
            let at_goal = runs
                .iter()
                .find(|run| run.terminals == RATIO_AT)
                .ok_or("no run at the goal's terminals to pace by")?;
            Some(at_goal.records_per_second() / 2.0)
        };
        runs.push(run(&server, &setup.terminals, plan, paced)?);
    }
    server.shutdown().map_err(error)?;
    // What the center holds now, asked of the center itself rather than of the answers.
    let (center_minor, center_records) = lock(&setup.center).reported_spending().map_err(error)?;
    let mut receipt = UploadReceipt::default();
    for run in &runs {
        receipt.absorb(run.receipt.clone());
    }
    Ok(Measured {
        store: setup.store,
        records_per_terminal: records,
        generation,
        floor_per_second: 1.0 / floor_each.max(f64::MIN_POSITIVE),
        floor_sample,
        total: runs.iter().map(|run| run.records).sum(),
        runs,
        uploaded_minor,
        receipt,
        center_records,
        center_minor,
    })
}

impl Measured {
    /// Every record uploaded was stored, once: else the runs measured something else.
    fn check_stored_once(&self) -> Result<(), String> {
        let receipt = &self.receipt;
        if receipt.stored as usize == self.total
            && receipt.duplicates == 0
            && receipt.refused.is_empty()
            && self.center_records == self.total as u64
            && self.center_minor == self.uploaded_minor
        {
            return Ok(());
        }
        Err(format!(
            "uploaded {} records ({} minor units): the center stored {}, {} duplicates, {} \
             refused (first: {:?}); it holds {} records of {} minor units",
            self.total,
            self.uploaded_minor,
            receipt.stored,
            receipt.duplicates,
            receipt.refused.len(),
            receipt.refused.first(),
            self.center_records,
            self.center_minor
        ))
    }

    fn ratio(&self, run: &RunResult) -> f64 {
        run.records_per_second() / self.floor_per_second
    }

    fn print_json(&self, verdict: &Verdict, min_ratio: Option<f64>, min_ratio_met: Option<bool>) {
        let runs: Vec<_> = self
            .runs
            .iter()
            .map(|run| {
                serde_json::json!({
                    "terminals": run.terminals,
                    "paced_records_per_second": run.paced,
                    "records": run.records,
                    "requests": run.latencies.len(),
                    "seconds": run.wall.as_secs_f64(),
                    "records_per_second": run.records_per_second(),
                    "p50_ms": millis(run.percentile(50.0)),
                    "p99_ms": millis(run.percentile(99.0)),
                    "max_ms": millis(run.latencies.last().copied().unwrap_or_default()),
                    "ratio_to_floor": self.ratio(run),
                    "stored": run.receipt.stored,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "http",
                "store": self.store,
                "transport": "HTTPS over loopback, one connection per terminal",
                "records_per_terminal": self.records_per_terminal,
                "records_per_request": USAGE_ITEMS_PER_REQUEST,
                "generation_seconds": self.generation.as_secs_f64(),
                "floor_records_per_second": self.floor_per_second,
                "floor_threads": 1,
                "floor_sample_records": self.floor_sample,
                "signatures_per_record": 3,
                "runs": runs,
                "records": self.total,
                "stored": self.receipt.stored,
                "duplicates": self.receipt.duplicates,
                "refused": self.receipt.refused.len(),
                "uploaded_amount_minor": self.uploaded_minor,
                "center_records": self.center_records,
                "center_amount_minor": self.center_minor,
                "target": {
                    "ratio": TARGET_RATIO,
                    "ratio_at_terminals": RATIO_AT,
                    "p99_ms": millis(P99_BOUND),
                    "p99_at_terminals": P99_AT,
                    "p99_at": "half the records per second of the run at ratio_at_terminals, offered open-loop",
                },
                "ratio_at_target": verdict.ratio_at_goal,
                "p99_ms_at_target": verdict.p99_at_goal.map(millis),
                "target_met": verdict.met(),
                "below_target": verdict.below(),
                "min_ratio": min_ratio,
                "min_ratio_met": min_ratio_met,
            })
        );
    }

    fn print_text(&self, verdict: &Verdict) {
        println!(
            "signed terminals uploading usage records to the center's HTTPS service on {}, \
             {} records per terminal in requests of {USAGE_ITEMS_PER_REQUEST}:",
            self.store, self.records_per_terminal
        );
        println!(
            "  floor: {:10.0} records/s (Ed25519 batch verification of 3 signatures per \
             record, one core, {} records)",
            self.floor_per_second, self.floor_sample
        );
        println!("  terminals   records/s   p50 ms   p99 ms   ratio to floor");
        for run in &self.runs {
            let label = match run.paced {
                Some(_) => format!("{} paced", run.terminals),
                None => run.terminals.to_string(),
            };
            println!(
                "  {:>9}  {:10.0}  {:7.1}  {:7.1}  {:15.3}{}",
                label,
                run.records_per_second(),
                millis(run.percentile(50.0)),
                millis(run.percentile(99.0)),
                self.ratio(run),
                run.paced.map_or(String::new(), |rate| format!(
                    "   (offered {rate:.0} records/s, half the {RATIO_AT}-terminal rate, open loop)"
                ))
            );
        }
        println!(
            "  every record stored once: {} uploaded, the center holds {}",
            self.total, self.center_records
        );
        println!(
            "  target: ratio >= {TARGET_RATIO} at {RATIO_AT} terminals, p99 < {} ms at half \
             that load ({P99_AT} terminals paced)",
            millis(P99_BOUND)
        );
        let ratio = verdict
            .ratio_at_goal
            .map_or("not run".to_owned(), |ratio| format!("{ratio:.3}"));
        let p99 = verdict
            .p99_at_goal
            .map_or("not run".to_owned(), |p99| format!("{:.1} ms", millis(p99)));
        println!("  measured: ratio at {RATIO_AT} terminals {ratio}, p99 at half load {p99}");
        if verdict.below() {
            println!("  BELOW TARGET: this run missed the target");
        } else if verdict.met().is_none() {
            println!("  target not judged: it needs a run at {RATIO_AT} terminals");
        }
    }
}

pub fn http(args: HttpArgs) -> Result<ExitCode, String> {
    let counts = terminal_counts(&args)?;
    let measured = measure(&args, &counts)?;
    measured.check_stored_once()?;
    let verdict = Verdict::new(&measured.runs, measured.floor_per_second);
    // --min-ratio is judged where the goal is, or at the most terminals run.
    let closed: Vec<&RunResult> = measured
        .runs
        .iter()
        .filter(|run| run.paced.is_none())
        .collect();
    let judged = closed
        .iter()
        .find(|run| run.terminals == RATIO_AT)
        .or(closed.last())
        .map(|run| (run.terminals, measured.ratio(run)));
    let min_ratio_met = args
        .min_ratio
        .map(|min| judged.is_some_and(|(_, ratio)| ratio >= min));
    if args.json {
        measured.print_json(&verdict, args.min_ratio, min_ratio_met);
    } else {
        measured.print_text(&verdict);
    }
    match (min_ratio_met, judged, args.min_ratio) {
        (Some(false), Some((terminals, ratio)), Some(min)) => {
            eprintln!(
                "valuecard: ratio to floor {ratio:.3} at {terminals} terminals is below \
                 --min-ratio {min}"
            );
            Ok(ExitCode::FAILURE)
        }
        (Some(false), _, _) => Ok(ExitCode::FAILURE),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_run_offers_the_asked_rate_with_the_terminals_spread_over_one_interval() {
        // 32 terminals, requests of 160 records, 5,120 records/s in all: each terminal sends
        // one request a second, the next terminal 1/32 s after the one before.
        let schedules: Vec<Schedule> = (0..32)
            .map(|t| Schedule::new(t, 32, 160, 5_120.0))
            .collect();
        for (index, schedule) in schedules.iter().enumerate() {
            assert_eq!(schedule.interval, Duration::from_secs(1));
            assert_eq!(
                schedule.offset,
                Duration::from_secs_f64(index as f64 / 32.0)
            );
            assert_eq!(schedule.due(3), schedule.offset + Duration::from_secs(3));
        }
        // Over ten seconds the terminals offer the asked rate.
        let sent = schedules
            .iter()
            .map(|s| {
                (0..100)
                    .filter(|&r| s.due(r) < Duration::from_secs(10))
                    .count()
            })
            .sum::<usize>();
        assert_eq!(sent * 160, 51_200);
        // A rate of zero paces as slowly as one record a second instead of dividing by zero.
        assert!(Schedule::new(0, 1, 160, 0.0).interval >= Duration::from_secs(160));
    }

    #[test]
    fn the_verdict_takes_the_ratio_from_the_closed_run_and_the_p99_from_the_paced_one() {
        let run = |terminals: usize, paced: Option<f64>, millis: u64| RunResult {
            terminals,
            paced,
            records: 6_400,
            wall: Duration::from_secs(1),
            latencies: vec![Duration::from_millis(millis); 10],
            receipt: UploadReceipt::default(),
        };
        let runs = [run(64, None, 900), run(32, Some(3_200.0), 40)];
        let verdict = Verdict::new(&runs, 10_000.0);
        assert_eq!(verdict.ratio_at_goal, Some(0.64));
        assert_eq!(verdict.p99_at_goal, Some(Duration::from_millis(40)));
        assert_eq!(verdict.met(), Some(true));
        let slow = [run(64, None, 900), run(32, Some(3_200.0), 150)];
        assert!(Verdict::new(&slow, 10_000.0).below());
        // Without the paced run the latency is not judged, whatever the closed runs took.
        let unpaced = [run(32, None, 10), run(64, None, 900)];
        let verdict = Verdict::new(&unpaced, 10_000.0);
        assert_eq!(verdict.p99_at_goal, None);
        assert_eq!(verdict.met(), None);
    }
}
