//! `valuecard simulate`: the whole system at scale over simulated days
//! (`valuecard_sim::simulate`), printed as a report or as one JSON object.
//!
//! Everything but the `timing` part is reproducible: the same seed and arguments print the
//! same report byte for byte (and the same JSON apart from `timing`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use valuecard_core::money::Amount;
use valuecard_sim::simulate::{self, Config, Detection, Outcome, Progress, Report, Timing};

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Cards issued (each with its own key pair, certificate and initial load).
    #[arg(long, default_value_t = 2_000)]
    cards: u32,
    /// Payment terminals.
    #[arg(long, default_value_t = 20)]
    terminals: u32,
    /// Simulated days (about 0.1 purchases per card per day).
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// The seed every random choice, key and signature of the run derives from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the run keeps its center and cards (a new directory); a temporary directory,
    /// removed at the end, when not given.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The center on this PostgreSQL database (an empty one) instead of SQLite in the
    /// directory.
    #[arg(long)]
    database: Option<String>,
    /// Worker threads for issuance and the days' purchases (default: the machine's
    /// cores): at most this many shards compute at once, while the center serves one
    /// shard's request beside them. The report is the same for any number.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimulateArgs) -> Result<ExitCode, String> {
    let config = Config {
        cards: args.cards,
        terminals: args.terminals,
        days: args.days,
        seed: args.seed,
    };
    let scratch;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            scratch =
                tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?;
            scratch.path().to_path_buf()
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>16} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut phase = "";
    let mut show = |progress: Progress| {
        if let Some(bar) = &bar {
            if progress.phase != phase {
                phase = progress.phase;
                bar.reset();
                bar.set_message(progress.phase);
                bar.set_length(progress.total);
            }
            bar.set_position(progress.done);
        }
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let outcome = simulate::run(&config, &dir, args.database.as_deref(), threads, &mut show)
        .map_err(|error| error.to_string())?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", to_json(&outcome));
    } else {
        print!("{}", text(&outcome.report));
        print!("{}", timing_text(&outcome.timing));
    }
    Ok(if outcome.report.held() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn money(minor: u64) -> String {
    Amount::new(minor).map_or_else(
        |_| format!("{minor} minor units"),
        |amount| amount.to_string(),
    )
}

fn signed_money(minor: i128) -> String {
    let magnitude = u64::try_from(minor.unsigned_abs()).unwrap_or(u64::MAX);
    if minor < 0 {
        format!("-{}", money(magnitude))
    } else {
        money(magnitude)
    }
}

fn wide(value: i128) -> Value {
    i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from)
}

fn detection_json(detection: &Detection) -> Value {
    json!({
        "kind": detection.kind,
        "injected": detection.injected,
        "detected": detection.detected,
        "missed": detection.missed,
        "false_alarms": detection.false_alarms,
    })
}

