//! The deployment artifacts checked against the binary they ship: the Helm
//! chart (linted and rendered through the real Helm library by
//! `scripts/helm_check.py`), the Dockerfile's final stage (its ENV, EXPOSE,
//! ENTRYPOINT and HEALTHCHECK, exercised by running the binary exactly as the
//! container would, since there is no Docker engine here) and the operator's
//! guide (every flag documented). A renamed flag breaks these tests, not a
//! production rollout.

mod common;

use std::{
    collections::BTreeSet,
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{kill_with_parent, venv_tool, wait_health};
use tonic_health::pb::health_check_response::ServingStatus;

const BIN: &str = env!("CARGO_BIN_EXE_state-service");
const ALL_FEATURES: &str = "helm/state-service/ci/all-features-values.yaml";

/// Flags the binary accepts but hides from `--help`, with their variables.
/// None at present (`--tenants-file` became a documented flag with
/// authentication); the list stays for the next reserved flag.
const HIDDEN_FLAGS: &[(&str, &str)] = &[];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `state-service <args>` output, with no `STATE_*` variables from the
/// caller's environment (clap prints their values into `--help`).
fn run_binary(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STATE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run state-service");
    assert!(out.status.success(), "state-service {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// Help of the server and of every subcommand.
fn all_help() -> String {
    run_binary(&["--help"]) + &run_binary(&["health", "--help"])
}

/// The `STATE_*` variables the binary reads, as `--help` lists them
/// (`[env: STATE_LISTEN=]`).
fn accepted_env_names() -> BTreeSet<String> {
    let help = all_help();
    // `[env: NAME=value]`, or `[env: NAME]` for hide_env_values.
    let mut names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    for (env, flag) in HIDDEN_FLAGS {
        // Hidden flags are missing from --help; clap still rejects a flag it
        // does not know, so at least prove the flag exists.
        let out = Command::new(BIN)
            .args([flag, "x", "--version"])
            .output()
            .expect("run state-service");
        assert!(
            out.status.success(),
            "{flag} is no longer accepted: {out:?}"
        );
        names.insert(env.to_string());
    }
    assert!(
        names.contains("STATE_LISTEN"),
        "no [env: ...] found in --help:\n{help}"
    );
    names
}

/// The `--long` flags `--help` lists, without --help and --version.
fn documented_flags() -> BTreeSet<String> {
    all_help()
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|f| !f.is_empty() && f != "help" && f != "version")
        .map(|f| format!("--{f}"))
        .collect()
}

fn assert_env_names_accepted(names: impl IntoIterator<Item = String>, source: &str) {
    let accepted = accepted_env_names();
    let unknown: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("STATE_") && !accepted.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "{source} sets {unknown:?}, which `state-service --help` does not list; accepted: {accepted:?}"
    );
}

// ---------------------------------------------------------------- Helm ----

/// Runs scripts/helm_check.py (lint + render + chart invariants) for one
/// value set and returns its JSON report.
fn helm_check(values: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(venv_tool("python"));
    cmd.current_dir(repo()).arg("scripts/helm_check.py");
    if let Some(v) = values {
        cmd.args(["--values", v]);
    }
    let out = cmd.output().expect(
        "cannot run .venv/bin/python: run scripts/test.sh, which creates the venv with helm-sdkpy",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm_check.py {values:?} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn strings(report: &serde_json::Value, field: &str) -> Vec<String> {
    report[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {report}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn helm_chart_lints_and_renders_with_default_values() {
    let report = helm_check(None);
    let kinds = strings(&report, "kinds");
    assert_eq!(
        kinds,
        ["Deployment", "Service", "ServiceAccount"],
        "{report}"
    );
    assert_eq!(report["notes"], true, "NOTES.txt lacks grpcurl: {report}");
}

#[test]
fn helm_chart_lints_and_renders_with_every_optional_feature() {
    let report = helm_check(Some(ALL_FEATURES));
    let kinds: BTreeSet<String> = strings(&report, "kinds").into_iter().collect();
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(kind), "{kind} not rendered: {report}");
    }
    let env = strings(&report, "env");
    for name in [
        "STATE_REDIS_URL",
        "STATE_REDIS_PASSWORD",
        "STATE_TENANTS_FILE",
        // Three replicas: the chart shares one page-token secret among them.
        "STATE_PAGE_TOKEN_SECRET",
        "STATE_TLS_CERT",
        "STATE_TLS_KEY",
        "STATE_TLS_CLIENT_CA",
        "STATE_REDIS_CA_FILE",
        "STATE_REDIS_CLIENT_CERT",
        "STATE_REDIS_CLIENT_KEY",
    ] {
        assert!(env.iter().any(|e| e == name), "{name} not set: {report}");
    }
}

/// The chart's defaults, then every value set under `helm/state-service/ci/`.
fn value_sets() -> Vec<Option<String>> {
    let mut files: Vec<String> = fs::read_dir(repo().join("helm/state-service/ci"))
        .expect("helm/state-service/ci")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f == ALL_FEATURES), "{files:?}");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

#[test]
fn helm_chart_env_names_are_ones_the_binary_accepts() {
    for values in value_sets() {
        let values = values.as_deref();
        let report = helm_check(values);
        assert_env_names_accepted(
            strings(&report, "env"),
            &format!("the Deployment rendered with {values:?}"),
        );
    }
}

// ----------------------------------------------------------- Dockerfile ----

/// The instructions of the Dockerfile's final stage that shape the running
/// container.
#[derive(Debug, Default)]
struct FinalStage {
    env: Vec<(String, String)>,
    expose: Vec<u16>,
    entrypoint: Vec<String>,
    healthcheck: Vec<String>,
    user: Option<String>,
}

/// Logical instructions: comments dropped, `\` continuations joined.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, rest) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// A JSON string array (exec form), e.g. `["/bin/x", "health"]`.
fn exec_form(what: &str, s: &str) -> Vec<String> {
    serde_json::from_str(s.trim())
        .unwrap_or_else(|e| panic!("{what} must be in exec (JSON array) form, got {s:?}: {e}"))
}

/// `ENV A=1 B="x y"` (or the legacy `ENV A 1`).
fn parse_env(rest: &str) -> Vec<(String, String)> {
    assert!(
        !rest.contains('$'),
        "ENV with substitutions is not supported here: {rest}"
    );
    if !rest.split_whitespace().next().unwrap_or("").contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).expect("ENV key value");
        return vec![(k.to_string(), v.trim().to_string())];
    }
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('='), "ENV {rest}");
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        pairs.push((key, value));
    }
    pairs
}

