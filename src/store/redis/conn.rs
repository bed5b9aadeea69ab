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
//!
//! Topologies (--redis-mode, issue 12): a slot holds a `Link`, either a
//! multiplexed connection to one server (standalone, or the master Sentinel
//! names) or a redis-rs `ClusterConnection` (itself multiplexed over every
//! master, routing each command by its keys' slot). A Sentinel pool asks the
//! sentinels for the master on every connect, so a slot emptied after a
//! failover reconnects to the new master; a cluster slot emptied after a
//! node failure reconnects with a fresh slot map.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_redis::{Pool, Runtime, redis::aio::MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisError, RedisFuture,
    aio::ConnectionLike, cluster_async::ClusterConnection,
};

use crate::error::{Error, Result};

/// While a reconnect has just failed, requests fail fast with that cause
/// instead of each trying to connect again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Which Redis topology the service talks to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    /// One server at the one URL.
    #[default]
    Standalone,
    /// A Redis Cluster; the URLs are seed nodes.
    Cluster,
    /// The master Sentinel names `master_name`; the URLs are the sentinels.
    Sentinel { master_name: String },
}

/// Settings of the connection set.
#[derive(Clone, Default)]
pub struct ConnSettings {
    pub topology: Topology,
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
            .field("topology", &self.topology)
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

/// A handle on a connection that requests clone: to one server, or to a
/// whole cluster.
#[derive(Clone)]
pub enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// deadpool manager of cluster connections. deadpool-redis's own cluster
/// manager builds its `ClusterClient` with redis-rs's default of 16 retries,
/// and redis-rs retries every retryable error alike, a connection dropped
/// after the command was sent included: a write whose outcome is unknown
/// would be sent again (an increment applied twice). Ours sets no retries;
/// `RedisStore::call` retries only replies that prove the command did not
/// run (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY, a refused connection).
pub struct ClusterManager {
    client: redis::cluster::ClusterClient,
}

impl deadpool::managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        _: &mut ClusterConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        // A ClusterConnection repairs its node connections itself; a broken
        // one is detached by `invalidate`, never returned.
        Ok(())
    }
}

/// The pool behind the slots, by topology.
enum Pools {
    Single(Pool),
    Sentinel(deadpool_redis::sentinel::Pool),
    Cluster(deadpool::managed::Pool<ClusterManager>),
}

/// A pooled connection, by topology.
pub enum Object {
    Single(deadpool_redis::Connection),
    Sentinel(deadpool_redis::sentinel::Connection),
    Cluster(deadpool::managed::Object<ClusterManager>),
}

impl Object {
    pub fn link(&self) -> Link {
        match self {
            Object::Single(c) => Link::Single((**c).clone()),
            Object::Sentinel(c) => Link::Single((**c).clone()),
            Object::Cluster(c) => Link::Cluster((**c).clone()),
        }
    }

    /// Removes the connection from the pool for good (it is broken).
    pub fn detach(self) {
        match self {
            Object::Single(c) => drop(deadpool_redis::Connection::take(c)),
            Object::Sentinel(c) => drop(deadpool_redis::sentinel::Connection::take(c)),
            Object::Cluster(c) => drop(deadpool::managed::Object::take(c)),
        }
    }
}

