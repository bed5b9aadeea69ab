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

/// Everything the server needs to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "STATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Redis URL: redis://[user:password@]host:port[/db] or rediss:// for TLS.
    /// Absent: the embedded in-memory backend (state is neither shared between
    /// instances nor durable).
    #[arg(long, env = "STATE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key: keys are `<key-prefix>:<tenant>:<key>`.
    /// Must not contain `{`, `}`, `*`, `?`, `[`, `]` or `\`.
    #[arg(long, env = "STATE_KEY_PREFIX", default_value = "state")]
    pub key_prefix: String,

    /// Tenant used when a request carries no `x-tenant-id` header, in header
    /// mode only (no --tenants-file and no --tls-client-ca).
    #[arg(long, env = "STATE_DEFAULT_TENANT", default_value = "default")]
    pub default_tenant: String,

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

    /// Interval of the background Redis PING that drives the health status.
    #[arg(long, env = "STATE_HEALTH_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub health_check_interval: Duration,

    /// Maximum time to finish in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "STATE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, env = "STATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Maximum key length in bytes.
    #[arg(long, env = "STATE_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,

    /// Maximum encoded value size in bytes (the gRPC message size limit is
    /// derived from it).
    #[arg(long, env = "STATE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,

    /// Maximum items in one BatchGet, BatchPut or BatchDelete.
    #[arg(long, env = "STATE_MAX_BATCH_ITEMS", default_value_t = 1000)]
    pub max_batch_items: usize,

    /// Maximum operations in one Transact.
    #[arg(long, env = "STATE_MAX_TRANSACTION_OPS", default_value_t = 128)]
    pub max_transaction_ops: usize,

    /// List page size when the request gives none.
    #[arg(long, env = "STATE_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub default_page_size: u32,

    /// Largest List page size a request may ask for.
    #[arg(long, env = "STATE_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: u32,

    /// Address of the Prometheus metrics endpoint (HTTP, any path). Absent:
    /// no metrics are exported. The container image sets 0.0.0.0:9090.
    #[arg(long, env = "STATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Label request metrics with the tenant id. Off by default: every
    /// tenant multiplies the number of series.
    #[arg(long, env = "STATE_METRICS_TENANT_LABELS", default_value_t = false)]
    pub metrics_tenant_labels: bool,

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

    /// Most StateService requests processed at once by this process; beyond
    /// it requests are refused at once with RESOURCE_EXHAUSTED (and a
    /// RetryInfo) rather than queued. Health and reflection are not counted.
    #[arg(long, env = "STATE_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Threads of the async runtime that runs the server. 1 runs everything
    /// on one thread, which costs the least CPU per request (no wake-ups
    /// across threads) but uses at most one core; more spreads connections
    /// over that many threads. Default: 1 with at most 2 CPUs, else one per
    /// CPU.
    #[arg(long, env = "STATE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Largest request metadata (headers) in bytes, counted as HTTP/2 does
    /// (name + value + 32 per entry). Above it: INVALID_ARGUMENT; more than
    /// 4 KiB above it, HTTP/2 refuses the headers before they are decoded.
    #[arg(long, env = "STATE_MAX_METADATA_BYTES", default_value_t = 8 * 1024)]
    pub max_metadata_bytes: usize,

    /// Secret that signs List page tokens (HMAC-SHA256), so that clients can
    /// neither craft nor alter them. Every instance behind one address needs
    /// the same secret; changing it invalidates outstanding tokens. Absent:
    /// tokens carry a public hash binding them to tenant and prefix.
    #[arg(long, env = "STATE_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<Secret>,

    /// File holding the page token secret (trailing newline ignored), e.g. a
    /// mounted Kubernetes Secret. Takes precedence over --page-token-secret.
    #[arg(long, env = "STATE_PAGE_TOKEN_SECRET_FILE")]
    pub page_token_secret_file: Option<PathBuf>,
}

