/**
 * What every lease backend must do (plugins/lease/types.ts): one holder at
 * a time, renewals and releases only by the holder, and a lease that runs
 * out on its own when nobody renews it.
 */
import { describe, expect, test } from 'bun:test';
import { LeaseError, type LeaseStore } from '../../plugins/lease/types.ts';

export interface LeaseSuite {
  name: string;
  /** Two stores competing for the same, free lease (as two broker processes would). */
  pair: () => Promise<[LeaseStore, LeaseStore]>;
}

/** Long enough never to run out during a test on a loaded machine. */
const LONG_MS = 60_000;

export function testLeaseStore(suite: LeaseSuite) {
  describe(`lease: ${suite.name}`, () => {
    async function withPair(use: (a: LeaseStore, b: LeaseStore) => Promise<void>) {
      const [a, b] = await suite.pair();
      try {
        await use(a, b);
      } finally {
        await a.close();
        await b.close();
      }
    }

    test('names its backend', () =>
      withPair(async (a) => {
        expect(a.name).toBe(suite.name);
      }));

    test('a free lease is taken by the first to ask, and only by it', () =>
      withPair(async (a, b) => {
        expect(await a.holder()).toBeNull();
        expect(await a.acquire('a-1', LONG_MS)).toBe(true);
        expect(await b.acquire('b-1', LONG_MS)).toBe(false);
        // Asking again while holding it does not take it twice.
        expect(await a.acquire('a-1', LONG_MS)).toBe(false);
        const holder = await b.holder();
        expect(holder?.token).toBe('a-1');
        expect(holder?.ttlMs).toBeGreaterThan(0);
        expect(holder?.ttlMs).toBeLessThanOrEqual(LONG_MS);
      }));

    test('only the holder renews it', () =>
      withPair(async (a, b) => {
        await a.acquire('a-1', 5000);
        expect(await b.renew('b-1', LONG_MS)).toBe(false);
        expect(await a.renew('a-1', LONG_MS)).toBe(true);
        expect((await b.holder())?.ttlMs).toBeGreaterThan(5000);
      }));

    test('only the holder releases it; then another may take it', () =>
      withPair(async (a, b) => {
        await a.acquire('a-1', LONG_MS);
        await b.release('b-1');
        expect((await a.holder())?.token).toBe('a-1');
        await a.release('a-1');
        expect(await a.holder()).toBeNull();
        expect(await b.acquire('b-1', LONG_MS)).toBe(true);
        expect(await a.renew('a-1', LONG_MS)).toBe(false);
      }));

    test('a lease nobody renews runs out, and is free to take', () =>
      withPair(async (a, b) => {
        expect(await a.acquire('a-1', 50)).toBe(true);
        const deadline = Date.now() + 5000;
        while ((await b.holder()) !== null && Date.now() < deadline) await Bun.sleep(20);
        expect(await b.holder()).toBeNull();
        expect(await a.renew('a-1', LONG_MS)).toBe(false);
        expect(await b.acquire('b-1', LONG_MS)).toBe(true);
      }));

    test('bad tokens and times to live are refused, saying why', () =>
      withPair(async (a) => {
        for (const token of ['', 'has space', 'x'.repeat(201), 'tab\there']) {
          const error = await a.acquire(token, 1000).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(LeaseError);
          expect((error as Error).message).toContain('token');
        }
        for (const ttl of [0, -5, 1.5, Number.NaN]) {
          const error = await a.acquire('a-1', ttl).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(LeaseError);
          expect((error as Error).message).toContain('time to live');
        }
        expect(await a.holder()).toBeNull();
      }));
  });
}
