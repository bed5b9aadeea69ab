//! Redis-specific behaviour: the on-Redis layout documented in
//! docs/design/storage-format.md, foreign data under the prefix, and the
//! round-trip budget (one Redis round trip per unary RPC, no per-request
//! PING/UNWATCH from pool recycling).

mod common;

use std::{collections::HashMap, time::Duration};

use common::{RedisServer, TestServer, as_tenant, v};
use redis::AsyncCommands;
use state_service::pb::{self, DeleteRequest, GetRequest, ListRequest, PutRequest};
use tonic::Code;
use tonic_types::StatusExt;

async fn start() -> (RedisServer, TestServer) {
    let redis = RedisServer::start();
    let server = TestServer::start_on(Some(redis.url()), None, |cfg| {
        // A slow health loop keeps its PINGs out of the per-RPC counts.
        cfg.health_check_interval = Duration::from_secs(3600);
    })
    .await;
    (redis, server)
}

fn put_req(key: &str, value: Option<pb::Value>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    }
}

#[tokio::test]
async fn keys_are_hashes_under_prefix_tenant_key() {
    let (redis, s) = start().await;
    let mut c = s.client();
    let version = c
        .put(as_tenant("team-a", put_req("orders:{eu}:1", v::int(-42))))
        .await
        .unwrap()
        .into_inner()
        .version;
    c.put(as_tenant("team-a", put_req("name", v::string("é"))))
        .await
        .unwrap();
    let mut r = redis.client().await;
    let fields: HashMap<String, Vec<u8>> = r.hgetall("state:team-a:orders:{eu}:1").await.unwrap();
    assert_eq!(fields["fmt"], b"1");
    assert_eq!(fields["ver"], version.to_string().as_bytes());
    assert_eq!(
        fields["val"], b"-42",
        "ints are stored as decimals for HINCRBY"
    );
    let fields: HashMap<String, Vec<u8>> = r.hgetall("state:team-a:name").await.unwrap();
    assert_eq!(
        fields["val"][0], 0x00,
        "non-int values start with the blob marker"
    );
    let ttl: i64 = r.pttl("state:team-a:name").await.unwrap();
    assert_eq!(ttl, -1);
}