impl Config {
    /// Checks values clap cannot check on its own.
    pub fn validate(&self) -> Result<(), String> {
        if self.key_prefix.is_empty() {
            return Err("--key-prefix must not be empty".into());
        }
        if let Some(c) = self
            .key_prefix
            .chars()
            .find(|c| matches!(c, '{' | '}' | '*' | '?' | '[' | ']' | '\\'))
        {
            return Err(format!(
                "--key-prefix must not contain {c:?}: braces would move the Redis Cluster hash slot \
                 and glob characters would break List"
            ));
        }
        crate::tenancy::TenantId::parse(&self.default_tenant)
            .map_err(|e| format!("--default-tenant: {e}"))?;
        if self.redis_pool_size == 0 {
            return Err("--redis-pool-size must be at least 1".into());
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err("--max-key-bytes and --max-value-bytes must be at least 1".into());
        }
        if self.max_batch_items == 0 || self.max_transaction_ops == 0 {
            return Err("--max-batch-items and --max-transaction-ops must be at least 1".into());
        }
        if self.worker_threads == Some(0) {
            return Err("--worker-threads must be at least 1".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("--max-concurrent-requests must be at least 1".into());
        }
        if self.max_metadata_bytes < 1024 || self.max_metadata_bytes > 1024 * 1024 {
            return Err(
                "--max-metadata-bytes must be between 1024 and 1048576 (gRPC's own headers \
                 take a few hundred bytes)"
                    .into(),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key must be given together".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
        }
        let tls_redis = self.redis_ca_file.is_some() || self.redis_client_cert.is_some();
        if tls_redis
            && !self
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
        {
            return Err(
                "--redis-ca-file and --redis-client-cert need a rediss:// --redis-url".into(),
            );
        }
        if self.redis_client_cert.is_some() != self.redis_client_key.is_some() {
            return Err("--redis-client-cert and --redis-client-key must be given together".into());
        }
        if self.default_page_size == 0 || self.max_page_size == 0 {
            return Err("--default-page-size and --max-page-size must be at least 1".into());
        }
        if self.default_page_size > self.max_page_size {
            return Err(format!(
                "--default-page-size ({}) must not exceed --max-page-size ({})",
                self.default_page_size, self.max_page_size
            ));
        }
        for (name, d) in [
            ("--redis-connect-timeout", self.redis_connect_timeout),
            ("--redis-command-timeout", self.redis_command_timeout),
            ("--redis-pool-wait-timeout", self.redis_pool_wait_timeout),
            ("--health-check-interval", self.health_check_interval),
            ("--reload-interval", self.reload_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        Ok(())
    }

    /// The Redis password from --redis-password-file or --redis-password, if any.
    pub fn redis_password(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.redis_password_file {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                format!("cannot read --redis-password-file {}: {e}", path.display())
            })?;
            return Ok(Some(raw.trim_end_matches(['\r', '\n']).to_string()));
        }
        Ok(self.redis_password.as_ref().map(|s| s.expose().to_string()))
    }

    /// The page token secret from --page-token-secret-file or
    /// --page-token-secret, if any. An empty secret is refused: it would sign
    /// tokens anyone can forge.
    pub fn page_token_secret(&self) -> Result<Option<Vec<u8>>, String> {
        let secret = match &self.page_token_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "cannot read --page-token-secret-file {}: {e}",
                            path.display()
                        )
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => self
                .page_token_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
        };
        match secret {
            Some(s) if s.len() < 16 => {
                Err("the page token secret must be at least 16 bytes (use 32 random bytes)".into())
            }
            Some(s) => Ok(Some(s.into_bytes())),
            None => Ok(None),
        }
    }

    /// Whether requests must carry credentials (tokens or certificates); when
    /// false, `x-tenant-id` is trusted.
    pub fn auth_configured(&self) -> bool {
        self.tenants_file.is_some() || self.tls_client_ca.is_some()
    }

    /// A configuration with every default, listening on `listen`; for tests and
    /// embedding.
    pub fn for_tests(listen: SocketAddr, redis_url: Option<String>) -> Self {
        let mut cfg = Cli::parse_from(["state-service"]).serve;
        cfg.listen = listen;
        cfg.redis_url = redis_url;
        cfg
    }
}

use crate::duration::parse as parse_duration;
