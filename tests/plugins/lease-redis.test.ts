import { afterAll, describe, expect, test } from 'bun:test';
import { randomUUID } from 'node:crypto';
import { createLeaseStore } from '../../plugins/lease/index.ts';
import { createRedisLease } from '../../plugins/lease/redis.ts';
import { LeaseError } from '../../plugins/lease/types.ts';
import { createRedisMetadata } from '../../plugins/metadata/redis.ts';
import { MetadataError } from '../../plugins/metadata/types.ts';
import { useRedis } from '../support/services.ts';
import { testLeaseStore } from './lease-conformance.ts';
import { makeFile, makeVm } from './metadata-fixtures.ts';

const redis = useRedis();
const open = (namespace: string) =>
  createRedisLease({ url: redis.url, namespace, timeoutMs: 1000 });

testLeaseStore({
  name: 'redis',
  pair: async () => {
    const namespace = `lease-${randomUUID()}`;
    return [open(namespace), open(namespace)];
  },
});

describe('redis lease', () => {
  test('namespaces keep cloudlets apart', async () => {
    const a = open(`lease-${randomUUID()}`);
    const b = open(`lease-${randomUUID()}`);
    try {
      expect(await a.acquire('a-1', 60_000)).toBe(true);
      expect(await b.acquire('b-1', 60_000)).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('an unreachable server is a LeaseError naming it, within the timeout', async () => {
    const lease = createRedisLease({ url: 'redis://127.0.0.1:1', timeoutMs: 300 });
    try {
      const error = await lease.acquire('a-1', 1000).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LeaseError);
      expect((error as Error).message).toContain('127.0.0.1:1');
    } finally {
      await lease.close();
    }
  });

  test('the lease goes with redis metadata; sqlite cannot be shared', () => {
    expect(createLeaseStore(redis.url).name).toBe('redis');
    expect(() => createLeaseStore('sqlite:/tmp/x.db')).toThrow(/needs --metadata redis/);
  });
});

describe('redis metadata fenced by the lease', () => {
  const stores: { close(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const store of stores) await store.close();
  });

  function setUp() {
    const namespace = `fence-${randomUUID()}`;
    const lease = open(namespace);
    const fenced: string[] = [];
    const metadata = createRedisMetadata({
      url: redis.url,
      namespace,
      timeoutMs: 1000,
      fence: { token: 'active-1', onFenced: (reason) => fenced.push(reason) },
    });
    const unfenced = createRedisMetadata({ url: redis.url, namespace, timeoutMs: 1000 });
    stores.push(lease, metadata, unfenced);
    return { lease, metadata, unfenced, fenced };
  }

  test('writes while its token holds the lease', async () => {
    const { lease, metadata, fenced } = setUp();
    await lease.acquire('active-1', 60_000);
    const file = makeFile('a.bin', 'file-a');
    await metadata.beginUpload({ fileId: file.fileId, name: file.name });
    await metadata.commitFile(file);
    await metadata.putVm(makeVm('vm-1'));
    expect((await metadata.getFile('a.bin'))?.fileId).toBe(file.fileId);
    expect((await metadata.listVms()).map((vm) => vm.id)).toEqual(['vm-1']);
    expect(fenced).toEqual([]);
  });

  test('refuses every write, changing nothing, once another holds it; reads go on', async () => {
    const { lease, metadata, unfenced, fenced } = setUp();
    await lease.acquire('active-1', 60_000);
    const kept = makeFile('kept.bin', 'file-kept');
    await metadata.beginUpload({ fileId: kept.fileId, name: kept.name });
    await metadata.commitFile(kept);
    // The standby took over.
    await lease.release('active-1');
    await lease.acquire('standby-2', 60_000);

    const next = makeFile('late.bin', 'file-late');
    const writes: [string, () => Promise<unknown>][] = [
      ['beginUpload', () => metadata.beginUpload({ fileId: next.fileId, name: next.name })],
      ['commitFile', () => metadata.commitFile(next)],
      ['removeFile', () => metadata.removeFile('kept.bin')],
      [
        'updateChunks',
        () =>
          metadata.updateChunks(
            'kept.bin',
            kept.fileId,
            kept.chunks.map((chunk) => ({ index: chunk.index, vm: null, replicas: [] })),
          ),
      ],
      ['settle', () => metadata.settle(kept.fileId)],
      ['putVm', () => metadata.putVm(makeVm('vm-9'))],
    ];
    for (const [what, write] of writes) {
      const error = await write().catch((e: unknown) => e);
      expect(error, what).toBeInstanceOf(MetadataError);
      expect((error as Error).message, what).toContain('standby-2 holds the lease');
    }
    expect(fenced).toHaveLength(writes.length);
    // Nothing changed, as the unfenced view (the new broker's) shows.
    expect(await unfenced.getFile('late.bin')).toBeNull();
    expect(await unfenced.getFile('kept.bin')).toEqual(kept);
    expect(await unfenced.listVms()).toEqual([]);
    expect((await unfenced.cleanups()).map((entry) => entry.fileId)).toEqual([]);
    // Reads need no lease.
    expect(await metadata.getFile('kept.bin')).toEqual(kept);
  });

  test('refuses writes when nobody holds the lease', async () => {
    const { metadata } = setUp();
    const error = await metadata.putVm(makeVm('vm-1')).catch((e: unknown) => e);
    expect((error as Error).message).toContain('nobody holds the lease');
  });
});
