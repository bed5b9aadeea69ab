//! Command-line and environment configuration. Every flag also reads a
//! `STATE_*` environment variable, so containers and Helm configure the service
//! by env alone. This module only parses and validates; it opens nothing.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A gRPC key/value state service for stream-processing workers, fronting Redis.
#[derive(Debug, Clone, Parser)]
#[command(name = "state-service", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: Config,
}

/// Subcommands; without one the binary serves.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Calls grpc.health.v1 Check on a running server and exits 0 only when it
    /// answers SERVING (for Docker HEALTHCHECK and scripts).
    Health(HealthArgs),
    /// Prints the SHA-256 hash of an API token for the tenants file. Reads the
    /// token from stdin (so it stays out of shell history and `ps`), or with
    /// --generate creates a new random token and prints both.
    HashToken(HashTokenArgs),
    /// Exports a tenant's entries (value, version, TTL) under a prefix into a
    /// backup file (stdout or --file), resumable with --resume. Needs the
    /// admin scope.
    Export(crate::admin::cli::ExportArgs),
    /// Imports a backup file (stdin or --file) into a tenant with a conflict
    /// policy; a damaged file is refused. Needs the admin scope.
    Import(crate::admin::cli::ImportArgs),
    /// Deletes every key of a tenant under a prefix, in bounded batches;
    /// safe to re-run. Needs the admin scope.
    Purge(crate::admin::cli::PurgeArgs),
    /// Prints a tenant's key count and approximate bytes under a prefix.
    /// Needs the admin scope.
    Stats(crate::admin::cli::StatsArgs),
}

/// Arguments of `state-service hash-token`.
#[derive(Debug, Clone, Args)]
pub struct HashTokenArgs {
    /// Generate a new random 256-bit token (printed once, never stored) and
    /// print it with its hash, instead of reading a token from stdin.
    #[arg(long)]
    pub generate: bool,
}

/// Arguments of `state-service health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Address of the server to check (host:port).
    #[arg(long, env = "STATE_HEALTH_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Service name to check; empty checks the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Connect with TLS, trusting the CA certificates in this PEM file (for a
    /// server started with --tls-cert). Absent: plaintext.
    #[arg(long, env = "STATE_HEALTH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the server certificate against when it differs from the
    /// host in --addr (e.g. the Service DNS name while probing 127.0.0.1).
    #[arg(long, env = "STATE_HEALTH_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

/// A secret flag value: never printed by `Debug` (configs are debug-logged in
/// tests and panics).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything the server needs to run, grouped by concern. Every field is a
/// flag with a `STATE_*` environment variable; `--help` shows the groups.
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub tls: TlsConfig,
    #[command(flatten)]
    pub limits: LimitsConfig,
    #[command(flatten)]
    pub tenancy: TenancyConfig,
    #[command(flatten)]
    pub bounds: BoundsConfig,
    #[command(flatten)]
    pub watch: WatchConfig,
}

/// The process: where it listens, how it runs, logs and stops.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "STATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Threads of the async runtime that runs the server. 1 runs everything
    /// on one thread, which costs the least CPU per request (no wake-ups
    /// across threads) but uses at most one core; more spreads connections
    /// over that many threads. Default: 1 with at most 2 CPUs, else one per
    /// CPU.
    #[arg(long, env = "STATE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Interval of the background backend check (Redis PING) that drives the
    /// health status.
    #[arg(long, env = "STATE_HEALTH_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub health_check_interval: Duration,

    /// Maximum time to finish in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "STATE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, env = "STATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Address of the Prometheus metrics endpoint (HTTP, any path). Absent:
    /// no metrics are exported. The container image sets 0.0.0.0:9090.
    #[arg(long, env = "STATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Label request metrics with the tenant id. Off by default: every
    /// tenant multiplies the number of series.
    #[arg(long, env = "STATE_METRICS_TENANT_LABELS", default_value_t = false)]
    pub metrics_tenant_labels: bool,
}

/// Where state lives, whatever the backend.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Storage")]
pub struct StorageConfig {
    /// Prefix of every storage key: keys are `<key-prefix>:<tenant>:<key>`.
    /// Must not contain `{`, `}`, `*`, `?`, `[`, `]` or `\`.
    #[arg(long, env = "STATE_KEY_PREFIX", default_value = "state")]
    pub key_prefix: String,

