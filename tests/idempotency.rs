//! Idempotent writes (issue 13): a write retried with the same `request_id`
//! answers what the first attempt answered and is not applied again — on
//! both backends, for every write RPC, across writes of other clients in
//! between, within the documented window and count, and never for a
//! different request reusing the id.

mod common;

use std::time::Duration;

use common::{Backend, Client, TestServer, v};
use state_service::pb::{
    self, BatchPutItem, BatchPutRequest, DeleteRequest, IncrementRequest, PutRequest,
    PutWithTtlRequest, TransactOp, TransactRequest, transact_op::Op,
};
use tonic::Code;

use common::api::*;

common::all_backends!(
    a_retried_put_answers_the_first_version_and_writes_once,
    a_retried_put_of_a_map_is_recognised,
    a_retried_increment_counts_once,
    a_retry_after_other_writes_still_answers_the_first_attempt,
    a_reused_id_for_another_request_is_refused,
    a_retried_compare_and_set_does_not_lose_to_itself,
    a_retried_delete_never_deletes_a_newer_key,
    retried_batch_items_keep_their_versions,
    a_retried_transaction_applies_once,
    transaction_ops_cannot_carry_their_own_ids,
    ids_pushed_out_by_newer_ones_are_forgotten,
    ids_older_than_the_window_are_forgotten,
    deleted_keys_stay_deleted_for_readers,
);

fn put_id(key: &str, value: Option<pb::Value>, id: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value,
        request_id: id.into(),
        ..Default::default()
    }
}

fn incr_id(key: &str, delta: i64, id: &str) -> IncrementRequest {
    IncrementRequest {
        key: key.into(),
        delta,
        request_id: id.into(),
        ..Default::default()
    }
}

async fn incr(c: &mut Client, key: &str, delta: i64, id: &str) -> pb::IncrementResponse {
    c.increment(incr_id(key, delta, id))
        .await
        .unwrap()
        .into_inner()
}

