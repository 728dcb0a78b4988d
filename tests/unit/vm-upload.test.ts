/**
 * A VM takes an upload's segments straight from the uploader, as the broker
 * announced them (`chunk.expect`), checks each against its CRC-32, and keeps
 * the CRC-32s beside the bytes; reading a chunk sends each segment with the
 * CRC-32 it was stored with (and checks an older chunk against its sha256).
 */
import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { createActor } from 'xstate';
import { silentLogger } from '../../actors/log.ts';
import { openChunk } from '../../actors/vm/chunk-layout.ts';
import type { Segment } from '../../actors/vm/chunk-sender.ts';
import { chunkStorer } from '../../actors/vm/storer.ts';
import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import type { Message, MessageOf } from '../../protocol/messages.ts';
import { until } from '../support/until.ts';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const bytes = Buffer.from('abcdefghijklmnopqrstuvwxyz');

function storer() {
  const store = createMemoryChunkStore();
  const replies: Array<{ to: string; message: Message }> = [];
  const actor = createActor(
    chunkStorer({
      id: 'vm-1',
      store,
      budget: 1 << 30,
      space: { ceiling: null },
      send: async (to, message) => void replies.push({ to, message }),
      ackTimeoutMs: 30_000,
      log: silentLogger(),
    }),
  ).start();
  const expectChunk = (overrides: Partial<MessageOf<'chunk.expect'>> = {}) =>
    actor.send({
      type: 'EXPECT',
      message: {
        type: 'chunk.expect',
        id: 't1',
        from: 'broker',
        fileId: 'F',
        index: 0,
        chunkSize: bytes.byteLength,
        uploader: 'cli-1',
        ...overrides,
      },
    });
  const segment = (offset: number, length: number, from = 'cli-1', body?: Buffer) => {
    const piece = bytes.subarray(offset, offset + length);
    actor.send({
      type: 'SEGMENT',
      message: { type: 'upload.segment', id: 't1', from, index: 0, offset, crc32: crc32(piece) },
      body: body ?? piece,
    });
  };
  const stored = () =>
    replies.filter((r) => r.message.type === 'chunk.stored').map((r) => r.message);
  return { store, replies, actor, expectChunk, segment, stored };
}

async function readAll(store: ChunkStore, start = 0) {
  const segments: Segment[] = [];
  const iterator = await openChunk(store, 'F', 0, start);
  if (!iterator) return null;
  for (;;) {
    const next = await iterator.next();
    if (next.done) return segments;
    segments.push(next.value);
  }
}

describe('a VM taking an upload straight from the uploader', () => {
  test('stores the announced chunk, confirms each segment to the broker, keeps the CRC-32s', async () => {
    const { store, replies, expectChunk, segment, stored } = storer();
    expectChunk();
    segment(0, 10);
    segment(10, 10);
    segment(20, 6);
    await until(() => stored().length === 3, 'three confirmations');
    expect(replies.every((r) => r.to === 'broker')).toBe(true);
    expect(stored().map((m) => (m as { offset: number }).offset)).toEqual([0, 10, 20]);
    expect(stored()[2]).toMatchObject({ sha256: sha256(bytes) });
    const segments = await readAll(store);
    expect(segments?.map((s) => [s.offset, s.bytes.toString(), s.crc32])).toEqual([
      [0, 'abcdefghij', crc32(bytes.subarray(0, 10))],
      [10, 'klmnopqrst', crc32(bytes.subarray(10, 20))],
      [20, 'uvwxyz', crc32(bytes.subarray(20))],
    ]);
  });

  test('segments that come before the announcement wait for it', async () => {
    const { store, expectChunk, segment, stored } = storer();
    segment(0, 10);
    segment(10, 16);
    await Bun.sleep(20);
    expect(stored()).toEqual([]);
    expectChunk();
    await until(() => stored().length === 2, 'both confirmed');
    expect(Buffer.concat((await readAll(store))?.map((s) => s.bytes) ?? []).equals(bytes)).toBe(
      true,
    );
  });

  test('a segment from a member that is not the announced uploader is not stored', async () => {
    const { store, replies, expectChunk, segment } = storer();
    expectChunk();
    segment(0, 10, 'intruder');
    await Bun.sleep(20);
    expect(replies).toEqual([]);
    expect(await store.list()).toEqual([]);
  });

  test('bytes that do not match their CRC-32: refused as integrity, retryable, nothing kept', async () => {
    const { store, replies, expectChunk, segment } = storer();
    expectChunk();
    segment(0, 10, 'cli-1', Buffer.from('ABCDEFGHIJ'));
    await until(() => replies.length === 1, 'the refusal');
    expect(replies[0]).toMatchObject({
      to: 'broker',
      message: { type: 'error', id: 't1', code: 'integrity', retryable: true, index: 0 },
    });
    expect(await store.list()).toEqual([]);
  });
});

