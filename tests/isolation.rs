//! The adversarial isolation suite. Two tenants with bearer tokens (one
//! tenant id extends the other, `alpha` and `alpha-b`, so their names share a
//! prefix), and every tricky combination of key, prefix, token, header and
//! page token an attacker controls. Each case gets its documented code
//! (docs/security.md) and, whatever the code, the other tenant's data is
//! never read, listed, changed or deleted: its full snapshot is compared
//! before and after, and no response ever carries its values.
//! Every test runs against the memory backend and a private redis-server.

mod common;

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Backend, TenantDef, TestServer, ms, tenants_toml, v};
use sha2::{Digest, Sha256};
use state_service::{
    config::Config,
    pb::{
        self, BatchDeleteRequest, BatchGetRequest, BatchPutItem, BatchPutRequest, DeleteRequest,
        ExpireRequest, GetRequest, IncrementRequest, ListRequest, PersistRequest, PutRequest,
        PutWithTtlRequest, TransactOp, TransactRequest, transact_op::Op,
    },
};
use tonic::{Code, Request, Status};

use common::Client;

const ALPHA: &str = "alpha";
/// Extends ALPHA's id: `state:alpha:` and `state:alpha-b:` must still never overlap.
const BETA: &str = "alpha-b";
const ALPHA_RW: &str = "sst_alpha-read-write-0123456789abcdefghijklmnopqrstu";
const ALPHA_RO: &str = "sst_alpha-read-only-0123456789abcdefghijklmnopqrstuv";
const ALPHA_WO: &str = "sst_alpha-write-only-0123456789abcdefghijklmnopqrstu";
const BETA_RW: &str = "sst_beta-read-write-0123456789abcdefghijklmnopqrstuvw";
const BETA_ADMIN: &str = "sst_beta-admin-only-0123456789abcdefghijklmnopqrstuvw";
/// ALPHA's values: no response to anyone else may ever contain this.
const SECRET: &str = "alpha-secret";

/// Keys an attacker might hope escape its namespace: separators, glob and
/// hash-tag characters, the other tenant's id and full storage-key spelling.
const TRICKY_KEYS: &[&str] = &[
    "plain",
    "x:y",
    ":",
    "*",
    "?",
    "[a-z]*",
    "\\",
    "\\*",
    "{alpha}",
    "{alpha-b}",
    "alpha:plain",
    "alpha-b:plain",
    "../alpha/plain",
    "state:alpha:plain",
    "state:alpha-b:plain",
    "日本",
    "%s%n",
    "\0",
    " ",
    "a\nb",
];

/// List prefixes an attacker might hope widen a SCAN or a range.
const TRICKY_PREFIXES: &[&str] = &[
    "",
    "*",
    "?",
    ":",
    "[",
    "[a-z]",
    "\\",
    "alpha",
    "alpha:",
    "alpha-b:",
    "../",
    "state:",
    "state:alpha:",
    "\0",
];

common::all_topologies!(
    another_tenants_keys_are_invisible_to_every_rpc,
    a_tenant_header_naming_another_tenant_is_permission_denied,
    missing_or_bad_credentials_are_unauthenticated,
    scopes_are_enforced_per_rpc,
    page_tokens_of_another_tenant_or_prefix_are_invalid_argument,
    crafted_unsigned_page_tokens_never_widen_a_listing,
    signed_page_tokens_cannot_be_crafted_or_altered,
    oversize_inputs_are_invalid_argument_naming_the_limit,
);

// ---------------------------------------------------------------- fixture

struct Fixture {
    server: TestServer,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(b: Backend) -> Self {
        Self::start_with(b, |_| {}).await
    }

