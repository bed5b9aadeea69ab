//! Failover under load (issue 12): writers and readers run through the
//! service while a master is killed (`kill -9`, Redis Cluster) or Sentinel
//! fails the master over (`SENTINEL FAILOVER`). Each round measures the
//! unavailability window of the affected keys (first failed write to the
//! first successful write after it), checks that no RPC took longer than its
//! deadline, and counts acknowledged writes missing afterwards — without
//! and with --redis-wait-replicas 1. With the wait, no acknowledged write
//! may be missing; without it, losses are a measured fact (Redis replicates
//! asynchronously) and only reported.
//!
//! The figures are printed; with STATE_FIGURES_FILE set they are also
//! appended to that file (docs/operations.md quotes them).

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Client, TestServer,
    api::put_req,
    topology::{self, Cluster, SentinelSet, cli},
    v,
};
use state_service::{config::RedisMode, pb::BatchGetRequest};

/// The deadline every RPC of the load carries.
const DEADLINE: Duration = Duration::from_secs(3);
/// Grace above the deadline for the client's own scheduling on a loaded
/// machine; an RPC beyond deadline + grace is a hang.
const GRACE: Duration = Duration::from_secs(1);
const WRITERS: usize = 6;
const READERS: usize = 2;

/// What one round measured.
#[derive(Debug)]
struct Figures {
    label: String,
    acked: usize,
    lost: usize,
    failed_rpcs: usize,
    /// First failed write to the first successful write after it; `None`
    /// when no write failed.
    window: Option<Duration>,
    /// Trigger to the new master showing in the topology.
    promotion: Duration,
    slowest_rpc: Duration,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {:.2} s | {:.2} s |",
            self.label,
            self.acked,
            self.lost,
            self.failed_rpcs,
            self.window
                .map_or("none".to_string(), |w| format!("{:.2} s", w.as_secs_f64())),
            self.promotion.as_secs_f64(),
            self.slowest_rpc.as_secs_f64(),
        )
    }

    fn report(&self) {
        println!("{}", self.line());
        if let Ok(path) = std::env::var("STATE_FIGURES_FILE") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(f, "{}", self.line()).unwrap();
        }
    }
}

#[derive(Default)]
struct Log {
    /// (sent, answered, ok) of every write.
    writes: Vec<(Instant, Instant, bool)>,
    acked: Vec<String>,
    failed: usize,
    slowest: Duration,
}

/// Writers put fresh keys (all in the slot of `{tag}`), readers read the
/// latest acknowledged ones, until `stop`.
fn start_load(
    client: &Client,
    tag: &str,
    log: &Arc<Mutex<Log>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (mut c, log, stop, tag) = (client.clone(), log.clone(), stop.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{{{tag}}}w{w}-{n}");
                n += 1;
                let mut req = tonic::Request::new(put_req(&key, v::int(n as i64)));
                req.set_timeout(DEADLINE);
                let start = Instant::now();
                let r = c.put(req).await;
                let took = start.elapsed();
                let mut l = log.lock().unwrap();
                l.slowest = l.slowest.max(took);
                l.writes.push((start, Instant::now(), r.is_ok()));
                match r {
                    Ok(_) => l.acked.push(key),
                    Err(_) => l.failed += 1,
                }
            }
        }));
    }
    for _ in 0..READERS {
        let (mut c, log, stop) = (client.clone(), log.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = log.lock().unwrap().acked.last().cloned();
                let Some(key) = key else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let mut req = tonic::Request::new(state_service::pb::GetRequest {
                    key,
                    refresh_ttl: None,
                });
                req.set_timeout(DEADLINE);
                let start = Instant::now();
                let r = c.get(req).await;
                let took = start.elapsed();
                let mut l = log.lock().unwrap();
                l.slowest = l.slowest.max(took);
                if r.is_err() {
                    l.failed += 1;
                }
            }
        }));
    }
    tasks
}

