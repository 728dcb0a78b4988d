import { describe, expect, test } from 'bun:test';
import { lineChart, niceTicks } from '../../bench/svg.ts';

describe('the benchmark charts', () => {
  test('ticks are round and cover the maximum', () => {
    expect(niceTicks(47.3)).toEqual([0, 10, 20, 30, 40, 50]);
    expect(niceTicks(4)).toEqual([0, 1, 2, 3, 4]);
    expect(niceTicks(0.37)).toEqual([0, 0.1, 0.2, 0.3, 0.4]);
    expect(niceTicks(0)).toEqual([0, 1]);
  });

  test('a chart has a title, one line per series with its points, and escapes text', () => {
    const svg = lineChart(
      [
        {
          name: 'vm-1',
          color: '#f00',
          points: [
            [1, 2],
            [2, 4],
          ],
        },
        { name: 'a<b', color: '#00f', points: [[1, 1]] },
      ],
      { title: 'T & t', xLabel: 'x', yLabel: 'y' },
    );
    expect(svg).toStartWith('<svg ');
    expect(svg).toContain('<title>T &amp; t</title>');
    expect(svg.match(/<polyline /g)).toHaveLength(2);
    expect(svg).toContain('a&lt;b');
    expect(svg).not.toContain('NaN');
  });
});
