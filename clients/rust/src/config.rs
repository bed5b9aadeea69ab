//! How a client connects: address, TLS, credentials, deadlines, retries and
//! the HTTP/2 settings that match the server's. Plain data with builder
//! methods; nothing here touches the network.

use std::time::Duration;

/// Default per-attempt deadline. Default: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request the server accepts with its default limits: it decodes at
/// most max(max-value-bytes + max-key-bytes + overhead, 4 MiB).
pub const DEFAULT_MAX_SEND_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The server does not cap responses (a BatchGet of 1000 values of 1 MiB is
/// legal), so neither does the client by default.
pub const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES: usize = usize::MAX;
/// HTTP/2 keepalive ping interval; the server pings every 30 s too.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered; the server waits 10 s too.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS towards the service. Without a CA the client has no roots to trust
/// (this crate does not bundle system roots), so give the CA that signed the
/// server's certificate.
#[derive(Clone, Default)]
pub struct TlsOptions {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) domain: Option<String>,
}

impl TlsOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// The CA certificate(s), PEM, that the server's certificate chains to.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }
    /// A client certificate and key, PEM (mutual TLS: its CN names the tenant).
    pub fn client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }
    /// The name to verify the server certificate against (default: the address's host).
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity.as_ref().map(|_| "<cert+key>"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// Retries of calls that are safe to repeat (reads; writes with a request id
/// or a condition; Expire/Persist), and the bound of the `update` loop.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Stop retrying once this much time has passed since the first attempt.
    /// Default: 30 s (a service restart or a Redis restart takes a few seconds).
    pub max_elapsed: Duration,
    /// First backoff. Default: 50 ms.
    pub initial_backoff: Duration,
    /// Largest backoff. Default: 2 s.
    pub max_backoff: Duration,
    /// Backoff growth per attempt. Default: 2.
    pub multiplier: f64,
    /// Compare-and-set attempts of `update` before it gives up with the last
    /// VersionMismatch. Default: 16.
    pub update_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_elapsed: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            update_attempts: 16,
        }
    }
}

impl RetryPolicy {
    /// No retries at all (each call is attempted once; `update` tries once).
    pub fn none() -> Self {
        RetryPolicy {
            max_elapsed: Duration::ZERO,
            update_attempts: 1,
            ..Self::default()
        }
    }

    /// The jittered delay before retry number `attempt` (0-based): uniformly
    /// in [b/2, b] where b grows from `initial_backoff` by `multiplier` up to
    /// `max_backoff`. Jitter keeps workers that failed together from
    /// retrying in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64()
            * self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let base = base.min(self.max_backoff.as_secs_f64()).max(0.0);
        Duration::from_secs_f64(base * (0.5 + fastrand::f64() * 0.5))
    }
}

/// Everything a [`crate::StateClient`] needs to connect.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) address: String,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) bearer_token: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) request_ids: bool,
    pub(crate) max_send_message_bytes: usize,
    pub(crate) max_receive_message_bytes: usize,
}

impl ClientConfig {
    /// `address` is `host:port` or a URL (`http://…`, `https://…`).
    pub fn new(address: impl Into<String>) -> Self {
        ClientConfig {
            address: address.into(),
            tls: None,
            bearer_token: None,
            tenant: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            request_ids: true,
            max_send_message_bytes: DEFAULT_MAX_SEND_MESSAGE_BYTES,
            max_receive_message_bytes: DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
        }
    }
    /// Connect over TLS.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Send `authorization: Bearer <token>` on every call.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }
    /// Send `x-tenant-id` on every call (header mode, or to double-check the
    /// tenant the credentials name).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }
    /// Deadline of each attempt. Default: 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// TCP + TLS connect timeout. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Whether writes get a fresh request id (UUID v4) when the caller gives
    /// none. Default: true. Without ids, writes without a condition are not
    /// retried.
    pub fn request_ids(mut self, on: bool) -> Self {
        self.request_ids = on;
        self
    }
    /// Default: 4 MiB (the server's default request limit).
    pub fn max_send_message_bytes(mut self, n: usize) -> Self {
        self.max_send_message_bytes = n;
        self
    }
    /// Default: unlimited (the server does not cap responses).
    pub fn max_receive_message_bytes(mut self, n: usize) -> Self {
        self.max_receive_message_bytes = n;
        self
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("address", &self.address)
            .field("tls", &self.tls)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant", &self.tenant)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("request_ids", &self.request_ids)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_within_bounds_and_capped() {
        let p = RetryPolicy::default();
        for attempt in 0..40 {
            let d = p.backoff(attempt);
            let base = (0.05 * 2f64.powi(attempt as i32)).min(2.0);
            assert!(d.as_secs_f64() >= base / 2.0 - 1e-9, "{attempt}: {d:?}");
            assert!(d.as_secs_f64() <= base + 1e-9, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn debug_never_prints_the_token() {
        let c = ClientConfig::new("x:1").bearer_token("s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
