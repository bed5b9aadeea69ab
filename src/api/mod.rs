//! The gRPC surface: `stateservice.v1.StateService`.
//!
//! Handlers are thin: the `gate` admits the caller (identity, scope, rate and
//! concurrency limits), then each handler validates and converts the request,
//! calls the store under the request's deadline and converts the answer. All
//! storage semantics live in `store`; all status mapping in `error`.

pub mod gate;
pub mod page_token;
pub mod validate;

use std::{future::Future, sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use crate::{
    error::{Error, OpFailure, Result},
    metrics::{MethodMetrics, RequestObserver},
    pb::{self, state_service_server::StateService},
    store::{self, OpKind, OpResult, Store, WriteOp},
    tenancy::{Namespace, Scope},
};

pub use gate::{Caller, Gate};
pub use page_token::PageTokens;
pub use validate::Limits;

/// The StateService implementation over any store.
pub struct StateApi<S> {
    store: Arc<S>,
    gate: Gate,
    key_prefix: String,
    limits: Limits,
    page_tokens: PageTokens,
}

impl<S: Store> StateApi<S> {
    pub fn new(
        store: Arc<S>,
        gate: Gate,
        key_prefix: String,
        limits: Limits,
        page_tokens: PageTokens,
    ) -> Self {
        Self {
            store,
            gate,
            key_prefix,
            limits,
            page_tokens,
        }
    }

    /// The admitted caller's namespace and the request's deadline.
    fn context<T>(&self, caller: &Caller, req: &Request<T>) -> (Namespace, Option<Duration>) {
        (
            Namespace::new(&self.key_prefix, caller.identity.tenant.clone()),
            validate::grpc_timeout(req.metadata()),
        )
    }
}

/// Runs a store call under the client's deadline. Our timer fires a little
/// early (a tenth of the deadline, 2–50 ms) so that the client receives
/// DEADLINE_EXCEEDED with a message rather than the CANCELLED tonic's own
/// grpc-timeout timer produces when both race.
async fn within<T>(deadline: Option<Duration>, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let Some(d) = deadline else { return fut.await };
    let margin = (d / 10).clamp(Duration::from_millis(2), Duration::from_millis(50));
    let budget = d.saturating_sub(margin).max(Duration::from_millis(1));
    match tokio::time::timeout(budget, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::DeadlineExceeded(format!(
            "the call's deadline ({d:?}) passed before the backend answered; \
             for a write the outcome is unknown"
        ))),
    }
}

fn to_pb_entry(e: store::Entry) -> pb::Entry {
    pb::Entry {
        key: e.key,
        value: Some(e.value),
        version: e.version,
        ttl: e.ttl.map(to_pb_duration),
    }
}

fn to_pb_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn get_response(e: Option<store::Entry>) -> pb::GetResponse {
    pb::GetResponse {
        found: e.is_some(),
        entry: e.map(to_pb_entry),
    }
}

fn failure_to_pb(f: &OpFailure) -> pb::ConditionFailure {
    let mut f = f.clone();
    f.op_index = None;
    pb::ConditionFailure {
        reason: f.reason.as_str().to_string(),
        current_version: f.current_version.unwrap_or(0),
        message: f.to_string(),
    }
}

impl<S: Store> StateApi<S> {
    fn put_op(
        &self,
        key: String,
        value: Option<pb::Value>,
        ttl: Option<Duration>,
        keep_ttl: bool,
        condition: Option<pb::Condition>,
    ) -> Result<WriteOp> {
        self.limits.key(&key)?;
        if ttl.is_some() && keep_ttl {
            return Err(Error::invalid("keep_ttl cannot be combined with a ttl"));
        }
        Ok(WriteOp {
            key,
            kind: OpKind::Put {
                value: self.limits.value(value)?,
                ttl,
                keep_ttl,
            },
            condition: validate::condition(condition)?,
        })
    }

