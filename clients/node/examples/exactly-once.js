// Exactly-once word counting, two ways (see clients/README.md); run against a
// live service:  node examples/exactly-once.js [host:port]
//
// 1. Idempotent increments: each increment carries a request id derived from
//    the input position, so re-processing the same input is answered from the
//    server's idempotency record instead of counting twice -- within its
//    window (10 minutes) and among the last 16 ids of each key
//    (--idempotency-max-ids): the worker checkpoints its input offset often
//    enough that what it replays after a crash stays inside both bounds.
// 2. Micro-batch Transact with a checkpoint: a batch's increments and the
//    checkpoint's compare-and-set commit all-or-nothing; a replayed batch (or
//    a retry whose first attempt applied) finds the checkpoint past it and is
//    skipped. Needs no idempotency window. On Redis Cluster, one {tag} per job.
//
// Each pattern processes the input, replays what a restarted worker would (the
// transact pattern: all of it; the increments: the records since its last
// checkpoint), and checks that the counts did not change.
const { randomUUID } = require('crypto');
const assert = require('assert/strict');
const { StateClient, Op, VersionMismatch, AlreadyExists } = require('..');

const TEXT = Array(20).fill('the quick brown fox jumps over the lazy dog the end'.split(' ')).flat();

// A worker that checkpoints every REPLAY_TAIL records replays at most that
// many after a crash: fewer per key than the ids each key remembers.
const REPLAY_TAIL = 10;

async function idempotentIncrements(client, job, start = 0) {
  for (let offset = start; offset < TEXT.length; offset++) {
    await client.increment(`${job}:count:${TEXT[offset]}`, 1n, { requestId: `${job}:input:${offset}` });
  }
  return `${job}:count:`;
}

async function transactBatches(client, job, batchSize = 16) {
  const checkpoint = `{${job}}:checkpoint`;
  for (let start = 0; start < TEXT.length; start += batchSize) {
    const end = Math.min(start + batchSize, TEXT.length);
    const counts = new Map();
    for (const w of TEXT.slice(start, end)) counts.set(w, (counts.get(w) ?? 0n) + 1n);
    for (;;) {
      const cp = await client.get(checkpoint);
      if (cp !== null && cp.value.offset >= BigInt(end)) break; // already applied
      const ops = [...counts].map(([w, n]) => Op.increment(`{${job}}:count:${w}`, n));
      ops.push(Op.put(checkpoint, { offset: BigInt(end) }, cp !== null ? { ifVersion: cp.version } : { ifAbsent: true }));
      try {
        await client.transact(ops);
        break;
      } catch (e) {
        if (!(e instanceof VersionMismatch || e instanceof AlreadyExists)) throw e;
        // the checkpoint moved: re-read and decide again
      }
    }
  }
  return `{${job}}:count:`;
}

async function counts(client, prefix) {
  const out = {};
  for await (const e of client.listEntries(prefix)) out[e.key.slice(prefix.length)] = e.value;
  return out;
}

(async () => {
  const client = new StateClient(process.argv[2] ?? '127.0.0.1:50051', { tenant: 'examples' });
  const expected = {};
  for (const w of TEXT) expected[w] = (expected[w] ?? 0n) + 1n;
  for (const [name, run] of [['micro-batch transact', transactBatches], ['idempotent increments', idempotentIncrements]]) {
    const job = `job-${randomUUID().slice(0, 8)}`;
    const prefix = await run(client, job);
    assert.deepEqual(await counts(client, prefix), expected, name);
    // The replay a restarted worker would do: since its last checkpoint for the
    // increments, all of it for the transact pattern (the checkpoint skips it).
    if (run === idempotentIncrements) await run(client, job, TEXT.length - REPLAY_TAIL);
    else await run(client, job);
    assert.deepEqual(await counts(client, prefix), expected, `${name}: counted twice on replay`);
    console.log(`${name}: exact after a replay (${TEXT.length} words)`);
  }
  client.close();
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
