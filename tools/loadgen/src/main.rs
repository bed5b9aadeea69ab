//! `state-loadgen`: drives a running state-service over gRPC and prints what
//! it measured (ops/s, keys/s, latency percentiles, errors by status code).
//!
//! It opens several HTTP/2 connections (one connection is served by one task,
//! so one connection cannot use more than one server core) and keeps a fixed
//! number of requests in flight, either back to back (closed loop: how fast can
//! it go?) or paced at a fixed rate (open loop: what latency at this rate?).
//! It is a measuring tool: it never retries, and it must not hide errors.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    pin::Pin,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use clap::Parser;
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value as Json, json};
use state_service::{
    duration,
    pb::{self, state_service_client::StateServiceClient, value::Kind},
};
use tokio::sync::Semaphore;
use tonic::{
    Request,
    body::Body,
    metadata::{AsciiMetadataValue, MetadataValue},
};

// The load generator shares the machine with what it measures, so every
// cycle it spends is taken from the service: with mimalloc it executes about
// 9 % fewer instructions per request than with glibc malloc (callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for state-service.
#[derive(Debug, Clone, Parser)]
#[command(name = "state-loadgen", version, about, long_about = None)]
struct Args {
    /// Address of the service.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,

    /// HTTP/2 connections, each its own TCP socket; requests are spread over
    /// them round robin.
    #[arg(long, default_value_t = 8)]
    connections: usize,

    /// Requests in flight at any time (one task per slot).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,

    /// Operation mix as `op=weight` pairs, e.g. `get=80,put=20`. Ops: get, put,
    /// put-with-ttl, increment, batch-get, batch-put, list.
    #[arg(long, default_value = "get=1")]
    mix: String,

    /// Keys per BatchGet / BatchPut, and the page size of List.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,

    /// Prefix of List requests. Each in-flight slot pages through the
    /// listing with the page tokens it receives and starts over when it is
    /// complete, so List runs cover every SCAN cursor, not only the first.
    #[arg(long, default_value = "key:")]
    list_prefix: String,

    /// List with `include_values` (each page also reads its keys' values).
    #[arg(long)]
    list_values: bool,

    /// Size of the key space: keys are `key:<12-digit n>` with n uniform in
    /// 0..keys (the same names redis-benchmark's `-r` uses). Increments use
    /// `ctr:<n>` so they never hit a bytes value.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,

    /// Size of each written value in bytes (sent as `bytes_value`).
    #[arg(long, default_value_t = 64)]
    value_size: usize,

    /// TTL of PutWithTtl writes. Default: 60 s.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    ttl: Duration,

    /// How long to measure (after the warm-up). Ignored when --requests is given.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    duration: Duration,

    /// Stop after this many measured requests instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,

    /// Load sent before measuring starts (connections warm, Redis scripts
    /// loaded, allocator settled); not counted. Default: 1 s.
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    warmup: Duration,

    /// Fixed-rate mode: send this many requests per second in total (open
    /// loop, still bounded by --concurrency) and report whether it was held.
    #[arg(long)]
    rate: Option<f64>,

    /// Writes every key of the key space once (BatchPut) before the run, so
    /// that reads find values.
    #[arg(long)]
    prefill: bool,

    /// Tenant sent in `x-tenant-id`; absent: the server's default tenant.
    #[arg(long)]
    tenant: Option<String>,

    /// Deadline of each request (sent as grpc-timeout). Default: 5 s.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    timeout: Duration,

    /// How long to keep trying to connect before giving up. Default: 10 s.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    connect_timeout: Duration,

    /// Runtime threads. 1 (the default) runs everything on one thread, with
    /// no wake-ups across threads: on two cores shared with the service it
    /// costs about half the CPU per request of two threads, and one thread
    /// sends well over 50,000 unary RPCs per second. Raise it only when the
    /// client itself is the bottleneck.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,

    /// Watch streams (prefix "", spread over the connections) opened before
    /// the warm-up and read until the run ends; the report adds the events
    /// they received and how many were ended by the server (by reason).
    /// Needs a service started with --watch.
    #[arg(long, default_value_t = 0)]
    watchers: usize,

