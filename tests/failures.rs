//! Behaviour when Redis is absent, dies, hangs or comes back, and graceful
//! shutdown with requests in flight.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{RedisServer, TestServer, health_status, v, wait_health};
use state_service::pb::{GetRequest, PutRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn put_req(key: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: v::int(1),
        ..Default::default()
    }
}

fn with_deadline<T>(msg: T, d: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(d);
    r
}

/// A generous bound for "does not hang": the assertion is on the status code,
/// this only keeps a broken build from stalling the suite.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_means_unavailable_and_not_serving_then_recovery() {
    let mut redis = RedisServer::start();
    let s = TestServer::start_on(Some(redis.url()), None, |_| {}).await;
    let mut c = s.client();
    c.put(put_req("before")).await.unwrap();

    redis.stop();
    // The request ends with UNAVAILABLE (not a hang, not DEADLINE_EXCEEDED),
    // telling the client to retry, and not where Redis lives.
    let err = tokio::time::timeout(
        HANG_GUARD,
        c.put(with_deadline(put_req("during"), Duration::from_secs(5))),
    )
    .await
    .expect("request hung")
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains(&redis.port.to_string()) && err.message().contains("retry"),
        "{}",
        err.message()
    );
    wait_health(s.addr, ServingStatus::NotServing, Duration::from_secs(10)).await;

    // Back again: health flips to SERVING and requests work, same service.
    redis.restart();
    wait_health(s.addr, ServingStatus::Serving, Duration::from_secs(10)).await;
    c.put(put_req("after")).await.unwrap();
    let got = c
        .get(GetRequest {
            key: "after".into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_starts_without_redis_and_serves_once_it_appears() {
    let port = common::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = state_service::config::Config::for_tests(addr, Some(url));
    cfg.server.health_check_interval = Duration::from_millis(100);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(state_service::server::run(listener, cfg, async move {
        let _ = rx.await;
    }));
    wait_health(addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
    let mut c = common::connect(addr).await;
    let err = c
        .put(with_deadline(put_req("k"), Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    // Start Redis on the port the service was pointed at.
    let _redis = RedisServer::start_on(port, &[]);
    wait_health(addr, ServingStatus::Serving, Duration::from_secs(10)).await;
    c.put(put_req("k")).await.unwrap();
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_gives_deadline_exceeded_within_the_deadline() {
    let redis = RedisServer::start();
    let s = TestServer::start_on(Some(redis.url()), None, |cfg| {
        cfg.redis.redis_command_timeout = Duration::from_secs(30);
    })
    .await;
    let mut c = s.client();
    c.put(put_req("k")).await.unwrap();
    // Redis stops answering but keeps its sockets open.
    redis.pause();
    let err = tokio::time::timeout(
        HANG_GUARD,
        c.get(with_deadline(
            GetRequest {
                key: "k".into(),
                refresh_ttl: None,
            },
            Duration::from_secs(1),
        )),
    )
    .await
    .expect("request hung past its deadline")
    .unwrap_err();
    // The server answers DEADLINE_EXCEEDED shortly before the deadline; on a
    // machine too loaded for that margin, tonic's client-side timer ends the
    // call at the deadline instead (reported as CANCELLED "Timeout expired").
    // Either way the call ended at its deadline and did not hang.
    let client_timer = err.code() == Code::Cancelled && err.message().contains("Timeout expired");
    assert!(
        err.code() == Code::DeadlineExceeded || client_timer,
        "{err:?}"
    );
    // Health notices too.
    wait_health(s.addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
    redis.resume();
    // Afterwards the service works again without a restart.
    wait_health(s.addr, ServingStatus::Serving, Duration::from_secs(10)).await;
    c.put(put_req("k2")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_timeout_bounds_calls_without_a_deadline() {
    let redis = RedisServer::start();
    let s = TestServer::start_on(Some(redis.url()), None, |cfg| {
        cfg.redis.redis_command_timeout = Duration::from_millis(200);
    })
    .await;
    let mut c = s.client();
    c.put(put_req("k")).await.unwrap();
    redis.pause();
    let err = tokio::time::timeout(HANG_GUARD, c.put(put_req("k")))
        .await
        .expect("request hung")
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("--redis-command-timeout"),
        "{}",
        err.message()
    );
    redis.resume();
}

/// The real binary: SIGTERM while requests wait on a (sleeping) Redis; they
/// complete, health said NOT_SERVING during the drain, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let redis = RedisServer::start();
    let port = common::free_port();
    let metrics_port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_state-service"));
    cmd.env_clear()
        .env("STATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATE_REDIS_URL", redis.url())
        .env("STATE_REDIS_COMMAND_TIMEOUT", "10s")
        .env("STATE_DRAIN_TIMEOUT", "10s")
        .env("STATE_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::kill_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    common::wait_for_port(port, Duration::from_secs(10));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_health(addr, ServingStatus::Serving, Duration::from_secs(10)).await;
    let c = common::connect(addr).await;

    // Requests get stuck waiting on a frozen Redis…
    redis.pause();
    let mut in_flight = Vec::new();
    for i in 0..10 {
        let mut c = c.clone();
        in_flight.push(tokio::spawn(async move {
            c.put(put_req(&format!("k{i}"))).await
        }));
    }
    common::eventually!(
        Duration::from_secs(10),
        "all ten requests reaching the server",
        common::sample(&common::scrape(metrics_port), "state_requests_in_flight") == Some(10.0)
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    common::eventually!(
        Duration::from_secs(10),
        "health leaving SERVING",
        health_status(addr).await != Some(ServingStatus::Serving)
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before draining"
    );
    // …and complete once it answers again, before the process exits.
    redis.resume();
    for r in in_flight {
        let r = r.await.unwrap();
        assert!(r.is_ok(), "in-flight request failed during drain: {r:?}");
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut r = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("state:default:*")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(keys.len(), 10, "every acknowledged write is in Redis");
}

/// Liveness ("liveness") stays SERVING through a Redis outage while the
/// server-wide status follows Redis: probes must not restart pods for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_stays_serving_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let s = TestServer::start_on(Some(redis.url()), None, |_| {}).await;
    redis.stop();
    wait_health(s.addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}
