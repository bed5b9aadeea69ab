'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { StateClient, serviceConfig, channelOptions, backoffMs, DEFAULT_RETRY, Unavailable, InvalidArgument } = require('../dist');
const proto = require('../dist/proto');

test('the packaged service config is the repository one', () => {
  const repo = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'service_config.json'), 'utf8'));
  assert.deepEqual(serviceConfig(), repo);
  assert.equal(serviceConfig(false).methodConfig.length, 1);
  assert.equal(JSON.parse(channelOptions()['grpc.service_config']).methodConfig.length, 2);
});

test('every unary RPC of the proto has a method entry', () => {
  assert.deepEqual(Object.keys(proto.METHODS).sort(), proto.unaryRpcNames().sort());
});

test('backoff is jittered and capped', () => {
  for (let a = 0; a < 40; a++) {
    const base = Math.min(50 * 2 ** a, 2000);
    const d = backoffMs(DEFAULT_RETRY, a);
    assert.ok(d >= base / 2 && d <= base, `${a}: ${d}`);
  }
});

test('conflicting conditions are refused before anything is sent', async () => {
  const c = new StateClient('127.0.0.1:1');
  await assert.rejects(c.put('k', 1n, { ifAbsent: true, ifVersion: 3n }), InvalidArgument);
  await assert.rejects(c.increment('k', 2 ** 60), InvalidArgument);
  c.close();
});

test('an unreachable server is Unavailable after the retry budget', async () => {
  const c = new StateClient('127.0.0.1:1', { retry: { maxElapsedMs: 300 } });
  await assert.rejects(c.get('k'), Unavailable);
  c.close();
});
