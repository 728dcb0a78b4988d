import { afterAll, describe, expect, test } from 'bun:test';
import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { createMetadataStore } from '../../plugins/metadata/index.ts';
import { createRedisMetadata } from '../../plugins/metadata/redis.ts';
import { MetadataError, type MetadataStore } from '../../plugins/metadata/types.ts';
import { useRedis } from '../support/services.ts';
import { eventually, SETTLE_BOUND_MS, settlesWithin } from './conformance-support.ts';
import { testMetadataStore, testRefusals } from './metadata-conformance.ts';
import { makeFile, makeVm } from './metadata-fixtures.ts';

const redis = useRedis();
/** Connection errors the stores reported; they must never reach stdout or crash the run. */
const reported: Error[] = [];
const TIMEOUT_MS = 1000;
const namespaces = new WeakMap<MetadataStore, string>();

function open(namespace = `test-${randomUUID()}`): MetadataStore {
  const store = createRedisMetadata({
    url: redis.url,
    namespace,
    timeoutMs: TIMEOUT_MS,
    onError: (err) => reported.push(err),
  });
  namespaces.set(store, namespace);
  return store;
}

/** A plain client for looking at (and removing) the keys a store made. */
async function withClient<T>(use: (client: PlainClient) => Promise<T>): Promise<T> {
  const client = plainClient();
  client.on('error', () => {});
  await client.connect();
  try {
    return await use(client);
  } finally {
    client.destroy();
  }
}

type PlainClient = ReturnType<typeof plainClient>;
function plainClient() {
  return createClient({ url: redis.url });
}

async function keysOf(namespace: string): Promise<string[]> {
  return withClient(async (client) => (await client.keys(`${namespace}:metadata:*`)).sort());
}

testMetadataStore({
  name: 'redis',
  // Each store gets its own namespace, so tests sharing the server never collide.
  create: async () => open(),
  cleanup: async (store) => {
    const namespace = namespaces.get(store) as string;
    await withClient(async (client) => {
      const keys = await client.keys(`${namespace}:metadata:*`);
      if (keys.length > 0) await client.del(keys);
    });
  },
  // The test server keeps nothing on disk, so reopening means a new client.
  reopen: async (store) => {
    const namespace = namespaces.get(store) as string;
    await store.close();
    return open(namespace);
  },
  unreachable: {
    mentions: () => [redis.url],
    takeDown: () => redis.kill(),
    bringBack: () => redis.restart(),
  },
  additionalTests: (store) => {
    test('keeps namespaces apart, even ones that look like each other’s keys', async () => {
      const namespace = `ns-${randomUUID()}`;
      const lookalikes = [
        namespace,
        `${namespace}:metadata:files`,
        `${namespace}:x`,
        `${namespace}*`,
      ];
      const stores = lookalikes.map((each) => open(each));
      try {
        for (const [i, each] of stores.entries()) {
          await each.commitFile(makeFile('shared', `f${i}`, [[0, 'vm-1']]));
          await each.beginUpload({ fileId: `u${i}`, name: 'shared' });
          await each.putVm(makeVm('vm-1', { penalty: i }));
        }
        for (const [i, each] of stores.entries()) {
          expect((await each.listFiles({ limit: 10 })).files.map((file) => file.fileId)).toEqual([
            `f${i}`,
          ]);
          expect((await each.chunksOn('vm-1')).map((chunk) => chunk.fileId)).toEqual([`f${i}`]);
          expect((await each.cleanups()).map((entry) => entry.fileId)).toEqual([`u${i}`]);
          expect((await each.listVms()).map((vm) => vm.penalty)).toEqual([i]);
          expect(await each.hasFileId(`f${(i + 1) % stores.length}`)).toBe(false);
        }
        expect(await store().listFiles({ limit: 10 })).toEqual({ files: [] });
      } finally {
        await Promise.all(stores.map((each) => each.close()));
      }
    });

    test('keeps its keys under <namespace>:metadata:, cloudlet by default', async () => {
      const namespace = `layout-${randomUUID()}`;
      const layout = open(namespace);
      await layout.commitFile(makeFile('x', 'f1', [[0, 'vm-1']]));
      await layout.beginUpload({ fileId: 'u1', name: 'y' });
      await layout.putVm(makeVm('vm-1'));
      await layout.close();
      expect(await keysOf(namespace)).toEqual(
        ['file-ids', 'files', 'ledger', 'ledger-order', 'ledger-seq', 'names', 'placements', 'vms']
          .map((kind) => `${namespace}:metadata:${kind}`)
          .sort(),
      );
      const byDefault = createRedisMetadata({ url: redis.url });
      try {
        await byDefault.putVm(makeVm('vm-default'));
        expect(await keysOf('cloudlet')).toEqual(['cloudlet:metadata:vms']);
      } finally {
        await byDefault.close();
        await withClient((client) => client.del('cloudlet:metadata:vms'));
      }
    });

    test('a closed store refuses operations with a MetadataError', async () => {
      const closing = open();
      await closing.putVm(makeVm('vm-1'));
      await closing.close();
      await closing.close(); // twice is fine
      const error = await closing.listVms().catch((err) => err);
      expect(error).toBeInstanceOf(MetadataError);
      expect(error.message).toBe('redis metadata store: listVms: the store is closed');
    });

    testRefusals(store);

    test('refuses names that are not valid Unicode', async () => {
      const error = await store()
        .commitFile(makeFile('lone \ud800', 'f1'))
        .catch((err) => err);
      expect(error).toBeInstanceOf(MetadataError);
      expect(error.message).toContain('not valid Unicode');
      expect(await store().cleanups()).toEqual([]);
    });

    test('a paused server (connected but silent) times out instead of hanging', async () => {
      await store().commitFile(makeFile('x', 'f1'));
      redis.pause();
      try {
        const started = performance.now();
        const error = await settlesWithin(store().getFile('x'), SETTLE_BOUND_MS).catch((e) => e);
        expect(error).toBeInstanceOf(MetadataError);
        expect(error.message).toContain(`no reply within ${TIMEOUT_MS} ms`);
        expect(performance.now() - started).toBeLessThan(SETTLE_BOUND_MS);
      } finally {
        redis.resume();
      }
      await eventually(() => store().commitFile(makeFile('y', 'f2')));
      expect((await store().getFile('x'))?.fileId).toBe('f1');
    }, 30_000);

    test('a server that does not exist gives a clear error', async () => {
      const nowhere = createRedisMetadata({ url: 'redis://127.0.0.1:1', timeoutMs: 300 });
      try {
        const error = await nowhere.getFile('k').catch((e) => e);
        expect(error).toBeInstanceOf(MetadataError);
        expect(error.message).toMatch(
          /^redis metadata store: getFile "k" at redis:\/\/127\.0\.0\.1:1 failed: no connection within 300 ms \(last error: .*ECONNREFUSED.*\); check that redis-server is running/,
        );
      } finally {
        await nowhere.close();
      }
    });

    test('passwords never appear in errors', async () => {
      const secret = createRedisMetadata({
        url: 'redis://user:hunter2@127.0.0.1:1',
        timeoutMs: 200,
      });
      try {
        const error = await secret.listVms().catch((e) => e);
        expect(error.message).not.toContain('hunter2');
        expect(error.message).toContain('redis://user:***@127.0.0.1:1');
      } finally {
        await secret.close();
      }
    });
  },
});

