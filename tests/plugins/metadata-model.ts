/**
 * Model-based property test: random sequences of operations run against a
 * backend and against the memory backend (the reference), which must agree
 * on every result and on everything stored at the end.
 */
import { expect, test } from 'bun:test';
import fc from 'fast-check';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import {
  type Cleanup,
  type FileUse,
  MetadataError,
  type MetadataStore,
  type VmRecord,
} from '../../plugins/metadata/types.ts';
import type { ChunkInfo, FileInfo } from '../../protocol/messages.ts';
import { isoDateArb, sha256Arb } from '../support/arbitraries.ts';
import { allFiles, snapshot } from './metadata-fixtures.ts';

export interface ModelSuite {
  create: () => Promise<MetadataStore>;
  cleanup?: ((store: MetadataStore) => Promise<void>) | undefined;
  /** When given, sequences also close and reopen the store in between. */
  reopen?: (store: MetadataStore) => Promise<MetadataStore>;
}

/** Few enough that operations keep meeting the same names, fileIds and VMs. */
const NAMES = ['a', 'b', 'a:b', 'a*', '%_', "q'", 'x y', 'é', '中', '\uFFFD', '😀', 'a😀'];
const FILE_IDS = ['f1', 'f2', 'f3', 'f4', 'f5', 'f6'];
const VM_IDS = ['vm-1', 'vm-10', 'vm-2', 'vm-3'];
const NUM_RUNS = 30;
const MAX_STEPS = 30;

const nameArb = fc.constantFrom(...NAMES);
/** Few enough that uses tie; one with an offset, one with more than milliseconds. */
const usedAtArb = fc.constantFrom(
  '2026-01-01T00:00:00.000Z',
  '2026-01-01T00:00:01.500Z',
  '2026-01-01T01:00:01.500+01:00',
  '2026-01-01T00:00:02.000999Z',
  '2025-12-31T23:59:59.999Z',
);
const fileIdArb = fc.constantFrom(...FILE_IDS);
const vmIdArb = fc.constantFrom(...VM_IDS);

/** Where a chunk is: its replicas (`vm` the first), or as records before replicas, a `vm` alone. */
type Placement = Pick<ChunkInfo, 'vm' | 'replicas'>;
const placementArb: fc.Arbitrary<Placement> = fc.oneof(
  fc
    .uniqueArray(vmIdArb, { maxLength: 3 })
    .map((replicas) => ({ vm: replicas[0] ?? null, replicas })),
  fc.option(vmIdArb, { nil: null }).map((vm) => ({ vm })),
);

const fileArb: fc.Arbitrary<FileInfo> = fc
  .record({
    name: nameArb,
    fileId: fileIdArb,
    sha256: sha256Arb,
    createdAt: isoDateArb,
    chunks: fc.uniqueArray(
      fc.record({
        index: fc.nat({ max: 12 }),
        offset: fc.maxSafeNat(),
        size: fc.maxSafeNat(),
        placement: placementArb,
        sha256: sha256Arb,
      }),
      { selector: (chunk) => chunk.index, maxLength: 4 },
    ),
  })
  .map((file) => ({
    ...file,
    size: file.chunks.reduce((sum, chunk) => sum + chunk.size, 0),
    chunks: file.chunks.map(({ placement, ...chunk }) => ({ ...chunk, ...placement })),
  }));

/** How a generated updateChunks goes wrong, if it does. */
const FLAWS = [
  'none',
  'none',
  'none',
  'missing',
  'extra',
  'twice',
  'not-first',
  'vm-twice',
] as const;
type Flaw = (typeof FLAWS)[number];

