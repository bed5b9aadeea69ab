//! One inner function per RPC: validate and convert the request, call one
//! typed `Store` method, convert the answer. They return the crate's
//! `Result`; the RPC table in `api` turns errors into statuses.

use std::collections::HashMap;

use super::{Call, StateApi};
use crate::{
    duration,
    error::{Error, OpFailure, Result},
    pb,
    store::{
        self, Condition, DeleteOp, Expiry, IncrementOp, OpResult, PageLimits, PutOp, Store, WriteOp,
    },
    tenancy::Scope,
};

fn to_pb_entry(e: store::Entry) -> pb::Entry {
    pb::Entry {
        key: e.key,
        value: Some(e.value),
        version: e.version,
        ttl: e.ttl.map(duration::to_proto),
    }
}

fn get_response(e: Option<store::Entry>) -> pb::GetResponse {
    pb::GetResponse {
        found: e.is_some(),
        entry: e.map(to_pb_entry),
    }
}

fn failure_to_pb(f: &OpFailure) -> pb::ConditionFailure {
    pb::ConditionFailure {
        reason: f.reason.as_str().to_string(),
        current_version: f.current_version.unwrap_or(0),
        message: f.describe(),
    }
}

impl<S: Store> StateApi<S> {
    fn put_op(
        &self,
        key: String,
        value: Option<pb::Value>,
        expiry: Expiry,
        condition: Option<pb::Condition>,
        request_id: String,
    ) -> Result<PutOp> {
        self.limits.key(&key)?;
        Ok(PutOp {
            key,
            value: self.limits.value(value)?,
            expiry,
            condition: super::validate::condition(condition)?,
            request_id: self.limits.request_id(request_id)?,
        })
    }

    /// The expiry of a put that may carry a TTL and/or keep_ttl.
    fn expiry(&self, ttl: Option<prost_types::Duration>, keep_ttl: bool) -> Result<Expiry> {
        match (self.limits.optional_ttl(ttl, "ttl")?, keep_ttl) {
            (Some(_), true) => Err(Error::invalid_field(
                "keep_ttl",
                "keep_ttl cannot be combined with a ttl",
            )),
            (Some(t), false) => Ok(Expiry::After(t)),
            (None, true) => Ok(Expiry::Keep),
            (None, false) => Ok(Expiry::Never),
        }
    }

    fn batch_item(&self, item: pb::BatchPutItem) -> Result<PutOp> {
        let expiry = self.expiry(item.ttl, item.keep_ttl)?;
        self.put_op(
            item.key,
            item.value,
            expiry,
            item.condition,
            item.request_id,
        )
    }

    fn delete_op(&self, req: pb::DeleteRequest) -> Result<DeleteOp> {
        self.limits.key(&req.key)?;
        let condition = super::validate::condition(req.condition)?;
        if condition == Condition::IfAbsent {
            return Err(Error::invalid_field(
                "condition",
                "if_absent cannot apply to a delete; use if_exists or if_version",
            ));
        }
        Ok(DeleteOp {
            key: req.key,
            condition,
            request_id: self.limits.request_id(req.request_id)?,
        })
    }

    fn increment_op(&self, req: pb::IncrementRequest) -> Result<IncrementOp> {
        self.limits.key(&req.key)?;
        Ok(IncrementOp {
            key: req.key,
            delta: req.delta,
            ttl: self.limits.optional_ttl(req.ttl, "ttl")?,
            request_id: self.limits.request_id(req.request_id)?,
        })
    }

