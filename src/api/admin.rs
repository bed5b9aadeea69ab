//! The admin surface: `stateservice.v1.AdminService` (Export, Import, Purge,
//! Stats). Thin like the state handlers: admit the caller with the `admin`
//! scope, resolve the target tenant (its own, or another one under an
//! operator grant: `tenancy::Identity::admin_target`), validate, and drive
//! the typed `Store` methods; every storage decision lives in `store`, every
//! `Status` is built in `error`.
//!
//! The streaming RPCs hold their caller's concurrency slot until the stream
//! ends, and do their work in bounded steps (a page, a batch of
//! --admin-batch-keys keys), so a dropped client stops the work at the next
//! step and no step holds Redis or the memory store's lock for long.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{Caller, Gate, Limits, PageTokens};
use crate::{
    duration,
    error::{Error, Result},
    metrics::{MethodMetrics, RequestObserver},
    pb::{self, admin_service_server::AdminService},
    store::{self, ImportEntry, ImportPolicy, Imported, Keyspace, Namespace, PageLimits, Store},
    tenancy::Scope,
};

/// How often Purge and Stats report their running totals.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Failures an ImportResponse lists (all are counted).
const MAX_LISTED_FAILURES: usize = 100;

/// Versions are stored as 16 decimal digits (docs/design/storage-format.md).
const VERSION_LIMIT: u64 = 10_000_000_000_000_000;

type AdminStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The AdminService implementation over any store.
pub struct AdminApi<S> {
    store: Arc<S>,
    gate: Arc<Gate>,
    keyspace: Keyspace,
    limits: Limits,
    page_tokens: PageTokens,
    /// Keys per Purge/Stats step (--admin-batch-keys).
    batch_keys: usize,
    /// Least time between two Purge/Stats steps (--admin-step-interval).
    step_interval: Duration,
}

impl<S: Store> AdminApi<S> {
    pub fn new(
        store: Arc<S>,
        gate: Arc<Gate>,
        keyspace: Keyspace,
        limits: Limits,
        page_tokens: PageTokens,
        batch_keys: usize,
        step_interval: Duration,
    ) -> Self {
        Self {
            store,
            gate,
            keyspace,
            limits,
            page_tokens,
            batch_keys,
            step_interval,
        }
    }

    /// The namespace an admitted admin call acts on.
    fn target(&self, caller: &Caller, tenant: &str) -> Result<Namespace> {
        let tenant = caller.identity.admin_target(tenant)?;
        Ok(self.keyspace.namespace(tenant.as_str()))
    }
}

pub fn to_backup_entry(e: store::Entry) -> pb::BackupEntry {
    pb::BackupEntry {
        key: e.key,
        value: Some(e.value),
        version: e.version,
        ttl: e.ttl.map(duration::to_proto),
    }
}

/// Runs an RPC's setup under the metrics observer (the count, latency and
/// log line of a streaming RPC cover its admission and setup).
fn observe<T>(
    metrics: &'static MethodMetrics,
    tenant: Option<&str>,
    result: Result<T>,
) -> Result<Response<T>, Status> {
    RequestObserver::start(metrics, tenant)
        .finish(result)
        .map(Response::new)
}

/// A failure inside a stream: logged like a failed request, sent as the
/// stream's final status.
fn stream_error(method: &'static str, e: Error) -> Status {
    crate::telemetry::request_failed(method, &e);
    Status::from(e)
}

#[tonic::async_trait]
impl<S: Store> AdminService for AdminApi<S> {
    type ExportStream = AdminStream<pb::ExportPage>;
    type PurgeStream = AdminStream<pb::PurgeProgress>;
    type StatsStream = AdminStream<pb::StatsProgress>;

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        static METRICS: MethodMetrics = MethodMetrics::new("Export");
        let result = self.gate.admit(&req, Scope::Admin).and_then(|caller| {
            let r = req.into_inner();
            let ns = self.target(&caller, &r.tenant)?;
            export_stream(self, caller, ns, r)
        });
        observe(&METRICS, None, result)
    }

    async fn import(
        &self,
        req: Request<Streaming<pb::ImportRequest>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        static METRICS: MethodMetrics = MethodMetrics::new("Import");
        let result = match self.gate.admit(&req, Scope::Admin) {
            Ok(caller) => import(self, &caller, req.into_inner()).await,
            Err(e) => Err(e),
        };
        observe(&METRICS, None, result)
    }

    async fn purge(
        &self,
        req: Request<pb::PurgeRequest>,
    ) -> Result<Response<Self::PurgeStream>, Status> {
        static METRICS: MethodMetrics = MethodMetrics::new("Purge");
        let result = self.gate.admit(&req, Scope::Admin).and_then(|caller| {
            let r = req.into_inner();
            let ns = self.target(&caller, &r.tenant)?;
            self.limits.prefix(&r.prefix)?;
            if r.prefix.is_empty() && !r.all_keys {
                return Err(Error::invalid_field(
                    "all_keys",
                    "an empty prefix purges the whole tenant: set all_keys to confirm",
                ));
            }
            let stream = scan_stream(self, caller, ns, r.prefix, ScanKind::Purge);
            Ok(Box::pin(futures::StreamExt::map(stream, |r| {
                r.map(|(deleted, _, done)| pb::PurgeProgress { deleted, done })
                    .map_err(|e| stream_error("Purge", e))
            })) as Self::PurgeStream)
        });
        observe(&METRICS, None, result)
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<Self::StatsStream>, Status> {
        static METRICS: MethodMetrics = MethodMetrics::new("Stats");
        let result = self.gate.admit(&req, Scope::Admin).and_then(|caller| {
            let r = req.into_inner();
            let ns = self.target(&caller, &r.tenant)?;
            self.limits.prefix(&r.prefix)?;
            let stream = scan_stream(self, caller, ns, r.prefix, ScanKind::Stats);
            Ok(Box::pin(futures::StreamExt::map(stream, |r| {
                r.map(|(keys, bytes, done)| pb::StatsProgress { keys, bytes, done })
                    .map_err(|e| stream_error("Stats", e))
            })) as Self::StatsStream)
        });
        observe(&METRICS, None, result)
    }
}

