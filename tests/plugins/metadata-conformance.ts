/**
 * What every metadata store must do, run against each backend by its own test
 * file: `testMetadataStore({ name, create })`. Each test gets a fresh store.
 * The property tests (metadata-model.ts) add random operation sequences
 * checked against the memory backend.
 */
import { describe, expect, test } from 'bun:test';
import {
  type Cleanup,
  MetadataError,
  type MetadataStore,
  type VmRecord,
} from '../../plugins/metadata/types.ts';
import { type ChunkInfo, type FileInfo, holdersOf } from '../../protocol/messages.ts';
import {
  eventually,
  expectEachFailsFast,
  freshStoreEachTest,
  type StoreSource,
  testWhileUnreachable,
} from './conformance-support.ts';
import {
  allFiles,
  byCodePoint,
  byUtf8,
  CODE_POINT_ORDER,
  makeFile,
  makeVm,
  SPECIAL_NAMES,
  sha,
  snapshot,
} from './metadata-fixtures.ts';
import { testAgainstModel } from './metadata-model.ts';

/** `create` is called before every test, `cleanup` after it. */
export interface MetadataStoreSuite extends StoreSource<MetadataStore> {
  /** Names the describe block, e.g. `redis`. */
  name: string;
  /** For persistent backends: closes `store` and opens what it stored again. */
  reopen?: (store: MetadataStore) => Promise<MetadataStore>;
  /** Backend-specific cases, registered inside the same describe block. */
  additionalTests?: (store: () => MetadataStore) => void;
}

const reasons = (cleanups: Cleanup[]) => cleanups.map(({ fileId, reason }) => ({ fileId, reason }));