const vmArb: fc.Arbitrary<VmRecord> = fc.record({
  id: vmIdArb,
  address: fc.string({ maxLength: 20 }),
  cpu: fc.record({
    cores: fc.integer({ min: 1, max: 512 }),
    // JSON has no -0; adding 0 turns it into 0.
    load: fc.double({ min: 0, max: 1000, noNaN: true, noDefaultInfinity: true }).map((x) => x + 0),
  }),
  memoryFree: fc.maxSafeNat(),
  penalty: fc.nat({ max: 100 }),
  incarnation: fc.string({ unit: 'binary', maxLength: 10 }).filter((text) => text.isWellFormed()),
  lastSeen: fc.maxSafeNat(),
});

type Op =
  | { kind: 'getFile'; name: string }
  | { kind: 'listFiles'; limit: number; after: string | undefined }
  | { kind: 'chunksOn'; vm: string }
  | { kind: 'hasFileId'; fileId: string }
  | { kind: 'beginUpload'; fileId: string; name: string }
  | { kind: 'commitFile'; file: FileInfo }
  | { kind: 'removeFile'; name: string }
  | {
      /** Becomes an updateChunks of the file the model holds under `name` (see `resolve`). */
      kind: 'updateChunksOf';
      name: string;
      /** Names `fileId` instead of the one the model holds. */
      stale: boolean;
      fileId: string;
      placements: Placement[];
      flaw: Flaw;
    }
  | {
      kind: 'updateChunks';
      name: string;
      fileId: string;
      chunks: Pick<ChunkInfo, 'index' | 'vm' | 'replicas'>[];
    }
  | { kind: 'settle'; fileId: string }
  | { kind: 'cleanups' }
  | { kind: 'putVm'; record: VmRecord }
  | { kind: 'listVms' }
  | { kind: 'touchFiles'; entries: FileUse[] }
  | { kind: 'lastUsed' }
  | { kind: 'reopen' };

function opArb(withReopen: boolean): fc.Arbitrary<Op> {
  const ops: fc.WeightedArbitrary<Op>[] = [
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('getFile'), name: nameArb }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('listFiles'),
        limit: fc.integer({ min: 1, max: 4 }),
        after: fc.option(fc.oneof(nameArb, fc.string({ unit: 'binary', maxLength: 3 })), {
          nil: undefined,
        }),
      }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('chunksOn'), vm: vmIdArb }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('hasFileId'), fileId: fileIdArb }) },
    {
      weight: 3,
      arbitrary: fc.record({ kind: fc.constant('beginUpload'), fileId: fileIdArb, name: nameArb }),
    },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('commitFile'), file: fileArb }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('removeFile'), name: nameArb }) },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('updateChunksOf'),
        name: nameArb,
        stale: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
        fileId: fileIdArb,
        placements: fc.array(placementArb, { minLength: 1, maxLength: 4 }),
        flaw: fc.constantFrom(...FLAWS),
      }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('settle'), fileId: fileIdArb }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('cleanups') }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('putVm'), record: vmArb }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('listVms') }) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('touchFiles'),
        entries: fc.array(fc.record({ name: nameArb, usedAt: usedAtArb }), { maxLength: 4 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('lastUsed') }) },
  ];
  if (withReopen) ops.push({ weight: 1, arbitrary: fc.record({ kind: fc.constant('reopen') }) });
  return fc.oneof(...ops);
}

/**
 * An updateChunks of the file the model holds under `op.name` (or, when
 * there is none, of chunk 0), its chunks placed in turn by `op.placements`,
 * then spoilt as `op.flaw` says.
 */
