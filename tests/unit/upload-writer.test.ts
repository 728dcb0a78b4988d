/**
 * The broker's chunk writer (actors/broker/upload-writer.ts): segments come
 * straight from the link, each CRC-checked and streamed into the core, and
 * are acknowledged to the uploader only once the core and every VM holding
 * the chunk have them.
 */
import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { createActor, setup } from 'xstate';
import { coreKeyOf, uploadWriter } from '../../actors/broker/upload-writer.ts';
import { silentLogger } from '../../actors/log.ts';
import type { UploadEvent, UploadPlan, WriterCommand } from '../../machines/upload.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message } from '../../protocol/messages.ts';
import { until } from '../support/until.ts';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function start(plan: UploadPlan, storeTimeoutMs = 5000) {
  const core = createMemoryCoreCloud();
  const sent: Array<{ to: string; message: Message }> = [];
  const events: UploadEvent[] = [];
  let route: (frame: Frame) => void = () => {};
  let routed = false;
  const writer = uploadWriter({
    brokerId: 'broker',
    core,
    send: async (to, message) => void sent.push({ to, message }),
    route: (_id, handler) => {
      route = handler;
      routed = true;
      return () => {
        routed = false;
      };
    },
    storeTimeoutMs,
    log: silentLogger(),
  });
  // The writer reports to its parent: here, a machine that only listens.
  const parent = createActor(
    setup({ actors: { writer } }).createMachine({
      invoke: {
        id: 'writer',
        src: 'writer',
        input: { plan, transferId: 't1', requester: 'cli-1' },
      },
      on: { '*': { actions: ({ event }) => void events.push(event as UploadEvent) } },
    }),
  ).start();
  const child = parent.getSnapshot().children.writer as { send(command: WriterCommand): void };
  const actor = {
    send: (command: WriterCommand) => child.send(command),
    stop: () => parent.stop(),
  };
  const segment = (
    index: number,
    offset: number,
    bytes: Buffer,
    from = 'cli-1',
    crc = crc32(bytes),
  ) =>
    route({
      message: { type: 'upload.segment', id: 't1', from, index, offset, crc32: crc },
      body: bytes,
    });
  const stored = (vm: string, index: number, offset: number, length: number, sha?: string) =>
    route({
      message: {
        type: 'chunk.stored',
        id: 't1',
        from: vm,
        fileId: plan.fileId,
        index,
        offset,
        length,
        ...(sha ? { sha256: sha } : {}),
      },
      body: Buffer.alloc(0),
    });
  const acks = () => sent.filter((s) => s.message.type === 'upload.ack').map((s) => s.message);
  /** Waits until every segment is stored, seals, and returns how sealing ended. */
  const seal = async (ending: 'SEALED' | 'WRITE_FAILED') => {
    await until(() => events.some((e) => e.type === 'DRAINED'), 'drained');
    actor.send({ type: 'SEAL' });
    await until(() => events.some((e) => e.type === ending), ending);
    return events.find((e) => e.type === ending);
  };
  return { actor, core, sent, events, segment, stored, acks, seal, routed: () => routed };
}

const chunk0 = Buffer.from('0123456789');
const oneChunkOnVm: UploadPlan = {
  fileId: 'F',
  chunks: [{ index: 0, offset: 0, size: 10, vm: 'vm-a', replicas: ['vm-a'] }],
};

