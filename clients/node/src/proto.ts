// The stateservice.v1 message types, loaded at runtime by protobufjs from the
// API's own proto (copied into dist/ at build time, never edited by hand).
// The google/protobuf imports resolve to the definitions bundled with
// protobufjs. int64/uint64 fields travel as Long and are converted to
// bigint at the edges (see values.ts), never to a lossy number.
import * as path from 'path';
import * as protobuf from 'protobufjs';

export const SERVICE = 'stateservice.v1.StateService';

const root = new protobuf.Root();
root.loadSync(path.join(__dirname, 'proto', 'stateservice', 'v1', 'state.proto'), { keepCase: true });
root.resolveAll();

export function type(name: string): protobuf.Type {
  return root.lookupType(`stateservice.v1.${name}`);
}

/** RPC name -> [request type, response type]. */
export const METHODS: Record<string, [protobuf.Type, protobuf.Type]> = {
  Get: [type('GetRequest'), type('GetResponse')],
  Put: [type('PutRequest'), type('PutResponse')],
  PutWithTtl: [type('PutWithTtlRequest'), type('PutResponse')],
  Delete: [type('DeleteRequest'), type('DeleteResponse')],
  List: [type('ListRequest'), type('ListResponse')],
  Expire: [type('ExpireRequest'), type('ExpireResponse')],
  Persist: [type('PersistRequest'), type('PersistResponse')],
  Increment: [type('IncrementRequest'), type('IncrementResponse')],
  BatchGet: [type('BatchGetRequest'), type('BatchGetResponse')],
  BatchPut: [type('BatchPutRequest'), type('BatchPutResponse')],
  BatchDelete: [type('BatchDeleteRequest'), type('BatchDeleteResponse')],
  Transact: [type('TransactRequest'), type('TransactResponse')],
};

/** The service's unary RPCs as the proto declares them (for a test that
 * METHODS covers them all). */
export function unaryRpcNames(): string[] {
  const svc = root.lookupService(SERVICE);
  return svc.methodsArray.filter((m) => !m.requestStream && !m.responseStream).map((m) => m.name);
}

export const Long = protobuf.util.Long as unknown as {
  fromString(s: string, unsigned?: boolean): unknown;
};
