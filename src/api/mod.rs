//! The gRPC surface: `stateservice.v1.StateService`, and the admin service
//! beside it (`admin`).
//!
//! A request's path through this module: the `gate` admits the caller
//! (identity, scope, rate and concurrency limits); the RPC table below picks
//! the handler, opens the caller's namespace and runs the handler under the
//! request's deadline; the handler (`handlers`, one inner function per RPC
//! returning the crate's `Result`) validates and converts the request, calls
//! one typed `Store` method and converts the answer. All storage semantics
//! live in `store`; every `Status` is built in `error`.

pub mod admin;
pub mod codec;
pub mod gate;
mod handlers;
pub mod http;
pub mod page_token;
pub mod validate;

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
pub use page_token::PageTokens;
pub use validate::Limits;

/// The StateService implementation over any store.
pub struct StateApi<S> {
    store: Arc<S>,
    gate: Gate,
    keyspace: Keyspace,
    limits: Limits,
    page_tokens: PageTokens,
}

impl<S: Store> StateApi<S> {
    pub fn new(
        store: Arc<S>,
        gate: Gate,
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
        }
    }
}

/// An admitted call: who makes it and the namespace it acts in.
pub struct Call {
    pub caller: Caller,
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

/// The RPC table: one row per RPC with its metric name, the scope the gate
/// requires (the one place RPCs map to scopes) and its handler. Each row
/// admits the caller, opens its namespace, runs the handler under the
/// deadline inside a `RequestObserver` (count by code, latency, in-flight,
/// log by code) and converts the crate's error to a `Status`.
macro_rules! rpcs {
    ($($name:ident : $method:literal, $scope:ident, $req:ty => $resp:ty;)*) => {
        #[tonic::async_trait]
        impl<S: Store> StateService for StateApi<S> {
            $(async fn $name(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                static METRICS: MethodMetrics = MethodMetrics::new($method);
                let admitted = self.gate.admit(&req, Scope::$scope);
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
