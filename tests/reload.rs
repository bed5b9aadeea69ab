//! The tenants file is reloaded without a restart: when its contents change
//! (polled) and on SIGHUP. A broken file keeps the last good configuration,
//! counted in `state_config_reloads_total{result="error"}`. Tests wait for
//! the observable effect (a token starts or stops working, a counter moves),
//! never for a fixed time.

mod common;

use std::{path::Path, time::Duration};

use common::{
    Backend, TenantDef, TestServer, free_port, tenants_toml, with_token, write_atomically,
};
use state_service::pb::GetRequest;
use tonic::Code;

const OLD: &str = "sst_reload-old-token-0123456789abcdefghijklmnopqrstu";
const NEW: &str = "sst_reload-new-token-0123456789abcdefghijklmnopqrstu";

fn file_with(path: &Path, token: &str) {
    write_atomically(
        path,
        &tenants_toml(&[TenantDef {
            id: "alpha",
            tokens: &[(token, &["read"])],
            extra: "",
        }]),
    );
}

async fn code(c: &mut common::Client, token: &str) -> Code {
    match c
        .get(with_token(
            token,
            GetRequest {
                key: "k".into(),
                refresh_ttl: None,
            },
        ))
        .await
    {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    }
}

async fn eventually(c: &mut common::Client, token: &str, want: Code) {
    common::eventually!(
        Duration::from_secs(10),
        format!("the token giving {want:?}"),
        code(c, token).await == want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_tenants_file_swaps_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    file_with(&path, OLD);
    let p = path.clone();
    let s = TestServer::start_with(Backend::Memory, |cfg| {
        cfg.tenancy.tenants_file = Some(p);
        cfg.tenancy.reload_interval = Duration::from_millis(50);
    })
    .await;
    let mut c = s.client();
    assert_eq!(code(&mut c, OLD).await, Code::Ok);
    assert_eq!(code(&mut c, NEW).await, Code::Unauthenticated);
    file_with(&path, NEW);
    eventually(&mut c, NEW, Code::Ok).await;
    assert_eq!(
        code(&mut c, OLD).await,
        Code::Unauthenticated,
        "old token not revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tenants_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    file_with(&path, OLD);
    let p = path.clone();
    // Polling is effectively off: only the signal can trigger the reload.
    let s = TestServer::start_with(Backend::Memory, |cfg| {
        cfg.tenancy.tenants_file = Some(p);
        cfg.tenancy.reload_interval = Duration::from_secs(3600);
    })
    .await;
    let mut c = s.client();
    file_with(&path, NEW);
    assert_eq!(code(&mut c, NEW).await, Code::Unauthenticated);
    // The server installed its SIGHUP handler before it started serving.
    // SAFETY: kill(2) on our own process.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    eventually(&mut c, NEW, Code::Ok).await;
    assert_eq!(code(&mut c, OLD).await, Code::Unauthenticated);
}

fn reload_errors(metrics_port: u16) -> f64 {
    common::scrape(metrics_port)
        .lines()
        .find(|l| {
            l.starts_with("state_config_reloads_total{")
                && l.contains("file=\"tenants\"")
                && l.contains("result=\"error\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tenants_file_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    file_with(&path, OLD);
    let metrics_port = free_port();
    let p = path.clone();
    let s = TestServer::start_with(Backend::Memory, |cfg| {
        cfg.tenancy.tenants_file = Some(p);
        cfg.tenancy.reload_interval = Duration::from_millis(50);
        cfg.server.metrics_listen = Some(format!("127.0.0.1:{metrics_port}").parse().unwrap());
    })
    .await;
    let mut c = s.client();
    // A file that mentions NEW but does not validate (unknown scope).
    write_atomically(
        &path,
        &format!(
            "[[tenants]]\nid = \"alpha\"\n[[tenants.tokens]]\nsha256 = \"{}\"\nscopes = [\"root\"]\n",
            state_service::tenancy::hash_token(NEW)
        ),
    );
    common::eventually!(
        Duration::from_secs(10),
        "trying the broken file",
        reload_errors(metrics_port) >= 1.0
    );
    assert_eq!(
        code(&mut c, OLD).await,
        Code::Ok,
        "the last good file was dropped"
    );
    assert_eq!(code(&mut c, NEW).await, Code::Unauthenticated);
    // A truncated (empty) file is refused the same way.
    write_atomically(&path, "");
    common::eventually!(
        Duration::from_secs(10),
        "trying the empty file",
        reload_errors(metrics_port) >= 2.0
    );
    assert_eq!(code(&mut c, OLD).await, Code::Ok);
    // Fixing the file applies it.
    file_with(&path, NEW);
    eventually(&mut c, NEW, Code::Ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_nothing_to_reload_does_not_stop_the_server() {
    let s = TestServer::start(Backend::Memory).await;
    // Without a handler, SIGHUP's default action would kill this process
    // before kill(2) returns (a signal a process sends itself is delivered
    // before the call returns).
    // SAFETY: kill(2) on our own process.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let mut c = s.client();
    c.get(GetRequest {
        key: "k".into(),
        refresh_ttl: None,
    })
    .await
    .unwrap();
}
