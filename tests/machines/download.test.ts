import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { createActor, fromCallback, fromPromise, SimulatedClock, toPromise, waitFor } from 'xstate';
import {
  type ChunkSinkInput,
  chunkFetchMachine,
  type SinkCommand,
} from '../../machines/chunkFetch.ts';
import { type DownloadInput, type DownloadPlan, downloadMachine } from '../../machines/download.ts';
import type { Failure, SendCommand } from '../../machines/shared.ts';
import type { FileInfo, Message } from '../../protocol/messages.ts';

/** The file: two chunks of four bytes. */
const content = Buffer.from('abcdefgh');
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const part = (index: number) => content.subarray(index * 4, index * 4 + 4);

const file: FileInfo = {
  name: 'a.bin',
  fileId: 'f1',
  size: 8,
  sha256: sha256(content),
  createdAt: '2026-01-01T00:00:00.000Z',
  chunks: [
    { index: 0, offset: 0, size: 4, vm: 'vm-a', sha256: sha256(part(0)) },
    { index: 1, offset: 4, size: 4, vm: null, sha256: sha256(part(1)) },
  ],
};

/** The broker's plan: chunk 0 from vm-a, chunk 1 from the core. */
const plan: DownloadPlan = {
  type: 'download.plan',
  id: 't1',
  from: 'broker',
  file,
  sources: [
    { index: 0, source: 'edge', vm: 'vm-a' },
    { index: 1, source: 'core', vm: null },
  ],
  segmentSize: 4,
  window: 2,
  fetchTimeoutMs: 2000,
};

/** The plan of an earlier download (another transfer id): every chunk on a VM. */
const cached: DownloadPlan = {
  ...plan,
  id: 'earlier',
  file: {
    ...file,
    chunks: [
      { index: 0, offset: 0, size: 4, vm: 'vm-a', sha256: sha256(part(0)) },
      { index: 1, offset: 4, size: 4, vm: 'vm-b', sha256: sha256(part(1)) },
    ],
  },
  sources: [
    { index: 0, source: 'edge', vm: 'vm-a' },
    { index: 1, source: 'edge', vm: 'vm-b' },
  ],
};

/** The broker's answer to a direct request: the reads stand (or, `false`, not). */
const answer = (direct: boolean, fileId = 'f1'): DownloadPlan => ({
  ...cached,
  id: 't1',
  file: { ...cached.file, fileId },
  direct,
});

/** Chunk `index` asked of its VM by this member, with the transfer's id, not the cached plan's. */
const chunkRead = (index: number) => ({
  type: 'chunk.read' as const,
  id: 't1',
  from: 'cli-1',
  fileId: 'f1',
  index,
  chunkSize: 4,
  offset: 0,
  segmentSize: 4,
  window: 2,
});

interface VerifyInput {
  transferId: string;
  size: number;
  sha256: string;
}

/**
 * A fake world: records what the machine (and its chunkFetch children) send,
 * keeps each chunk's bytes in memory (COMPLETE once every byte is in; the
 * CRC-32 is chunkFetch's business, tests/machines/chunkFetch.test.ts), and
 * verifies the reassembled file against the size and sha256 it is given, as
 * the runtime does (actors/member/download.ts).
 */
function start(overrides: Partial<DownloadInput> = {}) {
  const clock = new SimulatedClock();
  const sent: SendCommand[] = [];
  const chunks = new Map<number, Buffer[]>();
  const verified: VerifyInput[] = [];
  const send = (_: unknown, command: SendCommand) => void sent.push(command);
  const machine = downloadMachine.provide({
    actions: { send },
    actors: {
      chunkFetch: chunkFetchMachine.provide({
        actions: { send },
        actors: {
          chunkSink: fromCallback<SinkCommand, ChunkSinkInput>(({ input, receive, sendBack }) => {
            const written: Buffer[] = [];
            chunks.set(input.index, written);
            receive((command) => {
              if (command.type === 'RESET') {
                written.length = 0;
                return;
              }
              written.push(command.bytes);
              if (Buffer.concat(written).byteLength === input.size) sendBack({ type: 'COMPLETE' });
            });
          }),
        },
      }),
      verifyFile: fromPromise(async ({ input }: { input: VerifyInput }) => {
        verified.push(input);
        const whole = Buffer.concat(
          [...chunks.entries()].sort(([a], [b]) => a - b).flatMap(([, w]) => w),
        );
        if (whole.byteLength !== input.size || sha256(whole) !== input.sha256)
          throw new Error(
            `the reassembled file has sha256 ${sha256(whole)}; expected ${input.sha256}`,
          );
      }),
    },
  });
  const actor = createActor(machine, {
    clock,
    input: {
      transferId: 't1',
      self: 'cli-1',
      name: 'a.bin',
      requestTimeoutMs: 1000,
      coreTimeoutMs: 30_000,
      ...overrides,
    },
  }).start();
  /** A chunk's bytes as its source sends them. */
  const data = (from: string, index: number) =>
    actor.send({
      type: 'DATA',
      from,
      index,
      offset: 0,
      bytes: part(index),
      crc32: crc32(part(index)),
    });
  const messages = (type: Message['type']) => sent.filter((c) => c.message.type === type);
  return { clock, actor, sent, verified, data, messages };
}

