/**
 * The VM statechart on a simulated clock, with its I/O replaced by fakes: a
 * link the test plays (CONNECTED, DISCONNECTED, FRAME), publishers that
 * record when they were asked to send a join, a heartbeat or the inventory,
 * and a storer and a server that record what they were told.
 */
import { describe, expect, test } from 'bun:test';
import {
  type AnyEventObject,
  createActor,
  type EventObject,
  fromCallback,
  fromPromise,
  SimulatedClock,
} from 'xstate';
import type { SendCommand } from '../../machines/shared.ts';
import {
  type ServerCommand,
  type StorerCommand,
  type VmInput,
  vmMachine,
} from '../../machines/vm.ts';
import type { Message, MessageOf } from '../../protocol/messages.ts';

const INPUT: VmInput = {
  id: 'vm-a',
  incarnation: 'inc-1',
  brokerId: 'broker',
  heartbeatMs: 5000,
  joinRetryMs: 3000,
};

const joinAck = (heartbeatMs = 2000, penalty = 0): MessageOf<'join.ack'> => ({
  type: 'join.ack',
  id: 'ack-1',
  from: 'broker',
  heartbeatMs,
  penalty,
  memoryEffective: 64 * 1024 * 1024,
});

function start(overrides: Partial<VmInput> = {}) {
  const clock = new SimulatedClock();
  const sent: SendCommand[] = [];
  const joins: Array<{ attempt: number; at: number }> = [];
  const heartbeats: number[] = [];
  const inventories: number[] = [];
  const storer: StorerCommand[] = [];
  const server: ServerCommand[] = [];
  const stops: string[] = [];
  const failures: string[] = [];
  let link: ((event: AnyEventObject) => void) | null = null;
  const machine = vmMachine.provide({
    actions: {
      send: (_, command) => void sent.push(command),
      stopForIdConflict: (_, { reason }) => void stops.push(reason),
      reportChildError: (_, { actorId }) => void failures.push(actorId),
    },
    actors: {
      mqttBridge: fromCallback<EventObject, void>(({ sendBack }) => {
        link = sendBack;
      }),
      sendJoin: fromPromise<void, { attempt: number }>(async ({ input }) => {
        joins.push({ attempt: input.attempt, at: clock.now() });
      }),
      sendHeartbeat: fromPromise<void, void>(async () => {
        heartbeats.push(clock.now());
      }),
      sendInventory: fromPromise<void, void>(async () => {
        inventories.push(clock.now());
      }),
      chunkStorer: fromCallback<StorerCommand, void>(({ receive }) => {
        receive((command) => void storer.push(command));
      }),
      chunkServer: fromCallback<ServerCommand, void>(({ receive }) => {
        receive((command) => void server.push(command));
      }),
    },
  });
  const actor = createActor(machine, { clock, input: { ...INPUT, ...overrides } }).start();
  /** What the MQTT link would report to the VM. */
  const fromLink = (event: AnyEventObject) => {
    if (!link) throw new Error('the bridge was not started');
    link(event);
  };
  const frame = (message: Message, body = Buffer.alloc(0), release?: () => void) =>
    fromLink({ type: 'FRAME', frame: { message, body, ...(release ? { release } : {}) } });
  /** Moves the clock, then lets the publishers' promises settle. */
  const advance = async (ms: number) => {
    clock.increment(ms);
    await Bun.sleep(0);
  };
  /** Connected and acknowledged by the broker (heartbeat every 2 s). */
  const joined = async (ack = joinAck()) => {
    fromLink({ type: 'CONNECTED' });
    frame(ack);
    await Bun.sleep(0);
  };
  const state = () => actor.getSnapshot().value;
  const errors = () => sent.filter((c) => c.message.type === 'error');
  return {
    actor,
    sent,
    joins,
    heartbeats,
    inventories,
    storer,
    server,
    stops,
    failures,
    fromLink,
    frame,
    advance,
    joined,
    state,
    errors,
  };
}

