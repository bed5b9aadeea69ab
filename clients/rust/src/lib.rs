//! Client for state-service (`stateservice.v1`): the async [`StateClient`]
//! over tonic, the blocking [`StateStore`] facade shaped like
//! rust-rule-engine's, native [`Value`]s and typed [`Error`]s decoded from
//! `google.rpc.ErrorInfo`.
//!
//! ```no_run
//! # async fn demo() -> state_client::Result<()> {
//! use state_client::{ClientConfig, StateClient, Value};
//! let client = StateClient::connect(ClientConfig::new("127.0.0.1:50051").tenant("team-a")).await?;
//! client.put("user:42", Value::map([("name", "Ada")])).await?;
//! let hits = client.increment("hits", 1).await?.value;
//! let (offset, _) = client.update("offset", |v| Value::Int(v.and_then(Value::as_int).unwrap_or(0) + 1)).await?;
//! # let _ = (hits, offset); Ok(()) }
//! ```
//!
//! Retries: reads, Expire/Persist and writes that carry a request id (all of
//! them by default) or a condition are retried on UNAVAILABLE,
//! DEADLINE_EXCEEDED and retryable RESOURCE_EXHAUSTED with jittered backoff
//! for up to [`RetryPolicy::max_elapsed`]; BatchDelete is never retried.

mod client;
pub mod config;
pub mod error;
#[cfg(feature = "rule-engine")]
pub mod rule_engine;
pub mod store;
pub mod value;

/// Generated protobuf and gRPC client types for `stateservice.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stateservice.v1");
}

pub use client::{
    BatchPutItem, Condition, Counter, Entry, IncrementOptions, Op, OpResult, StateClient,
    WriteOptions, new_request_id,
};
pub use config::{ClientConfig, RetryPolicy, TlsOptions};
pub use error::{Error, ErrorKind, Result};
pub use store::{CheckpointInfo, StateStore, StoreValue};
pub use value::{Value, ValueError};

/// The gRPC service config (retry policy) recommended for plain generated
/// stubs; `clients/service_config.json` in the repository.
pub const SERVICE_CONFIG_JSON: &str = include_str!("../../service_config.json");
