/**
 * `bun run bench:cpu`, as docs/performance.md gives it (a small
 * size, one run): a put and a get through a cloudlet of real processes, and
 * the CPU each process spent per MiB.
 */
import { describe, expect, test } from 'bun:test';
import { join } from 'node:path';
import { runCommand } from '../../bench/harness/run.ts';
import { serviceSkipReason } from '../support/services.ts';

const ROOT = join(import.meta.dir, '../..');

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)('bench:cpu', () => {
  test('bun run bench:cpu --size 4 --runs 1 prints CPU ms per MiB of every process', async () => {
    const { stdout, stderr, code } = await runCommand(
      ['bun', 'run', 'bench:cpu', '--size', '4', '--runs', '1'],
      { cwd: ROOT },
    );
    expect(code, stderr).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^CPU ms per MiB, 4 MiB, \d+ cores, Bun /);
    const header = (lines[1] ?? '').trim().split(/\s+/);
    expect(header).toEqual([
      'job',
      'MB/s',
      'client',
      'mosquitto',
      'redis-1',
      'redis-2',
      'redis-3',
      'broker',
      'vm-1',
      'vm-2',
      'vm-3',
      'total',
    ]);
    for (const [index, job] of ['put', 'get'].entries()) {
      const cells = (lines[2 + index] ?? '').trim().split(/\s+/);
      expect(cells.slice(0, 2)).toEqual([job, '1']);
      const numbers = cells.slice(2).map(Number);
      expect(numbers).toHaveLength(header.length - 1);
      for (const value of numbers) expect(Number.isFinite(value) && value >= 0).toBe(true);
      // Something moved the bytes: the client and the total spent CPU on them.
      expect(numbers[1] as number).toBeGreaterThan(0);
      expect(numbers.at(-1) as number).toBeGreaterThan(0);
    }
  }, 90_000);
});
