import { describe, expect, test } from 'bun:test';
import { createMemoryGovernor, softLimitFromEnv } from '../../actors/memory.ts';

describe('memory governor', () => {
  test('the soft limit comes from CLOUDLET_MEMORY_SOFT_LIMIT, 128 MiB by default, 0 to turn it off', () => {
    expect(softLimitFromEnv({})).toBe(128 * 1024 * 1024);
    expect(softLimitFromEnv({ CLOUDLET_MEMORY_SOFT_LIMIT: '64MiB' })).toBe(64 * 1024 * 1024);
    expect(softLimitFromEnv({ CLOUDLET_MEMORY_SOFT_LIMIT: '0' })).toBe(0);
    expect(() => softLimitFromEnv({ CLOUDLET_MEMORY_SOFT_LIMIT: 'lots' })).toThrow(/not a size/);
  });

  test('collects once enough bytes moved while RSS is over the limit, never when off', () => {
    const eager = createMemoryGovernor(1);
    eager.moved(4 * 1024 * 1024);
    expect(eager.collections).toBe(0);
    eager.moved(4 * 1024 * 1024);
    expect(eager.collections).toBe(1);
    const off = createMemoryGovernor(0);
    for (let i = 0; i < 10; i++) off.moved(64 * 1024 * 1024);
    expect(off.collections).toBe(0);
    const roomy = createMemoryGovernor(Number.MAX_SAFE_INTEGER);
    roomy.moved(64 * 1024 * 1024);
    expect(roomy.collections).toBe(0);
  });

  test('a process that keeps more than the limit is collected again only once it grows by half the limit', () => {
    const MiB = 1024 * 1024;
    // Live data of 200 MiB (100,000 file records, say), over a 128 MiB limit.
    let rss = 300 * MiB;
    const governor = createMemoryGovernor(128 * MiB, {
      rss: () => rss,
      collect: () => {
        rss = 200 * MiB;
      },
    });
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(1);
    // Moving more with little garbage left: no collection after every 8 MiB.
    rss = 250 * MiB;
    governor.moved(8 * MiB);
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(1);
    // Garbage past 200 + 64 MiB: collected again.
    rss = 270 * MiB;
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(2);
  });
});
