//! The Redis side of the change feed (docs/design/watch.md).
//!
//! Writes append their events to the tenant's stream in the same script
//! (`scripts`, the `-- feed` lines), so an event exists exactly when its
//! write does. This module reads them back: one reader task per process
//! (XREAD BLOCK on a connection of its own, never a request connection)
//! over the streams of the tenants that have watchers here, handing what it
//! reads to the `Hub`; a sweeper task that reports expiries, which no
//! script sees happen, from the expiry index on Redis's clock; and the
//! start of a watch — the feed's epoch, the resume position's check against
//! the history still kept, and the replay of that history (XRANGE, paged)
//! to a watcher that resumes behind the reader.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::Duration,
};

use redis::{AsyncConnectionConfig, Value as RValue, aio::MultiplexedConnection};

use super::{codec, record, scripts};
use crate::{
    error::{Error, Result},
    store::{
        Keyspace, Namespace,
        watch::{
            Backlog, Cursor, Event, EventKind, FeedConfig, Hub, Position, Resync, Subscription,
        },
    },
};

/// How long one XREAD blocks: also the longest a tenant's first watcher
/// waits before the reader adds its stream (nothing is missed meanwhile:
/// the reader starts at the watcher's position).
const BLOCK: Duration = Duration::from_millis(200);

/// Most entries one XREAD returns per stream.
const READ_COUNT: usize = 512;

/// How often due expiries are looked for: an EXPIRE event arrives at most
/// this long (plus a round trip) after the key's TTL ran out.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Most expiries reported per sweep.
const SWEEP_BATCH: usize = 256;

/// Entries fetched per XRANGE while replaying history.
const REPLAY_PAGE: usize = 256;

/// Wait after a failed connection before trying again.
const RETRY: Duration = Duration::from_millis(250);

/// What the reader, the sweeper and every watch start share.
pub(super) struct Shared {
    pub hub: Arc<Hub>,
    pub keyspace: Keyspace,
    config: FeedConfig,
    client: redis::Client,
    conn_config: AsyncConnectionConfig,
    command_timeout: Duration,
    /// One multiplexed connection for the sweeper and history replays (the
    /// reader has its own: its XREAD blocks).
    aux: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    addr: String,
}

/// The feed of one store: shared state and its two background tasks, which
/// stop when the store is dropped.
pub(super) struct Feed {
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Feed {
    pub fn start(
        conns: &super::Connections,
        keyspace: Keyspace,
        config: FeedConfig,
        command_timeout: Duration,
    ) -> Result<Self> {
        let (client, conn_config) = conns.dedicated()?;
        let shared = Arc::new(Shared {
            hub: Arc::new(Hub::new(config)),
            keyspace,
            config,
            client,
            conn_config,
            command_timeout,
            aux: tokio::sync::Mutex::new(None),
            addr: conns.addr().to_string(),
        });
        let mut tasks = Vec::new();
        if tokio::runtime::Handle::try_current().is_ok() {
            tasks.push(tokio::spawn(reader(shared.clone())).abort_handle());
            tasks.push(tokio::spawn(sweeper(shared.clone())).abort_handle());
        }
        Ok(Self { shared, tasks })
    }
}

impl Shared {
    async fn connect(&self) -> Result<MultiplexedConnection> {
        match tokio::time::timeout(
            self.command_timeout.max(Duration::from_secs(1)),
            self.client
                .get_multiplexed_async_connection_with_config(&self.conn_config),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.unavailable(super::conn::describe_redis_error(&e))),
            Err(_) => Err(self.unavailable("connecting timed out".into())),
        }
    }

    fn unavailable(&self, cause: String) -> Error {
        Error::Unavailable {
            detail: format!("change feed: redis at {}: {cause}", self.addr),
        }
    }