    /// Memory budget of the embedded in-memory backend (no --redis-url), in
    /// bytes of keys and values plus a per-key overhead. While it holds more,
    /// writes that store data are refused with RESOURCE_EXHAUSTED (as Redis
    /// does at maxmemory with noeviction); reads, deletes and expiry changes
    /// keep working.
    #[arg(long, env = "STATE_MEMORY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub memory_max_bytes: usize,

    /// How long a write's request_id is remembered: a retry with the same id
    /// within this window answers what the first attempt answered instead of
    /// writing again. Later, the retry is a new write.
    #[arg(long, env = "STATE_IDEMPOTENCY_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub idempotency_window: Duration,

    /// Request ids remembered per key (the newest); an id pushed out by this
    /// many later writes with ids of the same key is forgotten. Each costs
    /// about 60 bytes in the key's record.
    #[arg(long, env = "STATE_IDEMPOTENCY_MAX_IDS", default_value_t = 16)]
    pub idempotency_max_ids: usize,
}

/// The Redis backend.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Redis")]
pub struct RedisConfig {
    /// Redis URL: redis://[user:password@]host:port[/db] or rediss:// for TLS.
    /// Several, separated by commas: the seed nodes of a cluster, or the
    /// sentinels (see --redis-mode). Absent: the embedded in-memory backend
    /// (state is neither shared between instances nor durable).
    #[arg(long, env = "STATE_REDIS_URL")]
    pub redis_url: Option<String>,

    // ---- topologies (issue 12): mode, master name, replica-acknowledged writes
    /// Redis topology: `standalone` (one server, --redis-url names it),
    /// `cluster` (a Redis Cluster; --redis-url names one or more seed nodes,
    /// the rest is discovered) or `sentinel` (--redis-url names the
    /// sentinels, --redis-master-name the master they watch; credentials in
    /// each sentinel URL are the sentinels' own, --redis-username and
    /// --redis-password those of the data nodes).
    #[arg(long, env = "STATE_REDIS_MODE", value_enum, default_value_t = RedisMode::Standalone)]
    pub redis_mode: RedisMode,

    /// Name of the master the sentinels monitor (--redis-mode sentinel).
    #[arg(long, env = "STATE_REDIS_MASTER_NAME")]
    pub redis_master_name: Option<String>,

    /// Replicas that must acknowledge a write (Redis `WAIT`) before it is
    /// acknowledged to the client. 0: acknowledge once the master applied it
    /// (a failover can lose the last writes; docs/operations.md, "Topologies
    /// and failover"). When fewer replicas confirm within
    /// --redis-wait-timeout, the write fails with UNAVAILABLE: it was applied
    /// on the master but may be lost by a failover.
    #[arg(long, env = "STATE_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// How long a write waits for --redis-wait-replicas replicas.
    #[arg(long, env = "STATE_REDIS_WAIT_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,

    /// Redis password, overriding any password in --redis-url (keeps the
    /// secret out of the URL, e.g. from a Kubernetes Secret as env).
    #[arg(long, env = "STATE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// File holding the Redis password (trailing newline ignored), e.g. a
    /// mounted Kubernetes Secret. Takes precedence over --redis-password.
    #[arg(long, env = "STATE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// Redis ACL user name, overriding any user in --redis-url.
    #[arg(long, env = "STATE_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Number of multiplexed Redis connections requests are spread over
    /// (each one pipelines many concurrent requests). Fewer sockets carry
    /// more commands per read and write, which saves CPU in the service and
    /// in Redis; raise it with many --worker-threads.
    #[arg(long, env = "STATE_REDIS_POOL_SIZE", default_value_t = 2)]
    pub redis_pool_size: usize,

    /// Timeout for opening a Redis connection (TCP + handshake).
    #[arg(long, env = "STATE_REDIS_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,

    /// Timeout for one Redis command or pipeline; the request's own gRPC
    /// deadline applies when shorter.
    #[arg(long, env = "STATE_REDIS_COMMAND_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_command_timeout: Duration,

