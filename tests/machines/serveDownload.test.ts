import { describe, expect, test } from 'bun:test';
import {
  type ActorRefFrom,
  assign,
  createActor,
  fromCallback,
  fromPromise,
  SimulatedClock,
  setup,
  waitFor,
} from 'xstate';
import {
  type CoreServerCommand,
  type CoreServerInput,
  directAnswer,
  type RepairRequest,
  type ServeDownloadEvent,
  type ServeDownloadInput,
  type ServeDownloadOutput,
  serveDownloadMachine,
} from '../../machines/serveDownload.ts';
import type { SendCommand } from '../../machines/shared.ts';
import type { FileInfo, Message } from '../../protocol/messages.ts';

/**
 * Chunk 0 on three replicas, chunk 1 on two (one failed), chunk 2 on a failed
 * VM (a record from before replicas), chunk 3 in the core only.
 */
const file: FileInfo = {
  name: 'f.bin',
  fileId: 'file-1',
  size: 16,
  sha256: 'a'.repeat(64),
  createdAt: '2026-01-01T00:00:00.000Z',
  chunks: [
    {
      index: 0,
      offset: 0,
      size: 4,
      vm: 'vm-a',
      replicas: ['vm-a', 'vm-b', 'vm-c'],
      sha256: 'b'.repeat(64),
    },
    {
      index: 1,
      offset: 4,
      size: 4,
      vm: 'vm-d',
      replicas: ['vm-d', 'vm-b'],
      sha256: 'c'.repeat(64),
    },
    { index: 2, offset: 8, size: 4, vm: 'vm-d', sha256: 'd'.repeat(64) },
    { index: 3, offset: 12, size: 4, vm: null, sha256: 'e'.repeat(64) },
  ],
};

const INPUT: ServeDownloadInput = {
  transferId: 't1',
  requester: 'cli-1',
  brokerId: 'broker',
  name: 'f.bin',
  vmStatus: { 'vm-a': 'suspect', 'vm-b': 'alive', 'vm-c': 'alive', 'vm-d': 'failed' },
  vmLoad: { 'vm-b': 3, 'vm-c': 1 },
  fetchTimeoutMs: 2000,
  segmentSize: 4,
  window: 2,
  idleTimeoutMs: 30_000,
  startedAt: '2026-01-01T00:00:00.000Z',
};

interface ParentContext {
  repairs: RepairRequest[];
  output: ServeDownloadOutput | null;
  input: ServeDownloadInput;
}

/** A stand-in broker: runs one serveDownload and records what it is told. */
const parentMachine = setup({
  types: {
    context: {} as ParentContext,
    events: {} as RepairRequest,
    input: {} as ServeDownloadInput,
  },
  actors: { serveDownload: serveDownloadMachine },
}).createMachine({
  context: ({ input }) => ({ repairs: [], output: null, input }),
  invoke: {
    id: 'serve',
    src: 'serveDownload',
    input: ({ context }) => context.input,
    onDone: { actions: assign({ output: ({ event }) => event.output }) },
  },
  on: {
    'CHUNK.REPAIR': {
      actions: assign({ repairs: ({ context, event }) => [...context.repairs, event] }),
    },
  },
});

async function start(overrides: Partial<ServeDownloadInput> = {}, served: FileInfo = file) {
  const clock = new SimulatedClock();
  const sent: SendCommand[] = [];
  const core: CoreServerCommand[] = [];
  const coreInputs: CoreServerInput[] = [];
  const machine = parentMachine.provide({
    actors: {
      serveDownload: serveDownloadMachine.provide({
        actions: { send: (_, command) => void sent.push(command) },
        actors: {
          lookupFile: fromPromise(async () => served),
          coreServer: fromCallback<CoreServerCommand, CoreServerInput>(({ input, receive }) => {
            coreInputs.push(input);
            receive((command) => void core.push(command));
          }),
        },
      }),
    },
  });
  const parent = createActor(machine, { clock, input: { ...INPUT, ...overrides } }).start();
  const serve = parent.getSnapshot().children.serve as ActorRefFrom<typeof serveDownloadMachine>;
  await waitFor(serve, (snapshot) => snapshot.status === 'done' || snapshot.matches('serving'));
  const messages = (type: Message['type']) => sent.filter((c) => c.message.type === type);
  const send = (event: ServeDownloadEvent) => serve.send(event);
  const repairs = () => parent.getSnapshot().context.repairs;
  const output = () => parent.getSnapshot().context.output;
  return { clock, serve, sent, core, coreInputs, messages, send, repairs, output };
}

