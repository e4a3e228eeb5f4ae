//! The service's metrics in the Prometheus text exposition format (version 0.0.4): requests
//! by endpoint and status, refusals by reason, records stored, duplicated and refused,
//! clones detected, loads authorized and settled by outcome, database errors, the pool's
//! connections in use and requests waiting for one, requests in flight, a request latency
//! histogram per endpoint, and the process (`process_metrics.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::paths;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The endpoint label of a request path: one of the service's routes, or `other` (so that
/// unknown paths cannot grow the label set).
pub(crate) fn endpoint_label(path: &str) -> &'static str {
    match path {
        paths::ASSIGN => paths::ASSIGN,
        paths::RESUME => paths::RESUME,
        paths::CERTIFY => paths::CERTIFY,
        paths::AUTHORIZE => paths::AUTHORIZE,
        paths::SETTLE => paths::SETTLE,
        paths::SETTLEMENT_CHALLENGE => paths::SETTLEMENT_CHALLENGE,
        paths::USAGE => paths::USAGE,
        paths::LISTS => paths::LISTS,
        paths::STAMPS => paths::STAMPS,
        paths::SERVICES => paths::SERVICES,
        paths::TRANSFERS => paths::TRANSFERS,
        paths::TRANSFER_RELEASE => paths::TRANSFER_RELEASE,
        paths::MEMCARD_WRITES => paths::MEMCARD_WRITES,
        paths::MEMCARD_FLOAT => paths::MEMCARD_FLOAT,
        paths::MEMCARD_PENDING => paths::MEMCARD_PENDING,
        paths::HEALTH => paths::HEALTH,
        paths::METRICS => paths::METRICS,
        paths::OPENAPI => paths::OPENAPI,
        _ if path
            .strip_prefix("/v1/cards/")
            .and_then(|rest| rest.strip_suffix("/pending-loads"))
            .is_some_and(|card| !card.is_empty() && !card.contains('/')) =>
        {
            paths::PENDING_LOADS_ROUTE
        }
        _ if path
            .strip_prefix("/v1/memcard/cards/")
            .and_then(|rest| rest.strip_suffix("/latest"))
            .is_some_and(|card| !card.is_empty() && !card.contains('/')) =>
        {
            paths::MEMCARD_LATEST_ROUTE
        }
        _ => "other",
    }
}