fn final_stage() -> FinalStage {
    let text = fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
    let all = instructions(&text);
    let last_from = all
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("Dockerfile has no FROM");
    let mut stage = FinalStage::default();
    for (keyword, rest) in &all[last_from + 1..] {
        match keyword.as_str() {
            "ENV" => stage.env.extend(parse_env(rest)),
            "EXPOSE" => stage.expose.extend(rest.split_whitespace().map(|p| {
                let port = p.strip_suffix("/tcp").unwrap_or(p);
                port.parse::<u16>()
                    .unwrap_or_else(|_| panic!("EXPOSE {p}: only TCP port numbers expected"))
            })),
            "ENTRYPOINT" => stage.entrypoint = exec_form("ENTRYPOINT", rest),
            "CMD" => panic!("the final stage has a CMD ({rest}); the test assumes none"),
            "USER" => stage.user = Some(rest.clone()),
            "HEALTHCHECK" => {
                let (_, cmd) = rest
                    .split_once("CMD ")
                    .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {rest}"));
                stage.healthcheck = exec_form("HEALTHCHECK CMD", cmd);
            }
            _ => {}
        }
    }
    stage
}

impl FinalStage {
    fn env(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the Dockerfile sets no {name}"))
    }
}

#[test]
fn dockerfile_final_stage_runs_the_binary_as_a_non_root_user() {
    let stage = final_stage();
    assert_eq!(stage.entrypoint.len(), 1, "{stage:?}");
    assert!(stage.entrypoint[0].ends_with("/state-service"), "{stage:?}");
    assert_eq!(
        stage.healthcheck.first(),
        stage.entrypoint.first(),
        "HEALTHCHECK must use the image's own binary: {stage:?}"
    );
    let user = stage.user.as_deref().expect("the final stage sets no USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER must be a numeric non-root uid (runAsNonRoot verifies it), got {user}"
    );
}

