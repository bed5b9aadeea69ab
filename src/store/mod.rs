//! The storage contract: one trait with a typed method per operation,
//! implemented by the Redis backend and by the embedded in-memory backend.
//! Both pass the same conformance suite (`tests/conformance.rs`); a behaviour
//! that differs between them is a bug.
//!
//! The store owns the key layout (`keyspace`) and knows nothing of gRPC or of
//! who is calling: the API layer validates requests and limits, resolves the
//! tenant, and hands the store a `Namespace`. Deadlines are applied around
//! the store, in `api`.

use std::{future::Future, time::Duration};

use prost::Message;

use crate::{
    error::{OpFailure, Result},
    pb::Value,
};

pub mod codec;
pub mod keyspace;
pub mod memory;
pub mod redis;
pub mod watch;

pub use keyspace::{Keyspace, Namespace};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// A stored key as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub version: u64,
    /// Remaining time to live (millisecond precision); `None`: no expiry.
    pub ttl: Option<Duration>,
}

impl Entry {
    /// Bytes this entry adds to a response (key, encoded value, and the
    /// version/TTL fields): what the response byte budgets count.
    pub fn response_bytes(&self) -> usize {
        self.key.len() + self.value.encoded_len() + 24
    }
}

/// A condition checked atomically with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    None,
    IfAbsent,
    IfExists,
    IfVersion(u64),
}

/// What a put does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// No expiry after the write (an existing one is removed).
    #[default]
    Never,
    /// Expires this long after the write.
    After(Duration),
    /// Keeps the existing key's expiry (none for a new key).
    Keep,
}

/// A client-chosen idempotency key (validated by the API: 1..N visible
/// ASCII bytes). A retry carrying the same id returns the first attempt's
/// result instead of writing again; the same id on a different write is
/// REQUEST_ID_REUSED.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(pub String);

impl RequestId {
    /// What a key remembers of the id: the first 8 bytes of its SHA-256 as
    /// 16 hex digits. Keys stay small, and an id never appears in storage.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex16(u64::from_be_bytes(
            Sha256::digest(self.0.as_bytes())[..8]
                .try_into()
                .unwrap_or_default(),
        ))
    }
}

/// How long, and for how many writes of a key, a request id is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idempotency {
    /// A retry later than this after the first attempt is a new write.
    pub window: Duration,
    /// Ids remembered per key (the newest); an older one is a new write.
    pub max_ids: usize,
}

/// 16 lowercase hex digits.
pub fn hex16(v: u64) -> String {
    format!("{v:016x}")
}

/// A stable 64-bit fingerprint of what a write asks for (FNV-1a): the same
/// on every instance and version, so a retry sent to another instance is
/// recognised, and a different write reusing an id is told apart.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn bytes(mut self, b: &[u8]) -> Self {
        // Length first, so that ("ab", "c") and ("a", "bc") differ.
        for x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn num(self, n: u64) -> Self {
        self.bytes(&n.to_le_bytes())
    }

    pub fn finish(self) -> u64 {
        self.0
    }

    /// A value in a canonical form: map entries in key order. Its protobuf
    /// encoding cannot be used: a map decodes into a `HashMap` whose
    /// iteration order (and so its re-encoding) differs from one decode to
    /// the next, and a retry would then look like a different write
    /// (REQUEST_ID_REUSED).
    pub fn value(self, v: &Value) -> Self {
        use crate::pb::value::Kind;
        match &v.kind {
            None => self.num(0),
            Some(Kind::NullValue(_)) => self.num(1),
            Some(Kind::BoolValue(b)) => self.num(2).num(u64::from(*b)),
            Some(Kind::IntValue(i)) => self.num(3).num(*i as u64),
            Some(Kind::DoubleValue(d)) => self.num(4).num(d.to_bits()),
            Some(Kind::StringValue(s)) => self.num(5).bytes(s.as_bytes()),
            Some(Kind::BytesValue(b)) => self.num(6).bytes(b),
            Some(Kind::ListValue(l)) => l
                .values
                .iter()
                .fold(self.num(7).num(l.values.len() as u64), Fingerprint::value),
            Some(Kind::MapValue(m)) => {
                let mut entries: Vec<_> = m.fields.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                entries
                    .into_iter()
                    .fold(self.num(8).num(m.fields.len() as u64), |f, (k, x)| {
                        f.bytes(k.as_bytes()).value(x)
                    })
            }
        }
    }

    fn condition(self, c: Condition) -> Self {
        match c {
            Condition::None => self.num(0),
            Condition::IfAbsent => self.num(1),
            Condition::IfExists => self.num(2),
            Condition::IfVersion(v) => self.num(3).num(v),
        }
    }

    fn expiry(self, e: Expiry) -> Self {
        match e {
            Expiry::Never => self.num(0),
            Expiry::After(t) => self.num(1).num(t.as_millis() as u64),
            Expiry::Keep => self.num(2),
        }
    }
}

