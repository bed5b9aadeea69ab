//! Test harness: a private `redis-server` per test (or `STATE_TEST_REDIS_URL`),
//! the service started in-process on `127.0.0.1:0` through `server::run`, and
//! a connected gRPC client. Everything is stopped when the guards drop.
#![allow(dead_code)]

pub mod api;
pub mod pki;
pub mod topology;

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use state_service::{
    config::Config,
    pb::{self, state_service_client::StateServiceClient},
    server,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// The client every test uses: the generated stub over a channel that checks
/// every error status it receives for backend details (see `Checked`).
pub type Client = StateServiceClient<Checked>;

/// A channel that fails the test when an error status tells the client
/// something only the operator may know: a Redis URL, a host:port, or text
/// of a raw Redis reply. Every test that talks through the harness's client
/// runs this check on every error it provokes.
#[derive(Clone)]
pub struct Checked(pub Channel);

/// Text that must never reach a client.
const LEAKS: &[&str] = &[
    "redis://",
    "rediss://",
    "127.0.0.1:",
    "WRONGTYPE",
    "NOSCRIPT",
    "OOM command",
    "ERR ",
    "LOADING Redis",
    "READONLY You can't",
    "MOVED ",
    "broken pipe",
    "Connection refused",
    "BulkString",
    "Array(",
];

/// Panics if `message` (a status a client received) names backend details.
pub fn assert_no_backend_details(message: &str) {
    for leak in LEAKS {
        assert!(
            !message.contains(leak),
            "a client-visible error reveals backend details ({leak:?}): {message}"
        );
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Checked {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fut = tower::Service::call(&mut self.0, req);
        Box::pin(async move {
            let resp = fut.await?;
            // Errors of unary calls arrive as trailers-only responses, whose
            // status is in the headers.
            if let Some(status) = tonic::Status::from_header_map(resp.headers()) {
                assert_no_backend_details(status.message());
            }
            Ok(resp)
        })
    }
}

/// Generates, for each named `async fn name(backend: Backend)` of the calling
/// test file, one test per backend (`memory::name`, `redis::name`), so both
/// backends run exactly the same behaviours.
// Each test binary compiles this module; only some generate per-backend tests.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis).await })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_backends;

/// Like `both_backends!`, plus a row for a Redis Cluster (`cluster::name`)
/// and a Sentinel set (`sentinel::name`), both shared by the test run
/// (`topology`), each test under its own key prefix, and the Redis backend
/// with the change feed on (`redis_feed::name`, as in `all_backends!`).
#[allow(unused_macros)]
macro_rules! all_topologies {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Cluster).await })*
        }
        mod sentinel {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Sentinel).await })*
        }
        mod redis_feed {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::common::FEED_ON.store(true, std::sync::atomic::Ordering::SeqCst);
                super::$name(super::Backend::Redis).await
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use all_topologies;

/// When set, every server the harness starts runs with the change feed on
/// (`--watch`). Set by the `redis_feed` tests of `all_backends!`; nextest
/// runs each test in a process of its own.
pub static FEED_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `both_backends!` plus `redis_feed::name`: the Redis backend with the
/// change feed on, so every behaviour is also checked against the write
/// scripts' feed variants (docs/design/watch.md).
#[allow(unused_macros)]
macro_rules! all_backends {
    ($($name:ident),* $(,)?) => {
        common::both_backends!($($name),*);
        mod redis_feed {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::common::FEED_ON.store(true, std::sync::atomic::Ordering::SeqCst);
                super::$name(super::Backend::Redis).await
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use all_backends;

/// How often the polling helpers look again. Tests never sleep to
/// synchronise: they poll for the state they need, with a deadline of
/// seconds (`eventually!`).
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `$cond` (which may `.await`) every `POLL_INTERVAL` until it holds,
/// failing the test with `$what` if it has not within `$timeout`.
#[allow(unused_macros)]
macro_rules! eventually {
    ($timeout:expr, $what:expr, $cond:expr) => {{
        let timeout: std::time::Duration = $timeout;
        let start = std::time::Instant::now();
        loop {
            if $cond {
                break;
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not happen within {timeout:?}",
                $what
            );
            tokio::time::sleep(common::POLL_INTERVAL).await;
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use eventually;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A redis-server owned by one test, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

const INSTALL_HINT: &str = "redis-server is required by the test suite and was not found on PATH. \
     Install it (Debian/Ubuntu: `apt-get install redis-server`) or run `scripts/test.sh`, \
     which installs it, or point STATE_TEST_REDIS_URL at a disposable Redis.";

impl RedisServer {
    /// Starts a fresh redis-server on a free port (no persistence).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Starts a redis-server on a given port (e.g. one a service already
    /// points at).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        kill_with_parent(&mut cmd);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (simulating a crash); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered, like a hung or partitioned Redis.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Undoes `pause` (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("redis-server not running").id();
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(pid as i32, sig) };
    }

    /// Whether the server process is running (not stopped by `stop`).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A plain redis-rs connection for inspecting what the service wrote.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes a child die with the test process even if the test aborts without
/// running destructors (nextest runs each test in its own process).
pub fn kill_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listening on port {port} after {timeout:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The Redis to test against: `STATE_TEST_REDIS_URL`, or a fresh private one.
pub enum TestRedis {
    Owned(RedisServer),
    External(String),
}

impl TestRedis {
    pub fn get() -> Self {
        match std::env::var("STATE_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => TestRedis::External(url),
            _ => TestRedis::Owned(RedisServer::start()),
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestRedis::Owned(s) => s.url(),
            TestRedis::External(u) => u.clone(),
        }
    }
}

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    /// The run's shared Redis Cluster (`topology::shared_cluster`).
    Cluster,
    /// The run's shared Sentinel set (`topology::shared_sentinel`).
    Sentinel,
}

/// Points `config` at a shared topology under a key prefix of its own.
pub fn use_topology(backend: Backend, config: &mut Config) {
    use state_service::config::RedisMode;
    match backend {
        Backend::Cluster => {
            config.redis.redis_mode = RedisMode::Cluster;
            config.redis.redis_url = Some(topology::shared_cluster().urls());
        }
        Backend::Sentinel => {
            config.redis.redis_mode = RedisMode::Sentinel;
            config.redis.redis_url = Some(topology::shared_sentinel());
            config.redis.redis_master_name = Some(topology::MASTER_NAME.to_string());
        }
        Backend::Memory | Backend::Redis => return,
    }
    config.storage.key_prefix = topology::unique_key_prefix();
}

/// How a test client reaches a TLS server: the CA to trust and, for mTLS, a
/// client certificate.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: String,
    pub identity: Option<pki::CertKey>,
}

/// A running service and a client connected to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    pub redis: Option<TestRedis>,
    /// Set when the server speaks TLS.
    pub tls: Option<ClientTls>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), server::ServeError>>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let redis = match backend {
            Backend::Redis => Some(TestRedis::get()),
            _ => None,
        };
        let url = redis.as_ref().map(|r| r.url());
        Self::start_on(url, redis, |c| {
            use_topology(backend, c);
            tweak(c)
        })
        .await
    }

    /// Starts the service against `redis_url` (a redis the caller owns).
    pub async fn start_on(
        redis_url: Option<String>,
        redis: Option<TestRedis>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_full(redis_url, redis, None, tweak).await
    }

    /// Starts a server on `backend` that the harness reaches over TLS.
    pub async fn start_tls(
        backend: Backend,
        tls: ClientTls,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let redis = match backend {
            Backend::Redis => Some(TestRedis::get()),
            _ => None,
        };
        let url = redis.as_ref().map(|r| r.url());
        Self::start_full(url, redis, Some(tls), |c| {
            use_topology(backend, c);
            tweak(c)
        })
        .await
    }

    /// The general form: `tls` says how the harness's own client connects.
    pub async fn start_full(
        redis_url: Option<String>,
        redis: Option<TestRedis>,
        tls: Option<ClientTls>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        // STATE_TEST_LOG=1 (with RUST_LOG) shows the server's log, where
        // INTERNAL and UNAVAILABLE details go.
        if std::env::var_os("STATE_TEST_LOG").is_some() {
            state_service::telemetry::init(state_service::config::LogFormat::Pretty);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::for_tests(addr, redis_url);
        config.server.health_check_interval = Duration::from_millis(100);
        if FEED_ON.load(std::sync::atomic::Ordering::SeqCst) {
            config.watch.watch = true;
        }
        tweak(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(listener, config, async move {
            let _ = rx.await;
        }));
        let client = StateServiceClient::new(Checked(channel(addr, tls.as_ref()).await));
        let server = TestServer {
            addr,
            client,
            redis,
            tls,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        server.wait_serving(Duration::from_secs(10)).await;
        server
    }

    /// Waits until grpc.health.v1 says SERVING.
    pub async fn wait_serving(&self, timeout: Duration) {
        wait_health_with(
            self.addr,
            self.tls.as_ref(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            timeout,
        )
        .await;
    }

    /// A new client on its own connection, with `tls` (None: plaintext).
    pub async fn client_with(&self, tls: Option<&ClientTls>) -> Client {
        StateServiceClient::new(Checked(channel(self.addr, tls).await))
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> Result<(), server::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap().await.unwrap()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn connect(addr: SocketAddr) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to test server");
    StateServiceClient::new(Checked(channel))
}

/// The endpoint of a test server, over TLS (to `localhost`) when `tls` is set.
pub fn endpoint(addr: SocketAddr, tls: Option<&ClientTls>) -> tonic::transport::Endpoint {
    match tls {
        None => tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        Some(t) => {
            let mut cfg = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&t.ca_pem))
                .domain_name("localhost");
            if let Some(id) = &t.identity {
                cfg = cfg.identity(tonic::transport::Identity::from_pem(
                    &id.cert_pem,
                    &id.key_pem,
                ));
            }
            tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(cfg)
                .unwrap()
        }
    }
    .connect_timeout(Duration::from_secs(5))
}

/// A connected channel; panics if the connection (or TLS handshake) fails.
pub async fn channel(addr: SocketAddr, tls: Option<&ClientTls>) -> Channel {
    endpoint(addr, tls)
        .connect()
        .await
        .expect("connect to test server")
}

pub async fn health_status(
    addr: SocketAddr,
) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    health_status_with(addr, None).await
}

pub async fn health_status_with(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    let channel = endpoint(addr, tls).connect().await.ok()?;
    let resp = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(resp.into_inner().status())
}

pub async fn wait_health(
    addr: SocketAddr,
    want: tonic_health::pb::health_check_response::ServingStatus,
    timeout: Duration,
) {
    wait_health_with(addr, None, want, timeout).await;
}

/// Polls grpc.health.v1 (over TLS when `tls` is given) until it reports `want`.
pub async fn wait_health_with(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    want: tonic_health::pb::health_check_response::ServingStatus,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let got = health_status_with(addr, tls).await;
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "health did not become {want:?} within {timeout:?} (last: {got:?})"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Attaches `authorization: Bearer <token>` to a request.
pub fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// Writes a tenants file line by line into `path` atomically (write, then
/// rename), as an operator or a Secret update would.
pub fn write_atomically(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Attaches `x-tenant-id` to a request.
pub fn as_tenant<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-tenant-id", tenant.parse().unwrap());
    req
}

/// Value constructors.
pub mod v {
    use super::pb::{self, value::Kind};

    pub fn int(i: i64) -> Option<pb::Value> {
        Some(pb::Value {
            kind: Some(Kind::IntValue(i)),
        })
    }
    pub fn string(s: &str) -> Option<pb::Value> {
        Some(pb::Value {
            kind: Some(Kind::StringValue(s.to_string())),
        })
    }
    pub fn of(kind: Kind) -> pb::Value {
        pb::Value { kind: Some(kind) }
    }
}

pub fn ms(n: u64) -> Option<prost_types::Duration> {
    let d = Duration::from_millis(n);
    Some(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// Path of a tool inside the repo's test venv (created by scripts/test.sh), or
/// on PATH.
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

/// One tenant of a generated tenants file.
pub struct TenantDef<'a> {
    pub id: &'a str,
    /// (token, scopes): the file stores only the token's hash.
    pub tokens: &'a [(&'a str, &'a [&'a str])],
    /// Extra TOML lines for the tenant (rate limit, certificate scopes).
    pub extra: &'a str,
}

/// A tenants file (TOML) for `tenants`.
pub fn tenants_toml(tenants: &[TenantDef<'_>]) -> String {
    let mut out = String::new();
    for t in tenants {
        out.push_str(&format!("[[tenants]]\nid = \"{}\"\n{}\n", t.id, t.extra));
        for (token, scopes) in t.tokens {
            let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
            out.push_str(&format!(
                "[[tenants.tokens]]\nsha256 = \"{}\"\nscopes = [{}]\n",
                state_service::tenancy::hash_token(token),
                scopes.join(", ")
            ));
        }
    }
    out
}

/// The Prometheus text of a metrics endpoint on `port` (`--metrics-listen`).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the first sample line of `text` starting with `prefix`.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
