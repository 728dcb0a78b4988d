/**
 * What every chunk store must do, run against each backend by its own test
 * file: `testChunkStore({ name, create })`. Each test gets a fresh store.
 */
import { describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { type ChunkStore, ChunkStoreError } from '../../plugins/chunk-store/types.ts';
import {
  eventually,
  expectEachFailsFast,
  freshStoreEachTest,
  type StoreSource,
  testWhileUnreachable,
} from './conformance-support.ts';

// For the backend test files, which take these from here.
export { eventually, SETTLE_BOUND_MS, settlesWithin } from './conformance-support.ts';

/** `create` is called before every test, `cleanup` after it. */
export interface ChunkStoreSuite extends StoreSource<ChunkStore> {
  /** Names the describe block, e.g. `redis`. */
  name: string;
  /** Backend-specific cases, registered inside the same describe block. */
  additionalTests?: (store: () => ChunkStore) => void;
}

const MiB = 1024 * 1024;

// Characters that mean something in globs, regular expressions or SQL LIKE.
const SPECIAL_KEYS = [
  'a*b',
  'a?b',
  'a[b]',
  'a[!b]',
  'a\\b',
  'a\\*b',
  'a.b',
  'a+b',
  'a(b)',
  'a^b$',
  'a{b}',
  'a|b',
  'a%b',
  'a_b',
  'ab',
  'aXb',
];
const SPECIAL_PREFIXES = ['a*', 'a?', 'a[', 'a[b', 'a[!', 'a\\', 'a\\*', 'a.', 'a+', 'a(', 'a^'];

export function testChunkStore(suite: ChunkStoreSuite): void {
  describe(`chunk store: ${suite.name}`, () => {
    let store: ChunkStore;
    const stores = freshStoreEachTest(suite, (fresh) => {
      store = fresh;
    });

    test('starts empty', async () => {
      expect(await store.list()).toEqual([]);
      expect(await store.usedBytes()).toBe(0);
      expect(await store.get('anything')).toBeNull();
      expect(await store.has('anything')).toBe(false);
    });

    test('names its backend', () => {
      expect(store.name).toBe(suite.name);
    });

    describe('round trips bytes exactly', () => {
      const cases: [string, () => Uint8Array][] = [
        ['0 B', () => new Uint8Array(0)],
        ['1 B', () => Uint8Array.of(0)],
        ['every byte value', () => Uint8Array.from({ length: 256 }, (_, i) => i)],
        ['invalid UTF-8', () => Uint8Array.of(0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0x00, 0x80)],
        ['5 MiB of random bytes', () => randomBytes(5 * MiB)],
      ];
      for (const [label, make] of cases) {
        test(label, async () => {
          const value = make();
          await store.put('k', value);
          const got = await store.get('k');
          expect(got).toBeInstanceOf(Buffer);
          expect(got?.byteLength).toBe(value.byteLength);
          expect(got?.equals(value)).toBe(true);
          expect(await store.has('k')).toBe(true);
          expect(await store.usedBytes()).toBe(value.byteLength);
        });
      }

      test('a view into a larger buffer stores only the view', async () => {
        const whole = randomBytes(1024);
        const view = whole.subarray(100, 300);
        await store.put('view', new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
        expect((await store.get('view'))?.equals(view)).toBe(true);
        expect(await store.usedBytes()).toBe(200);
      });

      test('later changes to the caller’s buffers do not leak in', async () => {
        const value = randomBytes(64);
        const original = Buffer.from(value);
        await store.put('k', value);
        value.fill(0);
        const got = await store.get('k');
        expect(got?.equals(original)).toBe(true);
        got?.fill(1);
        expect((await store.get('k'))?.equals(original)).toBe(true);
      });

      test('keys are any string', async () => {
        const keys = ['', ' ', 'ключ/🙂', 'a:b:c', 'with\nnewline', 'x'.repeat(1000)];
        for (const [i, key] of keys.entries()) await store.put(key, Uint8Array.of(i));
        for (const [i, key] of keys.entries()) {
          expect((await store.get(key))?.equals(Uint8Array.of(i))).toBe(true);
        }
        expect(await store.list()).toEqual([...keys].sort());
      });
    });

    test('a missing key is null, not an error', async () => {
      await store.put('present', Uint8Array.of(1));
      expect(await store.get('absent')).toBeNull();
      expect(await store.has('absent')).toBe(false);
    });

    test('put replaces the value', async () => {
      await store.put('k', randomBytes(100));
      const second = randomBytes(10);
      await store.put('k', second);
      expect((await store.get('k'))?.equals(second)).toBe(true);
      expect(await store.list()).toEqual(['k']);
    });

    test('delete is idempotent', async () => {
      await store.put('k', randomBytes(10));
      await store.put('other', randomBytes(5));
      await store.delete('k');
      await store.delete('k');
      await store.delete('never-there');
      expect(await store.get('k')).toBeNull();
      expect(await store.has('k')).toBe(false);
      expect(await store.list()).toEqual(['other']);
      expect(await store.usedBytes()).toBe(5);
    });

    describe('list', () => {
      test('returns every key, sorted, without a prefix', async () => {
        const keys = ['b/2', 'a/1', 'c', 'a/10', 'B'];
        for (const key of keys) await store.put(key, Uint8Array.of(1));
        const sorted = [...keys].sort();
        expect(await store.list()).toEqual(sorted);
        expect(await store.list('')).toEqual(sorted);
      });

      test('filters by prefix', async () => {
        for (const key of ['file1/0', 'file1/1', 'file10/0', 'file2/0']) {
          await store.put(key, Uint8Array.of(1));
        }
        expect(await store.list('file1/')).toEqual(['file1/0', 'file1/1']);
        expect(await store.list('file1')).toEqual(['file1/0', 'file1/1', 'file10/0']);
        expect(await store.list('file3')).toEqual([]);
      });

      test('treats glob and regex characters in the prefix literally', async () => {
        for (const key of SPECIAL_KEYS) await store.put(key, Uint8Array.of(1));
        for (const prefix of SPECIAL_PREFIXES) {
          const expected = SPECIAL_KEYS.filter((key) => key.startsWith(prefix)).sort();
          expect({ prefix, keys: await store.list(prefix) }).toEqual({ prefix, keys: expected });
        }
      });

      test('handles more keys than one batch', async () => {
        const keys = Array.from({ length: 2500 }, (_, i) => `many/${i}`);
        await Promise.all(keys.map((key) => store.put(key, Uint8Array.of(1))));
        await store.put('other', Uint8Array.of(1));
        expect(await store.list('many/')).toEqual([...keys].sort());
      });
    });

    describe('deletePrefix', () => {
      test('removes exactly the matching keys and says how many', async () => {
        for (const key of ['f/0', 'f/1', 'f/2', 'g/0']) await store.put(key, randomBytes(10));
        expect(await store.deletePrefix('f/')).toBe(3);
        expect(await store.list()).toEqual(['g/0']);
        expect(await store.usedBytes()).toBe(10);
        expect(await store.deletePrefix('f/')).toBe(0);
      });

      test('treats glob and regex characters in the prefix literally', async () => {
        for (const key of SPECIAL_KEYS) await store.put(key, Uint8Array.of(1, 2));
        let remaining = [...SPECIAL_KEYS];
        for (const prefix of SPECIAL_PREFIXES) {
          const doomed = remaining.filter((key) => key.startsWith(prefix));
          expect({ prefix, removed: await store.deletePrefix(prefix) }).toEqual({
            prefix,
            removed: doomed.length,
          });
          remaining = remaining.filter((key) => !key.startsWith(prefix));
          expect(await store.list()).toEqual([...remaining].sort());
          expect(await store.usedBytes()).toBe(remaining.length * 2);
        }
      });

      test('with an empty prefix empties the store', async () => {
        for (const key of ['x', 'y/z', '']) await store.put(key, randomBytes(3));
        expect(await store.deletePrefix('')).toBe(3);
        expect(await store.list()).toEqual([]);
        expect(await store.usedBytes()).toBe(0);
      });
    });

    describe('concurrency', () => {
      test('50 puts at once are all readable and counted exactly', async () => {
        const values = Array.from({ length: 50 }, (_, i) => randomBytes(1 + i * 997));
        await Promise.all(values.map((value, i) => store.put(`c/${i}`, value)));
        const got = await Promise.all(values.map((_, i) => store.get(`c/${i}`)));
        for (const [i, value] of values.entries()) expect(got[i]?.equals(value)).toBe(true);
        expect(await store.list('c/')).toHaveLength(50);
        expect(await store.usedBytes()).toBe(values.reduce((sum, v) => sum + v.byteLength, 0));
      });

      test('racing overwrites of one key count only the value that won', async () => {
        const values = Array.from({ length: 30 }, (_, i) => randomBytes(100 + i * 37));
        await Promise.all(values.map((value) => store.put('hot', value)));
        const winner = await store.get('hot');
        expect(values.some((value) => winner?.equals(value))).toBe(true);
        expect(await store.usedBytes()).toBe(winner?.byteLength ?? -1);
      });

      test('racing deletes of one key subtract its size once', async () => {
        await store.put('gone', randomBytes(1000));
        await store.put('kept', randomBytes(7));
        await Promise.all([
          ...Array.from({ length: 10 }, () => store.delete('gone')),
          store.deletePrefix('go'),
          store.deletePrefix('g'),
        ]);
        expect(await store.usedBytes()).toBe(7);
      });
    });

    test('usedBytes follows puts, overwrites and deletes', async () => {
      await store.put('a', randomBytes(1000));
      expect(await store.usedBytes()).toBe(1000);
      await store.put('b', randomBytes(24));
      expect(await store.usedBytes()).toBe(1024);
      await store.put('a', randomBytes(10)); // shrink
      expect(await store.usedBytes()).toBe(34);
      await store.put('a', randomBytes(5000)); // grow
      expect(await store.usedBytes()).toBe(5024);
      await store.put('b', new Uint8Array(0));
      expect(await store.usedBytes()).toBe(5000);
      await store.delete('a');
      expect(await store.usedBytes()).toBe(0);
      await store.delete('b');
      expect(await store.usedBytes()).toBe(0);
    });

    testWhileUnreachable(suite, stores, {
      errorsName: 'the backend',
      use: (each) => each.put('k', Uint8Array.of(1)),
      expectAllFailFast,
      async expectRecovered(recovered) {
        const value = randomBytes(1000);
        await eventually(() => recovered.put('after', value));
        expect((await recovered.get('after'))?.equals(value)).toBe(true);
        expect(await recovered.has('after')).toBe(true);
      },
    });

    suite.additionalTests?.(() => store);
  });
}

function expectAllFailFast(store: ChunkStore, mentions: string[]): Promise<void> {
  return expectEachFailsFast(
    [
      ['put', () => store.put('k', Uint8Array.of(1))],
      ['get', () => store.get('k')],
      ['has', () => store.has('k')],
      ['delete', () => store.delete('k')],
      ['deletePrefix', () => store.deletePrefix('k')],
      ['list', () => store.list()],
      ['usedBytes', () => store.usedBytes()],
    ],
    ChunkStoreError,
    () => [`${store.name} chunk store`, ...mentions],
  );
}
