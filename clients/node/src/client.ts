// The client: one promise-returning method per RPC in native values, a
// bounded retry loop for calls that are safe to repeat, request ids on every
// write, and the update() read-modify-write helper.
import { randomUUID } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';

import { AlreadyExists, InternalError, InvalidArgument, StateError, VersionMismatch, fromConditionFailure, fromServiceError } from './errors';
import { Long, METHODS, SERVICE } from './proto';
import { Value, WireValue, fromWire, toBigInt, toWire } from './values';

/** Default per-attempt deadline: 10 s. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** The server decodes requests up to max(max-value-bytes + max-key-bytes +
 * overhead, 4 MiB): 4 MiB with its default limits. */
export const DEFAULT_MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024;
/** The server does not cap responses, so neither does the client (-1). */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = -1;

const SERVICE_CONFIG = JSON.parse(fs.readFileSync(path.join(__dirname, 'service_config.json'), 'utf8'));

/** The gRPC service config (retry policy). Without writes only the
 * always-safe methods (reads, Expire, Persist) are retried: use that for a
 * plain stub that does not set request ids. */
export function serviceConfig(includeWrites = true): any {
  const cfg = JSON.parse(JSON.stringify(SERVICE_CONFIG));
  if (!includeWrites) cfg.methodConfig = cfg.methodConfig.slice(0, 1);
  return cfg;
}

/** Channel options matching the server: keepalive (ping every 30 s, 10 s to
 * answer), message sizes, the retry policy, and reconnect backoff capped at
 * 2 s (the default grows to 120 s, keeping a client away long after a
 * restarted server is back). */
export function channelOptions(opts: {
  includeWrites?: boolean;
  maxSendMessageBytes?: number;
  maxReceiveMessageBytes?: number;
} = {}): grpc.ChannelOptions {
  return {
    'grpc.service_config': JSON.stringify(serviceConfig(opts.includeWrites ?? true)),
    'grpc.enable_retries': 1,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_send_message_length': opts.maxSendMessageBytes ?? DEFAULT_MAX_SEND_MESSAGE_BYTES,
    'grpc.max_receive_message_length': opts.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 2_000,
  };
}

export interface RetryPolicy {
  /** Stop retrying once this long has passed since the first attempt. Default 30 000. */
  maxElapsedMs: number;
  /** Default 50. */
  initialBackoffMs: number;
  /** Default 2000. */
  maxBackoffMs: number;
  /** Default 2. */
  multiplier: number;
  /** Compare-and-set attempts of update() before it throws the last VersionMismatch. Default 16. */
  updateAttempts: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxElapsedMs: 30_000,
  initialBackoffMs: 50,
  maxBackoffMs: 2_000,
  multiplier: 2,
  updateAttempts: 16,
};

/** Delay before retry `attempt` (0-based), uniformly in [b/2, b]. */
export function backoffMs(p: RetryPolicy, attempt: number): number {
  const base = Math.min(p.initialBackoffMs * Math.max(p.multiplier, 1) ** Math.min(attempt, 64), p.maxBackoffMs);
  return base * (0.5 + Math.random() * 0.5);
}

export interface TlsOptions {
  /** CA certificate(s), PEM. Default: the system roots. */
  ca?: Buffer | string;
  /** Client certificate and key, PEM (mutual TLS: its CN names the tenant). */
  cert?: Buffer | string;
  key?: Buffer | string;
  /** Name to verify the server certificate against (default: the address's host). */
  serverName?: string;
}

export interface ClientOptions {
  /** Sent as x-tenant-id. */
  tenant?: string;
  /** Sent as authorization: Bearer <token>. */
  token?: string;
  /** true or TLS settings; https:// addresses imply TLS. */
  tls?: boolean | TlsOptions;
  /** Deadline of each attempt. Default 10 000 ms. */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Give every write a fresh request id (UUID) unless one is passed. Default true. */
  requestIds?: boolean;
  maxSendMessageBytes?: number;
  maxReceiveMessageBytes?: number;
  /** Extra grpc-js channel options (override the defaults). */
  channelOptions?: grpc.ChannelOptions;
}

/** A stored key as read back. */
export interface Entry {
  key: string;
  value: Value;
  /** Changes on every write; pass it as ifVersion. */
  version: bigint;
  /** Remaining time to live in ms; null: no expiry. */
  ttlMs: number | null;
}

export interface Counter {
  value: bigint;
  version: bigint;
}

export interface Conditions {
  ifAbsent?: boolean;
  ifExists?: boolean;
  ifVersion?: bigint;
}

export interface WriteOptions extends Conditions {
  /** put only: keep the key's existing expiry. */
  keepTtl?: boolean;
  /** The idempotency key; default a fresh UUID. Reuse it to retry the same logical write. */
  requestId?: string;
}

