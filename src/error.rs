//! The crate's one error type and its single mapping to `tonic::Status`.
//!
//! Codes are chosen by what the client should do next: fix the request
//! (INVALID_ARGUMENT, FAILED_PRECONDITION), re-read and retry (ABORTED), retry
//! later with backoff (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED), or
//! fix its credentials (UNAUTHENTICATED, PERMISSION_DENIED).
//! Messages never contain values, credentials or other tenants' names.

use std::{fmt, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo.domain` of every error detail this service emits.
pub const ERROR_DOMAIN: &str = "stateservice.v1";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or exceeds a limit; the message says what to change.
    #[error("{0}")]
    InvalidArgument(String),

    /// A condition on the stored state failed (CAS, create-only, increment type…).
    #[error("{0}")]
    Condition(Box<OpFailure>),

    /// The backend cannot be reached or refused to work for now.
    #[error("redis at {addr} is unavailable: {cause}")]
    Unavailable { addr: String, cause: String },

    /// The request carries no credentials, or credentials the service does not
    /// know (unknown or revoked token, certificate naming no tenant). The
    /// message never says which token was tried.
    #[error("{0}")]
    Unauthenticated(String),

    /// The caller is authenticated but may not do this: its token lacks the
    /// scope the RPC needs, or it named another tenant in `x-tenant-id`.
    #[error("{0}")]
    PermissionDenied(String),

    /// The backend is out of memory, the server is shedding load, or the
    /// tenant is over its rate limit. `retry_after`, when known, becomes a
    /// google.rpc.RetryInfo detail.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
    },

    /// The request's deadline or the backend command timeout passed. For a
    /// write the outcome is unknown.
    #[error("{0}")]
    DeadlineExceeded(String),

    /// A broken invariant or an unexpected backend reply.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
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

impl fmt::Display for OpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.op_index {
            write!(f, "transaction not applied: op {i}: ")?;
        }
        let key = &self.key;
        match &self.reason {
            FailureReason::VersionMismatch { expected } => match self.current_version {
                Some(cur) => write!(
                    f,
                    "version mismatch on key {key:?}: expected {expected}, current {cur}; re-read and retry"
                ),
                None => write!(
                    f,
                    "version mismatch on key {key:?}: expected {expected} but the key does not exist"
                ),
            },
            FailureReason::AlreadyExists => {
                write!(f, "key {key:?} already exists (condition if_absent)")
            }
            FailureReason::NotFound => {
                write!(f, "key {key:?} does not exist (condition if_exists)")
            }
            FailureReason::NotAnInteger { stored_type } => write!(
                f,
                "cannot increment key {key:?}: it holds a {stored_type} value, not an int"
            ),
            FailureReason::IncrementOverflow { delta } => write!(
                f,
                "incrementing key {key:?} by {delta} would overflow int64; nothing was changed"
            ),
            FailureReason::InvalidStoredValue { detail } => write!(
                f,
                "key {key:?} holds data not written by state-service ({detail}); delete it or use another key"
            ),
            FailureReason::CrossSlot => write!(
                f,
                "the keys of this transaction hash to different Redis Cluster slots; \
                 put the same {{tag}} inside every key"
            ),
        }
    }
}

impl From<OpFailure> for Error {
    fn from(f: OpFailure) -> Self {
        Error::Condition(Box::new(f))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::InvalidArgument(msg) => Status::invalid_argument(msg),
            Error::Condition(failure) => {
                let mut meta = std::collections::HashMap::new();
                meta.insert("key".to_string(), failure.key.clone());
                if let Some(v) = failure.current_version {
                    meta.insert("current_version".to_string(), v.to_string());
                }
                if let Some(i) = failure.op_index {
                    meta.insert("op_index".to_string(), i.to_string());
                }
                if let FailureReason::NotAnInteger { stored_type } = &failure.reason {
                    meta.insert("stored_type".to_string(), (*stored_type).to_string());
                }
                let details =
                    ErrorDetails::with_error_info(failure.reason.as_str(), ERROR_DOMAIN, meta);
                Status::with_error_details(failure.reason.code(), failure.to_string(), details)
            }
            err @ Error::Unavailable { .. } => Status::unavailable(err.to_string()),
            Error::Unauthenticated(msg) => Status::unauthenticated(msg),
            Error::PermissionDenied(msg) => Status::permission_denied(msg),
            Error::ResourceExhausted {
                message,
                retry_after,
            } => match retry_after {
                Some(d) => Status::with_error_details(
                    Code::ResourceExhausted,
                    message,
                    ErrorDetails::with_retry_info(Some(d)),
                ),
                None => Status::resource_exhausted(message),
            },
            Error::DeadlineExceeded(msg) => Status::deadline_exceeded(msg),
            err @ Error::Internal(_) => Status::internal(err.to_string()),
        }
    }
}