describe('the broker’s chunk writer', () => {
  test('acknowledges a segment once the core and its VM have it, not before', async () => {
    const { segment, stored, acks, sent } = start(oneChunkOnVm);
    segment(0, 0, chunk0.subarray(0, 6));
    await Bun.sleep(10);
    expect(acks()).toEqual([]);
    stored('vm-a', 0, 0, 6);
    await until(() => acks().length === 1, 'the ack');
    expect(sent[0]).toEqual({
      to: 'cli-1',
      message: { type: 'upload.ack', id: 't1', from: 'broker', index: 0, offset: 0 },
    });
  });

  test('a VM’s confirmation that comes before the broker’s own copy is kept for it', async () => {
    const { segment, stored, acks } = start(oneChunkOnVm);
    stored('vm-a', 0, 0, 6);
    segment(0, 0, chunk0.subarray(0, 6));
    await until(() => acks().length === 1, 'the ack');
  });

  test('END: drained once every segment is stored; SEAL commits the core and takes the VM’s sha256', async () => {
    const { actor, core, segment, stored, events, seal } = start(oneChunkOnVm);
    segment(0, 0, chunk0.subarray(0, 6));
    segment(0, 6, chunk0.subarray(6));
    actor.send({ type: 'END' });
    await Bun.sleep(10);
    expect(events.some((e) => e.type === 'DRAINED')).toBe(false);
    stored('vm-a', 0, 0, 6);
    stored('vm-a', 0, 6, 4, sha256(chunk0));
    expect(await seal('SEALED')).toEqual({
      type: 'SEALED',
      chunkSha256: [sha256(chunk0)],
    });
    expect(await core.get(coreKeyOf('F', 0))).toEqual(chunk0);
    expect(events.some((e) => e.type === 'PROGRESS')).toBe(true);
  });

  test('a chunk no VM holds is hashed by the broker itself', async () => {
    const { actor, segment, seal } = start({
      fileId: 'F',
      chunks: [{ index: 0, offset: 0, size: 10, vm: null, replicas: [] }],
    });
    segment(0, 0, chunk0);
    actor.send({ type: 'END' });
    expect(await seal('SEALED')).toEqual({
      type: 'SEALED',
      chunkSha256: [sha256(chunk0)],
    });
  });

  test('bytes that do not match their CRC-32 fail the upload: integrity, retryable', async () => {
    const { segment, events, acks } = start(oneChunkOnVm);
    segment(0, 0, chunk0.subarray(0, 6), 'cli-1', crc32(Buffer.from('012345')) ^ 1);
    await until(() => events.some((e) => e.type === 'WRITE_FAILED'), 'the failure');
    expect(events.find((e) => e.type === 'WRITE_FAILED')).toMatchObject({
      code: 'integrity',
      retryable: true,
    });
    expect(acks()).toEqual([]);
  });

  test('a segment out of order fails the upload, saying which', async () => {
    const { segment, events } = start(oneChunkOnVm);
    segment(0, 4, chunk0.subarray(4));
    await until(() => events.some((e) => e.type === 'WRITE_FAILED'), 'the failure');
    expect(events.find((e) => e.type === 'WRITE_FAILED')).toMatchObject({
      code: 'bad-request',
      message: expect.stringContaining('expected offset 0'),
    });
  });

  test('END before every byte came fails the upload', async () => {
    const { actor, segment, events } = start(oneChunkOnVm);
    segment(0, 0, chunk0.subarray(0, 6));
    actor.send({ type: 'END' });
    await until(() => events.some((e) => e.type === 'WRITE_FAILED'), 'the failure');
    expect(events.find((e) => e.type === 'WRITE_FAILED')).toMatchObject({
      code: 'bad-request',
      message: 'the upload ended before every chunk was sent',
    });
  });

  test('segments from anyone but the uploader are not taken', async () => {
    const { segment, stored, acks, events } = start(oneChunkOnVm);
    segment(0, 0, Buffer.from('xxxxxx'), 'intruder');
    segment(0, 0, chunk0.subarray(0, 6));
    stored('vm-a', 0, 0, 6);
    await until(() => acks().length === 1, 'the ack');
    expect(events.some((e) => e.type === 'WRITE_FAILED')).toBe(false);
  });

  test('a VM that never confirms fails the upload after the store timeout, retryable', async () => {
    const { segment, events } = start(oneChunkOnVm, 50);
    segment(0, 0, chunk0.subarray(0, 6));
    await until(() => events.some((e) => e.type === 'WRITE_FAILED'), 'the failure');
    expect(events.find((e) => e.type === 'WRITE_FAILED')).toMatchObject({
      code: 'unavailable',
      retryable: true,
    });
  });

  test('replicas must agree on the chunk’s sha256', async () => {
    const { actor, segment, stored, seal } = start({
      fileId: 'F',
      chunks: [{ index: 0, offset: 0, size: 10, vm: 'vm-a', replicas: ['vm-a', 'vm-b'] }],
    });
    segment(0, 0, chunk0);
    stored('vm-a', 0, 0, 10, sha256(chunk0));
    stored('vm-b', 0, 0, 10, 'f'.repeat(64));
    actor.send({ type: 'END' });
    expect(await seal('WRITE_FAILED')).toMatchObject({
      code: 'integrity',
      message: expect.stringContaining('disagree'),
    });
  });

  test('stopping it lets go of the route', () => {
    const { actor, routed } = start(oneChunkOnVm);
    expect(routed()).toBe(true);
    actor.stop();
    expect(routed()).toBe(false);
  });
});