#[tokio::test]
async fn foreign_data_under_the_prefix_is_a_clear_error() {
    let (redis, s) = start().await;
    let mut r = redis.client().await;
    let _: () = r.set("state:default:plain-string", "hello").await.unwrap();
    let _: () = r
        .hset("state:default:other-hash", "field", "x")
        .await
        .unwrap();
    let _: () = r
        .hset_multiple(
            "state:default:future-format",
            &[("fmt", "9"), ("val", "x"), ("ver", "1")],
        )
        .await
        .unwrap();
    let _: () = r
        .hset_multiple(
            "state:default:garbage",
            &[("fmt", "1"), ("val", "\u{0}\u{ff}\u{ff}"), ("ver", "1")],
        )
        .await
        .unwrap();
    let mut c = s.client();
    for key in ["plain-string", "other-hash", "future-format", "garbage"] {
        for refresh_ttl in [None, common::ms(1000)] {
            let err = c
                .get(GetRequest {
                    key: key.into(),
                    refresh_ttl,
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::FailedPrecondition, "{key}: {err:?}");
            let info = err.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, "INVALID_STORED_VALUE", "{key}");
            assert!(
                err.message().contains("not written by state-service"),
                "{}",
                err.message()
            );
        }
    }
    // Writes refuse to overwrite foreign data; an unconditional delete removes it.
    let err = c.put(put_req("plain-string", v::int(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = c
        .increment(pb::IncrementRequest {
            key: "other-hash".into(),
            delta: 1,
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let still: String = r.get("state:default:plain-string").await.unwrap();
    assert_eq!(still, "hello");
    let d = c
        .delete(DeleteRequest {
            key: "plain-string".into(),
            condition: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.deleted);
    // List still works: the foreign keys are listed, without entries.
    let page = c
        .list(ListRequest {
            prefix: String::new(),
            page_size: 100,
            page_token: String::new(),
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.keys.len(), 3, "{:?}", page.keys);
    assert!(page.entries.is_empty());
    // BatchGet with one foreign key fails as a whole with the same clear error.
    let err = c
        .batch_get(pb::BatchGetRequest {
            keys: vec!["other-hash".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn list_skips_keys_of_other_tenants_and_prefixes_in_a_shared_db() {
    let (redis, s) = start().await;
    let mut r = redis.client().await;
    // Unrelated data in the same Redis database.
    for k in [
        "other-app:x",
        "state:defaultx:y",
        "state:default",
        "statedefault:z",
    ] {
        let _: () = r.set(k, "1").await.unwrap();
    }
    let mut c = s.client();
    c.put(put_req("mine", v::int(1))).await.unwrap();
    let page = c
        .list(ListRequest {
            prefix: String::new(),
            page_size: 100,
            page_token: String::new(),
            include_values: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.keys, vec!["mine".to_string()]);
}

/// Parses `INFO commandstats` into command → calls.
async fn command_calls(r: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(r)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn unary_rpcs_cost_one_round_trip_and_no_recycling_pings() {
    let (redis, s) = start().await;
    let mut c = s.client();
    // Warm up: connections made, scripts loaded.
    c.put(put_req("warm", v::int(0))).await.unwrap();
    let mut r = redis.client().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut r)
        .await
        .unwrap();
    const N: u64 = 200;
    for i in 0..N {
        c.put(put_req(&format!("k{i}"), v::int(i as i64)))
            .await
            .unwrap();
        c.get(GetRequest {
            key: format!("k{i}"),
            refresh_ttl: None,
        })
        .await
        .unwrap();
    }
    let calls = command_calls(&mut r).await;
    let get = |name: &str| calls.get(name).copied().unwrap_or(0);
    // Each Put is one EVALSHA; each Get one MULTI…EXEC pipeline.
    assert_eq!(get("evalsha"), N, "{calls:?}");
    assert_eq!(get("exec"), N, "{calls:?}");
    assert_eq!(get("multi"), N, "{calls:?}");
    assert_eq!(get("eval"), 0, "scripts must run by SHA: {calls:?}");
    // No recycling round trips from the pool.
    assert_eq!(get("unwatch"), 0, "{calls:?}");
    assert!(get("ping") <= 8, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_comes_from_a_file_and_is_never_echoed() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("password");
    std::fs::write(&pw_file, "s3cret-pw\n").unwrap();
    let s = TestServer::start_on(Some(redis.url()), None, |cfg| {
        cfg.redis_password_file = Some(pw_file.clone());
    })
    .await;
    let mut c = s.client();
    c.put(put_req("k", v::int(1))).await.unwrap();

    // A wrong password (in the URL this time) fails with UNAVAILABLE and the
    // message never contains it.
    let url = format!("redis://:wrong-pw@127.0.0.1:{}", redis.port);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = state_service::config::Config::for_tests(addr, Some(url));
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(state_service::server::run(listener, cfg, async move {
        let _ = rx.await;
    }));
    common::wait_for_port(addr.port(), Duration::from_secs(5));
    let mut bad = common::connect(addr).await;
    let err = bad.put(put_req("k", v::int(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!err.message().contains("wrong-pw"), "{}", err.message());
    assert!(err.message().contains("***"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_selects_the_database() {
    let redis = RedisServer::start();
    let s = TestServer::start_on(Some(format!("{}/3", redis.url())), None, |_| {}).await;
    s.client().put(put_req("k", v::int(1))).await.unwrap();
    let mut r = redis.client().await;
    let in_db0: i64 = redis::cmd("DBSIZE").query_async(&mut r).await.unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(3)
        .query_async(&mut r)
        .await
        .unwrap();
    let in_db3: i64 = redis::cmd("DBSIZE").query_async(&mut r).await.unwrap();
    assert_eq!((in_db0, in_db3), (0, 1));
}
