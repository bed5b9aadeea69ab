//! The crate's one error type and its single mapping to `tonic::Status`: no
//! other module builds a `Status`.
//!
//! Codes are chosen by what the client should do next: fix the request
//! (INVALID_ARGUMENT, FAILED_PRECONDITION), re-read and retry (ABORTED), retry
//! later with backoff (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED), or
//! fix its credentials (UNAUTHENTICATED, PERMISSION_DENIED). Every status
//! carries a `google.rpc.ErrorInfo` (domain `stateservice.v1`) whose `reason`
//! a client can match on.
//!
//! Two audiences, two texts: what a client sees says what it can act on and
//! never contains values, credentials, other tenants' names, backend
//! addresses or raw backend replies; what the operator needs (which Redis,
//! what it answered) is kept apart in `log_detail` and only logged.

use std::{
    collections::HashMap,
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo.domain` of every error detail this service emits.
pub const ERROR_DOMAIN: &str = "stateservice.v1";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message says what to change.
    #[error("{message}")]
    InvalidArgument {
        message: String,
        /// The request field at fault, when one is.
        field: Option<String>,
    },

    /// The request exceeds a configured limit; the message names the limit,
    /// its value and the setting that changes it.
    #[error("{message}")]
    LimitExceeded {
        message: String,
        /// The flag that sets the limit, e.g. `--max-value-bytes`.
        setting: &'static str,
        limit: u64,
    },

    /// A condition on the stored state failed (CAS, create-only, increment type…).
    #[error("{0}")]
    Condition(Box<OpFailure>),

    /// The request carries no credentials, or credentials the service does not
    /// know (unknown or revoked token, certificate naming no tenant). The
    /// message never says which token was tried.
    #[error("{0}")]
    Unauthenticated(String),

    /// The caller is authenticated but may not do this: its token lacks the
    /// scope the RPC needs, or it named another tenant in `x-tenant-id`.
    #[error("{message}")]
    PermissionDenied {
        message: String,
        /// The scope the call needs, when that is what is missing.
        scope: Option<&'static str>,
    },

    /// A limit on shared resources was reached; `retry_after`, when known,
    /// becomes a google.rpc.RetryInfo detail.
    #[error("{message}")]
    ResourceExhausted {
        reason: Exhaustion,
        message: String,
        retry_after: Option<Duration>,
    },

    /// A configured bound on a shared resource was reached (pending request
    /// bytes, long-lived streams, a tenant's in-flight share). The message
    /// and the ErrorInfo name the setting; `retry_after` becomes a RetryInfo.
    #[error("{message}")]
    OverBound {
        reason: Exhaustion,
        message: String,
        setting: &'static str,
        limit: u64,
        retry_after: Option<Duration>,
    },

    /// The answer would exceed the response byte budget; retrying the same
    /// request fails again (split it).
    #[error("{message}")]
    ResponseTooLarge {
        message: String,
        setting: &'static str,
        limit: u64,
    },

    /// The backend cannot be reached or refused to work for now. `detail`
    /// (address, cause) is for the operator's log only.
    #[error("the state backend is unavailable: {detail}")]
    Unavailable { detail: String },

    /// The server is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// A Watch cannot continue without a gap: the client must re-List and
    /// start a new Watch (FAILED_PRECONDITION: resuming from the same
    /// position fails again).
    #[error("{}", resync_message(*cause))]
    ResyncRequired { cause: crate::store::watch::Resync },

    /// Watch was called on a server running without --watch.
    #[error(
        "Watch is not enabled on this server: start it with --watch (STATE_WATCH=true), on \
         every instance"
    )]
    WatchDisabled,

    /// The request's deadline or the backend command timeout passed. For a
    /// write the outcome is unknown. `detail` is for the log only.
    #[error("{message}")]
    DeadlineExceeded {
        message: String,
        detail: Option<String>,
    },

    /// A broken invariant or an unexpected backend reply. The client sees
    /// only `reference`, which the log line carrying `detail` repeats.
    #[error("internal error {reference}: {detail}")]
    Internal { detail: String, reference: String },
}

/// Which shared resource ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhaustion {
    /// The tenant's own request rate limit.
    RateLimited,
    /// The process-wide concurrency limit (load shedding).
    Overloaded,
    /// The tenant's share of in-flight requests.
    TenantOverloaded,
    /// The backend's memory (Redis `maxmemory`, the memory backend's budget).
    BackendOutOfMemory,
    /// The watcher limits (`--max-watchers`, `--max-watchers-per-tenant`).
    TooManyWatchers,
}

impl Exhaustion {
    pub fn as_str(self) -> &'static str {
        match self {
            Exhaustion::RateLimited => "RATE_LIMITED",
            Exhaustion::Overloaded => "OVERLOADED",
            Exhaustion::TenantOverloaded => "TENANT_OVERLOADED",
            Exhaustion::BackendOutOfMemory => "BACKEND_OUT_OF_MEMORY",
            Exhaustion::TooManyWatchers => "TOO_MANY_WATCHERS",
        }
    }
}

/// Client-visible text of every UNAVAILABLE caused by the backend.
const UNAVAILABLE_MESSAGE: &str = "the state backend is unavailable; retry with backoff \
     (the service reports NOT_SERVING in grpc.health.v1 until it is back)";

impl Error {
    /// A malformed request.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: msg.into(),
            field: None,
        }
    }

    /// A malformed request field.
    pub fn invalid_field(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: msg.into(),
            field: Some(field.into()),
        }
    }

    /// A configured limit was exceeded. `what` says what is too large,
    /// e.g. `"value is 2000000 bytes encoded"`.
    pub fn limit(what: impl fmt::Display, limit: u64, unit: &str, setting: &'static str) -> Self {
        let env = env_name(setting);
        Error::LimitExceeded {
            message: format!("{what}; the limit is {limit}{unit} ({setting} / {env})"),
            setting,
            limit,
        }
    }

    /// A bound on a shared resource was reached. `what` says what ran out,
    /// e.g. `"tenant team-a has 64 requests in flight"`.
    pub fn over_bound(
        reason: Exhaustion,
        what: impl fmt::Display,
        limit: u64,
        setting: &'static str,
        retry_after: Option<Duration>,
    ) -> Self {
        let env = env_name(setting);
        Error::OverBound {
            reason,
            message: format!(
                "{what}; the limit is {limit} ({setting} / {env}); retry with backoff"
            ),
            setting,
            limit,
            retry_after,
        }
    }

    /// An unexpected state: the client gets a reference, the log the detail.
    pub fn internal(detail: impl Into<String>) -> Self {
        Error::Internal {
            detail: detail.into(),
            reference: new_reference(),
        }
    }

    /// The gRPC code a client receives.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } | Error::LimitExceeded { .. } => Code::InvalidArgument,
            Error::Condition(f) => f.reason.code(),
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::ResourceExhausted { .. } | Error::OverBound { .. } => Code::ResourceExhausted,
            Error::ResponseTooLarge { .. }
            | Error::ResyncRequired { .. }
            | Error::WatchDisabled => Code::FailedPrecondition,
            Error::Unavailable { .. } | Error::ShuttingDown => Code::Unavailable,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Internal { .. } => Code::Internal,
        }
    }

    /// The `ErrorInfo.reason` a client can match on.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            Error::Condition(f) => f.reason.as_str(),
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::PermissionDenied { .. } => "PERMISSION_DENIED",
            Error::ResourceExhausted { reason, .. } | Error::OverBound { reason, .. } => {
                reason.as_str()
            }
            Error::ResponseTooLarge { .. } => "RESPONSE_TOO_LARGE",
            Error::ResyncRequired { .. } => "RESYNC_REQUIRED",
            Error::WatchDisabled => "WATCH_DISABLED",
            Error::Unavailable { .. } => "BACKEND_UNAVAILABLE",
            Error::ShuttingDown => "SHUTTING_DOWN",
            Error::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Error::Internal { .. } => "INTERNAL",
        }
    }

    /// What the client is told.
    pub fn client_message(&self) -> String {
        match self {
            Error::Unavailable { .. } => UNAVAILABLE_MESSAGE.to_string(),
            Error::Internal { reference, .. } => {
                format!("internal error (reference {reference}); the server's log has the details")
            }
            other => other.to_string(),
        }
    }

    /// What only the operator's log gets, beyond the client message: the
    /// backend's address and answer, for errors the server is responsible for.
    pub fn log_detail(&self) -> Option<&str> {
        match self {
            Error::Unavailable { detail } | Error::Internal { detail, .. } => Some(detail),
            Error::DeadlineExceeded { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// Whether the server (or its backend), not the request, is at fault:
    /// these are logged at WARN, the rest at DEBUG.
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::DeadlineExceeded { .. }
                | Error::Internal { .. }
                | Error::ResourceExhausted {
                    reason: Exhaustion::BackendOutOfMemory,
                    ..
                }
        )
    }

    /// Adds `prefix` (e.g. `items[3]: `) to the message of a request error.
    pub fn in_item(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { message, field } => Error::InvalidArgument {
                message: format!("{prefix}{message}"),
                field: field.map(|f| format!("{prefix}{f}")),
            },
            Error::LimitExceeded {
                message,
                setting,
                limit,
            } => Error::LimitExceeded {
                message: format!("{prefix}{message}"),
                setting,
                limit,
            },
            other => other,
        }
    }
}

fn resync_message(cause: crate::store::watch::Resync) -> String {
    use crate::store::watch::Resync;
    let why = match cause {
        Resync::HistoryTrimmed => {
            "the resume position is older than the history the server keeps (--watch-history)"
        }
        Resync::SlowConsumer => "this watcher fell more than --watch-buffer events behind the feed",
        Resync::FeedLost => "the backend lost the feed's history (e.g. a Redis restart)",
    };
    format!("{why}; changes may have been missed: re-List the prefix and start a new Watch")
}

/// `--max-value-bytes` → `STATE_MAX_VALUE_BYTES`.
pub fn env_name(flag: &str) -> String {
    let mut s = String::from("STATE_");
    s.extend(flag.trim_start_matches('-').chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    s
}

/// A short id that ties an INTERNAL answer to its log line.
fn new_reference() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", h.finish() as u32)
}

/// Why a conditional operation was refused. Nothing was written for the op
/// (and, inside a transaction, for the whole transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// `if_version` did not match (the key may also be absent: current 0).
    VersionMismatch { expected: u64 },
    /// `if_absent` on an existing key.
    AlreadyExists,
    /// `if_exists` on an absent key.
    NotFound,
    /// Increment of a value that is not an int; names the stored type.
    NotAnInteger { stored_type: &'static str },
    /// Increment would leave the int64 range.
    IncrementOverflow { delta: i64 },
    /// The key holds data this service did not write (another tool's key).
    InvalidStoredValue { detail: String },
    /// Redis Cluster: the transaction's keys live in different hash slots.
    CrossSlot,
    /// A request id was reused for a different request.
    RequestIdReused,
}

impl FailureReason {
    /// The `ErrorInfo.reason` string, also used in batch results.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureReason::VersionMismatch { .. } => "VERSION_MISMATCH",
            FailureReason::AlreadyExists => "ALREADY_EXISTS",
            FailureReason::NotFound => "NOT_FOUND",
            FailureReason::NotAnInteger { .. } => "NOT_AN_INTEGER",
            FailureReason::IncrementOverflow { .. } => "INCREMENT_OVERFLOW",
            FailureReason::InvalidStoredValue { .. } => "INVALID_STORED_VALUE",
            FailureReason::CrossSlot => "CROSS_SLOT",
            FailureReason::RequestIdReused => "REQUEST_ID_REUSED",
        }
    }

    /// A lost compare-and-set race is worth a re-read and retry (ABORTED);
    /// every other failed condition will fail again unchanged.
    pub fn code(&self) -> Code {
        match self {
            FailureReason::VersionMismatch { .. } => Code::Aborted,
            _ => Code::FailedPrecondition,
        }
    }
}

/// A failed condition, with enough context for a client to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpFailure {
    /// Position of the op in a transaction or batch.
    pub op_index: Option<usize>,
    pub key: String,
    pub reason: FailureReason,
    /// The key's version when the check failed; `None` if absent.
    pub current_version: Option<u64>,
}

impl OpFailure {
    pub fn new(key: &str, reason: FailureReason, current_version: Option<u64>) -> Self {
        Self {
            op_index: None,
            key: key.to_string(),
            reason,
            current_version,
        }
    }

    /// The failure of op `index` of a transaction or batch.
    pub fn at(mut self, index: usize) -> Self {
        self.op_index = Some(index);
        self
    }

    /// The explanation without the transaction prefix (for batch items,
    /// whose position is their place in the result list).
    pub fn describe(&self) -> String {
        let key = &self.key;
        match &self.reason {
            FailureReason::VersionMismatch { expected } => match self.current_version {
                Some(cur) => format!(
                    "version mismatch on key {key:?}: expected {expected}, current {cur}; re-read and retry"
                ),
                None => format!(
                    "version mismatch on key {key:?}: expected {expected} but the key does not exist"
                ),
            },
            FailureReason::AlreadyExists => {
                format!("key {key:?} already exists (condition if_absent)")
            }
            FailureReason::NotFound => format!("key {key:?} does not exist (condition if_exists)"),
            FailureReason::NotAnInteger { stored_type } => {
                format!("cannot increment key {key:?}: it holds a {stored_type} value, not an int")
            }
            FailureReason::IncrementOverflow { delta } => format!(
                "incrementing key {key:?} by {delta} would overflow int64; nothing was changed"
            ),
            FailureReason::InvalidStoredValue { detail } => format!(
                "key {key:?} holds data not written by state-service ({detail}); delete it or use another key"
            ),
            FailureReason::CrossSlot => "the keys of this transaction hash to different Redis \
                 Cluster slots; put the same {tag} inside every key"
                .to_string(),
            FailureReason::RequestIdReused => format!(
                "request_id was already used for a different write of key {key:?}; use a new \
                 request_id for every logical write and reuse it only to retry that write"
            ),
        }
    }
}

impl fmt::Display for OpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.op_index {
            write!(f, "transaction not applied: op {i}: ")?;
        }
        f.write_str(&self.describe())
    }
}

impl From<OpFailure> for Error {
    fn from(f: OpFailure) -> Self {
        Error::Condition(Box::new(f))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let mut meta = HashMap::new();
        let mut retry_after = None;
        match &err {
            Error::InvalidArgument { field: Some(f), .. } => {
                meta.insert("field".to_string(), f.clone());
            }
            Error::LimitExceeded { setting, limit, .. }
            | Error::ResponseTooLarge { setting, limit, .. } => {
                meta.insert("setting".to_string(), (*setting).to_string());
                meta.insert("limit".to_string(), limit.to_string());
            }
            Error::Condition(failure) => {
                meta.insert("key".to_string(), failure.key.clone());
                // Always present: 0 means the key was absent (as the proto says).
                meta.insert(
                    "current_version".to_string(),
                    failure.current_version.unwrap_or(0).to_string(),
                );
                if let Some(i) = failure.op_index {
                    meta.insert("op_index".to_string(), i.to_string());
                }
                if let FailureReason::NotAnInteger { stored_type } = &failure.reason {
                    meta.insert("stored_type".to_string(), (*stored_type).to_string());
                }
            }
            Error::PermissionDenied { scope: Some(s), .. } => {
                meta.insert("scope".to_string(), (*s).to_string());
            }
            Error::ResourceExhausted { retry_after: r, .. } => retry_after = *r,
            Error::OverBound {
                setting,
                limit,
                retry_after: r,
                ..
            } => {
                meta.insert("setting".to_string(), (*setting).to_string());
                meta.insert("limit".to_string(), limit.to_string());
                retry_after = *r;
            }
            Error::ResyncRequired { cause } => {
                meta.insert("cause".to_string(), cause.as_str().to_string());
            }
            _ => {}
        }
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, meta);
        if let Some(d) = retry_after {
            details.set_retry_info(Some(d));
        }
        Status::with_error_details(err.code(), err.client_message(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_carries_error_info_with_the_reason() {
        let cases = [
            (
                Error::invalid("bad"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                Error::limit("value is 9 bytes", 4, " bytes", "--max-value-bytes"),
                Code::InvalidArgument,
                "LIMIT_EXCEEDED",
            ),
            (
                Error::Unavailable {
                    detail: "redis at redis://h:1 broken pipe".into(),
                },
                Code::Unavailable,
                "BACKEND_UNAVAILABLE",
            ),
            (Error::internal("raw reply"), Code::Internal, "INTERNAL"),
        ];
        for (err, code, reason) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn limit_errors_name_flag_env_and_limit() {
        let status = Status::from(Error::limit(
            "value is 9 bytes encoded",
            4,
            " bytes",
            "--max-value-bytes",
        ));
        assert!(
            status
                .message()
                .contains("--max-value-bytes / STATE_MAX_VALUE_BYTES")
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["setting"], "--max-value-bytes");
        assert_eq!(info.metadata["limit"], "4");
    }

    #[test]
    fn backend_details_never_reach_the_client() {
        let status = Status::from(Error::Unavailable {
            detail: "redis at redis://:***@10.0.0.5:6379/0: broken pipe".into(),
        });
        assert!(!status.message().contains("10.0.0.5"));
        assert!(!status.message().contains("broken pipe"));
        let err = Error::internal("unexpected reply Array([BulkString(secret)])");
        let Error::Internal { reference, .. } = &err else {
            unreachable!()
        };
        let reference = reference.clone();
        let status = Status::from(err);
        assert!(!status.message().contains("secret"));
        assert!(status.message().contains(&reference));
    }

    #[test]
    fn a_lost_cas_on_an_absent_key_reports_current_version_zero() {
        let f = OpFailure::new("k", FailureReason::VersionMismatch { expected: 7 }, None);
        let status = Status::from(Error::from(f));
        assert_eq!(status.code(), Code::Aborted);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["current_version"], "0");
    }

    #[test]
    fn env_names_follow_the_flags() {
        assert_eq!(env_name("--max-value-bytes"), "STATE_MAX_VALUE_BYTES");
    }
}
