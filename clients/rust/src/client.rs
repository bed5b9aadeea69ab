//! The async client: one method per RPC in native types, a bounded retry
//! loop for the calls that are safe to repeat, request ids on every write,
//! and the `update` read-modify-write helper. It owns no state besides the
//! (lazily connected, self-reconnecting) tonic channel and the call settings.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use tonic::{
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    config::{ClientConfig, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, RetryPolicy},
    error::{Error, ErrorKind, Result},
    pb::{self, state_service_client::StateServiceClient},
    value::Value,
};

type Stub = StateServiceClient<Channel>;

/// A stored key as read back: value, version and remaining TTL.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    /// Changes on every write; use it with [`Condition::IfVersion`].
    pub version: u64,
    /// Remaining time to live; `None`: no expiry.
    pub ttl: Option<Duration>,
}

/// A condition checked atomically with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Unconditional: last write wins.
    #[default]
    None,
    /// Create only (ALREADY_EXISTS otherwise).
    IfAbsent,
    /// Update only (NOT_FOUND otherwise).
    IfExists,
    /// Compare-and-set on the version (VERSION_MISMATCH otherwise).
    IfVersion(u64),
}

impl Condition {
    fn to_pb(self) -> Option<pb::Condition> {
        use pb::condition::Kind;
        let kind = match self {
            Condition::None => return None,
            Condition::IfAbsent => Kind::IfAbsent(()),
            Condition::IfExists => Kind::IfExists(()),
            Condition::IfVersion(v) => Kind::IfVersion(v),
        };
        Some(pb::Condition { kind: Some(kind) })
    }
}

/// Options of a Put / PutWithTtl / Delete.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub condition: Condition,
    /// Put only: keep the key's existing expiry.
    pub keep_ttl: bool,
    /// The idempotency key; `None`: a fresh UUID (unless request ids are
    /// switched off). Reuse the same id to retry the same logical write.
    pub request_id: Option<String>,
}

impl WriteOptions {
    pub fn if_absent() -> Self {
        Self::with(Condition::IfAbsent)
    }
    pub fn if_exists() -> Self {
        Self::with(Condition::IfExists)
    }
    pub fn if_version(version: u64) -> Self {
        Self::with(Condition::IfVersion(version))
    }
    fn with(condition: Condition) -> Self {
        WriteOptions {
            condition,
            ..Self::default()
        }
    }
    pub fn keep_ttl(mut self) -> Self {
        self.keep_ttl = true;
        self
    }
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }
}

/// Options of an Increment.
#[derive(Debug, Clone, Default)]
pub struct IncrementOptions {
    /// Expiry given to the key if this increment creates it.
    pub ttl: Option<Duration>,
    /// See [`WriteOptions::request_id`].
    pub request_id: Option<String>,
}

/// The value and version after an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub value: i64,
    pub version: u64,
}

/// One item of a BatchPut.
#[derive(Debug, Clone)]
pub struct BatchPutItem {
    pub key: String,
    pub value: Value,
    pub ttl: Option<Duration>,
    pub options: WriteOptions,
}

