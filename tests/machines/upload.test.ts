import { describe, expect, test } from 'bun:test';
import { createActor, fromCallback, fromPromise, SimulatedClock, toPromise } from 'xstate';
import { CloudletError, type SendCommand } from '../../machines/shared.ts';
import {
  type CommitRequest,
  type UploadInput,
  type UploadPlan,
  uploadMachine,
  type WriterCommand,
} from '../../machines/upload.ts';
import type { FileInfo } from '../../protocol/messages.ts';

const input: UploadInput = {
  transferId: 't1',
  requester: 'cli-1',
  brokerId: 'broker',
  name: 'a.bin',
  size: 10,
  overwrite: false,
  segmentSize: 4,
  window: 2,
  idleTimeoutMs: 30_000,
  split: 2,
  replicas: 1,
  candidates: [
    { id: 'vm-a', memoryEffective: 300 },
    { id: 'vm-b', memoryEffective: 200 },
  ],
  startedAt: '2026-01-01T00:00:00.000Z',
};

/** A fake world: records what the machine sends, writes and cleans up. */
function start(
  overrides: { reserve?: () => Promise<{ fileId: string }>; commit?: () => Promise<never> } = {},
) {
  const clock = new SimulatedClock();
  const sent: SendCommand[] = [];
  const writes: WriterCommand[] = [];
  const cleaned: UploadPlan[] = [];
  const committed: CommitRequest[] = [];
  let writerStopped = false;
  const machine = uploadMachine.provide({
    actions: { send: (_, command) => void sent.push(command) },
    actors: {
      reserveName: fromPromise(overrides.reserve ?? (async () => ({ fileId: 'f1' }))),
      chunkWriter: fromCallback<WriterCommand, { plan: UploadPlan; transferId: string }>(
        ({ receive, sendBack }) => {
          receive((command) => {
            writes.push(command);
            if (command.type === 'WRITE')
              sendBack({ type: 'SEGMENT_STORED', index: command.index, offset: command.offset });
            if (command.type === 'SEAL')
              sendBack({ type: 'SEALED', chunkSha256: ['c0', 'c1'], sha256: 'file-sha' });
          });
          return () => {
            writerStopped = true;
          };
        },
      ),
      commitFile: fromPromise(
        overrides.commit ??
          (async ({ input: request }: { input: CommitRequest }): Promise<FileInfo> => {
            committed.push(request);
            return {
              name: request.name,
              fileId: request.plan.fileId,
              size: request.size,
              sha256: request.sha256,
              createdAt: '2026-01-01T00:00:00.000Z',
              chunks: request.plan.chunks.map((chunk, index) => ({
                ...chunk,
                sha256: request.chunkSha256[index] ?? '',
              })),
            };
          }),
      ),
      cleanUp: fromPromise(
        async ({ input: job }: { input: { plan: UploadPlan; transferId: string } }) => {
          cleaned.push(job.plan);
        },
      ),
    },
  });
  const actor = createActor(machine, { clock, input }).start();
  const segment = (index: number, offset: number, length: number) =>
    actor.send({ type: 'SEGMENT', index, offset, bytes: Buffer.alloc(length, 7) });
  return {
    clock,
    actor,
    sent,
    writes,
    cleaned,
    committed,
    segment,
    writerStopped: () => writerStopped,
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('upload (§V.D)', () => {
  test('plans by memory fraction, acks each stored segment, commits when sealed and matching', async () => {
    const { actor, sent, segment, committed } = start();
    await settle();
    expect(sent[0]?.message).toMatchObject({
      type: 'upload.ready',
      fileId: 'f1',
      chunks: [
        { index: 0, offset: 0, size: 6, vm: 'vm-a' },
        { index: 1, offset: 6, size: 4, vm: 'vm-b' },
      ],
    });
    segment(0, 0, 4);
    segment(0, 4, 2);
    segment(1, 0, 4);
    expect(sent.filter((c) => c.message.type === 'upload.ack').map((c) => c.message)).toMatchObject(
      [
        { index: 0, offset: 0 },
        { index: 0, offset: 4 },
        { index: 1, offset: 0 },
      ],
    );
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: ['c0', 'c1'] });
    const output = await toPromise(actor);
    expect(output.result).toBe('committed');
    expect(committed[0]).toMatchObject({ sha256: 'file-sha', chunkSha256: ['c0', 'c1'] });
    expect(sent.at(-1)?.message).toMatchObject({ type: 'upload.done', id: 't1' });
  });

  test('an abort mid-transfer cleans up every partial chunk and tells the uploader why', async () => {
    const { actor, sent, segment, cleaned, writerStopped } = start();
    await settle();
    segment(0, 0, 4);
    actor.send({ type: 'ABORT', reason: 'ctrl-c' });
    const output = await toPromise(actor);
    expect(output).toMatchObject({ result: 'aborted', failure: { code: 'aborted' } });
    expect(cleaned).toHaveLength(1);
    expect(cleaned[0]?.fileId).toBe('f1');
    expect(writerStopped()).toBe(true);
    expect(sent.at(-1)?.message).toMatchObject({ type: 'error', id: 't1', code: 'aborted' });
  });

  test('a planned VM failing aborts with a retryable error; an unrelated one does not', async () => {
    const { actor, cleaned } = start();
    await settle();
    actor.send({ type: 'VM.STATUS', id: 'vm-z', status: 'failed' });
    expect(actor.getSnapshot().status).toBe('active');
    actor.send({ type: 'VM.STATUS', id: 'vm-b', status: 'failed' });
    const output = await toPromise(actor);
    expect(output).toMatchObject({
      result: 'aborted',
      failure: { code: 'unavailable', retryable: true },
    });
    expect(cleaned).toHaveLength(1);
  });

  test('an uploader that goes silent is aborted after the idle timeout', async () => {
    const { actor, clock, segment, cleaned } = start();
    await settle();
    segment(0, 0, 4);
    clock.increment(29_999);
    expect(actor.getSnapshot().status).toBe('active');
    clock.increment(1);
    const output = await toPromise(actor);
    expect(output).toMatchObject({ result: 'aborted', failure: { code: 'timeout' } });
    expect(cleaned).toHaveLength(1);
  });

  test('segments out of order, past the chunk, or ahead of an unfinished chunk abort the upload', async () => {
    const cases: Array<[number, number, number]> = [
      [0, 4, 2],
      [0, 0, 7],
      [1, 0, 4],
      [5, 0, 1],
    ];
    for (const [index, offset, length] of cases) {
      const { actor, segment } = start();
      await settle();
      segment(index, offset, length);
      expect(await toPromise(actor)).toMatchObject({
        result: 'aborted',
        failure: { code: 'bad-request' },
      });
    }
  });

  test('a chunk checksum that differs from the uploader’s aborts with an integrity error', async () => {
    const { actor, segment, cleaned } = start();
    await settle();
    segment(0, 0, 4);
    segment(0, 4, 2);
    segment(1, 0, 4);
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: ['c0', 'something-else'] });
    expect(await toPromise(actor)).toMatchObject({
      result: 'aborted',
      failure: { code: 'integrity' },
    });
    expect(cleaned).toHaveLength(1);
  });

  test('an existing name is rejected before anything is stored', async () => {
    const { actor, cleaned, sent } = start({
      reserve: async () => {
        throw new CloudletError('exists', '"a.bin" already exists');
      },
    });
    expect(await toPromise(actor)).toMatchObject({
      result: 'rejected',
      failure: { code: 'exists' },
    });
    expect(cleaned).toEqual([]);
    expect(sent.map((c) => c.message.type)).toEqual(['error']);
  });

  test('a failed commit cleans up too', async () => {
    const { actor, segment, cleaned } = start({
      commit: async () => {
        throw new CloudletError('unavailable', 'metadata store down', true);
      },
    });
    await settle();
    segment(0, 0, 4);
    segment(0, 4, 2);
    segment(1, 0, 4);
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: ['c0', 'c1'] });
    expect(await toPromise(actor)).toMatchObject({
      result: 'aborted',
      failure: { code: 'unavailable' },
    });
    expect(cleaned).toHaveLength(1);
  });
});