/// The report and its timing as one object; everything but `timing` is reproducible.
pub fn to_json(outcome: &Outcome) -> Value {
    let report = &outcome.report;
    let (purchases, loads, uploads, faults, books) = (
        &report.purchases,
        &report.loads,
        &report.uploads,
        &report.faults,
        &report.conservation,
    );
    let timing = &outcome.timing;
    json!({
        "config": {
            "cards": report.config.cards,
            "terminals": report.config.terminals,
            "dispensers": report.dispensers,
            "days": report.config.days,
            "seed": report.config.seed,
            "shards": report.config.shards(),
        },
        "cards_issued": report.cards_issued,
        "purchases": {
            "attempted": purchases.attempted,
            "committed": purchases.committed,
            "committed_minor": purchases.committed_minor,
            "skipped_lost": purchases.skipped_lost,
            "insufficient_then_reloaded": purchases.insufficient,
            "interrupted": purchases.interrupted,
            "settled_committed": purchases.settled_committed,
            "settled_cancelled": purchases.settled_cancelled,
            "refused_lost": purchases.refused_lost,
            "refused_cloned": purchases.refused_cloned,
            "refused_stolen_writer": purchases.refused_stolen_writer,
            "thief_sales": purchases.thief_sales,
        },
        "loads": {
            "attempted": loads.attempted,
            "committed": loads.committed,
            "committed_minor": loads.committed_minor,
            "settled_committed": loads.settled_committed,
            "settled_cancelled": loads.settled_cancelled,
            "interrupted": loads.interrupted,
            "refused": loads.refused,
            "over_stolen_writer": loads.over_stolen_writer,
        },
        "uploads": {
            "stamp_reports": uploads.stamp_reports,
            "uploads": uploads.uploads,
            "records_stored": uploads.records_stored,
            "duplicates": uploads.duplicates,
            "refused": uploads.refused,
            "list_syncs": uploads.list_syncs,
            "held_after_upload_max": uploads.held_after_upload_max,
        },
        "faults": {
            "power_cuts_armed": faults.power_cuts_armed,
            "power_cuts_fired": faults.power_cuts_fired,
            "lost_answers": faults.lost_answers,
        },
        "detections": report.detections.iter().map(detection_json).collect::<Vec<_>>(),
        "unexplained_alerts": report.unexplained_alerts,
        "findings": report.findings,
        "findings_total": report.findings_total,
        "conservation": {
            "issued_minor": books.issued_minor,
            "loaded_minor": books.loaded_minor,
            "restored_minor": books.restored_minor,
            "spent_minor": books.spent_minor,
            "purchases_uploaded": books.purchases_uploaded,
            "remaining_minor": books.remaining_minor,
            "center_status": books.center_status,
            "center_difference_minor": wide(books.center_difference),
            "duplicated_minor": books.duplicated_minor,
            "copied_minor": books.copied_minor,
            "stolen_sales_minor": books.stolen_sales_minor,
            "stolen_sales_revealed_minor": books.stolen_sales_revealed_minor,
            "card_balances_minor": books.card_balances_minor,
            "copy_balances_minor": books.copy_balances_minor,
            "terminals_committed_minor": books.terminals_committed_minor,
            "loads_in_flight": books.loads_in_flight,
            "purchases_in_doubt": books.purchases_in_doubt,
        },
        "conserved": books.conserved,
        "held": report.held(),
        "timing": {
            "threads": timing.threads,
            "setup_seconds": timing.setup_seconds,
            "issuance_seconds": timing.issuance_seconds,
            "days_seconds": timing.days_seconds,
            "audit_seconds": timing.audit_seconds,
            "total_seconds": timing.total_seconds,
            "cards_issued_per_second": timing.cards_issued_per_second,
            "purchases_per_second": timing.purchases_per_second,
            "records_per_second": timing.records_per_second,
            "ed25519_sign_us": timing.sign_micros,
            "ed25519_verify_us": timing.verify_micros,
            "ed25519_batch_verify_us": timing.batch_verify_micros,
            "floor_seconds": timing.floor_seconds,
            "ratio_to_floor": timing.ratio_to_floor,
        },
    })
}

