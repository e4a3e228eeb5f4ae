//! The process's own metrics, in the names Prometheus client libraries use
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//! `process_start_time_seconds`), read from Linux's `/proc` at each scrape. Elsewhere, or if
//! a file cannot be read, the metric is left out rather than reported wrong.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// When the service started, the first time metrics were asked for or the service began.
static STARTED: OnceLock<f64> = OnceLock::new();

/// Notes the start time (called when the service starts).
pub(crate) fn mark_start() {
    let _ = STARTED.get_or_init(now_seconds);
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// Resident memory from `VmRSS` of `/proc/self/status` (kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kilobytes.checked_mul(1024)
}

/// CPU time of every thread from `/proc/self/schedstat`'s first field (nanoseconds on a
/// CPU), which needs no clock-tick constant.
fn cpu_seconds() -> Option<f64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // The runtime's threads come and go: one that exited between the listing and the
        // read is skipped, instead of losing the whole metric for this scrape.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let Some(nanoseconds) = text.split_whitespace().next().and_then(|f| f.parse().ok()) else {
            continue;
        };
        total = total.saturating_add(nanoseconds);
    }
    Some(total as f64 / 1e9)
}

fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

pub(crate) fn render(out: &mut String) {
    let gauges: [(&str, &str, &str, Option<f64>); 4] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            resident_bytes().map(|b| b as f64),
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu_seconds(),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open_fds().map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
            STARTED.get().copied(),
        ),
    ];
    for (name, kind, help, value) in gauges {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}
