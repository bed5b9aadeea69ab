//! The admin API and CLI (issue 15): Export, Import, Purge and Stats on both
//! backends, who may act on which tenant, the backup file through the real
//! binary (round trip memory → Redis, damaged files refused, an export
//! resumed after its process was killed), and reflection.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Backend, Checked, Client, TenantDef, TestServer, as_tenant, v, with_token};
use prost::Message;
use state_service::{
    admin::format,
    pb::{
        self, BackupEntry, BatchPutItem, BatchPutRequest, DeleteRequest, ExportRequest,
        ImportPolicy, ImportRequest, PurgeRequest, StatsRequest,
        admin_service_client::AdminServiceClient,
    },
    store::{Keyspace, MemoryStore, Store},
};
use tonic::Code;

use common::api::*;

type Admin = AdminServiceClient<Checked>;

common::both_backends!(
    export_streams_every_entry_with_value_version_and_ttl,
    export_leaves_out_tombstones_and_request_id_entries,
    export_resumes_from_a_page_token_without_repeating_keys,
    export_refuses_a_token_of_another_prefix,
    import_into_an_empty_tenant_keeps_versions_and_ttls,
    import_policies_decide_what_happens_to_existing_keys,
    import_never_moves_a_version_backwards,
    import_reports_bad_entries_with_their_index_and_goes_on,
    import_needs_a_policy,
    purge_deletes_only_the_prefix_and_counts,
    purge_of_a_whole_tenant_needs_all_keys,
    purge_rerun_after_an_interruption_finishes_the_job,
    a_paced_purge_finishes_the_job,
    stats_count_entries_and_bytes_under_a_prefix,
);

async fn admin(s: &TestServer) -> Admin {
    AdminServiceClient::new(Checked(common::channel(s.addr, None).await))
        .max_decoding_message_size(64 << 20)
}

fn export_req(tenant: &str, prefix: &str, page_size: u32, token: &str) -> ExportRequest {
    ExportRequest {
        tenant: tenant.into(),
        prefix: prefix.into(),
        page_token: token.into(),
        page_size,
    }
}

/// Every page of an export, in order.
async fn export_pages(a: &mut Admin, req: ExportRequest) -> Vec<pb::ExportPage> {
    let mut stream = a.export(req).await.unwrap().into_inner();
    let mut pages = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        pages.push(p);
    }
    pages
}

async fn export_all(a: &mut Admin, tenant: &str, prefix: &str) -> BTreeMap<String, BackupEntry> {
    let mut out = BTreeMap::new();
    for p in export_pages(a, export_req(tenant, prefix, 100, "")).await {
        for e in p.entries {
            assert!(
                out.insert(e.key.clone(), e).is_none(),
                "a key was exported twice"
            );
        }
    }
    out
}

async fn put_as(c: &mut Client, tenant: &str, key: &str, value: Option<pb::Value>) -> u64 {
    c.put(as_tenant(tenant, put_req(key, value)))
        .await
        .unwrap()
        .into_inner()
        .version
}