impl PutOp {
    /// The fingerprint of this put (key, value, expiry, condition).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::default()
            .bytes(self.key.as_bytes())
            .bytes(b"P")
            .value(&self.value)
            .expiry(self.expiry)
            .condition(self.condition)
    }
}

impl DeleteOp {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::default()
            .bytes(self.key.as_bytes())
            .bytes(b"D")
            .condition(self.condition)
    }
}

impl IncrementOp {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::default()
            .bytes(self.key.as_bytes())
            .bytes(b"I")
            .num(self.delta as u64)
            .num(self.ttl.map_or(0, |t| t.as_millis() as u64 + 1))
    }
}

impl WriteOp {
    /// The fingerprint of this op (key, kind and every argument).
    pub fn fingerprint(&self) -> Fingerprint {
        match self {
            WriteOp::Put(p) => p.fingerprint(),
            WriteOp::Delete(d) => d.fingerprint(),
            WriteOp::Increment(i) => i.fingerprint(),
        }
    }
}

/// The fingerprint of a whole transaction.
pub fn transaction_fingerprint(ops: &[WriteOp]) -> Fingerprint {
    ops.iter()
        .fold(Fingerprint::default().bytes(b"T"), |f, op| {
            f.num(op.fingerprint().finish())
        })
}

/// Store `value` under `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct PutOp {
    pub key: String,
    pub value: Value,
    pub expiry: Expiry,
    pub condition: Condition,
    pub request_id: Option<RequestId>,
}

/// Delete `key` (if_absent is refused by the API before it gets here).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOp {
    pub key: String,
    pub condition: Condition,
    pub request_id: Option<RequestId>,
}

/// Add `delta` to an int value; an absent key is created at 0 first and
/// given `ttl` (an existing key keeps its expiry).
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementOp {
    pub key: String,
    pub delta: i64,
    pub ttl: Option<Duration>,
    pub request_id: Option<RequestId>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put(PutOp),
    Delete(DeleteOp),
    Increment(IncrementOp),
}

impl WriteOp {
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Put(op) => &op.key,
            WriteOp::Delete(op) => &op.key,
            WriteOp::Increment(op) => &op.key,
        }
    }
}

/// The result of an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incremented {
    pub value: i64,
    pub version: u64,
}

/// The result of one applied transaction op, in the op's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Put { version: u64 },
    Delete { deleted: bool },
    Increment(Incremented),
}

/// How much one List page may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Most keys in the page.
    pub max_keys: usize,
    /// Most response bytes in the page (keys, and entries when values are
    /// asked for). A page always holds at least one key when one is due,
    /// even one larger than this (values are bounded by --max-value-bytes,
    /// which is checked to fit a response).
    pub max_bytes: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub keys: Vec<String>,
    /// Filled only when values were asked for; keys that vanished are left out.
    pub entries: Vec<Entry>,
    /// Backend-specific continuation; `None` when the listing is complete.
    pub cursor: Option<Vec<u8>>,
}

/// How an import treats a key that already holds an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPolicy {
    /// Write every entry, replacing what the key holds.
    Overwrite,
    /// Leave existing keys alone.
    SkipExisting,
    /// Write an entry only if its version is above the existing key's.
    NewerVersion,
}

