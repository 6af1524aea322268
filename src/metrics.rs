//! Metrics and the health endpoints of tokenwarden.

use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering};
use std::time::Instant;

use axum::http::{StatusCode, header};
use axum::{Router, extract::State, response::IntoResponse, routing::get};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::{Registry, Unit};
use prometheus_client::{encoding::text::encode, metrics::histogram::Histogram};

use crate::token_metrics::PerToken;

type Labels<const N: usize> = [(&'static str, String); N];
type CounterFamily = Family<Labels<1>, Counter>;

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
// A platform call: from a local round trip up to the longest timeoutSeconds.
const ISSUER_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
// Spans the fast path (cache hit, nothing to do) up to a slow issuer round trip.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// Plain handles to the series; the registry holds clones of the same Arcs.
#[derive(Default)]
struct Series {
    reconciles: CounterFamily,
    errors: CounterFamily,
    rotations: CounterFamily,
    revocations: Counter,
    drift_repairs: Counter,
    issuer: Family<Labels<2>, Counter>,
    tokens: Family<Labels<1>, Gauge>,
    leader: Gauge,
    unmanaged: Gauge,
    unmanaged_revocations: Counter,
    heap_allocated: Gauge,
    heap_resident: Gauge,
    warnings: CounterFamily,
}

type IssuerLatency = Family<Labels<1>, Histogram, fn() -> Histogram>;

struct Inner {
    registry: Registry,
    duration: Histogram,
    issuer_latency: IssuerLatency,
    s: Series,
    per_token: PerToken,
}

/// Every metric, registered under the prefix `tokenwarden`.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn label(key: &'static str, value: &str) -> Labels<1> {
    [(key, value.to_owned())]
}

// Pre-creating the known series lets rate() and alerts see 0 instead of
// "no data" before the first event of each kind.
fn seed<M: Default>(family: &Family<Labels<1>, M>, key: &'static str, values: &str) {
    for value in values.split_whitespace() {
        drop(family.get_or_create(&label(key, value)));
    }
}

impl Metrics {
    pub fn new() -> Self {
        let (s, duration) = (Series::default(), Histogram::new(DURATION_BUCKETS));
        seed(&s.reconciles, "result", "ok error");
        let reasons =
            "Initial Schedule SpecChanged Manual RevokeRequested TokenLost ServedTokenRevoked";
        seed(&s.rotations, "reason", reasons);
        seed(&s.tokens, "ready", "true false");
        // The Warnings the chart's alerts read: increase() sees 0, not "no data", before one.
        seed(&s.warnings, "reason", "RevokeImpossible StaleConsumer");

        let mut r = Registry::with_prefix("tokenwarden");
        r.register("reconcile", "Reconciles by result", s.reconciles.clone());
        let help = "Wall time of one reconcile";
        r.register_with_unit("reconcile_duration", help, Unit::Seconds, duration.clone());
        r.register("reconcile_errors", "Reconcile errors", s.errors.clone());
        r.register("rotations", "Token rotations", s.rotations.clone());
        r.register("revocations", "Tokens revoked", s.revocations.clone());
        r.register("drift_repairs", "Secrets repaired", s.drift_repairs.clone());
        r.register("issuer_requests", "Issuer API calls", s.issuer.clone());
        r.register("tokens", "Managed tokens by readiness", s.tokens.clone());
        r.register("leader", "1 while holding the lease", s.leader.clone());
        let help = "Issuer tokens live at a platform that no WorkspaceToken holds (last listings)";
        r.register("unmanaged_tokens", help, s.unmanaged.clone());
        let help = "Unmanaged issuer tokens revoked (inventory.revokeUnmanagedAfter)";
        r.register(
            "unmanaged_revocations",
            help,
            s.unmanaged_revocations.clone(),
        );
        let help = "Bytes held by live allocations (the caches and every per-token structure)";
        r.register_with_unit(
            "heap_allocated",
            help,
            Unit::Bytes,
            s.heap_allocated.clone(),
        );
        let help = "Bytes of pages the allocator keeps resident, live or not";
        r.register_with_unit("heap_resident", help, Unit::Bytes, s.heap_resident.clone());
        let help = "Warning Events by reason (counted when raised, posted or not)";
        r.register("warnings", help, s.warnings.clone());
        let issuer_latency: IssuerLatency =
            Family::new_with_constructor(|| Histogram::new(ISSUER_BUCKETS));
        let help = "Round trip of one call to a platform's token API, by operation";
        let latency = issuer_latency.clone();
        r.register_with_unit("issuer_request_duration", help, Unit::Seconds, latency);
        let per_token = PerToken::default();
        r.register_collector(Box::new(per_token.clone()));
        Self(Arc::new(Inner {
            registry: r,
            duration,
            issuer_latency,
            s,
            per_token,
        }))
    }

    pub fn reconcile_started(&self) -> ReconcileTimer {
        let (metrics, started) = (self.clone(), Instant::now());
        ReconcileTimer { metrics, started }
    }

    pub fn reconcile_failed(&self, error: &str) {
        self.0.s.errors.get_or_create(&label("error", error)).inc();
    }

    pub fn rotated(&self, reason: &str) {
        let series = label("reason", reason);
        self.0.s.rotations.get_or_create(&series).inc();
    }

    pub fn set_unmanaged_tokens(&self, count: usize) {
        self.0.s.unmanaged.set(count as i64);
    }

    pub fn unmanaged_revoked(&self) {
        self.0.s.unmanaged_revocations.inc();
    }

    /// One call to a platform took `elapsed`.
    pub fn issuer_call_took(&self, operation: &str, elapsed: std::time::Duration) {
        let series = label("operation", operation);
        let latency = self.0.issuer_latency.get_or_create(&series);
        latency.observe(elapsed.as_secs_f64());
    }

    /// What tells this registry how long each platform call took.
    pub fn issuer_timer(&self) -> crate::issuer::client::Timed {
        let metrics = self.clone();
        std::sync::Arc::new(move |operation, elapsed| metrics.issuer_call_took(operation, elapsed))
    }

    /// A Warning Event was raised with `reason`.
    pub fn warned(&self, reason: &str) {
        self.0
            .s
            .warnings
            .get_or_create(&label("reason", reason))
            .inc();
    }

    /// The per-token and per-issuer series, drawn at each scrape.
    pub fn per_token(&self) -> &PerToken {
        &self.0.per_token
    }

    pub fn revoked(&self) {
        self.0.s.revocations.inc();
    }

    pub fn drift_repaired(&self) {
        self.0.s.drift_repairs.inc();
    }

    pub fn issuer_request(&self, operation: &str, outcome: &str) {
        let labels = [("operation", operation.into()), ("outcome", outcome.into())];
        self.0.s.issuer.get_or_create(&labels).inc();
    }

    pub fn set_ready_tokens(&self, ready: i64, not_ready: i64) {
        for (value, count) in [("true", ready), ("false", not_ready)] {
            let series = label("ready", value);
            self.0.s.tokens.get_or_create(&series).set(count);
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.0.s.leader.set(i64::from(leader));
    }

    /// OpenMetrics text exposition, terminated by `# EOF`.
    pub fn render(&self) -> String {
        if let Some(heap) = crate::heap::read() {
            let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.0.s.heap_allocated.set(bytes(heap.allocated));
            self.0.s.heap_resident.set(bytes(heap.resident));
        }
        let mut out = String::new();
        // Writing into a String cannot fail; only a metric's own encoder
        // could, and a partial page beats a panicking scrape handler.
        if let Err(err) = encode(&mut out, &self.0.registry) {
            tracing::warn!(error = %err, "failed to encode metrics");
        }
        out
    }
}

/// Measures one reconcile; dropping it without `finish` records nothing, so
/// a reconcile cancelled by shutdown is not miscounted as an error.
#[must_use = "call finish() to record the reconcile"]
pub struct ReconcileTimer {
    metrics: Metrics,
    started: Instant,
}

impl ReconcileTimer {
    pub fn finish(self, ok: bool) {
        let inner = &self.metrics.0;
        let result = label("result", if ok { "ok" } else { "error" });
        inner.s.reconciles.get_or_create(&result).inc();
        inner.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Readiness the /readyz endpoint reports.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Serves /metrics, /healthz and /readyz on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .with_state(metrics)
        // Liveness must not depend on caches or leadership, or the kubelet
        // would restart a healthy standby.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(health);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics and health probes");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_page(State(metrics): State<Metrics>) -> impl IntoResponse {
    let content_type = [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)];
    (content_type, metrics.render())
}

async fn readiness(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::time::Duration;

    fn assert_has(text: &str, needle: &str) {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    #[test]
    fn metrics_render_with_tokenwarden_prefix_and_documented_labels() {
        let m = Metrics::new();
        m.reconcile_failed("IssuerUnavailable");
        m.rotated("SpecChanged");
        m.revoked();
        m.drift_repaired();
        m.issuer_request("mint", "ok");
        m.set_ready_tokens(4, 1);
        m.set_leader(true);
        let text = m.render();
        for expected in [
            "tokenwarden_reconcile_errors_total{error=\"IssuerUnavailable\"} 1",
            "tokenwarden_rotations_total{reason=\"SpecChanged\"} 1",
            "tokenwarden_rotations_total{reason=\"TokenLost\"} 0",
            "tokenwarden_revocations_total 1",
            "tokenwarden_drift_repairs_total 1",
            "tokenwarden_issuer_requests_total{operation=\"mint\",outcome=\"ok\"} 1",
            "tokenwarden_tokens{ready=\"true\"} 4",
            "tokenwarden_tokens{ready=\"false\"} 1",
            "tokenwarden_leader 1",
        ] {
            assert_has(&text, expected);
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn reconcile_timer_counts_ok_and_error_and_observes_duration() {
        let m = Metrics::new();
        m.reconcile_started().finish(true);
        m.reconcile_started().finish(true);
        m.reconcile_started().finish(false);
        let text = m.render();
        assert_has(&text, "tokenwarden_reconcile_total{result=\"ok\"} 2");
        assert_has(&text, "tokenwarden_reconcile_total{result=\"error\"} 1");
        assert_has(&text, "tokenwarden_reconcile_duration_seconds_count 3");
        assert_has(
            &text,
            "tokenwarden_reconcile_duration_seconds_bucket{le=\"10.0\"} 3",
        );
    }

    #[test]
    fn heap_gauges_report_what_the_installed_allocator_reader_reads() {
        crate::heap::install(|| {
            Some(crate::heap::HeapStats {
                allocated: 3 << 20,
                resident: 5 << 20,
            })
        });
        let text = Metrics::new().render();
        assert_has(&text, "tokenwarden_heap_allocated_bytes 3145728");
        assert_has(&text, "tokenwarden_heap_resident_bytes 5242880");
    }

    /// Minimal blocking HTTP/1.1 client, so the test needs no HTTP client crate.
    async fn get(addr: SocketAddr, path: &'static str) -> (u16, String) {
        let fetch = move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            let timeout = Some(Duration::from_secs(5));
            stream.set_read_timeout(timeout).expect("timeout");
            let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).expect("send");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read");
            let status = response.split(' ').nth(1).and_then(|s| s.parse().ok());
            (status.expect("status line"), response)
        };
        tokio::task::spawn_blocking(fetch).await.expect("client")
    }

    #[tokio::test]
    async fn http_server_answers_healthz_readyz_after_set_ready_and_metrics() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let listener = listener.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (metrics, health) = (Metrics::new(), Health::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve(listener, metrics, health.clone(), shutdown));

        let (status, body) = get(addr, "/healthz").await;
        assert_eq!(status, 200);
        assert!(body.ends_with("\r\n\r\nok"), "{body}");
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.ends_with("not ready"), "{body}");
        health.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_has(&body, OPENMETRICS_CONTENT_TYPE);
        assert_has(&body, "tokenwarden_leader 0");

        stop.send(()).expect("server alive");
        server.await.expect("join").expect("clean shutdown");
    }
}
