//! The cross-language proof of issue 13: the Python, Node and Rust clients
//! against the real service binary (a subprocess, so it can be killed and
//! restarted on the same port) and a private redis-server.
//!
//! - a word count over a fixed corpus split across 3 Python, 2 Node and 1
//!   Rust worker processes at once is exact;
//! - every Value kind written in one language reads back identically in the
//!   other two;
//! - each language raises its typed errors for a lost CAS, create-only on an
//!   existing key, an increment of a non-integer and an oversized value;
//! - the word count stays exact through a service crash and a Redis crash,
//!   and the workers recover on their own;
//! - each client's own unit tests and runnable examples pass.
//!
//! The binary has its own harness (libtest-mimic) so that, started with
//! `STATE_CLIENTS_WORKER` set, it is the Rust word-count worker instead.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant, SystemTime},
};

use futures::TryStreamExt;
use libtest_mimic::{Arguments, Trial};
use serde_json::{Value as Json, json};
use state_client::{
    ClientConfig, ErrorKind, RetryPolicy, StateClient, TlsOptions, Value, WriteOptions,
};

use common::{RedisServer, free_port, kill_with_parent, venv_tool, wait_for_port};
use rust_rule_engine::types::Value as RuleValue;

/// Set (to the worker's JSON config) when this binary runs as a worker.
const WORKER_ENV: &str = "STATE_CLIENTS_WORKER";
/// Words per worker; 6 workers.
const WORDS_PER_WORKER: usize = 3000;
/// Words between two checkpoints.
const BATCH: usize = 50;
/// How long a component stays down in the restart test.
const OUTAGE: Duration = Duration::from_secs(2);
/// The bound the restart test asserts: every worker commits a checkpoint
/// within this long after the crashed component is back. The clients retry
/// for up to 30 s (RetryPolicy::max_elapsed) and reconnect within 2 s.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    if let Ok(cfg) = std::env::var(WORKER_ENV) {
        return rust_worker(&cfg);
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("python_client_unit_tests", || {
            python_unit_tests();
            Ok(())
        }),
        Trial::test("node_client_unit_tests", || {
            node_unit_tests();
            Ok(())
        }),
        Trial::test(
            "wordcount_across_six_workers_in_three_languages_is_exact",
            || {
                wordcount_is_exact();
                Ok(())
            },
        ),
        Trial::test(
            "values_written_in_each_language_read_back_identically_in_the_others",
            || {
                value_matrix();
                Ok(())
            },
        ),
        Trial::test(
            "typed_errors_for_lost_cas_create_only_and_non_integer_in_each_language",
            || {
                typed_errors_for_conditions();
                Ok(())
            },
        ),
        Trial::test(
            "typed_error_for_an_oversized_value_in_each_language",
            || {
                typed_error_for_an_oversized_value();
                Ok(())
            },
        ),
        Trial::test(
            "wordcount_stays_exact_through_service_and_redis_crashes",
            || {
                wordcount_survives_restarts();
                Ok(())
            },
        ),
        Trial::test(
            "tls_client_certificates_and_tokens_in_each_language",
            || {
                tls_and_credentials();
                Ok(())
            },
        ),
        Trial::test(
            "rule_engine_state_store_keeps_its_state_in_the_service",
            || {
                rule_engine_state_store();
                Ok(())
            },
        ),
        Trial::test("examples_run_in_each_language", || {
            examples_run();
            Ok(())
        }),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

// ---------------------------------------------------------------------------
// The service as a subprocess

/// The real `state-service` binary on a fixed port, so a restart keeps the
/// address the clients use.
struct Service {
    port: u16,
    redis_url: String,
    extra: Vec<String>,
    /// How to reach it to see that it serves.
    probe: ClientConfig,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Service {
    fn start(redis_url: &str, extra: &[&str]) -> Self {
        Self::start_probed(redis_url, extra, ClientConfig::new)
    }

    /// `probe` builds, from the address, a client config that may read.
    fn start_probed(
        redis_url: &str,
        extra: &[&str],
        probe: impl FnOnce(String) -> ClientConfig,
    ) -> Self {
        let port = free_port();
        let mut s = Service {
            port,
            redis_url: redis_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            probe: probe(format!("127.0.0.1:{port}")),
            child: None,
            log: tempfile::NamedTempFile::new().expect("log file"),
        };
        s.spawn();
        s
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = self.log.reopen().expect("reopen log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_state-service"));
        cmd.args(["--listen", &self.addr(), "--redis-url", &self.redis_url])
            .args(["--health-check-interval", "200ms", "--log-format", "json"])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start state-service"));
        wait_for_port(self.port, Duration::from_secs(20));
        wait_serving(self.probe.clone(), Duration::from_secs(20));
    }

