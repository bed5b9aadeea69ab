//! The embedded in-memory backend: the default when no Redis URL is given.
//!
//! It is a product feature, not a mock: versions, TTLs, conditions,
//! transactions, List and running out of memory behave exactly as on Redis
//! (same conformance suite). State lives in one ordered map under one mutex,
//! so every operation is atomic the way a Redis script is; nothing awaits
//! while the lock is held. Expiry uses `tokio::time::Instant`, so tests can
//! pause and advance time.
//!
//! Memory is bounded by a budget (`--memory-max-bytes`), refused the way
//! Redis refuses writes at `maxmemory` with `noeviction`: a write that would
//! take the stored bytes past the budget is refused with RESOURCE_EXHAUSTED
//! and writes nothing, while reads, deletes and expiry changes keep working.
//! (Redis counts a command's own buffers into its memory, so near the limit
//! it too refuses a large write while a small one may still pass.)
//!
//! The change feed (`--watch`) lives under the same lock: every commit
//! appends its events to a bounded history and offers them to the watchers
//! (`watch::Hub`) before the lock is released, so events are in commit
//! order and a watcher that registers sees each change exactly once, from
//! the history or live. Expired keys produce their EXPIRE event when the
//! sweeper removes them, or — if a write comes first — right before that
//! write's event.
//!
//! Request ids are remembered as on Redis: with the item they were written
//! for (at most `max_ids` per key, none older than the window), and after a
//! delete that carried one in a tombstone that lives for the window.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost::Message;
use tokio::time::Instant;

use crate::{
    error::{Error, Exhaustion, FailureReason, OpFailure, Result},
    pb::{Value, value::Kind},
    store::{
        Condition, DeleteOp, Entry, Expiry, Idempotency, ImportEntry, ImportPolicy, Imported,
        IncrementOp, Incremented, ListPage, Namespace, OpResult, PageLimits, PutOp, RequestId,
        ScanStep, Store, WriteOp, next_version, transaction_fingerprint, type_name,
        watch::{Cursor, Event, EventKind, FeedConfig, Hub, Position, Resync, Subscription},
    },
};

/// How often expired keys are swept (reads also ignore them lazily).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes counted per stored key beyond its key and encoded value: the map
/// node, the item's fields and the allocator's share, rounded up.
const PER_KEY_OVERHEAD: usize = 96;

#[derive(Debug, Clone)]
struct Item {
    value: Value,
    version: u64,
    expires_at: Option<Instant>,
    /// Request ids of recent writes of this key, newest first.
    ids: Vec<IdEntry>,
}

/// What a key remembers of a write made with a request id.
#[derive(Debug, Clone)]
struct IdEntry {
    id: String,
    fingerprint: u64,
    at: Instant,
    answer: Answer,
}

/// The answer a replayed request id gets.
#[derive(Debug, Clone)]
enum Answer {
    Put(u64),
    Delete(bool),
    Increment(Incremented),
    Transact(Vec<OpResult>),
}

/// A deleted key's request ids, kept for the window so that a retried
/// delete (or a transaction that deleted its first key) answers as before.
#[derive(Debug, Clone)]
struct Tomb {
    ids: Vec<IdEntry>,
    expires_at: Instant,
}

