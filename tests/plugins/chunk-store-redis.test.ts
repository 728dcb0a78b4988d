import { describe, expect, spyOn, test } from 'bun:test';
import { randomBytes, randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { createChunkStore } from '../../plugins/chunk-store/index.ts';
import { createRedisChunkStore } from '../../plugins/chunk-store/redis.ts';
import { ChunkStoreError } from '../../plugins/chunk-store/types.ts';
import { useRedis } from '../support/services.ts';
import {
  eventually,
  SETTLE_BOUND_MS,
  settlesWithin,
  testChunkStore,
} from './chunk-store-conformance.ts';

const redis = useRedis();
/** Connection errors the stores reported; they must never reach stdout or crash the run. */
const reported: Error[] = [];

testChunkStore({
  name: 'redis',
  // Each store gets its own namespace, so tests sharing the server never collide.
  create: async () =>
    createRedisChunkStore({
      url: redis.url,
      namespace: `test-${randomUUID()}`,
      onError: (err) => reported.push(err),
    }),
  cleanup: async (store) => {
    await store.deletePrefix('');
  },
  unreachable: {
    mentions: () => [redis.url],
    takeDown: () => redis.kill(),
    bringBack: () => redis.restart(),
  },
  additionalTests: (store) => {
    test('keeps namespaces apart, even ones that look like each other’s prefixes', async () => {
      const namespace = `ns-${randomUUID()}`;
      const plain = createRedisChunkStore({ url: redis.url, namespace });
      // Unencoded, its keys would be `cloudlet:<namespace>:chunk:x:chunk:…`.
      const lookalike = createRedisChunkStore({
        url: redis.url,
        namespace: `${namespace}:chunk:x`,
      });
      try {
        await plain.put('shared', Uint8Array.of(1));
        await lookalike.put('shared', Uint8Array.of(2, 2));
        await store().put('shared', Uint8Array.of(3, 3, 3));
        expect(await plain.list()).toEqual(['shared']);
        expect((await plain.get('shared'))?.equals(Uint8Array.of(1))).toBe(true);
        expect(await plain.usedBytes()).toBe(1);
        expect(await lookalike.usedBytes()).toBe(2);
        expect(await plain.deletePrefix('')).toBe(1);
        expect(await lookalike.list()).toEqual(['shared']);
        expect(await store().list()).toEqual(['shared']);
      } finally {
        await lookalike.deletePrefix('');
        await plain.close();
        await lookalike.close();
      }
    });

    test('stores under cloudlet:<namespace>:chunk:<key>', async () => {
      const namespace = `layout-${randomUUID()}`;
      const layout = createRedisChunkStore({ url: redis.url, namespace });
      const raw = createClient({ url: redis.url });
      await raw.connect();
      try {
        await layout.put('a/0', Uint8Array.of(1, 2, 3));
        expect(await raw.keys(`cloudlet:${namespace}:*`)).toEqual(
          expect.arrayContaining([`cloudlet:${namespace}:chunk:a/0`]),
        );
        expect(await raw.strLen(`cloudlet:${namespace}:chunk:a/0`)).toBe(3);
      } finally {
        await layout.deletePrefix('');
        await layout.close();
        raw.destroy();
      }
    });

    test('a paused server (connected but silent) times out instead of hanging', async () => {
      await store().put('k', Uint8Array.of(1));
      redis.pause();
      try {
        const started = performance.now();
        const error = await settlesWithin(store().get('k'), SETTLE_BOUND_MS).catch((e) => e);
        expect(error).toBeInstanceOf(ChunkStoreError);
        expect(error.message).toContain('no reply within');
        expect(performance.now() - started).toBeLessThan(SETTLE_BOUND_MS);
      } finally {
        redis.resume();
      }
      const value = randomBytes(100);
      await eventually(() => store().put('k', value));
      expect((await store().get('k'))?.equals(value)).toBe(true);
    }, 30_000);

    test('a server that does not exist gives a clear error', async () => {
      const nowhere = createRedisChunkStore({ url: 'redis://127.0.0.1:1', timeoutMs: 300 });
      try {
        const error = await nowhere.get('k').catch((e) => e);
        expect(error).toBeInstanceOf(ChunkStoreError);
        expect(error.message).toMatch(
          /^redis chunk store: get "k" at redis:\/\/127\.0\.0\.1:1 failed: no connection within 300 ms \(last error: .*ECONNREFUSED.*\); check that redis-server is running/,
        );
      } finally {
        await nowhere.close();
      }
    });

    test('many operations waiting for a connection raise no warnings', async () => {
      const warnings = spyOn(process, 'emitWarning');
      const errors: Error[] = [];
      const nowhere = createRedisChunkStore({
        url: 'redis://127.0.0.1:1',
        timeoutMs: 300,
        onError: (err) => errors.push(err),
      });
      try {
        const outcomes = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) => nowhere.has(`k${i}`)),
        );
        expect(outcomes.every(({ status }) => status === 'rejected')).toBe(true);
        expect(warnings).not.toHaveBeenCalled();
        expect(errors.some((err) => /ECONNREFUSED/.test(err.message))).toBe(true);
      } finally {
        warnings.mockRestore();
        await nowhere.close();
      }
    });

    test('passwords never appear in errors', async () => {
      const secret = createRedisChunkStore({
        url: 'redis://user:hunter2@127.0.0.1:1',
        timeoutMs: 200,
      });
      try {
        const error = await secret.has('k').catch((e) => e);
        expect(error.message).not.toContain('hunter2');
        expect(error.message).toContain('redis://user:***@127.0.0.1:1');
      } finally {
        await secret.close();
      }
    });
  },
});