    /// Runs one call on the shared auxiliary connection under the command
    /// timeout; a failed connection is replaced on the next call.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = {
            let mut aux = self.aux.lock().await;
            match &*aux {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect().await?;
                    *aux = Some(c.clone());
                    c
                }
            }
        };
        match tokio::time::timeout(self.command_timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    *self.aux.lock().await = None;
                    return Err(self.unavailable(super::conn::describe_redis_error(&e)));
                }
                Err(Error::internal(format!(
                    "change feed: unexpected error from redis at {}: {}",
                    self.addr,
                    super::conn::describe_redis_error(&e)
                )))
            }
            Err(_) => Err(Error::DeadlineExceeded {
                message: format!(
                    "the state backend did not answer within {:?} (--redis-command-timeout)",
                    self.command_timeout
                ),
                detail: Some(format!("change feed: redis at {}", self.addr)),
            }),
        }
    }

    /// The feed's epoch (created if Redis has none) and the state of the
    /// tenant's stream, in one script call.
    async fn head(&self, ns: &Namespace) -> Result<Head> {
        let keys = self.keyspace.feed_keys(ns);
        let mut inv = scripts::HEAD.prepare_invoke();
        inv.key(keys.stream)
            .key(self.keyspace.feed_epoch())
            .arg(new_epoch());
        let reply: RValue = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Head::parse(&reply).ok_or_else(|| super::unexpected("HEAD", &reply))
    }

    /// Starts a watch of `ns` under `prefix` from `from` (`None`: now).
    pub async fn open(
        self: &Arc<Self>,
        ns: &Namespace,
        prefix: &str,
        from: Option<Cursor>,
    ) -> Result<Subscription> {
        let head = self.head(ns).await?;
        let start = match from {
            None => head.last,
            Some(c) if c.epoch != head.epoch || c.position > head.last => {
                return Err(Resync::FeedLost.error());
            }
            Some(c) => {
                // Trimming removes the oldest entries: nothing after the
                // position is gone while the first entry kept is not newer
                // than it (or, from the very beginning, while nothing was
                // ever removed).
                let kept = if c.position == Position::default() {
                    head.added == head.length
                } else {
                    head.first <= c.position
                };
                if !kept {
                    return Err(Resync::HistoryTrimmed.error());
                }
                c.position
            }
        };
        let registered = self.hub.register(ns, prefix, start)?;
        // The reader had already read this tenant's stream past the start:
        // what lies between comes from history, the rest live.
        let backlog = (registered.read_to > start).then(|| {
            replay(
                self.clone(),
                self.keyspace.feed_keys(ns).stream,
                ns.storage_key(prefix),
                start,
                registered.read_to,
            )
        });
        Ok(Subscription::new(
            Cursor {
                epoch: head.epoch,
                position: start,
            },
            backlog,
            registered.live,
        ))
    }
}

/// A random epoch, offered in case Redis has none yet.
fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(record::local_us() as u64);
    // Never 0, so that an epoch is always told apart from "none".
    (h.finish() | 1).to_string()
}

/// What HEAD answers: the epoch and the stream's ids and counts.
struct Head {
    epoch: u64,
    last: Position,
    first: Position,
    added: u64,
    length: u64,
}

impl Head {
    fn parse(v: &RValue) -> Option<Self> {
        let RValue::Array(p) = v else { return None };
        let text = |i: usize| p.get(i).and_then(super::as_bytes);
        let num = |i: usize| super::as_u64(p.get(i)?);
        Some(Head {
            epoch: num(0)?,
            last: Position::parse_stream_id(text(1)?)?,
            first: Position::parse_stream_id(text(2)?)?,
            added: num(3)?,
            length: num(4)?,
        })
    }
}