    /// Watchers ask for values, and every written value carries its send
    /// time in its first 8 bytes (needs --value-size 8 or more), so the
    /// report adds the end-to-end latency of events: write sent → event
    /// received by a watcher.
    #[arg(long)]
    watch_values: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    PutWithTtl,
    Increment,
    BatchGet,
    BatchPut,
    List,
}

/// Number of ops (the size of per-op arrays).
const OPS: usize = Op::ALL.len();

impl Op {
    const ALL: [Op; 7] = [
        Op::Get,
        Op::Put,
        Op::PutWithTtl,
        Op::Increment,
        Op::BatchGet,
        Op::BatchPut,
        Op::List,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::PutWithTtl => "put-with-ttl",
            Op::Increment => "increment",
            Op::BatchGet => "batch-get",
            Op::BatchPut => "batch-put",
            Op::List => "list",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Weighted choice of the next op.
#[derive(Debug, Clone)]
struct Mix {
    /// (cumulative weight, op), ascending.
    steps: Vec<(u64, Op)>,
    total: u64,
}

impl Mix {
    fn parse(s: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        let mut total = 0u64;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once(['=', ':'])
                .map_or((part, "1"), |(n, w)| (n.trim(), w.trim()));
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.to_ascii_lowercase().replace('_', "-"))
                .ok_or_else(|| {
                    format!(
                        "unknown op {name:?} in --mix (known: {})",
                        Op::ALL.map(Op::name).join(", ")
                    )
                })?;
            let weight: u64 = weight
                .parse()
                .map_err(|_| format!("weight of {name} in --mix must be a whole number"))?;
            if weight > 0 {
                total += weight;
                steps.push((total, op));
            }
        }
        if total == 0 {
            return Err("--mix selects no operation".into());
        }
        Ok(Self { steps, total })
    }

    fn pick(&self, rng: &mut Rng) -> Op {
        let x = rng.below(self.total);
        self.steps
            .iter()
            .find(|(cum, _)| x < *cum)
            .map_or(self.steps[0].1, |(_, op)| *op)
    }

    fn weights(&self) -> BTreeMap<&'static str, u64> {
        let mut prev = 0;
        let mut out = BTreeMap::new();
        for &(cum, op) in &self.steps {
            *out.entry(op.name()).or_default() += cum - prev;
            prev = cum;
        }
        out
    }
}

/// splitmix64: the key choice must cost nothing next to an RPC, and needs no
/// cryptographic quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for picking keys, and no division.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn key_name(n: u64) -> String {
    // By hand: `format!` costs about ten times as much, once per request.
    if n >= 1_000_000_000_000 {
        return format!("key:{n:012}");
    }
    let mut buf = *b"key:000000000000";
    let mut n = n;
    for b in buf[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // ASCII: one copy, not a `char` pushed at a time (callgrind: 589 → 276
    // instructions per key).
    std::str::from_utf8(&buf).unwrap_or_default().to_owned()
}

/// The `grpc-timeout` header value for `d`, as tonic writes it: the finest
/// unit whose value fits in the 8 digits the protocol allows.
fn grpc_timeout_value(d: Duration) -> AsciiMetadataValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let text = units
        .iter()
        .find(|(div, _)| nanos / div <= MAX)
        .map_or_else(
            || format!("{MAX}H"),
            |(div, unit)| format!("{}{unit}", nanos / div),
        );
    MetadataValue::try_from(text).expect("digits and a unit letter are valid ASCII metadata")
}

/// One HTTP/2 connection driven by hyper directly. tonic's `Channel` puts a
/// `tower::buffer` in front of the connection: every request is handed to a
/// worker task over a channel (one more task wake-up, often on the other
/// thread) and passes timeout, origin and user-agent layers. This client
/// sends the same requests without them.
#[derive(Clone)]
struct H2(SendRequest<Body>);

type Client = StateServiceClient<H2>;

type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower_service::Service<http::Request<Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits (0.1 % error).
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A histogram allocated on first use: each is about 200 KiB, and a worker
/// records only the ops of the mix (and send lag only at a fixed rate).
#[derive(Default)]
struct LazyHistogram(Option<Histogram<u64>>);

