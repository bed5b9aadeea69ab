// Typed errors built from the gRPC status and its google.rpc.ErrorInfo detail
// (domain "stateservice.v1"), decoded from grpc-status-details-bin by the few
// lines of protobuf wire parsing below — no googleapis package needed.
//
//   try { await client.put('k', v, { ifVersion: 7n }); }
//   catch (e) { if (e instanceof VersionMismatch) console.log(e.currentVersion); }
//
// The hierarchy follows the status codes: every FAILED_PRECONDITION reason is
// a ConditionFailed, VERSION_MISMATCH is an Aborted, LIMIT_EXCEEDED is an
// InvalidArgument. A status without ErrorInfo still maps by its code.
import { Metadata, status as Code } from '@grpc/grpc-js';

export const ERROR_DOMAIN = 'stateservice.v1';
const ERROR_INFO = 'type.googleapis.com/google.rpc.ErrorInfo';
const RETRY_INFO = 'type.googleapis.com/google.rpc.RetryInfo';
const RETRYABLE_EXHAUSTED = new Set(['RATE_LIMITED', 'OVERLOADED', 'TENANT_OVERLOADED', 'BACKEND_OUT_OF_MEMORY']);

export interface ErrorFields {
  code?: Code;
  reason?: string;
  metadata?: Record<string, string>;
  retryAfterMs?: number;
}

/** Any error from the service, the transport or this client. */
export class StateError extends Error {
  /** The gRPC status code (undefined for errors raised by the client itself). */
  readonly code?: Code;
  /** ErrorInfo.reason, e.g. "VERSION_MISMATCH", when the server sent one. */
  readonly reason?: string;
  /** ErrorInfo.metadata. */
  readonly metadata: Record<string, string>;
  /** Milliseconds the server asked to wait (google.rpc.RetryInfo). */
  readonly retryAfterMs?: number;

  constructor(message: string, fields: ErrorFields = {}) {
    super(message);
    this.name = new.target.name;
    this.code = fields.code;
    this.reason = fields.reason;
    this.metadata = { ...(fields.metadata ?? {}) };
    this.retryAfterMs = fields.retryAfterMs;
  }

  get key(): string | undefined {
    return this.metadata.key;
  }
  /** The key's version when a condition failed (0n: absent). */
  get currentVersion(): bigint | undefined {
    return parseBig(this.metadata.current_version);
  }
  /** The failing op of a transaction or batch. */
  get opIndex(): number | undefined {
    const v = this.metadata.op_index;
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  }
  /** Whether repeating a request that is safe to repeat may succeed. */
  get transient(): boolean {
    return false;
  }
}

export class ValueConversionError extends StateError {}
export class InvalidArgument extends StateError {}
export class LimitExceeded extends InvalidArgument {
  /** The server flag that sets the limit, e.g. "--max-value-bytes". */
  get setting(): string | undefined {
    return this.metadata.setting;
  }
  get limit(): bigint | undefined {
    return parseBig(this.metadata.limit);
  }
}
export class ConditionFailed extends StateError {}
export class AlreadyExists extends ConditionFailed {}
export class NotFound extends ConditionFailed {}
export class NotAnInteger extends ConditionFailed {
  get storedType(): string | undefined {
    return this.metadata.stored_type;
  }
}
export class IncrementOverflow extends ConditionFailed {}
export class InvalidStoredValue extends ConditionFailed {}
export class CrossSlot extends ConditionFailed {}
export class RequestIdReused extends ConditionFailed {}
export class Aborted extends StateError {}
export class VersionMismatch extends Aborted {}
export class Unauthenticated extends StateError {}
export class PermissionDenied extends StateError {}
export class ResourceExhausted extends StateError {
  get transient(): boolean {
    return this.retryAfterMs !== undefined || (this.reason !== undefined && RETRYABLE_EXHAUSTED.has(this.reason));
  }
}
export class Unavailable extends StateError {
  get transient(): boolean {
    return true;
  }
}
export class DeadlineExceeded extends StateError {
  get transient(): boolean {
    return true;
  }
}
export class Cancelled extends StateError {}
export class InternalError extends StateError {}

type ErrorClass = new (message: string, fields?: ErrorFields) => StateError;

const BY_REASON: Record<string, ErrorClass> = {
  VERSION_MISMATCH: VersionMismatch,
  ALREADY_EXISTS: AlreadyExists,
  NOT_FOUND: NotFound,
  NOT_AN_INTEGER: NotAnInteger,
  INCREMENT_OVERFLOW: IncrementOverflow,
  INVALID_STORED_VALUE: InvalidStoredValue,
  CROSS_SLOT: CrossSlot,
  REQUEST_ID_REUSED: RequestIdReused,
  LIMIT_EXCEEDED: LimitExceeded,
};

const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.INVALID_ARGUMENT]: InvalidArgument,
  [Code.OUT_OF_RANGE]: InvalidArgument,
  [Code.FAILED_PRECONDITION]: ConditionFailed,
  [Code.ABORTED]: Aborted,
  [Code.UNAUTHENTICATED]: Unauthenticated,
  [Code.PERMISSION_DENIED]: PermissionDenied,
  [Code.RESOURCE_EXHAUSTED]: ResourceExhausted,
  [Code.UNAVAILABLE]: Unavailable,
  [Code.DEADLINE_EXCEEDED]: DeadlineExceeded,
  [Code.CANCELLED]: Cancelled,
  [Code.NOT_FOUND]: NotFound,
  [Code.ALREADY_EXISTS]: AlreadyExists,
};

