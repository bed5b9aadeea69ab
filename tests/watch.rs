//! Watch, the change feed (issue 14): every change to a tenant's keys under
//! a prefix, in per-key version order, resumable without gaps, ended with
//! RESYNC_REQUIRED rather than silently dropping anything — on both
//! backends, and across two service instances over one Redis.

mod common;

use std::{collections::HashMap, time::Duration};

use common::{Backend, Client, TestServer, as_tenant, ms, v};
use state_service::{
    config::Config,
    pb::{
        self, BatchDeleteRequest, BatchPutItem, BatchPutRequest, DeleteRequest, IncrementRequest,
        PutRequest, PutWithTtlRequest, TransactOp, TransactRequest, WatchEvent, WatchRequest,
        transact_op::Op, watch_event::Kind,
    },
};
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

common::both_backends!(
    watch_sees_every_kind_of_write_in_version_order,
    watch_reports_expiries,
    watch_filters_by_prefix_and_omits_values_unless_asked,
    watch_resumes_after_a_disconnect_without_a_gap,
    resume_from_trimmed_history_requires_resync,
    slow_watcher_is_ended_while_fast_watchers_and_writers_go_on,
    tenant_never_sees_another_tenants_events,
    resume_tokens_are_bound_to_tenant_and_prefix,
    watchers_are_limited_per_tenant,
);

/// Time allowed for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

fn watch_on(c: &mut Config) {
    c.watch.watch = true;
}

/// Instances behind one address share the page-token secret, which seals
/// resume tokens too (without one, each process has its own key).
fn watch_on_shared_secret(c: &mut Config) {
    watch_on(c);
    c.tenancy.page_token_secret = Some(state_service::config::Secret::new(
        "a secret both instances share",
    ));
}

async fn start(b: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(b, |c| {
        watch_on(c);
        tweak(c);
    })
    .await
}

fn req(prefix: &str, include_values: bool, resume_token: &str) -> WatchRequest {
    WatchRequest {
        prefix: prefix.into(),
        include_values,
        resume_token: resume_token.into(),
    }
}

/// Opens a watch and returns it with the token of its KIND_STARTED event.
async fn open(
    c: &mut Client,
    r: impl tonic::IntoRequest<WatchRequest>,
) -> (Streaming<WatchEvent>, String) {
    let mut s = c.watch(r).await.expect("watch").into_inner();
    let first = next(&mut s).await;
    assert_eq!(first.kind(), Kind::Started);
    assert!(first.entry.is_none());
    assert!(!first.resume_token.is_empty());
    (s, first.resume_token)
}

async fn next(s: &mut Streaming<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("no watch event within the deadline")
        .expect("watch stream failed")
        .expect("watch stream ended")
}

async fn take(s: &mut Streaming<WatchEvent>, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(s).await);
    }
    out
}

/// (kind, key, version) of each event, for comparing streams.
fn summary(evs: &[WatchEvent]) -> Vec<(Kind, String, u64)> {
    evs.iter()
        .map(|e| {
            let en = e.entry.as_ref().expect("entry");
            (e.kind(), en.key.clone(), en.version)
        })
        .collect()
}

fn assert_per_key_version_order(evs: &[WatchEvent]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for (kind, key, version) in summary(evs) {
        if let Some(prev) = last.get(&key) {
            assert!(
                version >= *prev,
                "{kind:?} of {key} has version {version} after {prev}"
            );
        }
        last.insert(key, version);
    }
}

async fn put(c: &mut Client, key: &str, value: Option<pb::Value>) -> u64 {
    c.put(PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .version
}

fn resync_cause(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "RESYNC_REQUIRED");
    info.metadata.get("cause").cloned().unwrap_or_default()
}

// ------------------------------------------------------------------ tests

