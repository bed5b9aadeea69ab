//! Overload protection: per-tenant rate limits from the tenants file and the
//! global concurrency limit both answer RESOURCE_EXHAUSTED with a
//! google.rpc.RetryInfo; oversize metadata is refused. The assertions are on
//! codes and details, never on how fast anything ran.

mod common;

use std::time::Duration;

use common::{Backend, TenantDef, TestServer, tenants_toml, with_token};
use state_service::pb::GetRequest;
use tonic::Code;
use tonic_types::StatusExt;

const ALPHA: &str = "sst_limits-alpha-0123456789abcdefghijklmnopqrstuvwx";
const BETA: &str = "sst_limits-beta-0123456789abcdefghijklmnopqrstuvwxy";

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.into(),
        refresh_ttl: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_gets_resource_exhausted_with_retry_info() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    // One request per 100 s after a burst of 2: the third request is refused
    // however slowly this test runs.
    std::fs::write(
        &path,
        tenants_toml(&[
            TenantDef {
                id: "alpha",
                tokens: &[(ALPHA, &["read", "write"])],
                extra: "requests_per_second = 0.01\nburst = 2",
            },
            TenantDef {
                id: "beta",
                tokens: &[(BETA, &["read", "write"])],
                extra: "",
            },
        ]),
    )
    .unwrap();
    let s =
        TestServer::start_with(Backend::Memory, |cfg| cfg.tenancy.tenants_file = Some(path)).await;
    let mut c = s.client();
    c.get(with_token(ALPHA, get("k"))).await.unwrap();
    c.get(with_token(ALPHA, get("k"))).await.unwrap();
    let err = c.get(with_token(ALPHA, get("k"))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("rate limit"), "{}", err.message());
    let delay = err
        .get_details_retry_info()
        .expect("RetryInfo detail")
        .retry_delay
        .expect("retry_delay");
    assert!(
        delay > Duration::from_secs(1) && delay <= Duration::from_secs(100),
        "{delay:?}"
    );
    // The limit is per tenant: beta, unlimited, is unaffected.
    for _ in 0..20 {
        c.get(with_token(BETA, get("k"))).await.unwrap();
    }
    // Alpha stays limited whatever the RPC: one budget per tenant.
    let err = c
        .list(with_token(ALPHA, Default::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_shed_with_retry_info() {
    // A paused Redis holds admitted requests until their deadline, so the
    // single slot stays taken while the others arrive.
    let s = TestServer::start_with(Backend::Redis, |cfg| {
        cfg.limits.max_concurrent_requests = 1;
        cfg.redis.redis_command_timeout = Duration::from_secs(30);
    })
    .await;
    let redis = match &s.redis {
        Some(common::TestRedis::Owned(r)) => r,
        _ => panic!("this test needs its own redis-server"),
    };
    redis.pause();
    let calls = (0..4).map(|i| {
        let mut c = s.client();
        tokio::spawn(async move {
            let mut req = tonic::Request::new(get(&format!("k{i}")));
            req.set_timeout(Duration::from_secs(5));
            c.get(req).await
        })
    });
    let results = futures::future::join_all(calls).await;
    redis.resume();
    let mut shed = 0;
    for r in results {
        match r.unwrap() {
            Err(e) if e.code() == Code::ResourceExhausted => {
                shed += 1;
                assert!(
                    e.message().contains("--max-concurrent-requests"),
                    "{}",
                    e.message()
                );
                let retry = e.get_details_retry_info().expect("RetryInfo detail");
                assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO));
            }
            // The one admitted call waits on the paused Redis.
            Err(e) => assert!(
                matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{e:?}"
            ),
            Ok(r) => panic!("a call completed against a paused Redis: {r:?}"),
        }
    }
    assert_eq!(shed, 3, "exactly one call holds the only slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_never_shed() {
    let s = TestServer::start_with(Backend::Redis, |cfg| {
        cfg.limits.max_concurrent_requests = 1;
        cfg.redis.redis_command_timeout = Duration::from_secs(30);
    })
    .await;
    let redis = match &s.redis {
        Some(common::TestRedis::Owned(r)) => r,
        _ => panic!("this test needs its own redis-server"),
    };
    redis.pause();
    let call = |key: &'static str| {
        let mut c = s.client();
        tokio::spawn(async move {
            let mut req = tonic::Request::new(get(key));
            req.set_timeout(Duration::from_secs(5));
            c.get(req).await
        })
    };
    // Of two calls, one takes the only slot (and waits on the paused Redis),
    // the other is shed at once: the first to finish is the shed one, and
    // the slot is still taken right after.
    let (first, other) = match futures::future::select(call("a"), call("b")).await {
        futures::future::Either::Left((r, other)) | futures::future::Either::Right((r, other)) => {
            (r.unwrap(), other)
        }
    };
    assert_eq!(first.unwrap_err().code(), Code::ResourceExhausted);
    assert!(
        common::health_status(s.addr).await.is_some(),
        "health did not answer while the API was saturated"
    );
    redis.resume();
    let _ = other.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_far_over_the_limit_is_refused_before_the_service() {
    let s =
        TestServer::start_with(Backend::Memory, |cfg| cfg.limits.max_metadata_bytes = 2048).await;
    let mut c = s.client();
    // Just over the limit: the gate answers, naming the flag.
    let mut req = tonic::Request::new(get("k"));
    req.metadata_mut()
        .insert("x-padding", "p".repeat(2100).parse().unwrap());
    let err = c.get(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("--max-metadata-bytes"));
    // Far over (beyond the HTTP/2 header list limit): h2 refuses the stream
    // before the service sees it; the client never gets an OK.
    let mut req = tonic::Request::new(get("k"));
    req.metadata_mut()
        .insert("x-padding", "p".repeat(64 * 1024).parse().unwrap());
    let err = s.client().get(req).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    eprintln!(
        "code for oversize headers: {:?} {}",
        err.code(),
        err.message()
    );
    // The server keeps serving well-behaved calls. (h2 may close the
    // offending connection rather than just the stream, so ask on a fresh one.)
    common::connect(s.addr).await.get(get("k")).await.unwrap();
}
