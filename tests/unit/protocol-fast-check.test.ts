/**
 * `isPlainFileInfo`, the quick check of a file record in a list page, must
 * never accept what the zod schema refuses (sound), and should accept the
 * records brokers really send (so the quick path is the one taken).
 */
import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { decodeFrame, encodeFrame } from '../../protocol/frame.ts';
import { type FileInfo, fileInfo, isPlainFileInfo } from '../../protocol/messages.ts';
import { fileInfoArb, memberIdArb } from '../support/arbitraries.ts';

/** Records as brokers write them: replicas present, times from Date#toISOString. */
const withReplicasArb: fc.Arbitrary<FileInfo> = fileInfoArb.chain((file) =>
  fc
    .array(fc.uniqueArray(memberIdArb, { minLength: 0, maxLength: 3 }), {
      minLength: file.chunks.length,
      maxLength: file.chunks.length,
    })
    .map((holders) => ({
      ...file,
      chunks: file.chunks.map((chunk, i) => ({
        ...chunk,
        vm: holders[i]?.[0] ?? null,
        replicas: holders[i] ?? [],
      })),
    })),
);

/** A value a hostile or broken peer might send in place of a record. */
const junkArb = fc.oneof(
  fc.anything(),
  fc.constantFrom(null, [], {}, '', 0, Number.NaN, Number.POSITIVE_INFINITY, -1, 1.5, true),
  fc.string(),
  fc.integer({ min: -(2 ** 60), max: 2 ** 60 }),
  fc.double(),
);

/** One field of a valid record replaced, dropped, or one added. */
const mutatedArb = fc
  .tuple(withReplicasArb, fc.nat(), junkArb, fc.constantFrom('replace', 'drop', 'add', 'chunk'))
  .map(([file, pick, junk, how]) => {
    const copy = structuredClone(file) as Record<string, unknown>;
    const keys = Object.keys(copy);
    const key = keys[pick % keys.length] as string;
    if (how === 'replace') copy[key] = junk;
    else if (how === 'drop') delete copy[key];
    else if (how === 'add') copy[`extra${pick % 3}`] = junk;
    else {
      const chunks = copy.chunks as Record<string, unknown>[];
      const chunk = chunks[pick % Math.max(1, chunks.length)];
      if (chunk) {
        const chunkKeys = [...Object.keys(chunk), 'surprise'];
        const chunkKey = chunkKeys[pick % chunkKeys.length] as string;
        if (pick % 2 === 0) chunk[chunkKey] = junk;
        else delete chunk[chunkKey];
      } else chunks.push(junk as Record<string, unknown>);
    }
    return copy;
  });

describe('isPlainFileInfo', () => {
  test('never accepts what the fileInfo schema refuses', () => {
    fc.assert(
      fc.property(fc.oneof(mutatedArb, junkArb, withReplicasArb, fileInfoArb), (value) => {
        if (isPlainFileInfo(value)) expect(fileInfo.safeParse(value).success).toBe(true);
      }),
      { numRuns: 20_000 },
    );
  });

  test('hand-picked near misses go to zod', () => {
    const good: FileInfo = {
      name: 'a.bin',
      fileId: 'f1',
      size: 10,
      sha256: 'a'.repeat(64),
      createdAt: '2026-02-28T12:00:00.000Z',
      chunks: [
        { index: 0, offset: 0, size: 10, vm: 'vm-1', replicas: ['vm-1'], sha256: 'b'.repeat(64) },
      ],
    };
    expect(isPlainFileInfo(good)).toBe(true);
    const variants: unknown[] = [
      { ...good, createdAt: '2026-02-30T12:00:00.000Z' },
      { ...good, createdAt: '2026-13-01T12:00:00.000Z' },
      { ...good, createdAt: '2026-02-28T24:00:00.000Z' },
      { ...good, createdAt: '2026-02-28T12:00:00Z' },
      { ...good, name: 'a/b' },
      { ...good, name: '' },
      { ...good, size: -0.5 },
      { ...good, size: 2 ** 53 },
      { ...good, sha256: 'A'.repeat(64) },
      { ...good, chunks: [{ ...good.chunks[0], index: 4096 }] },
      { ...good, chunks: [{ ...good.chunks[0], replicas: undefined }] },
      { ...good, chunks: [{ ...good.chunks[0], vm: 'no spaces' }] },
      { ...good, chunks: [{ ...good.chunks[0], replicas: Array(17).fill('vm-1') }] },
      JSON.parse(`{"__proto__": 1, ${JSON.stringify(good).slice(1)}`),
    ];
    for (const variant of variants) {
      if (isPlainFileInfo(variant)) expect(fileInfo.safeParse(variant).success).toBe(true);
    }
    // The impossible dates and the bad names are caught, by one or the other.
    for (const variant of variants.slice(0, 3).concat(variants.slice(4, 6)))
      expect(fileInfo.safeParse(variant).success).toBe(false);
  });

  test('takes the quick path for the records brokers send', () => {
    fc.assert(
      fc.property(withReplicasArb, (file) => {
        // Days 29–31 are left to zod (whether they exist depends on the month).
        const day = Number(file.createdAt.slice(8, 10));
        if (day <= 28) expect(isPlainFileInfo(file)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  test('a list page with a bad record is refused with the record and field named', () => {
    const bad = {
      name: 'x.bin',
      fileId: 'f',
      size: 1,
      sha256: 'no',
      createdAt: 'then',
      chunks: [],
    };
    const frame = Buffer.from(
      JSON.stringify({ type: 'list.response', id: 'r1', from: 'broker', files: [bad] }),
    );
    // Through the real codec: encode refuses, and a hand-made frame is refused on decode.
    expect(() =>
      encodeFrame({ type: 'list.response', id: 'r1', from: 'broker', files: [bad as FileInfo] }),
    ).toThrow(/files\.0\.sha256/);
    const prefix = Buffer.alloc(11);
    prefix.write('CL', 0);
    prefix.writeUInt8(1, 2);
    prefix.writeUInt32BE(frame.byteLength, 3);
    const decoded = decodeFrame(Buffer.concat([prefix, frame]));
    expect(decoded.ok).toBe(false);
    if (!decoded.ok) expect(decoded.error.message).toMatch(/files\.0\.(sha256|createdAt)/);
  });
});