impl Item {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

fn size_of(key: &str, item: &Item) -> usize {
    stored_size(key, &item.value) + item.ids.len() * ID_ENTRY_SIZE
}

/// Bytes counted per remembered request id.
const ID_ENTRY_SIZE: usize = 64;

fn stored_size(key: &str, value: &Value) -> usize {
    key.len() + value.encoded_len() + PER_KEY_OVERHEAD
}

/// What an increment may add: an int under `key`.
fn increment_size(key: &str) -> usize {
    key.len() + 16 + PER_KEY_OVERHEAD
}

/// What a write may add to the store, for the budget check (an increment
/// stores at most an int).
fn incoming(ns: &Namespace, op: &WriteOp) -> usize {
    match op {
        WriteOp::Put(p) => stored_size(&ns.storage_key(&p.key), &p.value),
        WriteOp::Increment(i) => increment_size(&ns.storage_key(&i.key)),
        WriteOp::Delete(_) => 0,
    }
}

#[derive(Debug, Default)]
struct State {
    map: BTreeMap<String, Item>,
    /// Bytes held, as `size_of` counts them (expired keys count until swept,
    /// as on Redis until they are evicted).
    bytes: usize,
    /// The highest version ever issued by this store. Every new version is
    /// above it, so versions never repeat for a key — also after a delete and
    /// re-create in the same microsecond or a wall-clock step backwards.
    high_water: u64,
    /// Request ids of deleted keys.
    tombs: HashMap<String, Tomb>,
    /// The change feed, when Watch is enabled.
    feed: Option<Feed>,
}

/// The memory store's change feed: one history for every tenant.
#[derive(Debug)]
struct Feed {
    hub: Arc<Hub>,
    /// The newest events, oldest first (at most `FeedConfig::history`).
    history: VecDeque<Arc<Event>>,
    /// Position of the newest event (0: none yet).
    seq: u64,
    /// Tells this store's positions from another's (a restarted process).
    epoch: u64,
}

impl Feed {
    fn emit(&mut self, kind: EventKind, key: &str, item: &Item, now: Instant, with_value: bool) {
        self.seq += 1;
        let ev = Arc::new(Event {
            kind,
            storage_key: key.to_string(),
            version: item.version,
            value: with_value.then(|| item.value.clone()),
            ttl: if with_value {
                remaining(item, now)
            } else {
                None
            },
            position: Position {
                ms: 0,
                seq: self.seq,
            },
        });
        if self.history.len() >= self.hub.config().history.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(ev.clone());
        self.hub.publish_any(&ev);
    }

    /// The events a change of `key` from `old` to `new` makes: an EXPIRE
    /// for an old item whose TTL ran out unseen, then a PUT or a DELETE.
    fn change(&mut self, key: &str, old: Option<&Item>, new: Option<&Item>, now: Instant) {
        let old = match old {
            Some(o) if !o.live(now) => {
                self.emit(EventKind::Expire, key, o, now, false);
                None
            }
            other => other,
        };
        match (old, new) {
            (_, Some(n)) => self.emit(EventKind::Put, key, n, now, true),
            (Some(o), None) => self.emit(EventKind::Delete, key, o, now, false),
            (None, None) => {}
        }
    }
}

impl State {
    fn insert(&mut self, key: String, item: Item) {
        self.bytes += size_of(&key, &item);
        if let Some(old) = self.map.insert(key.clone(), item) {
            self.bytes -= size_of(&key, &old);
        }
    }

    fn remove(&mut self, key: &str) -> Option<Item> {
        let old = self.map.remove(key)?;
        self.bytes -= size_of(key, &old);
        Some(old)
    }

    fn live_mut(&mut self, key: &str, now: Instant) -> Option<&mut Item> {
        self.map.get_mut(key).filter(|i| i.live(now))
    }
}

/// The in-memory store. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    budget: usize,
    idempotency: Idempotency,
}