async fn put_ttl_as(c: &mut Client, tenant: &str, key: &str, ttl_ms: u64) -> u64 {
    c.put_with_ttl(as_tenant(
        tenant,
        pb::PutWithTtlRequest {
            key: key.into(),
            value: v::string(key),
            ttl: common::ms(ttl_ms),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .version
}

/// Writes `n` keys `<prefix><i>` (int values) into `tenant` in batches.
async fn fill(c: &mut Client, tenant: &str, prefix: &str, n: usize) {
    let keys: Vec<usize> = (0..n).collect();
    for batch in keys.chunks(500) {
        let items = batch
            .iter()
            .map(|i| BatchPutItem {
                key: format!("{prefix}{i:06}"),
                value: v::int(*i as i64),
                ..Default::default()
            })
            .collect();
        c.batch_put(as_tenant(tenant, BatchPutRequest { items }))
            .await
            .unwrap();
    }
}

fn entry(key: &str, value: Option<pb::Value>, version: u64, ttl_ms: Option<u64>) -> BackupEntry {
    BackupEntry {
        key: key.into(),
        value,
        version,
        ttl: ttl_ms.and_then(common::ms),
    }
}

async fn import(
    a: &mut Admin,
    tenant: &str,
    policy: ImportPolicy,
    batches: Vec<Vec<BackupEntry>>,
) -> Result<pb::ImportResponse, tonic::Status> {
    let mut msgs: Vec<ImportRequest> = batches
        .into_iter()
        .map(|entries| ImportRequest {
            tenant: String::new(),
            policy: 0,
            entries,
        })
        .collect();
    if msgs.is_empty() {
        msgs.push(ImportRequest::default());
    }
    msgs[0].tenant = tenant.into();
    msgs[0].policy = policy as i32;
    a.import(futures::stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

async fn get_as(c: &mut Client, tenant: &str, key: &str) -> Option<pb::Entry> {
    c.get(as_tenant(
        tenant,
        pb::GetRequest {
            key: key.into(),
            refresh_ttl: None,
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .entry
}

async fn stats(a: &mut Admin, tenant: &str, prefix: &str) -> pb::StatsProgress {
    let mut stream = a
        .stats(StatsRequest {
            tenant: tenant.into(),
            prefix: prefix.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(p) = stream.message().await.unwrap() {
        last = Some(p);
    }
    let last = last.expect("Stats sent no message");
    assert!(last.done, "the last Stats message is marked done");
    last
}

async fn purge(a: &mut Admin, tenant: &str, prefix: &str, all: bool) -> pb::PurgeProgress {
    let mut stream = a
        .purge(PurgeRequest {
            tenant: tenant.into(),
            prefix: prefix.into(),
            all_keys: all,
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(p) = stream.message().await.unwrap() {
        last = Some(p);
    }
    let last = last.expect("Purge sent no message");
    assert!(last.done);
    last
}

// ------------------------------------------------------------- Export ----

async fn export_streams_every_entry_with_value_version_and_ttl(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let v1 = put_as(&mut c, "a", "p:1", v::string("one")).await;
    let v2 = put_ttl_as(&mut c, "a", "p:2", 600_000).await;
    put_as(&mut c, "a", "q:1", v::int(1)).await;
    put_as(&mut c, "b", "p:9", v::int(9)).await;
    let mut a = admin(&s).await;
    let got = export_all(&mut a, "a", "p:").await;
    assert_eq!(got.keys().collect::<Vec<_>>(), ["p:1", "p:2"]);
    assert_eq!(got["p:1"].value, v::string("one"));
    assert_eq!(got["p:1"].version, v1);
    assert_eq!(got["p:1"].ttl, None);
    assert_eq!(got["p:2"].version, v2);
    let ttl = got["p:2"].ttl.expect("a TTL is exported");
    assert!(ttl.seconds > 590 && ttl.seconds <= 600, "{ttl:?}");
    // The whole tenant, and nothing of another one.
    assert_eq!(export_all(&mut a, "a", "").await.len(), 3);
    assert_eq!(export_all(&mut a, "b", "").await.len(), 1);
}

async fn export_leaves_out_tombstones_and_request_id_entries(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    // A key that remembers a request id (format 3 on Redis)...
    let mut req = put_req("with-id", v::string("x"));
    req.request_id = "req-1".into();
    let version = c
        .put(as_tenant("a", req))
        .await
        .unwrap()
        .into_inner()
        .version;
    // ...and a key deleted with a request id (a tombstone on Redis).
    put_as(&mut c, "a", "gone", v::int(1)).await;
    c.delete(as_tenant(
        "a",
        DeleteRequest {
            key: "gone".into(),
            request_id: "req-2".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let mut a = admin(&s).await;
    let got = export_all(&mut a, "a", "").await;
    assert_eq!(got.keys().collect::<Vec<_>>(), ["with-id"]);
    assert_eq!(got["with-id"].value, v::string("x"));
    assert_eq!(got["with-id"].version, version);
    assert_eq!(stats(&mut a, "a", "").await.keys, 1);
}

async fn export_resumes_from_a_page_token_without_repeating_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    fill(&mut c, "a", "k", 1000).await;
    let mut a = admin(&s).await;
    // Stop after the first page, as a client that lost its connection would.
    let mut stream = a
        .export(export_req("a", "", 50, ""))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    drop(stream);
    assert!(!first.next_page_token.is_empty());
    let mut keys: Vec<String> = first.entries.iter().map(|e| e.key.clone()).collect();
    for p in export_pages(&mut a, export_req("a", "", 50, &first.next_page_token)).await {
        keys.extend(p.entries.into_iter().map(|e| e.key));
    }
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a key was exported twice");
    assert_eq!(keys.len(), 1000);
}

async fn export_refuses_a_token_of_another_prefix(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    fill(&mut c, "a", "k", 300).await;
    let mut a = admin(&s).await;
    let mut stream = a
        .export(export_req("a", "k", 10, ""))
        .await
        .unwrap()
        .into_inner();
    let token = stream.message().await.unwrap().unwrap().next_page_token;
    drop(stream);
    for (tenant, prefix) in [("a", "k0"), ("b", "k")] {
        let err = a
            .export(export_req(tenant, prefix, 10, &token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
}

// ------------------------------------------------------------- Import ----

async fn import_into_an_empty_tenant_keeps_versions_and_ttls(b: Backend) {
    let s = TestServer::start(b).await;
    let mut a = admin(&s).await;
    let version = 1_700_000_000_000_000;
    let r = import(
        &mut a,
        "a",
        ImportPolicy::Overwrite,
        vec![vec![
            entry("x", v::string("x"), version, None),
            entry("y", v::int(7), version + 5, Some(300_000)),
            entry("z", v::int(1), 0, None),
        ]],
    )
    .await
    .unwrap();
    assert_eq!((r.written, r.skipped, r.failed), (3, 0, 0));
    let mut c = s.client();
    let x = get_as(&mut c, "a", "x").await.unwrap();
    assert_eq!((x.value, x.version, x.ttl), (v::string("x"), version, None));
    let y = get_as(&mut c, "a", "y").await.unwrap();
    assert_eq!(y.version, version + 5);
    let ttl = ttl_of(&y).unwrap();
    assert!(ttl > Duration::from_secs(290) && ttl <= Duration::from_secs(300));
    // Version 0: a fresh one, from the clock.
    let z = get_as(&mut c, "a", "z").await.unwrap();
    assert!(z.version > version + 5, "{}", z.version);
    // Later writes go on from the imported version.
    assert!(put_as(&mut c, "a", "x", v::int(2)).await > version);
}

async fn import_policies_decide_what_happens_to_existing_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut a = admin(&s).await;
    for (policy, want_old_kept, want_new_written) in [
        (ImportPolicy::Overwrite, false, true),
        (ImportPolicy::SkipExisting, true, false),
        (ImportPolicy::NewerVersion, true, true),
    ] {
        let t = format!("t{}", policy as i32);
        let cur = put_as(&mut c, &t, "old", v::string("live")).await;
        let cur_new = put_as(&mut c, &t, "new", v::string("live")).await;
        let r = import(
            &mut a,
            &t,
            policy,
            vec![vec![
                // Older than the live key...
                entry("old", v::string("backup"), cur - 1, None),
                // ...newer than the live key...
                entry("new", v::string("backup"), cur_new + 1_000_000, None),
                // ...and absent.
                entry("absent", v::string("backup"), 5, None),
            ]],
        )
        .await
        .unwrap();
        let old = get_as(&mut c, &t, "old").await.unwrap();
        assert_eq!(
            old.value == v::string("live"),
            want_old_kept,
            "{policy:?}: old"
        );
        let new = get_as(&mut c, &t, "new").await.unwrap();
        assert_eq!(
            new.value == v::string("backup"),
            want_new_written,
            "{policy:?}: new"
        );
        if want_new_written {
            assert_eq!(new.version, cur_new + 1_000_000, "{policy:?}");
        }
        let absent = get_as(&mut c, &t, "absent").await.unwrap();
        assert_eq!(absent.value, v::string("backup"));
        let written = 1 + u64::from(!want_old_kept) + u64::from(want_new_written);
        assert_eq!((r.written, r.skipped, r.failed), (written, 3 - written, 0));
    }
}

async fn import_never_moves_a_version_backwards(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    let mut a = admin(&s).await;
    let live = put_as(&mut c, "a", "k", v::int(1)).await;
    let r = import(
        &mut a,
        "a",
        ImportPolicy::Overwrite,
        vec![vec![entry("k", v::int(2), 42, None)]],
    )
    .await
    .unwrap();
    assert_eq!(r.written, 1);
    let k = get_as(&mut c, "a", "k").await.unwrap();
    assert_eq!(k.value, v::int(2));
    assert!(
        k.version > live,
        "version went from {live} to {}",
        k.version
    );
}

async fn import_reports_bad_entries_with_their_index_and_goes_on(b: Backend) {
    let s = TestServer::start(b).await;
    let mut a = admin(&s).await;
    let r = import(
        &mut a,
        "a",
        ImportPolicy::Overwrite,
        vec![
            vec![
                entry("ok1", v::int(1), 0, None),
                entry("", v::int(1), 0, None),
                entry("no-value", None, 0, None),
            ],
            vec![
                entry("ttl", v::int(1), 0, Some(1000 * 86_400 * 365 * 20)),
                entry("version", v::int(1), 10_000_000_000_000_000, None),
                entry("ok2", v::int(2), 0, None),
            ],
        ],
    )
    .await
    .unwrap();
    assert_eq!((r.written, r.skipped, r.failed), (2, 0, 4));
    let failed: Vec<(u64, &str)> = r
        .failures
        .iter()
        .map(|f| (f.index, f.reason.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            (1, "INVALID_ARGUMENT"),
            (2, "INVALID_ARGUMENT"),
            (3, "LIMIT_EXCEEDED"),
            (4, "INVALID_ARGUMENT"),
        ]
    );
    assert!(
        r.failures[3].message.contains("version"),
        "{:?}",
        r.failures[3]
    );
    let mut c = s.client();
    assert!(get_as(&mut c, "a", "ok2").await.is_some());
}

async fn import_needs_a_policy(b: Backend) {
    let s = TestServer::start(b).await;
    let mut a = admin(&s).await;
    let err = import(
        &mut a,
        "a",
        ImportPolicy::Unspecified,
        vec![vec![entry("k", v::int(1), 0, None)]],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("policy"), "{}", err.message());
}

// -------------------------------------------------------- Purge, Stats ----

async fn purge_deletes_only_the_prefix_and_counts(b: Backend) {
    let s = TestServer::start_with(b, |cfg| cfg.limits.admin_batch_keys = 7).await;
    let mut c = s.client();
    fill(&mut c, "a", "p:", 120).await;
    fill(&mut c, "a", "q:", 30).await;
    fill(&mut c, "b", "p:", 30).await;
    // A tombstone under the prefix goes too.
    c.delete(as_tenant(
        "a",
        DeleteRequest {
            key: "p:000001".into(),
            request_id: "r".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let mut a = admin(&s).await;
    let p = purge(&mut a, "a", "p:", false).await;
    assert!(
        (119..=120).contains(&p.deleted),
        "deleted {} (119 entries, and on Redis the tombstone)",
        p.deleted
    );
    assert_eq!(stats(&mut a, "a", "p:").await.keys, 0);
    assert_eq!(stats(&mut a, "a", "q:").await.keys, 30);
    assert_eq!(stats(&mut a, "b", "").await.keys, 30);
    // Re-running finds nothing left.
    assert_eq!(purge(&mut a, "a", "p:", false).await.deleted, 0);
}

async fn a_paced_purge_finishes_the_job(b: Backend) {
    let s = TestServer::start_with(b, |cfg| {
        cfg.limits.admin_batch_keys = 10;
        cfg.limits.admin_step_interval = Duration::from_millis(20);
    })
    .await;
    let mut c = s.client();
    fill(&mut c, "a", "k", 60).await;
    let mut a = admin(&s).await;
    assert_eq!(stats(&mut a, "a", "").await.keys, 60);
    assert_eq!(purge(&mut a, "a", "", true).await.deleted, 60);
    assert_eq!(stats(&mut a, "a", "").await.keys, 0);
}

async fn purge_of_a_whole_tenant_needs_all_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = s.client();
    fill(&mut c, "a", "k", 10).await;
    let mut a = admin(&s).await;
    let err = a
        .purge(PurgeRequest {
            tenant: "a".into(),
            prefix: String::new(),
            all_keys: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("all_keys"), "{}", err.message());
    assert_eq!(stats(&mut a, "a", "").await.keys, 10);
    assert_eq!(purge(&mut a, "a", "", true).await.deleted, 10);
    assert_eq!(stats(&mut a, "a", "").await.keys, 0);
}

/// A purge cut off after its first batch (the store steps, as the Purge
/// stream runs them) leaves the rest for a re-run, which deletes it.
async fn purge_rerun_after_an_interruption_finishes_the_job(b: Backend) {
    let redis = (b == Backend::Redis).then(common::TestRedis::get);
    match &redis {
        None => purge_rerun(&MemoryStore::new(1 << 30, common_idempotency())).await,
        Some(r) => purge_rerun(&redis_store(&r.url()).await).await,
    }
}

async fn purge_rerun<S: Store>(store: &S) {
    let ns = Keyspace::new("state").namespace("a");
    let items = (0..500)
        .map(|i| state_service::store::PutOp {
            key: format!("k{i:04}"),
            value: v::int(i).unwrap(),
            expiry: Default::default(),
            condition: Default::default(),
            request_id: None,
        })
        .collect();
    store.batch_put(&ns, items).await.unwrap();
    // The first run stops after one step of 100 keys of work.
    let first = store.purge_step(&ns, "", None, 100).await.unwrap();
    assert!(first.cursor.is_some(), "one step did not finish the job");
    let left = count(store, &ns).await;
    assert_eq!(first.keys + left, 500);
    assert!(left > 0);
    // The re-run starts from scratch and deletes the rest.
    let mut deleted = 0;
    let mut cursor = None;
    loop {
        let step = store
            .purge_step(&ns, "", cursor.as_deref(), 100)
            .await
            .unwrap();
        deleted += step.keys;
        cursor = step.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(deleted, left);
    assert_eq!(count(store, &ns).await, 0);
}

async fn count<S: Store>(store: &S, ns: &state_service::store::Namespace) -> u64 {
    let mut keys = 0;
    let mut cursor = None;
    loop {
        let step = store
            .stats_step(ns, "", cursor.as_deref(), 100)
            .await
            .unwrap();
        keys += step.keys;
        cursor = step.cursor;
        if cursor.is_none() {
            return keys;
        }
    }
}

fn common_idempotency() -> state_service::store::Idempotency {
    state_service::store::Idempotency {
        window: Duration::from_secs(600),
        max_ids: 16,
    }
}

async fn redis_store(url: &str) -> state_service::store::RedisStore {
    use state_service::store::redis::{ConnSettings, StoreOptions};
    let store = state_service::store::RedisStore::new(
        &[url.to_string()],
        &ConnSettings {
            pool_size: 1,
            connect_timeout: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        Keyspace::new("state"),
        StoreOptions {
            command_timeout: Duration::from_secs(5),
            idempotency: common_idempotency(),
            wait: None,
            feed: None,
        },
    )
    .unwrap();
    store.ping().await.unwrap();
    store
}

async fn stats_count_entries_and_bytes_under_a_prefix(b: Backend) {
    let s = TestServer::start_with(b, |cfg| cfg.limits.admin_batch_keys = 9).await;
    let mut c = s.client();
    fill(&mut c, "a", "p:", 100).await;
    fill(&mut c, "a", "q:", 5).await;
    let mut a = admin(&s).await;
    let p = stats(&mut a, "a", "p:").await;
    assert_eq!(p.keys, 100);
    // At least key and value of every entry; at most a few hundred bytes
    // each (header, bookkeeping).
    assert!(p.bytes >= 100 * 10 && p.bytes <= 100 * 400, "{}", p.bytes);
    assert_eq!(stats(&mut a, "a", "").await.keys, 105);
    assert_eq!(stats(&mut a, "nobody", "").await.keys, 0);
}

// ------------------------------------------------------ Authorization ----

const A_ADMIN: &str = "sst_admin-of-a-0123456789abcdefghijklmnop";
const A_RW: &str = "sst_rw-of-a-0123456789abcdefghijklmnopqrst";
const OPERATOR_B: &str = "sst_operator-for-b-0123456789abcdefghijkl";
const OPERATOR_ALL: &str = "sst_operator-for-all-0123456789abcdefghij";

async fn server_with_tenants(dir: &tempfile::TempDir) -> TestServer {
    let path = dir.path().join("tenants.toml");
    let mut toml = common::tenants_toml(&[
        TenantDef {
            id: "a",
            tokens: &[(A_ADMIN, &["admin"]), (A_RW, &["read", "write"])],
            extra: "",
        },
        TenantDef {
            id: "b",
            tokens: &[],
            extra: "",
        },
        TenantDef {
            id: "c",
            tokens: &[],
            extra: "",
        },
    ]);
    for (id, token, grant) in [
        ("ops-b", OPERATOR_B, "[\"b\"]"),
        ("ops-all", OPERATOR_ALL, "[\"*\"]"),
    ] {
        toml.push_str(&format!(
            "[[tenants]]\nid = \"{id}\"\n[[tenants.tokens]]\nsha256 = \"{}\"\nscopes = \
             [\"admin\"]\nadmin_tenants = {grant}\n",
            state_service::tenancy::hash_token(token)
        ));
    }
    std::fs::write(&path, toml).unwrap();
    TestServer::start_with(Backend::Memory, |cfg| cfg.tenancy.tenants_file = Some(path)).await
}

fn stats_req(token: &str, tenant: &str) -> tonic::Request<StatsRequest> {
    with_token(
        token,
        StatsRequest {
            tenant: tenant.into(),
            prefix: String::new(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_acts_on_its_own_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_tenants(&dir).await;
    let mut a = admin(&s).await;
    // Its own tenant, named or implied.
    for tenant in ["a", ""] {
        a.stats(stats_req(A_ADMIN, tenant)).await.unwrap();
        a.export(with_token(A_ADMIN, export_req(tenant, "", 10, "")))
            .await
            .unwrap();
    }
    // Another tenant: every admin RPC is refused before any work.
    let denied = a
        .export(with_token(A_ADMIN, export_req("b", "", 10, "")))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("admin_tenants"),
        "{}",
        denied.message()
    );
    assert!(!denied.message().contains("\"b\""), "{}", denied.message());
    let err = a.stats(stats_req(A_ADMIN, "b")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = a
        .purge(with_token(
            A_ADMIN,
            PurgeRequest {
                tenant: "b".into(),
                prefix: String::new(),
                all_keys: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let req = with_token(
        A_ADMIN,
        futures::stream::iter(vec![ImportRequest {
            tenant: "b".into(),
            policy: ImportPolicy::Overwrite as i32,
            entries: vec![entry("k", v::int(1), 0, None)],
        }]),
    );
    let err = a.import(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A data token of tenant a has no admin scope at all.
    let err = a.stats(stats_req(A_RW, "a")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("admin"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_grant_reaches_the_tenants_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_tenants(&dir).await;
    let mut a = admin(&s).await;
    a.stats(stats_req(OPERATOR_B, "b")).await.unwrap();
    assert_eq!(
        a.stats(stats_req(OPERATOR_B, "c"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    for tenant in ["a", "b", "c"] {
        a.stats(stats_req(OPERATOR_ALL, tenant)).await.unwrap();
    }
    // The operator imports into b and reads it back with an export.
    let r = import_with_token(&mut a, OPERATOR_B, "b").await;
    assert_eq!(r.written, 1);
    let mut stream = a
        .export(with_token(OPERATOR_B, export_req("b", "", 10, "")))
        .await
        .unwrap()
        .into_inner();
    let page = stream.message().await.unwrap().unwrap();
    assert_eq!(page.entries.len(), 1);
}

async fn import_with_token(a: &mut Admin, token: &str, tenant: &str) -> pb::ImportResponse {
    a.import(with_token(
        token,
        futures::stream::iter(vec![ImportRequest {
            tenant: tenant.into(),
            policy: ImportPolicy::Overwrite as i32,
            entries: vec![entry("k", v::int(1), 0, None)],
        }]),
    ))
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_grant_without_the_admin_scope_refuses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(
        &path,
        format!(
            "[[tenants]]\nid = \"a\"\n[[tenants.tokens]]\nsha256 = \"{}\"\nscopes = \
             [\"read\"]\nadmin_tenants = [\"*\"]\n",
            state_service::tenancy::hash_token(A_RW)
        ),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = state_service::config::Config::for_tests(listener.local_addr().unwrap(), None);
    cfg.tenancy.tenants_file = Some(path);
    let err = state_service::server::run(listener, cfg, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("admin_tenants"), "{err}");
}

// ------------------------------------------------------------ the CLI ----

const BIN: &str = env!("CARGO_BIN_EXE_state-service");

/// Runs the binary with `args`, STATE_* variables cleared.
fn cli(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run state-service")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads a backup file: every entry, checked.
fn read_backup(path: &Path) -> Vec<BackupEntry> {
    let mut r = format::Reader::open(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk().unwrap() {
        out.extend(c.entries);
    }
    out
}

/// Values of every kind, including the awkward ones.
fn awkward_value(i: usize) -> pb::Value {
    use pb::value::Kind;
    let kinds = [
        Kind::DoubleValue(-0.0),
        Kind::DoubleValue(f64::from_bits(0x7ff8_0000_0000_1234)),
        Kind::BytesValue(vec![0, 0xff, 0x02, i as u8]),
        Kind::StringValue(format!("日本 {i}")),
        Kind::IntValue(i64::MIN + i as i64),
        Kind::BoolValue(i.is_multiple_of(2)),
        Kind::NullValue(0),
        Kind::ListValue(pb::ValueList {
            values: vec![v::of(Kind::IntValue(i as i64))],
        }),
    ];
    v::of(kinds[i % kinds.len()].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trip_from_the_memory_backend_into_redis_keeps_values_versions_and_ttls() {
    const N: usize = 20_000;
    let src = TestServer::start(Backend::Memory).await;
    let mut c = src.client();
    let keys: Vec<usize> = (0..N).collect();
    for batch in keys.chunks(500) {
        let items = batch
            .iter()
            .map(|i| BatchPutItem {
                key: format!("k{i:06}"),
                value: Some(awkward_value(*i)),
                // Every tenth key expires in an hour.
                ttl: if i.is_multiple_of(10) {
                    common::ms(3_600_000)
                } else {
                    None
                },
                ..Default::default()
            })
            .collect();
        c.batch_put(as_tenant("src", BatchPutRequest { items }))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.ssx");
    let out = cli(&[
        "export",
        "--addr",
        &src.addr.to_string(),
        "--tenant",
        "src",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("exported {N} keys")),
        "{}",
        text(&out.stderr)
    );
    let mut a = admin(&src).await;
    let source = export_all(&mut a, "src", "").await;

    let dst = TestServer::start(Backend::Redis).await;
    let out = cli(&[
        "import",
        "--addr",
        &dst.addr.to_string(),
        "--tenant",
        "dst",
        "--policy",
        "newer",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{N} written, 0 skipped, 0 failed")),
        "{}",
        text(&out.stderr)
    );
    let mut b = admin(&dst).await;
    let copied = export_all(&mut b, "dst", "").await;
    assert_eq!(copied.len(), N);
    for (key, want) in &source {
        let got = &copied[key];
        // Byte-identical values (NaN payloads and -0.0 included).
        assert_eq!(
            got.value.as_ref().map(Message::encode_to_vec),
            want.value.as_ref().map(Message::encode_to_vec),
            "{key}"
        );
        assert_eq!(got.version, want.version, "{key}");
        match (&got.ttl, &want.ttl) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                // Equal within the time the copy took (seconds).
                assert!((g.seconds - w.seconds).abs() < 60, "{key}: {g:?} vs {w:?}");
                assert!(g.seconds <= 3600, "{key}: {g:?}");
            }
            other => panic!("{key}: TTLs differ: {other:?}"),
        }
    }
    // Importing the same file again under `newer` changes nothing.
    let out = cli(&[
        "import",
        "--addr",
        &dst.addr.to_string(),
        "--tenant",
        "dst",
        "--policy",
        "newer",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(
        text(&out.stderr).contains(&format!("0 written, {N} skipped")),
        "{}",
        text(&out.stderr)
    );
}

/// A backup of 3 × 100 keys in three chunks, and a server to import it into.
async fn small_backup(dir: &tempfile::TempDir) -> (std::path::PathBuf, TestServer) {
    let s = TestServer::start(Backend::Memory).await;
    let mut c = s.client();
    fill(&mut c, "src", "k", 300).await;
    let file = dir.path().join("small.ssx");
    let out = cli(&[
        "export",
        "--addr",
        &s.addr.to_string(),
        "--tenant",
        "src",
        "--page-size",
        "100",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (file, s)
}

fn import_file(s: &TestServer, tenant: &str, file: &Path) -> std::process::Output {
    cli(&[
        "import",
        "--addr",
        &s.addr.to_string(),
        "--tenant",
        tenant,
        "--file",
        file.to_str().unwrap(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_refused_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (file, s) = small_backup(&dir).await;
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.ssx");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = import_file(&s, "dst", &cut);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("truncated") && err.contains("nothing was imported"),
        "{err}"
    );
    let mut a = admin(&s).await;
    assert_eq!(stats(&mut a, "dst", "").await.keys, 0);
    // `--check` says the same without a server.
    let out = cli(&["import", "--check", "--file", cut.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_file_is_refused_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (file, s) = small_backup(&dir).await;
    let mut bytes = std::fs::read(&file).unwrap();
    // One value byte in the middle of the file, as an editor would change it.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let bad = dir.path().join("bad.ssx");
    std::fs::write(&bad, &bytes).unwrap();
    let out = import_file(&s, "dst", &bad);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("checksum") && err.contains("nothing was imported"),
        "{err}"
    );
    let mut a = admin(&s).await;
    assert_eq!(stats(&mut a, "dst", "").await.keys, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_stream_on_stdin_applies_the_chunks_before_the_damage_only() {
    let dir = tempfile::tempdir().unwrap();
    let (file, s) = small_backup(&dir).await;
    let mut bytes = std::fs::read(&file).unwrap();
    // Damage the last of the three chunks (the trailer is 49 bytes).
    let at = bytes.len() - 49 - 40;
    bytes[at] ^= 0x01;
    let mut child = Command::new(BIN)
        .args(["import", "--addr", &s.addr.to_string(), "--tenant", "dst"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("chunk 3") && err.contains("nothing from it on"),
        "{err}"
    );
    let mut a = admin(&s).await;
    // The first two chunks (200 keys, in key order on the memory backend).
    let got = export_all(&mut a, "dst", "").await;
    assert_eq!(got.len(), 200);
    assert!(
        got.keys().all(|k| k.as_str() < "k000200"),
        "{:?}",
        got.keys().last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_killed_midway_resumes_with_every_key_exactly_once() {
    const N: usize = 20_000;
    let s = TestServer::start(Backend::Redis).await;
    let mut c = s.client();
    fill(&mut c, "a", "k", N).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resume.ssx");
    let args = [
        "export",
        "--addr",
        &s.addr.to_string(),
        "--tenant",
        "a",
        "--page-size",
        "20",
        "--file",
        file.to_str().unwrap(),
    ];
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once a few chunks are on disk, freeze Redis so the export cannot
    // finish, and kill the exporter the hard way.
    let redis = match &s.redis {
        Some(common::TestRedis::Owned(r)) => r,
        _ => panic!("this test needs its own redis-server (unset STATE_TEST_REDIS_URL)"),
    };
    let start = std::time::Instant::now();
    loop {
        let len = std::fs::metadata(&file).map_or(0, |m| m.len());
        if len > 4096 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the export wrote nothing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended early"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    redis.pause();
    child.kill().unwrap();
    child.wait().unwrap();
    redis.resume();
    let partial = format::recover(std::fs::File::open(&file).unwrap()).unwrap();
    assert!(!partial.complete, "the export was not interrupted");
    assert!(
        partial.entries > 0 && (partial.entries as usize) < N,
        "{}",
        partial.entries
    );

    let mut resume: Vec<&str> = args.to_vec();
    resume.push("--resume");
    let out = cli(&resume);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = read_backup(&file);
    let keys: HashSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), entries.len(), "a key is in the file twice");
    assert_eq!(keys.len(), N, "keys missing from the file");
    // Resuming a complete file does nothing.
    let out = cli(&resume);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("already complete"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_purge_and_stats_print_their_totals() {
    let s = TestServer::start(Backend::Memory).await;
    let mut c = s.client();
    fill(&mut c, "a", "k", 50).await;
    let addr = s.addr.to_string();
    let out = cli(&["stats", "--addr", &addr, "--tenant", "a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("keys 50 bytes "),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&["purge", "--addr", &addr, "--tenant", "a"]);
    assert!(
        !out.status.success(),
        "a whole-tenant purge without --all-keys"
    );
    assert!(
        text(&out.stderr).contains("all_keys"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["purge", "--addr", &addr, "--tenant", "a", "--all-keys"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("purged 50 keys"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_token_from_state_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_tenants(&dir).await;
    let addr = s.addr.to_string();
    let run = |token: &str| {
        Command::new(BIN)
            .args(["stats", "--addr", &addr])
            .env("STATE_TOKEN", token)
            .output()
            .unwrap()
    };
    let ok = run(A_ADMIN);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let denied = run(A_RW);
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("PermissionDenied"),
        "{}",
        text(&denied.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_the_admin_service() {
    let s = TestServer::start(Backend::Memory).await;
    let out = Command::new(common::venv_tool("grpcurl"))
        .args(["-plaintext", "-max-time", "10", &s.addr.to_string()])
        .args(["describe", "stateservice.v1.AdminService"])
        .output()
        .expect("grpcurl not found: run scripts/test.sh, which installs it into .venv");
    assert!(out.status.success(), "{out:?}");
    let d = text(&out.stdout);
    for rpc in ["rpc Export", "rpc Import", "rpc Purge", "rpc Stats"] {
        assert!(d.contains(rpc), "{rpc} missing: {d}");
    }
    // The proto comments are the docs operators see.
    assert!(d.contains("point-in-time"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_an_export_with_another_tenant_or_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (file, s) = small_backup(&dir).await;
    let bytes = std::fs::read(&file).unwrap();
    // Cut off the trailer: an export that did not finish.
    std::fs::write(&file, &bytes[..bytes.len() - 49]).unwrap();
    let addr = s.addr.to_string();
    let path = file.to_str().unwrap();
    for (tenant, prefix) in [("other", ""), ("src", "k1")] {
        let out = cli(&[
            "export", "--addr", &addr, "--tenant", tenant, "--prefix", prefix, "--file", path,
            "--resume",
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("same --tenant and --prefix"),
            "{}",
            text(&out.stderr)
        );
    }
    // The right ones finish it: all 300 keys, once each.
    let out = cli(&[
        "export", "--addr", &addr, "--tenant", "src", "--file", path, "--resume",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read_backup(&file).len(), 300);
}

/// Redis only: data another tool wrote under a key is never overwritten by
/// an import (as by any write); the entry fails and the rest go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_over_foreign_data_fails_that_entry_and_goes_on() {
    let s = TestServer::start(Backend::Redis).await;
    let Some(common::TestRedis::Owned(r)) = &s.redis else {
        panic!("this test needs its own redis-server (unset STATE_TEST_REDIS_URL)");
    };
    let mut raw = r.client().await;
    let _: () = ::redis::cmd("SET")
        .arg("state:a:plain")
        .arg("written by another tool")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = ::redis::cmd("HSET")
        .arg("state:a:hash")
        .arg("f")
        .arg("v")
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut a = admin(&s).await;
    let r = import(
        &mut a,
        "a",
        ImportPolicy::Overwrite,
        vec![vec![
            entry("plain", v::int(1), 0, None),
            entry("hash", v::int(1), 0, None),
            entry("ok", v::int(1), 0, None),
        ]],
    )
    .await
    .unwrap();
    assert_eq!((r.written, r.failed), (1, 2));
    let reasons: Vec<(u64, &str)> = r
        .failures
        .iter()
        .map(|f| (f.index, f.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [(0, "INVALID_STORED_VALUE"), (1, "INVALID_STORED_VALUE")]
    );
    let plain: String = ::redis::cmd("GET")
        .arg("state:a:plain")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(plain, "written by another tool");
}

/// Redis only: a key deleted with a request id left a tombstone holding the
/// version it had; an import below it writes above it instead, so the key's
/// versions never go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_over_a_tombstone_writes_above_the_deleted_version() {
    let s = TestServer::start(Backend::Redis).await;
    let mut c = s.client();
    let live = put_as(&mut c, "a", "k", v::int(1)).await;
    c.delete(as_tenant(
        "a",
        DeleteRequest {
            key: "k".into(),
            request_id: "del-1".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let mut a = admin(&s).await;
    let r = import(
        &mut a,
        "a",
        ImportPolicy::NewerVersion,
        vec![vec![entry("k", v::int(2), live - 5, None)]],
    )
    .await
    .unwrap();
    // Absent (a tombstone is no entry): written, but above the old version.
    assert_eq!(r.written, 1);
    let k = get_as(&mut c, "a", "k").await.unwrap();
    assert_eq!(k.value, v::int(2));
    assert!(k.version > live, "{} not above {live}", k.version);
}
