import { describe, expect, test } from 'bun:test';
import { createActor, type EventObject, fromCallback, fromPromise, SimulatedClock } from 'xstate';
import {
  type BrokerConfig,
  brokerMachine,
  inspectedVmRows,
  vmTable,
} from '../../machines/broker.ts';
import { membershipMachine } from '../../machines/membership.ts';
import {
  type CoreServerCommand,
  type CoreServerInput,
  serveDownloadMachine,
} from '../../machines/serveDownload.ts';
import type { SendCommand } from '../../machines/shared.ts';
import { uploadMachine } from '../../machines/upload.ts';
import type { FileInfo, Message } from '../../protocol/messages.ts';
import type { ParsedTopic } from '../../protocol/topics.ts';

const config: BrokerConfig = {
  brokerId: 'broker',
  split: 2,
  minChunk: 0,
  reductionFactor: 100,
  heartbeatMs: 1000,
  fetchTimeoutMs: 2000,
  segmentSize: 4,
  window: 2,
  transferIdleTimeoutMs: 30_000,
  maxFileSize: 1000,
  maxTransfersPerMember: 2,
  maxPendingRequests: 1,
  replicas: 1,
  repairAfterMs: null,
};
const cpu = { cores: 2, load: 0 };

const servedFile: FileInfo = {
  name: 'f.bin',
  fileId: 'file-1',
  size: 10,
  sha256: 'a'.repeat(64),
  createdAt: '2026-01-01T00:00:00.000Z',
  chunks: [
    { index: 0, offset: 0, size: 6, vm: 'vm-a', sha256: 'b'.repeat(64) },
    { index: 1, offset: 6, size: 4, vm: 'vm-b', sha256: 'c'.repeat(64) },
  ],
};

function start(options: { requestsHang?: boolean } = {}) {
  const clock = new SimulatedClock();
  const kept = inspectedVmRows();
  const sent: SendCommand[] = [];
  const coreStarts: Array<{ index: number; offset: number }> = [];
  const send = (_: unknown, command: SendCommand) => void sent.push(command);
  const machine = brokerMachine.provide({
    actions: { send },
    actors: {
      mqttBridge: fromCallback<EventObject, void>(({ sendBack }) => {
        sendBack({ type: 'CONNECTED' });
      }),
      membership: membershipMachine.provide({ actions: { send } }),
      // Uploads that never get past planning: enough to see the name lock.
      upload: uploadMachine.provide({
        actions: { send },
        actors: { reserveName: fromPromise(() => new Promise<{ fileId: string }>(() => {})) },
      }),
      serveDownload: serveDownloadMachine.provide({
        actions: { send },
        actors: {
          lookupFile: fromPromise(async () => servedFile),
          coreServer: fromCallback<CoreServerCommand, CoreServerInput>(({ receive }) => {
            receive((command) => {
              if (command.type === 'START')
                coreStarts.push({ index: command.index, offset: command.offset });
            });
          }),
        },
      }),
      request: fromPromise(async () =>
        options.requestsHang
          ? new Promise<SendCommand>(() => {})
          : ({
              type: 'SEND',
              to: 'cli-1',
              message: { type: 'delete.done', id: 'd1', from: 'broker', name: 'x' },
            } as SendCommand),
      ),
    },
  });
  const actor = createActor(machine, { clock, input: config, inspect: kept.inspect }).start();
  const frame = (
    message: Message,
    topic: ParsedTopic = { kind: 'to-broker', sender: message.from },
  ) => actor.send({ type: 'FRAME', frame: { message, body: Buffer.alloc(0) }, topic, at: 1000 });
  const join = (from: string, memoryFree: number, incarnation = `${from}-1`) =>
    frame({
      type: 'join',
      id: `j-${from}`,
      from,
      incarnation,
      address: '10.0.0.1',
      cpu,
      memoryFree,
    });
  const replies = (type: string) => sent.filter((c) => c.message.type === type);
  return { clock, actor, sent, frame, join, replies, coreStarts, kept };
}

