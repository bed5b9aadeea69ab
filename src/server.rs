//! Assembles and runs the gRPC server: the state and admin APIs over the configured
//! backend behind its admission gate (credentials, scopes, rate and
//! concurrency limits), grpc.health.v1 driven by a background backend check,
//! reflection (v1 and v1alpha) for our public services, optional TLS, the
//! configuration reloader, and graceful shutdown.
//!
//! `run(listener, config, shutdown)` is the seam tests use: they bind
//! `127.0.0.1:0` themselves and pass their own shutdown future.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{error, info, warn};

use crate::{
    api::{
        AdminApi, Gate, GuardLayer, GuardSettings, Limits, PageTokens, StateApi,
        http::RequestSizeLayer,
    },
    config::{BoundsConfig, Config, ConfigError, RedisMode, read_file, split_urls},
    listener::{self, ConnBounds},
    pb::{
        self, admin_service_server::AdminServiceServer, state_service_server::StateServiceServer,
    },
    reload::Reloadable,
    store::{
        Keyspace, MemoryStore, RedisStore, Store,
        redis::{ConnSettings, StoreOptions, Topology, WaitPolicy},
    },
    tenancy::{TenantId, TenantResolver, TenantsFile},
    tls::{self, ServerTls},
};

/// Name under which the state API reports health (besides the server-wide "").
/// Both follow the backend: use them for readiness.
pub const SERVICE_NAME: &str = "stateservice.v1.StateService";

/// Health name that is SERVING for as long as the process runs and can answer
/// (NOT_SERVING only while shutting down). Use it for liveness probes: a
/// Redis outage must not make Kubernetes restart every pod.
pub const LIVENESS_NAME: &str = "liveness";

/// HTTP/2 header list headroom above --max-metadata-bytes for what the gate
/// does not see (pseudo-headers such as `:path`). Metadata between the limit
/// and the limit plus this headroom gets a clear INVALID_ARGUMENT from the
/// gate; beyond it h2 itself answers HTTP 431 before any service code runs
/// (h2 builds that response internally and offers no hook to make it a gRPC
/// status), which clients report as UNKNOWN or INTERNAL. The headroom is
/// wide so that only a client that ignores SETTINGS_MAX_HEADER_LIST_SIZE by
/// far gets there; h2 holds at most this much per header block.
pub const HEADER_LIST_HEADROOM: usize = 64 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(String),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server on `listener` until `shutdown` completes, then drains
/// in-flight requests for at most `config.server.drain_timeout`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    tls::install_crypto_provider();
    let security = Security::load(&config)?;
    if let Some(addr) = config.server.metrics_listen {
        crate::metrics::install(addr, config.server.metrics_tenant_labels)
            .map_err(ServeError::Startup)?;
        info!(%addr, "metrics exporter listening");
    }
    let redis = &config.redis;
    match &redis.redis_url {
        Some(url) => {
            let settings = ConnSettings {
                topology: match redis.redis_mode {
                    RedisMode::Standalone => Topology::Standalone,
                    RedisMode::Cluster => Topology::Cluster,
                    RedisMode::Sentinel => Topology::Sentinel {
                        master_name: redis.redis_master_name.clone().unwrap_or_default(),
                    },
                },
                pool_size: redis.redis_pool_size,
                connect_timeout: redis.redis_connect_timeout,
                pool_wait_timeout: redis.redis_pool_wait_timeout,
                username: redis.redis_username.clone(),
                password: config.redis_password()?,
                tls_ca_pem: redis
                    .redis_ca_file
                    .as_deref()
                    .map(|p| read_file("--redis-ca-file", p))
                    .transpose()?,
                tls_client_pem: match (&redis.redis_client_cert, &redis.redis_client_key) {
                    (Some(cert), Some(key)) => Some((
                        read_file("--redis-client-cert", cert)?,
                        read_file("--redis-client-key", key)?,
                    )),
                    _ => None,
                },
            };
            let options = StoreOptions {
                command_timeout: redis.redis_command_timeout,
                idempotency: config.idempotency(),
                wait: (redis.redis_wait_replicas > 0).then_some(WaitPolicy {
                    replicas: redis.redis_wait_replicas,
                    timeout: redis.redis_wait_timeout,
                }),
                feed: config.feed(),
            };
            let keyspace = Keyspace::new(config.storage.key_prefix.clone());
            let store = RedisStore::new(&split_urls(url), &settings, keyspace, options)
                .map_err(|e| ServeError::Startup(e.to_string()))?;
            serve(listener, config, security, Arc::new(store), shutdown).await
        }
        None => {
            warn!(
                "no --redis-url given: using the embedded in-memory backend; state is neither \
                 shared between instances nor durable across restarts"
            );
            let mut store = MemoryStore::new(config.storage.memory_max_bytes, config.idempotency());
            if let Some(feed) = config.feed() {
                store = store.with_feed(feed);
            }
            serve(listener, config, security, Arc::new(store), shutdown).await
        }
    }
}

