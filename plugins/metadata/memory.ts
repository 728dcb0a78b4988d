import type { FileInfo } from '../../protocol/messages.ts';
import type { MetadataStore } from './types.ts';

export const DRIVER_NAME = 'memory';

/** Metadata in a Map: gone when the broker stops. */
export function createMemoryMetadata(): MetadataStore {
  const files = new Map<string, FileInfo>();
  return {
    name: DRIVER_NAME,
    getFile: async (name) => structuredClone(files.get(name) ?? null),
    putFile: async (file) => {
      files.set(file.name, structuredClone(file));
    },
    deleteFile: async (name) => {
      files.delete(name);
    },
    listFiles: async ({ limit, after }) => {
      const names = [...files.keys()].filter((name) => after === undefined || name > after).sort();
      const page = names.slice(0, limit);
      const last = page.at(-1);
      return {
        files: page.map((name) => structuredClone(files.get(name) as FileInfo)),
        ...(names.length > limit && last !== undefined ? { next: last } : {}),
      };
    },
    close: async () => {},
  };
}

export default createMemoryMetadata;