export function errorClass(code: Code | undefined, reason: string | undefined): ErrorClass {
  return (reason !== undefined && BY_REASON[reason]) || (code !== undefined && BY_CODE[code]) || InternalError;
}

/** The typed error for a failed call (a grpc-js ServiceError or similar). */
export function fromServiceError(err: { code?: number; details?: string; message?: string; metadata?: Metadata }): StateError {
  const code = err.code as Code | undefined;
  let reason: string | undefined;
  let metadata: Record<string, string> = {};
  let retryAfterMs: number | undefined;
  const raw = err.metadata?.get('grpc-status-details-bin')?.[0];
  if (raw instanceof Uint8Array) {
    try {
      ({ reason, metadata, retryAfterMs } = decodeStatusDetails(raw));
    } catch {
      // A corrupt detail must not hide the status itself.
    }
  }
  const Cls = errorClass(code, reason);
  const message = err.details ?? err.message ?? 'unknown error';
  return new Cls(message, { code, reason, metadata, retryAfterMs });
}

/** The typed error of one failed BatchPut item. */
export function fromConditionFailure(key: string, reason: string, currentVersion: bigint, message: string): StateError {
  const code = reason === 'VERSION_MISMATCH' ? Code.ABORTED : Code.FAILED_PRECONDITION;
  const Cls = errorClass(code, reason);
  return new Cls(message, { code, reason, metadata: { key, current_version: currentVersion.toString() } });
}

// --- google.rpc.Status wire decoding ---------------------------------------

export interface StatusDetails {
  reason?: string;
  metadata: Record<string, string>;
  retryAfterMs?: number;
}

/** Decodes grpc-status-details-bin (a google.rpc.Status). ErrorInfo of
 * another domain is ignored. Throws on malformed input. */
export function decodeStatusDetails(data: Uint8Array): StatusDetails {
  const out: StatusDetails = { metadata: {} };
  for (const [field, v] of fields(data)) {
    if (field !== 3 || !(v instanceof Uint8Array)) continue; // Status.details: Any
    let typeUrl = '';
    let payload: Uint8Array = new Uint8Array(0);
    for (const [f, x] of fields(v)) {
      if (f === 1 && x instanceof Uint8Array) typeUrl = utf8(x);
      else if (f === 2 && x instanceof Uint8Array) payload = x;
    }
    if (typeUrl === ERROR_INFO) {
      let reason = '';
      let domain = '';
      const meta: Record<string, string> = {};
      for (const [f, x] of fields(payload)) {
        if (!(x instanceof Uint8Array)) continue;
        if (f === 1) reason = utf8(x);
        else if (f === 2) domain = utf8(x);
        else if (f === 3) {
          let k = '';
          let val = '';
          for (const [ef, ex] of fields(x)) {
            if (ef === 1 && ex instanceof Uint8Array) k = utf8(ex);
            else if (ef === 2 && ex instanceof Uint8Array) val = utf8(ex);
          }
          Object.defineProperty(meta, k, { value: val, enumerable: true, writable: true, configurable: true });
        }
      }
      if (domain === ERROR_DOMAIN || domain === '') {
        out.reason = reason;
        out.metadata = meta;
      }
    } else if (typeUrl === RETRY_INFO) {
      for (const [f, x] of fields(payload)) {
        if (f !== 1 || !(x instanceof Uint8Array)) continue; // retry_delay: Duration
        let secs = 0n;
        let nanos = 0n;
        for (const [df, dx] of fields(x)) {
          if (df === 1 && typeof dx === 'bigint') secs = BigInt.asIntN(64, dx);
          else if (df === 2 && typeof dx === 'bigint') nanos = BigInt.asIntN(64, dx);
        }
        const ms = Number(secs) * 1000 + Number(nanos) / 1e6;
        out.retryAfterMs = Math.max(0, ms);
      }
    }
  }
  return out;
}

/** (field number, value): a bigint for varint and fixed fields, bytes for
 * length-delimited ones. */
function* fields(buf: Uint8Array): Generator<[number, bigint | Uint8Array]> {
  let i = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (i >= buf.length || shift > 63n) throw new Error('truncated varint');
      const b = buf[i++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const tag = varint();
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (wire === 0) {
      yield [field, varint()];
    } else if (wire === 2) {
      const len = Number(varint());
      if (i + len > buf.length) throw new Error('truncated length-delimited field');
      yield [field, buf.subarray(i, i + len)];
      i += len;
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (i + n > buf.length) throw new Error('truncated fixed field');
      let v = 0n;
      for (let j = n - 1; j >= 0; j--) v = (v << 8n) | BigInt(buf[i + j]);
      i += n;
      yield [field, v];
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
}

function utf8(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
}

function parseBig(v: string | undefined): bigint | undefined {
  return v !== undefined && /^-?\d+$/.test(v) ? BigInt(v) : undefined;
}