    /// SIGKILL: a crash, in-flight requests and all.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls a Get until the service answers it (the service reports SERVING only
/// once Redis has answered).
fn wait_serving(probe: ClientConfig, timeout: Duration) {
    let rt = runtime();
    rt.block_on(async {
        let client = StateClient::connect(
            probe
                .timeout(Duration::from_secs(2))
                .retry(RetryPolicy::none()),
        )
        .await
        .expect("client");
        let start = Instant::now();
        loop {
            match client.get("health-probe").await {
                Ok(_) => return,
                Err(_) if start.elapsed() < timeout => {
                    tokio::time::sleep(common::POLL_INTERVAL).await;
                }
                Err(e) => panic!("service not serving after {timeout:?}: {e}"),
            }
        }
    });
}

/// A Rust client on `rt`: its connection runs on the runtime that created it.
fn rust_client(rt: &tokio::runtime::Runtime, addr: &str, tenant: &str) -> StateClient {
    rt.block_on(async {
        StateClient::connect(ClientConfig::new(addr).tenant(tenant))
            .await
            .expect("client")
    })
}

// ---------------------------------------------------------------------------
// Worker processes

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    Python,
    Node,
    Rust,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails early, with what to run, when a language's toolchain or build is
/// missing or stale (scripts/test.sh prepares both).
fn require_toolchains() {
    let py = Command::new(venv_tool("python"))
        .args(["-c", "import grpc, google.protobuf, pytest"])
        .status();
    assert!(
        matches!(py, Ok(s) if s.success()),
        "the Python client tests need .venv with grpcio, protobuf and pytest: run scripts/test.sh"
    );
    let node = repo().join("clients/node");
    let built = node.join("dist/index.js");
    assert!(
        built.exists() && node.join("node_modules").exists(),
        "the Node client is not built: run `npm ci && npm run build` in clients/node (scripts/test.sh does)"
    );
    let built_at = mtime(&built);
    let newest_src = std::fs::read_dir(node.join("src"))
        .expect("clients/node/src")
        .filter_map(|e| e.ok())
        .map(|e| mtime(&e.path()))
        .chain([mtime(&repo().join("proto/stateservice/v1/state.proto"))])
        .max()
        .expect("sources");
    assert!(
        built_at >= newest_src,
        "clients/node/dist is older than its sources: run `npm run build` in clients/node"
    );
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn worker_command(lang: Lang, cfg: &Json) -> Command {
    let mut cmd = match lang {
        Lang::Python => {
            let mut c = Command::new(venv_tool("python"));
            // The checkout's source, not whatever version is installed.
            c.env("PYTHONPATH", repo().join("clients/python/src"))
                .arg(repo().join("tests/polyglot/worker.py"))
                .arg(cfg.to_string());
            c
        }
        Lang::Node => {
            let mut c = Command::new("node");
            c.arg(repo().join("tests/polyglot/worker.js"))
                .arg(cfg.to_string());
            c
        }
        Lang::Rust => {
            let mut c = Command::new(std::env::current_exe().expect("current exe"));
            c.env(WORKER_ENV, cfg.to_string());
            c
        }
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    kill_with_parent(&mut cmd);
    cmd
}

struct Worker {
    name: String,
    child: Child,
}

fn spawn_worker(lang: Lang, cfg: &Json) -> Worker {
    let child = worker_command(lang, cfg)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {lang:?} worker: {e}"));
    Worker {
        name: format!("{lang:?} {}", cfg["role"]),
        child,
    }
}

/// Waits for a worker and returns its JSON result line; panics with its
/// output when it failed.
fn finish(w: Worker) -> Json {
    let out = w.child.wait_with_output().expect("wait for worker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        w.name,
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{}: bad result line {last:?}: {e}\nstderr: {stderr}",
            w.name
        )
    })
}

/// Panics with a worker's output as soon as one has failed (rather than
/// waiting for progress it will never make).
fn assert_alive(workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        if let Ok(Some(status)) = w.child.try_wait()
            && !status.success()
        {
            use std::io::Read;
            let (mut out, mut err) = (String::new(), String::new());
            if let Some(o) = w.child.stdout.as_mut() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(e) = w.child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "{} failed ({status}):\nstdout: {out}\nstderr: {err}",
                w.name
            );
        }
    }
}

fn run_worker(lang: Lang, cfg: Json) -> Json {
    finish(spawn_worker(lang, &cfg))
}

// ---------------------------------------------------------------------------
// Unit tests of the Python and Node clients