describe('broker routing (§V)', () => {
  test('connecting → online when the MQTT link is up', () => {
    const { actor } = start();
    expect(actor.getSnapshot().value).toBe('online');
  });

  test('a join adds the VM to the table and is acknowledged with the heartbeat interval', () => {
    const { actor, join, replies } = start();
    join('vm-a', 300);
    join('vm-b', 200);
    expect(
      vmTable(actor.getSnapshot()).map((vm) => [vm.id, vm.status, vm.memoryEffective]),
    ).toEqual([
      ['vm-a', 'alive', 300],
      ['vm-b', 'alive', 200],
    ]);
    expect(replies('join.ack').map((c) => [c.to, c.message])).toEqual([
      ['vm-a', expect.objectContaining({ id: 'j-vm-a', heartbeatMs: 1000, penalty: 0 })],
      ['vm-b', expect.objectContaining({ id: 'j-vm-b', heartbeatMs: 1000, penalty: 0 })],
    ]);
  });

  test('the rows kept from inspection are the rows, through joins, heartbeats, silence, wills and rejoins', () => {
    const { actor, join, frame, clock, kept: watched } = start();
    const byId = (rows: { id: string }[]) => [...rows].sort((a, b) => (a.id < b.id ? -1 : 1));
    const same = () => expect(byId(watched.rows())).toEqual(vmTable(actor.getSnapshot()));
    same();
    join('vm-a', 300);
    same();
    join('vm-b', 200);
    join('vm-c', 100);
    same();
    expect(watched.rows()).toHaveLength(3);
    frame({ type: 'heartbeat', from: 'vm-a', incarnation: 'vm-a-1', cpu, memoryFree: 250 });
    same();
    expect(watched.rows().find((row) => row.id === 'vm-a')?.memoryFree).toBe(250);
    // Silence: vm-b and vm-c go suspect, then failed.
    for (let i = 0; i < 4; i++) {
      clock.increment(1000);
      frame({ type: 'heartbeat', from: 'vm-a', incarnation: 'vm-a-1', cpu, memoryFree: 250 });
      same();
    }
    expect(watched.rows().find((row) => row.id === 'vm-b')?.status).toBe('failed');
    frame(
      { type: 'status', from: 'vm-a', incarnation: 'vm-a-1', online: false },
      { kind: 'status', id: 'vm-a' },
    );
    same();
    join('vm-a', 300, 'vm-a-2');
    same();
    expect(watched.rows().find((row) => row.id === 'vm-a')).toMatchObject({
      status: 'alive',
      penalty: 1,
    });
    // The same array until something changes.
    expect(watched.rows()).toBe(watched.rows());
  });

  test("a VM's will fails it; its rejoin costs a penalty", () => {
    const { actor, join, frame } = start();
    join('vm-a', 300);
    frame(
      { type: 'status', from: 'vm-a', incarnation: 'vm-a-1', online: false },
      { kind: 'status', id: 'vm-a' },
    );
    expect(vmTable(actor.getSnapshot())[0]?.status).toBe('failed');
    join('vm-a', 300, 'vm-a-2');
    expect(vmTable(actor.getSnapshot())[0]).toMatchObject({
      status: 'alive',
      penalty: 1,
      memoryEffective: 200,
    });
  });

  test('two processes as one VM: the incarnation heard again keeps the id, the younger is told to stop', () => {
    const { actor, join, frame, replies } = start();
    const row = () => vmTable(actor.getSnapshot())[0];
    const stops = () => replies('stop').map((c) => [c.to, c.message]);
    join('vm-a', 300, 'first');
    // A restart, as far as anyone can tell: penalty 1.
    join('vm-a', 300, 'twin');
    expect(row()).toMatchObject({ status: 'alive', penalty: 1 });
    expect(stops()).toEqual([]);
    // …until the first is heard again: no restart brings an incarnation back.
    frame({ type: 'heartbeat', from: 'vm-a', incarnation: 'first', cpu, memoryFree: 300 });
    expect(row()).toMatchObject({ status: 'alive', penalty: 0 });
    expect(stops()).toEqual([
      ['vm-a', expect.objectContaining({ type: 'stop', incarnation: 'twin' })],
    ]);
    // The twin is told again whenever it is heard, and changes nothing.
    join('vm-a', 300, 'twin');
    expect(stops()).toHaveLength(2);
    expect(row()).toMatchObject({ status: 'alive', penalty: 0 });
    // Its takeover fired the first one's will: that costs no penalty either.
    frame(
      { type: 'status', from: 'vm-a', incarnation: 'first', online: false },
      { kind: 'status', id: 'vm-a' },
    );
    expect(row()?.status).toBe('failed');
    join('vm-a', 300, 'first');
    expect(row()).toMatchObject({ status: 'alive', penalty: 0 });
  });

  test('a will on another VM’s status topic is ignored', () => {
    const { actor, join, frame } = start();
    join('vm-a', 300);
    frame(
      { type: 'status', from: 'vm-a', incarnation: 'vm-a-1', online: false },
      { kind: 'status', id: 'vm-b' },
    );
    expect(vmTable(actor.getSnapshot())[0]?.status).toBe('alive');
  });

  test('heartbeats from a VM the broker does not know are told to rejoin', () => {
    const { frame, replies } = start();
    frame({ type: 'heartbeat', from: 'ghost', incarnation: 'g1', cpu, memoryFree: 1 });
    expect(replies('rejoin').map((c) => c.to)).toEqual(['ghost']);
  });

  test('vms.request is answered with the table', () => {
    const { join, frame, replies } = start();
    join('vm-a', 300);
    frame({ type: 'vms.request', id: 'v1', from: 'cli-1' });
    const [reply] = replies('vms.response');
    expect(reply?.to).toBe('cli-1');
    expect(reply?.message).toMatchObject({ id: 'v1', vms: [{ id: 'vm-a', status: 'alive' }] });
  });

  test('a second upload of a name in flight is refused as busy; duplicates are ignored', () => {
    const { actor, frame, replies } = start();
    const begin = (id: string) =>
      frame({
        type: 'upload.begin',
        id,
        from: 'cli-1',
        name: 'same.bin',
        size: 10,
        overwrite: false,
      });
    begin('u1');
    begin('u1');
    begin('u2');
    expect(
      Object.keys(actor.getSnapshot().children).filter((key) => key.startsWith('upload:')),
    ).toEqual(['upload:u1']);
    expect(replies('error').map((c) => c.message)).toEqual([
      expect.objectContaining({ id: 'u2', code: 'busy', retryable: true }),
    ]);
  });

  test('messages the broker does not take are refused; a VM cannot use the broker id', () => {
    const { frame, replies } = start();
    frame({
      type: 'upload.ready',
      id: 'x1',
      from: 'cli-1',
      fileId: 'f',
      segmentSize: 1,
      window: 1,
      chunks: [],
    });
    frame({
      type: 'join',
      id: 'j1',
      from: 'broker',
      incarnation: 'i',
      address: 'a',
      cpu,
      memoryFree: 1,
    });
    expect(replies('error').map((c) => c.message)).toEqual([
      expect.objectContaining({
        id: 'x1',
        code: 'bad-request',
        message: 'the broker does not take upload.ready messages',
      }),
      expect.objectContaining({ id: 'j1', code: 'bad-request' }),
    ]);
  });

  test('request actors answer through the broker, then go; late transfer messages are dropped quietly', async () => {
    const { actor, frame, replies } = start();
    frame({ type: 'delete.request', id: 'd1', from: 'cli-1', name: 'x' });
    frame({ type: 'upload.segment', id: 'gone', from: 'cli-1', index: 0, offset: 0, crc32: 0 });
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(replies('delete.done')).toHaveLength(1);
    expect(replies('error')).toEqual([]);
    // Finished actors do not pile up among the broker's children.
    expect(
      Object.keys(actor.getSnapshot().children).filter((key) => key.startsWith('request:')),
    ).toEqual([]);
  });

  test('a fallback for a download the broker no longer serves is served again, if the file is the same', async () => {
    const { frame, coreStarts, replies } = start();
    const fallback = (id: string, fileId: string) =>
      frame({
        type: 'download.fallback',
        id,
        from: 'cli-1',
        name: 'f.bin',
        fileId,
        index: 1,
        offset: 2,
        reason: 'timeout',
      });
    fallback('late-1', 'file-1');
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(coreStarts).toEqual([{ index: 1, offset: 2 }]);
    // No plan goes out again, and the VMs are not asked again.
    expect(replies('download.plan')).toEqual([]);
    expect(replies('chunk.fetch')).toEqual([]);

    fallback('late-2', 'file-0');
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(coreStarts).toHaveLength(1);
    expect(replies('error').map((c) => c.message)).toEqual([
      expect.objectContaining({ id: 'late-2', code: 'not-found', retryable: true }),
    ]);
  });
});

