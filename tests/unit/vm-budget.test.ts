/**
 * A VM never stores more than its memory budget, even when chunks of
 * different files arrive at once (each file has its own queue, so nothing
 * else orders them): the chunk storer admits a chunk only if its footprint
 * (bytes and manifest) fits beside what the store holds and what chunks
 * still being written were promised, and gives that promise back however a
 * chunk stops.
 */
import { describe, expect, test } from 'bun:test';
import { crc32 } from 'node:zlib';
import { createActor } from 'xstate';
import { silentLogger } from '../../actors/log.ts';
import { chunkStorer } from '../../actors/vm/storer.ts';
import { chunkFootprint } from '../../machines/edge-index.ts';
import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import type { Message } from '../../protocol/messages.ts';
import { until } from '../support/until.ts';

const BUDGET = 1_000_000;
const SEGMENT = 200_000;

/** A VM's chunk storer over a memory store that remembers the most it ever held. */
function vm(budget = BUDGET) {
  const memory = createMemoryChunkStore();
  const faults = { put: (_key: string): Error | undefined => undefined };
  let peak = 0;
  const store: ChunkStore = {
    ...memory,
    async put(key, value) {
      const fault = faults.put(key);
      if (fault) throw fault;
      await memory.put(key, value);
      peak = Math.max(peak, await memory.usedBytes());
    },
  };
  const replies: Message[] = [];
  const actor = createActor(
    chunkStorer({
      id: 'vm-1',
      store,
      budget,
      space: { ceiling: null },
      send: async (_to, message) => void replies.push(message),
      ackTimeoutMs: 30_000,
      log: silentLogger(),
    }),
  ).start();

  /** Sends segment `offset` of a chunk of `size` bytes of `fileId`, written by request `id`. */
  const send = (id: string, fileId: string, size: number, offset: number, length = SEGMENT) => {
    const body = Buffer.alloc(Math.min(length, size - offset), 7);
    actor.send({
      type: 'STORE',
      message: {
        type: 'chunk.store',
        id,
        from: 'broker',
        fileId,
        index: 0,
        chunkSize: size,
        offset,
        crc32: crc32(body),
      },
      body,
    });
  };
  const repliesTo = (id: string) =>
    replies.filter((message) => 'id' in message && message.id === id);
  const answered = (id: string, count: number) =>
    until(() => repliesTo(id).length >= count, `request ${id} has ${count} replies`, 5000);
  /** Sends the rest of a chunk whose first segment is stored, and waits for it to be whole. */
  const finish = async (id: string, fileId: string, size: number) => {
    for (let offset = SEGMENT; offset < size; offset += SEGMENT) send(id, fileId, size, offset);
    await answered(id, Math.ceil(size / SEGMENT));
    return repliesTo(id).at(-1);
  };
  return {
    store,
    faults,
    actor,
    send,
    repliesTo,
    answered,
    finish,
    get peak() {
      return peak;
    },
  };
}

const noSpace = { type: 'error', code: 'no-space', retryable: true };

/** The size of a chunk whose footprint is exactly `footprint` bytes. */
function sizeWithFootprint(footprint: number): number {
  // What each segment beyond the first adds to the manifest.
  const perSegment =
    chunkFootprint(2 * SEGMENT, SEGMENT) - chunkFootprint(SEGMENT, SEGMENT) - SEGMENT;
  for (let segments = 1; ; segments++) {
    const size = footprint - chunkFootprint(0, SEGMENT) - perSegment * (segments - 1);
    if (Math.max(1, Math.ceil(size / SEGMENT)) === segments) return size;
  }
}

describe('a VM keeps within its budget when chunks arrive together', () => {
  for (const [size, fitting] of [
    // The audit's case: 1.8 MB of chunks were all taken on a 1 MB budget.
    [600_000, 1],
    [450_000, 2],
  ] as const) {
    test(`three ${size}-byte chunks of different files at once on ${BUDGET} bytes: ${fitting} taken, the rest refused no-space`, async () => {
      const edge = vm();
      const files = ['f1', 'f2', 'f3'];
      for (const file of files) edge.send(`up-${file}`, file, size, 0);
      for (const file of files) await edge.answered(`up-${file}`, 1);

      const admitted = files.filter(
        (file) => edge.repliesTo(`up-${file}`)[0]?.type === 'chunk.stored',
      );
      const refused = files.filter((file) => !admitted.includes(file));
      expect(admitted).toHaveLength(fitting);
      expect(fitting * chunkFootprint(size, SEGMENT)).toBeLessThanOrEqual(BUDGET);
      expect((fitting + 1) * chunkFootprint(size, SEGMENT)).toBeGreaterThan(BUDGET);
      for (const file of refused) {
        expect(edge.repliesTo(`up-${file}`)).toEqual([expect.objectContaining(noSpace)]);
        // Refused at its first segment: nothing of it was written.
        expect(await edge.store.list(`c/${file}/`)).toEqual([]);
      }
      for (const file of admitted)
        expect(await edge.finish(`up-${file}`, file, size)).toMatchObject({
          type: 'chunk.stored',
          sha256: expect.any(String),
        });
      expect(edge.peak).toBeLessThanOrEqual(BUDGET);
      expect(await edge.store.usedBytes()).toBeLessThanOrEqual(BUDGET);
      edge.actor.stop();
    });
  }

  test('a chunk is admitted with its manifest: one whose bytes alone fit the room left does not', async () => {
    const edge = vm();
    edge.send('up-a', 'a', 600_000, 0);
    await edge.finish('up-a', 'a', 600_000);
    const left = BUDGET - (await edge.store.usedBytes());
    // Bytes exactly the room left: its manifest would take the store past the budget.
    edge.send('up-b', 'b', left, 0);
    await edge.answered('up-b', 1);
    expect(edge.repliesTo('up-b')).toEqual([expect.objectContaining(noSpace)]);
    edge.actor.stop();
  });
});

