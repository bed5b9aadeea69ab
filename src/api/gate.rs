//! Admission of every StateService request, before any storage work: metadata
//! size, identity (credentials or header), the RPC's scope, the tenant's rate
//! limit, then a slot under the global concurrency limit.
//!
//! The order is deliberate: cheap checks that need no shared state first, and
//! the concurrency slot last, so a request refused for any other reason never
//! occupies one. Health and reflection do not pass through here: probes and
//! grpcurl `list` work without credentials and are never shed.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Request;

use crate::{
    error::{Error, Exhaustion, Result},
    tenancy::{Identity, Scope, TenantResolver},
};

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
#[derive(Debug, Clone)]
pub struct Gate {
    resolver: TenantResolver,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_metadata_bytes: usize,
}

impl Gate {
    pub fn new(resolver: TenantResolver, max_concurrent: usize, max_metadata_bytes: usize) -> Self {
        Self {
            resolver,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_metadata_bytes,
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
        let size = metadata_size(req.metadata());
        if size > self.max_metadata_bytes {
            return Err(Error::limit(
                format_args!("request metadata is {size} bytes (names + values + 32 per entry)"),
                self.max_metadata_bytes as u64,
                " bytes",
                "--max-metadata-bytes",
            ));
        }
        let certs = req.peer_certs();
        let identity = self
            .resolver
            .resolve(req.metadata(), certs.as_deref().map(Vec::as_slice))?;
        identity.require(scope)?;
        if let Some(limiter) = &identity.limiter {
            limiter.check()?;
        }
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
            _slot: slot,
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
        let g = gate(1, 8192);
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
