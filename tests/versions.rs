//! Versions do not go back for a key when the instances writing it have
//! clocks that disagree: versions come from the service's clock, kept above
//! a floor every instance publishes its clock into (`record::Clocks`), so a
//! Redis failover to a replica whose clock lags changes nothing, and an
//! instance whose own clock lags by an hour is pulled up to the others
//! within two health intervals (docs/design/storage-format.md, "Versions").
//!
//! The lagging instance is the real binary under libfaketime (Debian package
//! `faketime`, installed by scripts/test.sh): its wall clock is an hour
//! behind, its monotonic clock (timers) untouched.

mod common;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Client, RedisServer, v, wait_health};
use state_service::pb::{DeleteRequest, GetRequest, PutRequest};
use tonic_health::pb::health_check_response::ServingStatus;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The service binary against `redis_url`, optionally with a wall clock
/// `skew` behind (libfaketime syntax, e.g. `-1h`).
struct Instance {
    child: Child,
    addr: SocketAddr,
}

impl Instance {
    async fn start(redis_url: &str, skew: Option<&str>) -> Self {
        let port = common::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_state-service"));
        cmd.env_clear()
            .env("STATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("STATE_REDIS_URL", redis_url)
            .env("STATE_HEALTH_CHECK_INTERVAL", "100ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(skew) = skew {
            assert!(
                std::path::Path::new(LIBFAKETIME).exists(),
                "libfaketime is required (Debian package `faketime`; scripts/test.sh installs it)"
            );
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", skew)
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        common::kill_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start state-service");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        common::wait_for_port(port, Duration::from_secs(10));
        wait_health(addr, ServingStatus::Serving, Duration::from_secs(10)).await;
        Self { child, addr }
    }

    async fn client(&self) -> Client {
        common::connect(self.addr).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put(c: &mut Client, key: &str, value: i64) -> u64 {
    c.put(PutRequest {
        key: key.into(),
        value: v::int(value),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_lags_an_hour_never_sends_a_version_back() {
    let redis = RedisServer::start();
    let on_time = Instance::start(&redis.url(), None).await;
    let lagging = Instance::start(&redis.url(), Some("-1h")).await;
    let (mut a, mut b) = (on_time.client().await, lagging.client().await);

    // Written and deleted by the instance whose clock is right…
    let first = put(&mut a, "k", 1).await;
    a.delete(DeleteRequest {
        key: "k".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // …then, more than two health intervals later (100 ms each here; a
    // margin of seconds), recreated by the one an hour behind: above, not
    // an hour below.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recreated = put(&mut b, "k", 2).await;
    assert!(
        recreated > first,
        "a recreated key went back from {first} to {recreated}"
    );
    // Updates keep growing whoever writes.
    let next = put(&mut a, "k", 3).await;
    assert!(next > recreated);
    let again = put(&mut b, "k", 4).await;
    assert!(again > next);
    let got = a
        .get(GetRequest {
            key: "k".into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.entry.unwrap().version, again);
}
