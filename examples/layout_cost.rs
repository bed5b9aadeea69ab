//! Measures the Redis CPU cost of storage format 2 against plain GET/SET.
//!
//! Starts a private redis-server, runs each operation N times through the real
//! `RedisStore` (the same code the service runs, minus gRPC), and reads
//! `INFO commandstats` around each phase. Prints, per operation, the Redis
//! commands executed and the total Redis CPU time (usec) per operation, next
//! to plain `GET`/`SET` of the same 64-byte value. Used for the table in
//! docs/design/storage-format.md:
//!
//!     cargo run --release --example layout_cost -- 20000

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use state_service::{
    pb::{self, value::Kind},
    store::{
        Condition, DeleteOp, Expiry, Idempotency, IncrementOp, Keyspace, PutOp, RedisStore, Store,
        WriteOp,
        redis::{ConnSettings, StoreOptions},
    },
};

type Stats = BTreeMap<String, (u64, f64)>;

async fn stats(c: &mut redis::aio::MultiplexedConnection) -> Stats {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| rest.split(',').find_map(|f| f.strip_prefix(k));
            Some((
                name.to_string(),
                (
                    field("calls=")?.parse().ok()?,
                    field("usec=")?.parse().ok()?,
                ),
            ))
        })
        .collect()
}

/// Commands sent by the client. The time of commands run inside a script or
/// a MULTI/EXEC is already included in EVALSHA's or EXEC's own time, so only
/// these are summed; the nested ones are listed for the command count.
const TOP_LEVEL: &[&str] = &[
    "evalsha", "eval", "multi", "exec", "get", "set", "del", "pexpire", "scan", "mget",
];

fn diff(before: &Stats, after: &Stats, n: u64) -> (String, f64) {
    let mut cmds = Vec::new();
    let mut usec = 0.0;
    for (name, (calls, us)) in after {
        if name == "info" {
            continue;
        }
        let (c0, u0) = before.get(name).copied().unwrap_or((0, 0.0));
        if calls > &c0 {
            let per_op = (calls - c0) as f64 / n as f64;
            cmds.push(format!("{name}×{}", (per_op * 100.0).round() / 100.0));
            if TOP_LEVEL.contains(&name.as_str()) {
                usec += us - u0;
            }
        }
    }
    (cmds.join(" "), usec / n as f64)
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis_server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("redis://127.0.0.1:{port}");
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let settings = ConnSettings {
        pool_size: 1,
        connect_timeout: Duration::from_secs(2),
        pool_wait_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let options = StoreOptions {
        command_timeout: Duration::from_secs(5),
        idempotency: Idempotency {
            window: Duration::from_secs(600),
            max_ids: 16,
        },
        feed: None,
    };
    let store = RedisStore::new(&url, &settings, Keyspace::new("state"), options).unwrap();
    store.ping().await.unwrap();
    let ns = Keyspace::new("state").namespace("bench");
    let value = pb::Value {
        kind: Some(Kind::BytesValue(vec![b'x'; 64])),
    };
    let put = |key: String, condition| PutOp {
        key,
        value: value.clone(),
        expiry: Expiry::Never,
        condition,
        request_id: None,
    };
    // Warm up (script load).
    store
        .put(&ns, put("warm".into(), Condition::None))
        .await
        .unwrap();

    let mut rows = Vec::new();
    macro_rules! phase {
        ($name:expr, |$i:ident| $body:expr) => {{
            let before = stats(&mut raw).await;
            for $i in 0..n {
                let _ = $body;
            }
            let after = stats(&mut raw).await;
            let (cmds, usec) = diff(&before, &after, n);
            rows.push(($name, cmds, usec));
        }};
    }
    let blob = vec![b'x'; 64];
    let mut c = raw.clone();
    phase!("plain SET (baseline)", |i| redis::cmd("SET")
        .arg(format!("plain:{i}"))
        .arg(&blob)
        .query_async::<()>(&mut c)
        .await);
    phase!("plain GET (baseline)", |i| redis::cmd("GET")
        .arg(format!("plain:{i}"))
        .query_async::<Option<Vec<u8>>>(&mut c)
        .await);
    phase!("Put", |i| store
        .put(&ns, put(format!("k{i}"), Condition::None))
        .await);
    phase!("Put if_version (CAS)", |i| store
        .put(&ns, put(format!("k{i}"), Condition::IfVersion(1)))
        .await);
    phase!("PutWithTtl", |i| store
        .put(
            &ns,
            PutOp {
                expiry: Expiry::After(Duration::from_secs(600)),
                ..put(format!("t{i}"), Condition::None)
            }
        )
        .await);
    phase!("Get", |i| store.get(&ns, &format!("k{i}"), None).await);
    phase!("Get refresh_ttl", |i| store
        .get(&ns, &format!("t{i}"), Some(Duration::from_secs(600)))
        .await);
    phase!("Increment", |i| store
        .increment(
            &ns,
            IncrementOp {
                key: format!("n{}", i % 100),
                delta: 1,
                ttl: None,
                request_id: None,
            }
        )
        .await);
    phase!("Delete", |i| store
        .delete(
            &ns,
            DeleteOp {
                key: format!("k{i}"),
                condition: Condition::None,
                request_id: None,
            }
        )
        .await);
    phase!("Transact (2 puts)", |i| store
        .transact(
            &ns,
            vec![
                WriteOp::Put(put(format!("a{i}"), Condition::None)),
                WriteOp::Put(put(format!("b{i}"), Condition::None))
            ],
            None
        )
        .await);
    // Batches: per key, so that they compare with the single commands.
    let batch = 100u64;
    let keys = |i: u64| {
        (0..batch)
            .map(|j| format!("k{}", (i * batch + j) % n))
            .collect::<Vec<_>>()
    };
    let before = stats(&mut raw).await;
    for i in 0..n / batch {
        let ops = keys(i)
            .into_iter()
            .map(|k| put(k, Condition::None))
            .collect();
        let _ = store.batch_put(&ns, ops).await;
    }
    let (cmds, usec) = diff(&before, &stats(&mut raw).await, n);
    rows.push(("BatchPut of 100 (per key)", cmds, usec));
    let before = stats(&mut raw).await;
    for i in 0..n / batch {
        let _ = store.batch_get(&ns, &keys(i)).await;
    }
    let (cmds, usec) = diff(&before, &stats(&mut raw).await, n);
    rows.push(("BatchGet of 100 (per key)", cmds, usec));

    println!("Redis CPU per operation (INFO commandstats, {n} ops each, 64-byte value;");
    println!("usec counts only top-level commands, which include their nested ones):\n");
    println!("| operation | Redis commands per op | usec per op | × plain |");
    println!("|---|---|---|---|");
    let base_set = rows[0].2;
    let base_get = rows[1].2;
    for (name, cmds, usec) in &rows {
        let base = if name.contains("Get") || name.contains("GET") {
            base_get
        } else {
            base_set
        };
        println!("| {name} | {cmds} | {usec:.2} | {:.1} |", usec / base);
    }
    let _ = redis_server.kill();
    let _ = redis_server.wait();
}
