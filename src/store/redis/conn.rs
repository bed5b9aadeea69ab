//! Redis connections: deadpool creates, sizes and replaces them; requests never
//! check one out per call.
//!
//! deadpool-redis recycles every checked-out connection with `UNWATCH` + `PING`,
//! a full round trip per request. Instead, each of `pool_size` slots keeps one
//! pooled multiplexed connection checked out for as long as it works, and
//! requests clone its handle (an `Arc` and a channel): concurrent requests on a
//! slot are pipelined by redis-rs onto one socket, so Redis sees one round trip
//! per RPC and no PING. A slot whose connection fails is emptied (the object is
//! detached from the pool) and refilled through the pool, either by the next
//! request that needs it or by the health loop, never by more than one task at
//! a time and never more often than `RECONNECT_BACKOFF` while Redis is down.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_redis::{Pool, PoolError, Runtime, redis::aio::MultiplexedConnection};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError};

use crate::error::{Error, Result};

/// While a reconnect has just failed, requests fail fast with that cause
/// instead of each trying to connect again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Settings of the connection set.
#[derive(Clone, Default)]
pub struct ConnSettings {
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub pool_wait_timeout: Duration,
    /// Overrides the URL's user name.
    pub username: Option<String>,
    /// Overrides the URL's password.
    pub password: Option<String>,
    /// For `rediss://`: CA certificates (PEM) to trust instead of the system
    /// store.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// For `rediss://`: client certificate and key (PEM) for Redis servers
    /// that require one.
    pub tls_client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

// Hand-written: the password and the client key must never reach a log line.
impl std::fmt::Debug for ConnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSettings")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .field("tls_client_cert", &self.tls_client_pem.is_some())
            .finish()
    }
}