fn python_unit_tests() {
    require_toolchains();
    let out = Command::new(venv_tool("python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(repo().join("clients/python"))
        .output()
        .expect("run pytest");
    assert!(
        out.status.success(),
        "pytest failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node_unit_tests() {
    require_toolchains();
    let out = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(repo().join("clients/node"))
        .output()
        .expect("run node --test");
    assert!(
        out.status.success(),
        "node --test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Word count

/// A fixed corpus: a skewed (Zipf-like) draw from a vocabulary that includes
/// non-ASCII words, from a fixed-seed generator, so every run counts the same
/// text.
fn corpus(words: usize) -> Vec<String> {
    const SYLLABLES: [&str; 12] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu", "ha", "je",
    ];
    let mut vocab: Vec<String> = ["naïve", "über", "日本", "ß", "x:y", "{tag}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for a in SYLLABLES {
        for b in SYLLABLES {
            vocab.push(format!("{a}{b}"));
        }
    }
    let mut state: u64 = 0x5eed_c0de;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..words)
        .map(|_| {
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            vocab[((u * u * u) * vocab.len() as f64) as usize % vocab.len()].clone()
        })
        .collect()
}

struct WordCount {
    dir: tempfile::TempDir,
    workers: Vec<(Lang, Json)>,
    expected: BTreeMap<String, i64>,
}

/// Writes the corpus' six shards and the worker configs: 3 Python (one of
/// them asyncio), 2 Node, 1 Rust.
fn word_count_setup(addr: &str) -> WordCount {
    let dir = tempfile::tempdir().expect("temp dir");
    let langs = [
        ("py-1", Lang::Python, false),
        ("py-2", Lang::Python, false),
        ("py-3-async", Lang::Python, true),
        ("node-1", Lang::Node, false),
        ("node-2", Lang::Node, false),
        ("rust-1", Lang::Rust, false),
    ];
    let words = corpus(WORDS_PER_WORKER * langs.len());
    let mut expected = BTreeMap::new();
    for w in &words {
        *expected.entry(w.clone()).or_insert(0) += 1;
    }
    let workers = langs
        .iter()
        .zip(words.chunks(WORDS_PER_WORKER))
        .map(|((name, lang, is_async), shard)| {
            let path = dir.path().join(format!("{name}.txt"));
            let mut f = std::fs::File::create(&path).expect("shard");
            writeln!(f, "{}", shard.join("\n")).expect("write shard");
            let cfg = json!({
                "role": "wordcount", "addr": addr, "tenant": "wc", "worker": name,
                "shard": path, "prefix": "", "batch": BATCH, "session_ttl_s": 600,
                "async": is_async,
            });
            (*lang, cfg)
        })
        .collect();
    WordCount {
        dir,
        workers,
        expected,
    }
}

/// Reads back the counts with `list` and checks them, the checkpoints and
/// the session keys.
fn check_word_count(addr: &str, wc: &WordCount) {
    let rt = runtime();
    let client = rust_client(&rt, addr, "wc");
    let entries: Vec<_> = rt
        .block_on(client.list_entries("count:").try_collect())
        .expect("list counts");
    let got: BTreeMap<String, i64> = entries
        .into_iter()
        .map(|e| {
            let n = e.value.as_int().expect("an int count");
            (e.key["count:".len()..].to_string(), n)
        })
        .collect();
    if got != wc.expected {
        let mut diff = Vec::new();
        for (w, n) in &wc.expected {
            let g = got.get(w).copied().unwrap_or(0);
            if g != *n {
                diff.push(format!("{w}: {g} (want {n})"));
            }
        }
        for w in got.keys().filter(|w| !wc.expected.contains_key(*w)) {
            diff.push(format!("{w}: unexpected"));
        }
        let total: i64 = got.values().sum();
        panic!(
            "word counts differ from the local count ({total} counted for {} words): {}",
            WORDS_PER_WORKER * wc.workers.len(),
            diff.join(", ")
        );
    }
    for (_, cfg) in &wc.workers {
        let worker = cfg["worker"].as_str().expect("name");
        let ckpt = rt
            .block_on(client.get(format!("ckpt:{worker}")))
            .expect("get checkpoint")
            .unwrap_or_else(|| panic!("no checkpoint for {worker}"));
        let offset = ckpt.value.as_map().and_then(|m| m.get("offset")?.as_int());
        assert_eq!(offset, Some(WORDS_PER_WORKER as i64), "{worker} checkpoint");
        let session = rt
            .block_on(client.get(format!("session:{worker}")))
            .expect("get session")
            .unwrap_or_else(|| panic!("no session key for {worker}"));
        let ttl = session.ttl.expect("the session key has a TTL");
        assert!(
            ttl <= Duration::from_secs(600) && ttl > Duration::ZERO,
            "{ttl:?}"
        );
    }
}

fn report_throughput(results: &[Json]) {
    eprintln!("word-count worker throughput (increments/s, all 6 workers at once):");
    for r in results {
        let words = r["words"].as_f64().unwrap_or(0.0);
        let secs = r["seconds"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  {:<12} {:<6} {:>7.0} words/s  ({words} words in {secs:.1} s, longest call {:.2} s)",
            r["worker"].as_str().unwrap_or("?"),
            r["lang"].as_str().unwrap_or("?"),
            words / secs,
            r["max_call_seconds"].as_f64().unwrap_or(f64::NAN),
        );
    }
}

fn wordcount_is_exact() {
    require_toolchains();
    let redis = RedisServer::start();
    let service = Service::start(&redis.url(), &[]);
    let wc = word_count_setup(&service.addr());
    let running: Vec<Worker> = wc
        .workers
        .iter()
        .map(|(lang, cfg)| spawn_worker(*lang, cfg))
        .collect();
    let results: Vec<Json> = running.into_iter().map(finish).collect();
    report_throughput(&results);
    check_word_count(&service.addr(), &wc);
    drop(wc.dir);
}

/// Sum of the workers' checkpoint offsets, per worker; None while the
/// service cannot answer.
fn progress(
    rt: &tokio::runtime::Runtime,
    client: &StateClient,
    wc: &WordCount,
) -> Option<HashMap<String, i64>> {
    let names: Vec<String> = wc
        .workers
        .iter()
        .map(|(_, c)| c["worker"].as_str().expect("name").to_string())
        .collect();
    let keys: Vec<String> = names.iter().map(|n| format!("ckpt:{n}")).collect();
    let got = rt.block_on(client.batch_get(keys)).ok()?;
    Some(
        names
            .into_iter()
            .zip(got)
            .map(|(n, e)| {
                let off = e
                    .and_then(|e| e.value.as_map()?.get("offset")?.as_int())
                    .unwrap_or(0);
                (n, off)
            })
            .collect(),
    )
}

/// Waits until the workers together processed `fraction` of the corpus.
fn wait_progress(
    rt: &tokio::runtime::Runtime,
    client: &StateClient,
    wc: &WordCount,
    workers: &mut [Worker],
    fraction: f64,
) {
    let total = (WORDS_PER_WORKER * wc.workers.len()) as f64;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(p) = progress(rt, client, wc)
            && p.values().sum::<i64>() as f64 >= fraction * total
        {
            return;
        }
        assert_alive(workers);
        assert!(
            Instant::now() < deadline,
            "workers made no progress to {fraction}"
        );
        std::thread::sleep(common::POLL_INTERVAL);
    }
}

/// After a component came back at `back`: how long until each worker that
/// had not finished committed a checkpoint past its offset at `back`.
fn recovery_times(
    rt: &tokio::runtime::Runtime,
    client: &StateClient,
    wc: &WordCount,
    workers: &mut [Worker],
    back: Instant,
) -> BTreeMap<String, Duration> {
    let start = loop {
        if let Some(p) = progress(rt, client, wc) {
            break p;
        }
        assert!(
            back.elapsed() < RECOVERY_BOUND,
            "the service did not answer after the restart"
        );
        std::thread::sleep(common::POLL_INTERVAL);
    };
    let mut recovered = BTreeMap::new();
    loop {
        let now = progress(rt, client, wc).unwrap_or_else(|| start.clone());
        for (w, off) in &now {
            let done = *off >= WORDS_PER_WORKER as i64;
            if !recovered.contains_key(w) && (done || *off > start[w]) {
                recovered.insert(w.clone(), back.elapsed());
            }
        }
        if recovered.len() == now.len() {
            return recovered;
        }
        assert_alive(workers);
        assert!(
            back.elapsed() < RECOVERY_BOUND,
            "workers {:?} did not progress within {RECOVERY_BOUND:?} of the restart",
            now.keys()
                .filter(|w| !recovered.contains_key(*w))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(common::POLL_INTERVAL);
    }
}

fn wordcount_survives_restarts() {
    require_toolchains();
    // appendfsync always: every write Redis acknowledged survives its SIGKILL.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    // A retried increment is recognised only while its id is among the key's
    // --idempotency-max-ids newest. The corpus's most frequent word is 18 %
    // of all words: while one worker waits out its reconnect backoff (up to
    // 2 s) the other five increment that key a few hundred times, more than
    // the default 16 ids cover. A deployment with keys this hot sizes the
    // setting the same way (clients/README.md, exactly-once patterns).
    let mut service = Service::start(&redis.url(), &["--idempotency-max-ids", "1024"]);
    let wc = word_count_setup(&service.addr());
    let mut running: Vec<Worker> = wc
        .workers
        .iter()
        .map(|(lang, cfg)| spawn_worker(*lang, cfg))
        .collect();
    let rt = runtime();
    let client = rt.block_on(async {
        StateClient::connect(
            ClientConfig::new(service.addr())
                .tenant("wc")
                .timeout(Duration::from_secs(2))
                .retry(RetryPolicy::none()),
        )
        .await
        .expect("client")
    });

    wait_progress(&rt, &client, &wc, &mut running, 0.25);
    service.kill();
    std::thread::sleep(OUTAGE);
    service.restart();
    let after_service = recovery_times(&rt, &client, &wc, &mut running, Instant::now());

    wait_progress(&rt, &client, &wc, &mut running, 0.6);
    redis.stop();
    std::thread::sleep(OUTAGE);
    redis.restart();
    let after_redis = recovery_times(&rt, &client, &wc, &mut running, Instant::now());

    let results: Vec<Json> = running.into_iter().map(finish).collect();
    eprintln!("recovery (component back -> next checkpoint committed), outage {OUTAGE:?} each:");
    for (w, d) in &after_service {
        eprintln!(
            "  {w:<12} service crash: {:>5.2} s   redis crash: {:>5.2} s",
            d.as_secs_f64(),
            after_redis[w].as_secs_f64()
        );
    }
    report_throughput(&results);
    let tail = service.log_tail();
    let result = std::panic::catch_unwind(|| check_word_count(&service.addr(), &wc));
    if let Err(e) = result {
        eprintln!("service log tail:\n{tail}");
        std::panic::resume_unwind(e);
    }
}

// ---------------------------------------------------------------------------
// Value matrix

/// The matrix cases, identical to MATRIX in worker.py and worker.js.
fn matrix_cases() -> Vec<(&'static str, Value)> {
    vec![
        ("null", Value::Null),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("int_min", Value::Int(i64::MIN)),
        ("int_max", Value::Int(i64::MAX)),
        ("int_zero", Value::Int(0)),
        ("int_neg", Value::Int(-1)),
        ("double", Value::Float(1.5)),
        ("double_integral", Value::Float(3.0)),
        ("nan", Value::Float(f64::NAN)),
        ("pos_inf", Value::Float(f64::INFINITY)),
        ("neg_inf", Value::Float(f64::NEG_INFINITY)),
        ("neg_zero", Value::Float(-0.0)),
        ("subnormal", Value::Float(5e-324)),
        ("double_max", Value::Float(f64::MAX)),
        ("str_empty", Value::from("")),
        ("str_unicode", Value::from("ünïcødé 🦀 \u{0} \u{10FFFF}")),
        ("bytes_empty", Value::Bytes(vec![])),
        ("bytes_all", Value::Bytes((0..=255).collect())),
        ("list_empty", Value::List(vec![])),
        ("map_empty", Value::Map(BTreeMap::new())),
        (
            "nested",
            Value::map([
                (
                    "a",
                    Value::list([
                        Value::Int(1),
                        Value::Float(2.5),
                        Value::Null,
                        Value::from("x"),
                        Value::Bytes(vec![0, 255]),
                        Value::map([(
                            "b",
                            Value::list([
                                Value::Bool(true),
                                Value::List(vec![]),
                                Value::Map(BTreeMap::new()),
                            ]),
                        )]),
                    ]),
                ),
                ("", Value::Int(i64::MIN)),
                ("__proto__", Value::map([("k", Value::Int(i64::MAX))])),
            ]),
        ),
    ]
}

fn value_matrix() {
    require_toolchains();
    let redis = RedisServer::start();
    let service = Service::start(&redis.url(), &[]);
    let addr = service.addr();
    let cfg = |role: &str, others: &[&str]| json!({"role": role, "addr": addr, "tenant": "matrix", "others": others});

    // Every language writes its cases.
    let writers = [
        spawn_worker(Lang::Python, &cfg("matrix-write", &[])),
        spawn_worker(Lang::Node, &cfg("matrix-write", &[])),
    ];
    let rt = runtime();
    let client = rust_client(&rt, &addr, "matrix");
    rt.block_on(async {
        for (name, v) in matrix_cases() {
            client
                .put(format!("matrix/rust/{name}"), v)
                .await
                .expect("rust write");
        }
    });
    for w in writers {
        finish(w);
    }

    // Every language reads the other two's.
    let py = run_worker(Lang::Python, cfg("matrix-check", &["node", "rust"]));
    let node = run_worker(Lang::Node, cfg("matrix-check", &["python", "rust"]));
    let mut bad = Vec::new();
    rt.block_on(async {
        for lang in ["python", "node"] {
            for (name, want) in matrix_cases() {
                let got = client
                    .get(format!("matrix/{lang}/{name}"))
                    .await
                    .expect("rust read")
                    .map(|e| e.value);
                // Value's equality is exact: floats by bit pattern.
                if got.as_ref() != Some(&want) {
                    bad.push(format!("{lang}/{name}: got {got:?}, want {want:?}"));
                }
            }
        }
    });
    let cases = matrix_cases().len() as u64;
    assert_eq!(py["checked"].as_u64(), Some(2 * cases));
    assert_eq!(node["checked"].as_u64(), Some(2 * cases));
    assert!(bad.is_empty(), "Rust read mismatches:\n{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------
// Typed errors

fn typed_errors_for_conditions() {
    require_toolchains();
    let redis = RedisServer::start();
    let service = Service::start(&redis.url(), &[]);
    let addr = service.addr();
    let cfg =
        json!({"role": "errors-conditions", "addr": addr, "tenant": "errors", "prefix": "e:"});
    let py = spawn_worker(Lang::Python, &cfg);
    let node = spawn_worker(Lang::Node, &cfg);

    let rt = runtime();
    let client = rust_client(&rt, &addr, "errors");
    rt.block_on(async {
        let key = "e:rust";
        let v = client.put(key, "text").await.expect("put");
        let e = client
            .put_with(key, "x", WriteOptions::if_version(v + 1))
            .await
            .expect_err("lost CAS");
        assert_eq!(e.kind(), ErrorKind::VersionMismatch, "{e}");
        assert_eq!(e.current_version(), Some(v));
        assert_eq!(e.key(), Some(key));
        let e = client
            .put_with(key, 1, WriteOptions::if_absent())
            .await
            .expect_err("create-only");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert_eq!(e.current_version(), Some(v));
        let e = client.increment(key, 1).await.expect_err("not an int");
        assert_eq!(e.kind(), ErrorKind::NotAnInteger, "{e}");
        assert_eq!(e.stored_type(), Some("string"));
    });
    finish(py);
    finish(node);
}

/// Depends on the error contract's ErrorInfo on INVALID_ARGUMENT
/// (reason LIMIT_EXCEEDED, metadata `setting` and `limit`).
fn typed_error_for_an_oversized_value() {
    require_toolchains();
    const MAX: usize = 64 * 1024;
    let redis = RedisServer::start();
    let service = Service::start(&redis.url(), &["--max-value-bytes", &MAX.to_string()]);
    let addr = service.addr();
    let cfg = json!({"role": "errors-limit", "addr": addr, "tenant": "errors", "prefix": "e:", "max_value_bytes": MAX});
    let py = spawn_worker(Lang::Python, &cfg);
    let node = spawn_worker(Lang::Node, &cfg);
    let rt = runtime();
    let client = rust_client(&rt, &addr, "errors");
    let e = rt
        .block_on(client.put("e:rust-big", Value::Bytes(vec![b'x'; MAX + 1])))
        .expect_err("oversized value");
    let (py, node) = (
        std::panic::catch_unwind(|| finish(py)),
        std::panic::catch_unwind(|| finish(node)),
    );
    assert_eq!(
        e.kind(),
        ErrorKind::LimitExceeded,
        "Rust: {e} (reason {:?})",
        e.reason()
    );
    assert_eq!(e.setting(), Some("--max-value-bytes"), "Rust: {e}");
    assert_eq!(e.limit(), Some(MAX as u64), "Rust: {e}");
    if let Err(p) = py {
        std::panic::resume_unwind(p);
    }
    if let Err(n) = node {
        std::panic::resume_unwind(n);
    }
}

// ---------------------------------------------------------------------------
// TLS, client certificates, tokens

const TLS_TOKEN: &str = "sst_clients-test-token-0123456789abcdefghijklmnop";

/// Over TLS (trusting the test CA), each language reaches its tenant with a
/// bearer token and with a client certificate, and gets its typed errors for
/// no credentials (UNAUTHENTICATED) and a tenant header naming another
/// tenant (PERMISSION_DENIED).
fn tls_and_credentials() {
    require_toolchains();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = common::pki::Ca::new("clients-test-ca");
    let ca_path = ca.write(dir.path(), "ca");
    let (server_cert, server_key) = ca.server().write(dir.path(), "server");
    let client = ca.client("tls-cert");
    let (client_cert, client_key) = client.write(dir.path(), "client");
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        common::tenants_toml(&[
            common::TenantDef {
                id: "tls-token",
                tokens: &[(TLS_TOKEN, &["read", "write"])],
                extra: "",
            },
            common::TenantDef {
                id: "tls-cert",
                tokens: &[],
                extra: "certificate_scopes = [\"read\", \"write\"]",
            },
        ]),
    )
    .expect("tenants file");
    let redis = RedisServer::start();
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let ca_pem = ca.pem();
    let service = Service::start_probed(
        &redis.url(),
        &[
            "--tls-cert",
            &path(&server_cert),
            "--tls-key",
            &path(&server_key),
            "--tls-client-ca",
            &path(&ca_path),
            "--tenants-file",
            &path(&tenants),
        ],
        |addr| {
            ClientConfig::new(addr)
                .tls(TlsOptions::new().ca_pem(ca_pem.clone()))
                .bearer_token(TLS_TOKEN)
        },
    );
    let cfg = json!({
        "role": "tls", "addr": service.addr(), "ca": ca_path, "cert": client_cert,
        "key": client_key, "token": TLS_TOKEN,
    });
    let py = spawn_worker(Lang::Python, &cfg);
    let node = spawn_worker(Lang::Node, &cfg);

    let rt = runtime();
    rt.block_on(async {
        let tls = || TlsOptions::new().ca_pem(ca.pem());
        let connect =
            |c: ClientConfig| async move { StateClient::connect(c).await.expect("client") };
        let addr = service.addr();
        let by_token = connect(ClientConfig::new(&addr).tls(tls()).bearer_token(TLS_TOKEN)).await;
        by_token.put("tls:rust", 1).await.expect("put with a token");
        let got = by_token
            .get("tls:rust")
            .await
            .expect("get")
            .map(|e| e.value);
        assert_eq!(got, Some(Value::Int(1)));
        let by_cert = connect(
            ClientConfig::new(&addr)
                .tls(tls().client_cert(client.cert_pem.clone(), client.key_pem.clone())),
        )
        .await;
        by_cert
            .put("tls:rust", 2)
            .await
            .expect("put with a client certificate");
        // Another tenant: the token's key is untouched.
        let got = by_token
            .get("tls:rust")
            .await
            .expect("get")
            .map(|e| e.value);
        assert_eq!(got, Some(Value::Int(1)));
        let anonymous = connect(ClientConfig::new(&addr).tls(tls())).await;
        let e = anonymous.get("tls:rust").await.expect_err("no credentials");
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
        let wrong_tenant = connect(
            ClientConfig::new(&addr)
                .tls(tls())
                .bearer_token(TLS_TOKEN)
                .tenant("someone-else"),
        )
        .await;
        let e = wrong_tenant
            .get("tls:rust")
            .await
            .expect_err("another tenant");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    });
    finish(py);
    finish(node);
}

// ---------------------------------------------------------------------------
// The rust-rule-engine bridge

/// rust-rule-engine job code, written against its `StateStore` API: it
/// compiles unchanged against the facade (`?` converts the client's errors).
fn count_event(
    state: &state_client::StateStore<RuleValue>,
    user: &str,
) -> Result<i64, rust_rule_engine::RuleEngineError> {
    let key = format!("events:{user}");
    let n = match state.get(&key)? {
        Some(RuleValue::Integer(n)) => n + 1,
        _ => 1,
    };
    state.put(key, RuleValue::Integer(n))?;
    Ok(n)
}

fn rule_engine_state_store() {
    use state_client::StateStore;
    let redis = RedisServer::start();
    let service = Service::start(&redis.url(), &[]);
    let config = || ClientConfig::new(service.addr()).tenant("rules");
    let store: StateStore<RuleValue> = StateStore::connect(config(), "job-7").expect("store");
    let neighbour: StateStore<RuleValue> = StateStore::connect(config(), "job-8").expect("store");
    neighbour.put("count", RuleValue::Integer(-1)).expect("put");

    assert_eq!(count_event(&store, "ada").expect("count"), 1);
    assert_eq!(count_event(&store, "ada").expect("count"), 2);
    let order = RuleValue::Object(HashMap::from([
        ("qty".to_string(), RuleValue::Integer(i64::MAX)),
        ("price".to_string(), RuleValue::Number(-0.0)),
        (
            "tags".to_string(),
            RuleValue::Array(vec![RuleValue::Null, RuleValue::Boolean(true)]),
        ),
        ("note".to_string(), RuleValue::String("ünï".into())),
    ]));
    store.put("order", order.clone()).expect("put");
    store
        .put_with_ttl(
            "session",
            RuleValue::String("s".into()),
            Duration::from_secs(600),
        )
        .expect("put_with_ttl");
    assert_eq!(store.get("order").expect("get"), Some(order.clone()));
    assert_eq!(store.get("missing").expect("get"), None);

    // update: only an existing key, and it keeps the expiry.
    let e = store
        .update("missing", RuleValue::Null)
        .expect_err("absent");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    store
        .update("session", RuleValue::String("s2".into()))
        .expect("update");
    let rt = runtime();
    let raw = rust_client(&rt, &service.addr(), "rules");
    let ttl = rt
        .block_on(raw.get(store.service_key("session")))
        .expect("get")
        .and_then(|e| e.ttl);
    assert!(
        ttl.is_some_and(|t| t > Duration::ZERO),
        "update dropped the TTL: {ttl:?}"
    );

    // What the engine cannot hold is refused, in both directions.
    let e = store
        .put("rule", RuleValue::Expression("Order.qty * 2".into()))
        .expect_err("an Expression");
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}");
    assert!(!store.contains("rule"));
    rt.block_on(raw.put(store.service_key("blob"), Value::Bytes(vec![1, 2])))
        .expect("put bytes");
    let e = store.get("blob").expect_err("bytes");
    assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}");
    store.delete("blob").expect("delete");

    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["events:ada", "order", "session"]);
    assert_eq!(store.len(), 3);
    assert!(store.contains("order") && !store.contains("blob"));

    // checkpoint / restore undo later changes, TTLs included.
    let id = store.checkpoint("after-ada").expect("checkpoint");
    assert_eq!(store.checkpoint_info(&id).expect("info").entry_count, 3);
    store
        .put("events:ada", RuleValue::Integer(100))
        .expect("put");
    store.delete("order").expect("delete");
    store.put("new", RuleValue::Null).expect("put");
    store.restore(&id).expect("restore");
    assert_eq!(
        store.get("events:ada").expect("get"),
        Some(RuleValue::Integer(2))
    );
    assert_eq!(store.get("order").expect("get"), Some(order));
    assert!(!store.contains("new"));
    let ttl = rt
        .block_on(raw.get(store.service_key("session")))
        .expect("get")
        .and_then(|e| e.ttl);
    assert!(
        ttl.is_some_and(|t| t > Duration::ZERO),
        "restore dropped the TTL: {ttl:?}"
    );
    let e = store
        .restore("checkpoint_0_nope")
        .expect_err("no such checkpoint");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // clear empties this namespace only; the checkpoint survives it.
    store.clear().expect("clear");
    assert!(store.is_empty());
    assert_eq!(
        neighbour.get("count").expect("get"),
        Some(RuleValue::Integer(-1))
    );
    store.restore(&id).expect("restore after clear");
    assert_eq!(store.len(), 3);
}

// ---------------------------------------------------------------------------
// Examples

#[expect(
    dead_code,
    reason = "the example's main() is for `cargo run --example`"
)]
#[path = "../clients/rust/examples/exactly_once.rs"]
mod exactly_once_example;

