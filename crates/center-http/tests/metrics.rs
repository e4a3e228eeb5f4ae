//! The center's health and metrics over HTTP: what `/health` and `/metrics` say after real
//! requests, refusals and uploads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand_core::SeedableRng;
use valuecard_center::Center;
use valuecard_sim::WorldRng;

fn harness(seed: u64) -> Harness {
    let center = Center::ephemeral(clock(), &mut WorldRng::seed_from_u64(seed)).unwrap();
    Harness::start(center, seed)
}

#[test]
fn health_and_metrics_report_what_happened() {
    let mut h = harness(5);
    let url = h.url();
    let health = send(&url, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.content_type, "application/json");
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "ok", "database": "sqlite"})
    );

    let scrape = || {
        let answer = send(&url, "GET", "/metrics", &[], b"");
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = answer.text();
        check_exposition(&text);
        text
    };
    let before = scrape();
    let authorized = "valuecard_loads_authorized_total";
    assert_eq!(metric(&before, authorized), Some(0.0));
    issue_and_load(&mut h);
    let body = b"{}";
    let mut signer = sam(&h.other_dispenser);
    let headers = signed_headers(
        &mut signer,
        device_id(&h.dispenser),
        "POST",
        "/v1/loads/settle",
        h.next_sequence(&h.dispenser),
        body,
    );
    send(&url, "POST", "/v1/loads/settle", &headers, body).problem(401, "bad-signature");
    send(&url, "GET", "/nowhere", &[], b"").problem(404, "not-found");
    let after = scrape();
    assert_eq!(metric(&after, authorized), Some(2.0));
    assert_eq!(
        metric(
            &after,
            "valuecard_http_requests_total{endpoint=\"/v1/loads/authorize\",status=\"200\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_requests_total{endpoint=\"/v1/cards/assign\",status=\"200\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_requests_total{endpoint=\"/v1/loads/settle\",status=\"401\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_refusals_total{reason=\"bad-signature\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_refusals_total{reason=\"not-found\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_requests_total{endpoint=\"other\",status=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_request_duration_seconds_count{endpoint=\"/v1/loads/settle\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &after,
            "valuecard_http_request_duration_seconds_bucket{endpoint=\"/v1/loads/settle\",le=\"+Inf\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&after, "valuecard_http_requests_in_flight"),
        Some(0.0)
    );
    assert!(
        metric(
            &after,
            "valuecard_http_requests_total{endpoint=\"/metrics\",status=\"200\"}"
        ) >= Some(1.0)
    );
    // The process itself.
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(metric(&after, name).is_some_and(|v| v > 0.0), "{name}");
    }
}

#[test]
fn uploads_are_counted_by_outcome() {
    use valuecard_terminal::payment::PaymentTerminal;
    use valuecard_terminal::store::MemoryStore;
    let mut h = harness(9);
    let url = h.url();
    let (mut reader, _) = issue_and_load(&mut h);
    let mut terminal = PaymentTerminal::new(
        sam(&h.terminal),
        MemoryStore::default(),
        clock(),
        WorldRng::seed_from_u64(10),
    )
    .unwrap();
    let mut link = h.link(&h.terminal);
    terminal.purchase(&mut reader, amount(100)).unwrap();
    terminal.purchase(&mut reader, amount(200)).unwrap();
    let receipt = terminal.upload_usage(&mut link).unwrap();
    assert_eq!(receipt.stored, 2);
    let text = send(&url, "GET", "/metrics", &[], b"").text();
    check_exposition(&text);
    assert_eq!(
        metric(
            &text,
            "valuecard_records_total{kind=\"usage\",outcome=\"stored\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "valuecard_records_total{kind=\"usage\",outcome=\"refused\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "valuecard_clones_detected_total{kind=\"usage\"}"),
        Some(0.0)
    );
}