impl MemoryStore {
    /// Creates an empty store holding at most about `budget` bytes and
    /// remembering request ids as `idempotency` says. Inside a Tokio runtime
    /// it also starts a sweeper that frees expired keys and tombstones; the
    /// sweeper stops when the store is dropped.
    pub fn new(budget: usize, idempotency: Idempotency) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&state)));
        }
        Self {
            state,
            budget,
            idempotency,
        }
    }

    /// Turns the change feed on (Watch), sized by `config`.
    pub fn with_feed(self, config: FeedConfig) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_micros());
        self.lock().feed = Some(Feed {
            hub: Arc::new(Hub::new(config)),
            history: VecDeque::new(),
            seq: 0,
            epoch: h.finish(),
        });
        self
    }

    /// Number of stored entries, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, as the budget counts them.
    pub fn used_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Refuses a write that would store `incoming` more bytes past the budget.
    fn check_budget(&self, state: &State, incoming: usize) -> Result<()> {
        if state.bytes.saturating_add(incoming) <= self.budget {
            return Ok(());
        }
        Err(Error::ResourceExhausted {
            reason: Exhaustion::BackendOutOfMemory,
            message: format!(
                "the embedded memory backend is at its budget of {} bytes \
                 (--memory-max-bytes / STATE_MEMORY_MAX_BYTES); nothing was written. Delete \
                 keys or let them expire, or raise the budget",
                self.budget
            ),
            retry_after: None,
        })
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave a half-applied op behind
    // (ops are computed first and committed with plain inserts), so the data
    // is still consistent after poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn sweep(state: Weak<Mutex<State>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let now = Instant::now();
        let mut st = lock(&state);
        let expired: Vec<String> = st
            .map
            .iter()
            .filter(|(_, i)| !i.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(old) = st.remove(&k)
                && let Some(feed) = &mut st.feed
            {
                feed.change(&k, Some(&old), None, now);
            }
        }
        st.tombs.retain(|_, t| t.expires_at > now);
    }
}

/// The lower bound of a scan over the keys starting with `start`: from the
/// start, or after the last key a previous step handled (its cursor).
fn scan_lower(start: &str, cursor: Option<&[u8]>) -> Result<Bound<String>> {
    Ok(match cursor {
        None => Bound::Included(start.to_string()),
        Some(c) => Bound::Excluded(
            std::str::from_utf8(c)
                .ok()
                .filter(|a| a.starts_with(start))
                .ok_or_else(|| Error::invalid("the scan cursor is not valid for this prefix"))?
                .to_string(),
        ),
    })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn remaining(item: &Item, now: Instant) -> Option<Duration> {
    // Millisecond precision, like PTTL; a key that is still live has at
    // least 1 ms left, as the Redis backend reports it.
    item.expires_at.map(|t| {
        Duration::from_millis((t.saturating_duration_since(now).as_millis() as u64).max(1))
    })
}

fn entry(key: &str, item: &Item, now: Instant) -> Entry {
    Entry {
        key: key.to_string(),
        value: item.value.clone(),
        version: item.version,
        ttl: remaining(item, now),
    }
}

/// The state of one key after the ops so far: the item (absent: `None`)
/// and, for an absent key, the tombstone keeping its request ids.
#[derive(Debug, Clone)]
enum Change {
    Present(Item),
    Absent(Option<Tomb>),
}

/// The state of the keys an op list touches, as the ops see it: a view over
/// the map plus the not-yet-committed changes of earlier ops. Nothing reaches
/// the map until `commit`, so a failing op leaves no trace.
struct Overlay<'a> {
    state: &'a State,
    now: Instant,
    clock: u64,
    high_water: u64,
    idem: Idempotency,
    changes: HashMap<String, Change>,
}

impl<'a> Overlay<'a> {
    fn new(state: &'a State, now: Instant, idem: Idempotency) -> Self {
        Self {
            state,
            now,
            clock: now_micros(),
            high_water: state.high_water,
            idem,
            changes: HashMap::new(),
        }
    }

    fn current(&self, key: &str) -> Option<&Item> {
        match self.changes.get(key) {
            Some(Change::Present(item)) => Some(item),
            Some(Change::Absent(_)) => None,
            None => self.state.map.get(key).filter(|i| i.live(self.now)),
        }
    }

    /// The request ids a key remembers, newest first, within the window.
    fn ids(&self, key: &str) -> Vec<IdEntry> {
        let all = match self.changes.get(key) {
            Some(Change::Present(item)) => item.ids.clone(),
            Some(Change::Absent(tomb)) => tomb.as_ref().map(|t| t.ids.clone()).unwrap_or_default(),
            None => match self.state.map.get(key).filter(|i| i.live(self.now)) {
                Some(item) => item.ids.clone(),
                None => self
                    .state
                    .tombs
                    .get(key)
                    .filter(|t| t.expires_at > self.now)
                    .map(|t| t.ids.clone())
                    .unwrap_or_default(),
            },
        };
        self.pruned(all, self.idem.max_ids)
    }