describe('a VM that joins (again)', () => {
  test('refuses the segments of uploads announced before, and removes what they left', async () => {
    const { store, replies, actor, expectChunk, segment, stored } = storer();
    expectChunk();
    segment(0, 10);
    await until(() => stored().length === 1, 'the first segment stored');
    // A standby broker took over: the old broker's upload will never commit.
    actor.send({ type: 'JOINED' });
    segment(10, 16);
    await until(async () => (await store.list()).length === 0, 'nothing left');
    await Bun.sleep(20);
    // Dropped, not stored nor confirmed: nobody waits for it any more.
    expect(replies).toHaveLength(1);
    expect(await store.list()).toEqual([]);
  });

  test('a chunk announced after the join is stored as usual', async () => {
    const { actor, expectChunk, segment, stored } = storer();
    actor.send({ type: 'JOINED' });
    expectChunk({ fileId: 'G', id: 't2' });
    const piece = bytes.subarray(0, 26);
    actor.send({
      type: 'SEGMENT',
      message: {
        type: 'upload.segment',
        id: 't2',
        from: 'cli-1',
        index: 0,
        offset: 0,
        crc32: crc32(piece),
      },
      body: piece,
    });
    await until(() => stored().length === 1, 'stored');
    expect(stored()[0]).toMatchObject({ sha256: sha256(bytes) });
    void segment;
  });
});

describe('reading a chunk back', () => {
  async function storedChunk() {
    const { store, expectChunk, segment, stored } = storer();
    expectChunk();
    segment(0, 10);
    segment(10, 16);
    await until(() => stored().length === 2, 'stored');
    return store;
  }

  test('a segment cut at the start offset is checked, then sent with its own CRC-32', async () => {
    const store = await storedChunk();
    const segments = await readAll(store, 4);
    expect(segments?.map((s) => [s.offset, s.bytes.toString(), s.crc32])).toEqual([
      [4, 'efghij', crc32(Buffer.from('efghij'))],
      [10, 'klmnopqrstuvwxyz', crc32(bytes.subarray(10))],
    ]);
  });

  test('a damaged segment cut at the start offset is refused as integrity', async () => {
    const store = await storedChunk();
    const key = (await store.list('c/'))[0] as string;
    await store.put(key, Buffer.from('abcdXfghij'));
    await expect(readAll(store, 4)).rejects.toMatchObject({ code: 'integrity' });
  });

  test('a chunk stored before CRC-32s were kept is checked against its sha256 and given them', async () => {
    const store = await storedChunk();
    const manifestKey = (await store.list('m/'))[0] as string;
    const manifest = JSON.parse(((await store.get(manifestKey)) as Buffer).toString());
    delete manifest.crcs;
    await store.put(manifestKey, Buffer.from(JSON.stringify(manifest)));
    const segments = await readAll(store);
    expect(segments?.map((s) => s.crc32)).toEqual([
      crc32(bytes.subarray(0, 10)),
      crc32(bytes.subarray(10)),
    ]);
    const upgraded = JSON.parse(((await store.get(manifestKey)) as Buffer).toString());
    expect(upgraded.crcs).toEqual([crc32(bytes.subarray(0, 10)), crc32(bytes.subarray(10))]);
  });

  test('such a chunk that fails its sha256 is refused as integrity, before any byte is sent', async () => {
    const store = await storedChunk();
    const manifestKey = (await store.list('m/'))[0] as string;
    const manifest = JSON.parse(((await store.get(manifestKey)) as Buffer).toString());
    delete manifest.crcs;
    await store.put(manifestKey, Buffer.from(JSON.stringify(manifest)));
    await store.put((await store.list('c/'))[1] as string, Buffer.from('damaged'));
    await expect(openChunk(store, 'F', 0, 0)).rejects.toMatchObject({ code: 'integrity' });
  });
});