#[test]
fn dockerfile_env_names_are_ones_the_binary_accepts() {
    let stage = final_stage();
    assert!(!stage.env.is_empty());
    assert_env_names_accepted(stage.env.iter().map(|(k, _)| k.clone()), "the Dockerfile");
}

/// Port of a `host:port` listen address.
fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .port()
}

/// Waits for the child to exit, killing it after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for state-service") {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("state-service did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(common::POLL_INTERVAL);
    }
}

/// One plain HTTP/1.1 GET; returns (status line, headers + body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read HTTP response");
    let (status, rest) = response.split_once("\r\n").unwrap_or((&response, ""));
    (status.to_string(), rest.to_string())
}

/// The child, killed if the test fails before SIGTERM; its log is printed on
/// failure.
struct Container {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- state-service log ---\n{log}");
        }
    }
}

/// `docker run` without Docker: the binary with exactly the Dockerfile's ENV
/// (and nothing inherited), reached on every EXPOSEd port, probed with the
/// HEALTHCHECK command, stopped with SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_started_with_the_dockerfile_env_serves_every_exposed_port() {
    let stage = final_stage();
    let grpc_port = port_of(stage.env("STATE_LISTEN"));
    let metrics_port = port_of(stage.env("STATE_METRICS_LISTEN"));
    let exposed: BTreeSet<u16> = stage.expose.iter().copied().collect();
    assert_eq!(
        exposed,
        BTreeSet::from([grpc_port, metrics_port]),
        "EXPOSE must list exactly the gRPC and metrics ports the ENV configures"
    );
    for port in &exposed {
        // The container has its own network namespace; this test shares the
        // host's, so a fixed port can be taken. Say so rather than probing
        // somebody else's server.
        if let Err(e) = TcpListener::bind(("0.0.0.0", *port)) {
            panic!(
                "port {port} (EXPOSEd by the Dockerfile) is busy on this machine ({e}); \
                 stop whatever listens there and rerun"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("state-service.log");
    let log_file = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(&stage.entrypoint[1..])
        .env_clear()
        .envs(stage.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    kill_with_parent(&mut cmd);
    let mut container = Container {
        child: cmd.spawn().expect("start state-service"),
        log,
        _dir: dir,
    };

    // gRPC port: grpc.health.v1 answers SERVING (in-memory backend: no Redis).
    common::wait_for_port(grpc_port, Duration::from_secs(10));
    wait_health(
        SocketAddr::from(([127, 0, 0, 1], grpc_port)),
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;

    // Metrics port: Prometheus text exposition.
    common::wait_for_port(metrics_port, Duration::from_secs(10));
    let (status, body) = http_get(metrics_port, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(
        body.lines().any(|l| l.starts_with("# TYPE state_")),
        "no state_* metric families in /metrics:\n{body}"
    );
    assert!(body.contains("state_build_info"), "{body}");

    // HEALTHCHECK, as Docker runs it: inside the container, with its env.
    let mut health = stage.healthcheck.clone();
    health[0] = BIN.to_string();
    let out = Command::new(&health[0])
        .args(&health[1..])
        .env_clear()
        .envs(stage.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the HEALTHCHECK command");
    assert!(
        out.status.success(),
        "HEALTHCHECK {health:?} exited {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // `docker stop`: SIGTERM, graceful drain, exit 0.
    let pid = container.child.id() as i32;
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut container.child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
}

// ------------------------------------------------------------------ docs ----

#[test]
fn operations_guide_documents_every_flag_and_env_var() {
    let guide = fs::read_to_string(repo().join("docs/operations.md")).expect("docs/operations.md");
    let flags = documented_flags();
    assert!(
        flags.contains("--listen") && flags.contains("--addr"),
        "{flags:?}"
    );
    let envs = accepted_env_names();
    let missing: Vec<&String> = flags
        .iter()
        .chain(envs.iter())
        .filter(|name| !guide.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not mention {missing:?} (see `state-service --help`)"
    );
}

// ------------------------------------------------------- Docker context ----

/// Whether `.dockerignore` lets `path` (relative, `/`-separated) into the
/// build context: the last pattern that matches the path or one of its
/// parent directories decides, `!` re-includes (Docker's rules, with `*`
/// never crossing a `/`).
fn in_docker_context(rules: &[(bool, String)], path: &str) -> bool {
    fn glob(pattern: &str, text: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == text,
            Some((head, tail)) => {
                let Some(rest) = text.strip_prefix(head) else {
                    return false;
                };
                (0..=rest.len())
                    .take_while(|&i| !rest[..i].contains('/'))
                    .any(|i| glob(tail, &rest[i..]))
            }
        }
    }
    let mut included = true;
    let parts: Vec<&str> = path.split('/').collect();
    for (exclude, pattern) in rules {
        let pattern = pattern.trim_end_matches('/');
        let matches = (1..=parts.len()).any(|n| glob(pattern, &parts[..n].join("/")));
        if matches {
            included = !exclude;
        }
    }
    included
}

/// `docker build` needs every file cargo reads to resolve the workspace:
/// each member's manifest, build script and the files of its explicitly
/// declared targets (cargo refuses a manifest naming a missing example).
/// The image cannot be built here (no Docker engine), so the build context
/// is checked against what cargo needs instead.
#[test]
fn the_docker_context_holds_every_file_cargo_needs() {
    let ignore = fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let rules: Vec<(bool, String)> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (false, p.to_string()),
            None => (true, l.to_string()),
        })
        .collect();
    let root: toml::Table = fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members: Vec<String> = root["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let mut needed = vec!["Cargo.lock".to_string()];
    for member in &members {
        let dir = if member == "." {
            String::new()
        } else {
            format!("{member}/")
        };
        let manifest: toml::Table = fs::read_to_string(repo().join(format!("{dir}Cargo.toml")))
            .unwrap()
            .parse()
            .unwrap();
        needed.push(format!("{dir}Cargo.toml"));
        if repo().join(format!("{dir}build.rs")).exists() {
            needed.push(format!("{dir}build.rs"));
        }
        let sources: Vec<String> = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| format!("{dir}{f}"))
            .filter(|f| repo().join(f).exists())
            .collect();
        assert!(
            !sources.is_empty(),
            "{member} has neither src/lib.rs nor src/main.rs"
        );
        needed.extend(sources);
        for (kind, folder) in [
            ("example", "examples"),
            ("bench", "benches"),
            ("test", "tests"),
            ("bin", "src/bin"),
        ] {
            for target in manifest
                .get(kind)
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
            {
                let path = match target.get("path").and_then(|p| p.as_str()) {
                    Some(p) => p.to_string(),
                    None => format!("{folder}/{}.rs", target["name"].as_str().unwrap()),
                };
                needed.push(format!("{dir}{path}"));
            }
        }
    }
    let missing: Vec<&String> = needed
        .iter()
        .filter(|p| !repo().join(p).exists() || !in_docker_context(&rules, p))
        .collect();
    assert!(
        missing.is_empty(),
        "the Docker build context (.dockerignore) lacks files cargo needs: {missing:?}"
    );
}
