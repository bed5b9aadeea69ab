//! Typed errors built from the gRPC status and its `google.rpc.ErrorInfo`
//! detail (domain `stateservice.v1`), so callers match on what happened
//! (`ErrorKind::VersionMismatch`, `ErrorKind::AlreadyExists`, …) instead of
//! parsing messages. A status without ErrorInfo (transport errors, older
//! servers) still gets a kind, derived from its code.

use std::{collections::HashMap, fmt, time::Duration};

use tonic::Code;
use tonic_types::StatusExt;

use crate::value::ValueError;

/// `google.rpc.ErrorInfo.domain` of the service's error details.
pub const ERROR_DOMAIN: &str = "stateservice.v1";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the terms of the service's error contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// ABORTED VERSION_MISMATCH: a compare-and-set lost a race; re-read and
    /// retry ([`crate::StateClient::update`] does). `current_version()` says
    /// what the key holds now (0: absent).
    VersionMismatch,
    /// FAILED_PRECONDITION ALREADY_EXISTS: create-only (`if_absent`) on an existing key.
    AlreadyExists,
    /// FAILED_PRECONDITION NOT_FOUND: `if_exists` on an absent key.
    NotFound,
    /// FAILED_PRECONDITION NOT_AN_INTEGER: increment of a non-int value
    /// (`stored_type()` names it).
    NotAnInteger,
    /// FAILED_PRECONDITION INCREMENT_OVERFLOW: the result would leave int64.
    IncrementOverflow,
    /// FAILED_PRECONDITION INVALID_STORED_VALUE: the key holds data the service did not write.
    InvalidStoredValue,
    /// FAILED_PRECONDITION CROSS_SLOT: a transaction's keys span Redis Cluster slots.
    CrossSlot,
    /// FAILED_PRECONDITION REQUEST_ID_REUSED: a request id was reused for a different write.
    RequestIdReused,
    /// FAILED_PRECONDITION with a reason this client does not know.
    FailedPrecondition,
    /// ABORTED with a reason other than VERSION_MISMATCH (e.g. RESYNC_REQUIRED).
    Aborted,
    /// INVALID_ARGUMENT LIMIT_EXCEEDED: a configured limit (`setting()`, `limit()`).
    LimitExceeded,
    /// INVALID_ARGUMENT: fix the request.
    InvalidArgument,
    /// UNAUTHENTICATED: missing, unknown or revoked credentials.
    Unauthenticated,
    /// PERMISSION_DENIED: the credentials lack a scope, or name another tenant.
    PermissionDenied,
    /// RESOURCE_EXHAUSTED: rate limited, overloaded, Redis out of memory, or a
    /// message over a size limit (`reason()` tells which; `retry_after()`).
    ResourceExhausted,
    /// UNAVAILABLE: the service or its Redis cannot be reached; retry with backoff.
    Unavailable,
    /// DEADLINE_EXCEEDED: for a write the outcome is unknown.
    DeadlineExceeded,
    /// CANCELLED by the caller or the transport.
    Cancelled,
    /// INTERNAL, UNKNOWN, or another code the service does not document.
    Internal,
    /// A value this client cannot represent (client side, nothing was sent
    /// or the reply could not be converted).
    InvalidValue,
    /// Bad client configuration (address, TLS material, metadata).
    Config,
}

/// An error from the service, the transport, or the client itself.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    code: Option<Code>,
    reason: Option<String>,
    message: String,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
}