    /// How long a request waits for a pooled Redis connection to become
    /// available before failing with UNAVAILABLE.
    #[arg(long, env = "STATE_REDIS_POOL_WAIT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_pool_wait_timeout: Duration,

    /// CA certificates (PEM) to verify a `rediss://` Redis against, instead
    /// of the system trust store.
    #[arg(long, env = "STATE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) presented to a `rediss://` Redis that
    /// requires one (`tls-auth-clients yes`); requires --redis-client-key.
    #[arg(long, env = "STATE_REDIS_CLIENT_CERT", requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,

    /// Private key (PEM) of --redis-client-cert.
    #[arg(long, env = "STATE_REDIS_CLIENT_KEY", requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
}

/// How the service reaches Redis (--redis-mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RedisMode {
    /// One Redis server.
    #[default]
    Standalone,
    /// A Redis Cluster: keys spread over the masters by hash slot.
    Cluster,
    /// A master and replicas watched by Redis Sentinel.
    Sentinel,
}

/// TLS of the gRPC server.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsConfig {
    /// Server certificate chain (PEM) for gRPC over TLS; requires --tls-key.
    /// Absent: plaintext HTTP/2. Reloaded like the tenants file; new
    /// connections get the new certificate.
    #[arg(long, env = "STATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM, PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "STATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that sign client certificates (mTLS); requires
    /// --tls-cert. A verified client certificate authenticates the tenant
    /// named by its subject CN. Certificates stay optional at the TLS layer so
    /// health probes connect without one.
    #[arg(long, env = "STATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// What one request may ask for. Each limit is enforced with
/// INVALID_ARGUMENT naming its flag.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsConfig {
    /// Maximum key length in bytes.
    #[arg(long, env = "STATE_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,

    /// Maximum encoded value size in bytes.
    #[arg(long, env = "STATE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,

    /// Largest request message in bytes (a BatchPut carries many values).
    /// Must leave room for one value of --max-value-bytes and its key.
    #[arg(long, env = "STATE_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest BatchGet response or List page in bytes (keys, values and
    /// their metadata). The default matches what gRPC clients accept by
    /// default (4 MiB); a BatchGet that would exceed it is refused with
    /// FAILED_PRECONDITION (RESPONSE_TOO_LARGE), a List page ends early.
    #[arg(long, env = "STATE_MAX_RESPONSE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_response_bytes: usize,

    /// Maximum items in one BatchGet, BatchPut or BatchDelete.
    #[arg(long, env = "STATE_MAX_BATCH_ITEMS", default_value_t = 1000)]
    pub max_batch_items: usize,

    /// Keys per step of an admin Purge or Stats: each step is one SCAN of
    /// this COUNT and one UNLINK (or STRLEN pipeline) of what it found, so
    /// other tenants' commands never queue behind a long one. Also the most
    /// entries one Import message may carry is --max-batch-items.
    #[arg(long, env = "STATE_ADMIN_BATCH_KEYS", default_value_t = 500)]
    pub admin_batch_keys: usize,

    /// Least time between two steps of an admin Purge or Stats. With
    /// --admin-batch-keys it caps their SCAN work (500 keys every 5ms:
    /// 100,000 keys/s), and so the CPU they take from other tenants'
    /// requests on this service and on Redis. 0: steps back to back. At most
    /// 10s.
    #[arg(long, env = "STATE_ADMIN_STEP_INTERVAL", default_value = "0s", value_parser = parse_duration)]
    pub admin_step_interval: Duration,

    /// Maximum operations in one Transact.
    #[arg(long, env = "STATE_MAX_TRANSACTION_OPS", default_value_t = 128)]
    pub max_transaction_ops: usize,

    /// List page size when the request gives none.
    #[arg(long, env = "STATE_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub default_page_size: u32,

    /// Largest List page size a request may ask for.
    #[arg(long, env = "STATE_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: u32,

    /// Longest TTL a write, Expire or Get refresh_ttl may set. At most 1000
    /// years: the storage header holds expiry times up to the year 5138.
    #[arg(long, env = "STATE_MAX_TTL", default_value = "10years", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// Longest request_id (idempotency key) in bytes.
    #[arg(long, env = "STATE_MAX_REQUEST_ID_BYTES", default_value_t = 128)]
    pub max_request_id_bytes: usize,

    /// Largest request metadata (headers) in bytes, counted as HTTP/2 does
    /// (name + value + 32 per entry). Above it: INVALID_ARGUMENT; more than
    /// 4 KiB above it, HTTP/2 refuses the headers before they are decoded.
    #[arg(long, env = "STATE_MAX_METADATA_BYTES", default_value_t = 8 * 1024)]
    pub max_metadata_bytes: usize,

    /// Most StateService requests processed at once by this process; beyond
    /// it requests are refused at once with RESOURCE_EXHAUSTED (and a
    /// RetryInfo) rather than queued. Health and reflection are not counted.
    #[arg(long, env = "STATE_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
}

