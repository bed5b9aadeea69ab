//! The load generator against a real service over a private redis-server: its
//! JSON report carries the documented fields, counts what it did, and reports
//! failures by status code instead of hiding them. Nothing here asserts on
//! speed.

// The service's own test harness, shared rather than copied.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use serde_json::Value as Json;

/// Runs `state-loadgen --json` against `server` with `args` and parses its report.
async fn loadgen(server: &TestServer, args: &[&str]) -> Json {
    let target = format!("http://{}", server.addr);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_state-loadgen"));
    cmd.args(["--target", &target, "--json", "--threads", "1"])
        .args(args)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("state-loadgen finished within 60 s")
        .expect("state-loadgen started");
    assert!(
        out.status.success(),
        "state-loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "state-loadgen printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn assert_latency_fields(v: &Json) {
    for field in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(v[field].is_number(), "latency field {field} missing in {v}");
    }
    let p = |f: &str| v[f].as_u64().unwrap_or(0);
    assert!(p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p999"));
    assert!(p("p999") <= p("max"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_mix_reports_ops_latency_and_no_errors() {
    let server = TestServer::start(Backend::Redis).await;
    let report = loadgen(
        &server,
        &[
            "--mix",
            "get=4,put=2,put-with-ttl=1,increment=1,batch-get=1,batch-put=1,list=1",
            "--list-values",
            "--connections",
            "2",
            "--concurrency",
            "8",
            "--keys",
            "500",
            "--batch-size",
            "10",
            "--prefill",
            "--tenant",
            "bench-tenant",
            "--warmup",
            "200ms",
            "--duration",
            "1s",
        ],
    )
    .await;

    assert_eq!(report["mode"], "closed_loop");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["errors_by_code"], serde_json::json!({}));
    let ok = report["ok"].as_u64().expect("ok is a count");
    assert!(ok > 0, "{report}");
    assert_eq!(report["requests"].as_u64(), Some(ok));
    assert!(report["ops_per_s"].as_f64().is_some_and(|v| v > 0.0));
    // Batches count every key, so keys/s exceeds ops/s.
    assert!(report["keys_per_s"].as_f64() > report["ops_per_s"].as_f64());
    assert!(report["elapsed_s"].as_f64().is_some_and(|v| v > 0.0));
    assert!(report["client_cpu_s"].is_number());
    assert_eq!(report["rate"], Json::Null);
    assert_latency_fields(&report["latency_us"]);
    for op in [
        "get",
        "put",
        "put-with-ttl",
        "increment",
        "batch-get",
        "batch-put",
        "list",
    ] {
        let o = &report["by_op"][op];
        assert!(
            o["ok"].as_u64().is_some_and(|n| n > 0),
            "no {op} in {report}"
        );
        assert!(o["ops_per_s"].is_number() && o["keys_per_s"].is_number());
        assert_latency_fields(&o["latency_us"]);
    }
    // List pages through the prefilled keys (page size = batch size).
    let list = &report["by_op"]["list"];
    assert!(
        list["keys"].as_u64() > list["ok"].as_u64(),
        "List pages carry keys: {report}"
    );
    // Every key was prefilled, so every read (List values included) finds
    // its key.
    assert_eq!(report["read_hit_ratio"].as_f64(), Some(1.0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_mode_reports_target_achieved_rate_and_whether_it_was_held() {
    let server = TestServer::start(Backend::Redis).await;
    let report = loadgen(
        &server,
        &[
            "--mix",
            "put=1,get=1",
            "--rate",
            "200",
            "--warmup",
            "100ms",
            "--duration",
            "1s",
        ],
    )
    .await;

    assert_eq!(report["mode"], "fixed_rate");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["ok"].as_u64().is_some_and(|n| n > 0), "{report}");
    let rate = &report["rate"];
    assert_eq!(rate["target_per_s"].as_f64(), Some(200.0));
    assert!(rate["achieved_per_s"].as_f64().is_some_and(|v| v > 0.0));
    assert!(rate["held"].is_boolean(), "{rate}");
    assert_latency_fields(&rate["send_lag_us"]);
    assert_latency_fields(&rate["latency_from_schedule_us"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_are_counted_by_status_code() {
    let server = TestServer::start(Backend::Redis).await;
    // `a:b` is ASCII (the header can carry it) but not a valid tenant id.
    let report = loadgen(
        &server,
        &[
            "--tenant",
            "a:b",
            "--requests",
            "20",
            "--warmup",
            "0s",
            "--concurrency",
            "4",
        ],
    )
    .await;

    assert_eq!(report["ok"], 0, "{report}");
    assert_eq!(report["requests"], 20, "{report}");
    assert_eq!(report["errors"], 20, "{report}");
    assert_eq!(report["errors_by_code"]["InvalidArgument"], 20, "{report}");
}
