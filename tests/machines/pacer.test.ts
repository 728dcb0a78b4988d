/**
 * The pace of the edge's background copies (machines/pacer.ts) on a clock
 * the test moves: the rate holds over many segments, no burst beats it (idle
 * time is not banked), and a segment is never held back longer than the
 * rate needs. No time passes.
 */
import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { createPacer } from '../../machines/pacer.ts';

const MiB = 1024 * 1024;
const RATE = 32 * MiB;
/** ms one segment of `bytes` costs at RATE. */
const cost = (bytes: number, rate = RATE) => (bytes / rate) * 1000;

/** A clock in ms that only the test moves. */
function manualClock(start = 0) {
  let now = start;
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

/**
 * One copy sending `sizes` one after another, each as soon as it may (it
 * sleeps what the pacer says): the times each segment went.
 */
function sendBackToBack(
  pacer: ReturnType<typeof createPacer>,
  clock: ReturnType<typeof manualClock>,
  sizes: number[],
) {
  return sizes.map((bytes) => {
    clock.advance(pacer.book(bytes));
    return clock.now();
  });
}

describe('pacer', () => {
  test('the first segment goes at once; the next waits until the first is paid for', () => {
    const clock = manualClock(5000);
    const pacer = createPacer(RATE, clock.now);
    expect(pacer.book(MiB)).toBe(0);
    expect(pacer.book(MiB)).toBe(cost(MiB));
    clock.advance(cost(MiB));
    expect(pacer.book(MiB)).toBe(cost(MiB));
  });

  test('over 1,000 segments back to back, exactly the rate: neither faster nor slower', () => {
    const clock = manualClock();
    const pacer = createPacer(RATE, clock.now);
    const sent = sendBackToBack(pacer, clock, Array(1000).fill(MiB));
    // Each goes when the one before it is paid for: 999 segment times after the first.
    expect(sent[0]).toBe(0);
    expect(sent.at(-1) as number).toBeCloseTo(999 * cost(MiB), 6);
    // 1,000 MiB at 32 MiB/s: 31.25 s from the first byte to the last one paid for.
    expect(((sent.at(-1) as number) + cost(MiB)) / 1000).toBeCloseTo(1000 / 32, 9);
  });

  test('copies asking at the same moment share the rate: they queue one behind another', () => {
    const clock = manualClock();
    const pacer = createPacer(RATE, clock.now);
    // A repair, a re-warm and a restore each ask for a segment at once.
    expect([pacer.book(MiB), pacer.book(MiB / 2), pacer.book(MiB)]).toEqual([
      0,
      cost(MiB),
      cost(MiB) + cost(MiB / 2),
    ]);
  });

  test('idle time is not banked: after a minute idle, a burst goes at the rate, one segment at once', () => {
    const clock = manualClock();
    const pacer = createPacer(RATE, clock.now);
    sendBackToBack(pacer, clock, Array(10).fill(MiB));
    clock.advance(60_000);
    const idleEnded = clock.now();
    const burst = sendBackToBack(pacer, clock, Array(10).fill(MiB));
    // Only the debt of the last segment before the pause was owed, and it is paid.
    expect(burst[0]).toBe(idleEnded);
    for (let i = 1; i < burst.length; i++)
      expect((burst[i] as number) - (burst[i - 1] as number)).toBeCloseTo(cost(MiB), 9);
  });

  test('a segment that comes after its slot has passed is not held back', () => {
    const clock = manualClock();
    const pacer = createPacer(RATE, clock.now);
    expect(pacer.book(MiB)).toBe(0);
    clock.advance(cost(MiB) + 1);
    expect(pacer.book(MiB)).toBe(0);
    // Part of the way through the next one's slot: only the rest of it is waited.
    clock.advance(cost(MiB) / 4);
    expect(pacer.book(MiB)).toBeCloseTo((cost(MiB) * 3) / 4, 9);
  });

  test('any sizes, rates and arrivals: no run of segments beats the rate, and none waits longer than it needs', () => {
    const segmentArb = fc.record({
      // ms since the previous request (0: asked at once, as concurrent copies do).
      gap: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 5000, noNaN: true })),
      bytes: fc.integer({ min: 0, max: 8 * MiB }),
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1024 * MiB }),
        fc.array(segmentArb, { minLength: 1, maxLength: 60 }),
        (rate, segments) => {
          const clock = manualClock(1_000_000);
          const pacer = createPacer(rate, clock.now);
          const sent = segments.map(({ gap, bytes }) => {
            clock.advance(gap);
            const asked = clock.now();
            return { asked, at: asked + pacer.book(bytes), bytes };
          });
          const slack = (ms: number) => 1e-9 * Math.max(1, Math.abs(ms));
          for (let i = 0; i < sent.length; i++) {
            const first = sent[i] as (typeof sent)[number];
            // Segments i..j-1 are all paid for by the time segment j goes.
            let bytes = 0;
            for (let j = i + 1; j < sent.length; j++) {
              bytes += (sent[j - 1] as (typeof sent)[number]).bytes;
              const later = sent[j] as (typeof sent)[number];
              expect(later.at - first.at).toBeGreaterThanOrEqual(
                cost(bytes, rate) - slack(later.at),
              );
            }
            // It goes when asked, or exactly when the one before it is paid for.
            const before = sent[i - 1];
            const free = before ? before.at + cost(before.bytes, rate) : first.asked;
            expect(Math.abs(first.at - Math.max(first.asked, free))).toBeLessThanOrEqual(
              slack(first.at),
            );
          }
        },
      ),
    );
  });

  test('refuses a rate that is not more than 0', () => {
    for (const rate of [0, -1, Number.NaN])
      expect(() => createPacer(rate, () => 0)).toThrow(RangeError);
  });
});