async fn a_retried_put_answers_the_first_version_and_writes_once(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let first = c
        .put(put_id("k", v::int(1), "req-1"))
        .await
        .unwrap()
        .into_inner();
    let retry = c
        .put(put_id("k", v::int(1), "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.version, first.version);
    assert_eq!(get(&mut c, "k").await.unwrap().version, first.version);
    // A PutWithTtl retried the same way.
    let req = PutWithTtlRequest {
        key: "t".into(),
        value: v::string("x"),
        ttl: common::ms(60_000),
        request_id: "req-2".into(),
        ..Default::default()
    };
    let a = c.put_with_ttl(req.clone()).await.unwrap().into_inner();
    let b2 = c.put_with_ttl(req).await.unwrap().into_inner();
    assert_eq!(a.version, b2.version);
    // A new id is a new write.
    let next = c
        .put(put_id("k", v::int(1), "req-3"))
        .await
        .unwrap()
        .into_inner();
    assert!(next.version > first.version);
}

/// A map decodes into a hash map whose order differs from one decode to the
/// next; the retry must still be recognised (the polyglot restart test once
/// got REQUEST_ID_REUSED for a retried `{"worker", "offset"}` session put).
async fn a_retried_put_of_a_map_is_recognised(b: Backend) {
    use state_service::pb::{ValueMap, value::Kind};
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let map = || {
        v::of(Kind::MapValue(ValueMap {
            fields: (0..16)
                .map(|i| (format!("field-{i}"), v::of(Kind::IntValue(i))))
                .collect(),
        }))
    };
    let req = PutWithTtlRequest {
        key: "session".into(),
        value: Some(map()),
        ttl: common::ms(60_000),
        request_id: "map-1".into(),
        ..Default::default()
    };
    let first = c.put_with_ttl(req.clone()).await.unwrap().into_inner();
    for _ in 0..8 {
        let retry = c.put_with_ttl(req.clone()).await.unwrap().into_inner();
        assert_eq!(retry.version, first.version);
        let retry = c
            .put(put_id("plain", Some(map()), "map-2"))
            .await
            .unwrap()
            .into_inner();
        assert!(retry.version > 0);
    }
    assert_eq!(get(&mut c, "session").await.unwrap().version, first.version);
}

async fn a_retried_increment_counts_once(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let a = incr(&mut c, "n", 5, "w1:offset-17").await;
    let retry = incr(&mut c, "n", 5, "w1:offset-17").await;
    assert_eq!((retry.value, retry.version), (a.value, a.version));
    assert_eq!(incr(&mut c, "n", 5, "w1:offset-18").await.value, 10);
    let e = get(&mut c, "n").await.unwrap();
    assert_eq!(e.value, v::int(10));
}

async fn a_retry_after_other_writes_still_answers_the_first_attempt(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mine = incr(&mut c, "n", 1, "worker-a:1").await;
    // Other workers write the key in between, with and without ids.
    incr(&mut c, "n", 10, "worker-b:1").await;
    c.increment(IncrementRequest {
        key: "n".into(),
        delta: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    let retry = incr(&mut c, "n", 1, "worker-a:1").await;
    assert_eq!((retry.value, retry.version), (mine.value, mine.version));
    assert_eq!(get(&mut c, "n").await.unwrap().value, v::int(111));
}

async fn a_reused_id_for_another_request_is_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    c.put(put_id("k", v::int(1), "same")).await.unwrap();
    for other in [put_id("k", v::int(2), "same"), {
        let mut r = put_id("k", v::int(1), "same");
        r.keep_ttl = true;
        r
    }] {
        let e = c.put(other).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let (reason, meta) = reason(&e);
        assert_eq!(reason, "REQUEST_ID_REUSED");
        assert_eq!(meta["key"], "k");
    }
    let e = c.increment(incr_id("k", 1, "same")).await.unwrap_err();
    assert_eq!(reason(&e).0, "REQUEST_ID_REUSED");
    assert_eq!(get(&mut c, "k").await.unwrap().value, v::int(1));
}

async fn a_retried_compare_and_set_does_not_lose_to_itself(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put(&mut c, "k", v::int(1)).await;
    let cas = PutRequest {
        key: "k".into(),
        value: v::int(2),
        condition: if_version(v1),
        request_id: "cas-1".into(),
        ..Default::default()
    };
    let first = c.put(cas.clone()).await.unwrap().into_inner();
    // The answer was lost; the retry must not report VERSION_MISMATCH
    // against the write it made itself.
    let retry = c.put(cas).await.unwrap().into_inner();
    assert_eq!(retry.version, first.version);
}

async fn a_retried_delete_never_deletes_a_newer_key(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "k", v::int(1)).await;
    let del = DeleteRequest {
        key: "k".into(),
        request_id: "del-1".into(),
        ..Default::default()
    };
    assert!(c.delete(del.clone()).await.unwrap().into_inner().deleted);
    // Another client recreates the key before the retry arrives.
    let newer = put(&mut c, "k", v::int(2)).await;
    assert!(c.delete(del).await.unwrap().into_inner().deleted);
    let e = get(&mut c, "k")
        .await
        .expect("the newer key survives the retry");
    assert_eq!(e.version, newer);
    // A conditional delete's retry answers as before, not VERSION_MISMATCH.
    let cond = DeleteRequest {
        key: "k".into(),
        condition: if_version(newer),
        request_id: "del-2".into(),
    };
    assert!(c.delete(cond.clone()).await.unwrap().into_inner().deleted);
    assert!(c.delete(cond).await.unwrap().into_inner().deleted);
    assert!(get(&mut c, "k").await.is_none());
}

async fn retried_batch_items_keep_their_versions(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let batch = BatchPutRequest {
        items: (0..5)
            .map(|i| BatchPutItem {
                key: format!("b{i}"),
                value: v::int(i),
                request_id: format!("batch-7:{i}"),
                ..Default::default()
            })
            .collect(),
    };
    let versions = |r: pb::BatchPutResponse| -> Vec<u64> {
        r.results
            .into_iter()
            .map(|w| match w.outcome {
                Some(pb::write_result::Outcome::Version(v)) => v,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let first = versions(c.batch_put(batch.clone()).await.unwrap().into_inner());
    let retry = versions(c.batch_put(batch).await.unwrap().into_inner());
    assert_eq!(first, retry);
}

async fn a_retried_transaction_applies_once(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    // The micro-batch pattern: counts and the checkpoint in one transaction.
    let tx = TransactRequest {
        ops: vec![
            incr_op("count:a", 3),
            incr_op("count:b", 1),
            put_op("checkpoint:w1", v::int(42), None),
        ],
        request_id: "w1:batch-42".into(),
    };
    let first = c.transact(tx.clone()).await.unwrap().into_inner();
    let retry = c.transact(tx.clone()).await.unwrap().into_inner();
    assert_eq!(first, retry);
    assert_eq!(get(&mut c, "count:a").await.unwrap().value, v::int(3));
    // The same id with other ops is refused, naming op 0.
    let mut other = tx;
    other.ops.pop();
    let e = c.transact(other).await.unwrap_err();
    let (reason, meta) = reason(&e);
    assert_eq!(reason, "REQUEST_ID_REUSED");
    assert_eq!(meta["op_index"], "0");
    // A transaction whose first key it deletes still remembers its id.
    let tx = TransactRequest {
        ops: vec![
            TransactOp {
                op: Some(Op::Delete(DeleteRequest {
                    key: "checkpoint:w1".into(),
                    ..Default::default()
                })),
            },
            incr_op("count:a", 1),
        ],
        request_id: "w1:batch-43".into(),
    };
    let first = c.transact(tx.clone()).await.unwrap().into_inner();
    let retry = c.transact(tx).await.unwrap().into_inner();
    assert_eq!(first, retry);
    assert_eq!(get(&mut c, "count:a").await.unwrap().value, v::int(4));
}

async fn transaction_ops_cannot_carry_their_own_ids(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let e = c
        .transact(TransactRequest {
            ops: vec![TransactOp {
                op: Some(Op::Put(put_id("k", v::int(1), "inner"))),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("TransactRequest"), "{}", e.message());
}

async fn ids_pushed_out_by_newer_ones_are_forgotten(b: Backend) {
    let s = TestServer::start_with(b, |c| c.storage.idempotency_max_ids = 2).await;
    let mut c = s.client();
    incr(&mut c, "n", 1, "x").await;
    incr(&mut c, "n", 1, "y").await;
    incr(&mut c, "n", 1, "z").await;
    // "y" and "z" are remembered, "x" was pushed out: its retry applies again.
    assert_eq!(incr(&mut c, "n", 1, "y").await.value, 2);
    assert_eq!(incr(&mut c, "n", 1, "x").await.value, 4);
}

async fn ids_older_than_the_window_are_forgotten(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.storage.idempotency_window = Duration::from_secs(1);
    })
    .await;
    let mut c = s.client();
    incr(&mut c, "n", 1, "late").await;
    assert_eq!(incr(&mut c, "n", 1, "late").await.value, 1);
    // Margins of seconds: well past the one-second window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(incr(&mut c, "n", 1, "late").await.value, 2);
}

async fn deleted_keys_stay_deleted_for_readers(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "gone", v::int(1)).await;
    put(&mut c, "kept", v::int(2)).await;
    c.delete(DeleteRequest {
        key: "gone".into(),
        request_id: "d".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The tombstone that remembers the id is invisible: Get, BatchGet, List,
    // conditions and Expire all see an absent key.
    assert!(get(&mut c, "gone").await.is_none());
    let r = c
        .batch_get(pb::BatchGetRequest {
            keys: vec!["gone".into(), "kept".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results.iter().map(|r| r.found).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(list_all(&mut c, "", 10).await, vec!["kept".to_string()]);
    let e = c
        .put(PutRequest {
            key: "gone".into(),
            value: v::int(3),
            condition: if_exists(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e).0, "NOT_FOUND");
    let existed = c
        .expire(pb::ExpireRequest {
            key: "gone".into(),
            ttl: common::ms(60_000),
        })
        .await
        .unwrap()
        .into_inner()
        .existed;
    assert!(!existed);
    // Created again, it is an ordinary key with a newer version.
    let v = c
        .put(PutRequest {
            key: "gone".into(),
            value: v::int(3),
            condition: if_absent(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(get(&mut c, "gone").await.unwrap().version, v);
}
