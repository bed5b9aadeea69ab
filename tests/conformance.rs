//! The conformance suite: every behaviour of the API, run against both
//! backends (the embedded memory store and a private real redis-server)
//! through the real gRPC server. A behaviour that differs between the two is
//! a bug in one of them.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{Backend, TestServer, as_tenant, ms, v};
use state_service::pb::{
    self, BatchDeleteRequest, BatchGetRequest, BatchPutItem, BatchPutRequest, Condition,
    DeleteRequest, ExpireRequest, GetRequest, IncrementRequest, ListRequest, PersistRequest,
    PutWithTtlRequest, TransactOp, TransactRequest, transact_op::Op, value::Kind,
};
use tonic::Code;

use common::Client;

common::all_backends!(
    get_of_a_missing_key_is_not_found,
    every_value_kind_round_trips_exactly,
    versions_change_on_every_write_and_never_repeat,
    put_with_ttl_expires_the_key,
    get_reports_the_remaining_ttl,
    put_without_ttl_clears_an_existing_expiry,
    bad_ttls_are_invalid_argument,
    delete_reports_whether_the_key_existed,
    bad_keys_and_values_are_invalid_argument,
    list_paginates_over_more_keys_than_a_page,
    list_returns_every_stable_key_despite_concurrent_writes,
    list_treats_glob_characters_literally,
    list_includes_values_on_request,
    list_rejects_foreign_page_tokens,
    tenants_are_isolated,
    bad_tenant_ids_are_invalid_argument,
    if_absent_creates_only_once,
    if_exists_updates_only_existing_keys,
    if_version_is_compare_and_set,
    conditional_delete_checks_before_deleting,
    keep_ttl_keeps_the_existing_expiry,
    expire_and_persist_change_only_the_expiry,
    get_with_refresh_ttl_extends_the_expiry,
    increment_creates_at_zero_with_ttl_and_is_exact,
    increment_overflow_is_refused_and_changes_nothing,
    increment_of_a_non_integer_names_the_stored_type,
    batch_get_returns_results_in_request_order,
    batch_put_applies_items_independently,
    batch_delete_reports_each_key,
    batches_over_the_limit_are_invalid_argument,
    transact_is_all_or_nothing,
    transact_checks_increments_before_writing,
    transact_ops_see_earlier_ops,
    transact_over_the_limit_is_invalid_argument,
    concurrent_cas_loops_lose_no_update,
    concurrent_increments_sum_exactly,
    readers_never_see_a_partial_transaction,
    conditional_create_race_has_exactly_one_winner,
);

use common::api::*;

// ---------------------------------------------------------------- core API