const fetchMessage = (index: number, offset: number) => ({
  type: 'chunk.fetch' as const,
  id: 't1',
  from: 'broker',
  to: 'cli-1',
  fileId: 'file-1',
  index,
  chunkSize: 4,
  offset,
  segmentSize: 4,
  window: 2,
});

describe('serveDownload with replicas', () => {
  test('the plan names the live replicas, alive before suspect, least loaded first', async () => {
    const { messages, serve } = await start();
    const [plan] = messages('download.plan');
    expect(plan?.to).toBe('cli-1');
    expect(plan?.message).toMatchObject({
      type: 'download.plan',
      id: 't1',
      from: 'broker',
      file,
      segmentSize: 4,
      window: 2,
      fetchTimeoutMs: 2000,
    });
    expect(plan?.message.type === 'download.plan' && plan.message.sources).toEqual([
      // vm-c and vm-b alive (vm-c less loaded), vm-a only suspect.
      { index: 0, source: 'edge', vm: 'vm-c', replicas: ['vm-c', 'vm-b', 'vm-a'] },
      // vm-d failed: one live replica, no list to try.
      { index: 1, source: 'edge', vm: 'vm-b' },
      // No live replica: from the core.
      { index: 2, source: 'core', vm: 'vm-d' },
      { index: 3, source: 'core', vm: null },
    ]);
    expect(serve.getSnapshot().context).toMatchObject({
      planCore: [2, 3],
      chosen: { 0: 'vm-c', 1: 'vm-b' },
    });
  });

  test('the chosen replica of each edge chunk is told to send it; the rest come from the core', async () => {
    const { messages, core, coreInputs } = await start();
    expect(messages('chunk.fetch').map((c) => [c.to, c.message])).toEqual([
      ['vm-c', fetchMessage(0, 0)],
      ['vm-b', fetchMessage(1, 0)],
    ]);
    expect(core).toEqual([
      { type: 'START', index: 2, offset: 0 },
      { type: 'START', index: 3, offset: 0 },
    ]);
    expect(coreInputs).toMatchObject([{ transferId: 't1', requester: 'cli-1', planCore: [2, 3] }]);
  });

  test('without loads, equally alive replicas go by id; an unknown VM is not live', async () => {
    const { vmLoad: _, ...input } = INPUT;
    const tied: FileInfo = {
      ...file,
      chunks: [
        { ...(file.chunks[0] as FileInfo['chunks'][number]), replicas: ['vm-c', 'vm-x', 'vm-b'] },
      ],
    };
    const { messages } = await start({ ...input, vmLoad: undefined }, tied);
    const plan = messages('download.plan')[0]?.message;
    expect(plan?.type === 'download.plan' && plan.sources).toEqual([
      { index: 0, source: 'edge', vm: 'vm-b', replicas: ['vm-b', 'vm-c'] },
    ]);
  });

  test('a suspect replica is still used when it is the only live one', async () => {
    const { messages, core } = await start({
      vmStatus: { 'vm-a': 'suspect', 'vm-b': 'failed', 'vm-c': 'failed', 'vm-d': 'failed' },
    });
    const plan = messages('download.plan')[0]?.message;
    expect(plan?.type === 'download.plan' && plan.sources.map((s) => [s.source, s.vm])).toEqual([
      ['edge', 'vm-a'],
      ['core', 'vm-d'],
      ['core', 'vm-d'],
      ['core', null],
    ]);
    expect(core.map((c) => c.index)).toEqual([1, 2, 3]);
  });

  test('FALLBACK naming another replica → chunk.fetch to it at the offset, counted as a replica failover', async () => {
    const { send, messages, core, repairs, output } = await start();
    send({ type: 'FALLBACK', index: 0, offset: 3, reason: 'timeout', failed: 'vm-c', vm: 'vm-b' });
    expect(
      messages('chunk.fetch')
        .slice(2)
        .map((c) => [c.to, c.message]),
    ).toEqual([['vm-b', fetchMessage(0, 3)]]);
    expect(core).toHaveLength(2); // only the planned ones
    expect(repairs()).toEqual([]);
    send({ type: 'DONE', ok: true, edgeBytes: 8, coreBytes: 8 });
    expect(output()).toEqual({
      name: 'f.bin',
      ok: true,
      planCore: [2, 3],
      failovers: 0,
      replicaFailovers: 1,
      edgeBytes: 8,
      coreBytes: 8,
    });
  });

  test('FALLBACK without a replica, or naming a VM that does not hold the chunk → the core', async () => {
    const { send, messages, core, serve, output } = await start();
    send({ type: 'FALLBACK', index: 0, offset: 2, reason: 'timeout', failed: 'vm-a' });
    send({ type: 'FALLBACK', index: 1, offset: 1, reason: 'error', failed: 'vm-b', vm: 'vm-x' });
    expect(core.slice(2)).toEqual([
      { type: 'START', index: 0, offset: 2 },
      { type: 'START', index: 1, offset: 1 },
    ]);
    expect(messages('chunk.fetch')).toHaveLength(2);
    expect(serve.getSnapshot().context).toMatchObject({ failovers: 2, replicaFailovers: 0 });
    // A chunk the file does not have is ignored.
    send({ type: 'FALLBACK', index: 9, offset: 0, reason: 'timeout' });
    expect(core).toHaveLength(4);
    send({ type: 'DONE', ok: true, edgeBytes: 0, coreBytes: 16 });
    expect(output()).toMatchObject({ failovers: 2, replicaFailovers: 0 });
  });

  test('bad bytes on a replica → the next replica, and CHUNK.REPAIR of the bad one to the parent', async () => {
    const { send, messages, repairs, core } = await start();
    send({
      type: 'FALLBACK',
      index: 0,
      offset: 0,
      reason: 'integrity',
      failed: 'vm-c',
      vm: 'vm-b',
    });
    expect(messages('chunk.fetch').at(-1)).toEqual({
      type: 'SEND',
      to: 'vm-b',
      message: fetchMessage(0, 0),
    });
    expect(repairs()).toEqual([{ type: 'CHUNK.REPAIR', file, index: 0, vm: 'vm-c' }]);
    // The last replica bad too → the core, and that one repaired as well.
    send({ type: 'FALLBACK', index: 0, offset: 0, reason: 'integrity', failed: 'vm-b' });
    expect(core.at(-1)).toEqual({ type: 'START', index: 0, offset: 0 });
    expect(repairs().map((r) => r.vm)).toEqual(['vm-c', 'vm-b']);
  });

  test('no repair for a timeout, nor for a failed VM that does not hold the chunk', async () => {
    const { send, repairs } = await start();
    send({ type: 'FALLBACK', index: 0, offset: 1, reason: 'timeout', failed: 'vm-c', vm: 'vm-b' });
    send({ type: 'FALLBACK', index: 1, offset: 0, reason: 'integrity', failed: 'vm-x' });
    expect(repairs()).toEqual([]);
  });

  test('an integrity fallback that names no VM (a record from before replicas) repairs its VM', async () => {
    const single: FileInfo = {
      ...file,
      size: 4,
      chunks: [{ index: 0, offset: 0, size: 4, vm: 'vm-b', sha256: 'b'.repeat(64) }],
    };
    const { send, repairs, core } = await start({}, single);
    send({ type: 'FALLBACK', index: 0, offset: 0, reason: 'integrity' });
    expect(core).toEqual([{ type: 'START', index: 0, offset: 0 }]);
    expect(repairs()).toEqual([{ type: 'CHUNK.REPAIR', file: single, index: 0, vm: 'vm-b' }]);
  });

  test('resumed for one fallback naming a replica: only that chunk, from that replica', async () => {
    const { messages, core, repairs, serve } = await start({
      resume: {
        fileId: 'file-1',
        index: 0,
        offset: 2,
        reason: 'integrity',
        failed: 'vm-c',
        vm: 'vm-a',
      },
    });
    expect(messages('download.plan')).toEqual([]);
    expect(messages('chunk.fetch').map((c) => [c.to, c.message])).toEqual([
      ['vm-a', fetchMessage(0, 2)],
    ]);
    expect(core).toEqual([]);
    expect(repairs()).toEqual([{ type: 'CHUNK.REPAIR', file, index: 0, vm: 'vm-c' }]);
    expect(serve.getSnapshot().context.replicaFailovers).toBe(1);
  });
});