export interface PutItem extends WriteOptions {
  key: string;
  value: Value;
  ttlMs?: number;
}

export type Op =
  | ({ kind: 'put'; key: string; value: Value; keepTtl?: boolean } & Conditions)
  | ({ kind: 'putWithTtl'; key: string; value: Value; ttlMs: number } & Conditions)
  | ({ kind: 'delete'; key: string } & Conditions)
  | { kind: 'increment'; key: string; delta: bigint | number; ttlMs?: number };

/** Transaction op builders. */
export const Op = {
  put: (key: string, value: Value, c: Conditions & { keepTtl?: boolean } = {}): Op => ({ kind: 'put', key, value, ...c }),
  putWithTtl: (key: string, value: Value, ttlMs: number, c: Conditions = {}): Op => ({ kind: 'putWithTtl', key, value, ttlMs, ...c }),
  delete: (key: string, c: Conditions = {}): Op => ({ kind: 'delete', key, ...c }),
  increment: (key: string, delta: bigint | number = 1n, ttlMs?: number): Op => ({ kind: 'increment', key, delta, ttlMs }),
};

/** Per op: a version (put), whether it existed (delete) or a Counter (increment). */
export type OpResult = bigint | boolean | Counter;

function duration(ms: number): { seconds: unknown; nanos: number } {
  if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgument(`a duration must be a non-negative number of ms, got ${ms}`);
  const whole = Math.round(ms);
  return { seconds: Long.fromString(String(Math.floor(whole / 1000))), nanos: (whole % 1000) * 1_000_000 };
}

function condition(c: Conditions): { condition?: object; has: boolean } {
  const n = [c.ifAbsent, c.ifExists, c.ifVersion !== undefined].filter(Boolean).length;
  if (n > 1) throw new InvalidArgument('give at most one of ifAbsent, ifExists, ifVersion');
  if (c.ifAbsent) return { condition: { if_absent: {} }, has: true };
  if (c.ifExists) return { condition: { if_exists: {} }, has: true };
  if (c.ifVersion !== undefined) return { condition: { if_version: Long.fromString(BigInt(c.ifVersion).toString(), true) }, has: true };
  return { has: false };
}

function int64(d: bigint | number): unknown {
  if (typeof d === 'number' && !Number.isSafeInteger(d)) {
    throw new InvalidArgument(`delta ${d} is not a safe integer: pass a bigint`);
  }
  const b = BigInt(d);
  if (b < -(2n ** 63n) || b > 2n ** 63n - 1n) throw new InvalidArgument(`delta ${d} is outside int64`);
  return Long.fromString(b.toString());
}

function entry(e: any): Entry {
  const ttlMs = e.ttl ? Number(toBigInt(e.ttl.seconds)) * 1000 + Math.floor((e.ttl.nanos ?? 0) / 1e6) : null;
  return { key: e.key, value: fromWire(e.value), version: toBigInt(e.version), ttlMs };
}