    fn pruned(&self, mut ids: Vec<IdEntry>, keep: usize) -> Vec<IdEntry> {
        ids.retain(|e| self.now.saturating_duration_since(e.at) < self.idem.window);
        ids.truncate(keep);
        ids
    }

    /// The remembered answer of `id` on `key`, REQUEST_ID_REUSED for another
    /// request, or `None` when the id is new.
    fn replay(
        &self,
        key: &str,
        client_key: &str,
        id: Option<&RequestId>,
        fingerprint: u64,
    ) -> Result<Option<Answer>, OpFailure> {
        let Some(id) = id else { return Ok(None) };
        match self.ids(key).into_iter().find(|e| e.id == id.0) {
            None => Ok(None),
            Some(e) if e.fingerprint == fingerprint => Ok(Some(e.answer)),
            Some(_) => Err(OpFailure::new(
                client_key,
                crate::error::FailureReason::RequestIdReused,
                self.current(key).map(|i| i.version),
            )),
        }
    }

    /// The ids a key keeps after a write: the new entry (if any) first.
    fn ids_after(
        &self,
        key: &str,
        id: Option<&RequestId>,
        fp: u64,
        answer: Answer,
    ) -> Vec<IdEntry> {
        let mut ids = self.ids(key);
        if let Some(id) = id {
            ids.truncate(self.idem.max_ids.saturating_sub(1));
            ids.insert(
                0,
                IdEntry {
                    id: id.0.clone(),
                    fingerprint: fp,
                    at: self.now,
                    answer,
                },
            );
        }
        ids
    }

    fn next_version(&mut self) -> u64 {
        self.high_water = next_version(Some(self.high_water), self.clock);
        self.high_water
    }

    fn check(&self, key: &str, client_key: &str, condition: Condition) -> Result<(), OpFailure> {
        let cur_version = self.current(key).map(|i| i.version);
        let fail = |reason| Err(OpFailure::new(client_key, reason, cur_version));
        match condition {
            Condition::IfAbsent if cur_version.is_some() => fail(FailureReason::AlreadyExists),
            Condition::IfExists if cur_version.is_none() => fail(FailureReason::NotFound),
            Condition::IfVersion(expected) if cur_version != Some(expected) => {
                fail(FailureReason::VersionMismatch { expected })
            }
            _ => Ok(()),
        }
    }

    fn put(&mut self, key: String, op: &PutOp, fp: u64) -> Result<u64, OpFailure> {
        if let Some(Answer::Put(v)) = self.replay(&key, &op.key, op.request_id.as_ref(), fp)? {
            return Ok(v);
        }
        self.check(&key, &op.key, op.condition)?;
        let expires_at = match op.expiry {
            Expiry::After(ttl) => Some(self.now + ttl),
            Expiry::Keep => self.current(&key).and_then(|i| i.expires_at),
            Expiry::Never => None,
        };
        let version = self.next_version();
        let ids = self.ids_after(&key, op.request_id.as_ref(), fp, Answer::Put(version));
        self.changes.insert(
            key,
            Change::Present(Item {
                value: op.value.clone(),
                version,
                expires_at,
                ids,
            }),
        );
        Ok(version)
    }

    fn delete(&mut self, key: String, op: &DeleteOp, fp: u64) -> Result<bool, OpFailure> {
        if let Some(Answer::Delete(d)) = self.replay(&key, &op.key, op.request_id.as_ref(), fp)? {
            return Ok(d);
        }
        self.check(&key, &op.key, op.condition)?;
        let existed = self.current(&key).is_some();
        // The deletion takes a version too, as on Redis, so that a
        // tombstone's entry orders within the window like any other.
        self.next_version();
        let tomb = op.request_id.as_ref().map(|id| Tomb {
            ids: self.ids_after(&key, Some(id), fp, Answer::Delete(existed)),
            expires_at: self.now + self.idem.window,
        });
        self.changes.insert(key, Change::Absent(tomb));
        Ok(existed)
    }

