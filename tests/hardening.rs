//! The findings of the outside review of main (issue 10), each pinned by a
//! test on both backends: long TTLs that corrupted values, transactions that
//! were not all-or-nothing, versions repeated inside one transaction,
//! malformed requests answered INTERNAL, the unbounded memory backend,
//! oversized requests and responses, and small contract slips. Backend
//! details in client-visible errors are checked on every error of every
//! suite by the harness's client (`common::Checked`).

mod common;

use std::time::Duration;

use common::{Backend, Client, RedisServer, TestRedis, TestServer, ms, v};
use state_service::pb::{
    self, BatchGetRequest, BatchPutItem, BatchPutRequest, DeleteRequest, ExpireRequest, GetRequest,
    IncrementRequest, ListRequest, PutWithTtlRequest, TransactOp, TransactRequest, transact_op::Op,
    value::Kind,
};
use tonic::Code;

use common::api::*;

common::all_backends!(
    ttls_beyond_the_maximum_are_refused_on_every_path,
    a_ttl_at_the_maximum_round_trips_the_value,
    a_transaction_failing_at_a_later_op_writes_nothing,
    the_reviewed_transaction_writes_nothing,
    versions_never_repeat_within_a_transaction,
    a_key_that_is_not_utf8_is_invalid_argument,
    an_oversized_request_names_the_request_limit,
    batch_get_refuses_a_response_over_the_budget,
    list_pages_stay_under_the_response_budget,
    batch_get_reads_a_repeated_key_once,
    a_lost_cas_on_an_absent_key_reports_version_zero,
    writes_past_the_memory_limit_are_refused_and_deletes_free_it,
);

/// 10^14 ms: about 3,170 years, past what the storage header can hold.
const HUGE_TTL_MS: u64 = 100_000_000_000_000;

fn assert_limit(status: &tonic::Status, setting: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (reason, meta) = reason(status);
    assert_eq!(reason, "LIMIT_EXCEEDED", "{status:?}");
    assert_eq!(meta["setting"], setting, "{status:?}");
    assert!(status.message().contains(setting), "{}", status.message());
}

