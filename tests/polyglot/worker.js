'use strict';
// Node side of the cross-language client tests (see README.md).
const fs = require('fs');
const path = require('path');
const s = require(path.join(__dirname, '..', '..', 'clients', 'node', 'dist'));

const MATRIX = {
  null: null,
  true: true,
  false: false,
  int_min: -(2n ** 63n),
  int_max: 2n ** 63n - 1n,
  int_zero: 0n,
  int_neg: -1n,
  double: 1.5,
  double_integral: 3,
  nan: NaN,
  pos_inf: Infinity,
  neg_inf: -Infinity,
  neg_zero: -0,
  subnormal: 5e-324,
  double_max: 1.7976931348623157e308,
  str_empty: '',
  str_unicode: 'ünïcødé 🦀 \u0000 \u{10FFFF}',
  bytes_empty: Buffer.alloc(0),
  bytes_all: Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  list_empty: [],
  map_empty: {},
  nested: JSON.parse('{"__proto__": null}'),
};
Object.assign(MATRIX.nested, {
  a: [1n, 2.5, null, 'x', Buffer.from([0, 255]), { b: [true, [], {}] }],
  '': -(2n ** 63n),
});
Object.defineProperty(MATRIX.nested, '__proto__', { value: { k: 2n ** 63n - 1n }, enumerable: true, writable: true, configurable: true });

const client = (cfg) => new s.StateClient(cfg.addr, { tenant: cfg.tenant });

async function wordcount(cfg) {
  const words = fs.readFileSync(cfg.shard, 'utf8').split(/\s+/).filter(Boolean);
  const c = client(cfg);
  let maxCall = 0;
  const timed = async (p) => {
    const t0 = performance.now();
    await p();
    maxCall = Math.max(maxCall, (performance.now() - t0) / 1000);
  };
  const start = performance.now();
  for (let lo = 0; lo < words.length; lo += cfg.batch) {
    const hi = Math.min(lo + cfg.batch, words.length);
    for (const w of words.slice(lo, hi)) await timed(() => c.increment(`${cfg.prefix}count:${w}`, 1n));
    await timed(() => c.update(`${cfg.prefix}ckpt:${cfg.worker}`, () => ({ offset: BigInt(hi), lang: 'node' })));
    await timed(() =>
      c.putWithTtl(`${cfg.prefix}session:${cfg.worker}`, { worker: cfg.worker, offset: BigInt(hi) }, cfg.session_ttl_s * 1000),
    );
  }
  c.close();
  return { words: words.length, seconds: (performance.now() - start) / 1000, max_call_seconds: maxCall };
}

async function matrixWrite(cfg) {
  const c = client(cfg);
  for (const [name, v] of Object.entries(MATRIX)) await c.put(`matrix/node/${name}`, v);
  c.close();
  return { written: Object.keys(MATRIX).length };
}

async function matrixCheck(cfg) {
  const c = client(cfg);
  const bad = [];
  for (const lang of cfg.others) {
    for (const [name, want] of Object.entries(MATRIX)) {
      const e = await c.get(`matrix/${lang}/${name}`);
      if (e === null || !s.same(e.value, want)) {
        bad.push(`${lang}/${name}: got ${e === null ? '<absent>' : show(e.value)}, want ${show(want)}`);
      }
    }
  }
  c.close();
  return { checked: Object.keys(MATRIX).length * cfg.others.length, mismatches: bad };
}

function show(v) {
  return require('util').inspect(v, { depth: 5 });
}

async function expect(bad, what, fn, cls, attrs) {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof cls)) {
      bad.push(`${what}: threw ${e.constructor.name} (${e.message}), want ${cls.name}`);
      return;
    }
    for (const [k, v] of Object.entries(attrs)) {
      if (e[k] !== v) bad.push(`${what}: ${k} = ${show(e[k])}, want ${show(v)} (${e.message})`);
    }
    return;
  }
  bad.push(`${what}: no error, want ${cls.name}`);
}

async function errorsConditions(cfg) {
  const c = client(cfg);
  const k = `${cfg.prefix}node`;
  const bad = [];
  const v = await c.put(k, 'text');
  await expect(bad, 'lost CAS', () => c.put(k, 'x', { ifVersion: v + 1n }), s.VersionMismatch, {
    currentVersion: v,
    reason: 'VERSION_MISMATCH',
    key: k,
  });
  await expect(bad, 'create-only on an existing key', () => c.put(k, 1n, { ifAbsent: true }), s.AlreadyExists, {
    currentVersion: v,
    reason: 'ALREADY_EXISTS',
  });
  await expect(bad, 'increment of a non-integer', () => c.increment(k, 1n), s.NotAnInteger, {
    storedType: 'string',
    reason: 'NOT_AN_INTEGER',
  });
  c.close();
  return { mismatches: bad };
}

async function errorsLimit(cfg) {
  const c = client(cfg);
  const bad = [];
  await expect(bad, 'oversized value', () => c.put(`${cfg.prefix}node-big`, Buffer.alloc(cfg.max_value_bytes + 1)), s.LimitExceeded, {
    setting: '--max-value-bytes',
    limit: BigInt(cfg.max_value_bytes),
  });
  c.close();
  return { mismatches: bad };
}

async function tls(cfg) {
  const ca = fs.readFileSync(cfg.ca);
  const cert = fs.readFileSync(cfg.cert);
  const key = fs.readFileSync(cfg.key);
  const bad = [];
  const byToken = new s.StateClient(cfg.addr, { tls: { ca }, token: cfg.token });
  await byToken.put('tls:node', 1n);
  if ((await byToken.get('tls:node')).value !== 1n) bad.push('token: read back a different value');
  const byCert = new s.StateClient(cfg.addr, { tls: { ca, cert, key } });
  await byCert.put('tls:node', 2n);
  if ((await byCert.get('tls:node')).value !== 2n || (await byToken.get('tls:node')).value !== 1n) {
    bad.push('certificate: not its own tenant');
  }
  const anonymous = new s.StateClient(cfg.addr, { tls: { ca } });
  await expect(bad, 'no credentials', () => anonymous.get('tls:node'), s.Unauthenticated, {});
  const wrong = new s.StateClient(cfg.addr, { tls: { ca }, token: cfg.token, tenant: 'someone-else' });
  await expect(bad, "another tenant's header", () => wrong.get('tls:node'), s.PermissionDenied, {});
  for (const c of [byToken, byCert, anonymous, wrong]) c.close();
  return { mismatches: bad };
}

const ROLES = {
  wordcount,
  'matrix-write': matrixWrite,
  'matrix-check': matrixCheck,
  'errors-conditions': errorsConditions,
  'errors-limit': errorsLimit,
  tls,
};

(async () => {
  const cfg = JSON.parse(process.argv[2]);
  const out = await ROLES[cfg.role](cfg);
  Object.assign(out, { lang: 'node', role: cfg.role, worker: cfg.worker ?? null });
  console.log(JSON.stringify(out));
  process.exitCode = out.mismatches && out.mismatches.length ? 1 : 0;
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
