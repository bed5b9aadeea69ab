//! The change feed's backend-independent half: what an event is, where a
//! watcher stands in the feed (`Cursor`), and the `Hub` that fans events out
//! to this process's watchers, each through its own bounded buffer.
//!
//! The backends produce events (the memory store at commit, under its lock;
//! the Redis store from one reader task per process over the feed streams)
//! and replay history to a watcher that resumes. The hub never blocks a
//! producer: a watcher whose buffer is full is dropped from the hub and its
//! stream ends with RESYNC_REQUIRED (`slow_consumer`) after the events it
//! already holds, so one slow watcher costs neither writers nor other
//! watchers anything. Tenancy: a watcher only ever matches storage keys under
//! its own namespace and prefix.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc};

use crate::{
    error::{Error, Exhaustion, Result},
    pb::Value,
    store::Namespace,
};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
    Expire,
}

/// A position in one feed: totally ordered within an epoch. On Redis it is
/// the stream entry id (`ms-seq`); the memory store counts in `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub ms: u64,
    pub seq: u64,
}

impl Position {
    /// The Redis stream id `ms-seq`.
    pub fn stream_id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    /// Parses a Redis stream id `ms-seq`.
    pub fn parse_stream_id(s: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?;
        let (ms, seq) = s.split_once('-')?;
        Some(Position {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Where a watcher stands: a position in the feed of one epoch. The epoch
/// changes when the backend loses its history (a new memory store, a Redis
/// that restarted empty), so a cursor from before is refused rather than
/// silently skipping what was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: u64,
    pub position: Position,
}

/// First byte of an encoded cursor (a version marker).
const CURSOR_V1: u8 = b'W';
const CURSOR_LEN: usize = 25;

impl Cursor {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CURSOR_LEN);
        out.push(CURSOR_V1);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.position.ms.to_be_bytes());
        out.extend_from_slice(&self.position.seq.to_be_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != CURSOR_LEN || b[0] != CURSOR_V1 {
            return None;
        }
        let n = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(Cursor {
            epoch: n(1),
            position: Position {
                ms: n(9),
                seq: n(17),
            },
        })
    }
}

/// One change, as every watcher of its key receives it (shared, not copied,
/// between watchers).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// The key in storage (namespace included); the API strips the namespace.
    pub storage_key: String,
    /// Put: the new version; delete and expire: the version that ended.
    pub version: u64,
    /// Put: the value written.
    pub value: Option<Value>,
    /// Put: the TTL the write set, as of the write; `None`: no expiry.
    pub ttl: Option<Duration>,
    pub position: Position,
}

/// Why a watcher must re-List and start again (ErrorInfo metadata `cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The resume position is older than the history kept.
    HistoryTrimmed,
    /// The watcher fell more than its buffer behind.
    SlowConsumer,
    /// The backend lost its history (restart without persistence, failover
    /// to an empty replica, a new memory store).
    FeedLost,
}

impl Resync {
    pub fn as_str(self) -> &'static str {
        match self {
            Resync::HistoryTrimmed => "history_trimmed",
            Resync::SlowConsumer => "slow_consumer",
            Resync::FeedLost => "feed_lost",
        }
    }

    pub fn error(self) -> Error {
        Error::ResyncRequired { cause: self }
    }
}

/// How the feed is sized (flags `--watch-*`, `--max-watchers*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedConfig {
    /// Events kept for resuming (per tenant on Redis, approximately — MAXLEN
    /// ~; in total on the memory store).
    pub history: usize,
    /// Events buffered per watcher before it is ended as a slow consumer.
    pub buffer: usize,
    /// Watchers in this process.
    pub max_watchers: usize,
    /// Watchers of one tenant in this process.
    pub max_watchers_per_tenant: usize,
}

/// One registered watcher, as the hub sees it.
struct Slot {
    id: u64,
    /// Namespace and client prefix: the storage keys this watcher sees.
    prefix: String,
    /// Events at or before this position are not delivered live (the
    /// watcher replays them from history, or started after them).
    after: Position,
    tx: mpsc::Sender<Arc<Event>>,
    end: Arc<OnceLock<Resync>>,
}