async fn ttl_put(c: &mut Client, key: &str, value: Option<pb::Value>, ttl_ms: u64) -> u64 {
    c.put_with_ttl(PutWithTtlRequest {
        key: key.into(),
        value,
        ttl: ms(ttl_ms),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .version
}

async fn int_of(c: &mut Client, key: &str) -> Option<i64> {
    get(c, key)
        .await
        .map(|e| match e.value.and_then(|v| v.kind) {
            Some(Kind::IntValue(i)) => i,
            other => panic!("{key} holds {other:?}"),
        })
}

async fn ttls_beyond_the_maximum_are_refused_on_every_path(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "k", v::int(5)).await;
    let huge = ms(HUGE_TTL_MS);

    let e = c
        .put_with_ttl(PutWithTtlRequest {
            key: "k".into(),
            value: v::int(6),
            ttl: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");
    let e = c
        .batch_put(BatchPutRequest {
            items: vec![
                BatchPutItem {
                    key: "first".into(),
                    value: v::int(1),
                    ..Default::default()
                },
                BatchPutItem {
                    key: "k".into(),
                    value: v::int(6),
                    ttl: huge,
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");
    assert!(e.message().starts_with("items[1]: "), "{}", e.message());
    let e = c
        .transact(TransactRequest {
            ops: vec![
                put_op("first", v::int(1), None),
                TransactOp {
                    op: Some(Op::PutWithTtl(PutWithTtlRequest {
                        key: "k".into(),
                        value: v::int(6),
                        ttl: huge,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");
    let e = c
        .increment(IncrementRequest {
            key: "fresh".into(),
            delta: 1,
            ttl: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");
    let e = c
        .expire(ExpireRequest {
            key: "k".into(),
            ttl: huge,
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");
    let e = c
        .get(GetRequest {
            key: "k".into(),
            refresh_ttl: huge,
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");

    // Nothing was written or corrupted along the way.
    let e = get(&mut c, "k").await.expect("k still there");
    assert_eq!(e.value, v::int(5));
    assert_eq!(e.ttl, None);
    for untouched in ["first", "fresh"] {
        assert!(
            get(&mut c, untouched).await.is_none(),
            "{untouched} written"
        );
    }
}

async fn a_ttl_at_the_maximum_round_trips_the_value(b: Backend) {
    // The largest --max-ttl accepted (1000 years), used to the millisecond:
    // the header's expiry must hold it without spilling into the value.
    let max = Duration::from_secs(1000 * 365 * 24 * 3600);
    let s = TestServer::start_with(b, |c| c.limits.max_ttl = max).await;
    let mut c = s.client();
    let max_ms = max.as_millis() as u64;
    ttl_put(&mut c, "k", v::int(5), max_ms).await;
    let e = get(&mut c, "k").await.expect("stored");
    assert_eq!(e.value, v::int(5));
    let ttl = ttl_of(&e).expect("has a ttl");
    assert!(ttl <= max && ttl > max - Duration::from_secs(60), "{ttl:?}");
    // Expire and a refreshing read at the maximum leave the value intact.
    c.expire(ExpireRequest {
        key: "k".into(),
        ttl: ms(max_ms),
    })
    .await
    .unwrap();
    let r = c
        .get(GetRequest {
            key: "k".into(),
            refresh_ttl: ms(max_ms),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.entry.unwrap().value, v::int(5));
    assert_eq!(int_of(&mut c, "k").await, Some(5));
    // An increment of it stays exact.
    let r = c
        .increment(IncrementRequest {
            key: "k".into(),
            delta: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, 6);
}

/// Every op type driven into every failure it can have, as op 2 of a
/// transaction whose ops 0 and 1 would succeed: the call fails naming op 2,
/// and ops 0 and 1 left no trace.
async fn a_transaction_failing_at_a_later_op_writes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let stored = put(&mut c, "present", v::string("text")).await;
    put(&mut c, "max", v::int(i64::MAX)).await;
    let put_ttl = |key: &str, cond| TransactOp {
        op: Some(Op::PutWithTtl(PutWithTtlRequest {
            key: key.into(),
            value: v::int(1),
            ttl: ms(60_000),
            condition: cond,
            ..Default::default()
        })),
    };
    let del = |key: &str, cond| TransactOp {
        op: Some(Op::Delete(DeleteRequest {
            key: key.into(),
            condition: cond,
            ..Default::default()
        })),
    };
    let cases: Vec<(&str, TransactOp, Code, &str)> = vec![
        (
            "put if_absent on an existing key",
            put_op("present", v::int(1), if_absent()),
            Code::FailedPrecondition,
            "ALREADY_EXISTS",
        ),
        (
            "put if_exists on an absent key",
            put_op("absent", v::int(1), if_exists()),
            Code::FailedPrecondition,
            "NOT_FOUND",
        ),
        (
            "put with a stale version",
            put_op("present", v::int(1), if_version(stored + 1)),
            Code::Aborted,
            "VERSION_MISMATCH",
        ),
        (
            "put_with_ttl with a stale version",
            put_ttl("present", if_version(stored + 1)),
            Code::Aborted,
            "VERSION_MISMATCH",
        ),
        (
            "put_with_ttl if_absent on an existing key",
            put_ttl("present", if_absent()),
            Code::FailedPrecondition,
            "ALREADY_EXISTS",
        ),
        (
            "delete if_exists on an absent key",
            del("absent", if_exists()),
            Code::FailedPrecondition,
            "NOT_FOUND",
        ),
        (
            "delete with a stale version",
            del("present", if_version(stored + 1)),
            Code::Aborted,
            "VERSION_MISMATCH",
        ),
        (
            "increment of a string",
            incr_op("present", 1),
            Code::FailedPrecondition,
            "NOT_AN_INTEGER",
        ),
        (
            "increment past int64",
            incr_op("max", 1),
            Code::FailedPrecondition,
            "INCREMENT_OVERFLOW",
        ),
        (
            "increment of a value op 0 made a string",
            incr_op("a", 1),
            Code::FailedPrecondition,
            "NOT_AN_INTEGER",
        ),
    ];
    for (what, failing, code, want) in cases {
        let e = c
            .transact(TransactRequest {
                ops: vec![put_op("a", v::string("x"), None), incr_op("b", 7), failing],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
        let (got, meta) = reason(&e);
        assert_eq!(got, want, "{what}");
        assert_eq!(meta["op_index"], "2", "{what}");
        assert!(get(&mut c, "a").await.is_none(), "{what}: op 0 was written");
        assert!(get(&mut c, "b").await.is_none(), "{what}: op 1 was written");
        let e = get(&mut c, "present").await.unwrap();
        assert_eq!(e.version, stored, "{what}: present changed");
    }
}

/// The transaction of the review, verbatim: it answered FAILED_PRECONDITION
/// without op_index after writing both keys.
async fn the_reviewed_transaction_writes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let e = c
        .transact(TransactRequest {
            ops: vec![
                put_op("a", v::string("x"), None),
                TransactOp {
                    op: Some(Op::PutWithTtl(PutWithTtlRequest {
                        key: "b".into(),
                        value: v::int(-5),
                        ttl: ms(HUGE_TTL_MS),
                        ..Default::default()
                    })),
                },
                incr_op("b", 1),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_limit(&e, "--max-ttl");
    assert!(e.message().starts_with("ops[1]: "), "{}", e.message());
    assert!(get(&mut c, "a").await.is_none());
    assert!(get(&mut c, "b").await.is_none());
}

async fn versions_never_repeat_within_a_transaction(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let del = TransactOp {
        op: Some(Op::Delete(DeleteRequest {
            key: "v".into(),
            ..Default::default()
        })),
    };
    let r = c
        .transact(TransactRequest {
            ops: vec![
                put_op("v", v::string("a"), None),
                del.clone(),
                put_op("v", v::string("b"), None),
                del,
                incr_op("v", 1),
                put_op("v", v::string("c"), None),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    use pb::transact_result::Result as R;
    let versions: Vec<u64> = r
        .results
        .iter()
        .filter_map(|r| match r.result.as_ref().unwrap() {
            R::Put(p) => Some(p.version),
            R::Increment(i) => Some(i.version),
            R::Delete(_) => None,
        })
        .collect();
    assert_eq!(versions.len(), 4);
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions repeat or go back: {versions:?}"
    );
    let e = get(&mut c, "v").await.unwrap();
    assert_eq!(e.version, versions[3]);
    // And the next write, in its own call, is above all of them.
    assert!(put(&mut c, "v", v::int(0)).await > versions[3]);
}

/// A `GetRequest` whose key is a `bytes` field: lets the test put bytes on
/// the wire that are not UTF-8, which the real client cannot.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

async fn a_key_that_is_not_utf8_is_invalid_argument(b: Backend) {
    let s = TestServer::start(b).await;
    let channel = common::channel(s.addr, None).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/stateservice.v1.StateService/Get");
    let codec = tonic_prost::ProstCodec::<RawGetRequest, pb::GetResponse>::default();
    let e = grpc
        .unary(
            tonic::Request::new(RawGetRequest {
                key: vec![b'k', 0xff, 0xfe],
            }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(reason(&e).0, "INVALID_ARGUMENT");
    assert!(e.message().contains("GetRequest"), "{}", e.message());
}

/// A value of `n` bytes (encoded as bytes_value, a few bytes more).
fn blob(n: usize) -> Option<pb::Value> {
    Some(v::of(Kind::BytesValue(vec![0xab; n])))
}

async fn an_oversized_request_names_the_request_limit(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    // Five values under --max-value-bytes (1 MiB) each, 4.5 MB together:
    // over --max-request-bytes (4 MiB).
    let items = (0..5)
        .map(|i| BatchPutItem {
            key: format!("big{i}"),
            value: blob(900_000),
            ..Default::default()
        })
        .collect();
    let e = c.batch_put(BatchPutRequest { items }).await.unwrap_err();
    assert_limit(&e, "--max-request-bytes");
    assert!(get(&mut c, "big0").await.is_none());
    // The connection still serves.
    put(&mut c, "after", v::int(1)).await;
}

/// Six values of about 1 MB each, as in the review.
async fn six_big_values(c: &mut Client) -> Vec<String> {
    let keys: Vec<String> = (0..6).map(|i| format!("big{i}")).collect();
    for k in &keys {
        put(c, k, blob(1_000_000)).await;
    }
    keys
}

async fn batch_get_refuses_a_response_over_the_budget(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let keys = six_big_values(&mut c).await;
    let e = c
        .batch_get(BatchGetRequest { keys: keys.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let (reason, meta) = reason(&e);
    assert_eq!(reason, "RESPONSE_TOO_LARGE");
    assert_eq!(meta["setting"], "--max-response-bytes");
    assert!(e.message().contains("split"), "{}", e.message());
    // Under the budget it answers, and the client (4 MiB default) reads it.
    let r = c
        .batch_get(BatchGetRequest {
            keys: keys[..3].to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.results.iter().all(|r| r.found));
}

async fn list_pages_stay_under_the_response_budget(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let keys = six_big_values(&mut c).await;
    // tonic's client, like grpcio and grpc-js, refuses responses over 4 MiB
    // by default: every page must stay below it, however many keys fit the
    // page size.
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = c
            .list(ListRequest {
                prefix: "big".into(),
                page_size: 100,
                page_token: token,
                include_values: true,
            })
            .await
            .expect("page within the client's 4 MiB limit")
            .into_inner();
        pages += 1;
        assert!(
            page.entries.len() <= 4,
            "{} values in one page",
            page.entries.len()
        );
        assert_eq!(page.keys.len(), page.entries.len());
        seen.extend(page.keys);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 20, "listing does not end");
    }
    seen.sort();
    assert_eq!(seen, keys);
    assert!(pages >= 2);
}

async fn batch_get_reads_a_repeated_key_once(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "one", blob(100_000)).await;
    put(&mut c, "two", v::int(2)).await;
    // 60 copies of a 100 kB value: the response repeats it (6 MB, over the
    // budget), the backend would read it once.
    let e = c
        .batch_get(BatchGetRequest {
            keys: vec!["one".to_string(); 60],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e).0, "RESPONSE_TOO_LARGE");
    // Duplicates within the budget each get their own result, in order.
    let r = c
        .batch_get(BatchGetRequest {
            keys: vec!["two".into(), "one".into(), "two".into(), "none".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<bool> = r.results.iter().map(|r| r.found).collect();
    assert_eq!(found, [true, true, true, false]);
    assert_eq!(r.results[0], r.results[2]);
}

async fn a_lost_cas_on_an_absent_key_reports_version_zero(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let e = c
        .put(pb::PutRequest {
            key: "absent".into(),
            value: v::int(1),
            condition: if_version(42),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let (reason, meta) = reason(&e);
    assert_eq!(reason, "VERSION_MISMATCH");
    assert_eq!(meta["current_version"], "0");
    assert_eq!(meta["key"], "absent");
}

/// The memory backend's budget behaves like Redis at `maxmemory` with
/// `noeviction`: writes that store data are refused with RESOURCE_EXHAUSTED
/// once the limit is passed, what was acknowledged stays readable, deletes
/// and expiry changes keep working, and freeing memory lets writes in again.
async fn writes_past_the_memory_limit_are_refused_and_deletes_free_it(b: Backend) {
    let s = match b {
        Backend::Memory => {
            TestServer::start_with(b, |c| c.storage.memory_max_bytes = 2 * 1024 * 1024).await
        }
        Backend::Redis => {
            // An empty Redis uses about 1 MB; this leaves about 2 MB.
            let redis = RedisServer::start_with(&[
                "--maxmemory",
                "3mb",
                "--maxmemory-policy",
                "noeviction",
            ]);
            let url = redis.url();
            TestServer::start_on(Some(url), Some(TestRedis::Owned(redis)), |_| {}).await
        }
        Backend::Cluster | Backend::Sentinel => unreachable!("this test has no topology rows"),
    };
    let mut c = s.client();
    let mut written = Vec::new();
    let refused = loop {
        let key = format!("fill{}", written.len());
        match c.put(put_req(&key, blob(64 * 1024))).await {
            Ok(_) => written.push(key),
            Err(e) => break e,
        }
        assert!(written.len() < 200, "no limit was reached");
    };
    assert!(written.len() >= 10, "refused too early: {}", written.len());
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused).0, "BACKEND_OUT_OF_MEMORY");
    // Every kind of write of the same size is refused the same way.
    let e = c
        .put_with_ttl(PutWithTtlRequest {
            key: "pt".into(),
            value: blob(64 * 1024),
            ttl: ms(60_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e).0, "BACKEND_OUT_OF_MEMORY");
    let e = c
        .batch_put(BatchPutRequest {
            items: vec![BatchPutItem {
                key: "bp".into(),
                value: blob(64 * 1024),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e).0, "BACKEND_OUT_OF_MEMORY");
    let e = c
        .transact(TransactRequest {
            ops: vec![put_op("tx", blob(64 * 1024), None)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e).0, "BACKEND_OUT_OF_MEMORY");
    for k in ["pt", "bp", "tx"] {
        assert!(get(&mut c, k).await.is_none(), "{k} was written");
    }
    // What was acknowledged is intact; expiry changes and deletes work.
    assert!(get(&mut c, &written[0]).await.is_some());
    c.expire(ExpireRequest {
        key: written[0].clone(),
        ttl: ms(3_600_000),
    })
    .await
    .unwrap();
    let version = get(&mut c, &written[1]).await.unwrap().version;
    c.delete(DeleteRequest {
        key: written[1].clone(),
        condition: if_version(version),
        ..Default::default()
    })
    .await
    .unwrap();
    for k in &written[2..written.len() / 2] {
        c.delete(DeleteRequest {
            key: k.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Freed: writes are accepted again.
    put(&mut c, "after", v::int(1)).await;
}
