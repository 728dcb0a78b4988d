import { type ChunkInfo, type FileInfo, holdersOf, MAX_REPLICAS } from '../../protocol/messages.ts';
import {
  type Cleanup,
  type CleanupReason,
  type FileUse,
  MetadataError,
  type MetadataStore,
  type PlacedChunk,
  type VmRecord,
} from './types.ts';

export const DRIVER_NAME = 'memory';

/**
 * A copy of a record, so that callers never share the store's own: records
 * are JSON data, and a JSON round trip is ~5× quicker than structuredClone
 * on Bun (a small get reads its file's record).
 */
const copy = <T>(record: T): T => JSON.parse(JSON.stringify(record)) as T;

/** Metadata in Maps: gone when the broker stops. */
export function createMemoryMetadata(): MetadataStore {
  const files = new Map<string, FileInfo>();
  /** Which name holds each fileId: a commit checks it without a walk over every file. */
  const owners = new Map<string, string>();
  /** The names in order, made again after a name comes or goes. */
  let sorted: string[] | null = null;
  const ledger = new Map<string, Cleanup>();
  const vms = new Map<string, VmRecord>();
  /** When each file was last used, in epoch ms. */
  const used = new Map<string, number>();
  const enter = (fileId: string, name: string, reason: CleanupReason) => {
    ledger.delete(fileId);
    ledger.set(fileId, { fileId, name, reason, since: new Date().toISOString() });
  };
  const listFiles: MetadataStore['listFiles'] = async ({ limit, after }) => {
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new MetadataError(DRIVER_NAME, `a page limit is a whole number ≥ 1, not ${limit}`);
    sorted ??= [...files.keys()].sort(byCodePoint);
    const names = sorted;
    // The first name after `after`, by bisection.
    let start = 0;
    if (after !== undefined) {
      let end = names.length;
      while (start < end) {
        const middle = (start + end) >>> 1;
        if (byCodePoint(names[middle] as string, after) > 0) end = middle;
        else start = middle + 1;
      }
    }
    const page = names.slice(start, start + limit);
    const last = page.at(-1);
    return {
      files: page.map((name) => copy(files.get(name) as FileInfo)),
      ...(names.length > start + limit && last !== undefined ? { next: last } : {}),
    };
  };
  return {
    name: DRIVER_NAME,
    getFile: async (name) => copy(files.get(name) ?? null),
    listFiles,
    listFileRecords: async (options) => {
      const page = await listFiles(options);
      return {
        records: page.files.map((file) => ({ name: file.name, json: JSON.stringify(file) })),
        ...(page.next !== undefined ? { next: page.next } : {}),
      };
    },
    chunksOn: async (vm) => {
      const placed: PlacedChunk[] = [];
      for (const file of files.values()) {
        for (const chunk of file.chunks) {
          if (!holdersOf(chunk).includes(vm)) continue;
          const { fileId, name } = file;
          placed.push({ name, fileId, index: chunk.index, size: chunk.size, sha256: chunk.sha256 });
        }
      }
      return placed.sort((a, b) => byCodePoint(a.fileId, b.fileId) || a.index - b.index);
    },
    hasFileId: async (fileId) => owners.has(fileId),
    beginUpload: async ({ fileId, name }) => enter(fileId, name, 'upload'),
    commitFile: async (file) => {
      const holder = owners.get(file.fileId);
      if (holder !== undefined && holder !== file.name)
        throw new MetadataError(
          DRIVER_NAME,
          `fileId ${file.fileId} already belongs to "${holder}", not "${file.name}"`,
        );
      const replaced = files.get(file.name) ?? null;
      if (replaced) owners.delete(replaced.fileId);
      else sorted = null;
      files.set(file.name, copy(file));
      owners.set(file.fileId, file.name);
      ledger.delete(file.fileId);
      if (replaced && replaced.fileId !== file.fileId)
        enter(replaced.fileId, replaced.name, 'replaced');
      return replaced;
    },
    removeFile: async (name) => {
      const removed = files.get(name) ?? null;
      if (!removed) return null;
      files.delete(name);
      owners.delete(removed.fileId);
      used.delete(name);
      sorted = null;
      enter(removed.fileId, removed.name, 'deleted');
      return removed;
    },
    updateChunks: async (name, fileId, chunks) => {
      checkChunkUpdate(DRIVER_NAME, name, chunks);
      const file = files.get(name);
      if (file === undefined || file.fileId !== fileId) return false;
      files.set(name, withChunks(DRIVER_NAME, file, chunks));
      return true;
    },
    touchFiles: async (entries) => {
      for (const [name, at] of checkUses(DRIVER_NAME, entries)) {
        if (files.has(name)) used.set(name, at);
      }
    },
    lastUsed: async () =>
      [...used]
        .sort(([a, atA], [b, atB]) => atA - atB || byCodePoint(a, b))
        .map(([name, at]) => fileUse(name, at)),
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

/**
 * The `[name, epoch ms]` of each use touchFiles is given, or a MetadataError
 * for the first that is not a name and a date. Every backend checks the
 * same, before changing anything.
 */
export function checkUses(backend: string, entries: readonly FileUse[]): [string, number][] {
  if (!Array.isArray(entries))
    throw new MetadataError(backend, 'touchFiles: entries must be an array');
  return entries.map((entry) => {
    const { name, usedAt } = entry ?? {};
    const at = typeof usedAt === 'string' ? Date.parse(usedAt) : Number.NaN;
    if (typeof name !== 'string' || !Number.isFinite(at))
      throw new MetadataError(
        backend,
        `touchFiles: ${JSON.stringify(entry)} is not a file name with the ISO 8601 time it was used`,
      );
    return [name, at];
  });
}

/** A use as lastUsed gives it back: the time in ISO 8601, to the millisecond. */
export function fileUse(name: string, at: number): FileUse {
  return { name, usedAt: new Date(at).toISOString() };
}

/** What updateChunks is given for each chunk. */
export type ChunkPlacement = Pick<ChunkInfo, 'index' | 'vm' | 'replicas'>;

/**
 * Refuses an updateChunks list that is wrong whatever the file holds: an
 * index twice, a `vm` that is not its `replicas[0]`, a VM twice in one
 * chunk's replicas. Every backend checks the same, before reading anything.
 */
export function checkChunkUpdate(
  backend: string,
  name: string,
  chunks: readonly ChunkPlacement[],
): void {
  const fail = (problem: string): never => {
    throw new MetadataError(backend, `updateChunks ${JSON.stringify(name)}: ${problem}`);
  };
  if (!Array.isArray(chunks)) fail('chunks must be an array');
  const seen = new Set<number>();
  for (const chunk of chunks) {
    const { index, vm, replicas } = chunk ?? {};
    if (!Number.isSafeInteger(index) || index < 0)
      fail(`chunk index ${index} is not a whole number ≥ 0`);
    if (seen.has(index)) fail(`chunk ${index} is listed twice`);
    seen.add(index);
    if (vm !== null && typeof vm !== 'string') fail(`chunk ${index}: vm must be a VM id or null`);
    if (replicas === undefined) continue;
    if (!Array.isArray(replicas) || replicas.some((each) => typeof each !== 'string'))
      fail(`chunk ${index}: replicas must be an array of VM ids`);
    if (replicas.length > MAX_REPLICAS)
      fail(`chunk ${index}: ${replicas.length} replicas, more than ${MAX_REPLICAS}`);
    if (new Set(replicas).size !== replicas.length)
      fail(`chunk ${index}: replicas ${JSON.stringify(replicas)} name a VM twice`);
    if (vm !== (replicas[0] ?? null))
      fail(
        `chunk ${index}: vm ${JSON.stringify(vm)} is not its first replica (replicas ${JSON.stringify(replicas)})`,
      );
  }
}

/**
 * `file` with the `vm` and `replicas` of its chunks from `chunks` (checked by
 * checkChunkUpdate), everything else as it was; a chunk given no `replicas`
 * has none in the record. Refuses a list that is not every chunk of `file`.
 */
export function withChunks(
  backend: string,
  file: FileInfo,
  chunks: readonly ChunkPlacement[],
): FileInfo {
  const byIndex = new Map(chunks.map((chunk) => [chunk.index, chunk]));
  const missing = file.chunks.filter((chunk) => !byIndex.has(chunk.index)).map((c) => c.index);
  const known = new Set(file.chunks.map((chunk) => chunk.index));
  const unknown = chunks.filter((chunk) => !known.has(chunk.index)).map((c) => c.index);
  if (missing.length > 0 || unknown.length > 0) {
    const problems = [
      ...(missing.length > 0 ? [`chunks ${missing.join(', ')} are not listed`] : []),
      ...(unknown.length > 0 ? [`the file has no chunk ${unknown.join(', ')}`] : []),
    ];
    throw new MetadataError(
      backend,
      `updateChunks ${JSON.stringify(file.name)}: every chunk of the file must be listed once: ${problems.join('; ')}`,
    );
  }
  const updated = {
    ...file,
    chunks: file.chunks.map(({ replicas: _replaced, ...chunk }) => {
      const placement = byIndex.get(chunk.index) as ChunkPlacement;
      return {
        ...chunk,
        vm: placement.vm,
        ...(placement.replicas !== undefined ? { replicas: [...placement.replicas] } : {}),
      };
    }),
  };
  return updated;
}

/** Unicode code point order: the byte order of UTF-8, as Redis and SQLite sort. */
export function byCodePoint(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export default createMemoryMetadata;