/// The watchers of one namespace, and how far the feed has been read for
/// it (the Redis reader's position in the tenant's stream).
struct Group {
    ns: Namespace,
    cursor: Position,
    slots: Vec<Slot>,
}

#[derive(Default)]
struct Inner {
    groups: HashMap<String, Group>,
    total: usize,
    next_id: u64,
}

/// Fans events out to this process's watchers.
pub struct Hub {
    inner: Mutex<Inner>,
    config: FeedConfig,
    /// Woken when a namespace gains its first watcher (the Redis reader then
    /// adds its stream).
    pub changed: Notify,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("config", &self.config).finish()
    }
}

/// What a registration hands back: the live half of a subscription, and the
/// position the feed had been read to for this namespace (events after it
/// arrive live; the caller replays the ones before from history).
pub struct Registered {
    pub live: Live,
    pub read_to: Position,
}

impl Hub {
    pub fn new(config: FeedConfig) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            config,
            changed: Notify::new(),
        }
    }

    pub fn config(&self) -> FeedConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the maps consistent at each step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a watcher of `ns` under `prefix` that has seen everything
    /// up to `after`. A namespace without watchers starts being read at
    /// `after`. TOO_MANY_WATCHERS past the process or tenant limit.
    pub fn register(
        self: &Arc<Self>,
        ns: &Namespace,
        prefix: &str,
        after: Position,
    ) -> Result<Registered> {
        let mut inner = self.lock();
        if inner.total >= self.config.max_watchers {
            return Err(too_many(
                "this instance",
                self.config.max_watchers,
                "--max-watchers",
            ));
        }
        let group_key = ns.storage_key("");
        let (new_group, read_to, id, end, rx) = {
            let next_id = inner.next_id;
            let new_group = !inner.groups.contains_key(&group_key);
            let group = inner.groups.entry(group_key.clone()).or_insert(Group {
                ns: ns.clone(),
                cursor: after,
                slots: Vec::new(),
            });
            if group.slots.len() >= self.config.max_watchers_per_tenant {
                return Err(too_many(
                    "this tenant on this instance",
                    self.config.max_watchers_per_tenant,
                    "--max-watchers-per-tenant",
                ));
            }
            let (tx, rx) = mpsc::channel(self.config.buffer.max(1));
            let end = Arc::new(OnceLock::new());
            group.slots.push(Slot {
                id: next_id,
                prefix: ns.storage_key(prefix),
                after,
                tx,
                end: end.clone(),
            });
            (new_group, group.cursor, next_id, end, rx)
        };
        inner.next_id += 1;
        inner.total += 1;
        drop(inner);
        if new_group {
            self.changed.notify_one();
        }
        crate::metrics::watchers(1);
        Ok(Registered {
            live: Live {
                rx,
                end,
                hub: self.clone(),
                group: group_key,
                id,
                after,
            },
            read_to,
        })
    }

    fn unregister(&self, group_key: &str, id: u64) {
        let mut inner = self.lock();
        let Some(group) = inner.groups.get_mut(group_key) else {
            return;
        };
        let before = group.slots.len();
        group.slots.retain(|s| s.id != id);
        let removed = before - group.slots.len();
        if group.slots.is_empty() {
            inner.groups.remove(group_key);
        }
        inner.total -= removed;
        drop(inner);
        if removed > 0 {
            crate::metrics::watchers(-1);
        }
    }

    /// Delivers what a read of namespace `group_key`'s feed after `from`
    /// returned (`events`, in order; the read reached `read_to`) to that
    /// namespace's watchers. A namespace whose watchers all left and came
    /// back while the read was under way may now stand before `from`: the
    /// read is then not delivered (the next one starts where the new
    /// watchers stand), so no event is skipped.
    pub fn publish(
        &self,
        group_key: &str,
        from: Position,
        events: &[Arc<Event>],
        read_to: Position,
    ) {
        let mut inner = self.lock();
        let Some(group) = inner.groups.get_mut(group_key) else {
            return;
        };
        if group.cursor < from {
            return;
        }
        let mut removed = 0;
        for ev in events {
            if ev.position > group.cursor {
                removed += deliver(group, ev);
            }
        }
        group.cursor = group.cursor.max(read_to);
        inner.total -= removed;
        if group_empty(&inner, group_key) {
            inner.groups.remove(group_key);
        }
    }

    /// Delivers `ev` to the watchers of whichever namespace holds its key
    /// (the memory store, whose one feed carries every tenant).
    pub fn publish_any(&self, ev: &Arc<Event>) {
        let mut inner = self.lock();
        let Some(key) = inner
            .groups
            .keys()
            .find(|ns| ev.storage_key.starts_with(ns.as_str()))
            .cloned()
        else {
            return;
        };
        let Some(group) = inner.groups.get_mut(&key) else {
            return;
        };
        group.cursor = group.cursor.max(ev.position);
        let removed = deliver(group, ev);
        inner.total -= removed;
        if group_empty(&inner, &key) {
            inner.groups.remove(&key);
        }
    }

    /// The namespaces with watchers and how far each was read.
    pub fn cursors(&self) -> Vec<(Namespace, Position)> {
        self.lock()
            .groups
            .values()
            .map(|g| (g.ns.clone(), g.cursor))
            .collect()
    }

    /// Ends every watcher with `why` (after the events it holds).
    pub fn end_all(&self, why: Resync) {
        let mut inner = self.lock();
        let n: usize = inner.groups.values().map(|g| g.slots.len()).sum();
        for g in inner.groups.values() {
            for s in &g.slots {
                let _ = s.end.set(why);
            }
        }
        inner.groups.clear();
        inner.total -= n;
        drop(inner);
        crate::metrics::watchers(-(n as i64));
    }

    /// Watchers registered in this process.
    pub fn watchers(&self) -> usize {
        self.lock().total
    }
}