const notFound: Failure = {
  code: 'not-found',
  message: '"a.bin" does not exist',
  retryable: false,
};

describe('download (§V.F, §V.G)', () => {
  test('asks the broker, fetches every chunk of the plan, verifies the whole file against its sha256 → done, and tells the broker', async () => {
    const { actor, sent, verified, data } = start();
    expect(actor.getSnapshot().value).toBe('locating');
    expect(sent).toEqual([
      {
        type: 'SEND',
        to: null,
        message: { type: 'download.request', id: 't1', from: 'cli-1', name: 'a.bin' },
      },
    ]);
    actor.send({ type: 'PLAN', plan });
    expect(actor.getSnapshot().value).toBe('fetching');
    data('vm-a', 0);
    // One chunk in is not the file: still fetching, nothing verified.
    expect(actor.getSnapshot().value).toBe('fetching');
    data('broker', 1);
    const output = await toPromise(actor);
    expect(verified).toEqual([{ transferId: 't1', size: 8, sha256: sha256(content) }]);
    expect(output).toMatchObject({ ok: true, file, failure: null, stale: false });
    expect(output.chunks).toMatchObject([
      { index: 0, ok: true, source: 'edge', edgeBytes: 4, coreBytes: 0 },
      { index: 1, ok: true, source: 'core', edgeBytes: 0, coreBytes: 4 },
    ]);
    expect(sent.slice(1)).toEqual([
      {
        type: 'SEND',
        to: null,
        message: {
          type: 'download.done',
          id: 't1',
          from: 'cli-1',
          ok: true,
          edgeBytes: 4,
          coreBytes: 4,
        },
      },
    ]);
  });

  test('every chunk in but the whole file does not match the sha256 of the plan → failed with integrity, retryable', async () => {
    const { actor, messages, data } = start();
    actor.send({ type: 'PLAN', plan: { ...plan, file: { ...file, sha256: 'f'.repeat(64) } } });
    data('vm-a', 0);
    data('broker', 1);
    const output = await toPromise(actor);
    expect(output).toMatchObject({
      ok: false,
      failure: {
        code: 'integrity',
        retryable: true,
        message: expect.stringContaining('f'.repeat(64)),
      },
    });
    expect(messages('download.done').map((c) => c.message)).toEqual([
      expect.objectContaining({ ok: false, reason: expect.stringContaining('sha256') }),
    ]);
  });

  test('the broker says the name is not found → failed with its failure, nothing fetched, the broker told', async () => {
    const { actor, sent, verified } = start();
    actor.send({ type: 'ERROR', from: 'broker', failure: notFound });
    expect(actor.getSnapshot().value).toBe('failed');
    const output = await toPromise(actor);
    expect(output).toEqual({ ok: false, file: null, chunks: [], failure: notFound, stale: false });
    expect(verified).toEqual([]);
    expect(sent.map((c) => c.message)).toEqual([
      { type: 'download.request', id: 't1', from: 'cli-1', name: 'a.bin' },
      {
        type: 'download.done',
        id: 't1',
        from: 'cli-1',
        ok: false,
        reason: notFound.message,
        edgeBytes: 0,
        coreBytes: 0,
      },
    ]);
  });

  test('the broker silent for requestTimeoutMs while locating → failed with a retryable timeout', async () => {
    const { actor, clock } = start();
    clock.increment(999);
    expect(actor.getSnapshot().value).toBe('locating');
    clock.increment(1);
    expect(await toPromise(actor)).toMatchObject({
      ok: false,
      failure: { code: 'timeout', retryable: true },
    });
  });

  test('a chunk that fails (the core cannot send it) → failed with that chunk’s failure, unverified; the broker is told, with the bytes that did come', async () => {
    const { actor, verified, messages, data } = start();
    actor.send({ type: 'PLAN', plan });
    data('vm-a', 0);
    // An error naming a chunk goes to that chunk, which has no other source.
    actor.send({
      type: 'ERROR',
      from: 'broker',
      index: 1,
      failure: { code: 'unavailable', message: 'core store down', retryable: true },
    });
    const output = await toPromise(actor);
    expect(output.failure).toEqual({
      code: 'unavailable',
      message: 'chunk 1 from the core: core store down',
      retryable: true,
    });
    expect(output.ok).toBe(false);
    expect(output.chunks.map((c) => [c.index, c.ok])).toEqual([
      [0, true],
      [1, false],
    ]);
    expect(verified).toEqual([]);
    expect(messages('download.done').map((c) => c.message)).toEqual([
      {
        type: 'download.done',
        id: 't1',
        from: 'cli-1',
        ok: false,
        reason: 'chunk 1 from the core: core store down',
        edgeBytes: 4,
        coreBytes: 0,
      },
    ]);
  });
});

