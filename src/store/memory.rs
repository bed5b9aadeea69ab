//! The embedded in-memory backend: the default when no Redis URL is given.
//!
//! It is a product feature, not a mock: versions, TTLs, conditions,
//! transactions and List behave exactly as on Redis (same conformance suite).
//! State lives in one ordered map under one mutex, so every operation is atomic
//! the way a Redis script is; nothing awaits while the lock is held. Expiry uses
//! `tokio::time::Instant`, so tests can pause and advance time.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use crate::{
    error::{Error, FailureReason, OpFailure, Result},
    pb::{Value, value::Kind},
    store::{
        Condition, Entry, ListPage, OpKind, OpResult, Store, WriteOp, next_version, type_name,
    },
    tenancy::Namespace,
};

/// How often expired keys are swept (reads also ignore them lazily).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Item {
    value: Value,
    version: u64,
    expires_at: Option<Instant>,
}

impl Item {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

type Map = BTreeMap<String, Item>;

/// The in-memory store. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    map: Arc<Mutex<Map>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// Creates an empty store. Inside a Tokio runtime it also starts a sweeper
    /// that frees expired keys; the sweeper stops when the store is dropped.
    pub fn new() -> Self {
        let map = Arc::new(Mutex::new(Map::new()));
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&map)));
        }
        Self { map }
    }

    /// Number of stored entries, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave a half-applied op behind
        // (ops are computed first and committed with plain inserts), so the
        // data is still consistent after poisoning.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn sweep(map: Weak<Mutex<Map>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(map) = map.upgrade() else { return };
        let now = Instant::now();
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, item| item.live(now));
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn remaining(item: &Item, now: Instant) -> Option<Duration> {
    // Millisecond precision, like PTTL.
    item.expires_at
        .map(|t| Duration::from_millis(t.saturating_duration_since(now).as_millis() as u64))
}

fn entry(key: &str, item: &Item, now: Instant) -> Entry {
    Entry {
        key: key.to_string(),
        value: item.value.clone(),
        version: item.version,
        ttl: remaining(item, now),
    }
}

/// The state of the keys an op list touches, as the ops see it: a view over
/// the map plus the not-yet-committed changes of earlier ops.
struct Overlay<'a> {
    map: &'a Map,
    now: Instant,
    changes: HashMap<String, Option<Item>>,
}

impl<'a> Overlay<'a> {
    fn new(map: &'a Map, now: Instant) -> Self {
        Self {
            map,
            now,
            changes: HashMap::new(),
        }
    }

    fn current(&self, key: &str) -> Option<&Item> {
        match self.changes.get(key) {
            Some(change) => change.as_ref(),
            None => self.map.get(key).filter(|i| i.live(self.now)),
        }
    }

    /// Applies one op to the overlay, or explains why it cannot be applied.
    fn apply(
        &mut self,
        storage_key: &str,
        client_key: &str,
        op: &WriteOp,
        version_clock: u64,
    ) -> Result<OpResult, OpFailure> {
        let current = self.current(storage_key).cloned();
        let fail = |reason, current_version| OpFailure {
            op_index: None,
            key: client_key.to_string(),
            reason,
            current_version,
        };
        let cur_version = current.as_ref().map(|i| i.version);
        match op.condition {
            Condition::None => {}
            Condition::IfAbsent if current.is_some() => {
                return Err(fail(FailureReason::AlreadyExists, cur_version));
            }
            Condition::IfExists if current.is_none() => {
                return Err(fail(FailureReason::NotFound, None));
            }
            Condition::IfVersion(expected) if cur_version != Some(expected) => {
                return Err(fail(
                    FailureReason::VersionMismatch { expected },
                    cur_version,
                ));
            }
            _ => {}
        }
        let version = next_version(cur_version, version_clock);
        let (result, new_state) = match &op.kind {
            OpKind::Delete => (
                OpResult::Delete {
                    deleted: current.is_some(),
                },
                None,
            ),
            OpKind::Put {
                value,
                ttl,
                keep_ttl,
            } => {
                let expires_at = match (ttl, keep_ttl) {
                    (Some(ttl), _) => Some(self.now + *ttl),
                    (None, true) => current.as_ref().and_then(|i| i.expires_at),
                    (None, false) => None,
                };
                (
                    OpResult::Put { version },
                    Some(Item {
                        value: value.clone(),
                        version,
                        expires_at,
                    }),
                )
            }
            OpKind::Increment { delta, ttl } => {
                let (base, expires_at) = match &current {
                    None => (0, ttl.map(|t| self.now + t)),
                    Some(item) => match item.value.kind {
                        Some(Kind::IntValue(i)) => (i, item.expires_at),
                        _ => {
                            return Err(fail(
                                FailureReason::NotAnInteger {
                                    stored_type: type_name(&item.value),
                                },
                                cur_version,
                            ));
                        }
                    },
                };
                let Some(value) = base.checked_add(*delta) else {
                    return Err(fail(
                        FailureReason::IncrementOverflow { delta: *delta },
                        cur_version,
                    ));
                };
                (
                    OpResult::Increment { value, version },
                    Some(Item {
                        value: Value {
                            kind: Some(Kind::IntValue(value)),
                        },
                        version,
                        expires_at,
                    }),
                )
            }
        };
        self.changes.insert(storage_key.to_string(), new_state);
        Ok(result)
    }

