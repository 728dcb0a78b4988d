import { describe, expect, test } from 'bun:test';
import { createMemoryGovernor, softLimitFromEnv } from '../../actors/link/memory.ts';

describe('memory governor', () => {
  test('the soft limit comes from CLOUDLET_MEMORY_SOFT_LIMIT, 128 MiB by default, 0 to turn it off', () => {
    expect(softLimitFromEnv({})).toBe(128 * 1024 * 1024);
    expect(softLimitFromEnv({ CLOUDLET_MEMORY_SOFT_LIMIT: '64MiB' })).toBe(64 * 1024 * 1024);
    expect(softLimitFromEnv({ CLOUDLET_MEMORY_SOFT_LIMIT: '0' })).toBe(0);
    expect(() => softLimitFromEnv({ CLOUDLET_MEMORY_SOFT_LIMIT: 'lots' })).toThrow(/not a size/);
  });

  test('collects once enough bytes moved while RSS is over the limit, never when off', () => {
    // Checked every 4 MiB moved.
    const eager = createMemoryGovernor(1);
    eager.moved(2 * 1024 * 1024);
    expect(eager.collections).toBe(0);
    eager.moved(2 * 1024 * 1024);
    expect(eager.collections).toBe(1);
    const off = createMemoryGovernor(0);
    for (let i = 0; i < 10; i++) off.moved(64 * 1024 * 1024);
    expect(off.collections).toBe(0);
    const roomy = createMemoryGovernor(Number.MAX_SAFE_INTEGER);
    roomy.moved(64 * 1024 * 1024);
    expect(roomy.collections).toBe(0);
  });

  test('a process that keeps less than the limit is collected again once it holds a quarter of the limit in garbage', () => {
    const MiB = 1024 * 1024;
    // Live data of 100 MiB, under the 128 MiB limit but only just.
    let rss = 150 * MiB;
    const governor = createMemoryGovernor(128 * MiB, {
      rss: () => rss,
      collect: () => {
        rss = 100 * MiB;
      },
      now: () => 0, // collections that take no time
    });
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(1);
    // Moving more with little garbage: no collection after every 8 MiB.
    rss = 130 * MiB;
    governor.moved(8 * MiB);
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(1);
    // Garbage past 100 + 32 MiB: collected again.
    rss = 133 * MiB;
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(2);
  });

  test('a process that keeps more than the limit is collected again only once it grows by half the limit', () => {
    const MiB = 1024 * 1024;
    // A broker holding 150 MiB of records, over the 128 MiB limit.
    let rss = 200 * MiB;
    const governor = createMemoryGovernor(128 * MiB, {
      rss: () => rss,
      collect: () => {
        rss = 150 * MiB;
      },
      now: () => 0,
    });
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(1);
    rss = 220 * MiB;
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(1);
    // Past 150 × 1.5 = 225 MiB (more than 150 + 64): collected again.
    rss = 226 * MiB;
    governor.moved(8 * MiB);
    expect(governor.collections).toBe(2);
  });

  test('a process that keeps what it receives is collected a logarithmic number of times', () => {
    const MiB = 1024 * 1024;
    // A member reading 50 MiB of listing: its heap grows 4 bytes per byte,
    // and a collection finds little garbage.
    let live = 150 * MiB;
    let rss = live;
    const governor = createMemoryGovernor(128 * MiB, {
      rss: () => rss,
      collect: () => {
        rss = live;
      },
      now: () => 0,
    });
    for (let moved = 0; moved < 400 * MiB; moved += MiB) {
      live += 4 * MiB;
      rss = live + 2 * MiB;
      governor.moved(MiB);
    }
    // From 150 MiB to 1.75 GiB: 6 collections, where a fixed step of half
    // the limit past what was left made 25.
    expect(governor.collections).toBe(6);
  });

  // After a collection that took d ms, none for 9 d (a tenth of the time)
  // in a process that keeps more than the limit, 4 d (a fifth) in one that
  // keeps less.
  for (const { kind, leftMiB, tookMs, quietMs } of [
    { kind: 'more than the limit: a tenth', leftMiB: 300, tookMs: 100, quietMs: 900 },
    { kind: 'less than the limit: a fifth', leftMiB: 100, tookMs: 30, quietMs: 120 },
  ]) {
    test(`collections of a process that keeps ${kind} of the time at most`, () => {
      const MiB = 1024 * 1024;
      let clock = 0;
      let rss = 500 * MiB;
      const governor = createMemoryGovernor(128 * MiB, {
        rss: () => rss,
        collect: () => {
          clock += tookMs;
          rss = leftMiB * MiB;
        },
        now: () => clock,
      });
      governor.moved(8 * MiB);
      expect(governor.collections).toBe(1);
      // Over the trigger again at once: quiet until quietMs after the collection.
      rss = 500 * MiB;
      clock += quietMs - 1;
      governor.moved(8 * MiB);
      expect(governor.collections).toBe(1);
      clock += 1;
      governor.moved(8 * MiB);
      expect(governor.collections).toBe(2);
    });
  }
});
