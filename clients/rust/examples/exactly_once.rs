//! Exactly-once word counting, two ways (see clients/README.md):
//! `cargo run -p state-client --example exactly_once [host:port]`
//!
//! 1. Idempotent increments: each increment carries a request id derived from
//!    the input position, so re-processing the same input is answered from the
//!    server's idempotency record instead of counting twice -- within its
//!    window (10 minutes) and among the last 16 ids of each key
//!    (--idempotency-max-ids): the worker checkpoints its input offset often
//!    enough that what it replays after a crash stays inside both bounds.
//! 2. Micro-batch Transact with a checkpoint: a batch's increments and the
//!    checkpoint's compare-and-set commit all-or-nothing; a replayed batch (or
//!    a retry whose first attempt applied) finds the checkpoint past it and is
//!    skipped. Needs no idempotency window. On Redis Cluster, one {tag} per job.
//!
//! Each pattern processes the input, replays what a restarted worker would
//! (the transact pattern: all of it; the increments: the records since its
//! last checkpoint), and checks that the counts did not change.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use state_client::{
    ClientConfig, Condition, ErrorKind, IncrementOptions, Op, StateClient, Value, new_request_id,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn text() -> Vec<&'static str> {
    "the quick brown fox jumps over the lazy dog the end"
        .split(' ')
        .cycle()
        .take(220)
        .collect()
}

/// A worker that checkpoints every `REPLAY_TAIL` records replays at most that
/// many after a crash: fewer per key than the ids each key remembers.
const REPLAY_TAIL: usize = 10;

async fn idempotent_increments(
    client: &StateClient,
    job: &str,
    start: usize,
) -> Result<String, BoxError> {
    for (offset, word) in text().into_iter().enumerate().skip(start) {
        let options = IncrementOptions {
            ttl: None,
            request_id: Some(format!("{job}:input:{offset}")),
        };
        client
            .increment_with(format!("{job}:count:{word}"), 1, options)
            .await?;
    }
    Ok(format!("{job}:count:"))
}

async fn transact_batches(client: &StateClient, job: &str) -> Result<String, BoxError> {
    let checkpoint = format!("{{{job}}}:checkpoint");
    let words = text();
    for (batch, chunk) in words.chunks(16).enumerate() {
        let end = (batch * 16 + chunk.len()) as i64;
        let mut counts = BTreeMap::<&str, i64>::new();
        for w in chunk {
            *counts.entry(w).or_default() += 1;
        }
        loop {
            let cp = client.get(checkpoint.clone()).await?;
            let done = cp
                .as_ref()
                .and_then(|e| e.value.as_map()?.get("offset")?.as_int())
                .unwrap_or(0);
            if done >= end {
                break; // already applied: a replay, or our own retry whose reply was lost
            }
            let mut ops: Vec<Op> = counts
                .iter()
                .map(|(w, n)| Op::increment(format!("{{{job}}}:count:{w}"), *n))
                .collect();
            let condition = cp.map_or(Condition::IfAbsent, |e| Condition::IfVersion(e.version));
            ops.push(Op::put(checkpoint.clone(), Value::map([("offset", end)])).when(condition));
            match client.transact(ops).await {
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::VersionMismatch | ErrorKind::AlreadyExists
                    ) =>
                {
                    continue; // the checkpoint moved: re-read and decide again
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(format!("{{{job}}}:count:"))
}

async fn counts(client: &StateClient, prefix: &str) -> Result<BTreeMap<String, Value>, BoxError> {
    let entries: Vec<_> = client.list_entries(prefix).try_collect().await?;
    Ok(entries
        .into_iter()
        .map(|e| (e.key[prefix.len()..].to_string(), e.value))
        .collect())
}

/// Runs both patterns against `addr`, each with the replay a restarted worker does.
pub async fn run(addr: &str) -> Result<(), BoxError> {
    let client = StateClient::connect(ClientConfig::new(addr).tenant("examples")).await?;
    let mut expected = BTreeMap::new();
    for w in text() {
        *expected.entry(w.to_string()).or_insert(0i64) += 1;
    }
    let expected: BTreeMap<String, Value> = expected
        .into_iter()
        .map(|(k, v)| (k, Value::Int(v)))
        .collect();
    for name in ["micro-batch transact", "idempotent increments"] {
        let job = format!("job-{}", &new_request_id()[..8]);
        for pass in ["first run", "replay"] {
            // The replay a restarted worker would do: since its last
            // checkpoint for the increments, all of it for the transact
            // pattern (the checkpoint skips it).
            let start = if pass == "replay" {
                text().len() - REPLAY_TAIL
            } else {
                0
            };
            let prefix = match name {
                "micro-batch transact" => transact_batches(&client, &job).await?,
                _ => idempotent_increments(&client, &job, start).await?,
            };
            let got = counts(&client, &prefix).await?;
            if got != expected {
                return Err(format!("{name}, {pass}: counts {got:?} != {expected:?}").into());
            }
        }
        println!("{name}: exact after a replay ({} words)", text().len());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    run(&addr).await
}
