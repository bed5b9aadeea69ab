//! Redis topologies for the suites: a Redis Cluster (3 masters, 3 replicas)
//! and a Sentinel set (1 master, 2 replicas, 3 sentinels), on free loopback
//! ports.
//!
//! Two ways to get one:
//! - `Cluster::start()` / `SentinelSet::start()`: private to the caller and
//!   killed on drop, for tests that kill nodes (tests/failover.rs).
//! - `shared_cluster()` / `shared_sentinel()`: one topology per test run,
//!   started by the first test process that asks and reused by the others
//!   (nextest runs every test in its own process; starting six servers per
//!   test would cost minutes). It lives in a directory named after the test
//!   runner's pid, and a watchdog shell kills it when the runner exits. Tests
//!   on a shared topology use their own `--key-prefix` and never kill nodes.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{POLL_INTERVAL, RedisServer, free_port, kill_with_parent, wait_for_port};

/// How long a topology may take to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// A free port whose cluster bus port (+10000) is free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55536 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// Runs redis-cli against a port and returns its stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli is required by the topology tests");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `field:` in an INFO-style reply.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn poll_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

const CLUSTER_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "2000",
    "--cluster-config-file",
    "nodes.conf",
];

/// The ports of a formed cluster: masters first, by the slots they own.
#[derive(Debug, Clone)]
pub struct ClusterPorts(pub Vec<u16>);

impl ClusterPorts {
    /// The seed URLs (every node), comma-separated as --redis-url takes them.
    pub fn urls(&self) -> String {
        self.0
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The current masters' ports.
    pub fn masters(&self) -> Vec<u16> {
        self.0
            .iter()
            .copied()
            .filter(|p| {
                info_field(&cli(*p, &["INFO", "replication"]), "role").as_deref() == Some("master")
            })
            .collect()
    }

    /// The port of the master that owns `slot` (asked of any live node).
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.0
            .iter()
            .find_map(|p| parse_slot_owner(&cli(*p, &["CLUSTER", "SLOTS"]), slot))
    }

    /// Whether every live node says cluster_state:ok and sees the same
    /// number of masters with slots.
    pub fn healthy(&self, nodes: &[u16]) -> bool {
        nodes.iter().all(|p| {
            let info = cli(*p, &["CLUSTER", "INFO"]);
            info_field(&info, "cluster_state").as_deref() == Some("ok")
                && info_field(&info, "cluster_size").as_deref() == Some("3")
        })
    }
}

/// Reads the owner of `slot` from `redis-cli CLUSTER SLOTS` raw output
/// (start, end, ip, port, … per range, one value per line).
fn parse_slot_owner(raw: &str, slot: u16) -> Option<u16> {
    let lines: Vec<&str> = raw.lines().map(str::trim).collect();
    let mut i = 0;
    while i + 3 < lines.len() {
        if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>())
            && lines[i + 2].parse::<std::net::IpAddr>().is_ok()
            && let Ok(port) = lines[i + 3].parse::<u16>()
        {
            if (start..=end).contains(&slot) {
                return Some(port);
            }
            i += 4;
        } else {
            i += 1;
        }
    }
    None
}

/// Creates the cluster over running nodes and waits until it is usable:
/// cluster_state:ok everywhere and every master's replica in sync.
fn form_cluster(ports: &[u16]) {
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli is required by the topology tests");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let c = ClusterPorts(ports.to_vec());
    poll_until("the cluster forming", FORM_TIMEOUT, || c.healthy(ports));
    poll_until("every replica syncing", FORM_TIMEOUT, || {
        let masters = c.masters();
        masters.len() == 3
            && masters.iter().all(|m| {
                let info = cli(*m, &["INFO", "replication"]);
                info_field(&info, "connected_slaves").as_deref() == Some("1")
                    && info_field(&info, "slave0").is_some_and(|s| s.contains("state=online"))
            })
    });
}

/// A private cluster, killed on drop.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    pub ports: ClusterPorts,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::start_on(free_cluster_port(), CLUSTER_ARGS))
            .collect();
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        form_cluster(&ports);
        Cluster {
            nodes,
            ports: ClusterPorts(ports),
        }
    }

    pub fn urls(&self) -> String {
        self.ports.urls()
    }

    /// kill -9 of the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        node.stop();
    }

    /// The ports of nodes still running.
    pub fn live(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.port)
            .collect()
    }
}

