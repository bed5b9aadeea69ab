//! Per-tenant request rate limits (GCRA via `governor`), configured in the
//! tenants file.
//!
//! A limiter counts every admitted StateService request of its tenant, one
//! cell per RPC whatever its size (batch sizes have their own limits). It is
//! carried over across tenants-file reloads while the tenant's limit is
//! unchanged, so a reload does not hand every tenant a fresh burst.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::error::{Error, Result};

/// Highest accepted `requests_per_second`; above it the per-request cost of
/// the limiter is the limit anyway.
pub const MAX_REQUESTS_PER_SECOND: f64 = 1e9;

/// A tenant's configured limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second; may be fractional (0.5 = one every 2 s).
    pub per_second: f64,
    /// Requests that may arrive at once after a quiet period.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A checked limit; `burst` defaults to one second's worth (at least 1).
    pub fn new(per_second: f64, burst: Option<u32>) -> Result<Self, String> {
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= MAX_REQUESTS_PER_SECOND) {
            return Err(format!(
                "requests_per_second must be greater than 0 and at most {MAX_REQUESTS_PER_SECOND}"
            ));
        }
        let burst = match burst {
            Some(b) => NonZeroU32::new(b).ok_or("burst must be at least 1")?,
            // One second's worth: a client steady at the limit never waits.
            None => NonZeroU32::new(per_second.ceil().min(u32::MAX as f64) as u32)
                .unwrap_or(NonZeroU32::MIN),
        };
        Ok(Self { per_second, burst })
    }

    fn quota(&self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        // `with_period` refuses only a zero period, excluded just above.
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }
}

/// One tenant's limiter.
#[derive(Debug)]
pub struct TenantLimiter {
    limit: RateLimit,
    limiter: DefaultDirectRateLimiter,
}

impl TenantLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            limiter: RateLimiter::direct(limit.quota()),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one request from the budget, or RESOURCE_EXHAUSTED saying when
    /// the next one would be admitted (sent as RetryInfo).
    pub fn check(&self) -> Result<()> {
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // RetryInfo carries millisecond-ish precision; never advertise 0.
            let retry_after = wait.max(Duration::from_millis(1));
            Error::ResourceExhausted {
                reason: crate::error::Exhaustion::RateLimited,
                message: format!(
                    "the tenant's rate limit ({} requests/s, burst {}) is exhausted; \
                     retry after {retry_after:?}",
                    self.limit.per_second, self.limit.burst
                ),
                retry_after: Some(retry_after),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated() {
        assert!(RateLimit::new(0.0, None).is_err());
        assert!(RateLimit::new(-1.0, None).is_err());
        assert!(RateLimit::new(f64::NAN, None).is_err());
        assert!(RateLimit::new(f64::INFINITY, None).is_err());
        assert!(RateLimit::new(1.0, Some(0)).is_err());
        assert_eq!(RateLimit::new(2.5, None).unwrap().burst.get(), 3);
        assert_eq!(RateLimit::new(0.01, None).unwrap().burst.get(), 1);
    }

    #[test]
    fn the_burst_is_admitted_then_refused_with_a_retry_time() {
        let l = TenantLimiter::new(RateLimit::new(0.01, Some(2)).unwrap());
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        match l.check() {
            Err(Error::ResourceExhausted {
                retry_after: Some(d),
                ..
            }) => assert!(
                d > Duration::from_secs(1) && d <= Duration::from_secs(100),
                "{d:?}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
