/**
 * Races between an upload's end and its clean-up, found by the chaos test:
 * nothing of an aborted upload may outlive its clean-up, on a VM or in the core.
 */
import { describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { createActor } from 'xstate';
import { coreKeyOf, uploadWriter } from '../../actors/broker/upload-writer.ts';
import { silentLogger } from '../../actors/log.ts';
import { chunkStorer } from '../../actors/vm/storer.ts';
import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import { createFsCoreCloud } from '../../plugins/core-cloud/fs.ts';
import type { CoreCloud } from '../../plugins/core-cloud/types.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message } from '../../protocol/messages.ts';

describe('an aborted upload leaves nothing behind', () => {
  function storer() {
    const store = createMemoryChunkStore();
    const replies: Message[] = [];
    const actor = createActor(
      chunkStorer({
        id: 'vm-3',
        store,
        budget: 1 << 30,
        space: { ceiling: null },
        send: async (_to, message) => void replies.push(message),
        ackTimeoutMs: 30_000,
        log: silentLogger(),
      }),
    ).start();
    return { store, replies, actor };
  }
  const base = { id: 't1', from: 'broker', fileId: 'F1' } as const;
  const segment = (offset: number, chunkSize = 28_000) => {
    const body = Buffer.alloc(Math.min(14_000, chunkSize - offset), 7);
    return {
      type: 'STORE' as const,
      message: {
        ...base,
        type: 'chunk.store' as const,
        index: 2,
        chunkSize,
        offset,
        crc32: crc32(body),
      },
      body,
    };
  };

  test('a VM: a whole-file delete right after a store runs after it, not before', async () => {
    const { store, replies, actor } = storer();
    actor.send(segment(0, 14_000));
    actor.send({ type: 'DELETE', message: { ...base, type: 'chunk.delete' } });
    for (let i = 0; i < 50 && !replies.some((m) => m.type === 'chunk.deleted'); i++)
      await Bun.sleep(5);
    expect(replies.map((m) => m.type)).toContain('chunk.deleted');
    expect(await store.list()).toEqual([]);
  });

  test('a VM: segments of a file deleted whole that arrive later are refused', async () => {
    const { store, replies, actor } = storer();
    actor.send({ type: 'DELETE', message: { ...base, type: 'chunk.delete' } });
    actor.send(segment(0));
    for (let i = 0; i < 50 && replies.length < 2; i++) await Bun.sleep(5);
    expect(replies.map((m) => m.type)).toEqual(['chunk.deleted', 'error']);
    expect(replies[1]).toMatchObject({ code: 'aborted', index: 2 });
    expect(await store.list()).toEqual([]);
  });

  test('the core: a commit under way when the writer stops lands before the clean-up deletes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cloudlet-seal-'));
    const fs = createFsCoreCloud({ dir });
    let committing: () => void = () => {};
    const commitStarted = new Promise<void>((resolve) => {
      committing = resolve;
    });
    const core: CoreCloud = {
      ...fs,
      createWriter: async (key, options) => {
        const writer = await fs.createWriter(key, options);
        return {
          ...writer,
          commit: () => {
            const done = writer.commit();
            committing();
            return done;
          },
        };
      },
    };
    const settling = new Map<string, Promise<unknown>>();
    const plan = {
      fileId: 'F2',
      chunks: [{ index: 0, offset: 0, size: 4096, vm: 'vm-1', replicas: ['vm-1'] }],
    };
    let route: (frame: Frame) => void = () => {};
    const writer = createActor(
      uploadWriter({
        brokerId: 'broker',
        core,
        send: async () => {},
        route: (_id, handler) => {
          route = handler;
          return () => {};
        },
        storeTimeoutMs: 10_000,
        log: silentLogger(),
        settling,
      }),
      { input: { plan, transferId: 't2', requester: 'cli-1' } },
    ).start();
    const bytes = Buffer.alloc(4096, 1);
    route({
      message: {
        type: 'upload.segment',
        id: 't2',
        from: 'cli-1',
        index: 0,
        offset: 0,
        crc32: crc32(bytes),
      },
      body: bytes,
    });
    route({
      message: {
        type: 'chunk.stored',
        id: 't2',
        from: 'vm-1',
        fileId: 'F2',
        index: 0,
        offset: 0,
        length: 4096,
        sha256: 'a'.repeat(64),
      },
      body: Buffer.alloc(0),
    });
    writer.send({ type: 'END' });
    await Bun.sleep(20);
    writer.send({ type: 'SEAL' });
    await commitStarted;
    // The planned VM fails now: the writer stops, and the clean-up (as the
    // broker runs it) waits for the core work to settle before deleting.
    writer.stop();
    expect(settling.has('t2')).toBe(true);
    await settling.get('t2');
    await core.delete(coreKeyOf('F2', 0));
    await Bun.sleep(50);
    expect(await core.list('F2/')).toEqual([]);
    await fs.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