    fn transact_op(&self, op: pb::TransactOp) -> Result<WriteOp> {
        use pb::transact_op::Op;
        let op = match op.op {
            None => {
                return Err(Error::invalid(
                    "every transaction op must set put, put_with_ttl, delete or increment",
                ));
            }
            Some(Op::Put(p)) => WriteOp::Put(self.put_op(
                p.key,
                p.value,
                self.expiry(None, p.keep_ttl)?,
                p.condition,
                p.request_id,
            )?),
            Some(Op::PutWithTtl(p)) => {
                let ttl = self.limits.ttl(p.ttl, "ttl")?;
                WriteOp::Put(self.put_op(
                    p.key,
                    p.value,
                    Expiry::After(ttl),
                    p.condition,
                    p.request_id,
                )?)
            }
            Some(Op::Delete(d)) => WriteOp::Delete(self.delete_op(d)?),
            Some(Op::Increment(i)) => WriteOp::Increment(self.increment_op(i)?),
        };
        let has_id = match &op {
            WriteOp::Put(p) => p.request_id.is_some(),
            WriteOp::Delete(d) => d.request_id.is_some(),
            WriteOp::Increment(i) => i.request_id.is_some(),
        };
        if has_id {
            return Err(Error::invalid_field(
                "request_id",
                "a transaction op cannot carry its own request_id; set request_id on the \
                 TransactRequest",
            ));
        }
        Ok(op)
    }
}

pub(super) async fn get<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::GetRequest,
) -> Result<pb::GetResponse> {
    api.limits.key(&r.key)?;
    let refresh = api.limits.optional_ttl(r.refresh_ttl, "refresh_ttl")?;
    if refresh.is_some() {
        // Refreshing extends the key's life: a write, not a read.
        call.caller.require(Scope::Write)?;
    }
    let entry = api.store.get(&call.ns, &r.key, refresh).await?;
    Ok(get_response(entry))
}

pub(super) async fn put<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::PutRequest,
) -> Result<pb::PutResponse> {
    let expiry = api.expiry(None, r.keep_ttl)?;
    let op = api.put_op(r.key, r.value, expiry, r.condition, r.request_id)?;
    let version = api.store.put(&call.ns, op).await?;
    Ok(pb::PutResponse { version })
}

pub(super) async fn put_with_ttl<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::PutWithTtlRequest,
) -> Result<pb::PutResponse> {
    let ttl = api.limits.ttl(r.ttl, "ttl")?;
    let op = api.put_op(
        r.key,
        r.value,
        Expiry::After(ttl),
        r.condition,
        r.request_id,
    )?;
    let version = api.store.put(&call.ns, op).await?;
    Ok(pb::PutResponse { version })
}

pub(super) async fn delete<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::DeleteRequest,
) -> Result<pb::DeleteResponse> {
    let op = api.delete_op(r)?;
    let deleted = api.store.delete(&call.ns, op).await?;
    Ok(pb::DeleteResponse { deleted })
}

pub(super) async fn list<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::ListRequest,
) -> Result<pb::ListResponse> {
    api.limits.prefix(&r.prefix)?;
    let limits = PageLimits {
        max_keys: api.limits.page_size(r.page_size)?,
        max_bytes: api.limits.max_response_bytes,
    };
    let tenant = call.ns.tenant();
    let cursor = if r.page_token.is_empty() {
        None
    } else {
        Some(api.page_tokens.decode(tenant, &r.prefix, &r.page_token)?)
    };
    let page = api
        .store
        .list(
            &call.ns,
            &r.prefix,
            limits,
            cursor.as_deref(),
            r.include_values,
        )
        .await?;
    Ok(pb::ListResponse {
        keys: page.keys,
        entries: page.entries.into_iter().map(to_pb_entry).collect(),
        next_page_token: page
            .cursor
            .map(|c| api.page_tokens.encode(tenant, &r.prefix, &c))
            .unwrap_or_default(),
    })
}

pub(super) async fn expire<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::ExpireRequest,
) -> Result<pb::ExpireResponse> {
    api.limits.key(&r.key)?;
    let ttl = api.limits.ttl(r.ttl, "ttl")?;
    let existed = api.store.expire(&call.ns, &r.key, ttl).await?;
    Ok(pb::ExpireResponse { existed })
}

pub(super) async fn persist<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::PersistRequest,
) -> Result<pb::PersistResponse> {
    api.limits.key(&r.key)?;
    let existed = api.store.persist(&call.ns, &r.key).await?;
    Ok(pb::PersistResponse { existed })
}

pub(super) async fn increment<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::IncrementRequest,
) -> Result<pb::IncrementResponse> {
    let op = api.increment_op(r)?;
    let r = api.store.increment(&call.ns, op).await?;
    Ok(pb::IncrementResponse {
        value: r.value,
        version: r.version,
    })
}

