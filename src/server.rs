//! Assembles and runs the gRPC server: the state API over the configured
//! backend, grpc.health.v1 driven by a background backend check, reflection
//! (v1 and v1alpha) for our public services, and graceful shutdown.
//!
//! `run(listener, config, shutdown)` is the seam tests use: they bind
//! `127.0.0.1:0` themselves and pass their own shutdown future.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    api::{Limits, StateApi},
    config::Config,
    pb::{self, state_service_server::StateServiceServer},
    store::{MemoryStore, RedisStore, Store, redis::ConnSettings},
    tenancy::{TenantId, TenantResolver},
};

/// Name under which the state API reports health (besides the server-wide "").
/// Both follow the backend: use them for readiness.
pub const SERVICE_NAME: &str = "stateservice.v1.StateService";

/// Health name that is SERVING for as long as the process runs and can answer
/// (NOT_SERVING only while shutting down). Use it for liveness probes: a
/// Redis outage must not make Kubernetes restart every pod.
pub const LIVENESS_NAME: &str = "liveness";

/// Headroom above the largest value for the rest of a request message.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the server on `listener` until `shutdown` completes, then drains
/// in-flight requests for at most `config.drain_timeout`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    config.validate()?;
    if let Some(addr) = config.metrics_listen {
        crate::metrics::install(addr, config.metrics_tenant_labels)?;
        info!(%addr, "metrics exporter listening");
    }
    match &config.redis_url {
        Some(url) => {
            let settings = ConnSettings {
                pool_size: config.redis_pool_size,
                connect_timeout: config.redis_connect_timeout,
                pool_wait_timeout: config.redis_pool_wait_timeout,
                username: config.redis_username.clone(),
                password: config.redis_password()?,
            };
            let store = RedisStore::new(url, &settings, config.redis_command_timeout)?;
            serve(listener, config, Arc::new(store), shutdown).await
        }
        None => {
            warn!(
                "no --redis-url given: using the embedded in-memory backend; state is neither \
                 shared between instances nor durable across restarts"
            );
            serve(listener, config, Arc::new(MemoryStore::new()), shutdown).await
        }
    }
}

async fn serve<S: Store>(
    listener: TcpListener,
    config: Config,
    store: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let addr = listener.local_addr()?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Not serving until the backend has answered once; alive right away.
    set_status(&reporter, ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS_NAME, ServingStatus::Serving)
        .await;

    let (stopping_tx, stopping_rx) = watch::channel(false);
    let health_task = tokio::spawn(health_loop(
        store.clone(),
        reporter.clone(),
        config.health_check_interval,
        stopping_rx,
    ));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .build_v1alpha()?;

    let default_tenant = TenantId::parse(&config.default_tenant)?;
    let api = StateApi::new(
        store.clone(),
        TenantResolver::new(default_tenant),
        config.key_prefix.clone(),
        Limits::from_config(&config),
    );
    let max_message =
        config.max_value_bytes.saturating_add(config.max_key_bytes) + MESSAGE_OVERHEAD;
    let state_service = StateServiceServer::new(api)
        .max_decoding_message_size(max_message.max(4 * 1024 * 1024))
        .max_encoding_message_size(usize::MAX);

    info!(%addr, backend = %store.describe(), "state-service listening");

    // On the shutdown signal: report NOT_SERVING first (so load balancers stop
    // routing), then let tonic stop accepting and drain.
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_reporter = reporter.clone();
    let signal = async move {
        shutdown.await;
        info!("shutting down: health NOT_SERVING, draining in-flight requests");
        let _ = stopping_tx.send(true);
        set_status(&signal_reporter, ServingStatus::NotServing).await;
        signal_reporter
            .set_service_status(LIVENESS_NAME, ServingStatus::NotServing)
            .await;
        let _ = drain_tx.send(());
    };

    let server = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(state_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    tokio::pin!(server);

    let drain_timeout = config.drain_timeout;
    let drain_deadline = async move {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = &mut server => r.map_err(BoxError::from),
        () = drain_deadline => {
            warn!(?drain_timeout, "drain timeout passed; closing the remaining connections");
            Ok(())
        }
    };
    health_task.abort();
    info!("state-service stopped");
    result
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