/// Who may call, and how callers are told apart.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tenancy")]
pub struct TenancyConfig {
    /// Tenant used when a request carries no `x-tenant-id` header, in header
    /// mode only (no --tenants-file and no --tls-client-ca).
    #[arg(long, env = "STATE_DEFAULT_TENANT", default_value = "default")]
    pub default_tenant: String,

    /// Tenants file (TOML): tenants, their API tokens as SHA-256 hashes with
    /// scopes (read, write, admin), optional rate limits. When set, every
    /// StateService call needs `authorization: Bearer <token>` and
    /// `x-tenant-id` is no longer trusted. Re-read on SIGHUP and when it
    /// changes. Absent (and no --tls-client-ca): the `x-tenant-id` header is
    /// trusted as sent. Format: docs/security.md.
    #[arg(long, env = "STATE_TENANTS_FILE")]
    pub tenants_file: Option<PathBuf>,

    /// How often the tenants file and the TLS files are checked for changes
    /// (SIGHUP also reloads them at once).
    #[arg(long, env = "STATE_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// Secret from which the key that seals List page tokens is derived
    /// (ChaCha20-Poly1305): clients can neither read, craft nor alter them.
    /// Every instance behind one address needs the same secret; changing it
    /// invalidates outstanding tokens. Absent: a random key per process, so
    /// tokens do not survive a restart and are refused by other instances.
    #[arg(long, env = "STATE_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<Secret>,

    /// File holding the page token secret (trailing newline ignored), e.g. a
    /// mounted Kubernetes Secret. Takes precedence over --page-token-secret.
    #[arg(long, env = "STATE_PAGE_TOKEN_SECRET_FILE")]
    pub page_token_secret_file: Option<PathBuf>,
}

// ---- Resource bounds (issue 11) -------------------------------------------
// Kept in one block so that it merges cleanly with other groups' changes.

/// What connections, streams and tenants may hold, bounded before the
/// service knows who is calling. docs/security.md#resource-limits has the
/// table and the arithmetic.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Resource bounds")]
pub struct BoundsConfig {
    /// Most client connections held at once (TCP, TLS handshakes included).
    /// A connection beyond it is closed at once (counted in
    /// `state_connections_refused_total`), so file descriptors stay bounded.
    #[arg(long, env = "STATE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// HTTP/2 streams one connection may have open at once, advertised in
    /// SETTINGS_MAX_CONCURRENT_STREAMS; a client opening more gets the
    /// stream refused (REFUSED_STREAM, which gRPC clients retry).
    #[arg(long, env = "STATE_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,

    /// Time a client has to complete its TLS handshake, counted in the
    /// connection's own task: a silent socket delays nobody else.
    #[arg(long, env = "STATE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time a client has, after TCP (and TLS), to send the HTTP/2 connection
    /// preface; connections that do not are closed.
    #[arg(long, env = "STATE_PREFACE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub preface_timeout: Duration,

    /// Interval of HTTP/2 PINGs on every connection; a peer that does not
    /// answer within --http2-keepalive-timeout is disconnected.
    #[arg(long, env = "STATE_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "STATE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// HTTP/2 flow-control window of each stream, in bytes: what a client may
    /// send on one stream before the service has read it.
    #[arg(long, env = "STATE_STREAM_WINDOW_BYTES", default_value_t = 256 * 1024)]
    pub stream_window_bytes: u32,

