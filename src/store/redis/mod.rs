//! The Redis backend: a standalone Redis, a Redis Cluster, or a master
//! followed through Sentinel (`conn::Topology`, --redis-mode).
//!
//! Storage formats 2 and 3 (docs/design/storage-format.md): each key is one
//! string, a fixed header (version, absolute expiry, and for keys that
//! remember request ids their entries) and the encoded value (`record`).
//! Reads are one GET (BatchGet: one MGET); every write is one Lua script call
//! (`scripts`) so that conditions, versions and expiry are applied
//! atomically; an unconditional Delete without a request id is a plain DEL.
//! Every call is bounded by the command timeout; connection loss empties the
//! connection slot and is reported as UNAVAILABLE (the address and cause go
//! to the log).
//!
//! The service stamps writes: versions come from `record::Clocks` (this
//! host's clock, kept above a floor shared by all instances), expiries are
//! absolute times on Redis's clock, and unconditional puts arrive as records
//! the service built. Each typed `Store` method picks the cheapest script
//! that keeps the contract: PUT for a plain put (STAGE when the record is
//! large, so the value never enters Lua), BATCH for a BatchPut of plain
//! puts, DELETE for a conditional delete, RETIME for expiry changes, and the
//! general APPLY for everything else — conditions, keep_ttl, increments,
//! request ids, tombstones and Transact. A fast script that meets what only
//! APPLY handles answers SLOW (or aborts on a key of another type before
//! writing) and the op goes to APPLY.

pub mod admin_scripts;
mod conn;
mod feed;
pub mod record;
pub mod scripts;
pub mod slot;

use std::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use redis::{RedisError, RedisResult, Value as RValue};

use crate::{
    error::{Error, Exhaustion, FailureReason, OpFailure, Result},
    store::{
        Condition, DeleteOp, Entry, Expiry, Idempotency, ImportEntry, ImportPolicy, Imported,
        IncrementOp, Incremented, Keyspace, ListPage, Namespace, OpResult, PageLimits, PutOp,
        RequestId, ScanStep, Store, WriteOp, codec, hex16, transaction_fingerprint,
    },
};

pub use conn::{ConnSettings, Connections, Link, Topology, truncate_at_char_boundary};

/// Upper bound of SCAN calls behind one List page, so that a sparse prefix in
/// a large keyspace returns a shorter page (with a token) instead of holding
/// the request.
const MAX_SCANS_PER_PAGE: usize = 32;

/// Upper bound of the health loop's PING.
const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Records from this size up are staged under a key of their own and moved
/// into place (STAGE) instead of passing through Lua, which hashes every
/// byte it is given: measured crossover 1–1.5 KB (bench/lua-lab).
const STAGE_MIN_BYTES: usize = 2048;

/// How long a stage key outlives a lost STAGE call.
const STAGE_GUARD_MS: &str = "60000";

/// Backoff between retries of a command that Redis refused without running
/// it (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY, refused connection) on a
/// cluster or Sentinel set, doubled up to `RETRY_BACKOFF_MAX`, within the
/// command timeout.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// How a Redis store behaves, beyond its connections.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bound of one Redis call (the request's deadline applies when shorter).
    pub command_timeout: Duration,
    /// How long and how many request ids a key remembers.
    pub idempotency: Idempotency,
    /// The change feed's sizes; `None`: Watch is off and writes append
    /// nothing.
    pub feed: Option<crate::store::watch::FeedConfig>,
    /// Replica acknowledgement of writes (--redis-wait-replicas); `None`:
    /// a write is acknowledged once the master applied it.
    pub wait: Option<WaitPolicy>,
}

/// Writes wait for this many replicas (`WAIT`) before they are
/// acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    pub replicas: u32,
    pub timeout: Duration,
}

/// The Redis-backed store.
pub struct RedisStore {
    conns: Connections,
    /// Connections checked out one write at a time when writes WAIT for
    /// replicas: WAIT blocks its connection, and on the shared multiplexed
    /// ones it would stall every request queued behind it.
    wait_conns: Option<Connections>,
    options: StoreOptions,
    clocks: record::Clocks,
    /// Whether the current streak of failed clock readings was logged.
    clock_warned: AtomicBool,
    keyspace: Keyspace,
    /// The shared version floor (`record::Clocks`).
    floor_key: String,
    /// Makes stage keys unique within this process.
    stage_seq: AtomicU64,
    /// Makes stage keys unique across processes.
    stage_nonce: u64,
    /// The change feed, when Watch is on: writes run the scripts' feed
    /// variants and append their events.
    feed: Option<feed::Feed>,
}

impl RedisStore {
    /// Prepares the store; no connection is made yet (the server starts even
    /// when Redis is down, and the health loop connects).
    pub fn new(
        urls: &[String],
        settings: &ConnSettings,
        keyspace: Keyspace,
        options: StoreOptions,
    ) -> Result<Self> {
        use std::hash::{BuildHasher, Hasher};
        let mut nonce = std::collections::hash_map::RandomState::new().build_hasher();
        nonce.write_u64(record::local_us() as u64);
        let wait_conns = match options.wait {
            Some(_) => Some(Connections::new(
                urls,
                &ConnSettings {
                    // Eight exclusive connections per shared one: writes
                    // that wait hold theirs for a replication round trip.
                    pool_size: settings.pool_size * 8,
                    ..settings.clone()
                },
            )?),
            None => None,
        };
        let conns = Connections::new(urls, settings)?;
        if options.feed.is_some() && !matches!(conns.topology(), Topology::Standalone) {
            // The feed appends to one stream per tenant from the write's own
            // script, which a Cluster refuses (another slot) and a Sentinel
            // failover would lose; the design for both is in
            // docs/design/watch.md.
            return Err(Error::invalid(
                "--watch works with --redis-mode standalone (and the memory backend) only, for now",
            ));
        }
        let feed = options
            .feed
            .map(|f| feed::Feed::start(&conns, keyspace.clone(), f, options.command_timeout))
            .transpose()?;
        Ok(Self {
            conns,
            wait_conns,
            feed,
            options,
            clocks: record::Clocks::default(),
            clock_warned: AtomicBool::new(false),
            floor_key: keyspace.internal("version-floor"),
            keyspace,
            stage_seq: AtomicU64::new(0),
            stage_nonce: nonce.finish(),
        })
    }

    fn feed_on(&self) -> bool {
        self.feed.is_some()
    }

    /// With the feed on, appends what the scripts' feed variants take last:
    /// the tenant's feed keys and the history length.
    fn feed_args(&self, inv: &mut redis::ScriptInvocation<'static>, ns: &Namespace) {
        if let Some(feed) = &self.feed {
            let keys = self.keyspace.feed_keys(ns);
            inv.key(keys.stream)
                .key(keys.expiries)
                .key(keys.versions)
                .arg(feed.shared.hub.config().history);
        }
    }

    /// The clocks this store stamps writes with (tests observe them).
    pub fn clocks(&self) -> &record::Clocks {
        &self.clocks
    }

    /// The health PING must be short: a PING that queues behind a slow Redis
    /// for the full command timeout would report a dead backend too late.
    fn health_timeout(&self) -> Duration {
        self.options.command_timeout.min(HEALTH_PING_TIMEOUT)
    }

    pub fn connections(&self) -> &Connections {
        &self.conns
    }