struct Slot {
    /// The handle requests clone; `None` while disconnected.
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// The pooled object owning the connection (kept checked out).
    object: tokio::sync::Mutex<Option<deadpool_redis::Connection>>,
    /// When the last reconnect failed, and why.
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// A handle on one slot's connection, for running commands and reporting
/// failures back.
pub struct Conn {
    pub conn: MultiplexedConnection,
    slot: usize,
    generation: u64,
}

/// The fixed set of multiplexed connections requests are spread over.
pub struct Connections {
    pool: Pool,
    /// What every connection is opened with (address, credentials, TLS),
    /// for the dedicated connections of the change feed.
    info: redis::ConnectionInfo,
    connect_timeout: Duration,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicU64,
    /// Redacted address for messages.
    addr: String,
}

impl Connections {
    pub fn new(url: &str, settings: &ConnSettings) -> Result<Self> {
        let addr = super::redact_url(url);
        let mut info = url
            .into_connection_info()
            .map_err(|e| Error::invalid(format!("invalid --redis-url {addr}: {}", e.kind_str())))?;
        // Credentials given apart from the URL (env, mounted Secret) win.
        let mut redis_settings = info.redis_settings().clone();
        if let Some(user) = &settings.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &settings.password {
            redis_settings = redis_settings.set_password(password);
        }
        info = info.set_redis_settings(redis_settings);
        if settings.tls_ca_pem.is_some() || settings.tls_client_pem.is_some() {
            // redis-rs keeps the parsed certificates inside the connection
            // info, which deadpool then uses for every connection it opens.
            let certs = redis::TlsCertificates {
                client_tls: settings.tls_client_pem.as_ref().map(|(cert, key)| {
                    redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }
                }),
                root_cert: settings.tls_ca_pem.clone(),
            };
            info = redis::Client::build_with_tls(info, certs)
                .map_err(|e| {
                    Error::invalid(format!(
                        "Redis TLS settings for {addr} are not usable ({}): check \
                         --redis-ca-file / --redis-client-cert and the rediss:// scheme",
                        e.detail().unwrap_or("invalid certificate or key")
                    ))
                })?
                .get_connection_info()
                .clone();
        }
        // No response timeout inside redis-rs: every call is bounded by the
        // caller's own timeout (command timeout or gRPC deadline, whichever is
        // sooner), which also covers a Redis that accepts but never answers.
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(None);
        let manager =
            deadpool_redis::Manager::new_with_config(info.clone(), conn_config).map_err(|e| {
                Error::invalid(format!("invalid --redis-url for {addr}: {}", e.kind_str()))
            })?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .wait_timeout(Some(settings.pool_wait_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| Error::internal(format!("building the Redis pool: {e}")))?;
        let slots = (0..settings.pool_size)
            .map(|_| Slot {
                conn: Mutex::new(None),
                object: tokio::sync::Mutex::new(None),
                last_failure: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            pool,
            info,
            connect_timeout: settings.connect_timeout,
            slots,
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            addr,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A client opening connections outside the pool (same address,
    /// credentials and TLS), for work that must not share the request
    /// connections: a blocking XREAD would stall every request pipelined
    /// behind it.
    pub fn dedicated(&self) -> Result<(redis::Client, AsyncConnectionConfig)> {
        let client = redis::Client::open(self.info.clone()).map_err(|e| {
            Error::invalid(format!(
                "invalid --redis-url {}: {}",
                self.addr,
                e.kind_str()
            ))
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        Ok((client, config))
    }

    pub fn pool_status(&self) -> deadpool_redis::Status {
        self.pool.status()
    }

    /// Number of slots that currently hold a connection.
    pub fn connected(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| lock(&s.conn).is_some())
            .count()
    }

    /// A connection for one request: the next connected slot, round robin; if
    /// none is connected, reconnects one (bounded by the connect timeout and
    /// the caller's deadline).
    pub async fn get(&self) -> Result<Conn> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let slot = (start + i) % n;
            if let Some((generation, conn)) = lock(&self.slots[slot].conn).clone() {
                return Ok(Conn {
                    conn,
                    slot,
                    generation,
                });
            }
        }
        // Boxed: the cold reconnect path (pool create + handshake) is large,
        // and inlined it made every request's future ~15 KB to allocate and
        // copy; boxed it costs nothing until it runs (callgrind: −18 %
        // instructions per unary RPC, docs/benchmarks.md).
        Box::pin(self.reconnect(start)).await
    }

    /// Reports that a command on `conn` failed in a way that means the
    /// connection is gone; the slot is emptied so the next user reconnects.
    pub fn invalidate(&self, conn: &Conn) {
        let slot = &self.slots[conn.slot];
        let mut current = lock(&slot.conn);
        if current.as_ref().is_some_and(|(g, _)| *g == conn.generation) {
            *current = None;
        }
    }

    /// Fills slot `slot` if it is empty and returns its connection.
    pub async fn reconnect(&self, slot_idx: usize) -> Result<Conn> {
        let slot = &self.slots[slot_idx];
        let mut object = slot.object.lock().await;
        if let Some((generation, conn)) = lock(&slot.conn).clone() {
            // Another task reconnected while we waited for the lock.
            return Ok(Conn {
                conn,
                slot: slot_idx,
                generation,
            });
        }
        if let Some((at, cause)) = lock(&slot.last_failure).as_ref()
            && at.elapsed() < RECONNECT_BACKOFF
        {
            return Err(self.unavailable(cause.clone()));
        }
        // Detach the dead connection from the pool so it is not recycled.
        if let Some(old) = object.take() {
            drop(deadpool_redis::Connection::take(old));
        }
        match self.pool.get().await {
            Ok(fresh) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                let conn: MultiplexedConnection = (*fresh).clone();
                *object = Some(fresh);
                *lock(&slot.conn) = Some((generation, conn.clone()));
                *lock(&slot.last_failure) = None;
                Ok(Conn {
                    conn,
                    slot: slot_idx,
                    generation,
                })
            }
            Err(e) => {
                let cause = describe_pool_error(&e);
                *lock(&slot.last_failure) = Some((Instant::now(), cause.clone()));
                Err(self.unavailable(cause))
            }
        }
    }

    /// Pings every slot concurrently (reconnecting empty ones) and returns how
    /// many answered, with the last failure. Runs in the background health
    /// loop, never on the request path.
    pub async fn check_all(&self, timeout: Duration) -> (usize, Option<String>) {
        let results =
            futures::future::join_all((0..self.slots.len()).map(|slot| self.check(slot, timeout)))
                .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let last_err = results.into_iter().filter_map(Result::err).next_back();
        (ok, last_err)
    }

    async fn check(&self, slot: usize, timeout: Duration) -> Result<(), String> {
        let current = lock(&self.slots[slot].conn).clone();
        let conn = match current {
            Some((generation, conn)) => Conn {
                conn,
                slot,
                generation,
            },
            None => match tokio::time::timeout(timeout, self.reconnect(slot)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(e.log_detail().unwrap_or_default().to_string()),
                Err(_) => return Err(format!("connecting timed out after {timeout:?}")),
            },
        };
        let mut c = conn.conn.clone();
        let ping_cmd = redis::cmd("PING");
        match tokio::time::timeout(timeout, ping_cmd.query_async::<String>(&mut c)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    self.invalidate(&conn);
                }
                Err(describe_redis_error(&e))
            }
            Err(_) => {
                // A Redis that stopped answering (paused, partitioned) keeps
                // the socket open: drop it so requests fail fast instead of
                // queueing behind it.
                self.invalidate(&conn);
                Err(format!("PING timed out after {timeout:?}"))
            }
        }
    }

    /// UNAVAILABLE for clients; the address and cause go to the log.
    pub fn unavailable(&self, cause: String) -> Error {
        Error::Unavailable {
            detail: format!("redis at {}: {cause}", self.addr),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are replaced whole, so a poisoned lock still holds
    // a consistent value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Redis error as text for the operator's log (never for clients: it can
/// echo addresses and reply text). redis-rs errors carry no credentials.
pub fn describe_redis_error(e: &RedisError) -> String {
    let mut s = e.to_string();
    truncate_at_char_boundary(&mut s, 300);
    s
}

/// Shortens `s` to at most `max` bytes without splitting a character: the
/// text comes from Redis or a proxy, which decide where multi-byte
/// characters fall.
pub fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

fn describe_pool_error(e: &PoolError) -> String {
    match e {
        PoolError::Timeout(_) => "timed out connecting".to_string(),
        PoolError::Backend(e) => describe_redis_error(e),
        other => other.to_string(),
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for RedisError {
    /// The error kind without its detail: parsing errors of a URL may echo
    /// the URL, password included.
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        // Byte 300 falls inside a 3-byte character: `String::truncate(300)`
        // would panic here.
        let mut s = format!("{}{}", "a".repeat(299), "€€€");
        truncate_at_char_boundary(&mut s, 300);
        assert_eq!(s, "a".repeat(299));
        let mut short = "ok".to_string();
        truncate_at_char_boundary(&mut short, 300);
        assert_eq!(short, "ok");
    }
}
