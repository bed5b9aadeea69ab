//! Admission of every StateService request, before any storage work and
//! before its body is read (`guard` runs this on the request headers):
//! metadata size, identity (credentials or header), the RPC's scope, the
//! tenant's rate limit, a slot under the tenant's in-flight share, then a
//! slot under the global concurrency limit.
//!
//! The order is deliberate: cheap checks that need no shared state first, and
//! the global slot last, so a request refused for any other reason never
//! occupies one; the tenant's share comes before the global slot so that a
//! tenant at its share cannot take the slots others need. Health and
//! reflection do not pass through here: probes and grpcurl `list` work
//! without credentials and are never shed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, metadata::MetadataMap};

use crate::{
    error::{Error, Exhaustion, Result},
    listener::ConnInfo,
    tenancy::{Identity, Scope, TenantId, TenantResolver},
};

/// Tenants whose in-flight counters are kept while idle. In header mode any
/// client can name new tenants, so idle counters are dropped past this many.
const TENANT_SLOTS_KEPT: usize = 1024;

/// Retry hint sent with load shedding. The service does not know when a slot
/// frees up (in-flight requests usually finish within milliseconds); this is
/// a floor for the client's own backoff, not a promise.
pub const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Per-field overhead in the HTTP/2 header list size (RFC 7540 §6.5.2); the
/// metadata limit counts the same way h2 does.
const HEADER_FIELD_OVERHEAD: usize = 32;

/// An admitted request: who it is from, and its concurrency slot (released
/// when the request finishes and this is dropped).
#[derive(Debug)]
pub struct Caller {
    pub identity: Identity,
    _tenant_slot: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

impl Caller {
    /// PERMISSION_DENIED unless the caller also holds `scope` (for requests
    /// whose fields widen what the RPC does, like Get with `refresh_ttl`).
    pub fn require(&self, scope: Scope) -> Result<()> {
        self.identity.require(scope)
    }
}

/// Admits or refuses requests. Clones share the concurrency slots (the state
/// and admin services draw from the same limit).
#[derive(Debug)]
pub struct Gate {
    resolver: TenantResolver,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_metadata_bytes: usize,
    tenant_max_in_flight: usize,
    /// Per tenant: its in-flight limit and the semaphore counting it.
    tenant_slots: Mutex<HashMap<TenantId, (usize, Arc<Semaphore>)>>,
}

impl Gate {
    /// A gate without per-tenant shares (every tenant may use every slot).
    pub fn new(resolver: TenantResolver, max_concurrent: usize, max_metadata_bytes: usize) -> Self {
        Self::with_tenant_share(
            resolver,
            max_concurrent,
            max_metadata_bytes,
            Semaphore::MAX_PERMITS,
        )
    }