describe('directAnswer: a member reading the VMs itself asks whether its plan holds', () => {
  /** Two chunks on live VMs. */
  const edgeFile: FileInfo = {
    ...file,
    chunks: [
      { ...(file.chunks[0] as FileInfo['chunks'][number]) },
      { index: 1, offset: 4, size: 12, vm: 'vm-b', replicas: ['vm-b'], sha256: 'c'.repeat(64) },
    ],
  };
  const direct = (overrides: Partial<{ fileId: string; vms: string[] }> = {}) => ({
    fileId: 'file-1',
    vms: ['vm-c', 'vm-b'],
    ...overrides,
  });

  test('the same file, each chunk asked of a live holder: it holds, with the plan as it stands', () => {
    expect(directAnswer(INPUT, direct(), edgeFile)).toEqual({
      type: 'download.plan',
      id: 't1',
      from: 'broker',
      file: edgeFile,
      sources: [
        { index: 0, source: 'edge', vm: 'vm-c', replicas: ['vm-c', 'vm-b', 'vm-a'] },
        { index: 1, source: 'edge', vm: 'vm-b' },
      ],
      segmentSize: 4,
      window: 2,
      fetchTimeoutMs: 2000,
      direct: true,
    });
  });

  test.each([
    ['the file was replaced', { fileId: 'file-0' }],
    ['a chunk asked of a VM that does not hold it', { vms: ['vm-c', 'vm-c'] }],
    ['a chunk asked of a VM that is not alive', { vms: ['vm-a', 'vm-b'] }],
    ['not every chunk asked', { vms: ['vm-c'] }],
  ])('%s: it does not hold', (_name, overrides) => {
    expect(directAnswer(INPUT, direct(overrides), edgeFile)).toMatchObject({
      type: 'download.plan',
      direct: false,
      file: edgeFile,
    });
  });
});