impl Error {
    /// Builds the typed error from a status and its `grpc-status-details-bin`.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let (reason, metadata) = match details.error_info() {
            Some(info) if info.domain == ERROR_DOMAIN || info.domain.is_empty() => {
                (Some(info.reason.clone()), info.metadata.clone())
            }
            _ => (None, HashMap::new()),
        };
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        let kind = if status.code() == Code::Unknown && lost_connection(status) {
            // tonic reports a connection that broke mid-call (the server
            // crashed, a proxy reset it) as UNKNOWN "transport error"; gRPC
            // defines that case as UNAVAILABLE, and so does every other
            // client of this service.
            ErrorKind::Unavailable
        } else {
            kind_of(status.code(), reason.as_deref())
        };
        Error {
            kind,
            code: Some(status.code()),
            reason,
            message: status.message().to_string(),
            metadata,
            retry_after,
        }
    }

    /// An error from a per-item `ConditionFailure` (BatchPut results).
    pub(crate) fn from_condition_failure(key: &str, failure: &crate::pb::ConditionFailure) -> Self {
        let code = if failure.reason == "VERSION_MISMATCH" {
            Code::Aborted
        } else {
            Code::FailedPrecondition
        };
        let mut metadata = HashMap::new();
        metadata.insert("key".to_string(), key.to_string());
        metadata.insert(
            "current_version".to_string(),
            failure.current_version.to_string(),
        );
        Error {
            kind: kind_of(code, Some(&failure.reason)),
            code: Some(code),
            reason: Some(failure.reason.clone()),
            message: failure.message.clone(),
            metadata,
            retry_after: None,
        }
    }

    pub(crate) fn client(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: None,
            reason: None,
            message: message.into(),
            metadata: HashMap::new(),
            retry_after: None,
        }
    }

    pub(crate) fn deadline(after: Duration) -> Self {
        Error {
            code: Some(Code::DeadlineExceeded),
            ..Error::client(
                ErrorKind::DeadlineExceeded,
                format!("no reply within the client deadline of {after:?}"),
            )
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The gRPC status code; `None` for errors raised by the client itself.
    pub fn code(&self) -> Option<Code> {
        self.code
    }
    /// `ErrorInfo.reason` (e.g. `VERSION_MISMATCH`, `RATE_LIMITED`), when the server sent one.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// All `ErrorInfo.metadata`.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }
    /// The key the failure is about.
    pub fn key(&self) -> Option<&str> {
        self.metadata.get("key").map(String::as_str)
    }
    /// The key's version when a condition failed (0: the key was absent).
    pub fn current_version(&self) -> Option<u64> {
        self.metadata.get("current_version")?.parse().ok()
    }
    /// The failing op of a transaction or batch.
    pub fn op_index(&self) -> Option<usize> {
        self.metadata.get("op_index")?.parse().ok()
    }
    /// For NOT_AN_INTEGER: the stored value's type.
    pub fn stored_type(&self) -> Option<&str> {
        self.metadata.get("stored_type").map(String::as_str)
    }
    /// For LIMIT_EXCEEDED: the server flag that sets the limit (e.g. `--max-value-bytes`).
    pub fn setting(&self) -> Option<&str> {
        self.metadata.get("setting").map(String::as_str)
    }
    /// For LIMIT_EXCEEDED: the limit's value.
    pub fn limit(&self) -> Option<u64> {
        self.metadata.get("limit")?.parse().ok()
    }
    /// The delay the server asked for (google.rpc.RetryInfo).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether repeating the same request later may succeed and cannot apply
    /// a write twice *given that the request is safe to repeat* (a read, or a
    /// write carrying a request id or a condition). RESOURCE_EXHAUSTED counts
    /// only when the server said why (load, rate, Redis memory) — a message
    /// over a size limit will not shrink on retry.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => true,
            ErrorKind::ResourceExhausted => {
                self.retry_after.is_some()
                    || matches!(
                        self.reason(),
                        Some(
                            "RATE_LIMITED"
                                | "OVERLOADED"
                                | "TENANT_OVERLOADED"
                                | "BACKEND_OUT_OF_MEMORY"
                        )
                    )
            }
            _ => false,
        }
    }
}