/// The events of stream `stream` after `from` up to `to` whose keys start
/// with `prefix`, fetched a page at a time as the watcher reads them.
fn replay(
    shared: Arc<Shared>,
    stream: String,
    prefix: String,
    from: Position,
    to: Position,
) -> Backlog {
    let pages = futures::stream::try_unfold(Some(from), move |after| {
        let shared = shared.clone();
        let stream = stream.clone();
        let prefix = prefix.clone();
        async move {
            let Some(after) = after else {
                return Ok::<_, Error>(None);
            };
            let (s, start, end) = (
                stream.clone(),
                format!("({}", after.stream_id()),
                to.stream_id(),
            );
            let reply: RValue = shared
                .call(|mut c| async move {
                    redis::cmd("XRANGE")
                        .arg(s)
                        .arg(start)
                        .arg(end)
                        .arg("COUNT")
                        .arg(REPLAY_PAGE)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let entries =
                parse_entries(&reply).ok_or_else(|| super::unexpected("XRANGE", &reply))?;
            let full = entries.len() == REPLAY_PAGE;
            let last = entries.last().map(|e| e.position);
            let events: Vec<Result<Arc<Event>>> = entries
                .into_iter()
                .filter(|e| e.storage_key.starts_with(&prefix))
                .map(|e| Ok(Arc::new(e)))
                .collect();
            let next = match last {
                Some(l) if full && l < to => Some(l),
                _ => None,
            };
            Ok(Some((futures::stream::iter(events), next)))
        }
    });
    Box::pin(futures::TryStreamExt::try_flatten(pages))
}

/// The entries of an XRANGE reply (or one stream of an XREAD reply) as
/// events; entries that cannot be read are logged and skipped.
fn parse_entries(v: &RValue) -> Option<Vec<Event>> {
    let RValue::Array(items) = v else {
        return matches!(v, RValue::Nil).then(Vec::new);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let RValue::Array(pair) = item else {
            return None;
        };
        let [id, fields] = pair.as_slice() else {
            return None;
        };
        let position = Position::parse_stream_id(super::as_bytes(id)?)?;
        match parse_event(position, fields) {
            Some(ev) => out.push(ev),
            None => tracing::warn!(
                id = %position.stream_id(),
                "skipping a change feed entry this version cannot read"
            ),
        }
    }
    Some(out)
}

fn parse_event(position: Position, fields: &RValue) -> Option<Event> {
    let pairs: Vec<(&[u8], &RValue)> = match fields {
        RValue::Array(f) => f
            .chunks(2)
            .filter_map(|c| Some((super::as_bytes(c.first()?)?, c.get(1)?)))
            .collect(),
        RValue::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((super::as_bytes(k)?, v)))
            .collect(),
        _ => return None,
    };
    let get = |name: &[u8]| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let storage_key = String::from_utf8(super::as_bytes(get(b"k")?)?.to_vec()).ok()?;
    let kind = match super::as_bytes(get(b"o")?)? {
        b"P" => EventKind::Put,
        b"D" => EventKind::Delete,
        b"E" => EventKind::Expire,
        _ => return None,
    };
    if kind != EventKind::Put {
        return Some(Event {
            kind,
            storage_key,
            version: super::as_u64(get(b"v")?)?,
            value: None,
            ttl: None,
            position,
        });
    }
    let raw = super::as_bytes(get(b"r")?)?;
    let r = record::parse(raw).ok()?;
    let value = codec::decode(r.payload).ok()?;
    // The entry id is Redis's clock when the write appended it.
    let ttl = r
        .expires_at_ms
        .map(|at| Duration::from_millis(at.saturating_sub(position.ms).max(1)));
    Some(Event {
        kind,
        storage_key,
        version: r.version,
        value: Some(value),
        ttl,
        position,
    })
}

/// The one reader of this process: XREAD over the streams of the tenants
/// with watchers here, from where each was read to, handing each batch to
/// the hub. On reconnecting it compares the feed's epoch: a Redis that lost
/// the feed ends every watcher with RESYNC_REQUIRED (feed_lost).
async fn reader(shared: Arc<Shared>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut epoch: Option<u64> = None;
    let warned = AtomicBool::new(false);
    loop {
        let groups = shared.hub.cursors();
        if groups.is_empty() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), shared.hub.changed.notified()).await;
            continue;
        }
        let mut c = match conn.clone() {
            Some(c) => c,
            None => match connect_reader(&shared, &mut epoch).await {
                Ok(c) => {
                    warned.store(false, Ordering::Relaxed);
                    conn = Some(c.clone());
                    c
                }
                Err(e) => {
                    if !warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, detail = e.log_detail().unwrap_or_default(), "change feed reader cannot reach redis; watchers wait");
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        let streams: Vec<String> = groups
            .iter()
            .map(|(ns, _)| shared.keyspace.feed_keys(ns).stream)
            .collect();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&streams);
        for (_, pos) in &groups {
            cmd.arg(pos.stream_id());
        }
        let reply = tokio::time::timeout(
            BLOCK + shared.command_timeout,
            cmd.query_async::<RValue>(&mut c),
        )
        .await;
        let reply = match reply {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %super::conn::describe_redis_error(&e), "change feed read failed; reconnecting");
                conn = None;
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                conn = None;
                continue;
            }
        };
        for (stream, entries) in stream_replies(&reply) {
            let Some(i) = streams.iter().position(|s| s.as_bytes() == stream) else {
                continue;
            };
            let (ns, from) = &groups[i];
            let Some(events) = parse_entries(entries) else {
                tracing::warn!("unexpected XREAD reply shape from redis; skipping it");
                continue;
            };
            let Some(read_to) = events.last().map(|e| e.position) else {
                continue;
            };
            let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
            shared
                .hub
                .publish(&ns.storage_key(""), *from, &events, read_to);
        }
    }
}

