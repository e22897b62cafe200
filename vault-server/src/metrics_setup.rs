//! Prometheus metrics: one recorder per process, rendered at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the recorder (once).
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("mlvault_http_request_duration_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
                ],
            )
            .ok()?;
        let handle = builder.install_recorder().ok()?;
        describe();
        Some(handle)
    });
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mlvault_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "mlvault_http_request_duration_seconds",
        "request latency by route"
    );
    describe_histogram!(
        "mlvault_scan_seconds",
        "time the admission scan of a version took (headers and pickles read from the stored blobs)"
    );
    describe_counter!("mlvault_scans_total", "admission scans by verdict");
    describe_counter!(
        "mlvault_gate_decisions_total",
        "promotion gates judged at alias moves, by outcome (passed, failed)"
    );
    describe_counter!(
        "mlvault_bytes_in_total",
        "plaintext bytes received in uploads"
    );
    describe_counter!(
        "mlvault_bytes_out_total",
        "plaintext bytes sent in downloads"
    );
    describe_counter!(
        "mlvault_auth_failures_total",
        "requests with a missing, bad, expired, revoked or suspended token"
    );
    describe_counter!(
        "mlvault_authz_denied_total",
        "requests denied by the policy set"
    );
    describe_counter!("mlvault_rate_limited_total", "requests answered 429");
    describe_counter!(
        "mlvault_audit_failures_total",
        "requests refused because the audit log could not be written"
    );
    describe_counter!(
        "mlvault_exfiltration_alerts_total",
        "exfiltration thresholds crossed"
    );
    describe_counter!(
        "mlvault_jobs_total",
        "anonymization jobs started, succeeded and failed"
    );
    describe_gauge!("mlvault_sealed", "1 while the vault is sealed");
    metrics::gauge!("mlvault_sealed").set(0.0);
}

/// The exposition text.
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}