impl LazyHistogram {
    fn record(&mut self, micros: u64) {
        self.0
            .get_or_insert_with(new_histogram)
            .saturating_record(micros);
    }

    fn merge(&mut self, other: LazyHistogram) {
        match (&mut self.0, other.0) {
            (_, None) => {}
            (None, theirs) => self.0 = theirs,
            // Same bounds on both sides, so adding cannot fail.
            (Some(ours), Some(theirs)) => {
                let _ = ours.add(&theirs);
            }
        }
    }
}

/// What one worker saw; merged at the end so workers never share a lock.
struct Stats {
    latency: Vec<LazyHistogram>,
    ok: [u64; OPS],
    keys: [u64; OPS],
    errors: BTreeMap<String, u64>,
    read_keys: u64,
    found_keys: u64,
    /// Requests sent during the warm-up (not in any other figure), so that a
    /// script can divide server-side counters by every request it caused.
    warmup_requests: u64,
    /// Fixed rate only: how late each send was against its schedule.
    send_lag: LazyHistogram,
    /// Fixed rate only: latency measured from the scheduled send time, which
    /// includes any queueing behind a full set of in-flight slots.
    from_schedule: LazyHistogram,
    last_done: Option<Instant>,
    last_sent: Option<Instant>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Op::ALL.iter().map(|_| LazyHistogram::default()).collect(),
            ok: [0; OPS],
            keys: [0; OPS],
            errors: BTreeMap::new(),
            read_keys: 0,
            found_keys: 0,
            warmup_requests: 0,
            send_lag: LazyHistogram::default(),
            from_schedule: LazyHistogram::default(),
            last_done: None,
            last_sent: None,
        }
    }

    fn merge(&mut self, other: Stats) {
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            a.merge(b);
        }
        for i in 0..OPS {
            self.ok[i] += other.ok[i];
            self.keys[i] += other.keys[i];
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.read_keys += other.read_keys;
        self.found_keys += other.found_keys;
        self.warmup_requests += other.warmup_requests;
        self.send_lag.merge(other.send_lag);
        self.from_schedule.merge(other.from_schedule);
        self.last_done = self.last_done.max(other.last_done);
        self.last_sent = self.last_sent.max(other.last_sent);
    }
}

/// Everything the workers share.
struct Plan {
    args: Args,
    mix: Mix,
    value: pb::Value,
    tenant: Option<AsciiMetadataValue>,
    /// `grpc-timeout` of every request, formatted once.
    timeout: AsciiMetadataValue,
    start: Instant,
    measure_from: Instant,
    measure_until: Option<Instant>,
    /// Sequence number of the next request; with --rate it fixes its send time.
    next_seq: AtomicU64,
    /// Measured requests started so far (for --requests).
    measured: AtomicU64,
    /// Fixed rate only: one permit per scheduled send, released by the pacer
    /// thread; closed when the run is over.
    pacer: Option<Arc<Semaphore>>,
}

impl Plan {
    /// The value to write: with --watch-values, stamped with its send time
    /// (nanoseconds since the run's start, little endian, first 8 bytes).
    fn value(&self) -> pb::Value {
        let mut v = self.value.clone();
        if self.args.watch_values
            && let Some(Kind::BytesValue(b)) = &mut v.kind
            && b.len() >= 8
        {
            let t = self.start.elapsed().as_nanos() as u64;
            b[..8].copy_from_slice(&t.to_le_bytes());
        }
        v
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("grpc-timeout", self.timeout.clone());
        if let Some(t) = &self.tenant {
            req.metadata_mut().insert("x-tenant-id", t.clone());
        }
        req
    }

    /// Claims the next request; `None` when the run is over.
    fn claim(&self) -> Option<(u64, Option<Instant>)> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let due = self.args.rate.map(|rate| {
            self.start + Duration::from_secs_f64(seq as f64 / rate.max(f64::MIN_POSITIVE))
        });
        let at = due.unwrap_or_else(Instant::now);
        if self.measure_until.is_some_and(|end| at >= end) {
            return None;
        }
        if at >= self.measure_from
            && let Some(limit) = self.args.requests
            && self.measured.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return None;
        }
        Some((seq, due))
    }
}

