// state-service-client: a Node.js client for state-service (stateservice.v1).
//
//   const { StateClient } = require('state-service-client');
//   const client = new StateClient('127.0.0.1:50051', { tenant: 'team-a' });
//   await client.put('user:42', { name: 'Ada', visits: 1n });
//   await client.update('user:42', (u) => ({ ...u, visits: u.visits + 1n }));
export {
  StateClient,
  Op,
  DEFAULT_RETRY,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_MAX_SEND_MESSAGE_BYTES,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  backoffMs,
  channelOptions,
  serviceConfig,
} from './client';
export type { ClientOptions, Conditions, Counter, Entry, OpResult, PutItem, RetryPolicy, TlsOptions, WriteOptions } from './client';
export { INT64_MAX, INT64_MIN, fromWire, same, toWire } from './values';
export type { Value } from './values';
export * from './errors';
