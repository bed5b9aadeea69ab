//! The smallest end-to-end check: the in-memory default answers Put then Get.

mod common;

use common::{Backend, TestServer, v};
use state_service::pb;

#[tokio::test]
async fn memory_default_serves_put_and_get() {
    let server = TestServer::start(Backend::Memory).await;
    let mut c = server.client();
    let put = c
        .put(pb::PutRequest {
            key: "k".into(),
            value: v::int(7),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = c
        .get(pb::GetRequest {
            key: "k".into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.entry.as_ref().unwrap().version, put.version);
    assert_eq!(got.entry.unwrap().value, v::int(7));
}

/// The binary's log to a pipe (a file, a log collector) carries no terminal
/// colour codes, in the default `pretty` format too.
#[tokio::test]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::{
        io::Read,
        process::{Command, Stdio},
    };
    let port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_state-service"));
    cmd.env_clear()
        .env("STATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATE_LOG_FORMAT", "pretty")
        .env("STATE_DRAIN_TIMEOUT", "1s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    common::kill_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("start state-service");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_health(
        addr,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
        std::time::Duration::from_secs(10),
    )
    .await;
    // SAFETY: kill(2) on our own child; SIGTERM makes it log its shutdown
    // and exit, closing the pipe.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = child.wait();
    assert!(log.contains("state-service listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}