    fn increment(
        &mut self,
        key: String,
        op: &IncrementOp,
        fp: u64,
    ) -> Result<Incremented, OpFailure> {
        if let Some(Answer::Increment(r)) =
            self.replay(&key, &op.key, op.request_id.as_ref(), fp)?
        {
            return Ok(r);
        }
        let client_key = op.key.as_str();
        let current = self.current(&key);
        let cur_version = current.map(|i| i.version);
        let (base, expires_at) = match current {
            None => (0, op.ttl.map(|t| self.now + t)),
            Some(item) => match item.value.kind {
                Some(Kind::IntValue(i)) => (i, item.expires_at),
                _ => {
                    let stored_type = type_name(&item.value);
                    return Err(OpFailure::new(
                        client_key,
                        FailureReason::NotAnInteger { stored_type },
                        cur_version,
                    ));
                }
            },
        };
        let Some(value) = base.checked_add(op.delta) else {
            return Err(OpFailure::new(
                client_key,
                FailureReason::IncrementOverflow { delta: op.delta },
                cur_version,
            ));
        };
        let version = self.next_version();
        let result = Incremented { value, version };
        let ids = self.ids_after(&key, op.request_id.as_ref(), fp, Answer::Increment(result));
        self.changes.insert(
            key,
            Change::Present(Item {
                value: Value {
                    kind: Some(Kind::IntValue(value)),
                },
                version,
                expires_at,
                ids,
            }),
        );
        Ok(result)
    }

    fn apply(&mut self, ns: &Namespace, op: &WriteOp) -> Result<OpResult, OpFailure> {
        let key = ns.storage_key(op.key());
        // Transaction ops carry no id of their own (the API refuses them).
        Ok(match op {
            WriteOp::Put(p) => OpResult::Put {
                version: self.put(key, p, 0)?,
            },
            WriteOp::Delete(d) => OpResult::Delete {
                deleted: self.delete(key, d, 0)?,
            },
            WriteOp::Increment(i) => OpResult::Increment(self.increment(key, i, 0)?),
        })
    }

    /// Records a transaction's request id on the final state of its first
    /// key (as a tombstone if that key ends up absent).
    fn remember_transaction(&mut self, key: String, id: &RequestId, fp: u64, results: &[OpResult]) {
        let ids = self.ids_after(&key, Some(id), fp, Answer::Transact(results.to_vec()));
        let change = match self.changes.remove(&key) {
            Some(Change::Present(mut item)) => {
                item.ids = ids;
                Change::Present(item)
            }
            _ => Change::Absent(Some(Tomb {
                ids,
                expires_at: self.now + self.idem.window,
            })),
        };
        self.changes.insert(key, change);
    }

    fn into_parts(self) -> (HashMap<String, Change>, u64) {
        (self.changes, self.high_water)
    }
}

fn commit(state: &mut State, (changes, high_water): (HashMap<String, Change>, u64), now: Instant) {
    state.high_water = state.high_water.max(high_water);
    for (key, change) in changes {
        if let Some(feed) = &mut state.feed {
            let new = match &change {
                Change::Present(item) => Some(item),
                Change::Absent(_) => None,
            };
            feed.change(&key, state.map.get(&key), new, now);
        }
        match change {
            Change::Present(item) => {
                state.tombs.remove(&key);
                state.insert(key, item);
            }
            Change::Absent(tomb) => {
                state.remove(&key);
                match tomb {
                    Some(t) => {
                        state.tombs.insert(key, t);
                    }
                    None => {
                        state.tombs.remove(&key);
                    }
                }
            }
        }
    }
}