fn group_empty(inner: &Inner, key: &str) -> bool {
    inner.groups.get(key).is_some_and(|g| g.slots.is_empty())
}

/// Offers `ev` to every matching watcher of `group`; a full buffer ends that
/// watcher. Returns how many watchers were removed.
fn deliver(group: &mut Group, ev: &Arc<Event>) -> usize {
    let before = group.slots.len();
    group.slots.retain(|s| {
        if ev.position <= s.after || !ev.storage_key.starts_with(&s.prefix) {
            return true;
        }
        match s.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = s.end.set(Resync::SlowConsumer);
                crate::metrics::watcher_ended("slow_consumer");
                false
            }
            // The watcher went away; its Drop unregisters it too.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
    let removed = before - group.slots.len();
    if removed > 0 {
        crate::metrics::watchers(-(removed as i64));
    }
    removed
}

fn too_many(scope: &str, limit: usize, setting: &'static str) -> Error {
    Error::ResourceExhausted {
        reason: Exhaustion::TooManyWatchers,
        message: format!(
            "{scope} already serves {limit} watchers ({setting} / {}); close a watcher or \
             retry later",
            crate::error::env_name(setting)
        ),
        retry_after: None,
    }
}

/// The live half of a subscription: events the hub delivers after
/// registration. Dropping it unregisters the watcher.
pub struct Live {
    rx: mpsc::Receiver<Arc<Event>>,
    end: Arc<OnceLock<Resync>>,
    hub: Arc<Hub>,
    group: String,
    id: u64,
    after: Position,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.hub.unregister(&self.group, self.id);
    }
}

/// Events from history, replayed before the live ones.
pub type Backlog = Pin<Box<dyn Stream<Item = Result<Arc<Event>>> + Send>>;

/// A watcher's stream of events: the replayed backlog, then live events,
/// without duplicates (each event is delivered once, in feed order).
pub struct Subscription {
    /// Where the stream starts (the KIND_STARTED event's position).
    pub start: Cursor,
    backlog: Option<Backlog>,
    live: Live,
    /// The last position delivered.
    last: Position,
}

impl Subscription {
    pub fn new(start: Cursor, backlog: Option<Backlog>, live: Live) -> Self {
        Self {
            last: start.position,
            start,
            backlog,
            live,
        }
    }