    fn delete_op(&self, req: pb::DeleteRequest) -> Result<WriteOp> {
        self.limits.key(&req.key)?;
        let condition = validate::condition(req.condition)?;
        if condition == store::Condition::IfAbsent {
            return Err(Error::invalid(
                "if_absent cannot apply to a delete; use if_exists or if_version",
            ));
        }
        Ok(WriteOp {
            key: req.key,
            kind: OpKind::Delete,
            condition,
        })
    }

    fn increment_op(&self, req: pb::IncrementRequest) -> Result<WriteOp> {
        self.limits.key(&req.key)?;
        Ok(WriteOp {
            key: req.key,
            kind: OpKind::Increment {
                delta: req.delta,
                ttl: validate::optional_ttl(req.ttl, "ttl")?,
            },
            condition: store::Condition::None,
        })
    }

    fn transact_op(&self, op: pb::TransactOp) -> Result<WriteOp> {
        use pb::transact_op::Op;
        match op.op {
            None => Err(Error::invalid(
                "every transaction op must set put, put_with_ttl, delete or increment",
            )),
            Some(Op::Put(p)) => self.put_op(p.key, p.value, None, p.keep_ttl, p.condition),
            Some(Op::PutWithTtl(p)) => {
                let ttl = validate::ttl(p.ttl, "ttl")?;
                self.put_op(p.key, p.value, Some(ttl), false, p.condition)
            }
            Some(Op::Delete(d)) => self.delete_op(d),
            Some(Op::Increment(i)) => self.increment_op(i),
        }
    }

    /// Runs one write op atomically and returns its result.
    async fn write_one(
        &self,
        ns: &Namespace,
        deadline: Option<Duration>,
        op: WriteOp,
    ) -> Result<OpResult> {
        let mut results = within(deadline, self.store.transact(ns, vec![op])).await?;
        results
            .pop()
            .ok_or_else(|| Error::Internal("store returned no result for one op".into()))
    }
}

fn unexpected_result() -> Status {
    Status::internal("store returned a result of the wrong kind")
}

/// The handlers proper; the trait impl below wraps each in a metrics observer.
impl<S: Store> StateApi<S> {
    async fn do_get(
        &self,
        caller: Caller,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let req = req.into_inner();
        self.limits.key(&req.key)?;
        let refresh = validate::optional_ttl(req.refresh_ttl, "refresh_ttl")?;
        if refresh.is_some() {
            // Refreshing extends the key's life: a write, not a read.
            caller.require(Scope::Write)?;
        }
        let entry = within(deadline, self.store.get(&ns, &req.key, refresh)).await?;
        Ok(Response::new(get_response(entry)))
    }

    async fn do_put(
        &self,
        caller: Caller,
        req: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        let op = self.put_op(r.key, r.value, None, r.keep_ttl, r.condition)?;
        match self.write_one(&ns, deadline, op).await? {
            OpResult::Put { version } => Ok(Response::new(pb::PutResponse { version })),
            _ => Err(unexpected_result()),
        }
    }

    async fn do_put_with_ttl(
        &self,
        caller: Caller,
        req: Request<pb::PutWithTtlRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        let ttl = validate::ttl(r.ttl, "ttl")?;
        let op = self.put_op(r.key, r.value, Some(ttl), false, r.condition)?;
        match self.write_one(&ns, deadline, op).await? {
            OpResult::Put { version } => Ok(Response::new(pb::PutResponse { version })),
            _ => Err(unexpected_result()),
        }
    }

    async fn do_delete(
        &self,
        caller: Caller,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let op = self.delete_op(req.into_inner())?;
        if op.condition == store::Condition::None {
            // An unconditional delete is a plain DEL: no script needed.
            let deleted = within(
                deadline,
                self.store.batch_delete(&ns, std::slice::from_ref(&op.key)),
            )
            .await?
            .first()
            .copied()
            .unwrap_or(false);
            return Ok(Response::new(pb::DeleteResponse { deleted }));
        }
        match self.write_one(&ns, deadline, op).await? {
            OpResult::Delete { deleted } => Ok(Response::new(pb::DeleteResponse { deleted })),
            _ => Err(unexpected_result()),
        }
    }

