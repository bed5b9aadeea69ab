//! The Watch RPC: a server stream, so it has its own path beside the RPC
//! table. It is admitted like the others (identity, read scope, the
//! tenant's rate limit, a concurrency slot), validates the prefix and the
//! resume token (bound to tenant and prefix like List's page tokens),
//! subscribes through `Store::watch`, and then gives the concurrency slot
//! back: an open stream counts against the watcher limits instead, not
//! against --max-concurrent-requests.
//!
//! The stream starts with a KIND_STARTED event carrying the start position,
//! then one event per change; it ends with RESYNC_REQUIRED when the store
//! cannot continue without a gap, and with SHUTTING_DOWN when this instance
//! stops (the client resumes elsewhere with its last token).

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use tokio::sync::watch as signal;
use tonic::{Request, Response, Status};

use super::StateApi;
use crate::{
    duration,
    error::{Error, Result},
    metrics::{MethodMetrics, RequestObserver},
    pb,
    store::{
        Namespace, Store,
        watch::{Cursor, Event, EventKind, Subscription},
    },
    tenancy::Scope,
};

/// The response stream of Watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// What a watch token is bound to besides the tenant: the prefix, marked so
/// that a List page token for the same prefix is not a watch token.
fn binding(prefix: &str) -> String {
    format!("{prefix}\0watch")
}

impl<S: Store> StateApi<S> {
    pub(super) async fn watch_rpc(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        static METRICS: MethodMetrics = MethodMetrics::new("Watch");
        let admitted = self.gate.admit(&req, Scope::Read);
        let tenant = admitted.as_ref().ok().map(|c| c.identity.tenant.as_str());
        let observer = RequestObserver::start(&METRICS, tenant);
        let result = match admitted {
            Ok(caller) => {
                let ns = self.keyspace.namespace(caller.identity.tenant.as_str());
                let opened = self.open_watch(ns, req.into_inner()).await;
                // The concurrency slot covers the setup only.
                drop(caller);
                opened
            }
            Err(e) => Err(e),
        };
        observer.finish(result).map(Response::new)
    }

    async fn open_watch(&self, ns: Namespace, r: pb::WatchRequest) -> Result<WatchStream> {
        self.limits.prefix(&r.prefix)?;
        let tenant = ns.tenant().to_string();
        let bound = binding(&r.prefix);
        let from = if r.resume_token.is_empty() {
            None
        } else {
            let raw = self
                .page_tokens
                .decode(&tenant, &bound, &r.resume_token)
                .map_err(|_| invalid_token())?;
            Some(Cursor::decode(&raw).ok_or_else(invalid_token)?)
        };
        let sub = self.store.watch(&ns, &r.prefix, from).await?;
        let out = Out {
            tokens: self.page_tokens.clone(),
            tenant,
            bound,
            ns,
            include_values: r.include_values,
            epoch: sub.start.epoch,
        };
        let started = pb::WatchEvent {
            kind: pb::watch_event::Kind::Started.into(),
            entry: None,
            resume_token: out.token(&sub.start),
        };
        let state = StreamState {
            sub,
            out: Arc::new(out),
            first: Some(started),
            stopping: self.stopping.clone(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_message)))
    }
}

fn invalid_token() -> Error {
    Error::invalid_field(
        "resume_token",
        "resume_token is not valid for this watch: pass the resume_token of an event of a \
         Watch with the same prefix and tenant",
    )
}

/// How events become messages for one watcher.
struct Out {
    tokens: super::PageTokens,
    tenant: String,
    bound: String,
    ns: Namespace,
    include_values: bool,
    epoch: u64,
}

impl Out {
    fn token(&self, c: &Cursor) -> String {
        self.tokens.encode(&self.tenant, &self.bound, &c.encode())
    }

    fn message(&self, ev: &Event) -> pb::WatchEvent {
        use pb::watch_event::Kind;
        let kind = match ev.kind {
            EventKind::Put => Kind::Put,
            EventKind::Delete => Kind::Delete,
            EventKind::Expire => Kind::Expire,
        };
        let key = self
            .ns
            .client_key(ev.storage_key.as_bytes())
            .unwrap_or_default()
            .to_string();
        let with_value = self.include_values && ev.kind == EventKind::Put;
        pb::WatchEvent {
            kind: kind.into(),
            entry: Some(pb::Entry {
                key,
                value: if with_value { ev.value.clone() } else { None },
                version: ev.version,
                ttl: if with_value {
                    ev.ttl.map(duration::to_proto)
                } else {
                    None
                },
            }),
            resume_token: self.token(&Cursor {
                epoch: self.epoch,
                position: ev.position,
            }),
        }
    }
}

struct StreamState {
    sub: Subscription,
    out: Arc<Out>,
    first: Option<pb::WatchEvent>,
    stopping: Option<signal::Receiver<bool>>,
    done: bool,
}

/// Completes when the server starts shutting down (never without a signal).
async fn stopped(rx: Option<&mut signal::Receiver<bool>>) {
    if let Some(rx) = rx
        && rx.wait_for(|s| *s).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

async fn next_message(
    mut st: StreamState,
) -> Option<(Result<pb::WatchEvent, Status>, StreamState)> {
    if st.done {
        return None;
    }
    if let Some(first) = st.first.take() {
        return Some((Ok(first), st));
    }
    let next = tokio::select! {
        n = st.sub.next() => n,
        () = stopped(st.stopping.as_mut()) => Some(Err(Error::ShuttingDown)),
    };
    match next {
        None => None,
        Some(Ok(ev)) => {
            let msg = st.out.message(&ev);
            Some((Ok(msg), st))
        }
        Some(Err(e)) => {
            st.done = true;
            crate::telemetry::request_failed("Watch", &e);
            Some((Err(Status::from(e)), st))
        }
    }
}