    /// HTTP/2 flow-control window of each connection, in bytes: request
    /// bytes received but not yet read by the service, all streams of the
    /// connection together, never exceed it.
    #[arg(long, env = "STATE_CONNECTION_WINDOW_BYTES", default_value_t = 1024 * 1024)]
    pub connection_window_bytes: u32,

    /// Request body bytes the process holds while messages are being
    /// received (all connections together, before decoding). A request that
    /// would exceed it is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "STATE_MAX_PENDING_REQUEST_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_pending_request_bytes: usize,

    /// Time a client has to send a whole request message once its headers
    /// arrived; a slower request is refused with DEADLINE_EXCEEDED and its
    /// buffer freed.
    #[arg(long, env = "STATE_REQUEST_BODY_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_body_timeout: Duration,

    /// Long-lived unauthenticated streams (grpc.health.v1 Watch and
    /// reflection) open at once; beyond it they are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "STATE_MAX_HEALTH_WATCHERS", default_value_t = 1000)]
    pub max_health_watchers: usize,

    /// StateService requests one tenant may have in flight at once (its
    /// share of --max-concurrent-requests); a tenant's own
    /// `max_in_flight` in the tenants file overrides it. Beyond it:
    /// RESOURCE_EXHAUSTED (TENANT_OVERLOADED) with a RetryInfo.
    #[arg(long, env = "STATE_TENANT_MAX_IN_FLIGHT", default_value_t = 256)]
    pub tenant_max_in_flight: usize,

    /// Values (and map entries, at any depth) one request may carry, counted
    /// on the wire before decoding: decoding multiplies memory (an empty
    /// value takes 2 bytes on the wire and about 100 decoded). Above it:
    /// INVALID_ARGUMENT naming this flag.
    #[arg(long, env = "STATE_MAX_REQUEST_VALUES", default_value_t = crate::api::codec::DEFAULT_MAX_REQUEST_VALUES)]
    pub max_request_values: usize,
}