/// One entry to import: what an export produced, or a backup file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportEntry {
    pub key: String,
    pub value: Value,
    /// The version to keep when it is above every version the key has (or,
    /// on Redis, had before a delete that left a tombstone); otherwise the
    /// next version above it is written. 0: a fresh version. Below 10^16
    /// (checked by the API: the stored header holds 16 digits).
    pub version: u64,
    /// Expires this long after the write; `None`: no expiry.
    pub ttl: Option<Duration>,
}

/// What an import did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Written with this version.
    Written { version: u64 },
    /// Left alone by the policy; the key's current version.
    Skipped { current_version: u64 },
}

/// One page of an export.
#[derive(Debug, Clone, Default)]
pub struct ExportPage {
    pub entries: Vec<Entry>,
    /// Keys found but not exported: they vanished between finding and
    /// reading, or hold data state-service did not write.
    pub skipped: u64,
    /// Backend-specific continuation; `None` when the export is complete.
    pub cursor: Option<Vec<u8>>,
}

/// One bounded step of a purge or a count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStep {
    /// Keys deleted (purge) or entries counted (stats) in this step.
    pub keys: u64,
    /// Approximate bytes of the counted entries (stats; 0 for purge).
    pub bytes: u64,
    /// Where the next step starts; `None` when the scan is complete.
    pub cursor: Option<Vec<u8>>,
}