/// Export: validate, then one store page per stream message, each with the
/// token that resumes after it.
fn export_stream<S: Store>(
    api: &AdminApi<S>,
    caller: Caller,
    ns: Namespace,
    r: pb::ExportRequest,
) -> Result<AdminStream<pb::ExportPage>> {
    api.limits.prefix(&r.prefix)?;
    let limits = PageLimits {
        max_keys: api.limits.page_size(r.page_size)?,
        max_bytes: api.limits.max_response_bytes,
    };
    let cursor = if r.page_token.is_empty() {
        None
    } else {
        Some(
            api.page_tokens
                .decode(ns.tenant(), &r.prefix, &r.page_token)?,
        )
    };
    struct State<S> {
        store: Arc<S>,
        tokens: PageTokens,
        ns: Namespace,
        prefix: String,
        limits: PageLimits,
        cursor: Option<Vec<u8>>,
        done: bool,
        _caller: Caller,
    }
    let state = State {
        store: api.store.clone(),
        tokens: api.page_tokens.clone(),
        ns,
        prefix: r.prefix,
        limits,
        cursor,
        done: false,
        _caller: caller,
    };
    Ok(Box::pin(futures::stream::unfold(
        state,
        |mut st| async move {
            if st.done {
                return None;
            }
            let page = st
                .store
                .export(&st.ns, &st.prefix, st.limits, st.cursor.as_deref())
                .await;
            match page {
                Ok(page) => {
                    st.done = page.cursor.is_none();
                    let next_page_token = page
                        .cursor
                        .as_deref()
                        .map(|c| st.tokens.encode(st.ns.tenant(), &st.prefix, c))
                        .unwrap_or_default();
                    st.cursor = page.cursor;
                    let msg = pb::ExportPage {
                        entries: page.entries.into_iter().map(to_backup_entry).collect(),
                        next_page_token,
                        skipped: page.skipped,
                    };
                    Some((Ok(msg), st))
                }
                Err(e) => {
                    st.done = true;
                    Some((Err(stream_error("Export", e)), st))
                }
            }
        },
    )))
}

fn policy(p: i32) -> Result<ImportPolicy> {
    match pb::ImportPolicy::try_from(p) {
        Ok(pb::ImportPolicy::Overwrite) => Ok(ImportPolicy::Overwrite),
        Ok(pb::ImportPolicy::SkipExisting) => Ok(ImportPolicy::SkipExisting),
        Ok(pb::ImportPolicy::NewerVersion) => Ok(ImportPolicy::NewerVersion),
        _ => Err(Error::invalid_field(
            "policy",
            "policy is required on the first message: IMPORT_POLICY_OVERWRITE, \
             IMPORT_POLICY_SKIP_EXISTING or IMPORT_POLICY_NEWER_VERSION",
        )),
    }
}

/// One entry of an import, validated like a put's key, value and TTL.
fn import_entry(limits: &Limits, e: pb::BackupEntry) -> Result<ImportEntry> {
    limits.key(&e.key)?;
    if e.version >= VERSION_LIMIT {
        return Err(Error::invalid_field(
            "version",
            "version must be below 10^16 (stored as 16 digits)",
        ));
    }
    Ok(ImportEntry {
        value: limits.value(e.value)?,
        ttl: limits.optional_ttl(e.ttl, "ttl")?,
        version: e.version,
        key: e.key,
    })
}