#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<(&'static str, u16), u64>,
    refusals: BTreeMap<&'static str, u64>,
    latency: BTreeMap<&'static str, Histogram>,
    /// Uploaded records by kind (`usage`, `transfers`) and outcome.
    records: BTreeMap<(&'static str, &'static str), u64>,
    /// Cards found cloned by an upload, by the kind of upload.
    clones: BTreeMap<&'static str, u64>,
    /// Load settlements by the outcome the center read from the evidence.
    settlements: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    counters: Mutex<Counters>,
    loads_authorized: AtomicU64,
    in_flight: AtomicI64,
    /// Requests that failed on the database, and health checks it did not answer.
    database_errors: AtomicU64,
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Metrics {
    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn record(
        &self,
        endpoint: &'static str,
        status: u16,
        refusal: Option<&'static str>,
        elapsed: Duration,
    ) {
        if endpoint == paths::AUTHORIZE && status == 200 {
            self.loads_authorized.fetch_add(1, Ordering::SeqCst);
        }
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *counters.requests.entry((endpoint, status)).or_default() += 1;
        if let Some(reason) = refusal {
            *counters.refusals.entry(reason).or_default() += 1;
        }
        let seconds = elapsed.as_secs_f64();
        let histogram = counters.latency.entry(endpoint).or_default();
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        histogram.buckets[slot] += 1;
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// Counts one load settled with `outcome` (`committed`, `cancelled`, `undecided`).
    pub(crate) fn settled(&self, outcome: &'static str) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *counters.settlements.entry(outcome).or_default() += 1;
    }

    /// Counts one failure of the database.
    pub(crate) fn database_failed(&self) {
        self.database_errors.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts what the center did with one upload of `kind` (`usage` or `transfers`).
    pub(crate) fn uploaded(
        &self,
        kind: &'static str,
        receipt: &valuecard_core::messages::center::UploadReceipt,
    ) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        for (outcome, count) in [
            ("stored", u64::from(receipt.stored)),
            ("duplicate", u64::from(receipt.duplicates)),
            ("refused", receipt.refused.len() as u64),
        ] {
            *counters.records.entry((kind, outcome)).or_default() += count;
        }
        *counters.clones.entry(kind).or_default() += receipt.clones_detected.len() as u64;
    }

    /// The exposition, in the text format.
    pub(crate) fn render(&self, pool: crate::pool::PoolUse) -> String {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(4096);
        render_pool(&mut out, pool);
        let _ = writeln!(
            out,
            "# HELP valuecard_database_errors_total Requests that failed on the database, and health checks it did not answer."
        );
        let _ = writeln!(out, "# TYPE valuecard_database_errors_total counter");
        let _ = writeln!(
            out,
            "valuecard_database_errors_total {}",
            self.database_errors.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            out,
            "# HELP valuecard_load_settlements_total Loads settled, by the outcome the center read from the card's evidence."
        );
        let _ = writeln!(out, "# TYPE valuecard_load_settlements_total counter");
        for (outcome, count) in &counters.settlements {
            let _ = writeln!(
                out,
                "valuecard_load_settlements_total{{outcome=\"{outcome}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP valuecard_records_total Uploaded records (usage records, transfer reports) by outcome."
        );
        let _ = writeln!(out, "# TYPE valuecard_records_total counter");
        for ((kind, outcome), count) in &counters.records {
            let _ = writeln!(
                out,
                "valuecard_records_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP valuecard_clones_detected_total Cards found cloned by an upload."
        );
        let _ = writeln!(out, "# TYPE valuecard_clones_detected_total counter");
        for (kind, count) in &counters.clones {
            let _ = writeln!(
                out,
                "valuecard_clones_detected_total{{kind=\"{kind}\"}} {count}"
            );
        }
        crate::process_metrics::render(&mut out);
        let _ = writeln!(
            out,
            "# HELP valuecard_http_requests_total HTTP requests answered, by endpoint and status code."
        );
        let _ = writeln!(out, "# TYPE valuecard_http_requests_total counter");
        for ((endpoint, status), count) in &counters.requests {
            let _ = writeln!(
                out,
                "valuecard_http_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {count}",
                escape(endpoint)
            );
        }
        let _ = writeln!(
            out,
            "# HELP valuecard_http_refusals_total Requests refused, by problem type."
        );
        let _ = writeln!(out, "# TYPE valuecard_http_refusals_total counter");
        for (reason, count) in &counters.refusals {
            let _ = writeln!(
                out,
                "valuecard_http_refusals_total{{reason=\"{}\"}} {count}",
                escape(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP valuecard_loads_authorized_total Load authorizations the center answered."
        );
        let _ = writeln!(out, "# TYPE valuecard_loads_authorized_total counter");
        let _ = writeln!(
            out,
            "valuecard_loads_authorized_total {}",
            self.loads_authorized.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            out,
            "# HELP valuecard_http_requests_in_flight Requests being processed."
        );
        let _ = writeln!(out, "# TYPE valuecard_http_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "valuecard_http_requests_in_flight {}",
            self.in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP valuecard_http_request_duration_seconds Time from request to answer, by endpoint."
        );
        let _ = writeln!(
            out,
            "# TYPE valuecard_http_request_duration_seconds histogram"
        );
        for (endpoint, histogram) in &counters.latency {
            let endpoint = escape(endpoint);
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.buckets.iter()) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "valuecard_http_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{}\"}} {cumulative}",
                    float(*bound)
                );
            }
            let _ = writeln!(
                out,
                "valuecard_http_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "valuecard_http_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}",
                float(histogram.sum)
            );
            let _ = writeln!(
                out,
                "valuecard_http_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                histogram.count
            );
        }
        out
    }
}

/// The pool's gauges: its size, the handles free, the requests waiting for one.
fn render_pool(out: &mut String, pool: crate::pool::PoolUse) {
    for (name, help, value) in [
        (
            "valuecard_pool_connections",
            "Database connections (center handles) in the service's pool.",
            pool.size,
        ),
        (
            "valuecard_pool_connections_idle",
            "Connections in the pool free now.",
            pool.available,
        ),
        (
            "valuecard_pool_waiting_requests",
            "Requests waiting for a free connection.",
            pool.waiting,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// A sample value or bound: Rust's shortest round-trip decimal form, which the format's float
/// parser reads back exactly (it never uses an exponent for these magnitudes).
fn float(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".to_owned()
    } else if value > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let metrics = Metrics::default();
        for millis in [0, 3, 3, 40, 4_000] {
            metrics.record(paths::AUTHORIZE, 200, None, Duration::from_millis(millis));
        }
        metrics.record(
            paths::AUTHORIZE,
            401,
            Some("bad-signature"),
            Duration::from_millis(1),
        );
        metrics.settled("committed");
        metrics.settled("committed");
        metrics.settled("cancelled");
        metrics.database_failed();
        let text = metrics.render(crate::pool::PoolUse {
            size: 8,
            available: 3,
            waiting: 2,
        });
        assert!(text.contains("valuecard_load_settlements_total{outcome=\"committed\"} 2"));
        assert!(text.contains("valuecard_load_settlements_total{outcome=\"cancelled\"} 1"));
        assert!(text.contains("valuecard_database_errors_total 1"));
        assert!(text.contains("valuecard_pool_connections 8\n"));
        assert!(text.contains("valuecard_pool_connections_idle 3\n"));
        assert!(text.contains("valuecard_pool_waiting_requests 2\n"));
        assert!(text.contains(
            "valuecard_http_request_duration_seconds_bucket{endpoint=\"/v1/loads/authorize\",le=\"0.005\"} 4"
        ), "{text}");
        assert!(text.contains(
            "valuecard_http_request_duration_seconds_bucket{endpoint=\"/v1/loads/authorize\",le=\"+Inf\"} 6"
        ));
        assert!(text.contains(
            "valuecard_http_request_duration_seconds_count{endpoint=\"/v1/loads/authorize\"} 6"
        ));
        assert!(text.contains("valuecard_loads_authorized_total 5"));
        assert!(text.contains("valuecard_http_refusals_total{reason=\"bad-signature\"} 1"));
        assert!(text.contains(
            "valuecard_http_requests_total{endpoint=\"/v1/loads/authorize\",status=\"401\"} 1"
        ));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn labels_are_bounded_and_escaped() {
        assert_eq!(endpoint_label("/v1/cards/assign"), "/v1/cards/assign");
        assert_eq!(
            endpoint_label("/v1/cards/C000000000000001/pending-loads"),
            paths::PENDING_LOADS_ROUTE
        );
        assert_eq!(endpoint_label("/v1/cards//pending-loads"), "other");
        assert_eq!(endpoint_label("/etc/passwd"), "other");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.0005), "0.0005");
    }
}