    async fn do_list(
        &self,
        caller: Caller,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.prefix(&r.prefix)?;
        let limit = self.limits.page_size(r.page_size)?;
        let cursor = if r.page_token.is_empty() {
            None
        } else {
            Some(
                self.page_tokens
                    .decode(ns.tenant(), &r.prefix, &r.page_token)?,
            )
        };
        let page = within(
            deadline,
            self.store
                .list(&ns, &r.prefix, limit, cursor.as_deref(), r.include_values),
        )
        .await?;
        Ok(Response::new(pb::ListResponse {
            keys: page.keys,
            entries: page.entries.into_iter().map(to_pb_entry).collect(),
            next_page_token: page
                .cursor
                .map(|c| self.page_tokens.encode(ns.tenant(), &r.prefix, &c))
                .unwrap_or_default(),
        }))
    }

    async fn do_expire(
        &self,
        caller: Caller,
        req: Request<pb::ExpireRequest>,
    ) -> Result<Response<pb::ExpireResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.key(&r.key)?;
        let ttl = validate::ttl(r.ttl, "ttl")?;
        let existed = within(deadline, self.store.expire(&ns, &r.key, ttl)).await?;
        Ok(Response::new(pb::ExpireResponse { existed }))
    }

    async fn do_persist(
        &self,
        caller: Caller,
        req: Request<pb::PersistRequest>,
    ) -> Result<Response<pb::PersistResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.key(&r.key)?;
        let existed = within(deadline, self.store.persist(&ns, &r.key)).await?;
        Ok(Response::new(pb::PersistResponse { existed }))
    }

    async fn do_increment(
        &self,
        caller: Caller,
        req: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let op = self.increment_op(req.into_inner())?;
        match self.write_one(&ns, deadline, op).await? {
            OpResult::Increment { value, version } => {
                Ok(Response::new(pb::IncrementResponse { value, version }))
            }
            _ => Err(unexpected_result()),
        }
    }

    async fn do_batch_get(
        &self,
        caller: Caller,
        req: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.batch(r.keys.len(), "keys")?;
        for k in &r.keys {
            self.limits.key(k)?;
        }
        let entries = within(deadline, self.store.batch_get(&ns, &r.keys)).await?;
        Ok(Response::new(pb::BatchGetResponse {
            results: entries.into_iter().map(get_response).collect(),
        }))
    }

    async fn do_batch_put(
        &self,
        caller: Caller,
        req: Request<pb::BatchPutRequest>,
    ) -> Result<Response<pb::BatchPutResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.batch(r.items.len(), "items")?;
        let ops = r
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let ttl = validate::optional_ttl(item.ttl, "ttl")?;
                self.put_op(item.key, item.value, ttl, item.keep_ttl, item.condition)
                    .map_err(|e| Error::invalid(format!("items[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let results = within(deadline, self.store.apply_each(&ns, ops)).await?;
        let results = results
            .into_iter()
            .map(|r| {
                let outcome = match r {
                    Ok(OpResult::Put { version }) => pb::write_result::Outcome::Version(version),
                    Ok(_) => return Err(unexpected_result()),
                    Err(f) => pb::write_result::Outcome::Failure(failure_to_pb(&f)),
                };
                Ok(pb::WriteResult {
                    outcome: Some(outcome),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(pb::BatchPutResponse { results }))
    }

    async fn do_batch_delete(
        &self,
        caller: Caller,
        req: Request<pb::BatchDeleteRequest>,
    ) -> Result<Response<pb::BatchDeleteResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.batch(r.keys.len(), "keys")?;
        for k in &r.keys {
            self.limits.key(k)?;
        }
        let deleted = within(deadline, self.store.batch_delete(&ns, &r.keys)).await?;
        Ok(Response::new(pb::BatchDeleteResponse {
            results: deleted
                .into_iter()
                .map(|deleted| pb::DeleteResponse { deleted })
                .collect(),
        }))
    }

    async fn do_transact(
        &self,
        caller: Caller,
        req: Request<pb::TransactRequest>,
    ) -> Result<Response<pb::TransactResponse>, Status> {
        let (ns, deadline) = self.context(&caller, &req);
        let r = req.into_inner();
        self.limits.transaction(r.ops.len())?;
        let ops = r
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                self.transact_op(op)
                    .map_err(|e| Error::invalid(format!("ops[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let single = ops.len() == 1;
        let results = within(deadline, self.store.transact(&ns, ops))
            .await
            .map_err(|e| match e {
                // A one-op transaction still reports which op failed.
                Error::Condition(mut f) if single => {
                    f.op_index = Some(0);
                    Error::Condition(f)
                }
                other => other,
            })?;
        use pb::transact_result::Result as R;
        let results = results
            .into_iter()
            .map(|r| pb::TransactResult {
                result: Some(match r {
                    OpResult::Put { version } => R::Put(pb::PutResponse { version }),
                    OpResult::Delete { deleted } => R::Delete(pb::DeleteResponse { deleted }),
                    OpResult::Increment { value, version } => {
                        R::Increment(pb::IncrementResponse { value, version })
                    }
                }),
            })
            .collect();
        Ok(Response::new(pb::TransactResponse { results }))
    }
}

/// Implements the gRPC trait: every method is admitted by the gate with the
/// scope its row names (the one place RPCs map to scopes), then runs its `do_`
/// handler inside a `RequestObserver` (count by code, latency, in-flight, log
/// level by code).
macro_rules! observed_service {
    ($($name:ident / $inner:ident : $method:literal, $scope:ident, $req:ty => $resp:ty;)*) => {
        #[tonic::async_trait]
        impl<S: Store> StateService for StateApi<S> {
            $(async fn $name(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                let admitted = self.gate.admit(&req, Scope::$scope);
                // The tenant label is the authenticated one, so a caller
                // cannot inflate another tenant's series.
                let tenant = admitted.as_ref().ok().map(|c| c.identity.tenant.as_str());
                static METRICS: MethodMetrics = MethodMetrics::new($method);
                let observer = RequestObserver::start(&METRICS, tenant);
                let result = match admitted {
                    Ok(caller) => self.$inner(caller, req).await,
                    Err(e) => Err(e.into()),
                };
                observer.finish(result)
            })*
        }
    };
}

observed_service! {
    get / do_get: "Get", Read, pb::GetRequest => pb::GetResponse;
    put / do_put: "Put", Write, pb::PutRequest => pb::PutResponse;
    put_with_ttl / do_put_with_ttl: "PutWithTtl", Write, pb::PutWithTtlRequest => pb::PutResponse;
    delete / do_delete: "Delete", Write, pb::DeleteRequest => pb::DeleteResponse;
    list / do_list: "List", Read, pb::ListRequest => pb::ListResponse;
    expire / do_expire: "Expire", Write, pb::ExpireRequest => pb::ExpireResponse;
    persist / do_persist: "Persist", Write, pb::PersistRequest => pb::PersistResponse;
    increment / do_increment: "Increment", Write, pb::IncrementRequest => pb::IncrementResponse;
    batch_get / do_batch_get: "BatchGet", Read, pb::BatchGetRequest => pb::BatchGetResponse;
    batch_put / do_batch_put: "BatchPut", Write, pb::BatchPutRequest => pb::BatchPutResponse;
    batch_delete / do_batch_delete: "BatchDelete", Write, pb::BatchDeleteRequest => pb::BatchDeleteResponse;
    transact / do_transact: "Transact", Write, pb::TransactRequest => pb::TransactResponse;
}