async fn get_of_a_missing_key_is_not_found(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s
        .client()
        .get(GetRequest {
            key: "nope".into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.found);
    assert!(r.entry.is_none());
}

async fn every_value_kind_round_trips_exactly(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut map = std::collections::HashMap::new();
    map.insert("ключ".to_string(), v::of(Kind::BytesValue(vec![])));
    map.insert(String::new(), v::of(Kind::NullValue(0)));
    let nested = v::of(Kind::ListValue(pb::ValueList {
        values: vec![
            v::of(Kind::IntValue(i64::MIN)),
            v::of(Kind::MapValue(pb::ValueMap { fields: map })),
            v::of(Kind::ListValue(pb::ValueList { values: vec![] })),
        ],
    }));
    let cases = vec![
        v::of(Kind::NullValue(0)),
        v::of(Kind::BoolValue(true)),
        v::of(Kind::BoolValue(false)),
        v::of(Kind::IntValue(i64::MIN)),
        v::of(Kind::IntValue(i64::MAX)),
        v::of(Kind::IntValue(0)),
        v::of(Kind::DoubleValue(-0.0)),
        v::of(Kind::DoubleValue(f64::MAX)),
        v::of(Kind::DoubleValue(f64::MIN_POSITIVE / 2.0)),
        v::of(Kind::DoubleValue(f64::INFINITY)),
        v::of(Kind::StringValue(String::new())),
        v::of(Kind::StringValue("Grüße, 世界 🚀 \u{0}".into())),
        v::of(Kind::BytesValue(vec![])),
        v::of(Kind::BytesValue((0..=255).collect())),
        nested,
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let key = format!("k{i}");
        put(&mut c, &key, Some(case.clone())).await;
        let back = get(&mut c, &key).await.unwrap().value.unwrap();
        assert_eq!(back, case, "case {i}");
        if let Some(Kind::DoubleValue(d)) = case.kind {
            let Some(Kind::DoubleValue(e)) = back.kind else {
                unreachable!()
            };
            assert_eq!(d.to_bits(), e.to_bits(), "case {i}: bits differ");
        }
    }
    // NaN is not equal to itself: compare bits.
    let nan = f64::from_bits(0x7ff8_0000_0000_0abc);
    put(&mut c, "nan", Some(v::of(Kind::DoubleValue(nan)))).await;
    match get(&mut c, "nan").await.unwrap().value.unwrap().kind {
        Some(Kind::DoubleValue(d)) => assert_eq!(d.to_bits(), nan.to_bits()),
        other => panic!("{other:?}"),
    }
}

async fn versions_change_on_every_write_and_never_repeat(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut seen = Vec::new();
    seen.push(put(&mut c, "k", v::int(1)).await);
    seen.push(put(&mut c, "k", v::int(1)).await);
    seen.push(
        c.increment(IncrementRequest {
            key: "k".into(),
            delta: 1,
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version,
    );
    assert_eq!(
        get(&mut c, "k").await.unwrap().version,
        *seen.last().unwrap()
    );
    c.delete(DeleteRequest {
        key: "k".into(),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    seen.push(put(&mut c, "k", v::int(1)).await);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a version repeated: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "versions not increasing: {seen:?}"
    );
}

async fn put_with_ttl_expires_the_key(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    // Margins of seconds: present well inside its TTL, gone (polled) after.
    c.put_with_ttl(PutWithTtlRequest {
        key: "short".into(),
        value: v::string("x"),
        ttl: ms(3_000),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(get(&mut c, "short").await.is_some());
    common::eventually!(
        Duration::from_secs(15),
        "the key expiring",
        get(&mut c, "short").await.is_none()
    );
    assert!(list_all(&mut c, "", 10).await.is_empty());
}

async fn get_reports_the_remaining_ttl(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    c.put_with_ttl(PutWithTtlRequest {
        key: "k".into(),
        value: v::int(1),
        ttl: ms(60_000),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let ttl = ttl_of(&get(&mut c, "k").await.unwrap()).expect("ttl missing");
    assert!(
        ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(50),
        "{ttl:?}"
    );
    put(&mut c, "forever", v::int(1)).await;
    assert_eq!(ttl_of(&get(&mut c, "forever").await.unwrap()), None);
}

async fn put_without_ttl_clears_an_existing_expiry(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    c.put_with_ttl(PutWithTtlRequest {
        key: "k".into(),
        value: v::int(1),
        ttl: ms(60_000),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    put(&mut c, "k", v::int(2)).await;
    assert_eq!(ttl_of(&get(&mut c, "k").await.unwrap()), None);
}

async fn bad_ttls_are_invalid_argument(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    for ttl in [
        None,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 0,
        }),
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 999_999,
        }),
        Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
    ] {
        let err = c
            .put_with_ttl(PutWithTtlRequest {
                key: "k".into(),
                value: v::int(1),
                ttl,
                condition: None,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{ttl:?}: {err:?}");
    }
    assert!(
        get(&mut c, "k").await.is_none(),
        "a rejected write was stored"
    );
}

async fn delete_reports_whether_the_key_existed(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "k", v::int(1)).await;
    let del = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.delete(DeleteRequest {
                key: "k".into(),
                condition: None,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .deleted
        }
    };
    assert!(del(&mut c).await);
    assert!(!del(&mut c).await);
    assert!(get(&mut c, "k").await.is_none());
}

async fn bad_keys_and_values_are_invalid_argument(b: Backend) {
    let s = TestServer::start_with(b, |cfg| {
        cfg.limits.max_key_bytes = 16;
        cfg.limits.max_value_bytes = 64;
    })
    .await;
    let mut c = s.client();
    let cases = vec![
        put_req("", v::int(1)),
        put_req(&"k".repeat(17), v::int(1)),
        put_req("k", None),
        put_req("k", Some(pb::Value { kind: None })),
        put_req("k", v::string(&"x".repeat(65))),
    ];
    for req in cases {
        let err = c.put(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}");
    }
    let err = c
        .put(put_req(&"k".repeat(17), v::int(1)))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("--max-key-bytes"),
        "{}",
        err.message()
    );
    let err = c
        .put(put_req("k", v::string(&"x".repeat(65))))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("--max-value-bytes"),
        "{}",
        err.message()
    );
    let err = c
        .get(GetRequest {
            key: String::new(),
            refresh_ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        list_all(&mut c, "", 10).await.is_empty(),
        "a rejected write was stored"
    );
}

async fn list_paginates_over_more_keys_than_a_page(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut expected = HashSet::new();
    for i in 0..230 {
        let key = format!("user:{i:04}");
        put(&mut c, &key, v::int(i)).await;
        expected.insert(key);
    }
    for i in 0..20 {
        put(&mut c, &format!("other:{i}"), v::int(i)).await;
    }
    let listed = list_all(&mut c, "user:", 37).await;
    let listed_set: HashSet<_> = listed.iter().cloned().collect();
    assert_eq!(listed_set, expected);
    assert_eq!(list_all(&mut c, "", 1000).await.len(), 250);
    // Page size over the maximum is refused, naming the flag.
    let err = c
        .list(ListRequest {
            prefix: String::new(),
            page_size: 100_000,
            page_token: String::new(),
            include_values: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("--max-page-size"));
}

async fn list_returns_every_stable_key_despite_concurrent_writes(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut stable = HashSet::new();
    for i in 0..300 {
        let key = format!("stable:{i}");
        put(&mut c, &key, v::int(i)).await;
        stable.insert(key);
    }
    // A writer adds and removes other keys under the same prefix while we list.
    let mut w = s.client();
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let key = format!("stable:churn:{i}");
            put(&mut w, &key, v::int(i)).await;
            if i % 2 == 0 {
                w.delete(DeleteRequest {
                    key,
                    condition: None,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }
    });
    let mut seen = HashSet::new();
    let mut token = String::new();
    loop {
        let page = c
            .list(ListRequest {
                prefix: "stable:".into(),
                page_size: 25,
                page_token: token,
                include_values: false,
            })
            .await
            .unwrap()
            .into_inner();
        let unique: HashSet<_> = page.keys.iter().collect();
        assert_eq!(unique.len(), page.keys.len(), "a page repeated a key");
        seen.extend(page.keys);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Let the writer interleave with the listing.
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let missing: Vec<_> = stable.difference(&seen).collect();
    assert!(missing.is_empty(), "stable keys never listed: {missing:?}");
}

async fn list_treats_glob_characters_literally(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    for key in ["a*b", "a?c", "a[1]", "a\\x", "ab", "a*", "a{t}"] {
        put(&mut c, key, v::int(1)).await;
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(list_all(&mut c, "a*", 10).await), vec!["a*", "a*b"]);
    assert_eq!(sorted(list_all(&mut c, "a?", 10).await), vec!["a?c"]);
    assert_eq!(sorted(list_all(&mut c, "a[", 10).await), vec!["a[1]"]);
    assert_eq!(sorted(list_all(&mut c, "a\\", 10).await), vec!["a\\x"]);
    assert_eq!(sorted(list_all(&mut c, "a{", 10).await), vec!["a{t}"]);
    assert_eq!(list_all(&mut c, "", 10).await.len(), 7);
}

async fn list_includes_values_on_request(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put(&mut c, "p:1", v::int(1)).await;
    put(&mut c, "p:2", v::string("two")).await;
    let page = c
        .list(ListRequest {
            prefix: "p:".into(),
            page_size: 10,
            page_token: String::new(),
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.keys.len(), 2);
    assert_eq!(page.entries.len(), 2);
    let e1 = page.entries.iter().find(|e| e.key == "p:1").unwrap();
    assert_eq!(e1.value, v::int(1));
    assert_eq!(e1.version, v1);
}

async fn list_rejects_foreign_page_tokens(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    for i in 0..30 {
        c.put(as_tenant("alpha", put_req(&format!("k{i}"), v::int(i))))
            .await
            .unwrap();
    }
    let page = c
        .list(as_tenant(
            "alpha",
            ListRequest {
                prefix: "k".into(),
                page_size: 5,
                page_token: String::new(),
                include_values: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let replay = |tenant: &str, prefix: &str, token: &str| {
        as_tenant(
            tenant,
            ListRequest {
                prefix: prefix.into(),
                page_size: 5,
                page_token: token.into(),
                include_values: true,
            },
        )
    };
    for req in [
        replay("beta", "k", &page.next_page_token),
        replay("alpha", "", &page.next_page_token),
        replay("alpha", "k1", &page.next_page_token),
        replay("alpha", "k", "not-a-token"),
        replay("alpha", "k", "AQAAAAAAAAAA"),
    ] {
        let err = c.list(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
}

async fn tenants_are_isolated(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let tricky = [
        "plain",
        "x:y",
        "beta:plain",
        ":",
        "*",
        "?",
        "[a-z]*",
        "\\",
        "{beta}",
        "../beta/plain",
        "state:beta:plain",
        "日本",
    ];
    for key in tricky {
        c.put(as_tenant("alpha", put_req(key, v::string("alpha-secret"))))
            .await
            .unwrap();
    }
    // Beta sees none of alpha's keys, whatever it asks.
    for key in tricky {
        let r = c
            .get(as_tenant(
                "beta",
                GetRequest {
                    key: key.into(),
                    refresh_ttl: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.found, "beta read alpha's {key:?}");
        let d = c
            .delete(as_tenant(
                "beta",
                DeleteRequest {
                    key: key.into(),
                    condition: None,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!d.deleted, "beta deleted alpha's {key:?}");
    }
    for prefix in ["", "*", ":", "alpha", "alpha:", "../", "[", "\\", "state:"] {
        let page = c
            .list(as_tenant(
                "beta",
                ListRequest {
                    prefix: prefix.into(),
                    page_size: 100,
                    page_token: String::new(),
                    include_values: true,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.keys.is_empty(),
            "beta listed {:?} with prefix {prefix:?}",
            page.keys
        );
    }
    let r = c
        .batch_get(as_tenant(
            "beta",
            BatchGetRequest {
                keys: tricky.iter().map(|k| k.to_string()).collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.results.iter().all(|r| !r.found));
    // Alpha still has everything, and the default tenant sees nothing either.
    for key in tricky {
        let r = c
            .get(as_tenant(
                "alpha",
                GetRequest {
                    key: key.into(),
                    refresh_ttl: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.entry.unwrap().value, v::string("alpha-secret"));
    }
    assert!(list_all(&mut c, "", 100).await.is_empty());
}

async fn bad_tenant_ids_are_invalid_argument(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    for tenant in ["a:b", "a*", "", &"t".repeat(65), "a b"] {
        let mut req = tonic::Request::new(put_req("k", v::int(1)));
        req.metadata_mut()
            .insert("x-tenant-id", tenant.parse().unwrap());
        let err = c.put(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "tenant {tenant:?}");
    }
}

// ---------------------------------------------------------------- conditions

async fn if_absent_creates_only_once(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut req = put_req("k", v::int(1));
    req.condition = if_absent();
    let v1 = c.put(req.clone()).await.unwrap().into_inner().version;
    req.value = v::int(2);
    let err = c.put(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let (reason, meta) = reason(&err);
    assert_eq!(reason, "ALREADY_EXISTS");
    assert_eq!(meta["current_version"], v1.to_string());
    assert_eq!(meta["key"], "k");
    assert_eq!(get(&mut c, "k").await.unwrap().value, v::int(1));
}

async fn if_exists_updates_only_existing_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut req = put_req("k", v::int(1));
    req.condition = if_exists();
    let err = c.put(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).0, "NOT_FOUND");
    assert!(get(&mut c, "k").await.is_none());
    put(&mut c, "k", v::int(0)).await;
    c.put(req).await.unwrap();
    assert_eq!(get(&mut c, "k").await.unwrap().value, v::int(1));
}

async fn if_version_is_compare_and_set(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put(&mut c, "k", v::int(1)).await;
    let mut req = put_req("k", v::int(2));
    req.condition = if_version(v1);
    let v2 = c.put(req.clone()).await.unwrap().into_inner().version;
    assert_ne!(v1, v2);
    // The same CAS again loses: the version moved on.
    let err = c.put(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let (reason, meta) = reason(&err);
    assert_eq!(reason, "VERSION_MISMATCH");
    assert_eq!(meta["current_version"], v2.to_string());
    assert_eq!(get(&mut c, "k").await.unwrap().value, v::int(2));
    // CAS on an absent key is a version mismatch too.
    let mut req = put_req("absent", v::int(1));
    req.condition = if_version(v1);
    assert_eq!(c.put(req).await.unwrap_err().code(), Code::Aborted);
}

async fn conditional_delete_checks_before_deleting(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put(&mut c, "k", v::int(1)).await;
    let err = c
        .delete(DeleteRequest {
            key: "k".into(),
            condition: if_version(v1 + 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(get(&mut c, "k").await.is_some());
    let ok = c
        .delete(DeleteRequest {
            key: "k".into(),
            condition: if_version(v1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.deleted);
    let err = c
        .delete(DeleteRequest {
            key: "k".into(),
            condition: if_exists(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err).0, "NOT_FOUND");
    let err = c
        .delete(DeleteRequest {
            key: "k".into(),
            condition: if_absent(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn keep_ttl_keeps_the_existing_expiry(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    c.put_with_ttl(PutWithTtlRequest {
        key: "k".into(),
        value: v::int(1),
        ttl: ms(60_000),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = put_req("k", v::int(2));
    req.keep_ttl = true;
    c.put(req).await.unwrap();
    let e = get(&mut c, "k").await.unwrap();
    assert_eq!(e.value, v::int(2));
    assert!(ttl_of(&e).is_some_and(|t| t > Duration::from_secs(50)));
}

async fn expire_and_persist_change_only_the_expiry(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put(&mut c, "k", v::int(1)).await;
    let r = c
        .expire(ExpireRequest {
            key: "k".into(),
            ttl: ms(30_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.existed);
    let e = get(&mut c, "k").await.unwrap();
    assert_eq!(e.version, v1, "expire changed the version");
    assert!(ttl_of(&e).is_some_and(|t| t <= Duration::from_secs(30)));
    let r = c
        .persist(PersistRequest { key: "k".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.existed);
    let e = get(&mut c, "k").await.unwrap();
    assert_eq!(ttl_of(&e), None);
    assert_eq!(e.version, v1);
    // Persist of a key without expiry still reports that it exists.
    assert!(
        c.persist(PersistRequest { key: "k".into() })
            .await
            .unwrap()
            .into_inner()
            .existed
    );
    assert!(
        !c.persist(PersistRequest { key: "nope".into() })
            .await
            .unwrap()
            .into_inner()
            .existed
    );
    let r = c
        .expire(ExpireRequest {
            key: "nope".into(),
            ttl: ms(1000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.existed);
    assert!(get(&mut c, "nope").await.is_none());
    let err = c
        .expire(ExpireRequest {
            key: "k".into(),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn get_with_refresh_ttl_extends_the_expiry(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    c.put_with_ttl(PutWithTtlRequest {
        key: "session".into(),
        value: v::string("s"),
        ttl: ms(1_000),
        condition: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = c
        .get(GetRequest {
            key: "session".into(),
            refresh_ttl: ms(60_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.found);
    let ttl = ttl_of(r.entry.as_ref().unwrap()).unwrap();
    assert!(ttl > Duration::from_secs(50), "{ttl:?}");
    // Well past the original second: the refreshed minute keeps it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        get(&mut c, "session").await.is_some(),
        "refresh did not extend the expiry"
    );
    let miss = c
        .get(GetRequest {
            key: "absent".into(),
            refresh_ttl: ms(1000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!miss.found);
}

// ---------------------------------------------------------------- increments

async fn increment_creates_at_zero_with_ttl_and_is_exact(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let r = c
        .increment(IncrementRequest {
            key: "n".into(),
            delta: 5,
            ttl: ms(60_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, 5);
    let e = get(&mut c, "n").await.unwrap();
    assert_eq!(e.value, v::int(5));
    assert_eq!(e.version, r.version);
    assert!(ttl_of(&e).is_some());
    // Values beyond 2^53 stay exact (no float arithmetic anywhere).
    put(&mut c, "big", v::int(i64::MAX - 10)).await;
    let r = c
        .increment(IncrementRequest {
            key: "big".into(),
            delta: 9,
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, i64::MAX - 1);
    let r = c
        .increment(IncrementRequest {
            key: "big".into(),
            delta: -(i64::MAX - 1),
            ttl: ms(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, 0);
    assert_eq!(
        ttl_of(&get(&mut c, "big").await.unwrap()),
        None,
        "ttl applies only on create"
    );
}

async fn increment_overflow_is_refused_and_changes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put(&mut c, "n", v::int(i64::MAX - 1)).await;
    let err = c
        .increment(IncrementRequest {
            key: "n".into(),
            delta: 2,
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).0, "INCREMENT_OVERFLOW");
    let e = get(&mut c, "n").await.unwrap();
    assert_eq!(e.value, v::int(i64::MAX - 1));
    assert_eq!(e.version, v1);
    put(&mut c, "m", v::int(i64::MIN)).await;
    let err = c
        .increment(IncrementRequest {
            key: "m".into(),
            delta: -1,
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err).0, "INCREMENT_OVERFLOW");
}

async fn increment_of_a_non_integer_names_the_stored_type(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    for (value, name) in [
        (v::string("12"), "string"),
        (Some(v::of(Kind::DoubleValue(1.0))), "double"),
        (Some(v::of(Kind::BoolValue(true))), "bool"),
    ] {
        put(&mut c, "x", value.clone()).await;
        let err = c
            .increment(IncrementRequest {
                key: "x".into(),
                delta: 1,
                ttl: None,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let (reason, meta) = reason(&err);
        assert_eq!(reason, "NOT_AN_INTEGER");
        assert_eq!(meta["stored_type"], name);
        assert!(err.message().contains(name), "{}", err.message());
        assert_eq!(get(&mut c, "x").await.unwrap().value, value);
    }
}

// ---------------------------------------------------------------- batches

async fn batch_get_returns_results_in_request_order(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "a", v::int(1)).await;
    put(&mut c, "c", v::string("3")).await;
    let keys: Vec<String> = ["c", "missing", "a", "c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = c
        .batch_get(BatchGetRequest { keys })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = r
        .results
        .iter()
        .map(|r| r.entry.as_ref().map(|e| (e.key.clone(), e.value.clone())))
        .collect();
    assert_eq!(
        got,
        vec![
            Some(("c".to_string(), v::string("3"))),
            None,
            Some(("a".to_string(), v::int(1))),
            Some(("c".to_string(), v::string("3"))),
        ]
    );
}

async fn batch_put_applies_items_independently(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "exists", v::int(0)).await;
    let item = |key: &str, cond: Option<Condition>, ttl| BatchPutItem {
        key: key.into(),
        value: v::int(7),
        ttl,
        condition: cond,
        keep_ttl: false,
        ..Default::default()
    };
    let r = c
        .batch_put(BatchPutRequest {
            items: vec![
                item("a", None, None),
                item("exists", if_absent(), None),
                item("b", None, ms(60_000)),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    use pb::write_result::Outcome;
    assert!(matches!(r.results[0].outcome, Some(Outcome::Version(_))));
    match &r.results[1].outcome {
        Some(Outcome::Failure(f)) => {
            assert_eq!(f.reason, "ALREADY_EXISTS");
            assert_ne!(f.current_version, 0);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(r.results[2].outcome, Some(Outcome::Version(_))));
    assert_eq!(get(&mut c, "a").await.unwrap().value, v::int(7));
    assert_eq!(get(&mut c, "exists").await.unwrap().value, v::int(0));
    assert!(ttl_of(&get(&mut c, "b").await.unwrap()).is_some());
}

async fn batch_delete_reports_each_key(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "a", v::int(1)).await;
    put(&mut c, "b", v::int(1)).await;
    let r = c
        .batch_delete(BatchDeleteRequest {
            keys: vec!["a".into(), "zz".into(), "b".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let deleted: Vec<bool> = r.results.iter().map(|r| r.deleted).collect();
    assert_eq!(deleted, vec![true, false, true]);
    assert!(list_all(&mut c, "", 10).await.is_empty());
}

async fn batches_over_the_limit_are_invalid_argument(b: Backend) {
    let s = TestServer::start_with(b, |cfg| cfg.limits.max_batch_items = 3).await;
    let mut c = s.client();
    let keys: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    let err = c
        .batch_get(BatchGetRequest { keys: keys.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("--max-batch-items"));
    let items = keys
        .iter()
        .map(|k| BatchPutItem {
            key: k.clone(),
            value: v::int(1),
            ..Default::default()
        })
        .collect();
    let err = c.batch_put(BatchPutRequest { items }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .batch_delete(BatchDeleteRequest { keys: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(list_all(&mut c, "", 10).await.is_empty());
}

// ---------------------------------------------------------------- transactions

async fn transact_is_all_or_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v_off = put(&mut c, "offset", v::int(10)).await;
    // Op 2's condition fails: nothing may be written.
    let err = c
        .transact(TransactRequest {
            ops: vec![
                put_op("state", v::string("new"), None),
                incr_op("counter", 1),
                put_op("offset", v::int(11), if_version(v_off + 12345)),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let (reason, meta) = reason(&err);
    assert_eq!(reason, "VERSION_MISMATCH");
    assert_eq!(meta["op_index"], "2");
    assert_eq!(meta["current_version"], v_off.to_string());
    assert!(get(&mut c, "state").await.is_none());
    assert!(get(&mut c, "counter").await.is_none());
    assert_eq!(get(&mut c, "offset").await.unwrap().version, v_off);
    // With the right version everything applies.
    let r = c
        .transact(TransactRequest {
            ops: vec![
                put_op("state", v::string("new"), None),
                incr_op("counter", 1),
                put_op("offset", v::int(11), if_version(v_off)),
                TransactOp {
                    op: Some(Op::Delete(DeleteRequest {
                        key: "nothing".into(),
                        condition: None,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 4);
    use pb::transact_result::Result as R;
    assert!(matches!(
        r.results[1].result,
        Some(R::Increment(pb::IncrementResponse { value: 1, .. }))
    ));
    assert!(matches!(
        r.results[3].result,
        Some(R::Delete(pb::DeleteResponse { deleted: false }))
    ));
    assert_eq!(get(&mut c, "state").await.unwrap().value, v::string("new"));
    assert_eq!(get(&mut c, "offset").await.unwrap().value, v::int(11));
}

async fn transact_checks_increments_before_writing(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "near-max", v::int(i64::MAX - 5)).await;
    put(&mut c, "text", v::string("t")).await;
    for (ops, want) in [
        (
            vec![
                put_op("a", v::int(1), None),
                incr_op("near-max", 5),
                incr_op("near-max", 1),
            ],
            "INCREMENT_OVERFLOW",
        ),
        (
            vec![put_op("a", v::int(1), None), incr_op("text", 1)],
            "NOT_AN_INTEGER",
        ),
    ] {
        let err = c
            .transact(TransactRequest {
                ops,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(reason(&err).0, want);
        assert!(
            get(&mut c, "a").await.is_none(),
            "partial write after {want}"
        );
        assert_eq!(
            get(&mut c, "near-max").await.unwrap().value,
            v::int(i64::MAX - 5)
        );
    }
    // Exactly reaching the maximum is allowed.
    c.transact(TransactRequest {
        ops: vec![incr_op("near-max", 2), incr_op("near-max", 3)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        get(&mut c, "near-max").await.unwrap().value,
        v::int(i64::MAX)
    );
    // Negative side, with limbs crossing zero.
    put(&mut c, "neg", v::int(-3_000_000_000)).await;
    let r = c
        .transact(TransactRequest {
            ops: vec![
                incr_op("neg", 4_000_000_001),
                incr_op("neg", i64::MAX - 1_000_000_000),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&r).0, "INCREMENT_OVERFLOW");
    let r = c
        .transact(TransactRequest {
            ops: vec![incr_op("neg", 4_000_000_001), incr_op("neg", -1)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    use pb::transact_result::Result as R;
    assert!(matches!(
        r.results[1].result,
        Some(R::Increment(pb::IncrementResponse {
            value: 1_000_000_000,
            ..
        }))
    ));
}

async fn transact_ops_see_earlier_ops(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "gone", v::int(1)).await;
    let r = c
        .transact(TransactRequest {
            ops: vec![
                put_op("n", v::int(40), if_absent()),
                incr_op("n", 2),
                TransactOp {
                    op: Some(Op::Delete(DeleteRequest {
                        key: "gone".into(),
                        condition: if_exists(),
                        ..Default::default()
                    })),
                },
                put_op("gone", v::string("back"), if_absent()),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 4);
    assert_eq!(get(&mut c, "n").await.unwrap().value, v::int(42));
    assert_eq!(get(&mut c, "gone").await.unwrap().value, v::string("back"));
    // A later op's condition sees the version an earlier op wrote: if_version
    // of the pre-transaction version fails after a write in the same transaction.
    let v1 = get(&mut c, "n").await.unwrap().version;
    let err = c
        .transact(TransactRequest {
            ops: vec![
                put_op("n", v::int(1), if_version(v1)),
                put_op("n", v::int(2), if_version(v1)),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err).0, "VERSION_MISMATCH");
    assert_eq!(reason(&err).1["op_index"], "1");
    assert_eq!(get(&mut c, "n").await.unwrap().value, v::int(42));
}

async fn transact_over_the_limit_is_invalid_argument(b: Backend) {
    let s = TestServer::start_with(b, |cfg| cfg.limits.max_transaction_ops = 2).await;
    let mut c = s.client();
    let err = c
        .transact(TransactRequest {
            ops: vec![incr_op("a", 1), incr_op("b", 1), incr_op("c", 1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("--max-transaction-ops"));
    let err = c
        .transact(TransactRequest {
            ops: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .transact(TransactRequest {
            ops: vec![TransactOp { op: None }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(list_all(&mut c, "", 10).await.is_empty());
}

// ---------------------------------------------------------------- concurrency

async fn concurrent_cas_loops_lose_no_update(b: Backend) {
    const TASKS: i64 = 8;
    const LOOPS: i64 = 500;
    let s = TestServer::start(b).await;
    let mut c = s.client();
    put(&mut c, "counter", v::int(0)).await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let mut c = s.client();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0u64;
            for _ in 0..LOOPS {
                loop {
                    let e = get(&mut c, "counter").await.unwrap();
                    let Some(Kind::IntValue(n)) = e.value.unwrap().kind else {
                        panic!("not an int")
                    };
                    let mut req = put_req("counter", v::int(n + 1));
                    req.condition = if_version(e.version);
                    match c.put(req).await {
                        Ok(_) => break,
                        Err(s) if s.code() == Code::Aborted => retries += 1,
                        Err(s) => panic!("{s:?}"),
                    }
                }
            }
            retries
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        get(&mut c, "counter").await.unwrap().value,
        v::int(TASKS * LOOPS)
    );
}

async fn concurrent_increments_sum_exactly(b: Backend) {
    let s = TestServer::start(b).await;
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let mut c = s.client();
        tasks.push(tokio::spawn(async move {
            for i in 0..250i64 {
                c.increment(IncrementRequest {
                    key: "sum".into(),
                    delta: t * 1000 + i,
                    ttl: None,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected: i64 = (0..8i64)
        .map(|t| (0..250i64).map(|i| t * 1000 + i).sum::<i64>())
        .sum();
    let mut c = s.client();
    assert_eq!(get(&mut c, "sum").await.unwrap().value, v::int(expected));
}

async fn readers_never_see_a_partial_transaction(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    // Invariant kept by every transaction: a + b == 0.
    c.transact(TransactRequest {
        ops: vec![put_op("a", v::int(0), None), put_op("b", v::int(0), None)],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut w = s.client();
    let writer = tokio::spawn(async move {
        for i in 1..=300i64 {
            w.transact(TransactRequest {
                ops: vec![incr_op("a", i), incr_op("b", -i)],
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let mut reads = 0;
    while !writer.is_finished() {
        let r = c
            .batch_get(BatchGetRequest {
                keys: vec!["a".into(), "b".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let ints: Vec<i64> = r
            .results
            .iter()
            .map(
                |r| match r.entry.as_ref().unwrap().value.as_ref().unwrap().kind {
                    Some(Kind::IntValue(i)) => i,
                    _ => panic!("not an int"),
                },
            )
            .collect();
        assert_eq!(
            ints[0] + ints[1],
            0,
            "observed a partial transaction: {ints:?}"
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
}

async fn conditional_create_race_has_exactly_one_winner(b: Backend) {
    let s = TestServer::start(b).await;
    for round in 0..20 {
        let key = format!("lock:{round}");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let mut c = s.client();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let mut req = put_req(&key, v::int(t));
                req.condition = if_absent();
                match c.put(req).await {
                    Ok(_) => true,
                    Err(s) if s.code() == Code::FailedPrecondition => false,
                    Err(s) => panic!("{s:?}"),
                }
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += t.await.unwrap() as usize;
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
