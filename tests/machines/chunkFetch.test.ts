import { describe, expect, test } from 'bun:test';
import { crc32 } from 'node:zlib';
import { createActor, fromCallback, SimulatedClock, toPromise } from 'xstate';
import {
  type ChunkFetchInput,
  type ChunkSinkInput,
  chunkFetchMachine,
  type SinkCommand,
} from '../../machines/chunkFetch.ts';
import type { SendCommand } from '../../machines/shared.ts';

const chunk = Buffer.from('0123456789abcdef');

/**
 * A sink that keeps bytes in memory and reports as the real one does: a
 * segment that fails its CRC-32 is CORRUPT and nothing more is written until
 * RESET; COMPLETE once every byte is in.
 */
function memorySink(written: Buffer[]) {
  return fromCallback<SinkCommand, ChunkSinkInput>(({ input, receive, sendBack }) => {
    let count = 0;
    let corrupt = false;
    receive((command) => {
      if (command.type === 'RESET') {
        count = 0;
        corrupt = false;
        written.length = 0;
        return;
      }
      if (corrupt) return;
      if (crc32(command.bytes) !== command.crc32) {
        corrupt = true;
        sendBack({ type: 'CORRUPT', offset: command.offset });
        return;
      }
      written.push(command.bytes);
      count += command.bytes.byteLength;
      if (count === input.size) sendBack({ type: 'COMPLETE' });
    });
  });
}

function start(overrides: Partial<ChunkFetchInput> = {}) {
  const clock = new SimulatedClock();
  const sent: SendCommand[] = [];
  const written: Buffer[] = [];
  const machine = chunkFetchMachine.provide({
    actors: { chunkSink: memorySink(written) },
    actions: { send: (_, command) => void sent.push(command) },
  });
  const actor = createActor(machine, {
    clock,
    input: {
      transferId: 't1',
      name: 'a.bin',
      fileId: 'f1',
      brokerId: 'broker',
      self: 'cli-1',
      index: 0,
      size: chunk.byteLength,
      source: 'edge',
      vm: 'vm-a',
      fetchTimeoutMs: 2000,
      coreTimeoutMs: 30_000,
      ...overrides,
    },
  }).start();
  /** Bytes as a source sends them: with the CRC-32 of what it stored there (by default, `bytes`'). */
  const data = (from: string, offset: number, bytes: Buffer, stored = bytes) =>
    actor.send({ type: 'DATA', from, offset, bytes, crc32: crc32(stored) });
  return { clock, actor, sent, written, data };
}

describe('chunkFetch (§V.G failover)', () => {
  test('all from the edge', async () => {
    const { actor, data, sent } = start();
    data('vm-a', 0, chunk.subarray(0, 10));
    data('vm-a', 10, chunk.subarray(10));
    const output = await toPromise(actor);
    expect(output).toMatchObject({ ok: true, source: 'edge', edgeBytes: 16, coreBytes: 0 });
    expect(sent).toEqual([]);
  });

  test('edge silent for the fetch timeout → core, resuming at the next byte', async () => {
    const { actor, clock, data, sent, written } = start();
    data('vm-a', 0, chunk.subarray(0, 10));
    clock.increment(1999);
    expect(actor.getSnapshot().value).toEqual({ edge: 'waiting' });
    clock.increment(1);
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(sent.map((c) => c.message)).toEqual([
      {
        type: 'download.fallback',
        id: 't1',
        from: 'cli-1',
        name: 'a.bin',
        fileId: 'f1',
        index: 0,
        offset: 10,
        reason: 'timeout',
        failed: 'vm-a',
      },
    ]);
    data('vm-a', 10, chunk.subarray(10)); // late edge bytes are ignored
    data('broker', 10, chunk.subarray(10));
    const output = await toPromise(actor);
    expect(output).toMatchObject({
      ok: true,
      source: 'core',
      edgeBytes: 10,
      coreBytes: 6,
      fallback: 'timeout',
    });
    expect(Buffer.concat(written).equals(chunk)).toBe(true);
  });

  test('a segment that fails its CRC-32 → the whole chunk again from the core', async () => {
    const { actor, data, sent, written } = start();
    const corrupt = Buffer.from(chunk);
    corrupt[3] = 0xff - (corrupt[3] ?? 0);
    data('vm-a', 0, corrupt, chunk);
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(sent[0]?.message).toMatchObject({
      type: 'download.fallback',
      offset: 0,
      reason: 'integrity',
    });
    data('broker', 0, chunk);
    expect(await toPromise(actor)).toMatchObject({
      ok: true,
      source: 'core',
      fallback: 'integrity',
    });
    expect(Buffer.concat(written).equals(chunk)).toBe(true);
  });

  test('the VM found its own copy damaged → the whole chunk from the core, said as integrity', async () => {
    const { actor, data, sent, written } = start();
    data('vm-a', 0, chunk.subarray(0, 10));
    actor.send({
      type: 'SOURCE_ERROR',
      from: 'vm-a',
      code: 'integrity',
      message: 'segment at 10 of chunk 0 is damaged',
    });
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(sent[0]?.message).toMatchObject({ reason: 'integrity', offset: 0, failed: 'vm-a' });
    expect(written).toEqual([]);
    data('broker', 0, chunk);
    expect(await toPromise(actor)).toMatchObject({ ok: true, source: 'core', coreBytes: 16 });
  });

  test('a segment from the core that fails its CRC-32 → failed, integrity, retryable', async () => {
    const { actor, data, written } = start({ source: 'core' });
    const corrupt = Buffer.from(chunk);
    corrupt[0] = 0xff - (corrupt[0] ?? 0);
    data('broker', 0, corrupt, chunk);
    expect(await toPromise(actor)).toMatchObject({
      ok: false,
      failure: { code: 'integrity', retryable: true },
    });
    expect(written).toEqual([]);
  });

  test('the VM says it lacks the chunk → core', () => {
    const { actor, sent } = start();
    actor.send({ type: 'SOURCE_ERROR', from: 'vm-a', message: 'chunk 0 is not held here' });
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(sent[0]?.message).toMatchObject({ reason: 'error', offset: 0 });
  });

  test('a chunk of a failed VM starts at the core without asking again', async () => {
    const { actor, data, sent } = start({ source: 'core' });
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    data('broker', 0, chunk);
    expect(await toPromise(actor)).toMatchObject({ ok: true, source: 'core', coreBytes: 16 });
    expect(sent).toEqual([]);
  });

  test('core silent too → failed with a retryable timeout', async () => {
    const { actor, clock } = start({ source: 'core' });
    clock.increment(30_000);
    expect(await toPromise(actor)).toMatchObject({
      ok: false,
      failure: { code: 'timeout', retryable: true },
    });
  });

  test('out-of-order or foreign bytes are not taken', () => {
    const { actor, data, written } = start();
    data('vm-a', 5, chunk.subarray(5));
    data('vm-x', 0, chunk);
    data('broker', 0, chunk);
    expect(written).toEqual([]);
    expect(actor.getSnapshot().value).toEqual({ edge: 'waiting' });
  });

  test('an empty chunk is one empty segment', async () => {
    const { actor, data } = start({ size: 0 });
    data('vm-a', 0, Buffer.alloc(0));
    expect(await toPromise(actor)).toMatchObject({ ok: true, source: 'edge' });
  });
});

