/**
 * What every core cloud must do, run against each backend by its own test
 * file: `testCoreCloud({ name, create })`. Each test gets a fresh store.
 */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { type CoreCloud, CoreCloudError } from '../../plugins/core-cloud/types.ts';

export interface CoreCloudSuite {
  /** Names the describe block, e.g. `fs`. */
  name: string;
  /** A new, empty core cloud; called before every test. */
  create: () => Promise<CoreCloud>;
  /** Runs after every test, once the core cloud is closed (e.g. to remove its directory). */
  cleanup?: (cloud: CoreCloud) => Promise<void>;
  /** Backend-specific cases, registered inside the same describe block. */
  additionalTests?: (cloud: () => CoreCloud) => void;
}

const MiB = 1024 * 1024;

/** Keys every backend refuses, with what the error must say. */
export const INVALID_KEYS: [key: string, problem: RegExp][] = [
  ['', /empty/],
  ['/etc/passwd', /relative/],
  ['/', /relative/],
  ['a//b', /empty segment/],
  ['a/', /empty segment/],
  ['.', /"\." segments/],
  ['./a', /"\." segments/],
  ['..', /"\.\." segments/],
  ['../escape', /"\.\." segments/],
  ['a/../../escape', /"\.\." segments/],
  ['a/..', /"\.\." segments/],
  ['a\\b', /backslash/],
  ['..\\escape', /backslash/],
  ['a\u0000b', /U\+0000/],
  ['a\nb', /U\+000A/],
  ['a\rb', /U\+000D/],
  ['a\u001fb', /U\+001F/],
  ['a\u007fb', /U\+007F/],
  ['.tmp', /reserved/],
  ['.tmp/x', /reserved/],
];

/** Odd but valid keys every backend accepts. */
export const ODD_VALID_KEYS = [
  '.hidden',
  '..double',
  'dots.',
  '...',
  'a b/c d',
  'ключ/🙂',
  'x*?[]{}()^$|+%_',
  'a:b',
  '.tmpx',
  'a/.tmp',
  'deep/er/and/deeper/still',
];