describe('a full server', () => {
  const small = useRedis({ extraArgs: ['--maxmemory', '4mb', '--maxmemory-policy', 'noeviction'] });

  test('refuses a put with the server’s reason and keeps the count exact', async () => {
    const store = createRedisChunkStore({ url: small.url, namespace: `oom-${randomUUID()}` });
    try {
      await store.put('fits', randomBytes(1024));
      let refused: unknown;
      for (let i = 0; i < 10 && !refused; i++) {
        refused = await store.put(`big/${i}`, randomBytes(1024 * 1024)).catch((err) => err);
      }
      expect(refused).toBeInstanceOf(ChunkStoreError);
      expect((refused as Error).message).toContain('OOM');
      const keys = await store.list();
      let stored = 0;
      for (const key of keys) stored += (await store.get(key))?.byteLength ?? 0;
      expect(await store.usedBytes()).toBe(stored);
    } finally {
      await store.close();
    }
  });
});

describe('createChunkStore', () => {
  test('builds each backend from its spec', async () => {
    const memory = createChunkStore('memory');
    const viaUrl = createChunkStore(`${redis.url}/0`, { namespace: `spec-${randomUUID()}` });
    try {
      expect(memory.name).toBe('memory');
      expect(viaUrl.name).toBe('redis');
      await viaUrl.put('k', Uint8Array.of(9));
      expect((await viaUrl.get('k'))?.equals(Uint8Array.of(9))).toBe(true);
      await viaUrl.delete('k');
    } finally {
      await memory.close();
      await viaUrl.close();
    }
  });

  test('rejects what it does not know, saying what would work', () => {
    expect(() => createChunkStore('mongodb://x')).toThrow(
      'mongodb chunk store: no such backend ("mongodb://x"); use memory or redis://host:port[/db]',
    );
    expect(() => createChunkStore('redis://host:1/zero')).toThrow(
      /database "zero" is not a number/,
    );
    expect(() => createChunkStore('')).toThrow(ChunkStoreError);
  });
});

test('connection errors reached onError (the server was killed above)', () => {
  expect(reported.length).toBeGreaterThan(0);
  expect(reported.every((err) => err instanceof Error)).toBe(true);
});