impl BoundsConfig {
    /// Checks the bounds clap cannot check on its own.
    fn validate(&self) -> Result<(), ConfigError> {
        for (flag, v) in [
            ("--max-connections", self.max_connections),
            (
                "--max-concurrent-streams",
                self.max_concurrent_streams as usize,
            ),
            (
                "--max-pending-request-bytes",
                self.max_pending_request_bytes,
            ),
            ("--max-health-watchers", self.max_health_watchers),
            ("--tenant-max-in-flight", self.tenant_max_in_flight),
            ("--max-request-values", self.max_request_values),
        ] {
            if v == 0 {
                return Err(invalid(flag, "must be at least 1"));
            }
        }
        // RFC 9113 §6.9.2: windows are 65535 ..= 2^31-1 bytes.
        for (flag, v) in [
            ("--stream-window-bytes", self.stream_window_bytes),
            ("--connection-window-bytes", self.connection_window_bytes),
        ] {
            if !(65_535..=0x7fff_ffff).contains(&v) {
                return Err(invalid(flag, "must be between 65535 and 2147483647"));
            }
        }
        for (flag, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--preface-timeout", self.preface_timeout),
            ("--http2-keepalive-interval", self.http2_keepalive_interval),
            ("--http2-keepalive-timeout", self.http2_keepalive_timeout),
            ("--request-body-timeout", self.request_body_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(flag, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

// ---- end of resource bounds -----------------------------------------------

/// The Watch change feed (docs/design/watch.md).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Watch")]
pub struct WatchConfig {
    /// Enable the Watch RPC and its change feed. Off by default: with it on,
    /// every write also appends an event to the feed (on Redis, an XADD in
    /// the write's own script, and the event history costs Redis memory),
    /// which a deployment that does not watch should not pay. Every instance
    /// over one Redis must agree: a write through an instance without it
    /// reaches no watcher.
    #[arg(long, env = "STATE_WATCH", default_value_t = false)]
    pub watch: bool,

    /// Events kept for watchers that resume: per tenant on Redis (a stream
    /// trimmed to about this length), in total on the memory backend. A
    /// resume position older than this is FAILED_PRECONDITION
    /// RESYNC_REQUIRED.
    #[arg(long, env = "STATE_WATCH_HISTORY", default_value_t = 10_000)]
    pub watch_history: usize,

    /// Events buffered per watcher. A watcher that falls further behind is
    /// ended with FAILED_PRECONDITION RESYNC_REQUIRED (cause slow_consumer)
    /// instead of growing memory or slowing writers.
    #[arg(long, env = "STATE_WATCH_BUFFER", default_value_t = 1024)]
    pub watch_buffer: usize,

    /// Most Watch streams open on this instance; beyond it Watch is
    /// RESOURCE_EXHAUSTED (TOO_MANY_WATCHERS).
    #[arg(long, env = "STATE_MAX_WATCHERS", default_value_t = 10_000)]
    pub max_watchers: usize,

    /// Most Watch streams one tenant may hold open on this instance.
    #[arg(long, env = "STATE_MAX_WATCHERS_PER_TENANT", default_value_t = 1_000)]
    pub max_watchers_per_tenant: usize,
}

/// Why the configuration cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value, or a combination of values, that cannot work.
    #[error("{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    /// A file a flag names cannot be read.
    #[error("cannot read {flag} {}: {source}", path.display())]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file a flag names has unusable content (the message says why,
    /// never quoting secrets).
    #[error("{flag}: {reason}")]
    BadFile { flag: &'static str, reason: String },
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// The longest --max-ttl accepted: the storage header's 14-digit expiry in
/// Unix ms reaches the year 5138, and this keeps every TTL far inside it.
pub const MAX_TTL_CEILING: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// Headroom above one value and its key for the rest of a request message.
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

impl Config {
    /// How request ids are remembered, for the store.
    pub fn idempotency(&self) -> crate::store::Idempotency {
        crate::store::Idempotency {
            window: self.storage.idempotency_window,
            max_ids: self.storage.idempotency_max_ids,
        }
    }

    /// The feed's sizes when Watch is enabled.
    pub fn feed(&self) -> Option<crate::store::watch::FeedConfig> {
        let w = &self.watch;
        w.watch.then_some(crate::store::watch::FeedConfig {
            history: w.watch_history,
            buffer: w.watch_buffer,
            max_watchers: w.max_watchers,
            max_watchers_per_tenant: w.max_watchers_per_tenant,
        })
    }

    /// Checks values clap cannot check on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (server, storage, redis, tls, limits, tenancy) = (
            &self.server,
            &self.storage,
            &self.redis,
            &self.tls,
            &self.limits,
            &self.tenancy,
        );
        if storage.key_prefix.is_empty() {
            return Err(invalid("--key-prefix", "must not be empty"));
        }
        if let Some(c) = storage
            .key_prefix
            .chars()
            .find(|c| matches!(c, '{' | '}' | '*' | '?' | '[' | ']' | '\\'))
        {
            return Err(invalid(
                "--key-prefix",
                format!(
                    "must not contain {c:?}: braces would move the Redis Cluster hash slot and \
                     glob characters would break List"
                ),
            ));
        }
        crate::tenancy::TenantId::parse(&tenancy.default_tenant)
            .map_err(|e| invalid("--default-tenant", e))?;
        if storage.idempotency_window < Duration::from_secs(1) {
            return Err(invalid(
                "--idempotency-window",
                "must be at least 1s (a retry comes after the first attempt failed)",
            ));
        }
        if storage.idempotency_max_ids == 0 || storage.idempotency_max_ids > 1024 {
            return Err(invalid(
                "--idempotency-max-ids",
                "must be between 1 and 1024",
            ));
        }
        if redis.redis_pool_size == 0 {
            return Err(invalid("--redis-pool-size", "must be at least 1"));
        }
        if limits.max_key_bytes == 0 {
            return Err(invalid("--max-key-bytes", "must be at least 1"));
        }
        if limits.max_value_bytes == 0 {
            return Err(invalid("--max-value-bytes", "must be at least 1"));
        }
        let one_value = limits
            .max_value_bytes
            .saturating_add(limits.max_key_bytes)
            .saturating_add(MESSAGE_OVERHEAD);
        if limits.max_request_bytes < one_value {
            return Err(invalid(
                "--max-request-bytes",
                format!(
                    "must be at least --max-value-bytes + --max-key-bytes + 64 KiB ({one_value}) \
                     so that the largest value fits one request"
                ),
            ));
        }
        if limits.max_response_bytes < one_value {
            return Err(invalid(
                "--max-response-bytes",
                format!(
                    "must be at least --max-value-bytes + --max-key-bytes + 64 KiB ({one_value}) \
                     so that the largest value can be read"
                ),
            ));
        }
        if !(1..=10_000).contains(&limits.admin_batch_keys) {
            return Err(invalid(
                "--admin-batch-keys",
                "must be between 1 and 10000 (keys of work per Redis call)",
            ));
        }
        if limits.admin_step_interval > Duration::from_secs(10) {
            return Err(invalid("--admin-step-interval", "must be at most 10s"));
        }
        if limits.max_batch_items == 0 {
            return Err(invalid("--max-batch-items", "must be at least 1"));
        }
        if limits.max_transaction_ops == 0 {
            return Err(invalid("--max-transaction-ops", "must be at least 1"));
        }
        if limits.max_ttl < Duration::from_millis(1) || limits.max_ttl > MAX_TTL_CEILING {
            return Err(invalid(
                "--max-ttl",
                "must be between 1ms and 1000 years (the storage header holds expiry times up \
                 to the year 5138)",
            ));
        }
        if limits.max_request_id_bytes == 0 || limits.max_request_id_bytes > 1024 {
            return Err(invalid(
                "--max-request-id-bytes",
                "must be between 1 and 1024",
            ));
        }
        if server.worker_threads == Some(0) {
            return Err(invalid("--worker-threads", "must be at least 1"));
        }
        if limits.max_concurrent_requests == 0 {
            return Err(invalid("--max-concurrent-requests", "must be at least 1"));
        }
        if limits.max_metadata_bytes < 1024 || limits.max_metadata_bytes > 1024 * 1024 {
            return Err(invalid(
                "--max-metadata-bytes",
                "must be between 1024 and 1048576 (gRPC's own headers take a few hundred bytes)",
            ));
        }
        if tls.tls_cert.is_some() != tls.tls_key.is_some() {
            return Err(invalid(
                "--tls-cert",
                "--tls-cert and --tls-key must be given together",
            ));
        }
        if tls.tls_client_ca.is_some() && tls.tls_cert.is_none() {
            return Err(invalid("--tls-client-ca", "needs --tls-cert and --tls-key"));
        }
        let tls_redis = redis.redis_ca_file.is_some() || redis.redis_client_cert.is_some();
        if tls_redis
            && !redis
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
        {
            return Err(invalid(
                "--redis-ca-file",
                "--redis-ca-file and --redis-client-cert need a rediss:// --redis-url",
            ));
        }
        // ---- topologies (issue 12)
        let urls = redis
            .redis_url
            .as_deref()
            .map(split_urls)
            .unwrap_or_default();
        if redis.redis_url.is_some() && urls.is_empty() {
            return Err(invalid("--redis-url", "names no URL"));
        }
        match redis.redis_mode {
            RedisMode::Standalone if urls.len() > 1 => {
                return Err(invalid(
                    "--redis-url",
                    "several URLs need --redis-mode cluster (seed nodes) or sentinel (sentinels)",
                ));
            }
            RedisMode::Cluster | RedisMode::Sentinel if redis.redis_url.is_none() => {
                return Err(invalid(
                    "--redis-mode",
                    "cluster and sentinel need --redis-url (the seed nodes or the sentinels)",
                ));
            }
            RedisMode::Sentinel
                if redis
                    .redis_master_name
                    .as_deref()
                    .is_none_or(|n| n.trim().is_empty()) =>
            {
                return Err(invalid(
                    "--redis-master-name",
                    "--redis-mode sentinel needs the name of the master the sentinels watch",
                ));
            }
            _ => {}
        }
        if redis.redis_master_name.is_some() && redis.redis_mode != RedisMode::Sentinel {
            return Err(invalid(
                "--redis-master-name",
                "is only used with --redis-mode sentinel",
            ));
        }
        if redis.redis_wait_replicas > 0 && redis.redis_wait_timeout.is_zero() {
            return Err(invalid(
                "--redis-wait-timeout",
                "must be greater than zero when --redis-wait-replicas is set",
            ));
        }
        if redis.redis_client_cert.is_some() != redis.redis_client_key.is_some() {
            return Err(invalid(
                "--redis-client-cert",
                "--redis-client-cert and --redis-client-key must be given together",
            ));
        }
        for (flag, n) in [
            ("--watch-history", self.watch.watch_history),
            ("--watch-buffer", self.watch.watch_buffer),
            ("--max-watchers", self.watch.max_watchers),
            (
                "--max-watchers-per-tenant",
                self.watch.max_watchers_per_tenant,
            ),
        ] {
            if n == 0 {
                return Err(invalid(flag, "must be at least 1"));
            }
        }
        if self.watch.watch_buffer > 1_000_000 {
            return Err(invalid(
                "--watch-buffer",
                "must be at most 1000000 (the buffer is allocated per watcher as it fills)",
            ));
        }
        if limits.default_page_size == 0 || limits.max_page_size == 0 {
            return Err(invalid(
                "--default-page-size",
                "--default-page-size and --max-page-size must be at least 1",
            ));
        }
        if limits.default_page_size > limits.max_page_size {
            return Err(invalid(
                "--default-page-size",
                format!(
                    "{} must not exceed --max-page-size ({})",
                    limits.default_page_size, limits.max_page_size
                ),
            ));
        }
        for (name, d) in [
            ("--redis-connect-timeout", redis.redis_connect_timeout),
            ("--redis-command-timeout", redis.redis_command_timeout),
            ("--redis-pool-wait-timeout", redis.redis_pool_wait_timeout),
            ("--health-check-interval", server.health_check_interval),
            ("--reload-interval", tenancy.reload_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(name, "must be greater than zero"));
            }
        }
        self.bounds.validate()?;
        if self.bounds.max_pending_request_bytes < limits.max_request_bytes {
            return Err(invalid(
                "--max-pending-request-bytes",
                "must be at least --max-request-bytes so that the largest request can be received",
            ));
        }
        Ok(())
    }

    /// The Redis password from --redis-password-file or --redis-password, if any.
    pub fn redis_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.redis.redis_password_file {
            let raw = read_text("--redis-password-file", path)?;
            return Ok(Some(raw.trim_end_matches(['\r', '\n']).to_string()));
        }
        Ok(self
            .redis
            .redis_password
            .as_ref()
            .map(|s| s.expose().to_string()))
    }

    /// The page token secret from --page-token-secret-file or
    /// --page-token-secret, if any. An empty secret is refused: it would sign
    /// tokens anyone can forge.
    pub fn page_token_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let secret = match &self.tenancy.page_token_secret_file {
            Some(path) => Some(
                read_text("--page-token-secret-file", path)?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => self
                .tenancy
                .page_token_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
        };
        match secret {
            Some(s) if s.len() < 16 => Err(invalid(
                "--page-token-secret",
                "the page token secret must be at least 16 bytes (use 32 random bytes)",
            )),
            Some(s) => Ok(Some(s.into_bytes())),
            None => Ok(None),
        }
    }

    /// Whether requests must carry credentials (tokens or certificates); when
    /// false, `x-tenant-id` is trusted.
    pub fn auth_configured(&self) -> bool {
        self.tenancy.tenants_file.is_some() || self.tls.tls_client_ca.is_some()
    }

    /// A configuration with every default, listening on `listen`; for tests and
    /// embedding.
    pub fn for_tests(listen: SocketAddr, redis_url: Option<String>) -> Self {
        let mut cfg = Cli::parse_from(["state-service"]).serve;
        cfg.server.listen = listen;
        cfg.redis.redis_url = redis_url;
        cfg
    }
}

/// The URLs of --redis-url: comma-separated, blanks ignored.
pub fn split_urls(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads a file a flag names.
pub fn read_file(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Unreadable {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(flag: &'static str, path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

use crate::duration::parse as parse_duration;