describe('broker limits', () => {
  const begin = (id: string, from: string, size: number, name = `${id}.bin`) =>
    ({ type: 'upload.begin', id, from, name, size, overwrite: false }) as const;
  const errors = (sent: SendCommand[]) =>
    sent.filter((c) => c.message.type === 'error').map((c) => [c.to, c.message]);

  test('a file over the size limit is refused as too large, not retryable', () => {
    const { actor, frame, sent } = start();
    frame(begin('u1', 'cli-1', 1001));
    expect(errors(sent)).toEqual([
      [
        'cli-1',
        expect.objectContaining({
          id: 'u1',
          code: 'too-large',
          retryable: false,
          message: '"u1.bin" is 1001 bytes; this cloudlet takes files up to 1000 bytes',
        }),
      ],
    ]);
    expect(actor.getSnapshot().children['upload:u1']).toBeUndefined();
  });

  test("one member's transfers in flight are bounded; other members are not held back", () => {
    const { actor, frame, sent } = start();
    frame(begin('u1', 'cli-1', 10));
    frame(begin('u2', 'cli-1', 10));
    frame(begin('u3', 'cli-1', 10));
    frame({ type: 'download.request', id: 'd1', from: 'cli-1', name: 'f.bin' });
    frame(begin('u4', 'cli-2', 10));
    expect(errors(sent)).toEqual([
      ['cli-1', expect.objectContaining({ id: 'u3', code: 'busy', retryable: true })],
      ['cli-1', expect.objectContaining({ id: 'd1', code: 'busy', retryable: true })],
    ]);
    const children = Object.keys(actor.getSnapshot().children).sort();
    expect(children).toEqual(['bridge', 'upload:u1', 'upload:u2', 'upload:u4']);
  });

  test('requests being answered are bounded; the next is told to try again', () => {
    const { actor, frame, sent } = start({ requestsHang: true });
    frame({ type: 'list.request', id: 'l1', from: 'cli-1' });
    frame({ type: 'list.request', id: 'l2', from: 'cli-2' });
    expect(errors(sent)).toEqual([
      [
        'cli-2',
        expect.objectContaining({
          id: 'l2',
          code: 'busy',
          retryable: true,
          message: 'the broker is answering 1 requests already; try again shortly',
        }),
      ],
    ]);
    expect(actor.getSnapshot().children['request:cli-1:l1']).toBeDefined();
  });
});