function getResult(r: any): Entry | null {
  return r.found ? entry(r.entry) : null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A client for stateservice.v1.StateService.
 *
 * Every write gets a fresh request id (a UUID reused by that write's retries)
 * unless you pass requestId or build the client with requestIds: false.
 * Calls that are safe to repeat (reads, Expire/Persist, writes with a request
 * id or a condition) are retried on UNAVAILABLE, DEADLINE_EXCEEDED and
 * retryable RESOURCE_EXHAUSTED with jittered backoff for up to
 * retry.maxElapsedMs; batchDelete is never retried.
 */
export class StateClient {
  private readonly client: grpc.Client;
  private readonly metadata: grpc.Metadata;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly requestIds: boolean;

  constructor(address: string, options: ClientOptions = {}) {
    let target = address;
    let tls = options.tls;
    for (const scheme of ['http://', 'https://']) {
      if (target.startsWith(scheme)) {
        target = target.slice(scheme.length);
        if (tls === undefined) tls = scheme === 'https://';
      }
    }
    const chOpts: grpc.ChannelOptions = {
      ...channelOptions({
        includeWrites: options.requestIds ?? true,
        maxSendMessageBytes: options.maxSendMessageBytes,
        maxReceiveMessageBytes: options.maxReceiveMessageBytes,
      }),
    };
    let creds: grpc.ChannelCredentials;
    if (tls) {
      const t: TlsOptions = tls === true ? {} : tls;
      const buf = (x?: Buffer | string) => (x === undefined ? null : Buffer.from(x));
      creds = grpc.credentials.createSsl(buf(t.ca), buf(t.key), buf(t.cert));
      if (t.serverName) chOpts['grpc.ssl_target_name_override'] = t.serverName;
    } else {
      creds = grpc.credentials.createInsecure();
    }
    this.client = new grpc.Client(target, creds, { ...chOpts, ...(options.channelOptions ?? {}) });
    this.metadata = new grpc.Metadata();
    if (options.token !== undefined) this.metadata.set('authorization', `Bearer ${options.token}`);
    if (options.tenant !== undefined) this.metadata.set('x-tenant-id', options.tenant);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.retry = { ...DEFAULT_RETRY, ...(options.retry ?? {}) };
    this.requestIds = options.requestIds ?? true;
  }

  close(): void {
    this.client.close();
  }

  /** The key's entry, or null if absent. */
  async get(key: string): Promise<Entry | null> {
    return getResult(await this.call('Get', { key }, true));
  }

  /** Stores a value (no expiry unless keepTtl); resolves to the new version. */
  async put(key: string, value: Value, opts: WriteOptions = {}): Promise<bigint> {
    const req = this.putRequest(key, value, opts);
    return toBigInt((await this.call('Put', req.msg, req.safe)).version);
  }

  /** Stores a value that expires after ttlMs (>= 1). */
  async putWithTtl(key: string, value: Value, ttlMs: number, opts: Omit<WriteOptions, 'keepTtl'> = {}): Promise<bigint> {
    const c = condition(opts);
    const request_id = this.requestId(opts.requestId);
    const msg = { key, value: toWire(value), ttl: duration(ttlMs), condition: c.condition, request_id };
    return toBigInt((await this.call('PutWithTtl', msg, c.has || request_id !== '')).version);
  }

  /** Deletes a key; true if it existed. */
  async delete(key: string, opts: Omit<WriteOptions, 'keepTtl' | 'ifAbsent'> = {}): Promise<boolean> {
    const c = condition(opts);
    const request_id = this.requestId(opts.requestId);
    return (await this.call('Delete', { key, condition: c.condition, request_id }, c.has || request_id !== '')).deleted === true;
  }

  /** Adds delta to an int (absent: starts at 0, with ttlMs if given). */
  async increment(key: string, delta: bigint | number = 1n, opts: { ttlMs?: number; requestId?: string } = {}): Promise<Counter> {
    const request_id = this.requestId(opts.requestId);
    const msg = { key, delta: int64(delta), ttl: opts.ttlMs === undefined ? undefined : duration(opts.ttlMs), request_id };
    const r = await this.call('Increment', msg, request_id !== '');
    return { value: toBigInt(r.value), version: toBigInt(r.version) };
  }

  /** Sets the expiry of an existing key; false if absent. */
  async expire(key: string, ttlMs: number): Promise<boolean> {
    return (await this.call('Expire', { key, ttl: duration(ttlMs) }, true)).existed === true;
  }

  /** Removes a key's expiry; false if absent. */
  async persist(key: string): Promise<boolean> {
    return (await this.call('Persist', { key }, true)).existed === true;
  }

  /** Entries (null where absent) in request order, one consistent snapshot. */
  async batchGet(keys: string[]): Promise<(Entry | null)[]> {
    return ((await this.call('BatchGet', { keys }, true)).results ?? []).map(getResult);
  }

  /** Writes many keys, NOT atomically: per item its new version or the typed
   * error of its failed condition (returned, not thrown). */
  async batchPut(items: PutItem[]): Promise<(bigint | StateError)[]> {
    let safe = true;
    const wire = items.map((it) => {
      const c = condition(it);
      const request_id = this.requestId(it.requestId);
      safe = safe && (c.has || request_id !== '');
      return {
        key: it.key,
        value: toWire(it.value),
        ttl: it.ttlMs === undefined ? undefined : duration(it.ttlMs),
        condition: c.condition,
        keep_ttl: it.keepTtl ?? false,
        request_id,
      };
    });
    const resp = await this.call('BatchPut', { items: wire }, safe);
    return (resp.results ?? []).map((r: any, i: number) =>
      r.outcome === 'version'
        ? toBigInt(r.version)
        : fromConditionFailure(items[i].key, r.failure.reason, toBigInt(r.failure.current_version), r.failure.message),
    );
  }

  /** Deletes many keys; per key whether it existed. Never retried (a repeat
   * would report keys the first attempt deleted as absent). */
  async batchDelete(keys: string[]): Promise<boolean[]> {
    return ((await this.call('BatchDelete', { keys }, false)).results ?? []).map((r: any) => r.deleted === true);
  }

  /** Applies all ops or none. A failed check throws with opIndex. */
  async transact(ops: Op[], opts: { requestId?: string } = {}): Promise<OpResult[]> {
    const wireOps = ops.map((op) => {
      switch (op.kind) {
        case 'put':
          return { put: { key: op.key, value: toWire(op.value), condition: condition(op).condition, keep_ttl: op.keepTtl ?? false } };
        case 'putWithTtl':
          return { put_with_ttl: { key: op.key, value: toWire(op.value), ttl: duration(op.ttlMs), condition: condition(op).condition } };
        case 'delete':
          return { delete: { key: op.key, condition: condition(op).condition } };
        case 'increment':
          return { increment: { key: op.key, delta: int64(op.delta), ttl: op.ttlMs === undefined ? undefined : duration(op.ttlMs) } };
        default:
          throw new InvalidArgument(`unknown op kind ${(op as { kind: string }).kind}`);
      }
    });
    const request_id = this.requestId(opts.requestId);
    const resp = await this.call('Transact', { ops: wireOps, request_id }, request_id !== '');
    return (resp.results ?? []).map((r: any): OpResult => {
      switch (r.result) {
        case 'put':
          return toBigInt(r.put.version);
        case 'delete':
          return r.delete.deleted === true;
        case 'increment':
          return { value: toBigInt(r.increment.value), version: toBigInt(r.increment.version) };
        default:
          throw new InternalError('Transact result without an outcome');
      }
    });
  }

  /**
   * Read-modify-write with compare-and-set: fn(current) — undefined when the
   * key is absent — gives the new value, written only if the key still has
   * the version read; on a lost race it re-reads and calls fn again, up to
   * retry.updateAttempts times with jittered backoff. Keeps the expiry.
   * fn may run several times: keep it a pure function of its input, absolute
   * where possible ("offset = 500", not "+= 100").
   */
  async update(key: string, fn: (current: Value | undefined) => Value | Promise<Value>): Promise<{ value: Value; version: bigint }> {
    const attempts = Math.max(1, this.retry.updateAttempts);
    for (let attempt = 0; ; attempt++) {
      const current = await this.get(key);
      const value = await fn(current === null ? undefined : current.value);
      const opts: WriteOptions = current === null ? { ifAbsent: true, keepTtl: true } : { ifVersion: current.version, keepTtl: true };
      try {
        return { value, version: await this.put(key, value, opts) };
      } catch (e) {
        if (!(e instanceof VersionMismatch || e instanceof AlreadyExists) || attempt + 1 >= attempts) throw e;
        await sleep(backoffMs(this.retry, attempt));
      }
    }
  }

  /** The tenant's keys starting with prefix, paging transparently. */
  async *list(prefix = '', opts: { pageSize?: number } = {}): AsyncGenerator<string> {
    for await (const page of this.pages(prefix, opts.pageSize ?? 0, false)) yield* page.keys ?? [];
  }

  /** Like list() with each key's value, version and TTL. */
  async *listEntries(prefix = '', opts: { pageSize?: number } = {}): AsyncGenerator<Entry> {
    for await (const page of this.pages(prefix, opts.pageSize ?? 0, true)) {
      for (const e of page.entries ?? []) yield entry(e);
    }
  }

  private async *pages(prefix: string, page_size: number, include_values: boolean): AsyncGenerator<any> {
    let page_token = '';
    for (;;) {
      const page = await this.call('List', { prefix, page_size, page_token, include_values }, true);
      yield page;
      page_token = page.next_page_token ?? '';
      if (!page_token) return;
    }
  }

  private putRequest(key: string, value: Value, opts: WriteOptions): { msg: object; safe: boolean } {
    const c = condition(opts);
    const request_id = this.requestId(opts.requestId);
    return {
      msg: { key, value: toWire(value), condition: c.condition, keep_ttl: opts.keepTtl ?? false, request_id },
      safe: c.has || request_id !== '',
    };
  }

  private requestId(given: string | undefined): string {
    if (given !== undefined) return given;
    return this.requestIds ? randomUUID() : '';
  }

  /** One RPC, repeated while the error is transient, the request is safe to
   * repeat and the retry budget lasts. Every attempt sends the same bytes
   * (so the same request id). */
  private async call(method: string, msg: object, safe: boolean): Promise<any> {
    const [reqType, respType] = METHODS[method];
    const bytes = Buffer.from(reqType.encode(msg as { [k: string]: WireValue }).finish());
    const start = Date.now();
    for (let attempt = 0; ; attempt++) {
      let err: StateError;
      try {
        return await this.once(`/${SERVICE}/${method}`, bytes, (b) => respType.decode(b));
      } catch (e) {
        err = e instanceof StateError ? e : fromServiceError(e as grpc.ServiceError);
      }
      if (!safe || !err.transient) throw err;
      const delay = err.retryAfterMs ?? backoffMs(this.retry, attempt);
      if (Date.now() - start + delay > this.retry.maxElapsedMs) throw err;
      await sleep(delay);
    }
  }

  private once(path: string, bytes: Buffer, decode: (b: Buffer) => any): Promise<any> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path,
        (b: Buffer) => b,
        decode,
        bytes,
        this.metadata.clone(),
        { deadline: Date.now() + this.timeoutMs },
        (err, resp) => (err ? reject(fromServiceError(err)) : resolve(resp)),
      );
    });
  }
}