/// One failover round: load, `trigger`, poll `promoted` until the new
/// master shows, run `after` (bring a replica back), load until writes
/// succeed again, then read back every acknowledged key.
async fn round(
    label: &str,
    server: &TestServer,
    tag: &str,
    trigger: impl FnOnce(),
    promoted: impl Fn() -> bool,
    after: impl FnOnce(),
) -> Figures {
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_load(&server.client(), tag, &log, &stop);
    common::eventually!(
        Duration::from_secs(30),
        "writes before the failover",
        log.lock().unwrap().acked.len() >= 200
    );
    let triggered = Instant::now();
    trigger();
    common::eventually!(Duration::from_secs(60), "the new master", promoted());
    let promotion = triggered.elapsed();
    after();
    // Writes succeed again: 200 more acknowledged after the promotion.
    let acked_at_promotion = log.lock().unwrap().acked.len();
    common::eventually!(
        Duration::from_secs(60),
        "writes after the failover",
        log.lock().unwrap().acked.len() >= acked_at_promotion + 200
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    // A write sent before the failure may still succeed after it: the
    // window ends with the first success of a write sent after the failure.
    let first_failure = log
        .writes
        .iter()
        .filter(|(_, at, ok)| *at >= triggered && !ok)
        .map(|(_, at, _)| *at)
        .min();
    let window = first_failure.and_then(|f| {
        log.writes
            .iter()
            .filter(|(sent, _, ok)| *sent >= f && *ok)
            .map(|(_, at, _)| *at - f)
            .min()
    });
    let lost = missing(&server.client(), &log.acked).await;
    Figures {
        label: label.to_string(),
        acked: log.acked.len(),
        lost,
        failed_rpcs: log.failed,
        window,
        promotion,
        slowest_rpc: log.slowest,
    }
}

/// How many of `keys` cannot be read back.
async fn missing(client: &Client, keys: &[String]) -> usize {
    let mut c = client.clone();
    let mut missing = 0;
    for chunk in keys.chunks(500) {
        let r = c
            .batch_get(BatchGetRequest {
                keys: chunk.to_vec(),
            })
            .await
            .expect("reading back after the failover")
            .into_inner();
        missing += r.results.iter().filter(|e| !e.found).count();
    }
    missing
}

fn check(f: &Figures, must_keep_every_write: bool) {
    f.report();
    assert!(
        f.slowest_rpc <= DEADLINE + GRACE,
        "{}: an RPC took {:?}, beyond its {DEADLINE:?} deadline",
        f.label,
        f.slowest_rpc
    );
    if must_keep_every_write {
        assert_eq!(
            f.lost, 0,
            "{}: acknowledged writes with --redis-wait-replicas were lost",
            f.label
        );
    }
}

async fn service(urls: String, mode: RedisMode, wait: u32) -> TestServer {
    TestServer::start_on(Some(urls), None, move |c| {
        c.redis.redis_mode = mode;
        if mode == RedisMode::Sentinel {
            c.redis.redis_master_name = Some(topology::MASTER_NAME.to_string());
        }
        c.redis.redis_wait_replicas = wait;
        c.redis.redis_wait_timeout = Duration::from_millis(500);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_under_load() {
    let mut cluster = Cluster::start();
    let tag = "a";
    let slot = state_service::store::redis::slot::slot_of(tag.as_bytes());
    // With one replica per master, the promoted replica has none left:
    // writes that wait for a replica succeed again only once the killed node
    // is back (restarted right after the promotion, it rejoins as a replica
    // of its successor), so the "wait 1" window includes that restart.
    for (label, wait) in [
        ("cluster, kill -9 of a master, no wait", 0),
        (
            "cluster, kill -9 of a master, wait 1 = every replica (window includes its return)",
            1,
        ),
    ] {
        let victim = cluster
            .ports
            .master_of_slot(slot)
            .expect("a master for the slot");
        let server = service(cluster.urls(), RedisMode::Cluster, wait).await;
        let ports = cluster.ports.clone();
        let live: Vec<u16> = cluster
            .live()
            .into_iter()
            .filter(|p| *p != victim)
            .collect();
        let index = cluster.nodes.iter().position(|n| n.port == victim).unwrap();
        let node = std::cell::RefCell::new(&mut cluster.nodes[index]);
        let f = round(
            label,
            &server,
            tag,
            || node.borrow_mut().stop(),
            || {
                ports
                    .master_of_slot(slot)
                    .is_some_and(|m| m != victim && live.contains(&m))
                    && ports.healthy(&live)
            },
            || node.borrow_mut().restart(),
        )
        .await;
        check(&f, wait > 0);
        drop(server);
        common::eventually!(
            Duration::from_secs(60),
            "the old master rejoining as a replica",
            {
                let new_master = ports.master_of_slot(slot).unwrap_or(0);
                let info = cli(new_master, &["INFO", "replication"]);
                topology::info_field(&info, "connected_slaves").as_deref() == Some("1")
                    && topology::info_field(&info, "slave0")
                        .is_some_and(|s| s.contains("state=online"))
                    && ports.healthy(&ports.0)
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_load() {
    let set = SentinelSet::start();
    let sentinel = set.sentinels[0].port;
    for (label, wait) in [
        ("sentinel, SENTINEL FAILOVER, no wait", 0),
        // Waiting for fewer replicas than there are does not protect a
        // manual failover: the old master keeps taking writes, acknowledged
        // by the replica that still follows it, until Sentinel demotes it
        // and it resyncs from the new master (measured: 101 and 417 lost
        // with wait 1 of 2 replicas). Waiting for every replica does.
        ("sentinel, SENTINEL FAILOVER, wait 2 = every replica", 2),
    ] {
        let old = set.master_port().expect("a master");
        let server = service(set.urls(), RedisMode::Sentinel, wait).await;
        let f = round(
            label,
            &server,
            "s",
            || {
                // A failover still finishing (INPROG) refuses a new one.
                let start = Instant::now();
                loop {
                    let out = cli(sentinel, &["SENTINEL", "FAILOVER", topology::MASTER_NAME]);
                    if out.contains("OK") {
                        break;
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "SENTINEL FAILOVER: {out}"
                    );
                    std::thread::sleep(common::POLL_INTERVAL);
                }
            },
            || {
                topology::current_master(sentinel).is_some_and(|m| {
                    m != old
                        && topology::info_field(&cli(m, &["INFO", "replication"]), "role")
                            .as_deref()
                            == Some("master")
                })
            },
            || {},
        )
        .await;
        check(&f, wait > 0);
        drop(server);
        // The demoted master follows the new one; the next failover needs
        // both replicas in sync again.
        let master = set.master_port().unwrap();
        common::eventually!(Duration::from_secs(60), "the replicas resyncing", {
            let info = cli(master, &["INFO", "replication"]);
            topology::info_field(&info, "connected_slaves").as_deref() == Some("2")
                && (0..2).all(|i| {
                    topology::info_field(&info, &format!("slave{i}"))
                        .is_some_and(|s| s.contains("state=online"))
                })
        });
    }
}

/// A listing that spans a failover of the master it is walking returns
/// every key that existed throughout: the new master's scan starts over
/// (keys may repeat across pages, none is skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_spanning_a_master_failover_returns_every_key() {
    use state_service::pb::{BatchPutItem, BatchPutRequest, ListRequest};
    let mut cluster = Cluster::start();
    let server = service(cluster.urls(), RedisMode::Cluster, 0).await;
    let mut c = server.client();
    let keys: Vec<String> = (0..300).map(|i| format!("item-{i}")).collect();
    c.batch_put(BatchPutRequest {
        items: keys
            .iter()
            .map(|k| BatchPutItem {
                key: k.clone(),
                value: v::int(1),
                ..Default::default()
            })
            .collect(),
    })
    .await
    .unwrap();
    let page = |token: String| ListRequest {
        prefix: "item-".into(),
        page_size: 20,
        page_token: token,
        include_values: false,
    };
    let first = c.list(page(String::new())).await.unwrap().into_inner();
    let mut seen: std::collections::HashSet<String> = first.keys.into_iter().collect();
    // The walk starts at the master serving slot 0: kill it mid-scan.
    let victim = cluster.ports.master_of_slot(0).unwrap();
    let ports = cluster.ports.clone();
    cluster.kill(victim);
    common::eventually!(
        Duration::from_secs(60),
        "the replica's promotion",
        ports.master_of_slot(0).is_some_and(|m| m != victim)
    );
    let mut token = first.next_page_token;
    let start = Instant::now();
    while !token.is_empty() {
        match c.list(page(token.clone())).await {
            Ok(r) => {
                let r = r.into_inner();
                seen.extend(r.keys);
                token = r.next_page_token;
            }
            // UNAVAILABLE while the client side catches up: retry the page.
            Err(e) if e.code() == tonic::Code::Unavailable => {
                assert!(start.elapsed() < Duration::from_secs(30), "{e:?}");
                tokio::time::sleep(common::POLL_INTERVAL).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let missing: Vec<&String> = keys.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "the listing skipped {missing:?}");
}

/// A live resharding under load (`redis-cli --cluster reshard` moving the
/// writers' slot to another master): MOVED and ASK are followed, no RPC
/// outlives its deadline, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_resharding_under_load_loses_no_acknowledged_write() {
    use state_service::store::redis::slot::tag_for_slot;
    let cluster = Cluster::start();
    let server = service(cluster.urls(), RedisMode::Cluster, 0).await;
    let source = cluster.ports.master_of_slot(0).unwrap();
    let target = cluster
        .ports
        .masters()
        .into_iter()
        .find(|m| *m != source)
        .unwrap();
    let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_string();
    let (from, to) = (id(source), id(target));
    let ports = cluster.ports.clone();
    // reshard moves the source's lowest slots first: slot 0 is among them.
    let f = round(
        "cluster, live resharding of the writers' slot",
        &server,
        tag_for_slot(0),
        || {
            let out = std::process::Command::new("redis-cli")
                .args(["--cluster", "reshard", &format!("127.0.0.1:{source}")])
                .args(["--cluster-from", &from, "--cluster-to", &to])
                .args(["--cluster-slots", "100", "--cluster-yes"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "reshard failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        },
        || ports.master_of_slot(0) == Some(target),
        || {},
    )
    .await;
    check(&f, true);
}

/// kill -9 of the master Sentinel names: health goes NOT_SERVING while no
/// writable master is known, and SERVING again once Sentinel promoted a
/// replica and the service reconnected to it; writes then succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_is_not_serving_until_a_replica_is_promoted() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut set = SentinelSet::start();
    let server = service(set.urls(), RedisMode::Sentinel, 0).await;
    let mut c = server.client();
    common::api::put(&mut c, "before", v::int(1)).await;
    let old = set.master_port().unwrap();
    set.data[0].stop();
    common::wait_health(
        server.addr,
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    common::eventually!(
        Duration::from_secs(60),
        "a replica's promotion",
        set.master_port().is_some_and(|m| m != old)
    );
    common::wait_health(server.addr, ServingStatus::Serving, Duration::from_secs(30)).await;
    // (Whether "before" survived is the replication race measured above.)
    let version = common::api::put(&mut c, "after", v::int(2)).await;
    assert!(version > 0);
    assert_eq!(
        common::api::get(&mut c, "after").await.unwrap().value,
        v::int(2)
    );
}