impl MemoryStore {
    /// Runs `f` against an overlay and commits what it wrote when it
    /// succeeds; `incoming` is what the call may add to the store (checked
    /// against the budget first).
    fn write<T>(
        &self,
        incoming: usize,
        f: impl FnOnce(&mut Overlay<'_>) -> Result<T, OpFailure>,
    ) -> Result<T> {
        let now = Instant::now();
        let mut state = self.lock();
        self.check_budget(&state, incoming)?;
        let mut overlay = Overlay::new(&state, now, self.idempotency);
        let result = f(&mut overlay)?;
        let parts = overlay.into_parts();
        commit(&mut state, parts, now);
        Ok(result)
    }
}

impl Store for MemoryStore {
    async fn get(
        &self,
        ns: &Namespace,
        key: &str,
        refresh_ttl: Option<Duration>,
    ) -> Result<Option<Entry>> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(item) = state.live_mut(&ns.storage_key(key), now) else {
            return Ok(None);
        };
        if let Some(ttl) = refresh_ttl {
            item.expires_at = Some(now + ttl);
        }
        Ok(Some(entry(key, item, now)))
    }

    async fn put(&self, ns: &Namespace, op: PutOp) -> Result<u64> {
        let key = ns.storage_key(&op.key);
        let size = stored_size(&key, &op.value);
        let fp = op
            .request_id
            .as_ref()
            .map_or(0, |_| op.fingerprint().finish());
        self.write(size, |o| o.put(key, &op, fp))
    }

    async fn delete(&self, ns: &Namespace, op: DeleteOp) -> Result<bool> {
        let key = ns.storage_key(&op.key);
        let fp = op
            .request_id
            .as_ref()
            .map_or(0, |_| op.fingerprint().finish());
        self.write(0, |o| o.delete(key, &op, fp))
    }

    async fn increment(&self, ns: &Namespace, op: IncrementOp) -> Result<Incremented> {
        let key = ns.storage_key(&op.key);
        let fp = op
            .request_id
            .as_ref()
            .map_or(0, |_| op.fingerprint().finish());
        self.write(increment_size(&key), |o| o.increment(key, &op, fp))
    }

    async fn expire(&self, ns: &Namespace, key: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.lock();
        Ok(match state.live_mut(&ns.storage_key(key), now) {
            Some(item) => {
                item.expires_at = Some(now + ttl);
                true
            }
            None => false,
        })
    }

