// Quick start: node examples/quickstart.js [host:port]
const { StateClient, VersionMismatch } = require('..'); // require('state-service-client') in your code

(async () => {
  const client = new StateClient(process.argv[2] ?? '127.0.0.1:50051', { tenant: 'quickstart' });
  const version = await client.put('user:42', { name: 'Ada', visits: 1n, tags: ['admin'], avatar: Buffer.from('PNG') });
  console.log(await client.get('user:42'));                              // { key, value, version: 17…n, ttlMs: null }
  await client.update('user:42', (u) => ({ ...u, visits: u.visits + 1n })); // read, modify, compare-and-set, retry
  console.log((await client.increment('hits', 5n)).value);                // exact int64 counter, a bigint
  await client.putWithTtl('session:9', { step: 3n }, 30_000);             // expires in 30 s
  for await (const key of client.list('user:')) console.log(key);         // pages through List for you
  try {
    await client.put('user:42', 'stale write', { ifVersion: version });
  } catch (e) {
    if (!(e instanceof VersionMismatch)) throw e;
    console.log('lost the race; the key is now at version', e.currentVersion);
  }
  client.close();
})();
