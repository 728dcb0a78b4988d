import { sizeProblem, validateCoreKey, validateCorePrefix, validateRange } from './keys.ts';
import { type CoreCloud, CoreCloudError, type CoreWriter } from './types.ts';

const DRIVER_NAME = 'memory';

/** A core cloud in this process's heap: for tests and the demo. */
export function createMemoryCoreCloud(): CoreCloud {
  const objects = new Map<string, Buffer>();

  function store(key: string, value: Buffer) {
    // A path-based store (a directory, OneDrive) cannot hold both `a` and
    // `a/b`; refusing here too keeps every backend accepting the same keys.
    const conflict = folderConflict(objects, key);
    if (conflict) throw new CoreCloudError(DRIVER_NAME, conflict);
    objects.set(key, value);
  }

  return {
    name: DRIVER_NAME,
    async put(key, value) {
      validateCoreKey(DRIVER_NAME, key);
      // Copy, so a caller reusing its buffer cannot change what was stored.
      store(key, Buffer.from(value));
    },
    async createWriter(key, options = {}) {
      validateCoreKey(DRIVER_NAME, key);
      return createMemoryWriter(key, options.size, (value) => store(key, value));
    },
    async get(key) {
      validateCoreKey(DRIVER_NAME, key);
      const value = objects.get(key);
      return value ? Buffer.from(value) : null;
    },
    async getRange(key, offset, length, into) {
      validateCoreKey(DRIVER_NAME, key);
      validateRange(DRIVER_NAME, offset, length);
      const value = objects.get(key);
      if (!value) return null;
      const range = value.subarray(offset, offset + length);
      if (!into || into.byteLength < range.byteLength) return Buffer.from(range);
      into.set(range);
      return into.subarray(0, range.byteLength);
    },
    async delete(key) {
      validateCoreKey(DRIVER_NAME, key);
      objects.delete(key);
    },
    async list(prefix = '') {
      validateCorePrefix(DRIVER_NAME, prefix);
      return [...objects.keys()].filter((key) => key.startsWith(prefix)).sort();
    },
    async usedBytes() {
      let total = 0;
      for (const value of objects.values()) total += value.byteLength;
      return total;
    },
    async close() {},
  };
}

export default createMemoryCoreCloud;

function createMemoryWriter(
  key: string,
  declared: number | undefined,
  commit: (value: Buffer) => void,
): CoreWriter {
  let parts: Buffer[] = [];
  let written = 0;
  let state: 'open' | 'committed' | 'aborted' = 'open';

  function ensureOpen() {
    if (state !== 'open') {
      throw new CoreCloudError(
        DRIVER_NAME,
        `writer for ${JSON.stringify(key)} is already ${state}`,
      );
    }
  }

  return {
    async write(bytes) {
      ensureOpen();
      const tooMuch = sizeProblem(declared, written + bytes.byteLength, false);
      if (tooMuch) throw new CoreCloudError(DRIVER_NAME, `${JSON.stringify(key)}: ${tooMuch}`);
      written += bytes.byteLength;
      parts.push(Buffer.from(bytes));
    },
    async commit() {
      ensureOpen();
      const value = Buffer.concat(parts);
      parts = [];
      // A failed commit discards the writer, as it does in every backend.
      state = 'aborted';
      const wrongSize = sizeProblem(declared, value.byteLength, true);
      if (wrongSize) throw new CoreCloudError(DRIVER_NAME, `${JSON.stringify(key)}: ${wrongSize}`);
      commit(value);
      state = 'committed';
      return value.byteLength;
    },
    async abort() {
      if (state === 'open') state = 'aborted';
      parts = [];
    },
  };
}

function folderConflict(objects: Map<string, Buffer>, key: string): string | undefined {
  const segments = key.split('/');
  for (let i = 1; i < segments.length; i++) {
    const ancestor = segments.slice(0, i).join('/');
    if (objects.has(ancestor)) {
      return `cannot store ${JSON.stringify(key)}: ${JSON.stringify(ancestor)} is an object, not a folder`;
    }
  }
  const folder = `${key}/`;
  for (const existing of objects.keys()) {
    if (existing.startsWith(folder)) {
      return `cannot store ${JSON.stringify(key)}: it is a folder holding ${JSON.stringify(existing)}`;
    }
  }
  return undefined;
}
