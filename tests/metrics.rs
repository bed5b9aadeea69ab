//! The Prometheus endpoint after real traffic: request counters by method and
//! code, latency histograms, backend and pool gauges, build info. One test per
//! binary because the recorder is process-global.

mod common;

use std::time::Duration;

use common::{Backend, TestServer, free_port, v};
use state_service::pb::{GetRequest, PutRequest};

use common::{sample, scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_traffic() {
    let port = free_port();
    let s = TestServer::start_with(Backend::Redis, |cfg| {
        cfg.server.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        cfg.server.metrics_tenant_labels = true;
    })
    .await;
    let mut c = s.client();
    for i in 0..5 {
        c.put(PutRequest {
            key: format!("k{i}"),
            value: v::int(i),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.get(GetRequest {
        key: "k1".into(),
        refresh_ttl: None,
    })
    .await
    .unwrap();
    let _ = c
        .get(GetRequest {
            key: String::new(),
            refresh_ttl: None,
        })
        .await
        .unwrap_err();
    // The health loop publishes the backend and pool gauges on its own beat.
    common::eventually!(
        Duration::from_secs(10),
        "the health loop publishing the pool gauges",
        {
            let t = scrape(port);
            sample(&t, "state_backend_up") == Some(1.0)
                && sample(&t, r#"state_redis_pool_connections{state="connected"}"#) == Some(2.0)
        }
    );
    let text = scrape(port);
    assert_eq!(
        sample(
            &text,
            r#"state_requests_total{method="Put",code="OK",tenant="default"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"state_requests_total{method="Get",code="OK",tenant="default"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"state_requests_total{method="Get",code="INVALID_ARGUMENT",tenant="default"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"state_request_duration_seconds_count{method="Put"}"#
        ),
        Some(5.0)
    );
    assert!(text.contains(r#"state_request_duration_seconds_bucket{method="Put",le="0.001"}"#));
    assert_eq!(sample(&text, "state_requests_in_flight"), Some(0.0));
    assert_eq!(sample(&text, "state_backend_up"), Some(1.0));
    assert_eq!(
        sample(&text, r#"state_redis_pool_connections{state="connected"}"#),
        Some(2.0)
    );
    assert!(text.contains("state_build_info{version="), "{text}");
}