export function testCoreCloud(suite: CoreCloudSuite): void {
  describe(`core cloud: ${suite.name}`, () => {
    let cloud: CoreCloud;
    beforeEach(async () => {
      cloud = await suite.create();
    });
    afterEach(async () => {
      await cloud.close();
      await suite.cleanup?.(cloud);
    });

    test('starts empty', async () => {
      expect(await cloud.list()).toEqual([]);
      expect(await cloud.usedBytes()).toBe(0);
      expect(await cloud.get('anything')).toBeNull();
    });

    test('names its backend', () => {
      expect(cloud.name).toBe(suite.name);
    });

    describe('round trips bytes exactly', () => {
      const cases: [string, () => Uint8Array][] = [
        ['0 B', () => new Uint8Array(0)],
        ['1 B', () => Uint8Array.of(0)],
        ['every byte value', () => Uint8Array.from({ length: 256 }, (_, i) => i)],
        ['5 MiB of random bytes', () => randomBytes(5 * MiB)],
      ];
      for (const [label, make] of cases) {
        test(`${label} through put`, async () => {
          const value = make();
          await cloud.put('files/f/0', value);
          const got = await cloud.get('files/f/0');
          expect(got).toBeInstanceOf(Buffer);
          expect(got?.byteLength).toBe(value.byteLength);
          expect(got?.equals(value)).toBe(true);
          expect(await cloud.usedBytes()).toBe(value.byteLength);
        });
      }

      test('a view into a larger buffer stores only the view', async () => {
        const whole = randomBytes(1024);
        const view = whole.subarray(100, 300);
        await cloud.put('view', new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
        expect((await cloud.get('view'))?.equals(view)).toBe(true);
      });

      test('later changes to the caller’s buffers do not leak in', async () => {
        const value = randomBytes(64);
        const original = Buffer.from(value);
        await cloud.put('k', value);
        value.fill(0);
        const got = await cloud.get('k');
        expect(got?.equals(original)).toBe(true);
        got?.fill(1);
        expect((await cloud.get('k'))?.equals(original)).toBe(true);
      });
    });

    test('a missing key is null, not an error', async () => {
      await cloud.put('present', Uint8Array.of(1));
      expect(await cloud.get('absent')).toBeNull();
      expect(await cloud.get('present/below')).toBeNull();
      expect(await cloud.getRange('absent', 0, 10)).toBeNull();
    });

    test('put replaces the object', async () => {
      await cloud.put('k', randomBytes(100));
      const second = randomBytes(10);
      await cloud.put('k', second);
      expect((await cloud.get('k'))?.equals(second)).toBe(true);
      expect(await cloud.list()).toEqual(['k']);
      expect(await cloud.usedBytes()).toBe(10);
    });

    test('delete is idempotent', async () => {
      await cloud.put('d/k', randomBytes(10));
      await cloud.put('other', randomBytes(5));
      await cloud.delete('d/k');
      await cloud.delete('d/k');
      await cloud.delete('never/there');
      await cloud.delete('d'); // a folder, once, is no object either
      expect(await cloud.get('d/k')).toBeNull();
      expect(await cloud.list()).toEqual(['other']);
      expect(await cloud.usedBytes()).toBe(5);
    });

    describe('list', () => {
      const keys = ['a/b/c', 'a/b/d', 'a/bc', 'a/b.x', 'a*/x', 'a[1]/y', 'a.b', 'b', 'ab/z'];
      beforeEach(async () => {
        for (const key of keys) await cloud.put(key, Uint8Array.of(1));
      });

      test('returns every key, sorted, without a prefix', async () => {
        expect(await cloud.list()).toEqual([...keys].sort());
        expect(await cloud.list('')).toEqual([...keys].sort());
      });

      test('filters by prefix, which may end within a segment', async () => {
        const cases: [string, string[]][] = [
          ['a/b/', ['a/b/c', 'a/b/d']],
          ['a/b', ['a/b.x', 'a/b/c', 'a/b/d', 'a/bc']],
          ['a/', ['a/b.x', 'a/b/c', 'a/b/d', 'a/bc']],
          ['a', keys.filter((key) => key.startsWith('a')).sort()],
          ['a/b/c', ['a/b/c']],
          ['b', ['b']],
          ['b/', []],
          ['zzz', []],
          ['missing/folder/', []],
        ];
        for (const [prefix, expected] of cases) {
          expect({ prefix, keys: await cloud.list(prefix) }).toEqual({ prefix, keys: expected });
        }
      });

      test('treats glob and regex characters in the prefix literally', async () => {
        for (const [prefix, expected] of [
          ['a*', ['a*/x']],
          ['a[', ['a[1]/y']],
          ['a[1]/', ['a[1]/y']],
          ['a.', ['a.b']],
          ['a?', []],
        ] as const) {
          expect({ prefix, keys: await cloud.list(prefix) }).toEqual({
            prefix,
            keys: [...expected],
          });
        }
      });
    });

    test('50 puts at once are all readable and counted exactly', async () => {
      const values = Array.from({ length: 50 }, (_, i) => randomBytes(1 + i * 997));
      await Promise.all(values.map((value, i) => cloud.put(`c/${i % 5}/${i}`, value)));
      const got = await Promise.all(values.map((_, i) => cloud.get(`c/${i % 5}/${i}`)));
      for (const [i, value] of values.entries()) expect(got[i]?.equals(value)).toBe(true);
      expect(await cloud.list('c/')).toHaveLength(50);
      expect(await cloud.usedBytes()).toBe(values.reduce((sum, v) => sum + v.byteLength, 0));
    });

    test('racing puts of one key leave one whole value', async () => {
      const values = Array.from({ length: 20 }, (_, i) => randomBytes(100 + i * 37));
      await Promise.all(values.map((value) => cloud.put('hot', value)));
      const winner = await cloud.get('hot');
      expect(values.some((value) => winner?.equals(value))).toBe(true);
      expect(await cloud.usedBytes()).toBe(winner?.byteLength ?? -1);
    });

    test('usedBytes follows puts, overwrites and deletes', async () => {
      await cloud.put('a', randomBytes(1000));
      expect(await cloud.usedBytes()).toBe(1000);
      await cloud.put('b/c', randomBytes(24));
      expect(await cloud.usedBytes()).toBe(1024);
      await cloud.put('a', randomBytes(10));
      expect(await cloud.usedBytes()).toBe(34);
      await cloud.put('a', randomBytes(5000));
      expect(await cloud.usedBytes()).toBe(5024);
      await cloud.delete('a');
      expect(await cloud.usedBytes()).toBe(24);
      await cloud.delete('b/c');
      expect(await cloud.usedBytes()).toBe(0);
    });

    describe('writer', () => {
      test('round trips an object written in several parts', async () => {
        const parts = [randomBytes(1000), new Uint8Array(0), randomBytes(1), randomBytes(3 * MiB)];
        const writer = await cloud.createWriter('w/obj', { size: Buffer.concat(parts).byteLength });
        for (const part of parts) await writer.write(part);
        expect(await writer.commit()).toBe(parts.reduce((sum, p) => sum + p.byteLength, 0));
        expect((await cloud.get('w/obj'))?.equals(Buffer.concat(parts))).toBe(true);
        expect(await cloud.usedBytes()).toBe(Buffer.concat(parts).byteLength);
      });

      test('an empty commit stores an empty object', async () => {
        const writer = await cloud.createWriter('empty', { size: 0 });
        expect(await writer.commit()).toBe(0);
        expect((await cloud.get('empty'))?.byteLength).toBe(0);
        expect(await cloud.list()).toEqual(['empty']);
      });

      test('nothing is visible before commit', async () => {
        const writer = await cloud.createWriter('w/pending', { size: 500 });
        await writer.write(randomBytes(500));
        expect(await cloud.get('w/pending')).toBeNull();
        expect(await cloud.getRange('w/pending', 0, 1)).toBeNull();
        expect(await cloud.list()).toEqual([]);
        expect(await cloud.usedBytes()).toBe(0);
        await writer.commit();
        expect(await cloud.list()).toEqual(['w/pending']);
      });

      test('replaces an older object only on commit', async () => {
        const older = randomBytes(100);
        const newer = randomBytes(200);
        await cloud.put('k', older);
        const writer = await cloud.createWriter('k', { size: 200 });
        await writer.write(newer);
        expect((await cloud.get('k'))?.equals(older)).toBe(true);
        await writer.commit();
        expect((await cloud.get('k'))?.equals(newer)).toBe(true);
        expect(await cloud.usedBytes()).toBe(200);
      });

      test('abort leaves nothing behind, and an older object untouched', async () => {
        const older = randomBytes(10);
        await cloud.put('kept', older);
        const fresh = await cloud.createWriter('w/aborted', { size: 1000 });
        await fresh.write(randomBytes(1000));
        await fresh.abort();
        const replacing = await cloud.createWriter('kept', { size: 1000 });
        await replacing.write(randomBytes(1000));
        await replacing.abort();
        await replacing.abort(); // safe more than once
        expect(await cloud.get('w/aborted')).toBeNull();
        expect((await cloud.get('kept'))?.equals(older)).toBe(true);
        expect(await cloud.list()).toEqual(['kept']);
        expect(await cloud.usedBytes()).toBe(10);
      });

      test('is finished after commit or abort', async () => {
        const committed = await cloud.createWriter('done', { size: 1 });
        await committed.write(Uint8Array.of(1));
        await committed.commit();
        await committed.abort(); // does nothing after commit
        expect((await cloud.get('done'))?.equals(Uint8Array.of(1))).toBe(true);
        await expect(committed.write(Uint8Array.of(2))).rejects.toThrow(/already committed/);
        await expect(committed.commit()).rejects.toThrow(CoreCloudError);

        const aborted = await cloud.createWriter('gone', { size: 1 });
        await aborted.abort();
        await expect(aborted.write(Uint8Array.of(2))).rejects.toThrow(/already aborted/);
        await expect(aborted.commit()).rejects.toThrow(CoreCloudError);
        expect(await cloud.list()).toEqual(['done']);
      });

      test('keeps parts in order even when writes are not awaited one by one', async () => {
        const parts = Array.from({ length: 20 }, () => randomBytes(10_000));
        const writer = await cloud.createWriter('unawaited', { size: 200_000 });
        await Promise.all(parts.map((part) => writer.write(part)));
        await writer.commit();
        expect((await cloud.get('unawaited'))?.equals(Buffer.concat(parts))).toBe(true);
      });

      test('a declared size is kept: no byte past it, no commit short of it, nothing left', async () => {
        const over = await cloud.createWriter('sized/over', { size: 10 });
        await over.write(randomBytes(8));
        await expect(over.write(randomBytes(3))).rejects.toThrow(/more than the declared 10/);
        await over.abort();
        const short = await cloud.createWriter('sized/short', { size: 10 });
        await short.write(randomBytes(8));
        await expect(short.commit()).rejects.toThrow(/8 bytes written, not the declared 10/);
        expect(await cloud.list('sized/')).toEqual([]);
        expect(await cloud.usedBytes()).toBe(0);
      });

      test('writers for different keys run side by side', async () => {
        const heads = Array.from({ length: 10 }, () => randomBytes(1000));
        const tails = Array.from({ length: 10 }, () => randomBytes(1000));
        const writers = await Promise.all(
          heads.map((_, i) => cloud.createWriter(`side/${i}`, { size: 2000 })),
        );
        // Interleaved: every writer gets its first part before any gets its second.
        await Promise.all(writers.map((writer, i) => writer.write(heads[i] as Buffer)));
        await Promise.all(writers.map((writer, i) => writer.write(tails[i] as Buffer)));
        await Promise.all(writers.map((writer) => writer.commit()));
        for (const [i, head] of heads.entries()) {
          const expected = Buffer.concat([head, tails[i] as Buffer]);
          expect((await cloud.get(`side/${i}`))?.equals(expected)).toBe(true);
        }
      });
    });

    describe('getRange', () => {
      const value = randomBytes(1000);
      beforeEach(async () => {
        await cloud.put('r', value);
      });

      test('reads from the middle', async () => {
        expect((await cloud.getRange('r', 100, 200))?.equals(value.subarray(100, 300))).toBe(true);
      });

      test('reads the whole object', async () => {
        expect((await cloud.getRange('r', 0, 1000))?.equals(value)).toBe(true);
      });

      test('returns fewer bytes past the end', async () => {
        expect((await cloud.getRange('r', 900, 500))?.equals(value.subarray(900))).toBe(true);
      });

      test('given a buffer to read into, returns the same bytes (in it, or in one of its own)', async () => {
        const into = Buffer.alloc(4096, 0xaa);
        const middle = await cloud.getRange('r', 100, 200, into);
        expect(middle?.equals(value.subarray(100, 300))).toBe(true);
        if (middle?.buffer === into.buffer) expect(into.subarray(0, 200).equals(middle)).toBe(true);
        // Past the end, and into a buffer too small: still the right bytes.
        expect((await cloud.getRange('r', 900, 500, into))?.equals(value.subarray(900))).toBe(true);
        const small = Buffer.alloc(10);
        expect((await cloud.getRange('r', 0, 1000, small))?.equals(value)).toBe(true);
        expect(await cloud.getRange('missing', 0, 10, into)).toBeNull();
      });

      test('returns no bytes from the end on or beyond it', async () => {
        expect((await cloud.getRange('r', 1000, 10))?.byteLength).toBe(0);
        expect((await cloud.getRange('r', 5000, 10))?.byteLength).toBe(0);
        expect((await cloud.getRange('r', 10, 0))?.byteLength).toBe(0);
      });

      test('is null for a missing object', async () => {
        expect(await cloud.getRange('missing', 0, 10)).toBeNull();
      });

      test('refuses negative or fractional positions', async () => {
        for (const [offset, length] of [
          [-1, 10],
          [0, -1],
          [0.5, 10],
          [0, Number.NaN],
          [0, Number.POSITIVE_INFINITY],
        ] as const) {
          const error = await cloud.getRange('r', offset, length).catch((err: unknown) => err);
          expect(error).toBeInstanceOf(CoreCloudError);
          expect((error as Error).message).toMatch(/must be a non-negative integer/);
        }
      });
    });

    describe('keys', () => {
      test('invalid keys are refused by every operation, saying why', async () => {
        for (const [key, problem] of INVALID_KEYS) {
          const operations: [string, () => Promise<unknown>][] = [
            ['put', () => cloud.put(key, Uint8Array.of(1))],
            ['createWriter', () => cloud.createWriter(key)],
            ['get', () => cloud.get(key)],
            ['getRange', () => cloud.getRange(key, 0, 1)],
            ['delete', () => cloud.delete(key)],
          ];
          for (const [operation, run] of operations) {
            const error = await run().then(
              () => undefined,
              (err: unknown) => err,
            );
            const seen = { key, operation, type: error?.constructor };
            expect(seen).toEqual({ key, operation, type: CoreCloudError });
            const { message } = error as CoreCloudError;
            expect(message).toStartWith(
              `${cloud.name} core cloud: invalid key ${JSON.stringify(key)}: `,
            );
            expect({ key, message }).toEqual({ key, message: expect.stringMatching(problem) });
          }
        }
        expect(await cloud.list()).toEqual([]);
        expect(await cloud.usedBytes()).toBe(0);
      });

      test('odd but valid keys work', async () => {
        for (const [i, key] of ODD_VALID_KEYS.entries()) await cloud.put(key, Uint8Array.of(i));
        for (const [i, key] of ODD_VALID_KEYS.entries()) {
          expect({ key, got: await cloud.get(key) }).toEqual({ key, got: Buffer.of(i) });
        }
        expect(await cloud.list()).toEqual([...ODD_VALID_KEYS].sort());
        for (const key of ODD_VALID_KEYS) await cloud.delete(key);
        expect(await cloud.list()).toEqual([]);
      });

      test('prefixes follow the same rules, except the last segment may be partial', async () => {
        await cloud.put('a/.x', Uint8Array.of(1));
        await cloud.put('..y', Uint8Array.of(1));
        for (const [prefix, expected] of [
          ['.', ['..y']],
          ['..', ['..y']],
          ['a/.', ['a/.x']],
          ['a/..', []],
          ['.tm', []],
        ] as const) {
          expect({ prefix, keys: await cloud.list(prefix) }).toEqual({
            prefix,
            keys: [...expected],
          });
        }
        for (const prefix of ['/a', 'a//', '../', './', 'a\\', 'a\u0000', '.tmp/', 'a/../b']) {
          const error = await cloud.list(prefix).catch((err: unknown) => err);
          expect({ prefix, type: error?.constructor }).toEqual({ prefix, type: CoreCloudError });
          expect((error as Error).message).toContain(`invalid prefix ${JSON.stringify(prefix)}`);
        }
      });

      test('a key cannot be both an object and a folder of objects', async () => {
        await cloud.put('obj', Uint8Array.of(1));
        await expect(cloud.put('obj/below', Uint8Array.of(2))).rejects.toThrow(CoreCloudError);
        await cloud.put('folder/inside', Uint8Array.of(3));
        await expect(cloud.put('folder', Uint8Array.of(4))).rejects.toThrow(/folder/);
        const writer = await cloud.createWriter('folder', { size: 1 });
        await writer.write(Uint8Array.of(5));
        await expect(writer.commit()).rejects.toThrow(/folder/);
        expect(await cloud.list()).toEqual(['folder/inside', 'obj']);
        expect(await cloud.usedBytes()).toBe(2);
        // Once its objects are gone, a folder name is free again.
        await cloud.delete('folder/inside');
        await cloud.put('folder', Uint8Array.of(6));
        await cloud.delete('obj');
        await cloud.put('obj/below', Uint8Array.of(7));
        expect(await cloud.list()).toEqual(['folder', 'obj/below']);
      });
    });

    suite.additionalTests?.(() => cloud);
  });
}