/// Opens the reader's connection and checks the epoch against the one it
/// knew.
async fn connect_reader(shared: &Shared, epoch: &mut Option<u64>) -> Result<MultiplexedConnection> {
    let mut c = shared.connect().await?;
    let key = shared.keyspace.feed_epoch();
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(&key)
        .arg(new_epoch())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(&key);
    let (now,): (Option<u64>,) =
        tokio::time::timeout(shared.command_timeout, pipe.query_async(&mut c))
            .await
            .map_err(|_| shared.unavailable("reading the feed epoch timed out".into()))?
            .map_err(|e| shared.unavailable(super::conn::describe_redis_error(&e)))?;
    if let (Some(known), Some(now)) = (*epoch, now)
        && known != now
    {
        tracing::warn!("redis lost the change feed (its epoch changed): every watcher must resync");
        shared.hub.end_all(Resync::FeedLost);
    }
    *epoch = now;
    Ok(c)
}

/// The (stream key, entries) pairs of an XREAD reply.
fn stream_replies(v: &RValue) -> Vec<(&[u8], &RValue)> {
    match v {
        RValue::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                RValue::Array(p) if p.len() == 2 => Some((super::as_bytes(&p[0])?, &p[1])),
                _ => None,
            })
            .collect(),
        RValue::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((super::as_bytes(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Reports expiries: every `SWEEP_INTERVAL`, the keys whose indexed expiry
/// is due on Redis's clock, each confirmed gone and reported atomically
/// (EXPIRED). Every instance sweeps; the script reports each expiry once.
async fn sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match sweep(&shared).await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, detail = e.log_detail().unwrap_or_default(), "change feed: cannot report expiries (retrying)");
            }
            Err(_) => {}
        }
    }
}

async fn sweep(shared: &Arc<Shared>) -> Result<usize> {
    let index = shared.keyspace.internal("feed-exp");
    let mut due = scripts::DUE.prepare_invoke();
    due.key(&index).arg(SWEEP_BATCH);
    let keys: Vec<Vec<u8>> = shared
        .call(|mut c| async move { due.invoke_async(&mut c).await })
        .await?;
    let mut reported = 0;
    let mut by_ns: HashMap<Vec<u8>, Namespace> = HashMap::new();
    let calls = keys.into_iter().map(|k| {
        let ns = by_ns
            .entry(k.clone())
            .or_insert_with(|| {
                shared
                    .keyspace
                    .namespace_of(&k)
                    .unwrap_or_else(|| shared.keyspace.namespace("_"))
            })
            .clone();
        let fk = shared.keyspace.feed_keys(&ns);
        let mut inv = scripts::EXPIRED.prepare_invoke();
        inv.key(k)
            .key(fk.stream)
            .key(fk.expiries)
            .key(fk.versions)
            .arg(shared.config.history);
        async move {
            shared
                .call(|mut c| async move { inv.invoke_async::<i64>(&mut c).await })
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        reported += r? as usize;
    }
    Ok(reported)
}