/// The loaded security configuration: who may call, and over what transport.
struct Security {
    tenants: Option<Arc<TenantsFile>>,
    tls: Option<Arc<ServerTls>>,
    page_tokens: PageTokens,
}

impl Security {
    /// Loads every file at startup; a problem here refuses to start (there is
    /// no previous configuration to fall back on).
    fn load(config: &Config) -> Result<Self, ConfigError> {
        let tenants = config
            .tenancy
            .tenants_file
            .as_deref()
            .map(TenantsFile::load)
            .transpose()
            .map_err(|reason| ConfigError::BadFile {
                flag: "--tenants-file",
                reason,
            })?
            .map(Arc::new);
        let tls = match (&config.tls.tls_cert, &config.tls.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                ServerTls::load(cert, key, config.tls.tls_client_ca.as_deref()).map_err(
                    |reason| ConfigError::BadFile {
                        flag: "--tls-cert",
                        reason,
                    },
                )?,
            )),
            _ => None,
        };
        let page_tokens = match config.page_token_secret()? {
            Some(secret) => PageTokens::signed(&secret),
            // Opaque and unforgeable all the same; valid on this instance
            // until it stops (docs/security.md#page-tokens).
            None => PageTokens::ephemeral(),
        };
        Ok(Self {
            tenants,
            tls,
            page_tokens,
        })
    }

    fn resolver(&self, config: &Config) -> Result<TenantResolver, ConfigError> {
        let certificates = self.tls.as_ref().is_some_and(|t| t.verifies_clients());
        if self.tenants.is_some() || certificates {
            Ok(TenantResolver::authenticated(
                self.tenants.clone(),
                certificates,
            ))
        } else {
            let tenant = TenantId::parse(&config.tenancy.default_tenant).map_err(|reason| {
                ConfigError::Invalid {
                    flag: "--default-tenant",
                    reason,
                }
            })?;
            Ok(TenantResolver::new(tenant))
        }
    }

    fn reloadables(&self) -> Vec<Arc<dyn Reloadable>> {
        let mut items: Vec<Arc<dyn Reloadable>> = Vec::new();
        if let Some(t) = &self.tenants {
            items.push(t.clone());
        }
        if let Some(t) = &self.tls {
            items.push(t.clone());
        }
        items
    }
}

/// Whether to warn that anyone reaching `addr` can act as any tenant.
pub fn unauthenticated_exposure(addr: SocketAddr, auth_configured: bool) -> bool {
    !auth_configured && !addr.ip().is_loopback()
}

