import type { ChunkStore } from './types.ts';

const DRIVER_NAME = 'memory';

/** A chunk store in this process's heap: for tests, the demo and single-process runs. */
export function createMemoryChunkStore(): ChunkStore {
  const values = new Map<string, Buffer>();

  return {
    name: DRIVER_NAME,
    async put(key, value) {
      // Copy, so a caller reusing its buffer cannot change what was stored.
      values.set(key, Buffer.from(value));
    },
    async get(key) {
      const value = values.get(key);
      // Copy, so a caller writing into the result cannot change what is stored.
      return value ? Buffer.from(value) : null;
    },
    async has(key) {
      return values.has(key);
    },
    async delete(key) {
      values.delete(key);
    },
    async deletePrefix(prefix) {
      const doomed = keysWithPrefix(values, prefix);
      for (const key of doomed) values.delete(key);
      return doomed.length;
    },
    async list(prefix = '') {
      return keysWithPrefix(values, prefix).sort();
    },
    async usedBytes() {
      let total = 0;
      for (const value of values.values()) total += value.byteLength;
      return total;
    },
    async close() {
      values.clear();
    },
  };
}

export default createMemoryChunkStore;

function keysWithPrefix(values: Map<string, Buffer>, prefix: string): string[] {
  return [...values.keys()].filter((key) => key.startsWith(prefix));
}