impl BatchPutItem {
    pub fn new(key: impl Into<String>, value: impl Into<Value>) -> Self {
        BatchPutItem {
            key: key.into(),
            value: value.into(),
            ttl: None,
            options: WriteOptions::default(),
        }
    }
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    pub fn options(mut self, options: WriteOptions) -> Self {
        self.options = options;
        self
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        value: Value,
        condition: Condition,
        keep_ttl: bool,
    },
    PutWithTtl {
        key: String,
        value: Value,
        ttl: Duration,
        condition: Condition,
    },
    Delete {
        key: String,
        condition: Condition,
    },
    Increment {
        key: String,
        delta: i64,
        ttl: Option<Duration>,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            condition: Condition::None,
            keep_ttl: false,
        }
    }
    pub fn put_with_ttl(key: impl Into<String>, value: impl Into<Value>, ttl: Duration) -> Self {
        Op::PutWithTtl {
            key: key.into(),
            value: value.into(),
            ttl,
            condition: Condition::None,
        }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete {
            key: key.into(),
            condition: Condition::None,
        }
    }
    pub fn increment(key: impl Into<String>, delta: i64) -> Self {
        Op::Increment {
            key: key.into(),
            delta,
            ttl: None,
        }
    }
    /// Adds a condition to a put, put-with-ttl or delete (an increment has none:
    /// it is returned unchanged).
    pub fn when(mut self, c: Condition) -> Self {
        match &mut self {
            Op::Put { condition, .. }
            | Op::PutWithTtl { condition, .. }
            | Op::Delete { condition, .. } => *condition = c,
            Op::Increment { .. } => {}
        }
        self
    }

    fn into_pb(self) -> pb::TransactOp {
        use pb::transact_op::Op as P;
        let op = match self {
            Op::Put {
                key,
                value,
                condition,
                keep_ttl,
            } => P::Put(pb::PutRequest {
                key,
                value: Some(value.into()),
                condition: condition.to_pb(),
                keep_ttl,
                request_id: String::new(),
            }),
            Op::PutWithTtl {
                key,
                value,
                ttl,
                condition,
            } => P::PutWithTtl(pb::PutWithTtlRequest {
                key,
                value: Some(value.into()),
                ttl: Some(duration_pb(ttl)),
                condition: condition.to_pb(),
                request_id: String::new(),
            }),
            Op::Delete { key, condition } => P::Delete(pb::DeleteRequest {
                key,
                condition: condition.to_pb(),
                request_id: String::new(),
            }),
            Op::Increment { key, delta, ttl } => P::Increment(pb::IncrementRequest {
                key,
                delta,
                ttl: ttl.map(duration_pb),
                request_id: String::new(),
            }),
        };
        pb::TransactOp { op: Some(op) }
    }
}

/// The result of one applied transaction op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Put { version: u64 },
    Delete { deleted: bool },
    Increment(Counter),
}

struct Inner {
    stub: Stub,
    authorization: Option<AsciiMetadataValue>,
    tenant: Option<AsciiMetadataValue>,
    timeout: Duration,
    retry: RetryPolicy,
    request_ids: bool,
}

