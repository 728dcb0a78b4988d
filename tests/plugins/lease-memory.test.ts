import { createMemoryLease, type MemoryLeaseState } from '../../plugins/lease/memory.ts';
import { testLeaseStore } from './lease-conformance.ts';

testLeaseStore({
  name: 'memory',
  pair: async () => {
    const state: MemoryLeaseState = { held: null };
    return [createMemoryLease({ state }), createMemoryLease({ state })];
  },
});
