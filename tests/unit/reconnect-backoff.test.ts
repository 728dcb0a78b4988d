/**
 * A member that lost the MQTT server retries after 0.5 s, then twice as long
 * each time up to 8 s, each wait spread by ±20% (actors/link/mqtt-link.ts): the
 * delay computation alone, with the randomness given, so no time passes.
 */
import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { nextReconnectDelay } from '../../actors/link/mqtt-link.ts';

/** The waits after the first (0.5 s), each from the one before. */
function waitsFrom(randoms: number[]) {
  const waits = [500];
  for (const random of randoms)
    waits.push(nextReconnectDelay(waits.at(-1) as number, () => random));
  return waits;
}

const randomArb = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

describe('reconnect backoff', () => {
  test('without the spread: 0.5, 1, 2, 4, then 8 s for good', () => {
    expect(waitsFrom(Array(7).fill(0.5))).toEqual([500, 1000, 2000, 4000, 8000, 8000, 8000, 8000]);
  });

  test('the spread is ±20% of the doubled wait, and of the cap', () => {
    expect(nextReconnectDelay(500, () => 0)).toBe(800);
    expect(nextReconnectDelay(500, () => 0.999_999_9)).toBe(1200);
    expect(nextReconnectDelay(8000, () => 0)).toBe(6400);
    expect(nextReconnectDelay(8000, () => 0.999_999_9)).toBe(9600);
    // Past the cap, the previous wait no longer matters.
    expect(nextReconnectDelay(60_000, () => 0.5)).toBe(8000);
  });

  test('any wait: the next is within ±20% of twice it, capped at 8 s', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100_000 }), randomArb, (previous, random) => {
        const next = nextReconnectDelay(previous, () => random);
        const doubled = Math.min(8000, previous * 2);
        expect(next).toBeGreaterThanOrEqual(Math.round(doubled * 0.8));
        expect(next).toBeLessThanOrEqual(Math.round(doubled * 1.2));
      }),
    );
  });

  test('any spread: never over 9.6 s, and from the seventh wait on between 6.4 and 9.6 s', () => {
    fc.assert(
      fc.property(fc.array(randomArb, { minLength: 12, maxLength: 12 }), (randoms) => {
        // Even shrunk by a fifth every time, the sixth wait is over 4 s: the seventh is the cap.
        const waits = waitsFrom(randoms);
        expect(Math.max(...waits)).toBeLessThanOrEqual(9600);
        for (const wait of waits.slice(6)) {
          expect(wait).toBeGreaterThanOrEqual(6400);
          expect(wait).toBeLessThanOrEqual(9600);
        }
      }),
    );
  });
});