describe('a chunk that stops gives its room back', () => {
  // Each way a chunk being written can stop, with the chunk's first of three
  // segments stored: afterwards a chunk whose footprint is exactly the room
  // the store has left is taken whole, which it is not if a byte is still
  // promised to the stopped chunk.
  const ways: Record<string, (edge: ReturnType<typeof vm>) => Promise<void>> = {
    'deleted with its file (an aborted upload)': async (edge) => {
      edge.actor.send({
        type: 'DELETE',
        message: { type: 'chunk.delete', id: 'rm-a', from: 'broker', fileId: 'a' },
      });
      await edge.answered('rm-a', 1);
    },
    'deleted alone': async (edge) => {
      edge.actor.send({
        type: 'DELETE',
        message: { type: 'chunk.delete', id: 'rm-a', from: 'broker', fileId: 'a', index: 0 },
      });
      await edge.answered('rm-a', 1);
    },
    'its store failing a segment': async (edge) => {
      edge.faults.put = (key) =>
        key.startsWith('c/a/') ? new Error('connection lost') : undefined;
      edge.send('up-a', 'a', 600_000, SEGMENT);
      await edge.answered('up-a', 2);
      expect(edge.repliesTo('up-a')[1]).toMatchObject({ code: 'unavailable' });
      edge.faults.put = () => undefined;
    },
    'its store failing the manifest': async (edge) => {
      edge.faults.put = (key) =>
        key.startsWith('m/a/') ? new Error('connection lost') : undefined;
      edge.send('up-a', 'a', 600_000, SEGMENT);
      edge.send('up-a', 'a', 600_000, 2 * SEGMENT);
      // The last segment is stored but never acknowledged: the manifest
      // failed. The segments stay (the broker deletes them) and count as held.
      await until(async () => (await edge.store.list('c/a/')).length === 3, 'all of a stored');
      await Bun.sleep(20);
      expect(edge.repliesTo('up-a')).toHaveLength(2);
      edge.faults.put = () => undefined;
    },
    'shorter segments than its first': async (edge) => {
      for (let i = 0; i < 3; i++) edge.send('up-a', 'a', 600_000, SEGMENT + i * 1000, 1000);
      await edge.answered('up-a', 4);
      expect(edge.repliesTo('up-a').at(-1)).toMatchObject({ code: 'bad-request' });
    },
    'written again by another request': async (edge) => {
      edge.send('copy-a', 'a', 100_000, 0);
      await edge.answered('copy-a', 1);
      expect(edge.repliesTo('copy-a')[0]).toMatchObject({ type: 'chunk.stored' });
    },
  };

  for (const [way, stop] of Object.entries(ways)) {
    test(way, async () => {
      const edge = vm();
      edge.send('up-a', 'a', 600_000, 0);
      await edge.answered('up-a', 1);
      // While a is being written, b does not fit beside it.
      edge.send('up-b', 'b', 600_000, 0);
      await edge.answered('up-b', 1);
      expect(edge.repliesTo('up-b')).toEqual([expect.objectContaining(noSpace)]);

      await stop(edge);
      const size = sizeWithFootprint(BUDGET - (await edge.store.usedBytes()));
      edge.send('up-c', 'c', size, 0);
      await edge.answered('up-c', 1);
      expect(edge.repliesTo('up-c')[0]).toMatchObject({ type: 'chunk.stored' });
      expect(await edge.finish('up-c', 'c', size)).toMatchObject({ sha256: expect.any(String) });
      expect(edge.peak).toBeLessThanOrEqual(BUDGET);
      edge.actor.stop();
    });
  }
});

describe('a complete chunk written again (a read-repair)', () => {
  test('its own room counts for the new copy', async () => {
    const edge = vm();
    edge.send('up-a', 'a', 800_000, 0);
    await edge.finish('up-a', 'a', 800_000);
    edge.send('repair-a', 'a', 800_000, 0);
    expect(await edge.finish('repair-a', 'a', 800_000)).toMatchObject({
      sha256: expect.any(String),
    });
    expect(edge.peak).toBeLessThanOrEqual(BUDGET);
  });

  test('refused for want of room, the complete copy stays', async () => {
    const edge = vm();
    edge.send('up-a', 'a', 300_000, 0);
    await edge.finish('up-a', 'a', 300_000);
    const before = await edge.store.list('c/a/');
    // b, being written, holds room the larger copy of a would need.
    edge.send('up-b', 'b', 600_000, 0);
    await edge.answered('up-b', 1);
    edge.send('repair-a', 'a', 500_000, 0);
    await edge.answered('repair-a', 1);
    expect(edge.repliesTo('repair-a')).toEqual([expect.objectContaining(noSpace)]);
    expect(await edge.store.list('c/a/')).toEqual(before);
    expect(await edge.store.has('m/a/0')).toBe(true);
    edge.actor.stop();
  });
});