fn examples_run() {
    require_toolchains();
    let redis = RedisServer::start();
    let service = Service::start(&redis.url(), &[]);
    let addr = service.addr();
    // Every example runs; the failures are reported together.
    let mut failures = Vec::new();
    let mut run = |mut cmd: Command, what: &str| match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => failures.push(format!(
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => failures.push(format!("{what}: {e}")),
    };
    for example in ["quickstart.py", "exactly_once.py"] {
        let mut cmd = Command::new(venv_tool("python"));
        cmd.env("PYTHONPATH", repo().join("clients/python/src"))
            .arg(repo().join("clients/python/examples").join(example))
            .arg(&addr);
        run(cmd, example);
    }
    for example in ["quickstart.js", "exactly-once.js"] {
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("clients/node/examples").join(example))
            .arg(&addr);
        run(cmd, example);
    }
    if let Err(e) = runtime().block_on(exactly_once_example::run(&addr)) {
        failures.push(format!("exactly_once.rs: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// The Rust word-count worker (this binary with STATE_CLIENTS_WORKER set)

fn rust_worker(cfg: &str) -> ExitCode {
    let cfg: Json = match serde_json::from_str(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bad worker config: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime().block_on(rust_wordcount(&cfg)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rust worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn rust_wordcount(cfg: &Json) -> Result<Json, state_client::Error> {
    let s = |k: &str| cfg[k].as_str().unwrap_or_default().to_string();
    let (worker, prefix) = (s("worker"), s("prefix"));
    let batch = cfg["batch"].as_u64().unwrap_or(50) as usize;
    let ttl = Duration::from_secs(cfg["session_ttl_s"].as_u64().unwrap_or(600));
    let text = std::fs::read_to_string(s("shard")).unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    let client = StateClient::connect(ClientConfig::new(s("addr")).tenant(s("tenant"))).await?;
    let mut max_call = Duration::ZERO;
    let start = Instant::now();
    for (i, chunk) in words.chunks(batch).enumerate() {
        let hi = (i * batch + chunk.len()) as i64;
        for w in chunk {
            let t0 = Instant::now();
            client.increment(format!("{prefix}count:{w}"), 1).await?;
            max_call = max_call.max(t0.elapsed());
        }
        let t0 = Instant::now();
        client
            .update(format!("{prefix}ckpt:{worker}"), |_| {
                Value::map([("offset", Value::Int(hi)), ("lang", Value::from("rust"))])
            })
            .await?;
        max_call = max_call.max(t0.elapsed());
        let t0 = Instant::now();
        let session = Value::map([
            ("worker", Value::from(worker.as_str())),
            ("offset", Value::Int(hi)),
        ]);
        client
            .put_with_ttl(format!("{prefix}session:{worker}"), session, ttl)
            .await?;
        max_call = max_call.max(t0.elapsed());
    }
    Ok(json!({
        "lang": "rust", "role": "wordcount", "worker": worker, "words": words.len(),
        "seconds": start.elapsed().as_secs_f64(), "max_call_seconds": max_call.as_secs_f64(),
    }))
}
