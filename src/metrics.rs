//! Prometheus metrics through the `metrics` facade and its Prometheus
//! exporter (served on its own port, `--metrics-listen`).
//!
//! Without `--metrics-listen` no recorder is installed and every macro below
//! is a no-op. Tenant labels are off by default: tenants are unbounded, and a
//! label per tenant multiplies every series (`--metrics-tenant-labels`).

use std::{
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tonic::Code;

pub const REQUESTS_TOTAL: &str = "state_requests_total";
pub const REQUEST_DURATION: &str = "state_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "state_requests_in_flight";
pub const REDIS_ERRORS_TOTAL: &str = "state_redis_errors_total";
pub const REDIS_POOL_CONNECTIONS: &str = "state_redis_pool_connections";
pub const BACKEND_UP: &str = "state_backend_up";
pub const BUILD_INFO: &str = "state_build_info";
pub const CONFIG_RELOADS_TOTAL: &str = "state_config_reloads_total";
pub const CONNECTIONS_OPEN: &str = "state_connections_open";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "state_connections_refused_total";
pub const BOUND_REFUSALS_TOTAL: &str = "state_bound_refusals_total";
pub const WATCHERS: &str = "state_watchers";
pub const WATCHERS_ENDED_TOTAL: &str = "state_watchers_ended_total";

/// Latency buckets in seconds: dense below 10 ms, where a healthy service lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static TENANT_LABELS: AtomicBool = AtomicBool::new(false);

/// Set once our exporter is the global recorder. Until then request metrics
/// are not recorded at all (no recorder would receive them anyway), which
/// also skips the two clock reads per request.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The in-flight gauge's handle, registered on first use after `install`.
static IN_FLIGHT: OnceLock<Gauge> = OnceLock::new();

/// Whether request metrics carry a tenant label.
pub fn tenant_labels() -> bool {
    TENANT_LABELS.load(Ordering::Relaxed)
}

/// Installs the global recorder and starts the HTTP exporter on `addr`
/// (serving `/metrics`; any path answers). Must run inside the Tokio runtime.
pub fn install(addr: SocketAddr, tenant_labels: bool) -> Result<(), String> {
    TENANT_LABELS.store(tenant_labels, Ordering::Relaxed);
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_string()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot start the metrics exporter on {addr}: {e}"))?;
    metrics::describe_counter!(REQUESTS_TOTAL, "gRPC requests by method and status code");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "gRPC request latency by method"
    );
    metrics::describe_gauge!(REQUESTS_IN_FLIGHT, "gRPC requests being processed");
    metrics::describe_counter!(REDIS_ERRORS_TOTAL, "Redis command failures by kind");
    metrics::describe_gauge!(
        REDIS_POOL_CONNECTIONS,
        "Redis connections by state (size, available, waiting, connected)"
    );
    metrics::describe_gauge!(BACKEND_UP, "1 when the backend answers its health PING");
    metrics::describe_gauge!(BUILD_INFO, "Always 1; labels carry the version");
    metrics::describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Reloads of the tenants file and TLS files by file and result (ok, error)"
    );
    metrics::describe_gauge!(
        CONNECTIONS_OPEN,
        "Client connections held (handshakes included), bounded by --max-connections"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Client connections closed before serving by reason (max_connections, \
         handshake_timeout, handshake_failed, preface_timeout, not_http2, accept_error)"
    );
    metrics::describe_counter!(
        BOUND_REFUSALS_TOTAL,
        "Requests or streams refused by a resource bound, by the setting that bounds it"
    );
    metrics::describe_gauge!(WATCHERS, "Watch streams open on this instance");
    metrics::describe_counter!(
        WATCHERS_ENDED_TOTAL,
        "Watch streams the server ended with RESYNC_REQUIRED, by cause"
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

fn in_flight() -> &'static Gauge {
    IN_FLIGHT.get_or_init(|| gauge!(REQUESTS_IN_FLIGHT))
}

/// Number of gRPC status codes (`Code::Ok` = 0 … `Code::Unauthenticated` = 16).
const CODES: usize = 17;

/// The request metrics of one RPC method. Each handle is registered with the
/// recorder the first time it is needed (so the exported series are the same
/// as with the `counter!`/`histogram!` macros) and reused afterwards: the
/// macros with a label value that is not a literal allocate the label list
/// and hash the key on every call, and the recorder then looks it up in its
/// registry.
pub struct MethodMetrics {
    method: &'static str,
    handles: OnceLock<MethodHandles>,
}

struct MethodHandles {
    duration: Histogram,
    by_code: [OnceLock<Counter>; CODES],
}

impl MethodMetrics {
    pub const fn new(method: &'static str) -> Self {
        Self {
            method,
            handles: OnceLock::new(),
        }
    }

