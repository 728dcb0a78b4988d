import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { SegmentLedger } from '../../machines/segment-ledger.ts';

describe('SegmentLedger (the broker’s count of an upload’s segments)', () => {
  test('any chunks cut into segments in order: every one taken, complete at the last, pending until stored', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 16 }),
        (sizes, segmentSize) => {
          const ledger = new SegmentLedger(sizes);
          let taken = 0;
          sizes.forEach((size, index) => {
            for (let offset = 0; offset < size || (size === 0 && offset === 0); ) {
              const length = Math.min(segmentSize, size - offset);
              expect(ledger.complete).toBe(false);
              expect(ledger.receive(index, offset, length)).toEqual({ ok: true });
              taken++;
              if (size === 0) break;
              offset += length;
            }
          });
          expect(ledger.complete).toBe(true);
          expect(ledger.next).toEqual(sizes);
          expect(ledger.pending).toBe(taken);
          for (let i = 0; i < taken; i++) ledger.stored();
          expect(ledger.pending).toBe(0);
          ledger.stored();
          expect(ledger.pending).toBe(0);
        },
      ),
    );
  });

  test('chunks may come interleaved: order counts within a chunk only', () => {
    const ledger = new SegmentLedger([8, 8]);
    expect(ledger.receive(1, 0, 4).ok).toBe(true);
    expect(ledger.receive(0, 0, 4).ok).toBe(true);
    expect(ledger.receive(1, 4, 4).ok).toBe(true);
    expect(ledger.receive(0, 4, 4).ok).toBe(true);
    expect(ledger.complete).toBe(true);
  });

  test.each([
    ['a gap', 0, 4, 2, 'expected offset 0'],
    ['a repeat', 0, 0, 2, 'expected offset 2'],
    ['past the chunk', 0, 0, 9, 'does not fit'],
    ['an empty segment of a chunk with bytes', 0, 0, 0, 'does not fit'],
    ['a chunk the upload does not have', 5, 0, 1, 'no chunk 5'],
  ] as const)(
    'refuses %s, saying why, and counts nothing for it',
    (_name, index, offset, length, why) => {
      const ledger = new SegmentLedger([8, 0]);
      if (why.includes('offset 2')) ledger.receive(0, 0, 2);
      const before = { next: [...ledger.next], pending: ledger.pending };
      const verdict = ledger.receive(index, offset, length);
      expect(verdict.ok).toBe(false);
      expect(verdict.ok ? '' : verdict.reason).toContain(why);
      expect({ next: [...ledger.next], pending: ledger.pending }).toEqual(before);
    },
  );

  test('an empty chunk is its one empty segment, and only one', () => {
    const ledger = new SegmentLedger([0]);
    expect(ledger.complete).toBe(false);
    expect(ledger.receive(0, 0, 0).ok).toBe(true);
    expect(ledger.complete).toBe(true);
    expect(ledger.receive(0, 0, 0).ok).toBe(false);
  });
});
