/**
 * bench:cache sizes its edge under memory pressure from the hot set of its
 * Zipf workload: the weights and the hot set, by hand.
 */
import { describe, expect, test } from 'bun:test';
import { hotSet, zipfWeights } from '../../bench/cache.ts';

describe('zipfWeights', () => {
  test('sums to 1 and falls as 1 / (k + 1)^s', () => {
    const weights = zipfWeights(4, 1);
    expect(weights.reduce((sum, w) => sum + w, 0)).toBeCloseTo(1, 12);
    // 1, 1/2, 1/3, 1/4 over their sum, 25/12.
    expect(weights[0]).toBeCloseTo(12 / 25, 12);
    expect(weights[3]).toBeCloseTo(3 / 25, 12);
  });

  test('s = 0 is uniform', () => {
    expect(zipfWeights(5, 0)).toEqual([0.2, 0.2, 0.2, 0.2, 0.2]);
  });
});

describe('hotSet', () => {
  // Weights at s = 1 over 4 files: 0.48, 0.24, 0.16, 0.12.
  const sizes = [100, 20, 3000, 4];

  test('the fewest most popular files that draw the share, and their bytes', () => {
    expect(hotSet(sizes, 1, 0.47)).toEqual({ files: 1, bytes: 100 });
    expect(hotSet(sizes, 1, 0.5)).toEqual({ files: 2, bytes: 120 });
    expect(hotSet(sizes, 1, 0.8)).toEqual({ files: 3, bytes: 3120 });
  });

  test('a share of nothing is no file; of everything, every file', () => {
    expect(hotSet(sizes, 1, 0)).toEqual({ files: 0, bytes: 0 });
    expect(hotSet(sizes, 1, 1)).toEqual({ files: 4, bytes: 3124 });
  });
});