async fn serve<S: Store>(
    listener: TcpListener,
    config: Config,
    security: Security,
    store: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let resolver = security.resolver(&config)?;
    if unauthenticated_exposure(addr, resolver.requires_credentials()) {
        error!(
            %addr,
            "NO AUTHENTICATION: listening on a non-loopback address without --tenants-file or \
             --tls-client-ca; any client that reaches this port can read and write every \
             tenant's data by setting x-tenant-id. Configure credentials (docs/security.md) \
             unless a trusted mesh authenticates callers in front of this service."
        );
    }
    if security.tls.is_none() && !addr.ip().is_loopback() {
        warn!(
            %addr,
            "serving plaintext HTTP/2 on a non-loopback address: tokens and values cross the \
             network unencrypted unless a mesh adds TLS (--tls-cert / --tls-key)"
        );
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Not serving until the backend has answered once; alive right away.
    set_status(&reporter, ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS_NAME, ServingStatus::Serving)
        .await;

    let (stopping_tx, stopping_rx) = watch::channel(false);
    // Installed before the server accepts anything (see reload::spawn), and
    // even with nothing to reload: a SIGHUP must never take the default
    // action, which terminates the process.
    let reload_task = crate::reload::spawn(
        security.reloadables(),
        config.tenancy.reload_interval,
        stopping_rx.clone(),
    )?;
    let health_task = tokio::spawn(health_loop(
        store.clone(),
        reporter.clone(),
        config.server.health_check_interval,
        stopping_rx.clone(),
    ));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.* (no services): lets grpcurl decode the ErrorInfo and
        // RetryInfo details of our errors instead of printing raw bytes.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .build_v1()
        .map_err(|e| ServeError::Startup(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .build_v1alpha()
        .map_err(|e| ServeError::Startup(format!("reflection: {e}")))?;

    let limits = &config.limits;
    let bounds = &config.bounds;
    crate::api::codec::set_max_request_values(bounds.max_request_values);
    let gate = Arc::new(Gate::with_tenant_share(
        resolver,
        limits.max_concurrent_requests,
        limits.max_metadata_bytes,
        bounds.tenant_max_in_flight,
    ));
    // One gate for both services: they share the concurrency limits.
    let admin = AdminApi::new(
        store.clone(),
        gate.clone(),
        Keyspace::new(config.storage.key_prefix.clone()),
        api_limits(&config),
        security.page_tokens.clone(),
        limits.admin_batch_keys,
        limits.admin_step_interval,
    );
    let api = StateApi::new(
        store.clone(),
        gate.clone(),
        Keyspace::new(config.storage.key_prefix.clone()),
        api_limits(&config),
        security.page_tokens.clone(),
    )
    .with_stopping(stopping_rx.clone());
    // tonic checks a message's length prefix against this before buffering
    // its body; api::http turns its answer into INVALID_ARGUMENT.
    let state_service = StateServiceServer::new(api)
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    let admin_service = AdminServiceServer::new(admin)
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);

    info!(
        %addr,
        backend = %store.describe(),
        tls = security.tls.is_some(),
        auth = if security.tenants.is_some() { "tokens" } else if api_needs_certs(&security) { "certificates" } else { "x-tenant-id header (unauthenticated)" },
        "state-service listening"
    );

    // On the shutdown signal: report NOT_SERVING first (so load balancers stop
    // routing), then let tonic stop accepting and drain.
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_reporter = reporter.clone();
    // Cancelled once health says NOT_SERVING: the guard then refuses new
    // requests and ends unfinished bodies and open streams, so the drain
    // waits only for handlers already running.
    let streams_stop = CancellationToken::new();
    let guard = GuardLayer::new(gate, guard_settings(bounds), streams_stop.clone());
    let signal = async move {
        shutdown.await;
        info!("shutting down: health NOT_SERVING, ending streams, draining running requests");
        let _ = stopping_tx.send(true);
        set_status(&signal_reporter, ServingStatus::NotServing).await;
        signal_reporter
            .set_service_status(LIVENESS_NAME, ServingStatus::NotServing)
            .await;
        streams_stop.cancel();
        let _ = drain_tx.send(());
    };

    let header_list_limit = limits
        .max_metadata_bytes
        .saturating_add(HEADER_LIST_HEADROOM)
        .try_into()
        .unwrap_or(u32::MAX);
    let router = transport_bounds(Server::builder(), bounds)
        .layer(guard)
        .layer(RequestSizeLayer::new(limits.max_request_bytes))
        .http2_max_header_list_size(header_list_limit)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(state_service)
        .add_service(admin_service);
    let incoming = listener::incoming(listener, security.tls.clone(), conn_bounds(bounds));
    let server = router.serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);

    let drain_timeout = config.server.drain_timeout;
    let drain_deadline = async move {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = &mut server => r.map_err(ServeError::from),
        () = drain_deadline => {
            warn!(?drain_timeout, "drain timeout passed; closing the remaining connections");
            Ok(())
        }
    };
    health_task.abort();
    reload_task.abort();
    info!("state-service stopped");
    result
}

// ---- Resource bounds (issue 11) -------------------------------------------

/// The HTTP/2 bounds of every connection. What one connection can make the
/// service hold in request bytes: received but unread, at most the
/// connection window (all its streams together; each stream at most the
/// stream window); read but not yet decoded, at most what the guard's
/// process-wide --max-pending-request-bytes lets through; so per process at
/// most connections × connection window + pending budget
/// (docs/security.md#resource-limits has the figures for the defaults).
fn transport_bounds(builder: Server, bounds: &BoundsConfig) -> Server {
    builder
        .max_concurrent_streams(bounds.max_concurrent_streams)
        .initial_stream_window_size(bounds.stream_window_bytes)
        .initial_connection_window_size(bounds.connection_window_bytes)
        // Fixed windows: adaptive ones would grow past the bounds above.
        .http2_adaptive_window(Some(false))
        .http2_keepalive_interval(Some(bounds.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(bounds.http2_keepalive_timeout))
}

/// The bounds the accept loop enforces before HTTP/2 starts.
fn conn_bounds(bounds: &BoundsConfig) -> ConnBounds {
    ConnBounds {
        max_connections: bounds.max_connections,
        handshake_timeout: bounds.handshake_timeout,
        preface_timeout: bounds.preface_timeout,
    }
}

fn guard_settings(bounds: &BoundsConfig) -> GuardSettings {
    GuardSettings {
        max_pending_request_bytes: bounds.max_pending_request_bytes,
        request_body_timeout: bounds.request_body_timeout,
        max_health_watchers: bounds.max_health_watchers,
    }
}

// ---- end of resource bounds -----------------------------------------------

/// The limits the API enforces, from the configuration.
fn api_limits(config: &Config) -> Limits {
    let l = &config.limits;
    Limits {
        max_key_bytes: l.max_key_bytes,
        max_value_bytes: l.max_value_bytes,
        max_batch_items: l.max_batch_items,
        max_transaction_ops: l.max_transaction_ops,
        default_page_size: l.default_page_size,
        max_page_size: l.max_page_size,
        max_ttl: l.max_ttl,
        max_request_id_bytes: l.max_request_id_bytes,
        max_response_bytes: l.max_response_bytes,
    }
}

fn api_needs_certs(security: &Security) -> bool {
    security.tls.as_ref().is_some_and(|t| t.verifies_clients())
}

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Pings the backend every `interval` and mirrors the answer into the health
/// service. A PING is used rather than a real request because it is the
/// cheapest full round trip and queues behind no data; the connection layer
/// bounds it with a short timeout and reconnects lost connections here, off
/// the request path.
async fn health_loop<S: Store>(
    store: Arc<S>,
    reporter: HealthReporter,
    interval: Duration,
    stopping: watch::Receiver<bool>,
) {
    let mut serving: Option<bool> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = store.ping().await;
        if *stopping.borrow() {
            return;
        }
        let up = result.is_ok();
        crate::metrics::backend_up(up);
        if serving != Some(up) {
            match &result {
                Ok(()) => info!(backend = %store.describe(), "backend reachable: SERVING"),
                Err(e) => warn!(error = %e, "backend unreachable: NOT_SERVING"),
            }
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, status).await;
            serving = Some(up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unauthenticated_non_loopback_listeners_are_warned_about() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let lo6: SocketAddr = "[::1]:50051".parse().unwrap();
        assert!(unauthenticated_exposure(any, false));
        assert!(!unauthenticated_exposure(any, true));
        assert!(!unauthenticated_exposure(lo, false));
        assert!(!unauthenticated_exposure(lo6, false));
    }
}