describe('serveDownload ends when the requester says so, whatever it is doing', () => {
  test('DONE while a resumed serve still looks the file up (the requester gave up meanwhile)', async () => {
    const sent: SendCommand[] = [];
    let found: (file: FileInfo) => void = () => {};
    const machine = parentMachine.provide({
      actors: {
        serveDownload: serveDownloadMachine.provide({
          actions: { send: (_, command) => void sent.push(command) },
          actors: {
            lookupFile: fromPromise<FileInfo, { name: string }>(
              () => new Promise((resolve) => (found = resolve)),
            ),
            coreServer: fromCallback<CoreServerCommand, CoreServerInput>(() => {}),
          },
        }),
      },
    });
    const parent = createActor(machine, {
      clock: new SimulatedClock(),
      input: {
        ...INPUT,
        resume: { fileId: 'file-1', index: 0, offset: 0, reason: 'error', failed: 'vm-a' },
      },
    }).start();
    const serve = parent.getSnapshot().children.serve as ActorRefFrom<typeof serveDownloadMachine>;
    expect(serve.getSnapshot().value).toBe('locating');
    serve.send({ type: 'DONE', ok: false, edgeBytes: 0, coreBytes: 0 });
    await waitFor(parent, (snapshot) => snapshot.context.output !== null);
    expect(parent.getSnapshot().context.output).toMatchObject({ ok: false });
    found(file);
    await Bun.sleep(5);
    expect(sent).toEqual([]);
  });
});