async function resolve(
  model: MetadataStore,
  op: Extract<Op, { kind: 'updateChunksOf' }>,
): Promise<Extract<Op, { kind: 'updateChunks' }>> {
  const file = await model.getFile(op.name);
  const fileId = file === null || op.stale ? op.fileId : file.fileId;
  const indexes = file?.chunks.map((chunk) => chunk.index) ?? [0];
  const chunks = indexes.map((index, i) => ({
    index,
    ...structuredClone(op.placements[i % op.placements.length] as Placement),
  }));
  const first = chunks[0];
  switch (op.flaw) {
    case 'none':
      break;
    case 'missing':
      chunks.pop();
      if (chunks.length === 0) chunks.push({ index: 4000, vm: null });
      break;
    case 'extra':
      chunks.push({ index: 4001, vm: 'vm-1', replicas: ['vm-1'] });
      break;
    case 'twice':
      if (first) chunks.push({ ...first });
      break;
    case 'not-first':
      if (first) first.replicas = ['vm-2', 'vm-3'].filter((vm) => vm !== first.vm);
      break;
    case 'vm-twice':
      if (first) first.replicas = first.vm === null ? ['vm-1', 'vm-1'] : [first.vm, first.vm];
      break;
  }
  return { kind: 'updateChunks', name: op.name, fileId, chunks };
}

/** Runs `op`; ledger times differ between stores by nature, so results leave them out. */
async function apply(
  store: MetadataStore,
  op: Exclude<Op, { kind: 'reopen' } | { kind: 'updateChunksOf' }>,
) {
  switch (op.kind) {
    case 'getFile':
      return store.getFile(op.name);
    case 'listFiles':
      return store.listFiles({
        limit: op.limit,
        ...(op.after !== undefined ? { after: op.after } : {}),
      });
    case 'chunksOn':
      return store.chunksOn(op.vm);
    case 'hasFileId':
      return store.hasFileId(op.fileId);
    case 'beginUpload':
      return store.beginUpload({ fileId: op.fileId, name: op.name });
    case 'commitFile':
      return store.commitFile(op.file);
    case 'removeFile':
      return store.removeFile(op.name);
    case 'updateChunks':
      // Only that both refuse must agree, not how they word it.
      return store.updateChunks(op.name, op.fileId, op.chunks).catch((err) => {
        expect(err).toBeInstanceOf(MetadataError);
        return 'refused';
      });
    case 'settle':
      return store.settle(op.fileId);
    case 'cleanups':
      return withoutTimes(await store.cleanups());
    case 'putVm':
      return store.putVm(op.record);
    case 'listVms':
      return store.listVms();
    case 'touchFiles':
      return store.touchFiles(op.entries);
    case 'lastUsed':
      return store.lastUsed();
  }
}

function withoutTimes(cleanups: Cleanup[]) {
  return cleanups.map(({ since, ...rest }) => {
    expect(new Date(since).toISOString()).toBe(since);
    return rest;
  });
}

async function comparable(store: MetadataStore) {
  const state = await snapshot(store);
  return { ...state, cleanups: withoutTimes(state.cleanups) };
}

/**
 * A fileId names one upload's chunk set, so it belongs to at most one name;
 * backends with a unique fileId column refuse to break that, and the memory
 * model does not check it. Sequences that would break it skip that step.
 */
async function takenByAnotherName(model: MetadataStore, file: FileInfo): Promise<boolean> {
  return (await allFiles(model)).some(
    (each) => each.fileId === file.fileId && each.name !== file.name,
  );
}

export function testAgainstModel(suite: ModelSuite): void {
  test('agrees with the memory backend over random operation sequences', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb(suite.reopen !== undefined), { minLength: 1, maxLength: MAX_STEPS }),
        async (ops) => {
          const model = createMemoryMetadata();
          let store = await suite.create();
          try {
            for (const [step, op] of ops.entries()) {
              if (op.kind === 'reopen') {
                if (suite.reopen) store = await suite.reopen(store);
                continue;
              }
              if (op.kind === 'commitFile' && (await takenByAnotherName(model, op.file))) continue;
              const resolved = op.kind === 'updateChunksOf' ? await resolve(model, op) : op;
              const expected = await apply(model, resolved);
              const actual = await apply(store, resolved);
              expect({ step, op: resolved, result: actual }).toEqual({
                step,
                op: resolved,
                result: expected,
              });
            }
            expect(await comparable(store)).toEqual(await comparable(model));
          } finally {
            await suite.cleanup?.(store);
            await store.close();
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  }, 30_000);
}
