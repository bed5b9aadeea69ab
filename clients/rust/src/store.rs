//! The blocking `StateStore` facade, shaped like rust-rule-engine's
//! `streaming::state::StateStore` (put, put_with_ttl, get, update, delete,
//! contains, keys, clear, len, checkpoint, restore) so a stream job moves its
//! state into the service by changing its constructor. It owns a small tokio
//! runtime and blocks on the async [`StateClient`]; do not call it from
//! inside an async task (use `StateClient` there).
//!
//! Layout inside the tenant: data under `<namespace>:<key>`, checkpoints
//! under `<namespace>#ckpt:<id>:<key>` with a manifest at
//! `<namespace>#ckpt:<id>` written last.

use std::{
    marker::PhantomData,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::TryStreamExt;

use crate::{
    client::{BatchPutItem, StateClient, WriteOptions},
    config::ClientConfig,
    error::{Error, ErrorKind, Result},
    value::{Value, ValueError},
};

/// Keys per BatchGet/BatchPut/BatchDelete issued by `clear`, `checkpoint`
/// and `restore` (the server's default max-batch-items is 1000).
const BATCH: usize = 500;

/// A value type the facade can store: `state_client::Value` itself, or (with
/// the `rule-engine` feature) `rust_rule_engine::types::Value`.
pub trait StoreValue: Sized {
    fn to_value(self) -> Result<Value, ValueError>;
    fn from_value(value: Value) -> Result<Self, ValueError>;
}

impl StoreValue for Value {
    fn to_value(self) -> Result<Value, ValueError> {
        Ok(self)
    }
    fn from_value(value: Value) -> Result<Self, ValueError> {
        Ok(value)
    }
}

/// Metadata of a checkpoint, as `checkpoint` wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub id: String,
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub entry_count: i64,
}

/// Blocking key/value state for one stream job, stored in state-service
/// under a namespace.
pub struct StateStore<V: StoreValue = Value> {
    client: StateClient,
    runtime: tokio::runtime::Runtime,
    namespace: String,
    _value: PhantomData<fn(V) -> V>,
}

impl<V: StoreValue> StateStore<V> {
    /// Connects (lazily) to the service and scopes this store to
    /// `namespace` (`[A-Za-z0-9._-]+`: it must not contain the separators).
    pub fn connect(config: ClientConfig, namespace: impl Into<String>) -> Result<Self> {
        let namespace = namespace.into();
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(Error::client(
                ErrorKind::Config,
                format!("namespace {namespace:?} must match [A-Za-z0-9._-]+"),
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::client(ErrorKind::Config, format!("cannot start a runtime: {e}"))
            })?;
        let client = runtime.block_on(StateClient::connect(config))?;
        Ok(StateStore {
            client,
            runtime,
            namespace,
            _value: PhantomData,
        })
    }

    /// The async client underneath (for batches, increments, transactions).
    pub fn client(&self) -> &StateClient {
        &self.client
    }

    /// The service key a store key is kept under.
    pub fn service_key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    fn data_prefix(&self) -> String {
        format!("{}:", self.namespace)
    }

    fn checkpoint_key(&self, id: &str) -> String {
        format!("{}#ckpt:{id}", self.namespace)
    }

    /// Stores a value without expiry.
    pub fn put(&self, key: impl Into<String>, value: V) -> Result<()> {
        let value = value.to_value()?;
        let key = self.service_key(&key.into());
        self.runtime.block_on(self.client.put(key, value))?;
        Ok(())
    }

    /// Stores a value that expires after `ttl`.
    pub fn put_with_ttl(&self, key: impl Into<String>, value: V, ttl: Duration) -> Result<()> {
        let value = value.to_value()?;
        let key = self.service_key(&key.into());
        self.runtime
            .block_on(self.client.put_with_ttl(key, value, ttl))?;
        Ok(())
    }