/// The storage contract. Every method acts inside one tenant's namespace and
/// is atomic unless it says otherwise.
///
/// Round trips are those of the Redis backend (`store::redis`); the memory
/// backend does the same work under one lock. Versions grow on every write of
/// a key and never repeat for it, also across delete and re-create and within
/// one transaction. TTLs handed in are already validated (at least 1 ms, at
/// most --max-ttl).
pub trait Store: Send + Sync + 'static {
    /// Reads a key: value, version and remaining TTL, atomically. With
    /// `refresh_ttl`, an existing key's expiry is reset to it in the same
    /// atomic step (the version does not change). One round trip.
    fn get(
        &self,
        ns: &Namespace,
        key: &str,
        refresh_ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// Writes one value after checking its condition against the live state;
    /// returns the new version. A failed condition is `Error::Condition`. One
    /// round trip.
    fn put(&self, ns: &Namespace, op: PutOp) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes one key; whether it existed. One round trip.
    fn delete(&self, ns: &Namespace, op: DeleteOp) -> impl Future<Output = Result<bool>> + Send;

    /// Adds to an int value with exact int64 arithmetic (overflow and a
    /// non-int value are `Error::Condition`). One round trip.
    fn increment(
        &self,
        ns: &Namespace,
        op: IncrementOp,
    ) -> impl Future<Output = Result<Incremented>> + Send;

    /// Sets the expiry of an existing key; whether it existed. The version
    /// does not change. One round trip.
    fn expire(
        &self,
        ns: &Namespace,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Removes the expiry of a key; whether it existed. One round trip.
    fn persist(&self, ns: &Namespace, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Reads distinct keys as one consistent snapshot (on one Redis); results
    /// in the order of `keys`. One round trip (MGET).
    fn batch_get(
        &self,
        ns: &Namespace,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Entry>>>> + Send;

    /// Applies puts independently, in order: each succeeds or fails its own
    /// condition (the failure carries its `op_index`). Not atomic as a whole.
    /// One round trip.
    fn batch_put(
        &self,
        ns: &Namespace,
        items: Vec<PutOp>,
    ) -> impl Future<Output = Result<Vec<Result<u64, OpFailure>>>> + Send;

    /// Deletes many keys without conditions; per-key "existed". One round trip.
    fn batch_delete(
        &self,
        ns: &Namespace,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Applies `ops` all-or-nothing: each op's condition (and an increment's
    /// type and overflow) is checked, in order, against the state left by the
    /// ops before it; if any check fails nothing is written and the failure,
    /// with its `op_index`, is returned as `Error::Condition`. Every error is
    /// decided before the first write. One round trip (one Lua script).
    fn transact(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
        request_id: Option<RequestId>,
    ) -> impl Future<Output = Result<Vec<OpResult>>> + Send;

    /// One page of the keys starting with `prefix`. `cursor` is what the
    /// previous page returned. A page may be shorter than its limits even
    /// when more follow (the backend bounds the work per page).
    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        limits: PageLimits,
        cursor: Option<&[u8]>,
        include_values: bool,
    ) -> impl Future<Output = Result<ListPage>> + Send;

    /// Subscribes to the changes of the keys under `prefix` (the change feed,
    /// `watch`): from `from` (the position after the last event the watcher
    /// saw; `None`: from now). The subscription yields every change after
    /// its start in feed order (per key, in version order), or ends with
    /// RESYNC_REQUIRED when it cannot (history trimmed or lost, the watcher
    /// too slow). WATCH_DISABLED when the feed is off. Redis: one round trip
    /// to find the start (plus the replay, paged); live events come from the
    /// instance's one feed reader.
    fn watch(
        &self,
        ns: &Namespace,
        prefix: &str,
        from: Option<watch::Cursor>,
    ) -> impl Future<Output = Result<watch::Subscription>> + Send;
    /// One page of an export: the entries under `prefix` with value,
    /// version and remaining TTL, each read atomically (one MGET per page on
    /// Redis), skipping deleted keys' tombstones and never exposing
    /// request-id entries. Bounded work per page like `list`; `cursor` is
    /// what the previous page returned.
    fn export(
        &self,
        ns: &Namespace,
        prefix: &str,
        limits: PageLimits,
        cursor: Option<&[u8]>,
    ) -> impl Future<Output = Result<ExportPage>> + Send {
        async move {
            let page = self.list(ns, prefix, limits, cursor, true).await?;
            Ok(ExportPage {
                skipped: page.keys.len().saturating_sub(page.entries.len()) as u64,
                entries: page.entries,
                cursor: page.cursor,
            })
        }
    }

    /// Imports entries under `policy`, each on its own (atomic per entry,
    /// not as a whole), in order; a key holding data another tool wrote
    /// fails with INVALID_STORED_VALUE and the rest go on. TTLs start at the
    /// write. One round trip (one script on Redis).
    fn import(
        &self,
        ns: &Namespace,
        entries: Vec<ImportEntry>,
        policy: ImportPolicy,
    ) -> impl Future<Output = Result<Vec<Result<Imported, OpFailure>>>> + Send;

    /// Deletes up to about `max_keys` keys under `prefix` — entries,
    /// tombstones and foreign data alike — continuing at `cursor`. Keys
    /// present for the whole purge are gone once a step returns no cursor.
    /// Two round trips per step on Redis (SCAN, UNLINK).
    fn purge_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        max_keys: usize,
    ) -> impl Future<Output = Result<ScanStep>> + Send;

    /// Counts up to about `max_keys` entries under `prefix` and their
    /// approximate bytes, continuing at `cursor`. Two round trips per step
    /// on Redis (SCAN, a pipeline of STRLEN).
    fn stats_step(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&[u8]>,
        max_keys: usize,
    ) -> impl Future<Output = Result<ScanStep>> + Send;

    /// Whether the backend can serve right now (drives grpc.health.v1); the
    /// error says why not, for the operator's log.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// A short description for the operator's log (no credentials).
    fn describe(&self) -> String;
}

/// The type name of a value, as named in NOT_AN_INTEGER errors.
pub fn type_name(v: &Value) -> &'static str {
    use crate::pb::value::Kind;
    match &v.kind {
        None => "empty",
        Some(Kind::NullValue(_)) => "null",
        Some(Kind::BoolValue(_)) => "bool",
        Some(Kind::IntValue(_)) => "int",
        Some(Kind::DoubleValue(_)) => "double",
        Some(Kind::StringValue(_)) => "string",
        Some(Kind::BytesValue(_)) => "bytes",
        Some(Kind::ListValue(_)) => "list",
        Some(Kind::MapValue(_)) => "map",
    }
}

/// Versions: `max(floor + 1, now in µs since the Unix epoch)`, where `floor`
/// is the highest version this key has had that the writer knows of (its
/// current version, or the one it had before a delete earlier in the same
/// transaction). Increasing for a key, and — because it restarts from the
/// clock, not from 1 — not repeated after the key is deleted and recreated.
pub fn next_version(floor: Option<u64>, now_micros: u64) -> u64 {
    match floor {
        Some(p) if p >= now_micros => p + 1,
        _ => now_micros,
    }
}