    /// A gate that also bounds each tenant to `tenant_max_in_flight`
    /// requests at once (unless the tenants file gives the tenant its own).
    pub fn with_tenant_share(
        resolver: TenantResolver,
        max_concurrent: usize,
        max_metadata_bytes: usize,
        tenant_max_in_flight: usize,
    ) -> Self {
        Self {
            resolver,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_metadata_bytes,
            tenant_max_in_flight,
            tenant_slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolver(&self) -> &TenantResolver {
        &self.resolver
    }

    /// Admits `req` for an RPC needing `scope`, or says why not:
    /// INVALID_ARGUMENT (metadata too large), UNAUTHENTICATED,
    /// PERMISSION_DENIED, or RESOURCE_EXHAUSTED with a retry delay (rate
    /// limit, load shedding).
    pub fn admit<T>(&self, req: &Request<T>, scope: Scope) -> Result<Caller> {
        self.admit_headers(req.metadata(), req.extensions().get::<ConnInfo>(), scope)
    }

    /// `admit` on a request's metadata and connection alone: what `guard`
    /// calls before the body is read.
    pub fn admit_headers(
        &self,
        metadata: &MetadataMap,
        conn: Option<&ConnInfo>,
        scope: Scope,
    ) -> Result<Caller> {
        let size = metadata_size(metadata);
        if size > self.max_metadata_bytes {
            return Err(Error::limit(
                format_args!("request metadata is {size} bytes (names + values + 32 per entry)"),
                self.max_metadata_bytes as u64,
                " bytes",
                "--max-metadata-bytes",
            ));
        }
        let certs = conn.and_then(|c| c.peer_certs.as_deref());
        let identity = self.resolver.resolve(metadata, certs.map(Vec::as_slice))?;
        identity.require(scope)?;
        if let Some(limiter) = &identity.limiter {
            limiter.check()?;
        }
        let tenant_slot = self.tenant_slot(&identity)?;
        // Shed instead of queueing: a queue would only turn overload into
        // deadline misses for everyone.
        let slot =
            self.slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::ResourceExhausted {
                    reason: Exhaustion::Overloaded,
                    message: format!(
                        "the server is at its limit of {} concurrent requests \
                     (--max-concurrent-requests); retry with backoff",
                        self.max_concurrent
                    ),
                    retry_after: Some(SHED_RETRY_AFTER),
                })?;
        Ok(Caller {
            identity,
            _tenant_slot: tenant_slot,
            _slot: slot,
        })
    }

    /// A slot under the tenant's in-flight share, or TENANT_OVERLOADED.
    fn tenant_slot(&self, identity: &Identity) -> Result<OwnedSemaphorePermit> {
        let limit = identity.max_in_flight.unwrap_or(self.tenant_max_in_flight);
        let semaphore = {
            let mut slots = self.tenant_slots.lock().unwrap_or_else(|p| p.into_inner());
            if !slots.contains_key(&identity.tenant) && slots.len() >= TENANT_SLOTS_KEPT {
                // An idle counter is held by the map alone.
                slots.retain(|_, (_, s)| Arc::strong_count(s) > 1);
            }
            let entry = slots
                .entry(identity.tenant.clone())
                .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
            if entry.0 != limit {
                // The tenants file changed the limit: requests in flight
                // finish under the old counter, new ones count on the new.
                *entry = (limit, Arc::new(Semaphore::new(limit)));
            }
            entry.1.clone()
        };
        semaphore.try_acquire_owned().map_err(|_| {
            crate::metrics::bound_refusal("--tenant-max-in-flight");
            let what = format_args!(
                "tenant {} has {limit} requests in flight, its share of this server",
                identity.tenant
            );
            match identity.max_in_flight {
                None => Error::over_bound(
                    Exhaustion::TenantOverloaded,
                    what,
                    limit as u64,
                    "--tenant-max-in-flight",
                    Some(SHED_RETRY_AFTER),
                ),
                // The tenants file set this tenant's own share.
                Some(_) => Error::OverBound {
                    reason: Exhaustion::TenantOverloaded,
                    message: format!(
                        "{what}; the limit is {limit} (max_in_flight of this tenant in the \
                         tenants file); retry with backoff"
                    ),
                    setting: "max_in_flight",
                    limit: limit as u64,
                    retry_after: Some(SHED_RETRY_AFTER),
                },
            }
        })
    }
}

/// The size of a request's metadata as HTTP/2 counts a header list.
pub fn metadata_size(metadata: &tonic::metadata::MetadataMap) -> usize {
    metadata
        .as_ref()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_FIELD_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::tenancy::TenantId;

    fn gate(max_concurrent: usize, max_metadata: usize) -> Gate {
        Gate::new(
            TenantResolver::new(TenantId::parse("default").unwrap()),
            max_concurrent,
            max_metadata,
        )
    }

    #[test]
    fn requests_over_the_concurrency_limit_are_shed_with_a_retry_delay() {
        // The tenant's own share is larger, so the process-wide limit is the
        // one that sheds.
        let g = Gate::with_tenant_share(
            TenantResolver::new(TenantId::parse("default").unwrap()),
            1,
            8192,
            2,
        );
        let held = g.admit(&Request::new(()), Scope::Read).unwrap();
        let err = g.admit(&Request::new(()), Scope::Read).unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("--max-concurrent-requests"));
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(SHED_RETRY_AFTER)
        );
        drop(held);
        assert!(g.admit(&Request::new(()), Scope::Read).is_ok());
    }

    #[test]
    fn a_tenant_over_its_share_is_refused_while_others_are_admitted() {
        let g = Gate::with_tenant_share(
            TenantResolver::new(TenantId::parse("default").unwrap()),
            10,
            8192,
            2,
        );
        let as_tenant = |t: &str| {
            let mut req = Request::new(());
            req.metadata_mut().insert("x-tenant-id", t.parse().unwrap());
            req
        };
        let _a1 = g.admit(&as_tenant("a"), Scope::Read).unwrap();
        let _a2 = g.admit(&as_tenant("a"), Scope::Read).unwrap();
        let status = tonic::Status::from(g.admit(&as_tenant("a"), Scope::Read).unwrap_err());
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "TENANT_OVERLOADED");
        assert_eq!(info.metadata["setting"], "--tenant-max-in-flight");
        assert!(status.get_details_retry_info().is_some());
        assert!(g.admit(&as_tenant("b"), Scope::Read).is_ok());
    }

    #[test]
    fn oversize_metadata_is_invalid_argument_naming_the_flag() {
        let g = gate(10, 100);
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("x-big", "y".repeat(100).parse().unwrap());
        let status = tonic::Status::from(g.admit(&req, Scope::Read).unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("--max-metadata-bytes"));
    }
}
