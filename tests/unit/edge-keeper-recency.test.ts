/**
 * The edge keeper's least-recently-used order across restarts
 * (actors/broker/edge/keeper.ts), with memory metadata and no VMs: uses are written
 * in batches (one write per flush, not per download), on close too, never for
 * a file removed meanwhile, and again after a failed write; a keeper that
 * loads orders files by their last recorded use, else by creation.
 */
import { describe, expect, test } from 'bun:test';
import { createEdgeKeeper, type EdgeKeeper } from '../../actors/broker/edge/keeper.ts';
import { createReplyBox } from '../../actors/link/replies.ts';
import { silentLogger } from '../../actors/log.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import type { FileUse, MetadataStore } from '../../plugins/metadata/types.ts';
import type { FileInfo } from '../../protocol/messages.ts';
import { makeFile } from '../plugins/metadata-fixtures.ts';
import { until } from '../support/until.ts';

/** Memory metadata that tells every touchFiles batch, and fails the next ones when asked. */
function countingMetadata() {
  const store = createMemoryMetadata();
  const batches: FileUse[][] = [];
  let failing = 0;
  const metadata: MetadataStore = {
    ...store,
    async touchFiles(entries) {
      batches.push(entries.map((entry) => ({ ...entry })));
      if (failing > 0) {
        failing--;
        throw new Error('the store is unreachable');
      }
      return store.touchFiles(entries);
    },
  };
  return { metadata, batches, failNext: (count: number) => (failing = count) };
}

function keeperOn(metadata: MetadataStore, recencyFlushMs: number): EdgeKeeper {
  return createEdgeKeeper({
    brokerId: 'broker',
    replicas: 1,
    reductionFactor: 0,
    segmentSize: 1024,
    metadata,
    core: createMemoryCoreCloud(),
    send: async () => {},
    replies: createReplyBox(),
    table: () => [],
    busy: () => new Set(),
    rate: 1024 * 1024,
    recencyFlushMs,
    storeTimeoutMs: 1000,
    fetchTimeoutMs: 1000,
    log: silentLogger(),
  });
}

const createdAt = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();
const fileAt = (name: string, second: number): FileInfo => ({
  ...makeFile(name, `id-${name}`, [[0, null]]),
  createdAt: createdAt(second),
});
const names = (batch: FileUse[] | undefined) => batch?.map((use) => use.name).sort();

describe('edge keeper: when files were last used', () => {
  test('downloads and uploads are written in one batch per flush, each file once', async () => {
    const { metadata, batches } = countingMetadata();
    const files = ['a', 'b', 'c'].map((name, i) => fileAt(name, i));
    for (const file of files) await metadata.commitFile(file);
    const keeper = keeperOn(metadata, 100);
    await keeper.load();
    for (let i = 0; i < 300; i++) keeper.downloaded(files[i % 2] as FileInfo);
    keeper.committed('upload-1', files[2] as FileInfo);
    expect(batches).toHaveLength(0);
    await until(() => batches.length > 0, 'a flush', 5000);
    expect(batches).toHaveLength(1);
    expect(names(batches[0])).toEqual(['a', 'b', 'c']);
    expect((await metadata.lastUsed()).map((use) => use.name).sort()).toEqual(['a', 'b', 'c']);
    // Nothing used since: no write.
    await Bun.sleep(300);
    expect(batches).toHaveLength(1);
    await keeper.close();
    expect(batches).toHaveLength(1);
  });

  test('close writes what is left; a file removed meanwhile is not written', async () => {
    const { metadata, batches } = countingMetadata();
    const files = ['a', 'b'].map((name, i) => fileAt(name, i));
    for (const file of files) await metadata.commitFile(file);
    const keeper = keeperOn(metadata, 60_000);
    await keeper.load();
    keeper.downloaded(files[0] as FileInfo);
    keeper.downloaded(files[1] as FileInfo);
    await metadata.removeFile('b');
    keeper.removed('b');
    await keeper.close();
    expect(batches.map(names)).toEqual([['a']]);
    expect((await metadata.lastUsed()).map((use) => use.name)).toEqual(['a']);
  });

  test('a batch that could not be written goes again with the next flush', async () => {
    const { metadata, batches, failNext } = countingMetadata();
    const files = ['a', 'b'].map((name, i) => fileAt(name, i));
    for (const file of files) await metadata.commitFile(file);
    const keeper = keeperOn(metadata, 100);
    await keeper.load();
    failNext(1);
    keeper.downloaded(files[0] as FileInfo);
    keeper.downloaded(files[1] as FileInfo);
    await until(() => batches.length === 1, 'a flush that fails', 5000);
    expect(await metadata.lastUsed()).toEqual([]);
    await until(() => batches.length === 2, 'the next flush', 5000);
    expect(batches.map(names)).toEqual([
      ['a', 'b'],
      ['a', 'b'],
    ]);
    expect((await metadata.lastUsed()).map((use) => use.name)).toEqual(['a', 'b']);
    await keeper.close();
  });

  test('load orders files by their last recorded use, else by creation', async () => {
    const metadata = createMemoryMetadata();
    // Created in this order; the first one was used last, the third never.
    for (const [i, name] of ['first', 'second', 'third', 'fourth'].entries())
      await metadata.commitFile(fileAt(name, i * 10));
    await metadata.touchFiles([
      { name: 'first', usedAt: createdAt(35) },
      { name: 'second', usedAt: createdAt(15) },
      { name: 'fourth', usedAt: createdAt(31) },
    ]);
    const keeper = keeperOn(metadata, 60_000);
    await keeper.load();
    // second (used at 15), third (created at 20), fourth (used at 31), first (used at 35).
    expect([...keeper.index.files()].map((file) => file.name)).toEqual([
      'second',
      'third',
      'fourth',
      'first',
    ]);
    await keeper.close();
  });
});