async fn watch_sees_every_kind_of_write_in_version_order(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut c = s.client();
    let (mut w, _) = open(&mut c, req("", true, "")).await;

    let v1 = put(&mut c, "a", v::int(1)).await;
    let v2 = c
        .put_with_ttl(PutWithTtlRequest {
            key: "a".into(),
            value: v::int(2),
            ttl: ms(60_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    let inc = c
        .increment(IncrementRequest {
            key: "n".into(),
            delta: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let batch = c
        .batch_put(BatchPutRequest {
            items: vec![
                BatchPutItem {
                    key: "b1".into(),
                    value: v::string("x"),
                    ..Default::default()
                },
                BatchPutItem {
                    key: "b2".into(),
                    value: v::string("y"),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let tx = c
        .transact(TransactRequest {
            ops: vec![
                TransactOp {
                    op: Some(Op::Put(PutRequest {
                        key: "t".into(),
                        value: v::int(7),
                        ..Default::default()
                    })),
                },
                TransactOp {
                    op: Some(Op::Delete(DeleteRequest {
                        key: "b1".into(),
                        ..Default::default()
                    })),
                },
            ],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        c.delete(DeleteRequest {
            key: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deleted
    );
    // Deleting what does not exist changes nothing and emits nothing.
    c.delete(DeleteRequest {
        key: "absent".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.batch_delete(BatchDeleteRequest {
        keys: vec!["b2".into(), "absent2".into()],
    })
    .await
    .unwrap();

    let evs = take(&mut w, 9).await;
    assert_per_key_version_order(&evs);
    let version_of = |i: usize| match &batch.results[i].outcome {
        Some(pb::write_result::Outcome::Version(v)) => *v,
        other => panic!("{other:?}"),
    };
    let tx_put = match &tx.results[0].result {
        Some(pb::transact_result::Result::Put(p)) => p.version,
        other => panic!("{other:?}"),
    };
    let mut got = summary(&evs);
    // A transaction's keys may come in either order.
    got[5..7].sort_by(|x, y| x.1.cmp(&y.1));
    let want: Vec<(Kind, String, u64)> = vec![
        (Kind::Put, "a".into(), v1),
        (Kind::Put, "a".into(), v2),
        (Kind::Put, "n".into(), inc.version),
        (Kind::Put, "b1".into(), version_of(0)),
        (Kind::Put, "b2".into(), version_of(1)),
        // Delete and put events carry the version that ended / began.
        (Kind::Delete, "b1".into(), version_of(0)),
        (Kind::Put, "t".into(), tx_put),
        (Kind::Delete, "a".into(), v2),
        (Kind::Delete, "b2".into(), version_of(1)),
    ];
    assert_eq!(got, want);
    // Values and TTLs ride along when asked for.
    let a2 = evs[1].entry.as_ref().unwrap();
    assert_eq!(a2.value, v::int(2));
    let ttl = a2.ttl.as_ref().expect("ttl");
    assert!(ttl.seconds > 50 && ttl.seconds <= 60, "{ttl:?}");
    assert_eq!(evs[2].entry.as_ref().unwrap().value, v::int(5));
    // Every event carries its own resume token.
    let tokens: std::collections::HashSet<_> = evs.iter().map(|e| &e.resume_token).collect();
    assert_eq!(tokens.len(), evs.len());
}

async fn watch_reports_expiries(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut c = s.client();
    let (mut w, _) = open(&mut c, req("", false, "")).await;
    let version = c
        .put_with_ttl(PutWithTtlRequest {
            key: "short".into(),
            value: v::int(1),
            ttl: ms(50),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    let evs = take(&mut w, 2).await;
    assert_eq!(
        summary(&evs),
        vec![
            (Kind::Put, "short".into(), version),
            (Kind::Expire, "short".into(), version),
        ]
    );
}

async fn watch_filters_by_prefix_and_omits_values_unless_asked(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut c = s.client();
    let (mut w, _) = open(&mut c, req("p/", false, "")).await;
    put(&mut c, "q/1", v::int(1)).await;
    put(&mut c, "p", v::int(1)).await;
    let version = put(&mut c, "p/*?[1]", v::int(2)).await;
    let ev = next(&mut w).await;
    assert_eq!(ev.kind(), Kind::Put);
    let e = ev.entry.unwrap();
    assert_eq!((e.key.as_str(), e.version), ("p/*?[1]", version));
    assert_eq!(e.value, None);
    assert_eq!(e.ttl, None);
}

async fn watch_resumes_after_a_disconnect_without_a_gap(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut c = s.client();
    let (mut w, started) = open(&mut c, req("k", false, "")).await;
    let mut versions = Vec::new();
    for i in 0..10 {
        versions.push(put(&mut c, &format!("k{i}"), v::int(i)).await);
    }
    let first = take(&mut w, 3).await;
    let token = first[2].resume_token.clone();
    drop(w);
    // Written while nobody watches.
    for i in 10..20 {
        versions.push(put(&mut c, &format!("k{i}"), v::int(i)).await);
    }
    let mut w = c.watch(req("k", false, &token)).await.unwrap().into_inner();
    assert_eq!(next(&mut w).await.kind(), Kind::Started);
    let rest = take(&mut w, 17).await;
    let got: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|e| e.entry.as_ref().unwrap().version)
        .collect();
    assert_eq!(got, versions);
    // The start token of a stream that saw nothing resumes from its start.
    let mut w = c
        .watch(req("k", false, &started))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut w).await.kind(), Kind::Started);
    assert_eq!(take(&mut w, 20).await.len(), 20);
}

async fn resume_from_trimmed_history_requires_resync(b: Backend) {
    // Redis trims approximately (MAXLEN ~ keeps whole macro nodes of 100
    // entries), so the history is overrun by far more than its size.
    let s = start(b, |c| c.watch.watch_history = 10).await;
    let mut c = s.client();
    let (_w, started) = open(&mut c, req("", false, "")).await;
    let items: Vec<BatchPutItem> = (0..500)
        .map(|i| BatchPutItem {
            key: format!("k{i}"),
            value: v::int(i),
            ..Default::default()
        })
        .collect();
    for _ in 0..3 {
        c.batch_put(BatchPutRequest {
            items: items.clone(),
        })
        .await
        .unwrap();
    }
    // Either refused up front or ended right after KIND_STARTED.
    let status = match c.watch(req("", false, &started)).await {
        Err(status) => status,
        Ok(w) => {
            let mut w = w.into_inner();
            loop {
                match w.message().await {
                    Ok(Some(ev)) => assert_eq!(ev.kind(), Kind::Started),
                    Ok(None) => panic!("stream ended without a status"),
                    Err(status) => break status,
                }
            }
        }
    };
    assert_eq!(resync_cause(&status), "history_trimmed");
}

async fn slow_watcher_is_ended_while_fast_watchers_and_writers_go_on(b: Backend) {
    let s = start(b, |c| c.watch.watch_buffer = 256).await;
    let mut c = s.client();
    // The slow watcher has its own connection, so HTTP/2 flow control stops
    // only its stream once it stops reading.
    let mut slow_client = s.client_with(None).await;
    let (mut slow, _) = open(&mut slow_client, req("", true, "")).await;
    let (mut fast, _) = open(&mut c, req("", false, "")).await;
    // 12 MB of events: more than HTTP/2 flow control lets the slow
    // client's connection buffer (hyper's 2 MB stream window and the
    // server's send buffer) plus the watcher's own 256 events.
    const BATCHES: usize = 30;
    let big = v::string(&"x".repeat(4096));
    for i in 0..BATCHES {
        let items: Vec<BatchPutItem> = (0..100)
            .map(|j| BatchPutItem {
                key: format!("k{}", i * 100 + j),
                value: big.clone(),
                ..Default::default()
            })
            .collect();
        c.batch_put(BatchPutRequest { items }).await.unwrap();
        // The fast watcher keeps up: it reads each batch's events.
        assert_eq!(take(&mut fast, 100).await.len(), 100);
    }
    // The slow one gets what it had buffered, then the resync status.
    let status = loop {
        match tokio::time::timeout(WAIT, slow.message()).await.unwrap() {
            Ok(Some(ev)) => assert_ne!(ev.kind(), Kind::Started),
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(resync_cause(&status), "slow_consumer");
}

async fn tenant_never_sees_another_tenants_events(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut c = s.client();
    let (mut wb, _) = open(&mut c, as_tenant("tenant-b", req("", true, ""))).await;
    for i in 0..20 {
        c.put(as_tenant(
            "tenant-a",
            PutRequest {
                key: format!("k{i}"),
                value: v::int(i),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    }
    c.put(as_tenant(
        "tenant-b",
        PutRequest {
            key: "mine".into(),
            value: v::int(1),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let ev = next(&mut wb).await;
    assert_eq!(ev.entry.unwrap().key, "mine");
    // A's token is worthless to B.
    let (_wa, a_token) = open(&mut c, as_tenant("tenant-a", req("", true, ""))).await;
    let err = c
        .watch(as_tenant("tenant-b", req("", true, &a_token)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn resume_tokens_are_bound_to_tenant_and_prefix(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut c = s.client();
    let (_w, token) = open(&mut c, req("a", false, "")).await;
    for bad in [req("b", false, &token), req("a", false, "garbage")] {
        let err = c.watch(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.get_details_error_info().unwrap().metadata["field"],
            "resume_token"
        );
    }
    // A List page token is not a watch token, even for the same prefix.
    for i in 0..3 {
        put(&mut c, &format!("a{i}"), v::int(i)).await;
    }
    let page = c
        .list(pb::ListRequest {
            prefix: "a".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let err = c
        .watch(req("a", false, &page.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn watchers_are_limited_per_tenant(b: Backend) {
    let s = start(b, |c| c.watch.max_watchers_per_tenant = 2).await;
    let mut c = s.client();
    let _w1 = open(&mut c, req("", false, "")).await;
    let w2 = open(&mut c, req("", false, "")).await;
    let err = c.watch(req("", false, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "TOO_MANY_WATCHERS"
    );
    assert!(err.message().contains("--max-watchers-per-tenant"));
    // Another tenant has its own allowance; a closed watcher frees its place.
    open(&mut c, as_tenant("other", req("", false, ""))).await;
    drop(w2);
    common::eventually!(WAIT, "a closed watcher frees its place", {
        c.watch(req("", false, "")).await.is_ok()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_refused_when_the_feed_is_off() {
    let s = TestServer::start(Backend::Memory).await;
    let err = s.client().watch(req("", false, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "WATCH_DISABLED"
    );
    assert!(err.message().contains("--watch"));
}

/// The memory store's EXPIRE events under paused time: an hour-long TTL
/// produces its event after an hour, not before.
#[tokio::test(start_paused = true)]
async fn memory_expiry_events_follow_paused_time() {
    use state_service::store::{
        Condition, Expiry, Idempotency, Keyspace, MemoryStore, PutOp, Store,
        watch::{EventKind, FeedConfig},
    };
    let store = MemoryStore::new(
        1 << 26,
        Idempotency {
            window: Duration::from_secs(600),
            max_ids: 16,
        },
    )
    .with_feed(FeedConfig {
        history: 100,
        buffer: 100,
        max_watchers: 10,
        max_watchers_per_tenant: 10,
    });
    let ns = Keyspace::new("state").namespace("t");
    let mut sub = store.watch(&ns, "", None).await.unwrap();
    store
        .put(
            &ns,
            PutOp {
                key: "k".into(),
                value: v::int(1).unwrap(),
                expiry: Expiry::After(Duration::from_secs(3600)),
                condition: Condition::None,
                request_id: None,
            },
        )
        .await
        .unwrap();
    let put = sub.next().await.unwrap().unwrap();
    assert_eq!(put.kind, EventKind::Put);
    assert_eq!(put.ttl, Some(Duration::from_secs(3600)));
    tokio::time::advance(Duration::from_secs(3598)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1), sub.next())
            .await
            .is_err(),
        "expired early"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    let exp = sub.next().await.unwrap().unwrap();
    assert_eq!((exp.kind, exp.version), (EventKind::Expire, put.version));
}

/// Two service instances over one Redis: writes through one (and some
/// through the other), watchers on both see the same events in the same
/// per-key version order, expiries included, and a token from one instance
/// resumes on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_over_one_redis_see_the_same_events() {
    let redis = common::RedisServer::start();
    let a = TestServer::start_on(Some(redis.url()), None, watch_on_shared_secret).await;
    let b = TestServer::start_on(Some(redis.url()), None, watch_on_shared_secret).await;
    let (mut ca, mut cb) = (a.client(), b.client());
    let (mut wa, _) = open(&mut ca, req("", true, "")).await;
    let (mut wb, _) = open(&mut cb, req("", true, "")).await;
    let mut writes = 0;
    for round in 0..5 {
        for k in 0..4 {
            let c = if k == 3 { &mut cb } else { &mut ca };
            put(c, &format!("k{k}"), v::int(round)).await;
            writes += 1;
        }
    }
    c_put_with_ttl(&mut ca, "brief", 50).await;
    ca.delete(DeleteRequest {
        key: "k0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Puts, the TTL put, its expiry and the delete (the expiry may come
    // before or after the delete).
    let n = writes + 3;
    let ea = take(&mut wa, n).await;
    let eb = take(&mut wb, n).await;
    assert_per_key_version_order(&ea);
    assert_eq!(
        summary(&ea),
        summary(&eb),
        "both instances saw the same events"
    );
    assert_eq!(
        ea.iter().filter(|e| e.kind() == Kind::Expire).count(),
        1,
        "the expiry is reported once"
    );
    // A token from instance A resumes on instance B, with nothing missed.
    let token = ea[4].resume_token.clone();
    let mut w = cb.watch(req("", true, &token)).await.unwrap().into_inner();
    assert_eq!(next(&mut w).await.kind(), Kind::Started);
    let rest = take(&mut w, n - 5).await;
    assert_eq!(summary(&rest), summary(&ea[5..]));
}

async fn c_put_with_ttl(c: &mut Client, key: &str, ttl_ms: u64) -> u64 {
    c.put_with_ttl(PutWithTtlRequest {
        key: key.into(),
        value: v::int(1),
        ttl: ms(ttl_ms),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .version
}

/// A Redis that restarts without persistence lost the feed's history: open
/// watchers end with RESYNC_REQUIRED (feed_lost), and so does a resume from
/// a token issued before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_requires_resync() {
    let mut redis = common::RedisServer::start();
    let s = TestServer::start_on(Some(redis.url()), None, watch_on).await;
    let mut c = s.client();
    let (mut w, _) = open(&mut c, req("", false, "")).await;
    put(&mut c, "k", v::int(1)).await;
    let token = next(&mut w).await.resume_token;
    redis.restart();
    let status = match tokio::time::timeout(WAIT, w.message()).await.unwrap() {
        Ok(Some(ev)) => panic!("unexpected event {ev:?}"),
        Ok(None) => panic!("stream ended without a status"),
        Err(status) => status,
    };
    assert_eq!(resync_cause(&status), "feed_lost");
    s.wait_serving(WAIT).await;
    let status = loop {
        match c.watch(req("", false, &token)).await {
            Err(st) if st.code() == Code::Unavailable => {
                tokio::time::sleep(common::POLL_INTERVAL).await;
            }
            Err(st) => break st,
            Ok(_) => panic!("resumed across a data loss"),
        }
    };
    assert_eq!(resync_cause(&status), "feed_lost");
}

/// Watch needs the read scope: a write-only token is refused, a read-only
/// one may watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_needs_the_read_scope() {
    use common::{TenantDef, tenants_toml, with_token};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(
        &path,
        tenants_toml(&[TenantDef {
            id: "acme",
            tokens: &[("reader-token", &["read"]), ("writer-token", &["write"])],
            extra: "",
        }]),
    )
    .unwrap();
    let s = start(Backend::Memory, |c| c.tenancy.tenants_file = Some(path)).await;
    let mut c = s.client();
    let err = c
        .watch(with_token("writer-token", req("", false, "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["scope"],
        "read"
    );
    let (mut w, _) = open(&mut c, with_token("reader-token", req("", false, ""))).await;
    let version = c
        .put(with_token(
            "writer-token",
            PutRequest {
                key: "k".into(),
                value: v::int(1),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(
        summary(&[next(&mut w).await]),
        vec![(Kind::Put, "k".into(), version)]
    );
}

/// A stopping instance ends its watch streams with UNAVAILABLE
/// (SHUTTING_DOWN), so the drain does not wait for them and clients resume
/// elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_watch_streams_with_unavailable() {
    let s = start(Backend::Memory, |c| {
        c.server.drain_timeout = Duration::from_secs(30);
    })
    .await;
    let mut c = s.client();
    let (mut w, _) = open(&mut c, req("", false, "")).await;
    let stopped = tokio::spawn(s.stop());
    let status = match tokio::time::timeout(WAIT, w.message()).await.unwrap() {
        Err(status) => status,
        other => panic!("expected a status, got {other:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "SHUTTING_DOWN"
    );
    // The drain finished well before its 30 s timeout.
    tokio::time::timeout(WAIT, stopped)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
