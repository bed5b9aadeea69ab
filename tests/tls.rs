//! TLS on both sides, with a PKI generated in each test (rcgen): the gRPC
//! server over rustls (plain TLS and mTLS, where the client certificate's CN
//! names the tenant), certificate reload, the `health` subcommand over TLS,
//! and a real `redis-server --tls-port` reached through `rediss://` with a
//! custom CA, an ACL user and password, and a client certificate.

mod common;

use std::{process::Command, time::Duration};

use common::{
    Backend, ClientTls, RedisServer, TenantDef, TestServer, free_port,
    pki::{Ca, CertKey},
    tenants_toml, v, with_token, write_atomically,
};
use state_service::pb::{GetRequest, PutRequest, state_service_client::StateServiceClient};
use tonic::Code;

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("state-service test CA"),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the CA and a server certificate; returns (cert, key, ca) paths.
    fn server_files(&self) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = self.ca.server().write(self.dir.path(), "server");
        (cert, key, self.ca.write(self.dir.path(), "ca"))
    }

    fn client_tls(&self, identity: Option<CertKey>) -> ClientTls {
        ClientTls {
            ca_pem: self.ca.pem(),
            identity,
        }
    }
}

fn put(key: &str, i: i64) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: v::int(i),
        ..Default::default()
    }
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.into(),
        refresh_ttl: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_round_trip_over_tls_with_a_generated_ca() {
    let pki = Pki::new();
    let (cert, key, _) = pki.server_files();
    let s = TestServer::start_tls(Backend::Memory, pki.client_tls(None), |cfg| {
        cfg.tls.tls_cert = Some(cert);
        cfg.tls.tls_key = Some(key);
    })
    .await;
    let mut c = s.client();
    let version = c.put(put("k", 42)).await.unwrap().into_inner().version;
    let got = c.get(get("k")).await.unwrap().into_inner();
    assert_eq!(got.entry.unwrap().version, version);

    // A client that does not trust this CA cannot complete the handshake...
    let stranger = ClientTls {
        ca_pem: Ca::new("another CA").pem(),
        identity: None,
    };
    assert!(
        common::endpoint(s.addr, Some(&stranger))
            .connect()
            .await
            .is_err()
    );
    // ...and a plaintext client gets no gRPC answer.
    if let Ok(ch) = common::endpoint(s.addr, None).connect().await {
        assert!(StateServiceClient::new(ch).get(get("k")).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_tenant() {
    let pki = Pki::new();
    let (cert, key, ca) = pki.server_files();
    let s = TestServer::start_tls(Backend::Memory, pki.client_tls(None), |cfg| {
        cfg.tls.tls_cert = Some(cert);
        cfg.tls.tls_key = Some(key);
        cfg.tls.tls_client_ca = Some(ca);
    })
    .await;
    // Health answered SERVING to the harness's certificate-less client.
    let mut alpha = s
        .client_with(Some(&pki.client_tls(Some(pki.ca.client("alpha")))))
        .await;
    let mut beta = s
        .client_with(Some(&pki.client_tls(Some(pki.ca.client("beta")))))
        .await;
    alpha.put(put("k", 1)).await.unwrap();
    assert!(alpha.get(get("k")).await.unwrap().into_inner().found);
    assert!(!beta.get(get("k")).await.unwrap().into_inner().found);

    // The certificate's tenant cannot be overridden by the header.
    let err = beta
        .get(common::as_tenant("alpha", get("k")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Without a certificate (TLS still works): no identity for the API.
    let mut anonymous = s.client();
    let err = anonymous
        .get(common::as_tenant("alpha", get("k")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A certificate from another CA is refused by the server. With TLS 1.3
    // the client learns it on first use rather than at connect; either way
    // no call succeeds.
    let rogue = pki.client_tls(Some(Ca::new("rogue CA").client("alpha")));
    if let Ok(ch) = common::endpoint(s.addr, Some(&rogue)).connect().await {
        let r = StateServiceClient::new(ch).get(get("k")).await;
        assert!(r.is_err(), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_get_only_the_scopes_the_tenants_file_grants_them() {
    const TOKEN: &str = "sst_tls-token-0123456789abcdefghijklmnopqrstuvwxyz";
    let pki = Pki::new();
    let (cert, key, ca) = pki.server_files();
    let tenants = pki.path("tenants.toml");
    std::fs::write(
        &tenants,
        tenants_toml(&[
            TenantDef {
                id: "alpha",
                tokens: &[(TOKEN, &["read", "write"])],
                extra: "certificate_scopes = [\"read\"]",
            },
            TenantDef {
                id: "beta",
                tokens: &[],
                extra: "",
            },
        ]),
    )
    .unwrap();
    let s = TestServer::start_tls(Backend::Memory, pki.client_tls(None), |cfg| {
        cfg.tls.tls_cert = Some(cert);
        cfg.tls.tls_key = Some(key);
        cfg.tls.tls_client_ca = Some(ca);
        cfg.tenancy.tenants_file = Some(tenants);
    })
    .await;
    // The token works over TLS (from a certificate-less client).
    s.client()
        .put(with_token(TOKEN, put("k", 7)))
        .await
        .unwrap();
    let mut alpha = s
        .client_with(Some(&pki.client_tls(Some(pki.ca.client("alpha")))))
        .await;
    assert!(alpha.get(get("k")).await.unwrap().into_inner().found);
    assert_eq!(
        alpha.put(put("k", 8)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // beta lists no certificate scopes: its certificate authenticates nobody.
    let mut beta = s
        .client_with(Some(&pki.client_tls(Some(pki.ca.client("beta")))))
        .await;
    assert_eq!(
        beta.get(get("k")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // A CN that is no tenant id at all.
    let mut odd = s
        .client_with(Some(&pki.client_tls(Some(pki.ca.client("alpha:beta")))))
        .await;
    assert_eq!(
        odd.get(get("k")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_certificate_is_picked_up_without_a_restart() {
    let pki = Pki::new();
    let (cert, key, _) = pki.server_files();
    let s = TestServer::start_tls(Backend::Memory, pki.client_tls(None), |cfg| {
        cfg.tls.tls_cert = Some(cert.clone());
        cfg.tls.tls_key = Some(key.clone());
        cfg.tenancy.reload_interval = Duration::from_millis(50);
    })
    .await;
    let next_ca = Ca::new("next CA");
    let next = next_ca.server();
    // Key first, then certificate: each poll sees either the old pair, a
    // mismatched pair (refused, old kept) or the new pair.
    write_atomically(&key, &next.key_pem);
    write_atomically(&cert, &next.cert_pem);
    let trusts_next = ClientTls {
        ca_pem: next_ca.pem(),
        identity: None,
    };
    common::eventually!(
        Duration::from_secs(10),
        "serving the new certificate",
        match common::endpoint(s.addr, Some(&trusts_next)).connect().await {
            Ok(ch) => StateServiceClient::new(ch).get(get("k")).await.is_ok(),
            Err(_) => false,
        }
    );
    // New connections trusting only the old CA now fail.
    assert!(
        common::endpoint(s.addr, Some(&pki.client_tls(None)))
            .connect()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_speaks_tls() {
    let pki = Pki::new();
    let (cert, key, ca) = pki.server_files();
    let s = TestServer::start_tls(Backend::Memory, pki.client_tls(None), |cfg| {
        cfg.tls.tls_cert = Some(cert);
        cfg.tls.tls_key = Some(key);
    })
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_state-service"))
        .args([
            "health",
            "--addr",
            &s.addr.to_string(),
            "--tls-domain",
            "localhost",
        ])
        .arg("--ca-file")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
}

/// A redis-server that accepts only TLS, on a free port, with certificates
/// from `pki`.
fn tls_redis(pki: &Pki, extra: &[&str]) -> RedisServer {
    let (cert, key) = pki.ca.server().write(pki.dir.path(), "redis");
    let ca = pki.ca.write(pki.dir.path(), "redis-ca");
    let port = free_port();
    let port_s = port.to_string();
    let mut args: Vec<&str> = vec![
        // The harness passes `--port <port>` first; a later `--port 0`
        // closes the plaintext port so only TLS is served.
        "--port",
        "0",
        "--tls-port",
        &port_s,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    RedisServer::start_on(port, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_custom_ca() {
    let pki = Pki::new();
    let redis = tls_redis(&pki, &["--tls-auth-clients", "no"]);
    let ca = pki.path("redis-ca.crt");
    let url = format!("rediss://localhost:{}", redis.port);
    let s = TestServer::start_on(Some(url), None, |cfg| {
        cfg.redis.redis_ca_file = Some(ca);
    })
    .await;
    let mut c = s.client();
    let version = c.put(put("k", 5)).await.unwrap().into_inner().version;
    let got = c.get(get("k")).await.unwrap().into_inner();
    assert_eq!(got.entry.unwrap().version, version);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_acl_user_password_and_client_certificate() {
    let pki = Pki::new();
    let redis = tls_redis(
        &pki,
        &[
            "--tls-auth-clients",
            "yes",
            "--user",
            "default",
            "off",
            "--user",
            "state",
            "on",
            ">tls-s3cret-pw",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let ca = pki.path("redis-ca.crt");
    let (client_cert, client_key) = pki.ca.client("state-service").write(pki.dir.path(), "rc");
    let pw_file = pki.path("redis-password");
    std::fs::write(&pw_file, "tls-s3cret-pw\n").unwrap();
    let url = format!("rediss://localhost:{}", redis.port);
    let s = TestServer::start_on(Some(url.clone()), None, |cfg| {
        cfg.redis.redis_ca_file = Some(ca.clone());
        cfg.redis.redis_client_cert = Some(client_cert.clone());
        cfg.redis.redis_client_key = Some(client_key.clone());
        cfg.redis.redis_username = Some("state".into());
        cfg.redis.redis_password_file = Some(pw_file.clone());
    })
    .await;
    let mut c = s.client();
    c.put(put("k", 9)).await.unwrap();
    assert!(c.get(get("k")).await.unwrap().into_inner().found);
    drop(s);

    // Without the client certificate, Redis refuses the handshake: the
    // service reports UNAVAILABLE and never echoes the password.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = state_service::config::Config::for_tests(addr, Some(url));
    cfg.redis.redis_ca_file = Some(ca);
    cfg.redis.redis_username = Some("state".into());
    cfg.redis.redis_password_file = Some(pw_file);
    cfg.server.health_check_interval = Duration::from_millis(100);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(state_service::server::run(listener, cfg, async move {
        let _ = rx.await;
    }));
    let mut c = common::connect(addr).await;
    let err = c.get(get("k")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains("tls-s3cret-pw"),
        "{}",
        err.message()
    );
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
    drop(redis);
}