export function testMetadataStore(suite: MetadataStoreSuite): void {
  describe(`metadata store: ${suite.name}`, () => {
    let store: MetadataStore;
    const stores = freshStoreEachTest(suite, (fresh) => {
      store = fresh;
    });

    /** chunksOn of each of `vms` is exactly what the file records place there. */
    async function expectPlacementsMatchFiles(vms: string[]) {
      const files = await allFiles(store);
      for (const vm of vms) {
        const expected = files
          .flatMap((file) =>
            file.chunks
              .filter((chunk) => holdersOf(chunk).includes(vm))
              .map(({ index, size, sha256 }) => ({
                name: file.name,
                fileId: file.fileId,
                index,
                size,
                sha256,
              })),
          )
          .sort((a, b) => byUtf8(a.fileId, b.fileId) || a.index - b.index);
        expect({ vm, placed: await store.chunksOn(vm) }).toEqual({ vm, placed: expected });
      }
    }

    test('names its backend', () => {
      expect(store.name).toBe(suite.name);
    });

    test('starts empty', async () => {
      expect(await store.getFile('anything')).toBeNull();
      const page = await store.listFiles({ limit: 10 });
      expect(page.files).toEqual([]);
      expect(page.next).toBeUndefined();
      expect(await store.listFiles({ limit: 1, after: 'm' })).toEqual({ files: [] });
      expect(await store.chunksOn('vm-1')).toEqual([]);
      expect(await store.hasFileId('f1')).toBe(false);
      expect(await store.cleanups()).toEqual([]);
      expect(await store.listVms()).toEqual([]);
    });

    describe('files', () => {
      test('commitFile then getFile round trips every field', async () => {
        const file: FileInfo = {
          name: 'report 📈.pdf',
          fileId: 'file_A-1',
          size: Number.MAX_SAFE_INTEGER,
          sha256: sha('whole'),
          createdAt: '2016-03-01T12:34:56.789Z',
          chunks: [
            { index: 0, offset: 0, size: 3 * 2 ** 40, vm: 'vm-1', sha256: sha('0') },
            { index: 1, offset: 3 * 2 ** 40, size: 0, vm: null, sha256: sha('1') },
            { index: 4095, offset: 2 ** 52, size: 2 ** 52 - 1, vm: 'vm.2_x', sha256: sha('2') },
          ],
        };
        expect(await store.commitFile(file)).toBeNull();
        expect(await store.getFile(file.name)).toEqual(file);
        expect(await store.listFiles({ limit: 10 })).toEqual({ files: [file] });
      });

      test('a file with no chunks round trips', async () => {
        const empty = makeFile('empty', 'f-empty', []);
        await store.commitFile(empty);
        expect(await store.getFile('empty')).toEqual(empty);
        expect(await store.hasFileId('f-empty')).toBe(true);
      });

      test('names match exactly: case and Unicode normalization count', async () => {
        const nfc = 'Caf\u00e9';
        await store.commitFile(makeFile(nfc, 'f-nfc'));
        expect(await store.getFile('Cafe\u0301')).toBeNull();
        expect(await store.getFile('café')).toBeNull();
        expect(await store.getFile('Caf')).toBeNull();
        expect(await store.getFile(`${nfc} `)).toBeNull();
        expect((await store.getFile(nfc))?.fileId).toBe('f-nfc');
      });

      test('names with glob, SQL, quoting and key characters are literal', async () => {
        for (const [i, name] of SPECIAL_NAMES.entries()) {
          await store.commitFile(makeFile(name, `f-${i}`));
        }
        for (const [i, name] of SPECIAL_NAMES.entries()) {
          expect({ name, got: (await store.getFile(name))?.fileId }).toEqual({
            name,
            got: `f-${i}`,
          });
        }
        const sorted = [...SPECIAL_NAMES].sort(byCodePoint);
        expect((await allFiles(store)).map((file) => file.name)).toEqual(sorted);
        for (const [i, name] of sorted.entries()) {
          const page = await store.listFiles({ limit: 1, after: name });
          expect({ after: name, got: page.files.map((file) => file.name) }).toEqual({
            after: name,
            got: sorted.slice(i + 1, i + 2),
          });
        }
        expect(await store.removeFile('*')).not.toBeNull();
        expect(await store.getFile('a*b')).not.toBeNull();
        expect(await allFiles(store)).toHaveLength(SPECIAL_NAMES.length - 1);
      });
    });

    describe('listFiles', () => {
      const names = ['f', 'b', 'e', 'a', 'd', 'c'];

      test('pages walk every file once, in order, for every limit', async () => {
        for (const name of names) await store.commitFile(makeFile(name, `id-${name}`));
        const sorted = [...names].sort();
        for (let limit = 1; limit <= names.length + 2; limit++) {
          const seen: string[] = [];
          let after: string | undefined;
          let pages = 0;
          for (;;) {
            const page = await store.listFiles({ limit, ...(after ? { after } : {}) });
            pages++;
            const got = page.files.map((file) => file.name);
            seen.push(...got);
            if (page.next === undefined) {
              expect(got.length).toBeLessThanOrEqual(limit);
              break;
            }
            expect({ limit, got: got.length }).toEqual({ limit, got: limit });
            expect(page.next).toBe(got.at(-1) as string);
            after = page.next;
            if (pages > names.length + 1) throw new Error(`limit ${limit}: paging never ends`);
          }
          expect({ limit, seen }).toEqual({ limit, seen: sorted });
          // A last page that is exactly full carries no `next`: no empty page follows.
          expect({ limit, pages }).toEqual({ limit, pages: Math.ceil(names.length / limit) });
        }
      });

      test('next is set exactly when more files follow', async () => {
        for (const name of ['a', 'b', 'c']) await store.commitFile(makeFile(name, `id-${name}`));
        expect((await store.listFiles({ limit: 3 })).next).toBeUndefined();
        expect((await store.listFiles({ limit: 4 })).next).toBeUndefined();
        expect((await store.listFiles({ limit: 2 })).next).toBe('b');
        expect(await store.listFiles({ limit: 2, after: 'b' })).toEqual({
          files: [makeFile('c', 'id-c')],
        });
        expect((await store.listFiles({ limit: 1, after: 'a' })).next).toBe('b');
        expect((await store.listFiles({ limit: 2, after: 'a' })).next).toBeUndefined();
      });

      test('listFileRecords gives the pages of listFiles, each record as JSON text or its UTF-8', async () => {
        for (const [i, name] of [...SPECIAL_NAMES, ...CODE_POINT_ORDER].entries())
          await store.commitFile(
            makeFile(name, `r-${i}`, [
              [0, ['vm-1', 'vm-2']],
              [1, null],
            ]),
          );
        for (const limit of [1, 3, 1000]) {
          let after: string | undefined;
          for (;;) {
            const options = { limit, ...(after !== undefined ? { after } : {}) };
            const files = await store.listFiles(options);
            const records = await store.listFileRecords(options);
            expect(
              records.records.map((record) => JSON.parse(record.json.toString('utf8'))),
            ).toEqual(files.files);
            expect(records.records.map((record) => record.name)).toEqual(
              files.files.map((file) => file.name),
            );
            expect(records.next).toEqual(files.next);
            if (files.next === undefined) break;
            after = files.next;
          }
        }
        await expect(store.listFileRecords({ limit: 0 })).rejects.toBeInstanceOf(MetadataError);
      });

      test('after is exclusive and need not name a stored file', async () => {
        for (const name of ['a', 'c', 'e']) await store.commitFile(makeFile(name, `id-${name}`));
        const after = async (from: string) =>
          (await store.listFiles({ limit: 10, after: from })).files.map((file) => file.name);
        expect(await after('')).toEqual(['a', 'c', 'e']);
        expect(await after('a')).toEqual(['c', 'e']);
        expect(await after('b')).toEqual(['c', 'e']);
        expect(await after('c')).toEqual(['e']);
        expect(await after('c\u0000')).toEqual(['e']);
        expect(await after('e')).toEqual([]);
        expect(await after('z')).toEqual([]);
        expect(await after('A')).toEqual(['a', 'c', 'e']);
      });

      test('orders names by Unicode code point (UTF-8 byte order), astral plane included', async () => {
        // The expectation is checked against UTF-8 bytes here, so a typo cannot make it wrong.
        expect([...CODE_POINT_ORDER].sort(byUtf8)).toEqual(CODE_POINT_ORDER);
        const shuffled = [...CODE_POINT_ORDER].reverse();
        for (const [i, name] of shuffled.entries()) await store.commitFile(makeFile(name, `u${i}`));
        expect((await allFiles(store)).map((file) => file.name)).toEqual(CODE_POINT_ORDER);
        expect((await allFiles(store, 1)).map((file) => file.name)).toEqual(CODE_POINT_ORDER);
        expect((await allFiles(store, 3)).map((file) => file.name)).toEqual(CODE_POINT_ORDER);
        const page = await store.listFiles({ limit: 2, after: '\uE000' });
        expect(page.files.map((file) => file.name)).toEqual(['\uFFFD', '𝄞']);
        expect(page.next).toBe('𝄞');
        const last = await store.listFiles({ limit: 2, after: '𝄞' });
        expect(last).toEqual({ files: [makeFile('😀', `u0`)] });
        // Within a name too: U+FFFD before an astral character, unlike UTF-16 order.
        expect((await store.listFiles({ limit: 5, after: 'a' })).files[0]?.name).toBe('a\uFFFD');
      });
    });

    describe('chunksOn', () => {
      test('lists the chunks on one VM in (fileId, index) order, with exactly their fields', async () => {
        // Stored out of order, and with indexes whose string order differs from their numbers.
        const b = makeFile('x', 'f-b', [
          [10, 'vm-1'],
          [0, 'vm-1'],
          [2, 'vm-1'],
          [1, 'vm-2'],
        ]);
        const a = makeFile('y', 'f-a', [
          [3, 'vm-1'],
          [1, null],
        ]);
        await store.commitFile(b);
        await store.commitFile(a);
        const placed = (file: FileInfo, index: number) => {
          const chunk = file.chunks.find((each) => each.index === index) as ChunkInfo;
          return {
            name: file.name,
            fileId: file.fileId,
            index,
            size: chunk.size,
            sha256: chunk.sha256,
          };
        };
        expect(await store.chunksOn('vm-1')).toEqual([
          placed(a, 3),
          placed(b, 0),
          placed(b, 2),
          placed(b, 10),
        ]);
        expect(await store.chunksOn('vm-2')).toEqual([placed(b, 1)]);
      });

      test('never lists chunks that live in the core only', async () => {
        await store.commitFile(
          makeFile('core-only', 'f-core', [
            [0, null],
            [1, null],
          ]),
        );
        expect(await store.chunksOn('vm-1')).toEqual([]);
        expect(await store.chunksOn('null')).toEqual([]);
        expect(await store.chunksOn('')).toEqual([]);
      });

      test('VM ids that extend each other stay apart', async () => {
        const vms = ['vm-1', 'vm-10', 'vm-1.0', 'vm-', 'vm-1_'];
        await store.commitFile(
          makeFile(
            'spread',
            'f-spread',
            vms.map((vm, i) => [i, vm]),
          ),
        );
        for (const [i, vm] of vms.entries()) {
          expect({ vm, got: (await store.chunksOn(vm)).map((c) => c.index) }).toEqual({
            vm,
            got: [i],
          });
        }
        expect(await store.chunksOn('vm')).toEqual([]);
      });

      test('follows commits over a name and removals', async () => {
        await store.commitFile(makeFile('x', 'f-old', [[0, 'vm-1']]));
        await store.commitFile(makeFile('x', 'f-new', [[0, 'vm-2']]));
        expect(await store.chunksOn('vm-1')).toEqual([]);
        expect((await store.chunksOn('vm-2')).map((c) => c.fileId)).toEqual(['f-new']);
        // Re-committing the same fileId with the chunk moved (a repair, say).
        await store.commitFile(makeFile('x', 'f-new', [[0, 'vm-3']]));
        expect(await store.chunksOn('vm-2')).toEqual([]);
        expect((await store.chunksOn('vm-3')).map((c) => c.fileId)).toEqual(['f-new']);
        await store.removeFile('x');
        expect(await store.chunksOn('vm-3')).toEqual([]);
      });
    });

    describe('replicas and updateChunks', () => {
      /** What chunksOn lists for chunk `index` of `file`. */
      const placed = (file: FileInfo, index: number) => {
        const chunk = file.chunks.find((each) => each.index === index) as ChunkInfo;
        const { name, fileId } = file;
        return { name, fileId, index, size: chunk.size, sha256: chunk.sha256 };
      };
      /** Everything but `vm` and `replicas`, which updateChunks must leave alone. */
      const fixed = (file: FileInfo | null) =>
        file && {
          ...file,
          chunks: file.chunks.map(({ vm: _vm, replicas: _replicas, ...rest }) => rest),
        };

      test('chunksOn finds a chunk on every replica, once per chunk, old records mixed in', async () => {
        const b = makeFile('x', 'f-b', [
          [3, ['vm-3', 'vm-1']],
          [0, ['vm-1', 'vm-2']],
          [1, ['vm-2']],
          [2, 'vm-2'], // written before replicas: its vm alone holds it
          [4, []],
        ]);
        const a = makeFile('y', 'f-a', [
          [0, ['vm-2', 'vm-1', 'vm-3']],
          [1, null],
        ]);
        await store.commitFile(b);
        await store.commitFile(a);
        expect(await store.chunksOn('vm-1')).toEqual([placed(a, 0), placed(b, 0), placed(b, 3)]);
        expect(await store.chunksOn('vm-2')).toEqual([
          placed(a, 0),
          placed(b, 0),
          placed(b, 1),
          placed(b, 2),
        ]);
        expect(await store.chunksOn('vm-3')).toEqual([placed(a, 0), placed(b, 3)]);
        expect(await store.chunksOn('vm-4')).toEqual([]);
        // Old records read back without `replicas`, new ones with them, `[]` as `[]`.
        const got = (await store.getFile('x')) as FileInfo;
        expect(got).toEqual(b);
        expect(got.chunks.map((chunk) => chunk.replicas ?? 'absent')).toEqual([
          ['vm-3', 'vm-1'],
          ['vm-1', 'vm-2'],
          ['vm-2'],
          'absent',
          [],
        ]);
        expect(Object.hasOwn(got.chunks[3] as ChunkInfo, 'replicas')).toBe(false);
        // Replaced and removed records take every replica's placement with them.
        await store.commitFile(makeFile('x', 'f-b2', [[0, 'vm-3']]));
        expect(await store.chunksOn('vm-1')).toEqual([placed(a, 0)]);
        expect((await store.chunksOn('vm-3')).map((c) => c.fileId)).toEqual(['f-a', 'f-b2']);
        await store.removeFile('y');
        expect(await store.chunksOn('vm-1')).toEqual([]);
        expect(await store.chunksOn('vm-2')).toEqual([]);
      });

      test('a record naming a VM twice in one chunk lists that chunk once', async () => {
        const file = makeFile('x', 'f1', [[0, ['vm-1', 'vm-1']]]);
        await store.commitFile(file);
        expect(await store.chunksOn('vm-1')).toEqual([placed(file, 0)]);
        await store.removeFile('x');
        expect(await store.chunksOn('vm-1')).toEqual([]);
      });

      test('evicting every chunk leaves them on no VM, with replicas []', async () => {
        const file = makeFile('x', 'f1', [
          [0, ['vm-1', 'vm-2']],
          [1, 'vm-3'],
          [2, ['vm-2']],
        ]);
        const other = makeFile('y', 'f2', [[0, ['vm-2']]]);
        await store.commitFile(file);
        await store.commitFile(other);
        await store.beginUpload({ fileId: 'up', name: 'z' });
        await store.putVm(makeVm('vm-1'));
        const before = await snapshot(store);
        const evicted = file.chunks.map(({ index }) => ({ index, vm: null, replicas: [] }));
        expect(await store.updateChunks('x', 'f1', evicted)).toBe(true);
        for (const vm of ['vm-1', 'vm-3']) expect(await store.chunksOn(vm)).toEqual([]);
        expect(await store.chunksOn('vm-2')).toEqual([placed(other, 0)]);
        const expected = {
          ...file,
          chunks: file.chunks.map((chunk) => ({ ...chunk, vm: null, replicas: [] })),
        };
        const got = await store.getFile('x');
        expect(got).toEqual(expected);
        expect(got?.chunks.map((chunk) => chunk.replicas)).toEqual([[], [], []]);
        expect(fixed(got)).toEqual(fixed(file));
        expect((await store.listFiles({ limit: 1 })).files).toEqual([expected]);
        // Nothing else moved.
        const after = await snapshot(store);
        expect(after.cleanups).toEqual(before.cleanups);
        expect(after.vms).toEqual(before.vms);
        expect(after.fileIds).toEqual(before.fileIds);
        expect(await store.getFile('y')).toEqual(other);
        expect(await store.hasFileId('f1')).toBe(true);
      });

      test('re-places chunks onto other VMs, in whatever order they are listed', async () => {
        const file = makeFile('x', 'f1', [
          [0, ['vm-1', 'vm-2']],
          [1, ['vm-2']],
          [5, 'vm-1'],
        ]);
        await store.commitFile(file);
        const replicas = ['vm-3', 'vm-1'];
        const chunks = [
          { index: 5, vm: 'vm-2' }, // no replicas: the record keeps none either
          { index: 1, vm: 'vm-3', replicas },
          { index: 0, vm: null, replicas: [] },
        ];
        expect(await store.updateChunks('x', 'f1', chunks)).toBe(true);
        // What it was given is its own no more.
        replicas.push('vm-9');
        (chunks[0] as { vm: string }).vm = 'vm-9';
        const expected: FileInfo = {
          ...file,
          chunks: [
            { ...(file.chunks[0] as ChunkInfo), vm: null, replicas: [] },
            { ...(file.chunks[1] as ChunkInfo), vm: 'vm-3', replicas: ['vm-3', 'vm-1'] },
            { ...(file.chunks[2] as ChunkInfo), vm: 'vm-2' },
          ],
        };
        const got = await store.getFile('x');
        expect(got).toEqual(expected);
        expect(Object.hasOwn(got?.chunks[2] as ChunkInfo, 'replicas')).toBe(false);
        expect(await store.chunksOn('vm-1')).toEqual([placed(file, 1)]);
        expect(await store.chunksOn('vm-2')).toEqual([placed(file, 5)]);
        expect(await store.chunksOn('vm-3')).toEqual([placed(file, 1)]);
        expect(await store.chunksOn('vm-9')).toEqual([]);

        // Back onto the edge, then gone: nothing of the earlier placements lingers.
        const back = [
          { index: 0, vm: 'vm-2', replicas: ['vm-2', 'vm-3'] },
          { index: 1, vm: 'vm-2', replicas: ['vm-2'] },
          { index: 5, vm: 'vm-1', replicas: ['vm-1'] },
        ];
        expect(await store.updateChunks('x', 'f1', back)).toBe(true);
        expect(await store.chunksOn('vm-1')).toEqual([placed(file, 5)]);
        expect(await store.chunksOn('vm-2')).toEqual([placed(file, 0), placed(file, 1)]);
        expect(await store.chunksOn('vm-3')).toEqual([placed(file, 0)]);
        expect(await store.cleanups()).toEqual([]);
        await store.removeFile('x');
        for (const vm of ['vm-1', 'vm-2', 'vm-3']) expect(await store.chunksOn(vm)).toEqual([]);
      });

      test('a file with no chunks takes an empty list', async () => {
        await store.commitFile(makeFile('empty', 'f-empty', []));
        expect(await store.updateChunks('empty', 'f-empty', [])).toBe(true);
        expect(await store.getFile('empty')).toEqual(makeFile('empty', 'f-empty', []));
      });

      test('returns false and changes nothing when the file is replaced, removed or never was', async () => {
        await store.commitFile(makeFile('x', 'f-old', [[0, ['vm-1']]]));
        await store.commitFile(makeFile('x', 'f-new', [[0, ['vm-2']]])); // f-old replaced
        await store.commitFile(makeFile('gone', 'f-gone', [[0, ['vm-1']]]));
        await store.removeFile('gone');
        await store.commitFile(makeFile('y', 'f-y', [[0, ['vm-3']]]));
        await store.putVm(makeVm('vm-1'));
        const before = await snapshot(store);
        const moveTo = (vm: string) => [{ index: 0, vm, replicas: [vm] }];
        expect(await store.updateChunks('x', 'f-old', moveTo('vm-4'))).toBe(false);
        expect(await store.updateChunks('gone', 'f-gone', moveTo('vm-4'))).toBe(false);
        expect(await store.updateChunks('never', 'f-never', moveTo('vm-4'))).toBe(false);
        // A fileId another name holds is not this name's.
        expect(await store.updateChunks('x', 'f-y', moveTo('vm-4'))).toBe(false);
        expect(await store.updateChunks('y', 'f-new', moveTo('vm-4'))).toBe(false);
        // Even when the list would not fit the file that name now holds.
        expect(await store.updateChunks('x', 'f-old', [])).toBe(false);
        expect(await snapshot(store)).toEqual(before);
        expect(await store.chunksOn('vm-4')).toEqual([]);
      });

      test('refuses a list that is not every chunk once, or replicas that contradict vm', async () => {
        const file = makeFile('x', 'f1', [
          [0, ['vm-1']],
          [1, ['vm-2', 'vm-1']],
        ]);
        await store.commitFile(file);
        const before = await snapshot(store);
        const good = { index: 0, vm: 'vm-3', replicas: ['vm-3'] };
        const cases: [string, Pick<ChunkInfo, 'index' | 'vm' | 'replicas'>[]][] = [
          ['not listed', [good]],
          ['not listed', []],
          ['has no chunk 2', [good, { index: 1, vm: null }, { index: 2, vm: null }]],
          ['listed twice', [good, good, { index: 1, vm: null }]],
          ['first replica', [good, { index: 1, vm: 'vm-1', replicas: ['vm-2', 'vm-1'] }]],
          ['first replica', [good, { index: 1, vm: 'vm-1', replicas: [] }]],
          ['first replica', [good, { index: 1, vm: null, replicas: ['vm-1'] }]],
          ['VM twice', [good, { index: 1, vm: 'vm-1', replicas: ['vm-1', 'vm-2', 'vm-1'] }]],
        ];
        for (const [problem, chunks] of cases) {
          const error = await store.updateChunks('x', 'f1', chunks).catch((err) => err);
          expect({ chunks, error: error instanceof MetadataError }).toEqual({
            chunks,
            error: true,
          });
          expect(error.message).toContain(`${suite.name} metadata store: updateChunks "x": `);
          expect({ chunks, message: error.message }).toEqual({
            chunks,
            message: expect.stringContaining(problem),
          });
        }
        // Contradictions in the list itself are refused even for a file that is gone.
        const error = await store
          .updateChunks('gone', 'f-gone', [{ index: 0, vm: 'vm-1', replicas: ['vm-1', 'vm-1'] }])
          .catch((err) => err);
        expect(error).toBeInstanceOf(MetadataError);
        expect(await snapshot(store)).toEqual(before);
        expect(await store.chunksOn('vm-3')).toEqual([]);
      });

      test('replicas [] round trips through commitFile as []', async () => {
        const file = makeFile('core', 'f-core', [
          [0, []],
          [1, null],
        ]);
        await store.commitFile(file);
        const got = await store.getFile('core');
        expect(got).toEqual(file);
        expect(got?.chunks[0]?.replicas).toEqual([]);
        expect(Array.isArray(got?.chunks[0]?.replicas)).toBe(true);
        // A JSON round trip of what it hands back keeps the array.
        expect(JSON.stringify(got)).toContain('"replicas":[]');
        // And through updateChunks, which rewrites the record.
        expect(
          await store.updateChunks('core', 'f-core', [
            { index: 0, vm: null, replicas: [] },
            { index: 1, vm: null, replicas: [] },
          ]),
        ).toBe(true);
        const updated = await store.getFile('core');
        expect(updated?.chunks.map((chunk) => chunk.replicas)).toEqual([[], []]);
        expect(updated?.chunks.every((chunk) => Array.isArray(chunk.replicas))).toBe(true);
      });
    });

    test('hasFileId sees file records only, not the ledger', async () => {
      await store.beginUpload({ fileId: 'f1', name: 'x' });
      expect(await store.hasFileId('f1')).toBe(false);
      await store.commitFile(makeFile('x', 'f1'));
      expect(await store.hasFileId('f1')).toBe(true);
      expect(await store.hasFileId('f')).toBe(false);
      expect(await store.hasFileId('F1')).toBe(false);
      await store.commitFile(makeFile('x', 'f2'));
      expect(await store.hasFileId('f1')).toBe(false);
      expect(await store.hasFileId('f2')).toBe(true);
      await store.removeFile('x');
      expect(await store.hasFileId('f2')).toBe(false);
    });

    describe('last uses (the LRU order of the edge, kept across restarts)', () => {
      const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();

      test('touchFiles records uses; lastUsed gives them least recent first, ties in name order', async () => {
        for (const [i, name] of CODE_POINT_ORDER.entries())
          await store.commitFile(makeFile(name, `f${i}`));
        expect(await store.lastUsed()).toEqual([]);
        // Given in reverse order, two at each time.
        const reversed = [...CODE_POINT_ORDER].reverse();
        await store.touchFiles(
          reversed.map((name) => ({
            name,
            usedAt: at(Math.floor(CODE_POINT_ORDER.indexOf(name) / 2)),
          })),
        );
        expect(await store.lastUsed()).toEqual(
          CODE_POINT_ORDER.map((name, i) => ({ name, usedAt: at(Math.floor(i / 2)) })),
        );
        // The first is used again: it is the most recent now.
        const first = CODE_POINT_ORDER[0] as string;
        await store.touchFiles([{ name: first, usedAt: at(59) }]);
        expect((await store.lastUsed()).map((use) => use.name)).toEqual([
          ...CODE_POINT_ORDER.slice(1),
          first,
        ]);
      });

      test('a name keeps the time it was given last, earlier or not; twice in a batch: the later in the list', async () => {
        await store.commitFile(makeFile('a', 'f1'));
        await store.commitFile(makeFile('b', 'f2'));
        await store.touchFiles([
          { name: 'a', usedAt: at(30) },
          { name: 'b', usedAt: at(20) },
        ]);
        // A clock that went back (another broker took over): what it says now stands.
        await store.touchFiles([{ name: 'a', usedAt: at(10) }]);
        expect(await store.lastUsed()).toEqual([
          { name: 'a', usedAt: at(10) },
          { name: 'b', usedAt: at(20) },
        ]);
        await store.touchFiles([
          { name: 'b', usedAt: at(40) },
          { name: 'b', usedAt: at(5) },
        ]);
        expect(await store.lastUsed()).toEqual([
          { name: 'b', usedAt: at(5) },
          { name: 'a', usedAt: at(10) },
        ]);
        await store.touchFiles([]);
        expect(await store.lastUsed()).toHaveLength(2);
      });

      test('skips names with no record; removeFile forgets the time; a commit over the name and updateChunks keep it', async () => {
        await store.commitFile(makeFile('kept', 'f1'));
        await store.commitFile(makeFile('doomed', 'f2'));
        await store.touchFiles([
          { name: 'never stored', usedAt: at(1) },
          { name: 'kept', usedAt: at(2) },
          { name: 'doomed', usedAt: at(3) },
          { name: 'KEPT', usedAt: at(4) },
        ]);
        expect((await store.lastUsed()).map((use) => use.name)).toEqual(['kept', 'doomed']);
        await store.removeFile('doomed');
        expect((await store.lastUsed()).map((use) => use.name)).toEqual(['kept']);
        // Stored again under the name, it starts with no time.
        await store.commitFile(makeFile('doomed', 'f3'));
        expect((await store.lastUsed()).map((use) => use.name)).toEqual(['kept']);
        await store.commitFile(makeFile('kept', 'f4'));
        await store.updateChunks('kept', 'f4', [{ index: 0, vm: null, replicas: [] }]);
        expect(await store.lastUsed()).toEqual([{ name: 'kept', usedAt: at(2) }]);
      });

      test('keeps the time to the millisecond, in UTC, whatever the offset given', async () => {
        await store.commitFile(makeFile('a', 'f1'));
        await store.commitFile(makeFile('b', 'f2'));
        await store.touchFiles([
          { name: 'a', usedAt: '2026-01-01T01:00:00.123456+01:00' },
          { name: 'b', usedAt: '2026-01-01T00:00:00.124Z' },
        ]);
        expect(await store.lastUsed()).toEqual([
          { name: 'a', usedAt: '2026-01-01T00:00:00.123Z' },
          { name: 'b', usedAt: '2026-01-01T00:00:00.124Z' },
        ]);
      });

      test('refuses a time that is not a date, changing nothing', async () => {
        await store.commitFile(makeFile('a', 'f1'));
        await store.touchFiles([{ name: 'a', usedAt: at(1) }]);
        for (const bad of ['yesterday', '', 'not a date', 17 as unknown as string]) {
          const error = await store
            .touchFiles([
              { name: 'a', usedAt: at(50) },
              { name: 'a', usedAt: bad },
            ])
            .catch((err) => err);
          expect(error).toBeInstanceOf(MetadataError);
          expect(error.message).toContain('touchFiles');
        }
        expect(await store.lastUsed()).toEqual([{ name: 'a', usedAt: at(1) }]);
      });

      test('is never part of the record: reads and listings are the same before and after', async () => {
        const file = makeFile('a', 'f1', [[0, ['vm-1', 'vm-2']]]);
        await store.commitFile(file);
        const records = await store.listFileRecords({ limit: 10 });
        const text = (page: typeof records) => page.records.map((record) => record.json.toString());
        await store.touchFiles([{ name: 'a', usedAt: at(1) }]);
        expect(await store.getFile('a')).toEqual(file);
        expect(await store.listFiles({ limit: 10 })).toEqual({ files: [file] });
        expect(text(await store.listFileRecords({ limit: 10 }))).toEqual(text(records));
        expect(JSON.parse(text(records)[0] as string)).toEqual(file);
      });
    });

    describe('ledger', () => {
      test('beginUpload enters the fileId with reason upload and the time', async () => {
        const before = Date.now();
        await store.beginUpload({ fileId: 'up-1', name: 'new file' });
        const after = Date.now();
        const cleanups = await store.cleanups();
        expect(cleanups).toEqual([
          { fileId: 'up-1', name: 'new file', reason: 'upload', since: expect.any(String) },
        ]);
        expectTimeBetween(cleanups[0]?.since, before, after);
      });

      test('commitFile settles its own upload', async () => {
        await store.beginUpload({ fileId: 'up-1', name: 'x' });
        await store.beginUpload({ fileId: 'up-2', name: 'y' });
        expect(await store.commitFile(makeFile('x', 'up-1'))).toBeNull();
        expect(reasons(await store.cleanups())).toEqual([{ fileId: 'up-2', reason: 'upload' }]);
      });

      test('commitFile without beginUpload leaves the ledger alone', async () => {
        await store.commitFile(makeFile('x', 'f1'));
        expect(await store.cleanups()).toEqual([]);
      });

      test('commitFile over a name returns the replaced record and ledgers its fileId', async () => {
        const old = makeFile('doc', 'f-old', [[0, 'vm-1']]);
        const next = makeFile('doc', 'f-new', [[0, 'vm-2']]);
        await store.commitFile(old);
        await store.beginUpload({ fileId: 'f-new', name: 'doc' });
        const before = Date.now();
        expect(await store.commitFile(next)).toEqual(old);
        const after = Date.now();
        expect(await store.getFile('doc')).toEqual(next);
        const cleanups = await store.cleanups();
        expect(cleanups).toEqual([
          { fileId: 'f-old', name: 'doc', reason: 'replaced', since: expect.any(String) },
        ]);
        expectTimeBetween(cleanups[0]?.since, before, after);
      });

      test('re-committing the same fileId returns the old record but ledgers nothing', async () => {
        const first = makeFile('doc', 'f1', [[0, 'vm-1']]);
        const second = {
          ...makeFile('doc', 'f1', [[0, 'vm-2']]),
          createdAt: '2020-01-01T00:00:00.000Z',
        };
        await store.commitFile(first);
        expect(await store.commitFile(second)).toEqual(first);
        expect(await store.getFile('doc')).toEqual(second);
        expect(await store.cleanups()).toEqual([]);
        expect(await store.hasFileId('f1')).toBe(true);
      });

      test('removeFile of a missing name returns null and changes nothing', async () => {
        await store.commitFile(makeFile('kept', 'f-kept'));
        await store.beginUpload({ fileId: 'up', name: 'missing' });
        await store.putVm(makeVm('vm-1'));
        const before = await snapshot(store);
        expect(await store.removeFile('missing')).toBeNull();
        expect(await store.removeFile('kep')).toBeNull();
        expect(await snapshot(store)).toEqual(before);
      });

      test('removeFile returns the record and ledgers its fileId as deleted', async () => {
        const file = makeFile('gone', 'f-gone');
        await store.commitFile(file);
        await store.commitFile(makeFile('stays', 'f-stays'));
        const before = Date.now();
        expect(await store.removeFile('gone')).toEqual(file);
        const after = Date.now();
        expect(await store.getFile('gone')).toBeNull();
        expect((await allFiles(store)).map((each) => each.name)).toEqual(['stays']);
        const cleanups = await store.cleanups();
        expect(cleanups).toEqual([
          { fileId: 'f-gone', name: 'gone', reason: 'deleted', since: expect.any(String) },
        ]);
        expectTimeBetween(cleanups[0]?.since, before, after);
        expect(await store.removeFile('gone')).toBeNull();
        expect(await store.cleanups()).toEqual(cleanups);
      });

      test('settle drops an entry; settling an unknown fileId is not an error', async () => {
        await store.beginUpload({ fileId: 'a', name: 'x' });
        await store.beginUpload({ fileId: 'b', name: 'y' });
        await store.settle('a');
        expect(reasons(await store.cleanups())).toEqual([{ fileId: 'b', reason: 'upload' }]);
        await store.settle('never-seen');
        await store.settle('a');
        expect(reasons(await store.cleanups())).toEqual([{ fileId: 'b', reason: 'upload' }]);
        await store.settle('b');
        expect(await store.cleanups()).toEqual([]);
      });

      test('lists entries oldest first, whatever their reason', async () => {
        await store.commitFile(makeFile('x', 'x1'));
        await store.commitFile(makeFile('gone', 'g1'));
        await store.beginUpload({ fileId: 'u1', name: 'zzz' });
        await store.commitFile(makeFile('x', 'x2')); // x1 replaced
        await store.beginUpload({ fileId: 'u0', name: 'aaa' });
        await store.removeFile('gone'); // g1 deleted
        await store.beginUpload({ fileId: 'u2', name: 'mmm' });
        const cleanups = await store.cleanups();
        expect(reasons(cleanups)).toEqual([
          { fileId: 'u1', reason: 'upload' },
          { fileId: 'x1', reason: 'replaced' },
          { fileId: 'u0', reason: 'upload' },
          { fileId: 'g1', reason: 'deleted' },
          { fileId: 'u2', reason: 'upload' },
        ]);
        const times = cleanups.map((entry) => Date.parse(entry.since));
        expect(times).toEqual([...times].sort((p, q) => p - q));
        await store.settle('x1');
        await store.settle('u0');
        expect(reasons(await store.cleanups()).map((entry) => entry.fileId)).toEqual([
          'u1',
          'g1',
          'u2',
        ]);
      });

      test('a fileId entered again holds one entry, the newest', async () => {
        await store.beginUpload({ fileId: 'u1', name: 'a' });
        await store.beginUpload({ fileId: 'u2', name: 'b' });
        await store.beginUpload({ fileId: 'u1', name: 'a2' });
        expect((await store.cleanups()).map(({ fileId, name }) => ({ fileId, name }))).toEqual([
          { fileId: 'u2', name: 'b' },
          { fileId: 'u1', name: 'a2' },
        ]);
      });

      test('a committed fileId that is in the ledger for another reason leaves it', async () => {
        await store.commitFile(makeFile('x', 'f1'));
        await store.commitFile(makeFile('x', 'f2')); // f1 replaced
        await store.commitFile(makeFile('x', 'f1')); // f1 back, f2 replaced
        expect(reasons(await store.cleanups())).toEqual([{ fileId: 'f2', reason: 'replaced' }]);
      });

      test('ledger names keep special characters', async () => {
        for (const [i, name] of SPECIAL_NAMES.entries()) {
          await store.beginUpload({ fileId: `u${i}`, name });
        }
        await store.beginUpload({ fileId: 'astral', name: '😀 𝄞' });
        expect((await store.cleanups()).map((entry) => entry.name)).toEqual([
          ...SPECIAL_NAMES,
          '😀 𝄞',
        ]);
      });
    });

    describe('VM table', () => {
      test('putVm then listVms round trips every field exactly', async () => {
        const record = makeVm('vm-1', {
          address: '[fe80::1%eth0]:6379',
          cpu: { cores: 65536, load: 0.1 + 0.2 },
          memoryFree: Number.MAX_SAFE_INTEGER,
          penalty: 7,
          incarnation: 'ünïcödé-😀',
          lastSeen: 1_234_567_890_123,
        });
        const tiny = makeVm('vm-2', { cpu: { cores: 1, load: 5e-324 }, memoryFree: 0 });
        const third = makeVm('vm-3', { cpu: { cores: 3, load: 1 / 3 }, lastSeen: 0 });
        for (const each of [record, tiny, third]) await store.putVm(each);
        expect(await store.listVms()).toEqual([record, tiny, third]);
      });

      test('putVm replaces the row with the same id', async () => {
        await store.putVm(makeVm('vm-1'));
        await store.putVm(makeVm('vm-2'));
        const changed = makeVm('vm-1', { penalty: 1, incarnation: 'second', lastSeen: 9 });
        await store.putVm(changed);
        expect(await store.listVms()).toEqual([changed, makeVm('vm-2')]);
      });

      test('listVms is ordered by id', async () => {
        const ids = ['vm-b', 'vm-10', 'VM-z', 'vm-2', 'vm-1', 'vm-a'];
        for (const id of ids) await store.putVm(makeVm(id));
        expect((await store.listVms()).map((vm) => vm.id)).toEqual([
          'VM-z',
          'vm-1',
          'vm-10',
          'vm-2',
          'vm-a',
          'vm-b',
        ]);
      });

      test('is independent of the file table', async () => {
        await store.putVm(makeVm('vm-1'));
        await store.commitFile(makeFile('x', 'f1', [[0, 'vm-1']]));
        await store.removeFile('x');
        expect(await store.listVms()).toEqual([makeVm('vm-1')]);
      });
    });

    test('hands out copies: changing what it returns changes nothing stored', async () => {
      const file = makeFile('x', 'f1', [[0, 'vm-1']]);
      await store.commitFile(file);
      await store.putVm(makeVm('vm-1'));
      await store.beginUpload({ fileId: 'u1', name: 'y' });
      const before = await snapshot(store);

      const got = (await store.getFile('x')) as FileInfo;
      got.size = -1;
      (got.chunks[0] as ChunkInfo).vm = 'vm-9';
      got.chunks.push({ ...(got.chunks[0] as ChunkInfo), index: 5 });
      const page = await store.listFiles({ limit: 10 });
      (page.files[0] as FileInfo).chunks.length = 0;
      page.files.length = 0;
      const placed = await store.chunksOn('vm-1');
      (placed[0] as { size: number }).size = -1;
      placed.length = 0;
      const cleanups = await store.cleanups();
      (cleanups[0] as Cleanup).reason = 'deleted';
      const vms = await store.listVms();
      (vms[0] as VmRecord).cpu.cores = 999;
      expect(await snapshot(store)).toEqual(before);

      // And so are the records commitFile and removeFile hand back.
      const replaced = (await store.commitFile(makeFile('x', 'f2'))) as FileInfo;
      replaced.fileId = 'mutated';
      replaced.name = 'mutated';
      const removed = (await store.removeFile('x')) as FileInfo;
      removed.fileId = 'mutated';
      removed.name = 'mutated';
      expect((await store.cleanups()).map(({ fileId, name }) => ({ fileId, name }))).toEqual([
        { fileId: 'u1', name: 'y' },
        { fileId: 'f1', name: 'x' },
        { fileId: 'f2', name: 'x' },
      ]);
    });

    test('keeps its own copies: changing what it was given changes nothing stored', async () => {
      const file = makeFile('x', 'f1', [[0, 'vm-1']]);
      const vm = makeVm('vm-1');
      await store.commitFile(file);
      await store.putVm(vm);
      const entry = { fileId: 'u1', name: 'y' };
      await store.beginUpload(entry);
      file.size = -1;
      (file.chunks[0] as ChunkInfo).vm = 'vm-9';
      vm.cpu.load = 99;
      entry.name = 'changed';
      expect(await store.getFile('x')).toEqual(makeFile('x', 'f1', [[0, 'vm-1']]));
      expect(await store.chunksOn('vm-9')).toEqual([]);
      expect(await store.listVms()).toEqual([makeVm('vm-1')]);
      expect((await store.cleanups())[0]?.name).toBe('y');
    });

    describe('atomicity under concurrency', () => {
      test('racing commits to one name: one wins, every other fileId is ledgered once', async () => {
        const ids = Array.from({ length: 12 }, (_, i) => `race-${i}`);
        for (const id of ids) await store.beginUpload({ fileId: id, name: 'hot' });
        const returned = await Promise.all(
          ids.map((id) => store.commitFile(makeFile('hot', id, [[0, 'vm-1']]))),
        );
        const winner = (await store.getFile('hot'))?.fileId as string;
        expect(ids).toContain(winner);
        const cleanups = await store.cleanups();
        expect(cleanups.every((entry) => entry.reason === 'replaced')).toBe(true);
        const ledgered = cleanups.map((entry) => entry.fileId);
        expect([winner, ...ledgered].sort()).toEqual([...ids].sort());
        // Every commit but the first saw a predecessor, each a different one.
        const predecessors = returned.flatMap((file) => (file ? [file.fileId] : []));
        expect(predecessors).toHaveLength(ids.length - 1);
        expect(new Set(predecessors).size).toBe(ids.length - 1);
        expect((await store.chunksOn('vm-1')).map((chunk) => chunk.fileId)).toEqual([winner]);
        for (const id of ids) expect(await store.hasFileId(id)).toBe(id === winner);
      });

      test('racing removals of one name: exactly one gets the record', async () => {
        await store.commitFile(makeFile('hot', 'f-hot'));
        const removed = await Promise.all(Array.from({ length: 8 }, () => store.removeFile('hot')));
        expect(removed.filter((file) => file !== null)).toEqual([makeFile('hot', 'f-hot')]);
        expect(reasons(await store.cleanups())).toEqual([{ fileId: 'f-hot', reason: 'deleted' }]);
      });

      test('racing updateChunks of one file: all land, one after another', async () => {
        const file = makeFile('hot', 'f-hot', [
          [0, ['vm-0']],
          [1, ['vm-0']],
        ]);
        await store.commitFile(file);
        const vms = Array.from({ length: 10 }, (_, i) => `vm-${i + 1}`);
        const placements = vms.map((vm, i) => [
          { index: 0, vm, replicas: [vm, `vm-${((i + 1) % 10) + 1}`] },
          { index: 1, vm: null, replicas: [] },
        ]);
        const results = await Promise.all(
          placements.map((chunks) => store.updateChunks('hot', 'f-hot', chunks)),
        );
        expect(results).toEqual(vms.map(() => true));
        const got = (await store.getFile('hot')) as FileInfo;
        const winner = placements.findIndex((chunks) => chunks[0]?.vm === got.chunks[0]?.vm);
        expect(winner).toBeGreaterThanOrEqual(0);
        expect(got.chunks.map((chunk) => chunk.replicas)).toEqual([
          placements[winner]?.[0]?.replicas,
          [],
        ]);
        // The placements are the winner's alone: no loser's lingers.
        await expectPlacementsMatchFiles(['vm-0', ...vms]);
      });

      test('updateChunks racing commits and removals of its name never strands a placement', async () => {
        for (let round = 0; round < 5; round++) {
          await store.commitFile(makeFile('hot', `f-${round}`, [[0, ['vm-1', 'vm-2']]]));
          const moved = store.updateChunks('hot', `f-${round}`, [
            { index: 0, vm: 'vm-3', replicas: ['vm-3', 'vm-4'] },
          ]);
          const replaced = store.commitFile(makeFile('hot', `g-${round}`, [[0, ['vm-5']]]));
          const movedAgain = store.updateChunks('hot', `f-${round}`, [
            { index: 0, vm: 'vm-6', replicas: ['vm-6'] },
          ]);
          const removed = store.removeFile('hot');
          const [movedFirst, , , gone] = await Promise.all([moved, replaced, movedAgain, removed]);
          expect(typeof movedFirst).toBe('boolean');
          expect(gone).not.toBeNull();
          expect(await store.getFile('hot')).toBeNull();
          await expectPlacementsMatchFiles(['vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5', 'vm-6']);
        }
      });

      test('commits of many names at once all land', async () => {
        const files = Array.from({ length: 40 }, (_, i) => makeFile(`many/${i}`, `m${i}`));
        await Promise.all(files.map((file) => store.commitFile(file)));
        expect(await allFiles(store, 7)).toEqual([...files].sort((a, b) => byUtf8(a.name, b.name)));
        expect(await store.chunksOn('vm-1')).toHaveLength(40);
      });
    });

    const reopen = suite.reopen;
    if (reopen) {
      describe('after close and reopen', () => {
        test('files, chunks, the ledger and the VM table are all still there', async () => {
          for (const [i, name] of CODE_POINT_ORDER.entries()) {
            await store.commitFile(
              makeFile(name, `keep-${i}`, [
                [i, `vm-${i % 3}`],
                [i + 1, null],
              ]),
            );
          }
          await store.commitFile(makeFile('x', 'x-old'));
          await store.commitFile(makeFile('x', 'x-new')); // x-old replaced
          await store.beginUpload({ fileId: 'in-flight', name: 'later' });
          await store.commitFile(makeFile('doomed', 'f-doomed'));
          await store.removeFile('doomed'); // deleted
          await store.putVm(makeVm('vm-0', { penalty: 2, cpu: { cores: 8, load: 1 / 3 } }));
          await store.putVm(makeVm('vm-1'));
          await store.touchFiles([
            { name: 'x', usedAt: '2026-01-01T00:00:02.000Z' },
            { name: CODE_POINT_ORDER[0] as string, usedAt: '2026-01-01T00:00:01.000Z' },
          ]);
          const before = await snapshot(store);
          expect(before.cleanups).toHaveLength(3);
          expect(before.used).toHaveLength(2);

          store = await reopen(store);
          expect(await snapshot(store)).toEqual(before);

          // It goes on where it stopped: new ledger entries come after the old ones.
          await store.beginUpload({ fileId: 'after-reopen', name: 'n' });
          expect((await store.cleanups()).map((entry) => entry.fileId)).toEqual([
            'x-old',
            'in-flight',
            'f-doomed',
            'after-reopen',
          ]);
          expect(await store.commitFile(makeFile('x', 'x-newest'))).toEqual(makeFile('x', 'x-new'));
          store = await reopen(store);
          expect((await store.getFile('x'))?.fileId).toBe('x-newest');
        });

        test('placements updateChunks made are still there, replicas [] as []', async () => {
          const file = makeFile('x', 'f1', [
            [0, ['vm-1', 'vm-2']],
            [1, 'vm-1'],
            [2, ['vm-3']],
          ]);
          await store.commitFile(file);
          await store.updateChunks('x', 'f1', [
            { index: 0, vm: null, replicas: [] },
            { index: 1, vm: 'vm-3', replicas: ['vm-3', 'vm-2'] },
            { index: 2, vm: 'vm-1' },
          ]);
          const before = await snapshot(store);
          store = await reopen(store);
          expect(await snapshot(store)).toEqual(before);
          expect((await store.getFile('x'))?.chunks.map((chunk) => chunk.replicas)).toEqual([
            [],
            ['vm-3', 'vm-2'],
            undefined,
          ]);
          expect((await store.chunksOn('vm-2')).map((chunk) => chunk.index)).toEqual([1]);
          // And it goes on from there.
          expect(
            await store.updateChunks('x', 'f1', [
              { index: 0, vm: 'vm-2', replicas: ['vm-2'] },
              { index: 1, vm: null, replicas: [] },
              { index: 2, vm: null, replicas: [] },
            ]),
          ).toBe(true);
          expect((await store.chunksOn('vm-2')).map((chunk) => chunk.index)).toEqual([0]);
          for (const vm of ['vm-1', 'vm-3']) expect(await store.chunksOn(vm)).toEqual([]);
        });

        test('an empty store reopens empty', async () => {
          store = await reopen(store);
          expect(await snapshot(store)).toEqual({
            files: [],
            chunks: {},
            fileIds: [],
            cleanups: [],
            vms: [],
            used: [],
          });
        });
      });
    }

    testWhileUnreachable(suite, stores, {
      errorsName: 'the server',
      use: (each) => each.putVm(makeVm('vm-1')),
      expectAllFailFast,
      async expectRecovered(recovered) {
        const file = makeFile('after', 'f-after', [[0, 'vm-1']]);
        await eventually(() => recovered.commitFile(file));
        expect(await recovered.getFile('after')).toEqual(file);
        expect(await recovered.chunksOn('vm-1')).toHaveLength(1);
        await recovered.removeFile('after');
        expect(reasons(await recovered.cleanups())).toEqual([
          { fileId: 'f-after', reason: 'deleted' },
        ]);
      },
    });

    testAgainstModel({
      create: suite.create,
      cleanup: suite.cleanup,
      ...(suite.reopen ? { reopen: suite.reopen } : {}),
    });

    suite.additionalTests?.(() => store);
  });
}