/// Import: the first message names tenant and policy; each message's
/// entries are validated (a bad one is a listed failure) and written with
/// one store call.
async fn import<S: Store>(
    api: &AdminApi<S>,
    caller: &Caller,
    mut stream: Streaming<pb::ImportRequest>,
) -> Result<pb::ImportResponse> {
    let mut target: Option<(Namespace, ImportPolicy, i32)> = None;
    let mut resp = pb::ImportResponse::default();
    let mut index: u64 = 0;
    let fail = |resp: &mut pb::ImportResponse, index: u64, key: String, e: &Error| {
        resp.failed += 1;
        if resp.failures.len() < MAX_LISTED_FAILURES {
            resp.failures.push(pb::ImportFailure {
                index,
                key,
                reason: e.reason().to_string(),
                message: e.client_message(),
            });
        }
    };
    while let Some(msg) = stream.message().await.map_err(|s| {
        // A message that does not decode, or the client going away: what
        // was applied before stays applied (the counts are lost with the
        // call; re-running with newer-version-wins skips them).
        Error::invalid(format!(
            "the import stream broke off: {}; entries before it were applied",
            s.message()
        ))
    })? {
        let (ns, policy) = match &target {
            None => {
                let ns = api.target(caller, &msg.tenant)?;
                let p = policy(msg.policy)?;
                target = Some((ns.clone(), p, msg.policy));
                (ns, p)
            }
            Some((ns, p, raw)) => {
                if !msg.tenant.is_empty() && msg.tenant != ns.tenant() {
                    return Err(Error::invalid_field(
                        "tenant",
                        "every message of an import names the same tenant (or none after the \
                         first)",
                    ));
                }
                if msg.policy != 0 && msg.policy != *raw {
                    return Err(Error::invalid_field(
                        "policy",
                        "every message of an import carries the same policy (or none after the \
                         first)",
                    ));
                }
                (ns.clone(), *p)
            }
        };
        if msg.entries.len() > api.limits.max_batch_items {
            return Err(Error::limit(
                format_args!("an import message carries {} entries", msg.entries.len()),
                api.limits.max_batch_items as u64,
                " entries",
                "--max-batch-items",
            ));
        }
        let mut valid = Vec::with_capacity(msg.entries.len());
        let mut positions = Vec::with_capacity(msg.entries.len());
        for e in msg.entries {
            let key = e.key.clone();
            match import_entry(&api.limits, e) {
                Ok(entry) => {
                    valid.push(entry);
                    positions.push(index);
                }
                Err(err) => fail(&mut resp, index, key, &err),
            }
            index += 1;
        }
        let keys: Vec<String> = valid.iter().map(|e| e.key.clone()).collect();
        let results = api.store.import(&ns, valid, policy).await?;
        for ((result, pos), key) in results.into_iter().zip(positions).zip(keys) {
            match result {
                Ok(Imported::Written { .. }) => resp.written += 1,
                Ok(Imported::Skipped { .. }) => resp.skipped += 1,
                Err(f) => fail(&mut resp, pos, key, &Error::from(f)),
            }
        }
    }
    if target.is_none() {
        return Err(Error::invalid(
            "the import stream carried no message; send tenant and policy first",
        ));
    }
    Ok(resp)
}

#[derive(Clone, Copy)]
enum ScanKind {
    Purge,
    Stats,
}

/// Purge and Stats: bounded store steps until the scan completes, reporting
/// (keys, bytes, done) about once a second and at the end.
fn scan_stream<S: Store>(
    api: &AdminApi<S>,
    caller: Caller,
    ns: Namespace,
    prefix: String,
    kind: ScanKind,
) -> impl Stream<Item = Result<(u64, u64, bool)>> + Send + 'static {
    struct State<S> {
        store: Arc<S>,
        ns: Namespace,
        prefix: String,
        batch: usize,
        interval: Duration,
        kind: ScanKind,
        cursor: Option<Vec<u8>>,
        keys: u64,
        bytes: u64,
        done: bool,
        _caller: Caller,
    }
    let state = State {
        store: api.store.clone(),
        ns,
        prefix,
        batch: api.batch_keys,
        interval: api.step_interval,
        kind,
        cursor: None,
        keys: 0,
        bytes: 0,
        done: false,
        _caller: caller,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let since = Instant::now();
        loop {
            let step_start = Instant::now();
            let step = match st.kind {
                ScanKind::Purge => {
                    st.store
                        .purge_step(&st.ns, &st.prefix, st.cursor.as_deref(), st.batch)
                        .await
                }
                ScanKind::Stats => {
                    st.store
                        .stats_step(&st.ns, &st.prefix, st.cursor.as_deref(), st.batch)
                        .await
                }
            };
            let step = match step {
                Ok(s) => s,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            st.keys += step.keys;
            st.bytes += step.bytes;
            st.cursor = step.cursor;
            if st.cursor.is_none() {
                st.done = true;
                return Some((Ok((st.keys, st.bytes, true)), st));
            }
            if since.elapsed() >= PROGRESS_INTERVAL {
                return Some((Ok((st.keys, st.bytes, false)), st));
            }
            // Paced: the purge's share of the service and of Redis is
            // bounded. Unpaced, still yield: the memory backend never
            // awaits, and the server may run on a single thread.
            match st.interval.checked_sub(step_start.elapsed()) {
                Some(rest) if !rest.is_zero() => tokio::time::sleep(rest).await,
                _ => tokio::task::yield_now().await,
            }
        }
    })
}