describe('createMetadataStore', () => {
  const opened: MetadataStore[] = [];
  afterAll(() => Promise.all(opened.map((store) => store.close())));

  test('builds memory and redis stores from their specs', async () => {
    const memory = createMetadataStore('memory');
    const namespace = `spec-${randomUUID()}`;
    const viaUrl = createMetadataStore(`${redis.url}/0`, { namespace, timeoutMs: TIMEOUT_MS });
    opened.push(memory, viaUrl);
    expect(memory.name).toBe('memory');
    expect(viaUrl.name).toBe('redis');
    await viaUrl.putVm(makeVm('vm-1'));
    expect(await viaUrl.listVms()).toEqual([makeVm('vm-1')]);
    expect(await keysOf(namespace)).toEqual([`${namespace}:metadata:vms`]);
  });

  test('passes the redis options on', async () => {
    const errors: Error[] = [];
    const nowhere = createMetadataStore('rediss://127.0.0.1:1', {
      timeoutMs: 200,
      onError: (err) => errors.push(err),
    });
    opened.push(nowhere);
    const error = await nowhere.listVms().catch((err) => err);
    expect(error.message).toContain('no connection within 200 ms');
    expect(errors.length).toBeGreaterThan(0);
  });

  test('rejects what it does not know, saying what would work', () => {
    expect(() => createMetadataStore('mongodb://x')).toThrow(
      'mongodb metadata store: no such backend ("mongodb://x"); use memory, redis://host:port[/db] or sqlite:PATH',
    );
    expect(() => createMetadataStore('Memory')).toThrow(/no such backend \("Memory"\)/);
    expect(() => createMetadataStore('sqlite')).toThrow(/use memory, redis:\/\/host/);
    expect(() => createMetadataStore('redis://host:1/zero')).toThrow(
      /database "zero" is not a number/,
    );
    expect(() => createMetadataStore('redis://:1')).toThrow(MetadataError);
    expect(() => createMetadataStore('')).toThrow(MetadataError);
  });
});

test('connection errors reached onError (the server was killed above)', () => {
  expect(reported.length).toBeGreaterThan(0);
  expect(reported.every((err) => err instanceof Error)).toBe(true);
});
