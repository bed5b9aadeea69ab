"""Exactly-once word counting, two ways; run against a live service:

    python examples/exactly_once.py [host:port]

1. Idempotent increments: each increment carries a request id derived from
   the input position ("<source>:<offset>"), so re-processing the same input
   (a crashed worker replaying from its last checkpoint, a retry after a lost
   reply) is answered from the server's idempotency record instead of
   counting twice -- within the server's idempotency window (10 minutes) and
   among the last 16 ids of each key (--idempotency-max-ids). So the worker
   checkpoints its input offset often enough that what it replays after a
   crash stays inside both bounds; here every REPLAY_TAIL records.

2. Micro-batch Transact with a checkpoint: each batch's increments and the
   checkpoint's compare-and-set commit in one all-or-nothing transaction. A
   replayed batch finds the checkpoint already past it and is skipped; a
   retried transaction whose first attempt did apply fails its checkpoint
   condition and is skipped the same way. This needs no idempotency window,
   only the transaction. On Redis Cluster, give every key the same {tag}.

Each pattern processes the input, then replays what a restarted worker would
(the transact pattern: all of it; the increments: the records since its last
checkpoint), and checks that the counts did not change.
"""

import collections
import sys
import uuid

from state_service_client import AlreadyExists, Op, StateClient, VersionMismatch

TEXT = "the quick brown fox jumps over the lazy dog the end".split() * 20


# A worker that checkpoints every REPLAY_TAIL records replays at most that
# many after a crash: fewer per key than the ids each key remembers.
REPLAY_TAIL = 10


def idempotent_increments(client, job, start=0):
    """Counts TEXT[start:]; returns the prefix of the count keys."""
    for offset, word in enumerate(TEXT[start:], start):
        client.increment(f"{job}:count:{word}", 1, request_id=f"{job}:input:{offset}")
    return f"{job}:count:"


def transact_batches(client, job, batch_size=16):
    """Returns the prefix of the count keys."""
    checkpoint = f"{{{job}}}:checkpoint"
    for start in range(0, len(TEXT), batch_size):
        end = min(start + batch_size, len(TEXT))
        counts = collections.Counter(TEXT[start:end])
        while True:
            cp = client.get(checkpoint)
            if cp is not None and cp.value["offset"] >= end:
                break  # already applied: a replay, or our own retry whose reply was lost
            ops = [Op.increment(f"{{{job}}}:count:{w}", n) for w, n in counts.items()]
            cond = {"if_version": cp.version} if cp is not None else {"if_absent": True}
            ops.append(Op.put(checkpoint, {"offset": end}, **cond))
            try:
                client.transact(ops)
                break
            except (VersionMismatch, AlreadyExists):
                continue  # the checkpoint moved: re-read and decide again
    return f"{{{job}}}:count:"


def counts(client, prefix):
    return {e.key.rsplit(":", 1)[1]: e.value for e in client.list_entries(prefix)}


def main():
    client = StateClient(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051", tenant="examples")
    expected = dict(collections.Counter(TEXT))
    for name, run in [("micro-batch transact", transact_batches), ("idempotent increments", idempotent_increments)]:
        job = f"job-{uuid.uuid4().hex[:8]}"
        prefix = run(client, job)
        first = counts(client, prefix)
        if run is idempotent_increments:
            run(client, job, start=len(TEXT) - REPLAY_TAIL)  # replay since the last checkpoint
        else:
            run(client, job)  # a full replay: the checkpoint skips every batch
        second = counts(client, prefix)
        assert first == expected, f"{name}: {first} != {expected}"
        assert second == expected, f"{name}: counted twice on replay: {second}"
        print(f"{name}: exact after a replay ({sum(second.values())} words)")


if __name__ == "__main__":
    main()