struct Slot {
    /// The handle requests clone; `None` while disconnected.
    conn: Mutex<Option<(u64, Link)>>,
    /// The pooled object owning the connection (kept checked out).
    object: tokio::sync::Mutex<Option<Object>>,
    /// When the last reconnect failed, and why.
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// A handle on one slot's connection, for running commands and reporting
/// failures back.
pub struct Conn {
    pub conn: Link,
    slot: usize,
    generation: u64,
}

/// The fixed set of multiplexed connections requests are spread over.
pub struct Connections {
    pool: Pools,
    topology: Topology,
    /// What every connection to the first URL is opened with (address,
    /// credentials, TLS), for the dedicated connections of the change feed
    /// (standalone only).
    info: ConnectionInfo,
    connect_timeout: Duration,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicU64,
    /// Redacted address for messages.
    addr: String,
}

impl Connections {
    /// A connection set over `urls` (one for standalone; seeds or sentinels
    /// otherwise), with `settings.pool_size` slots.
    pub fn new(urls: &[String], settings: &ConnSettings) -> Result<Self> {
        let addr = urls
            .iter()
            .map(|u| super::redact_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let infos = urls
            .iter()
            .map(|u| Self::connection_info(u, settings))
            .collect::<Result<Vec<_>>>()?;
        let first = infos
            .first()
            .cloned()
            .ok_or_else(|| Error::invalid("--redis-url names no URL"))?;
        let pool = match &settings.topology {
            Topology::Standalone => {
                Pools::Single(Self::single_pool(first.clone(), settings, &addr)?)
            }
            Topology::Cluster => Pools::Cluster(Self::cluster_pool(infos, settings, &addr)?),
            Topology::Sentinel { master_name } => {
                Pools::Sentinel(Self::sentinel_pool(urls, master_name, settings, &addr)?)
            }
        };
        let slots = (0..settings.pool_size)
            .map(|_| Slot {
                conn: Mutex::new(None),
                object: tokio::sync::Mutex::new(None),
                last_failure: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            pool,
            info: first,
            connect_timeout: settings.connect_timeout,
            topology: settings.topology.clone(),
            slots,
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            addr,
        })
    }

    /// The topology these connections reach.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The connection info of one URL, with the credentials and TLS files
    /// given apart from it.
    fn connection_info(url: &str, settings: &ConnSettings) -> Result<ConnectionInfo> {
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
        Ok(info)
    }

    fn single_pool(info: ConnectionInfo, settings: &ConnSettings, addr: &str) -> Result<Pool> {
        // No response timeout inside redis-rs: every call is bounded by the
        // caller's own timeout (command timeout or gRPC deadline, whichever is
        // sooner), which also covers a Redis that accepts but never answers.
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(None);
        let manager = deadpool_redis::Manager::new_with_config(info, conn_config).map_err(|e| {
            Error::invalid(format!("invalid --redis-url for {addr}: {}", e.kind_str()))
        })?;
        Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .wait_timeout(Some(settings.pool_wait_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| Error::internal(format!("building the Redis pool: {e}")))
    }

    fn cluster_pool(
        infos: Vec<ConnectionInfo>,
        settings: &ConnSettings,
        addr: &str,
    ) -> Result<deadpool::managed::Pool<ClusterManager>> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
            .retries(0)
            .connection_timeout(settings.connect_timeout);
        if settings.tls_ca_pem.is_some() || settings.tls_client_pem.is_some() {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: settings.tls_client_pem.as_ref().map(|(cert, key)| {
                    redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }
                }),
                root_cert: settings.tls_ca_pem.clone(),
            });
        }
        let client = builder.build().map_err(|e| {
            Error::invalid(format!(
                "invalid cluster seeds in --redis-url {addr}: {}",
                e.kind_str()
            ))
        })?;
        deadpool::managed::Pool::builder(ClusterManager { client })
            .max_size(settings.pool_size)
            .runtime(deadpool::Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .wait_timeout(Some(settings.pool_wait_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| Error::internal(format!("building the Redis Cluster pool: {e}")))
    }

    fn sentinel_pool(
        urls: &[String],
        master_name: &str,
        settings: &ConnSettings,
        addr: &str,
    ) -> Result<deadpool_redis::sentinel::Pool> {
        use deadpool_redis::sentinel::{
            Manager, SentinelNodeConnectionInfo, SentinelServerType, TlsMode,
        };
        // The sentinels' own credentials stay in their URLs; the data nodes
        // use --redis-username / --redis-password, and TLS when the
        // sentinels are reached over rediss://.
        let tls = urls.iter().all(|u| u.starts_with("rediss://"));
        let node = SentinelNodeConnectionInfo {
            tls_mode: tls.then_some(TlsMode::Secure),
            redis_connection_info: Some(deadpool_redis::RedisConnectionInfo {
                db: 0,
                username: settings.username.clone(),
                password: settings.password.clone(),
                protocol: deadpool_redis::ProtocolVersion::RESP2,
            }),
        };
        let manager = Manager::new(
            urls.iter().map(String::as_str).collect(),
            master_name.to_string(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| {
            Error::invalid(format!(
                "invalid sentinel URLs in --redis-url {addr}: {}",
                e.kind_str()
            ))
        })?;
        deadpool_redis::sentinel::Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .wait_timeout(Some(settings.pool_wait_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| Error::internal(format!("building the Sentinel pool: {e}")))
    }

    /// Checks a connection out of the pool for the caller alone (a write
    /// followed by WAIT, which blocks its connection until replicas answer).
    pub async fn exclusive(&self) -> Result<Object> {
        let got = match &self.pool {
            Pools::Single(p) => p.get().await.map(Object::Single),
            Pools::Sentinel(p) => p.get().await.map(Object::Sentinel),
            Pools::Cluster(p) => p.get().await.map(Object::Cluster),
        };
        got.map_err(|e| self.unavailable(describe_pool_error(&e)))
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
        match &self.pool {
            Pools::Single(p) => p.status(),
            Pools::Sentinel(p) => p.status(),
            Pools::Cluster(p) => p.status(),
        }
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

    /// Empties every slot: the next requests reconnect (through Sentinel,
    /// to whatever master it names now).
    pub fn invalidate_all(&self) {
        for slot in &self.slots {
            *lock(&slot.conn) = None;
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
            old.detach();
        }
        let fresh = match &self.pool {
            Pools::Single(p) => p.get().await.map(Object::Single),
            Pools::Sentinel(p) => p.get().await.map(Object::Sentinel),
            Pools::Cluster(p) => p.get().await.map(Object::Cluster),
        };
        match fresh {
            Ok(fresh) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                let conn = fresh.link();
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
        let ping = async {
            match conn.conn.clone() {
                Link::Single(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await,
                // One node at random: redis-rs sends a plain PING to every
                // node and fails it when any one is down, while the cluster
                // may still serve (health reads cluster_state instead).
                Link::Cluster(mut c) => c
                    .route_command(
                        redis::cmd("PING"),
                        redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::Random,
                        ),
                    )
                    .await
                    .map(|_| String::new()),
            }
        };
        match tokio::time::timeout(timeout, ping).await {
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

fn describe_pool_error(e: &deadpool::managed::PoolError<RedisError>) -> String {
    use deadpool::managed::PoolError;
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