    fn into_changes(self) -> HashMap<String, Option<Item>> {
        self.changes
    }
}

fn commit(map: &mut Map, changes: HashMap<String, Option<Item>>) {
    for (key, change) in changes {
        match change {
            Some(item) => {
                map.insert(key, item);
            }
            None => {
                map.remove(&key);
            }
        }
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
        let mut map = self.lock();
        let Some(item) = map.get_mut(&ns.storage_key(key)).filter(|i| i.live(now)) else {
            return Ok(None);
        };
        if let Some(ttl) = refresh_ttl {
            item.expires_at = Some(now + ttl);
        }
        Ok(Some(entry(key, item, now)))
    }

    async fn batch_get(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<Option<Entry>>> {
        let now = Instant::now();
        let map = self.lock();
        Ok(keys
            .iter()
            .map(|k| {
                map.get(&ns.storage_key(k))
                    .filter(|i| i.live(now))
                    .map(|i| entry(k, i, now))
            })
            .collect())
    }

    async fn transact(&self, ns: &Namespace, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
        let now = Instant::now();
        let clock = now_micros();
        let mut map = self.lock();
        let mut overlay = Overlay::new(&map, now);
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let storage_key = ns.storage_key(&op.key);
            match overlay.apply(&storage_key, &op.key, op, clock) {
                Ok(r) => results.push(r),
                Err(mut failure) => {
                    if ops.len() > 1 {
                        failure.op_index = Some(i);
                    }
                    return Err(Error::from(failure));
                }
            }
        }
        let changes = overlay.into_changes();
        commit(&mut map, changes);
        Ok(results)
    }

    async fn apply_each(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<OpResult, OpFailure>>> {
        let now = Instant::now();
        let clock = now_micros();
        let mut map = self.lock();
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let storage_key = ns.storage_key(&op.key);
            let mut overlay = Overlay::new(&map, now);
            let result = overlay.apply(&storage_key, &op.key, op, clock);
            let changes = overlay.into_changes();
            commit(&mut map, changes);
            results.push(result.map_err(|mut f| {
                f.op_index = Some(i);
                f
            }));
        }
        Ok(results)
    }

    async fn batch_delete(&self, ns: &Namespace, keys: &[String]) -> Result<Vec<bool>> {
        let now = Instant::now();
        let mut map = self.lock();
        Ok(keys
            .iter()
            .map(|k| map.remove(&ns.storage_key(k)).is_some_and(|i| i.live(now)))
            .collect())
    }

    async fn expire(&self, ns: &Namespace, key: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(&ns.storage_key(key)).filter(|i| i.live(now)) {
            Some(item) => {
                item.expires_at = Some(now + ttl);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn persist(&self, ns: &Namespace, key: &str) -> Result<bool> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(&ns.storage_key(key)).filter(|i| i.live(now)) {
            Some(item) => {
                item.expires_at = None;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        limit: usize,
        cursor: Option<&[u8]>,
        include_values: bool,
    ) -> Result<ListPage> {
        let start = ns.storage_key(prefix);
        // The cursor is the last storage key returned; the next page starts after it.
        let lower = match cursor {
            None => Bound::Included(start.clone()),
            Some(c) => {
                let after = std::str::from_utf8(c)
                    .map_err(|_| Error::invalid("page_token is not valid for this listing"))?;
                if !after.starts_with(&start) {
                    return Err(Error::invalid("page_token is not valid for this listing"));
                }
                Bound::Excluded(after.to_string())
            }
        };
        let now = Instant::now();
        let map = self.lock();
        let mut page = ListPage::default();
        let mut last = None;
        let mut iter = map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&start))
            .filter(|(_, i)| i.live(now));
        for (storage_key, item) in iter.by_ref() {
            let Some(key) = ns.client_key(storage_key.as_bytes()) else {
                continue;
            };
            page.keys.push(key.to_string());
            if include_values {
                page.entries.push(entry(key, item, now));
            }
            last = Some(storage_key.clone());
            if page.keys.len() == limit {
                break;
            }
        }
        if page.keys.len() == limit && iter.next().is_some() {
            page.cursor = last.map(String::into_bytes);
        }
        Ok(page)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (embedded, not shared, not durable)".to_string()
    }
}
