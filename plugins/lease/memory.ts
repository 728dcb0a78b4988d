/**
 * A lease in this process's memory: brokers in one process (tests, the demo)
 * share it by sharing the `state` object. Time is `now()` (Date.now by
 * default), so a test can drive it.
 */
import { checkToken, checkTtl, type LeaseHolder, type LeaseStore } from './types.ts';

export interface MemoryLeaseOptions {
  /** Shared by every store that competes for the same lease. */
  state?: MemoryLeaseState;
  /** The clock, in ms. */
  now?: () => number;
}

/** The lease itself: who holds it, until when. */
export interface MemoryLeaseState {
  held: { token: string; until: number } | null;
}

export const DRIVER_NAME = 'memory';

export function createMemoryLease(options: MemoryLeaseOptions = {}): LeaseStore {
  const state = options.state ?? { held: null };
  const now = options.now ?? Date.now;
  const current = () => {
    if (state.held && state.held.until <= now()) state.held = null;
    return state.held;
  };
  return {
    name: DRIVER_NAME,
    async acquire(token, ttlMs) {
      checkToken(DRIVER_NAME, token);
      checkTtl(DRIVER_NAME, ttlMs);
      if (current()) return false;
      state.held = { token, until: now() + ttlMs };
      return true;
    },
    async renew(token, ttlMs) {
      checkToken(DRIVER_NAME, token);
      checkTtl(DRIVER_NAME, ttlMs);
      const held = current();
      if (held?.token !== token) return false;
      held.until = now() + ttlMs;
      return true;
    },
    async release(token) {
      if (current()?.token === token) state.held = null;
    },
    async holder(): Promise<LeaseHolder | null> {
      const held = current();
      return held ? { token: held.token, ttlMs: held.until - now() } : null;
    },
    async close() {},
  };
}

export default createMemoryLease;