pub(super) async fn batch_get<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::BatchGetRequest,
) -> Result<pb::BatchGetResponse> {
    api.limits.batch(r.keys.len(), "keys")?;
    // A key asked for twice is read once: duplicates cost the response its
    // bytes, never the backend more work.
    let mut distinct: Vec<String> = Vec::with_capacity(r.keys.len());
    let mut slot_of: HashMap<&str, usize> = HashMap::with_capacity(r.keys.len());
    let mut slots = Vec::with_capacity(r.keys.len());
    for (i, k) in r.keys.iter().enumerate() {
        api.limits
            .key(k)
            .map_err(|e| e.in_item(&format!("keys[{i}]: ")))?;
        let slot = *slot_of.entry(k).or_insert_with(|| {
            distinct.push(k.clone());
            distinct.len() - 1
        });
        slots.push(slot);
    }
    let entries = api.store.batch_get(&call.ns, &distinct).await?;
    let bytes: usize = slots
        .iter()
        .map(|&s| entries[s].as_ref().map_or(8, store::Entry::response_bytes))
        .sum();
    if bytes > api.limits.max_response_bytes {
        return Err(Error::ResponseTooLarge {
            message: format!(
                "the response would be {bytes} bytes; the limit is {} bytes \
                 (--max-response-bytes / STATE_MAX_RESPONSE_BYTES): split the keys over \
                 several BatchGet calls",
                api.limits.max_response_bytes
            ),
            setting: "--max-response-bytes",
            limit: api.limits.max_response_bytes as u64,
        });
    }
    Ok(pb::BatchGetResponse {
        results: slots
            .into_iter()
            .map(|s| get_response(entries[s].clone()))
            .collect(),
    })
}

pub(super) async fn batch_put<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::BatchPutRequest,
) -> Result<pb::BatchPutResponse> {
    api.limits.batch(r.items.len(), "items")?;
    let items = r
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            api.batch_item(item)
                .map_err(|e| e.in_item(&format!("items[{i}]: ")))
        })
        .collect::<Result<Vec<_>>>()?;
    let results = api.store.batch_put(&call.ns, items).await?;
    Ok(pb::BatchPutResponse {
        results: results
            .into_iter()
            .map(|r| pb::WriteResult {
                outcome: Some(match r {
                    Ok(version) => pb::write_result::Outcome::Version(version),
                    Err(f) => pb::write_result::Outcome::Failure(failure_to_pb(&f)),
                }),
            })
            .collect(),
    })
}

pub(super) async fn batch_delete<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::BatchDeleteRequest,
) -> Result<pb::BatchDeleteResponse> {
    api.limits.batch(r.keys.len(), "keys")?;
    for (i, k) in r.keys.iter().enumerate() {
        api.limits
            .key(k)
            .map_err(|e| e.in_item(&format!("keys[{i}]: ")))?;
    }
    let deleted = api.store.batch_delete(&call.ns, &r.keys).await?;
    Ok(pb::BatchDeleteResponse {
        results: deleted
            .into_iter()
            .map(|deleted| pb::DeleteResponse { deleted })
            .collect(),
    })
}

pub(super) async fn transact<S: Store>(
    api: &StateApi<S>,
    call: &Call,
    r: pb::TransactRequest,
) -> Result<pb::TransactResponse> {
    api.limits.transaction(r.ops.len())?;
    let request_id = api.limits.request_id(r.request_id)?;
    let ops = r
        .ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            api.transact_op(op)
                .map_err(|e| e.in_item(&format!("ops[{i}]: ")))
        })
        .collect::<Result<Vec<_>>>()?;
    let results = api.store.transact(&call.ns, ops, request_id).await?;
    use pb::transact_result::Result as R;
    Ok(pb::TransactResponse {
        results: results
            .into_iter()
            .map(|r| pb::TransactResult {
                result: Some(match r {
                    OpResult::Put { version } => R::Put(pb::PutResponse { version }),
                    OpResult::Delete { deleted } => R::Delete(pb::DeleteResponse { deleted }),
                    OpResult::Increment(i) => R::Increment(pb::IncrementResponse {
                        value: i.value,
                        version: i.version,
                    }),
                }),
            })
            .collect(),
    })
}
