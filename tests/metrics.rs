//! The Prometheus endpoint after real traffic: request counters by method and
//! code, latency histograms, backend and pool gauges, build info. One test per
//! binary because the recorder is process-global.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{Backend, TestServer, free_port, v};
use state_service::pb::{GetRequest, PutRequest};

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_traffic() {
    let port = free_port();
    let s = TestServer::start_with(Backend::Redis, |cfg| {
        cfg.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        cfg.metrics_tenant_labels = true;
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
    // Let the health loop publish backend and pool gauges.
    tokio::time::sleep(Duration::from_millis(300)).await;

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
