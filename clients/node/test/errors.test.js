'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Metadata, status } = require('@grpc/grpc-js');
const e = require('../dist');

// A minimal protobuf encoder, to build grpc-status-details-bin by hand.
function varint(n) {
  let v = BigInt.asUintN(64, BigInt(n));
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}
function field(num, payload) {
  if (typeof payload === 'number' || typeof payload === 'bigint') {
    return Buffer.concat([varint(num << 3), varint(payload)]);
  }
  const b = Buffer.from(payload);
  return Buffer.concat([varint((num << 3) | 2), varint(b.length), b]);
}
function errorInfo(reason, meta = {}, domain = 'stateservice.v1') {
  const entries = Object.entries(meta).map(([k, v]) => field(3, Buffer.concat([field(1, k), field(2, v)])));
  const body = Buffer.concat([field(1, reason), field(2, domain), ...entries]);
  return Buffer.concat([field(1, 'type.googleapis.com/google.rpc.ErrorInfo'), field(2, body)]);
}
function retryInfo(seconds, nanos) {
  const dur = Buffer.concat([field(1, seconds), field(2, nanos)]);
  return Buffer.concat([field(1, 'type.googleapis.com/google.rpc.RetryInfo'), field(2, field(1, dur))]);
}
function typed(code, ...details) {
  const md = new Metadata();
  md.set('grpc-status-details-bin', Buffer.concat([field(1, code), field(2, 'msg'), ...details.map((d) => field(3, d))]));
  return e.fromServiceError({ code, details: 'msg', metadata: md });
}

test('version mismatch carries the current version as a bigint', () => {
  const err = typed(status.ABORTED, errorInfo('VERSION_MISMATCH', { key: 'k', current_version: '18446744073709551615' }));
  assert.ok(err instanceof e.VersionMismatch && err instanceof e.Aborted && err instanceof e.StateError);
  assert.equal(err.currentVersion, 18446744073709551615n);
  assert.equal(err.key, 'k');
  assert.equal(err.reason, 'VERSION_MISMATCH');
  assert.equal(err.transient, false);
});

for (const [reason, cls] of [
  ['ALREADY_EXISTS', e.AlreadyExists],
  ['NOT_FOUND', e.NotFound],
  ['NOT_AN_INTEGER', e.NotAnInteger],
  ['INCREMENT_OVERFLOW', e.IncrementOverflow],
  ['INVALID_STORED_VALUE', e.InvalidStoredValue],
  ['CROSS_SLOT', e.CrossSlot],
  ['REQUEST_ID_REUSED', e.RequestIdReused],
]) {
  test(`FAILED_PRECONDITION ${reason} maps to ${cls.name}`, () => {
    const err = typed(status.FAILED_PRECONDITION, errorInfo(reason, { op_index: '2' }));
    assert.equal(err.constructor, cls);
    assert.ok(err instanceof e.ConditionFailed);
    assert.equal(err.opIndex, 2);
  });
}

test('NOT_AN_INTEGER names the stored type', () => {
  assert.equal(typed(status.FAILED_PRECONDITION, errorInfo('NOT_AN_INTEGER', { stored_type: 'string' })).storedType, 'string');
});

test('LIMIT_EXCEEDED names the setting and is an InvalidArgument', () => {
  const err = typed(status.INVALID_ARGUMENT, errorInfo('LIMIT_EXCEEDED', { setting: '--max-value-bytes', limit: '1048576' }));
  assert.ok(err instanceof e.LimitExceeded && err instanceof e.InvalidArgument);
  assert.equal(err.setting, '--max-value-bytes');
  assert.equal(err.limit, 1048576n);
});

test('RetryInfo gives the delay and makes exhaustion transient', () => {
  const err = typed(status.RESOURCE_EXHAUSTED, retryInfo(1, 500_000_000));
  assert.ok(err instanceof e.ResourceExhausted);
  assert.equal(err.retryAfterMs, 1500);
  assert.equal(err.transient, true);
});

test('exhaustion without a retryable reason is not transient', () => {
  assert.equal(typed(status.RESOURCE_EXHAUSTED).transient, false);
  assert.equal(typed(status.RESOURCE_EXHAUSTED, errorInfo('RESPONSE_TOO_LARGE')).transient, false);
  assert.equal(typed(status.RESOURCE_EXHAUSTED, errorInfo('OVERLOADED')).transient, true);
});

for (const [code, cls, transient] of [
  [status.UNAVAILABLE, e.Unavailable, true],
  [status.DEADLINE_EXCEEDED, e.DeadlineExceeded, true],
  [status.UNAUTHENTICATED, e.Unauthenticated, false],
  [status.PERMISSION_DENIED, e.PermissionDenied, false],
  [status.INVALID_ARGUMENT, e.InvalidArgument, false],
  [status.INTERNAL, e.InternalError, false],
  [status.UNKNOWN, e.InternalError, false],
]) {
  test(`status ${code} without details maps to ${cls.name}`, () => {
    const err = e.fromServiceError({ code, details: 'boom', metadata: new Metadata() });
    assert.equal(err.constructor, cls);
    assert.equal(err.reason, undefined);
    assert.equal(err.transient, transient);
  });
}

test('ErrorInfo of another domain is ignored', () => {
  const err = typed(status.ABORTED, errorInfo('VERSION_MISMATCH', {}, 'other.example'));
  assert.equal(err.constructor, e.Aborted);
});

test('corrupt details do not hide the status', () => {
  const md = new Metadata();
  md.set('grpc-status-details-bin', Buffer.from([0x0a, 0xff]));
  const err = e.fromServiceError({ code: status.ABORTED, details: 'm', metadata: md });
  assert.equal(err.constructor, e.Aborted);
  assert.equal(err.message, 'm');
});

test('batch item failures become typed errors', () => {
  const err = e.fromConditionFailure('k', 'VERSION_MISMATCH', 9n, 'lost');
  assert.ok(err instanceof e.VersionMismatch);
  assert.equal(err.currentVersion, 9n);
});
