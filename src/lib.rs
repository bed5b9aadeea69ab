//! state-service: a gRPC key/value state service for stream-processing
//! workers, fronting Redis (or an embedded in-memory store).
//!
//! The request path: `listener` (bounded accept, `tls` handshakes) → `api` (gRPC surface, admission gate,
//! validation) → `tenancy` (who calls, with which scopes, which namespace) →
//! `store` (the storage trait; `redis` and `memory` backends). Cross-cutting:
//! `config`, `error`, `reload`, `telemetry`, `shutdown`. `admin` holds the
//! operator's CLI for AdminService and the backup file format.

pub mod admin;
pub mod api;
pub mod config;
pub mod duration;
pub mod error;
pub mod hash_token_cmd;
pub mod health_cmd;
pub mod listener;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod tls;

/// Generated protobuf and gRPC types for `stateservice.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stateservice.v1");
    /// Encoded file descriptor set, registered with gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("stateservice_descriptor");
}
