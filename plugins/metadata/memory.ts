import type { FileInfo } from '../../protocol/messages.ts';
import {
  type Cleanup,
  type CleanupReason,
  MetadataError,
  type MetadataStore,
  type PlacedChunk,
  type VmRecord,
} from './types.ts';

export const DRIVER_NAME = 'memory';

/** Metadata in Maps: gone when the broker stops. */
export function createMemoryMetadata(): MetadataStore {
  const files = new Map<string, FileInfo>();
  const ledger = new Map<string, Cleanup>();
  const vms = new Map<string, VmRecord>();
  const enter = (fileId: string, name: string, reason: CleanupReason) => {
    ledger.delete(fileId);
    ledger.set(fileId, { fileId, name, reason, since: new Date().toISOString() });
  };
  return {
    name: DRIVER_NAME,
    getFile: async (name) => structuredClone(files.get(name) ?? null),
    listFiles: async ({ limit, after }) => {
      if (!Number.isSafeInteger(limit) || limit < 1)
        throw new MetadataError(DRIVER_NAME, `a page limit is a whole number ≥ 1, not ${limit}`);
      const names = [...files.keys()]
        .filter((name) => after === undefined || byCodePoint(name, after) > 0)
        .sort(byCodePoint);
      const page = names.slice(0, limit);
      const last = page.at(-1);
      return {
        files: page.map((name) => structuredClone(files.get(name) as FileInfo)),
        ...(names.length > limit && last !== undefined ? { next: last } : {}),
      };
    },
    chunksOn: async (vm) => {
      const placed: PlacedChunk[] = [];
      for (const file of files.values()) {
        for (const chunk of file.chunks) {
          if (chunk.vm !== vm) continue;
          const { fileId, name } = file;
          placed.push({ name, fileId, index: chunk.index, size: chunk.size, sha256: chunk.sha256 });
        }
      }
      return placed.sort((a, b) => byCodePoint(a.fileId, b.fileId) || a.index - b.index);
    },
    hasFileId: async (fileId) => [...files.values()].some((file) => file.fileId === fileId),
    beginUpload: async ({ fileId, name }) => enter(fileId, name, 'upload'),
    commitFile: async (file) => {
      const holder = [...files.values()].find(
        (other) => other.fileId === file.fileId && other.name !== file.name,
      );
      if (holder)
        throw new MetadataError(
          DRIVER_NAME,
          `fileId ${file.fileId} already belongs to "${holder.name}", not "${file.name}"`,
        );
      const replaced = files.get(file.name) ?? null;
      files.set(file.name, structuredClone(file));
      ledger.delete(file.fileId);
      if (replaced && replaced.fileId !== file.fileId)
        enter(replaced.fileId, replaced.name, 'replaced');
      return replaced;
    },
    removeFile: async (name) => {
      const removed = files.get(name) ?? null;
      if (!removed) return null;
      files.delete(name);
      enter(removed.fileId, removed.name, 'deleted');
      return removed;
    },
    settle: async (fileId) => {
      ledger.delete(fileId);
    },
    cleanups: async () => [...ledger.values()].map((entry) => ({ ...entry })),
    putVm: async (record) => {
      vms.set(record.id, structuredClone(record));
    },
    listVms: async () =>
      [...vms.values()]
        .sort((a, b) => byCodePoint(a.id, b.id))
        .map((record) => structuredClone(record)),
    close: async () => {},
  };
}

/** Unicode code point order: the byte order of UTF-8, as Redis and SQLite sort. */
export function byCodePoint(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export default createMemoryMetadata;
