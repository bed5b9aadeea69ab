//! The gRPC surface: `stateservice.v1.StateService`, and the admin service
//! beside it (`admin`).
//!
//! A request's path through this module: the `guard` runs the `gate` on the
//! request's headers, before the body is read (identity, scope, rate, tenant
//! share and concurrency limits); the RPC table below picks
//! the handler, opens the caller's namespace and runs the handler under the
//! request's deadline; the handler (`handlers`, one inner function per RPC
//! returning the crate's `Result`) validates and converts the request, calls
//! one typed `Store` method and converts the answer. All storage semantics
//! live in `store`; every `Status` is built in `error`.

pub mod admin;
pub mod codec;
pub mod gate;
pub mod guard;
mod handlers;
pub mod http;
pub mod page_token;
pub mod validate;
mod watch;

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use crate::{
    error::{Error, Result},
    metrics::{MethodMetrics, RequestObserver},
    pb::{self, state_service_server::StateService},
    store::{Keyspace, Namespace, Store},
    tenancy::Scope,
};

pub use admin::AdminApi;
pub use gate::{Caller, Gate};
pub use guard::{GuardLayer, GuardSettings};
pub use page_token::PageTokens;
pub use validate::Limits;

/// The StateService implementation over any store.
pub struct StateApi<S> {
    store: Arc<S>,
    gate: Arc<Gate>,
    keyspace: Keyspace,
    limits: Limits,
    page_tokens: PageTokens,
    /// Turns true when the server starts shutting down: open Watch streams
    /// end then (the drain would otherwise wait for them).
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl<S: Store> StateApi<S> {
    pub fn new(
        store: Arc<S>,
        gate: Arc<Gate>,
        keyspace: Keyspace,
        limits: Limits,
        page_tokens: PageTokens,
    ) -> Self {
        Self {
            store,
            gate,
            keyspace,
            limits,
            page_tokens,
            stopping: None,
        }
    }

    /// Ends Watch streams with SHUTTING_DOWN once `stopping` turns true.
    pub fn with_stopping(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }
}

/// An admitted call: who makes it and the namespace it acts in.
pub struct Call {
    pub caller: Arc<Caller>,
    pub ns: Namespace,
}

/// How long a handler may run under the client's deadline `d`. Our timer
/// fires a little early (a tenth of the deadline, 2–50 ms) so that the client
/// receives DEADLINE_EXCEEDED with a message rather than the CANCELLED
/// tonic's own grpc-timeout timer produces when both race.
fn budget(d: Duration) -> Duration {
    let margin = (d / 10).clamp(Duration::from_millis(2), Duration::from_millis(50));
    d.saturating_sub(margin).max(Duration::from_millis(1))
}

/// The error of a handler that ran out of its budget under deadline `d`.
fn deadline_exceeded(d: Duration) -> Error {
    Error::DeadlineExceeded {
        message: format!(
            "the call's deadline ({d:?}) passed before the backend answered; \
             for a write the outcome is unknown"
        ),
        detail: None,
    }
}

/// What `guard` needs to admit a StateService request on its headers.
#[derive(Clone, Copy)]
pub struct Route {
    pub scope: Scope,
    pub metrics: &'static MethodMetrics,
}

/// The RPC table: one row per RPC with its metric name, the scope the gate
/// requires (the one place RPCs map to scopes) and its handler. Each row
/// takes the caller `guard` admitted (or admits it, when the API is served
/// without the guard), opens its namespace, runs the handler under the
/// deadline inside a `RequestObserver` (count by code, latency, in-flight,
/// log by code) and converts the crate's error to a `Status`.
macro_rules! rpcs {
    ($($name:ident : $method:literal, $scope:ident, $req:ty => $resp:ty;)*) => {
        /// The admission route of a request path, if it is a StateService RPC.
        pub fn route(path: &str) -> Option<Route> {
            let method = path.strip_prefix("/stateservice.v1.StateService/")?;
            match method {
                $($method => {
                    // The same series as the handler's (same method label).
                    static METRICS: MethodMetrics = MethodMetrics::new($method);
                    Some(Route { scope: Scope::$scope, metrics: &METRICS })
                })*
                _ => None,
            }
        }

        #[tonic::async_trait]
        impl<S: Store> StateService for StateApi<S> {
            type WatchStream = watch::WatchStream;

            // Server streaming: admitted like the rows below, but the
            // stream outlives the handler (api::watch).
            async fn watch(
                &self,
                req: Request<pb::WatchRequest>,
            ) -> Result<Response<Self::WatchStream>, Status> {
                self.watch_rpc(req).await
            }

            $(async fn $name(&self, mut req: Request<$req>) -> Result<Response<$resp>, Status> {
                static METRICS: MethodMetrics = MethodMetrics::new($method);
                let admitted = match req.extensions_mut().remove::<guard::Admitted>() {
                    Some(guard::Admitted(caller)) => Ok(caller),
                    None => self.gate.admit(&req, Scope::$scope).map(Arc::new),
                };
                // The tenant label is the authenticated one, so a caller
                // cannot inflate another tenant's series.
                let tenant = admitted.as_ref().ok().map(|c| c.identity.tenant.as_str());
                let observer = RequestObserver::start(&METRICS, tenant);
                let result = match admitted {
                    Ok(caller) => {
                        let deadline = validate::grpc_timeout(req.metadata());
                        let ns = self.keyspace.namespace(caller.identity.tenant.as_str());
                        let call = Call { caller, ns };
                        // The handler's future holds the store's and the
                        // Redis client's: kilobytes. Boxed once and awaited
                        // right here, it is not moved again by a helper
                        // `async fn` or the timer, and the RPC's own future
                        // (which tonic boxes too) stays small: −1.5 k
                        // instructions per Put (bench/callgrind-service.sh).
                        let fut = Box::pin(handlers::$name(self, &call, req.into_inner()));
                        match deadline {
                            None => fut.await,
                            Some(d) => tokio::time::timeout(budget(d), fut)
                                .await
                                .unwrap_or_else(|_| Err(deadline_exceeded(d))),
                        }
                    }
                    Err(e) => Err(e),
                };
                observer.finish(result).map(Response::new)
            })*
        }
    };
}

rpcs! {
    get: "Get", Read, pb::GetRequest => pb::GetResponse;
    put: "Put", Write, pb::PutRequest => pb::PutResponse;
    put_with_ttl: "PutWithTtl", Write, pb::PutWithTtlRequest => pb::PutResponse;
    delete: "Delete", Write, pb::DeleteRequest => pb::DeleteResponse;
    list: "List", Read, pb::ListRequest => pb::ListResponse;
    expire: "Expire", Write, pb::ExpireRequest => pb::ExpireResponse;
    persist: "Persist", Write, pb::PersistRequest => pb::PersistResponse;
    increment: "Increment", Write, pb::IncrementRequest => pb::IncrementResponse;
    batch_get: "BatchGet", Read, pb::BatchGetRequest => pb::BatchGetResponse;
    batch_put: "BatchPut", Write, pb::BatchPutRequest => pb::BatchPutResponse;
    batch_delete: "BatchDelete", Write, pb::BatchDeleteRequest => pb::BatchDeleteResponse;
    transact: "Transact", Write, pb::TransactRequest => pb::TransactResponse;
}