    /// Reads a value; `None` if absent or expired.
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        let entry = self
            .runtime
            .block_on(self.client.get(self.service_key(key)))?;
        entry
            .map(|e| V::from_value(e.value).map_err(Error::from))
            .transpose()
    }

    /// Replaces the value of an existing key (keeping its expiry); a missing
    /// key is an error of kind `NotFound`, as in rust-rule-engine.
    pub fn update(&self, key: &str, value: V) -> Result<()> {
        let value = value.to_value()?;
        self.runtime.block_on(self.client.put_with(
            self.service_key(key),
            value,
            WriteOptions::if_exists().keep_ttl(),
        ))?;
        Ok(())
    }

    /// Deletes a key (absent is not an error).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.delete(self.service_key(key)))?;
        Ok(())
    }

    /// Whether the key exists. Shaped like rust-rule-engine (a plain bool):
    /// an error reads as `false` — use [`try_contains`](Self::try_contains)
    /// to see it.
    pub fn contains(&self, key: &str) -> bool {
        self.try_contains(key).unwrap_or(false)
    }

    pub fn try_contains(&self, key: &str) -> Result<bool> {
        Ok(self
            .runtime
            .block_on(self.client.get(self.service_key(key)))?
            .is_some())
    }

    /// All keys of the namespace. Shaped like rust-rule-engine: an error
    /// reads as empty — use [`try_keys`](Self::try_keys) to see it.
    pub fn keys(&self) -> Vec<String> {
        self.try_keys().unwrap_or_default()
    }

    pub fn try_keys(&self) -> Result<Vec<String>> {
        let prefix = self.data_prefix();
        let keys: Vec<String> = self
            .runtime
            .block_on(self.client.list(prefix.clone()).try_collect())?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    /// Number of keys (one List pass). An error reads as 0 — use
    /// [`try_len`](Self::try_len) to see it.
    pub fn len(&self) -> usize {
        self.try_len().unwrap_or(0)
    }

    pub fn try_len(&self) -> Result<usize> {
        Ok(self.try_keys()?.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes every key of the namespace (checkpoints are kept). Not
    /// atomic: keys written concurrently may survive.
    pub fn clear(&self) -> Result<()> {
        let keys: Vec<String> = self
            .runtime
            .block_on(self.client.list(self.data_prefix()).try_collect())?;
        for chunk in keys.chunks(BATCH) {
            self.runtime
                .block_on(self.client.batch_delete(chunk.iter().cloned()))?;
        }
        Ok(())
    }

    /// Copies the namespace's current keys (values and remaining TTLs) under
    /// a new checkpoint id and returns the id. The manifest is written last,
    /// so `restore` never sees a half-written checkpoint. Not a snapshot:
    /// keys written while it runs may or may not be included (stop the job's
    /// writers first, as you would for rust-rule-engine's file backend).
    /// It stays on the data API (read and write scopes) rather than the
    /// service's admin Export/Import, which needs the tenant-wide admin
    /// scope; for an operator's backup of the namespace use
    /// `state-service export --prefix '<namespace>:'` (clients/README.md).
    pub fn checkpoint(&self, name: impl Into<String>) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let id = format!("checkpoint_{now}_{:08x}", fastrand::u32(..));
        let copy_prefix = format!("{}:", self.checkpoint_key(&id));
        let data_prefix = self.data_prefix();
        self.runtime.block_on(async {
            let entries: Vec<_> = self
                .client
                .list_entries(data_prefix.clone())
                .try_collect()
                .await?;
            for chunk in entries.chunks(BATCH) {
                let items = chunk
                    .iter()
                    .map(|e| {
                        let key = e.key.strip_prefix(&data_prefix).unwrap_or(&e.key);
                        let mut item =
                            BatchPutItem::new(format!("{copy_prefix}{key}"), e.value.clone());
                        item.ttl = e.ttl.filter(|t| !t.is_zero());
                        item
                    })
                    .collect();
                for r in self.client.batch_put(items).await? {
                    r?;
                }
            }
            let manifest = Value::map([
                ("name", Value::from(name.into())),
                ("timestamp_ms", Value::Int(now)),
                ("entry_count", Value::Int(entries.len() as i64)),
            ]);
            self.client
                .put_with(
                    self.checkpoint_key(&id),
                    manifest,
                    WriteOptions::if_absent(),
                )
                .await?;
            Ok::<_, Error>(())
        })?;
        Ok(id)
    }

    /// Replaces the namespace's keys with a checkpoint's: deletes the current
    /// keys, then writes the checkpointed ones back (with the TTLs they had
    /// left when checkpointed). Not atomic; a missing or unfinished
    /// checkpoint is an error of kind `NotFound` and changes nothing.
    pub fn restore(&self, checkpoint_id: &str) -> Result<()> {
        self.checkpoint_info(checkpoint_id)?;
        let copy_prefix = format!("{}:", self.checkpoint_key(checkpoint_id));
        self.clear()?;
        self.runtime.block_on(async {
            let entries: Vec<_> = self
                .client
                .list_entries(copy_prefix.clone())
                .try_collect()
                .await?;
            for chunk in entries.chunks(BATCH) {
                let items = chunk
                    .iter()
                    .map(|e| {
                        let key = e.key.strip_prefix(&copy_prefix).unwrap_or(&e.key);
                        let mut item = BatchPutItem::new(self.service_key(key), e.value.clone());
                        item.ttl = e.ttl.filter(|t| !t.is_zero());
                        item
                    })
                    .collect();
                for r in self.client.batch_put(items).await? {
                    r?;
                }
            }
            Ok::<_, Error>(())
        })
    }

    /// The manifest of a finished checkpoint.
    pub fn checkpoint_info(&self, checkpoint_id: &str) -> Result<CheckpointInfo> {
        let not_found = || {
            Error::client(
                ErrorKind::NotFound,
                format!("checkpoint {checkpoint_id:?} not found (or not finished)"),
            )
        };
        if checkpoint_id.contains(':') {
            return Err(not_found());
        }
        let entry = self
            .runtime
            .block_on(self.client.get(self.checkpoint_key(checkpoint_id)))?
            .ok_or_else(not_found)?;
        let m = entry.value.as_map().ok_or_else(not_found)?;
        Ok(CheckpointInfo {
            id: checkpoint_id.to_string(),
            name: m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            timestamp_ms: m.get("timestamp_ms").and_then(Value::as_int).unwrap_or(0),
            entry_count: m.get("entry_count").and_then(Value::as_int).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_with_separators_are_refused() {
        for ns in ["", "a:b", "a#b", "a b"] {
            let err = StateStore::<Value>::connect(ClientConfig::new("127.0.0.1:1"), ns)
                .err()
                .expect("refused");
            assert_eq!(err.kind(), ErrorKind::Config, "{ns:?}");
        }
    }

    #[test]
    fn keys_live_under_the_namespace() {
        let store =
            StateStore::<Value>::connect(ClientConfig::new("127.0.0.1:1"), "job-7").unwrap();
        assert_eq!(store.service_key("count"), "job-7:count");
        assert_eq!(store.checkpoint_key("c1"), "job-7#ckpt:c1");
    }
}