    /// The next event; `None` when the hub let the watcher go without a
    /// reason (the store is gone); `Err` with RESYNC_REQUIRED when it was
    /// ended, after every event it already held.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>>> {
        if let Some(b) = &mut self.backlog {
            match b.next().await {
                Some(Ok(ev)) => {
                    self.last = self.last.max(ev.position);
                    return Some(Ok(ev));
                }
                Some(Err(e)) => {
                    self.backlog = None;
                    return Some(Err(e));
                }
                None => self.backlog = None,
            }
        }
        loop {
            match self.live.rx.recv().await {
                Some(ev) => {
                    // Replayed already, or older than where the watcher started.
                    if ev.position <= self.last || ev.position <= self.live.after {
                        continue;
                    }
                    self.last = ev.position;
                    return Some(Ok(ev));
                }
                None => return self.live.end.get().map(|why| Err(why.error())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Keyspace;

    fn config(buffer: usize) -> FeedConfig {
        FeedConfig {
            history: 100,
            buffer,
            max_watchers: 4,
            max_watchers_per_tenant: 3,
        }
    }

    fn ev(key: &str, seq: u64) -> Arc<Event> {
        Arc::new(Event {
            kind: EventKind::Put,
            storage_key: key.into(),
            version: seq,
            value: None,
            ttl: None,
            position: Position { ms: 0, seq },
        })
    }

    #[test]
    fn cursors_round_trip_and_reject_other_bytes() {
        let c = Cursor {
            epoch: 7,
            position: Position { ms: 9, seq: 3 },
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode(b"W"), None);
        assert_eq!(
            Position::parse_stream_id(b"12-3"),
            Some(Position { ms: 12, seq: 3 })
        );
    }

    #[tokio::test]
    async fn a_full_buffer_ends_only_that_watcher() {
        let hub = Arc::new(Hub::new(config(2)));
        let ns = Keyspace::new("s").namespace("t");
        let slow = hub.register(&ns, "", Position::default()).unwrap();
        let mut fast = hub.register(&ns, "", Position::default()).unwrap().live;
        for i in 1..=3 {
            let e = ev("s:t:k", i);
            hub.publish("s:t:", e.position, std::slice::from_ref(&e), e.position);
            hub.publish(
                "s:t:",
                Position { ms: 0, seq: i - 1 },
                std::slice::from_ref(&e),
                e.position,
            );
            assert_eq!(fast.rx.recv().await.unwrap().position.seq, i);
        }
        let mut sub = Subscription::new(
            Cursor {
                epoch: 0,
                position: Position::default(),
            },
            None,
            slow.live,
        );
        assert_eq!(sub.next().await.unwrap().unwrap().position.seq, 1);
        assert_eq!(sub.next().await.unwrap().unwrap().position.seq, 2);
        let err = sub.next().await.unwrap().unwrap_err();
        assert!(matches!(
            err,
            Error::ResyncRequired {
                cause: Resync::SlowConsumer
            }
        ));
        assert_eq!(hub.watchers(), 1);
    }

    #[test]
    fn watchers_see_only_their_namespace_and_prefix() {
        let hub = Arc::new(Hub::new(config(8)));
        let a = Keyspace::new("s").namespace("a");
        let mut w = hub.register(&a, "p/", Position::default()).unwrap().live;
        hub.publish_any(&ev("s:b:p/x", 1));
        hub.publish_any(&ev("s:a:q", 2));
        hub.publish_any(&ev("s:a:p/x", 3));
        assert_eq!(w.rx.try_recv().unwrap().position.seq, 3);
        assert!(w.rx.try_recv().is_err());
    }

    #[test]
    fn watcher_limits_are_enforced_per_process_and_tenant() {
        let hub = Arc::new(Hub::new(config(8)));
        let a = Keyspace::new("s").namespace("a");
        let b = Keyspace::new("s").namespace("b");
        let _held: Vec<_> = (0..3)
            .map(|_| hub.register(&a, "", Position::default()).unwrap())
            .collect();
        let err = hub.register(&a, "", Position::default()).err().unwrap();
        assert!(err.to_string().contains("--max-watchers-per-tenant"));
        let _b = hub.register(&b, "", Position::default()).unwrap();
        let err = hub.register(&b, "", Position::default()).err().unwrap();
        assert!(err.to_string().contains("--max-watchers "), "{err}");
    }
}