/// The reproducible part as text.
pub fn text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (p, l, u, f, c) = (
        &report.purchases,
        &report.loads,
        &report.uploads,
        &report.faults,
        &report.conservation,
    );
    let _ = writeln!(
        out,
        "simulate: {} cards, {} terminals, {} dispensers, {} days, seed {} ({} shards)",
        report.config.cards,
        report.config.terminals,
        report.dispensers,
        report.config.days,
        report.config.seed,
        report.config.shards()
    );
    let _ = writeln!(
        out,
        "  cards issued:  {} (each loaded with {})",
        report.cards_issued,
        money(simulate_initial())
    );
    let _ = writeln!(
        out,
        "  purchases:     {} committed of {} ({}); {} settled from the card after a fault ({} committed, {} cancelled), {} interrupted before anything moved",
        p.committed, p.attempted, money(p.committed_minor), p.settled_committed + p.settled_cancelled,
        p.settled_committed, p.settled_cancelled, p.interrupted
    );
    let _ = writeln!(
        out,
        "                 refused: {} listed lost, {} listed cloned, {} written by the stolen terminal; {} reloaded first; {} not presented (lost)",
        p.refused_lost, p.refused_cloned, p.refused_stolen_writer, p.insufficient, p.skipped_lost
    );
    let _ = writeln!(
        out,
        "  loads:         {} committed of {} ({}); {} settled after a fault ({} committed, {} cancelled), {} interrupted, {} refused; {} over a record of the stolen terminal",
        l.committed, l.attempted, money(l.committed_minor), l.settled_committed + l.settled_cancelled,
        l.settled_committed, l.settled_cancelled, l.interrupted, l.refused, l.over_stolen_writer
    );
    let _ = writeln!(
        out,
        "  nights:        {} uploads storing {} records ({} duplicates, {} refused), {} stamp reports, {} list syncs; at most {} records left in a terminal after its upload",
        u.uploads, u.records_stored, u.duplicates, u.refused, u.stamp_reports, u.list_syncs, u.held_after_upload_max
    );
    let _ = writeln!(
        out,
        "  faults:        {} power cuts at a random write ({} armed), {} lost answers, {} sales by the thief",
        f.power_cuts_fired, f.power_cuts_armed, f.lost_answers, p.thief_sales
    );
    let _ = writeln!(out, "  detected against injected:");
    for detection in &report.detections {
        let _ = writeln!(
            out,
            "    {:<17} {}/{} found{}{}",
            detection.kind,
            detection.detected,
            detection.injected,
            if detection.missed.is_empty() {
                String::new()
            } else {
                format!(", MISSED {}", detection.missed.join(" "))
            },
            if detection.false_alarms.is_empty() {
                String::new()
            } else {
                format!(", FALSE ALARMS {}", detection.false_alarms.join(" "))
            },
        );
    }
    let _ = writeln!(
        out,
        "    unexplained alerts: {}",
        report.unexplained_alerts.len()
    );
    for alert in &report.unexplained_alerts {
        let _ = writeln!(out, "      {alert}");
    }
    let _ = writeln!(out, "  findings:      {}", report.findings_total);
    for finding in &report.findings {
        let _ = writeln!(out, "      {finding}");
    }
    let _ = writeln!(out, "  conservation (center status: {}):", c.center_status);
    let _ = writeln!(
        out,
        "    issued {} + loaded {} - restored {} - spent {} = {}; remaining on record {} (difference {}: the clones' second spends {} less the thief's sales a later load showed {})",
        money(c.issued_minor), money(c.loaded_minor), money(c.restored_minor), money(c.spent_minor),
        money((i128::from(c.issued_minor) + i128::from(c.loaded_minor) - i128::from(c.restored_minor) - i128::from(c.spent_minor)).max(0) as u64),
        money(c.remaining_minor), signed_money(c.center_difference), money(c.duplicated_minor),
        money(c.stolen_sales_revealed_minor)
    );
    let _ = writeln!(
        out,
        "    remaining {} - thief's sales not yet shown {} = card balances {}; copies hold {} of {} copied",
        money(c.remaining_minor),
        money(c.stolen_sales_minor.saturating_sub(c.stolen_sales_revealed_minor)),
        money(c.card_balances_minor),
        money(c.copy_balances_minor),
        money(c.copied_minor)
    );
    let _ = writeln!(
        out,
        "    uploaded {} = committed at honest terminals {}; loads in flight {}, purchases in doubt {}",
        money(c.spent_minor), money(c.terminals_committed_minor), c.loads_in_flight, c.purchases_in_doubt
    );
    let _ = writeln!(out, "  conserved:     {}", c.conserved);
    let _ = writeln!(out, "  held:          {}", report.held());
    out
}

fn simulate_initial() -> u64 {
    simulate::INITIAL_MINOR
}

/// The wall-clock part, apart from the report.
pub fn timing_text(timing: &Timing) -> String {
    format!(
        "timing (not reproducible, {} threads):\n  set-up {:.1} s, issuance {:.1} s ({:.0} cards/s), days {:.1} s, audit {:.1} s, total {:.1} s\n  \
         {:.0} purchases/s, {:.0} records/s; crypto floor {:.1} s (sign {:.1} us, verify {:.1} us, batch {:.1} us per signature), ratio to floor {:.3}\n",
        timing.threads, timing.setup_seconds, timing.issuance_seconds, timing.cards_issued_per_second, timing.days_seconds,
        timing.audit_seconds, timing.total_seconds, timing.purchases_per_second, timing.records_per_second,
        timing.floor_seconds, timing.sign_micros, timing.verify_micros, timing.batch_verify_micros, timing.ratio_to_floor
    )
}