/// Whether the status stems from the transport (an I/O or connection error
/// in its source chain) rather than from the server.
fn lost_connection(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn kind_of(code: Code, reason: Option<&str>) -> ErrorKind {
    match reason {
        Some("VERSION_MISMATCH") => return ErrorKind::VersionMismatch,
        Some("ALREADY_EXISTS") => return ErrorKind::AlreadyExists,
        Some("NOT_FOUND") => return ErrorKind::NotFound,
        Some("NOT_AN_INTEGER") => return ErrorKind::NotAnInteger,
        Some("INCREMENT_OVERFLOW") => return ErrorKind::IncrementOverflow,
        Some("INVALID_STORED_VALUE") => return ErrorKind::InvalidStoredValue,
        Some("CROSS_SLOT") => return ErrorKind::CrossSlot,
        Some("REQUEST_ID_REUSED") => return ErrorKind::RequestIdReused,
        Some("LIMIT_EXCEEDED") => return ErrorKind::LimitExceeded,
        _ => {}
    }
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Aborted => ErrorKind::Aborted,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            ErrorKind::Internal
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.reason) {
            (Some(code), Some(reason)) => write!(f, "{code:?} {reason}: {}", self.message),
            (Some(code), None) => write!(f, "{code:?}: {}", self.message),
            (None, _) => write!(f, "{:?}: {}", self.kind, self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("message", &self.message)
            .field("metadata", &self.metadata)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(&status)
    }
}

impl From<ValueError> for Error {
    fn from(e: ValueError) -> Self {
        Error::client(ErrorKind::InvalidValue, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    fn status_with_info(code: Code, reason: &str, meta: &[(&str, &str)]) -> tonic::Status {
        let meta: HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tonic::Status::with_error_details(
            code,
            "msg",
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, meta),
        )
    }

    #[test]
    fn version_mismatch_carries_the_current_version() {
        let e = Error::from_status(&status_with_info(
            Code::Aborted,
            "VERSION_MISMATCH",
            &[("key", "k"), ("current_version", "42")],
        ));
        assert_eq!(e.kind(), ErrorKind::VersionMismatch);
        assert_eq!(e.current_version(), Some(42));
        assert_eq!(e.key(), Some("k"));
        assert!(!e.is_transient());
    }

    #[test]
    fn not_an_integer_names_the_stored_type() {
        let e = Error::from_status(&status_with_info(
            Code::FailedPrecondition,
            "NOT_AN_INTEGER",
            &[("key", "k"), ("stored_type", "string")],
        ));
        assert_eq!(e.kind(), ErrorKind::NotAnInteger);
        assert_eq!(e.stored_type(), Some("string"));
    }

    #[test]
    fn limit_exceeded_names_the_setting() {
        let e = Error::from_status(&status_with_info(
            Code::InvalidArgument,
            "LIMIT_EXCEEDED",
            &[("setting", "--max-value-bytes"), ("limit", "1024")],
        ));
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert_eq!(e.setting(), Some("--max-value-bytes"));
        assert_eq!(e.limit(), Some(1024));
    }

    #[test]
    fn transaction_failures_name_the_op() {
        let e = Error::from_status(&status_with_info(
            Code::FailedPrecondition,
            "ALREADY_EXISTS",
            &[("key", "k"), ("op_index", "3"), ("current_version", "7")],
        ));
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(e.op_index(), Some(3));
    }

    #[test]
    fn a_status_without_details_gets_its_kind_from_the_code() {
        let e = Error::from_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.reason(), None);
        assert!(e.is_transient());
        let e = Error::from_status(&tonic::Status::unauthenticated("no"));
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        assert!(!e.is_transient());
    }

    #[test]
    fn a_connection_lost_mid_call_is_unavailable() {
        let s = tonic::Status::from_error(Box::new(std::io::Error::other("connection closed")));
        assert_eq!(s.code(), Code::Unknown);
        let e = Error::from_status(&s);
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_transient());
        // An UNKNOWN the server sent is not.
        let e = Error::from_status(&tonic::Status::unknown("server said so"));
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[test]
    fn retry_info_gives_the_delay_and_makes_it_transient() {
        let s = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(250))),
        );
        let e = Error::from_status(&s);
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(250)));
        assert!(e.is_transient());
    }

    #[test]
    fn a_message_over_a_size_limit_is_not_transient() {
        let e = Error::from_status(&tonic::Status::resource_exhausted("message too large"));
        assert!(!e.is_transient());
        let e = Error::from_status(&status_with_info(
            Code::ResourceExhausted,
            "RESPONSE_TOO_LARGE",
            &[],
        ));
        assert!(!e.is_transient());
    }

    #[test]
    fn error_info_of_another_domain_is_ignored() {
        let s = tonic::Status::with_error_details(
            Code::Aborted,
            "x",
            ErrorDetails::with_error_info("VERSION_MISMATCH", "other.example", HashMap::new()),
        );
        assert_eq!(Error::from_status(&s).kind(), ErrorKind::Aborted);
    }
}