describe('vm statechart (§V.A, §V.C)', () => {
  test("joins once connected and serves on the broker's join.ack: its numbers kept, the storer told JOINED, its inventory sent", async () => {
    const vm = start();
    expect(vm.state()).toBe('connecting');
    expect(vm.joins).toEqual([]);
    vm.fromLink({ type: 'CONNECTED' });
    expect(vm.state()).toBe('joining');
    expect(vm.joins).toEqual([{ attempt: 1, at: 0 }]);
    expect(vm.inventories).toEqual([]);
    vm.frame(joinAck(2000, 3));
    await Bun.sleep(0);
    expect(vm.state()).toEqual({ serving: 'waiting' });
    expect(vm.actor.getSnapshot().context).toMatchObject({
      heartbeatMs: 2000,
      penalty: 3,
      memoryEffective: 64 * 1024 * 1024,
      joins: 1,
    });
    expect(vm.storer).toEqual([{ type: 'JOINED' }]);
    expect(vm.inventories).toEqual([0]);
    expect(vm.sent).toEqual([]);
  });

  test("heartbeats at the interval in the broker's join.ack, not its own default, and never before it is acknowledged", async () => {
    const vm = start({ heartbeatMs: 5000, joinRetryMs: 60_000 });
    vm.fromLink({ type: 'CONNECTED' });
    await vm.advance(4000);
    expect(vm.heartbeats).toEqual([]);
    vm.frame(joinAck(2000));
    await vm.advance(1999);
    expect(vm.heartbeats).toEqual([]);
    await vm.advance(1);
    expect(vm.heartbeats).toEqual([6000]);
    expect(vm.state()).toEqual({ serving: 'waiting' });
    for (let i = 0; i < 4; i++) await vm.advance(2000);
    expect(vm.heartbeats).toEqual([6000, 8000, 10_000, 12_000, 14_000]);
  });

  test('an unanswered join is sent again every joinRetryMs (at most every heartbeat interval), until acknowledged', async () => {
    const vm = start({ heartbeatMs: 5000, joinRetryMs: 3000 });
    vm.fromLink({ type: 'CONNECTED' });
    await vm.advance(2999);
    expect(vm.joins).toHaveLength(1);
    await vm.advance(1);
    await vm.advance(3000);
    expect(vm.joins).toEqual([
      { attempt: 1, at: 0 },
      { attempt: 2, at: 3000 },
      { attempt: 3, at: 6000 },
    ]);
    vm.frame(joinAck(2000));
    await vm.advance(30_000);
    expect(vm.joins).toHaveLength(3);

    // A retry longer than the heartbeat interval is cut to the interval.
    const capped = start({ heartbeatMs: 1000, joinRetryMs: 3000 });
    capped.fromLink({ type: 'CONNECTED' });
    await capped.advance(999);
    expect(capped.joins).toHaveLength(1);
    await capped.advance(1);
    expect(capped.joins).toEqual([
      { attempt: 1, at: 0 },
      { attempt: 2, at: 1000 },
    ]);
  });

  test('a lost MQTT connection stops heartbeats and join retries; reconnected, it joins again and re-sends its inventory', async () => {
    const vm = start();
    await vm.joined();
    vm.fromLink({ type: 'DISCONNECTED' });
    expect(vm.state()).toBe('reconnecting');
    await vm.advance(20_000);
    expect(vm.heartbeats).toEqual([]);
    expect(vm.joins).toHaveLength(1);
    vm.fromLink({ type: 'CONNECTED' });
    expect(vm.state()).toBe('joining');
    expect(vm.joins).toEqual([
      { attempt: 1, at: 0 },
      { attempt: 2, at: 20_000 },
    ]);
    // Lost again before the broker answered: no retries while away.
    vm.fromLink({ type: 'DISCONNECTED' });
    await vm.advance(20_000);
    expect(vm.joins).toHaveLength(2);
    vm.fromLink({ type: 'CONNECTED' });
    vm.frame(joinAck());
    await Bun.sleep(0);
    expect(vm.state()).toEqual({ serving: 'waiting' });
    expect(vm.storer).toEqual([{ type: 'JOINED' }, { type: 'JOINED' }]);
    expect(vm.inventories).toEqual([0, 40_000]);
  });

  test("the broker's rejoin (it restarted or lost the VM) sends a new join at once and stops heartbeats until acknowledged", async () => {
    const vm = start({ joinRetryMs: 60_000 });
    await vm.joined();
    await vm.advance(2000);
    expect(vm.heartbeats).toEqual([2000]);
    vm.frame({ type: 'rejoin', from: 'broker', reason: 'unknown incarnation' });
    expect(vm.state()).toBe('joining');
    expect(vm.joins).toEqual([
      { attempt: 1, at: 0 },
      { attempt: 2, at: 2000 },
    ]);
    await vm.advance(2000);
    await vm.advance(2000);
    expect(vm.heartbeats).toEqual([2000]);
    vm.frame(joinAck());
    await Bun.sleep(0);
    expect(vm.state()).toEqual({ serving: 'waiting' });
    expect(vm.inventories).toEqual([0, 6000]);
  });

  test('its chunk store back after a loss: the inventory is sent again while serving, not while joining', async () => {
    const vm = start();
    vm.fromLink({ type: 'CONNECTED' });
    vm.actor.send({ type: 'STORE_RECONNECTED' });
    expect(vm.inventories).toEqual([]);
    vm.frame(joinAck());
    await vm.advance(1000);
    expect(vm.inventories).toEqual([0]);
    vm.actor.send({ type: 'STORE_RECONNECTED' });
    expect(vm.state()).toEqual({ serving: 'waiting' });
    expect(vm.inventories).toEqual([0, 1000]);
  });

  test("the broker's chunk.store, chunk.expect and chunk.delete, and an uploader's upload.segment, go to the storer with their bytes, whatever the state", async () => {
    const vm = start();
    vm.fromLink({ type: 'CONNECTED' });
    const bytes = Buffer.from('abcd');
    const release = () => {};
    const store: MessageOf<'chunk.store'> = {
      type: 'chunk.store',
      id: 's1',
      from: 'broker',
      fileId: 'file-1',
      index: 0,
      chunkSize: 4,
      offset: 0,
      crc32: 1,
    };
    const expectChunk: MessageOf<'chunk.expect'> = {
      type: 'chunk.expect',
      id: 'e1',
      from: 'broker',
      fileId: 'file-1',
      index: 1,
      chunkSize: 4,
      uploader: 'cli-1',
    };
    const segment: MessageOf<'upload.segment'> = {
      type: 'upload.segment',
      id: 'u1',
      from: 'cli-1',
      index: 1,
      offset: 0,
      crc32: 2,
    };
    const remove: MessageOf<'chunk.delete'> = {
      type: 'chunk.delete',
      id: 'd1',
      from: 'broker',
      fileId: 'file-1',
    };
    // Before the broker has acknowledged the join…
    vm.frame(store, bytes, release);
    vm.frame(expectChunk);
    vm.frame(segment, bytes);
    expect(vm.state()).toBe('joining');
    // …and while serving.
    await vm.joined();
    vm.frame(remove);
    expect(vm.storer).toEqual([
      { type: 'STORE', message: store, body: bytes, release },
      { type: 'EXPECT', message: expectChunk },
      { type: 'SEGMENT', message: segment, body: bytes },
      { type: 'JOINED' },
      { type: 'DELETE', message: remove },
    ]);
    expect((vm.storer[0] as { release?: unknown }).release).toBe(release);
    expect(vm.server).toEqual([]);
    expect(vm.sent).toEqual([]);
  });

  test("the broker's chunk.fetch, a requester's chunk.ack and a member's chunk.read (as a fetch to that member) go to the server", async () => {
    const vm = start();
    await vm.joined();
    const range = {
      fileId: 'file-1',
      index: 2,
      chunkSize: 8,
      offset: 4,
      segmentSize: 4,
      window: 2,
    };
    const fetch: MessageOf<'chunk.fetch'> = {
      type: 'chunk.fetch',
      id: 'f1',
      from: 'broker',
      to: 'cli-1',
      ...range,
    };
    const ack: MessageOf<'chunk.ack'> = {
      type: 'chunk.ack',
      id: 'f1',
      from: 'cli-1',
      index: 2,
      offset: 4,
    };
    vm.frame(fetch);
    vm.frame(ack);
    vm.frame({ type: 'chunk.read', id: 'r1', from: 'cli-2', ...range });
    expect(vm.server).toEqual([
      { type: 'FETCH', message: fetch },
      { type: 'ACK', message: ack },
      {
        type: 'FETCH',
        message: { type: 'chunk.fetch', id: 'r1', from: 'cli-2', to: 'cli-2', ...range },
      },
    ]);
    expect(vm.storer).toEqual([{ type: 'JOINED' }]);
    expect(vm.sent).toEqual([]);
  });

  test("broker-only messages from anyone else get a bad-request error and no effect; other members' replies are ignored", async () => {
    const vm = start();
    vm.fromLink({ type: 'CONNECTED' });
    vm.frame({ ...joinAck(), id: 'a1', from: 'cli-1' });
    vm.frame({ type: 'chunk.delete', id: 'd1', from: 'cli-1', fileId: 'file-1' });
    vm.frame({ type: 'stop', from: 'cli-1', incarnation: 'inc-1', reason: 'mine' });
    // Not the VM's business: a reply to something a member sent.
    vm.frame({
      type: 'chunk.deleted',
      id: 'd2',
      from: 'vm-b',
      fileId: 'file-1',
    });
    await Bun.sleep(0);
    expect(vm.state()).toBe('joining');
    expect(vm.stops).toEqual([]);
    expect(vm.storer).toEqual([]);
    expect(vm.server).toEqual([]);
    // Each refused with a bad-request to its sender, the request id kept when it had one.
    const refusal = (type: string, id?: string): SendCommand => ({
      type: 'SEND',
      to: 'cli-1',
      message: {
        type: 'error',
        from: 'vm-a',
        code: 'bad-request',
        message: `only the broker may send ${type}`,
        retryable: false,
        ...(id ? { id } : {}),
      },
    });
    expect(vm.sent).toEqual([
      refusal('join.ack', 'a1'),
      refusal('chunk.delete', 'd1'),
      refusal('stop'),
    ]);
  });

  test("the broker's stop for this incarnation (another process has its id) ends it for good; a stop for another incarnation is ignored", async () => {
    const vm = start();
    await vm.joined();
    vm.frame({ type: 'stop', from: 'broker', incarnation: 'inc-0', reason: 'older' });
    expect(vm.state()).toEqual({ serving: 'waiting' });
    expect(vm.stops).toEqual([]);
    vm.frame({ type: 'stop', from: 'broker', incarnation: 'inc-1', reason: 'id in use' });
    expect(vm.state()).toBe('stopped');
    expect(vm.actor.getSnapshot().status).toBe('done');
    expect(vm.stops).toEqual(['id in use']);
    await vm.advance(20_000);
    expect(vm.heartbeats).toEqual([]);
    expect(vm.joins).toHaveLength(1);
  });
});
