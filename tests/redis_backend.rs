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
        cfg.server.health_check_interval = Duration::from_secs(3600);
    })
    .await;
    (redis, server)
}

/// The first page (up to 100 keys) of everything the tenant has.
fn list_all(include_values: bool) -> ListRequest {
    ListRequest {
        prefix: String::new(),
        page_size: 100,
        page_token: String::new(),
        include_values,
    }
}

fn put_req(key: &str, value: Option<pb::Value>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    }
}

#[tokio::test]
async fn keys_are_strings_with_a_header_under_prefix_tenant_key() {
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
    let raw: Vec<u8> = r.get("state:team-a:orders:{eu}:1").await.unwrap();
    assert_eq!(&raw[..2], b"\xff\x02", "format-2 magic");
    assert_eq!(&raw[2..18], format!("{version:016}").as_bytes());
    assert_eq!(&raw[18..32], b"00000000000000", "no expiry");
    assert_eq!(&raw[32..], b"-42", "ints are stored as decimals");
    let raw: Vec<u8> = r.get("state:team-a:name").await.unwrap();
    assert_eq!(raw[32], 0x00, "non-int values start with the blob marker");
    let ttl: i64 = r.pttl("state:team-a:name").await.unwrap();
    assert_eq!(ttl, -1);

    // The header's absolute expiry and the key's Redis expiry are the same
    // instant, through PutWithTtl, Expire, a refreshing Get and Persist.
    let check_expiry = async |r: &mut redis::aio::MultiplexedConnection, want: Option<u64>| {
        let raw: Vec<u8> = r.get("state:team-a:name").await.unwrap();
        let at: u64 = std::str::from_utf8(&raw[18..32]).unwrap().parse().unwrap();
        let redis_at: i64 = redis::cmd("PEXPIRETIME")
            .arg("state:team-a:name")
            .query_async(r)
            .await
            .unwrap();
        match want {
            None => assert_eq!((at, redis_at), (0, -1)),
            Some(ms) => {
                assert_eq!(at as i64, redis_at, "header and Redis agree");
                let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(r).await.unwrap();
                let now = secs * 1000 + micros / 1000;
                // The service computes the instant on its estimate of
                // Redis's clock (same host here: off by a rounding at most).
                assert!(at > now && at <= now + ms + 5, "expires at {at}, now {now}");
            }
        }
    };
    c.put_with_ttl(as_tenant(
        "team-a",
        pb::PutWithTtlRequest {
            key: "name".into(),
            value: v::string("é"),
            ttl: common::ms(60_000),
            condition: None,
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    check_expiry(&mut r, Some(60_000)).await;
    c.expire(as_tenant(
        "team-a",
        pb::ExpireRequest {
            key: "name".into(),
            ttl: common::ms(120_000),
        },
    ))
    .await
    .unwrap();
    check_expiry(&mut r, Some(120_000)).await;
    let got = c
        .get(as_tenant(
            "team-a",
            GetRequest {
                key: "name".into(),
                refresh_ttl: common::ms(30_000),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ttl = got.entry.unwrap().ttl.unwrap();
    assert!(ttl.seconds >= 29 && ttl.seconds <= 30, "{ttl:?}");
    check_expiry(&mut r, Some(30_000)).await;
    c.persist(as_tenant(
        "team-a",
        pb::PersistRequest { key: "name".into() },
    ))
    .await
    .unwrap();
    check_expiry(&mut r, None).await;
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
    // A header with a bad version, and a good header before a value that
    // does not decode.
    let _: () = r
        .set(
            "state:default:bad-header",
            b"\xff\x02000000000000000x00000000000000\x00".as_slice(),
        )
        .await
        .unwrap();
    let _: () = r
        .set(
            "state:default:garbage",
            b"\xff\x02000000000000000100000000000000\x00\xff\xff".as_slice(),
        )
        .await
        .unwrap();
    let mut c = s.client();
    for key in ["plain-string", "other-hash", "bad-header", "garbage"] {
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
            ..Default::default()
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
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.deleted);
    // List still works: foreign strings are listed, without entries; a key
    // of another Redis type is not an entry of ours and is not listed (List
    // scans strings only, which also hides deleted keys' tombstones).
    let page = c.list(list_all(true)).await.unwrap().into_inner();
    let mut keys = page.keys.clone();
    keys.sort();
    assert_eq!(keys, ["bad-header", "garbage"], "{:?}", page.keys);
    assert!(page.entries.is_empty());
    // BatchGet with one foreign string fails as a whole with the same clear
    // error. MGET cannot tell a key of another Redis type from an absent one
    // (docs/design/storage-format.md), so that one reads as absent.
    let err = c
        .batch_get(pb::BatchGetRequest {
            keys: vec!["garbage".into(), "other-hash".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let got = c
        .batch_get(pb::BatchGetRequest {
            keys: vec!["other-hash".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.results[0].found, "{got:?}");
}

/// Headers whose digits Lua's `tonumber` would have read (exponent, hex,
/// spaces) are refused by every writing script before anything is written —
/// also inside a transaction whose other ops were fine.
#[tokio::test]
async fn malformed_headers_are_refused_before_any_write() {
    let (redis, s) = start().await;
    let mut r = redis.client().await;
    let headers: [&[u8]; 3] = [
        b"\xff\x020000000000001e5000000000000000\x00\x08\x01",
        b"\xff\x020x00000000000001000000000000000\x00\x08\x01",
        b"\xff\x02 00000000000000100000000000000\x00\x08\x01",
    ];
    let mut c = s.client();
    for (i, raw) in headers.iter().enumerate() {
        let key = format!("odd{i}");
        let _: () = r.set(format!("state:default:{key}"), *raw).await.unwrap();
        let err = c.put(put_req(&key, v::int(1))).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{key}: {err:?}");
        let err = c
            .expire(pb::ExpireRequest {
                key: key.clone(),
                ttl: common::ms(60_000),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{key}: {err:?}");
        let err = c
            .transact(pb::TransactRequest {
                ops: vec![
                    pb::TransactOp {
                        op: Some(pb::transact_op::Op::Put(put_req("fine", v::int(1)))),
                    },
                    pb::TransactOp {
                        op: Some(pb::transact_op::Op::Increment(pb::IncrementRequest {
                            key: key.clone(),
                            delta: 1,
                            ..Default::default()
                        })),
                    },
                ],
                ..Default::default()
            })
            .await
            .unwrap_err();
        let info = err.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "INVALID_STORED_VALUE", "{key}");
        assert_eq!(info.metadata["op_index"], "1", "{key}");
        let exists: bool = r.exists("state:default:fine").await.unwrap();
        assert!(!exists, "op 0 was written");
        let still: Vec<u8> = r.get(format!("state:default:{key}")).await.unwrap();
        assert_eq!(still.as_slice(), *raw, "{key} was changed");
    }
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
    let page = c.list(list_all(false)).await.unwrap().into_inner();
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
    // Each Put is one EVALSHA (reading the old header with GETRANGE inside
    // the script); each Get one GET, nothing else. The health loop adds one
    // EVALSHA per tick (the shared version floor, `record::Clocks`).
    let ticks = get("time");
    assert_eq!(get("evalsha"), N + ticks, "{calls:?}");
    assert_eq!(get("getrange"), N, "{calls:?}");
    assert_eq!(get("get"), N, "GET by the service only: {calls:?}");
    assert_eq!(get("exec") + get("multi") + get("pttl"), 0, "{calls:?}");
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
        cfg.redis.redis_password_file = Some(pw_file.clone());
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
    // Neither the password nor the (redacted) URL reaches the client; the
    // operator's log has the redacted URL and the cause.
    assert!(!err.message().contains("wrong-pw"), "{}", err.message());
    common::assert_no_backend_details(err.message());
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
    let in_db3: bool = r.exists("state:default:k").await.unwrap();
    assert_eq!((in_db0, in_db3), (0, true));
}

/// The ACL line docs/operations.md gives operators is enough for every RPC,
/// the health check (PING, TIME) and script loading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_works_with_the_documented_acl_user() {
    let redis = RedisServer::start();
    let mut admin = redis.client().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("state")
        .arg("on")
        .arg(">s3cret-acl")
        .arg("~state:*")
        .arg("+@read")
        .arg("+@write")
        .arg("+@scripting")
        .arg("+@connection")
        .arg("+time")
        .arg("-@dangerous")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://state:s3cret-acl@127.0.0.1:{}", redis.port);
    let s = TestServer::start_on(Some(url), None, |_| {}).await;
    let mut c = s.client();
    let put = c.put(put_req("a", v::int(1))).await.unwrap().into_inner();
    c.put(PutRequest {
        key: "a".into(),
        value: v::int(2),
        condition: Some(pb::Condition {
            kind: Some(pb::condition::Kind::IfVersion(put.version)),
        }),
        keep_ttl: true,
        ..Default::default()
    })
    .await
    .unwrap();
    c.put_with_ttl(pb::PutWithTtlRequest {
        key: "t".into(),
        value: v::string("x"),
        ttl: common::ms(60_000),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    for refresh_ttl in [None, common::ms(30_000)] {
        let got = c
            .get(GetRequest {
                key: "t".into(),
                refresh_ttl,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(got.found);
    }
    c.expire(pb::ExpireRequest {
        key: "a".into(),
        ttl: common::ms(60_000),
    })
    .await
    .unwrap();
    c.persist(pb::PersistRequest { key: "a".into() })
        .await
        .unwrap();
    let n = c
        .increment(pb::IncrementRequest {
            key: "n".into(),
            delta: 5,
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.value, 5);
    c.batch_put(pb::BatchPutRequest {
        items: vec![pb::BatchPutItem {
            key: "b".into(),
            value: v::int(3),
            ..Default::default()
        }],
    })
    .await
    .unwrap();
    let got = c
        .batch_get(pb::BatchGetRequest {
            keys: vec!["a".into(), "b".into(), "missing".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.results.iter().map(|r| r.found).collect::<Vec<_>>(),
        [true, true, false]
    );
    c.transact(pb::TransactRequest {
        ops: vec![
            pb::TransactOp {
                op: Some(pb::transact_op::Op::Put(put_req("c", v::int(1)))),
            },
            pb::TransactOp {
                op: Some(pb::transact_op::Op::Delete(DeleteRequest {
                    key: "b".into(),
                    condition: None,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let page = c.list(list_all(true)).await.unwrap().into_inner();
    assert_eq!(page.entries.len(), 4, "{:?}", page.keys);
    c.batch_delete(pb::BatchDeleteRequest {
        keys: vec!["a".into(), "c".into()],
    })
    .await
    .unwrap();
    c.delete(DeleteRequest {
        key: "t".into(),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    // A value large enough to be staged (SET under a stage key, RENAME).
    let big = Some(common::v::of(pb::value::Kind::BytesValue(vec![7; 8192])));
    c.put(put_req("big", big)).await.unwrap();
    // Request ids: a conditional delete with one leaves a tombstone, a put
    // over it carries the ids, a transaction with one remembers its answer.
    let v_big = c
        .get(GetRequest {
            key: "big".into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap()
        .version;
    c.delete(DeleteRequest {
        key: "big".into(),
        condition: Some(pb::Condition {
            kind: Some(pb::condition::Kind::IfVersion(v_big)),
        }),
        request_id: "del-1".into(),
    })
    .await
    .unwrap();
    c.put(put_req("big", v::int(1))).await.unwrap();
    let tx = pb::TransactRequest {
        ops: vec![pb::TransactOp {
            op: Some(pb::transact_op::Op::Increment(pb::IncrementRequest {
                key: "n".into(),
                delta: 1,
                ..Default::default()
            })),
        }],
        request_id: "tx-1".into(),
    };
    c.transact(tx.clone()).await.unwrap();
    c.transact(tx).await.unwrap();
    // The health check (PING each connection, TIME for the clock offset,
    // the version floor) passes too — at least one more round of it after
    // all the above — and Redis denied nothing along the way.
    s.wait_serving(Duration::from_secs(5)).await;
    let floor_calls = command_calls(&mut admin)
        .await
        .get("time")
        .copied()
        .unwrap_or(0);
    common::eventually!(
        Duration::from_secs(10),
        "another health round",
        command_calls(&mut admin)
            .await
            .get("time")
            .copied()
            .unwrap_or(0)
            > floor_calls + 1
    );
    let denied: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(denied.is_empty(), "ACL LOG: {denied:?}");
}