/**
 * Refusals the redis and sqlite stores word alike (the memory store refuses
 * in other words): call from `additionalTests`.
 */
export function testRefusals(store: () => MetadataStore): void {
  test('refuses a fileId that another name holds, changing nothing', async () => {
    await store().commitFile(makeFile('a', 'shared', [[0, 'vm-1']]));
    await store().commitFile(makeFile('b', 'own'));
    const error = await store()
      .commitFile(makeFile('b', 'shared', [[0, 'vm-2']]))
      .catch((err) => err);
    expect(error).toBeInstanceOf(MetadataError);
    expect(error.message).toContain('fileId "shared" already belongs to "a"');
    expect((await store().getFile('b'))?.fileId).toBe('own');
    expect(await store().chunksOn('vm-2')).toEqual([]);
    expect(await store().cleanups()).toEqual([]);
  });

  test('refuses a listFiles limit below 1 or not whole', async () => {
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      const error = await store()
        .listFiles({ limit })
        .catch((err) => err);
      expect(error).toBeInstanceOf(MetadataError);
      expect(error.message).toContain('limit must be a whole number');
    }
  });
}

function expectAllFailFast(store: MetadataStore, mentions: string[]): Promise<void> {
  return expectEachFailsFast(
    [
      ['getFile', () => store.getFile('x')],
      ['listFiles', () => store.listFiles({ limit: 10 })],
      ['chunksOn', () => store.chunksOn('vm-1')],
      ['hasFileId', () => store.hasFileId('f1')],
      ['beginUpload', () => store.beginUpload({ fileId: 'f1', name: 'x' })],
      ['commitFile', () => store.commitFile(makeFile('x', 'f1'))],
      ['removeFile', () => store.removeFile('x')],
      ['updateChunks', () => store.updateChunks('x', 'f1', [])],
      ['settle', () => store.settle('f1')],
      ['cleanups', () => store.cleanups()],
      ['putVm', () => store.putVm(makeVm('vm-1'))],
      ['listVms', () => store.listVms()],
      ['touchFiles', () => store.touchFiles([{ name: 'x', usedAt: '2026-01-01T00:00:00Z' }])],
      ['lastUsed', () => store.lastUsed()],
    ],
    MetadataError,
    (operation) => [`${store.name} metadata store`, operation, ...mentions],
  );
}

function expectTimeBetween(since: string | undefined, before: number, after: number) {
  expect(since).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
  const at = Date.parse(since as string);
  expect(at).toBeGreaterThanOrEqual(before);
  expect(at).toBeLessThanOrEqual(after);
}
