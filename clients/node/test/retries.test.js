'use strict';
// The retry loop against a fake in-process server: a retried write resends its
// request id; what is not safe to repeat is attempted once.
const test = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const { StateClient, Unavailable, ConditionFailed } = require('../dist');
const proto = require('../dist/proto');

const FAST = { initialBackoffMs: 1, maxBackoffMs: 5, maxElapsedMs: 5000 };
const NO_CHANNEL_RETRIES = { 'grpc.enable_retries': 0 };

function method(name) {
  const [Req, Resp] = proto.METHODS[name];
  return {
    path: `/${proto.SERVICE}/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (m) => Buffer.from(Req.encode(m).finish()),
    requestDeserialize: (b) => Req.decode(b),
    responseSerialize: (m) => Buffer.from(Resp.encode(m).finish()),
    responseDeserialize: (b) => Resp.decode(b),
  };
}

/** Fails the first `failures` calls with `code`, then answers. */
async function fakeServer(failures, code = grpc.status.UNAVAILABLE) {
  const seen = [];
  const server = new grpc.Server();
  server.addService(
    { Increment: method('Increment'), BatchDelete: method('BatchDelete') },
    {
      Increment(call, cb) {
        seen.push(call.request.request_id);
        if (seen.length <= failures) cb({ code, details: 'injected' });
        else cb(null, { value: 1, version: 1 });
      },
      BatchDelete(call, cb) {
        seen.push('');
        cb({ code, details: 'injected' });
      },
    },
  );
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { addr: `127.0.0.1:${port}`, seen, stop: () => server.forceShutdown() };
}

test('retries of a write reuse its request id', async () => {
  const f = await fakeServer(3);
  const c = new StateClient(f.addr, { retry: FAST, channelOptions: NO_CHANNEL_RETRIES });
  assert.equal((await c.increment('k')).value, 1n);
  assert.equal(f.seen.length, 4);
  assert.ok(f.seen[0] && new Set(f.seen).size === 1, String(f.seen));
  c.close();
  f.stop();
});

test('without request ids an increment is attempted once', async () => {
  const f = await fakeServer(1);
  const c = new StateClient(f.addr, { retry: FAST, requestIds: false, channelOptions: NO_CHANNEL_RETRIES });
  await assert.rejects(c.increment('k'), Unavailable);
  assert.deepEqual(f.seen, ['']);
  c.close();
  f.stop();
});

test('batchDelete is attempted once', async () => {
  const f = await fakeServer(1);
  const c = new StateClient(f.addr, { retry: FAST, channelOptions: NO_CHANNEL_RETRIES });
  await assert.rejects(c.batchDelete(['a']), Unavailable);
  assert.equal(f.seen.length, 1);
  c.close();
  f.stop();
});

test('a failed condition is not retried', async () => {
  const f = await fakeServer(1, grpc.status.FAILED_PRECONDITION);
  const c = new StateClient(f.addr, { retry: FAST, channelOptions: NO_CHANNEL_RETRIES });
  await assert.rejects(c.increment('k'), ConditionFailed);
  assert.equal(f.seen.length, 1);
  c.close();
  f.stop();
});

test("the channel's retry policy resends the same request id", async () => {
  const f = await fakeServer(2);
  const c = new StateClient(f.addr, { retry: { maxElapsedMs: 0 } });
  assert.equal((await c.increment('k')).value, 1n);
  assert.equal(f.seen.length, 3);
  assert.equal(new Set(f.seen).size, 1);
  c.close();
  f.stop();
});