    fn handles(&self) -> &MethodHandles {
        self.handles.get_or_init(|| MethodHandles {
            duration: histogram!(REQUEST_DURATION, "method" => self.method),
            by_code: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    fn count(&self, code: Code) {
        let name = code_name(code);
        let i = (code as usize).min(CODES - 1);
        self.handles().by_code[i]
            .get_or_init(|| counter!(REQUESTS_TOTAL, "method" => self.method, "code" => name))
            .increment(1);
    }
}

/// Tracks one request from start to finish: in-flight gauge, latency,
/// count by status code, and a log line whose level follows the code.
pub struct RequestObserver {
    metrics: &'static MethodMetrics,
    tenant: Option<String>,
    /// `None` when no exporter is installed: nothing to record.
    start: Option<Instant>,
    done: bool,
}

impl RequestObserver {
    pub fn start(metrics: &'static MethodMetrics, tenant: Option<&str>) -> Self {
        if !installed() {
            return Self {
                metrics,
                tenant: None,
                start: None,
                done: false,
            };
        }
        in_flight().increment(1.0);
        let tenant = tenant.filter(|_| tenant_labels()).map(str::to_string);
        Self {
            metrics,
            tenant,
            start: Some(Instant::now()),
            done: false,
        }
    }

    /// Records the outcome, logs a failure (the operator's detail, never
    /// sent to the client) and converts it to the status the client gets.
    pub fn finish<T>(mut self, result: crate::error::Result<T>) -> Result<T, tonic::Status> {
        let result = result.map_err(|e| {
            crate::telemetry::request_failed(self.metrics.method, &e);
            tonic::Status::from(e)
        });
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.record(code);
        result
    }

    fn record(&mut self, code: Code) {
        self.done = true;
        let Some(start) = self.start else { return };
        in_flight().decrement(1.0);
        let m = self.metrics;
        match &self.tenant {
            // Tenants are unbounded: no handle cache, the macro registers.
            Some(t) => counter!(REQUESTS_TOTAL, "method" => m.method, "code" => code_name(code), "tenant" => t.clone())
                .increment(1),
            None => m.count(code),
        }
        m.handles().duration.record(start.elapsed().as_secs_f64());
    }
}

impl Drop for RequestObserver {
    fn drop(&mut self) {
        // The handler future was dropped: the client went away or its
        // deadline passed in tonic's own timer.
        if !self.done {
            self.record(Code::Cancelled);
        }
    }
}

/// Counts a failed Redis call by kind (connection, timeout, oom, busy, other).
pub fn redis_error(kind: &'static str) {
    counter!(REDIS_ERRORS_TOTAL, "kind" => kind).increment(1);
}

/// Counts a reload of a configuration file (`tenants`, `tls`). Alert on
/// `result="error"`: the service still runs on the previous version.
pub fn config_reload(file: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!(CONFIG_RELOADS_TOTAL, "file" => file, "result" => result).increment(1);
}

/// A client connection was admitted under --max-connections.
pub fn connection_opened() {
    gauge!(CONNECTIONS_OPEN).increment(1.0);
}

/// An admitted client connection ended.
pub fn connection_closed() {
    gauge!(CONNECTIONS_OPEN).decrement(1.0);
}

/// A client connection was closed before it was served, and why.
pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// A request or stream was refused by the resource bound `setting` (the
/// flag, e.g. `--max-pending-request-bytes`).
pub fn bound_refusal(setting: &'static str) {
    counter!(BOUND_REFUSALS_TOTAL, "setting" => setting).increment(1);
}

/// Adds `delta` to the open-watchers gauge.
pub fn watchers(delta: i64) {
    gauge!(WATCHERS).increment(delta as f64);
}

/// Counts a watcher the server ended with RESYNC_REQUIRED.
pub fn watcher_ended(cause: &'static str) {
    counter!(WATCHERS_ENDED_TOTAL, "cause" => cause).increment(1);
}

pub fn backend_up(up: bool) {
    gauge!(BACKEND_UP).set(if up { 1.0 } else { 0.0 });
}

/// Pool gauges: deadpool's size/available/waiting plus connected slots.
pub fn redis_pool(size: usize, available: usize, waiting: usize, connected: usize) {
    gauge!(REDIS_POOL_CONNECTIONS, "state" => "size").set(size as f64);
    gauge!(REDIS_POOL_CONNECTIONS, "state" => "available").set(available as f64);
    gauge!(REDIS_POOL_CONNECTIONS, "state" => "waiting").set(waiting as f64);
    gauge!(REDIS_POOL_CONNECTIONS, "state" => "connected").set(connected as f64);
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