    async fn persist(&self, ns: &Namespace, key: &str) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.lock();
        Ok(match state.live_mut(&ns.storage_key(key), now) {
            Some(item) => {
                item.expires_at = None;
                true
            }
            None => false,
        })
    }

    async fn batch_get(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        let now = Instant::now();
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|k| {
                state
                    .map
                    .get(&ns.storage_key(k))
                    .filter(|i| i.live(now))
                    .map(|i| entry(k, i, now))
            })
            .collect())
    }

    async fn batch_put(
        &self,
        ns: &Namespace,
        items: Vec<PutOp>,
    ) -> Result<Vec<Result<u64, OpFailure>>> {
        let now = Instant::now();
        let mut state = self.lock();
        let size = items
            .iter()
            .map(|p| stored_size(&ns.storage_key(&p.key), &p.value))
            .sum();
        self.check_budget(&state, size)?;
        let mut results = Vec::with_capacity(items.len());
        for (i, op) in items.into_iter().enumerate() {
            let fp = op
                .request_id
                .as_ref()
                .map_or(0, |_| op.fingerprint().finish());
            let mut overlay = Overlay::new(&state, now, self.idempotency);
            let result = overlay.put(ns.storage_key(&op.key), &op, fp);
            let parts = overlay.into_parts();
            commit(&mut state, parts, now);
            results.push(result.map_err(|f| f.at(i)));
        }
        Ok(results)
    }

    async fn batch_delete(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<bool>> {
        let now = Instant::now();
        let mut state = self.lock();
        Ok(keys
            .iter()
            .map(|k| {
                let key = ns.storage_key(k);
                let old = state.remove(&key);
                if let (Some(feed), Some(o)) = (&mut state.feed, &old) {
                    feed.change(&key, Some(o), None, now);
                }
                old.is_some_and(|i| i.live(now))
            })
            .collect())
    }

    async fn transact(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
        request_id: Option<RequestId>,
    ) -> Result<Vec<OpResult>> {
        let size = ops.iter().map(|op| incoming(ns, op)).sum();
        let fp = request_id
            .as_ref()
            .map_or(0, |_| transaction_fingerprint(&ops).finish());
        let first = ops.first().map(|op| ns.storage_key(op.key()));
        self.write(size, |overlay| {
            if let (Some(id), Some(first)) = (&request_id, &first) {
                match overlay.replay(first, ops[0].key(), Some(id), fp) {
                    Ok(Some(Answer::Transact(results))) => return Ok(results),
                    Ok(Some(_)) | Err(_) => {
                        return Err(OpFailure::new(
                            ops[0].key(),
                            FailureReason::RequestIdReused,
                            overlay.current(first).map(|i| i.version),
                        )
                        .at(0));
                    }
                    Ok(None) => {}
                }
            }
            let results = ops
                .iter()
                .enumerate()
                .map(|(i, op)| overlay.apply(ns, op).map_err(|f| f.at(i)))
                .collect::<Result<Vec<_>, _>>()?;
            if let (Some(id), Some(first)) = (&request_id, first) {
                overlay.remember_transaction(first, id, fp, &results);
            }
            Ok(results)
        })
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        limits: PageLimits,
        cursor: Option<&[u8]>,
        include_values: bool,
    ) -> Result<ListPage> {
        let start = ns.storage_key(prefix);
        // The cursor is the last storage key returned; the next page starts after it.
        let lower = match cursor {
            None => Bound::Included(start.clone()),
            Some(c) => {
                let after = std::str::from_utf8(c)
                    .ok()
                    .filter(|a| a.starts_with(&start))
                    .ok_or_else(|| Error::invalid("page_token is not valid for this listing"))?;
                Bound::Excluded(after.to_string())
            }
        };
        let now = Instant::now();
        let state = self.lock();
        let mut page = ListPage::default();
        let mut bytes = 0;
        let mut last = None;
        let mut iter = state
            .map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&start))
            .filter(|(_, i)| i.live(now))
            .peekable();
        while let Some((storage_key, item)) = iter.peek() {
            let Some(key) = ns.client_key(storage_key.as_bytes()) else {
                iter.next();
                continue;
            };
            let e = include_values.then(|| entry(key, item, now));
            let size = key.len() + e.as_ref().map_or(0, Entry::response_bytes);
            if page.keys.len() == limits.max_keys
                || (!page.keys.is_empty() && bytes + size > limits.max_bytes)
            {
                break;
            }
            bytes += size;
            page.keys.push(key.to_string());
            page.entries.extend(e);
            last = Some(storage_key.to_string());
            iter.next();
        }
        if iter.peek().is_some() {
            page.cursor = last.map(String::into_bytes);
        }
        Ok(page)
    }

    async fn watch(
        &self,
        ns: &Namespace,
        prefix: &str,
        from: Option<Cursor>,
    ) -> Result<Subscription> {
        let state = self.lock();
        let Some(feed) = &state.feed else {
            return Err(Error::WatchDisabled);
        };
        let head = Position {
            ms: 0,
            seq: feed.seq,
        };
        let start = match from {
            None => head,
            Some(c) if c.epoch != feed.epoch || c.position.seq > feed.seq => {
                return Err(Resync::FeedLost.error());
            }
            Some(c) => {
                // Every event after the start must still be in the history.
                let oldest = feed
                    .history
                    .front()
                    .map_or(feed.seq + 1, |e| e.position.seq);
                if c.position.seq + 1 < oldest {
                    return Err(Resync::HistoryTrimmed.error());
                }
                c.position
            }
        };
        let full = ns.storage_key(prefix);
        let backlog: Vec<Result<Arc<Event>>> = feed
            .history
            .iter()
            .filter(|e| e.position > start && e.storage_key.starts_with(&full))
            .map(|e| Ok(e.clone()))
            .collect();
        // Registered under the store's lock: every later commit reaches the
        // watcher live, every earlier one is in the backlog.
        let live = feed.hub.clone().register(ns, prefix, head)?.live;
        let backlog = (!backlog.is_empty())
            .then(|| Box::pin(futures::stream::iter(backlog)) as crate::store::watch::Backlog);
        Ok(Subscription::new(
            Cursor {
                epoch: feed.epoch,
                position: start,
            },
            backlog,
            live,
        ))
    }

    async fn import(
        &self,
        ns: &Namespace,
        entries: Vec<ImportEntry>,
        policy: ImportPolicy,
    ) -> Result<Vec<Result<Imported, OpFailure>>> {
        let now = Instant::now();
        let mut state = self.lock();
        let size = entries
            .iter()
            .map(|e| stored_size(&ns.storage_key(&e.key), &e.value))
            .sum();
        self.check_budget(&state, size)?;
        let clock = now_micros();
        let mut results = Vec::with_capacity(entries.len());
        for e in entries {
            let key = ns.storage_key(&e.key);
            let current = state.map.get(&key).filter(|i| i.live(now));
            let cur_version = current.map(|i| i.version);
            let skip = match (policy, cur_version) {
                (ImportPolicy::SkipExisting, Some(_)) => true,
                (ImportPolicy::NewerVersion, Some(cur)) => e.version <= cur,
                _ => false,
            };
            if let (true, Some(current_version)) = (skip, cur_version) {
                results.push(Ok(Imported::Skipped { current_version }));
                continue;
            }
            // The imported version when it is above the key's; otherwise the
            // next one above it, as any write would pick. The store-wide high
            // water mark rises with it, so later writes stay above.
            let version = match (e.version, cur_version) {
                (0, _) => next_version(Some(state.high_water), clock),
                (v, Some(cur)) if v <= cur => next_version(Some(state.high_water.max(cur)), clock),
                (v, _) => v,
            };
            state.high_water = state.high_water.max(version);
            // A key written by import starts without request ids (they
            // belong to the live store's retries, not to the data).
            state.tombs.remove(&key);
            state.insert(
                key,
                Item {
                    value: e.value,
                    version,
                    expires_at: e.ttl.map(|t| now + t),
                    ids: Vec::new(),
                },
            );
            results.push(Ok(Imported::Written { version }));
        }
        Ok(results)
    }

    async fn purge_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        max_keys: usize,
    ) -> Result<ScanStep> {
        let start = ns.storage_key(prefix);
        let lower = scan_lower(&start, cursor)?;
        let mut state = self.lock();
        if cursor.is_none() {
            // Tombstones under the prefix go in the first step: they are
            // bookkeeping of the keys, not entries of their own.
            state.tombs.retain(|k, _| !k.starts_with(&start));
        }
        let batch: Vec<String> = state
            .map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&start))
            .take(max_keys.max(1) + 1)
            .map(|(k, _)| k.clone())
            .collect();
        let more = batch.len() > max_keys.max(1);
        let mut step = ScanStep::default();
        for k in batch.iter().take(max_keys.max(1)) {
            // Expired keys not yet swept are deleted too, but not counted:
            // to a client they were already gone.
            if state.remove(k).is_some_and(|i| i.live(Instant::now())) {
                step.keys += 1;
            }
        }
        if more {
            step.cursor = batch
                .get(max_keys.max(1) - 1)
                .map(|k| k.clone().into_bytes());
        }
        Ok(step)
    }

    async fn stats_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        max_keys: usize,
    ) -> Result<ScanStep> {
        let start = ns.storage_key(prefix);
        let lower = scan_lower(&start, cursor)?;
        let now = Instant::now();
        let state = self.lock();
        let mut step = ScanStep::default();
        let mut visited = 0;
        let mut iter = state
            .map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&start));
        let mut last = None;
        for (k, item) in iter.by_ref() {
            if item.live(now) {
                step.keys += 1;
                step.bytes += size_of(k, item) as u64;
            }
            visited += 1;
            last = Some(k);
            if visited == max_keys.max(1) {
                break;
            }
        }
        if iter.next().is_some() {
            step.cursor = last.map(|k| k.clone().into_bytes());
        }
        Ok(step)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "memory (embedded, not shared, not durable; budget {} bytes)",
            self.budget
        )
    }
}
