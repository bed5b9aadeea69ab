//! state-service: a gRPC key/value state service for stream-processing workers.

/// Generated protobuf and gRPC types for `stateservice.v1`.
pub mod pb {
    tonic::include_proto!("stateservice.v1");
    /// Encoded file descriptor set, registered with gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stateservice_descriptor");
}
