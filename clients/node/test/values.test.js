'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { toWire, fromWire, same, INT64_MIN, INT64_MAX, ValueConversionError } = require('../dist');
const { type } = require('../dist/proto');

const V = type('Value');
/** native -> Value -> bytes -> Value -> native, as a call does. */
const roundTrip = (v) => fromWire(V.decode(V.encode(toWire(v)).finish()));

const cases = {
  null: null,
  true: true,
  false: false,
  'int64 min': INT64_MIN,
  'int64 max': INT64_MAX,
  'zero bigint': 0n,
  double: 1.5,
  'integral double': 3,
  infinity: Infinity,
  '-infinity': -Infinity,
  '-0': -0,
  NaN: NaN,
  'smallest subnormal': 5e-324,
  'empty string': '',
  unicode: 'ünïcødé 🦀 \u0000',
  'empty bytes': new Uint8Array(0),
  'all bytes': Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  'empty list': [],
  'empty map': {},
  nested: { '': null, a: { b: [true, 2n, 3.0, '4', Buffer.from('5')] } },
};

for (const [name, v] of Object.entries(cases)) {
  test(`round trips exactly: ${name}`, () => {
    assert.ok(same(roundTrip(v), v), `${name}: got ${String(roundTrip(v))}`);
  });
}

test('numbers are doubles and bigints are ints, also when integral', () => {
  assert.equal(V.decode(V.encode(toWire(3)).finish()).kind, 'double_value');
  assert.equal(V.decode(V.encode(toWire(3n)).finish()).kind, 'int_value');
  assert.equal(typeof roundTrip(3n), 'bigint');
  assert.ok(!same(3, 3n));
});

test('-0 keeps its sign and differs from 0', () => {
  assert.ok(Object.is(roundTrip(-0), -0));
  assert.ok(!same(-0, 0));
});

test('a __proto__ key is stored and read back as an own property', () => {
  const obj = JSON.parse('{"__proto__": {"polluted": true}, "x": 1}');
  const back = roundTrip(obj);
  assert.deepEqual(Object.keys(back).sort(), ['__proto__', 'x']);
  assert.equal(Object.getPrototypeOf(back), Object.prototype);
  assert.equal({}.polluted, undefined);
});

test('a Map with string keys is a map', () => {
  assert.ok(same(roundTrip(new Map([['a', 1n]])), { a: 1n }));
});

for (const [name, v] of Object.entries({
  'bigint above int64': INT64_MAX + 1n,
  'bigint below int64': INT64_MIN - 1n,
  undefined: undefined,
  Date: new Date(0),
  function: () => 1,
  symbol: Symbol('s'),
  'class instance': new (class Foo {})(),
  'Map with number keys': new Map([[1, 'a']]),
  'nested undefined': { a: [undefined] },
  'lone surrogate': '\ud800',
})) {
  test(`refused with ValueConversionError: ${name}`, () => {
    assert.throws(() => toWire(v), ValueConversionError);
  });
}

test('cycles are refused, not recursed forever', () => {
  const a = [];
  a.push(a);
  assert.throws(() => toWire(a), /nested/);
});

test('a value without kind is an error', () => {
  assert.throws(() => fromWire(V.decode(new Uint8Array(0))), ValueConversionError);
});