    /// Runs one Redis read (or a write that needs no replica wait) under
    /// the command timeout.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_at(None, f).await
    }

    /// Runs one Redis call on a slot's connection under the command timeout,
    /// mapping failures to the crate's errors. `write_slot`: the call
    /// writes a key of this hash slot, and with --redis-wait-replicas it
    /// goes through `call_waited`. On a cluster or Sentinel set, replies
    /// that prove the command did not run are retried within the timeout;
    /// nothing whose outcome is unknown is ever sent twice.
    async fn call_at<T, F, Fut>(&self, write_slot: Option<u16>, f: F) -> Result<T>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if let (Some(slot), Some(wait), Some(conns)) =
            (write_slot, self.options.wait, &self.wait_conns)
        {
            return Box::pin(self.call_waited(conns, slot, wait, &f)).await;
        }
        let retrying = *self.conns.topology() != Topology::Standalone;
        let deadline = tokio::time::Instant::now() + self.options.command_timeout;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let c = match self.conns.get().await {
                Ok(c) => c,
                Err(e) => {
                    if retrying && Self::backoff(deadline, &mut backoff).await {
                        continue;
                    }
                    crate::metrics::redis_error("connection");
                    return Err(e);
                }
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, f(c.conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let dropped = e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_unrecoverable_error()
                        || e.code() == Some("READONLY");
                    if dropped {
                        self.conns.invalidate(&c);
                    }
                    if retrying && not_executed(&e) && Self::backoff(deadline, &mut backoff).await {
                        continue;
                    }
                    return Err(self.record_error(e, dropped));
                }
                Err(_) => {
                    crate::metrics::redis_error("timeout");
                    return Err(self.timeout_error(format!(
                        "redis at {} did not answer within the command timeout",
                        self.conns.addr()
                    )));
                }
            }
        }
    }

    /// Sleeps one backoff step if the deadline leaves room for it and
    /// another attempt; whether to try again.
    async fn backoff(deadline: tokio::time::Instant, backoff: &mut Duration) -> bool {
        let now = tokio::time::Instant::now();
        if now + *backoff * 2 >= deadline {
            return false;
        }
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(RETRY_BACKOFF_MAX);
        true
    }

    /// Maps a failed call's error and counts it.
    fn record_error(&self, e: RedisError, dropped: bool) -> Error {
        let err = self.map_redis_error(e, dropped);
        crate::metrics::redis_error(match &err {
            Error::Unavailable { .. } => "connection",
            Error::DeadlineExceeded { .. } => "timeout",
            Error::ResourceExhausted { .. } => "oom",
            _ => "other",
        });
        err
    }

    /// A write followed by `WAIT replicas timeout` on a connection checked
    /// out for it alone (WAIT must follow the write on the same connection,
    /// and blocks that connection until the replicas answer). Fewer
    /// replicas than asked is UNAVAILABLE: the write was applied on the
    /// master, but a failover may lose it.
    async fn call_waited<T, F, Fut>(
        &self,
        conns: &Connections,
        slot: u16,
        wait: WaitPolicy,
        f: &F,
    ) -> Result<T>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let bound = self.options.command_timeout + wait.timeout;
        let run = async {
            let object = conns.exclusive().await?;
            let link = object.link();
            let value = match f(link.clone()).await {
                Ok(v) => v,
                Err(e) => {
                    let dropped = e.is_io_error() || e.is_connection_dropped();
                    // A connection to a demoted master (READONLY) or to a
                    // node that no longer serves the slot would fail every
                    // write it is lent for: it leaves the pool too.
                    if dropped || not_executed(&e) {
                        object.detach();
                    }
                    return Err(self.record_error(e, dropped));
                }
            };
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(wait.replicas).arg(wait.timeout.as_millis() as u64);
            let acked: RedisResult<i64> = match link {
                Link::Single(mut c) => cmd.query_async(&mut c).await,
                Link::Cluster(mut c) => {
                    use redis::cluster_routing::{
                        Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
                    };
                    c.route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                            slot,
                            SlotAddr::Master,
                        ))),
                    )
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(RedisError::from))
                }
            };
            match acked {
                Ok(n) if n >= i64::from(wait.replicas) => Ok(value),
                Ok(n) => Err(self.conns.unavailable(format!(
                    "a write was applied on the master but only {n} of {} replicas                      acknowledged it within {:?} (--redis-wait-replicas); a failover may lose it",
                    wait.replicas, wait.timeout
                ))),
                Err(e) => Err(self.record_error(e, true)),
            }
        };
        match tokio::time::timeout(bound, run).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error(format!(
                "redis at {} did not answer a write and its WAIT within {bound:?}",
                self.conns.addr()
            ))),
        }
    }

    fn timeout_error(&self, detail: String) -> Error {
        Error::DeadlineExceeded {
            message: format!(
                "the state backend did not answer within {:?} (--redis-command-timeout); \
                 for a write the outcome is unknown",
                self.options.command_timeout
            ),
            detail: Some(detail),
        }
    }

    /// Maps a Redis error by what the client should do; the address and the
    /// reply text go into the log detail only.
    fn map_redis_error(&self, e: RedisError, dropped: bool) -> Error {
        let cause = conn::describe_redis_error(&e);
        if dropped {
            return self.conns.unavailable(cause);
        }
        if e.is_timeout() {
            return self.timeout_error(format!("redis at {}: {cause}", self.conns.addr()));
        }
        match e.code() {
            Some("OOM") => Error::ResourceExhausted {
                reason: Exhaustion::BackendOutOfMemory,
                message: "the Redis backend is out of memory (maxmemory reached); nothing was \
                          written. Delete keys or retry later"
                    .into(),
                retry_after: None,
            },
            Some(
                "LOADING" | "BUSY" | "MASTERDOWN" | "READONLY" | "TRYAGAIN" | "CLUSTERDOWN"
                | "MOVED" | "ASK",
            ) => self.conns.unavailable(cause),
            _ => Error::internal(format!(
                "unexpected error from redis at {}: {cause}",
                self.conns.addr()
            )),
        }
    }

    /// Runs a prepared script invocation; `write_slot` as in `call_at`.
    async fn eval(
        &self,
        write_slot: Option<u16>,
        inv: redis::ScriptInvocation<'static>,
    ) -> Result<RValue> {
        let inv = &inv;
        self.call_at(write_slot, move |mut c| async move {
            inv.invoke_async::<RValue>(&mut c).await
        })
        .await
    }

    /// Runs a fast script that writes a key of `slot`; `None` when it
    /// aborted on a key of another Redis type (WRONGTYPE, before writing
    /// anything) or answered SLOW: the op goes to APPLY.
    async fn eval_fast(
        &self,
        slot: u16,
        inv: redis::ScriptInvocation<'static>,
    ) -> Result<Option<RValue>> {
        let inv = &inv;
        let reply = self
            .call_at(Some(slot), move |mut c| async move {
                match inv.invoke_async::<RValue>(&mut c).await {
                    Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        Ok(reply.filter(|r| !is_tag(r, "SLOW")))
    }

    /// The arguments every APPLY call starts with.
    fn apply_invocation(
        &self,
        atomic: bool,
        tx: Option<(String, u64)>,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = scripts::APPLY.get(self.feed_on()).prepare_invoke();
        let now = self.clocks.next_version();
        let idem = self.options.idempotency;
        let cutoff = now.saturating_sub(idem.window.as_micros() as u64);
        let tomb_expiry = self
            .clocks
            .expires_at(idem.window.max(Duration::from_millis(1)));
        let (tx_id, tx_fp) = tx.map_or((String::new(), String::new()), |(id, fp)| (id, hex16(fp)));
        inv.arg(if atomic { "atomic" } else { "each" })
            .arg(record::version_digits(now))
            .arg(record::version_digits(cutoff))
            .arg(idem.max_ids.max(1))
            .arg(tomb_expiry)
            .arg(tx_id)
            .arg(tx_fp);
        inv
    }

    /// APPLY over `ops` (`atomic` for Transact, else each op on its own).
    async fn apply(
        &self,
        ns: &Namespace,
        ops: &[WriteOp],
        atomic: bool,
        tx: Option<(String, u64)>,
    ) -> Result<Vec<RValue>> {
        let mut inv = self.apply_invocation(atomic, tx);
        for op in ops {
            inv.key(ns.storage_key(op.key()));
            let (kind, payload, expiry, condition, id) = match op {
                WriteOp::Put(p) => {
                    let expiry = match p.expiry {
                        Expiry::Never => String::new(),
                        Expiry::After(t) => self.clocks.expires_at(t).to_string(),
                        Expiry::Keep => "K".into(),
                    };
                    let id = p.request_id.as_ref().map(|id| (id, p.fingerprint()));
                    ("P", codec::encode(&p.value), expiry, p.condition, id)
                }
                WriteOp::Delete(d) => {
                    let id = d.request_id.as_ref().map(|id| (id, d.fingerprint()));
                    ("D", Vec::new(), String::new(), d.condition, id)
                }
                WriteOp::Increment(i) => {
                    let expiry = i
                        .ttl
                        .map(|t| self.clocks.expires_at(t).to_string())
                        .unwrap_or_default();
                    let id = i.request_id.as_ref().map(|id| (id, i.fingerprint()));
                    let delta = itoa::Buffer::new().format(i.delta).as_bytes().to_vec();
                    ("I", delta, expiry, Condition::None, id)
                }
            };
            let (digest, fp) = id.map_or((String::new(), String::new()), |(id, fp)| {
                (id.digest(), hex16(fp.finish()))
            });
            inv.arg(kind)
                .arg(payload)
                .arg(expiry)
                .arg(condition_arg(condition))
                .arg(digest)
                .arg(fp);
        }
        self.feed_args(&mut inv, ns);
        let slot = ops.first().map(|op| slot_of(&ns.storage_key(op.key())));
        let reply = self.eval(Some(slot.unwrap_or(0)), inv).await?;
        let RValue::Array(mut parts) = reply else {
            return Err(unexpected("APPLY", &reply));
        };
        match parts.first().and_then(as_str) {
            Some("OK") if parts.len() == ops.len() + 1 => {
                parts.remove(0);
                Ok(parts)
            }
            Some("ABORT") if parts.len() == 5 => {
                let index = match &parts[1] {
                    RValue::Int(i) if *i >= 1 && (*i as usize) <= ops.len() => *i as usize - 1,
                    other => return Err(unexpected("APPLY op index", other)),
                };
                let reason = as_str(&parts[2]).unwrap_or("");
                Err(failure(&ops[index], reason, &parts[3], &parts[4])?
                    .at(index)
                    .into())
            }
            _ => Err(unexpected("APPLY", &RValue::Array(parts))),
        }
    }

    /// One op through APPLY in `each` mode, its failure as an error.
    async fn apply_one(&self, ns: &Namespace, op: WriteOp) -> Result<OpResult> {
        let parts = self
            .apply(ns, std::slice::from_ref(&op), false, None)
            .await?;
        Ok(parse_op(&op, &parts[0])??)
    }

    /// A put of a record the service builds (no condition, keep_ttl or
    /// request id): PUT, or STAGE for a large record. `None`: the key needs
    /// APPLY.
    async fn put_record(&self, ns: &Namespace, op: &PutOp) -> Result<Option<u64>> {
        let now = self.clocks.next_version();
        let expires_at = match op.expiry {
            Expiry::After(t) => Some(self.clocks.expires_at(t)),
            _ => None,
        };
        let record = record::encode(now, expires_at, b"", &codec::encode(&op.value));
        let key = ns.storage_key(&op.key);
        let reply = if record.len() >= STAGE_MIN_BYTES {
            self.stage(ns, &key, record, now, expires_at).await?
        } else {
            let mut inv = scripts::PUT.get(self.feed_on()).prepare_invoke();
            inv.key(key.as_str())
                .arg(record)
                .arg(record::version_digits(now));
            if let Some(at) = expires_at {
                inv.arg(at);
            }
            self.feed_args(&mut inv, ns);
            self.eval_fast(slot_of(&key), inv).await?
        };
        let Some(reply) = reply else { return Ok(None) };
        match parse_op(&WriteOp::Put(op.clone()), &reply)?? {
            OpResult::Put { version } => Ok(Some(version)),
            other => Err(Error::internal(format!("PUT answered {other:?}"))),
        }
    }

    /// Writes a large record under a private stage key in the key's slot and
    /// moves it over the key with STAGE, in one round trip: the value never
    /// passes through Lua.
    async fn stage(
        &self,
        ns: &Namespace,
        key: &str,
        record: Vec<u8>,
        now: u64,
        expires_at: Option<u64>,
    ) -> Result<Option<RValue>> {
        let tag = slot::tag_for_slot(slot::slot_of(key.as_bytes()));
        let stage = self.keyspace.internal(&format!(
            "stage:{{{tag}}}:{:016x}{:x}",
            self.stage_nonce,
            self.stage_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let expiry = expires_at.map(|at| at.to_string()).unwrap_or_default();
        let mut inv = scripts::STAGE.get(self.feed_on()).prepare_invoke();
        inv.key(key)
            .key(stage.as_str())
            .arg(record::version_digits(now))
            .arg(&expiry);
        self.feed_args(&mut inv, ns);
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("SET")
            .arg(&stage)
            .arg(record)
            .arg("PX")
            .arg(STAGE_GUARD_MS)
            .invoke_script(&inv);
        let pipe = &pipe;
        let replies: Vec<RValue> = self
            .call_at(Some(slot_of(key)), move |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await?;
        // The SET failing (out of memory) means nothing was staged: its
        // error is the answer (the script then found no stage and wrote
        // nothing).
        if let Some(RValue::ServerError(e)) = replies.first() {
            return Err(self.map_redis_error(e.clone().into(), false));
        }
        let reply = match replies.get(1) {
            Some(RValue::ServerError(e)) if e.code() == "NOSCRIPT" => {
                // The script cache was flushed (a restart or failover): the
                // stage is in place; load the script and move it.
                self.eval_fast(slot_of(key), inv).await?
            }
            Some(RValue::ServerError(e)) => {
                let err: RedisError = e.clone().into();
                if err.code() == Some("WRONGTYPE") {
                    None
                } else {
                    return Err(self.map_redis_error(err, false));
                }
            }
            Some(other) => Some(other.clone()),
            None => return Err(Error::internal("no reply to STAGE")),
        };
        if reply.as_ref().is_some_and(|r| is_tag(r, "LOST")) {
            return Err(Error::internal(
                "a stage key vanished before STAGE ran (nothing was written)",
            ));
        }
        Ok(reply.filter(|r| !is_tag(r, "SLOW")))
    }

    /// The indices of `storage_keys` grouped by hash slot, each with its
    /// slot, in order of first appearance. Outside a cluster every key is in
    /// one group (one round trip); on a cluster a multi-key command must stay
    /// in one slot.
    fn slot_groups(&self, storage_keys: &[String]) -> Vec<(u16, Vec<usize>)> {
        if *self.conns.topology() != Topology::Cluster {
            let slot = storage_keys.first().map_or(0, |k| slot_of(k));
            return vec![(slot, (0..storage_keys.len()).collect())];
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (i, k) in storage_keys.iter().enumerate() {
            let slot = slot_of(k);
            let g = *index.entry(slot).or_insert_with(|| {
                groups.push((slot, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        groups
    }

    /// One MGET for every key (atomic, so a consistent snapshot; on a
    /// cluster, one MGET per slot, each a snapshot of its slot); fails as a
    /// whole if any key holds foreign data.
    async fn read_many(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        self.read_each(ns, keys).await?.into_iter().collect()
    }

    /// Like `read_many`, with a result per key. MGET answers nil for a key
    /// of another Redis type (a tombstone, or foreign data), so such a key
    /// reads as absent here (a single Get reports foreign data).
    async fn read_each(
        &self,
        ns: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Result<Option<Entry>>>> {
        let storage_keys: Vec<String> = keys.iter().map(|k| ns.storage_key(k)).collect();
        // One MGET per slot group, sent concurrently (one group, so one
        // round trip, except on a cluster).
        let groups = self.slot_groups(&storage_keys);
        let answers = futures::future::try_join_all(groups.iter().map(|(_, members)| {
            let mut cmd = redis::cmd("MGET");
            for &i in members {
                cmd.arg(&storage_keys[i]);
            }
            async move {
                let cmd = &cmd;
                let replies: Vec<RValue> = self
                    .call(move |mut c| async move { cmd.query_async(&mut c).await })
                    .await?;
                if replies.len() != members.len() {
                    return Err(Error::internal(format!(
                        "expected {} replies to MGET from redis, got {}",
                        members.len(),
                        replies.len()
                    )));
                }
                Ok(replies)
            }
        }))
        .await?;
        let mut replies = vec![RValue::Nil; keys.len()];
        for ((_, members), answer) in groups.iter().zip(answers) {
            for (&i, reply) in members.iter().zip(answer) {
                replies[i] = reply;
            }
        }
        Ok(keys
            .iter()
            .zip(&replies)
            .map(|(k, raw)| match raw {
                RValue::Nil => Ok(None),
                RValue::BulkString(b) => self.parse_entry(k, b).map(Some),
                other => Err(unexpected("MGET", other)),
            })
            .collect())
    }

    /// One GET; a key of another Redis type is foreign data, unless it is a
    /// deleted key's tombstone (then it is absent).
    async fn read_one(&self, ns: &Namespace, key: &str) -> Result<Option<Entry>> {
        let sk = ns.storage_key(key);
        let sk = &sk;
        let reply = self
            .call(move |mut c| async move {
                match redis::cmd("GET")
                    .arg(sk)
                    .query_async::<RValue>(&mut c)
                    .await
                {
                    Err(e) if e.code() == Some("WRONGTYPE") => {
                        let tomb: bool = redis::cmd("HEXISTS")
                            .arg(sk)
                            .arg("t")
                            .query_async(&mut c)
                            .await
                            .unwrap_or(false);
                        Ok(if tomb { Some(RValue::Nil) } else { None })
                    }
                    other => other.map(Some),
                }
            })
            .await?;
        match reply {
            None => Err(foreign(key, "the key is not a string")),
            Some(RValue::Nil) => Ok(None),
            Some(RValue::BulkString(b)) => self.parse_entry(key, &b).map(Some),
            Some(other) => Err(unexpected("GET", &other)),
        }
    }

    /// Decodes a stored string into an entry; the remaining TTL is computed
    /// from the header's absolute expiry on Redis's clock.
    fn parse_entry(&self, key: &str, raw: &[u8]) -> Result<Entry> {
        let r = record::parse(raw).map_err(|e| foreign(key, &e))?;
        let value = codec::decode(r.payload).map_err(|e| foreign(key, &e))?;
        Ok(Entry {
            key: key.to_string(),
            value,
            version: r.version,
            ttl: r.expires_at_ms.map(|at| self.clocks.remaining(at)),
        })
    }

    /// Runs RETIME on one key: the new absolute expiry (`None`: persist);
    /// with `want_value`, the value afterwards. `None`: the key is absent.
    async fn retime(
        &self,
        ns: &Namespace,
        key: &str,
        expires_at: Option<u64>,
        want_value: bool,
    ) -> Result<Option<Vec<u8>>> {
        let mut inv = scripts::RETIME.get(self.feed_on()).prepare_invoke();
        inv.key(ns.storage_key(key))
            .arg(record::expiry_digits(expires_at))
            .arg(if want_value { "v" } else { "" })
            .arg(expires_at.unwrap_or(0));
        self.feed_args(&mut inv, ns);
        let reply = self.eval(Some(slot_of(&ns.storage_key(key))), inv).await?;
        let RValue::Array(parts) = &reply else {
            return Err(unexpected("RETIME", &reply));
        };
        match (parts.first().and_then(as_str), parts.get(1)) {
            (Some("NONE"), _) => Ok(None),
            (Some("BAD"), why) => Err(foreign(key, why.and_then(as_str).unwrap_or(""))),
            (Some("OK"), Some(RValue::BulkString(raw))) => Ok(Some(raw.clone())),
            (Some("OK"), None) => Ok(Some(Vec::new())),
            _ => Err(unexpected("RETIME", &reply)),
        }
    }

    /// Measures the offset between Redis's clock and this host's, and
    /// publishes and reads back the shared version floor (`record::Clocks`).
    async fn sync_clocks(&self) -> Result<()> {
        let before = record::local_us();
        let (secs, micros): (i64, i64) = self
            .call(|mut c| async move { redis::cmd("TIME").query_async(&mut c).await })
            .await?;
        let after = record::local_us();
        self.clocks
            .observe_redis(secs * 1_000_000 + micros, before, after);
        let mut inv = scripts::FLOOR.prepare_invoke();
        inv.key(self.floor_key.as_str())
            .arg(record::version_digits(self.clocks.floor_to_publish()));
        let floor = self.eval(None, inv).await?;
        let floor = as_u64(&floor).ok_or_else(|| unexpected("FLOOR", &floor))?;
        self.clocks.observe_floor(floor);
        Ok(())
    }

    /// The plain puts of a BatchPut through BATCH: every item is
    /// unconditional, without keep_ttl or request id, below the stage size,
    /// and no key repeats. `None` for the whole batch when a key of another
    /// type aborted it (nothing was written); per item, `None` when the item
    /// needs APPLY.
    async fn batch_records(
        &self,
        ns: &Namespace,
        items: &[PutOp],
    ) -> Result<Option<Vec<Option<Result<u64, OpFailure>>>>> {
        let now = self.clocks.next_version();
        let mut inv = scripts::BATCH.get(self.feed_on()).prepare_invoke();
        inv.arg(record::version_digits(now));
        for op in items {
            let expires_at = match op.expiry {
                Expiry::After(t) => Some(self.clocks.expires_at(t)),
                _ => None,
            };
            inv.key(ns.storage_key(&op.key))
                .arg(record::encode(
                    now,
                    expires_at,
                    b"",
                    &codec::encode(&op.value),
                ))
                .arg(expires_at.map(|at| at.to_string()).unwrap_or_default());
        }
        self.feed_args(&mut inv, ns);
        let slot = items
            .first()
            .map_or(0, |op| slot_of(&ns.storage_key(&op.key)));
        let inv = &inv;
        let Some(reply) = self
            .call_at(Some(slot), move |mut c| async move {
                match inv.invoke_async::<RValue>(&mut c).await {
                    Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?
        else {
            return Ok(None);
        };
        let RValue::Array(parts) = &reply else {
            return Err(unexpected("BATCH", &reply));
        };
        let mut results: Vec<Option<Result<u64, OpFailure>>> =
            (0..items.len()).map(|_| Some(Ok(now))).collect();
        for pair in parts.chunks(2) {
            let [RValue::Int(i), answer] = pair else {
                return Err(unexpected("BATCH", &reply));
            };
            let i = usize::try_from(*i)
                .ok()
                .filter(|i| (1..=items.len()).contains(i))
                .ok_or_else(|| unexpected("BATCH item index", &pair[0]))?
                - 1;
            results[i] = if is_tag(answer, "SLOW") {
                None
            } else {
                match parse_op(&WriteOp::Put(items[i].clone()), answer)? {
                    Ok(OpResult::Put { version }) => Some(Ok(version)),
                    Ok(other) => {
                        return Err(Error::internal(format!(
                            "BATCH answered a put with {other:?}"
                        )));
                    }
                    Err(f) => Some(Err(f.at(i))),
                }
            };
        }
        Ok(Some(results))
    }

    /// BatchPut items through APPLY in `each` mode.
    async fn batch_apply(
        &self,
        ns: &Namespace,
        items: &[(usize, PutOp)],
    ) -> Result<Vec<Result<u64, OpFailure>>> {
        let ops: Vec<WriteOp> = items.iter().map(|(_, p)| WriteOp::Put(p.clone())).collect();
        let parts = self.apply(ns, &ops, false, None).await?;
        ops.iter()
            .zip(&parts)
            .zip(items)
            .map(|((op, part), (i, _))| {
                Ok(match parse_op(op, part)? {
                    Ok(OpResult::Put { version }) => Ok(version),
                    Ok(other) => {
                        return Err(Error::internal(format!(
                            "APPLY answered a batch put with {other:?}"
                        )));
                    }
                    Err(f) => Err(f.at(*i)),
                })
            })
            .collect()
    }
}

/// Whether an error proves that Redis did not run the command, so that
/// sending it again cannot apply a write twice: a redirection or refusal
/// (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY, MASTERDOWN, LOADING) or a
/// connection that was never made. A connection dropped after sending is
/// not one of them: the outcome is unknown and the client decides (with a
/// request_id a retry is safe).
fn not_executed(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "MASTERDOWN" | "LOADING")
    ) || e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// Admin scans and imports run on one connection (one node) and IMPORT
/// writes many keys in one script, which a Cluster refuses across slots.
const ADMIN_ON_CLUSTER: &str = "Export, Import, Purge and Stats are not available with \
     --redis-mode cluster yet (they work on standalone and Sentinel Redis and on the memory \
     backend)";

/// The hash slot of a storage key.
fn slot_of(key: &str) -> u16 {
    slot::slot_of(key.as_bytes())
}

impl RedisStore {
    /// One SCAN call over the storage keys under `prefix` (of Redis type
    /// `kind` when given), at most `count` keys of work: the next cursor
    /// (`None`: complete) and the keys found that lie under the prefix.
    async fn scan_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        count: usize,
        kind: Option<&'static str>,
    ) -> Result<(Option<u64>, Vec<Vec<u8>>)> {
        let scan = match cursor {
            None => 0,
            Some(c) => u64::from_le_bytes(
                c.try_into()
                    .map_err(|_| Error::invalid("the scan cursor is not valid"))?,
            ),
        };
        let pattern = &ns.scan_pattern(prefix);
        let (next, keys): (u64, Vec<Vec<u8>>) = self
            .call(|mut conn| async move {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(scan)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count.max(1));
                if let Some(kind) = kind {
                    cmd.arg("TYPE").arg(kind);
                }
                cmd.query_async(&mut conn).await
            })
            .await?;
        let full_prefix = ns.storage_key(prefix);
        let keys = keys
            .into_iter()
            .filter(|k| k.starts_with(full_prefix.as_bytes()))
            .collect();
        Ok(((next != 0).then_some(next), keys))
    }
}

/// Whether a reply is the status `{tag}` a script answers with.
fn is_tag(v: &RValue, tag: &str) -> bool {
    match v {
        RValue::Array(parts) => parts.len() == 1 && as_str(&parts[0]) == Some(tag),
        other => as_str(other) == Some(tag),
    }
}

/// Whether a put can be written from a record the service builds.
fn is_plain(op: &PutOp) -> bool {
    op.condition == Condition::None && op.expiry != Expiry::Keep && op.request_id.is_none()
}

/// The condition argument of the scripts.
fn condition_arg(c: Condition) -> String {
    match c {
        Condition::None => String::new(),
        Condition::IfAbsent => "A".into(),
        Condition::IfExists => "E".into(),
        Condition::IfVersion(v) => format!("V{}", record::version_digits(v)),
    }
}

/// The error for a key holding data state-service did not write.
fn foreign(key: &str, detail: &str) -> Error {
    OpFailure::new(
        key,
        FailureReason::InvalidStoredValue {
            detail: detail.to_string(),
        },
        None,
    )
    .into()
}

/// An unexpected reply, described by its shape only: replies can carry
/// stored values, which never go to a log.
fn unexpected(what: &str, v: &RValue) -> Error {
    Error::internal(format!("unexpected {what} reply from redis: {}", shape(v)))
}

/// The shape of a reply without its content: `Array[BulkString(32 bytes), Int]`.
fn shape(v: &RValue) -> String {
    match v {
        RValue::Nil => "Nil".into(),
        RValue::Int(_) => "Int".into(),
        RValue::BulkString(b) => format!("BulkString({} bytes)", b.len()),
        RValue::SimpleString(s) => format!("SimpleString({} bytes)", s.len()),
        RValue::Okay => "Okay".into(),
        RValue::Array(items) => {
            let inner: Vec<String> = items.iter().take(8).map(shape).collect();
            let more = if items.len() > 8 { ", …" } else { "" };
            format!("Array[{}{more}]", inner.join(", "))
        }
        RValue::ServerError(e) => format!("ServerError({})", e.code()),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}

fn as_bytes(v: &RValue) -> Option<&[u8]> {
    match v {
        RValue::BulkString(b) => Some(b),
        RValue::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_str(v: &RValue) -> Option<&str> {
    as_bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

fn as_u64(v: &RValue) -> Option<u64> {
    match v {
        RValue::Int(i) => u64::try_from(*i).ok(),
        other => as_str(other)?.parse().ok(),
    }
}

/// Builds the failure of `op` from a script's reason, version and detail.
fn failure(op: &WriteOp, reason: &str, ver: &RValue, detail: &RValue) -> Result<OpFailure> {
    let detail_bytes = as_bytes(detail).unwrap_or_default();
    let condition = match op {
        WriteOp::Put(p) => p.condition,
        WriteOp::Delete(d) => d.condition,
        WriteOp::Increment(_) => Condition::None,
    };
    let reason = match reason {
        "VERSION_MISMATCH" => FailureReason::VersionMismatch {
            expected: match condition {
                Condition::IfVersion(v) => v,
                _ => 0,
            },
        },
        "ALREADY_EXISTS" => FailureReason::AlreadyExists,
        "NOT_FOUND" => FailureReason::NotFound,
        "NOT_AN_INTEGER" => FailureReason::NotAnInteger {
            stored_type: codec::type_of_encoded(detail_bytes),
        },
        "INCREMENT_OVERFLOW" => FailureReason::IncrementOverflow {
            delta: match op {
                WriteOp::Increment(i) => i.delta,
                _ => 0,
            },
        },
        "INVALID_STORED_VALUE" => FailureReason::InvalidStoredValue {
            detail: String::from_utf8_lossy(detail_bytes).into_owned(),
        },
        "REQUEST_ID_REUSED" => FailureReason::RequestIdReused,
        other => {
            return Err(Error::internal(format!(
                "unknown failure {other:?} from a script"
            )));
        }
    };
    Ok(OpFailure::new(op.key(), reason, as_u64(ver)))
}

/// Parses one per-op result of APPLY (or PUT / BATCH / DELETE) for `op`.
fn parse_op(op: &WriteOp, v: &RValue) -> Result<Result<OpResult, OpFailure>> {
    let bad = || unexpected("script", v);
    let parts = match v {
        // A put answers with its version alone.
        RValue::BulkString(_) if matches!(op, WriteOp::Put(_)) => {
            let version = as_u64(v).ok_or_else(bad)?;
            return Ok(Ok(OpResult::Put { version }));
        }
        RValue::Array(parts) => parts,
        _ => return Err(bad()),
    };
    let get = |i: usize| parts.get(i).unwrap_or(&RValue::Nil);
    Ok(Ok(match (op, parts.first().and_then(as_str)) {
        (WriteOp::Delete(_), Some("D")) => OpResult::Delete {
            deleted: as_str(get(1)) == Some("1"),
        },
        (WriteOp::Increment(_), Some("I")) => OpResult::Increment(Incremented {
            value: as_str(get(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?,
            version: as_u64(get(2)).ok_or_else(bad)?,
        }),
        (_, Some("F")) => {
            let reason = as_str(get(1)).ok_or_else(bad)?;
            return Ok(Err(failure(op, reason, get(2), get(3))?));
        }
        _ => return Err(bad()),
    }))
}

impl Store for RedisStore {
    async fn get(
        &self,
        ns: &Namespace,
        key: &str,
        refresh_ttl: Option<Duration>,
    ) -> Result<Option<Entry>> {
        let Some(ttl) = refresh_ttl else {
            return self.read_one(ns, key).await;
        };
        let at = self.clocks.expires_at(ttl);
        match self.retime(ns, key, Some(at), true).await? {
            None => Ok(None),
            Some(raw) => self.parse_entry(key, &raw).map(Some),
        }
    }

    async fn put(&self, ns: &Namespace, op: PutOp) -> Result<u64> {
        if is_plain(&op)
            && let Some(version) = self.put_record(ns, &op).await?
        {
            return Ok(version);
        }
        match self.apply_one(ns, WriteOp::Put(op)).await? {
            OpResult::Put { version } => Ok(version),
            other => Err(Error::internal(format!(
                "APPLY answered a put with {other:?}"
            ))),
        }
    }

    async fn delete(&self, ns: &Namespace, op: DeleteOp) -> Result<bool> {
        if op.request_id.is_none() {
            if op.condition == Condition::None && !self.feed_on() {
                // A plain DEL: no script needed. It also removes a tombstone
                // (its request ids end with it, as documented).
                let sk = ns.storage_key(&op.key);
                let sk = &sk;
                let n: i64 = self
                    .call_at(Some(slot_of(sk)), move |mut c| async move {
                        redis::cmd("DEL").arg(sk).query_async(&mut c).await
                    })
                    .await?;
                return Ok(n > 0);
            }
            // With the feed on, an unconditional delete must report the
            // version it ends, which a plain DEL cannot: it runs DELETE as
            // "if it exists" (allow-oom like DEL: deleting is how memory is
            // freed).
            let unconditional = op.condition == Condition::None;
            let condition = if unconditional {
                Condition::IfExists
            } else {
                op.condition
            };
            let sk = ns.storage_key(&op.key);
            let mut inv = scripts::DELETE.get(self.feed_on()).prepare_invoke();
            inv.key(sk.as_str()).arg(condition_arg(condition));
            self.feed_args(&mut inv, ns);
            if let Some(reply) = self.eval_fast(slot_of(&sk), inv).await? {
                match parse_op(&WriteOp::Delete(op.clone()), &reply)? {
                    Ok(OpResult::Delete { deleted }) => return Ok(deleted),
                    Ok(other) => return Err(Error::internal(format!("DELETE answered {other:?}"))),
                    Err(f) if unconditional && f.reason == FailureReason::NotFound => {
                        return Ok(false);
                    }
                    // Foreign data: APPLY deletes it, as DEL would.
                    Err(f)
                        if unconditional
                            && matches!(f.reason, FailureReason::InvalidStoredValue { .. }) => {}
                    Err(f) => return Err(f.into()),
                }
            }
        }
        match self.apply_one(ns, WriteOp::Delete(op)).await? {
            OpResult::Delete { deleted } => Ok(deleted),
            other => Err(Error::internal(format!(
                "APPLY answered a delete with {other:?}"
            ))),
        }
    }

    async fn increment(&self, ns: &Namespace, op: IncrementOp) -> Result<Incremented> {
        match self.apply_one(ns, WriteOp::Increment(op)).await? {
            OpResult::Increment(r) => Ok(r),
            other => Err(Error::internal(format!(
                "APPLY answered an increment with {other:?}"
            ))),
        }
    }

    async fn expire(&self, ns: &Namespace, key: &str, ttl: Duration) -> Result<bool> {
        let at = self.clocks.expires_at(ttl);
        Ok(self.retime(ns, key, Some(at), false).await?.is_some())
    }

    async fn persist(&self, ns: &Namespace, key: &str) -> Result<bool> {
        Ok(self.retime(ns, key, None, false).await?.is_some())
    }

    async fn batch_get(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        self.read_many(ns, keys).await
    }

    async fn batch_put(
        &self,
        ns: &Namespace,
        items: Vec<PutOp>,
    ) -> Result<Vec<Result<u64, OpFailure>>> {
        let storage_keys: Vec<String> = items.iter().map(|op| ns.storage_key(&op.key)).collect();
        let groups = self.slot_groups(&storage_keys);
        if groups.len() == 1 {
            return self.batch_put_group(ns, items).await;
        }
        // A cluster: one BATCH (or APPLY) per slot, sent concurrently; an
        // I/O error in any group fails the whole call (no partial answer is
        // claimed, though other groups may have been written).
        let answers = futures::future::try_join_all(groups.iter().map(|(_, members)| {
            let sub: Vec<PutOp> = members.iter().map(|&i| items[i].clone()).collect();
            self.batch_put_group(ns, sub)
        }))
        .await?;
        let mut results: Vec<Option<Result<u64, OpFailure>>> = vec![None; items.len()];
        for ((_, members), answer) in groups.iter().zip(answers) {
            for (&i, r) in members.iter().zip(answer) {
                results[i] = Some(r.map_err(|f| f.at(i)));
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::internal("a batch item got no answer")))
            .collect()
    }

    async fn batch_delete(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<bool>> {
        if self.feed_on() {
            // Each delete reports the version it ends: one DELETE script per
            // key, sent together (pipelined on the connection, so still
            // about one round trip).
            return futures::future::try_join_all(keys.iter().map(|k| {
                self.delete(
                    ns,
                    DeleteOp {
                        key: k.clone(),
                        condition: Condition::None,
                        request_id: None,
                    },
                )
            }))
            .await;
        }
        let storage_keys: Vec<String> = keys.iter().map(|k| ns.storage_key(k)).collect();
        let groups = self.slot_groups(&storage_keys);
        let answers = futures::future::try_join_all(groups.iter().map(|(slot, members)| {
            let mut pipe = redis::pipe();
            for &i in members {
                pipe.cmd("DEL").arg(&storage_keys[i]);
            }
            async move {
                let pipe = &pipe;
                self.call_at(Some(*slot), move |mut c| async move {
                    pipe.query_async::<Vec<i64>>(&mut c).await
                })
                .await
            }
        }))
        .await?;
        let mut existed = vec![false; keys.len()];
        for ((_, members), counts) in groups.iter().zip(answers) {
            if counts.len() != members.len() {
                return Err(Error::internal(
                    "DEL pipeline answered a wrong number of replies",
                ));
            }
            for (&i, n) in members.iter().zip(counts) {
                existed[i] = n > 0;
            }
        }
        Ok(existed)
    }

    async fn transact(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
        request_id: Option<RequestId>,
    ) -> Result<Vec<OpResult>> {
        if *self.conns.topology() == Topology::Cluster
            && let Some(first) = ops.first()
        {
            let slot = slot_of(&ns.storage_key(first.key()));
            if let Some(op) = ops
                .iter()
                .find(|op| slot_of(&ns.storage_key(op.key())) != slot)
            {
                return Err(OpFailure::new(op.key(), FailureReason::CrossSlot, None).into());
            }
        }
        self.transact_in_slot(ns, ops, request_id).await
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        limits: PageLimits,
        cursor: Option<&[u8]>,
        include_values: bool,
    ) -> Result<ListPage> {
        self.list_page(ns, prefix, limits, cursor, include_values)
            .await
    }

    async fn watch(
        &self,
        ns: &Namespace,
        prefix: &str,
        from: Option<crate::store::watch::Cursor>,
    ) -> Result<crate::store::watch::Subscription> {
        match &self.feed {
            Some(feed) => feed.shared.open(ns, prefix, from).await,
            None => Err(Error::WatchDisabled),
        }
    }

    async fn import(
        &self,
        ns: &Namespace,
        entries: Vec<ImportEntry>,
        policy: ImportPolicy,
    ) -> Result<Vec<Result<Imported, OpFailure>>> {
        if *self.conns.topology() == Topology::Cluster {
            return Err(Error::invalid(ADMIN_ON_CLUSTER));
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clocks.next_version();
        let mut inv = admin_scripts::IMPORT.prepare_invoke();
        inv.arg(match policy {
            ImportPolicy::Overwrite => "O",
            ImportPolicy::SkipExisting => "S",
            ImportPolicy::NewerVersion => "N",
        })
        .arg(record::version_digits(now));
        for e in &entries {
            let expires_at = e.ttl.map(|t| self.clocks.expires_at(t));
            let version = if e.version == 0 { now } else { e.version };
            inv.key(ns.storage_key(&e.key))
                .arg(record::encode(
                    version,
                    expires_at,
                    b"",
                    &codec::encode(&e.value),
                ))
                .arg(if e.version == 0 {
                    String::new()
                } else {
                    record::version_digits(e.version)
                })
                .arg(expires_at.map(|at| at.to_string()).unwrap_or_default());
        }
        let reply = self.eval(None, inv).await?;
        let RValue::Array(parts) = &reply else {
            return Err(unexpected("IMPORT", &reply));
        };
        if parts.len() != entries.len() {
            return Err(unexpected("IMPORT", &reply));
        }
        parts
            .iter()
            .zip(&entries)
            .map(|(part, e)| {
                let RValue::Array(f) = part else {
                    return Err(unexpected("IMPORT item", part));
                };
                let field = |i: usize| f.get(i).unwrap_or(&RValue::Nil);
                match f.first().and_then(as_str) {
                    Some("W") => Ok(Ok(Imported::Written {
                        version: as_u64(field(1)).ok_or_else(|| unexpected("IMPORT", part))?,
                    })),
                    Some("S") => Ok(Ok(Imported::Skipped {
                        current_version: as_u64(field(1))
                            .ok_or_else(|| unexpected("IMPORT", part))?,
                    })),
                    Some("F") => Ok(Err(OpFailure::new(
                        &e.key,
                        FailureReason::InvalidStoredValue {
                            detail: as_str(field(3)).unwrap_or_default().to_string(),
                        },
                        None,
                    ))),
                    _ => Err(unexpected("IMPORT item", part)),
                }
            })
            .collect()
    }

    async fn purge_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        max_keys: usize,
    ) -> Result<ScanStep> {
        if *self.conns.topology() == Topology::Cluster {
            return Err(Error::invalid(ADMIN_ON_CLUSTER));
        }
        // Every Redis type: tombstones and other tools' data under the
        // prefix go too.
        let (next, keys) = self.scan_step(ns, prefix, cursor, max_keys, None).await?;
        let deleted: u64 = if keys.is_empty() {
            0
        } else {
            // UNLINK frees large values off Redis's main thread.
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(keys);
            let cmd = &cmd;
            self.call(|mut c| async move { cmd.query_async(&mut c).await })
                .await?
        };
        Ok(ScanStep {
            keys: deleted,
            bytes: 0,
            cursor: next.map(|c| c.to_le_bytes().to_vec()),
        })
    }

    async fn stats_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        max_keys: usize,
    ) -> Result<ScanStep> {
        if *self.conns.topology() == Topology::Cluster {
            return Err(Error::invalid(ADMIN_ON_CLUSTER));
        }
        let (next, keys) = self
            .scan_step(ns, prefix, cursor, max_keys, Some("string"))
            .await?;
        let mut step = ScanStep {
            cursor: next.map(|c| c.to_le_bytes().to_vec()),
            ..ScanStep::default()
        };
        if keys.is_empty() {
            return Ok(step);
        }
        // STRLEN is O(1); a key that changed type or vanished since SCAN
        // answers an error or 0 and is not counted.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for k in &keys {
            pipe.cmd("STRLEN").arg(k);
        }
        let pipe = &pipe;
        let lens: Vec<RValue> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        for (k, len) in keys.iter().zip(&lens) {
            if let RValue::Int(n) = len
                && *n > 0
            {
                step.keys += 1;
                step.bytes += k.len() as u64 + *n as u64;
            }
        }
        Ok(step)
    }

    async fn ping(&self) -> Result<()> {
        self.ping_topology().await
    }

    fn describe(&self) -> String {
        format!("redis at {}", self.conns.addr())
    }
}

/// Store-method bodies that the `Store` impl delegates to (kept in an
/// inherent impl so that the cluster wrappers above stay short).
impl RedisStore {
    async fn batch_put_group(
        &self,
        ns: &Namespace,
        items: Vec<PutOp>,
    ) -> Result<Vec<Result<u64, OpFailure>>> {
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        // A key that repeats goes to APPLY, which writes the items one after
        // the other (BATCH reads every header before its one MSET, so the
        // second write of a key would reuse the first one's version).
        let plain = items.iter().all(|op| {
            is_plain(op)
                && seen.insert(op.key.as_str())
                && prost::Message::encoded_len(&op.value) + op.key.len() < STAGE_MIN_BYTES
        });
        let mut results: Vec<Option<Result<u64, OpFailure>>> = if plain {
            self.batch_records(ns, &items)
                .await?
                .unwrap_or_else(|| vec![None; items.len()])
        } else {
            vec![None; items.len()]
        };
        let rest: Vec<(usize, PutOp)> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_none())
            .map(|(i, _)| (i, items[i].clone()))
            .collect();
        if !rest.is_empty() {
            let answers = self.batch_apply(ns, &rest).await?;
            for ((i, _), answer) in rest.into_iter().zip(answers) {
                results[i] = Some(answer);
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::internal("a batch item got no answer")))
            .collect()
    }

    async fn transact_in_slot(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
        request_id: Option<RequestId>,
    ) -> Result<Vec<OpResult>> {
        let tx = request_id.map(|id| (id.digest(), transaction_fingerprint(&ops).finish()));
        let parts = self.apply(ns, &ops, true, tx).await?;
        ops.iter()
            .zip(&parts)
            .map(|(op, part)| match parse_op(op, part)? {
                Ok(r) => Ok(r),
                // Atomic mode reports failures as ABORT, never per op.
                Err(f) => Err(Error::internal(format!(
                    "APPLY (atomic) answered a per-op failure {}",
                    f.reason.as_str()
                ))),
            })
            .collect()
    }

    async fn list_page(
        &self,
        ns: &Namespace,
        prefix: &str,
        limits: PageLimits,
        cursor: Option<&[u8]>,
        include_values: bool,
    ) -> Result<ListPage> {
        let cluster = *self.conns.topology() == Topology::Cluster;
        let ListCursor {
            mut scan,
            mut pending,
            mut walk,
        } = match cursor {
            None if cluster => ListCursor {
                scan: Some(0),
                pending: Vec::new(),
                walk: Some(self.cluster_walk().await?),
            },
            None => ListCursor {
                scan: Some(0),
                pending: Vec::new(),
                walk: None,
            },
            Some(bytes) => ListCursor::decode(bytes)
                .filter(|c| c.walk.is_some() == cluster)
                .ok_or_else(|| Error::invalid("page_token is not valid for this listing"))?,
        };
        // Keys carried over from the previous page must still match; a forged
        // token cannot add anything outside the requested prefix.
        pending.retain(|k| k.starts_with(prefix));
        pending.reverse();
        let limit = limits.max_keys;
        let mut keys = Vec::new();
        let mut key_bytes = 0;
        let mut seen = std::collections::HashSet::new();
        let room = |keys: &Vec<String>, key_bytes: usize, next: &str| {
            keys.len() < limit && (keys.is_empty() || key_bytes + next.len() <= limits.max_bytes)
        };
        while let Some(k) = pending.pop() {
            if !room(&keys, key_bytes, &k) {
                pending.push(k);
                break;
            }
            if seen.insert(k.clone()) {
                key_bytes += k.len();
                keys.push(k);
            }
        }
        pending.reverse();
        let pattern = ns.scan_pattern(prefix);
        let full_prefix = ns.storage_key(prefix);
        let mut scans = 0;
        loop {
            // On a cluster, a master whose SCAN is complete hands over to
            // the next one in the walk.
            if scan.is_none()
                && let Some(w) = walk.as_mut()
                && let Some(next_node) = w.rest.pop()
            {
                w.node_slot = next_node;
                w.node_id.clear();
                scan = Some(0);
            }
            let Some(c) = scan else { break };
            if !(pending.is_empty() && keys.len() < limit && scans < MAX_SCANS_PER_PAGE) {
                break;
            }
            let count = (limit - keys.len()).clamp(10, 1000);
            // TYPE string: a deleted key's tombstone (a hash) and keys of
            // other types are not the tenant's entries.
            let mut scan_cmd = redis::cmd("SCAN");
            scan_cmd
                .arg(c)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(count)
                .arg("TYPE")
                .arg("string");
            scans += 1;
            let (next, batch) = match walk.as_mut() {
                None => {
                    let scan_cmd = &scan_cmd;
                    self.call(move |mut conn| async move {
                        scan_cmd.query_async::<(u64, Vec<Vec<u8>>)>(&mut conn).await
                    })
                    .await?
                }
                Some(w) => {
                    let (id, next, batch) = self.cluster_scan(w.node_slot, &scan_cmd).await?;
                    if !w.node_id.is_empty() && w.node_id != id {
                        // Another node serves these slots now (a failover):
                        // its SCAN cursors mean nothing to the old one's, so
                        // its scan starts over rather than skip keys.
                        w.node_id = id;
                        scan = Some(0);
                        continue;
                    }
                    w.node_id = id;
                    (next, batch)
                }
            };
            scan = (next != 0).then_some(next);
            for storage_key in batch {
                if !storage_key.starts_with(full_prefix.as_bytes()) {
                    continue;
                }
                // Keys that are not UTF-8 were written by another tool and
                // cannot be named in the API; they are skipped.
                let Some(key) = ns.client_key(&storage_key) else {
                    continue;
                };
                if seen.contains(key) {
                    continue;
                }
                if pending.is_empty() && room(&keys, key_bytes, key) {
                    seen.insert(key.to_string());
                    key_bytes += key.len();
                    keys.push(key.to_string());
                } else if !pending.iter().any(|p| p == key) {
                    pending.push(key.to_string());
                }
            }
        }
        let mut page = ListPage::default();
        if include_values && !keys.is_empty() {
            // Keys that vanished meanwhile, or hold data another tool wrote,
            // are listed without an entry rather than failing the page.
            let entries = self.read_each(ns, &keys).await?;
            // The byte budget counts values too: keys past it wait for the
            // next page, ahead of what SCAN found after them.
            let mut bytes = 0;
            let mut cut = keys.len();
            for (i, (k, e)) in keys.iter().zip(&entries).enumerate() {
                let size = k.len()
                    + match e {
                        Ok(Some(e)) => e.response_bytes(),
                        _ => 0,
                    };
                if i > 0 && bytes + size > limits.max_bytes {
                    cut = i;
                    break;
                }
                bytes += size;
            }
            let deferred = keys.split_off(cut);
            pending.splice(0..0, deferred);
            page.entries = entries
                .into_iter()
                .take(cut)
                .filter_map(|r| r.ok().flatten())
                .collect();
        }
        let more_nodes = walk.as_ref().is_some_and(|w| !w.rest.is_empty());
        page.cursor = (scan.is_some() || more_nodes || !pending.is_empty()).then(|| {
            ListCursor {
                scan,
                pending,
                walk,
            }
            .encode()
        });
        page.keys = keys;
        Ok(page)
    }

    /// The masters of the cluster to walk, each named by the lowest slot it
    /// serves (a name that survives a failover: the promoted replica serves
    /// the same slots).
    async fn cluster_walk(&self) -> Result<ClusterWalk> {
        let slots: RValue = self
            .call(|c| async move {
                let Link::Cluster(mut c) = c else {
                    return Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "not a cluster connection",
                    )));
                };
                c.route_command(
                    redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                    redis::cluster_routing::RoutingInfo::SingleNode(
                        redis::cluster_routing::SingleNodeRoutingInfo::Random,
                    ),
                )
                .await
            })
            .await?;
        // [[start, end, [ip, port, id], replicas…], …]
        let mut firsts: std::collections::BTreeMap<Vec<u8>, u16> = Default::default();
        let RValue::Array(ranges) = &slots else {
            return Err(unexpected("CLUSTER SLOTS", &slots));
        };
        for range in ranges {
            let RValue::Array(parts) = range else {
                return Err(unexpected("CLUSTER SLOTS", range));
            };
            let (Some(RValue::Int(start)), Some(RValue::Array(master))) =
                (parts.first(), parts.get(2))
            else {
                return Err(unexpected("CLUSTER SLOTS", range));
            };
            let id = master
                .get(2)
                .and_then(as_bytes)
                .unwrap_or_default()
                .to_vec();
            let start = u16::try_from(*start).map_err(|_| unexpected("CLUSTER SLOTS", range))?;
            let e = firsts.entry(id).or_insert(start);
            *e = (*e).min(start);
        }
        let mut nodes: Vec<u16> = firsts.into_values().collect();
        // Walked from the lowest slot; `rest` is popped from the end.
        nodes.sort_unstable_by(|a, b| b.cmp(a));
        let node_slot = nodes.pop().ok_or_else(|| {
            self.conns
                .unavailable("CLUSTER SLOTS lists no master".into())
        })?;
        Ok(ClusterWalk {
            node_slot,
            node_id: String::new(),
            rest: nodes,
        })
    }

    /// One SCAN step on the master serving `node_slot`, with that master's
    /// node id (same connection, one round trip). An EXISTS on a key of
    /// `node_slot` goes first: redis-rs sends a command whose node it cannot
    /// reach to another node, and SCAN, which names no key, would then walk
    /// that node's keys instead (measured: a listing across a failover
    /// skipped a third of the keys); the EXISTS answers MOVED there, and the
    /// call is retried once the slot map is current.
    async fn cluster_scan(
        &self,
        node_slot: u16,
        scan: &redis::Cmd,
    ) -> Result<(String, u64, Vec<Vec<u8>>)> {
        let probe = self
            .keyspace
            .internal(&format!("walk:{{{}}}", slot::tag_for_slot(node_slot)));
        let probe = &probe;
        self.call(move |c| async move {
            use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
            let Link::Cluster(mut c) = c else {
                return Err(RedisError::from((
                    redis::ErrorKind::Client,
                    "not a cluster connection",
                )));
            };
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS")
                .arg(probe)
                .cmd("CLUSTER")
                .arg("MYID")
                .add_command(scan.clone());
            let replies = c
                .route_pipeline(
                    pipe,
                    0,
                    3,
                    SingleNodeRoutingInfo::SpecificNode(Route::new(node_slot, SlotAddr::Master)),
                )
                .await?;
            let mut replies = replies.into_iter();
            if let Some(RValue::ServerError(e)) = replies.next() {
                return Err(e.into());
            }
            let id: String = redis::from_redis_value(replies.next().unwrap_or(RValue::Nil))?;
            let (next, batch): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(replies.next().unwrap_or(RValue::Nil))?;
            Ok((id, next, batch))
        })
        .await
    }

    /// Pings every connection slot (reconnecting empty ones); up when at
    /// least one answers and the topology has a writable master.
    async fn ping_topology(&self) -> Result<()> {
        let (ok, last_err) = self.conns.check_all(self.health_timeout()).await;
        let status = self.conns.pool_status();
        crate::metrics::redis_pool(
            status.max_size,
            status.available,
            status.waiting,
            self.conns.connected(),
        );
        if ok > 0 {
            // A failed clock reading keeps the last offset and floor; the
            // PINGs decide health.
            match self.sync_clocks().await {
                Ok(()) => self.clock_warned.store(false, Ordering::Relaxed),
                // Once per failure streak: TTLs are then computed against this
                // host's clock, which is only as good as NTP.
                Err(e) if !self.clock_warned.swap(true, Ordering::Relaxed) => tracing::warn!(
                    error = %e,
                    detail = e.log_detail().unwrap_or_default(),
                    "cannot read redis TIME or the version floor (ACL needs +time and the \
                     scripts); remaining TTLs use this host's clock"
                ),
                Err(_) => {}
            }
            return self.check_writable().await;
        }
        Err(self
            .conns
            .unavailable(last_err.unwrap_or_else(|| "no connection answered".into())))
    }

    /// Whether writes can succeed: a standalone URL or the master Sentinel
    /// names must be a master (a demoted master or a stale DNS name is a
    /// read-only replica, and every write would fail), a standalone URL must
    /// not be a cluster node, and a cluster must say cluster_state:ok.
    async fn check_writable(&self) -> Result<()> {
        let timeout = self.health_timeout();
        let probe = async {
            match self.conns.topology() {
                Topology::Cluster => {
                    let info: String = self
                        .call(|c| async move {
                            let Link::Cluster(mut c) = c else {
                                return Ok(RValue::Nil);
                            };
                            c.route_command(
                                redis::cmd("CLUSTER").arg("INFO").to_owned(),
                                redis::cluster_routing::RoutingInfo::SingleNode(
                                    redis::cluster_routing::SingleNodeRoutingInfo::Random,
                                ),
                            )
                            .await
                        })
                        .await
                        .and_then(|v| {
                            redis::from_redis_value(v).map_err(|_| Error::internal("CLUSTER INFO"))
                        })?;
                    if !info.contains("cluster_state:ok") {
                        return Err(self.conns.unavailable(
                            "the cluster reports cluster_state:fail (slots without a master)"
                                .into(),
                        ));
                    }
                    Ok(())
                }
                topology => {
                    // HELLO without arguments describes the server (role,
                    // mode) and needs only +@connection, which the
                    // documented ACL grants (ROLE and INFO are @dangerous).
                    let hello: RValue = self
                        .call(|mut c| async move { redis::cmd("HELLO").query_async(&mut c).await })
                        .await?;
                    let field = |name: &str| -> Option<String> {
                        let pairs: Vec<(&RValue, &RValue)> = match &hello {
                            RValue::Array(items) => items
                                .chunks(2)
                                .filter_map(|p| Some((p.first()?, p.get(1)?)))
                                .collect(),
                            RValue::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
                            _ => Vec::new(),
                        };
                        pairs
                            .into_iter()
                            .find(|(k, _)| as_str(k) == Some(name))
                            .and_then(|(_, v)| as_str(v).map(str::to_string))
                    };
                    if field("mode").as_deref() == Some("cluster") {
                        return Err(self.conns.unavailable(
                            "--redis-url points at a Redis Cluster node: start with \
                             --redis-mode cluster"
                                .into(),
                        ));
                    }
                    if field("role").is_some_and(|r| r != "master") {
                        if matches!(topology, Topology::Sentinel { .. }) {
                            // Ask the sentinels again on the next request.
                            self.conns.invalidate_all();
                        }
                        return Err(self.conns.unavailable(
                            "the server is a read-only replica, not a master: writes would fail \
                             (a demoted master, or a stale address)"
                                .into(),
                        ));
                    }
                    Ok(())
                }
            }
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(r) => r,
            Err(_) => Err(self
                .conns
                .unavailable(format!("the role check timed out after {timeout:?}"))),
        }
    }
}

/// Continuation of a Redis listing: the SCAN cursor (`None` once SCAN is
/// complete) and keys already found but not yet returned (a SCAN batch can
/// hold more than the page has room for).
struct ListCursor {
    scan: Option<u64>,
    pending: Vec<String>,
    /// On a cluster: where the walk over the masters stands.
    walk: Option<ClusterWalk>,
}

/// A listing's walk over a cluster's masters: the one being scanned (named
/// by the lowest slot it served when the walk began, and by its node id once
/// scanned) and those still to come.
#[derive(Debug, Clone, PartialEq)]
struct ClusterWalk {
    node_slot: u16,
    node_id: String,
    rest: Vec<u16>,
}

impl ListCursor {
    /// Tag byte: 0/1 standalone without/with a SCAN cursor, 2/3 the same on
    /// a cluster, followed by the walk (node slot, node id, slots to come).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let tag = u8::from(self.scan.is_some()) + if self.walk.is_some() { 2 } else { 0 };
        out.push(tag);
        if let Some(w) = &self.walk {
            out.extend_from_slice(&w.node_slot.to_le_bytes());
            out.push(w.node_id.len().min(255) as u8);
            out.extend_from_slice(&w.node_id.as_bytes()[..w.node_id.len().min(255)]);
            out.extend_from_slice(&(w.rest.len() as u16).to_le_bytes());
            for s in &w.rest {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        if let Some(c) = self.scan {
            out.extend_from_slice(&c.to_le_bytes());
        }
        for k in &self.pending {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let (&tag, mut b) = b.split_first()?;
        if tag > 3 {
            return None;
        }
        let slot = |b: &mut &[u8]| -> Option<u16> {
            let (s, rest) = b.split_first_chunk::<2>()?;
            *b = rest;
            Some(u16::from_le_bytes(*s)).filter(|s| *s < slot::SLOTS)
        };
        let walk = if tag >= 2 {
            let node_slot = slot(&mut b)?;
            let (&len, rest) = b.split_first()?;
            let id = rest.get(..len as usize)?;
            let node_id = String::from_utf8(id.to_vec()).ok()?;
            b = &rest[len as usize..];
            let (n, rest) = b.split_first_chunk::<2>()?;
            b = rest;
            let rest = (0..u16::from_le_bytes(*n))
                .map(|_| slot(&mut b))
                .collect::<Option<Vec<u16>>>()?;
            Some(ClusterWalk {
                node_slot,
                node_id,
                rest,
            })
        } else {
            None
        };
        let scan = if tag % 2 == 1 {
            let (c, rest) = b.split_first_chunk::<8>()?;
            b = rest;
            Some(u64::from_le_bytes(*c))
        } else {
            None
        };
        let mut pending = Vec::new();
        while !b.is_empty() {
            let (len, rest) = b.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            if rest.len() < len {
                return None;
            }
            pending.push(String::from_utf8(rest[..len].to_vec()).ok()?);
            b = &rest[len..];
        }
        Some(Self {
            scan,
            pending,
            walk,
        })
    }
}

/// The Redis URL without credentials, for logs and metrics:
/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable redis url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6380/2"),
            "redis://user:***@host:6380/2"
        );
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("rediss://h:1"), "rediss://h:1");
        assert!(!redact_url("not a url with secret").contains("secret"));
    }

    #[test]
    fn list_cursors_round_trip_and_reject_garbage() {
        let c = ListCursor {
            scan: Some(42),
            pending: vec!["a".into(), "日本".into()],
            walk: None,
        };
        let back = ListCursor::decode(&c.encode()).unwrap();
        assert_eq!(back.scan, Some(42));
        assert_eq!(back.pending, vec!["a".to_string(), "日本".to_string()]);
        assert!(ListCursor::decode(&[7]).is_none());
        assert!(ListCursor::decode(&[1, 0]).is_none());
        assert!(ListCursor::decode(&[0, 9, 0, 0, 0, b'x']).is_none());
        let walk = ClusterWalk {
            node_slot: 5461,
            node_id: "abc".into(),
            rest: vec![10923, 0],
        };
        for scan in [None, Some(7)] {
            let c = ListCursor {
                scan,
                pending: vec!["k".into()],
                walk: Some(walk.clone()),
            };
            let back = ListCursor::decode(&c.encode()).unwrap();
            assert_eq!(back.scan, scan);
            assert_eq!(back.walk.as_ref(), Some(&walk));
            assert_eq!(back.pending, vec!["k".to_string()]);
        }
        // A slot out of range is refused.
        assert!(ListCursor::decode(&[2, 0xff, 0xff, 0, 0, 0]).is_none());
    }

    #[test]
    fn unexpected_replies_are_described_without_their_content() {
        let reply = RValue::Array(vec![
            RValue::BulkString(b"the secret value".to_vec()),
            RValue::Int(3),
        ]);
        let Error::Internal { detail, .. } = unexpected("GET", &reply) else {
            unreachable!()
        };
        assert!(!detail.contains("secret"), "{detail}");
        assert!(detail.contains("BulkString(16 bytes)"), "{detail}");
    }
}
