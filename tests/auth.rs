//! Authentication around the edges of the isolation suite: what stays open
//! without a token (health, reflection), what refuses to start, and the
//! `hash-token` subcommand operators use to fill the tenants file.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::{Backend, TenantDef, TestServer, tenants_toml, v, venv_tool, with_token};
use state_service::{
    config::Config,
    pb::{GetRequest, PutRequest},
    server,
    tenancy::hash_token,
};
use tonic::Code;

const TOKEN: &str = "sst_auth-test-token-0123456789abcdefghijklmnopqrst";

fn tenants_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("tenants.toml");
    std::fs::write(
        &path,
        tenants_toml(&[TenantDef {
            id: "ops",
            tokens: &[(TOKEN, &["read", "write"])],
            extra: "",
        }]),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_need_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = tenants_file(&dir);
    // TestServer::start waits for SERVING through an unauthenticated health
    // Check: reaching this line is the health half of the proof.
    let s =
        TestServer::start_with(Backend::Memory, |cfg| cfg.tenancy.tenants_file = Some(path)).await;
    let grpcurl = |args: &[&str]| {
        Command::new(venv_tool("grpcurl"))
            .args(["-plaintext", "-max-time", "10"])
            .args(args)
            .output()
            .expect("grpcurl not found: run scripts/test.sh, which installs it into .venv")
    };
    let addr = s.addr.to_string();
    let list = grpcurl(&[&addr, "list"]);
    assert!(list.status.success(), "{list:?}");
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("stateservice.v1.StateService"), "{list}");
    assert!(list.contains("grpc.health.v1.Health"), "{list}");

    // The API itself refuses a call without a token...
    let denied = grpcurl(&[
        "-d",
        r#"{"key":"k"}"#,
        &addr,
        "stateservice.v1.StateService/Get",
    ]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Unauthenticated"),
        "{denied:?}"
    );
    // ...and answers with one.
    let auth = format!("authorization: Bearer {TOKEN}");
    let ok = grpcurl(&[
        "-H",
        &auth,
        "-d",
        r#"{"key":"k"}"#,
        &addr,
        "stateservice.v1.StateService/Get",
    ]);
    assert!(ok.status.success(), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_acts_as_its_tenant_and_the_header_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let path = tenants_file(&dir);
    let s =
        TestServer::start_with(Backend::Memory, |cfg| cfg.tenancy.tenants_file = Some(path)).await;
    let mut c = s.client();
    c.put(with_token(
        TOKEN,
        PutRequest {
            key: "k".into(),
            value: v::int(1),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let mut req = with_token(
        TOKEN,
        GetRequest {
            key: "k".into(),
            refresh_ttl: None,
        },
    );
    req.metadata_mut()
        .insert("x-tenant-id", "ops".parse().unwrap());
    assert!(c.get(req).await.unwrap().into_inner().found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tenants_file_refuses_to_start_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(
        &path,
        "[[tenants]]\nid = \"ops\"\n[[tenants.tokens]]\nsha256 = \"sst_pasted-plaintext-token\"\nscopes = [\"read\"]\n",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = Config::for_tests(listener.local_addr().unwrap(), None);
    cfg.tenancy.tenants_file = Some(path);
    let err = server::run(listener, cfg, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tenants[0].tokens[0].sha256"), "{err}");
    assert!(!err.contains("sst_pasted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tenants_file_refuses_to_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = Config::for_tests(listener.local_addr().unwrap(), None);
    cfg.tenancy.tenants_file = Some("/nonexistent/tenants.toml".into());
    let err = server::run(listener, cfg, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot read tenants file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_configured_the_header_is_trusted_as_before() {
    let s = TestServer::start(Backend::Memory).await;
    let mut c = s.client();
    let err = c
        .get(with_token(
            "anything",
            GetRequest {
                key: "k".into(),
                refresh_ttl: None,
            },
        ))
        .await;
    // Header mode ignores tokens entirely: no surprise UNAUTHENTICATED.
    assert!(err.is_ok(), "{err:?}");
    let r = c
        .get(common::as_tenant(
            "anyone",
            GetRequest {
                key: "k".into(),
                refresh_ttl: None,
            },
        ))
        .await;
    assert_ne!(r.map_err(|e| e.code()).err(), Some(Code::Unauthenticated));
}

fn hash_token_cmd(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_state-service"))
        .arg("hash-token")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn hash_token_prints_the_tenants_file_line_for_a_token_on_stdin() {
    let out = hash_token_cmd(&[], &format!("{TOKEN}\n"));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("sha256 = \"{}\"\n", hash_token(TOKEN)));
    assert!(!stdout.contains(TOKEN));
}

#[test]
fn hash_token_refuses_short_tokens() {
    let out = hash_token_cmd(&[], "password123\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn hash_token_generate_prints_a_new_token_and_its_hash() {
    let out = hash_token_cmd(&["--generate"], "");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout
        .lines()
        .find(|l| l.starts_with("sst_"))
        .expect("a token line");
    assert!(token.len() >= 40);
    assert!(
        stdout.contains(&format!("sha256 = \"{}\"", hash_token(token))),
        "{stdout}"
    );
}