/// Result of one RPC: keys it touched, and for reads how many were found.
struct Outcome {
    keys: u64,
    read: u64,
    found: u64,
}

/// Sends one RPC of `op`. `list_token` is this in-flight slot's next List
/// page token (empty: start the listing over).
async fn call(
    plan: &Plan,
    client: &mut Client,
    op: Op,
    rng: &mut Rng,
    list_token: &mut String,
) -> Result<Outcome, tonic::Status> {
    let keys = plan.args.keys.max(1);
    let batch = plan.args.batch_size.max(1);
    let value = || Some(plan.value());
    match op {
        Op::Get => {
            let r = client
                .get(plan.request(pb::GetRequest {
                    key: key_name(rng.below(keys)),
                    refresh_ttl: None,
                }))
                .await?
                .into_inner();
            Ok(Outcome {
                keys: 1,
                read: 1,
                found: u64::from(r.found),
            })
        }
        Op::Put => {
            client
                .put(plan.request(pb::PutRequest {
                    key: key_name(rng.below(keys)),
                    value: value(),
                    condition: None,
                    keep_ttl: false,
                    ..Default::default()
                }))
                .await?;
            Ok(Outcome {
                keys: 1,
                read: 0,
                found: 0,
            })
        }
        Op::PutWithTtl => {
            client
                .put_with_ttl(plan.request(pb::PutWithTtlRequest {
                    key: key_name(rng.below(keys)),
                    value: value(),
                    ttl: Some(duration::to_proto(plan.args.ttl)),
                    condition: None,
                    ..Default::default()
                }))
                .await?;
            Ok(Outcome {
                keys: 1,
                read: 0,
                found: 0,
            })
        }
        Op::Increment => {
            client
                .increment(plan.request(pb::IncrementRequest {
                    key: format!("ctr:{:012}", rng.below(keys)),
                    delta: 1,
                    ttl: None,
                    ..Default::default()
                }))
                .await?;
            Ok(Outcome {
                keys: 1,
                read: 0,
                found: 0,
            })
        }
        Op::BatchGet => {
            let r = client
                .batch_get(plan.request(pb::BatchGetRequest {
                    keys: (0..batch).map(|_| key_name(rng.below(keys))).collect(),
                }))
                .await?
                .into_inner();
            let found = r.results.iter().filter(|g| g.found).count() as u64;
            Ok(Outcome {
                keys: batch as u64,
                read: batch as u64,
                found,
            })
        }
        Op::BatchPut => {
            let items = (0..batch)
                .map(|_| pb::BatchPutItem {
                    key: key_name(rng.below(keys)),
                    value: value(),
                    ..Default::default()
                })
                .collect();
            let r = client
                .batch_put(plan.request(pb::BatchPutRequest { items }))
                .await?
                .into_inner();
            // A failed item is a condition failure; unconditional puts have
            // none, so any is reported as an error of the whole call.
            if let Some(f) = r.results.iter().find_map(|w| match &w.outcome {
                Some(pb::write_result::Outcome::Failure(f)) => Some(f),
                _ => None,
            }) {
                return Err(tonic::Status::failed_precondition(format!(
                    "batch item failed: {} ({})",
                    f.reason, f.message
                )));
            }
            Ok(Outcome {
                keys: batch as u64,
                read: 0,
                found: 0,
            })
        }
        Op::List => {
            let r = client
                .list(plan.request(pb::ListRequest {
                    prefix: plan.args.list_prefix.clone(),
                    page_size: u32::try_from(batch).unwrap_or(u32::MAX),
                    page_token: std::mem::take(list_token),
                    include_values: plan.args.list_values,
                }))
                .await?
                .into_inner();
            // An empty token means the listing is complete: the next List
            // of this slot starts over.
            *list_token = r.next_page_token;
            let keys = r.keys.len() as u64;
            Ok(Outcome {
                keys,
                read: if plan.args.list_values { keys } else { 0 },
                found: if plan.args.list_values {
                    r.entries.len() as u64
                } else {
                    0
                },
            })
        }
    }
}