/// The async state-service client. Cheap to clone (clones share one
/// HTTP/2 connection); safe to use from many tasks.
#[derive(Clone)]
pub struct StateClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateClient")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl StateClient {
    /// Creates a client. The connection is made on first use and remade
    /// after failures, so this only fails on bad configuration (address, TLS
    /// material, header values) — a server that is down is not an error yet.
    /// Must be called inside a tokio runtime, and the client used on that
    /// runtime: its connection is driven by a task spawned there (once the
    /// runtime is gone, every call fails).
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let channel = endpoint(&config)?.connect_lazy();
        let header = |name: &str, v: String| -> Result<AsciiMetadataValue> {
            MetadataValue::try_from(v).map_err(|_| {
                Error::client(
                    ErrorKind::Config,
                    format!("{name} must be visible ASCII to be sent as a gRPC header"),
                )
            })
        };
        let authorization = config
            .bearer_token
            .clone()
            .map(|t| header("bearer token", format!("Bearer {t}")))
            .transpose()?;
        let tenant = config
            .tenant
            .clone()
            .map(|t| header("tenant", t))
            .transpose()?;
        let stub = StateServiceClient::new(channel)
            .max_encoding_message_size(config.max_send_message_bytes)
            .max_decoding_message_size(config.max_receive_message_bytes);
        Ok(StateClient {
            inner: Arc::new(Inner {
                stub,
                authorization,
                tenant,
                timeout: config.timeout,
                retry: config.retry,
                request_ids: config.request_ids,
            }),
        })
    }

    /// Shorthand: `connect(ClientConfig::new(address))`.
    pub async fn connect_to(address: impl Into<String>) -> Result<Self> {
        Self::connect(ClientConfig::new(address)).await
    }

    /// The generated stub on the same connection, for anything this client
    /// does not wrap (add `authorization` / `x-tenant-id` yourself).
    pub fn stub(&self) -> StateServiceClient<Channel> {
        self.inner.stub.clone()
    }

    /// Reads a key; `None` if it does not exist.
    pub async fn get(&self, key: impl Into<String>) -> Result<Option<Entry>> {
        let req = pb::GetRequest {
            key: key.into(),
            refresh_ttl: None,
        };
        let resp = self
            .call(true, req, |mut c, r| async move { c.get(r).await })
            .await?;
        get_response(resp)
    }

    /// Stores a value without expiry (last write wins). Returns the new version.
    pub async fn put(&self, key: impl Into<String>, value: impl Into<Value>) -> Result<u64> {
        self.put_with(key, value, WriteOptions::default()).await
    }

    /// Stores a value with a condition / keep_ttl / request id.
    pub async fn put_with(
        &self,
        key: impl Into<String>,
        value: impl Into<Value>,
        options: WriteOptions,
    ) -> Result<u64> {
        let request_id = self.request_id(options.request_id);
        let safe = !request_id.is_empty() || options.condition != Condition::None;
        let req = pb::PutRequest {
            key: key.into(),
            value: Some(value.into().into()),
            condition: options.condition.to_pb(),
            keep_ttl: options.keep_ttl,
            request_id,
        };
        let resp = self
            .call(safe, req, |mut c, r| async move { c.put(r).await })
            .await?;
        Ok(resp.version)
    }

    /// Stores a value that expires after `ttl` (at least 1 ms).
    pub async fn put_with_ttl(
        &self,
        key: impl Into<String>,
        value: impl Into<Value>,
        ttl: Duration,
    ) -> Result<u64> {
        self.put_with_ttl_with(key, value, ttl, WriteOptions::default())
            .await
    }

    /// `put_with_ttl` with a condition / request id (`keep_ttl` is ignored).
    pub async fn put_with_ttl_with(
        &self,
        key: impl Into<String>,
        value: impl Into<Value>,
        ttl: Duration,
        options: WriteOptions,
    ) -> Result<u64> {
        let request_id = self.request_id(options.request_id);
        let safe = !request_id.is_empty() || options.condition != Condition::None;
        let req = pb::PutWithTtlRequest {
            key: key.into(),
            value: Some(value.into().into()),
            ttl: Some(duration_pb(ttl)),
            condition: options.condition.to_pb(),
            request_id,
        };
        let resp = self
            .call(safe, req, |mut c, r| async move { c.put_with_ttl(r).await })
            .await?;
        Ok(resp.version)
    }

    /// Deletes a key; `true` if it existed.
    pub async fn delete(&self, key: impl Into<String>) -> Result<bool> {
        self.delete_with(key, WriteOptions::default()).await
    }

    /// Deletes with a condition (`IfExists` / `IfVersion`) or a request id.
    pub async fn delete_with(&self, key: impl Into<String>, options: WriteOptions) -> Result<bool> {
        let request_id = self.request_id(options.request_id);
        let safe = !request_id.is_empty() || options.condition != Condition::None;
        let req = pb::DeleteRequest {
            key: key.into(),
            condition: options.condition.to_pb(),
            request_id,
        };
        let resp = self
            .call(safe, req, |mut c, r| async move { c.delete(r).await })
            .await?;
        Ok(resp.deleted)
    }

    /// Adds `delta` to an int value (an absent key starts at 0).
    pub async fn increment(&self, key: impl Into<String>, delta: i64) -> Result<Counter> {
        self.increment_with(key, delta, IncrementOptions::default())
            .await
    }

    /// `increment` with a TTL for a created key and/or an explicit request id.
    pub async fn increment_with(
        &self,
        key: impl Into<String>,
        delta: i64,
        options: IncrementOptions,
    ) -> Result<Counter> {
        let request_id = self.request_id(options.request_id);
        let safe = !request_id.is_empty();
        let req = pb::IncrementRequest {
            key: key.into(),
            delta,
            ttl: options.ttl.map(duration_pb),
            request_id,
        };
        let resp = self
            .call(safe, req, |mut c, r| async move { c.increment(r).await })
            .await?;
        Ok(Counter {
            value: resp.value,
            version: resp.version,
        })
    }

    /// Sets the expiry of an existing key; `false` if it was absent.
    /// Retried: applying the same expiry twice leaves the same state.
    pub async fn expire(&self, key: impl Into<String>, ttl: Duration) -> Result<bool> {
        let req = pb::ExpireRequest {
            key: key.into(),
            ttl: Some(duration_pb(ttl)),
        };
        let resp = self
            .call(true, req, |mut c, r| async move { c.expire(r).await })
            .await?;
        Ok(resp.existed)
    }

    /// Removes the expiry of a key; `false` if it was absent. Retried (idempotent).
    pub async fn persist(&self, key: impl Into<String>) -> Result<bool> {
        let req = pb::PersistRequest { key: key.into() };
        let resp = self
            .call(true, req, |mut c, r| async move { c.persist(r).await })
            .await?;
        Ok(resp.existed)
    }

    /// Reads many keys (one consistent snapshot), results in request order.
    pub async fn batch_get<K: Into<String>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Entry>>> {
        let req = pb::BatchGetRequest {
            keys: keys.into_iter().map(Into::into).collect(),
        };
        let resp = self
            .call(true, req, |mut c, r| async move { c.batch_get(r).await })
            .await?;
        resp.results.into_iter().map(get_response).collect()
    }

    /// Writes many keys; NOT atomic: one result per item, in order (a failed
    /// condition is that item's `Err`, the others are still applied).
    pub async fn batch_put(&self, items: Vec<BatchPutItem>) -> Result<Vec<Result<u64>>> {
        let mut safe = true;
        let keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
        let items: Vec<pb::BatchPutItem> = items
            .into_iter()
            .map(|i| {
                let request_id = self.request_id(i.options.request_id);
                safe &= !request_id.is_empty() || i.options.condition != Condition::None;
                pb::BatchPutItem {
                    key: i.key,
                    value: Some(i.value.into()),
                    ttl: i.ttl.map(duration_pb),
                    condition: i.options.condition.to_pb(),
                    keep_ttl: i.options.keep_ttl,
                    request_id,
                }
            })
            .collect();
        let req = pb::BatchPutRequest { items };
        let resp = self
            .call(safe, req, |mut c, r| async move { c.batch_put(r).await })
            .await?;
        Ok(resp
            .results
            .into_iter()
            .zip(keys)
            .map(|(r, key)| match r.outcome {
                Some(pb::write_result::Outcome::Version(v)) => Ok(v),
                Some(pb::write_result::Outcome::Failure(f)) => {
                    Err(Error::from_condition_failure(&key, &f))
                }
                None => Err(Error::client(
                    ErrorKind::Internal,
                    "BatchPut result without an outcome",
                )),
            })
            .collect())
    }

    /// Deletes many keys; `true` per key that existed. Not retried: a repeat
    /// would report keys the first attempt deleted as absent.
    pub async fn batch_delete<K: Into<String>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<bool>> {
        let req = pb::BatchDeleteRequest {
            keys: keys.into_iter().map(Into::into).collect(),
        };
        let resp = self
            .call(
                false,
                req,
                |mut c, r| async move { c.batch_delete(r).await },
            )
            .await?;
        Ok(resp.results.into_iter().map(|r| r.deleted).collect())
    }

    /// Applies all ops or none. A failed check is an error whose
    /// `op_index()` names the op. The transaction gets a fresh request id.
    pub async fn transact(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.transact_with_id(ops, None).await
    }

    /// `transact` with an explicit request id (`None`: a fresh one).
    pub async fn transact_with_id(
        &self,
        ops: Vec<Op>,
        request_id: Option<String>,
    ) -> Result<Vec<OpResult>> {
        let request_id = self.request_id(request_id);
        let safe = !request_id.is_empty();
        let req = pb::TransactRequest {
            ops: ops.into_iter().map(Op::into_pb).collect(),
            request_id,
        };
        let resp = self
            .call(safe, req, |mut c, r| async move { c.transact(r).await })
            .await?;
        resp.results
            .into_iter()
            .map(|r| match r.result {
                Some(pb::transact_result::Result::Put(p)) => {
                    Ok(OpResult::Put { version: p.version })
                }
                Some(pb::transact_result::Result::Delete(d)) => {
                    Ok(OpResult::Delete { deleted: d.deleted })
                }
                Some(pb::transact_result::Result::Increment(i)) => {
                    Ok(OpResult::Increment(Counter {
                        value: i.value,
                        version: i.version,
                    }))
                }
                None => Err(Error::client(
                    ErrorKind::Internal,
                    "Transact result without an outcome",
                )),
            })
            .collect()
    }

    /// Read-modify-write with compare-and-set: reads `key`, calls `f` with
    /// its value (`None` if absent), writes the result only if the key still
    /// has the version read (or is still absent), and on a lost race re-reads
    /// and calls `f` again — up to `RetryPolicy::update_attempts` times with
    /// jittered backoff. The key's expiry is kept. Returns the written value
    /// and its version.
    ///
    /// `f` may run more than once, so it must be a pure function of its
    /// input. Make it absolute where you can ("offset = 500", not "+= 100"):
    /// if a write's reply is lost and the server does not deduplicate by
    /// request id, the retry sees the already-updated value and applies `f`
    /// to it again.
    pub async fn update<F>(&self, key: impl Into<String>, mut f: F) -> Result<(Value, u64)>
    where
        F: FnMut(Option<&Value>) -> Value,
    {
        let key = key.into();
        let attempts = self.inner.retry.update_attempts.max(1);
        let mut attempt = 0;
        loop {
            let current = self.get(key.clone()).await?;
            let next = f(current.as_ref().map(|e| &e.value));
            let condition = match &current {
                Some(e) => Condition::IfVersion(e.version),
                None => Condition::IfAbsent,
            };
            let options = WriteOptions {
                condition,
                keep_ttl: true,
                request_id: None,
            };
            match self.put_with(key.clone(), next.clone(), options).await {
                Ok(version) => return Ok((next, version)),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::VersionMismatch | ErrorKind::AlreadyExists
                    ) && attempt + 1 < attempts =>
                {
                    tokio::time::sleep(self.inner.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The tenant's keys starting with `prefix`, paged transparently (each
    /// page is retried on its own). Not a snapshot: see the List contract.
    pub fn list(&self, prefix: impl Into<String>) -> BoxStream<'static, Result<String>> {
        self.pages(prefix.into(), false)
            .map_ok(|page| futures::stream::iter(page.keys.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Like [`list`](Self::list) with each key's value, version and TTL.
    pub fn list_entries(&self, prefix: impl Into<String>) -> BoxStream<'static, Result<Entry>> {
        self.pages(prefix.into(), true)
            .map_ok(|page| futures::stream::iter(page.entries.into_iter().map(entry)))
            .try_flatten()
            .boxed()
    }

    fn pages(
        &self,
        prefix: String,
        include_values: bool,
    ) -> impl Stream<Item = Result<pb::ListResponse>> + use<> {
        let client = self.clone();
        // State: the next page token, or None once the listing is done.
        futures::stream::try_unfold(Some(String::new()), move |token| {
            let client = client.clone();
            let prefix = prefix.clone();
            async move {
                let Some(page_token) = token else {
                    return Ok(None);
                };
                let req = pb::ListRequest {
                    prefix,
                    page_size: 0,
                    page_token,
                    include_values,
                };
                let resp = client
                    .call(true, req, |mut c, r| async move { c.list(r).await })
                    .await?;
                let next = (!resp.next_page_token.is_empty()).then(|| resp.next_page_token.clone());
                Ok(Some((resp, next)))
            }
        })
    }

    fn request_id(&self, given: Option<String>) -> String {
        match given {
            Some(id) => id,
            None if self.inner.request_ids => new_request_id(),
            None => String::new(),
        }
    }

    /// One RPC with the client's metadata and deadline; repeated while the
    /// error is transient, `safe` says the request may be repeated, and the
    /// retry budget lasts. Every attempt sends the same message (so the same
    /// request id).
    async fn call<Req, Resp, F, Fut>(&self, safe: bool, req: Req, f: F) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let inner = &self.inner;
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(inner.timeout);
            if let Some(v) = &inner.authorization {
                request.metadata_mut().insert("authorization", v.clone());
            }
            if let Some(v) = &inner.tenant {
                request.metadata_mut().insert("x-tenant-id", v.clone());
            }
            let err =
                match tokio::time::timeout(inner.timeout, f(inner.stub.clone(), request)).await {
                    Ok(Ok(resp)) => return Ok(resp.into_inner()),
                    Ok(Err(status)) => Error::from_status(&status),
                    Err(_) => Error::deadline(inner.timeout),
                };
            if !safe || !err.is_transient() {
                return Err(err);
            }
            let delay = err
                .retry_after()
                .unwrap_or_else(|| inner.retry.backoff(attempt));
            if start.elapsed() + delay > inner.retry.max_elapsed {
                return Err(err);
            }
            tokio::time::sleep(delay).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

fn endpoint(config: &ClientConfig) -> Result<Endpoint> {
    let address = if config.address.contains("://") {
        config.address.clone()
    } else if config.tls.is_some() {
        format!("https://{}", config.address)
    } else {
        format!("http://{}", config.address)
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Error::client(ErrorKind::Config, format!("{what}: {e}"))
    };
    let mut ep = Endpoint::from_shared(address.clone())
        .map_err(|e| bad(&format!("invalid address {address:?}"), &e))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let mut tc = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            tc = tc.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            tc = tc.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &tls.domain {
            tc = tc.domain_name(domain.clone());
        }
        ep = ep
            .tls_config(tc)
            .map_err(|e| bad("TLS configuration", &e))?;
    }
    Ok(ep)
}

fn get_response(resp: pb::GetResponse) -> Result<Option<Entry>> {
    match (resp.found, resp.entry) {
        (true, Some(e)) => entry(e).map(Some),
        _ => Ok(None),
    }
}

fn entry(e: pb::Entry) -> Result<Entry> {
    let value = e
        .value
        .ok_or_else(|| Error::client(ErrorKind::Internal, "entry without a value"))?;
    Ok(Entry {
        key: e.key,
        value: Value::try_from(value)?,
        version: e.version,
        ttl: e.ttl.map(duration_from_pb),
    })
}

pub(crate) fn duration_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn duration_from_pb(d: prost_types::Duration) -> Duration {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// A random UUID v4: an id per logical write that no other writer will pick.
pub fn new_request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness (very early boot, seccomp): fall back to the
        // process-seeded generator; ids only need to be unique per window.
        b = fastrand::u128(..).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn conditions_map_to_the_wire() {
        assert_eq!(Condition::None.to_pb(), None);
        assert_eq!(
            Condition::IfVersion(7).to_pb(),
            Some(pb::Condition {
                kind: Some(pb::condition::Kind::IfVersion(7))
            })
        );
    }

    fn fast_retries() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        }
    }

    /// Runs `call` with a fake transport that fails `failures` times with
    /// `status`, then answers; returns the result and the request ids seen.
    async fn with_fake_transport(
        safe: bool,
        failures: usize,
        status: tonic::Status,
    ) -> (Result<pb::IncrementResponse>, Vec<String>) {
        let client = StateClient::connect(ClientConfig::new("127.0.0.1:1").retry(fast_retries()))
            .await
            .unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let req = pb::IncrementRequest {
            key: "k".into(),
            delta: 1,
            ttl: None,
            request_id: client.request_id(None),
        };
        let result = client
            .call(
                safe,
                req,
                |_stub, r: tonic::Request<pb::IncrementRequest>| {
                    let mut seen = seen.lock().unwrap();
                    seen.push(r.get_ref().request_id.clone());
                    let attempt = seen.len();
                    let status = status.clone();
                    async move {
                        if attempt <= failures {
                            Err(status)
                        } else {
                            Ok(tonic::Response::new(pb::IncrementResponse {
                                value: 1,
                                version: 1,
                            }))
                        }
                    }
                },
            )
            .await;
        (result, seen.into_inner().unwrap())
    }

    #[tokio::test]
    async fn retries_of_a_write_reuse_its_request_id() {
        let (result, ids) = with_fake_transport(true, 2, tonic::Status::unavailable("down")).await;
        assert!(result.is_ok());
        assert_eq!(ids.len(), 3);
        assert!(!ids[0].is_empty());
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }

    #[tokio::test]
    async fn an_unsafe_call_is_attempted_once() {
        let (result, ids) = with_fake_transport(false, 1, tonic::Status::unavailable("down")).await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(ids.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_condition_is_not_retried() {
        let (result, ids) =
            with_fake_transport(true, 1, tonic::Status::failed_precondition("no")).await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::FailedPrecondition);
        assert_eq!(ids.len(), 1);
    }

    #[tokio::test]
    async fn a_bad_address_is_a_config_error() {
        let err = StateClient::connect_to("http://bad host:1")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn a_non_ascii_token_is_a_config_error() {
        let err = StateClient::connect(ClientConfig::new("127.0.0.1:1").bearer_token("tök\n"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_after_the_retry_budget() {
        // Port 1 on loopback refuses connections.
        let client = StateClient::connect(ClientConfig::new("127.0.0.1:1").retry(RetryPolicy {
            max_elapsed: Duration::from_millis(300),
            ..RetryPolicy::default()
        }))
        .await
        .unwrap();
        let err = client.get("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
}