describe('download, direct (a cached plan)', () => {
  test('reads each chunk from the cached plan’s VM while asking the broker to confirm: not done until it confirms, then done without a download.done', async () => {
    const { actor, clock, sent, data } = start({ cached });
    // No locating: the request and the reads go out side by side.
    expect(actor.getSnapshot().value).toBe('fetching');
    expect(sent).toEqual([
      {
        type: 'SEND',
        to: null,
        message: {
          type: 'download.request',
          id: 't1',
          from: 'cli-1',
          name: 'a.bin',
          direct: { fileId: 'f1', vms: ['vm-a', 'vm-b'] },
        },
      },
      { type: 'SEND', to: 'vm-a', message: chunkRead(0) },
      { type: 'SEND', to: 'vm-b', message: chunkRead(1) },
    ]);
    data('vm-a', 0);
    data('vm-b', 1);
    // Read and verified, but the broker has not said the reads stand.
    await waitFor(actor, (snapshot) => snapshot.matches('confirming'));
    clock.increment(999);
    expect(actor.getSnapshot().status).toBe('active');
    actor.send({ type: 'PLAN', plan: answer(true) });
    const output = await toPromise(actor);
    expect(output).toMatchObject({ ok: true, stale: false, failure: null });
    expect(output.chunks.map((c) => [c.source, c.edgeBytes])).toEqual([
      ['edge', 4],
      ['edge', 4],
    ]);
    // Nothing was served by the broker: nothing to end there.
    expect(sent).toHaveLength(3);
  });

  test('a confirmation that comes before the reads are in is kept: done as soon as the file is verified', async () => {
    const { actor, data } = start({ cached });
    actor.send({ type: 'PLAN', plan: answer(true) });
    expect(actor.getSnapshot().value).toBe('fetching');
    data('vm-a', 0);
    data('vm-b', 1);
    expect(await toPromise(actor)).toMatchObject({ ok: true, stale: false });
  });

  test('the reads verified but the broker silent for requestTimeoutMs → failed with a retryable timeout, and the broker told', async () => {
    const { actor, clock, data, messages } = start({ cached });
    data('vm-a', 0);
    data('vm-b', 1);
    await waitFor(actor, (snapshot) => snapshot.matches('confirming'));
    clock.increment(1000);
    expect(await toPromise(actor)).toMatchObject({
      ok: false,
      stale: false,
      failure: { code: 'timeout', retryable: true },
    });
    expect(messages('download.done').map((c) => c.message)).toMatchObject([{ ok: false }]);
  });

  test('the broker says the reads do not stand (direct false, or another version of the file) → failed at once as stale, retryable, unverified', async () => {
    for (const stale of [answer(false), answer(true, 'f2')]) {
      const { actor, data, verified, messages } = start({ cached });
      data('vm-a', 0);
      actor.send({ type: 'PLAN', plan: stale });
      expect(actor.getSnapshot().status).toBe('done');
      const output = await toPromise(actor);
      expect(output).toMatchObject({
        ok: false,
        stale: true,
        failure: { code: 'unavailable', retryable: true },
      });
      expect(verified).toEqual([]);
      expect(messages('download.done').map((c) => c.message)).toMatchObject([{ ok: false }]);
    }
  });

  test('a direct read that fell back to the core still ends in done once confirmed, and then the broker is told', async () => {
    const { actor, clock, data, messages } = start({ cached });
    data('vm-a', 0);
    // vm-b silent for the plan's fetch timeout: chunk 1 from the core.
    clock.increment(2000);
    expect(messages('download.fallback').map((c) => c.message)).toMatchObject([
      { index: 1, offset: 0, reason: 'timeout', failed: 'vm-b' },
    ]);
    data('broker', 1);
    actor.send({ type: 'PLAN', plan: answer(true) });
    expect(await toPromise(actor)).toMatchObject({ ok: true, stale: false });
    expect(messages('download.done').map((c) => c.message)).toEqual([
      { type: 'download.done', id: 't1', from: 'cli-1', ok: true, edgeBytes: 4, coreBytes: 4 },
    ]);
  });
});
