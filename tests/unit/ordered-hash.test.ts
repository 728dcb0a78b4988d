import { describe, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { memorySink } from '../../actors/member/files.ts';
import { createOrderedHash } from '../../actors/member/ordered-hash.ts';

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Cuts `[0, size)` into pieces at the given points. */
function pieces(size: number, cuts: number[]) {
  const points = [...new Set(cuts.map((cut) => cut % (size + 1)))].sort((a, b) => a - b);
  const bounds = [0, ...points.filter((p) => p > 0 && p < size), size];
  return bounds.slice(0, -1).map((start, i) => [start, bounds[i + 1] as number] as const);
}

describe('ordered hash of a file written out of order', () => {
  test('any arrival order gives the sha256 of the whole', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 5000 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        async (data, cuts, order) => {
          const bytes = Buffer.from(data);
          const sink = memorySink();
          const hash = createOrderedHash(sink);
          const todo = [...pieces(bytes.byteLength, cuts)];
          // Shuffle by the generated order.
          for (let i = todo.length - 1; i > 0; i--) {
            const j = (order[i] ?? 0) % (i + 1);
            [todo[i], todo[j]] = [
              todo[j] as (typeof todo)[number],
              todo[i] as (typeof todo)[number],
            ];
          }
          await Promise.all(
            todo.map(async ([start, end]) => {
              const piece = bytes.subarray(start, end);
              await sink.write(start, piece);
              await hash.written(start, piece);
            }),
          );
          expect(await hash.digest(bytes.byteLength)).toEqual({
            size: bytes.byteLength,
            sha256: sha(bytes),
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  test('a range written with bad bytes and rewritten is hashed as rewritten', async () => {
    const bytes = Buffer.from('0123456789abcdefghij');
    const sink = memorySink();
    const hash = createOrderedHash(sink);
    const bad = Buffer.from('XXXXXXXXXX');
    await sink.write(0, bad);
    await hash.written(0, bad);
    await sink.write(10, bytes.subarray(10));
    await hash.written(10, bytes.subarray(10));
    await hash.discard(0, 10);
    await sink.write(0, bytes.subarray(0, 10));
    await hash.written(0, bytes.subarray(0, 10));
    expect(await hash.digest(20)).toEqual({ size: 20, sha256: sha(bytes) });
  });

  test('a gap is reported as a short size, not a wrong hash in disguise', async () => {
    const sink = memorySink();
    const hash = createOrderedHash(sink);
    await sink.write(5, Buffer.from('abc'));
    await hash.written(5, Buffer.from('abc'));
    expect((await hash.digest(8)).size).toBe(0);
  });
});
