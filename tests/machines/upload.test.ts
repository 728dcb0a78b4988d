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

/**
 * A fake world: records what the machine sends, tells its writer and cleans
 * up. The writer drains at END (or fails, when told to) and seals with the
 * VMs' hashes c0 and c1; segments are its business (tests/unit/upload-writer).
 */
function start(
  overrides: {
    reserve?: () => Promise<{ fileId: string }>;
    commit?: () => Promise<never>;
    failAtEnd?: string;
  } = {},
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
      chunkWriter: fromCallback<
        WriterCommand,
        { plan: UploadPlan; transferId: string; requester: string }
      >(({ receive, sendBack }) => {
        receive((command) => {
          writes.push(command);
          if (command.type === 'END')
            sendBack(
              overrides.failAtEnd
                ? {
                    type: 'WRITE_FAILED',
                    code: 'bad-request',
                    message: overrides.failAtEnd,
                    retryable: false,
                  }
                : { type: 'DRAINED' },
            );
          if (command.type === 'SEAL') sendBack({ type: 'SEALED', chunkSha256: ['c0', 'c1'] });
        });
        return () => {
          writerStopped = true;
        };
      }),
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
  /** The writer reports how far each chunk has come. */
  const progress = (...next: number[]) => actor.send({ type: 'PROGRESS', next });
  return {
    clock,
    actor,
    sent,
    writes,
    cleaned,
    committed,
    progress,
    writerStopped: () => writerStopped,
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('upload (§V.D)', () => {
  test('plans by memory fraction, tells each VM what to expect before the uploader, commits when drained and sealed', async () => {
    const { actor, sent, writes, progress, committed } = start();
    await settle();
    expect(sent.map((c) => [c.to, c.message.type])).toEqual([
      ['vm-a', 'chunk.expect'],
      ['vm-b', 'chunk.expect'],
      ['cli-1', 'upload.ready'],
    ]);
    expect(sent[0]?.message).toEqual({
      type: 'chunk.expect',
      id: 't1',
      from: 'broker',
      fileId: 'f1',
      index: 0,
      chunkSize: 6,
      uploader: 'cli-1',
    });
    expect(sent[1]?.message).toMatchObject({ index: 1, chunkSize: 4, uploader: 'cli-1' });
    expect(sent[2]?.message).toMatchObject({
      type: 'upload.ready',
      fileId: 'f1',
      chunks: [
        { index: 0, offset: 0, size: 6, vm: 'vm-a' },
        { index: 1, offset: 6, size: 4, vm: 'vm-b' },
      ],
    });
    progress(6, 4);
    expect(actor.getSnapshot().context.next).toEqual([6, 4]);
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: [] });
    const output = await toPromise(actor);
    expect(output.result).toBe('committed');
    expect(writes.map((w) => w.type)).toEqual(['END', 'SEAL']);
    expect(committed[0]).toMatchObject({ sha256: 'file-sha', chunkSha256: ['c0', 'c1'] });
    expect(sent.at(-1)?.message).toMatchObject({ type: 'upload.done', id: 't1' });
  });

  test('an abort mid-transfer cleans up every partial chunk and tells the uploader why', async () => {
    const { actor, sent, progress, cleaned, writerStopped } = start();
    await settle();
    progress(4, 0);
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

  test('progress keeps an upload alive; an uploader silent for the idle timeout is aborted', async () => {
    const { actor, clock, progress, cleaned } = start();
    await settle();
    clock.increment(20_000);
    progress(4, 0);
    clock.increment(29_999);
    expect(actor.getSnapshot().status).toBe('active');
    clock.increment(1);
    const output = await toPromise(actor);
    expect(output).toMatchObject({ result: 'aborted', failure: { code: 'timeout' } });
    expect(cleaned).toHaveLength(1);
  });

  test('what the writer refuses (a segment out of order, an end before every byte) aborts with its reason', async () => {
    const { actor, cleaned, sent } = start({
      failAtEnd: 'the upload ended before every chunk was sent',
    });
    await settle();
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: [] });
    expect(await toPromise(actor)).toMatchObject({
      result: 'aborted',
      failure: { code: 'bad-request', message: 'the upload ended before every chunk was sent' },
    });
    expect(cleaned).toHaveLength(1);
    expect(sent.at(-1)?.message).toMatchObject({ type: 'error', code: 'bad-request' });
  });

  test('chunk hashes the uploader sent are compared: one that differs aborts with an integrity error', async () => {
    const { actor, cleaned } = start();
    await settle();
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: ['c0', 'something-else'] });
    expect(await toPromise(actor)).toMatchObject({
      result: 'aborted',
      failure: { code: 'integrity' },
    });
    expect(cleaned).toHaveLength(1);
  });

  test('chunk hashes the uploader sent that match are taken', async () => {
    const { actor } = start();
    await settle();
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: ['c0', 'c1'] });
    expect(await toPromise(actor)).toMatchObject({ result: 'committed' });
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
    const { actor, cleaned } = start({
      commit: async () => {
        throw new CloudletError('unavailable', 'metadata store down', true);
      },
    });
    await settle();
    actor.send({ type: 'END', sha256: 'file-sha', chunkSha256: [] });
    expect(await toPromise(actor)).toMatchObject({
      result: 'aborted',
      failure: { code: 'unavailable' },
    });
    expect(cleaned).toHaveLength(1);
  });
});
