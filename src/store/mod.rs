//! The storage contract: one trait, implemented by the Redis backend and by the
//! embedded in-memory backend. Both pass the same conformance suite
//! (`tests/conformance.rs`); a behaviour that differs between them is a bug.
//!
//! The trait speaks in storage terms (namespaces, typed values, write ops) and
//! knows nothing of gRPC. Limits and request validation happen before it, in
//! `api`; deadlines are applied around it, also in `api`.

use std::{future::Future, time::Duration};

use crate::{
    error::{OpFailure, Result},
    pb::Value,
    tenancy::Namespace,
};

pub mod codec;
pub mod memory;
pub mod redis;

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

/// A condition checked atomically with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    None,
    IfAbsent,
    IfExists,
    IfVersion(u64),
}

/// What a write op does.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// Store `value`. `ttl: Some` sets the expiry; `None` removes it unless
    /// `keep_ttl`.
    Put {
        value: Value,
        ttl: Option<Duration>,
        keep_ttl: bool,
    },
    Delete,
    /// Add `delta` to an int value (absent: created at 0 with `ttl`).
    Increment {
        delta: i64,
        ttl: Option<Duration>,
    },
}

/// One write of a transaction, a batch, or a single-key RPC.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    pub key: String,
    pub kind: OpKind,
    pub condition: Condition,
}

/// The result of one applied write op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Put { version: u64 },
    Delete { deleted: bool },
    Increment { value: i64, version: u64 },
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

/// The storage contract. Every method acts inside one tenant's namespace.
///
/// Round trips are those of the Redis backend; the memory backend does the
/// same work under one lock.
pub trait Store: Send + Sync + 'static {
    /// Reads a key: value, version and remaining TTL, atomically.
    /// With `refresh_ttl`, an existing key's expiry is reset to it in the same
    /// atomic step. One round trip.
    fn get(
        &self,
        ns: &Namespace,
        key: &str,
        refresh_ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// Reads many keys as one consistent snapshot (MULTI/EXEC). One round trip.
    fn batch_get(
        &self,
        ns: &Namespace,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Entry>>>> + Send;

    /// Applies `ops` all-or-nothing: each op's condition is checked, in order,
    /// against the state left by the ops before it; if any check fails nothing
    /// is written and the failure (with its `op_index`) is returned as
    /// `Error::Condition`. One round trip (one Lua script).
    fn transact(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
    ) -> impl Future<Output = Result<Vec<OpResult>>> + Send;

    /// Applies `ops` independently, in order: each succeeds or fails its own
    /// condition. Not atomic as a whole. One round trip.
    fn apply_each(
        &self,
        ns: &Namespace,
        ops: Vec<WriteOp>,
    ) -> impl Future<Output = Result<Vec<Result<OpResult, OpFailure>>>> + Send;

    /// Deletes many keys without conditions; per-key "existed". One pipelined
    /// round trip.
    fn batch_delete(
        &self,
        ns: &Namespace,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Sets the expiry of an existing key; returns whether it existed.
    /// The version does not change.
    fn expire(
        &self,
        ns: &Namespace,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Removes the expiry of a key; returns whether it existed.
    fn persist(&self, ns: &Namespace, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// One page of the keys starting with `prefix`. `cursor` is what the
    /// previous page returned. At most `limit` keys; a page may be shorter even
    /// when more follow (the backend bounds the work per page).
    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        limit: usize,
        cursor: Option<&[u8]>,
        include_values: bool,
    ) -> impl Future<Output = Result<ListPage>> + Send;

    /// Whether the backend answers right now (drives grpc.health.v1).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// A short description for logs and error messages (no credentials).
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

/// Versions: `max(previous + 1, now in µs since the Unix epoch)`. Increasing
/// for a key while it exists, and — because it restarts from the clock, not
/// from 1 — not repeated after the key is deleted and recreated (unless the
/// clock steps back further than the key's last version). Both backends use this rule.
pub fn next_version(previous: Option<u64>, now_micros: u64) -> u64 {
    match previous {
        Some(p) if p >= now_micros => p + 1,
        _ => now_micros,
    }
}
