/**
 * The last-use times of files (the edge's LRU order across restarts) where
 * the shared metadata suite cannot reach: a SQLite database of schema
 * version 2 gains them on opening, and Redis refuses them, like every other
 * write, from a broker that no longer holds the lease.
 */
import { Database } from 'bun:sqlite';
import { afterAll, describe, expect, test } from 'bun:test';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRedisLease } from '../../plugins/lease/redis.ts';
import { createRedisMetadata } from '../../plugins/metadata/redis.ts';
import { createSqliteMetadata, SCHEMA_VERSION } from '../../plugins/metadata/sqlite.ts';
import { MetadataError } from '../../plugins/metadata/types.ts';
import { useRedis } from '../support/services.ts';
import { makeFile, makeVm } from './metadata-fixtures.ts';

describe('sqlite metadata of schema version 2', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'cloudlet-recency-sqlite-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  test('is migrated: records, placements and VMs kept, every file without a last use', async () => {
    const path = join(scratch, 'version-2.db');
    const files = [
      makeFile('b.txt', 'f2', [[0, ['vm-1', 'vm-2']]]),
      makeFile('a.txt', 'f1', [
        [0, 'vm-1'],
        [1, null],
      ]),
    ];
    const store = createSqliteMetadata({ path });
    for (const file of files) await store.commitFile(file);
    await store.putVm(makeVm('vm-1'));
    await store.close();
    // The files table as version 2 created it: no used_at.
    const db = new Database(path);
    db.transaction(() =>
      db.run(`
        CREATE TABLE files_v2 (name TEXT PRIMARY KEY, file_id TEXT NOT NULL UNIQUE, json TEXT NOT NULL) STRICT, WITHOUT ROWID;
        INSERT INTO files_v2 SELECT name, file_id, json FROM files;
        DROP TABLE files;
        ALTER TABLE files_v2 RENAME TO files;
        PRAGMA user_version = 2;`),
    )();
    db.close();

    const migrated = createSqliteMetadata({ path });
    try {
      expect((await migrated.listFiles({ limit: 10 })).files).toEqual([...files].reverse());
      expect((await migrated.chunksOn('vm-2')).map((chunk) => chunk.name)).toEqual(['b.txt']);
      expect(await migrated.listVms()).toEqual([makeVm('vm-1')]);
      expect(await migrated.lastUsed()).toEqual([]);
      await migrated.touchFiles([{ name: 'b.txt', usedAt: '2026-01-01T00:00:00.000Z' }]);
      expect(await migrated.lastUsed()).toEqual([
        { name: 'b.txt', usedAt: '2026-01-01T00:00:00.000Z' },
      ]);
    } finally {
      await migrated.close();
    }
    const check = new Database(path, { readonly: true });
    try {
      expect(check.query('PRAGMA user_version').get()).toEqual({ user_version: SCHEMA_VERSION });
    } finally {
      check.close();
    }
  });
});

describe('redis metadata: last uses fenced by the lease', () => {
  const redis = useRedis();
  const closing: { close(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const each of closing) await each.close();
  });

  test('recorded while its token holds the lease; refused, changing nothing, once another holds it', async () => {
    const namespace = `recency-fence-${randomUUID()}`;
    const lease = createRedisLease({ url: redis.url, namespace, timeoutMs: 1000 });
    const fenced: string[] = [];
    const metadata = createRedisMetadata({
      url: redis.url,
      namespace,
      timeoutMs: 1000,
      fence: { token: 'active-1', onFenced: (reason) => fenced.push(reason) },
    });
    const unfenced = createRedisMetadata({ url: redis.url, namespace, timeoutMs: 1000 });
    closing.push(lease, metadata, unfenced);

    await lease.acquire('active-1', 60_000);
    await metadata.commitFile(makeFile('a.bin', 'file-a'));
    await metadata.touchFiles([{ name: 'a.bin', usedAt: '2026-01-01T00:00:01.000Z' }]);
    expect(fenced).toEqual([]);

    // The standby took over; this broker has not noticed yet.
    await lease.release('active-1');
    await lease.acquire('standby-2', 60_000);
    const error = await metadata
      .touchFiles([{ name: 'a.bin', usedAt: '2026-01-01T00:00:09.000Z' }])
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MetadataError);
    expect((error as Error).message).toContain('standby-2 holds the lease');
    expect(fenced).toHaveLength(1);
    // The new broker's view: the use before the takeover, not the late one.
    expect(await unfenced.lastUsed()).toEqual([
      { name: 'a.bin', usedAt: '2026-01-01T00:00:01.000Z' },
    ]);
  });
});