async fn worker(plan: Arc<Plan>, mut client: Client, seed: u64) -> Stats {
    let mut stats = Stats::new();
    let mut rng = Rng(seed);
    let mut list_token = String::new();
    loop {
        if let Some(pacer) = &plan.pacer {
            match pacer.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        let Some((_seq, due)) = plan.claim() else {
            // Wakes the workers still waiting for a permit.
            if let Some(pacer) = &plan.pacer {
                pacer.close();
            }
            break;
        };
        let op = plan.mix.pick(&mut rng);
        let sent = Instant::now();
        // The server enforces the deadline it receives; this bounds a server
        // that stops answering altogether (tonic's channel did the same).
        let result = match tokio::time::timeout(
            plan.args.timeout + CLIENT_TIMEOUT_SLACK,
            call(&plan, &mut client, op, &mut rng, &mut list_token),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer within the deadline (client side)",
            )),
        };
        let done = Instant::now();
        if sent < plan.measure_from {
            stats.warmup_requests += 1;
            continue;
        }
        stats.last_done = Some(done);
        stats.last_sent = Some(sent);
        match result {
            Ok(out) => {
                let i = op.index();
                stats.ok[i] += 1;
                stats.keys[i] += out.keys;
                stats.read_keys += out.read;
                stats.found_keys += out.found;
                stats.latency[i].record(micros(done - sent));
                if let Some(due) = due {
                    stats
                        .send_lag
                        .record(micros(sent.saturating_duration_since(due)));
                    stats.from_schedule.record(micros(done - due));
                }
            }
            Err(status) => {
                *stats
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }
    stats
}

/// What the watchers saw during the measured window.
#[derive(Default)]
struct WatchStats {
    events: AtomicU64,
    latency: std::sync::Mutex<LazyHistogram>,
    ended: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// Opens one Watch stream and waits for its KIND_STARTED event, so that the
/// run's writes are all after it.
async fn open_watch(
    plan: &Plan,
    client: &mut Client,
) -> Result<tonic::Streaming<pb::WatchEvent>, tonic::Status> {
    // No grpc-timeout: the stream lives as long as the run.
    let mut req = Request::new(pb::WatchRequest {
        prefix: String::new(),
        include_values: plan.args.watch_values,
        resume_token: String::new(),
    });
    if let Some(t) = &plan.tenant {
        req.metadata_mut().insert("x-tenant-id", t.clone());
    }
    let mut s = client.watch(req).await?.into_inner();
    s.message().await?;
    Ok(s)
}

/// Reads a watch stream until the run ends, counting its events and their
/// end-to-end latency.
async fn watch_reader(
    plan: Arc<Plan>,
    mut s: tonic::Streaming<pb::WatchEvent>,
    stats: Arc<WatchStats>,
) {
    loop {
        match s.message().await {
            Ok(Some(ev)) => {
                let now = Instant::now();
                if now < plan.measure_from || plan.measure_until.is_some_and(|e| now >= e) {
                    continue;
                }
                stats.events.fetch_add(1, Ordering::Relaxed);
                if let Some(Kind::BytesValue(b)) = ev
                    .entry
                    .as_ref()
                    .and_then(|e| e.value.as_ref())
                    .and_then(|v| v.kind.as_ref())
                    && b.len() >= 8
                {
                    let sent = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
                    let got = plan.start.elapsed().as_nanos() as u64;
                    if let Ok(mut h) = stats.latency.lock() {
                        h.record(got.saturating_sub(sent) / 1000);
                    }
                }
            }
            Ok(None) => break,
            Err(status) => {
                let reason = tonic_types::StatusExt::get_details_error_info(&status)
                    .map_or_else(|| format!("{:?}", status.code()), |i| i.reason);
                if let Ok(mut e) = stats.ended.lock() {
                    *e.entry(reason).or_default() += 1;
                }
                break;
            }
        }
    }
}

/// Extra time the client waits past the request deadline before giving up on
/// its own, so that the server's DEADLINE_EXCEEDED arrives first.
const CLIENT_TIMEOUT_SLACK: Duration = Duration::from_millis(500);

async fn connect(args: &Args) -> Result<Vec<Client>, String> {
    let origin: http::Uri = args
        .target
        .parse()
        .map_err(|e| format!("invalid --target {:?}: {e}", args.target))?;
    let authority = origin
        .authority()
        .ok_or_else(|| format!("--target {:?} has no host:port", args.target))?
        .clone();
    let host_port = format!(
        "{}:{}",
        authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']'),
        authority.port_u16().unwrap_or(80)
    );
    if origin.scheme_str() == Some("https") {
        return Err("state-loadgen speaks plaintext HTTP/2 only (http://)".into());
    }
    let give_up = Instant::now() + args.connect_timeout;
    let mut clients = Vec::with_capacity(args.connections);
    // One TCP connection each; requests are spread over them round robin.
    while clients.len() < args.connections.max(1) {
        match open(&host_port).await {
            Ok(send) => clients.push(
                StateServiceClient::with_origin(H2(send), origin.clone())
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            ),
            // The service may still be starting when a script launches us.
            Err(_) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("cannot connect to {}: {e}", args.target)),
        }
    }
    Ok(clients)
}