/// A private Sentinel set, killed on drop: `master` and two `replicas`,
/// watched by three sentinels as `MASTER_NAME`.
pub struct SentinelSet {
    pub data: Vec<RedisServer>,
    pub sentinels: Vec<SentinelServer>,
}

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "statemaster";

/// A redis-server in sentinel mode, killed on drop.
pub struct SentinelServer {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sentinel_conf(dir: &Path, port: u16, master_port: u16) -> PathBuf {
    let path = dir.join("sentinel.conf");
    let mut f = fs::File::create(&path).unwrap();
    writeln!(
        f,
        "port {port}\nbind 127.0.0.1\ndir {}\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 3000\n\
         sentinel parallel-syncs {MASTER_NAME} 2",
        dir.display()
    )
    .unwrap();
    path
}

fn spawn_sentinel(
    port: u16,
    master_port: u16,
    detached: bool,
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let conf = sentinel_conf(dir.path(), port, master_port);
    let mut cmd = Command::new("redis-server");
    cmd.arg(&conf)
        .arg("--sentinel")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !detached {
        kill_with_parent(&mut cmd);
    }
    let child = cmd.spawn().expect("cannot start redis-server --sentinel");
    wait_for_port(port, Duration::from_secs(10));
    (child, dir)
}

/// Waits until the sentinels agree on the master and know both replicas
/// and each other.
fn wait_sentinels(sentinel_ports: &[u16], master_port: u16) {
    poll_until("the sentinels discovering the set", FORM_TIMEOUT, || {
        sentinel_ports.iter().all(|s| {
            let m = cli(*s, &["SENTINEL", "MASTER", MASTER_NAME]);
            let lines: Vec<&str> = m.lines().collect();
            let field = |name: &str| {
                lines
                    .iter()
                    .position(|l| *l == name)
                    .and_then(|i| lines.get(i + 1))
                    .map(|v| v.to_string())
            };
            field("port") == Some(master_port.to_string())
                && field("num-slaves").as_deref() == Some("2")
                && field("num-other-sentinels").as_deref() == Some("2")
                && field("flags").as_deref() == Some("master")
        })
    });
}

impl SentinelSet {
    pub fn start() -> Self {
        let master = RedisServer::start();
        let mport = master.port.to_string();
        let replicas: Vec<RedisServer> = (0..2)
            .map(|_| RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport]))
            .collect();
        wait_replicas_online(master.port, 2);
        let mut data = vec![master];
        data.extend(replicas);
        let master_port = data[0].port;
        let sentinels: Vec<SentinelServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let (child, dir) = spawn_sentinel(port, master_port, false);
                SentinelServer {
                    port,
                    child,
                    _dir: dir,
                }
            })
            .collect();
        let ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
        wait_sentinels(&ports, master_port);
        SentinelSet { data, sentinels }
    }

    /// The sentinels' URLs, comma-separated as --redis-url takes them.
    pub fn urls(&self) -> String {
        sentinel_urls(&self.sentinels.iter().map(|s| s.port).collect::<Vec<_>>())
    }

    /// The port of the master the sentinels currently name.
    pub fn master_port(&self) -> Option<u16> {
        current_master(self.sentinels[0].port)
    }
}

