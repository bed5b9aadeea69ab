//! Logging setup: tracing-subscriber honouring `RUST_LOG` (default `info`), in
//! pretty or JSON form, and the log policy for failed requests. Handlers never
//! log values, tokens or passwords.

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use tracing_subscriber::{EnvFilter, fmt};

use crate::{config::LogFormat, error::Error};

/// Installs the global subscriber; a second call is a no-op. Colours only
/// when stderr (where logs go) is a terminal: escape codes in a file or a
/// log collector are noise.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// How often a repeated server-side failure is logged again, with the count
/// of those not logged in between.
const REPEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Logs a failed request. Failures the client caused (bad requests, failed
/// conditions, missing credentials, its own rate limit) are routine: DEBUG.
/// Failures of the server or its backend are WARN with the operator's detail,
/// but a burst of the same one (an outage fails every request) is one line
/// per method and reason every `REPEAT_INTERVAL`, carrying how many were
/// folded into it.
pub fn request_failed(method: &'static str, err: &Error) {
    if !err.is_server_side() {
        tracing::debug!(method, reason = err.reason(), message = %err.client_message(), "request refused");
        return;
    }
    let Some(suppressed) = repeats().admit((method, err.reason()), Instant::now()) else {
        return;
    };
    tracing::warn!(
        method,
        reason = err.reason(),
        detail = err.log_detail().unwrap_or_default(),
        suppressed,
        "request failed: {}",
        err.client_message()
    );
}

fn repeats() -> &'static RepeatLimiter {
    static LIMITER: OnceLock<RepeatLimiter> = OnceLock::new();
    LIMITER.get_or_init(|| RepeatLimiter::new(REPEAT_INTERVAL))
}

/// An event kind: (method, reason).
type Kind = (&'static str, &'static str);

/// Lets the first event of a kind through, then at most one per interval,
/// reporting how many were held back since the last one let through.
pub struct RepeatLimiter {
    interval: Duration,
    /// When each kind was last let through, and how many were held since.
    seen: Mutex<HashMap<Kind, (Instant, u64)>>,
}

impl RepeatLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last logged one)` when this event should be
    /// logged, `None` when it is folded into the next one.
    pub fn admit(&self, kind: Kind, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(&kind) {
            Some((last, held)) if now.duration_since(*last) < self.interval => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                seen.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_same_failure_is_one_line_per_interval() {
        let limiter = RepeatLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let kind = ("Get", "BACKEND_UNAVAILABLE");
        assert_eq!(limiter.admit(kind, t0), Some(0));
        let logged = (1..6_800)
            .filter_map(|i| limiter.admit(kind, t0 + Duration::from_millis(i)))
            .count();
        assert_eq!(logged, 0, "6,800 failures within 7 s are folded");
        assert_eq!(
            limiter.admit(kind, t0 + Duration::from_secs(11)),
            Some(6_799)
        );
        // Another method or reason is its own kind.
        assert_eq!(limiter.admit(("Put", "BACKEND_UNAVAILABLE"), t0), Some(0));
    }
}