/// Opens one HTTP/2 connection (prior knowledge, TCP_NODELAY) and spawns the
/// task that drives it.
async fn open(host_port: &str) -> Result<SendRequest<Body>, String> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(host_port)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake::<_, Body>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(send)
    };
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .unwrap_or_else(|_| Err("connect timed out".into()))
}

async fn prefill(plan: &Plan, clients: &[Client]) -> Result<(), String> {
    const CHUNK: u64 = 500;
    let keys = plan.args.keys;
    let chunks = keys.div_ceil(CHUNK);
    let mut results = stream::iter(0..chunks)
        .map(|c| {
            let mut client = clients[c as usize % clients.len()].clone();
            let items = (c * CHUNK..((c + 1) * CHUNK).min(keys))
                .map(|n| pb::BatchPutItem {
                    key: key_name(n),
                    value: Some(plan.value.clone()),
                    ..Default::default()
                })
                .collect();
            let req = plan.request(pb::BatchPutRequest { items });
            async move { client.batch_put(req).await }
        })
        .buffer_unordered(16);
    while let Some(r) = results.next().await {
        r.map_err(|s| format!("prefill failed: {:?}: {}", s.code(), s.message()))?;
    }
    Ok(())
}

/// Releases one permit per scheduled send from a thread of its own, every
/// `PACER_TICK`. tokio's timers tick at 1 ms, which would release each
/// millisecond's sends at once (17 together at 17 k/s) and measure the queue
/// that burst builds rather than the service; the thread costs a few percent
/// of a core. Permits not taken because every in-flight slot is busy pile up,
/// so a client that falls behind catches up and shows it as send lag.
fn start_pacer(start: Instant, rate: f64) -> Arc<Semaphore> {
    const PACER_TICK: Duration = Duration::from_micros(100);
    let permits = Arc::new(Semaphore::new(0));
    let pacer = permits.clone();
    std::thread::spawn(move || {
        let mut released = 0u64;
        while !pacer.is_closed() {
            // Send n is due at start + n / rate, the first one at once.
            let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
            if due > released {
                pacer.add_permits(usize::try_from(due - released).unwrap_or(usize::MAX >> 4));
                released = due;
            }
            std::thread::sleep(PACER_TICK);
        }
    });
    permits
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return Duration::ZERO;
        }
        u
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn percentiles(h: Option<&Histogram<u64>>) -> Json {
    let Some(h) = h.filter(|h| !h.is_empty()) else {
        return Json::Null;
    };
    json!({
        "min": h.min(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn report(plan: &Plan, stats: &Stats, elapsed: Duration, client_cpu: Duration) -> Json {
    let args = &plan.args;
    let secs = elapsed.as_secs_f64();
    let mut all = new_histogram();
    let mut by_op = serde_json::Map::new();
    for op in Op::ALL {
        let i = op.index();
        if let Some(h) = &stats.latency[i].0 {
            let _ = all.add(h);
        }
        if stats.ok[i] == 0 {
            continue;
        }
        by_op.insert(
            op.name().into(),
            json!({
                "ok": stats.ok[i],
                "keys": stats.keys[i],
                "ops_per_s": per_second(stats.ok[i], secs),
                "keys_per_s": per_second(stats.keys[i], secs),
                "latency_us": percentiles(stats.latency[i].0.as_ref()),
            }),
        );
    }
    let ok: u64 = stats.ok.iter().sum();
    let keys: u64 = stats.keys.iter().sum();
    let errors: u64 = stats.errors.values().sum();
    let rate = args.rate.map(|target| {
        // The rate actually sent: every scheduled request is sent in the end,
        // so a client that falls behind shows as a send window longer than
        // planned. n evenly paced sends span (n - 1) intervals, hence + 1/rate.
        let send_window = stats
            .last_sent
            .map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(plan.measure_from)
            })
            .as_secs_f64()
            + 1.0 / target;
        let achieved = per_second(ok + errors, send_window);
        let lag_p99 = stats
            .send_lag
            .0
            .as_ref()
            .map_or(0, |h| h.value_at_quantile(0.99));
        json!({
            "target_per_s": target,
            "achieved_per_s": achieved,
            // Held: ≥ 99 % of the target rate was sent, and sends were not
            // queued behind busy in-flight slots (p99 lag ≤ 5 ms, far above
            // the pacer's 100 µs tick and a scheduler's time slice).
            "held": achieved >= 0.99 * target && lag_p99 <= 5_000,
            "send_lag_us": percentiles(stats.send_lag.0.as_ref()),
            "latency_from_schedule_us": percentiles(stats.from_schedule.0.as_ref()),
        })
    });
    json!({
        "target": args.target,
        "mode": if args.rate.is_some() { "fixed_rate" } else { "closed_loop" },
        "connections": args.connections,
        "concurrency": args.concurrency,
        "mix": plan.mix.weights(),
        "batch_size": args.batch_size,
        "keys": args.keys,
        "value_size": args.value_size,
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "errors_by_code": stats.errors,
        "warmup_requests": stats.warmup_requests,
        "ops_per_s": per_second(ok, secs),
        "keys_per_s": per_second(keys, secs),
        "latency_us": percentiles(Some(&all)),
        "by_op": by_op,
        "read_hit_ratio": (stats.read_keys > 0)
            .then(|| stats.found_keys as f64 / stats.read_keys as f64),
        "client_cpu_s": (client_cpu.as_secs_f64() * 1000.0).round() / 1000.0,
        "rate": rate,
    })
}

fn text(report: &Json) -> String {
    let mut s = String::new();
    let f = |v: &Json| v.as_f64().unwrap_or(0.0);
    let lat = |v: &Json| {
        format!(
            "p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
            v["p50"], v["p90"], v["p99"], v["p999"], v["max"]
        )
    };
    let _ = writeln!(
        s,
        "{} against {}: {} connections, {} in flight, mix {}",
        report["mode"].as_str().unwrap_or(""),
        report["target"].as_str().unwrap_or(""),
        report["connections"],
        report["concurrency"],
        report["mix"]
    );
    let _ = writeln!(
        s,
        "{} requests in {:.2} s: {:.0} ops/s, {:.0} keys/s, {} errors {}",
        report["requests"],
        f(&report["elapsed_s"]),
        f(&report["ops_per_s"]),
        f(&report["keys_per_s"]),
        report["errors"],
        report["errors_by_code"]
    );
    if !report["latency_us"].is_null() {
        let _ = writeln!(s, "latency: {}", lat(&report["latency_us"]));
    }
    if let Some(ops) = report["by_op"].as_object() {
        for (name, o) in ops {
            let _ = writeln!(
                s,
                "  {name:<13} {:.0} ops/s  {}",
                f(&o["ops_per_s"]),
                lat(&o["latency_us"])
            );
        }
    }
    if let Some(r) = report["rate"].as_object() {
        let _ = writeln!(
            s,
            "rate: target {:.0}/s, achieved {:.0}/s, held: {}; send lag p99 {} µs",
            f(&r["target_per_s"]),
            f(&r["achieved_per_s"]),
            r["held"],
            r["send_lag_us"]["p99"]
        );
    }
    if let Some(w) = report["watch"].as_object() {
        let _ = writeln!(
            s,
            "watch: {} watchers, {:.0} events/s, ended {}; event latency {}",
            w["watchers"],
            f(&w["events_per_s"]),
            w["ended_by_reason"],
            lat(&w["latency_us"])
        );
    }
    let _ = writeln!(s, "client CPU: {:.2} s", f(&report["client_cpu_s"]));
    s
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("state-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("state-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mix = Mix::parse(&args.mix)?;
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number of requests per second".into());
    }
    if args.keys == 0 || args.concurrency == 0 {
        return Err("--keys and --concurrency must be at least 1".into());
    }
    let tenant = args
        .tenant
        .as_deref()
        .map(MetadataValue::try_from)
        .transpose()
        .map_err(|_| "--tenant must be ASCII".to_string())?;
    let value = pb::Value {
        kind: Some(Kind::BytesValue(
            (0..args.value_size)
                .map(|i| b'a' + (i % 26) as u8)
                .collect(),
        )),
    };
    let clients = connect(&args).await?;

    let mut plan = Plan {
        args: args.clone(),
        mix,
        value,
        tenant,
        timeout: grpc_timeout_value(args.timeout),
        start: Instant::now(),
        measure_from: Instant::now(),
        measure_until: None,
        next_seq: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        pacer: None,
    };
    if args.prefill {
        prefill(&plan, &clients).await?;
    }
    let start = Instant::now();
    plan.start = start;
    plan.measure_from = start + args.warmup;
    plan.measure_until = args
        .requests
        .is_none()
        .then(|| plan.measure_from + args.duration);
    if let Some(rate) = args.rate {
        plan.pacer = Some(start_pacer(start, rate));
    }
    let plan = Arc::new(plan);

    // CPU is counted from the end of the warm-up, like everything else.
    let cpu_at_measure = tokio::spawn({
        let from = plan.measure_from;
        async move {
            tokio::time::sleep_until(from.into()).await;
            cpu_time()
        }
    });
    let watch_stats = Arc::new(WatchStats::default());
    let mut watch_tasks = Vec::new();
    for i in 0..args.watchers {
        let mut client = clients[i % clients.len()].clone();
        let s = open_watch(&plan, &mut client)
            .await
            .map_err(|e| format!("cannot open watcher {i}: {e:?}"))?;
        watch_tasks.push(tokio::spawn(watch_reader(
            plan.clone(),
            s,
            watch_stats.clone(),
        )));
    }
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(worker(plan.clone(), client, 0x5EED + i as u64))
        })
        .collect();
    let mut stats = Stats::new();
    for t in tasks {
        stats.merge(t.await.map_err(|e| format!("a worker failed: {e}"))?);
    }
    if let Some(pacer) = &plan.pacer {
        pacer.close();
    }
    // Events of the last writes are still on their way.
    if !watch_tasks.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in &watch_tasks {
        t.abort();
    }
    let cpu_before = cpu_at_measure.await.unwrap_or(Duration::ZERO);
    let cpu = cpu_time().saturating_sub(cpu_before);
    let end = stats.last_done.unwrap_or_else(Instant::now);
    let elapsed = end.saturating_duration_since(plan.measure_from);
    let mut report = report(&plan, &stats, elapsed, cpu);
    if args.watchers > 0 {
        let events = watch_stats.events.load(Ordering::Relaxed);
        let latency = watch_stats.latency.lock().ok().and_then(|mut h| h.0.take());
        report["watch"] = json!({
            "watchers": args.watchers,
            "events": events,
            "events_per_s": per_second(events, elapsed.as_secs_f64()),
            "ended_by_reason": watch_stats.ended.lock().map(|e| e.clone()).unwrap_or_default(),
            "latency_us": percentiles(latency.as_ref()),
        });
    }
    if args.json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}
