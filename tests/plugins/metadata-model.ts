/**
 * Model-based property test: random sequences of operations run against a
 * backend and against the memory backend (the reference), which must agree
 * on every result and on everything stored at the end.
 */
import { expect, test } from 'bun:test';
import fc from 'fast-check';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import type { Cleanup, MetadataStore, VmRecord } from '../../plugins/metadata/types.ts';
import type { FileInfo } from '../../protocol/messages.ts';
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
const fileIdArb = fc.constantFrom(...FILE_IDS);
const vmIdArb = fc.constantFrom(...VM_IDS);

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
        vm: fc.option(vmIdArb, { nil: null }),
        sha256: sha256Arb,
      }),
      { selector: (chunk) => chunk.index, maxLength: 4 },
    ),
  })
  .map((file) => ({ ...file, size: file.chunks.reduce((sum, chunk) => sum + chunk.size, 0) }));

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
  | { kind: 'settle'; fileId: string }
  | { kind: 'cleanups' }
  | { kind: 'putVm'; record: VmRecord }
  | { kind: 'listVms' }
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
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('settle'), fileId: fileIdArb }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('cleanups') }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('putVm'), record: vmArb }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('listVms') }) },
  ];
  if (withReopen) ops.push({ weight: 1, arbitrary: fc.record({ kind: fc.constant('reopen') }) });
  return fc.oneof(...ops);
}

/** Runs `op`; ledger times differ between stores by nature, so results leave them out. */
async function apply(store: MetadataStore, op: Exclude<Op, { kind: 'reopen' }>) {
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
    case 'settle':
      return store.settle(op.fileId);
    case 'cleanups':
      return withoutTimes(await store.cleanups());
    case 'putVm':
      return store.putVm(op.record);
    case 'listVms':
      return store.listVms();
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
              const expected = await apply(model, op);
              const actual = await apply(store, op);
              expect({ step, op, result: actual }).toEqual({ step, op, result: expected });
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