describe('chunkFetch with replicas (beyond the paper)', () => {
  const replicas = (...vms: string[]) => start({ vm: vms[0] ?? null, replicas: vms });
  const fallbacks = (sent: SendCommand[]) =>
    sent.map((c) => c.message).filter((m) => m.type === 'download.fallback');

  test('replica 1 silent → the next replica, from the next byte; it completes from the edge', async () => {
    const { actor, clock, data, sent, written } = replicas('vm-a', 'vm-b', 'vm-c');
    data('vm-a', 0, chunk.subarray(0, 10));
    clock.increment(1999);
    expect(sent).toEqual([]);
    clock.increment(1);
    expect(actor.getSnapshot().value).toEqual({ edge: 'waiting' });
    expect(actor.getSnapshot().context).toMatchObject({ vm: 'vm-b', tried: ['vm-a'] });
    expect(sent).toEqual([
      {
        type: 'SEND',
        to: null,
        message: {
          type: 'download.fallback',
          id: 't1',
          from: 'cli-1',
          name: 'a.bin',
          fileId: 'f1',
          index: 0,
          offset: 10,
          reason: 'timeout',
          failed: 'vm-a',
          vm: 'vm-b',
        },
      },
    ]);
    data('vm-b', 10, chunk.subarray(10));
    expect(await toPromise(actor)).toEqual({
      index: 0,
      ok: true,
      source: 'edge',
      edgeBytes: 16,
      coreBytes: 0,
      fallback: 'timeout',
      failure: null,
    });
    expect(sent).toHaveLength(1);
    expect(Buffer.concat(written).equals(chunk)).toBe(true);
  });

  test('each replica gets its own fetch timeout', () => {
    const { actor, clock, data, sent } = replicas('vm-a', 'vm-b', 'vm-c');
    clock.increment(2000);
    data('vm-b', 0, chunk.subarray(0, 4));
    clock.increment(1999);
    expect(actor.getSnapshot().context.vm).toBe('vm-b');
    clock.increment(1);
    expect(actor.getSnapshot().context.vm).toBe('vm-c');
    expect(fallbacks(sent)).toMatchObject([
      { offset: 0, failed: 'vm-a', vm: 'vm-b' },
      { offset: 4, failed: 'vm-b', vm: 'vm-c' },
    ]);
  });

  test('the last replica silent too → core, naming it as failed', async () => {
    const { actor, clock, data, sent } = replicas('vm-a', 'vm-b');
    data('vm-a', 0, chunk.subarray(0, 4));
    clock.increment(2000);
    data('vm-b', 4, chunk.subarray(4, 10));
    clock.increment(2000);
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(fallbacks(sent)).toEqual([
      expect.objectContaining({ offset: 4, reason: 'timeout', failed: 'vm-a', vm: 'vm-b' }),
      {
        type: 'download.fallback',
        id: 't1',
        from: 'cli-1',
        name: 'a.bin',
        fileId: 'f1',
        index: 0,
        offset: 10,
        reason: 'timeout',
        failed: 'vm-b',
      },
    ]);
    data('broker', 10, chunk.subarray(10));
    expect(await toPromise(actor)).toMatchObject({
      ok: true,
      source: 'core',
      edgeBytes: 10,
      coreBytes: 6,
      fallback: 'timeout',
    });
  });

  test('an error from the current replica → the next one', () => {
    const { actor, sent } = replicas('vm-a', 'vm-b');
    actor.send({ type: 'SOURCE_ERROR', from: 'vm-b', message: 'not me yet' });
    expect(actor.getSnapshot().context.vm).toBe('vm-a');
    expect(sent).toEqual([]);
    actor.send({ type: 'SOURCE_ERROR', from: 'vm-a', message: 'chunk 0 is not held here' });
    expect(actor.getSnapshot().value).toEqual({ edge: 'waiting' });
    expect(fallbacks(sent)).toEqual([
      expect.objectContaining({ offset: 0, reason: 'error', failed: 'vm-a', vm: 'vm-b' }),
    ]);
    actor.send({ type: 'SOURCE_ERROR', from: 'vm-b', message: 'chunk 0 is not held here' });
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(fallbacks(sent)[1]).toMatchObject({ reason: 'error', failed: 'vm-b' });
    expect(fallbacks(sent)[1]).not.toHaveProperty('vm');
  });

  test('bytes that fail their CRC-32 on replica 1 → the whole chunk from replica 2', async () => {
    const { actor, data, sent, written } = replicas('vm-a', 'vm-b');
    data('vm-a', 0, chunk.subarray(0, 10));
    const corrupt = Buffer.from(chunk);
    corrupt[13] = 0xff - (corrupt[13] ?? 0);
    data('vm-a', 10, corrupt.subarray(10), chunk.subarray(10));
    expect(actor.getSnapshot().value).toEqual({ edge: 'waiting' });
    expect(actor.getSnapshot().context).toMatchObject({ vm: 'vm-b', next: 0 });
    expect(fallbacks(sent)).toEqual([
      expect.objectContaining({ offset: 0, reason: 'integrity', failed: 'vm-a', vm: 'vm-b' }),
    ]);
    // The sink started over.
    expect(written).toEqual([]);
    data('vm-b', 0, chunk);
    expect(await toPromise(actor)).toMatchObject({
      ok: true,
      source: 'edge',
      fallback: 'integrity',
      coreBytes: 0,
    });
    expect(Buffer.concat(written).equals(chunk)).toBe(true);
  });

  test('bad bytes on the last replica → the whole chunk from the core', async () => {
    const { actor, data, sent, written } = replicas('vm-a', 'vm-b');
    const corrupt = Buffer.from(chunk);
    corrupt[0] = 0xff - (corrupt[0] ?? 0);
    data('vm-a', 0, corrupt, chunk);
    data('vm-b', 0, corrupt, chunk);
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(fallbacks(sent)[1]).toMatchObject({ offset: 0, reason: 'integrity', failed: 'vm-b' });
    expect(fallbacks(sent)[1]).not.toHaveProperty('vm');
    data('broker', 0, chunk);
    expect(await toPromise(actor)).toMatchObject({ ok: true, source: 'core', coreBytes: 16 });
    expect(Buffer.concat(written).equals(chunk)).toBe(true);
  });

  test('bytes from a replica left behind are ignored', async () => {
    const { actor, clock, data, sent, written } = replicas('vm-a', 'vm-b');
    data('vm-a', 0, chunk.subarray(0, 10));
    clock.increment(2000);
    expect(actor.getSnapshot().context.vm).toBe('vm-b');
    // vm-a wakes up: its bytes, and its error, no longer count.
    data('vm-a', 10, chunk.subarray(10));
    actor.send({ type: 'SOURCE_ERROR', from: 'vm-a', message: 'late' });
    expect(written).toHaveLength(1);
    expect(actor.getSnapshot().value).toEqual({ edge: 'waiting' });
    expect(actor.getSnapshot().context).toMatchObject({ vm: 'vm-b', next: 10, edgeBytes: 10 });
    expect(sent).toHaveLength(1);
    data('vm-b', 10, chunk.subarray(10));
    expect(await toPromise(actor)).toMatchObject({ ok: true, source: 'edge', edgeBytes: 16 });
  });

  test('a single replica listed behaves like no replicas: straight to the core', () => {
    const { actor, clock, sent } = replicas('vm-a');
    clock.increment(2000);
    expect(actor.getSnapshot().value).toEqual({ core: 'waiting' });
    expect(fallbacks(sent)).toEqual([expect.objectContaining({ failed: 'vm-a', offset: 0 })]);
    expect(fallbacks(sent)[0]).not.toHaveProperty('vm');
  });
});