    async fn start_with(b: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(
            &path,
            tenants_toml(&[
                TenantDef {
                    id: ALPHA,
                    tokens: &[
                        (ALPHA_RW, &["read", "write"]),
                        (ALPHA_RO, &["read"]),
                        (ALPHA_WO, &["write"]),
                    ],
                    extra: "",
                },
                TenantDef {
                    id: BETA,
                    tokens: &[(BETA_RW, &["read", "write"]), (BETA_ADMIN, &["admin"])],
                    extra: "",
                },
            ]),
        )
        .unwrap();
        let server = TestServer::start_with(b, |cfg| {
            cfg.tenancy.tenants_file = Some(path);
            tweak(cfg);
        })
        .await;
        Fixture { server, _dir: dir }
    }

    fn client(&self) -> Client {
        self.server.client()
    }
}

/// The metadata an attacker sends: raw `authorization` and `x-tenant-id`
/// values, each possibly repeated.
#[derive(Clone, Debug, Default)]
struct Creds {
    authorization: Vec<String>,
    tenant: Vec<String>,
}

impl Creds {
    fn token(token: &str) -> Self {
        Self::raw(&format!("Bearer {token}"))
    }

    fn raw(authorization: &str) -> Self {
        Creds {
            authorization: vec![authorization.to_string()],
            tenant: vec![],
        }
    }

    fn none() -> Self {
        Creds::default()
    }

    fn tenant(mut self, tenant: &str) -> Self {
        self.tenant.push(tenant.to_string());
        self
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        for a in &self.authorization {
            r.metadata_mut().append("authorization", a.parse().unwrap());
        }
        for t in &self.tenant {
            r.metadata_mut().append("x-tenant-id", t.parse().unwrap());
        }
        r
    }
}

fn string(s: &str) -> Option<pb::Value> {
    v::string(s)
}

