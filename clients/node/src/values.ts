// Native JavaScript values <-> stateservice.v1.Value, exactly.
//
//   null                         null_value
//   boolean                      bool_value
//   bigint (int64 range)         int_value   (increment works on it; read back as bigint)
//   number                       double_value (always, even 3: JS numbers are doubles;
//                                             NaN, ±Infinity and -0 round-trip)
//   string                       string_value
//   Uint8Array / Buffer          bytes_value (read back as Buffer)
//   Array                        list_value
//   plain object or Map<string>  map_value   (read back as a plain object; a
//                                             "__proto__" key is an own property)
//
// Everything else (undefined, a bigint outside int64, a Date, a class
// instance, a function, a symbol, a Map with non-string keys) throws
// ValueConversionError instead of being approximated.
import { ValueConversionError } from './errors';
import { Long } from './proto';

export type Value = null | boolean | bigint | number | string | Uint8Array | Value[] | { [key: string]: Value };

export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;
const MAX_DEPTH = 100;

/** A plain object shaped like a stateservice.v1.Value, for protobufjs. */
export type WireValue = Record<string, unknown>;

export function toWire(v: unknown, depth = 0): WireValue {
  if (depth > MAX_DEPTH) {
    throw new ValueConversionError(`value nested deeper than ${MAX_DEPTH} levels (or cyclic)`);
  }
  if (v === null) return { null_value: 0 };
  switch (typeof v) {
    case 'boolean':
      return { bool_value: v };
    case 'bigint':
      if (v < INT64_MIN || v > INT64_MAX) {
        throw new ValueConversionError(`integer ${v} is outside the int64 range the service stores`);
      }
      return { int_value: Long.fromString(v.toString()) };
    case 'number':
      return { double_value: v };
    case 'string':
      if (!isWellFormed(v)) throw new ValueConversionError('string is not well-formed Unicode (lone surrogate)');
      return { string_value: v };
    case 'undefined':
      throw new ValueConversionError('undefined cannot be stored: use null');
    case 'object':
      break;
    default:
      throw new ValueConversionError(`cannot store a ${typeof v}`);
  }
  if (v instanceof Uint8Array) return { bytes_value: v };
  if (v instanceof ArrayBuffer) return { bytes_value: new Uint8Array(v) };
  if (Array.isArray(v)) return { list_value: { values: v.map((x) => toWire(x, depth + 1)) } };
  const fields: Record<string, WireValue> = Object.create(null);
  if (v instanceof Map) {
    for (const [k, x] of v) {
      if (typeof k !== 'string') {
        throw new ValueConversionError(`map keys must be strings, got ${typeof k}`);
      }
      setOwn(fields, k, toWire(x, depth + 1));
    }
    return { map_value: { fields } };
  }
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    for (const k of Object.keys(v as object)) {
      setOwn(fields, k, toWire((v as Record<string, unknown>)[k], depth + 1));
    }
    return { map_value: { fields } };
  }
  const name = (v as object).constructor?.name ?? 'object';
  throw new ValueConversionError(
    `cannot store a ${name}: use null, boolean, bigint, number, string, Uint8Array, Array or a plain object`,
  );
}

/** A decoded stateservice.v1.Value (protobufjs message) to a native value. */
export function fromWire(m: any): Value {
  switch (m?.kind) {
    case 'null_value':
      return null;
    case 'bool_value':
      return m.bool_value;
    case 'int_value':
      return toBigInt(m.int_value);
    case 'double_value':
      return m.double_value;
    case 'string_value':
      return m.string_value;
    case 'bytes_value':
      return Buffer.from(m.bytes_value.buffer, m.bytes_value.byteOffset, m.bytes_value.byteLength);
    case 'list_value':
      return (m.list_value.values ?? []).map(fromWire);
    case 'map_value': {
      const out: { [key: string]: Value } = {};
      const fields = m.map_value.fields ?? {};
      for (const k of Object.keys(fields)) setOwn(out, k, fromWire(fields[k]));
      return out;
    }
    default:
      throw new ValueConversionError('value has no kind set');
  }
}

/** Converts the int64/uint64 representations protobufjs may hand back. */
export function toBigInt(x: unknown): bigint {
  if (typeof x === 'bigint') return x;
  if (typeof x === 'number') return BigInt(x);
  if (typeof x === 'string') return BigInt(x);
  if (x && typeof (x as { toString(): string }).toString === 'function') return BigInt(String(x));
  return 0n;
}

/** Exact equality as a round trip must preserve it: numbers with Object.is
 * (NaN equals NaN, -0 differs from 0), bytes by content, objects by keys. */
export function same(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' || typeof b === 'number') return Object.is(a, b);
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && Buffer.compare(a, b) === 0;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
  }
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return (
      ka.length === kb.length &&
      ka.every((k, i) => k === kb[i] && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
    );
  }
  return a === b;
}

function setOwn(o: object, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return false;
    }
  }
  return true;
}