fn sentinel_urls(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The master port a sentinel names.
pub fn current_master(sentinel_port: u16) -> Option<u16> {
    cli(
        sentinel_port,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
    )
    .lines()
    .nth(1)?
    .trim()
    .parse()
    .ok()
}

fn wait_replicas_online(master: u16, n: usize) {
    poll_until("the replicas syncing", FORM_TIMEOUT, || {
        let info = cli(master, &["INFO", "replication"]);
        info_field(&info, "connected_slaves") == Some(n.to_string())
            && (0..n).all(|i| {
                info_field(&info, &format!("slave{i}")).is_some_and(|s| s.contains("state=online"))
            })
    });
}

// ------------------------------------------------------- shared topologies

/// Where the shared topologies of this test run live: named after the test
/// runner (the parent of this test process), so that every test process of
/// one run finds them and the next run starts afresh.
fn shared_dir() -> PathBuf {
    // SAFETY: getppid has no preconditions.
    let runner = unsafe { libc::getppid() };
    let dir = std::env::temp_dir().join(format!("state-service-topologies-{runner}"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `f` holding an exclusive lock on `dir/name.lock`.
fn with_lock<T>(dir: &Path, name: &str, f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    let file = fs::File::create(dir.join(format!("{name}.lock"))).unwrap();
    // SAFETY: flock on a file descriptor we own; released when `file` closes.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = f();
    drop(file);
    out
}

/// Starts a detached redis-server (outliving this test process) that a
/// watchdog kills when the test runner exits.
#[expect(
    clippy::zombie_processes,
    reason = "the server outlives this test process on purpose; the watchdog ends it"
)]
fn spawn_detached(dir: &Path, args: &[String]) -> u32 {
    let mut cmd = Command::new("redis-server");
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("cannot start redis-server");
    child.id()
}

#[expect(
    clippy::zombie_processes,
    reason = "the watchdog outlives this test process on purpose"
)]
fn watchdog(pids: &[u32]) {
    // SAFETY: getppid has no preconditions.
    let runner = unsafe { libc::getppid() };
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    // The watchdog polls the runner once a second: it only cleans up (the
    // servers, then their directory).
    let script = format!(
        "while kill -0 {runner} 2>/dev/null; do sleep 1; done; kill -9 {} 2>/dev/null; \
         sleep 1; rm -rf '{}'",
        pids.join(" "),
        shared_dir().display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the topology watchdog");
}

fn read_ports(path: &Path) -> Option<Vec<u16>> {
    let text = fs::read_to_string(path).ok()?;
    let ports: Vec<u16> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    (!ports.is_empty()).then_some(ports)
}

fn answers(port: u16) -> bool {
    cli(port, &["PING"]).trim() == "PONG"
}

/// The cluster shared by this test run (see the module doc).
pub fn shared_cluster() -> ClusterPorts {
    let dir = shared_dir();
    with_lock(&dir, "cluster", || {
        let file = dir.join("cluster.ports");
        if let Some(ports) = read_ports(&file)
            && ports.iter().all(|p| answers(*p))
        {
            return ClusterPorts(ports);
        }
        let mut ports = Vec::new();
        let mut pids = Vec::new();
        for _ in 0..6 {
            let port = free_cluster_port();
            let node_dir = dir.join(format!("cluster-{port}"));
            fs::create_dir_all(&node_dir).unwrap();
            let mut args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                node_dir.display().to_string(),
            ];
            args.extend(CLUSTER_ARGS.iter().map(|s| s.to_string()));
            pids.push(spawn_detached(&node_dir, &args));
            ports.push(port);
        }
        watchdog(&pids);
        for p in &ports {
            wait_for_port(*p, Duration::from_secs(10));
        }
        form_cluster(&ports);
        fs::write(
            &file,
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        )
        .unwrap();
        ClusterPorts(ports)
    })
}

/// The Sentinel set shared by this test run: the sentinels' URLs.
pub fn shared_sentinel() -> String {
    let dir = shared_dir();
    with_lock(&dir, "sentinel", || {
        let file = dir.join("sentinel.ports");
        if let Some(ports) = read_ports(&file)
            && ports.iter().all(|p| answers(*p))
        {
            return sentinel_urls(&ports[3..]);
        }
        let mut pids = Vec::new();
        let mut data_ports: Vec<u16> = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let node_dir = dir.join(format!("sentinel-data-{port}"));
            fs::create_dir_all(&node_dir).unwrap();
            let mut args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                node_dir.display().to_string(),
            ];
            if i > 0 {
                args.extend([
                    "--replicaof".to_string(),
                    "127.0.0.1".to_string(),
                    data_ports[0].to_string(),
                ]);
            }
            pids.push(spawn_detached(&node_dir, &args));
            wait_for_port(port, Duration::from_secs(10));
            data_ports.push(port);
        }
        wait_replicas_online(data_ports[0], 2);
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let node_dir = dir.join(format!("sentinel-{port}"));
            fs::create_dir_all(&node_dir).unwrap();
            let conf = sentinel_conf(&node_dir, port, data_ports[0]);
            pids.push(spawn_detached(
                &node_dir,
                &[conf.display().to_string(), "--sentinel".into()],
            ));
            wait_for_port(port, Duration::from_secs(10));
            sentinel_ports.push(port);
        }
        watchdog(&pids);
        wait_sentinels(&sentinel_ports, data_ports[0]);
        let all: Vec<u16> = data_ports.iter().chain(&sentinel_ports).copied().collect();
        fs::write(
            &file,
            all.iter().map(u16::to_string).collect::<Vec<_>>().join(" "),
        )
        .unwrap();
        sentinel_urls(&sentinel_ports)
    })
}

/// A key prefix no other test of this run uses (tests on a shared topology
/// must not see each other's keys).
pub fn unique_key_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000
    )
}