/// Seeds ALPHA with every tricky key (value SECRET) and returns its snapshot.
async fn seed_alpha(c: &mut Client) -> BTreeMap<String, String> {
    for key in TRICKY_KEYS
        .iter()
        .chain(&["only-alpha", "page-0", "page-1"])
    {
        c.put(Creds::token(ALPHA_RW).req(PutRequest {
            key: key.to_string(),
            value: string(SECRET),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    snapshot(c, ALPHA_RW).await
}

/// Everything a tenant holds: key → (value, version, has TTL), through every
/// List page.
async fn snapshot(c: &mut Client, token: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list(Creds::token(token).req(ListRequest {
                prefix: String::new(),
                page_size: 7,
                page_token: page_token.clone(),
                include_values: true,
            }))
            .await
            .unwrap()
            .into_inner();
        for e in page.entries {
            out.insert(
                e.key.clone(),
                format!("{:?} v{} ttl={}", e.value, e.version, e.ttl.is_some()),
            );
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

type Outcome = (&'static str, Result<String, Status>);

/// Every RPC once as `creds`, aimed at `key` (List: prefix `key`), reads
/// first and deletes last. Each outcome is the RPC's name and its response
/// (as text, to search for leaked values) or status.
async fn every_rpc(c: &mut Client, creds: &Creds, key: &str) -> Vec<Outcome> {
    fn text<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>) -> Result<String, Status> {
        r.map(|r| format!("{:?}", r.into_inner()))
    }
    let k = key.to_string();
    let mut out = vec![];
    out.push((
        "Get",
        text(
            c.get(creds.req(GetRequest {
                key: k.clone(),
                refresh_ttl: None,
            }))
            .await,
        ),
    ));
    out.push((
        "List",
        text(
            c.list(creds.req(ListRequest {
                prefix: k.clone(),
                page_size: 100,
                page_token: String::new(),
                include_values: true,
            }))
            .await,
        ),
    ));
    out.push((
        "BatchGet",
        text(
            c.batch_get(creds.req(BatchGetRequest {
                keys: vec![k.clone(), "only-alpha".into()],
            }))
            .await,
        ),
    ));
    out.push((
        "Get+refresh_ttl",
        text(
            c.get(creds.req(GetRequest {
                key: k.clone(),
                refresh_ttl: ms(3_600_000),
            }))
            .await,
        ),
    ));
    out.push((
        "Expire",
        text(
            c.expire(creds.req(ExpireRequest {
                key: k.clone(),
                ttl: ms(3_600_000),
            }))
            .await,
        ),
    ));
    out.push((
        "Persist",
        text(
            c.persist(creds.req(PersistRequest { key: k.clone() }))
                .await,
        ),
    ));
    out.push((
        "Put",
        text(
            c.put(creds.req(PutRequest {
                key: k.clone(),
                value: string("intruder"),
                ..Default::default()
            }))
            .await,
        ),
    ));
    out.push((
        "PutWithTtl",
        text(
            c.put_with_ttl(creds.req(PutWithTtlRequest {
                key: k.clone(),
                value: string("intruder"),
                ttl: ms(3_600_000),
                condition: None,
                ..Default::default()
            }))
            .await,
        ),
    ));
    out.push((
        "Increment",
        text(
            c.increment(creds.req(IncrementRequest {
                key: format!("{k}#n"),
                delta: 1,
                ttl: None,
                ..Default::default()
            }))
            .await,
        ),
    ));
    out.push((
        "BatchPut",
        text(
            c.batch_put(creds.req(BatchPutRequest {
                items: vec![BatchPutItem {
                    key: k.clone(),
                    value: string("intruder"),
                    ..Default::default()
                }],
            }))
            .await,
        ),
    ));
    out.push((
        "Transact",
        text(
            c.transact(creds.req(TransactRequest {
                ops: vec![TransactOp {
                    op: Some(Op::Put(PutRequest {
                        key: k.clone(),
                        value: string("intruder"),
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            }))
            .await,
        ),
    ));
    out.push((
        "Delete",
        text(
            c.delete(creds.req(DeleteRequest {
                key: k.clone(),
                condition: None,
                ..Default::default()
            }))
            .await,
        ),
    ));
    out.push((
        "BatchDelete",
        text(
            c.batch_delete(creds.req(BatchDeleteRequest {
                keys: vec![k.clone(), "only-alpha".into()],
            }))
            .await,
        ),
    ));
    out
}

const READS: &[&str] = &["Get", "List", "BatchGet"];

fn code(r: &Result<String, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn assert_no_leak(outcomes: &[Outcome], who: &str) {
    for (rpc, r) in outcomes {
        let text = match r {
            Ok(t) => t.clone(),
            Err(s) => format!("{s:?}"),
        };
        assert!(
            !text.contains(SECRET),
            "{who}: {rpc} returned the other tenant's value: {text}"
        );
    }
}

fn assert_all(outcomes: &[Outcome], want: Code, who: &str) {
    for (rpc, r) in outcomes {
        assert_eq!(code(r), want, "{who}: {rpc} gave {r:?}");
    }
}

// ---------------------------------------------------------------- tests

async fn another_tenants_keys_are_invisible_to_every_rpc(b: Backend) {
    let f = Fixture::start(b).await;
    let mut c = f.client();
    let before = seed_alpha(&mut c).await;
    let beta = Creds::token(BETA_RW);
    for key in TRICKY_KEYS {
        let outcomes = every_rpc(&mut c, &beta, key).await;
        assert_no_leak(&outcomes, &format!("beta on {key:?}"));
        for (rpc, r) in &outcomes {
            if READS.contains(rpc) {
                assert_eq!(code(r), Code::Ok, "beta {rpc} {key:?}: {r:?}");
            }
        }
        // Beta's own first Get of the key found nothing: ALPHA's copy is not its.
        let first_get = outcomes[0].1.as_ref().unwrap();
        assert!(first_get.contains("found: false"), "{key:?}: {first_get}");
    }
    for prefix in TRICKY_PREFIXES {
        let page = c
            .list(beta.req(ListRequest {
                prefix: prefix.to_string(),
                page_size: 1000,
                page_token: String::new(),
                include_values: true,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(!format!("{page:?}").contains(SECRET), "prefix {prefix:?}");
        assert!(!page.keys.iter().any(|k| k == "only-alpha"));
    }
    assert_eq!(
        snapshot(&mut c, ALPHA_RW).await,
        before,
        "alpha's data changed"
    );
}

async fn a_tenant_header_naming_another_tenant_is_permission_denied(b: Backend) {
    let f = Fixture::start(b).await;
    let mut c = f.client();
    let before = seed_alpha(&mut c).await;
    for header in [ALPHA, "ALPHA", "alpha-", "alpha-b.", "*", "default", "a:b"] {
        let creds = Creds::token(BETA_RW).tenant(header);
        let outcomes = every_rpc(&mut c, &creds, "plain").await;
        assert_all(
            &outcomes,
            Code::PermissionDenied,
            &format!("beta token, x-tenant-id {header:?}"),
        );
    }
    // A repeated header must agree in every copy.
    let creds = Creds::token(BETA_RW).tenant(BETA).tenant(ALPHA);
    assert_all(
        &every_rpc(&mut c, &creds, "plain").await,
        Code::PermissionDenied,
        "beta token, x-tenant-id beta then alpha",
    );
    // Repeating one's own tenant is allowed (clients written for header mode).
    let own = every_rpc(&mut c, &Creds::token(BETA_RW).tenant(BETA), "plain").await;
    assert_no_leak(&own, "beta with its own header");
    assert_eq!(code(&own[0].1), Code::Ok);
    assert_eq!(snapshot(&mut c, ALPHA_RW).await, before);
}

async fn missing_or_bad_credentials_are_unauthenticated(b: Backend) {
    let f = Fixture::start(b).await;
    let mut c = f.client();
    let before = seed_alpha(&mut c).await;
    let alpha_hash = state_service::tenancy::hash_token(ALPHA_RW);
    let cases: Vec<(&str, Creds)> = vec![
        ("no credentials", Creds::none()),
        (
            "header alone is no longer trusted",
            Creds::none().tenant(ALPHA),
        ),
        (
            "unknown token",
            Creds::token("sst_not-a-token-0123456789abcdefghijklm"),
        ),
        (
            "token plus one character",
            Creds::token(&format!("{ALPHA_RW}x")),
        ),
        (
            "token minus one character",
            Creds::token(&ALPHA_RW[..ALPHA_RW.len() - 1]),
        ),
        (
            "token in other case",
            Creds::token(&ALPHA_RW.to_uppercase()),
        ),
        ("the stored hash as a token", Creds::token(&alpha_hash)),
        ("empty bearer", Creds::raw("Bearer ")),
        ("scheme only", Creds::raw("Bearer")),
        ("no scheme", Creds::raw(ALPHA_RW)),
        ("basic auth", Creds::raw(&format!("Basic {ALPHA_RW}"))),
        (
            "two tokens in one header",
            Creds::raw(&format!("Bearer {ALPHA_RW} {ALPHA_RW}")),
        ),
        (
            "two authorization headers",
            Creds {
                authorization: vec![format!("Bearer {ALPHA_RW}"), format!("Bearer {BETA_RW}")],
                tenant: vec![],
            },
        ),
        ("a long junk token", Creds::token(&"z".repeat(4000))),
    ];
    for (what, creds) in cases {
        let outcomes = every_rpc(&mut c, &creds, "plain").await;
        assert_all(&outcomes, Code::Unauthenticated, what);
        assert_no_leak(&outcomes, what);
        for (_, r) in &outcomes {
            // The message never echoes what was presented.
            let msg = r.as_ref().unwrap_err().message();
            assert!(
                !msg.contains(ALPHA_RW) && !msg.contains(&alpha_hash),
                "{msg}"
            );
        }
    }
    assert_eq!(snapshot(&mut c, ALPHA_RW).await, before);
}

async fn scopes_are_enforced_per_rpc(b: Backend) {
    let f = Fixture::start(b).await;
    let mut c = f.client();
    let before = seed_alpha(&mut c).await;

    // read-only: reads work and see alpha's data; every write is refused.
    let ro = every_rpc(&mut c, &Creds::token(ALPHA_RO), "plain").await;
    for (rpc, r) in &ro {
        let want = if READS.contains(rpc) {
            Code::Ok
        } else {
            Code::PermissionDenied
        };
        assert_eq!(code(r), want, "read-only token: {rpc}: {r:?}");
    }
    assert!(ro[0].1.as_ref().unwrap().contains(SECRET));
    assert_eq!(
        snapshot(&mut c, ALPHA_RW).await,
        before,
        "a read-only token changed data"
    );

    // admin only: neither reads nor writes.
    let admin = every_rpc(&mut c, &Creds::token(BETA_ADMIN), "plain").await;
    assert_all(&admin, Code::PermissionDenied, "admin-only token");

    // write-only: reads (and Get+refresh_ttl, a Get) are refused; writes land.
    let wo = every_rpc(&mut c, &Creds::token(ALPHA_WO), "plain").await;
    assert_no_leak(&wo, "write-only token");
    for (rpc, r) in &wo {
        if READS.contains(rpc) || *rpc == "Get+refresh_ttl" {
            assert_eq!(code(r), Code::PermissionDenied, "write-only token: {rpc}");
        } else {
            assert_ne!(
                code(r),
                Code::PermissionDenied,
                "write-only token: {rpc}: {r:?}"
            );
        }
    }
    // ...and they landed in alpha's namespace (Delete/BatchDelete ran last).
    let after = snapshot(&mut c, ALPHA_RW).await;
    assert!(!after.contains_key("plain") && !after.contains_key("only-alpha"));
    assert!(after.contains_key("plain#n"));
}

async fn page_tokens_of_another_tenant_or_prefix_are_invalid_argument(b: Backend) {
    let f = Fixture::start(b).await;
    let mut c = f.client();
    for i in 0..10 {
        c.put(Creds::token(ALPHA_RW).req(PutRequest {
            key: format!("page-{i}"),
            value: string(SECRET),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let list = |creds: &Creds, prefix: &str, token: &str| {
        creds.req(ListRequest {
            prefix: prefix.into(),
            page_size: 3,
            page_token: token.into(),
            include_values: true,
        })
    };
    let first = c
        .list(list(&Creds::token(ALPHA_RW), "page-", ""))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let cases = [
        (
            "beta replays it",
            Creds::token(BETA_RW),
            "page-",
            token.clone(),
        ),
        (
            "beta replays it, prefix \"\"",
            Creds::token(BETA_RW),
            "",
            token.clone(),
        ),
        (
            "alpha, another prefix",
            Creds::token(ALPHA_RW),
            "page",
            token.clone(),
        ),
        (
            "alpha, empty prefix",
            Creds::token(ALPHA_RW),
            "",
            token.clone(),
        ),
        (
            "garbage",
            Creds::token(ALPHA_RW),
            "page-",
            "!!not base64!!".into(),
        ),
        (
            "truncated",
            Creds::token(ALPHA_RW),
            "page-",
            token[..4].to_string(),
        ),
        ("huge", Creds::token(BETA_RW), "page-", "A".repeat(70_000)),
    ];
    for (what, creds, prefix, t) in cases {
        let err = c.list(list(&creds, prefix, &t)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(!err.message().contains(SECRET));
    }
    // The rightful owner still pages on. A page may be empty while more
    // follow (the work per page is bounded; on a Redis shared with other
    // tests SCAN meets many foreign keys): follow the tokens to a key.
    let mut token = token;
    let mut keys = Vec::new();
    while keys.is_empty() && !token.is_empty() {
        let page = c
            .list(list(&Creds::token(ALPHA_RW), "page-", &token))
            .await
            .unwrap()
            .into_inner();
        keys = page.keys;
        token = page.next_page_token;
    }
    assert!(!keys.is_empty());
}

/// The v1 (unsigned) binding anyone can compute: SHA-256(tenant NUL prefix).
fn craft_unsigned(tenant: &str, prefix: &str, cursor: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(prefix.as_bytes());
    let mut raw = vec![1u8];
    raw.extend_from_slice(&h.finalize()[..8]);
    raw.extend_from_slice(cursor);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Backend cursors an attacker would try: the memory store's "last storage
/// key" pointing into ALPHA, and Redis SCAN cursors with pending keys.
fn hostile_cursors() -> Vec<Vec<u8>> {
    let redis_cursor = |scan: Option<u64>, pending: &[&str]| {
        let mut out = match scan {
            Some(c) => {
                let mut v = vec![1u8];
                v.extend_from_slice(&c.to_le_bytes());
                v
            }
            None => vec![0u8],
        };
        for k in pending {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
        }
        out
    };
    vec![
        b"state:alpha:".to_vec(),
        b"state:alpha:page-0".to_vec(),
        b"state:alpha-b:page-".to_vec(),
        b"state:alpha-b:page-\xff".to_vec(),
        redis_cursor(Some(0), &[]),
        redis_cursor(Some(u64::MAX), &[]),
        redis_cursor(None, &["page-0", "only-alpha", "state:alpha:page-0"]),
        redis_cursor(Some(0), &["page-1"]),
        vec![0xff; 40],
        vec![],
    ]
}

async fn crafted_unsigned_page_tokens_never_widen_a_listing(b: Backend) {
    let f = Fixture::start(b).await;
    let mut c = f.client();
    let before = seed_alpha(&mut c).await;
    for cursor in hostile_cursors() {
        for (bound_to, prefix) in [(BETA, "page-"), (BETA, ""), (ALPHA, "page-")] {
            let t = craft_unsigned(bound_to, prefix, &cursor);
            let r = c
                .list(Creds::token(BETA_RW).req(ListRequest {
                    prefix: prefix.into(),
                    page_size: 100,
                    page_token: t,
                    include_values: true,
                }))
                .await;
            match r {
                Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{cursor:?}: {e:?}"),
                Ok(page) => {
                    let page = page.into_inner();
                    assert_ne!(bound_to, ALPHA, "a token bound to alpha was accepted");
                    // Beta holds no data: nothing can be listed with a value.
                    // (A crafted Redis cursor may echo key names the attacker
                    // chose itself; never another tenant's data.)
                    assert!(page.entries.is_empty(), "{cursor:?}: {page:?}");
                    assert!(!format!("{page:?}").contains(SECRET));
                }
            }
        }
    }
    assert_eq!(snapshot(&mut c, ALPHA_RW).await, before);
}

async fn signed_page_tokens_cannot_be_crafted_or_altered(b: Backend) {
    let f = Fixture::start_with(b, |cfg| {
        cfg.tenancy.page_token_secret = Some(state_service::config::Secret::new(
            "test-page-token-secret-0123456789",
        ));
    })
    .await;
    let mut c = f.client();
    let before = seed_alpha(&mut c).await;
    for cursor in hostile_cursors() {
        for (bound_to, prefix) in [(BETA, "page-"), (BETA, ""), (ALPHA, "page-")] {
            let err = c
                .list(Creds::token(BETA_RW).req(ListRequest {
                    prefix: prefix.into(),
                    page_size: 100,
                    page_token: craft_unsigned(bound_to, prefix, &cursor),
                    include_values: true,
                }))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
        }
    }
    // A token the server issued works for its owner, and not once altered.
    let first = c
        .list(Creds::token(ALPHA_RW).req(ListRequest {
            prefix: String::new(),
            page_size: 2,
            page_token: String::new(),
            include_values: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    let altered = URL_SAFE_NO_PAD.encode(&raw);
    let list = |token: &str| {
        Creds::token(ALPHA_RW).req(ListRequest {
            prefix: String::new(),
            page_size: 2,
            page_token: token.into(),
            include_values: false,
        })
    };
    assert!(c.list(list(&token)).await.is_ok());
    assert_eq!(
        c.list(list(&altered)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(snapshot(&mut c, ALPHA_RW).await, before);
}

async fn oversize_inputs_are_invalid_argument_naming_the_limit(b: Backend) {
    let f = Fixture::start_with(b, |cfg| {
        cfg.limits.max_key_bytes = 64;
        cfg.limits.max_value_bytes = 1024;
        cfg.limits.max_batch_items = 4;
        cfg.limits.max_transaction_ops = 4;
        cfg.limits.max_page_size = 10;
        cfg.limits.default_page_size = 10;
        cfg.limits.max_metadata_bytes = 2048;
    })
    .await;
    let mut c = f.client();
    // Alpha's data is seeded with a larger page than beta may ask for.
    for key in ["plain", "only-alpha"] {
        c.put(Creds::token(ALPHA_RW).req(PutRequest {
            key: key.into(),
            value: string(SECRET),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let before = snapshot(&mut c, ALPHA_RW).await;
    let beta = Creds::token(BETA_RW);
    let long_key = "k".repeat(65);
    let put = |key: &str, value: Option<pb::Value>| PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    };
    let item = |key: &str, value: Option<pb::Value>| BatchPutItem {
        key: key.into(),
        value,
        ..Default::default()
    };
    let mut checks: Vec<(&str, &str, Result<(), Status>)> = vec![];
    checks.push((
        "Get of a long key",
        "--max-key-bytes",
        c.get(beta.req(GetRequest {
            key: long_key.clone(),
            refresh_ttl: None,
        }))
        .await
        .map(|_| ()),
    ));
    checks.push((
        "Put of a big value",
        "--max-value-bytes",
        c.put(beta.req(put("k", string(&"v".repeat(2000)))))
            .await
            .map(|_| ()),
    ));
    checks.push((
        "List with a long prefix",
        "--max-key-bytes",
        c.list(beta.req(ListRequest {
            prefix: long_key.clone(),
            ..Default::default()
        }))
        .await
        .map(|_| ()),
    ));
    checks.push((
        "List with a big page",
        "--max-page-size",
        c.list(beta.req(ListRequest {
            page_size: 11,
            ..Default::default()
        }))
        .await
        .map(|_| ()),
    ));
    checks.push((
        "BatchGet of too many keys",
        "--max-batch-items",
        c.batch_get(beta.req(BatchGetRequest {
            keys: (0..5).map(|i| format!("k{i}")).collect(),
        }))
        .await
        .map(|_| ()),
    ));
    checks.push((
        "BatchDelete of too many keys",
        "--max-batch-items",
        c.batch_delete(beta.req(BatchDeleteRequest {
            keys: vec!["plain".into(); 5],
        }))
        .await
        .map(|_| ()),
    ));
    checks.push((
        "BatchPut with one oversize item",
        "--max-key-bytes",
        c.batch_put(beta.req(BatchPutRequest {
            items: vec![item("fine", v::int(1)), item(&long_key, v::int(2))],
        }))
        .await
        .map(|_| ()),
    ));
    checks.push((
        "Transact with too many ops",
        "--max-transaction-ops",
        c.transact(
            beta.req(TransactRequest {
                ops: (0..5)
                    .map(|i| TransactOp {
                        op: Some(Op::Put(put(&format!("k{i}"), v::int(i)))),
                    })
                    .collect(),
                ..Default::default()
            }),
        )
        .await
        .map(|_| ()),
    ));
    let mut padded = beta.req(GetRequest {
        key: "plain".into(),
        refresh_ttl: None,
    });
    padded
        .metadata_mut()
        .insert("x-padding", "p".repeat(3000).parse().unwrap());
    checks.push((
        "metadata over the limit",
        "--max-metadata-bytes",
        c.get(padded).await.map(|_| ()),
    ));
    checks.push((
        "an oversize token",
        "--max-metadata-bytes",
        c.get(Creds::token(&"t".repeat(3000)).req(GetRequest {
            key: "plain".into(),
            refresh_ttl: None,
        }))
        .await
        .map(|_| ()),
    ));
    for (what, flag, r) in checks {
        let err = r.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(flag), "{what}: {}", err.message());
    }
    // The refused BatchPut wrote nothing, not even its valid item.
    let got = c
        .get(beta.req(GetRequest {
            key: "fine".into(),
            refresh_ttl: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!got.found);
    assert_eq!(snapshot(&mut c, ALPHA_RW).await, before);
}
